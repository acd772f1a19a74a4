//! Where "now" comes from, so tests can move time.

use std::fmt::Debug;

use rustls_pki_types::UnixTime;
use time::OffsetDateTime;

/// The source of the current time for checks that do not receive one (the async
/// [`crate::Verifier::verify`], cache bookkeeping, background refreshes).
pub trait Clock: Debug + Send + Sync {
    /// The current time.
    fn now(&self) -> OffsetDateTime;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// `t` for webpki, which counts whole seconds since 1970 (earlier times become 1970).
pub(crate) fn unix_time(t: OffsetDateTime) -> UnixTime {
    let secs = u64::try_from(t.unix_timestamp()).unwrap_or(0);
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs))
}

/// A webpki time as an `OffsetDateTime` (saturating at the far future).
pub(crate) fn offset_date_time(t: UnixTime) -> OffsetDateTime {
    i64::try_from(t.as_secs())
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::macros::datetime!(9999-12-31 23:59:59 UTC))
}

/// A std duration as a `time` duration, saturating.
pub(crate) fn duration(d: std::time::Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

/// `t + d`, saturating instead of panicking on overflow.
pub(crate) fn later(t: OffsetDateTime, d: time::Duration) -> OffsetDateTime {
    t.checked_add(d)
        .unwrap_or(time::macros::datetime!(9999-12-31 23:59:59 UTC))
}
