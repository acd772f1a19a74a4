//! When to renew: the server's ARI window when it offers one, otherwise two thirds into the
//! lifetime, spread by jitter so that a fleet enrolled together does not renew together; and
//! how long to wait after a failure.
//!
//! Randomness comes in as a fraction in `[0, 1)` so the rules are testable; the daemon draws
//! it from the system's random source.

use std::time::Duration;

use time::OffsetDateTime;

/// How much earlier than two thirds of the lifetime a renewal without ARI may be placed:
/// a twentieth of the lifetime (3 minutes of a 1-hour certificate).
const SPREAD_WITHOUT_ARI: f64 = 1.0 / 20.0;

/// A uniform draw from `[0, 1)` from the system's random source (0.5 if it fails: the middle
/// of a window is as good a place as any).
pub fn jitter() -> f64 {
    let mut bytes = [0u8; 8];
    match aws_lc_rs::rand::fill(&mut bytes) {
        // 53 random bits: every f64 in [0, 1) that the mantissa can hold.
        Ok(()) => (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    }
}

/// A renewal window as the server suggests it (RFC 9773 §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenewalWindow {
    /// The window's start.
    pub start: OffsetDateTime,
    /// The window's end.
    pub end: OffsetDateTime,
}

/// When to renew a certificate valid from `not_before` to `not_after`.
///
/// With a `window`, a point uniformly inside it (RFC 9773 §4.2), but never after the
/// certificate expires; a window already over means now. Without, two thirds into the
/// lifetime, moved earlier by up to a twentieth of it.
pub fn renewal_time(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    window: Option<RenewalWindow>,
    jitter: f64,
) -> OffsetDateTime {
    let jitter = jitter.clamp(0.0, 1.0);
    let lifetime = (not_after - not_before).max(time::Duration::ZERO);
    let at = match window {
        Some(w) if w.end > w.start => w.start + (w.end - w.start) * jitter,
        Some(w) => w.start,
        None => not_before + lifetime * (2.0 / 3.0) - lifetime * (SPREAD_WITHOUT_ARI * jitter),
    };
    at.min(not_after)
}

/// Exponential backoff after failed renewals, capped, with jitter, and never past the point
/// where the certificate expires (the last attempts are spread over what is left).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    /// Waits start at `initial` and double up to `cap`.
    pub fn new(initial: Duration, cap: Duration) -> Self {
        Self {
            initial,
            cap: cap.max(initial),
            failures: 0,
        }
    }

    /// The wait after one more failure: the doubled delay, between half and all of it
    /// (`jitter` picks where), or what the server asked for (`retry_after`) if that is longer,
    /// and while the certificate is valid never beyond half of the time it has left.
    pub fn next_delay(
        &mut self,
        retry_after: Option<Duration>,
        now: OffsetDateTime,
        not_after: OffsetDateTime,
        jitter: f64,
    ) -> Duration {
        let doubled = self
            .initial
            .saturating_mul(1u32 << self.failures.min(16))
            .min(self.cap);
        self.failures = self.failures.saturating_add(1);
        let jittered = doubled.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
        let wanted = retry_after.map_or(jittered, |r| r.max(jittered));
        if now >= not_after {
            // Nothing left to protect: plain backoff, so an expired agent does not hammer.
            return wanted;
        }
        let half_left = Duration::try_from((not_after - now) / 2).unwrap_or(Duration::ZERO);
        wanted.min(half_left.max(Duration::from_secs(1)))
    }

    /// After a success the next failure starts from `initial` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// How many failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    const NB: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);
    const NA: OffsetDateTime = datetime!(2026-01-01 01:00 UTC);

    #[test]
    fn without_a_window_renewal_is_two_thirds_in_moved_earlier_by_jitter() {
        assert_eq!(
            renewal_time(NB, NA, None, 0.0),
            datetime!(2026-01-01 00:40 UTC)
        );
        assert_eq!(
            renewal_time(NB, NA, None, 1.0),
            datetime!(2026-01-01 00:37 UTC)
        );
        let mid = renewal_time(NB, NA, None, 0.5);
        assert!(mid > datetime!(2026-01-01 00:37 UTC) && mid < datetime!(2026-01-01 00:40 UTC));
    }

    #[test]
    fn a_window_is_used_uniformly_and_never_past_expiry() {
        let window = RenewalWindow {
            start: datetime!(2026-01-01 00:45 UTC),
            end: datetime!(2026-01-01 00:55 UTC),
        };
        assert_eq!(renewal_time(NB, NA, Some(window), 0.0), window.start);
        assert_eq!(
            renewal_time(NB, NA, Some(window), 0.5),
            datetime!(2026-01-01 00:50 UTC)
        );
        let late = RenewalWindow {
            start: datetime!(2026-01-01 02:00 UTC),
            end: datetime!(2026-01-01 03:00 UTC),
        };
        assert_eq!(renewal_time(NB, NA, Some(late), 0.3), NA);
        let inverted = RenewalWindow {
            start: window.end,
            end: window.start,
        };
        assert_eq!(renewal_time(NB, NA, Some(inverted), 0.9), window.end);
    }

    #[test]
    fn a_revoked_certificate_gets_an_immediate_window() {
        let now = datetime!(2026-01-01 00:10 UTC);
        let window = RenewalWindow {
            start: now - time::Duration::minutes(1),
            end: now,
        };
        assert!(renewal_time(NB, NA, Some(window), 0.7) <= now);
    }

    #[test]
    fn jitter_is_a_fraction() {
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(60));
        let far = NB + time::Duration::days(1);
        let delays: Vec<u64> = (0..8)
            .map(|_| b.next_delay(None, NB, far, 1.0).as_secs())
            .collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(b.failures(), 8);
        b.reset();
        assert_eq!(b.next_delay(None, NB, far, 0.0), Duration::from_secs(1));
    }

    #[test]
    fn backoff_honours_retry_after_and_the_time_left() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(600));
        let far = NB + time::Duration::days(1);
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(30)), NB, far, 1.0),
            Duration::from_secs(30)
        );
        // Ten minutes left: never wait more than five.
        let soon = NB + time::Duration::minutes(10);
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(3600)), NB, soon, 1.0),
            Duration::from_secs(300)
        );
        // Expired: the plain backoff (the third failure: 8 s).
        assert_eq!(b.next_delay(None, NA, NB, 1.0), Duration::from_secs(8));
    }
}
