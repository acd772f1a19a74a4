//! The crate's one error type.

use std::path::PathBuf;

/// Why an agent-side operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// A file or directory operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// What was being read or written.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Files on disk are not what this crate writes (e.g. a regular file where a link to the
    /// current credentials belongs, with different content).
    #[error("{}: {reason}", path.display())]
    Layout {
        /// The file in question.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A certificate or key does not parse, or they do not belong together.
    #[error("credentials: {0}")]
    Credentials(String),
    /// The CA could not be reached or did not answer in time; worth retrying.
    #[error("CA unavailable: {0}")]
    Unavailable(String),
    /// The http-01 responder could not listen (the address is taken, or binding it needs
    /// privileges); worth retrying, since whoever holds it may let go.
    #[error("http-01 responder: {0}")]
    Responder(String),
    /// The CA answered something this client cannot use (not the protocol).
    #[error("protocol: {0}")]
    Protocol(String),
    /// The CA refused the request (an ACME problem document or a SCEP failure).
    #[error("refused by the CA: {detail}")]
    Refused {
        /// The ACME problem type (`urn:ietf:params:acme:error:…`) or the SCEP failInfo.
        kind: String,
        /// What the CA said.
        detail: String,
        /// When the CA asked to be retried, if it did.
        retry_after: Option<std::time::Duration>,
    },
}

/// The crate's result type.
pub type Result<T, E = AgentError> = std::result::Result<T, E>;

impl AgentError {
    /// Whether trying again later can succeed: the CA was unreachable, was busy, or limited
    /// the rate.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unavailable(_) | Self::Responder(_) => true,
            Self::Refused { kind, .. } => {
                kind.ends_with(":rateLimited")
                    || kind.ends_with(":serverInternal")
                    || kind.ends_with(":badNonce")
            }
            _ => false,
        }
    }

    /// The wait the CA asked for.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Refused { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
