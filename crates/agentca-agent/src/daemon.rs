//! The renewal daemon: waits for the renewal time, renews, installs, runs the hook, and backs
//! off on failure; gives up only when the certificate has expired and the CA refuses for good.
//! While it waits it watches the certificate over OCSP, and renews at once when it is revoked.
//!
//! Time is the CA's: the plan compares the certificate's validity and the ARI window with
//! this machine's clock corrected by how far the CA's `Date` says it is off (CLI-7), so a
//! machine whose clock runs hours ahead does not see every new certificate as expired and
//! renew in a loop, and one whose clock lags does not let its certificate expire.

use std::time::Duration;

use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::acme::AcmeClient;
use crate::enroll::{self, Issued, Protocol, REQUEST_TIMEOUT};
use crate::error::{AgentError, Result};
use crate::files::CredentialFiles;
use crate::http::HttpClient;
use crate::revocation::Watch;
use crate::schedule::{Backoff, RenewalWindow, jitter, renewal_time};

/// The longest the daemon sleeps before it looks again (the server's window may move, e.g.
/// after a revocation, and the files may have been replaced).
const MAX_SLEEP: Duration = Duration::from_secs(6 * 3600);
/// The smallest clock difference reported to the observer: `Date` has one-second resolution
/// and the request takes time, so differences below a few seconds are measurement noise.
pub const REPORTED_SKEW: time::Duration = time::Duration::seconds(5);

/// What the daemon reports as it goes.
pub trait Observer {
    /// A renewal is planned for `at`.
    fn planned(&mut self, at: OffsetDateTime, window: Option<RenewalWindow>);
    /// A new certificate was installed.
    fn renewed(&mut self, issued: &Issued);
    /// A renewal failed; the next attempt is in `retry_in`.
    fn failed(&mut self, error: &AgentError, retry_in: Duration);
    /// The CA's clock (its `Date`) differs from this machine's by `offset` (positive: the CA
    /// is ahead), by at least [`REPORTED_SKEW`]; plans are made in the CA's time.
    fn clock_skew(&mut self, offset: time::Duration) {
        let _ = offset;
    }
    /// The installed certificate was found revoked (`detail` says by whom and why), so a
    /// renewal follows at once instead of at the planned time.
    fn revoked(&mut self, detail: &str) {
        let _ = detail;
    }
}

/// The validity of the installed leaf.
fn validity(files: &CredentialFiles) -> Result<(Vec<u8>, OffsetDateTime, OffsetDateTime)> {
    let leaf = enroll::current_leaf(files)?.ok_or_else(|| AgentError::Layout {
        path: files.cert_path().to_owned(),
        reason: "no certificate installed; enroll first".into(),
    })?;
    let (_, cert) = X509Certificate::from_der(&leaf)
        .map_err(|e| AgentError::Credentials(format!("the installed certificate: {e}")))?;
    let nb = cert.validity().not_before.to_datetime();
    let na = cert.validity().not_after.to_datetime();
    Ok((leaf, nb, na))
}

/// When to renew, as [`next_renewal`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// When to renew, in the CA's time.
    pub at: OffsetDateTime,
    /// How long the server's ARI answer holds (its `Retry-After`).
    pub holds: Option<Duration>,
    /// How far the CA's clock is ahead of this machine's, when the CA sent a `Date`.
    pub clock_offset: Option<time::Duration>,
}

/// When the installed certificate should be renewed, asking the server's ARI when it has
/// one; how long that answer holds; and how the CA's clock differs from ours.
pub async fn next_renewal(files: &CredentialFiles) -> Result<Plan> {
    let (leaf, nb, na) = validity(files)?;
    let (record, ca) = enroll::read_enrollment(files)?;
    // Only ACME has ARI; SCEP agents renew at two thirds of the lifetime.
    let (window, clock_offset) = match &record.protocol {
        Protocol::Acme(account) => {
            let http = HttpClient::new(&enroll::tls_roots(files, &ca)?, REQUEST_TIMEOUT)?;
            match AcmeClient::resume(http, account).await {
                Ok(client) => (
                    client.renewal_window(&leaf).await.ok().flatten(),
                    client.server_clock_offset(),
                ),
                Err(_) => (None, None),
            }
        }
        Protocol::Scep { .. } => (None, None),
    };
    let at = renewal_time(nb, na, window.map(|(w, _)| w), jitter());
    Ok(Plan {
        at,
        holds: window.and_then(|(_, retry)| retry),
        clock_offset,
    })
}

/// Runs until an unrecoverable error: renews the certificate at `files` whenever it is due,
/// and calls `after_rotation` after each new pair is installed.
pub async fn run(
    files: &CredentialFiles,
    observer: &mut dyn Observer,
    mut after_rotation: impl FnMut(&Issued),
) -> Result<()> {
    let mut backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(600));
    // The CA's clock minus ours, as last measured; zero until the CA has sent a `Date`.
    let mut offset = time::Duration::ZERO;
    let mut reported = time::Duration::ZERO;
    let ca_now = |offset: time::Duration| OffsetDateTime::now_utc() + offset;
    loop {
        let (_, _, not_after) = validity(files)?;
        // Asked before the plan, so that a revocation is met with a renewal (and reported as
        // such) whenever it is first seen. A certificate that names no responder, or cannot
        // be read, is not watched.
        let mut watch = Watch::new(files).ok().flatten();
        let revoked = match watch.as_mut() {
            Some(watch) => watch.check().await.revoked(),
            None => None,
        };
        if let Some(detail) = revoked {
            observer.revoked(&detail);
        } else {
            let (at, holds) = match next_renewal(files).await {
                Ok(plan) => {
                    if let Some(measured) = plan.clock_offset {
                        offset = measured;
                        if (offset - reported).abs() >= REPORTED_SKEW {
                            observer.clock_skew(offset);
                            reported = offset;
                        }
                    }
                    (plan.at, plan.holds)
                }
                Err(e) if e.is_transient() => (ca_now(offset), None),
                Err(e) => return Err(e),
            };
            let now = ca_now(offset);
            if at > now {
                observer.planned(at, None);
                let until = Duration::try_from(at - now).unwrap_or(Duration::ZERO);
                let look_again = holds.unwrap_or(MAX_SLEEP).min(MAX_SLEEP);
                let wait = until.min(look_again).max(Duration::from_secs(1));
                match wait_watching(watch.as_mut(), wait).await {
                    Some(detail) => observer.revoked(&detail),
                    None if until > look_again => continue,
                    None => {}
                }
            }
        }
        match enroll::renew(files).await {
            Ok(issued) => {
                backoff.reset();
                observer.renewed(&issued);
                after_rotation(&issued);
            }
            Err(e) => {
                let now = ca_now(offset);
                if now >= not_after && !e.is_transient() {
                    return Err(AgentError::Refused {
                        kind: "expired".into(),
                        detail: format!(
                            "the certificate expired at {not_after} and the CA refuses to renew it: {e}"
                        ),
                        retry_after: None,
                    });
                }
                let wait = backoff.next_delay(e.retry_after(), now, not_after, jitter());
                observer.failed(&e, wait);
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Waits `wait`, asking about the certificate's OCSP status every [`Watch::interval`];
/// returns early, with what the answer said, when it is revoked.
async fn wait_watching(watch: Option<&mut Watch>, wait: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + wait;
    let Some(watch) = watch else {
        tokio::time::sleep_until(deadline).await;
        return None;
    };
    loop {
        let pause = watch.interval(OffsetDateTime::now_utc());
        let next = (tokio::time::Instant::now() + pause).min(deadline);
        tokio::time::sleep_until(next).await;
        if next >= deadline {
            return None;
        }
        if let Some(detail) = watch.check().await.revoked() {
            return Some(detail);
        }
    }
}
