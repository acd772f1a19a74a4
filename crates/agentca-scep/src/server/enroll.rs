//! The blocking part of a PKIOperation: dispatch, authentication and staging an issuance.

use std::net::IpAddr;

use agentca_core::csr::CertificateRequest;
use agentca_core::issuer::{IssueRequest, StagedIssuance};
use agentca_core::store::{EnrollmentMethod, ScepTransaction, SerialEntry, StoreError};
use agentca_core::token;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::in_progress::Guard;
use super::{Answer, Refusal, RequestKind, ScepReply, ScepService};
use crate::alg::ContentCipher;
use crate::attr::{FailInfo, MessageType};
use crate::certrep::{CertRep, CertRepStatus};
use crate::message::{PkiMessage, ReplyTo, UnverifiedMessage};

/// Where the blocking part left a request.
pub(super) enum Step {
    /// Answered.
    Done(RequestKind, ScepReply, Answer),
    /// A certificate is staged; it is sent once durable.
    Issuing(RequestKind, Box<Issuing>),
}

/// A staged certificate and what its SUCCESS needs.
pub(super) struct Issuing {
    pub(super) staged: StagedIssuance,
    pub(super) reply_to: ReplyTo,
    pub(super) cipher: ContentCipher,
    /// Held until the certificate is durable, so a concurrent copy of the request waits for
    /// the transaction record instead of issuing again.
    pub(super) guard: Guard,
}

/// Who a certificate request is for, once authenticated.
struct Requester {
    agent_id: String,
    /// The one-time token to consume (PKCSReq).
    token_id: Option<String>,
}

impl ScepService {
    pub(super) fn handle(&self, body: &[u8], client: Option<IpAddr>) -> Step {
        let message = match UnverifiedMessage::parse(body) {
            Ok(m) => m,
            Err(e) => {
                tracing::info!(error = %e, "SCEP PKIOperation is not a pkiMessage");
                return Step::Done(
                    RequestKind::Unparseable,
                    ScepReply::BadInput(format!("not a SCEP pkiMessage: {e}")),
                    Answer::BadInput,
                );
            }
        };
        let kind = RequestKind::of(message.message_type());
        // The allow-list. Its default arm refuses before any signature is checked.
        match message.message_type() {
            MessageType::PkcsReq | MessageType::RenewalReq | MessageType::GetCrl => {}
            other => {
                return self.failure(
                    kind,
                    &message.reply_to(),
                    Refusal::bad_request(format!("messageType {other} is not served")),
                    client,
                );
            }
        }
        let pki = match message.verify(&self.options) {
            Ok(pki) => pki,
            Err(e) => {
                let refusal = Refusal::new(e.fail_info(), format!("signature: {e}"));
                return self.failure(kind, &message.reply_to(), refusal, client);
            }
        };
        let reply_to = pki.reply_to();
        if !pki.signer_can_receive_envelope() {
            let refusal = Refusal::new(
                FailInfo::BadAlg,
                "the signer's key is not RSA, so no reply envelope could reach it",
            );
            return self.failure(kind, &reply_to, refusal, client);
        }
        let request = match pki.decrypt(&self.ra, &self.options) {
            Ok(r) => r,
            Err(e) => {
                let refusal = Refusal::new(e.fail_info(), format!("envelope: {e}"));
                return self.failure(kind, &reply_to, refusal, client);
            }
        };
        let result = match pki.message_type() {
            MessageType::GetCrl => self.get_crl(&reply_to, request.cipher),
            MessageType::PkcsReq | MessageType::RenewalReq => {
                self.enroll(kind, &pki, &reply_to, &request.csr, request.cipher)
            }
            _ => Err(Refusal::bad_request("messageType is not served")),
        };
        match result {
            Ok(step) => step,
            Err(refusal) => self.failure(kind, &reply_to, refusal, client),
        }
    }

    /// GetCRL (RFC 8894 §3.3.4): the CRL being served. This CA has one CRL for every
    /// certificate it issued, so the IssuerAndSerialNumber asked about selects nothing.
    fn get_crl(&self, reply_to: &ReplyTo, cipher: ContentCipher) -> Result<Step, Refusal> {
        let crl = self
            .events
            .current_crl()
            .ok_or_else(|| Refusal::bad_request("no CRL has been published yet"))?;
        let encoded = CertRep {
            reply_to,
            status: CertRepStatus::Crl { cipher, crl: &crl },
            signing_time: Some(std::time::SystemTime::now()),
        }
        .encode(&self.ra, &self.options)
        .map_err(|e| Refusal::new(e.fail_info(), format!("CRL reply: {e}")))?;
        Ok(Step::Done(
            RequestKind::GetCrl,
            ScepReply::CertRep(encoded),
            Answer::Success,
        ))
    }

    fn enroll(
        &self,
        kind: RequestKind,
        pki: &PkiMessage,
        reply_to: &ReplyTo,
        csr_der: &[u8],
        cipher: ContentCipher,
    ) -> Result<Step, Refusal> {
        let csr = CertificateRequest::from_der(csr_der)
            .map_err(|e| Refusal::bad_request(format!("certification request: {e}")))?;
        let transaction_id = pki.transaction_id().as_str().to_owned();
        let request_key = request_key(&csr, pki.signer_certificate(), &transaction_id);
        let store = self.authority.store();
        let Some(guard) = self.in_progress.claim(&request_key) else {
            return Err(Refusal::bad_request(
                "the same transaction is being answered; retry it",
            ));
        };
        if let Some(done) = store
            .scep_transaction(&request_key)
            .map_err(store_refusal)?
        {
            return self.retried(kind, reply_to, cipher, &done);
        }

        let now = OffsetDateTime::now_utc();
        let requester = match pki.message_type() {
            MessageType::PkcsReq => self.challenged_or_renewing(&csr, pki, now)?,
            _ => self.renewing(pki.signer_certificate(), now)?,
        };
        let issue = IssueRequest {
            agent_id: &requester.agent_id,
            csr: &csr,
            method: EnrollmentMethod::Scep,
            lifetime: None,
            validated_dns: &[],
            validated_ips: &[],
            csr_key_thumbprint: None,
        };
        self.authority.precheck(&issue).map_err(core_refusal)?;
        let mut consumed = None;
        if let Some(token_id) = &requester.token_id {
            match store.consume_token(token_id, now) {
                Ok(token) => consumed = token.consumed_at.map(|at| (token_id, at)),
                Err(StoreError::Conflict { .. }) => {
                    return Err(Refusal::bad_request("the challenge was already used"));
                }
                Err(StoreError::NotFound { .. }) => {
                    return Err(Refusal::bad_request("the challenge is not known"));
                }
                Err(e) => return Err(store_refusal(e)),
            }
        }
        let staged = self.authority.stage_issue(&issue, |record| {
            store
                .record_scep_transaction(&ScepTransaction {
                    request_key: request_key.clone(),
                    transaction_id: transaction_id.clone(),
                    serial: record.intent.serial,
                    agent_id: record.intent.agent_id.clone(),
                    created_at: record.issued_at,
                })
                .map_err(agentca_core::Error::from)
        });
        match staged {
            Ok(staged) => Ok(Step::Issuing(
                kind,
                Box::new(Issuing {
                    staged,
                    reply_to: reply_to.clone(),
                    cipher,
                    guard,
                }),
            )),
            Err(e) => {
                // Refused before anything was signed (the hourly quota, which the precheck
                // cannot take without spending it; a policy changed since), or the CA's key
                // failed (a token away, a faulty signer): nothing was issued for this request,
                // so its challenge is given back for the client's retry (SCEP-2).
                if nothing_issued(&e)
                    && let Some((token_id, at)) = consumed
                {
                    match store.restore_token(token_id, at) {
                        Ok(_) => {}
                        Err(restore) => {
                            tracing::warn!(error = %restore, "could not give a challenge back")
                        }
                    }
                }
                // Otherwise a consumed challenge stays consumed: durable before the answer.
                if consumed.is_some()
                    && let Err(commit) = store.commit()
                {
                    tracing::warn!(error = %commit, "could not make a consumed challenge durable");
                }
                Err(core_refusal(e))
            }
        }
    }

    /// PKCSReq: a live challenge names the agent; without one, a PKCSReq signed by a current
    /// certificate of ours is a renewal. certmonger renews that way (a PKCSReq signed with the
    /// certificate it holds, the spent challenge still in its CSR, also where RenewalReq is
    /// advertised); a signer that would pass as a RenewalReq's gains nothing more by it. When
    /// neither holds, the answer names the challenge's fault, the one a client can fix.
    fn challenged_or_renewing(
        &self,
        csr: &CertificateRequest,
        pki: &PkiMessage,
        now: OffsetDateTime,
    ) -> Result<Requester, Refusal> {
        match self.challenged(csr, now) {
            Ok(requester) => Ok(requester),
            Err(refusal) if refusal.fail_info.is_none() => Err(refusal),
            Err(refusal) => match self.renewing(pki.signer_certificate(), now) {
                Ok(requester) => {
                    tracing::info!(
                        agent = %requester.agent_id,
                        "SCEP PKCSReq without a live challenge renews the certificate that signed it"
                    );
                    Ok(requester)
                }
                Err(renewal) if renewal.fail_info.is_none() => Err(renewal),
                // A signer we never issued (the usual transient certificate) says nothing
                // more; one of ours that is revoked or expired is worth the log's mention.
                Err(renewal) if renewal.fail_info == Some(FailInfo::BadMessageCheck) => {
                    Err(refusal)
                }
                Err(renewal) => Err(Refusal {
                    fail_info: refusal.fail_info,
                    reason: format!("{}; {}", refusal.reason, renewal.reason),
                }),
            },
        }
    }

    /// The challengePassword must be a live SCEP token; it names the agent.
    fn challenged(
        &self,
        csr: &CertificateRequest,
        now: OffsetDateTime,
    ) -> Result<Requester, Refusal> {
        let challenge = csr
            .challenge_password()
            .ok_or_else(|| Refusal::bad_request("PKCSReq without a challengePassword"))?;
        let id = token::scep_token_id(challenge);
        let record = self
            .authority
            .store()
            .token(&id)
            .map_err(store_refusal)?
            .filter(|t| token::scep_challenge_matches(t, challenge))
            .ok_or_else(|| Refusal::bad_request("the challenge is not known"))?;
        if record.consumed_at.is_some() {
            return Err(Refusal::bad_request("the challenge was already used"));
        }
        if record.expires_at <= now {
            return Err(Refusal::bad_request("the challenge has expired"));
        }
        Ok(Requester {
            agent_id: record.agent_id,
            token_id: Some(record.id),
        })
    }

    /// RenewalReq: the signer must be a certificate we issued, still current.
    fn renewing(&self, signer: &[u8], now: OffsetDateTime) -> Result<Requester, Refusal> {
        let not_ours = || {
            Refusal::new(
                FailInfo::BadMessageCheck,
                "the renewal is not signed by a certificate this CA issued",
            )
        };
        let (_, cert) = X509Certificate::from_der(signer).map_err(|_| not_ours())?;
        let serial = <[u8; 16]>::try_from(cert.raw_serial())
            .ok()
            .and_then(agentca_core::store::Serial::from_bytes)
            .ok_or_else(not_ours)?;
        let Some(SerialEntry::Issued(record)) = self
            .authority
            .store()
            .serial(&serial)
            .map_err(store_refusal)?
        else {
            return Err(not_ours());
        };
        // What we stored under that serial, byte for byte: this also proves our signature.
        if record.der != signer {
            return Err(not_ours());
        }
        if record.revocation.is_some() {
            return Err(Refusal::bad_request(
                "the renewal is signed by a revoked certificate",
            ));
        }
        if now < record.intent.not_before || now > record.intent.not_after {
            return Err(Refusal::new(
                FailInfo::BadTime,
                "the renewal is signed by a certificate outside its validity",
            ));
        }
        Ok(Requester {
            agent_id: record.intent.agent_id,
            token_id: None,
        })
    }

    /// A transaction that already issued: its certificate again, if it still stands.
    fn retried(
        &self,
        kind: RequestKind,
        reply_to: &ReplyTo,
        cipher: ContentCipher,
        done: &ScepTransaction,
    ) -> Result<Step, Refusal> {
        let entry = self
            .authority
            .store()
            .serial(&done.serial)
            .map_err(store_refusal)?;
        let Some(SerialEntry::Issued(record)) = entry else {
            return Err(Refusal::bad_request(
                "the transaction's certificate is not recorded",
            ));
        };
        if record.revocation.is_some() {
            return Err(Refusal::bad_request(
                "the transaction's certificate was revoked",
            ));
        }
        tracing::info!(
            serial = %record.intent.serial,
            transaction = %done.transaction_id,
            "SCEP transaction retried: the same certificate is sent again"
        );
        let bytes = self
            .success(reply_to, cipher, &record.der)
            .map_err(|e| Refusal::new(e.fail_info(), format!("reply: {e}")))?;
        Ok(Step::Done(kind, ScepReply::CertRep(bytes), Answer::Success))
    }
}

/// What makes a request a retry of an earlier one (RFC 8894 §3.3.1: the same message sent
/// again): the same requested key, signer certificate and transactionID. The signer matters
/// because clients derive the transactionID from the key, so a renewal that keeps its key
/// repeats the transactionID of the enrollment before it; it is signed by a newer certificate.
/// Each part is hashed to a fixed length first, so no two different triples meet.
fn request_key(csr: &CertificateRequest, signer: &[u8], transaction_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(csr.key_sha256());
    hash.update(Sha256::digest(signer));
    hash.update(Sha256::digest(transaction_id.as_bytes()));
    hex::encode(hash.finalize())
}

/// The one mapping from the core's errors to answers: a refusal of the request's content is
/// `badRequest` (the reason goes to the log); a failure of the CA itself (store, signer, audit
/// log) is no verdict on the request, so it gets 503 and may be retried.
fn core_refusal(e: agentca_core::Error) -> Refusal {
    use agentca_core::Error;
    match e {
        Error::Store(e) => store_refusal(e),
        Error::Signing(_)
        | Error::Pkcs11(_)
        | Error::KeyFile { .. }
        | Error::DataDir { .. }
        | Error::Audit(_)
        | Error::Io { .. }
        | Error::Unreachable(_) => Refusal::unavailable(e.to_string()),
        _ => Refusal::bad_request(e.to_string()),
    }
}

fn store_refusal(e: StoreError) -> Refusal {
    Refusal::unavailable(format!("store: {e}"))
}

/// Whether an issuance that failed with `e` stopped before the CA's key signed anything: a
/// refusal of the request, or a failure of the key itself. Errors of the store or the audit
/// log are not among them: after those, what was written is not known.
fn nothing_issued(e: &agentca_core::Error) -> bool {
    use agentca_core::Error;
    matches!(
        e,
        Error::RateLimited { .. }
            | Error::PolicyRefused { .. }
            | Error::UnknownAgent(_)
            | Error::AgentDisabled(_)
            | Error::BadCsr(_)
            | Error::UnsupportedKey(_)
            | Error::InvalidLifetime(_)
            | Error::ProfileViolation(_)
            | Error::Signing(_)
            | Error::Pkcs11(_)
    )
}
