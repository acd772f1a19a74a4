//! Paths already verified. A relying service sees the same agent certificate on every call;
//! building its path again costs two signature verifications (about 100 µs with P-256), far
//! more than the rest of a check with a cached OCSP answer. A leaf presented with the same
//! intermediates, for the same usage, to the same verifier (same anchors, same identity
//! policy) is accepted again without them while every certificate of the path found the first
//! time is still within its validity: that path is then still a valid one, which is all path
//! building asks for. Only successes are kept, and only for checks without a CRL (whose answer
//! changes with the CRL); revocation is checked on every call as before.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::chain::{Checked, Usage};

/// SHA-256 over the usage and every certificate presented, each with its length.
pub(crate) type PathKey = [u8; 32];

#[derive(Debug)]
pub(crate) struct PathCache {
    capacity: usize,
    entries: Mutex<HashMap<PathKey, Entry>>,
}

#[derive(Debug)]
struct Entry {
    checked: Checked,
    /// The latest notBefore and the earliest notAfter of the path's certificates (the anchor
    /// aside, whose validity path building does not consider either).
    valid_from: OffsetDateTime,
    valid_until: OffsetDateTime,
}

/// When every certificate of a verified path is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) from: OffsetDateTime,
    pub(crate) until: OffsetDateTime,
}

impl PathCache {
    /// A cache of at most `capacity` paths; 0 keeps none.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.capacity > 0
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<PathKey, Entry>> {
        // Entries are inserted and removed whole: a panic elsewhere leaves nothing half-done.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn key(
        usage: Usage,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> PathKey {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(&[match usage {
            Usage::ClientAuth => 1,
            Usage::ServerAuth => 2,
        }]);
        for cert in std::iter::once(leaf).chain(intermediates) {
            // Lengths first, so that no two lists of certificates hash the same bytes.
            ctx.update(&(cert.len() as u64).to_be_bytes());
            ctx.update(cert);
        }
        let mut key = [0; 32];
        key.copy_from_slice(ctx.finish().as_ref());
        key
    }

    /// The checked leaf, when this path was verified before and is still valid at `now`
    /// (both ends included, as in path building).
    pub(crate) fn lookup(&self, key: &PathKey, now: OffsetDateTime) -> Option<Checked> {
        let mut entries = self.entries();
        let entry = entries.get(key)?;
        if now > entry.valid_until {
            entries.remove(key);
            return None;
        }
        (now >= entry.valid_from).then(|| entry.checked.clone())
    }

    /// Keeps a path verified at `now`. When full, paths no longer valid go first, then the
    /// one that expires soonest.
    pub(crate) fn insert(
        &self,
        key: PathKey,
        checked: Checked,
        window: Window,
        now: OffsetDateTime,
    ) {
        if !self.enabled() || window.until < now {
            return;
        }
        let mut entries = self.entries();
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, e| e.valid_until >= now);
            if entries.len() >= self.capacity
                && let Some(soonest) = entries
                    .iter()
                    .min_by_key(|(_, e)| e.valid_until)
                    .map(|(k, _)| *k)
            {
                entries.remove(&soonest);
            }
        }
        entries.insert(
            key,
            Entry {
                checked,
                valid_from: window.from,
                valid_until: window.until,
            },
        );
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries().len()
    }
}
