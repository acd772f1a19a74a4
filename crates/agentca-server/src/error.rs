//! The one error type of the server crate.

use agentca_store::StoreError;

/// Everything that can stop the server from starting or an operator hook from completing.
///
/// Requests never surface these: each protocol front end answers its own way (an OCSP status,
/// an HTTP status) and the error is logged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The CA core refused or failed (keys, signing, audit, DER).
    #[error(transparent)]
    Core(#[from] agentca_core::Error),

    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),

    /// A socket or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },

    /// The TLS configuration could not be built.
    #[error("TLS: {0}")]
    Tls(String),

    /// A configuration value is out of its allowed range.
    #[error("invalid server configuration: {0}")]
    Config(String),

    /// A background task panicked or was cancelled.
    #[error("background task failed: {0}")]
    Task(String),
}

impl ServerError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
