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
    /// A key, signature or TLS configuration could not be made.
    #[error("crypto: {0}")]
    Crypto(String),
    /// The ACME server failed a step that comes before the measured window (directory,
    /// accounts), so there is nothing to measure.
    #[error("ACME {step}: {reason}")]
    Acme {
        /// The step: directory, newNonce, newAccount.
        step: String,
        /// What went wrong, with the server's problem document when it sent one.
        reason: String,
    },
    /// The ACME run ended before its orders were done: the server stalled or the run's time
    /// bound passed. The report holds what was measured until then.
    #[error("{}", .0.end.message(.0.orders, .0.orders_requested))]
    Unfinished(Box<crate::acme::AcmeBenchReport>),
    /// The SCEP server failed a step that comes before the measured window (GetCACaps,
    /// GetCACert, the choice of the certificate to encrypt to).
    #[error("SCEP {step}: {reason}")]
    Scep {
        /// The step: GetCACaps or GetCACert.
        step: String,
        /// What went wrong.
        reason: String,
    },
    /// The SCEP run ended before its requests were done: the server stalled or the window's
    /// time bound passed. The report holds what was measured until then.
    #[error("{}", .0.end.message(.0.enrollments, .0.requests, .0.requested))]
    ScepUnfinished(Box<crate::scep::ScepBenchReport>),
}
