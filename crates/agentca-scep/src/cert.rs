//! What a SCEP message needs to know about a certificate: the identifiers a SignerInfo or
//! RecipientInfo may name it by, and its public key.

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::der::{self, Reader};
use crate::error::{Result, ScepError};
use crate::oid;

const SUBJECT_KEY_IDENTIFIER: const_oid::ObjectIdentifier =
    const_oid::ObjectIdentifier::new_unwrap("2.5.29.14");

/// A certificate's public key, as far as SCEP uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PublicKey {
    /// RSA: the PKCS#1 `RSAPublicKey` DER (the subjectPublicKey bits).
    Rsa(Vec<u8>),
    /// ECDSA on a named curve: the uncompressed point.
    Ec { curve: EcCurve, point: Vec<u8> },
    /// Anything else (named in errors only).
    Other(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EcCurve {
    P256,
    P384,
}

/// A parsed certificate.
#[derive(Clone, Debug)]
pub(crate) struct CertInfo {
    pub(crate) der: Vec<u8>,
    /// The issuer Name's DER, as encoded in the certificate.
    pub(crate) issuer: Vec<u8>,
    /// The serial number INTEGER's content octets.
    pub(crate) serial: Vec<u8>,
    /// The SubjectPublicKeyInfo DER.
    pub(crate) spki: Vec<u8>,
    pub(crate) key: PublicKey,
    pub(crate) subject_key_id: Option<Vec<u8>>,
}

impl CertInfo {
    pub(crate) fn parse(der_bytes: &[u8]) -> Result<Self> {
        let (rest, cert) = X509Certificate::from_der(der_bytes)
            .map_err(|_| ScepError::Certificate("not an X.509 certificate"))?;
        if !rest.is_empty() {
            return Err(ScepError::Certificate(
                "trailing bytes after the certificate",
            ));
        }
        let tbs = &cert.tbs_certificate;
        let spki = cert.public_key().raw.to_vec();
        let key = parse_key(&spki)?;
        let mut subject_key_id = None;
        for ext in tbs.extensions() {
            if ext.oid.as_bytes() == SUBJECT_KEY_IDENTIFIER.as_bytes() {
                let id = der::single(ext.value, der::OCTET_STRING, "subjectKeyIdentifier")
                    .map_err(|_| ScepError::Certificate("malformed subjectKeyIdentifier"))?;
                subject_key_id = Some(id.content.to_vec());
            }
        }
        Ok(Self {
            der: der_bytes.to_vec(),
            issuer: tbs.issuer.as_raw().to_vec(),
            serial: tbs.raw_serial().to_vec(),
            spki,
            key,
            subject_key_id,
        })
    }

    /// Whether an `IssuerAndSerialNumber` (the SEQUENCE's content) names this certificate.
    pub(crate) fn matches_issuer_serial(&self, issuer_and_serial: &[u8]) -> bool {
        let mut r = Reader::new(issuer_and_serial);
        let Ok(issuer) = r.read(der::SEQUENCE, "issuer") else {
            return false;
        };
        let Ok(serial) = r.read(der::INTEGER, "serial") else {
            return false;
        };
        r.is_empty()
            && issuer.raw == self.issuer.as_slice()
            && serial.content == self.serial.as_slice()
    }

    pub(crate) fn matches_key_id(&self, key_id: &[u8]) -> bool {
        self.subject_key_id.as_deref() == Some(key_id)
    }

    /// The `IssuerAndSerialNumber` naming this certificate.
    pub(crate) fn issuer_and_serial(&self) -> Vec<u8> {
        der::sequence(&[&self.issuer, &der::tlv(der::INTEGER, &self.serial)])
    }
}

fn parse_key(spki: &[u8]) -> Result<PublicKey> {
    let bad = || ScepError::Certificate("malformed subjectPublicKeyInfo");
    let seq = der::single(spki, der::SEQUENCE, "spki").map_err(|_| bad())?;
    let mut r = seq.reader();
    let alg = der::read_algorithm(&mut r, "spki algorithm").map_err(|_| bad())?;
    let bits = r.read(0x03, "spki bits").map_err(|_| bad())?;
    let key = match bits.content {
        [0, key @ ..] => key.to_vec(),
        _ => return Err(bad()),
    };
    if oid::is(alg.oid, &oid::RSA_ENCRYPTION) {
        return Ok(PublicKey::Rsa(key));
    }
    if oid::is(alg.oid, &oid::EC_PUBLIC_KEY) {
        let curve = match alg.params {
            Some(p) if p.tag == der::OID && oid::is(p.content, &oid::SECP256R1) => EcCurve::P256,
            Some(p) if p.tag == der::OID && oid::is(p.content, &oid::SECP384R1) => EcCurve::P384,
            Some(p) if p.tag == der::OID => {
                return Ok(PublicKey::Other(format!(
                    "EC curve {}",
                    oid::display(p.content)
                )));
            }
            _ => return Ok(PublicKey::Other("EC key without a named curve".into())),
        };
        return Ok(PublicKey::Ec { curve, point: key });
    }
    Ok(PublicKey::Other(oid::display(alg.oid)))
}
