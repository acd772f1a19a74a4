//! The OCSP responder behind `/ocsp`: pre-signed answers, and the rules for when a request may
//! cost a signature.
//!
//! How requests are answered (RFC 6960; RFC 5019 for the fast path):
//!
//! - **One CertID, no nonce** (the RFC 5019 profile, and what most clients send): the
//!   pre-signed response for (serial, CertID hash) is returned as bytes. No signature, no store
//!   access. Responses are signed ahead of requests — at start for every unexpired certificate,
//!   at issuance, at revocation (before the revoke command returns), and on a node sharing its
//!   store within a poll of another node's issuance or revocation — and re-signed before half
//!   of their validity has passed. A certificate whose response is not signed yet (start-up
//!   priming still running) is signed on demand and the result kept.
//! - **A nonce** (RFC 8954): echoed in a freshly signed response. That costs a signature per
//!   request, which is the price of replay protection; clients that want speed use the RFC 5019
//!   profile without a nonce. Fresh signatures come out of a per-second budget
//!   ([`ServerConfig::ocsp_signing_rate`](crate::ServerConfig::ocsp_signing_rate)); beyond it a
//!   one-CertID request gets the pre-signed response without the nonce, which RFC 8954 §2.1 and
//!   RFC 5019 §4 let clients accept, and other requests get `tryLater`.
//! - **Several CertIDs**: one freshly signed response answering all of them, from the same budget.
//! - **A serial of our issuer with no stored certificate**: `unauthorized`, unsigned. RFC 6960
//!   would also allow a signed `unknown`, but signing it would let anyone make the responder
//!   sign for every random serial they send (REV-1); RFC 5019 §2.2.3 lets a responder that
//!   works from pre-produced responses answer `unauthorized` when it has none, and the answer
//!   can never be mistaken for `good`. A serial is never `good` unless the store holds its
//!   certificate, and never `unknown` either.
//! - **Another issuer**: `unauthorized`. **Anything that does not parse**, an unsupported hash,
//!   more than [`MAX_REQUESTS`](agentca_core::ocsp::MAX_REQUESTS) CertIDs, or a nonce outside
//!   1–32 bytes: `malformedRequest`.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use agentca_core::issuer::Authority;
use agentca_core::ocsp::{
    self, CertId, CertStatus, HashAlgorithm, IssuerHashes, OcspResponseStatus,
};
use agentca_core::signer::Signer;
use agentca_core::status::{StatusResponder, status_of};
use agentca_core::store::{
    CertificateFilter, CertificateRecord, IssuedEntry, RevokedEntry, Serial, SerialEntry,
};
use axum::body::Bytes;
use time::{Duration, OffsetDateTime};

use crate::budget::SigningBudget;
use crate::cache::{CachedResponse, Due, ResponseCache};
use crate::error::ServerError;
use crate::metrics::{Metrics, OcspAnswer};
use crate::split_body::SplitBody;

/// A pre-signed response is served only while it has at least this long left; after that it
/// is treated as missing (the scheduler should have replaced it long before).
const MIN_REMAINING: Duration = Duration::minutes(1);

/// One generation of the responder key and certificate.
pub(crate) struct ResponderKey {
    status: StatusResponder,
    signer: Arc<dyn Signer>,
    cert_der: Vec<u8>,
    /// What every response of this key ends with, held once by the cache.
    shared_tail: Bytes,
    pub(crate) not_before: OffsetDateTime,
    pub(crate) not_after: OffsetDateTime,
    pub(crate) generation: u64,
}

impl std::fmt::Debug for ResponderKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponderKey")
            .field("not_after", &self.not_after)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl ResponderKey {
    /// Binds a responder key to its certificate for the issuing CA `issuer_der`.
    pub(crate) fn new(
        signer: Arc<dyn Signer>,
        cert_der: Vec<u8>,
        issuer_der: &[u8],
        validity: Duration,
        generation: u64,
    ) -> Result<Self, ServerError> {
        let status = StatusResponder::new(signer.clone(), cert_der.clone(), issuer_der, validity)?;
        let (not_before, not_after) = crate::certs::validity_of(&cert_der)?;
        Ok(Self {
            shared_tail: Bytes::copy_from_slice(status.shared_tail()),
            status,
            signer,
            cert_der,
            not_before,
            not_after,
            generation,
        })
    }

    /// The responder certificate, DER.
    pub(crate) fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Signatures made with this key since it was loaded.
    pub(crate) fn signatures(&self) -> u64 {
        self.signer.signatures()
    }
}

/// What `/ocsp` sends back.
#[derive(Debug)]
pub(crate) struct Answer {
    /// The DER `OCSPResponse`.
    pub(crate) der: SplitBody,
    /// Set when `der` is a pre-signed response (cacheable by HTTP caches).
    pub(crate) cached: Option<Arc<CachedResponse>>,
}

/// The responder: current key, response cache and signing budget.
pub(crate) struct OcspService {
    authority: Arc<Authority>,
    issuer: IssuerHashes,
    responder: RwLock<Arc<ResponderKey>>,
    cache: ResponseCache,
    budget: SigningBudget,
    metrics: Arc<Metrics>,
    validity: Duration,
    unsigned: [Bytes; 4],
    clock: ResponseClock,
}

/// The time responses are dated at: the wall clock, except that it never goes back. After a
/// clock step backwards a fresh response would otherwise be dated before the one it follows,
/// and a relying party or cache that keeps the newest response it has seen would keep a
/// `good` over a later `revoked` (security-test-plan REL-7). Each process keeps its own.
#[derive(Debug, Default)]
struct ResponseClock {
    /// The latest time handed out, Unix seconds.
    latest: AtomicI64,
}

impl ResponseClock {
    fn now(&self) -> OffsetDateTime {
        let now = OffsetDateTime::now_utc();
        let seconds = now.unix_timestamp();
        let latest = self.latest.fetch_max(seconds, Ordering::AcqRel);
        if latest > seconds {
            OffsetDateTime::from_unix_timestamp(latest).unwrap_or(now)
        } else {
            now
        }
    }
}

impl std::fmt::Debug for OcspService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OcspService")
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

const UNSIGNED: [OcspResponseStatus; 4] = [
    OcspResponseStatus::MalformedRequest,
    OcspResponseStatus::InternalError,
    OcspResponseStatus::TryLater,
    OcspResponseStatus::Unauthorized,
];

/// A single-CertID request names a certificate of ours only if its serial has the exact shape
/// of the serials we hand out; anything else cannot be in the store.
fn serial_of(id: &CertId) -> Option<Serial> {
    <[u8; Serial::LEN]>::try_from(id.serial.as_slice())
        .ok()
        .and_then(Serial::from_bytes)
}

impl OcspService {
    pub(crate) fn new(
        authority: Arc<Authority>,
        responder: ResponderKey,
        validity: Duration,
        signing_rate: u32,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ServerError> {
        let issuer = IssuerHashes::from_issuer_der(authority.ca().cert_der())?;
        metrics
            .ocsp_responder_not_after
            .set(responder.not_after.unix_timestamp());
        Ok(Self {
            authority,
            issuer,
            responder: RwLock::new(Arc::new(responder)),
            cache: ResponseCache::counting_into(metrics.ocsp_cache_entries.clone()),
            budget: SigningBudget::new(signing_rate),
            metrics,
            validity,
            unsigned: UNSIGNED.map(|s| Bytes::from(ocsp::error_response(s))),
            clock: ResponseClock::default(),
        })
    }

    /// The responder key in use.
    pub(crate) fn responder(&self) -> Arc<ResponderKey> {
        self.responder
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Puts a new responder key in use. Responses signed by the previous one stay valid and
    /// are served until the refresh job has re-signed them.
    pub(crate) fn install(&self, mut key: ResponderKey) {
        let mut current = self
            .responder
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        key.generation = current.generation + 1;
        self.metrics
            .ocsp_responder_not_after
            .set(key.not_after.unix_timestamp());
        *current = Arc::new(key);
    }

    /// The response validity.
    pub(crate) fn validity(&self) -> Duration {
        self.validity
    }

    fn unsigned(&self, status: OcspResponseStatus) -> Answer {
        let (index, answer) = match status {
            OcspResponseStatus::MalformedRequest => (0, OcspAnswer::MalformedRequest),
            OcspResponseStatus::TryLater => (2, OcspAnswer::TryLater),
            OcspResponseStatus::Unauthorized => (3, OcspAnswer::Unauthorized),
            _ => (1, OcspAnswer::InternalError),
        };
        self.metrics.answered(answer);
        Answer {
            der: SplitBody::whole(self.unsigned[index].clone()),
            cached: None,
        }
    }

    fn serve(&self, response: Arc<CachedResponse>) -> Answer {
        self.metrics.answered(if response.revoked {
            OcspAnswer::Revoked
        } else {
            OcspAnswer::Good
        });
        Answer {
            der: response.body(),
            cached: Some(response),
        }
    }

    /// Answers a DER `OCSPRequest`, whatever it holds.
    pub(crate) fn answer(&self, request_der: &[u8]) -> Answer {
        let Ok(request) = ocsp::parse_request(request_der) else {
            return self.unsigned(OcspResponseStatus::MalformedRequest);
        };
        if !request.cert_ids.iter().all(|id| self.issuer.matches(id)) {
            return self.unsigned(OcspResponseStatus::Unauthorized);
        }
        let now = self.clock.now();
        if let [id] = request.cert_ids.as_slice() {
            let Some(serial) = serial_of(id) else {
                return self.unsigned(OcspResponseStatus::Unauthorized);
            };
            let cached = self
                .cache
                .get(&serial, id.hash)
                .filter(|r| now + MIN_REMAINING < r.next_update);
            return match (request.nonce, cached) {
                (None, Some(hit)) => {
                    self.metrics.ocsp_cache_hits.inc();
                    self.serve(hit)
                }
                (None, None) => {
                    self.metrics.ocsp_cache_misses.inc();
                    self.sign_on_demand(serial, id.hash, now)
                }
                (Some(nonce), cached) => self.sign_fresh(&request.cert_ids, &nonce, cached, now),
            };
        }
        self.sign_several(&request.cert_ids, request.nonce.as_deref(), now)
    }

    /// Whether the store holds a certificate for `serial`; `Err` for a store failure.
    fn stored(&self, serial: &Serial) -> Result<Option<CertificateRecord>, ()> {
        match self.authority.store().serial(serial) {
            Ok(Some(SerialEntry::Issued(record))) => Ok(Some(record)),
            Ok(_) => Ok(None),
            Err(e) => {
                tracing::warn!(error = %e, "OCSP: store lookup failed");
                Err(())
            }
        }
    }

    fn sign_on_demand(&self, serial: Serial, hash: HashAlgorithm, now: OffsetDateTime) -> Answer {
        let record = match self.stored(&serial) {
            Ok(Some(record)) => record,
            Ok(None) => return self.unsigned(OcspResponseStatus::Unauthorized),
            Err(()) => return self.unsigned(OcspResponseStatus::TryLater),
        };
        if !self.budget.try_take() {
            self.metrics.ocsp_signing_rate_limited.inc();
            return self.unsigned(OcspResponseStatus::TryLater);
        }
        self.metrics.ocsp_request_path_signatures.inc();
        match self.sign_into_cache(
            serial,
            hash,
            status_of(&record),
            record.intent.not_after,
            now,
        ) {
            Ok(response) => self.serve(response),
            Err(e) => {
                tracing::warn!(serial = %serial, error = %e, "OCSP: on-demand signing failed");
                self.unsigned(OcspResponseStatus::TryLater)
            }
        }
    }

    fn sign_fresh(
        &self,
        cert_ids: &[CertId],
        nonce: &[u8],
        cached: Option<Arc<CachedResponse>>,
        now: OffsetDateTime,
    ) -> Answer {
        let revoked = match &cached {
            Some(hit) => hit.revoked,
            None => match cert_ids
                .first()
                .and_then(serial_of)
                .map(|s| self.stored(&s))
            {
                Some(Ok(Some(record))) => record.revocation.is_some(),
                Some(Ok(None)) | None => return self.unsigned(OcspResponseStatus::Unauthorized),
                Some(Err(())) => return self.unsigned(OcspResponseStatus::TryLater),
            },
        };
        if !self.budget.try_take() {
            self.metrics.ocsp_signing_rate_limited.inc();
            return match cached {
                Some(hit) => self.serve(hit),
                None => self.unsigned(OcspResponseStatus::TryLater),
            };
        }
        self.metrics.ocsp_request_path_signatures.inc();
        let key = self.responder();
        match key
            .status
            .respond(self.authority.store(), cert_ids, Some(nonce), now)
        {
            Ok(der) => {
                self.metrics.answered(if revoked {
                    OcspAnswer::Revoked
                } else {
                    OcspAnswer::Good
                });
                Answer {
                    der: SplitBody::whole(Bytes::from(der)),
                    cached: None,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "OCSP: signing a nonce response failed");
                self.unsigned(OcspResponseStatus::InternalError)
            }
        }
    }

    fn sign_several(
        &self,
        cert_ids: &[CertId],
        nonce: Option<&[u8]>,
        now: OffsetDateTime,
    ) -> Answer {
        for id in cert_ids {
            let Some(serial) = serial_of(id) else {
                return self.unsigned(OcspResponseStatus::Unauthorized);
            };
            // A pre-signed response proves the certificate is stored without a store read.
            if self.cache.get(&serial, id.hash).is_some() {
                continue;
            }
            match self.stored(&serial) {
                Ok(Some(_)) => {}
                Ok(None) => return self.unsigned(OcspResponseStatus::Unauthorized),
                Err(()) => return self.unsigned(OcspResponseStatus::TryLater),
            }
        }
        if !self.budget.try_take() {
            self.metrics.ocsp_signing_rate_limited.inc();
            return self.unsigned(OcspResponseStatus::TryLater);
        }
        self.metrics.ocsp_request_path_signatures.inc();
        let key = self.responder();
        match key
            .status
            .respond(self.authority.store(), cert_ids, nonce, now)
        {
            Ok(der) => {
                self.metrics.answered(OcspAnswer::Several);
                Answer {
                    der: SplitBody::whole(Bytes::from(der)),
                    cached: None,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "OCSP: signing a multi-certificate response failed");
                self.unsigned(OcspResponseStatus::InternalError)
            }
        }
    }

    /// Signs the response asserting `status` for (serial, hash) and offers it to the cache;
    /// `status` is what the caller just read from the store, or the record it just wrote
    /// (the cache refuses a `good` answer for a serial marked revoked meanwhile). Returns the response the cache holds afterwards: the new one, or a
    /// `revoked` one that refused it.
    fn sign_into_cache(
        &self,
        serial: Serial,
        hash: HashAlgorithm,
        status: CertStatus,
        not_after: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Arc<CachedResponse>, ServerError> {
        let key = self.responder();
        let id = self.issuer.cert_id(hash, serial.as_bytes());
        let (der, single) = key.status.sign_known(id, status, now)?;
        let revoked = match single.status {
            CertStatus::Good => false,
            CertStatus::Revoked { .. } => true,
            CertStatus::Unknown => {
                return Err(agentca_core::Error::UnknownSerial(serial.to_hex()).into());
            }
        };
        let response = Arc::new(CachedResponse::new(
            der,
            &key.shared_tail,
            revoked,
            single.this_update,
            single.next_update,
            key.generation,
        ));
        if self.cache.insert(serial, hash, not_after, response.clone()) {
            return Ok(response);
        }
        // Refused: the serial was revoked while this response was being signed, or a newer
        // response is held. Serve what the cache holds, never the refused response.
        self.cache.get(&serial, hash).ok_or_else(|| {
            agentca_core::Error::Signing(format!("status of {serial} changed while signing; retry"))
                .into()
        })
    }

    /// [`OcspService::sign_into_cache`] with the status the store holds now.
    fn sign_from_store(
        &self,
        serial: Serial,
        hash: HashAlgorithm,
        not_after: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Arc<CachedResponse>, ServerError> {
        let status = match self.authority.store().serial(&serial)? {
            Some(SerialEntry::Issued(record)) => status_of(&record),
            Some(SerialEntry::Reserved(_)) | None => {
                return Err(agentca_core::Error::UnknownSerial(serial.to_hex()).into());
            }
        };
        self.sign_into_cache(serial, hash, status, not_after, now)
    }

    /// Pre-signs both responses for a newly issued certificate.
    pub(crate) fn presign(&self, record: &CertificateRecord) {
        let now = self.clock.now();
        for hash in HashAlgorithm::ALL {
            self.metrics.ocsp_background_signatures.inc();
            if let Err(e) = self.sign_into_cache(
                record.intent.serial,
                hash,
                status_of(record),
                record.intent.not_after,
                now,
            ) {
                tracing::warn!(serial = %record.intent.serial, error = %e, "OCSP: pre-signing failed; the first request will sign");
            }
        }
    }

    /// Makes every response for `records` say `revoked` before returning. `records` must be
    /// everything the revocation changed (`Authority::revoke_all` returns the other
    /// certificates of a compromised key too). Records already answered `revoked` cost
    /// nothing (a refused second revocation passes its record, in case the first one's
    /// answer was lost). Returns how many were new.
    pub(crate) fn revoked(&self, records: &[CertificateRecord]) -> usize {
        // Only records that say revoked: marking a certificate the store still holds as good
        // would leave it answerable by nothing but `tryLater`.
        let mut all: Vec<(Serial, OffsetDateTime)> = Vec::with_capacity(records.len());
        for record in records {
            if self.cache.is_marked_revoked(&record.intent.serial) {
                continue;
            }
            if record.revocation.is_some() {
                all.push((record.intent.serial, record.intent.not_after));
            } else {
                tracing::warn!(serial = %record.intent.serial, "revocation hook called for a certificate that is not revoked; ignored");
            }
        }
        self.revoke_in_cache(all)
    }

    /// Revocations another node made, as the store's feed lists them: those not yet known
    /// here (and not expired) are handled as [`OcspService::revoked`] does. Returns how many
    /// were new.
    pub(crate) fn learned(&self, entries: &[RevokedEntry]) -> usize {
        let now = self.clock.now();
        let new: Vec<(Serial, OffsetDateTime)> = entries
            .iter()
            .filter(|e| e.not_after > now && !self.cache.is_marked_revoked(&e.serial))
            .map(|e| (e.serial, e.not_after))
            .collect();
        if new.is_empty() {
            return 0;
        }
        self.revoke_in_cache(new)
    }

    /// Certificates another node stored, as the store's feed lists them (unrevoked when it
    /// was read): each unexpired one without an answer from the current responder key here
    /// gets both `good` answers signed, as its issuing node's [`OcspService::presign`] did
    /// there. A certificate this node issued or already answered costs nothing; one revoked
    /// meanwhile keeps its `revoked` answer (the cache refuses `good` for it). Returns how
    /// many responses were signed.
    pub(crate) fn learned_issued(&self, entries: &[IssuedEntry]) -> usize {
        let now = self.clock.now();
        let generation = self.responder().generation;
        let mut signed = 0;
        for entry in entries.iter().filter(|e| e.not_after > now) {
            if self.cache.is_marked_revoked(&entry.serial) {
                continue;
            }
            for hash in HashAlgorithm::ALL {
                if self.cache.has_current(&entry.serial, hash, generation) {
                    continue;
                }
                self.metrics.ocsp_background_signatures.inc();
                match self.sign_into_cache(
                    entry.serial,
                    hash,
                    CertStatus::Good,
                    entry.not_after,
                    now,
                ) {
                    Ok(_) => signed += 1,
                    Err(e) => {
                        tracing::warn!(serial = %entry.serial, error = %e, "OCSP: pre-signing another node's certificate failed; the first request will sign");
                    }
                }
            }
        }
        signed
    }

    fn revoke_in_cache(&self, mut all: Vec<(Serial, OffsetDateTime)>) -> usize {
        all.sort();
        all.dedup();
        // First withdraw every `good` answer, then sign the `revoked` ones: a lookup in
        // between misses and is answered from the store, which already says revoked.
        for (serial, not_after) in &all {
            self.cache.mark_revoked(*serial, *not_after);
        }
        let now = self.clock.now();
        for (serial, not_after) in &all {
            for hash in HashAlgorithm::ALL {
                self.metrics.ocsp_background_signatures.inc();
                if let Err(e) = self.sign_from_store(*serial, hash, *not_after, now) {
                    tracing::warn!(serial = %serial, error = %e, "OCSP: signing a revoked response failed; requests will sign on demand");
                }
            }
        }
        all.len()
    }

    /// Every (serial, hash) of an unexpired stored certificate that has no response from the
    /// current responder key yet: the start-up priming list.
    pub(crate) fn unprimed(&self) -> Result<Vec<Due>, ServerError> {
        let now = self.clock.now();
        let generation = self.responder().generation;
        // Loads every certificate (with its DER) once at start; see the crate docs.
        let records = self
            .authority
            .store()
            .certificates(&CertificateFilter::default())?;
        let mut due = Vec::with_capacity(records.len() * 2);
        for record in records.iter().filter(|r| r.intent.not_after > now) {
            for hash in HashAlgorithm::ALL {
                if !self
                    .cache
                    .has_current(&record.intent.serial, hash, generation)
                {
                    due.push(Due {
                        serial: record.intent.serial,
                        hash,
                        not_after: record.intent.not_after,
                    });
                }
            }
        }
        Ok(due)
    }

    /// Responses to re-sign now: older than 2/5 of their validity (so they are replaced
    /// before half of it, with time to spare), or signed by a previous responder key.
    pub(crate) fn stale(&self, now: OffsetDateTime) -> Vec<Due> {
        let signed_before = now - self.validity * 2 / 5;
        self.cache
            .due(signed_before, self.responder().generation, now)
    }

    /// Signs `due` into the cache, stopping early when `stop` is set. Returns how many
    /// responses were signed.
    pub(crate) fn sign_all(&self, due: &[Due], stop: &AtomicBool) -> usize {
        let mut signed = 0;
        let mut failed = 0;
        for item in due {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let generation = self.responder().generation;
            let now = self.clock.now();
            let fresh = self.cache.get(&item.serial, item.hash).is_some_and(|r| {
                r.generation >= generation && r.this_update > now - self.validity * 2 / 5
            });
            if fresh {
                continue;
            }
            self.metrics.ocsp_background_signatures.inc();
            match self.sign_from_store(item.serial, item.hash, item.not_after, now) {
                Ok(_) => signed += 1,
                Err(e) => {
                    failed += 1;
                    if failed == 1 {
                        tracing::warn!(serial = %item.serial, error = %e, "OCSP: background signing failed");
                    }
                }
            }
        }
        if failed > 1 {
            tracing::warn!(failed, "OCSP: background signing failures");
        }
        signed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_response_clock_never_goes_back() {
        let clock = ResponseClock::default();
        let real = OffsetDateTime::now_utc().unix_timestamp();
        assert!((clock.now().unix_timestamp() - real).abs() <= 1);
        // As if an hour had been handed out before the wall clock stepped back.
        clock.latest.store(real + 3600, Ordering::Release);
        assert_eq!(clock.now().unix_timestamp(), real + 3600);
        assert_eq!(clock.now().unix_timestamp(), real + 3600);
    }
}
