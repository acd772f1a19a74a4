//! One enrollment: a PKCSReq sent, its CertRep verified with `agentca_scep::client`, the issued
//! certificate checked to carry the requester's key. Whatever the server sends becomes a
//! counted [`Failure`], never a panic.

use agentca_scep::client::CertRepOutcome;
use agentca_scep::{ScepError, ScepOptions};
use hyper::{Method, StatusCode};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::prepare::Prepared;
use super::url::ScepUrl;
use crate::failure::Failure;
use crate::http::Http;

/// The media type of a PKIOperation body (RFC 8894 §4.3).
const PKI_MESSAGE: &str = "application/x-pki-message";

/// How PKIOperation travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    /// The message as the POST body (`POSTPKIOperation`).
    Post,
    /// The message base64 in the `message=` query parameter.
    Get,
}

impl Transport {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Post => "POST",
            Self::Get => "GET",
        }
    }
}

/// What the server and the generator agreed on before the window.
pub(crate) struct Endpoint {
    pub(crate) url: ScepUrl,
    pub(crate) transport: Transport,
    /// The certificates of GetCACert: the CertRep must be signed by one of them.
    pub(crate) trusted: Vec<Vec<u8>>,
}

/// The issued certificate's issuer (Name DER) and serial (content octets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Issued {
    pub(crate) issuer: Vec<u8>,
    pub(crate) serial: Vec<u8>,
}

/// Whether a failure means the server answered (it was making progress) or not.
pub(crate) fn server_answered(failure: &Failure) -> bool {
    !matches!(failure.kind.as_str(), "transport" | "timeout")
}

/// Sends `prepared` and checks the answer.
pub(crate) async fn enroll(
    http: &mut Http,
    endpoint: &Endpoint,
    prepared: &Prepared,
) -> Result<Issued, Failure> {
    let message = prepared.request.der();
    let response = match endpoint.transport {
        Transport::Post => {
            http.send(
                Method::POST,
                &endpoint.url.operation("PKIOperation"),
                Some(PKI_MESSAGE),
                message.to_vec(),
            )
            .await?
        }
        Transport::Get => {
            http.send(
                Method::GET,
                &endpoint.url.pki_operation_get(message),
                None,
                Vec::new(),
            )
            .await?
        }
    };
    if response.status != StatusCode::OK {
        return Err(Failure::state(
            &format!("HTTP {}", response.status.as_u16()),
            String::from_utf8_lossy(&response.body[..response.body.len().min(200)]).into_owned(),
        ));
    }
    // The generator measures servers; it does not grade their algorithms: a CertRep signed
    // with SHA-1 (as micromdm's server signs them) or enveloped with DES is read too.
    let outcome = prepared
        .request
        .parse_reply(
            &response.body,
            &endpoint.trusted,
            &prepared.key,
            &ScepOptions::LEGACY,
        )
        .map_err(|e| {
            Failure::state(
                &format!("invalid CertRep: {}", error_kind(&e)),
                e.to_string(),
            )
        })?;
    match outcome {
        CertRepOutcome::Success { certificates } => {
            check_issued(certificates.first().map(Vec::as_slice), &prepared.spki)
        }
        CertRepOutcome::Failure(info) => Err(Failure::state(
            &format!("FAILURE {}", info.name()),
            format!("pkiStatus FAILURE, failInfo {info}"),
        )),
        CertRepOutcome::Pending => Err(Failure::state(
            "PENDING",
            "pkiStatus PENDING: the server wants a manual approval".into(),
        )),
        CertRepOutcome::Crls(_) => Err(Failure::state(
            "CRL",
            "pkiStatus SUCCESS with a CRL instead of a certificate".into(),
        )),
    }
}

/// The first certificate of a SUCCESS must be the one issued for this request's key.
pub(crate) fn check_issued(first: Option<&[u8]>, spki: &[u8]) -> Result<Issued, Failure> {
    let wrong = |detail: &str| Failure::state("wrong certificate", detail.to_owned());
    let der = first.ok_or_else(|| wrong("SUCCESS without a certificate"))?;
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|_| wrong("the issued certificate does not parse"))?;
    if cert.public_key().raw != spki {
        return Err(wrong(
            "the first certificate of the SUCCESS does not carry the requested key",
        ));
    }
    Ok(Issued {
        issuer: cert.issuer().as_raw().to_vec(),
        serial: cert.raw_serial().to_vec(),
    })
}

/// A short, stable name for what was wrong with a CertRep, to count by (the detail goes into
/// the example).
fn error_kind(e: &ScepError) -> String {
    match e {
        ScepError::TooLarge { .. } => "too large".into(),
        ScepError::TooDeep { .. } => "nested too deep".into(),
        ScepError::Malformed(what) => format!("malformed ({what})"),
        ScepError::UnexpectedContentType { .. } => "not a SignedData".into(),
        ScepError::UnsupportedAlgorithm { what, .. } => format!("unsupported {what}"),
        ScepError::SignerCount(_) => "not one signer".into(),
        ScepError::SignerCertificateNotFound => "signer certificate missing".into(),
        ScepError::UntrustedSigner => "signed by a certificate not from GetCACert".into(),
        ScepError::Certificate(what) => format!("certificate ({what})"),
        ScepError::DigestMismatch => "messageDigest mismatch".into(),
        ScepError::BadSignature => "bad signature".into(),
        ScepError::MissingAttribute(attribute) => format!("no {attribute}"),
        ScepError::InvalidAttribute { attribute, .. } => format!("invalid {attribute}"),
        ScepError::Decryption => "envelope not decryptable".into(),
        ScepError::ReplyMismatch(attribute) => format!("{attribute} of another request"),
        ScepError::UnexpectedMessageType(_) => "not a CertRep".into(),
        _ => "other".into(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use agentca_scep::ScepAttribute;
    use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, PublicKeyData};

    use super::*;

    #[test]
    fn the_issued_certificate_must_carry_the_requested_key() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let other = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.serial_number = Some(vec![0x01, 0x02].into());
        let cert = params.self_signed(&key).unwrap().der().to_vec();

        let issued = check_issued(Some(&cert), &key.subject_public_key_info()).unwrap();
        assert_eq!(issued.serial, [0x01, 0x02]);
        assert!(!issued.issuer.is_empty());

        let f = check_issued(Some(&cert), &other.subject_public_key_info()).unwrap_err();
        assert_eq!(f.kind, "wrong certificate");
        assert!(f.detail.contains("requested key"), "{}", f.detail);
        assert_eq!(
            check_issued(None, &[]).unwrap_err().kind,
            "wrong certificate"
        );
        assert_eq!(
            check_issued(Some(b"junk"), &[]).unwrap_err().kind,
            "wrong certificate"
        );
    }

    #[test]
    fn failures_are_counted_by_a_stable_kind() {
        assert_eq!(error_kind(&ScepError::BadSignature), "bad signature");
        assert_eq!(
            error_kind(&ScepError::ReplyMismatch(ScepAttribute::RecipientNonce)),
            "recipientNonce of another request"
        );
        assert_eq!(
            error_kind(&ScepError::TooLarge { len: 9, max: 1 }),
            error_kind(&ScepError::TooLarge { len: 10, max: 1 })
        );
        assert!(server_answered(&Failure::state(
            "FAILURE badRequest",
            String::new()
        )));
        assert!(server_answered(&Failure::state("HTTP 500", String::new())));
        assert!(!server_answered(&Failure::timeout()));
        assert!(!server_answered(&Failure::transport(String::new())));
        assert_eq!(Transport::Get.name(), "GET");
    }
}
