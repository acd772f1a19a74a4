//! The signature algorithms ACME requests may use, and the MAC algorithms for external account
//! binding. Two types, so that a MAC can never be accepted where a signature is required.

use aws_lc_rs::hmac;

use super::JoseError;

/// An asymmetric JWS algorithm accepted on ACME requests (RFC 7518 §3.1, RFC 8037 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// ECDSA on P-384 with SHA-384.
    Es384,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// Ed25519.
    EdDsa,
}

impl Algorithm {
    /// Every accepted algorithm, in the order to advertise them (the `algorithms` member of a
    /// `badSignatureAlgorithm` problem, RFC 8555 §6.2).
    pub const ALL: [Self; 4] = [Self::Es256, Self::Es384, Self::Rs256, Self::EdDsa];

    /// Maps an `alg` header value. `none` and MAC algorithms get their own error, since they
    /// mean a confused or hostile client rather than a merely unsupported one.
    pub fn from_name(name: &str) -> Result<Self, JoseError> {
        Ok(match name {
            "ES256" => Self::Es256,
            "ES384" => Self::Es384,
            "RS256" => Self::Rs256,
            "EdDSA" => Self::EdDsa,
            "HS256" | "HS384" | "HS512" => return Err(JoseError::ForbiddenAlgorithm),
            n if n.eq_ignore_ascii_case("none") => return Err(JoseError::ForbiddenAlgorithm),
            _ => return Err(JoseError::UnsupportedAlgorithm),
        })
    }

    /// The `alg` header value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::Rs256 => "RS256",
            Self::EdDsa => "EdDSA",
        }
    }
}

/// A MAC algorithm for the inner JWS of an external account binding (RFC 8555 §7.3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MacAlgorithm {
    /// HMAC with SHA-256.
    Hs256,
    /// HMAC with SHA-384.
    Hs384,
    /// HMAC with SHA-512.
    Hs512,
}

impl MacAlgorithm {
    /// Maps an `alg` header value; anything but HS256/HS384/HS512 is refused.
    pub fn from_name(name: &str) -> Result<Self, JoseError> {
        match name {
            "HS256" => Ok(Self::Hs256),
            "HS384" => Ok(Self::Hs384),
            "HS512" => Ok(Self::Hs512),
            _ => Err(JoseError::EabMalformed("alg must be HS256, HS384 or HS512")),
        }
    }

    /// The `alg` header value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::Hs384 => "HS384",
            Self::Hs512 => "HS512",
        }
    }

    pub(crate) fn hmac(self) -> hmac::Algorithm {
        match self {
            Self::Hs256 => hmac::HMAC_SHA256,
            Self::Hs384 => hmac::HMAC_SHA384,
            Self::Hs512 => hmac::HMAC_SHA512,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for alg in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(alg.name()), Ok(alg));
        }
        for mac in [
            MacAlgorithm::Hs256,
            MacAlgorithm::Hs384,
            MacAlgorithm::Hs512,
        ] {
            assert_eq!(MacAlgorithm::from_name(mac.name()), Ok(mac));
        }
    }

    #[test]
    fn outer_refusals() {
        for name in ["none", "None", "NONE", "HS256", "HS384", "HS512"] {
            assert_eq!(
                Algorithm::from_name(name),
                Err(JoseError::ForbiddenAlgorithm),
                "{name}"
            );
        }
        for name in ["", "es256", "ES512", "PS256", "RS384", "ES256K", "Ed25519"] {
            assert_eq!(
                Algorithm::from_name(name),
                Err(JoseError::UnsupportedAlgorithm),
                "{name}"
            );
        }
    }

    #[test]
    fn mac_refuses_signatures_and_none() {
        for name in ["none", "ES256", "RS256", "EdDSA", "hs256", ""] {
            assert!(MacAlgorithm::from_name(name).is_err(), "{name}");
        }
    }
}
