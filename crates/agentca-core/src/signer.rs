//! The narrowest interface to a CA key: sign bytes, show the public key.
//!
//! Everything that produces a signature (certificates, CRLs, OCSP responses) goes through a
//! [`Signer`], so the key never leaves this module and a future PKCS#11 backend only has to
//! implement one trait. Every signature is counted, which lets tests assert that rejected input
//! never reached a key.

use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{KeyPair, PublicKeyData, SigningKey};

use crate::error::Error;

/// Signature algorithms agentca signs with; each key type has exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignatureAlgorithm {
    /// ECDSA over P-256 with SHA-256 (DER-encoded `ECDSA-Sig-Value`).
    EcdsaP256Sha256,
    /// ECDSA over P-384 with SHA-384 (DER-encoded `ECDSA-Sig-Value`).
    EcdsaP384Sha384,
    /// Ed25519 (RFC 8410).
    Ed25519,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RsaPkcs1Sha256,
}

impl SignatureAlgorithm {
    /// The DER encoding of this algorithm's `AlgorithmIdentifier`, as it appears in the
    /// `signatureAlgorithm` field of certificates, CRLs and OCSP responses.
    pub fn algorithm_identifier_der(self) -> &'static [u8] {
        match self {
            // 1.2.840.10045.4.3.2, parameters absent (RFC 5758 §3.2)
            Self::EcdsaP256Sha256 => &[
                0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
            ],
            // 1.2.840.10045.4.3.3, parameters absent
            Self::EcdsaP384Sha384 => &[
                0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03,
            ],
            // 1.3.101.112, parameters absent (RFC 8410 §3)
            Self::Ed25519 => &[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70],
            // 1.2.840.113549.1.1.11, parameters NULL (RFC 4055 §5)
            Self::RsaPkcs1Sha256 => &[
                0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05,
                0x00,
            ],
        }
    }

    fn from_rcgen(alg: &'static rcgen::SignatureAlgorithm) -> Result<Self, Error> {
        if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
            Ok(Self::EcdsaP256Sha256)
        } else if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
            Ok(Self::EcdsaP384Sha384)
        } else if alg == &rcgen::PKCS_ED25519 {
            Ok(Self::Ed25519)
        } else if alg == &rcgen::PKCS_RSA_SHA256 {
            Ok(Self::RsaPkcs1Sha256)
        } else {
            Err(Error::UnsupportedKey(
                "CA key algorithm is not supported".into(),
            ))
        }
    }
}

/// A key that signs on behalf of a CA role (issuing CA, OCSP responder, SCEP RA, root).
pub trait Signer: Send + Sync {
    /// The algorithm every signature of this key uses.
    fn algorithm(&self) -> SignatureAlgorithm;
    /// The DER `SubjectPublicKeyInfo` of the key.
    fn subject_public_key_info(&self) -> Vec<u8>;
    /// Signs `message`; ECDSA signatures are DER `ECDSA-Sig-Value`s, ready for a BIT STRING.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error>;
    /// How many signatures this key has produced since it was loaded.
    fn signatures(&self) -> u64;
}

/// A [`Signer`] whose private key is held in memory (loaded from an encrypted key file).
pub struct KeyPairSigner {
    key: KeyPair,
    algorithm: SignatureAlgorithm,
    count: AtomicU64,
}

impl KeyPairSigner {
    /// Wraps a key pair; fails for algorithms agentca does not sign with.
    pub fn new(key: KeyPair) -> Result<Self, Error> {
        let algorithm = SignatureAlgorithm::from_rcgen(key.algorithm())?;
        Ok(Self {
            key,
            algorithm,
            count: AtomicU64::new(0),
        })
    }

    /// The PKCS#8 DER of the private key, for writing the encrypted key file.
    pub fn pkcs8_der(&self) -> Vec<u8> {
        self.key.serialize_der()
    }

    /// The underlying rcgen key pair (for building CA certificates).
    pub fn key_pair(&self) -> &KeyPair {
        &self.key
    }
}

impl std::fmt::Debug for KeyPairSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPairSigner")
            .field("algorithm", &self.algorithm)
            .field("key", &"[secret]")
            .finish()
    }
}

impl Signer for KeyPairSigner {
    fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    fn subject_public_key_info(&self) -> Vec<u8> {
        self.key.subject_public_key_info()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.key
            .sign(message)
            .map_err(|e| Error::Signing(e.to_string()))
    }

    fn signatures(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Adapts any [`Signer`] to rcgen's signing trait, so rcgen can build certificates and CRLs
/// with keys it does not own.
///
/// Every signature is verified with the key's public key before rcgen may use it: a faulty
/// signer (a hardware module returning a corrupted signature, a bit flipped in memory) fails
/// the certificate or CRL instead of releasing one that no relying party can verify. The
/// public key is the one the CA certificate names (`IssuingCa::new` refuses a key that
/// does not match its certificate).
pub struct RcgenSigner<'a> {
    inner: &'a dyn Signer,
    spki: Vec<u8>,
    public_key: Vec<u8>,
    algorithm: &'static rcgen::SignatureAlgorithm,
    /// Why the last signature was refused, for [`RcgenSigner::take_error`]: rcgen reports any
    /// signing failure as one opaque error.
    error: std::sync::Mutex<Option<Error>>,
}

impl<'a> RcgenSigner<'a> {
    /// Wraps `inner`; fails if its public key does not parse.
    pub fn new(inner: &'a dyn Signer) -> Result<Self, Error> {
        let spki = inner.subject_public_key_info();
        let public_key = subject_public_key_bits(&spki)?;
        let algorithm = match inner.algorithm() {
            SignatureAlgorithm::EcdsaP256Sha256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            SignatureAlgorithm::EcdsaP384Sha384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            SignatureAlgorithm::Ed25519 => &rcgen::PKCS_ED25519,
            SignatureAlgorithm::RsaPkcs1Sha256 => &rcgen::PKCS_RSA_SHA256,
        };
        Ok(Self {
            inner,
            spki,
            public_key,
            algorithm,
            error: std::sync::Mutex::new(None),
        })
    }

    /// Why the last signature failed (the signer's own error, or a signature that did not
    /// verify), once: for the caller to report instead of rcgen's opaque error.
    pub fn take_error(&self) -> Option<Error> {
        self.error.lock().ok().and_then(|mut e| e.take())
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), Error> {
        use aws_lc_rs::signature::{
            ECDSA_P256_SHA256_ASN1, ECDSA_P384_SHA384_ASN1, ED25519, RSA_PKCS1_2048_8192_SHA256,
            UnparsedPublicKey, VerificationAlgorithm,
        };
        let algorithm: &'static dyn VerificationAlgorithm = match self.inner.algorithm() {
            SignatureAlgorithm::EcdsaP256Sha256 => &ECDSA_P256_SHA256_ASN1,
            SignatureAlgorithm::EcdsaP384Sha384 => &ECDSA_P384_SHA384_ASN1,
            SignatureAlgorithm::Ed25519 => &ED25519,
            SignatureAlgorithm::RsaPkcs1Sha256 => &RSA_PKCS1_2048_8192_SHA256,
        };
        UnparsedPublicKey::new(algorithm, &self.public_key)
            .verify(message, signature)
            .map_err(|_| {
                Error::Signing(
                    "the CA key's signature does not verify with its public key (a faulty \
                     signer): nothing signed with it was released"
                        .into(),
                )
            })
    }
}

impl PublicKeyData for RcgenSigner<'_> {
    fn subject_public_key_info(&self) -> Vec<u8> {
        self.spki.clone()
    }

    fn der_bytes(&self) -> &[u8] {
        &self.public_key
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.algorithm
    }
}

impl SigningKey for RcgenSigner<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let signed = self
            .inner
            .sign(msg)
            .and_then(|signature| self.verify(msg, &signature).map(|()| signature));
        signed.map_err(|e| {
            if let Ok(mut slot) = self.error.lock() {
                *slot = Some(e);
            }
            rcgen::Error::RemoteKeyError
        })
    }
}

/// The contents of the `subjectPublicKey` BIT STRING of a DER `SubjectPublicKeyInfo`.
pub(crate) fn subject_public_key_bits(spki: &[u8]) -> Result<Vec<u8>, Error> {
    use x509_parser::prelude::FromDer;
    let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki)
        .map_err(|_| Error::UnsupportedKey("unparseable public key".into()))?;
    Ok(info.subject_public_key.data.to_vec())
}
