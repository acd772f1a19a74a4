//! Building OCSP responses for tests, good and bad, with the wire types of [`super::asn1`].

#![allow(clippy::unwrap_used)]

use der::asn1::{Any, BitString, GeneralizedTime, Int, Null, OctetString};
use der::{Decode, Encode};
use rcgen::{KeyPair, SigningKey};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_cert::ext::Extension;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use super::asn1;

/// ecdsa-with-SHA256, parameters absent: every test key is P-256.
const ECDSA_SHA256: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
];

/// The answer a test response gives.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Status {
    Good,
    Revoked(OffsetDateTime, Option<u8>),
    Unknown,
}

/// How the signature is spoiled, if at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Signature {
    Valid,
    /// One bit of a valid signature flipped.
    Corrupted,
    /// An empty signature.
    Empty,
}

/// A response under construction: every field is a knob.
pub(crate) struct Spec<'a> {
    /// Whose name and key the CertID hashes.
    pub(crate) issuer: &'a CertificateDer<'a>,
    pub(crate) serial: Vec<u8>,
    pub(crate) sha256: bool,
    pub(crate) status: Status,
    pub(crate) this_update: OffsetDateTime,
    pub(crate) next_update: Option<OffsetDateTime>,
    /// The key that signs.
    pub(crate) signer: &'a KeyPair,
    /// The certificate the ResponderID names (by key hash, or by name).
    pub(crate) named: &'a CertificateDer<'a>,
    pub(crate) by_name: bool,
    /// The certificates included.
    pub(crate) certs: Vec<CertificateDer<'a>>,
    pub(crate) signature: Signature,
    pub(crate) critical_extension: bool,
}

impl<'a> Spec<'a> {
    /// A good response for `serial` signed by `responder` (key and certificate, included).
    pub(crate) fn new(
        issuer: &'a CertificateDer<'a>,
        serial: &[u8],
        signer: &'a KeyPair,
        named: &'a CertificateDer<'a>,
        now: OffsetDateTime,
    ) -> Self {
        Self {
            issuer,
            serial: serial.to_vec(),
            sha256: false,
            status: Status::Good,
            this_update: now - time::Duration::minutes(1),
            next_update: Some(now + time::Duration::hours(12)),
            signer,
            named,
            by_name: false,
            certs: vec![named.clone()],
            signature: Signature::Valid,
            critical_extension: false,
        }
    }

    pub(crate) fn build(&self) -> Vec<u8> {
        let (_, issuer) = X509Certificate::from_der(self.issuer).unwrap();
        let hash = |data: &[u8]| {
            let alg = if self.sha256 {
                &aws_lc_rs::digest::SHA256
            } else {
                &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY
            };
            aws_lc_rs::digest::digest(alg, data).as_ref().to_vec()
        };
        let cert_id = asn1::CertId {
            hash_algorithm: AlgorithmIdentifierOwned {
                oid: if self.sha256 {
                    asn1::ID_SHA256
                } else {
                    asn1::ID_SHA1
                },
                parameters: None,
            },
            issuer_name_hash: OctetString::new(hash(issuer.tbs_certificate.subject.as_raw()))
                .unwrap(),
            issuer_key_hash: OctetString::new(hash(
                &issuer.tbs_certificate.subject_pki.subject_public_key.data,
            ))
            .unwrap(),
            serial_number: Int::new(&self.serial).unwrap(),
        };
        let (_, named) = X509Certificate::from_der(self.named).unwrap();
        let responder_id = if self.by_name {
            asn1::ResponderId::ByName(
                Any::from_der(named.tbs_certificate.subject.as_raw()).unwrap(),
            )
        } else {
            let bits = &named.tbs_certificate.subject_pki.subject_public_key.data;
            let sha1 =
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, bits);
            asn1::ResponderId::ByKey(OctetString::new(sha1.as_ref()).unwrap())
        };
        let cert_status = match self.status {
            Status::Good => asn1::CertStatus::Good(Null),
            Status::Unknown => asn1::CertStatus::Unknown(Null),
            Status::Revoked(at, reason) => asn1::CertStatus::Revoked(asn1::RevokedInfo {
                revocation_time: time(at),
                revocation_reason: reason.map(asn1::ReasonCode),
            }),
        };
        let single = asn1::SingleResponse {
            cert_id,
            cert_status,
            this_update: time(self.this_update),
            next_update: self.next_update.map(time),
            single_extensions: None,
        };
        let response_extensions = self.critical_extension.then(|| {
            vec![Extension {
                extn_id: der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.4.1.99999.1"),
                critical: true,
                extn_value: OctetString::new(vec![0x05, 0x00]).unwrap(),
            }]
        });
        let data = asn1::ResponseData {
            version: asn1::Version::V1,
            responder_id,
            produced_at: time(self.this_update),
            responses: vec![single],
            response_extensions,
        };
        let tbs = data.to_der().unwrap();
        let mut signature = self.signer.sign(&tbs).unwrap();
        match self.signature {
            Signature::Valid => {}
            Signature::Corrupted => {
                let last = signature.len() - 1;
                signature[last] ^= 0x01;
            }
            Signature::Empty => signature.clear(),
        }
        let basic = asn1::BasicResponse {
            tbs_response_data: Any::from_der(&tbs).unwrap(),
            signature_algorithm: Any::from_der(ECDSA_SHA256).unwrap(),
            signature: BitString::from_bytes(&signature).unwrap(),
            certs: (!self.certs.is_empty()).then(|| {
                self.certs
                    .iter()
                    .map(|c| Any::from_der(c).unwrap())
                    .collect()
            }),
        };
        asn1::OcspResponse {
            response_status: asn1::ResponseStatus::Successful,
            response_bytes: Some(asn1::ResponseBytes {
                response_type: asn1::ID_PKIX_OCSP_BASIC,
                response: OctetString::new(basic.to_der().unwrap()).unwrap(),
            }),
        }
        .to_der()
        .unwrap()
    }
}

/// An unsigned error response (`tryLater`, `unauthorized`, …).
pub(crate) fn error_response(code: u8) -> Vec<u8> {
    vec![0x30, 0x03, 0x0a, 0x01, code]
}

fn time(t: OffsetDateTime) -> GeneralizedTime {
    GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(
        u64::try_from(t.unix_timestamp()).unwrap(),
    ))
    .unwrap()
}
