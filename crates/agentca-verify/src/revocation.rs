//! How revocation is checked, what happens when it cannot be, and what a verification found.

use std::fmt;

use time::OffsetDateTime;

/// Where revocation status comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Revocation {
    /// Not checked. Reasonable only for very short-lived certificates.
    #[default]
    None,
    /// OCSP (RFC 6960).
    Ocsp(OcspSource),
    /// A CRL (RFC 5280 §5) of the leaf's issuer.
    Crl(CrlSource),
}

impl Revocation {
    /// OCSP at this responder URL (`http://…/ocsp`).
    pub fn ocsp(url: impl Into<String>) -> Self {
        Self::Ocsp(OcspSource::Url(url.into()))
    }

    /// OCSP at the responder the leaf names in its authorityInfoAccess extension.
    pub fn ocsp_from_certificate() -> Self {
        Self::Ocsp(OcspSource::FromCertificate)
    }

    /// The CRL published at this URL (`http://…/crl`), fetched and cached until its nextUpdate.
    pub fn crl_url(url: impl Into<String>) -> Self {
        Self::Crl(CrlSource::Url(url.into()))
    }

    /// This CRL (DER or PEM), used as given until its nextUpdate, when checks start failing.
    pub fn crl(crl: impl Into<Vec<u8>>) -> Self {
        Self::Crl(CrlSource::Given(crl.into()))
    }
}

/// Which OCSP responder to ask.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OcspSource {
    /// This URL, for every certificate.
    Url(String),
    /// The first `http://` OCSP URL in the leaf's authorityInfoAccess extension (read only
    /// after the chain has been verified, so only the CA chooses where requests go).
    FromCertificate,
}

/// Where the CRL comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CrlSource {
    /// Fetched from this URL, and again once the cached copy is due for refresh.
    Url(String),
    /// Given once, DER or PEM.
    Given(Vec<u8>),
}

/// What to do when no revocation answer can be had: the responder or CRL server is
/// unreachable, does not answer in time, answers `tryLater`/`internalError` or with a non-200
/// status, or (in the TLS verifiers, which never wait on the network) no fresh answer is cached.
///
/// The policy is about *no* answer only. An answer that is obtained but fails a check — a bad
/// signature, an unauthorized responder, another serial, a stale or future-dated response —
/// is always a refusal, as is `revoked` and `unknown`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Refuse the certificate ([`crate::Error::RevocationUnavailable`]).
    #[default]
    Closed,
    /// Accept it, with [`RevocationStatus::Unavailable`] saying why it was not checked.
    Open,
}

/// Who said a certificate is revoked or good.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RevocationSource {
    /// An OCSP response.
    Ocsp,
    /// A CRL.
    Crl,
}

impl fmt::Display for RevocationSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ocsp => "OCSP",
            Self::Crl => "the CRL",
        })
    }
}

/// The revocation part of a successful verification.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RevocationStatus {
    /// The policy is [`Revocation::None`].
    NotChecked,
    /// Not revoked, according to an answer valid from `this_update` to `next_update`.
    Good {
        /// OCSP or CRL.
        source: RevocationSource,
        /// When the answer was known to be correct.
        this_update: OffsetDateTime,
        /// When it stops being current.
        next_update: OffsetDateTime,
    },
    /// No answer could be had, and the policy is [`FailurePolicy::Open`].
    Unavailable {
        /// Why there was no answer.
        reason: String,
    },
}

impl RevocationStatus {
    /// A short word for people and JSON: `good`, `unchecked` or `unavailable`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::NotChecked => "unchecked",
            Self::Good { .. } => "good",
            Self::Unavailable { .. } => "unavailable",
        }
    }
}
