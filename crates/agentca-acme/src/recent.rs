//! Certificates this node issued a moment ago, kept for the download that follows.
//!
//! A client fetches its certificate right after its finalize succeeds (RFC 8555 §7.4.2). An
//! issued certificate never changes, nor does the account whose order produced it, so the node
//! that recorded both can answer that download from memory instead of reading them back from
//! the store. Entries are bounded in number and in age: a later download, or one sent to
//! another node, reads the store, and the answer is the same either way.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use agentca_core::store::Serial;

/// How many certificates are kept: enough for every client of a busy node to download its
/// own (a few hundred finalizes in flight), small enough to be no memory at all (about 1 KiB
/// each).
const CAPACITY: usize = 1024;

/// How long one is kept: clients download at once, or after a poll of a second or two.
const MAX_AGE: Duration = Duration::from_secs(120);

/// The bounded map; see the module documentation.
#[derive(Debug)]
pub(crate) struct RecentCertificates {
    entries: Mutex<Entries>,
    capacity: usize,
    max_age: Duration,
}

#[derive(Debug, Default)]
struct Entries {
    by_serial: HashMap<Serial, Entry>,
    /// Serials oldest first, for eviction.
    order: VecDeque<Serial>,
}

#[derive(Debug)]
struct Entry {
    account_id: String,
    der: Arc<[u8]>,
    added: Instant,
}

impl Default for RecentCertificates {
    fn default() -> Self {
        Self::new(CAPACITY, MAX_AGE)
    }
}

impl RecentCertificates {
    fn new(capacity: usize, max_age: Duration) -> Self {
        Self {
            entries: Mutex::new(Entries::default()),
            capacity,
            max_age,
        }
    }

    /// Keeps a certificate that is durable in the store, with the account it belongs to.
    pub(crate) fn insert(&self, serial: Serial, account_id: &str, der: &[u8]) {
        // Nothing held here can be left half-updated by a panic, so a poisoned lock is usable.
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.by_serial.contains_key(&serial) {
            return;
        }
        while entries.order.len() >= self.capacity {
            let Some(oldest) = entries.order.pop_front() else {
                break;
            };
            entries.by_serial.remove(&oldest);
        }
        entries.order.push_back(serial);
        entries.by_serial.insert(
            serial,
            Entry {
                account_id: account_id.to_owned(),
                der: der.into(),
                added: Instant::now(),
            },
        );
    }

    /// The certificate `serial`, if it was kept, is young enough and belongs to `account_id`.
    /// `None` is no answer: the caller reads the store, which knows the rest.
    pub(crate) fn get(&self, serial: &Serial, account_id: &str) -> Option<Arc<[u8]>> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.by_serial.get(serial)?;
        (entry.added.elapsed() < self.max_age && entry.account_id == account_id)
            .then(|| entry.der.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serial(n: u8) -> Serial {
        let mut bytes = [0u8; Serial::LEN];
        bytes[0] = 1;
        bytes[15] = n;
        Serial::from_bytes(bytes).expect("a valid serial")
    }

    #[test]
    fn a_kept_certificate_is_given_only_to_its_account() {
        let recent = RecentCertificates::default();
        recent.insert(serial(1), "account-a", b"der one");
        assert_eq!(
            recent.get(&serial(1), "account-a").as_deref(),
            Some(&b"der one"[..])
        );
        assert_eq!(recent.get(&serial(1), "account-b"), None);
        assert_eq!(recent.get(&serial(2), "account-a"), None);
    }

    #[test]
    fn the_oldest_goes_first_and_the_bound_holds() {
        let recent = RecentCertificates::new(2, MAX_AGE);
        recent.insert(serial(1), "a", b"1");
        recent.insert(serial(2), "a", b"2");
        recent.insert(serial(3), "a", b"3");
        assert_eq!(recent.get(&serial(1), "a"), None);
        assert!(recent.get(&serial(2), "a").is_some());
        assert!(recent.get(&serial(3), "a").is_some());
        let entries = recent.entries.lock().expect("not poisoned");
        assert_eq!(entries.by_serial.len(), 2);
        assert_eq!(entries.order.len(), 2);
    }

    #[test]
    fn a_second_insert_of_a_serial_changes_nothing() {
        let recent = RecentCertificates::new(2, MAX_AGE);
        recent.insert(serial(1), "a", b"first");
        recent.insert(serial(1), "b", b"second");
        assert_eq!(recent.get(&serial(1), "a").as_deref(), Some(&b"first"[..]));
        assert_eq!(recent.get(&serial(1), "b"), None);
        assert_eq!(recent.entries.lock().expect("not poisoned").order.len(), 1);
    }

    #[test]
    fn an_old_entry_is_not_served() {
        let recent = RecentCertificates::new(2, Duration::ZERO);
        recent.insert(serial(1), "a", b"1");
        assert_eq!(recent.get(&serial(1), "a"), None);
    }
}
