//! Private keys that sign SCEP messages and decrypt envelopes: the RA's ([`RaIdentity`]) and
//! a requester's ([`SignerKey`]).

use aws_lc_rs::rsa::{Pkcs1PrivateDecryptingKey, PrivateDecryptingKey};
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use zeroize::Zeroizing;

use crate::alg::DigestAlgorithm;
use crate::cert::{CertInfo, EcCurve, PublicKey};
use crate::der;
use crate::error::{Result, ScepError};
use crate::oid;

/// DigestInfo prefix for SHA-1 (RFC 8017 §9.2 note 1).
const SHA1_DIGEST_INFO_PREFIX: [u8; 15] = [
    0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14,
];

/// A private key that signs SCEP messages: RSA (any SCEP party) or ECDSA P-256/P-384 (a
/// requester whose current certificate has an EC key; such a requester can sign a
/// RenewalReq but cannot receive an RSA key-transport envelope).
pub struct SignerKey {
    pkcs8: Zeroizing<Vec<u8>>,
    inner: Inner,
}

enum Inner {
    /// The signing key and, parsed once, the key-transport decryption key.
    Rsa(RsaKeyPair, Box<Pkcs1PrivateDecryptingKey>),
    Ecdsa(EcdsaKeyPair, EcCurve),
}

impl std::fmt::Debug for SignerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.inner {
            Inner::Rsa(..) => f.write_str("SignerKey(RSA)"),
            Inner::Ecdsa(_, curve) => write!(f, "SignerKey(ECDSA {curve:?})"),
        }
    }
}

impl SignerKey {
    /// Loads a PKCS#8 private key: RSA, or ECDSA on P-256 or P-384.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self> {
        let pkcs8 = Zeroizing::new(pkcs8.to_vec());
        if let Ok(pair) = RsaKeyPair::from_pkcs8(&pkcs8) {
            let decrypting = PrivateDecryptingKey::from_pkcs8(&pkcs8)
                .map_err(|_| ScepError::Key("RSA key rejected for decryption"))
                .and_then(|key| {
                    Pkcs1PrivateDecryptingKey::new(key)
                        .map_err(|_| ScepError::Key("RSA key rejected"))
                })?;
            return Ok(Self {
                pkcs8,
                inner: Inner::Rsa(pair, Box::new(decrypting)),
            });
        }
        for (alg, curve) in [
            (&signature::ECDSA_P256_SHA256_ASN1_SIGNING, EcCurve::P256),
            (&signature::ECDSA_P384_SHA384_ASN1_SIGNING, EcCurve::P384),
        ] {
            if let Ok(pair) = EcdsaKeyPair::from_pkcs8(alg, &pkcs8) {
                return Ok(Self {
                    pkcs8,
                    inner: Inner::Ecdsa(pair, curve),
                });
            }
        }
        Err(ScepError::Key(
            "not a PKCS#8 RSA, ECDSA P-256 or ECDSA P-384 private key",
        ))
    }

    /// Whether this is an RSA key (only RSA keys can decrypt a key-transport envelope).
    pub fn is_rsa(&self) -> bool {
        matches!(self.inner, Inner::Rsa(..))
    }

    /// The PKCS#8 DER the key was loaded from.
    pub(crate) fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// Whether `cert` carries this key's public half.
    pub(crate) fn matches(&self, cert: &CertInfo) -> bool {
        match (&self.inner, &cert.key) {
            (Inner::Rsa(pair, _), PublicKey::Rsa(public)) => {
                pair.public_key().as_ref() == public.as_slice()
            }
            (Inner::Ecdsa(pair, curve), PublicKey::Ec { curve: c, point }) => {
                curve == c && pair.public_key().as_ref() == point.as_slice()
            }
            _ => false,
        }
    }

    /// The key-transport decryption key, for RSA keys.
    pub(crate) fn decrypting_key(&self) -> Result<&Pkcs1PrivateDecryptingKey> {
        match &self.inner {
            Inner::Rsa(_, decrypting) => Ok(decrypting),
            Inner::Ecdsa(..) => Err(ScepError::Key("only an RSA key can decrypt an envelope")),
        }
    }

    /// Signs `message` and returns the SignerInfo `signatureAlgorithm` and the signature.
    pub(crate) fn sign(
        &self,
        digest: DigestAlgorithm,
        message: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        match &self.inner {
            Inner::Rsa(pair, _) => {
                // rsaEncryption with NULL parameters (RFC 3370 §3.2), as most SCEP peers
                // expect; the hash is the SignerInfo's digestAlgorithm.
                let alg_id = der::algorithm(&oid::RSA_ENCRYPTION, Some(&der::null()));
                let sig = match digest {
                    DigestAlgorithm::Sha1 => self.sign_rsa_sha1(message)?,
                    DigestAlgorithm::Sha256 => {
                        rsa_sign(pair, &signature::RSA_PKCS1_SHA256, message)?
                    }
                    DigestAlgorithm::Sha384 => {
                        rsa_sign(pair, &signature::RSA_PKCS1_SHA384, message)?
                    }
                    DigestAlgorithm::Sha512 => {
                        rsa_sign(pair, &signature::RSA_PKCS1_SHA512, message)?
                    }
                };
                Ok((alg_id, sig))
            }
            Inner::Ecdsa(pair, curve) => {
                let (expected, alg_oid) = match curve {
                    EcCurve::P256 => (DigestAlgorithm::Sha256, oid::ECDSA_WITH_SHA256),
                    EcCurve::P384 => (DigestAlgorithm::Sha384, oid::ECDSA_WITH_SHA384),
                };
                if digest != expected {
                    return Err(ScepError::InvalidInput(
                        "an ECDSA key signs with its curve's hash (P-256: SHA-256, P-384: SHA-384)",
                    ));
                }
                let rng = aws_lc_rs::rand::SystemRandom::new();
                let sig = pair
                    .sign(&rng, message)
                    .map_err(|_| ScepError::Crypto("ECDSA signature"))?;
                Ok((der::algorithm(&alg_oid, None), sig.as_ref().to_vec()))
            }
        }
    }

    /// RSA PKCS#1 v1.5 with SHA-1, for the legacy option: aws-lc-rs does not sign SHA-1, so
    /// this one case goes through the `rsa` crate, with the digest computed by aws-lc-rs.
    fn sign_rsa_sha1(&self, message: &[u8]) -> Result<Vec<u8>> {
        use rsa::pkcs8::DecodePrivateKey;
        let key = rsa::PrivateKey::from_pkcs8_der(&self.pkcs8)
            .map_err(|_| ScepError::Key("RSA key rejected for SHA-1 signing"))?;
        let hash = DigestAlgorithm::Sha1.digest(message);
        let scheme = rsa::Pkcs1v15Sign {
            hash_len: Some(hash.as_ref().len()),
            prefix: SHA1_DIGEST_INFO_PREFIX.to_vec().into_boxed_slice(),
        };
        key.sign(scheme, hash.as_ref())
            .map_err(|_| ScepError::Crypto("RSA SHA-1 signature"))
    }
}

fn rsa_sign(
    pair: &RsaKeyPair,
    encoding: &'static signature::RsaSignatureEncoding,
    message: &[u8],
) -> Result<Vec<u8>> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let mut sig = vec![0u8; pair.public_modulus_len()];
    pair.sign(encoding, &rng, message, &mut sig)
        .map_err(|_| ScepError::Crypto("RSA signature"))?;
    Ok(sig)
}

/// The SCEP registration authority: its certificate and RSA key. The RA signs every CertRep
/// and is the recipient of every request envelope; it never holds the CA's signing key.
pub struct RaIdentity {
    pub(crate) cert: CertInfo,
    pub(crate) key: SignerKey,
}

impl std::fmt::Debug for RaIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaIdentity").finish_non_exhaustive()
    }
}

impl RaIdentity {
    /// The RA from its certificate (DER) and its RSA private key (PKCS#8 DER), as `agentca
    /// init` writes them (`scep-ra.pem`, `scep-ra.key`). Fails unless the key is RSA and
    /// matches the certificate.
    pub fn from_pkcs8(cert_der: &[u8], key_pkcs8: &[u8]) -> Result<Self> {
        let cert = CertInfo::parse(cert_der)?;
        let key = SignerKey::from_pkcs8(key_pkcs8)?;
        if !key.is_rsa() {
            return Err(ScepError::Key(
                "the RA key must be RSA (SCEP key transport)",
            ));
        }
        if !key.matches(&cert) {
            return Err(ScepError::Key(
                "the RA key does not match the RA certificate",
            ));
        }
        Ok(Self { cert, key })
    }

    /// The key-transport decryption key (parsed once, with the key).
    pub(crate) fn decrypting(&self) -> Result<&Pkcs1PrivateDecryptingKey> {
        self.key.decrypting_key()
    }

    /// The RA certificate (DER).
    pub fn certificate(&self) -> &[u8] {
        &self.cert.der
    }
}
