//! The crate's one error type, [`ScepError`], and the one place that maps it to the
//! `failInfo` a CertRep FAILURE carries ([`ScepError::fail_info`]).

use crate::attr::FailInfo;

/// A SCEP attribute (RFC 8894 §3.2.1), named in errors about a missing or malformed one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScepAttribute {
    /// `messageType` (2.16.840.1.113733.1.9.2).
    MessageType,
    /// `pkiStatus` (2.16.840.1.113733.1.9.3).
    PkiStatus,
    /// `failInfo` (2.16.840.1.113733.1.9.4).
    FailInfo,
    /// `senderNonce` (2.16.840.1.113733.1.9.5).
    SenderNonce,
    /// `recipientNonce` (2.16.840.1.113733.1.9.6).
    RecipientNonce,
    /// `transactionID` (2.16.840.1.113733.1.9.7).
    TransactionId,
    /// PKCS #9 `contentType`, mandatory with signed attributes (RFC 5652 §11.1).
    ContentType,
    /// PKCS #9 `messageDigest` (RFC 5652 §11.2).
    MessageDigest,
}

impl ScepAttribute {
    /// The attribute's name as RFC 8894 and RFC 5652 spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::MessageType => "messageType",
            Self::PkiStatus => "pkiStatus",
            Self::FailInfo => "failInfo",
            Self::SenderNonce => "senderNonce",
            Self::RecipientNonce => "recipientNonce",
            Self::TransactionId => "transactionID",
            Self::ContentType => "contentType",
            Self::MessageDigest => "messageDigest",
        }
    }
}

impl std::fmt::Display for ScepAttribute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything that can go wrong decoding, verifying, decrypting or building a SCEP message.
///
/// Decryption failures are deliberately one variant without detail ([`ScepError::Decryption`]):
/// whether the recipient did not match, the RSA block was malformed, the content key had the
/// wrong length or the CBC padding was bad must not be observable (no padding oracle).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScepError {
    /// The input is larger than the decoder accepts.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Size of the input.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The input nests constructed values deeper than the decoder accepts.
    #[error("message nests deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// The input is not well-formed BER/DER, or not the structure expected at this point.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// The outer ContentInfo is not of the type expected.
    #[error("unexpected content type {found} (expected {expected})")]
    UnexpectedContentType {
        /// The expected type's name.
        expected: &'static str,
        /// The type found, as a dotted OID.
        found: String,
    },
    /// An algorithm that is not supported, or only with the legacy option on.
    #[error("unsupported {what}: {oid}")]
    UnsupportedAlgorithm {
        /// Which algorithm slot (digest, signature, content encryption, key transport, key).
        what: &'static str,
        /// The algorithm found, as a dotted OID or a name.
        oid: String,
    },
    /// The SignedData does not carry exactly one SignerInfo.
    #[error("expected exactly one SignerInfo, found {0}")]
    SignerCount(usize),
    /// No certificate in the message (or among the trusted ones) matches the signer identifier.
    #[error("the signer's certificate is not in the message")]
    SignerCertificateNotFound,
    /// The signer is not one of the certificates the caller trusts for this message.
    #[error("the message is signed by an untrusted certificate")]
    UntrustedSigner,
    /// A certificate could not be parsed.
    #[error("unparseable certificate: {0}")]
    Certificate(&'static str),
    /// The `messageDigest` attribute does not match the content.
    #[error("messageDigest does not match the signed content")]
    DigestMismatch,
    /// The signature over the signed attributes does not verify with the signer's key.
    #[error("the signature does not verify")]
    BadSignature,
    /// A mandatory attribute is absent.
    #[error("missing {0} attribute")]
    MissingAttribute(ScepAttribute),
    /// An attribute is present but malformed, duplicated or out of range.
    #[error("invalid {attribute} attribute: {reason}")]
    InvalidAttribute {
        /// The attribute.
        attribute: ScepAttribute,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The envelope could not be decrypted. Deliberately without detail.
    #[error("the envelope could not be decrypted")]
    Decryption,
    /// A CertRep answers another request: its recipientNonce or transactionID differ.
    #[error("the reply does not answer this request: {0} differs")]
    ReplyMismatch(ScepAttribute),
    /// A message of another type than expected (e.g. a request where a CertRep was expected).
    #[error("unexpected messageType {0}")]
    UnexpectedMessageType(u32),
    /// A key (the RA's, a requester's) was rejected or does not match its certificate.
    #[error("key rejected: {0}")]
    Key(&'static str),
    /// A value handed to a builder cannot be encoded (e.g. a transaction ID outside
    /// PrintableString).
    #[error("invalid input: {0}")]
    InvalidInput(&'static str),
    /// A cryptographic operation on our side (random numbers, signing, encryption) failed.
    #[error("internal cryptographic failure: {0}")]
    Crypto(&'static str),
}

impl ScepError {
    /// The `failInfo` of the CertRep FAILURE that answers a request refused with this error.
    ///
    /// This is the crate's only mapping from errors to failInfo (RFC 8894 §3.2.1.4):
    /// integrity failures (signature, digest, decryption, signer) are `badMessageCheck`,
    /// algorithms we do not accept are `badAlg`, and everything else about the request's form
    /// or content is `badRequest`.
    pub fn fail_info(&self) -> FailInfo {
        match self {
            Self::UnsupportedAlgorithm { .. } => FailInfo::BadAlg,
            Self::DigestMismatch
            | Self::BadSignature
            | Self::Decryption
            | Self::SignerCertificateNotFound
            | Self::UntrustedSigner
            | Self::SignerCount(_) => FailInfo::BadMessageCheck,
            Self::TooLarge { .. }
            | Self::TooDeep { .. }
            | Self::Malformed(_)
            | Self::UnexpectedContentType { .. }
            | Self::Certificate(_)
            | Self::MissingAttribute(_)
            | Self::InvalidAttribute { .. }
            | Self::ReplyMismatch(_)
            | Self::UnexpectedMessageType(_)
            | Self::Key(_)
            | Self::InvalidInput(_)
            | Self::Crypto(_) => FailInfo::BadRequest,
        }
    }
}

pub(crate) type Result<T> = std::result::Result<T, ScepError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_info_mapping() {
        assert_eq!(ScepError::Decryption.fail_info(), FailInfo::BadMessageCheck);
        assert_eq!(
            ScepError::BadSignature.fail_info(),
            FailInfo::BadMessageCheck
        );
        assert_eq!(
            ScepError::DigestMismatch.fail_info(),
            FailInfo::BadMessageCheck
        );
        assert_eq!(
            ScepError::UnsupportedAlgorithm {
                what: "digest",
                oid: "1.2.840.113549.2.5".into()
            }
            .fail_info(),
            FailInfo::BadAlg
        );
        assert_eq!(
            ScepError::MissingAttribute(ScepAttribute::SenderNonce).fail_info(),
            FailInfo::BadRequest
        );
    }

    #[test]
    fn decryption_error_says_nothing_specific() {
        assert_eq!(
            ScepError::Decryption.to_string(),
            "the envelope could not be decrypted"
        );
        assert_eq!(format!("{:?}", ScepError::Decryption), "Decryption");
    }
}
