//! The store's one error type.

/// What can go wrong in a store.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The key is already taken (agent ID, serial, token id).
    #[error("{what} already exists")]
    AlreadyExists {
        /// What was duplicated.
        what: String,
    },
    /// Nothing stored under that key.
    #[error("{what} not found")]
    NotFound {
        /// What was missing.
        what: String,
    },
    /// The record is in a state that forbids the change (already revoked, already consumed).
    #[error("{what}")]
    Conflict {
        /// What conflicted.
        what: String,
    },
    /// The backend failed (I/O, corruption, lock held by another process).
    #[error("storage backend: {0}")]
    Backend(String),
    /// A stored record could not be decoded.
    #[error("corrupt record under {key}: {reason}")]
    Corrupt {
        /// The record's key.
        key: String,
        /// The decoding error.
        reason: String,
    },
    /// A flush failed, so the write may not be durable.
    #[error("flush failed: the write may not be durable")]
    FlushFailed,
}

impl From<crate::FlushFailed> for StoreError {
    fn from(_: crate::FlushFailed) -> Self {
        Self::FlushFailed
    }
}
