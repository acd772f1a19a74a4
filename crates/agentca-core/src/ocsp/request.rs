//! OCSP requests: the parser for untrusted input and the client-side builder.

use std::collections::BTreeSet;

use der::asn1::{Any, ContextSpecific, ObjectIdentifier, OctetString};
use der::{Decode, Encode, Reader, SliceReader, TagNumber};
use x509_cert::ext::{Extension, Extensions};

use super::asn1::{self, RequestAsn1};
use super::response::OcspResponseStatus;
use super::{CertId, der_error, nonce_len_ok};
use crate::error::Error;

/// The most `CertID`s one request may ask about.
///
/// RFC 6960 sets no limit; clients send one (RFC 5019 §2.1.1 allows only one), and a cap keeps
/// the work per request, and the size of the response the responder must sign, small.
pub const MAX_REQUESTS: usize = 64;

/// A parsed OCSP request: what the client asks about, and the nonce to echo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OcspRequest {
    /// The certificates asked about, in request order; never empty, at most [`MAX_REQUESTS`].
    pub cert_ids: Vec<CertId>,
    /// The RFC 8954 nonce (1 to 32 bytes), if the client sent one.
    pub nonce: Option<Vec<u8>>,
}

/// Why a request was refused; both kinds are answered with `malformedRequest`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// Not a well-formed OCSP request, or one outside the limits this responder documents.
    #[error("malformed OCSP request: {0}")]
    Malformed(String),
    /// A `CertID` hashed with something other than SHA-1 or SHA-256.
    #[error("unsupported CertID hash algorithm")]
    UnsupportedHash,
}

impl RequestError {
    pub(super) fn malformed(reason: impl Into<String>) -> Self {
        Self::Malformed(reason.into())
    }

    /// The status to answer with. An unsupported hash is also `malformedRequest`: RFC 6960
    /// §2.3 has no closer status, and `unauthorized` would wrongly say the issuer is unknown.
    pub fn response_status(&self) -> OcspResponseStatus {
        OcspResponseStatus::MalformedRequest
    }
}

impl From<RequestError> for Error {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::Malformed(reason) => Error::OcspMalformed(reason),
            RequestError::UnsupportedHash => {
                Error::OcspMalformed("unsupported CertID hash algorithm".into())
            }
        }
    }
}

/// Parses a DER `OCSPRequest` from an untrusted client.
///
/// Signed requests are accepted and the signature ignored: RFC 6960 §4.1.2 makes signing
/// optional, agentca answers the same to anyone (status is public), and checking the
/// signature would let anyone make the responder do asymmetric work for free. The caller
/// bounds the input length; within it, work and memory are linear in the input, nesting is
/// fixed by the schema, and no more than [`MAX_REQUESTS`] entries are decoded.
pub fn parse_request(der: &[u8]) -> Result<OcspRequest, RequestError> {
    decode_request(der).map_err(Failure::into_request_error)
}

fn decode_request(der: &[u8]) -> Result<OcspRequest, Failure> {
    let mut reader = SliceReader::new(der)?;
    let request = reader.sequence(|r| {
        let request = r.sequence(decode_tbs_request)?;
        // optionalSignature [0] EXPLICIT Signature: well-formedness only, see above.
        ContextSpecific::<Any>::decode_explicit(r, TagNumber(0))?;
        Ok::<_, Failure>(request)
    })?;
    reader.finish()?;
    Ok(request)
}

fn decode_tbs_request<'a, R: Reader<'a>>(r: &mut R) -> Result<OcspRequest, Failure> {
    // version [0] EXPLICIT Version DEFAULT v1. DER would omit v1, but some clients encode
    // it anyway; it is harmless, while any other version is a format we do not know.
    if let Some(version) = ContextSpecific::<u8>::decode_explicit(r, TagNumber(0))?
        && version.value != 0
    {
        return Err(RequestError::malformed("unsupported request version").into());
    }
    // requestorName [1] EXPLICIT GeneralName: only meaningful for signed requests.
    ContextSpecific::<Any>::decode_explicit(r, TagNumber(1))?;

    let cert_ids = r.sequence(|list| {
        let mut cert_ids = Vec::new();
        while !list.is_finished() {
            if cert_ids.len() == MAX_REQUESTS {
                return Err(RequestError::malformed(format!(
                    "more than {MAX_REQUESTS} certificates in one request"
                ))
                .into());
            }
            let request: RequestAsn1 = list.decode()?;
            if let Some(extensions) = &request.single_request_extensions {
                check_extensions(extensions, &[])?;
            }
            cert_ids.push(CertId::from_asn1(&request.req_cert)?);
        }
        Ok::<_, Failure>(cert_ids)
    })?;
    if cert_ids.is_empty() {
        return Err(RequestError::malformed("empty requestList").into());
    }

    let mut nonce = None;
    if let Some(extensions) = ContextSpecific::<Extensions>::decode_explicit(r, TagNumber(2))? {
        check_extensions(&extensions.value, &[asn1::ID_PKIX_OCSP_NONCE])?;
        if let Some(ext) = find(&extensions.value, asn1::ID_PKIX_OCSP_NONCE) {
            nonce = Some(decode_nonce(ext)?);
        }
    }
    Ok(OcspRequest { cert_ids, nonce })
}

/// Rejects duplicate extensions (RFC 5280 §4.2) and critical extensions not in `understood`
/// (RFC 6960 §4.4: a critical extension we cannot honour must not be silently ignored).
fn check_extensions(
    extensions: &[Extension],
    understood: &[ObjectIdentifier],
) -> Result<(), RequestError> {
    let mut seen = BTreeSet::new();
    for ext in extensions {
        if !seen.insert(ext.extn_id) {
            return Err(RequestError::malformed(format!(
                "duplicate extension {}",
                ext.extn_id
            )));
        }
        if ext.critical && !understood.contains(&ext.extn_id) {
            return Err(RequestError::malformed(format!(
                "unsupported critical extension {}",
                ext.extn_id
            )));
        }
    }
    Ok(())
}

fn find(extensions: &[Extension], id: ObjectIdentifier) -> Option<&Extension> {
    extensions.iter().find(|ext| ext.extn_id == id)
}

/// The nonce is an OCTET STRING inside extnValue (RFC 8954 §2.1), of 1 to 32 bytes; longer
/// ones are refused rather than echoed, as that section asks.
fn decode_nonce(ext: &Extension) -> Result<Vec<u8>, RequestError> {
    let nonce = OctetString::from_der(ext.extn_value.as_bytes())
        .map_err(|_| RequestError::malformed("nonce is not a DER OCTET STRING"))?;
    if !nonce_len_ok(nonce.as_bytes()) {
        return Err(RequestError::malformed(format!(
            "nonce of {} bytes; RFC 8954 allows 1 to 32",
            nonce.as_bytes().len()
        )));
    }
    Ok(nonce.as_bytes().to_vec())
}

/// The nonce extension as both requests and responses carry it.
pub(super) fn nonce_extension(nonce: &[u8]) -> Result<Extension, Error> {
    let inner = OctetString::new(nonce).map_err(der_error)?;
    Ok(Extension {
        extn_id: asn1::ID_PKIX_OCSP_NONCE,
        critical: false,
        extn_value: OctetString::new(inner.to_der().map_err(der_error)?).map_err(der_error)?,
    })
}

/// Decodes the nonce of a response's extensions, with the same rules as for requests.
pub(super) fn nonce_from_extensions(extensions: &[Extension]) -> Result<Option<Vec<u8>>, Error> {
    check_extensions(extensions, &[asn1::ID_PKIX_OCSP_NONCE])?;
    find(extensions, asn1::ID_PKIX_OCSP_NONCE)
        .map(decode_nonce)
        .transpose()
        .map_err(Error::from)
}

/// Builds an unsigned DER `OCSPRequest`, the way agentca's own client asks.
///
/// It enforces none of [`parse_request`]'s limits (count, nonce length), so that tests can
/// also build the requests a responder must refuse.
pub fn build_request(cert_ids: &[CertId], nonce: Option<&[u8]>) -> Result<Vec<u8>, Error> {
    let request_list = cert_ids
        .iter()
        .map(|id| {
            Ok(RequestAsn1 {
                req_cert: id.to_asn1()?,
                single_request_extensions: None,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let request_extensions = nonce
        .map(|n| nonce_extension(n).map(|e| vec![e]))
        .transpose()?;
    asn1::OcspRequestAsn1 {
        tbs_request: asn1::TbsRequestAsn1 {
            version: asn1::Version::V1,
            request_list,
            request_extensions,
        },
    }
    .to_der()
    .map_err(der_error)
}

/// What can stop the parser: the DER layer or a rule of ours. Kept private so that `der`'s
/// error type does not leak into the public [`RequestError`].
enum Failure {
    Der(der::Error),
    Request(RequestError),
}

impl Failure {
    fn into_request_error(self) -> RequestError {
        match self {
            Self::Der(e) => RequestError::Malformed(e.to_string()),
            Self::Request(e) => e,
        }
    }
}

impl From<der::Error> for Failure {
    fn from(e: der::Error) -> Self {
        Self::Der(e)
    }
}

impl From<RequestError> for Failure {
    fn from(e: RequestError) -> Self {
        Self::Request(e)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::test_pki;
    use super::super::{HashAlgorithm, IssuerHashes};
    use super::*;

    use crate::profile::tlv;

    fn sample_id(hash: HashAlgorithm, serial: &[u8]) -> CertId {
        CertId {
            hash,
            issuer_name_hash: vec![0xaa; hash.output_len()],
            issuer_key_hash: vec![0xbb; hash.output_len()],
            serial: serial.to_vec(),
        }
    }

    fn sample_request(nonce: Option<&[u8]>) -> Vec<u8> {
        build_request(&[sample_id(HashAlgorithm::Sha1, &[0x01, 0x02])], nonce).unwrap()
    }

    fn assert_malformed(der: &[u8]) -> String {
        let start = Instant::now();
        let result = parse_request(der);
        assert!(start.elapsed() < Duration::from_secs(1), "slow: {result:?}");
        match result {
            Err(RequestError::Malformed(reason)) => reason,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    /// The body of the outer SEQUENCE of a DER request we built (short or 2-byte lengths).
    fn outer_body(der: &[u8]) -> &[u8] {
        match der[1] {
            n if n < 0x80 => &der[2..],
            0x81 => &der[3..],
            0x82 => &der[4..],
            _ => unreachable!(),
        }
    }

    #[test]
    fn round_trip_without_nonce() {
        let ids = vec![
            sample_id(HashAlgorithm::Sha1, &[0x01]),
            sample_id(HashAlgorithm::Sha256, &[0x00, 0x80, 0x01]),
            sample_id(HashAlgorithm::Sha256, &[0xff, 0x01]),
        ];
        let parsed = parse_request(&build_request(&ids, None).unwrap()).unwrap();
        assert_eq!(
            parsed,
            OcspRequest {
                cert_ids: ids,
                nonce: None
            }
        );
    }

    #[test]
    fn round_trip_with_nonce() {
        for len in [1, 16, 32] {
            let nonce = vec![0x5a; len];
            let parsed = parse_request(&sample_request(Some(&nonce))).unwrap();
            assert_eq!(parsed.nonce, Some(nonce));
            assert_eq!(parsed.cert_ids.len(), 1);
        }
    }

    #[test]
    fn max_requests_is_accepted() {
        let ids: Vec<_> = (0..MAX_REQUESTS as u8)
            .map(|i| sample_id(HashAlgorithm::Sha256, &[0x01, i]))
            .collect();
        let parsed = parse_request(&build_request(&ids, None).unwrap()).unwrap();
        assert_eq!(parsed.cert_ids, ids);
    }

    #[test]
    fn cert_id_der_round_trip() {
        for hash in HashAlgorithm::ALL {
            let id = sample_id(hash, &[0x7f; 20]);
            assert_eq!(CertId::from_der(&id.to_der().unwrap()).unwrap(), id);
        }
    }

    #[test]
    fn cert_id_for_an_issuer_matches_it_only() {
        let pki = test_pki::make(&rcgen::PKCS_ECDSA_P256_SHA256);
        let other = test_pki::make(&rcgen::PKCS_ECDSA_P256_SHA256);
        let hashes = IssuerHashes::from_issuer_der(&pki.issuer_der).unwrap();
        let other_hashes = IssuerHashes::from_issuer_der(&other.issuer_der).unwrap();
        for hash in HashAlgorithm::ALL {
            let id = hashes.cert_id(hash, &pki.leaf_serial);
            assert!(hashes.matches(&id));
            assert!(!other_hashes.matches(&id));
            let mut wrong_key = id.clone();
            wrong_key.issuer_key_hash = other_hashes.key_hash(hash).to_vec();
            assert!(!hashes.matches(&wrong_key));
        }
        // Same name, other key: the name hash alone must not match.
        assert_eq!(
            hashes.name_hash(HashAlgorithm::Sha1),
            other_hashes.name_hash(HashAlgorithm::Sha1)
        );
    }

    #[test]
    fn issuer_hashes_refuse_garbage() {
        assert!(IssuerHashes::from_issuer_der(b"not a certificate").is_err());
        let pki = test_pki::make(&rcgen::PKCS_ECDSA_P256_SHA256);
        let mut trailing = pki.issuer_der.clone();
        trailing.push(0);
        assert!(IssuerHashes::from_issuer_der(&trailing).is_err());
    }

    #[test]
    fn signed_requests_are_accepted_and_the_signature_ignored() {
        let unsigned = sample_request(None);
        let tbs = outer_body(&unsigned);
        // Signature ::= SEQUENCE { ecdsa-with-SHA256, BIT STRING } inside [0] EXPLICIT.
        let alg = crate::signer::SignatureAlgorithm::EcdsaP256Sha256.algorithm_identifier_der();
        let signature = tlv(0x30, &[alg, &tlv(0x03, &[0x00, 0xde, 0xad])].concat());
        let signed = tlv(0x30, &[tbs, &tlv(0xa0, &signature)].concat());
        assert_eq!(
            parse_request(&signed).unwrap(),
            parse_request(&unsigned).unwrap()
        );
    }

    #[test]
    fn explicit_v1_and_requestor_name_are_tolerated() {
        let unsigned = sample_request(None);
        let tbs_body = outer_body(outer_body(&unsigned));
        let version = tlv(0xa0, &tlv(0x02, &[0x00]));
        // requestorName [1] EXPLICIT GeneralName dNSName
        let requestor = tlv(0xa1, &tlv(0x82, b"client.example"));
        let tbs = tlv(0x30, &[&version[..], &requestor, tbs_body].concat());
        let request = tlv(0x30, &tbs);
        assert_eq!(
            parse_request(&request).unwrap(),
            parse_request(&unsigned).unwrap()
        );

        let v2 = tlv(0xa0, &tlv(0x02, &[0x01]));
        let request = tlv(0x30, &tlv(0x30, &[&v2[..], tbs_body].concat()));
        assert!(assert_malformed(&request).contains("version"));
    }

    #[test]
    fn empty_and_truncated_input() {
        assert_malformed(&[]);
        let der = sample_request(Some(&[7; 16]));
        for len in 0..der.len() {
            assert_malformed(&der[..len]);
        }
    }

    #[test]
    fn trailing_garbage() {
        let mut der = sample_request(None);
        der.push(0x00);
        assert_malformed(&der);
        let mut der = sample_request(None);
        der.extend_from_slice(&sample_request(None));
        assert_malformed(&der);
    }

    #[test]
    fn random_bytes() {
        // xorshift64: deterministic noise without a dependency.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut noise = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..50 {
            let mut bytes: Vec<u8> = (0..10_240).map(|_| noise() as u8).collect();
            if round % 2 == 1 {
                // Plausible start, so the parser gets past the first header.
                bytes[..4].copy_from_slice(&[0x30, 0x82, 0x27, 0xfc]);
            }
            assert_malformed(&bytes);
        }
    }

    #[test]
    fn every_single_byte_mutation_is_handled() {
        let der = sample_request(Some(&[9; 8]));
        let start = Instant::now();
        for at in 0..der.len() {
            for value in [0x00, 0x01, 0x7f, 0x80, 0x81, 0xff, der[at] ^ 0x20] {
                let mut mutated = der.clone();
                mutated[at] = value;
                // Any answer is fine as long as it comes back.
                let _ = parse_request(&mutated);
            }
        }
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn too_many_cert_ids() {
        let ids: Vec<_> = (0..1000u16)
            .map(|i| sample_id(HashAlgorithm::Sha1, &i.to_be_bytes()[..]))
            .map(|mut id| {
                // keep serials canonical and positive
                id.serial.insert(0, 0x01);
                id
            })
            .collect();
        let reason = assert_malformed(&build_request(&ids, None).unwrap());
        assert!(reason.contains("more than 64"), "{reason}");
        let ids = vec![sample_id(HashAlgorithm::Sha1, &[1]); MAX_REQUESTS + 1];
        assert_malformed(&build_request(&ids, None).unwrap());
    }

    #[test]
    fn empty_request_list() {
        let reason = assert_malformed(&build_request(&[], None).unwrap());
        assert!(reason.contains("empty"), "{reason}");
    }

    #[test]
    fn nonce_limits() {
        let reason = assert_malformed(&sample_request(Some(&[0x33; 33])));
        assert!(reason.contains("33 bytes"), "{reason}");
        assert_malformed(&sample_request(Some(&[])));
        assert_malformed(&sample_request(Some(&[0x44; 200])));
    }

    /// A one-CertID request whose requestExtensions hold exactly `extensions` (DER).
    fn with_extensions(extensions: &[u8]) -> Vec<u8> {
        let unsigned = sample_request(None);
        let tbs_body = outer_body(outer_body(&unsigned));
        let extensions = tlv(0xa2, &tlv(0x30, extensions));
        tlv(0x30, &tlv(0x30, &[tbs_body, &extensions].concat()))
    }

    /// Nonce extension OID 1.3.6.1.5.5.7.48.1.2.
    fn nonce_oid() -> Vec<u8> {
        tlv(
            0x06,
            &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x02],
        )
    }

    #[test]
    fn nonce_must_be_an_octet_string() {
        let raw = [0x55u8; 6];
        let wrapped = tlv(0x30, &[nonce_oid(), tlv(0x04, &tlv(0x04, &raw))].concat());
        assert_eq!(
            parse_request(&with_extensions(&wrapped)).unwrap().nonce,
            Some(raw.to_vec())
        );
        // extnValue holding the raw nonce instead of an OCTET STRING around it.
        let bare = tlv(0x30, &[nonce_oid(), tlv(0x04, &raw)].concat());
        let reason = assert_malformed(&with_extensions(&bare));
        assert!(reason.contains("OCTET STRING"), "{reason}");
        // A critical nonce is understood, so it is fine.
        let critical = tlv(
            0x30,
            &[nonce_oid(), tlv(0x01, &[0xff]), tlv(0x04, &tlv(0x04, &raw))].concat(),
        );
        assert!(parse_request(&with_extensions(&critical)).is_ok());
    }

    #[test]
    fn unknown_hash_algorithm() {
        let id = sample_id(HashAlgorithm::Sha256, &[1]);
        let der = build_request(&[id], None).unwrap();
        // Turn id-sha256 (…04 02 01) into id-sha384 (…04 02 02).
        let sha256 = [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
        let at = der.windows(9).position(|w| w == sha256).unwrap();
        let mut der = der;
        der[at + 8] = 0x02;
        assert_eq!(parse_request(&der), Err(RequestError::UnsupportedHash));
        assert_eq!(
            RequestError::UnsupportedHash.response_status(),
            OcspResponseStatus::MalformedRequest
        );
    }

    #[test]
    fn wrong_hash_length() {
        let mut id = sample_id(HashAlgorithm::Sha256, &[1]);
        id.issuer_key_hash.truncate(20);
        assert_malformed(&build_request(&[id], None).unwrap());
    }

    #[test]
    fn non_canonical_serial() {
        let id = sample_id(HashAlgorithm::Sha1, &[0x00, 0x01]);
        assert_malformed(&build_request(&[id], None).unwrap());
    }

    #[test]
    fn critical_unknown_extension_is_refused_noncritical_ignored() {
        // id-pkix-ocsp-response (acceptable responses) listing id-pkix-ocsp-basic.
        let extension = |critical: bool| {
            let oid = tlv(
                0x06,
                &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x04],
            );
            let flag = if critical { tlv(0x01, &[0xff]) } else { vec![] };
            let basic = [0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01];
            let value = tlv(0x04, &tlv(0x30, &tlv(0x06, &basic)));
            tlv(0x30, &[oid, flag, value].concat())
        };
        assert!(parse_request(&with_extensions(&extension(false))).is_ok());
        let reason = assert_malformed(&with_extensions(&extension(true)));
        assert!(reason.contains("critical"), "{reason}");
        let twice = [extension(false), extension(false)].concat();
        let reason = assert_malformed(&with_extensions(&twice));
        assert!(reason.contains("duplicate"), "{reason}");
        let nonce = tlv(0x30, &[nonce_oid(), tlv(0x04, &tlv(0x04, &[1]))].concat());
        let reason = assert_malformed(&with_extensions(&[nonce.clone(), nonce].concat()));
        assert!(reason.contains("duplicate"), "{reason}");
    }

    #[test]
    fn critical_single_request_extension_is_refused() {
        let request = sample_request(None);
        let cert_id = sample_id(HashAlgorithm::Sha1, &[0x01, 0x02])
            .to_der()
            .unwrap();
        // service locator (1.3.6.1.5.5.7.48.1.7), critical, with an empty SEQUENCE as value
        let oid = tlv(
            0x06,
            &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x07],
        );
        let ext = |critical: bool| {
            let flag = if critical { tlv(0x01, &[0xff]) } else { vec![] };
            tlv(
                0x30,
                &[oid.clone(), flag, tlv(0x04, &[0x30, 0x00])].concat(),
            )
        };
        let build = |ext: Vec<u8>| {
            let single = tlv(
                0x30,
                &[cert_id.clone(), tlv(0xa0, &tlv(0x30, &ext))].concat(),
            );
            tlv(0x30, &tlv(0x30, &tlv(0x30, &single)))
        };
        assert_eq!(
            parse_request(&build(ext(false))).unwrap(),
            parse_request(&request).unwrap()
        );
        assert!(assert_malformed(&build(ext(true))).contains("critical"));
    }

    #[test]
    fn deep_nesting() {
        let mut nested = Vec::new();
        for _ in 0..10_000 {
            nested = tlv(0x30, &nested);
        }
        assert_malformed(&nested);
        // Nesting hidden inside the opaque requestorName is skipped without recursion.
        let unsigned = sample_request(None);
        let tbs_body = outer_body(outer_body(&unsigned));
        let request = tlv(
            0x30,
            &tlv(0x30, &[&tlv(0xa1, &nested)[..], tbs_body].concat()),
        );
        assert!(parse_request(&request).is_ok());
    }

    #[test]
    fn huge_declared_lengths() {
        assert_malformed(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]);
        assert_malformed(&[0x30, 0x88, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert_malformed(&[0x30, 0x80, 0x00, 0x00]);
    }

    #[test]
    fn request_error_maps_to_core_error() {
        let e: Error = RequestError::UnsupportedHash.into();
        assert!(matches!(e, Error::OcspMalformed(_)));
    }
}
