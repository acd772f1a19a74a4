//! Certificate status from the store, signed as OCSP responses.
//!
//! The rules (design §5; security-test-plan.md REV-1…REV-3):
//! - `good` only for a serial the store holds as issued and not revoked;
//! - `revoked` with the time and reason the store holds;
//! - `unknown` for every other serial of our issuer, including a serial that was reserved but
//!   whose certificate was never stored (it was never acknowledged to anyone, and must never
//!   look `good`);
//! - `unauthorized` (unsigned) when a request names an issuer other than ours;
//! - `malformedRequest` (unsigned) for anything that does not parse.

use std::sync::Arc;

use time::{Duration, OffsetDateTime};

use crate::error::{Error, Result};
use crate::ocsp::{
    self, CertId, CertStatus, IssuerHashes, OcspResponseStatus, Responder, ResponderIdentity,
    SingleStatus,
};
use crate::profile::whole_seconds;
use crate::signer::Signer;
use crate::store::{CertificateRecord, Serial, SerialEntry, Store};

/// How long a response is valid by default. BR §4.9.10 asks for 8 hours to 10 days for
/// subscriber certificates; agents' certificates live about a day, so 8 hours.
pub const DEFAULT_VALIDITY: Duration = Duration::hours(8);

/// Answers status questions about the issuing CA's certificates.
pub struct StatusResponder {
    signer: Arc<dyn Signer>,
    identity: ResponderIdentity,
    issuer: IssuerHashes,
    validity: Duration,
}

/// What a stored certificate's record says of its status.
pub fn status_of(record: &CertificateRecord) -> CertStatus {
    match &record.revocation {
        Some(r) => CertStatus::Revoked {
            revoked_at: r.revoked_at,
            reason: Some(r.reason),
        },
        None => CertStatus::Good,
    }
}

impl std::fmt::Debug for StatusResponder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusResponder")
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

impl StatusResponder {
    /// A responder for the issuing CA `issuer_cert_der`, signing with the delegated responder
    /// key and certificate. Fails if the certificate does not match the key.
    pub fn new(
        signer: Arc<dyn Signer>,
        responder_cert_der: Vec<u8>,
        issuer_cert_der: &[u8],
        validity: Duration,
    ) -> Result<Self> {
        Ok(Self {
            identity: ResponderIdentity::new(signer.as_ref(), &responder_cert_der)?,
            signer,
            issuer: IssuerHashes::from_issuer_der(issuer_cert_der)?,
            validity,
        })
    }

    /// The issuer hashes requests must carry.
    pub fn issuer(&self) -> &IssuerHashes {
        &self.issuer
    }

    /// The status of one certificate, or `None` if the CertID names another issuer.
    pub fn status(&self, store: &dyn Store, cert_id: &CertId) -> Result<Option<CertStatus>> {
        if !self.issuer.matches(cert_id) {
            return Ok(None);
        }
        let Some(serial) = <[u8; Serial::LEN]>::try_from(cert_id.serial.as_slice())
            .ok()
            .and_then(Serial::from_bytes)
        else {
            // Not the shape of any serial we hand out.
            return Ok(Some(CertStatus::Unknown));
        };
        Ok(Some(match store.serial(&serial)? {
            Some(SerialEntry::Issued(record)) => status_of(&record),
            Some(SerialEntry::Reserved(_)) | None => CertStatus::Unknown,
        }))
    }

    /// Signs a response for `cert_ids` (all of our issuer) as of `now`.
    pub fn respond(
        &self,
        store: &dyn Store,
        cert_ids: &[CertId],
        nonce: Option<&[u8]>,
        now: OffsetDateTime,
    ) -> Result<Vec<u8>> {
        let now = whole_seconds(now);
        let mut statuses = Vec::with_capacity(cert_ids.len());
        for id in cert_ids {
            let status = self.status(store, id)?.ok_or(Error::Unreachable(
                "respond() is only called for our issuer",
            ))?;
            statuses.push(self.single(id.clone(), status, now));
        }
        self.responder().respond(&statuses, now, nonce)
    }

    /// Signs a response asserting `status` for `cert_id` as of `now`, without a nonce, for a
    /// caller that has just read the status from the store itself. Returns the DER and the
    /// status as written (its times in whole seconds).
    pub fn sign_known(
        &self,
        cert_id: CertId,
        status: CertStatus,
        now: OffsetDateTime,
    ) -> Result<(Vec<u8>, SingleStatus)> {
        let now = whole_seconds(now);
        let single = self.single(cert_id, status, now);
        let der = self
            .responder()
            .respond(std::slice::from_ref(&single), now, None)?;
        Ok((der, single))
    }

    fn single(&self, cert_id: CertId, status: CertStatus, now: OffsetDateTime) -> SingleStatus {
        SingleStatus {
            cert_id,
            status,
            this_update: now,
            next_update: now + self.validity,
        }
    }

    /// The bytes every response it signs ends with (see [`Responder::shared_tail`]).
    pub fn shared_tail(&self) -> &[u8] {
        self.identity.shared_tail()
    }

    fn responder(&self) -> Responder<'_> {
        Responder::with_identity(self.signer.as_ref(), &self.identity)
    }

    /// Answers a DER `OCSPRequest` with a DER `OCSPResponse`, whatever the input: the HTTP
    /// front end needs no other logic.
    pub fn answer(&self, store: &dyn Store, request_der: &[u8], now: OffsetDateTime) -> Vec<u8> {
        let request = match ocsp::parse_request(request_der) {
            Ok(r) => r,
            Err(e) => return ocsp::error_response(e.response_status()),
        };
        if !request.cert_ids.iter().all(|id| self.issuer.matches(id)) {
            return ocsp::error_response(OcspResponseStatus::Unauthorized);
        }
        match self.respond(store, &request.cert_ids, request.nonce.as_deref(), now) {
            Ok(der) => der,
            Err(_) => ocsp::error_response(OcspResponseStatus::InternalError),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use time::OffsetDateTime;

    use super::*;
    use crate::ca::{self, Ca, DataDir, InitOptions};
    use crate::csr::{CertificateRequest, KeyKind};
    use crate::issuer::IssueRequest;
    use crate::keyfile::Protection;
    use crate::ocsp::{HashAlgorithm, ParsedResponse};
    use crate::store::{AgentRecord, EnrollmentMethod, IssuanceIntent, RevocationReason};

    const AGENT: &str = "spiffe://example.org/agent/status";

    fn setup() -> (tempfile::TempDir, Ca) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path().join("ca"));
        ca::init(
            &dir,
            &InitOptions {
                trust_domain: "example.org".into(),
                key_type: KeyKind::EcdsaP256,
                base_url: None,
                protection: Protection::InsecurePlaintext,
                issuing_key_in: None,
            },
        )
        .unwrap();
        let ca = Ca::open(&dir).unwrap();
        ca.store()
            .insert_agent(&AgentRecord {
                id: AGENT.into(),
                owner: None,
                policy: None,
                dns: vec![],
                disabled: false,
                created_at: OffsetDateTime::now_utc(),
                early_renewal: None,
            })
            .unwrap();
        (tmp, ca)
    }

    fn issue(ca: &Ca) -> CertificateRecord {
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .unwrap();
        let csr = CertificateRequest::from_der(csr.der()).unwrap();
        ca.authority(&Protection::InsecurePlaintext)
            .unwrap()
            .issue(&IssueRequest {
                agent_id: AGENT,
                csr: &csr,
                method: EnrollmentMethod::Cli,
                lifetime: None,
                validated_dns: &[],
                validated_ips: &[],
                csr_key_thumbprint: None,
            })
            .unwrap()
    }

    fn single(der: &[u8]) -> (CertStatus, OffsetDateTime, OffsetDateTime) {
        match ocsp::parse_response(der).unwrap() {
            ParsedResponse::Successful(basic) => {
                assert_eq!(basic.responses.len(), 1);
                let s = &basic.responses[0];
                (s.status, s.this_update, s.next_update.unwrap())
            }
            other => panic!("not successful: {other:?}"),
        }
    }

    fn unsuccessful(der: &[u8]) -> OcspResponseStatus {
        match ocsp::parse_response(der).unwrap() {
            ParsedResponse::Unsuccessful(status) => status,
            ParsedResponse::Successful(_) => panic!("unexpectedly successful"),
        }
    }

    #[test]
    fn good_then_revoked_never_good_for_unknown_serials() {
        let (_tmp, ca) = setup();
        let responder = ca.status_responder(&Protection::InsecurePlaintext).unwrap();
        let store = ca.store().as_ref();
        let record = issue(&ca);
        let now = OffsetDateTime::now_utc();
        for hash in HashAlgorithm::ALL {
            let id = responder
                .issuer()
                .cert_id(hash, record.intent.serial.as_bytes());
            let request = ocsp::build_request(&[id], Some(b"nonce-123")).unwrap();
            let (status, this_update, next_update) =
                single(&responder.answer(store, &request, now));
            assert_eq!(status, CertStatus::Good);
            assert_eq!(next_update - this_update, DEFAULT_VALIDITY);
        }

        ca.authority(&Protection::InsecurePlaintext)
            .unwrap()
            .revoke(&record.intent.serial, RevocationReason::KeyCompromise)
            .unwrap();
        let id = responder
            .issuer()
            .cert_id(HashAlgorithm::Sha1, record.intent.serial.as_bytes());
        let request = ocsp::build_request(&[id], None).unwrap();
        match single(&responder.answer(store, &request, now)).0 {
            CertStatus::Revoked { reason, .. } => {
                assert_eq!(reason, Some(RevocationReason::KeyCompromise));
            }
            other => panic!("expected revoked, got {other:?}"),
        }

        // A serial never assigned, one of a foreign shape, and one only reserved: unknown.
        let reserved = IssuanceIntent {
            serial: Serial::from_bytes([0x42; 16]).unwrap(),
            ..record.intent.clone()
        };
        store.reserve_serial(&reserved).unwrap();
        for serial in [
            vec![0x33; 16],
            vec![0x01, 0x02],
            reserved.serial.as_bytes().to_vec(),
        ] {
            let id = responder.issuer().cert_id(HashAlgorithm::Sha256, &serial);
            let request = ocsp::build_request(&[id], None).unwrap();
            assert_eq!(
                single(&responder.answer(store, &request, now)).0,
                CertStatus::Unknown
            );
        }
    }

    #[test]
    fn foreign_issuer_is_unauthorized_and_garbage_is_malformed() {
        let (_tmp, ca) = setup();
        let responder = ca.status_responder(&Protection::InsecurePlaintext).unwrap();
        let store = ca.store().as_ref();
        let foreign = IssuerHashes::from_issuer_der(&ca.cert_der("root.pem").unwrap()).unwrap();
        let request =
            ocsp::build_request(&[foreign.cert_id(HashAlgorithm::Sha1, &[0x11; 16])], None)
                .unwrap();
        let now = OffsetDateTime::now_utc();
        assert_eq!(
            unsuccessful(&responder.answer(store, &request, now)),
            OcspResponseStatus::Unauthorized
        );
        for garbage in [&b""[..], b"\x30\x03\x02\x01", &[0xffu8; 300]] {
            assert_eq!(
                unsuccessful(&responder.answer(store, garbage, now)),
                OcspResponseStatus::MalformedRequest
            );
        }
    }

    /// OpenSSL verifies our responses against the CA's own root, for good and revoked.
    #[test]
    fn openssl_verifies_responses_from_the_real_hierarchy() {
        if Command::new("openssl").arg("version").output().is_err() {
            eprintln!("openssl not installed; skipping");
            return;
        }
        let (tmp, ca) = setup();
        let responder = ca.status_responder(&Protection::InsecurePlaintext).unwrap();
        let record = issue(&ca);
        let leaf = tmp.path().join("leaf.pem");
        std::fs::write(
            &leaf,
            pem::encode(&pem::Pem::new("CERTIFICATE", record.der.clone())),
        )
        .unwrap();
        for revoke in [false, true] {
            if revoke {
                ca.authority(&Protection::InsecurePlaintext)
                    .unwrap()
                    .revoke(&record.intent.serial, RevocationReason::Superseded)
                    .unwrap();
            }
            // The request comes from OpenSSL itself, nonce included.
            let dir = ca.dir();
            let req = tmp.path().join("req.der");
            let made = Command::new("openssl")
                .args(["ocsp", "-issuer"])
                .arg(dir.file("issuing.pem"))
                .arg("-cert")
                .arg(&leaf)
                .arg("-reqout")
                .arg(&req)
                .output()
                .unwrap();
            assert!(made.status.success(), "{made:?}");
            let request = std::fs::read(&req).unwrap();
            let der = responder.answer(ca.store().as_ref(), &request, OffsetDateTime::now_utc());
            let resp = tmp.path().join("resp.der");
            std::fs::write(&resp, &der).unwrap();
            let out = Command::new("openssl")
                .args(["ocsp", "-reqin"])
                .arg(&req)
                .arg("-respin")
                .arg(&resp)
                .arg("-CAfile")
                .arg(dir.file("ca-chain.pem"))
                .arg("-resp_text")
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(text.contains("Response verify OK"), "{text}");
            let want = if revoke {
                "Cert Status: revoked"
            } else {
                "Cert Status: good"
            };
            assert!(text.contains(want), "{text}");
        }
    }
}
