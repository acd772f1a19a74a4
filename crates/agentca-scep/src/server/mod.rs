//! The SCEP front end (RFC 8894 §3, §4): what `/scep` answers, over the message layer.
//!
//! Roles stay apart as in the ACME front end: this module parses, authenticates and maps
//! answers to CertReps; the core's [`Authority`] decides and signs; the store records. A
//! request goes through [`ScepService::pki_operation`]:
//!
//! 1. input that does not parse as a pkiMessage gets HTTP 400 (there is no transactionID and
//!    senderNonce to address a CertRep to); everything else gets a signed CertRep, HTTP 200;
//! 2. the messageType is matched against an allow-list (PKCSReq, RenewalReq, GetCRL) whose
//!    default arm answers FAILURE `badRequest` — before any signature check, so a refused
//!    type costs one RA signature and never reaches the CA;
//! 3. the signer is verified, the envelope opened with the RA key (one uniform failure);
//! 4. PKCSReq: the challengePassword names a one-time token, compared in constant time; the
//!    request is checked against policy *before* the token is consumed (a request policy
//!    would refuse does not burn the challenge), then the token is consumed atomically, then
//!    the certificate is signed and made durable with the consumed token and the transaction
//!    record in the same flush ([`Authority::commit_staged`]); only then is SUCCESS sent.
//!    Without a live challenge, a PKCSReq whose signer would pass step 5 is a renewal
//!    (certmonger renews with a PKCSReq signed by its certificate);
//! 5. RenewalReq: the signer must be a certificate this CA issued (byte for byte the stored
//!    one), unexpired and unrevoked; the new certificate goes to the same agent, under the
//!    same policy; no challenge;
//! 6. a request that already issued a certificate — same requested key, signer certificate
//!    and transactionID — gets that certificate again (RFC 8894 §3.3.1 retries), without a
//!    signature by the CA.
//!
//! failInfo mapping (RFC 8894 §3.2.1.4 has five values): integrity (signature, digest,
//! decryption, a renewal signer we did not issue) → `badMessageCheck`; algorithms, including a
//! signer key that cannot receive an RSA envelope → `badAlg`; an expired or not yet valid
//! renewal signer → `badTime`; everything else (challenge wrong, used, expired or unknown;
//! policy refusals; unsupported types) → `badRequest`.

mod enroll;
mod http;
mod in_progress;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use agentca_core::issuer::{Authority, InFlightGuard};
use agentca_core::store::{CertificateRecord, blocking_section};

use crate::alg::{ContentCipher, ScepOptions};
use crate::attr::{FailInfo, MessageType};
use crate::certrep::{CertRep, CertRepStatus};
use crate::key::RaIdentity;
use crate::message::ReplyTo;

pub use http::router;

use in_progress::InProgress;

/// What the front end tells the rest of the service.
pub trait ScepEvents: Send + Sync {
    /// A certificate was issued and is durable (pre-sign its OCSP responses).
    fn issued(&self, record: &CertificateRecord);
    /// The CRL being served (DER), for GetCRL.
    fn current_crl(&self) -> Option<Vec<u8>>;
    /// A PKIOperation was answered (for metrics).
    fn answered(&self, request: RequestKind, answer: Answer) {
        let _ = (request, answer);
    }
}

/// The kind of a PKIOperation, as far as it could be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RequestKind {
    /// PKCSReq.
    PkcsReq,
    /// RenewalReq.
    RenewalReq,
    /// GetCRL.
    GetCrl,
    /// A messageType that is not served.
    Unsupported,
    /// Not a pkiMessage at all.
    Unparseable,
}

impl RequestKind {
    /// A metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PkcsReq => "pkcs_req",
            Self::RenewalReq => "renewal_req",
            Self::GetCrl => "get_crl",
            Self::Unsupported => "unsupported",
            Self::Unparseable => "unparseable",
        }
    }

    fn of(message_type: MessageType) -> Self {
        match message_type {
            MessageType::PkcsReq => Self::PkcsReq,
            MessageType::RenewalReq => Self::RenewalReq,
            MessageType::GetCrl => Self::GetCrl,
            _ => Self::Unsupported,
        }
    }
}

/// How a PKIOperation was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Answer {
    /// CertRep SUCCESS.
    Success,
    /// CertRep FAILURE with this failInfo.
    Failure(FailInfo),
    /// HTTP 400: not a pkiMessage.
    BadInput,
    /// HTTP 503: the CA could not complete the request (store or signer failure).
    Unavailable,
}

impl Answer {
    /// A metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure(FailInfo::BadAlg) => "bad_alg",
            Self::Failure(FailInfo::BadMessageCheck) => "bad_message_check",
            Self::Failure(FailInfo::BadTime) => "bad_time",
            Self::Failure(FailInfo::BadCertId) => "bad_cert_id",
            Self::Failure(_) => "bad_request",
            Self::BadInput => "bad_input",
            Self::Unavailable => "unavailable",
        }
    }
}

/// The HTTP-independent answer to a PKIOperation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScepReply {
    /// A signed CertRep (HTTP 200, `application/x-pki-message`).
    CertRep(Vec<u8>),
    /// Not a pkiMessage (HTTP 400), with the reason.
    BadInput(String),
    /// The CA could not finish (HTTP 503), with the reason; the request can be retried.
    Unavailable(String),
}

/// The SCEP service of one CA.
pub struct ScepService {
    authority: Arc<Authority>,
    ra: RaIdentity,
    /// The issuing CA certificate, then the root (DER), for GetCACert.
    ca_chain: Vec<Vec<u8>>,
    options: ScepOptions,
    events: Arc<dyn ScepEvents>,
    in_progress: InProgress,
}

impl std::fmt::Debug for ScepService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScepService")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Why a request was not granted: the CertRep's failInfo (none when the CA itself failed:
/// HTTP 503), and a reason for the log (never the challenge itself).
#[derive(Debug)]
struct Refusal {
    fail_info: Option<FailInfo>,
    reason: String,
}

impl Refusal {
    fn new(fail_info: FailInfo, reason: impl Into<String>) -> Self {
        Self {
            fail_info: Some(fail_info),
            reason: reason.into(),
        }
    }

    fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(FailInfo::BadRequest, reason)
    }

    fn unavailable(reason: impl Into<String>) -> Self {
        Self {
            fail_info: None,
            reason: reason.into(),
        }
    }
}

impl ScepService {
    /// A service answering with `ra` (the RSA RA identity that decrypts envelopes and signs
    /// CertReps) for the CA of `authority`, whose chain `ca_chain` (issuing CA first, DER) is
    /// served by GetCACert.
    pub fn new(
        authority: Arc<Authority>,
        ra: RaIdentity,
        ca_chain: Vec<Vec<u8>>,
        options: ScepOptions,
        events: Arc<dyn ScepEvents>,
    ) -> Self {
        Self {
            authority,
            ra,
            ca_chain,
            options,
            events,
            in_progress: InProgress::default(),
        }
    }

    /// The algorithm options in force.
    pub fn options(&self) -> &ScepOptions {
        &self.options
    }

    /// Forgets transaction records nothing can still need (the rule:
    /// [`agentca_core::retention`]; a record's own use is a client's retry, minutes at most),
    /// at most [`agentca_core::retention::PASS_LIMIT`] of them; returns how many. Blocking.
    pub fn forget_old_transactions(
        &self,
        now: time::OffsetDateTime,
    ) -> agentca_core::store::Result<u64> {
        let before = agentca_core::retention::forget_created_before(
            now,
            time::Duration::ZERO,
            self.authority.policies(),
        );
        self.authority
            .store()
            .purge_scep_transactions(before, agentca_core::retention::PASS_LIMIT)
    }

    /// The GetCACaps body.
    pub fn ca_caps(&self) -> String {
        crate::caps::ca_caps_text(&crate::caps::implemented_capabilities(&self.options))
    }

    /// The GetCACert body (`application/x-x509-ca-ra-cert`): the RA certificate, then the CA
    /// chain.
    pub fn ca_certs(&self) -> crate::error::Result<Vec<u8>> {
        crate::certs::get_ca_cert_response(self.ra.certificate(), &self.ca_chain)
    }

    /// Answers a PKIOperation body (DER or BER). The whole request runs on one blocking
    /// thread: RSA, the store, the wait for the commit thread (about a millisecond) and the
    /// reply's signature. Handing the request from thread to thread around that wait cost more
    /// CPU than holding the thread does.
    /// `client` is the requester's address, for the audit log's record of a refusal.
    pub async fn pki_operation(
        self: &Arc<Self>,
        body: Vec<u8>,
        client: Option<IpAddr>,
    ) -> ScepReply {
        let in_flight = self.authority.in_flight().enter();
        let worker = self.clone();
        match tokio::task::spawn_blocking(move || {
            blocking_section(|| worker.answer(&body, &in_flight, client))
        })
        .await
        {
            Ok(reply) => reply,
            Err(e) => self.unavailable(RequestKind::Unparseable, format!("request task: {e}")),
        }
    }

    /// [`ScepService::pki_operation`] on the blocking thread.
    fn answer(&self, body: &[u8], in_flight: &InFlightGuard, client: Option<IpAddr>) -> ScepReply {
        let (kind, issuing) = match self.handle(body, client) {
            enroll::Step::Done(kind, reply, answer) => {
                self.events.answered(kind, answer);
                return reply;
            }
            enroll::Step::Issuing(kind, issuing) => (kind, issuing),
        };
        let enroll::Issuing {
            staged,
            reply_to,
            cipher,
            guard,
        } = *issuing;
        let (tell, durable) = std::sync::mpsc::sync_channel(1);
        self.authority
            .commit_staged(staged, in_flight, move |result| {
                let _ = tell.send(result);
            });
        let durable = durable
            .recv()
            .unwrap_or(Err(agentca_core::Error::Unreachable(
                "the commit thread dropped a job",
            )));
        drop(guard);
        match durable {
            Ok(record) => {
                tracing::info!(
                    serial = %record.intent.serial,
                    agent = %record.intent.agent_id,
                    transaction = %reply_to.transaction_id().as_str(),
                    "SCEP certificate issued"
                );
                self.events.issued(&record);
                match self.success(&reply_to, cipher, &record.der) {
                    Ok(bytes) => {
                        self.events.answered(kind, Answer::Success);
                        ScepReply::CertRep(bytes)
                    }
                    Err(e) => self.unavailable(kind, format!("encode CertRep: {e}")),
                }
            }
            Err(e) => self.unavailable(kind, format!("the certificate was not recorded: {e}")),
        }
    }

    /// A SUCCESS CertRep with `certificate` and its chain (issuing CA certificate).
    fn success(
        &self,
        reply_to: &ReplyTo,
        cipher: ContentCipher,
        certificate: &[u8],
    ) -> crate::error::Result<Vec<u8>> {
        let mut certificates = vec![certificate.to_vec()];
        certificates.extend(self.ca_chain.first().cloned());
        CertRep {
            reply_to,
            status: CertRepStatus::Success {
                cipher,
                certificates: &certificates,
            },
            signing_time: Some(SystemTime::now()),
        }
        .encode(&self.ra, &self.options)
    }

    /// A FAILURE CertRep, or 503 if the CA failed or even that cannot be signed.
    fn failure(
        &self,
        kind: RequestKind,
        reply_to: &ReplyTo,
        refusal: Refusal,
        client: Option<IpAddr>,
    ) -> enroll::Step {
        let Some(fail_info) = refusal.fail_info else {
            tracing::warn!(
                request = kind.as_str(),
                transaction = %reply_to.transaction_id().as_str(),
                reason = %refusal.reason,
                "SCEP request failed"
            );
            return enroll::Step::Done(
                kind,
                ScepReply::Unavailable(refusal.reason),
                Answer::Unavailable,
            );
        };
        tracing::info!(
            request = kind.as_str(),
            transaction = %reply_to.transaction_id().as_str(),
            fail_info = fail_info.name(),
            reason = %refusal.reason,
            "SCEP request refused"
        );
        self.record_refusal(serde_json::json!({
            "client": client.map(|ip| ip.to_string()),
            "request": kind.as_str(),
            "transaction": reply_to.transaction_id().as_str(),
            "fail_info": fail_info.name(),
            "reason": refusal.reason,
        }));
        let encoded = CertRep {
            reply_to,
            status: CertRepStatus::Failure(fail_info),
            signing_time: Some(SystemTime::now()),
        }
        .encode(&self.ra, &self.options);
        match encoded {
            Ok(bytes) => {
                enroll::Step::Done(kind, ScepReply::CertRep(bytes), Answer::Failure(fail_info))
            }
            Err(e) => enroll::Step::Done(
                kind,
                ScepReply::Unavailable(format!("encode CertRep: {e}")),
                Answer::Unavailable,
            ),
        }
    }

    /// Records a refused request in the audit log ([`agentca_core::refusals`]).
    fn record_refusal(&self, fields: serde_json::Value) {
        if let Err(e) = self.authority.refusals().record("scep.refused", fields) {
            tracing::warn!(error = %e, "a SCEP refusal could not be recorded in the audit log");
        }
    }

    fn unavailable(&self, kind: RequestKind, reason: String) -> ScepReply {
        tracing::warn!(request = kind.as_str(), %reason, "SCEP request failed");
        self.events.answered(kind, Answer::Unavailable);
        ScepReply::Unavailable(reason)
    }
}
