//! Revocation over ACME (RFC 8555 §7.6) and renewal information (RFC 9773 §4).

use agentca_core::issuer::finishes_revocation;
use agentca_core::store::{RevocationReason, SerialEntry};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::ari::{CertId, window};
use crate::error::{AcmeError, ProblemType, Result};
use crate::jose::spki_thumbprint;
use crate::reply::{Body, Reply};
use crate::service::{AcmeService, Authenticated, Signer, rfc3339};

/// Reasons a subscriber may give (RFC 5280 §5.3.1 codes). `cACompromise`, `aACompromise`,
/// `certificateHold` and `removeFromCRL` are not a subscriber's to claim.
const ALLOWED_REASONS: [u8; 6] = [0, 1, 3, 4, 5, 9];

impl AcmeService {
    /// POST revokeCert: signed by the account that holds the certificate's agent, or by the
    /// certificate's own key.
    pub(crate) fn revoke_cert(&self, req: &Authenticated) -> Result<Reply> {
        let payload = req.json()?;
        let Some(Value::String(cert_b64)) = payload.get("certificate") else {
            return Err(AcmeError::malformed(
                "revokeCert needs certificate (base64url DER)",
            ));
        };
        let der = URL_SAFE_NO_PAD
            .decode(cert_b64)
            .map_err(|_| AcmeError::malformed("certificate is not unpadded base64url"))?;
        let reason = match payload.get("reason") {
            None => RevocationReason::Unspecified,
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .filter(|c| ALLOWED_REASONS.contains(c))
                .and_then(RevocationReason::from_code)
                .ok_or_else(|| {
                    AcmeError::new(
                        ProblemType::BadRevocationReason,
                        "allowed reasons: 0 unspecified, 1 keyCompromise, 3 affiliationChanged, 4 superseded, 5 cessationOfOperation, 9 privilegeWithdrawn",
                    )
                })?,
            Some(_) => return Err(AcmeError::malformed("reason must be an integer")),
        };
        let (rest, cert) = X509Certificate::from_der(&der)
            .map_err(|_| AcmeError::malformed("certificate is not a DER X.509 certificate"))?;
        if !rest.is_empty() {
            return Err(AcmeError::malformed("trailing bytes after the certificate"));
        }
        let not_ours = || AcmeError::not_found("certificate issued by this CA");
        let serial_bytes: [u8; 16] = cert.raw_serial().try_into().map_err(|_| not_ours())?;
        let serial = agentca_core::store::Serial::from_bytes(serial_bytes).ok_or_else(not_ours)?;
        let Some(SerialEntry::Issued(record)) = self.store().serial(&serial)? else {
            return Err(not_ours());
        };
        // The certificate sent must be the one we issued under that serial, byte for byte.
        if record.der != der {
            return Err(not_ours());
        }
        match &req.signer {
            Signer::Account(account, _) => {
                if account.agent_id != record.intent.agent_id {
                    return Err(AcmeError::unauthorized(
                        "the account may only revoke certificates of its own agent",
                    ));
                }
            }
            Signer::Key(jwk) => {
                let spki = cert.public_key().raw;
                if spki_thumbprint(spki).as_deref() != Some(jwk.thumbprint().as_str()) {
                    return Err(AcmeError::unauthorized(
                        "the request is signed neither by an account nor by the certificate's key",
                    ));
                }
            }
        }
        let already = || {
            // The revocation may have been recorded by an attempt whose reply failed: the
            // status holders learn of it now (at no cost if they knew; none for an expired
            // certificate, whose status nobody needs signed again).
            if record.intent.not_after > Self::now() {
                self.events.revoked(std::slice::from_ref(&record));
            }
            AcmeError::new(
                ProblemType::AlreadyRevoked,
                "the certificate is already revoked",
            )
        };
        // A keyCompromise revocation of a certificate revoked for keyCompromise goes on to the
        // authority, which finishes what is left of it or refuses it.
        if record
            .revocation
            .is_some_and(|r| !finishes_revocation(r, reason))
        {
            return Err(already());
        }
        let revoked = match self.authority.revoke_all(&serial, reason) {
            Err(agentca_core::Error::AlreadyRevoked(_)) => return Err(already()),
            other => other?,
        };
        self.events.revoked(&revoked);
        Ok(Reply {
            status: 200,
            body: Body::Empty,
            location: None,
            links: Vec::new(),
            retry_after: None,
        })
    }

    /// GET renewalInfo/{certID} (RFC 9773 §4.2).
    pub(crate) fn renewal_info(&self, cert_id: &str) -> Result<Reply> {
        let id = CertId::parse(cert_id)?;
        let unknown = || AcmeError::not_found("certificate");
        if id.key_identifier != self.authority.ca().key_identifier() {
            return Err(unknown());
        }
        let serial = id.serial.ok_or_else(unknown)?;
        let store = self.store();
        let Some(SerialEntry::Issued(record)) = store.serial(&serial)? else {
            return Err(unknown());
        };
        let agent = store.agent(&record.intent.agent_id)?;
        let early = agent.as_ref().and_then(|a| a.early_renewal.as_ref());
        let w = window(&record, early, Self::now());
        Ok(Reply::ok(json!({
            "suggestedWindow": {"start": rfc3339(w.start), "end": rfc3339(w.end)},
        }))
        .with_retry_after(w.retry_after.unsigned_abs()))
    }
}
