//! Timed work: CRL publication, OCSP priming and refresh, responder rotation and renewal of
//! the HTTPS certificate. Signing and store work runs on tokio's blocking pool so that it never
//! delays a request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agentca_core::ca::Ca;
use agentca_core::issuer::Authority;
use agentca_core::keyfile::Protection;
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::cache::Due;
use crate::crl::CrlPublisher;
use crate::error::ServerError;
use crate::metrics::Metrics;
use crate::ocsp::OcspService;
use crate::rotation;
use crate::tls::TlsIdentity;

/// How often responder and HTTPS certificate expiry are checked.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(600);

/// How soon a failed CRL publication is retried.
const CRL_RETRY: Duration = Duration::from_secs(30);

/// The jobs that replace certificates, shared by the scheduler and the operator hooks.
pub(crate) struct Maintenance {
    pub(crate) ca: Arc<Ca>,
    pub(crate) authority: Arc<Authority>,
    pub(crate) protection: Protection,
    pub(crate) ocsp: Arc<OcspService>,
    pub(crate) tls: Arc<TlsIdentity>,
    pub(crate) metrics: Arc<Metrics>,
    /// Wakes the OCSP refresh job (after a rotation, every response wants a new signature).
    pub(crate) refresh: Notify,
    /// One rotation at a time.
    rotating: std::sync::Mutex<()>,
}

impl std::fmt::Debug for Maintenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maintenance").finish_non_exhaustive()
    }
}

impl Maintenance {
    pub(crate) fn new(
        ca: Arc<Ca>,
        authority: Arc<Authority>,
        protection: Protection,
        ocsp: Arc<OcspService>,
        tls: Arc<TlsIdentity>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            ca,
            authority,
            protection,
            ocsp,
            tls,
            metrics,
            refresh: Notify::new(),
            rotating: std::sync::Mutex::new(()),
        }
    }

    /// Replaces the responder key and certificate now (blocking).
    pub(crate) fn rotate_responder(&self) -> Result<(), ServerError> {
        let _one = self
            .rotating
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = rotation::rotate(
            &self.ca,
            &self.authority,
            &self.protection,
            self.ocsp.validity(),
        )?;
        self.ocsp.install(key);
        self.refresh.notify_one();
        Ok(())
    }

    /// Runs the expiry checks (blocking).
    pub(crate) fn check(&self) {
        let now = OffsetDateTime::now_utc();
        if rotation::due(&self.ocsp.responder(), now)
            && let Err(e) = self.rotate_responder()
        {
            tracing::error!(error = %e, "OCSP responder rotation failed; retrying later");
        }
        match self.tls.renew_if_due(&self.authority, now) {
            Ok(Some(record)) => {
                tracing::info!(serial = %record.intent.serial, "HTTPS certificate renewed");
                self.ocsp.presign(&record);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "HTTPS certificate renewal failed; retrying later")
            }
        }
        self.metrics
            .tls_not_after
            .set(self.tls.not_after().unix_timestamp());
    }
}

/// The running jobs.
pub(crate) struct Scheduler {
    tasks: Vec<JoinHandle<()>>,
}

/// What the scheduler needs.
pub(crate) struct Jobs {
    pub(crate) ocsp: Arc<OcspService>,
    pub(crate) crl: Arc<CrlPublisher>,
    pub(crate) maintenance: Arc<Maintenance>,
    pub(crate) crl_interval: Duration,
    pub(crate) crl_debounce: Duration,
    /// With a store other nodes write: the watch for their revocations and certificates.
    pub(crate) peer_watch: Option<crate::peers::PeerWatch>,
}

impl Scheduler {
    /// Starts every job; they end when `stop` turns true (blocking work checks `halt`).
    pub(crate) fn start(jobs: Jobs, stop: watch::Receiver<bool>, halt: Arc<AtomicBool>) -> Self {
        let mut tasks = Vec::with_capacity(4);
        // Two polls: time for another node's CRL of this period to be adopted here.
        let crl_grace = jobs
            .peer_watch
            .as_ref()
            .map_or(Duration::ZERO, |watch| watch.interval * 2);
        if let Some(watch) = jobs.peer_watch {
            tasks.push(tokio::spawn(crate::peers::peer_watch_job(
                watch,
                stop.clone(),
            )));
        }
        tasks.extend([
            tokio::spawn(crl_job(
                jobs.crl,
                jobs.crl_interval,
                jobs.crl_debounce,
                crl_grace,
                stop.clone(),
            )),
            tokio::spawn(ocsp_job(
                jobs.ocsp,
                jobs.maintenance.clone(),
                stop.clone(),
                halt.clone(),
            )),
            tokio::spawn(maintenance_job(jobs.maintenance, stop)),
        ]);
        Self { tasks }
    }

    /// Waits for the jobs to end, at most `grace`.
    pub(crate) async fn join(self, grace: Duration) {
        let all = async {
            for task in self.tasks {
                if let Err(e) = task.await {
                    tracing::error!(error = %e, "a scheduler job failed");
                }
            }
        };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!("scheduler jobs still running at shutdown");
        }
    }
}

/// Resolves once `stop` is true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn crl_job(
    crl: Arc<CrlPublisher>,
    interval: Duration,
    debounce: Duration,
    grace: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut next = tokio::time::Instant::now() + interval;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {
                // The served CRL may be recent still (another node's, adopted since this node
                // last signed one): then this period's CRL would only add a number.
                if let Some(wait) = crl.recent_for(interval, grace) {
                    next = tokio::time::Instant::now() + wait;
                    continue;
                }
            }
            _ = crl.requested() => {
                // Let a burst of revocations end up on one CRL.
                tokio::select! {
                    _ = tokio::time::sleep(debounce) => {}
                    _ = stopped(&mut stop) => break,
                }
                if !crl.take_request() {
                    continue;
                }
            }
            _ = stopped(&mut stop) => break,
        }
        crl.take_request();
        let publisher = crl.clone();
        next = match tokio::task::spawn_blocking(move || publisher.publish()).await {
            Ok(Ok(_)) => tokio::time::Instant::now() + interval,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "CRL publication failed; retrying");
                tokio::time::Instant::now() + CRL_RETRY.min(interval)
            }
            Err(e) => {
                tracing::error!(error = %e, "CRL publication did not finish; retrying");
                tokio::time::Instant::now() + CRL_RETRY.min(interval)
            }
        };
    }
}

/// How often the cache is scanned for responses to re-sign: often enough that a response is
/// replaced well before half of its validity.
fn refresh_interval(validity: time::Duration) -> Duration {
    (validity.unsigned_abs() / 20).clamp(Duration::from_secs(1), Duration::from_secs(600))
}

async fn ocsp_job(
    ocsp: Arc<OcspService>,
    maintenance: Arc<Maintenance>,
    mut stop: watch::Receiver<bool>,
    halt: Arc<AtomicBool>,
) {
    // Priming: every unexpired certificate, while requests are already being served (they
    // sign on demand until their response is ready).
    let started = std::time::Instant::now();
    let lister = ocsp.clone();
    let due = match tokio::task::spawn_blocking(move || lister.unprimed()).await {
        Ok(Ok(due)) => due,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "listing certificates to pre-sign failed");
            Vec::new()
        }
        Err(e) => {
            tracing::error!(error = %e, "listing certificates to pre-sign did not finish");
            Vec::new()
        }
    };
    let wanted = due.len();
    let signed = sign_in_parallel(&ocsp, due, &halt).await;
    tracing::info!(
        wanted,
        signed,
        seconds = started.elapsed().as_secs_f64(),
        "OCSP responses pre-signed"
    );

    let interval = refresh_interval(ocsp.validity());
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = maintenance.refresh.notified() => {}
            _ = stopped(&mut stop) => break,
        }
        if halt.load(Ordering::Relaxed) {
            break;
        }
        let stale = ocsp.stale(OffsetDateTime::now_utc());
        if !stale.is_empty() {
            let n = stale.len();
            let signed = sign_in_parallel(&ocsp, stale, &halt).await;
            tracing::debug!(stale = n, signed, "OCSP responses refreshed");
        }
    }
}

/// Signs on about half of the cores, leaving the rest to the listeners.
async fn sign_in_parallel(ocsp: &Arc<OcspService>, due: Vec<Due>, halt: &Arc<AtomicBool>) -> usize {
    if due.is_empty() {
        return 0;
    }
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .div_ceil(2)
        .min(due.len());
    let mut shares: Vec<Vec<Due>> = vec![Vec::with_capacity(due.len() / workers + 1); workers];
    for (i, item) in due.into_iter().enumerate() {
        shares[i % workers].push(item);
    }
    let handles: Vec<_> = shares
        .into_iter()
        .map(|share| {
            let ocsp = ocsp.clone();
            let halt = halt.clone();
            tokio::task::spawn_blocking(move || ocsp.sign_all(&share, &halt))
        })
        .collect();
    let mut signed = 0;
    for handle in handles {
        match handle.await {
            Ok(n) => signed += n,
            Err(e) => tracing::error!(error = %e, "an OCSP signing job failed"),
        }
    }
    signed
}

async fn maintenance_job(maintenance: Arc<Maintenance>, mut stop: watch::Receiver<bool>) {
    loop {
        let m = maintenance.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || m.check()).await {
            tracing::error!(error = %e, "certificate maintenance did not finish");
        }
        tokio::select! {
            _ = tokio::time::sleep(MAINTENANCE_INTERVAL) => {}
            _ = stopped(&mut stop) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_runs_well_within_half_the_validity() {
        for hours in [1, 8, 24, 240] {
            let validity = time::Duration::hours(hours);
            let interval = refresh_interval(validity);
            // Stale at 2/5, re-signed within one more interval: before 1/2.
            assert!(
                time::Duration::try_from(interval).unwrap() + validity * 2 / 5 < validity / 2,
                "{hours} h"
            );
        }
    }
}
