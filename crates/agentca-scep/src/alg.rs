//! The algorithms SCEP messages may use, the legacy switch that admits the old ones, and
//! their OIDs.

use aws_lc_rs::digest;
use const_oid::ObjectIdentifier;

use crate::error::{Result, ScepError};
use crate::oid;

/// What the decoder and the builders accept beyond the modern algorithm set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScepOptions {
    /// Admit legacy algorithms: SHA-1 digests and signatures, single DES-CBC and
    /// DES-EDE3-CBC content encryption, and RSA signer keys from 1024 bits. Needed for old
    /// clients, among them the micromdm `scepclient` 2.1.0 shipped by Debian, which encrypts
    /// with single DES-CBC whatever the server advertises. Off by default.
    pub legacy: bool,
}

impl ScepOptions {
    /// The modern set only.
    pub const STRICT: Self = Self { legacy: false };
    /// The modern set plus the legacy algorithms.
    pub const LEGACY: Self = Self { legacy: true };
}

/// A message digest algorithm of a SignerInfo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DigestAlgorithm {
    /// SHA-1: legacy only.
    Sha1,
    /// SHA-256: the default.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl DigestAlgorithm {
    /// Whether this digest is only accepted with [`ScepOptions::legacy`].
    pub fn is_legacy(self) -> bool {
        matches!(self, Self::Sha1)
    }

    pub(crate) fn oid(self) -> ObjectIdentifier {
        match self {
            Self::Sha1 => oid::SHA1,
            Self::Sha256 => oid::SHA256,
            Self::Sha384 => oid::SHA384,
            Self::Sha512 => oid::SHA512,
        }
    }

    pub(crate) fn from_oid(content: &[u8], options: &ScepOptions) -> Result<Self> {
        let alg = if oid::is(content, &oid::SHA256) {
            Self::Sha256
        } else if oid::is(content, &oid::SHA384) {
            Self::Sha384
        } else if oid::is(content, &oid::SHA512) {
            Self::Sha512
        } else if oid::is(content, &oid::SHA1) {
            Self::Sha1
        } else {
            return Err(unsupported("digest algorithm", content));
        };
        if alg.is_legacy() && !options.legacy {
            return Err(ScepError::UnsupportedAlgorithm {
                what: "digest algorithm (legacy option off)",
                oid: oid::display(content),
            });
        }
        Ok(alg)
    }

    pub(crate) fn digest(self, data: &[u8]) -> digest::Digest {
        digest::digest(self.aws_lc(), data)
    }

    fn aws_lc(self) -> &'static digest::Algorithm {
        match self {
            Self::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            Self::Sha256 => &digest::SHA256,
            Self::Sha384 => &digest::SHA384,
            Self::Sha512 => &digest::SHA512,
        }
    }

    /// The AlgorithmIdentifier, parameters absent (RFC 5754 §2).
    pub(crate) fn algorithm_identifier(self) -> Vec<u8> {
        crate::der::algorithm(&self.oid(), None)
    }
}

/// A content-encryption algorithm of an EnvelopedData; replies reuse the request's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ContentCipher {
    /// AES-128 in CBC mode.
    Aes128Cbc,
    /// AES-192 in CBC mode.
    Aes192Cbc,
    /// AES-256 in CBC mode.
    Aes256Cbc,
    /// Single DES in CBC mode: legacy only.
    DesCbc,
    /// Triple DES (EDE, three keys) in CBC mode: legacy only.
    DesEde3Cbc,
}

impl ContentCipher {
    /// Whether this cipher is only accepted with [`ScepOptions::legacy`].
    pub fn is_legacy(self) -> bool {
        matches!(self, Self::DesCbc | Self::DesEde3Cbc)
    }

    /// Length of the content-encryption key in bytes.
    pub fn key_len(self) -> usize {
        match self {
            Self::Aes128Cbc => 16,
            Self::Aes192Cbc | Self::DesEde3Cbc => 24,
            Self::Aes256Cbc => 32,
            Self::DesCbc => 8,
        }
    }

    /// Block (and IV) length in bytes.
    pub fn block_len(self) -> usize {
        match self {
            Self::Aes128Cbc | Self::Aes192Cbc | Self::Aes256Cbc => 16,
            Self::DesCbc | Self::DesEde3Cbc => 8,
        }
    }

    pub(crate) fn oid(self) -> ObjectIdentifier {
        match self {
            Self::Aes128Cbc => oid::AES128_CBC,
            Self::Aes192Cbc => oid::AES192_CBC,
            Self::Aes256Cbc => oid::AES256_CBC,
            Self::DesCbc => oid::DES_CBC,
            Self::DesEde3Cbc => oid::DES_EDE3_CBC,
        }
    }

    pub(crate) fn from_oid(content: &[u8], options: &ScepOptions) -> Result<Self> {
        let cipher = [
            Self::Aes128Cbc,
            Self::Aes192Cbc,
            Self::Aes256Cbc,
            Self::DesCbc,
            Self::DesEde3Cbc,
        ]
        .into_iter()
        .find(|c| oid::is(content, &c.oid()))
        .ok_or_else(|| unsupported("content-encryption algorithm", content))?;
        if cipher.is_legacy() && !options.legacy {
            return Err(ScepError::UnsupportedAlgorithm {
                what: "content-encryption algorithm (legacy option off)",
                oid: oid::display(content),
            });
        }
        Ok(cipher)
    }
}

pub(crate) fn unsupported(what: &'static str, content: &[u8]) -> ScepError {
    ScepError::UnsupportedAlgorithm {
        what,
        oid: oid::display(content),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_algorithms_need_the_option() {
        let sha1 = oid::SHA1.as_bytes();
        assert!(DigestAlgorithm::from_oid(sha1, &ScepOptions::STRICT).is_err());
        assert_eq!(
            DigestAlgorithm::from_oid(sha1, &ScepOptions::LEGACY).unwrap(),
            DigestAlgorithm::Sha1
        );
        let des = oid::DES_CBC.as_bytes();
        assert!(matches!(
            ContentCipher::from_oid(des, &ScepOptions::STRICT),
            Err(ScepError::UnsupportedAlgorithm { .. })
        ));
        assert_eq!(
            ContentCipher::from_oid(des, &ScepOptions::LEGACY).unwrap(),
            ContentCipher::DesCbc
        );
        assert_eq!(
            ContentCipher::from_oid(oid::AES256_CBC.as_bytes(), &ScepOptions::STRICT).unwrap(),
            ContentCipher::Aes256Cbc
        );
        // MD5 is never accepted.
        let md5 = ObjectIdentifier::new_unwrap("1.2.840.113549.2.5");
        assert!(DigestAlgorithm::from_oid(md5.as_bytes(), &ScepOptions::LEGACY).is_err());
    }
}
