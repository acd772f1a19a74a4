//! Storage for agentca.
//!
//! One [`Store`] trait, shaped around what the CA must never lose (design §9): reserved serials
//! with their intent, issued certificates, revocations, consumed tokens and the CRL number.
//! Backends: [`SledStore`] (embedded, the default). Every backend runs the same test battery
//! ([`battery`]).
//!
//! Writes become visible at once and durable at the next [`Store::commit`]; callers commit
//! before they acknowledge anything. Concurrent commits share one flush ([`GroupCommit`]).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod battery;
mod error;
mod group_commit;
mod records;
mod sled_store;

pub use error::StoreError;
pub use group_commit::{FlushFailed, GroupCommit};
pub use records::{
    AgentRecord, CertificateFilter, CertificateRecord, CrlState, EnrollmentMethod, InvalidReason,
    InvalidSerial, IssuanceIntent, Revocation, RevocationReason, RevokedEntry, Serial, SerialEntry,
    TokenKind, TokenRecord,
};
pub use sled_store::SledStore;

use time::OffsetDateTime;

/// Result alias for store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The CA's system of record.
///
/// Every method is atomic on its own. Methods that check-then-write (`insert_agent`,
/// `reserve_serial`, `revoke`, `consume_token`, `next_crl_number`) do so atomically, so two
/// processes or threads racing for the same thing get one winner.
pub trait Store: Send + Sync {
    /// Adds an agent; [`StoreError::AlreadyExists`] if the ID is taken.
    fn insert_agent(&self, agent: &AgentRecord) -> Result<()>;
    /// Replaces an existing agent's record; [`StoreError::NotFound`] if absent.
    fn update_agent(&self, agent: &AgentRecord) -> Result<()>;
    /// One agent.
    fn agent(&self, id: &str) -> Result<Option<AgentRecord>>;
    /// All agents, ordered by ID.
    fn agents(&self) -> Result<Vec<AgentRecord>>;

    /// Reserves `intent.serial` and records the intent, only if the serial was never used;
    /// [`StoreError::AlreadyExists`] otherwise (the caller draws a new serial).
    fn reserve_serial(&self, intent: &IssuanceIntent) -> Result<()>;
    /// Stores the certificate for a reserved serial. [`StoreError::NotFound`] if the serial
    /// was not reserved, [`StoreError::Conflict`] if it already has a certificate.
    fn record_certificate(&self, record: &CertificateRecord) -> Result<()>;
    /// A serial's state.
    fn serial(&self, serial: &Serial) -> Result<Option<SerialEntry>>;
    /// Issued certificates (with DER), ordered by serial.
    fn certificates(&self, filter: &CertificateFilter) -> Result<Vec<CertificateRecord>>;
    /// Issued certificates (with DER) for a public key, by the key's SHA-256 (hex, as in
    /// [`IssuanceIntent::key_sha256`]), ordered by serial.
    fn certificates_with_key(&self, key_sha256: &str) -> Result<Vec<CertificateRecord>>;
    /// Reserved serials that never got a certificate (for reconciliation).
    fn orphaned_intents(&self) -> Result<Vec<IssuanceIntent>>;
    /// Number of serials ever reserved.
    fn serial_count(&self) -> Result<u64>;

    /// Marks an issued certificate revoked. [`StoreError::NotFound`] if there is no
    /// certificate, [`StoreError::Conflict`] if it is already revoked (the first revocation
    /// stands). Returns the updated record.
    fn revoke(&self, serial: &Serial, revocation: Revocation) -> Result<CertificateRecord>;
    /// Revoked certificates whose `notAfter` is at or after `expiring_after`, for the CRL.
    fn revoked(&self, expiring_after: OffsetDateTime) -> Result<Vec<RevokedEntry>>;

    /// Blocks a key (SHA-256 of its SubjectPublicKeyInfo) from ever being certified again.
    fn block_key(&self, key_sha256: &[u8; 32]) -> Result<()>;
    /// Whether a key is blocked.
    fn is_key_blocked(&self, key_sha256: &[u8; 32]) -> Result<bool>;

    /// Stores a new token; [`StoreError::AlreadyExists`] if the id is taken.
    fn insert_token(&self, token: &TokenRecord) -> Result<()>;
    /// One token.
    fn token(&self, id: &str) -> Result<Option<TokenRecord>>;
    /// Marks a token used, only if it is unused; [`StoreError::Conflict`] if it was used.
    fn consume_token(&self, id: &str, at: OffsetDateTime) -> Result<TokenRecord>;

    /// Allocates the next CRL number: strictly greater than any number handed out before, with a
    /// `thisUpdate` never earlier than the previous one (even if the clock stepped back).
    fn next_crl_number(&self, now: OffsetDateTime) -> Result<CrlState>;
    /// The last allocated CRL number, if any.
    fn crl_state(&self) -> Result<Option<CrlState>>;

    /// Makes every write that this thread (or any thread) completed before the call durable.
    /// Concurrent callers share flushes.
    fn commit(&self) -> Result<()>;
}
