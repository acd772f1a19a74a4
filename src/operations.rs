//! Operator operations, executed the same way whether the CLI opened the data directory itself
//! or a running `agentca serve` executes them for it over the admin socket.
//!
//! A [`Request`] carries everything the operation needs (a CSR's bytes, not its path), and a
//! [`Reply`] everything the CLI prints or writes, so the two sides share no files.

use std::cell::OnceCell;
use std::path::{Path, PathBuf};

use agentca_core::audit::Checkpoint;
use agentca_core::ca::Ca;
use agentca_core::crl::Crl;
use agentca_core::identity::SpiffeId;
use agentca_core::issuer::Authority;
use agentca_core::policy::{check_dns_name, format_duration, parse_duration};
use agentca_core::store::{
    AgentRecord, CertificateFilter, CertificateRecord, EnrollmentMethod, RevocationReason, Serial,
    SerialEntry, Store, StoreError, TokenKind,
};
use agentca_core::token::{self, TokenSealer};
use agentca_core::{Error, Result, reconcile};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;

/// One operator operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub(crate) enum Request {
    AgentAdd {
        id: String,
        owner: Option<String>,
        policy: Option<String>,
        dns: Vec<String>,
    },
    AgentList,
    AgentShow {
        id: String,
    },
    AgentDisable {
        id: String,
    },
    Issue {
        agent: String,
        #[serde(with = "base64_bytes")]
        csr: Vec<u8>,
        ttl: Option<String>,
    },
    Revoke(RevokeTarget),
    /// `revoke --dry-run`: what [`Request::Revoke`] of the same target would revoke now. A
    /// request of its own, not a flag of `Revoke`: a server that does not know it refuses it
    /// instead of revoking.
    RevokePreview(RevokeTarget),
    CertList {
        agent: Option<String>,
        status: Option<String>,
    },
    CertShow {
        serial: String,
    },
    RenewEarly {
        cohort: crate::renewal::Cohort,
        within: String,
    },
    Crl,
    AuditVerify {
        /// Other nodes' audit logs (absolute paths), besides the data directory's.
        #[serde(default)]
        other_logs: Vec<PathBuf>,
        /// Checkpoints (`SEQ:HASH`) the data directory's log must hold.
        #[serde(default)]
        checkpoints: Vec<String>,
    },
    TokenCreate {
        agent: String,
        kind: String,
        ttl: Option<String>,
    },
}

/// What `revoke` is asked to revoke.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RevokeTarget {
    pub(crate) serial: Option<String>,
    pub(crate) agent: Option<String>,
    pub(crate) reason: String,
    /// Only what a later certificate replaces ([`crate::renewal::revoke_replaced`]).
    #[serde(default)]
    pub(crate) replaced: bool,
}

/// What an operation produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Reply {
    /// Standard output in text mode.
    pub(crate) text: String,
    /// A one-line summary for standard error when the artifact goes to standard output.
    pub(crate) note: Option<String>,
    /// The JSON document for `--output json`.
    pub(crate) json: Value,
    /// Exit status 0 (true) or 1.
    pub(crate) success: bool,
    /// A certificate chain or CRL the CLI writes to `--out`.
    pub(crate) artifact: Option<Artifact>,
}

/// What the CLI may write to `--out`: always PEM; a CRL also has a DER form, written unless
/// the file name ends in `.pem`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Artifact {
    pub(crate) pem: String,
    #[serde(with = "base64_bytes_opt")]
    pub(crate) der: Option<Vec<u8>>,
}

/// What operations need from whoever runs them.
pub(crate) trait Backend {
    /// The opened CA.
    fn ca(&self) -> &Ca;
    /// The issuing authority (loads keys on first use when run locally).
    fn authority(&self) -> Result<&Authority>;
    /// The sealer for ACME EAB keys (loads the sealing secret on first use when run locally).
    fn token_sealer(&self) -> Result<&TokenSealer>;
    /// Called after a certificate was issued and made durable.
    fn issued(&self, _record: &CertificateRecord) {}
    /// Called after certificates were revoked and made durable, before the reply is sent.
    fn revoked(&self, _records: &[CertificateRecord]) {}
    /// Publishes a fresh CRL.
    fn publish_crl(&self) -> Result<Crl> {
        agentca_core::crl::publish(
            self.authority()?,
            OffsetDateTime::now_utc(),
            agentca_core::crl::DEFAULT_VALIDITY,
        )
    }
}

/// Runs operations on a data directory this process opened itself.
pub(crate) struct LocalBackend {
    ca: Ca,
    passphrase_file: Option<PathBuf>,
    authority: OnceCell<Authority>,
    sealer: OnceCell<TokenSealer>,
}

impl LocalBackend {
    pub(crate) fn new(ca: Ca, passphrase_file: Option<&Path>) -> Self {
        Self {
            ca,
            passphrase_file: passphrase_file.map(Path::to_owned),
            authority: OnceCell::new(),
            sealer: OnceCell::new(),
        }
    }
}

impl Backend for LocalBackend {
    fn ca(&self) -> &Ca {
        &self.ca
    }

    fn authority(&self) -> Result<&Authority> {
        if let Some(a) = self.authority.get() {
            return Ok(a);
        }
        let protection = self.ca.protection(self.passphrase_file.as_deref())?;
        let authority = self.ca.authority(&protection)?;
        Ok(self.authority.get_or_init(|| authority))
    }

    fn token_sealer(&self) -> Result<&TokenSealer> {
        if let Some(s) = self.sealer.get() {
            return Ok(s);
        }
        let protection = self.ca.protection(self.passphrase_file.as_deref())?;
        let sealer = self.ca.token_sealer(&protection)?;
        Ok(self.sealer.get_or_init(|| sealer))
    }
}

/// Executes one request.
pub(crate) fn execute(backend: &dyn Backend, request: Request) -> Result<Reply> {
    match request {
        Request::AgentAdd {
            id,
            owner,
            policy,
            dns,
        } => agent_add(backend.ca(), id, owner, policy, dns),
        Request::AgentList => agent_list(backend.ca()),
        Request::AgentShow { id } => agent_show(backend.ca(), &id),
        Request::AgentDisable { id } => agent_disable(backend.ca(), &id),
        Request::Issue { agent, csr, ttl } => issue(backend, &agent, &csr, ttl.as_deref()),
        Request::Revoke(target) => revoke_request(backend, RevokeMode::Act, target),
        Request::RevokePreview(target) => revoke_request(backend, RevokeMode::DryRun, target),
        Request::RenewEarly { cohort, within } => {
            crate::renewal::renew_early(backend.ca(), &cohort, &within)
        }
        Request::CertList { agent, status } => cert_list(backend.ca(), agent, status.as_deref()),
        Request::CertShow { serial } => cert_show(backend.ca(), &serial),
        Request::Crl => crl(backend),
        Request::AuditVerify {
            other_logs,
            checkpoints,
        } => {
            let ca = backend.ca();
            audit_verify(
                ca.store().as_ref(),
                &ca.dir().audit_log(),
                &other_logs,
                &checkpoints,
                ca.config(),
            )
        }
        Request::TokenCreate { agent, kind, ttl } => {
            token_create(backend, &agent, &kind, ttl.as_deref())
        }
    }
}

fn token_create(
    backend: &dyn Backend,
    agent: &str,
    kind: &str,
    ttl: Option<&str>,
) -> Result<Reply> {
    let (kind, method) = match kind {
        "acme" => (TokenKind::Acme, EnrollmentMethod::Acme),
        "scep" => (TokenKind::Scep, EnrollmentMethod::Scep),
        other => {
            return Err(Error::InvalidArgument(format!(
                "--for {other:?}: acme or scep"
            )));
        }
    };
    let ttl = ttl
        .map(parse_duration)
        .transpose()
        .map_err(|e| Error::InvalidArgument(format!("--ttl: {e}")))?;
    let ca = backend.ca();
    let id = SpiffeId::parse(agent)?;
    let record = ca
        .store()
        .agent(id.as_str())?
        .ok_or_else(|| Error::UnknownAgent(id.to_string()))?;
    if record.disabled {
        return Err(Error::AgentDisabled(id.to_string()));
    }
    // Refuse now what the enrollment would refuse later: a token its policy never honours.
    ca.policies()
        .for_agent(&id, record.policy.as_deref())?
        .check_method(method)?;
    let sealer = match kind {
        TokenKind::Acme => Some(backend.token_sealer()?),
        _ => None,
    };
    let created = token::new_token(kind, id.as_str(), ttl, sealer, OffsetDateTime::now_utc())?;
    let store = ca.store();
    store.insert_token(&created.record)?;
    ca.audit().append(
        "token.created",
        json!({
            "id": created.record.id,
            "kind": kind_name(kind),
            "agent": created.record.agent_id,
            "expires_at": rfc3339(created.record.expires_at),
        }),
    )?;
    store.commit()?;
    ca.audit().sync()?;
    let expires = rfc3339(created.record.expires_at);
    let secret = created.secret.as_str();
    Ok(match kind {
        TokenKind::Acme => reply(
            format!(
                "kid:  {}\nhmac: {secret}\nEAB credential for {id}, single use, valid until {expires}",
                created.record.id
            ),
            json!({
                "kind": "acme",
                "agent": id.as_str(),
                "kid": created.record.id,
                "hmac": secret,
                "expires_at": expires,
            }),
        ),
        _ => reply(
            format!(
                "challenge: {secret}\nSCEP challenge for {id}, single use, valid until {expires}"
            ),
            json!({
                "kind": "scep",
                "agent": id.as_str(),
                "challenge": secret,
                "expires_at": expires,
            }),
        ),
    })
}

fn kind_name(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::Acme => "acme",
        _ => "scep",
    }
}

pub(crate) fn reply(text: impl Into<String>, json: Value) -> Reply {
    Reply {
        text: text.into(),
        note: None,
        json,
        success: true,
        artifact: None,
    }
}

fn agent_add(
    ca: &Ca,
    id: String,
    owner: Option<String>,
    policy: Option<String>,
    dns: Vec<String>,
) -> Result<Reply> {
    let id = SpiffeId::parse(&id)?;
    if id.trust_domain() != ca.config().trust_domain {
        return Err(Error::InvalidAgentId(format!(
            "{id} is in trust domain {}, this CA serves {}",
            id.trust_domain(),
            ca.config().trust_domain
        )));
    }
    for name in &dns {
        check_dns_name(name).map_err(|e| Error::InvalidArgument(format!("--dns {name:?}: {e}")))?;
    }
    let chosen = ca.policies().for_agent(&id, policy.as_deref())?;
    let record = AgentRecord {
        id: id.to_string(),
        owner,
        policy,
        dns,
        disabled: false,
        created_at: OffsetDateTime::now_utc(),
        early_renewal: None,
    };
    let store = ca.store();
    store.insert_agent(&record).map_err(|e| match e {
        StoreError::AlreadyExists { .. } => Error::AgentExists(id.to_string()),
        other => other.into(),
    })?;
    ca.audit()
        .append("agent.added", agent_json(&record, chosen.name()))?;
    store.commit()?;
    ca.audit().sync()?;
    Ok(reply(
        format!("added agent {id} (policy {})", chosen.name()),
        agent_json(&record, chosen.name()),
    ))
}

fn agent_list(ca: &Ca) -> Result<Reply> {
    let agents = ca.store().agents()?;
    let mut text = String::new();
    let mut docs = Vec::new();
    for a in &agents {
        let policy = policy_name(ca, a);
        text.push_str(&format!(
            "{}\t{}\tpolicy={}\towner={}\n",
            a.id,
            if a.disabled { "disabled" } else { "enabled" },
            policy,
            a.owner.as_deref().unwrap_or("-")
        ));
        docs.push(agent_json(a, &policy));
    }
    if agents.is_empty() {
        text.push_str("no agents\n");
    }
    Ok(reply(text, json!({ "agents": docs })))
}

fn agent_show(ca: &Ca, id: &str) -> Result<Reply> {
    SpiffeId::parse(id)?;
    let store = ca.store();
    let a = store
        .agent(id)?
        .ok_or_else(|| Error::UnknownAgent(id.to_owned()))?;
    let policy = policy_name(ca, &a);
    let certs = store.certificates(&CertificateFilter {
        agent_id: Some(a.id.clone()),
    })?;
    let valid = certs.iter().filter(|c| status(c) == "valid").count();
    let mut text = format!(
        "agent:        {}\nstatus:       {}\npolicy:       {}\nowner:        {}\ndns:          {}\ncreated:      {}\ncertificates: {} ({} valid)",
        a.id,
        if a.disabled { "disabled" } else { "enabled" },
        policy,
        a.owner.as_deref().unwrap_or("-"),
        if a.dns.is_empty() {
            "-".into()
        } else {
            a.dns.join(", ")
        },
        rfc3339(a.created_at),
        certs.len(),
        valid
    );
    if let Some(e) = a.early_renewal {
        let waiting = certs
            .iter()
            .filter(|c| status(c) == "valid" && e.applies_to(c))
            .count();
        text.push_str(&format!(
            "
renew early:  asked {} to renew within {}; {waiting} valid certificate(s) issued before",
            rfc3339(e.advised_at),
            format_duration(e.within())
        ));
    }
    let mut doc = agent_json(&a, &policy);
    doc["certificates"] = json!(certs.len());
    doc["valid_certificates"] = json!(valid);
    Ok(reply(text, doc))
}

fn agent_disable(ca: &Ca, id: &str) -> Result<Reply> {
    SpiffeId::parse(id)?;
    let store = ca.store();
    let (before, a) = agentca_core::store::change_agent(store.as_ref(), id, |a| a.disabled = true)?
        .ok_or_else(|| Error::UnknownAgent(id.to_owned()))?;
    let was = before.disabled;
    if !was {
        ca.audit()
            .append("agent.disabled", json!({ "agent": a.id }))?;
    }
    store.commit()?;
    ca.audit().sync()?;
    let policy = policy_name(ca, &a);
    Ok(reply(
        format!(
            "{} agent {id}; its certificates stay valid until revoked (agentca revoke --agent {id})",
            if was { "already disabled:" } else { "disabled" }
        ),
        agent_json(&a, &policy),
    ))
}

fn issue(backend: &dyn Backend, agent: &str, csr: &[u8], ttl: Option<&str>) -> Result<Reply> {
    let ttl = ttl
        .map(parse_duration)
        .transpose()
        .map_err(|e| Error::InvalidArgument(format!("--ttl: {e}")))?;
    let authority = backend.authority()?;
    let record = authority.issue_csr(agent, csr, EnrollmentMethod::Cli, ttl)?;
    backend.issued(&record);
    let chain_pem = format!(
        "{}{}",
        pem_cert(&record.der),
        pem_cert(authority.ca().cert_der())
    );
    let summary = format!(
        "issued {} for {}, valid {} to {}",
        record.intent.serial,
        record.intent.agent_id,
        rfc3339(record.intent.not_before),
        rfc3339(record.intent.not_after)
    );
    Ok(Reply {
        text: chain_pem.clone(),
        note: Some(summary),
        json: cert_json(&record, true),
        success: true,
        artifact: Some(Artifact {
            pem: chain_pem,
            der: None,
        }),
    })
}

/// Whether a revocation is carried out or only shown (`revoke --dry-run`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RevokeMode {
    Act,
    DryRun,
}

impl RevokeMode {
    /// Revokes `serial` for `reason`, or tells what that would revoke (changing nothing and
    /// needing no key); either way the certificate first, then for keyCompromise the others
    /// of its key.
    pub(crate) fn revoke(
        self,
        backend: &dyn Backend,
        serial: &Serial,
        reason: RevocationReason,
    ) -> Result<Vec<CertificateRecord>> {
        match self {
            Self::Act => match backend.authority()?.revoke_all(serial, reason) {
                Err(Error::AlreadyRevoked(s)) => {
                    // The revocation may have been recorded by an attempt whose reply failed:
                    // whoever keeps status elsewhere learns of it now (at no cost if it knew;
                    // none for an expired certificate, whose status nobody needs signed again).
                    if let Ok(Some(SerialEntry::Issued(record))) =
                        backend.ca().store().serial(serial)
                        && record.revocation.is_some()
                        && record.intent.not_after > OffsetDateTime::now_utc()
                    {
                        backend.revoked(std::slice::from_ref(&record));
                    }
                    Err(Error::AlreadyRevoked(s))
                }
                done => done,
            },
            Self::DryRun => agentca_core::issuer::revocation_preview(
                backend.ca().store().as_ref(),
                serial,
                reason,
            ),
        }
    }

    /// Hands what was revoked to whoever keeps status elsewhere; nothing for a dry run.
    pub(crate) fn published(self, backend: &dyn Backend, revoked: &[CertificateRecord]) {
        if self == Self::Act {
            backend.revoked(revoked);
        }
    }

    /// The verb of the text reply.
    pub(crate) fn verb(self) -> &'static str {
        match self {
            Self::Act => "revoked",
            Self::DryRun => "would revoke",
        }
    }

    /// The JSON key of the certificates concerned.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Self::Act => "revoked",
            Self::DryRun => "would_revoke",
        }
    }

    /// The reply, marked as a dry run where it is one.
    pub(crate) fn reply(self, text: String, mut json: Value) -> Reply {
        match self {
            Self::Act => reply(text, json),
            Self::DryRun => {
                json["dry_run"] = json!(true);
                reply(format!("dry run, nothing changed: {text}"), json)
            }
        }
    }
}

fn revoke_request(backend: &dyn Backend, mode: RevokeMode, target: RevokeTarget) -> Result<Reply> {
    let RevokeTarget {
        serial,
        agent,
        reason,
        replaced,
    } = target;
    let reason = parse_reason(&reason)?;
    let serial = serial.as_deref().map(parse_serial).transpose()?;
    if mode == RevokeMode::Act {
        // The key is needed whatever the targets turn out to be: a wrong passphrase fails
        // before anything is read.
        backend.authority()?;
    }
    if replaced {
        return crate::renewal::revoke_replaced(backend, mode, agent, reason);
    }
    match serial {
        Some(serial) => revoke_one(backend, mode, &serial, reason),
        None => revoke_agent(backend, mode, agent.unwrap_or_default(), reason),
    }
}

fn revoke_one(
    backend: &dyn Backend,
    mode: RevokeMode,
    serial: &Serial,
    reason: RevocationReason,
) -> Result<Reply> {
    let all = mode.revoke(backend, serial, reason)?;
    mode.published(backend, &all);
    let record = &all[0];
    let mut text = format!(
        "{} {serial} ({}) reason {reason}",
        mode.verb(),
        record.intent.agent_id
    );
    let mut json = cert_json(record, false);
    if mode == RevokeMode::DryRun {
        // The real reply names only the certificate asked for; what it would take along is
        // what a dry run is for.
        for other in &all[1..] {
            text.push_str(&format!(
                "\n  and {} ({}): the same key",
                other.intent.serial, other.intent.agent_id
            ));
        }
        json["same_key"] = all[1..].iter().map(|r| cert_json(r, false)).collect();
    }
    Ok(mode.reply(text, json))
}

fn revoke_agent(
    backend: &dyn Backend,
    mode: RevokeMode,
    agent: String,
    reason: RevocationReason,
) -> Result<Reply> {
    let store = backend.ca().store();
    if store.agent(&agent)?.is_none() {
        return Err(Error::UnknownAgent(agent));
    }
    let now = OffsetDateTime::now_utc();
    let targets: Vec<CertificateRecord> = store
        .certificates(&CertificateFilter {
            agent_id: Some(agent.clone()),
        })?
        .into_iter()
        .filter(|c| c.revocation.is_none() && c.intent.not_after > now)
        .collect();
    let mut revoked: Vec<CertificateRecord> = Vec::new();
    // A keyCompromise revocation takes the key's other certificates along (a dry run lists
    // them with every target of that key): each is counted once.
    let mut seen = std::collections::BTreeSet::new();
    for c in &targets {
        if seen.contains(&c.intent.serial) {
            continue;
        }
        match mode.revoke(backend, &c.intent.serial, reason) {
            Ok(all) => revoked.extend(all.into_iter().filter(|r| seen.insert(r.intent.serial))),
            // Revoked concurrently by someone else: the goal is reached.
            Err(Error::AlreadyRevoked(_)) => {}
            Err(e) => {
                mode.published(backend, &revoked);
                return Err(e);
            }
        }
    }
    mode.published(backend, &revoked);
    let text = format!(
        "{} {} certificate(s) of {agent}, reason {reason}{}",
        mode.verb(),
        revoked.len(),
        revoked
            .iter()
            .map(|r| format!("\n  {}", r.intent.serial))
            .collect::<String>()
    );
    let docs: Vec<Value> = revoked.iter().map(|r| cert_json(r, false)).collect();
    Ok(mode.reply(text, json!({ "agent": agent, mode.key(): docs })))
}

fn cert_list(ca: &Ca, agent: Option<String>, want: Option<&str>) -> Result<Reply> {
    if let Some(w) = want
        && !matches!(w, "valid" | "revoked" | "expired")
    {
        return Err(Error::InvalidArgument(format!(
            "--status {w:?}: one of valid, revoked, expired"
        )));
    }
    let certs = ca
        .store()
        .certificates(&CertificateFilter { agent_id: agent })?;
    let selected: Vec<&CertificateRecord> = certs
        .iter()
        .filter(|c| want.is_none_or(|w| status(c) == w))
        .collect();
    let mut text = String::new();
    for c in &selected {
        text.push_str(&format!(
            "{}\t{}\t{}\t{}\n",
            c.intent.serial,
            status(c),
            rfc3339(c.intent.not_after),
            c.intent.agent_id
        ));
    }
    if selected.is_empty() {
        text.push_str("no certificates\n");
    }
    let docs: Vec<Value> = selected.iter().map(|c| cert_json(c, false)).collect();
    Ok(reply(text, json!({ "certificates": docs })))
}

fn cert_show(ca: &Ca, serial: &str) -> Result<Reply> {
    let serial = parse_serial(serial)?;
    match ca.store().serial(&serial)? {
        Some(SerialEntry::Issued(c)) => {
            let mut text = format!(
                "serial:     {}\nagent:      {}\nstatus:     {}\nmethod:     {}\nnot before: {}\nnot after:  {}\nkey sha256: {}\n",
                c.intent.serial,
                c.intent.agent_id,
                status(&c),
                c.intent.method,
                rfc3339(c.intent.not_before),
                rfc3339(c.intent.not_after),
                c.intent.key_sha256
            );
            if let Some(r) = c.revocation {
                text.push_str(&format!(
                    "revoked:    {} ({})\n",
                    rfc3339(r.revoked_at),
                    r.reason
                ));
            }
            text.push_str(&pem_cert(&c.der));
            Ok(reply(text, cert_json(&c, true)))
        }
        Some(SerialEntry::Reserved(intent)) => Err(Error::UnknownSerial(format!(
            "{} (reserved for {} but no certificate was stored)",
            intent.serial, intent.agent_id
        ))),
        None => Err(Error::UnknownSerial(serial.to_hex())),
    }
}

fn crl(backend: &dyn Backend) -> Result<Reply> {
    let crl = backend.publish_crl()?;
    let pem = pem_encode("X509 CRL", &crl.der);
    let summary = format!(
        "CRL number {} with {} entries, valid until {}",
        crl.number,
        crl.entries,
        rfc3339(crl.next_update)
    );
    Ok(Reply {
        text: pem.clone(),
        note: Some(summary),
        json: json!({
            "number": crl.number,
            "this_update": rfc3339(crl.this_update),
            "next_update": rfc3339(crl.next_update),
            "entries": crl.entries,
            "bytes": crl.der.len(),
            "pem": pem,
        }),
        success: true,
        artifact: Some(Artifact {
            pem,
            der: Some(crl.der),
        }),
    })
}

/// Verifies the audit chain (and other nodes' chains) and reconciles them with the store.
pub(crate) fn audit_verify(
    store: &dyn Store,
    audit_log: &Path,
    other_logs: &[PathBuf],
    checkpoints: &[String],
    config: &agentca_core::ca::CaConfig,
) -> Result<Reply> {
    let checkpoints: Vec<Checkpoint> = checkpoints
        .iter()
        .map(|c| c.parse())
        .collect::<Result<_>>()?;
    let forgotten_before = config
        .keep_expired_certificates()?
        .map(|keep| OffsetDateTime::now_utc() - keep);
    let logs: Vec<&Path> = std::iter::once(audit_log)
        .chain(other_logs.iter().map(PathBuf::as_path))
        .collect();
    let (reports, rec) = reconcile::reconcile(store, &logs, forgotten_before, &checkpoints)?;
    let Some((report, others)) = reports.split_first() else {
        return Err(Error::Audit("reconciliation returned no report".into()));
    };
    let chain = |report: &agentca_core::audit::VerifyReport| {
        json!({
            "intact": report.is_intact(),
            "entries": report.entries,
            "head": report.head,
            "broken": report.broken.as_ref().map(|b| json!({
                "line": b.line,
                "seq": b.seq,
                "reason": b.reason.to_string(),
            })),
            "clock_steps_back": report.clock_steps_back_total,
            "torn_tail_bytes": report.torn_tail_bytes,
        })
    };
    let mut doc = chain(report);
    doc["other_logs"] = others
        .iter()
        .zip(other_logs)
        .map(|(r, path)| {
            let mut d = chain(r);
            d["path"] = json!(path.display().to_string());
            d
        })
        .collect::<Vec<_>>()
        .into();
    doc["checkpoints"] = json!(
        checkpoints
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    );
    doc["reconciliation"] = json!(rec);
    doc["consistent"] = json!(rec.is_consistent());
    let all_intact = reports.iter().all(|r| r.is_intact());
    let mut text = report.to_string();
    for (r, path) in others.iter().zip(other_logs) {
        text.push_str(&format!("\n{}: {r}", path.display()));
    }
    if all_intact {
        let lines = [
            (
                "issued per the audit log but missing from the store",
                &rec.issued_missing_from_store,
            ),
            (
                "revoked per the audit log but not in the store",
                &rec.revoked_missing_from_store,
            ),
            (
                "stored without an audit entry (in flight at a crash)",
                &rec.stored_without_audit,
            ),
            (
                "revoked without an audit entry (in flight at a crash)",
                &rec.revoked_without_audit,
            ),
            (
                "reserved serials without a certificate",
                &rec.orphaned_intents,
            ),
        ];
        for (what, serials) in lines {
            if !serials.is_empty() {
                text.push_str(&format!(
                    "\n{}: {what}: {}",
                    serials.len(),
                    serials.join(" ")
                ));
            }
        }
        if rec.forgotten_after_expiry > 0 {
            text.push_str(&format!(
                "\n{}: certificates forgotten after they expired (keep_expired_certificates)",
                rec.forgotten_after_expiry
            ));
        }
        if rec.is_consistent() {
            text.push_str(
                "\nstore and audit log agree on every acknowledged issuance and revocation",
            );
        }
    }
    Ok(Reply {
        text,
        note: None,
        json: doc,
        success: all_intact && rec.is_consistent(),
        artifact: None,
    })
}

/// The audit log's last entry as a checkpoint.
pub(crate) fn audit_checkpoint(audit_log: &Path) -> Result<Reply> {
    let checkpoint = agentca_core::audit::checkpoint_of(audit_log)?
        .ok_or_else(|| Error::Audit(format!("{} has no entry yet", audit_log.display())))?;
    Ok(Reply {
        text: checkpoint.to_string(),
        note: None,
        json: json!({
            "checkpoint": checkpoint.to_string(),
            "seq": checkpoint.seq,
            "hash": checkpoint.hash,
        }),
        success: true,
        artifact: None,
    })
}

pub(crate) fn policy_name(ca: &Ca, a: &AgentRecord) -> String {
    SpiffeId::parse(&a.id)
        .ok()
        .and_then(|id| ca.policies().for_agent(&id, a.policy.as_deref()).ok())
        .map_or_else(|| "(none)".to_owned(), |p| p.name().to_owned())
}

fn agent_json(a: &AgentRecord, policy: &str) -> Value {
    json!({
        "id": a.id,
        "owner": a.owner,
        "policy": policy,
        "explicit_policy": a.policy,
        "dns": a.dns,
        "disabled": a.disabled,
        "created_at": rfc3339(a.created_at),
        "early_renewal": a.early_renewal.map(|e| json!({
            "advised_at": rfc3339(e.advised_at),
            "within": format_duration(e.within()),
        })),
    })
}

fn status(c: &CertificateRecord) -> &'static str {
    if c.revocation.is_some() {
        "revoked"
    } else if c.intent.not_after <= now() {
        "expired"
    } else {
        "valid"
    }
}

pub(crate) fn cert_json(c: &CertificateRecord, with_pem: bool) -> Value {
    let mut doc = json!({
        "serial": c.intent.serial.to_hex(),
        "agent": c.intent.agent_id,
        "status": status(c),
        "method": c.intent.method.to_string(),
        "not_before": rfc3339(c.intent.not_before),
        "not_after": rfc3339(c.intent.not_after),
        "lifetime": format_duration(c.intent.not_after - c.intent.not_before - agentca_core::profile::BACKDATE),
        "key_sha256": c.intent.key_sha256,
        "revoked_at": c.revocation.map(|r| rfc3339(r.revoked_at)),
        "revocation_reason": c.revocation.map(|r| r.reason.name()),
    });
    if with_pem {
        doc["certificate_pem"] = json!(pem_cert(&c.der));
    }
    doc
}

fn parse_reason(reason: &str) -> Result<RevocationReason> {
    reason
        .parse()
        .map_err(|e: agentca_core::store::InvalidReason| Error::InvalidArgument(e.to_string()))
}

fn parse_serial(s: &str) -> Result<Serial> {
    s.parse()
        .map_err(|e| Error::InvalidArgument(format!("serial {s:?}: {e}")))
}

fn pem_cert(der: &[u8]) -> String {
    pem_encode("CERTIFICATE", der)
}

/// PEM with LF line endings (the `pem` crate's default is CRLF).
fn pem_encode(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

mod base64_bytes_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        bytes: &Option<Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => super::base64_bytes::serialize(b, s),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        use base64::Engine;
        Option::<String>::deserialize(d)?
            .map(|s| base64::engine::general_purpose::STANDARD.decode(s))
            .transpose()
            .map_err(serde::de::Error::custom)
    }
}

mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}
