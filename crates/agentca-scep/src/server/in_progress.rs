//! Transactions being answered right now, so that two copies of one request arriving together
//! (a client retrying before its first try was answered) issue one certificate: the second
//! is refused while the first is under way, and a later retry finds the transaction record.
//! Across several CA nodes the store's transaction record is the arbiter instead: the loser's
//! certificate is issued but its record is refused, and it gets a FAILURE.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Debug, Default)]
pub(super) struct InProgress {
    claimed: Arc<Mutex<HashSet<String>>>,
}

/// Releases its claim when dropped.
#[derive(Debug)]
pub(super) struct Guard {
    claimed: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl InProgress {
    /// Claims a request key; `None` if it is already claimed.
    pub(super) fn claim(&self, request_key: &str) -> Option<Guard> {
        let key = request_key.to_owned();
        let mut claimed = self.claimed.lock().unwrap_or_else(PoisonError::into_inner);
        claimed.insert(key.clone()).then(|| Guard {
            claimed: self.claimed.clone(),
            key,
        })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.claimed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_excludes_its_copy_until_released() {
        let in_progress = InProgress::default();
        let first = in_progress.claim("k").unwrap();
        assert!(in_progress.claim("k").is_none());
        assert!(in_progress.claim("j").is_some());
        drop(first);
        assert!(in_progress.claim("k").is_some());
    }
}
