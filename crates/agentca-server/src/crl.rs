//! The served CRL: published at start, on a period, and shortly after revocations.
//!
//! Each publication takes a fresh CRL number from the store (strictly increasing and durable
//! before the CRL exists, so numbers survive restarts and are never reused) and becomes the
//! served CRL only if its number is higher than the one served.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use agentca_core::crl::{self, Crl};
use agentca_core::issuer::Authority;
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
    pub(crate) etag: HeaderValue,
    pub(crate) last_modified: HeaderValue,
}

/// Publishes CRLs and holds the one being served.
pub(crate) struct CrlPublisher {
    authority: Arc<Authority>,
    validity: Duration,
    served: RwLock<Option<Arc<ServedCrl>>>,
    publishing: Mutex<()>,
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

    /// Signs and publishes a new CRL now (blocking: store, signature, flush).
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
        let pem = headers::pem_lf("X509 CRL", &published.der);
        let served = Arc::new(ServedCrl {
            etag: headers::etag(&published.der),
            last_modified: headers::http_date(published.this_update),
            der: Bytes::from(published.der.clone()),
            pem: Bytes::from(pem),
            number: published.number,
        });
        {
            let mut slot = self
                .served
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if slot.as_ref().is_none_or(|s| s.number < served.number) {
                *slot = Some(served);
            }
        }
        let m = &self.metrics;
        m.crl_publications.inc();
        m.crl_number
            .set(i64::try_from(published.number).unwrap_or(i64::MAX));
        m.crl_this_update
            .set(published.this_update.unix_timestamp());
        m.crl_age_seconds.set(0);
        m.crl_entries
            .set(i64::try_from(published.entries).unwrap_or(i64::MAX));
        tracing::info!(
            number = published.number,
            entries = published.entries,
            "CRL published"
        );
        Ok(published)
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
