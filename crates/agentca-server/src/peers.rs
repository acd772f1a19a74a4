//! What this node learns from the other nodes that share its store.
//!
//! Each node pre-signs OCSP responses and publishes CRLs from its own memory, so a revocation
//! made through another node would reach this node's answers only at their next scheduled
//! re-signing. Instead this node asks the store every [`ServerConfig::revocation_poll`] for the
//! revocations recorded since it last asked, withdraws its `good` answers for them, signs
//! `revoked` ones and schedules a CRL: a revocation made anywhere is answered `revoked` here
//! within one poll interval plus a signature. The same job forgets used ACME nonces once they
//! have expired.
//!
//! [`ServerConfig::revocation_poll`]: crate::ServerConfig::revocation_poll

use std::sync::Arc;
use std::time::Duration;

use agentca_core::store::{REVOCATION_FEED_OVERLAP, Store, blocking_section};
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::crl::CrlPublisher;
use crate::error::ServerError;
use crate::ocsp::OcspService;
use crate::scheduler::stopped;

/// How often used nonces are purged.
const NONCE_PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// What the job needs.
pub(crate) struct RevocationWatch {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) ocsp: Arc<OcspService>,
    pub(crate) crl: Arc<CrlPublisher>,
    pub(crate) interval: Duration,
    /// The store's clock when the watch began: read before the OCSP cache is primed, so every
    /// revocation the priming's read of the store may have missed is recorded after it.
    pub(crate) since: OffsetDateTime,
}

impl RevocationWatch {
    /// Reads the store's clock (blocking): the starting point of the watch.
    pub(crate) fn start_point(store: &dyn Store) -> Result<OffsetDateTime, ServerError> {
        // Asking for what was recorded after a time far ahead lists nothing and costs an index
        // probe; only the clock reading is wanted.
        let far_ahead = OffsetDateTime::now_utc() + time::Duration::days(365 * 100);
        Ok(store.revocations_since(far_ahead)?.as_of)
    }
}

pub(crate) async fn revocation_watch_job(watch: RevocationWatch, mut stop: watch::Receiver<bool>) {
    let mut since = watch.since;
    let mut last_purge = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(watch.interval) => {}
            _ = stopped(&mut stop) => break,
        }
        let store = watch.store.clone();
        let from = since - REVOCATION_FEED_OVERLAP;
        let feed = match tokio::task::spawn_blocking(move || {
            blocking_section(|| store.revocations_since(from))
        })
        .await
        {
            Ok(Ok(feed)) => feed,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "asking the store for other nodes' revocations failed; retrying");
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "asking the store for revocations did not finish");
                continue;
            }
        };
        since = feed.as_of;
        if !feed.entries.is_empty() {
            let ocsp = watch.ocsp.clone();
            let learned = match tokio::task::spawn_blocking(move || ocsp.learned(&feed.entries))
                .await
            {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, "re-signing other nodes' revocations did not finish");
                    0
                }
            };
            if learned > 0 {
                tracing::info!(learned, "revocations made through other nodes now answered");
                watch.crl.request();
            }
        }
        if last_purge.elapsed() >= NONCE_PURGE_INTERVAL {
            last_purge = tokio::time::Instant::now();
            let store = watch.store.clone();
            match tokio::task::spawn_blocking(move || {
                blocking_section(|| store.purge_nonces(OffsetDateTime::now_utc()))
            })
            .await
            {
                Ok(Ok(n)) => tracing::debug!(purged = n, "expired ACME nonces forgotten"),
                Ok(Err(e)) => tracing::warn!(error = %e, "purging expired ACME nonces failed"),
                Err(e) => tracing::error!(error = %e, "purging expired ACME nonces did not finish"),
            }
        }
    }
}
