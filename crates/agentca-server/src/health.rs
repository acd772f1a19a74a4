//! `/healthz`: can the service still record what it acknowledges?
//!
//! A probe writes and syncs a small file in the data directory and commits the store (a
//! flush and fsync). Probes run at most once per [`PROBE_INTERVAL`]; requests in between get
//! the last result, so polling `/healthz` cannot turn into a disk benchmark.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentca_core::ca::Ca;
use tokio::sync::Mutex;

use crate::metrics::Metrics;

/// How long a probe result is reused.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The name of the probe file in the data directory.
const PROBE_FILE: &str = ".healthz";

/// Cached storage health.
pub(crate) struct Health {
    ca: Arc<Ca>,
    metrics: Arc<Metrics>,
    last: Mutex<Option<(Instant, bool)>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health").finish_non_exhaustive()
    }
}

impl Health {
    pub(crate) fn new(ca: Arc<Ca>, metrics: Arc<Metrics>) -> Self {
        Self {
            ca,
            metrics,
            last: Mutex::new(None),
        }
    }

    /// Whether storage could write at the last probe (probing again if that was long ago).
    pub(crate) async fn healthy(&self) -> bool {
        // Concurrent callers queue here, so at most one probe runs at a time.
        let mut last = self.last.lock().await;
        if let Some((at, ok)) = *last
            && at.elapsed() < PROBE_INTERVAL
        {
            return ok;
        }
        let ca = self.ca.clone();
        let ok = match tokio::task::spawn_blocking(move || probe(&ca)).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "health probe: storage cannot write");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "health probe did not finish");
                false
            }
        };
        if !ok {
            self.metrics.health_failures.inc();
        }
        *last = Some((Instant::now(), ok));
        ok
    }
}

fn probe(ca: &Ca) -> Result<(), String> {
    let path = ca.dir().file(PROBE_FILE);
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .and_then(|mut f| {
            f.write_all(stamp.as_bytes())?;
            f.sync_all()
        })
        .map_err(|e| format!("write {PROBE_FILE}: {e}"))?;
    ca.store()
        .commit()
        .map_err(|e| format!("store commit: {e}"))?;
    // A database store commits every write as it goes, so its commit touches nothing; one
    // single-row read shows the database answers.
    ca.store()
        .crl_state()
        .map_err(|e| format!("store read: {e}"))?;
    Ok(())
}
