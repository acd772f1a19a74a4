//! The OCSP client side (RFC 6960): the request for one certificate, and the checks a response
//! must pass before its answer is believed.
//!
//! A response is believed only when all of these hold:
//! - it is `successful` and of the basic type, with no critical extension we do not know;
//! - it is signed by the certificate's issuer itself, or by a responder certificate included
//!   in the response that the issuer signed directly, that carries id-kp-OCSPSigning and that
//!   is valid now (RFC 6960 §4.2.2.2); the `ResponderID` names that signer;
//! - one of its single responses is for this serial under this issuer (SHA-1 or SHA-256
//!   `CertID`);
//! - that answer's thisUpdate is not further ahead than the allowed clock skew, and its
//!   nextUpdate is present and still ahead (RFC 5019 §2.2.4);
//! - its status is `good` or `revoked` (`unknown` is a refusal).
//!
//! Requests carry no nonce: agentca answers nonce-less requests from pre-signed responses at no
//! signing cost, and the thisUpdate/nextUpdate window bounds what a replayed answer can claim.

mod asn1;
#[cfg(test)]
pub(crate) mod test_responses;
#[cfg(test)]
mod tests;

use der::asn1::{Any, Int, OctetString};
use der::{Decode, Encode};
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm};
use time::OffsetDateTime;
use webpki::{EndEntityCert, KeyUsage};
use x509_cert::ext::Extension;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::clock::{offset_date_time, unix_time};
use crate::error::{Error, RevocationReason};
use crate::signature::{self, SignatureError};

/// What a believed OCSP response says about one certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) status: AnswerStatus,
    pub(crate) this_update: OffsetDateTime,
    pub(crate) next_update: OffsetDateTime,
}

/// `good` or `revoked`; `unknown` is never an answer to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AnswerStatus {
    Good,
    Revoked {
        at: OffsetDateTime,
        reason: Option<RevocationReason>,
    },
}

/// The issuer of the certificate asked about, with what OCSP identifies it by.
pub(crate) struct Issuer<'a> {
    der: &'a CertificateDer<'a>,
    /// The DER of its subject `Name` (with tag and length).
    name: Vec<u8>,
    /// Its subjectPublicKey BIT STRING contents.
    key_bits: Vec<u8>,
}

impl<'a> Issuer<'a> {
    pub(crate) fn new(der: &'a CertificateDer<'a>) -> Result<Self, Error> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| Error::MalformedCertificate(format!("issuer: {e}")))?;
        let tbs = &cert.tbs_certificate;
        Ok(Self {
            der,
            name: tbs.subject.as_raw().to_vec(),
            key_bits: tbs.subject_pki.subject_public_key.data.to_vec(),
        })
    }

    /// A key for caches: SHA-256 of the issuer's key bits.
    pub(crate) fn key_id(&self) -> [u8; 32] {
        let mut id = [0; 32];
        id.copy_from_slice(Hash::Sha256.digest(&self.key_bits).as_ref());
        id
    }
}

/// The `CertID` hashes this client understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hash {
    Sha1,
    Sha256,
}

impl Hash {
    fn from_algorithm(id: &AlgorithmIdentifierOwned) -> Option<Self> {
        // Parameters are absent or NULL (RFC 3279 §2.2.1, RFC 5754 §2); both are seen.
        if id.parameters.as_ref().is_some_and(|p| p != &Any::null()) {
            return None;
        }
        if id.oid == asn1::ID_SHA1 {
            Some(Self::Sha1)
        } else if id.oid == asn1::ID_SHA256 {
            Some(Self::Sha256)
        } else {
            None
        }
    }

    fn digest(self, data: &[u8]) -> aws_lc_rs::digest::Digest {
        let alg = match self {
            // SHA-1 only as an identifier (RFC 5019 §2.1.1), never for a signature.
            Self::Sha1 => &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
            Self::Sha256 => &aws_lc_rs::digest::SHA256,
        };
        aws_lc_rs::digest::digest(alg, data)
    }
}

/// The DER `OCSPRequest` for the certificate with `serial` (INTEGER content bytes) under
/// `issuer`: one SHA-1 `CertID` (what every responder understands, RFC 5019 §2.1.1), no nonce.
pub(crate) fn request(issuer: &Issuer<'_>, serial: &[u8]) -> Result<Vec<u8>, Error> {
    let internal = |e: der::Error| Error::MalformedCertificate(format!("OCSP request: {e}"));
    let cert_id = asn1::CertId {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid: asn1::ID_SHA1,
            parameters: Some(Any::null()),
        },
        issuer_name_hash: OctetString::new(Hash::Sha1.digest(&issuer.name).as_ref())
            .map_err(internal)?,
        issuer_key_hash: OctetString::new(Hash::Sha1.digest(&issuer.key_bits).as_ref())
            .map_err(internal)?,
        serial_number: Int::new(serial).map_err(internal)?,
    };
    asn1::OcspRequest {
        tbs_request: asn1::TbsRequest {
            request_list: vec![asn1::Request { req_cert: cert_id }],
        },
    }
    .to_der()
    .map_err(internal)
}

/// Checks a DER `OCSPResponse` about `serial` under `issuer` at `now`, as the module docs
/// list. Temporary refusals (`tryLater`, `internalError`) are
/// [`Error::RevocationUnavailable`]; every other failure is the precise refusal.
pub(crate) fn check_response(
    der: &[u8],
    issuer: &Issuer<'_>,
    serial: &[u8],
    now: OffsetDateTime,
    skew: time::Duration,
    algs: &[&dyn SignatureVerificationAlgorithm],
) -> Result<Answer, Error> {
    let malformed = |what: &str, e: der::Error| Error::OcspMalformed(format!("{what}: {e}"));
    let response = asn1::OcspResponse::from_der(der).map_err(|e| malformed("OCSPResponse", e))?;
    let bytes = match (response.response_status, response.response_bytes) {
        (asn1::ResponseStatus::Successful, Some(bytes)) => bytes,
        (asn1::ResponseStatus::Successful, None) => {
            return Err(Error::OcspMalformed(
                "successful response without responseBytes".into(),
            ));
        }
        (asn1::ResponseStatus::TryLater, _) => {
            return Err(Error::RevocationUnavailable(
                "the OCSP responder said tryLater".into(),
            ));
        }
        (asn1::ResponseStatus::InternalError, _) => {
            return Err(Error::RevocationUnavailable(
                "the OCSP responder said internalError".into(),
            ));
        }
        (asn1::ResponseStatus::MalformedRequest, _) => {
            return Err(Error::OcspRefused("malformedRequest"));
        }
        (asn1::ResponseStatus::SigRequired, _) => return Err(Error::OcspRefused("sigRequired")),
        (asn1::ResponseStatus::Unauthorized, _) => {
            return Err(Error::OcspRefused("unauthorized"));
        }
    };
    if bytes.response_type != asn1::ID_PKIX_OCSP_BASIC {
        return Err(Error::OcspMalformed(format!(
            "unsupported response type {}",
            bytes.response_type
        )));
    }
    let basic = asn1::BasicResponse::from_der(bytes.response.as_bytes())
        .map_err(|e| malformed("BasicOCSPResponse", e))?;
    let tbs = basic
        .tbs_response_data
        .to_der()
        .map_err(|e| malformed("ResponseData", e))?;
    let data = asn1::ResponseData::from_der(&tbs).map_err(|e| malformed("ResponseData", e))?;

    let signer_der = authorized_signer(&basic, &data.responder_id, issuer, now, algs)?;
    let signer = EndEntityCert::try_from(&signer_der)
        .map_err(|e| Error::OcspMalformed(format!("signer certificate: {e:?}")))?;
    let signature_bits = basic
        .signature
        .as_bytes()
        .ok_or_else(|| Error::OcspMalformed("signature is not a whole number of bytes".into()))?;
    match signature::verify(
        &signer,
        algs,
        basic.signature_algorithm.value(),
        &tbs,
        signature_bits,
    ) {
        Ok(()) => {}
        Err(SignatureError::Invalid) => return Err(Error::OcspBadSignature),
        Err(SignatureError::Unsupported) => {
            return Err(Error::OcspMalformed(
                "unsupported signature algorithm for the signer's key".into(),
            ));
        }
    }
    if let Some(extensions) = &data.response_extensions {
        refuse_critical(extensions)?;
    }

    let single = data
        .responses
        .iter()
        .find(|single| answers_for(&single.cert_id, issuer, serial))
        .ok_or(Error::OcspWrongCertificate)?;
    if let Some(extensions) = &single.single_extensions {
        refuse_critical(extensions)?;
    }
    let this_update = time_of(single.this_update)?;
    if this_update > crate::clock::later(now, skew) {
        return Err(Error::OcspNotYetValid { this_update, now });
    }
    let next_update = time_of(single.next_update.ok_or(Error::OcspNoNextUpdate)?)?;
    if next_update <= now {
        return Err(Error::OcspStale { next_update, now });
    }
    let status = match &single.cert_status {
        asn1::CertStatus::Good(_) => AnswerStatus::Good,
        asn1::CertStatus::Unknown(_) => return Err(Error::OcspUnknown),
        asn1::CertStatus::Revoked(info) => AnswerStatus::Revoked {
            at: time_of(info.revocation_time)?,
            reason: info
                .revocation_reason
                .and_then(|code| RevocationReason::from_code(code.0)),
        },
    };
    Ok(Answer {
        status,
        this_update,
        next_update,
    })
}

/// The certificate whose key must have signed the response: the issuer when the
/// `ResponderID` names it, otherwise the included certificate the `ResponderID` names, once it
/// is shown to be a delegated responder of the issuer.
fn authorized_signer(
    basic: &asn1::BasicResponse,
    responder_id: &asn1::ResponderId,
    issuer: &Issuer<'_>,
    now: OffsetDateTime,
    algs: &[&dyn SignatureVerificationAlgorithm],
) -> Result<CertificateDer<'static>, Error> {
    if names(responder_id, &issuer.name, &issuer.key_bits) {
        return Ok(issuer.der.clone().into_owned());
    }
    let mut candidate = None;
    for cert in basic.certs.iter().flatten() {
        let der = cert
            .to_der()
            .map_err(|e| Error::OcspMalformed(format!("included certificate: {e}")))?;
        let (_, parsed) = X509Certificate::from_der(&der)
            .map_err(|e| Error::OcspMalformed(format!("included certificate: {e}")))?;
        let tbs = &parsed.tbs_certificate;
        if names(
            responder_id,
            tbs.subject.as_raw(),
            &tbs.subject_pki.subject_public_key.data,
        ) {
            candidate = Some(CertificateDer::from(der));
            break;
        }
    }
    let Some(responder) = candidate else {
        return Err(Error::OcspUnauthorizedResponder(
            "the responder is neither the issuer nor a certificate included in the response".into(),
        ));
    };
    let unauthorized = |why: String| Error::OcspUnauthorizedResponder(why);
    let ee = EndEntityCert::try_from(&responder)
        .map_err(|e| unauthorized(format!("unreadable responder certificate: {e:?}")))?;
    let anchor = webpki::anchor_from_trusted_cert(issuer.der)
        .map_err(|e| Error::MalformedCertificate(format!("issuer: {e:?}")))?;
    // The issuer as the only anchor and no intermediates: the responder certificate must be
    // issued by the issuer directly (RFC 6960 §4.2.2.2), and valid now.
    ee.verify_for_usage(
        algs,
        &[anchor],
        &[],
        unix_time(now),
        KeyUsage::required(asn1::ID_KP_OCSP_SIGNING),
        None,
        None,
    )
    .map_err(|e| {
        use webpki::Error as W;
        unauthorized(match e {
            #[allow(deprecated)]
            W::RequiredEkuNotFound | W::RequiredEkuNotFoundContext(_) => {
                "the responder certificate lacks id-kp-OCSPSigning".into()
            }
            W::UnknownIssuer | W::InvalidSignatureForPublicKey => {
                "the responder certificate was not issued by the certificate's issuer".into()
            }
            W::CertExpired { not_after, .. } => format!(
                "the responder certificate expired at {}",
                crate::error::rfc3339(offset_date_time(not_after))
            ),
            W::CertNotValidYet { .. } => "the responder certificate is not valid yet".into(),
            W::CaUsedAsEndEntity => "the responder certificate is a CA certificate".into(),
            other => format!("the responder certificate is not acceptable: {other:?}"),
        })
    })?;
    Ok(responder)
}

/// Whether the `ResponderID` names the holder of this subject name and key.
fn names(id: &asn1::ResponderId, name: &[u8], key_bits: &[u8]) -> bool {
    match id {
        asn1::ResponderId::ByName(n) => n.to_der().is_ok_and(|d| d == name),
        asn1::ResponderId::ByKey(hash) => hash.as_bytes() == Hash::Sha1.digest(key_bits).as_ref(),
    }
}

fn answers_for(id: &asn1::CertId, issuer: &Issuer<'_>, serial: &[u8]) -> bool {
    let Some(hash) = Hash::from_algorithm(&id.hash_algorithm) else {
        return false;
    };
    id.serial_number.as_bytes() == serial
        && id.issuer_name_hash.as_bytes() == hash.digest(&issuer.name).as_ref()
        && id.issuer_key_hash.as_bytes() == hash.digest(&issuer.key_bits).as_ref()
}

/// RFC 6960 §4.4: a critical extension the client does not understand fails the response.
/// This client sends no nonce, so it understands none.
fn refuse_critical(extensions: &[Extension]) -> Result<(), Error> {
    match extensions.iter().find(|e| e.critical) {
        Some(e) => Err(Error::OcspMalformed(format!(
            "unsupported critical extension {}",
            e.extn_id
        ))),
        None => Ok(()),
    }
}

fn time_of(t: der::asn1::GeneralizedTime) -> Result<OffsetDateTime, Error> {
    i64::try_from(t.to_unix_duration().as_secs())
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or_else(|| Error::OcspMalformed("time out of range".into()))
}
