//! How both reports count and print: durations, memory, costs per unit, differences between two
//! readings of a counter.

use std::time::Duration;

/// Seconds, to the millisecond, for JSON.
pub(crate) fn seconds(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// Milliseconds, to the hundredth, for JSON (an order or an enrollment takes that long).
pub(crate) fn millis(d: Duration) -> f64 {
    (d.as_nanos() as f64 / 10_000.0).round() / 100.0
}

/// A duration the way people read latencies: µs below a millisecond, ms below a second.
pub(crate) fn human(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns < 1e6 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.3} s", ns / 1e9)
    }
}

/// Bytes as MiB with one decimal.
pub(crate) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// `total` spread over `count` units; `None` when nothing was counted.
pub(crate) fn per(total: Duration, count: u64) -> Option<Duration> {
    (count > 0).then(|| {
        let nanos = total.as_nanos() / u128::from(count);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    })
}

/// How much a counter (CPU time) grew between two readings, if both were taken.
pub(crate) fn growth(first: Option<Duration>, last: Option<Duration>) -> Option<Duration> {
    match (first, last) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(human(Duration::from_micros(250)), "250.0 µs");
        assert_eq!(human(Duration::from_millis(12)), "12.00 ms");
        assert_eq!(mib(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(per(Duration::from_secs(3), 0), None);
        assert_eq!(per(Duration::from_secs(3), 3), Some(Duration::from_secs(1)));
        assert_eq!(
            growth(Some(Duration::from_secs(1)), Some(Duration::from_secs(4))),
            Some(Duration::from_secs(3))
        );
        assert_eq!(growth(None, Some(Duration::from_secs(4))), None);
        assert_eq!(seconds(Duration::from_millis(1234)), 1.234);
        assert_eq!(millis(Duration::from_micros(12_345)), 12.35);
    }
}
