//! Every record of a store as one portable list, for backups and for moving a CA from one
//! backend to another (sled to PostgreSQL and back).
//!
//! A [`BackupRecord`] is the logical record, never a backend's layout: indexes (agent → serials,
//! key → serials, thumbprint → account, …) are not exported and [`Backup::import`] rebuilds
//! them, so a list exported from one backend loads into the other.
//!
//! A new kind of record needs a variant here and its export, import and emptiness check in
//! every backend, or backups silently leave it out; the battery's round trip fails for a kind
//! a backend does not carry.
//!
//! Not exported: rate-limit state. It is a throttle over a short window whose loss only lets a
//! client make a few more requests right after a restore, and carrying one node's timing state
//! to another would mean nothing there.

use serde::{Deserialize, Serialize};

use crate::{
    AcmeAccount, AcmeAuthorization, AcmeOrder, AgentRecord, CertificateRecord, CrlState,
    IssuanceIntent, Result, ScepTransaction, Store, StoreError, TokenRecord,
};

/// One record of a store.
///
/// In JSON: `{"kind": "agent", "record": {…}}` (adjacent, so no record's own members can clash
/// with the tag). Exported kind by kind, in the order of the variants, each kind in key byte order, so two
/// stores with the same records export the same list whatever their backends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "record", rename_all = "snake_case")]
#[non_exhaustive]
pub enum BackupRecord {
    /// A registered agent.
    Agent(AgentRecord),
    /// A reserved serial that has no certificate (an issuance that died, or one known only
    /// from the audit log): it must never be used again.
    Reservation(IssuanceIntent),
    /// An issued certificate with its DER, revoked or not.
    Certificate {
        /// The record (its `der` member is not serialized; see `der`).
        certificate: CertificateRecord,
        /// The certificate, DER, as lowercase hex.
        der: String,
    },
    /// A key that may never be certified again: SHA-256 of its SubjectPublicKeyInfo, hex.
    BlockedKey {
        /// 64 lowercase hex digits.
        key_sha256: String,
    },
    /// An enrollment token with its verifier (a hash or a sealed key, never the secret) and
    /// whether it was used.
    Token(TokenRecord),
    /// A SCEP request that issued a certificate.
    ScepTransaction(ScepTransaction),
    /// An ACME account.
    AcmeAccount(AcmeAccount),
    /// An ACME authorization.
    AcmeAuthorization(AcmeAuthorization),
    /// An ACME order.
    AcmeOrder(AcmeOrder),
    /// An ARI replacement claim: the order that claims to replace a certificate.
    AcmeReplacement {
        /// The ARI certificate identifier.
        cert_id: String,
        /// The claiming order.
        order_id: String,
    },
    /// The CRL number high-water mark.
    CrlState(CrlState),
}

impl BackupRecord {
    /// Every kind's name, in export order (the `kind` member of the JSON form).
    pub const KINDS: [&'static str; 11] = [
        "agent",
        "reservation",
        "certificate",
        "blocked_key",
        "token",
        "scep_transaction",
        "acme_account",
        "acme_authorization",
        "acme_order",
        "acme_replacement",
        "crl_state",
    ];

    /// The record's kind, as in [`BackupRecord::KINDS`].
    pub fn kind(&self) -> &'static str {
        let index = match self {
            Self::Agent(_) => 0,
            Self::Reservation(_) => 1,
            Self::Certificate { .. } => 2,
            Self::BlockedKey { .. } => 3,
            Self::Token(_) => 4,
            Self::ScepTransaction(_) => 5,
            Self::AcmeAccount(_) => 6,
            Self::AcmeAuthorization(_) => 7,
            Self::AcmeOrder(_) => 8,
            Self::AcmeReplacement { .. } => 9,
            Self::CrlState(_) => 10,
        };
        Self::KINDS[index]
    }

    /// A certificate record, with its DER carried as hex.
    pub fn certificate(record: CertificateRecord) -> Self {
        let der = hex::encode(&record.der);
        Self::Certificate {
            certificate: record,
            der,
        }
    }

    /// A blocked key.
    pub fn blocked_key(key_sha256: &[u8; 32]) -> Self {
        Self::BlockedKey {
            key_sha256: hex::encode(key_sha256),
        }
    }
}

/// A [`BackupRecord::Certificate`]'s record with its DER decoded.
pub(crate) fn certificate_with_der(
    certificate: &CertificateRecord,
    der: &str,
) -> Result<CertificateRecord> {
    let mut record = certificate.clone();
    record.der = hex::decode(der).map_err(|e| StoreError::Corrupt {
        key: certificate.intent.serial.to_hex(),
        reason: format!("certificate DER is not hex: {e}"),
    })?;
    if record.der.is_empty() {
        return Err(StoreError::Corrupt {
            key: certificate.intent.serial.to_hex(),
            reason: "certificate without its DER".into(),
        });
    }
    Ok(record)
}

/// A [`BackupRecord::BlockedKey`]'s key.
pub(crate) fn blocked_key_bytes(key_sha256: &str) -> Result<[u8; 32]> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(key_sha256, &mut key).map_err(|_| StoreError::Corrupt {
        key: key_sha256.to_owned(),
        reason: "a blocked key is 64 hex digits".into(),
    })?;
    Ok(key)
}

/// How many records of each kind an import loaded, in [`BackupRecord::KINDS`] order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordCounts(pub [u64; 11]);

impl RecordCounts {
    /// Counts one record.
    pub fn add(&mut self, record: &BackupRecord) {
        if let Some(i) = BackupRecord::KINDS.iter().position(|k| *k == record.kind()) {
            self.0[i] += 1;
        }
    }

    /// `(kind, count)` pairs in export order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        BackupRecord::KINDS
            .iter()
            .copied()
            .zip(self.0.iter().copied())
    }

    /// Records in all.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

/// Export and import of every record, for backups and migrations between backends.
pub trait Backup: Store {
    /// Calls `visit` with every record (see [`BackupRecord`] for the order), all read from one
    /// consistent state of the store: a PostgreSQL store reads in one REPEATABLE READ
    /// transaction, so nodes may keep writing meanwhile; the embedded store is held by one
    /// process at a time, so nothing writes while it exports. An error from `visit` stops the
    /// export and is returned.
    fn export(&self, visit: &mut dyn FnMut(BackupRecord) -> Result<()>) -> Result<()>;

    /// Whether the store holds no record at all (rate-limit state aside).
    fn is_empty(&self) -> Result<bool>;

    /// Loads `records` into this store, which must be empty ([`StoreError::Conflict`]
    /// otherwise), rebuilding every index; durable when it returns. PostgreSQL loads in one
    /// transaction, so a failure leaves the database as it was; the embedded store is not
    /// transactional across trees, so callers load it into a fresh directory and move that
    /// into place only once the import succeeded.
    fn import(&self, records: &mut dyn Iterator<Item = BackupRecord>) -> Result<RecordCounts>;
}

/// The error for a non-empty import target.
pub(crate) fn not_empty(target: &str) -> StoreError {
    StoreError::Conflict {
        what: format!("{target} already holds records; a restore needs an empty store"),
    }
}
