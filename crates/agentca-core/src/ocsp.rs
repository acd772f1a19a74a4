//! OCSP (RFC 6960) request parsing and response encoding.
//!
//! The responder answers with responses signed by the delegated OCSP responder certificate
//! (issued by the issuing CA with id-kp-OCSPSigning and id-pkix-ocsp-nocheck), identified by
//! key hash, and profiled as RFC 5019 asks of high-volume responders: one basic response type,
//! GeneralizedTime in whole seconds, `nextUpdate` always present. Nonces (RFC 8954) are echoed
//! when a request carries one.
//!
//! [`parse_request`] is the one entry point for untrusted bytes; it is bounded in time and
//! memory by its input and [`MAX_REQUESTS`]. [`Responder`] signs; [`build_request`] and
//! [`parse_response`] are the client side, for tests and for verifying a live responder.

mod asn1;
mod request;
mod response;

#[cfg(test)]
mod interop_tests;
#[cfg(test)]
mod test_pki;

use der::asn1::{Any, GeneralizedTime, Int, OctetString};
use der::{Decode, Encode};
use time::OffsetDateTime;
use x509_cert::spki::AlgorithmIdentifierOwned;

use crate::error::Error;

pub use request::{MAX_REQUESTS, OcspRequest, RequestError, build_request, parse_request};
pub use response::{
    BasicResponse, CertStatus, OcspResponseStatus, ParsedResponse, ParsedSingle, Responder,
    ResponderId, ResponderIdentity, SingleStatus, error_response, parse_response,
};

/// The hash a `CertID` identifies its issuer with.
///
/// SHA-1 is accepted here because RFC 5019 §2.1.1 and RFC 6960 §4.1.1 use it as an identifier
/// hash, where only second-preimage resistance against a public, CA-chosen input matters; it
/// is never used for a signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashAlgorithm {
    /// SHA-1, the CertID hash every OCSP client can send.
    Sha1,
    /// SHA-256.
    Sha256,
}

impl HashAlgorithm {
    /// Both supported hashes.
    pub const ALL: [Self; 2] = [Self::Sha1, Self::Sha256];

    /// The digest length in bytes, which both CertID hashes must have.
    pub fn output_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
        }
    }

    /// Hashes `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        let algorithm = match self {
            Self::Sha1 => &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
            Self::Sha256 => &aws_lc_rs::digest::SHA256,
        };
        aws_lc_rs::digest::digest(algorithm, data).as_ref().to_vec()
    }

    fn from_algorithm_identifier(id: &AlgorithmIdentifierOwned) -> Result<Self, RequestError> {
        let hash = if id.oid == asn1::ID_SHA1 {
            Self::Sha1
        } else if id.oid == asn1::ID_SHA256 {
            Self::Sha256
        } else {
            return Err(RequestError::UnsupportedHash);
        };
        // Parameters are absent or NULL for both (RFC 3279 §2.2.1, RFC 5754 §2); clients
        // send either, so both are accepted.
        match &id.parameters {
            None => Ok(hash),
            Some(p) if p == &Any::null() => Ok(hash),
            Some(_) => Err(RequestError::malformed(
                "CertID hash algorithm has parameters",
            )),
        }
    }

    /// Written with NULL parameters for both hashes: that is how OpenSSL and Go write CertIDs,
    /// so an answer echoes their CertID byte for byte, whatever a client compares.
    fn algorithm_identifier(self) -> AlgorithmIdentifierOwned {
        let oid = match self {
            Self::Sha1 => asn1::ID_SHA1,
            Self::Sha256 => asn1::ID_SHA256,
        };
        AlgorithmIdentifierOwned {
            oid,
            parameters: Some(Any::null()),
        }
    }
}

/// An OCSP `CertID`: which certificate a request asks about and a response answers for.
///
/// The serial is kept as the INTEGER content bytes exactly as received, not as an agentca
/// serial: a request may name any serial of any issuer, and the response must echo it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CertId {
    /// The hash used for both issuer hashes.
    pub hash: HashAlgorithm,
    /// Hash of the DER of the issuer's subject name.
    pub issuer_name_hash: Vec<u8>,
    /// Hash of the issuer's subjectPublicKey bits.
    pub issuer_key_hash: Vec<u8>,
    /// The serialNumber INTEGER's content bytes (big-endian two's complement).
    pub serial: Vec<u8>,
}

impl CertId {
    /// Encodes the `CertID` as DER.
    pub fn to_der(&self) -> Result<Vec<u8>, Error> {
        self.to_asn1()?.to_der().map_err(der_error)
    }

    /// Decodes a DER `CertID`, applying the same rules as [`parse_request`].
    pub fn from_der(der: &[u8]) -> Result<Self, RequestError> {
        let asn1 = asn1::CertIdAsn1::from_der(der)
            .map_err(|e| RequestError::malformed(format!("CertID: {e}")))?;
        Self::from_asn1(&asn1)
    }

    fn from_asn1(asn1: &asn1::CertIdAsn1) -> Result<Self, RequestError> {
        let hash = HashAlgorithm::from_algorithm_identifier(&asn1.hash_algorithm)?;
        let name_hash = asn1.issuer_name_hash.as_bytes();
        let key_hash = asn1.issuer_key_hash.as_bytes();
        if name_hash.len() != hash.output_len() || key_hash.len() != hash.output_len() {
            return Err(RequestError::malformed(
                "CertID issuer hash has the wrong length for its algorithm",
            ));
        }
        Ok(Self {
            hash,
            issuer_name_hash: name_hash.to_vec(),
            issuer_key_hash: key_hash.to_vec(),
            serial: asn1.serial_number.as_bytes().to_vec(),
        })
    }

    fn to_asn1(&self) -> Result<asn1::CertIdAsn1, Error> {
        Ok(asn1::CertIdAsn1 {
            hash_algorithm: self.hash.algorithm_identifier(),
            issuer_name_hash: OctetString::new(self.issuer_name_hash.as_slice())
                .map_err(der_error)?,
            issuer_key_hash: OctetString::new(self.issuer_key_hash.as_slice())
                .map_err(der_error)?,
            serial_number: Int::new(&self.serial).map_err(der_error)?,
        })
    }
}

/// The issuer hashes of one issuing CA, in both supported hashes, computed once so that
/// matching a `CertID` is a comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerHashes {
    sha1_name: Vec<u8>,
    sha1_key: Vec<u8>,
    sha256_name: Vec<u8>,
    sha256_key: Vec<u8>,
}

impl IssuerHashes {
    /// Computes the hashes from the issuing CA's DER certificate: over the full DER of its
    /// subject `Name` and over its subjectPublicKey BIT STRING contents (RFC 6960 §4.1.1).
    pub fn from_issuer_der(cert_der: &[u8]) -> Result<Self, Error> {
        let (rest, cert) = x509_parser::parse_x509_certificate(cert_der)
            .map_err(|e| Error::Der(format!("issuer certificate: {e}")))?;
        if !rest.is_empty() {
            return Err(Error::Der(
                "issuer certificate: trailing bytes after the certificate".into(),
            ));
        }
        let tbs = &cert.tbs_certificate;
        let name = tbs.subject.as_raw();
        let key = tbs.subject_pki.subject_public_key.data.as_ref();
        Ok(Self {
            sha1_name: HashAlgorithm::Sha1.digest(name),
            sha1_key: HashAlgorithm::Sha1.digest(key),
            sha256_name: HashAlgorithm::Sha256.digest(name),
            sha256_key: HashAlgorithm::Sha256.digest(key),
        })
    }

    /// The hash of the issuer's subject name.
    pub fn name_hash(&self, hash: HashAlgorithm) -> &[u8] {
        match hash {
            HashAlgorithm::Sha1 => &self.sha1_name,
            HashAlgorithm::Sha256 => &self.sha256_name,
        }
    }

    /// The hash of the issuer's public key bits.
    pub fn key_hash(&self, hash: HashAlgorithm) -> &[u8] {
        match hash {
            HashAlgorithm::Sha1 => &self.sha1_key,
            HashAlgorithm::Sha256 => &self.sha256_key,
        }
    }

    /// Whether `id` names this issuer (both hashes must match; the values are public, so the
    /// comparison need not be constant-time).
    pub fn matches(&self, id: &CertId) -> bool {
        id.issuer_name_hash == self.name_hash(id.hash)
            && id.issuer_key_hash == self.key_hash(id.hash)
    }

    /// The `CertID` of the certificate with `serial` (INTEGER content bytes) under this issuer.
    pub fn cert_id(&self, hash: HashAlgorithm, serial: &[u8]) -> CertId {
        CertId {
            hash,
            issuer_name_hash: self.name_hash(hash).to_vec(),
            issuer_key_hash: self.key_hash(hash).to_vec(),
            serial: serial.to_vec(),
        }
    }
}

fn der_error(e: der::Error) -> Error {
    Error::Der(e.to_string())
}

/// Encodes `t` as a GeneralizedTime in whole seconds, dropping any fraction: RFC 5019 forbids
/// fractional seconds in OCSP, as RFC 5280 §4.1.2.5.2 does in certificates.
fn generalized_time(t: OffsetDateTime) -> Result<GeneralizedTime, Error> {
    let seconds = u64::try_from(t.unix_timestamp())
        .map_err(|_| Error::ProfileViolation("OCSP time before 1970".into()))?;
    GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(seconds)).map_err(der_error)
}

fn offset_date_time(t: GeneralizedTime) -> Result<OffsetDateTime, Error> {
    let seconds = i64::try_from(t.to_unix_duration().as_secs())
        .map_err(|_| Error::Der("GeneralizedTime out of range".into()))?;
    OffsetDateTime::from_unix_timestamp(seconds)
        .map_err(|_| Error::Der("GeneralizedTime out of range".into()))
}

/// The nonce limits of RFC 8954 §2.1.
fn nonce_len_ok(nonce: &[u8]) -> bool {
    (1..=32).contains(&nonce.len())
}
