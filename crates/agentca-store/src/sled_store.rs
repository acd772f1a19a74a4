//! The embedded backend: sled 0.34.
//!
//! sled makes writes visible at once but durable only on `flush()`, and on Linux its flush uses
//! `sync_file_range`, which neither flushes the drive's cache nor the file's metadata. So
//! [`Store::commit`] flushes sled and then `fsync`s its data file and directory itself, once per
//! batch of concurrent writers ([`GroupCommit`]).
//!
//! Layout: one tree per record kind. Certificates keep their metadata (JSON) apart from their
//! DER, so listings and revocation do not drag the DER along.

mod backup;
mod expiry;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{Db, Transactional, Tree};
use time::OffsetDateTime;

use crate::sled_acme::AcmeTrees;
use crate::{
    AcmeAccount, AcmeAuthorization, AcmeAuthorizationStatus, AcmeOrder, AcmeOrderStatus,
    AgentRecord, CertificateFilter, CertificateRecord, CrlState, GroupCommit, IssuanceFeed,
    IssuanceIntent, IssuedEntry, RateDecision, RateLimit, Result, Revocation, RevocationFeed,
    RevocationReason, RevokedEntry, ScepTransaction, Serial, SerialEntry, SharedCrl, Store,
    StoreError, TokenRecord,
};

/// How long `open` waits for another process to release the database.
const LOCK_WAIT: Duration = Duration::from_secs(15);

/// The bound of sled's page cache. sled's own default is 1 GiB, so a long-running server kept
/// nearly every page it had written or read; the records a server reads often (agents,
/// policies, the orders in flight) fit in far less, and the rest is read from the file.
const PAGE_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// A [`Store`] on a sled database in one directory.
pub struct SledStore {
    db: Db,
    path: PathBuf,
    agents: Tree,
    serials: Tree,
    der: Tree,
    by_agent: Tree,
    by_key: Tree,
    revoked: Tree,
    /// Certificates by `notAfter`, for forgetting expired ones ([`expiry`]).
    expiry: Tree,
    blocked_keys: Tree,
    tokens: Tree,
    scep_transactions: Tree,
    meta: Tree,
    /// Used ACME nonces (16 bytes) → when they expire (Unix seconds, big-endian).
    nonces: Tree,
    acme: AcmeTrees,
    group: GroupCommit,
    /// sled's data file, kept open for fsync.
    data_file: File,
    /// The directory mtime at its last fsync.
    dir_synced: std::sync::Mutex<Option<std::time::SystemTime>>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .finish()
    }
}

const CRL_STATE_KEY: &[u8] = b"crl";
const SHARED_CRL_KEY: &[u8] = b"shared_crl";

impl SledStore {
    /// Opens (or creates) the store in `path`, waiting a while if another process holds it.
    pub fn open(path: &Path) -> Result<Self> {
        let started = Instant::now();
        let db = loop {
            match sled::Config::new()
                .path(path)
                .cache_capacity(PAGE_CACHE_BYTES)
                .open()
            {
                Ok(db) => break db,
                // sled reports a held file lock as an I/O error; another agentca process is
                // using the store, and short CLI commands finish quickly.
                Err(sled::Error::Io(e))
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.to_string().contains("lock") =>
                {
                    if started.elapsed() > LOCK_WAIT {
                        return Err(StoreError::Backend(format!(
                            "the store at {} is in use by another process: {e}",
                            path.display()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(backend(e)),
            }
        };
        let tree = |name: &str| db.open_tree(name).map_err(backend);
        let data_file = File::open(path.join("db"))
            .map_err(|e| StoreError::Backend(format!("open data file for fsync: {e}")))?;
        let store = Self {
            data_file,
            dir_synced: std::sync::Mutex::new(None),
            agents: tree("agents")?,
            serials: tree("serials")?,
            der: tree("der")?,
            by_agent: tree("by_agent")?,
            by_key: tree("by_key")?,
            revoked: tree("revoked")?,
            expiry: tree(expiry::TREE)?,
            blocked_keys: tree("blocked_keys")?,
            tokens: tree("tokens")?,
            scep_transactions: tree("scep_transactions")?,
            meta: tree("meta")?,
            nonces: tree("acme_nonces")?,
            acme: AcmeTrees::open(&db)?,
            path: path.to_owned(),
            db,
            group: GroupCommit::new(),
        };
        store.build_expiry_index_once()?;
        Ok(store)
    }

    fn flush(&self) -> Result<()> {
        self.db.flush().map_err(backend)?;
        // sled's flush ends with sync_file_range; make the data (and its size) durable.
        self.data_file
            .sync_all()
            .map_err(|e| StoreError::Backend(format!("fsync data file: {e}")))?;
        // The directory needs an fsync only when its entries changed (sled wrote or removed a
        // snapshot file); its mtime says so, for the price of a stat.
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .map_err(|e| StoreError::Backend(format!("stat store directory: {e}")))?;
        let mut synced = self
            .dir_synced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *synced != Some(mtime) {
            File::open(&self.path)
                .and_then(|dir| dir.sync_all())
                .map_err(|e| StoreError::Backend(format!("fsync store directory: {e}")))?;
            *synced = Some(mtime);
        }
        Ok(())
    }
}

impl Store for SledStore {
    fn insert_agent(&self, agent: &AgentRecord) -> Result<()> {
        let value = encode(agent)?;
        match self
            .agents
            .compare_and_swap(agent.id.as_bytes(), None::<&[u8]>, Some(value))
            .map_err(backend)?
        {
            Ok(()) => Ok(()),
            Err(_) => Err(StoreError::AlreadyExists {
                what: format!("agent {}", agent.id),
            }),
        }
    }

    fn update_agent(&self, agent: &AgentRecord, expected: &AgentRecord) -> Result<()> {
        let value = encode(agent)?;
        let result = self.agents.transaction(|t| {
            let Some(stored) = t.get(agent.id.as_bytes())? else {
                return abort(StoreError::NotFound {
                    what: format!("agent {}", agent.id),
                });
            };
            match decode::<AgentRecord>(&agent.id, &stored) {
                Ok(stored) if stored == *expected => {}
                Ok(_) => {
                    return abort(StoreError::Conflict {
                        what: format!("agent {} changed since it was read", agent.id),
                    });
                }
                Err(e) => return abort(e),
            }
            t.insert(agent.id.as_bytes(), value.as_slice())?;
            Ok(())
        });
        flatten(result)
    }

    fn agent(&self, id: &str) -> Result<Option<AgentRecord>> {
        self.agents
            .get(id.as_bytes())
            .map_err(backend)?
            .map(|v| decode(id, &v))
            .transpose()
    }

    fn agents(&self) -> Result<Vec<AgentRecord>> {
        self.agents
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(backend)?;
                decode(&String::from_utf8_lossy(&k), &v)
            })
            .collect()
    }

    fn reserve_serial(&self, intent: &IssuanceIntent) -> Result<()> {
        let value = encode(&SerialEntry::Reserved(intent.clone()))?;
        match self
            .serials
            .compare_and_swap(intent.serial.as_bytes(), None::<&[u8]>, Some(value))
            .map_err(backend)?
        {
            Ok(()) => Ok(()),
            Err(_) => Err(StoreError::AlreadyExists {
                what: format!("serial {}", intent.serial),
            }),
        }
    }

    fn release_serial(&self, serial: &Serial) -> Result<bool> {
        let Some(current) = self.serials.get(serial.as_bytes()).map_err(backend)? else {
            return Ok(false);
        };
        let reserved = matches!(
            decode::<SerialEntry>(&serial.to_hex(), &current)?,
            SerialEntry::Reserved(_)
        );
        // A DER is stored before the entry moves to issued: one here means a recording is
        // under way or was interrupted, so a signature exists.
        if !reserved || self.der.contains_key(serial.as_bytes()).map_err(backend)? {
            return Ok(false);
        }
        Ok(self
            .serials
            .compare_and_swap(serial.as_bytes(), Some(current), None::<&[u8]>)
            .map_err(backend)?
            .is_ok())
    }

    fn record_certificate(&self, record: &CertificateRecord) -> Result<()> {
        // No sled transaction (each is a log write of its own, see `sled_acme::cas_update`):
        // the DER and the indexes first, then the serial's entry moves from reserved to issued
        // by compare-and-swap. Readers go through the entry, so until that swap the certificate
        // does not exist for them, and a crash before it leaves a reserved serial to reconcile.
        let serial = record.intent.serial;
        let name = serial.to_hex();
        let Some(current) = self.serials.get(serial.as_bytes()).map_err(backend)? else {
            return Err(StoreError::NotFound {
                what: format!("reservation for serial {serial}"),
            });
        };
        let already = || StoreError::Conflict {
            what: format!("serial {serial} already has a certificate"),
        };
        if let SerialEntry::Issued(_) = decode::<SerialEntry>(&name, &current)? {
            return Err(already());
        }
        match self
            .der
            .compare_and_swap(
                serial.as_bytes(),
                None::<&[u8]>,
                Some(record.der.as_slice()),
            )
            .map_err(backend)?
        {
            Ok(()) => {}
            // A DER left by an attempt that crashed before its swap: the same bytes may stay.
            Err(e) if e.current.as_deref() == Some(record.der.as_slice()) => {}
            Err(_) => return Err(already()),
        }
        let agent_key = agent_index_key(&record.intent.agent_id, &serial);
        let key_key = key_index_key(&record.intent.key_sha256, &serial);
        self.by_agent.insert(agent_key, &[][..]).map_err(backend)?;
        self.by_key.insert(key_key, &[][..]).map_err(backend)?;
        self.index_expiry(record)?;
        let value = encode(&SerialEntry::Issued(record.clone()))?;
        match self
            .serials
            .compare_and_swap(serial.as_bytes(), Some(current), Some(value))
            .map_err(backend)?
        {
            Ok(()) => Ok(()),
            Err(_) => Err(already()),
        }
    }

    fn certificates_with_key(&self, key_sha256: &str) -> Result<Vec<CertificateRecord>> {
        let prefix = agent_index_prefix(key_sha256);
        let mut out = Vec::new();
        for kv in self.by_key.scan_prefix(&prefix) {
            let (k, _) = kv.map_err(backend)?;
            let serial = serial_from_key(&k[prefix.len()..])?;
            if let Some(SerialEntry::Issued(record)) = self.serial(&serial)? {
                out.push(record);
            }
        }
        Ok(out)
    }

    fn serial(&self, serial: &Serial) -> Result<Option<SerialEntry>> {
        let Some(v) = self.serials.get(serial.as_bytes()).map_err(backend)? else {
            return Ok(None);
        };
        let mut entry: SerialEntry = decode(&serial.to_hex(), &v)?;
        if let SerialEntry::Issued(record) = &mut entry {
            record.der = self.der_of(serial)?;
        }
        Ok(Some(entry))
    }

    fn certificates(&self, filter: &CertificateFilter) -> Result<Vec<CertificateRecord>> {
        let serials: Vec<Serial> = match &filter.agent_id {
            Some(agent) => {
                let prefix = agent_index_prefix(agent);
                self.by_agent
                    .scan_prefix(&prefix)
                    .map(|kv| {
                        let (k, _) = kv.map_err(backend)?;
                        serial_from_key(&k[prefix.len()..])
                    })
                    .collect::<Result<_>>()?
            }
            None => self
                .der
                .iter()
                .map(|kv| serial_from_key(&kv.map_err(backend)?.0))
                .collect::<Result<_>>()?,
        };
        let mut out = Vec::with_capacity(serials.len());
        for serial in serials {
            if let Some(SerialEntry::Issued(record)) = self.serial(&serial)? {
                out.push(record);
            }
        }
        out.sort_by_key(|r| r.intent.serial);
        Ok(out)
    }

    fn orphaned_intents(&self) -> Result<Vec<IssuanceIntent>> {
        let mut out = Vec::new();
        for kv in self.serials.iter() {
            let (k, v) = kv.map_err(backend)?;
            if let SerialEntry::Reserved(intent) = decode(&hex::encode(&k), &v)? {
                out.push(intent);
            }
        }
        Ok(out)
    }

    fn serial_count(&self) -> Result<u64> {
        Ok(self.serials.len() as u64)
    }

    fn revoke(&self, serial: &Serial, revocation: Revocation) -> Result<CertificateRecord> {
        let result = (&self.serials, &self.revoked).transaction(|(s, r)| {
            let Some(v) = s.get(serial.as_bytes())? else {
                return abort(StoreError::NotFound {
                    what: format!("certificate {serial}"),
                });
            };
            let mut record = match decode::<SerialEntry>(&serial.to_hex(), &v) {
                Ok(SerialEntry::Issued(record)) => record,
                Ok(SerialEntry::Reserved(_)) => {
                    // Signed-but-unrecorded certificates are revoked through reconciliation,
                    // which first re-creates their record from the audit log.
                    return abort(StoreError::NotFound {
                        what: format!("certificate {serial} (serial reserved, never stored)"),
                    });
                }
                Err(e) => return abort(e),
            };
            if record.revocation.is_some() {
                return abort(StoreError::Conflict {
                    what: format!("certificate {serial} is already revoked"),
                });
            }
            record.revocation = Some(revocation);
            let value = match encode(&SerialEntry::Issued(record.clone())) {
                Ok(v) => v,
                Err(e) => return abort(e),
            };
            s.insert(serial.as_bytes(), value.as_slice())?;
            r.insert(
                serial.as_bytes(),
                &encode_revoked(&revocation, record.intent.not_after)[..],
            )?;
            Ok(record)
        });
        let mut record = flatten(result)?;
        record.der = self.der_of(serial)?;
        Ok(record)
    }

    fn revoked(&self, expiring_after: OffsetDateTime) -> Result<Vec<RevokedEntry>> {
        let mut out = Vec::new();
        for kv in self.revoked.iter() {
            let (k, v) = kv.map_err(backend)?;
            let entry = decode_revoked(&k, &v)?;
            if entry.not_after >= expiring_after {
                out.push(entry);
            }
        }
        Ok(out)
    }

    fn purge_certificates(
        &self,
        expired_before: OffsetDateTime,
        revoked_expired_before: OffsetDateTime,
        limit: usize,
    ) -> Result<u64> {
        self.purge_expired(expired_before, revoked_expired_before, limit)
    }

    fn block_key(&self, key_sha256: &[u8; 32]) -> Result<()> {
        self.blocked_keys
            .insert(key_sha256, &[][..])
            .map_err(backend)?;
        Ok(())
    }

    fn is_key_blocked(&self, key_sha256: &[u8; 32]) -> Result<bool> {
        self.blocked_keys.contains_key(key_sha256).map_err(backend)
    }

    fn insert_token(&self, token: &TokenRecord) -> Result<()> {
        let value = encode(token)?;
        match self
            .tokens
            .compare_and_swap(token.id.as_bytes(), None::<&[u8]>, Some(value))
            .map_err(backend)?
        {
            Ok(()) => Ok(()),
            Err(_) => Err(StoreError::AlreadyExists {
                what: format!("token {}", token.id),
            }),
        }
    }

    fn token(&self, id: &str) -> Result<Option<TokenRecord>> {
        self.tokens
            .get(id.as_bytes())
            .map_err(backend)?
            .map(|v| decode(id, &v))
            .transpose()
    }

    fn restore_token(&self, id: &str, consumed_at: OffsetDateTime) -> Result<bool> {
        loop {
            let Some(current) = self.tokens.get(id.as_bytes()).map_err(backend)? else {
                return Ok(false);
            };
            let mut token: TokenRecord = decode(id, &current)?;
            if !token
                .consumed_at
                .is_some_and(|t| crate::same_second(t, consumed_at))
            {
                return Ok(false);
            }
            token.consumed_at = None;
            let swapped = self
                .tokens
                .compare_and_swap(id.as_bytes(), Some(&current), Some(encode(&token)?))
                .map_err(backend)?;
            if swapped.is_ok() {
                return Ok(true);
            }
        }
    }

    fn consume_token(&self, id: &str, at: OffsetDateTime) -> Result<TokenRecord> {
        // A compare-and-swap on the bytes read, not a sled transaction: each transaction
        // writes sled's log at once, twice, and every write wakes all of its I/O threads —
        // the largest cost of a SCEP enrollment after its RSA operations. Of two consumers
        // racing, the loser's swap fails and its second read sees the token used.
        loop {
            let Some(current) = self.tokens.get(id.as_bytes()).map_err(backend)? else {
                return Err(StoreError::NotFound {
                    what: format!("token {id}"),
                });
            };
            let mut token: TokenRecord = decode(id, &current)?;
            if token.consumed_at.is_some() {
                return Err(StoreError::Conflict {
                    what: format!("token {id} was already used"),
                });
            }
            token.consumed_at = Some(at);
            let swapped = self
                .tokens
                .compare_and_swap(id.as_bytes(), Some(&current), Some(encode(&token)?))
                .map_err(backend)?;
            if swapped.is_ok() {
                return Ok(token);
            }
        }
    }

    fn record_scep_transaction(&self, transaction: &ScepTransaction) -> Result<()> {
        match self
            .scep_transactions
            .compare_and_swap(
                transaction.request_key.as_bytes(),
                None::<&[u8]>,
                Some(encode(transaction)?),
            )
            .map_err(backend)?
        {
            Ok(()) => Ok(()),
            Err(_) => Err(StoreError::AlreadyExists {
                what: format!("SCEP transaction {}", transaction.transaction_id),
            }),
        }
    }

    fn scep_transaction(&self, request_key: &str) -> Result<Option<ScepTransaction>> {
        self.scep_transactions
            .get(request_key.as_bytes())
            .map_err(backend)?
            .map(|v| decode(request_key, &v))
            .transpose()
    }

    fn purge_scep_transactions(&self, created_before: OffsetDateTime, limit: usize) -> Result<u64> {
        let mut purged = 0;
        for kv in self.scep_transactions.iter() {
            if purged as usize >= limit {
                break;
            }
            let (key, value) = kv.map_err(backend)?;
            let transaction: ScepTransaction = decode(&String::from_utf8_lossy(&key), &value)?;
            if transaction.created_at >= created_before {
                continue;
            }
            // As read: a record is never rewritten, but the exact bytes cost nothing to check.
            let removed = self
                .scep_transactions
                .compare_and_swap(&key, Some(value), None::<&[u8]>)
                .map_err(backend)?;
            if removed.is_ok() {
                purged += 1;
            }
        }
        Ok(purged)
    }

    fn next_crl_number(&self, now: OffsetDateTime) -> Result<CrlState> {
        let result = self.meta.transaction(|t| {
            let previous = match t.get(CRL_STATE_KEY)? {
                Some(v) => match decode::<CrlState>("crl", &v) {
                    Ok(s) => Some(s),
                    Err(e) => return abort(e),
                },
                None => None,
            };
            let next = match previous {
                Some(p) => CrlState {
                    number: p.number + 1,
                    this_update: now.max(p.this_update),
                },
                None => CrlState {
                    number: 1,
                    this_update: now,
                },
            };
            let value = match encode(&next) {
                Ok(v) => v,
                Err(e) => return abort(e),
            };
            t.insert(CRL_STATE_KEY, value.as_slice())?;
            Ok(next)
        });
        flatten(result)
    }

    fn crl_state(&self) -> Result<Option<CrlState>> {
        self.meta
            .get(CRL_STATE_KEY)
            .map_err(backend)?
            .map(|v| decode("crl", &v))
            .transpose()
    }

    fn create_acme_account(
        &self,
        account: &AcmeAccount,
        token_id: &str,
        at: OffsetDateTime,
    ) -> Result<()> {
        self.acme
            .create_account(&self.tokens, account, token_id, at)
    }

    fn acme_account(&self, id: &str) -> Result<Option<AcmeAccount>> {
        self.acme.account(id)
    }

    fn acme_account_by_thumbprint(&self, thumbprint: &str) -> Result<Option<AcmeAccount>> {
        self.acme.account_by_thumbprint(thumbprint)
    }

    fn update_acme_account(&self, account: &AcmeAccount) -> Result<()> {
        self.acme.update_account(account)
    }

    fn change_acme_account_key(
        &self,
        id: &str,
        old_thumbprint: &str,
        new_jwk: &str,
        new_thumbprint: &str,
    ) -> Result<AcmeAccount> {
        self.acme
            .change_account_key(id, old_thumbprint, new_jwk, new_thumbprint)
    }

    fn insert_acme_order(
        &self,
        order: &AcmeOrder,
        authorizations: &[AcmeAuthorization],
        now: OffsetDateTime,
    ) -> Result<()> {
        self.acme.insert_order(order, authorizations, now)
    }

    fn acme_order(&self, id: &str) -> Result<Option<AcmeOrder>> {
        self.acme.order(id)
    }

    fn acme_orders_of_account(&self, account_id: &str) -> Result<Vec<String>> {
        self.acme.orders_of_account(account_id)
    }

    fn update_acme_order(&self, order: &AcmeOrder, expected: AcmeOrderStatus) -> Result<()> {
        self.acme.update_order(order, expected)
    }

    fn acme_order_of_certificate(&self, serial: &Serial) -> Result<Option<AcmeOrder>> {
        self.acme.order_of_certificate(serial)
    }

    fn purge_acme_orders(
        &self,
        created_before: OffsetDateTime,
        expired_before: OffsetDateTime,
        limit: usize,
    ) -> Result<u64> {
        self.acme
            .purge_orders(created_before, expired_before, limit)
    }

    fn acme_replacement(&self, cert_id: &str) -> Result<Option<AcmeOrder>> {
        self.acme.replacement(cert_id)
    }

    fn acme_authorization(&self, id: &str) -> Result<Option<AcmeAuthorization>> {
        self.acme.authorization(id)
    }

    fn update_acme_authorization(
        &self,
        authorization: &AcmeAuthorization,
        expected: AcmeAuthorizationStatus,
    ) -> Result<()> {
        self.acme.update_authorization(authorization, expected)
    }

    fn take_rate_limit(
        &self,
        key: &str,
        limit: u32,
        window: time::Duration,
        now: OffsetDateTime,
    ) -> Result<RateDecision> {
        self.acme.take_rate_limit(key, limit, window, now)
    }

    fn check_rate_limit(
        &self,
        key: &str,
        limit: u32,
        window: time::Duration,
        now: OffsetDateTime,
    ) -> Result<RateDecision> {
        self.acme.check_rate_limit(key, limit, window, now)
    }

    fn take_rate_limits(&self, limits: &[RateLimit], now: OffsetDateTime) -> Result<RateDecision> {
        self.acme.take_rate_limits(limits, now)
    }

    fn return_rate_limit(
        &self,
        key: &str,
        limit: u32,
        window: time::Duration,
        now: OffsetDateTime,
    ) -> Result<()> {
        self.acme.return_rate_limit(key, limit, window, now)
    }

    fn revocations_since(&self, since: OffsetDateTime) -> Result<RevocationFeed> {
        // One process writes this store, and it stamps revocations with its own clock.
        let as_of = OffsetDateTime::now_utc();
        let mut entries = Vec::new();
        for kv in self.revoked.iter() {
            let (k, v) = kv.map_err(backend)?;
            let entry = decode_revoked(&k, &v)?;
            if entry.revocation.revoked_at >= since {
                entries.push(entry);
            }
        }
        Ok(RevocationFeed { entries, as_of })
    }

    fn issued_since(&self, since: OffsetDateTime) -> Result<IssuanceFeed> {
        // A full scan: nothing polls an unshared store (see the trait), and the process that
        // stored a certificate pre-signed its answers already.
        let as_of = OffsetDateTime::now_utc();
        let mut entries = Vec::new();
        for kv in self.serials.iter() {
            let (k, v) = kv.map_err(backend)?;
            if let SerialEntry::Issued(record) = decode(&hex::encode(&k), &v)?
                && record.issued_at >= since
                && record.revocation.is_none()
            {
                entries.push(IssuedEntry {
                    serial: record.intent.serial,
                    not_after: record.intent.not_after,
                });
            }
        }
        Ok(IssuanceFeed { entries, as_of })
    }

    fn share_crl(&self, crl: &SharedCrl) -> Result<bool> {
        let value = encode_shared_crl(crl);
        loop {
            let current = self.meta.get(SHARED_CRL_KEY).map_err(backend)?;
            if let Some(kept) = &current
                && shared_crl_number(kept)? >= crl.number
            {
                return Ok(false);
            }
            let swapped = self
                .meta
                .compare_and_swap(SHARED_CRL_KEY, current, Some(value.as_slice()))
                .map_err(backend)?;
            if swapped.is_ok() {
                return Ok(true);
            }
        }
    }

    fn shared_crl(&self, above: u64) -> Result<Option<SharedCrl>> {
        match self.meta.get(SHARED_CRL_KEY).map_err(backend)? {
            Some(kept) if shared_crl_number(&kept)? > above => Ok(Some(decode_shared_crl(&kept)?)),
            _ => Ok(None),
        }
    }

    fn redeem_nonce(&self, nonce: &[u8; 16], expires_at: OffsetDateTime) -> Result<bool> {
        let expires = expires_at.unix_timestamp().to_be_bytes();
        Ok(self
            .nonces
            .compare_and_swap(nonce, None::<&[u8]>, Some(&expires[..]))
            .map_err(backend)?
            .is_ok())
    }

    fn purge_nonces(&self, now: OffsetDateTime) -> Result<u64> {
        let now = now.unix_timestamp();
        let mut purged = 0;
        for kv in self.nonces.iter() {
            let (k, v) = kv.map_err(backend)?;
            let expires = <[u8; 8]>::try_from(v.as_ref())
                .map(i64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    key: hex::encode(&k),
                    reason: "a used nonce without an expiry".into(),
                })?;
            if expires < now {
                self.nonces.remove(&k).map_err(backend)?;
                purged += 1;
            }
        }
        Ok(purged)
    }

    fn commit(&self) -> Result<()> {
        self.group.commit(|| self.flush())
    }
}

impl SledStore {
    fn der_of(&self, serial: &Serial) -> Result<Vec<u8>> {
        self.der
            .get(serial.as_bytes())
            .map_err(backend)?
            .map(|v| v.to_vec())
            .ok_or_else(|| StoreError::Corrupt {
                key: serial.to_hex(),
                reason: "certificate recorded without its DER".into(),
            })
    }
}

fn agent_index_prefix(agent: &str) -> Vec<u8> {
    // Agent IDs never contain NUL, so "id\0" cannot be a prefix of another agent's key:
    // /agent/a and /agent/ab stay apart.
    let mut key = Vec::with_capacity(agent.len() + 1);
    key.extend_from_slice(agent.as_bytes());
    key.push(0);
    key
}

fn agent_index_key(agent: &str, serial: &Serial) -> Vec<u8> {
    let mut key = agent_index_prefix(agent);
    key.extend_from_slice(serial.as_bytes());
    key
}

fn key_index_key(key_sha256: &str, serial: &Serial) -> Vec<u8> {
    agent_index_key(key_sha256, serial)
}

fn serial_from_key(k: &[u8]) -> Result<Serial> {
    <[u8; Serial::LEN]>::try_from(k)
        .ok()
        .and_then(Serial::from_bytes)
        .ok_or_else(|| StoreError::Corrupt {
            key: hex::encode(k),
            reason: "not a serial".into(),
        })
}

/// Revoked entries are read in bulk for every CRL, so they use a fixed 17-byte layout:
/// revocation time (i64 BE, Unix seconds), reason code, notAfter (i64 BE, Unix seconds).
fn encode_revoked(revocation: &Revocation, not_after: OffsetDateTime) -> [u8; 17] {
    let mut out = [0u8; 17];
    out[..8].copy_from_slice(&revocation.revoked_at.unix_timestamp().to_be_bytes());
    out[8] = revocation.reason.code();
    out[9..].copy_from_slice(&not_after.unix_timestamp().to_be_bytes());
    out
}

fn decode_revoked(k: &[u8], v: &[u8]) -> Result<RevokedEntry> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        key: hex::encode(k),
        reason: reason.into(),
    };
    let serial = serial_from_key(k)?;
    let v: &[u8; 17] = v
        .try_into()
        .map_err(|_| corrupt("bad revoked entry length"))?;
    let time = |b: &[u8]| -> Result<OffsetDateTime> {
        let secs = i64::from_be_bytes(b.try_into().map_err(|_| corrupt("bad time"))?);
        OffsetDateTime::from_unix_timestamp(secs).map_err(|_| corrupt("time out of range"))
    };
    Ok(RevokedEntry {
        serial,
        revocation: Revocation {
            revoked_at: time(&v[..8])?,
            reason: RevocationReason::from_code(v[8]).ok_or_else(|| corrupt("bad reason"))?,
        },
        not_after: time(&v[9..])?,
    })
}

/// The shared CRL as one value: number (u64 BE), `thisUpdate` (i64 BE, Unix seconds), DER. A
/// CRL may be megabytes, so not JSON.
fn encode_shared_crl(crl: &SharedCrl) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + crl.der.len());
    out.extend_from_slice(&crl.number.to_be_bytes());
    out.extend_from_slice(&crl.this_update.unix_timestamp().to_be_bytes());
    out.extend_from_slice(&crl.der);
    out
}

fn shared_crl_corrupt(reason: &str) -> StoreError {
    StoreError::Corrupt {
        key: "shared_crl".into(),
        reason: reason.into(),
    }
}

fn shared_crl_number(v: &[u8]) -> Result<u64> {
    let head: [u8; 8] = v
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| shared_crl_corrupt("too short"))?;
    Ok(u64::from_be_bytes(head))
}

fn decode_shared_crl(v: &[u8]) -> Result<SharedCrl> {
    let number = shared_crl_number(v)?;
    let secs: [u8; 8] = v
        .get(8..16)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| shared_crl_corrupt("too short"))?;
    let this_update = OffsetDateTime::from_unix_timestamp(i64::from_be_bytes(secs))
        .map_err(|_| shared_crl_corrupt("thisUpdate out of range"))?;
    Ok(SharedCrl {
        number,
        this_update,
        der: v[16..].to_vec(),
    })
}

/// Inside a transaction on the token tree: marks token `id` used at `at`, refusing an unknown
/// or already used one. Shared by `consume_token` and ACME account creation.
pub(crate) fn use_token(
    t: &sled::transaction::TransactionalTree,
    id: &str,
    at: OffsetDateTime,
) -> std::result::Result<TokenRecord, ConflictableTransactionError<StoreError>> {
    let Some(v) = t.get(id.as_bytes())? else {
        return abort(StoreError::NotFound {
            what: format!("token {id}"),
        });
    };
    let mut token: TokenRecord = match decode(id, &v) {
        Ok(t) => t,
        Err(e) => return abort(e),
    };
    if token.consumed_at.is_some() {
        return abort(StoreError::Conflict {
            what: format!("token {id} was already used"),
        });
    }
    token.consumed_at = Some(at);
    let value = match encode(&token) {
        Ok(v) => v,
        Err(e) => return abort(e),
    };
    t.insert(id.as_bytes(), value.as_slice())?;
    Ok(token)
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| StoreError::Backend(format!("encode record: {e}")))
}

pub(crate) fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

pub(crate) fn backend(e: sled::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

pub(crate) fn abort<T>(
    e: StoreError,
) -> std::result::Result<T, ConflictableTransactionError<StoreError>> {
    Err(ConflictableTransactionError::Abort(e))
}

pub(crate) fn flatten<T>(r: std::result::Result<T, TransactionError<StoreError>>) -> Result<T> {
    match r {
        Ok(v) => Ok(v),
        Err(TransactionError::Abort(e)) => Err(e),
        Err(TransactionError::Storage(e)) => Err(backend(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::store_battery!(|dir: &Path| SledStore::open(dir).unwrap());

    #[test]
    fn reopen_keeps_committed_writes() {
        let dir = tempfile::tempdir().unwrap();
        let intent = crate::battery::intent(1);
        {
            let store = SledStore::open(dir.path()).unwrap();
            store.reserve_serial(&intent).unwrap();
            store.commit().unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert!(store.serial(&intent.serial).unwrap().is_some());
    }
}
