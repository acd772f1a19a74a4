//! Validation outcomes as RFC 8555 §6.7 problem types.
//!
//! Each check reports its own error enum; this module is the one place that says which
//! problem type each of them becomes, so the mapping can be read (and reviewed) at once.
//! Details name what was checked and what was wrong with it, never what a peer sent: a
//! response body or a TXT value is attacker-chosen text that would otherwise be reflected to
//! the requester and into logs.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use super::ChallengeType;
use super::address::Refused;
use super::dns01::Dns01Error;
use super::http01::HttpError;
use super::record::ValidationRecord;
use super::resolve::ResolveError;
use super::tlsalpn01::TlsAlpnError;

/// The RFC 8555 §6.7 problem types a validation can end in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    /// The server could not connect to the validation target.
    Connection,
    /// There was a problem with a DNS query.
    Dns,
    /// The response received did not match the challenge's requirements.
    IncorrectResponse,
    /// The server received a TLS error during validation.
    Tls,
    /// The client lacks sufficient authorization.
    Unauthorized,
    /// The server will not issue certificates for the identifier.
    RejectedIdentifier,
    /// The server experienced an internal error.
    ServerInternal,
}

impl ProblemKind {
    /// The suffix after `urn:ietf:params:acme:error:`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connection => "connection",
            Self::Dns => "dns",
            Self::IncorrectResponse => "incorrectResponse",
            Self::Tls => "tls",
            Self::Unauthorized => "unauthorized",
            Self::RejectedIdentifier => "rejectedIdentifier",
            Self::ServerInternal => "serverInternal",
        }
    }
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed validation: the problem type, a detail safe to show the requester, and the
/// validation record as far as the attempt got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationFailure {
    kind: ProblemKind,
    detail: String,
    // Boxed: failures travel through every `?`, and most never carry a record.
    record: Option<Box<ValidationRecord>>,
}

impl ValidationFailure {
    pub(crate) fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            record: None,
        }
    }

    /// Attaches the record of the attempt as far as it got.
    pub(crate) fn with_record(mut self, record: ValidationRecord) -> Self {
        self.record = Some(Box::new(record));
        self
    }

    /// The problem type.
    pub fn kind(&self) -> ProblemKind {
        self.kind
    }

    /// The problem type's suffix, e.g. `"connection"`.
    pub fn problem_type(&self) -> &'static str {
        self.kind.as_str()
    }

    /// A human-readable explanation that repeats nothing the peer sent.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// What the attempt did before it failed, when it got as far as a lookup.
    pub fn record(&self) -> Option<&ValidationRecord> {
        self.record.as_deref()
    }
}

impl fmt::Display for ValidationFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

impl std::error::Error for ValidationFailure {}

/// A [`Validator`](super::Validator) that could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ValidationError {
    /// The resolver could not be configured (e.g. an unreadable resolv.conf).
    #[error("DNS resolver configuration: {0}")]
    Resolver(String),
    /// A configuration value is out of range.
    #[error("validation configuration: {0}")]
    Config(&'static str),
}

/// An IP identifier in a refused range: nothing will ever validate it (RFC 8738 §4 leaves
/// which addresses a CA serves to its policy).
pub(crate) fn refused_identifier(refused: Refused) -> ValidationFailure {
    ValidationFailure::new(ProblemKind::RejectedIdentifier, refused.to_string())
}

pub(crate) fn malformed_identifier() -> ValidationFailure {
    ValidationFailure::new(
        ProblemKind::RejectedIdentifier,
        "identifier is not a lowercase DNS name",
    )
}

pub(crate) fn no_usable_address(host: &str) -> ValidationFailure {
    ValidationFailure::new(
        ProblemKind::Connection,
        format!("no address to connect to for {host}"),
    )
}

pub(crate) fn connect_failed(addr: SocketAddr, err: &io::Error) -> ValidationFailure {
    ValidationFailure::new(
        ProblemKind::Connection,
        format!("connection to {addr} failed: {}", err.kind()),
    )
}

/// The overall deadline passed; a slow or stalling peer ends here. For dns-01 the only
/// peer is a DNS server, so it is a DNS problem.
pub(crate) fn timed_out(challenge: ChallengeType, timeout: Duration) -> ValidationFailure {
    let kind = match challenge {
        ChallengeType::Dns01 => ProblemKind::Dns,
        ChallengeType::Http01 | ChallengeType::TlsAlpn01 => ProblemKind::Connection,
    };
    ValidationFailure::new(
        kind,
        format!(
            "{} validation timed out after {} ms",
            challenge.as_str(),
            timeout.as_millis()
        ),
    )
}

impl From<Refused> for ValidationFailure {
    fn from(refused: Refused) -> Self {
        Self::new(ProblemKind::Connection, refused.to_string())
    }
}

impl From<ResolveError> for ValidationFailure {
    fn from(err: ResolveError) -> Self {
        let kind = match err {
            ResolveError::Lookup { .. } | ResolveError::NoAddresses { .. } => ProblemKind::Dns,
            ResolveError::InvalidName(_) => ProblemKind::RejectedIdentifier,
        };
        Self::new(kind, err.to_string())
    }
}

impl From<HttpError> for ValidationFailure {
    fn from(err: HttpError) -> Self {
        let kind = match &err {
            HttpError::Protocol(..) | HttpError::Redirect(_) => ProblemKind::Connection,
            HttpError::Status(_) | HttpError::BodyTooLarge(_) | HttpError::BodyMismatch => {
                ProblemKind::IncorrectResponse
            }
        };
        Self::new(kind, err.to_string())
    }
}

impl From<Dns01Error> for ValidationFailure {
    fn from(err: Dns01Error) -> Self {
        let kind = match &err {
            Dns01Error::Lookup { .. } | Dns01Error::NoRecords { .. } => ProblemKind::Dns,
            Dns01Error::Mismatch { .. } => ProblemKind::IncorrectResponse,
        };
        Self::new(kind, err.to_string())
    }
}

impl From<TlsAlpnError> for ValidationFailure {
    fn from(err: TlsAlpnError) -> Self {
        let kind = match &err {
            TlsAlpnError::Handshake(_) | TlsAlpnError::NoCertificate => ProblemKind::Tls,
            TlsAlpnError::Alpn
            | TlsAlpnError::SanCount(_)
            | TlsAlpnError::SanMismatch(_)
            | TlsAlpnError::ExtensionMissing
            | TlsAlpnError::ExtensionNotCritical => ProblemKind::Unauthorized,
            TlsAlpnError::Certificate | TlsAlpnError::ExtensionValue => {
                ProblemKind::IncorrectResponse
            }
        };
        Self::new(kind, err.to_string())
    }
}
