//! OCSP responses: signing basic responses, the unsigned error responses, and a parser for
//! the client side.

use std::borrow::Cow;

use der::asn1::ContextSpecific;
use der::asn1::{Any, BitString, Null, OctetString};
use der::{Decode, Encode, TagMode, TagNumber};
use time::OffsetDateTime;
use x509_cert::spki::AlgorithmIdentifierOwned;

use super::asn1::{
    self, BasicOcspResponseAsn1, CertStatusAsn1, EnumeratedCode, OcspResponseAsn1, ResponderIdAsn1,
    ResponseBytesAsn1, ResponseDataAsn1, RevokedInfoAsn1, SingleResponseAsn1,
};
use super::request::{nonce_extension, nonce_from_extensions};
use super::{CertId, HashAlgorithm, der_error, generalized_time, nonce_len_ok, offset_date_time};
use crate::error::Error;
use crate::signer::{Signer, subject_public_key_bits};
use crate::store::RevocationReason;

/// The status of one certificate, as the responder asserts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertStatus {
    /// Issued by this CA and not revoked.
    Good,
    /// Revoked at `revoked_at`. A reason of `unspecified` is written as no reason, as
    /// RFC 5280 §5.3.1 asks of CRL entries and the CA/Browser Forum profile of OCSP.
    Revoked {
        /// When the revocation took effect.
        revoked_at: OffsetDateTime,
        /// Why, if a reason other than `unspecified` was given.
        reason: Option<RevocationReason>,
    },
    /// Not a serial this responder can vouch for.
    Unknown,
}

/// One certificate's answer, to be signed by [`Responder::respond`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SingleStatus {
    /// The `CertID` as the client sent it; it is echoed unchanged.
    pub cert_id: CertId,
    /// The status.
    pub status: CertStatus,
    /// When the status was known to be correct.
    pub this_update: OffsetDateTime,
    /// When newer information will be available; always sent, as RFC 5019 asks so
    /// that responses can be cached.
    pub next_update: OffsetDateTime,
}

/// The unsuccessful `OCSPResponseStatus` values (RFC 6960 §4.2.1), answered without a
/// signature. `successful` is not among them: a successful response is a signed
/// [`Responder::respond`] answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OcspResponseStatus {
    /// 1: the request does not conform to the OCSP syntax or this responder's limits.
    MalformedRequest,
    /// 2: the responder reached an inconsistent internal state.
    InternalError,
    /// 3: try again later.
    TryLater,
    /// 5: the request must be signed.
    SigRequired,
    /// 6: the responder is not authoritative for the certificate asked about.
    Unauthorized,
}

impl OcspResponseStatus {
    /// Every unsuccessful status, in code order.
    pub const ALL: [Self; 5] = [
        Self::MalformedRequest,
        Self::InternalError,
        Self::TryLater,
        Self::SigRequired,
        Self::Unauthorized,
    ];

    /// The ENUMERATED value.
    pub fn code(self) -> u8 {
        match self {
            Self::MalformedRequest => 1,
            Self::InternalError => 2,
            Self::TryLater => 3,
            Self::SigRequired => 5,
            Self::Unauthorized => 6,
        }
    }

    /// The status with this code; `None` for successful (0), the unused 4 and unknown codes.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.code() == code)
    }
}

/// The DER `OCSPResponse` for an unsuccessful status: no responseBytes (RFC 6960 §2.3), so
/// nothing is signed and the bytes can be built without any fallible step.
pub fn error_response(status: OcspResponseStatus) -> Vec<u8> {
    // SEQUENCE (3 bytes) { ENUMERATED (1 byte) code }
    vec![0x30, 0x03, 0x0a, 0x01, status.code()]
}

/// Signs basic OCSP responses with the delegated responder key.
///
/// The responder is named by key hash (RFC 6960 §4.2.2.3): shorter than the name, and the same
/// across a renewal of the responder certificate with the same key. Its certificate is
/// included in every response so that a client can check the delegation (RFC 6960 §4.2.2.2).
pub struct Responder<'a> {
    signer: &'a dyn Signer,
    identity: Cow<'a, ResponderIdentity>,
}

/// What a [`Responder`] puts in every response besides the signature, checked against the
/// signer once: its certificate, its key hash and its signature algorithm.
#[derive(Clone)]
pub struct ResponderIdentity {
    cert: Any,
    key_hash: Vec<u8>,
    signature_algorithm: AlgorithmIdentifierOwned,
    /// The DER of the `certs` field, `[0] EXPLICIT SEQUENCE OF Certificate`.
    certs_field: Vec<u8>,
}

impl std::fmt::Debug for ResponderIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponderIdentity")
            .field("key_hash", &hex::encode(&self.key_hash))
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Responder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("algorithm", &self.signer.algorithm())
            .field("key_hash", &hex::encode(&self.identity.key_hash))
            .finish()
    }
}

impl ResponderIdentity {
    /// See [`Responder::shared_tail`].
    pub fn shared_tail(&self) -> &[u8] {
        &self.certs_field
    }

    /// The identity of `signer`, whose certificate is `cert_der`.
    ///
    /// Fails when the certificate does not parse or certifies a different key than the
    /// signer's: every response would then fail verification, so it is caught at start.
    pub fn new(signer: &dyn Signer, cert_der: &[u8]) -> Result<Self, Error> {
        let (rest, cert) = x509_parser::parse_x509_certificate(cert_der)
            .map_err(|e| Error::Der(format!("OCSP responder certificate: {e}")))?;
        if !rest.is_empty() {
            return Err(Error::Der(
                "OCSP responder certificate: trailing bytes after the certificate".into(),
            ));
        }
        let key_bits = subject_public_key_bits(&signer.subject_public_key_info())?;
        if cert
            .tbs_certificate
            .subject_pki
            .subject_public_key
            .data
            .as_ref()
            != key_bits
        {
            return Err(Error::UnsupportedKey(
                "the OCSP responder certificate does not certify the responder key".into(),
            ));
        }
        let cert = Any::from_der(cert_der).map_err(der_error)?;
        let certs_field = ContextSpecific {
            tag_number: TagNumber(0),
            tag_mode: TagMode::Explicit,
            value: vec![cert.clone()],
        }
        .to_der()
        .map_err(der_error)?;
        Ok(Self {
            cert,
            certs_field,
            key_hash: HashAlgorithm::Sha1.digest(&key_bits),
            signature_algorithm: AlgorithmIdentifierOwned::from_der(
                signer.algorithm().algorithm_identifier_der(),
            )
            .map_err(der_error)?,
        })
    }
}

impl<'a> Responder<'a> {
    /// A responder signing with `signer`, whose certificate is `cert_der` (checked as
    /// [`ResponderIdentity::new`] does).
    pub fn new(signer: &'a dyn Signer, cert_der: &[u8]) -> Result<Self, Error> {
        Ok(Self {
            signer,
            identity: Cow::Owned(ResponderIdentity::new(signer, cert_der)?),
        })
    }

    /// A responder for an identity checked before against this same `signer`.
    pub fn with_identity(signer: &'a dyn Signer, identity: &'a ResponderIdentity) -> Self {
        Self {
            signer,
            identity: Cow::Borrowed(identity),
        }
    }

    /// The SHA-1 hash of the responder key (the `ResponderID` byKey).
    pub fn key_hash(&self) -> &[u8] {
        &self.identity.key_hash
    }

    /// The bytes every response of this responder ends with: its `certs` field, the last of
    /// the basic response, which is the last of the `OCSPResponse`. A cache of many responses
    /// can hold them once instead of once per response.
    pub fn shared_tail(&self) -> &[u8] {
        self.identity.shared_tail()
    }

    /// Builds and signs a successful `OCSPResponse` answering `statuses`, in that order.
    ///
    /// Times are written in whole seconds. Everything is checked and encoded before the key
    /// is asked to sign, so a refused call costs no signature.
    pub fn respond(
        &self,
        statuses: &[SingleStatus],
        produced_at: OffsetDateTime,
        nonce: Option<&[u8]>,
    ) -> Result<Vec<u8>, Error> {
        if statuses.is_empty() {
            return Err(Error::ProfileViolation(
                "an OCSP response must answer at least one certificate".into(),
            ));
        }
        let response_extensions = match nonce {
            Some(n) if !nonce_len_ok(n) => {
                return Err(Error::ProfileViolation(format!(
                    "OCSP nonce of {} bytes; RFC 8954 allows 1 to 32",
                    n.len()
                )));
            }
            Some(n) => Some(vec![nonce_extension(n)?]),
            None => None,
        };
        let tbs = ResponseDataAsn1 {
            version: asn1::Version::V1,
            responder_id: ResponderIdAsn1::ByKey(
                OctetString::new(self.identity.key_hash.as_slice()).map_err(der_error)?,
            ),
            produced_at: generalized_time(produced_at)?,
            responses: statuses
                .iter()
                .map(single_response)
                .collect::<Result<_, _>>()?,
            response_extensions,
        }
        .to_der()
        .map_err(der_error)?;
        let tbs_response_data = Any::from_der(&tbs).map_err(der_error)?;

        let signature = self.signer.sign(&tbs)?;

        let basic = BasicOcspResponseAsn1 {
            tbs_response_data,
            signature_algorithm: self.identity.signature_algorithm.clone(),
            signature: BitString::from_bytes(&signature).map_err(der_error)?,
            certs: Some(vec![self.identity.cert.clone()]),
        }
        .to_der()
        .map_err(der_error)?;
        OcspResponseAsn1 {
            response_status: EnumeratedCode(0),
            response_bytes: Some(ResponseBytesAsn1 {
                response_type: asn1::ID_PKIX_OCSP_BASIC,
                response: OctetString::new(basic).map_err(der_error)?,
            }),
        }
        .to_der()
        .map_err(der_error)
    }
}

fn single_response(status: &SingleStatus) -> Result<SingleResponseAsn1, Error> {
    if status.next_update < status.this_update {
        return Err(Error::ProfileViolation(
            "OCSP nextUpdate precedes thisUpdate".into(),
        ));
    }
    let cert_status = match status.status {
        CertStatus::Good => CertStatusAsn1::Good(Null),
        CertStatus::Unknown => CertStatusAsn1::Unknown(Null),
        CertStatus::Revoked { revoked_at, reason } => CertStatusAsn1::Revoked(RevokedInfoAsn1 {
            revocation_time: generalized_time(revoked_at)?,
            revocation_reason: reason
                .filter(|r| *r != RevocationReason::Unspecified)
                .map(|r| EnumeratedCode(r.code())),
        }),
    };
    Ok(SingleResponseAsn1 {
        cert_id: status.cert_id.to_asn1()?,
        cert_status,
        this_update: generalized_time(status.this_update)?,
        next_update: Some(generalized_time(status.next_update)?),
        single_extensions: None,
    })
}

/// A decoded `OCSPResponse`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParsedResponse {
    /// `successful`, with its basic response.
    Successful(Box<BasicResponse>),
    /// Any other status; such responses carry nothing else.
    Unsuccessful(OcspResponseStatus),
}

/// How a basic response names its signer (RFC 6960 §4.2.2.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponderId {
    /// The DER of the responder's subject `Name`.
    ByName(Vec<u8>),
    /// The SHA-1 hash of the responder's public key bits.
    ByKey(Vec<u8>),
}

/// One `SingleResponse` of a parsed basic response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedSingle {
    /// The certificate answered for.
    pub cert_id: CertId,
    /// Its status.
    pub status: CertStatus,
    /// `thisUpdate`.
    pub this_update: OffsetDateTime,
    /// `nextUpdate`, which RFC 6960 makes optional.
    pub next_update: Option<OffsetDateTime>,
}

/// A `BasicOCSPResponse`, decoded but **not verified**: the signature, the signer's
/// authorisation and the times are the verifier's to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BasicResponse {
    /// Who signed.
    pub responder_id: ResponderId,
    /// `producedAt`.
    pub produced_at: OffsetDateTime,
    /// The answers, in response order.
    pub responses: Vec<ParsedSingle>,
    /// The echoed RFC 8954 nonce, if any.
    pub nonce: Option<Vec<u8>>,
    /// The DER certificates the responder included.
    pub certs: Vec<Vec<u8>>,
    /// The DER `ResponseData`: the bytes the signature covers.
    pub tbs_response_data: Vec<u8>,
    /// The DER `AlgorithmIdentifier` of the signature.
    pub signature_algorithm: Vec<u8>,
    /// The signature bits.
    pub signature: Vec<u8>,
}

/// Decodes a DER `OCSPResponse` (the client side; responses are not untrusted input to the
/// CA, but this still never panics).
///
/// Revocation reasons agentca never writes (certificateHold, unknown codes) are an error.
pub fn parse_response(der: &[u8]) -> Result<ParsedResponse, Error> {
    let response = OcspResponseAsn1::from_der(der).map_err(der_error)?;
    let code = response.response_status.0;
    let bytes = match (code, response.response_bytes) {
        (0, Some(bytes)) => bytes,
        (0, None) => {
            return Err(Error::Der(
                "successful OCSP response without responseBytes".into(),
            ));
        }
        (_, Some(_)) => {
            return Err(Error::Der(
                "unsuccessful OCSP response with responseBytes".into(),
            ));
        }
        (_, None) => {
            return OcspResponseStatus::from_code(code)
                .map(ParsedResponse::Unsuccessful)
                .ok_or_else(|| Error::Der(format!("unknown OCSPResponseStatus {code}")));
        }
    };
    if bytes.response_type != asn1::ID_PKIX_OCSP_BASIC {
        return Err(Error::Der(format!(
            "unsupported OCSP response type {}",
            bytes.response_type
        )));
    }
    let basic = BasicOcspResponseAsn1::from_der(bytes.response.as_bytes()).map_err(der_error)?;
    let tbs_response_data = basic.tbs_response_data.to_der().map_err(der_error)?;
    let data = ResponseDataAsn1::from_der(&tbs_response_data).map_err(der_error)?;
    let signature = basic
        .signature
        .as_bytes()
        .ok_or_else(|| Error::Der("OCSP signature is not a whole number of bytes".into()))?
        .to_vec();

    Ok(ParsedResponse::Successful(Box::new(BasicResponse {
        responder_id: match data.responder_id {
            ResponderIdAsn1::ByName(name) => ResponderId::ByName(name.to_der().map_err(der_error)?),
            ResponderIdAsn1::ByKey(hash) => ResponderId::ByKey(hash.as_bytes().to_vec()),
        },
        produced_at: offset_date_time(data.produced_at)?,
        responses: data
            .responses
            .iter()
            .map(parse_single)
            .collect::<Result<_, _>>()?,
        nonce: match &data.response_extensions {
            Some(extensions) => nonce_from_extensions(extensions)?,
            None => None,
        },
        certs: basic
            .certs
            .unwrap_or_default()
            .iter()
            .map(|cert| cert.to_der().map_err(der_error))
            .collect::<Result<_, _>>()?,
        tbs_response_data,
        signature_algorithm: basic.signature_algorithm.to_der().map_err(der_error)?,
        signature,
    })))
}

fn parse_single(single: &SingleResponseAsn1) -> Result<ParsedSingle, Error> {
    let status = match &single.cert_status {
        CertStatusAsn1::Good(_) => CertStatus::Good,
        CertStatusAsn1::Unknown(_) => CertStatus::Unknown,
        CertStatusAsn1::Revoked(info) => CertStatus::Revoked {
            revoked_at: offset_date_time(info.revocation_time)?,
            reason: info
                .revocation_reason
                .map(|code| {
                    RevocationReason::from_code(code.0)
                        .ok_or_else(|| Error::Der(format!("unknown revocation reason {}", code.0)))
                })
                .transpose()?,
        },
    };
    Ok(ParsedSingle {
        cert_id: CertId::from_asn1(&single.cert_id)?,
        status,
        this_update: offset_date_time(single.this_update)?,
        next_update: single.next_update.map(offset_date_time).transpose()?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use time::Duration;

    use super::super::test_pki::{self, TestPki};
    use super::super::{IssuerHashes, build_request, parse_request};
    use super::*;

    fn now() -> OffsetDateTime {
        // Sub-second part on purpose: it must be dropped, not rounded or rejected.
        OffsetDateTime::from_unix_timestamp(1_780_000_000).unwrap() + Duration::milliseconds(750)
    }

    fn whole(t: OffsetDateTime) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(t.unix_timestamp()).unwrap()
    }

    fn status(pki: &TestPki, hash: HashAlgorithm, status: CertStatus) -> SingleStatus {
        let hashes = IssuerHashes::from_issuer_der(&pki.issuer_der).unwrap();
        SingleStatus {
            cert_id: hashes.cert_id(hash, &pki.leaf_serial),
            status,
            this_update: now(),
            next_update: now() + Duration::days(4),
        }
    }

    fn basic(der: &[u8]) -> BasicResponse {
        match parse_response(der).unwrap() {
            ParsedResponse::Successful(basic) => *basic,
            other => panic!("not successful: {other:?}"),
        }
    }

    /// Checks the signature with the responder certificate's key, independently of the
    /// responder code.
    fn assert_signed_by(basic: &BasicResponse, cert_der: &[u8]) {
        use x509_parser::prelude::FromDer;
        let (_, cert) = x509_parser::parse_x509_certificate(cert_der).unwrap();
        let (_, alg) =
            x509_parser::x509::AlgorithmIdentifier::from_der(&basic.signature_algorithm).unwrap();
        let signature = x509_parser::der_parser::asn1_rs::BitString::new(0, &basic.signature);
        x509_parser::verify::verify_signature(
            cert.public_key(),
            &alg,
            &signature,
            &basic.tbs_response_data,
        )
        .unwrap();
    }

    fn revoked(reason: Option<RevocationReason>) -> CertStatus {
        CertStatus::Revoked {
            revoked_at: now() - Duration::hours(2),
            reason,
        }
    }

    #[test]
    fn round_trip_each_status() {
        let pki = test_pki::make(&rcgen::PKCS_ECDSA_P256_SHA256);
        let responder = Responder::new(&pki.responder, &pki.responder_der).unwrap();
        let cases = [
            CertStatus::Good,
            CertStatus::Unknown,
            revoked(Some(RevocationReason::KeyCompromise)),
            revoked(Some(RevocationReason::Superseded)),
            revoked(None),
        ];
        for (i, case) in cases.into_iter().enumerate() {
            let hash = HashAlgorithm::ALL[i % 2];
            let single = status(&pki, hash, case);
            let der = responder
                .respond(std::slice::from_ref(&single), now(), None)
                .unwrap();
            let basic = basic(&der);
            assert_eq!(basic.responses.len(), 1);
            let parsed = &basic.responses[0];
            assert_eq!(parsed.cert_id, single.cert_id);
            let expected = match case {
                CertStatus::Revoked { revoked_at, reason } => CertStatus::Revoked {
                    revoked_at: whole(revoked_at),
                    reason,
                },
                other => other,
            };
            assert_eq!(parsed.status, expected);
            assert_eq!(parsed.this_update, whole(single.this_update));
            assert_eq!(parsed.next_update, Some(whole(single.next_update)));
            assert_eq!(basic.produced_at, whole(now()));
            assert_eq!(basic.nonce, None);
            assert_eq!(basic.certs, vec![pki.responder_der.clone()]);
            assert_eq!(
                basic.responder_id,
                ResponderId::ByKey(responder.key_hash().to_vec())
            );
            assert_signed_by(&basic, &pki.responder_der);
            assert!(der.ends_with(responder.shared_tail()));
        }
        assert_eq!(pki.responder.signatures(), 5);
    }

    #[test]
    fn the_shared_tail_is_the_certs_field_and_ends_every_response() {
        let pki = test_pki::make(&rcgen::PKCS_ECDSA_P256_SHA256);
        let responder = Responder::new(&pki.responder, &pki.responder_der).unwrap();
        let tail = responder.shared_tail();
        let field = ContextSpecific::<Vec<Any>>::from_der(tail).unwrap();
        assert_eq!(field.tag_number, TagNumber(0));
        assert_eq!(field.value.len(), 1);
        assert_eq!(field.value[0].to_der().unwrap(), pki.responder_der);
        let statuses = [
            status(&pki, HashAlgorithm::Sha1, CertStatus::Good),
            status(&pki, HashAlgorithm::Sha256, revoked(None)),
        ];
        for nonce in [None, Some(&[7u8; 32][..])] {
            let der = responder.respond(&statuses, now(), nonce).unwrap();
            assert!(der.ends_with(tail));
            assert!(der.len() > tail.len());
        }
    }

    #[test]
    fn unspecified_reason_is_written_as_none() {
        let pki = test_pki::make(&rcgen::PKCS_ECDSA_P256_SHA256);
        let responder = Responder::new(&pki.responder, &pki.responder_der).unwrap();
        let single = status(
            &pki,
            HashAlgorithm::Sha1,
            revoked(Some(RevocationReason::Unspecified)),
        );
        let basic = basic(&responder.respond(&[single], now(), None).unwrap());
        assert!(matches!(
            basic.responses[0].status,
            CertStatus::Revoked { reason: None, .. }
        ));
    }

    #[test]
    fn several_statuses_and_nonce() {
        let pki = test_pki::make(&rcgen::PKCS_ECDSA_P384_SHA384);
        let responder = Responder::new(&pki.responder, &pki.responder_der).unwrap();
        let hashes = IssuerHashes::from_issuer_der(&pki.issuer_der).unwrap();
        let statuses: Vec<_> = [
            CertStatus::Good,
            revoked(Some(RevocationReason::CessationOfOperation)),
            CertStatus::Unknown,
        ]
        .into_iter()
        .enumerate()
        .map(|(i, s)| SingleStatus {
            cert_id: hashes.cert_id(HashAlgorithm::ALL[i % 2], &[0x01, i as u8]),
            status: s,
            this_update: now(),
            next_update: now() + Duration::hours(12),
        })
        .collect();
        for nonce in [None, Some(&[0x42u8; 1][..]), Some(&[0x17u8; 32][..])] {
            let basic = basic(&responder.respond(&statuses, now(), nonce).unwrap());
            assert_eq!(basic.nonce.as_deref(), nonce);
            let ids: Vec<_> = basic.responses.iter().map(|r| r.cert_id.clone()).collect();
            let expected: Vec<_> = statuses.iter().map(|s| s.cert_id.clone()).collect();
            assert_eq!(ids, expected);
            assert_eq!(basic.responses[1].status, {
                let CertStatus::Revoked { revoked_at, reason } = statuses[1].status else {
                    unreachable!()
                };
                CertStatus::Revoked {
                    revoked_at: whole(revoked_at),
                    reason,
                }
            });
            assert_signed_by(&basic, &pki.responder_der);
        }
    }

    #[test]
    fn request_to_response() {
        let pki = test_pki::make(&rcgen::PKCS_ED25519);
        let hashes = IssuerHashes::from_issuer_der(&pki.issuer_der).unwrap();
        let ids = [
            hashes.cert_id(HashAlgorithm::Sha1, &pki.leaf_serial),
            hashes.cert_id(HashAlgorithm::Sha256, &pki.leaf_serial),
        ];
        let request =
            parse_request(&build_request(&ids, Some(b"0123456789abcdef")).unwrap()).unwrap();
        assert!(request.cert_ids.iter().all(|id| hashes.matches(id)));
        let statuses: Vec<_> = request
            .cert_ids
            .iter()
            .map(|id| SingleStatus {
                cert_id: id.clone(),
                status: CertStatus::Good,
                this_update: now(),
                next_update: now() + Duration::days(1),
            })
            .collect();
        let responder = Responder::new(&pki.responder, &pki.responder_der).unwrap();
        let der = responder
            .respond(&statuses, now(), request.nonce.as_deref())
            .unwrap();
        let basic = basic(&der);
        assert_eq!(basic.nonce.as_deref(), Some(&b"0123456789abcdef"[..]));
        assert_eq!(basic.responses.len(), 2);
        assert_signed_by(&basic, &pki.responder_der);
    }

    #[test]
    fn refused_calls_cost_no_signature() {
        let pki = test_pki::make(&rcgen::PKCS_ECDSA_P256_SHA256);
        let responder = Responder::new(&pki.responder, &pki.responder_der).unwrap();
        let good = status(&pki, HashAlgorithm::Sha1, CertStatus::Good);
        assert!(responder.respond(&[], now(), None).is_err());
        assert!(
            responder
                .respond(std::slice::from_ref(&good), now(), Some(&[]))
                .is_err()
        );
        assert!(
            responder
                .respond(std::slice::from_ref(&good), now(), Some(&[1; 33]))
                .is_err()
        );
        let mut backwards = good.clone();
        backwards.next_update = backwards.this_update - Duration::seconds(1);
        assert!(responder.respond(&[backwards], now(), None).is_err());
        let mut ancient = good;
        ancient.this_update = OffsetDateTime::UNIX_EPOCH - Duration::days(1);
        assert!(responder.respond(&[ancient], now(), None).is_err());
        assert_eq!(pki.responder.signatures(), 0);
    }

    #[test]
    fn responder_refuses_a_certificate_for_another_key() {
        let pki = test_pki::make(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert!(matches!(
            Responder::new(&pki.responder, &pki.issuer_der),
            Err(Error::UnsupportedKey(_))
        ));
        assert!(Responder::new(&pki.responder, b"junk").is_err());
        let mut trailing = pki.responder_der.clone();
        trailing.push(0);
        assert!(Responder::new(&pki.responder, &trailing).is_err());
    }

    #[test]
    fn key_hash_is_sha1_of_the_key_bits() {
        let pki = test_pki::make(&rcgen::PKCS_ECDSA_P256_SHA256);
        let responder = Responder::new(&pki.responder, &pki.responder_der).unwrap();
        let bits = subject_public_key_bits(&pki.responder.subject_public_key_info()).unwrap();
        assert_eq!(responder.key_hash(), HashAlgorithm::Sha1.digest(&bits));
        assert_eq!(responder.key_hash().len(), 20);
    }

    #[test]
    fn error_responses() {
        for status in OcspResponseStatus::ALL {
            let der = error_response(status);
            let encoded = OcspResponseAsn1 {
                response_status: EnumeratedCode(status.code()),
                response_bytes: None,
            }
            .to_der()
            .unwrap();
            assert_eq!(der, encoded);
            assert_eq!(
                parse_response(&der).unwrap(),
                ParsedResponse::Unsuccessful(status)
            );
        }
        assert_eq!(
            error_response(OcspResponseStatus::Unauthorized),
            [0x30, 0x03, 0x0a, 0x01, 0x06]
        );
        assert_eq!(OcspResponseStatus::from_code(0), None);
        assert_eq!(OcspResponseStatus::from_code(4), None);
    }

    #[test]
    fn parse_response_refuses_nonsense() {
        assert!(parse_response(&[]).is_err());
        assert!(parse_response(&[0x30, 0x03, 0x0a, 0x01, 0x00]).is_err());
        assert!(parse_response(&[0x30, 0x03, 0x0a, 0x01, 0x04]).is_err());
        assert!(parse_response(&[0x30, 0x03, 0x0a, 0x01, 0x07]).is_err());
        let pki = test_pki::make(&rcgen::PKCS_ECDSA_P256_SHA256);
        let responder = Responder::new(&pki.responder, &pki.responder_der).unwrap();
        let single = status(&pki, HashAlgorithm::Sha1, CertStatus::Good);
        let der = responder.respond(&[single], now(), None).unwrap();
        for len in 0..der.len() {
            assert!(parse_response(&der[..len]).is_err());
        }
        let mut trailing = der;
        trailing.push(0);
        assert!(parse_response(&trailing).is_err());
    }
}
