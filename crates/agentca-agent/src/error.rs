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
}

/// The crate's result type.
pub type Result<T, E = AgentError> = std::result::Result<T, E>;

impl AgentError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
