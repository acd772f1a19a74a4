//! The served CRL: published at start, on a period, and shortly after revocations.
//!
//! Each publication takes a fresh CRL number from the store (strictly increasing and durable
//! before the CRL exists, so numbers survive restarts and are never reused) and becomes the
//! served CRL only if its number is higher than the one served.
//!
//! Nodes sharing a store each sign CRLs (after the revocations they make or learn of, and on
//! their period), so their numbers interleave. Each offers what it signs to the store, which
//! keeps the highest-numbered one, and each adopts a higher one from there within a poll
//! ([`crate::peers`]), after checking its CA's signature: a relying party balanced across the
//! nodes then sees one CRL, not two whose numbers alternate.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use agentca_core::crl::{self, Crl};
use agentca_core::issuer::Authority;
use agentca_core::store::SharedCrl;
use axum::body::Bytes;
use axum::http::HeaderValue;
use time::{Duration, OffsetDateTime};
use tokio::sync::Notify;

use crate::error::ServerError;
use crate::headers;
use crate::metrics::Metrics;

/// A published CRL, ready to serve.
#[derive(Debug)]
pub(crate) struct ServedCrl {
    pub(crate) der: Bytes,
    pub(crate) pem: Bytes,
    pub(crate) number: u64,
    pub(crate) this_update: OffsetDateTime,
    pub(crate) next_update: OffsetDateTime,
    pub(crate) etag: HeaderValue,
    pub(crate) last_modified: HeaderValue,
}

/// Publishes CRLs and holds the one being served.
pub(crate) struct CrlPublisher {
    authority: Arc<Authority>,
    validity: Duration,
    served: RwLock<Option<Arc<ServedCrl>>>,
    publishing: Mutex<()>,
    /// The highest number of a shared CRL that failed its check here.
    refused_shared: AtomicU64,
    dirty: AtomicBool,
    wake: Notify,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for CrlPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrlPublisher")
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

impl CrlPublisher {
    pub(crate) fn new(
        authority: Arc<Authority>,
        validity: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            authority,
            validity,
            served: RwLock::new(None),
            publishing: Mutex::new(()),
            refused_shared: AtomicU64::new(0),
            dirty: AtomicBool::new(false),
            wake: Notify::new(),
            metrics,
        }
    }

    /// The CRL being served, if one was published.
    pub(crate) fn served(&self) -> Option<Arc<ServedCrl>> {
        self.served
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Signs and publishes a new CRL now (blocking: store, signature, flush). On a store that
    /// other nodes share, the CRL is also offered to them ([`Store::share_crl`]).
    ///
    /// [`Store::share_crl`]: agentca_core::store::Store::share_crl
    pub(crate) fn publish(&self) -> Result<Crl, ServerError> {
        // One publication at a time, so the served number only grows.
        let _one = self
            .publishing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let result = crl::publish(&self.authority, OffsetDateTime::now_utc(), self.validity);
        let published = match result {
            Ok(c) => c,
            Err(e) => {
                self.metrics.crl_failures.inc();
                return Err(e.into());
            }
        };
        self.metrics.crl_publications.inc();
        // Served here before it is offered to the others: sharing a CRL of megabytes may wait
        // on the database, and this node's clients need not.
        self.serve(&published);
        tracing::info!(
            number = published.number,
            entries = published.entries,
            "CRL published"
        );
        let store = self.authority.store();
        if store.is_shared() {
            let shared = SharedCrl {
                number: published.number,
                this_update: published.this_update,
                der: published.der.clone(),
            };
            // Served here either way; the other nodes pick up a later one.
            if let Err(e) = store.share_crl(&shared) {
                tracing::warn!(number = published.number, error = %e, "CRL not shared with the other nodes");
            }
        }
        Ok(published)
    }

    /// Serves the CRL the store shares if its number is higher than the one served here
    /// (blocking: one store read, a signature check and an audit sync when there is one).
    /// Returns its number if it is served now. A shared CRL this node refused is not read
    /// again: only a higher number is.
    pub(crate) fn adopt_shared(&self) -> Result<Option<u64>, ServerError> {
        let served = self.served().map_or(0, |s| s.number);
        let above = served.max(self.refused_shared.load(Ordering::SeqCst));
        let Some(shared) = self.authority.store().shared_crl(above)? else {
            return Ok(None);
        };
        let checked = crl::read_signed(self.authority.ca(), &shared.der).and_then(|crl| {
            if crl.number == shared.number {
                Ok(crl)
            } else {
                Err(agentca_core::Error::Der(format!(
                    "shared CRL: stored as number {} but carries {}",
                    shared.number, crl.number
                )))
            }
        });
        let crl = match checked {
            Ok(crl) => crl,
            Err(e) => {
                self.refused_shared
                    .fetch_max(shared.number, Ordering::SeqCst);
                return Err(e.into());
            }
        };
        let _one = self
            .publishing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.served().is_some_and(|s| s.number >= crl.number) {
            return Ok(None);
        }
        // Recorded before it is served, as this node's own CRLs are: a restore from this
        // node's data directory alone must still number its CRLs above this one (REL-9).
        crl::record_adopted(&self.authority, &crl)?;
        if !self.serve(&crl) {
            return Ok(None);
        }
        self.metrics.crl_adoptions.inc();
        Ok(Some(crl.number))
    }

    /// On a store other nodes share, how long the served CRL stays recent enough that this
    /// node need not sign its own on its period: until `interval` plus `grace` after its
    /// `thisUpdate` (the grace lets the node that signed it sign the next one and this node
    /// adopt it, instead of both signing), and never once less than half of this node's
    /// validity is left before its `nextUpdate` (another node may use a shorter validity).
    /// `None` once that has passed, when nothing is served, and on an unshared store.
    pub(crate) fn recent_for(
        &self,
        interval: std::time::Duration,
        grace: std::time::Duration,
    ) -> Option<std::time::Duration> {
        if !self.authority.store().is_shared() {
            return None;
        }
        let served = self.served()?;
        let span = Duration::try_from(interval + grace).ok()?;
        let until = (served.this_update + span).min(served.next_update - self.validity / 2);
        let left = until - OffsetDateTime::now_utc();
        let left = std::time::Duration::try_from(left.min(span)).ok()?;
        (!left.is_zero()).then_some(left)
    }

    /// Makes `crl` the served CRL if its number is higher than the served one's; returns
    /// whether it did.
    fn serve(&self, crl: &Crl) -> bool {
        let pem = headers::pem_lf("X509 CRL", &crl.der);
        let served = Arc::new(ServedCrl {
            etag: headers::etag(&crl.der),
            last_modified: headers::http_date(crl.this_update),
            der: Bytes::from(crl.der.clone()),
            pem: Bytes::from(pem),
            number: crl.number,
            this_update: crl.this_update,
            next_update: crl.next_update,
        });
        let mut slot = self
            .served
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.as_ref().is_some_and(|s| s.number >= served.number) {
            return false;
        }
        *slot = Some(served);
        // Under the lock, so the gauges follow the served CRL.
        let m = &self.metrics;
        m.crl_number
            .set(i64::try_from(crl.number).unwrap_or(i64::MAX));
        m.crl_this_update.set(crl.this_update.unix_timestamp());
        m.crl_age_seconds.set(
            (OffsetDateTime::now_utc() - crl.this_update)
                .whole_seconds()
                .max(0),
        );
        m.crl_entries
            .set(i64::try_from(crl.entries).unwrap_or(i64::MAX));
        true
    }

    /// Asks for a publication after the debounce delay (called after revocations).
    pub(crate) fn request(&self) {
        self.dirty.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Waits for [`CrlPublisher::request`].
    pub(crate) async fn requested(&self) {
        self.wake.notified().await;
    }

    /// Takes the pending request, if any.
    pub(crate) fn take_request(&self) -> bool {
        self.dirty.swap(false, Ordering::SeqCst)
    }
}
