//! The one error type of the load generators.

/// Why a benchmark could not be run. Failures of individual requests are not errors: they are
/// counted in the report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The options contradict themselves or cannot be used (no requests, zero concurrency, …).
    #[error("invalid benchmark options: {0}")]
    Options(String),
    /// The server URL cannot be used.
    #[error("URL {url:?}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A certificate given to build requests from is unusable.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The server process named by its pid cannot be observed through `/proc`.
    #[error("server process {pid}: {reason}")]
    Server {
        /// The process id.
        pid: u32,
        /// Why it cannot be read.
        reason: String,
    },
    /// An I/O failure of the generator itself (runtime, threads).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Encoding a request failed.
    #[error(transparent)]
    Core(#[from] agentca_core::Error),
}
