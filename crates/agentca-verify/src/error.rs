//! The crate's one error type: every variant says exactly why a peer, a status answer or a
//! setting was refused.

use std::fmt;

use time::OffsetDateTime;

use crate::spiffe::SpiffeId;

/// Why a certificate, a revocation answer or a verifier setting was refused.
///
/// Messages name the fact that failed and never contain key material. [`Error::kind`] gives a
/// stable machine-readable name for each variant.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // --- Settings -------------------------------------------------------------------------
    /// A trust anchor could not be read.
    #[error("trust anchor: {0}")]
    InvalidTrustAnchor(String),
    /// The verifier was built without any trust anchor.
    #[error("no trust anchors given")]
    NoTrustAnchors,
    /// An identity pattern is not in the grammar of [`crate::IdPattern`].
    #[error("invalid SPIFFE ID pattern {pattern:?}: {reason}")]
    InvalidPattern {
        /// The pattern as given.
        pattern: String,
        /// The first problem found.
        reason: String,
    },
    /// Neither an expected identity nor [`crate::Builder::accept_any_id`] was configured.
    #[error("no identity policy: name the expected SPIFFE IDs or accept any ID explicitly")]
    NoIdentityPolicy,
    /// A responder or CRL URL is unusable.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A CRL given to the verifier could not be parsed.
    #[error("invalid CRL: {0}")]
    InvalidCrl(String),

    // --- The peer's certificate -----------------------------------------------------------
    /// The certificate is not well-formed DER X.509.
    #[error("malformed certificate: {0}")]
    MalformedCertificate(String),
    /// The chain does not lead to a trust anchor (unknown issuer, bad signature, path rules).
    #[error("certificate not trusted: {0}")]
    Untrusted(String),
    /// The certificate's notAfter has passed.
    #[error("certificate expired at {} (now {})", rfc3339(*.not_after), rfc3339(*.now))]
    Expired {
        /// The certificate's notAfter.
        not_after: OffsetDateTime,
        /// The verification time.
        now: OffsetDateTime,
    },
    /// The certificate's notBefore is still ahead.
    #[error("certificate not valid before {} (now {})", rfc3339(*.not_before), rfc3339(*.now))]
    NotYetValid {
        /// The certificate's notBefore.
        not_before: OffsetDateTime,
        /// The verification time.
        now: OffsetDateTime,
    },
    /// The presented leaf is a CA certificate (basicConstraints cA=TRUE).
    #[error("the certificate is a CA certificate, not an agent's")]
    CaCertificate,
    /// The certificate's extended key usage does not allow the use asked for.
    #[error("the certificate is not valid for {0}")]
    WrongUsage(crate::Usage),
    /// The certificate has no URI subject alternative name.
    #[error("the certificate has no URI SAN, so it names no agent")]
    NoUriSan,
    /// The certificate has more than one URI SAN (an X509-SVID has exactly one).
    #[error("the certificate has {0} URI SANs; an agent certificate has exactly one")]
    MultipleUriSans(usize),
    /// The URI SAN is not a canonical SPIFFE ID.
    #[error("URI SAN {uri:?} is not a valid SPIFFE ID: {reason}")]
    NotSpiffeId {
        /// The URI as found in the certificate (shortened when long).
        uri: String,
        /// The first problem found.
        reason: String,
    },
    /// The agent is not one this verifier accepts.
    #[error("agent {id} is not allowed: expected {expected}")]
    IdentityMismatch {
        /// The certificate's SPIFFE ID.
        id: SpiffeId,
        /// The accepted IDs and patterns.
        expected: String,
    },

    // --- Revocation -----------------------------------------------------------------------
    /// The certificate is revoked.
    #[error("certificate {serial} was revoked{} ({}), says {by}", at(*.revoked_at), reason_text(*.reason))]
    Revoked {
        /// The serial, lowercase hex.
        serial: String,
        /// When, if the answer says.
        revoked_at: Option<OffsetDateTime>,
        /// Why, if the answer says.
        reason: Option<RevocationReason>,
        /// Who said so.
        by: crate::RevocationSource,
    },
    /// No revocation answer could be obtained and the policy is fail-closed.
    #[error("revocation status unavailable: {0}")]
    RevocationUnavailable(String),
    /// The OCSP responder answered `unknown` for the certificate.
    #[error("the OCSP responder does not know this certificate (status unknown)")]
    OcspUnknown,
    /// The OCSP responder answered with an error status that is not a temporary one
    /// (`malformedRequest`, `sigRequired`, `unauthorized`).
    #[error("the OCSP responder refused to answer: {0}")]
    OcspRefused(&'static str),
    /// The OCSP response is not well-formed, or uses a feature this client does not support.
    #[error("malformed OCSP response: {0}")]
    OcspMalformed(String),
    /// The OCSP response's signature does not verify with its signer's key.
    #[error("the OCSP response signature does not verify")]
    OcspBadSignature,
    /// The OCSP response was signed by someone not authorized to answer for the issuer.
    #[error("OCSP response from an unauthorized responder: {0}")]
    OcspUnauthorizedResponder(String),
    /// The OCSP response does not answer for this certificate (another serial or issuer).
    #[error("the OCSP response answers for another certificate")]
    OcspWrongCertificate,
    /// The OCSP response's nextUpdate has passed.
    #[error("stale OCSP response: nextUpdate {} has passed (now {})", rfc3339(*.next_update), rfc3339(*.now))]
    OcspStale {
        /// The response's nextUpdate.
        next_update: OffsetDateTime,
        /// The verification time.
        now: OffsetDateTime,
    },
    /// The OCSP response has no nextUpdate, so it cannot be known to be current.
    #[error("the OCSP response has no nextUpdate")]
    OcspNoNextUpdate,
    /// The OCSP response's thisUpdate is further in the future than the allowed clock skew.
    #[error("OCSP response thisUpdate {} is in the future (now {})", rfc3339(*.this_update), rfc3339(*.now))]
    OcspNotYetValid {
        /// The response's thisUpdate.
        this_update: OffsetDateTime,
        /// The verification time.
        now: OffsetDateTime,
    },
    /// The CRL is not well-formed or uses a feature this client does not support.
    #[error("malformed CRL: {0}")]
    CrlMalformed(String),
    /// The CRL's signature does not verify with the issuer's key.
    #[error("the CRL signature does not verify with the issuer's key")]
    CrlBadSignature,
    /// The CRL does not cover this certificate (another issuer, scope or distribution point).
    #[error("the CRL does not cover this certificate: {0}")]
    CrlNotAuthoritative(String),
    /// The CRL's nextUpdate has passed.
    #[error("stale CRL: nextUpdate {} has passed (now {})", rfc3339(*.next_update), rfc3339(*.now))]
    CrlStale {
        /// The CRL's nextUpdate.
        next_update: OffsetDateTime,
        /// The verification time.
        now: OffsetDateTime,
    },
    /// The CRL's thisUpdate is further in the future than the allowed clock skew.
    #[error("CRL thisUpdate {} is in the future (now {})", rfc3339(*.this_update), rfc3339(*.now))]
    CrlNotYetValid {
        /// The CRL's thisUpdate.
        this_update: OffsetDateTime,
        /// The verification time.
        now: OffsetDateTime,
    },

    // --- TLS ------------------------------------------------------------------------------
    /// A TLS configuration could not be built.
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    /// The TLS handshake failed (including a refusal by the handshake verifier).
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] std::io::Error),
}

impl Error {
    /// A stable, machine-readable name for the variant (for JSON output and metrics).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidTrustAnchor(_) => "invalidTrustAnchor",
            Self::NoTrustAnchors => "noTrustAnchors",
            Self::InvalidPattern { .. } => "invalidPattern",
            Self::NoIdentityPolicy => "noIdentityPolicy",
            Self::InvalidUrl { .. } => "invalidUrl",
            Self::InvalidCrl(_) => "invalidCrl",
            Self::MalformedCertificate(_) => "malformedCertificate",
            Self::Untrusted(_) => "untrusted",
            Self::Expired { .. } => "expired",
            Self::NotYetValid { .. } => "notYetValid",
            Self::CaCertificate => "caCertificate",
            Self::WrongUsage(_) => "wrongUsage",
            Self::NoUriSan => "noUriSan",
            Self::MultipleUriSans(_) => "multipleUriSans",
            Self::NotSpiffeId { .. } => "notSpiffeId",
            Self::IdentityMismatch { .. } => "identityMismatch",
            Self::Revoked { .. } => "revoked",
            Self::RevocationUnavailable(_) => "revocationUnavailable",
            Self::OcspUnknown => "ocspUnknown",
            Self::OcspRefused(_) => "ocspRefused",
            Self::OcspMalformed(_) => "ocspMalformed",
            Self::OcspBadSignature => "ocspBadSignature",
            Self::OcspUnauthorizedResponder(_) => "ocspUnauthorizedResponder",
            Self::OcspWrongCertificate => "ocspWrongCertificate",
            Self::OcspStale { .. } => "ocspStale",
            Self::OcspNoNextUpdate => "ocspNoNextUpdate",
            Self::OcspNotYetValid { .. } => "ocspNotYetValid",
            Self::CrlMalformed(_) => "crlMalformed",
            Self::CrlBadSignature => "crlBadSignature",
            Self::CrlNotAuthoritative(_) => "crlNotAuthoritative",
            Self::CrlStale { .. } => "crlStale",
            Self::CrlNotYetValid { .. } => "crlNotYetValid",
            Self::TlsConfig(_) => "tlsConfig",
            Self::Handshake(_) => "handshake",
        }
    }
}

/// The reasons of RFC 5280 §5.3.1 (value 7 is unused there).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RevocationReason {
    /// 0
    Unspecified,
    /// 1
    KeyCompromise,
    /// 2
    CaCompromise,
    /// 3
    AffiliationChanged,
    /// 4
    Superseded,
    /// 5
    CessationOfOperation,
    /// 6
    CertificateHold,
    /// 8
    RemoveFromCrl,
    /// 9
    PrivilegeWithdrawn,
    /// 10
    AaCompromise,
}

impl RevocationReason {
    /// The reason with this CRLReason code; `None` for 7 and unknown codes.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::Unspecified,
            1 => Self::KeyCompromise,
            2 => Self::CaCompromise,
            3 => Self::AffiliationChanged,
            4 => Self::Superseded,
            5 => Self::CessationOfOperation,
            6 => Self::CertificateHold,
            8 => Self::RemoveFromCrl,
            9 => Self::PrivilegeWithdrawn,
            10 => Self::AaCompromise,
            _ => return None,
        })
    }

    /// The RFC 5280 name, e.g. `keyCompromise`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::KeyCompromise => "keyCompromise",
            Self::CaCompromise => "cACompromise",
            Self::AffiliationChanged => "affiliationChanged",
            Self::Superseded => "superseded",
            Self::CessationOfOperation => "cessationOfOperation",
            Self::CertificateHold => "certificateHold",
            Self::RemoveFromCrl => "removeFromCRL",
            Self::PrivilegeWithdrawn => "privilegeWithdrawn",
            Self::AaCompromise => "aACompromise",
        }
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<webpki::RevocationReason> for RevocationReason {
    fn from(r: webpki::RevocationReason) -> Self {
        use webpki::RevocationReason as W;
        match r {
            W::Unspecified => Self::Unspecified,
            W::KeyCompromise => Self::KeyCompromise,
            W::CaCompromise => Self::CaCompromise,
            W::AffiliationChanged => Self::AffiliationChanged,
            W::Superseded => Self::Superseded,
            W::CessationOfOperation => Self::CessationOfOperation,
            W::CertificateHold => Self::CertificateHold,
            W::RemoveFromCrl => Self::RemoveFromCrl,
            W::PrivilegeWithdrawn => Self::PrivilegeWithdrawn,
            W::AaCompromise => Self::AaCompromise,
        }
    }
}

fn at(t: Option<OffsetDateTime>) -> String {
    t.map(|t| format!(" at {}", rfc3339(t))).unwrap_or_default()
}

/// RFC 3339 in UTC, whole seconds, for messages.
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

fn reason_text(r: Option<RevocationReason>) -> &'static str {
    r.map_or("no reason given", RevocationReason::name)
}
