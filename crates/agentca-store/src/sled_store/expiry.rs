//! Certificates by expiry, so that expired ones can be forgotten without reading every record.
//!
//! The `cert_expiry` tree holds one key per stored certificate: its `notAfter` (Unix seconds,
//! big-endian, sign bit flipped so that the byte order is the time order) then its serial. The
//! value names the index entries the certificate has elsewhere (agent ID, NUL, key SHA-256), so
//! a purge interrupted after the record went can still remove them from this entry alone.
//!
//! A purge removes, in this order: the serials' entries and their revocation entries (in one
//! sled transaction per batch, so a racing revocation either happens first and is seen, or
//! finds nothing),
//! then the DER and the agent and key index entries (readers go through the serial's entry and
//! skip index entries without one), and last the expiry entry, so a later pass finishes any
//! interrupted one.

use sled::Transactional;
use time::OffsetDateTime;

use super::{SledStore, abort, agent_index_key, backend, decode, flatten, key_index_key};
use crate::{CertificateRecord, Result, Serial, SerialEntry, StoreError};

/// `meta` key set once the expiry index covers every certificate of the store.
const INDEX_BUILT_KEY: &[u8] = b"cert_expiry_built";

/// Name of the tree.
pub(super) const TREE: &str = "cert_expiry";

const TIME_LEN: usize = 8;

/// Certificates decided in one sled transaction: a transaction per certificate cost about
/// 0.1 ms each.
const BATCH: usize = 256;

fn time_bytes(at: OffsetDateTime) -> [u8; TIME_LEN] {
    // Flipping the sign bit orders negative times before positive ones as bytes.
    (at.unix_timestamp().cast_unsigned() ^ (1 << 63)).to_be_bytes()
}

pub(super) fn expiry_key(not_after: OffsetDateTime, serial: &Serial) -> Vec<u8> {
    let mut key = Vec::with_capacity(TIME_LEN + Serial::LEN);
    key.extend_from_slice(&time_bytes(not_after));
    key.extend_from_slice(serial.as_bytes());
    key
}

pub(super) fn expiry_value(record: &CertificateRecord) -> Vec<u8> {
    let agent = record.intent.agent_id.as_bytes();
    let key = record.intent.key_sha256.as_bytes();
    let mut value = Vec::with_capacity(agent.len() + 1 + key.len());
    value.extend_from_slice(agent);
    value.push(0);
    value.extend_from_slice(key);
    value
}

/// One entry of the index, decoded.
struct Expiring {
    key: sled::IVec,
    serial: Serial,
    agent_id: String,
    key_sha256: String,
}

fn decode_entry(key: sled::IVec, value: &[u8]) -> Result<Expiring> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        key: hex::encode(&key),
        reason: reason.into(),
    };
    let serial = key
        .get(TIME_LEN..)
        .and_then(|b| <[u8; Serial::LEN]>::try_from(b).ok())
        .and_then(Serial::from_bytes)
        .ok_or_else(|| corrupt("bad expiry index key"))?;
    let text = std::str::from_utf8(value).map_err(|_| corrupt("expiry index value not UTF-8"))?;
    let (agent_id, key_sha256) = text
        .split_once('\0')
        .ok_or_else(|| corrupt("bad expiry index value"))?;
    Ok(Expiring {
        serial,
        agent_id: agent_id.to_owned(),
        key_sha256: key_sha256.to_owned(),
        key,
    })
}

impl SledStore {
    /// Indexes a certificate by expiry; part of recording it.
    pub(super) fn index_expiry(&self, record: &CertificateRecord) -> Result<()> {
        self.expiry
            .insert(
                expiry_key(record.intent.not_after, &record.intent.serial),
                expiry_value(record),
            )
            .map_err(backend)?;
        Ok(())
    }

    /// Builds the index for a store written before it existed; once per store. Runs at open,
    /// before anything else can write.
    pub(super) fn build_expiry_index_once(&self) -> Result<()> {
        if self.meta.contains_key(INDEX_BUILT_KEY).map_err(backend)? {
            return Ok(());
        }
        for kv in self.serials.iter() {
            let (k, v) = kv.map_err(backend)?;
            if let SerialEntry::Issued(record) = decode(&hex::encode(&k), &v)? {
                self.index_expiry(&record)?;
            }
        }
        self.meta
            .insert(INDEX_BUILT_KEY, &[][..])
            .map_err(backend)?;
        Ok(())
    }

    pub(super) fn purge_expired(
        &self,
        expired_before: OffsetDateTime,
        revoked_expired_before: OffsetDateTime,
        limit: usize,
    ) -> Result<u64> {
        let end = time_bytes(expired_before);
        let mut forgotten = 0u64;
        let mut done = 0usize;
        let mut batch = Vec::with_capacity(BATCH);
        let mut entries = self.expiry.range(..&end[..]);
        loop {
            batch.clear();
            for kv in entries.by_ref() {
                let (k, v) = kv.map_err(backend)?;
                batch.push(decode_entry(k, &v)?);
                if batch.len() == BATCH || done + batch.len() >= limit {
                    break;
                }
            }
            if batch.is_empty() {
                return Ok(forgotten);
            }
            let fates = self.forget_batch(&batch, revoked_expired_before)?;
            for (entry, fate) in batch.iter().zip(fates) {
                match fate {
                    Forget::Kept => continue,
                    Forget::Gone => {}
                    Forget::Forgotten => forgotten += 1,
                }
                done += 1;
                self.der.remove(entry.serial.as_bytes()).map_err(backend)?;
                self.by_agent
                    .remove(agent_index_key(&entry.agent_id, &entry.serial))
                    .map_err(backend)?;
                self.by_key
                    .remove(key_index_key(&entry.key_sha256, &entry.serial))
                    .map_err(backend)?;
                self.expiry.remove(&entry.key).map_err(backend)?;
            }
            if done >= limit {
                return Ok(forgotten);
            }
        }
    }

    /// Removes the serials' entries (and their revocation entries) unless they must stay, in
    /// one transaction; returns what became of each.
    fn forget_batch(
        &self,
        batch: &[Expiring],
        revoked_expired_before: OffsetDateTime,
    ) -> Result<Vec<Forget>> {
        let result = (&self.serials, &self.revoked).transaction(|(s, r)| {
            let mut fates = Vec::with_capacity(batch.len());
            for entry in batch {
                let serial = &entry.serial;
                let Some(v) = s.get(serial.as_bytes())? else {
                    fates.push(Forget::Gone);
                    continue;
                };
                let record = match decode::<SerialEntry>(&serial.to_hex(), &v) {
                    Ok(SerialEntry::Issued(record)) => record,
                    // A reservation is never indexed; one here would be a bug. Keep it.
                    Ok(SerialEntry::Reserved(_)) => {
                        fates.push(Forget::Kept);
                        continue;
                    }
                    Err(e) => return abort(e),
                };
                if record.revocation.is_some() {
                    if record.intent.not_after >= revoked_expired_before {
                        fates.push(Forget::Kept);
                        continue;
                    }
                    r.remove(serial.as_bytes())?;
                }
                s.remove(serial.as_bytes())?;
                fates.push(Forget::Forgotten);
            }
            Ok(fates)
        });
        flatten(result)
    }
}

/// What became of one certificate in a purge.
#[derive(Clone, Copy)]
enum Forget {
    /// Removed now.
    Forgotten,
    /// Already removed by an interrupted pass; its leftovers go now.
    Gone,
    /// Stays (revoked and still due on a CRL).
    Kept,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;
    use crate::battery::{intent, issue, now};

    fn expired(n: u64) -> crate::IssuanceIntent {
        let mut i = intent(n);
        i.not_after = now() - time::Duration::days(2);
        i
    }

    #[test]
    fn a_store_from_before_the_index_gets_it_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            issue(&store, expired(1));
            issue(&store, intent(2));
            // As a store written before the index existed.
            store.expiry.clear().unwrap();
            store.meta.remove(INDEX_BUILT_KEY).unwrap();
            store.commit().unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.expiry.len(), 2);
        let cutoff = now() - time::Duration::days(1);
        assert_eq!(store.purge_certificates(cutoff, cutoff, 10).unwrap(), 1);
        assert!(store.serial(&expired(1).serial).unwrap().is_none());
        assert!(store.serial(&intent(2).serial).unwrap().is_some());
    }

    #[test]
    fn an_interrupted_purge_is_finished_by_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let record = issue(&store, expired(3));
        let serial = record.intent.serial;
        // A pass that died right after removing the serial's entry.
        store.serials.remove(serial.as_bytes()).unwrap();
        assert_eq!(store.by_agent.len(), 1);
        let cutoff = now() - time::Duration::days(1);
        // Already gone, so not counted; its leftovers go.
        assert_eq!(store.purge_certificates(cutoff, cutoff, 10).unwrap(), 0);
        for tree in [&store.der, &store.by_agent, &store.by_key, &store.expiry] {
            assert!(tree.is_empty());
        }
    }

    #[test]
    fn keys_sort_in_time_order_across_the_epoch() {
        let serial = Serial::from_bytes([7; Serial::LEN]).unwrap();
        let times = [-86_400i64, -1, 0, 1, 1_800_000_000, 4_000_000_000];
        let keys: Vec<Vec<u8>> = times
            .iter()
            .map(|t| expiry_key(OffsetDateTime::from_unix_timestamp(*t).unwrap(), &serial))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }
}
