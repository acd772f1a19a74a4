//! The one error type of the CA core.
//!
//! Front ends map these to their protocol's answer (ACME problem, SCEP failInfo, CLI message)
//! in one place each; the messages here are written for an operator reading one line.

use std::path::PathBuf;

/// Everything that can go wrong in the CA core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The agent ID is not a canonical SPIFFE ID, or not in this CA's trust domain.
    #[error("invalid agent ID: {0}")]
    InvalidAgentId(String),

    /// The certificate signing request is malformed, badly signed or asks for something
    /// the profile never grants.
    #[error("bad CSR: {0}")]
    BadCsr(String),

    /// The public key is of a type, size or quality agentca does not certify.
    #[error("unsupported or weak key: {0}")]
    UnsupportedKey(String),

    /// A policy rule refused the request; names the policy, its file and the rule.
    #[error("refused by policy {policy:?} ({file}), rule {rule}: {reason}")]
    PolicyRefused {
        /// The policy's name.
        policy: String,
        /// The file the policy came from.
        file: String,
        /// The rule (TOML key) that refused.
        rule: String,
        /// What was wrong, for the operator.
        reason: String,
    },

    /// A policy file could not be loaded.
    #[error("policy file {file}: {reason}")]
    PolicyFile {
        /// The file.
        file: String,
        /// What was wrong, with line and rule where known.
        reason: String,
    },

    /// The agent is unknown.
    #[error("unknown agent {0}")]
    UnknownAgent(String),

    /// The agent exists but is disabled.
    #[error("agent {0} is disabled")]
    AgentDisabled(String),

    /// An agent with this ID already exists.
    #[error("agent {0} already exists")]
    AgentExists(String),

    /// No certificate with this serial.
    #[error("unknown certificate serial {0}")]
    UnknownSerial(String),

    /// The certificate is already revoked.
    #[error("certificate {0} is already revoked")]
    AlreadyRevoked(String),

    /// A policy rate limit is exhausted.
    #[error("rate limit: {what}; try again in {retry_after_secs} s")]
    RateLimited {
        /// Which limit, for the operator and the client.
        what: String,
        /// Seconds until one more request fits.
        retry_after_secs: u64,
    },

    /// A lifetime outside what the profile allows.
    #[error("invalid lifetime: {0}")]
    InvalidLifetime(String),

    /// A certificate would violate the profile; caught before the key signs.
    #[error("profile check failed before signing: {0}")]
    ProfileViolation(String),

    /// The CA key refused or failed to sign.
    #[error("signing failed: {0}")]
    Signing(String),

    /// The PKCS#11 token holding the issuing CA key is missing, refused the PIN, holds no
    /// such key, or failed.
    #[error("PKCS#11: {0}")]
    Pkcs11(String),

    /// A key file could not be read, decrypted or written, or has unsafe permissions.
    #[error("key file {}: {reason}", path.display())]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },

    /// The data directory is missing, incomplete, or already holds a CA.
    #[error("data directory {}: {reason}", path.display())]
    DataDir {
        /// The data directory.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },

    /// The audit log could not be written, or failed verification.
    #[error("audit log: {0}")]
    Audit(String),

    /// DER encoding or decoding failed.
    #[error("DER: {0}")]
    Der(String),

    /// An OCSP request could not be understood.
    #[error("malformed OCSP request: {0}")]
    OcspMalformed(String),

    /// The store failed.
    #[error(transparent)]
    Store(#[from] agentca_store::StoreError),

    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A command-line or API argument is malformed.
    #[error("{0}")]
    InvalidArgument(String),

    /// An error reported by a running server over the admin socket: its kind (as the CLI's JSON
    /// output names it) and its message.
    #[error("{message}")]
    Remote {
        /// The error kind, e.g. `badCsr`.
        kind: String,
        /// The server's message.
        message: String,
    },

    /// A state that should be impossible; reported instead of panicking.
    #[error("internal error (please report): {0}")]
    Unreachable(&'static str),
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result alias for the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;
