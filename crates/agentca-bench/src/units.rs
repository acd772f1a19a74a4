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

/// What `/proc` said about the server process and the generator over the measured window.
pub(crate) struct ProcessUsage {
    pub(crate) server_pid: Option<u32>,
    pub(crate) server_cpu: Option<Duration>,
    pub(crate) server_cpu_each: Option<Duration>,
    pub(crate) server_rss: (Option<u64>, Option<u64>, Option<u64>),
    pub(crate) client_cpu_each: Option<Duration>,
}

impl ProcessUsage {
    /// The `server:` and `generator:` lines of a text report, costs given per `unit`.
    pub(crate) fn write_text(&self, out: &mut String, unit: &str) {
        use std::fmt::Write as _;
        if let Some(pid) = self.server_pid {
            let cpu = match (self.server_cpu, self.server_cpu_each) {
                (Some(total), Some(each)) => format!(
                    "CPU {:.2} s, {} per {unit}",
                    total.as_secs_f64(),
                    human(each)
                ),
                (Some(total), None) => format!("CPU {:.2} s", total.as_secs_f64()),
                _ => "CPU unknown".to_owned(),
            };
            let rss = match self.server_rss {
                (Some(a), Some(b), Some(m)) => {
                    format!("RSS {} -> {} (max {})", mib(a), mib(b), mib(m))
                }
                _ => "RSS unknown".to_owned(),
            };
            let _ = writeln!(out, "server:      pid {pid}, {cpu}; {rss}");
        }
        if let Some(each) = self.client_cpu_each {
            let _ = writeln!(out, "generator:   CPU {} per {unit}", human(each));
        }
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
