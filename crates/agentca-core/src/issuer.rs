//! Issuance and revocation: the one path every certificate takes (design §2, §9).
//!
//! Order of an issuance, each step before the next:
//! 1. the front end has parsed the CSR ([`CertificateRequest`]);
//! 2. policy decides, producing an [`Authorization`] or a refusal naming the rule;
//! 3. a random serial is reserved with an intent record (insert-if-absent);
//! 4. the certificate is built from the authorization, its TBS linted, then signed;
//! 5. the certificate is stored and made durable (flushes shared under load);
//! 6. the audit entry is written and made durable;
//! 7. only then is the certificate returned to the caller.
//!
//! A refusal at step 2 writes an audit entry and nothing else: no serial, no signature.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use rcgen::{Issuer, PublicKeyData, SigningKey};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::FromDer;

use crate::audit::AuditLog;
use crate::csr::CertificateRequest;
use crate::error::{Error, Result};
use crate::identity::SpiffeId;
use crate::policy::PolicySet;
use crate::profile::{self, Authorization, LeafExpectation, Urls};
use crate::refusals::RefusalLog;
use crate::signer::{RcgenSigner, Signer};
use crate::store::{
    AcmeOrder, AcmeOrderStatus, AgentRecord, CertificateRecord, EnrollmentMethod, IssuanceFacts,
    IssuanceIntent, RateDecision, Revocation, RevocationReason, Serial, SerialEntry, Store,
    StoreError,
};

mod commit_thread;
use commit_thread::CommitThread;
pub use commit_thread::{InFlight, InFlightGuard};

/// The issuing CA: its certificate, its key (behind [`Signer`]) and where relying parties look.
pub struct IssuingCa {
    signer: Arc<dyn Signer>,
    cert_der: Vec<u8>,
    subject_der: Vec<u8>,
    key_identifier: Vec<u8>,
    not_after: OffsetDateTime,
    urls: Urls,
    trust_domain: String,
    /// Public keys of the CA's own certificates (root, issuing, responder, RA): never certified
    /// for an agent.
    own_keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for IssuingCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuingCa")
            .field("trust_domain", &self.trust_domain)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl IssuingCa {
    /// Binds a key to its certificate. Fails if the key does not match the certificate.
    pub fn new(
        signer: Arc<dyn Signer>,
        cert_der: Vec<u8>,
        urls: Urls,
        trust_domain: String,
        own_keys: Vec<Vec<u8>>,
    ) -> Result<Self> {
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&cert_der)
            .map_err(|_| Error::Der("issuing CA certificate does not parse".into()))?;
        if cert.tbs_certificate.subject_pki.raw != signer.subject_public_key_info().as_slice() {
            return Err(Error::DataDir {
                path: "issuing.pem".into(),
                reason: "the issuing CA key does not match its certificate".into(),
            });
        }
        let subject_der = cert.tbs_certificate.subject.as_raw().to_vec();
        let key_identifier = cert
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => {
                    Some(k.0.to_vec())
                }
                _ => None,
            })
            .ok_or_else(|| {
                Error::Der("issuing CA certificate has no subjectKeyIdentifier".into())
            })?;
        let not_after = cert.validity().not_after.to_datetime();
        Ok(Self {
            signer,
            subject_der,
            key_identifier,
            not_after,
            cert_der,
            urls,
            trust_domain,
            own_keys,
        })
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The trust domain agents of this CA live in.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The status and issuer URLs written into certificates.
    pub fn urls(&self) -> &Urls {
        &self.urls
    }

    /// The CA's subjectKeyIdentifier: the authorityKeyIdentifier of everything it signs.
    pub fn key_identifier(&self) -> &[u8] {
        &self.key_identifier
    }

    /// When the CA certificate expires; no leaf outlives it.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// The signing key.
    pub fn signer(&self) -> &dyn Signer {
        self.signer.as_ref()
    }

    /// Builds, lints and signs a leaf. No store, no audit: [`Authority::issue`] wraps this.
    pub fn sign_leaf(
        &self,
        auth: &Authorization,
        serial: Serial,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Vec<u8>> {
        let params = profile::leaf_params(auth, serial, not_before, not_after, &self.urls)?;
        let expectation = LeafExpectation {
            auth,
            serial,
            not_before,
            not_after,
            issuer_subject: &self.subject_der,
            issuer_not_after: self.not_after,
        };
        let signer = LintingSigner {
            inner: RcgenSigner::new(self.signer.as_ref())?,
            expectation: &expectation,
            lint_error: std::cell::RefCell::new(None),
        };
        let issuer = Issuer::from_ca_cert_der(&self.cert_der.as_slice().into(), &signer)
            .map_err(|e| Error::Der(format!("issuing CA certificate: {e}")))?;
        let key_bits = crate::signer::subject_public_key_bits(&auth.spki_der)?;
        let subject_key = SubjectKey {
            spki: &auth.spki_der,
            bits: &key_bits,
            kind: auth.key,
        };
        let cert = params.signed_by(&subject_key, &issuer).map_err(|e| {
            signer
                .lint_error
                .borrow_mut()
                .take()
                .or_else(|| signer.inner.take_error())
                .unwrap_or_else(|| Error::Signing(e.to_string()))
        })?;
        Ok(cert.der().to_vec())
    }
}

/// Lints the TBS, then signs it; a lint failure means the key is never asked.
struct LintingSigner<'a> {
    inner: RcgenSigner<'a>,
    expectation: &'a LeafExpectation<'a>,
    lint_error: std::cell::RefCell<Option<Error>>,
}

impl PublicKeyData for LintingSigner<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.inner.der_bytes()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        PublicKeyData::algorithm(&self.inner)
    }
}

impl SigningKey for LintingSigner<'_> {
    fn sign(&self, tbs: &[u8]) -> std::result::Result<Vec<u8>, rcgen::Error> {
        if let Err(e) = profile::lint_leaf_tbs(tbs, self.expectation) {
            *self.lint_error.borrow_mut() = Some(e);
            return Err(rcgen::Error::RemoteKeyError);
        }
        self.inner.sign(tbs)
    }
}

/// The public key of the certificate's subject, as rcgen wants it: rcgen re-encodes the SPKI
/// from the key bits and algorithm, and the pre-signing lint checks that the result is
/// byte-identical to the CSR's.
struct SubjectKey<'a> {
    spki: &'a [u8],
    bits: &'a [u8],
    kind: crate::csr::KeyKind,
}

impl PublicKeyData for SubjectKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.bits
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        match self.kind {
            crate::csr::KeyKind::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            crate::csr::KeyKind::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            crate::csr::KeyKind::Ed25519 => &rcgen::PKCS_ED25519,
            crate::csr::KeyKind::Rsa { .. } => &rcgen::PKCS_RSA_SHA256,
        }
    }

    fn subject_public_key_info(&self) -> Vec<u8> {
        self.spki.to_vec()
    }
}

/// A request to issue, from any front end.
#[derive(Clone, Copy, Debug)]
pub struct IssueRequest<'a> {
    /// The agent, as given by the operator or bound to the account/token.
    pub agent_id: &'a str,
    /// The parsed CSR.
    pub csr: &'a CertificateRequest,
    /// How it was requested.
    pub method: EnrollmentMethod,
    /// A requested lifetime, if any.
    pub lifetime: Option<Duration>,
    /// DNS names the front end proved the requester controls (ACME challenges). They need no
    /// pre-authorization by policy; every other DNS name in the CSR does.
    pub validated_dns: &'a [String],
    /// IP addresses proven the same way.
    pub validated_ips: &'a [IpAddr],
    /// The CSR key's JWK thumbprint (RFC 7638), given by a front end that refuses a key some
    /// ACME account already uses (RFC 8555 §11.1): looked up with the agent, in one read.
    pub csr_key_thumbprint: Option<&'a str>,
}

/// The CA's decision-making and recording roles around one [`IssuingCa`].
pub struct Authority {
    ca: IssuingCa,
    policies: PolicySet,
    store: Arc<dyn Store>,
    audit: Arc<AuditLog>,
    refusals: RefusalLog,
    /// Started by the first [`Authority::commit_staged`].
    commit_thread: OnceLock<CommitThread>,
    in_flight: Arc<InFlight>,
    /// Where [`Authority::reserve`] draws serials: [`random_serial`], or in tests a source
    /// that repeats itself, to show that a collision never overwrites a record.
    serials: SerialSource,
}

type SerialSource = Box<dyn Fn() -> Result<Serial> + Send + Sync>;

/// An issuance that is signed and stored but not yet durable nor audited
/// ([`Authority::stage_issue`]); [`Authority::commit_staged`] finishes it.
#[must_use = "a staged certificate is acknowledged only after commit_staged"]
#[derive(Debug)]
pub struct StagedIssuance {
    record: CertificateRecord,
    audit: serde_json::Value,
    /// What the front end's `record_more` returned.
    more: Result<()>,
}

impl StagedIssuance {
    /// The certificate, stored but not yet durable: not to be handed out before commit.
    pub fn record(&self) -> &CertificateRecord {
        &self.record
    }

    /// Whether the front end's own record (`record_more`, or the completed order) was stored.
    pub fn recorded_more(&self) -> bool {
        self.more.is_ok()
    }
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

/// How many fresh serials to try before giving up (a collision of 127 random bits means a
/// broken RNG, not bad luck).
const SERIAL_ATTEMPTS: usize = 4;

impl Authority {
    /// Assembles the roles.
    pub fn new(
        ca: IssuingCa,
        policies: PolicySet,
        store: Arc<dyn Store>,
        audit: Arc<AuditLog>,
    ) -> Self {
        Self {
            ca,
            policies,
            store,
            refusals: RefusalLog::new(audit.clone()),
            audit,
            commit_thread: OnceLock::new(),
            in_flight: Arc::default(),
            serials: Box::new(random_serial),
        }
    }

    /// Draws serials from `source` instead of the system's random number generator.
    #[cfg(test)]
    fn draw_serials_from(&mut self, source: impl Fn() -> Result<Serial> + Send + Sync + 'static) {
        self.serials = Box::new(source);
    }

    /// The requests front ends are serving: a front end that commits staged issuances holds
    /// an [`InFlight::enter`] guard for each of its requests, so that a batch waits for the
    /// issuances on their way while requests keep arriving.
    pub fn in_flight(&self) -> &Arc<InFlight> {
        &self.in_flight
    }

    /// Where front ends record the requests they refuse.
    pub fn refusals(&self) -> &RefusalLog {
        &self.refusals
    }

    /// The issuing CA.
    pub fn ca(&self) -> &IssuingCa {
        &self.ca
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// The store, to keep (for services that outlive a borrow of the authority).
    pub fn shared_store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// The policies.
    pub fn policies(&self) -> &PolicySet {
        &self.policies
    }

    /// Parses a CSR (PEM or DER) and issues; a CSR that does not parse is refused and audited
    /// like any other refusal.
    pub fn issue_csr(
        &self,
        agent_id: &str,
        csr: &[u8],
        method: EnrollmentMethod,
        lifetime: Option<Duration>,
    ) -> Result<CertificateRecord> {
        let csr = match CertificateRequest::parse(csr) {
            Ok(csr) => csr,
            Err(e) => return Err(self.refused(agent_id, method, None, e)),
        };
        self.issue(&IssueRequest {
            agent_id,
            csr: &csr,
            method,
            lifetime,
            validated_dns: &[],
            validated_ips: &[],
            csr_key_thumbprint: None,
        })
    }

    /// Issues a certificate, returning it only once it is durable.
    pub fn issue(&self, request: &IssueRequest<'_>) -> Result<CertificateRecord> {
        self.issue_with(request, |_| Ok(()))
    }

    /// [`Authority::issue`], running `record_more` after the certificate is stored and before
    /// the commit that makes it durable, so a front end's own record of the issuance (an ACME
    /// order turning valid) becomes durable in the same flush. If `record_more` fails, the
    /// certificate stays stored (it is signed and must stay findable) and the error is returned.
    pub fn issue_with(
        &self,
        request: &IssueRequest<'_>,
        record_more: impl FnOnce(&CertificateRecord) -> Result<()>,
    ) -> Result<CertificateRecord> {
        let staged = self.stage_issue(request, record_more)?;
        fail_point!("issue::stored");
        // Store first: sled holds unflushed writes in its own memory, so an audit line written
        // before the flush could outlive the record it describes after a crash. This order can
        // only leave the opposite (a stored, unacknowledged certificate without its line), which
        // reconciliation reports.
        self.store.commit()?;
        fail_point!("issue::committed");
        self.audit.append("cert.issued", staged.audit)?;
        self.audit.sync()?;
        fail_point!("issue::audited");
        staged.more?;
        Ok(staged.record)
    }

    /// On a store other nodes share, writes the `cert.signing` line of `intent` (not synced:
    /// the `cert.issued` line that follows the certificate's commit is) before the key signs
    /// it: after a crash, a node's own intents name the certificates the store may hold
    /// without their line that are this node's to catch up ([`crate::reconcile::catch_up`]).
    /// A store of its own is scanned instead, and gets no such line, so that its first
    /// failed write is still the store's (which then refuses every later one, see
    /// docs/deployment.md, "When the disk fails").
    pub fn note_signing(&self, intent: &IssuanceIntent) -> Result<()> {
        if !self.store.is_shared() {
            return Ok(());
        }
        self.audit
            .append(
                SIGNING_EVENT,
                serde_json::json!({
                    "serial": intent.serial.to_hex(),
                    "agent": intent.agent_id,
                }),
            )
            .map(drop)
    }

    /// Runs the checks [`Authority::stage_issue`] runs first (agent, policy, names, key,
    /// lifetime), without issuing: for a front end that must spend something — a one-time
    /// challenge — only on a request that would be granted. A refusal is audited as
    /// `cert.refused`, as one from `stage_issue` is.
    pub fn precheck(&self, request: &IssueRequest<'_>) -> Result<()> {
        let now = profile::whole_seconds(OffsetDateTime::now_utc());
        match self.authorize(request, now) {
            Ok(_) => Ok(()),
            Err(e) => Err(self.refused(
                request.agent_id,
                request.method,
                Some(request.csr.key_sha256()),
                e,
            )),
        }
    }

    /// Everything [`Authority::issue_with`] does before the certificate is made durable and
    /// audited: policy, quota, serial, signature, the store writes and `record_more`. Finish it
    /// with [`Authority::commit_staged`], which lets a front end wait for the disk without
    /// holding a thread.
    pub fn stage_issue(
        &self,
        request: &IssueRequest<'_>,
        record_more: impl FnOnce(&CertificateRecord) -> Result<()>,
    ) -> Result<StagedIssuance> {
        self.stage(request, None, None, |store, record| {
            store.record_certificate(record)?;
            Ok(record_more(record))
        })
    }

    /// [`Authority::stage_issue`] for the ACME order the certificate completes. `facts` are
    /// what [`Store::claim_acme_order_for_issuance`] read, for this request's agent, key and
    /// account-key thumbprint, as it moved the order to `processing`: they stand in for the
    /// issuer's own read. `completed` gives the order as it is to be stored with the
    /// certificate, in the same store call, replacing it only while it is still `processing`.
    /// A conflict there is the staged issuance's `record_more` result; the certificate is
    /// recorded all the same.
    ///
    /// `reserved` is the [`Authority::order_reservation`] the claim reserved, if it did: its
    /// serial is the certificate's, and no other is reserved. A refused issuance releases it.
    pub fn stage_issue_for_order(
        &self,
        request: &IssueRequest<'_>,
        facts: IssuanceFacts,
        reserved: Option<IssuanceIntent>,
        completed: impl FnOnce(&CertificateRecord) -> AcmeOrder,
    ) -> Result<StagedIssuance> {
        self.stage(request, Some(facts), reserved, |store, record| {
            let order = completed(record);
            Ok(store
                .record_certificate_of_order(record, &order, AcmeOrderStatus::Processing)?
                .map_err(Error::from))
        })
    }

    /// `facts`, if given, were read for `request` by the caller, and `reserved` reserved by it
    /// (see [`Authority::stage_issue_for_order`]).
    fn stage(
        &self,
        request: &IssueRequest<'_>,
        facts: Option<IssuanceFacts>,
        reserved: Option<IssuanceIntent>,
        store_it: impl FnOnce(&dyn Store, &CertificateRecord) -> Result<Result<()>>,
    ) -> Result<StagedIssuance> {
        let now = profile::whole_seconds(OffsetDateTime::now_utc());
        let refused = |e| {
            self.release(reserved.as_ref());
            self.refused(
                request.agent_id,
                request.method,
                Some(request.csr.key_sha256()),
                e,
            )
        };
        let auth = match self.authorize_with(request, now, facts) {
            Ok(auth) => auth,
            Err(e) => return Err(refused(e)),
        };
        if let Err(e) = self.take_certificate_quota(&auth, now) {
            return Err(refused(e));
        }
        let (not_before, not_after) = profile::validity(now, auth.lifetime);
        // The CSR's key is the certificate's (`auth.spki_der`), and the CSR hashed it once.
        let key_sha256 = hex::encode(request.csr.key_sha256());
        let intent = match reserved {
            // Reserved for this agent, method and key: the serial is this certificate's, and
            // its record will carry the real validity in place of the planned bound.
            Some(reserved)
                if reserved.agent_id == auth.agent.as_str()
                    && reserved.method == request.method
                    && reserved.key_sha256 == key_sha256 =>
            {
                IssuanceIntent {
                    not_before,
                    not_after,
                    ..reserved
                }
            }
            other => {
                self.release(other.as_ref());
                self.reserve(
                    auth.agent.as_str(),
                    request.method,
                    &key_sha256,
                    not_before,
                    not_after,
                    now,
                )?
            }
        };
        fail_point!("issue::reserved");
        self.note_signing(&intent)?;
        let der = self
            .ca
            .sign_leaf(&auth, intent.serial, not_before, not_after)?;
        fail_point!("issue::signed");
        let record = CertificateRecord {
            intent,
            der,
            issued_at: now,
            revocation: None,
        };
        let more = store_it(self.store.as_ref(), &record)?;
        let ips: Vec<String> = auth.ips.iter().map(ToString::to_string).collect();
        let audit = issued_line(&record, &auth.dns, &ips);
        Ok(StagedIssuance {
            record,
            audit,
            more,
        })
    }

    /// Makes `staged` durable and audited on the commit thread, in a batch with whatever else
    /// is waiting (`request` is the guard of the request that staged it), then calls `done` with the certificate (or the error that stops it from
    /// being acknowledged). `done` runs on the commit thread: it should only hand the result
    /// on.
    pub fn commit_staged(
        &self,
        staged: StagedIssuance,
        request: &InFlightGuard,
        done: impl FnOnce(Result<CertificateRecord>) + Send + 'static,
    ) {
        let StagedIssuance {
            record,
            audit,
            more,
        } = staged;
        let done: commit_thread::Done = Box::new(move |durable| {
            done(durable.and(more).map(|()| record));
        });
        let job = commit_thread::Job {
            ticket: request.ticket(),
            event: "cert.issued",
            fields: audit,
            done,
        };
        match self.commit_thread() {
            Ok(thread) => thread.submit(job),
            Err(e) => (job.done)(Err(e)),
        }
    }

    fn commit_thread(&self) -> Result<&CommitThread> {
        if let Some(thread) = self.commit_thread.get() {
            return Ok(thread);
        }
        let started = CommitThread::start(
            self.store.clone(),
            self.audit.clone(),
            self.in_flight.clone(),
        )?;
        // Two first callers may both start one; the loser's thread exits when it is dropped.
        Ok(self.commit_thread.get_or_init(|| started))
    }

    /// Takes one certificate from the agent's hourly quota (`certificates_per_agent_per_hour`).
    fn take_certificate_quota(&self, auth: &Authorization, now: OffsetDateTime) -> Result<()> {
        let limit = auth.certificates_per_hour;
        let key = format!("certificates/{}", auth.agent);
        match self
            .store
            .take_rate_limit(&key, limit, Duration::hours(1), now)?
        {
            RateDecision::Allowed => Ok(()),
            RateDecision::Limited { retry_after } => Err(Error::RateLimited {
                what: format!(
                    "{} may have {limit} certificates per hour (policy rule rate_limits.certificates_per_agent_per_hour)",
                    auth.agent
                ),
                retry_after_secs: retry_after.whole_seconds().max(1).unsigned_abs(),
            }),
        }
    }

    /// Whether a DNS name is pre-authorized for an agent (registered with `agent add --dns`
    /// or allowed by its policy), so ACME can mark its authorization valid without a challenge.
    pub fn dns_preauthorized(&self, agent: &AgentRecord, name: &str) -> Result<bool> {
        let policy = self.policy_of(agent)?;
        Ok(policy.check_dns(name, &agent.dns).is_ok())
    }

    /// Whether an IP address is pre-authorized for an agent by its policy.
    pub fn ip_preauthorized(&self, agent: &AgentRecord, ip: IpAddr) -> Result<bool> {
        Ok(self.policy_of(agent)?.check_ip(ip).is_ok())
    }

    /// The policy governing a registered agent.
    pub fn policy_of(&self, agent: &AgentRecord) -> Result<&crate::policy::Policy> {
        let id = SpiffeId::parse(&agent.id)?;
        self.policies.for_agent(&id, agent.policy.as_deref())
    }

    /// Records a refusal in the audit log and returns the refusal (or the audit failure, which
    /// is worse: an unrecorded refusal must not look like a recorded one).
    fn refused(
        &self,
        agent_id: &str,
        method: EnrollmentMethod,
        key_sha256: Option<&[u8; 32]>,
        reason: Error,
    ) -> Error {
        let entry = serde_json::json!({
            "agent": agent_id,
            "method": method.to_string(),
            "key_sha256": key_sha256.map(hex::encode),
            "reason": reason.to_string(),
        });
        match self.audit.append_durable("cert.refused", entry) {
            Ok(_) => reason,
            Err(audit) => audit,
        }
    }

    /// Runs every check; the returned authorization is all the certificate is built from.
    pub fn authorize(
        &self,
        request: &IssueRequest<'_>,
        now: OffsetDateTime,
    ) -> Result<Authorization> {
        self.authorize_with(request, now, None)
    }

    /// [`Authority::authorize`] on `facts` read by the caller, or on a read of its own.
    fn authorize_with(
        &self,
        request: &IssueRequest<'_>,
        now: OffsetDateTime,
        facts: Option<IssuanceFacts>,
    ) -> Result<Authorization> {
        let agent = SpiffeId::parse(request.agent_id)?;
        if agent.trust_domain() != self.ca.trust_domain {
            return Err(Error::InvalidAgentId(format!(
                "{agent} is in trust domain {}, this CA serves {}",
                agent.trust_domain(),
                self.ca.trust_domain
            )));
        }
        let facts = match facts {
            Some(facts) => facts,
            None => self.store.issuance_facts(
                agent.as_str(),
                request.csr.key_sha256(),
                request.csr_key_thumbprint,
            )?,
        };
        let record = facts
            .agent
            .ok_or_else(|| Error::UnknownAgent(agent.to_string()))?;
        if record.id != agent.as_str() {
            return Err(Error::Unreachable(
                "the facts of an issuance were read for another agent",
            ));
        }
        if record.disabled {
            return Err(Error::AgentDisabled(agent.to_string()));
        }
        let policy = self.policies.for_agent(&agent, record.policy.as_deref())?;
        policy.check_method(request.method)?;

        let csr = request.csr;
        let names = csr.names();
        if names.uris.len() > 1 {
            return Err(Error::BadCsr(format!(
                "asks for {} URI names; an agent certificate has exactly one",
                names.uris.len()
            )));
        }
        if let Some(uri) = names.uris.first()
            && uri != agent.as_str()
        {
            return Err(Error::BadCsr(format!(
                "asks for URI {uri:?}, but the agent is {agent}"
            )));
        }
        for name in &names.dns {
            if !request.validated_dns.contains(name) {
                policy.check_dns(name, &record.dns)?;
            }
        }
        for ip in &names.ips {
            if !request.validated_ips.contains(ip) {
                policy.check_ip(*ip)?;
            }
        }
        policy.check_key(csr.key_kind())?;
        if self
            .ca
            .own_keys
            .iter()
            .any(|k| k.as_slice() == csr.spki_der())
        {
            return Err(Error::UnsupportedKey(
                "the request carries one of this CA's own public keys".into(),
            ));
        }
        if facts.key_blocked {
            return Err(Error::UnsupportedKey(
                "the key is blocked: a certificate for it was revoked for keyCompromise".into(),
            ));
        }
        if facts.account_key {
            return Err(Error::BadCsr(
                "the CSR's public key is an ACME account key; certificate keys must differ from account keys".into(),
            ));
        }
        let lifetime = policy.lifetime(request.lifetime)?;
        let (_, not_after) = profile::validity(now, lifetime);
        if not_after > self.ca.not_after {
            return Err(Error::InvalidLifetime(format!(
                "the certificate would end at {}, after the issuing CA's notAfter {}",
                rfc3339(not_after),
                rfc3339(self.ca.not_after)
            )));
        }
        Ok(Authorization {
            agent,
            dns: names.dns.clone(),
            ips: names.ips.clone(),
            lifetime,
            key: csr.key_kind(),
            spki_der: csr.spki_der().to_vec(),
            server_auth: policy.server_auth_always(),
            certificates_per_hour: policy.rate_limits().certificates_per_agent_per_hour,
        })
    }

    /// The reservation of an ACME order's issuance, for the store call that claims the order
    /// ([`Store::claim_acme_order_for_issuance`]), so that the serial costs no round trip of
    /// its own. It is made before the issuer's checks, so its validity is a bound, not the
    /// certificate's: from now to the longest lifetime any policy allows, within the CA's.
    /// [`Authority::stage_issue_for_order`] takes it back if the issuance is refused.
    pub fn order_reservation(
        &self,
        agent_id: &str,
        csr: &CertificateRequest,
    ) -> Result<IssuanceIntent> {
        let now = profile::whole_seconds(OffsetDateTime::now_utc());
        let (not_before, longest) = profile::validity(now, self.policies.longest_max_lifetime());
        Ok(IssuanceIntent {
            serial: random_serial()?,
            agent_id: agent_id.to_owned(),
            method: EnrollmentMethod::Acme,
            not_before,
            not_after: longest.min(self.ca.not_after),
            key_sha256: hex::encode(csr.key_sha256()),
            reserved_at: now,
        })
    }

    /// Forgets a reservation no signature was attempted for. A reservation the store could not
    /// forget stays an orphaned intent, which reconciliation reports and nothing signs.
    fn release(&self, reserved: Option<&IssuanceIntent>) {
        if let Some(reserved) = reserved {
            let _ = self.store.release_serial(&reserved.serial);
        }
    }

    /// Reserves a fresh random serial with its intent record (insert-if-absent), before any
    /// signature; for every certificate the CA makes, including its own service certificates.
    pub fn reserve(
        &self,
        agent_id: &str,
        method: EnrollmentMethod,
        key_sha256: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<IssuanceIntent> {
        for _ in 0..SERIAL_ATTEMPTS {
            let intent = IssuanceIntent {
                serial: (self.serials)()?,
                agent_id: agent_id.to_owned(),
                method,
                not_before,
                not_after,
                key_sha256: key_sha256.to_owned(),
                reserved_at: now,
            };
            match self.store.reserve_serial(&intent) {
                Ok(()) => return Ok(intent),
                Err(StoreError::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Signing(
            "could not reserve a fresh serial: the random number generator repeats".into(),
        ))
    }

    /// Revokes one certificate; durable before it returns. keyCompromise also blocks the key.
    /// A refused revocation (unknown serial, already revoked, bad reason) is audited too.
    pub fn revoke(&self, serial: &Serial, reason: RevocationReason) -> Result<CertificateRecord> {
        let mut revoked = self.revoke_all(serial, reason)?;
        Ok(revoked.swap_remove(0))
    }

    /// [`Authority::revoke`], returning every certificate it revoked: the one named first, then,
    /// for keyCompromise, the other certificates of the same key. Whoever keeps status
    /// elsewhere (the OCSP cache) updates all of them. A keyCompromise revocation of a
    /// certificate already revoked for keyCompromise finishes that revocation if it did not
    /// reach every certificate of the key (it failed half-way): the named certificate comes
    /// first as it was revoked then, and the others follow; with nothing left to finish it is
    /// refused as already revoked.
    pub fn revoke_all(
        &self,
        serial: &Serial,
        reason: RevocationReason,
    ) -> Result<Vec<CertificateRecord>> {
        match self.revoke_inner(serial, reason) {
            Ok(records) => Ok(records),
            Err(e) => {
                let entry = serde_json::json!({
                    "serial": serial.to_hex(),
                    "reason": reason.name(),
                    "refusal": e.to_string(),
                });
                Err(
                    match self.audit.append_durable("cert.revoke-refused", entry) {
                        Ok(_) => e,
                        Err(audit) => audit,
                    },
                )
            }
        }
    }

    fn revoke_inner(
        &self,
        serial: &Serial,
        reason: RevocationReason,
    ) -> Result<Vec<CertificateRecord>> {
        // Refused here as `revoke --dry-run` refuses it, before anything changes.
        let plan = revocation_preview(self.store.as_ref(), serial, reason)?;
        let revocation = Revocation {
            revoked_at: profile::whole_seconds(OffsetDateTime::now_utc()),
            reason,
        };
        // The intent, before the store changes (see `note_signing`), with the time the
        // revocation will carry: a catch-up recovers only a revocation stamped so, not one
        // another node made.
        if self.store.is_shared() {
            self.audit.append(
                REVOKING_EVENT,
                serde_json::json!({
                    "serial": serial.to_hex(),
                    "reason": reason.name(),
                    "revoked_at": rfc3339(revocation.revoked_at),
                }),
            )?;
        }
        let compromised = reason == RevocationReason::KeyCompromise;
        // A compromised key compromises every certificate for it (BR §4.9.1.1): the key is
        // blocked first, then this certificate and every other of the key are revoked, each
        // step idempotent, so that a retry after a failure between two of them (a flush that
        // failed, a database lost half-way) finishes what the first attempt began instead of
        // stopping at "already revoked".
        if compromised {
            let mut key = [0u8; 32];
            if hex::decode_to_slice(&plan[0].intent.key_sha256, &mut key).is_ok() {
                self.store.block_key(&key)?;
            }
        }
        let (record, newly) = match self.store.revoke(serial, revocation) {
            Ok(record) => (record, true),
            // Revoked since the plan was read, or by the attempt this one finishes.
            Err(StoreError::Conflict { .. }) => match self.store.serial(serial)? {
                Some(SerialEntry::Issued(record))
                    if record
                        .revocation
                        .is_some_and(|r| finishes_revocation(r, reason)) =>
                {
                    (record, false)
                }
                _ => return Err(Error::AlreadyRevoked(serial.to_hex())),
            },
            Err(StoreError::NotFound { .. }) => return Err(Error::UnknownSerial(serial.to_hex())),
            Err(e) => return Err(e.into()),
        };
        fail_point!("revoke::recorded");
        let mut also_revoked = Vec::new();
        if compromised {
            // Listed again now: a certificate of the key issued before the block took effect.
            for other in others_with_the_key(self.store.as_ref(), &record)? {
                match self.store.revoke(&other.intent.serial, revocation) {
                    Ok(r) => also_revoked.push(r),
                    Err(StoreError::Conflict { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if !newly && also_revoked.is_empty() {
            // Nothing was left to finish; the block may have been (it is idempotent).
            self.store.commit()?;
            return Err(Error::AlreadyRevoked(serial.to_hex()));
        }
        self.finish_revocation(serial, record, newly, also_revoked, revocation)
    }

    /// Makes a revocation durable and audits it: `record` (audited only if `newly` revoked
    /// now) and the other certificates of its key revoked with it.
    fn finish_revocation(
        &self,
        serial: &Serial,
        record: CertificateRecord,
        newly: bool,
        also_revoked: Vec<CertificateRecord>,
        revocation: Revocation,
    ) -> Result<Vec<CertificateRecord>> {
        self.store.commit()?;
        fail_point!("revoke::committed");
        for other in &also_revoked {
            self.audit.append(
                "cert.revoked",
                revoked_line(other, &revocation, Some(serial)),
            )?;
        }
        if newly {
            self.audit
                .append("cert.revoked", revoked_line(&record, &revocation, None))?;
        }
        self.audit.sync()?;
        fail_point!("revoke::audited");
        let mut all = vec![record];
        all.extend(also_revoked);
        Ok(all)
    }
}

/// The audit event that says a certificate is about to be signed (see
/// [`Authority::note_signing`]).
pub const SIGNING_EVENT: &str = "cert.signing";

/// The audit event that says a certificate is about to be revoked, before the store changes.
pub const REVOKING_EVENT: &str = "cert.revoking";

/// The fields of the `cert.issued` line of `record`, which carries the DNS names `dns` and
/// the IP addresses `ips`.
pub(crate) fn issued_line(
    record: &CertificateRecord,
    dns: &[String],
    ips: &[String],
) -> serde_json::Value {
    let intent = &record.intent;
    let mut line = serde_json::json!({
        "serial": intent.serial.to_hex(),
        "agent": intent.agent_id,
        "method": intent.method.to_string(),
        "not_before": rfc3339(intent.not_before),
        "not_after": rfc3339(intent.not_after),
        "key_sha256": intent.key_sha256,
        "dns": dns,
        "ips": ips,
    });
    if let Some(fields) = line.as_object_mut() {
        for (name, value) in crate::audit::issued_certificate_fields(&record.der) {
            fields.insert(name.into(), value);
        }
    }
    line
}

/// The fields of the `cert.revoked` line of `record` revoked by `revocation`; for a
/// certificate a keyCompromise revocation of another took along, `because_key_of` names that
/// other one.
pub(crate) fn revoked_line(
    record: &CertificateRecord,
    revocation: &Revocation,
    because_key_of: Option<&Serial>,
) -> serde_json::Value {
    let mut line = serde_json::json!({
        "serial": record.intent.serial.to_hex(),
        "agent": record.intent.agent_id,
        "reason": revocation.reason.name(),
        "revoked_at": rfc3339(revocation.revoked_at),
    });
    if let (Some(of), Some(fields)) = (because_key_of, line.as_object_mut()) {
        fields.insert("because_key_of".to_owned(), of.to_hex().into());
    }
    line
}

/// What [`Authority::revoke_all`] of `serial` for `reason` would revoke now, changing nothing
/// and needing no key: the certificate, then for keyCompromise the other unrevoked
/// certificates of its key. Refused as the revocation itself would be (unknown serial,
/// already revoked, removeFromCRL).
pub fn revocation_preview(
    store: &dyn Store,
    serial: &Serial,
    reason: RevocationReason,
) -> Result<Vec<CertificateRecord>> {
    refuse_remove_from_crl(reason)?;
    let Some(SerialEntry::Issued(record)) = store.serial(serial)? else {
        return Err(Error::UnknownSerial(serial.to_hex()));
    };
    let mut all = Vec::new();
    if reason == RevocationReason::KeyCompromise {
        all = others_with_the_key(store, &record)?;
    }
    // An earlier keyCompromise revocation of it that did not reach every certificate of the
    // key is finished by this one; anything else already revoked is refused.
    if let Some(earlier) = record.revocation
        && (!finishes_revocation(earlier, reason) || all.is_empty())
    {
        return Err(Error::AlreadyRevoked(serial.to_hex()));
    }
    all.insert(0, record);
    Ok(all)
}

/// Whether a revocation for `requested` of a certificate already revoked as `earlier` goes on
/// rather than being refused: keyCompromise after keyCompromise, which finishes a revocation
/// that did not reach every certificate of the key (it revokes only what is left, and is
/// refused if nothing is). Every other repeat is refused as already revoked.
pub fn finishes_revocation(earlier: Revocation, requested: RevocationReason) -> bool {
    earlier.reason == RevocationReason::KeyCompromise
        && requested == RevocationReason::KeyCompromise
}

/// removeFromCRL is no reason to revoke (RFC 5280 §5.3.1: it only undoes certificateHold).
fn refuse_remove_from_crl(reason: RevocationReason) -> Result<()> {
    if reason == RevocationReason::RemoveFromCrl {
        return Err(Error::InvalidArgument(
            "removeFromCRL only undoes a certificateHold, which agentca never uses".into(),
        ));
    }
    Ok(())
}

/// The unrevoked certificates other than `record` for its key: what a keyCompromise
/// revocation of `record` revokes with it.
fn others_with_the_key(
    store: &dyn Store,
    record: &CertificateRecord,
) -> Result<Vec<CertificateRecord>> {
    Ok(store
        .certificates_with_key(&record.intent.key_sha256)?
        .into_iter()
        .filter(|other| other.revocation.is_none() && other.intent.serial != record.intent.serial)
        .collect())
}

/// A fresh serial: 16 bytes from the OS CSPRNG, sign bit clear, first byte non-zero.
pub fn random_serial() -> Result<Serial> {
    loop {
        let mut bytes = [0u8; Serial::LEN];
        aws_lc_rs::rand::fill(&mut bytes)
            .map_err(|_| Error::Signing("the system random number generator failed".into()))?;
        // Clear the sign bit; redraw the rare leading zero so the INTEGER stays 16 octets.
        bytes[0] &= 0x7f;
        if let Some(serial) = Serial::from_bytes(bytes) {
            return Ok(serial);
        }
    }
}

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests;
