//! What this node learns from the other nodes that share its store.
//!
//! Each node pre-signs OCSP responses and publishes CRLs from its own memory, so a revocation
//! made through another node would reach this node's answers only at their next scheduled
//! re-signing. Instead this node asks the store every [`ServerConfig::revocation_poll`] for the
//! revocations recorded since it last asked, withdraws its `good` answers for them, signs
//! `revoked` ones and schedules a CRL: a revocation made anywhere is answered `revoked` here
//! within one poll interval plus a signature. In the same poll it asks for the certificates
//! stored since, and pre-signs `good` answers for those another node issued: their OCSP
//! requests are then answered from memory like this node's own, without a store read or a
//! signature on the request path, and still while the store is unreachable. It also serves
//! the CRL the store shares when another node signed a higher-numbered one, so that every
//! node serves the same CRL (see [`crate::crl`]). The same job forgets used ACME nonces once
//! they have expired.
//!
//! [`ServerConfig::revocation_poll`]: crate::ServerConfig::revocation_poll

use std::sync::Arc;
use std::time::Duration;

use agentca_core::store::{
    ISSUANCE_FEED_OVERLAP, IssuanceFeed, REVOCATION_FEED_OVERLAP, Store, blocking_section,
};
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::crl::CrlPublisher;
use crate::error::ServerError;
use crate::ocsp::OcspService;
use crate::scheduler::stopped;

/// How often used nonces are purged.
const NONCE_PURGE_INTERVAL: Duration = Duration::from_secs(60);
/// How long after its expiry, by this node's clock, a used nonce's record is kept: a node
/// whose clock runs behind this one's still refuses the nonce by its age alone only once its
/// own clock passes the expiry, and until then the record is what refuses a replay. Clocks
/// further apart than this (beyond the 30 s every node allows) would open a window.
const NONCE_PURGE_MARGIN: time::Duration = time::Duration::minutes(10);

/// What the job needs.
pub(crate) struct PeerWatch {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) ocsp: Arc<OcspService>,
    pub(crate) crl: Arc<CrlPublisher>,
    pub(crate) interval: Duration,
    /// The store's clock when the watch began: read before the OCSP cache is primed, so every
    /// revocation the priming's read of the store may have missed is recorded after it.
    pub(crate) since: OffsetDateTime,
}

impl PeerWatch {
    /// Reads the store's clock (blocking): the starting point of the watch.
    pub(crate) fn start_point(store: &dyn Store) -> Result<OffsetDateTime, ServerError> {
        // Asking for what was recorded after a time far ahead lists nothing and costs an index
        // probe; only the clock reading is wanted.
        let far_ahead = OffsetDateTime::now_utc() + time::Duration::days(365 * 100);
        Ok(store.revocations_since(far_ahead)?.as_of)
    }
}

pub(crate) async fn peer_watch_job(watch: PeerWatch, mut stop: watch::Receiver<bool>) {
    let mut since = watch.since;
    let mut issued_since = watch.since;
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
        // After the revocations, which matter more and must not wait for these signatures.
        if let Some(feed) = poll_issued(&watch, issued_since).await {
            issued_since = feed.as_of;
            if !feed.entries.is_empty() {
                let ocsp = watch.ocsp.clone();
                match tokio::task::spawn_blocking(move || ocsp.learned_issued(&feed.entries)).await
                {
                    Ok(0) => {}
                    Ok(signed) => {
                        tracing::debug!(
                            signed,
                            "OCSP answers pre-signed for other nodes' certificates"
                        );
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "pre-signing other nodes' certificates did not finish");
                    }
                }
            }
        }
        adopt_shared_crl(&watch.crl).await;
        if last_purge.elapsed() >= NONCE_PURGE_INTERVAL {
            last_purge = tokio::time::Instant::now();
            let store = watch.store.clone();
            match tokio::task::spawn_blocking(move || {
                blocking_section(|| {
                    store.purge_nonces(OffsetDateTime::now_utc() - NONCE_PURGE_MARGIN)
                })
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

/// Serves the CRL the store shares if another node signed a higher-numbered one.
async fn adopt_shared_crl(crl: &Arc<CrlPublisher>) {
    let crl = crl.clone();
    match tokio::task::spawn_blocking(move || blocking_section(|| crl.adopt_shared())).await {
        Ok(Ok(Some(number))) => tracing::debug!(number, "CRL another node signed now served"),
        Ok(Ok(None)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "reading the CRL the other nodes share failed"),
        Err(e) => tracing::error!(error = %e, "reading the shared CRL did not finish"),
    }
}

/// The certificates stored since `since` (less the overlap); `None`, logged, if the store did
/// not answer: the next poll asks again from the same point.
async fn poll_issued(watch: &PeerWatch, since: OffsetDateTime) -> Option<IssuanceFeed> {
    let store = watch.store.clone();
    let from = since - ISSUANCE_FEED_OVERLAP;
    match tokio::task::spawn_blocking(move || blocking_section(|| store.issued_since(from))).await {
        Ok(Ok(feed)) => Some(feed),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "asking the store for other nodes' certificates failed; retrying");
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "asking the store for certificates did not finish");
            None
        }
    }
}
