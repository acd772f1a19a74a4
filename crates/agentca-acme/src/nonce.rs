//! Anti-replay nonces (RFC 8555 §6.5).
//!
//! Every response carries a fresh `Replay-Nonce`; every JWS must carry one that this CA
//! issued, that has not been used, and that is not too old. Two ways to keep that promise:
//!
//! - **One node** ([`NonceService::local`]): a nonce is 128 random bits, remembered in memory
//!   until used; the set is bounded (oldest dropped first), so a client fetching nonces it
//!   never uses cannot grow memory. Nonces do not survive a restart, which is fail-safe: a
//!   client gets `badNonce` and retries with the fresh nonce from the error response (RFC 8555
//!   §6.5 requires clients to).
//! - **Several nodes on one store** ([`NonceService::shared`]): a nonce is 128 random bits,
//!   the time it was issued, and a MAC under a key every node derives from the CA's
//!   token-sealing secret, so any node can tell its nodes' nonces from forgeries without
//!   asking anyone. Single use across nodes comes from the store: redeeming inserts the nonce
//!   into a shared table, and only the first insert wins. Nothing is kept for nonces issued
//!   and never used, and forged or expired nonces are refused before the store is touched.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentca_core::store::Store;
use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use time::OffsetDateTime;

/// How long a nonce stays valid on a single node.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// How long a nonce stays valid across nodes: every used one is kept in the store until then.
pub const SHARED_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// How many unused nonces a single node keeps at most.
pub const DEFAULT_CAPACITY: usize = 100_000;
/// How far ahead of this node's clock another node's clock may be.
const CLOCK_SKEW: u64 = 30;
/// Bytes of a shared nonce: random id, issue time (Unix seconds, big-endian), MAC.
const SHARED_LEN: usize = 16 + 8 + 16;
/// Its base64url length (unpadded).
const SHARED_TEXT_LEN: usize = (SHARED_LEN * 4).div_ceil(3);
/// Domain separation of the MAC.
const MAC_LABEL: &[u8] = b"agentca acme nonce v1";

/// Issues and redeems nonces; safe to share between request handlers.
pub struct NonceService {
    mode: Mode,
    lifetime: Duration,
}

enum Mode {
    Local {
        inner: Mutex<Outstanding>,
        capacity: usize,
    },
    Shared {
        // Boxed: an HMAC key is large, and the local mode is the common one.
        key: Box<hmac::Key>,
        store: Arc<dyn Store>,
    },
}

impl std::fmt::Debug for NonceService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.mode {
            Mode::Local { .. } => "local",
            Mode::Shared { .. } => "shared",
        };
        f.debug_struct("NonceService")
            .field("mode", &mode)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Outstanding {
    /// Nonce → when it was issued.
    issued: HashMap<[u8; 16], Instant>,
    /// Issue order, for dropping the oldest when full. May hold nonces already redeemed.
    order: VecDeque<[u8; 16]>,
}

/// What is left to do for a nonce that passed [`NonceService::check`].
#[derive(Debug)]
#[must_use = "a shared nonce is not spent until it is recorded"]
pub enum Redemption {
    /// Spent already (a single node's nonce).
    Done,
    /// Valid, to be recorded in the shared store; only the first record wins.
    Record(PendingNonce),
}

/// A shared nonce that passed its checks, not yet spent.
#[derive(Debug)]
pub struct PendingNonce {
    /// Its random id, the key of the store's record.
    pub id: [u8; 16],
    /// When its record may go (after that, its age alone refuses it).
    pub expires_at: OffsetDateTime,
}

/// The answer of the store to an attempt to spend a nonce.
pub(crate) fn fresh(
    recorded: Result<bool, agentca_core::store::StoreError>,
) -> Result<(), NonceError> {
    match recorded {
        Ok(true) => Ok(()),
        Ok(false) => Err(NonceError::Invalid),
        Err(e) => {
            tracing::error!(error = %e, "recording a used nonce failed");
            Err(NonceError::Unavailable)
        }
    }
}

/// Why a nonce was refused.
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
    /// The store that records used nonces could not be reached: the nonce is neither accepted
    /// nor spent (answered `serverInternal`, to be retried, not `badNonce`).
    #[error("the nonce could not be checked")]
    Unavailable,
}

impl Default for NonceService {
    fn default() -> Self {
        Self::local(DEFAULT_LIFETIME, DEFAULT_CAPACITY)
    }
}

impl NonceService {
    /// A single node's service whose nonces live `lifetime`, keeping at most `capacity`
    /// outstanding.
    pub fn local(lifetime: Duration, capacity: usize) -> Self {
        Self {
            mode: Mode::Local {
                inner: Mutex::new(Outstanding::default()),
                capacity: capacity.max(1),
            },
            lifetime,
        }
    }

    /// A service for nodes sharing `store`: nonces authenticated with `key` (the same on every
    /// node) and redeemed in the store.
    pub fn shared(key: hmac::Key, store: Arc<dyn Store>, lifetime: Duration) -> Self {
        Self {
            mode: Mode::Shared {
                key: Box::new(key),
                store,
            },
            lifetime,
        }
    }

    /// A fresh nonce for a `Replay-Nonce` header.
    pub fn issue(&self) -> String {
        let mut id = [0u8; 16];
        // Fail closed if the system RNG ever fails: hand out a value of the wrong length, which
        // `redeem` refuses, never a predictable nonce that would be accepted.
        if aws_lc_rs::rand::fill(&mut id).is_err() {
            return URL_SAFE_NO_PAD.encode([0u8; 17]);
        }
        match &self.mode {
            Mode::Local { inner, capacity } => {
                let mut inner = lock(inner);
                inner.issued.insert(id, Instant::now());
                inner.order.push_back(id);
                while inner.issued.len() > *capacity || inner.order.len() > capacity * 2 {
                    match inner.order.pop_front() {
                        Some(old) => {
                            inner.issued.remove(&old);
                        }
                        None => break,
                    }
                }
                URL_SAFE_NO_PAD.encode(id)
            }
            Mode::Shared { key, .. } => {
                let issued = unix_now().to_be_bytes();
                let mut nonce = [0u8; SHARED_LEN];
                nonce[..16].copy_from_slice(&id);
                nonce[16..24].copy_from_slice(&issued);
                nonce[24..].copy_from_slice(&mac(key, &id, &issued).as_ref()[..16]);
                URL_SAFE_NO_PAD.encode(nonce)
            }
        }
    }

    /// Redeems a nonce: succeeds once per issued nonce, within its lifetime.
    pub fn redeem(&self, nonce: Option<&str>) -> Result<(), NonceError> {
        match self.check(nonce)? {
            Redemption::Done => Ok(()),
            Redemption::Record(pending) => self.record(&pending),
        }
    }

    /// The first half of [`NonceService::redeem`]: a nonce of this CA, not too old. A single
    /// node's nonce is spent here; a shared one is spent only once it is recorded in the store
    /// ([`NonceService::record`], or together with another read of the request).
    pub fn check(&self, nonce: Option<&str>) -> Result<Redemption, NonceError> {
        let nonce = nonce.ok_or(NonceError::Missing)?;
        match &self.mode {
            Mode::Local { inner, .. } => {
                let id: [u8; 16] = decode(nonce, 22)?;
                let issued_at = lock(inner).issued.remove(&id).ok_or(NonceError::Invalid)?;
                if issued_at.elapsed() > self.lifetime {
                    return Err(NonceError::Invalid);
                }
                Ok(Redemption::Done)
            }
            Mode::Shared { key, .. } => {
                let bytes: [u8; SHARED_LEN] = decode(nonce, SHARED_TEXT_LEN)?;
                let (id, rest) = bytes.split_at(16);
                let (issued, tag) = rest.split_at(8);
                let expected = mac(key, id, issued);
                aws_lc_rs::constant_time::verify_slices_are_equal(&expected.as_ref()[..16], tag)
                    .map_err(|_| NonceError::Invalid)?;
                let issued =
                    u64::from_be_bytes(issued.try_into().map_err(|_| NonceError::Malformed)?);
                let now = unix_now();
                let lifetime = self.lifetime.as_secs();
                if issued > now.saturating_add(CLOCK_SKEW) || now.saturating_sub(issued) > lifetime
                {
                    return Err(NonceError::Invalid);
                }
                let id: [u8; 16] = id.try_into().map_err(|_| NonceError::Malformed)?;
                let expires_at = i64::try_from(issued.saturating_add(lifetime + CLOCK_SKEW))
                    .ok()
                    .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
                    .ok_or(NonceError::Malformed)?;
                Ok(Redemption::Record(PendingNonce { id, expires_at }))
            }
        }
    }

    /// Spends a checked shared nonce in the store.
    pub fn record(&self, pending: &PendingNonce) -> Result<(), NonceError> {
        let Mode::Shared { store, .. } = &self.mode else {
            return Ok(());
        };
        fresh(store.redeem_nonce(&pending.id, pending.expires_at))
    }

    /// How many nonces are outstanding on this node (for metrics and tests; 0 when shared,
    /// where nothing is kept for unused nonces).
    pub fn outstanding(&self) -> usize {
        match &self.mode {
            Mode::Local { inner, .. } => lock(inner).issued.len(),
            Mode::Shared { .. } => 0,
        }
    }

    #[cfg(test)]
    fn lock(&self) -> std::sync::MutexGuard<'_, Outstanding> {
        match &self.mode {
            Mode::Local { inner, .. } => lock(inner),
            Mode::Shared { .. } => unreachable!("tests lock local services only"),
        }
    }
}

fn lock(inner: &Mutex<Outstanding>) -> std::sync::MutexGuard<'_, Outstanding> {
    // Plain maps: a panic elsewhere cannot leave them inconsistent.
    inner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Decodes a nonce of exactly `text_len` base64url characters into `N` bytes.
fn decode<const N: usize>(nonce: &str, text_len: usize) -> Result<[u8; N], NonceError> {
    // Length first: anything else was not issued here, and it bounds the decoding work.
    if nonce.len() != text_len {
        return Err(NonceError::Malformed);
    }
    URL_SAFE_NO_PAD
        .decode(nonce)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or(NonceError::Malformed)
}

fn mac(key: &hmac::Key, id: &[u8], issued: &[u8]) -> hmac::Tag {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(MAC_LABEL);
    ctx.update(id);
    ctx.update(issued);
    ctx.sign()
}

fn unix_now() -> u64 {
    u64::try_from(OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0)
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
        let service = NonceService::local(Duration::from_millis(20), 10);
        let nonce = service.issue();
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(service.redeem(Some(&nonce)), Err(NonceError::Invalid));
    }

    #[test]
    fn memory_is_bounded_and_the_oldest_go_first() {
        let service = NonceService::local(DEFAULT_LIFETIME, 100);
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

    fn shared_pair() -> (tempfile::TempDir, NonceService, NonceService) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(agentca_core::store::SledStore::open(dir.path()).unwrap());
        let key = || hmac::Key::new(hmac::HMAC_SHA256, &[42u8; 32]);
        let a = NonceService::shared(key(), store.clone(), SHARED_LIFETIME);
        let b = NonceService::shared(key(), store, SHARED_LIFETIME);
        (dir, a, b)
    }

    #[test]
    fn a_shared_nonce_is_good_once_on_any_node() {
        let (_dir, a, b) = shared_pair();
        let nonce = a.issue();
        assert_eq!(nonce.len(), SHARED_TEXT_LEN);
        b.redeem(Some(&nonce)).unwrap();
        assert_eq!(a.redeem(Some(&nonce)), Err(NonceError::Invalid));
        assert_eq!(b.redeem(Some(&nonce)), Err(NonceError::Invalid));
        let set: std::collections::HashSet<String> = (0..1000).map(|_| a.issue()).collect();
        assert_eq!(set.len(), 1000);
        assert_eq!(a.outstanding(), 0);
    }

    #[test]
    fn shared_nonces_refuse_forgeries_other_keys_and_old_ones() {
        let (dir, a, _b) = shared_pair();
        let nonce = a.issue();
        let mut bytes: [u8; SHARED_LEN] = decode(&nonce, SHARED_TEXT_LEN).unwrap();
        // Any changed bit: the id, the time, the tag.
        for i in [0, 17, 30] {
            let mut forged = bytes;
            forged[i] ^= 1;
            assert_eq!(
                a.redeem(Some(&URL_SAFE_NO_PAD.encode(forged))),
                Err(NonceError::Invalid)
            );
        }
        // Another CA's key.
        let store: Arc<dyn Store> =
            Arc::new(agentca_core::store::SledStore::open(&dir.path().join("other")).unwrap());
        let other = NonceService::shared(
            hmac::Key::new(hmac::HMAC_SHA256, &[43u8; 32]),
            store,
            SHARED_LIFETIME,
        );
        assert_eq!(other.redeem(Some(&nonce)), Err(NonceError::Invalid));
        // A local nonce, a malformed one, none.
        let local = NonceService::default().issue();
        assert_eq!(a.redeem(Some(&local)), Err(NonceError::Malformed));
        assert_eq!(
            a.redeem(Some(&"A".repeat(5000))),
            Err(NonceError::Malformed)
        );
        assert_eq!(a.redeem(None), Err(NonceError::Missing));
        // Too old, and from too far in the future, with a valid MAC.
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[42u8; 32]);
        for issued in [
            unix_now() - SHARED_LIFETIME.as_secs() - 1,
            unix_now() + CLOCK_SKEW + 60,
        ] {
            let issued = issued.to_be_bytes();
            bytes[16..24].copy_from_slice(&issued);
            let tag = mac(&key, &bytes[..16], &issued);
            bytes[24..].copy_from_slice(&tag.as_ref()[..16]);
            assert_eq!(
                a.redeem(Some(&URL_SAFE_NO_PAD.encode(bytes))),
                Err(NonceError::Invalid)
            );
        }
        // The untouched original is still good.
        a.redeem(Some(&nonce)).unwrap();
    }

    #[test]
    fn concurrent_uses_of_a_shared_nonce_on_two_nodes_have_one_winner() {
        let (_dir, a, b) = shared_pair();
        let nonce = a.issue();
        let wins = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for i in 0..16 {
                let node = if i % 2 == 0 { &a } else { &b };
                let (nonce, wins) = (&nonce, &wins);
                s.spawn(move || {
                    if node.redeem(Some(nonce)).is_ok() {
                        wins.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(wins.into_inner(), 1);
    }
}
