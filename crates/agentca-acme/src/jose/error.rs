use thiserror::Error;

/// Why a JWS or JWK was refused.
///
/// Messages are written to be shown to the client in a problem document's `detail`: they never
/// echo secrets, and never echo client input beyond a short, known-safe token.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum JoseError {
    /// The request body is larger than the limit.
    #[error("request body exceeds {limit} bytes")]
    BodyTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The JSON is not well formed, or not the shape this member needs.
    #[error("malformed JWS: {0}")]
    Malformed(&'static str),
    /// A JSON object repeats a member name (RFC 7515 §4: we reject rather than pick one).
    #[error("malformed JWS: duplicate JSON member name")]
    DuplicateMember,
    /// A member is not unpadded, canonical base64url (RFC 7515 §2).
    #[error("malformed JWS: `{0}` is not unpadded base64url")]
    Base64(&'static str),
    /// `alg` is `none` or a MAC algorithm, which RFC 8555 §6.2 forbids on a request signature.
    #[error("signature algorithm is not allowed: `none` and MAC algorithms are refused")]
    ForbiddenAlgorithm,
    /// `alg` is not one we support.
    #[error("unsupported signature algorithm")]
    UnsupportedAlgorithm,
    /// `alg` does not match the type or curve of the key.
    #[error("signature algorithm {alg} does not match the {key} key")]
    AlgorithmKeyMismatch {
        /// The algorithm named in the header.
        alg: &'static str,
        /// What kind of key it was used with.
        key: &'static str,
    },
    /// The JWK's own `alg` member names another algorithm than the only one its key can use.
    #[error("the JWK alg member does not match the key type")]
    JwkAlgMismatch,
    /// The public key is unsupported, malformed, too weak or carries private material.
    #[error("bad public key: {0}")]
    BadPublicKey(&'static str),
    /// The signature does not verify under the key.
    #[error("JWS signature verification failed")]
    BadSignature,
    /// The external account binding is malformed.
    #[error("malformed external account binding: {0}")]
    EabMalformed(&'static str),
    /// The external account binding does not authorize this account.
    #[error("external account binding rejected: {0}")]
    EabUnauthorized(&'static str),
}

impl JoseError {
    /// The ACME problem type for this error: the part after `urn:ietf:params:acme:error:`
    /// (RFC 8555 §6.7).
    pub fn problem_type(&self) -> &'static str {
        match self {
            Self::BodyTooLarge { .. }
            | Self::Malformed(_)
            | Self::DuplicateMember
            | Self::Base64(_)
            | Self::BadSignature
            | Self::EabMalformed(_) => "malformed",
            Self::ForbiddenAlgorithm
            | Self::UnsupportedAlgorithm
            | Self::AlgorithmKeyMismatch { .. }
            | Self::JwkAlgMismatch => "badSignatureAlgorithm",
            Self::BadPublicKey(_) => "badPublicKey",
            Self::EabUnauthorized(_) => "unauthorized",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_do_not_leak_debug_formatting() {
        let e = JoseError::AlgorithmKeyMismatch {
            alg: "ES256",
            key: "RSA",
        };
        assert_eq!(
            e.to_string(),
            "signature algorithm ES256 does not match the RSA key"
        );
        assert_eq!(e.problem_type(), "badSignatureAlgorithm");
    }
}
