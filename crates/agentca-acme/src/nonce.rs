//! Anti-replay nonces (RFC 8555 §6.5).
//!
//! Every response carries a fresh `Replay-Nonce`; every JWS must carry one that this server
//! issued, that has not been used, and that is not too old. A nonce is 128 random bits, so it
//! cannot be guessed; the set of outstanding nonces is bounded (oldest dropped first), so a
//! client fetching nonces it never uses cannot grow memory. Nonces do not survive a restart,
//! which is fail-safe: a client gets `badNonce` and retries with the fresh nonce from the error
//! response (RFC 8555 §6.5 requires clients to).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// How long a nonce stays valid.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// How many unused nonces are kept at most.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// Issues and redeems nonces; safe to share between request handlers.
#[derive(Debug)]
pub struct NonceService {
    inner: Mutex<Outstanding>,
    lifetime: Duration,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Outstanding {
    /// Nonce → when it was issued.
    issued: HashMap<[u8; 16], Instant>,
    /// Issue order, for dropping the oldest when full. May hold nonces already redeemed.
    order: VecDeque<[u8; 16]>,
}

/// Why a nonce was refused; all map to `badNonce`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NonceError {
    /// No `nonce` in the protected header.
    #[error("the JWS has no nonce")]
    Missing,
    /// Not the shape of a nonce this server issues.
    #[error("the nonce is malformed")]
    Malformed,
    /// Never issued, already used, expired, or dropped.
    #[error("the nonce is unknown, used or expired")]
    Invalid,
}

impl NonceError {
    /// The ACME problem type suffix.
    pub fn problem_type(&self) -> &'static str {
        "badNonce"
    }
}

impl Default for NonceService {
    fn default() -> Self {
        Self::new(DEFAULT_LIFETIME, DEFAULT_CAPACITY)
    }
}

impl NonceService {
    /// A service whose nonces live `lifetime`, keeping at most `capacity` outstanding.
    pub fn new(lifetime: Duration, capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Outstanding::default()),
            lifetime,
            capacity: capacity.max(1),
        }
    }

    /// A fresh nonce for a `Replay-Nonce` header.
    pub fn issue(&self) -> String {
        let mut nonce = [0u8; 16];
        // Fail closed if the system RNG ever fails: hand out a value of the wrong length, which
        // `redeem` refuses, never a predictable nonce that would be accepted.
        if aws_lc_rs::rand::fill(&mut nonce).is_err() {
            return URL_SAFE_NO_PAD.encode([0u8; 17]);
        }
        let mut inner = self.lock();
        let now = Instant::now();
        inner.issued.insert(nonce, now);
        inner.order.push_back(nonce);
        while inner.issued.len() > self.capacity || inner.order.len() > self.capacity * 2 {
            match inner.order.pop_front() {
                Some(old) => {
                    inner.issued.remove(&old);
                }
                None => break,
            }
        }
        URL_SAFE_NO_PAD.encode(nonce)
    }

    /// Redeems a nonce: succeeds once per issued nonce, within its lifetime.
    pub fn redeem(&self, nonce: Option<&str>) -> Result<(), NonceError> {
        let nonce = nonce.ok_or(NonceError::Missing)?;
        // 16 bytes are 22 base64url characters; anything else was not issued here.
        if nonce.len() != 22 {
            return Err(NonceError::Malformed);
        }
        let bytes: [u8; 16] = URL_SAFE_NO_PAD
            .decode(nonce)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or(NonceError::Malformed)?;
        let issued_at = self
            .lock()
            .issued
            .remove(&bytes)
            .ok_or(NonceError::Invalid)?;
        if issued_at.elapsed() > self.lifetime {
            return Err(NonceError::Invalid);
        }
        Ok(())
    }

    /// How many nonces are outstanding (for metrics and tests).
    pub fn outstanding(&self) -> usize {
        self.lock().issued.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Outstanding> {
        // Plain maps: a panic elsewhere cannot leave them inconsistent.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn a_nonce_is_good_exactly_once() {
        let service = NonceService::default();
        let nonce = service.issue();
        assert_eq!(nonce.len(), 22);
        assert!(!nonce.contains('='));
        service.redeem(Some(&nonce)).unwrap();
        assert_eq!(service.redeem(Some(&nonce)), Err(NonceError::Invalid));
    }

    #[test]
    fn nonces_are_unique() {
        let service = NonceService::default();
        let set: std::collections::HashSet<String> = (0..10_000).map(|_| service.issue()).collect();
        assert_eq!(set.len(), 10_000);
    }

    #[test]
    fn foreign_missing_and_malformed_nonces_are_refused() {
        let service = NonceService::default();
        assert_eq!(service.redeem(None), Err(NonceError::Missing));
        for bad in [
            "",
            "abc",
            "AAAAAAAAAAAAAAAAAAAAAA==",
            "!!!!!!!!!!!!!!!!!!!!!!",
            &"A".repeat(5000),
        ] {
            assert!(service.redeem(Some(bad)).is_err(), "{bad:?}");
        }
        // Well-formed but never issued.
        assert_eq!(
            service.redeem(Some("AAAAAAAAAAAAAAAAAAAAAA")),
            Err(NonceError::Invalid)
        );
        // Another server's nonce.
        let other = NonceService::default().issue();
        assert_eq!(service.redeem(Some(&other)), Err(NonceError::Invalid));
    }

    #[test]
    fn expired_nonces_are_refused() {
        let service = NonceService::new(Duration::from_millis(20), 10);
        let nonce = service.issue();
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(service.redeem(Some(&nonce)), Err(NonceError::Invalid));
    }

    #[test]
    fn memory_is_bounded_and_the_oldest_go_first() {
        let service = NonceService::new(DEFAULT_LIFETIME, 100);
        let first = service.issue();
        let mut last = String::new();
        for _ in 0..10_000 {
            last = service.issue();
        }
        assert!(service.outstanding() <= 100);
        assert_eq!(service.redeem(Some(&first)), Err(NonceError::Invalid));
        service.redeem(Some(&last)).unwrap();
        // Redeemed nonces leave the order queue bounded too.
        for _ in 0..10_000 {
            let n = service.issue();
            service.redeem(Some(&n)).unwrap();
        }
        assert!(service.lock().order.len() <= 200);
    }

    #[test]
    fn sixteen_concurrent_uses_of_one_nonce_have_one_winner() {
        let service = NonceService::default();
        let nonce = service.issue();
        let wins = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| {
                    if service.redeem(Some(&nonce)).is_ok() {
                        wins.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(wins.into_inner(), 1);
    }
}
