//! Pre-signed OCSP responses, keyed by serial and CertID hash.
//!
//! A response is signed once, ahead of the requests for it, and served as bytes. The cache
//! only ever moves forward in what it asserts: a `revoked` answer is never replaced by a
//! `good` one, and once a serial is known to be revoked a `good` response signed from an
//! older read of the store (a priming or refresh job racing the revocation) is refused.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use agentca_core::ocsp::HashAlgorithm;
use agentca_core::store::Serial;
use axum::body::Bytes;
use axum::http::HeaderValue;
use prometheus_client::metrics::gauge::Gauge;
use time::OffsetDateTime;

use crate::headers;
use crate::split_body::SplitBody;

/// One signed response, with what the HTTP layer needs to serve it.
#[derive(Debug)]
pub(crate) struct CachedResponse {
    /// The DER `OCSPResponse` (without a nonce) as two parts: its own bytes, and the bytes
    /// shared by every response of its responder key, held once (see [`crate::split_body`]).
    body: SplitBody,
    /// Whether it says `revoked` (else `good`).
    pub(crate) revoked: bool,
    pub(crate) this_update: OffsetDateTime,
    pub(crate) next_update: OffsetDateTime,
    /// Which responder key signed it (bumped by each responder rotation).
    pub(crate) generation: u64,
    pub(crate) etag: HeaderValue,
    pub(crate) last_modified: HeaderValue,
    pub(crate) expires: HeaderValue,
}

impl CachedResponse {
    /// `der` is kept less its last bytes when they are `shared_tail`, which is kept by
    /// reference instead.
    pub(crate) fn new(
        der: Vec<u8>,
        shared_tail: &Bytes,
        revoked: bool,
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
        generation: u64,
    ) -> Self {
        let etag = headers::etag(&der);
        let body = match der.len().checked_sub(shared_tail.len()) {
            Some(own) if own > 0 && !shared_tail.is_empty() && der.ends_with(shared_tail) => {
                SplitBody::new(Bytes::copy_from_slice(&der[..own]), shared_tail.clone())
            }
            _ => SplitBody::whole(Bytes::from(der)),
        };
        Self {
            body,
            etag,
            last_modified: headers::http_date(this_update),
            expires: headers::http_date(next_update),
            revoked,
            this_update,
            next_update,
            generation,
        }
    }

    /// The whole DER response, to send.
    pub(crate) fn body(&self) -> SplitBody {
        self.body.clone()
    }
}

/// What the cache holds for one (serial, hash).
#[derive(Debug, Clone)]
struct Slot {
    response: Option<Arc<CachedResponse>>,
    /// The serial is known to be revoked: no `good` response may enter.
    revoked: bool,
    /// The certificate's notAfter, to drop slots of expired certificates.
    not_after: OffsetDateTime,
}

type Key = (Serial, HashAlgorithm);

/// A slot that wants a new signature, as handed to the signing jobs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Due {
    pub(crate) serial: Serial,
    pub(crate) hash: HashAlgorithm,
    pub(crate) not_after: OffsetDateTime,
}

const SHARDS: usize = 16;

/// The response cache, sharded so background signing jobs do not stall readers.
#[derive(Debug)]
pub(crate) struct ResponseCache {
    shards: [RwLock<HashMap<Key, Slot>>; SHARDS],
    /// How many slots hold a response, kept as they change (under their shard's write lock)
    /// so that reporting it does not walk every slot on each issuance. It is the metrics
    /// gauge itself: a copy set from a reading could be overwritten by an older reading.
    held: Gauge,
}

impl ResponseCache {
    #[cfg(test)]
    pub(crate) fn new() -> Self {
        Self::counting_into(Gauge::default())
    }

    /// A cache that keeps its count of held responses in `held`.
    pub(crate) fn counting_into(held: Gauge) -> Self {
        held.set(0);
        Self {
            shards: std::array::from_fn(|_| RwLock::new(HashMap::new())),
            held,
        }
    }

    fn shard(&self, serial: &Serial) -> &RwLock<HashMap<Key, Slot>> {
        // Serials are random: their last byte spreads them evenly.
        &self.shards[usize::from(serial.as_bytes()[Serial::LEN - 1]) % SHARDS]
    }

    /// The response for `serial` under `hash`, if one is held.
    pub(crate) fn get(&self, serial: &Serial, hash: HashAlgorithm) -> Option<Arc<CachedResponse>> {
        let shard = self
            .shard(serial)
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        shard.get(&(*serial, hash)).and_then(|s| s.response.clone())
    }

    /// Whether a response signed by responder `generation` is held.
    pub(crate) fn has_current(
        &self,
        serial: &Serial,
        hash: HashAlgorithm,
        generation: u64,
    ) -> bool {
        self.get(serial, hash)
            .is_some_and(|r| r.generation >= generation)
    }

    /// Offers a response; returns whether it was taken. Refused: a `good` response for a
    /// serial known to be revoked, and a response older than the one held (same status and
    /// generation, earlier `thisUpdate`).
    pub(crate) fn insert(
        &self,
        serial: Serial,
        hash: HashAlgorithm,
        not_after: OffsetDateTime,
        response: Arc<CachedResponse>,
    ) -> bool {
        let mut shard = self
            .shard(&serial)
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = shard.entry((serial, hash)).or_insert(Slot {
            response: None,
            revoked: false,
            not_after,
        });
        if slot.revoked && !response.revoked {
            return false;
        }
        if let Some(held) = &slot.response
            && held.revoked == response.revoked
            && (held.generation, held.this_update) > (response.generation, response.this_update)
        {
            return false;
        }
        slot.revoked |= response.revoked;
        if slot.response.replace(response).is_none() {
            self.held.inc();
        }
        true
    }

    /// Records that `serial` is revoked: its `good` responses are dropped at once and no
    /// `good` response is taken for it again. Until a `revoked` response is inserted, lookups
    /// miss and go to the store.
    pub(crate) fn mark_revoked(&self, serial: Serial, not_after: OffsetDateTime) {
        let mut shard = self
            .shard(&serial)
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for hash in HashAlgorithm::ALL {
            let slot = shard.entry((serial, hash)).or_insert(Slot {
                response: None,
                revoked: true,
                not_after,
            });
            slot.revoked = true;
            if slot.response.as_ref().is_some_and(|r| !r.revoked) {
                slot.response = None;
                self.held.dec();
            }
        }
    }

    /// Whether `serial` is known here to be revoked.
    pub(crate) fn is_marked_revoked(&self, serial: &Serial) -> bool {
        let shard = self
            .shard(serial)
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        HashAlgorithm::ALL
            .iter()
            .all(|hash| shard.get(&(*serial, *hash)).is_some_and(|s| s.revoked))
    }

    /// Slots whose response is missing, signed before `signed_before`, or by a responder
    /// generation older than `generation`; and drops slots of certificates expired at `now`.
    pub(crate) fn due(
        &self,
        signed_before: OffsetDateTime,
        generation: u64,
        now: OffsetDateTime,
    ) -> Vec<Due> {
        let mut due = Vec::new();
        for shard in &self.shards {
            let mut shard = shard
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut dropped: i64 = 0;
            shard.retain(|_, slot| {
                let keep = slot.not_after > now;
                if !keep && slot.response.is_some() {
                    dropped += 1;
                }
                keep
            });
            self.held.dec_by(dropped);
            for ((serial, hash), slot) in shard.iter() {
                let stale = slot
                    .response
                    .as_ref()
                    .is_none_or(|r| r.this_update < signed_before || r.generation < generation);
                if stale {
                    due.push(Due {
                        serial: *serial,
                        hash: *hash,
                        not_after: slot.not_after,
                    });
                }
            }
        }
        due
    }

    /// How many responses are held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        usize::try_from(self.held.get()).unwrap_or(0)
    }

    /// [`ResponseCache::len`] counted slot by slot, to check the kept count against.
    #[cfg(test)]
    fn counted(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .values()
                    .filter(|slot| slot.response.is_some())
                    .count()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use http_body::Body as _;
    use http_body_util::BodyExt;
    use time::Duration;

    use super::*;

    async fn parts_and_bytes(response: &CachedResponse) -> (usize, Vec<u8>) {
        let mut body = response.body();
        let mut parts = 0;
        let mut all = Vec::new();
        while let Some(frame) = body.frame().await {
            all.extend_from_slice(&frame.unwrap().into_data().unwrap());
            parts += 1;
        }
        (parts, all)
    }

    #[tokio::test]
    async fn a_response_ending_with_the_shared_tail_holds_only_its_own_bytes() {
        let tail = Bytes::from_static(b"-responder certificate");
        let der = b"signed response-responder certificate".to_vec();
        let now = OffsetDateTime::now_utc();
        let split = CachedResponse::new(der.clone(), &tail, false, now, now, 0);
        assert_eq!(split.body().size_hint().exact(), Some(der.len() as u64));
        assert_eq!(parts_and_bytes(&split).await, (2, der.clone()));
        assert_eq!(
            split.etag,
            headers::etag(&der),
            "the tag is the whole response's"
        );

        // Anything else is held whole: another tail, a response that is only the tail.
        for (der, tail) in [
            (der.clone(), Bytes::from_static(b"another tail")),
            (tail.to_vec(), tail.clone()),
            (der.clone(), Bytes::new()),
        ] {
            let whole = CachedResponse::new(der.clone(), &tail, false, now, now, 0);
            assert_eq!(parts_and_bytes(&whole).await, (1, der));
        }
    }

    fn response(
        revoked: bool,
        this_update: OffsetDateTime,
        generation: u64,
    ) -> Arc<CachedResponse> {
        Arc::new(CachedResponse::new(
            vec![revoked as u8],
            &Bytes::new(),
            revoked,
            this_update,
            this_update + Duration::hours(8),
            generation,
        ))
    }

    fn serial(n: u8) -> Serial {
        Serial::from_bytes([0x11, n, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, n]).unwrap()
    }

    #[test]
    fn revoked_is_never_replaced_by_good() {
        let cache = ResponseCache::new();
        let now = OffsetDateTime::now_utc();
        let later = now + Duration::days(1);
        let s = serial(1);
        assert!(cache.insert(s, HashAlgorithm::Sha1, later, response(false, now, 0)));
        assert!(cache.insert(s, HashAlgorithm::Sha1, later, response(true, now, 0)));
        let newer_good = response(false, now + Duration::minutes(5), 1);
        assert!(!cache.insert(s, HashAlgorithm::Sha1, later, newer_good));
        assert!(cache.get(&s, HashAlgorithm::Sha1).unwrap().revoked);
    }

    #[test]
    fn a_revocation_mark_drops_good_and_blocks_stale_good() {
        let cache = ResponseCache::new();
        let now = OffsetDateTime::now_utc();
        let later = now + Duration::days(1);
        let s = serial(2);
        cache.insert(s, HashAlgorithm::Sha256, later, response(false, now, 0));
        cache.mark_revoked(s, later);
        assert!(cache.get(&s, HashAlgorithm::Sha256).is_none());
        assert!(cache.get(&s, HashAlgorithm::Sha1).is_none());
        // A job that read the store before the revocation finishes late.
        assert!(!cache.insert(s, HashAlgorithm::Sha1, later, response(false, now, 0)));
        assert!(cache.insert(s, HashAlgorithm::Sha1, later, response(true, now, 0)));
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.counted(), 1);
    }

    #[test]
    fn older_responses_do_not_replace_newer_ones() {
        let cache = ResponseCache::new();
        let now = OffsetDateTime::now_utc();
        let later = now + Duration::days(1);
        let s = serial(3);
        cache.insert(s, HashAlgorithm::Sha1, later, response(false, now, 1));
        assert!(!cache.insert(
            s,
            HashAlgorithm::Sha1,
            later,
            response(false, now + Duration::hours(1), 0)
        ));
        assert!(cache.insert(
            s,
            HashAlgorithm::Sha1,
            later,
            response(false, now + Duration::hours(1), 1)
        ));
        assert!(cache.has_current(&s, HashAlgorithm::Sha1, 1));
        assert!(!cache.has_current(&s, HashAlgorithm::Sha1, 2));
    }

    #[test]
    fn due_lists_stale_and_old_generation_and_drops_expired() {
        let cache = ResponseCache::new();
        let now = OffsetDateTime::now_utc();
        let later = now + Duration::days(1);
        cache.insert(
            serial(4),
            HashAlgorithm::Sha1,
            later,
            response(false, now, 1),
        );
        cache.insert(
            serial(5),
            HashAlgorithm::Sha1,
            later,
            response(false, now - Duration::hours(5), 1),
        );
        cache.insert(
            serial(6),
            HashAlgorithm::Sha1,
            later,
            response(false, now, 0),
        );
        cache.insert(
            serial(7),
            HashAlgorithm::Sha1,
            now - Duration::seconds(1),
            response(false, now, 1),
        );
        let mut due: Vec<_> = cache
            .due(now - Duration::hours(3), 1, now)
            .into_iter()
            .map(|d| d.serial)
            .collect();
        due.sort();
        assert_eq!(due, vec![serial(5), serial(6)]);
        assert!(cache.get(&serial(7), HashAlgorithm::Sha1).is_none());
        assert_eq!((cache.len(), cache.counted()), (3, 3));
    }

    #[test]
    fn the_kept_count_follows_every_change() {
        let cache = ResponseCache::new();
        let now = OffsetDateTime::now_utc();
        let later = now + Duration::days(1);
        let check =
            |expected: usize| assert_eq!((cache.len(), cache.counted()), (expected, expected));
        for n in 10..20 {
            for hash in HashAlgorithm::ALL {
                cache.insert(serial(n), hash, later, response(false, now, 0));
            }
        }
        check(20);
        // Replacing a response, and a refused insert, change nothing.
        cache.insert(
            serial(10),
            HashAlgorithm::Sha1,
            later,
            response(false, now + Duration::minutes(1), 0),
        );
        cache.insert(
            serial(10),
            HashAlgorithm::Sha1,
            later,
            response(false, now, 0),
        );
        check(20);
        // A revocation mark drops good answers; marking again, or an unknown serial, drops none.
        cache.mark_revoked(serial(11), later);
        cache.mark_revoked(serial(11), later);
        cache.mark_revoked(serial(99), later);
        check(18);
        cache.insert(
            serial(11),
            HashAlgorithm::Sha1,
            later,
            response(true, now, 0),
        );
        check(19);
        // A revoked answer survives a later mark.
        cache.mark_revoked(serial(11), later);
        check(19);
        // Expiry drops what it held, and slots without a response count for nothing.
        cache.insert(
            serial(20),
            HashAlgorithm::Sha1,
            now - Duration::seconds(1),
            response(false, now, 0),
        );
        cache.mark_revoked(serial(21), now - Duration::seconds(1));
        check(20);
        cache.due(now - Duration::hours(3), 0, now);
        check(19);
    }
}
