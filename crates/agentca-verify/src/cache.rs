//! The OCSP answer cache: believed answers per (issuer, serial), kept until the answer's
//! nextUpdate or a maximum age, whichever comes first, in a bounded number of entries.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use time::{Duration, OffsetDateTime};

use crate::ocsp::Answer;

/// (SHA-256 of the issuer's key bits, serial INTEGER content bytes).
pub(crate) type Key = ([u8; 32], Vec<u8>);

#[derive(Debug)]
pub(crate) struct Cache {
    capacity: usize,
    max_age: Duration,
    entries: Mutex<HashMap<Key, Entry>>,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    answer: Answer,
    stored_at: OffsetDateTime,
    fresh_until: OffsetDateTime,
}

/// A fresh cached answer, and whether it is old enough to be refreshed in the background.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hit {
    pub(crate) answer: Answer,
    pub(crate) refresh_due: bool,
}

impl Cache {
    pub(crate) fn new(capacity: usize, max_age: Duration) -> Self {
        Self {
            capacity: capacity.max(1),
            max_age,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<Key, Entry>> {
        // A panic while holding the lock cannot leave a map half-updated in a way that
        // matters: every entry is inserted or removed whole.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The answer for `key` if it is still fresh at `now`; stale entries are dropped.
    pub(crate) fn lookup(&self, key: &Key, now: OffsetDateTime) -> Option<Hit> {
        let mut entries = self.entries();
        let entry = *entries.get(key)?;
        if now >= entry.fresh_until || now >= entry.answer.next_update {
            entries.remove(key);
            return None;
        }
        // Past half of its life an answer is refreshed, so a busy entry never goes stale.
        let half = (entry.fresh_until - entry.stored_at) / 2;
        Some(Hit {
            answer: entry.answer,
            refresh_due: now >= entry.stored_at + half,
        })
    }

    /// Keeps `answer` for `key`, fetched at `now`. When full, expired entries go first, then
    /// the entry that would expire soonest.
    pub(crate) fn insert(&self, key: Key, answer: Answer, now: OffsetDateTime) {
        let fresh_until = answer
            .next_update
            .min(crate::clock::later(now, self.max_age));
        if fresh_until <= now {
            return;
        }
        let mut entries = self.entries();
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, e| e.fresh_until > now);
            if entries.len() >= self.capacity
                && let Some(soonest) = entries
                    .iter()
                    .min_by_key(|(_, e)| e.fresh_until)
                    .map(|(k, _)| k.clone())
            {
                entries.remove(&soonest);
            }
        }
        entries.insert(
            key,
            Entry {
                answer,
                stored_at: now,
                fresh_until,
            },
        );
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries().len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ocsp::AnswerStatus;

    fn t(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + secs).unwrap()
    }

    fn answer(next_update: i64) -> Answer {
        Answer {
            status: AnswerStatus::Good,
            this_update: t(0),
            next_update: t(next_update),
        }
    }

    fn key(n: u8) -> Key {
        ([n; 32], vec![n])
    }

    #[test]
    fn fresh_until_next_update_or_max_age() {
        let cache = Cache::new(10, Duration::seconds(100));
        cache.insert(key(1), answer(50), t(0));
        cache.insert(key(2), answer(1000), t(0));
        assert!(cache.lookup(&key(1), t(49)).is_some());
        assert!(cache.lookup(&key(1), t(50)).is_none(), "past nextUpdate");
        assert!(cache.lookup(&key(2), t(99)).is_some());
        assert!(
            cache.lookup(&key(2), t(100)).is_none(),
            "past the maximum age"
        );
        assert_eq!(cache.len(), 0, "stale entries are dropped");
    }

    #[test]
    fn refresh_is_due_past_half_life() {
        let cache = Cache::new(10, Duration::seconds(100));
        cache.insert(key(1), answer(1000), t(0));
        assert!(!cache.lookup(&key(1), t(49)).unwrap().refresh_due);
        assert!(cache.lookup(&key(1), t(50)).unwrap().refresh_due);
    }

    #[test]
    fn bounded_size_evicts_expired_then_soonest() {
        let cache = Cache::new(3, Duration::seconds(1000));
        cache.insert(key(1), answer(10), t(0));
        cache.insert(key(2), answer(500), t(0));
        cache.insert(key(3), answer(300), t(0));
        // Full; key 1 has expired by t(20).
        cache.insert(key(4), answer(900), t(20));
        assert_eq!(cache.len(), 3);
        assert!(cache.lookup(&key(1), t(20)).is_none());
        // Full and nothing expired: key 3 expires soonest.
        cache.insert(key(5), answer(900), t(21));
        assert_eq!(cache.len(), 3);
        assert!(cache.lookup(&key(3), t(21)).is_none());
        assert!(cache.lookup(&key(2), t(21)).is_some());
        // Replacing an entry never evicts another.
        cache.insert(key(2), answer(950), t(22));
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn an_answer_already_past_its_next_update_is_not_kept() {
        let cache = Cache::new(3, Duration::seconds(1000));
        cache.insert(key(1), answer(10), t(10));
        assert_eq!(cache.len(), 0);
    }
}
