//! A latency histogram of constant size: exact below 256 ns, then 128 buckets per power of two,
//! so every quantile it reports is within 1/128 (under 0.8 %) above the true sample.
//!
//! Keeping every sample would be exact too, but a long run at 100,000 requests/s would hold
//! gigabytes; this keeps 58 KiB per worker whatever the run's length.

use std::time::Duration;

/// Sub-buckets per power of two, as a power of two itself.
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// Values below this are counted exactly.
const EXACT: u64 = SUB << 1;
/// Buckets needed for the whole `u64` range.
const BUCKETS: usize = ((64 - SUB_BITS as usize) * SUB as usize) + SUB as usize;

/// Counts of latencies in nanoseconds.
#[derive(Clone, Debug)]
pub(crate) struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum_ns: u128,
    max_ns: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            sum_ns: 0,
            max_ns: 0,
        }
    }
}

impl Histogram {
    pub(crate) fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.counts[bucket(ns)] += 1;
        self.total += 1;
        self.sum_ns += u128::from(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    pub(crate) fn merge(&mut self, other: &Self) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.sum_ns += other.sum_ns;
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    pub(crate) fn count(&self) -> u64 {
        self.total
    }

    pub(crate) fn max(&self) -> Duration {
        Duration::from_nanos(self.max_ns)
    }

    pub(crate) fn mean(&self) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        let mean = self.sum_ns / u128::from(self.total);
        Duration::from_nanos(u64::try_from(mean).unwrap_or(u64::MAX))
    }

    /// The smallest bucket bound at or below which a fraction `q` of the samples lie, capped
    /// at the largest sample (so a quantile never exceeds the maximum).
    pub(crate) fn quantile(&self, q: f64) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        // The rank of the sample wanted, 1-based; `q` outside [0, 1] is clamped by the casts.
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Duration::from_nanos(upper_bound(index).min(self.max_ns));
            }
        }
        self.max()
    }
}

fn bucket(ns: u64) -> usize {
    if ns < EXACT {
        return ns as usize;
    }
    let exponent = 63 - ns.leading_zeros(); // >= SUB_BITS + 1
    let shift = exponent - SUB_BITS;
    let sub = ns >> shift; // in [SUB, 2 * SUB)
    (shift as usize) * SUB as usize + sub as usize
}

/// The largest value that falls into bucket `index`.
fn upper_bound(index: usize) -> u64 {
    let index = index as u64;
    if index < EXACT {
        return index;
    }
    let shift = (index >> SUB_BITS) - 1;
    let sub = (index & (SUB - 1)) + SUB;
    (sub << shift) | ((1 << shift) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_cover_u64() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(EXACT - 1), (EXACT - 1) as usize);
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        assert_eq!(upper_bound(BUCKETS - 1), u64::MAX);
        for index in 0..BUCKETS - 1 {
            let top = upper_bound(index);
            assert_eq!(bucket(top), index, "top of bucket {index}");
            assert_eq!(bucket(top + 1), index + 1, "bottom of bucket {}", index + 1);
        }
    }

    #[test]
    fn quantiles_are_within_the_stated_precision() {
        let mut h = Histogram::default();
        // 1 µs .. 10 ms, evenly.
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us));
        }
        assert_eq!(h.count(), 10_000);
        for (q, exact_us) in [(0.5, 5_000.0), (0.9, 9_000.0), (0.99, 9_900.0)] {
            let got = h.quantile(q).as_nanos() as f64 / 1_000.0;
            assert!(
                got >= exact_us && got <= exact_us * (1.0 + 1.0 / 128.0),
                "q{q}: {got} µs, exact {exact_us}"
            );
        }
        assert_eq!(h.quantile(1.0), Duration::from_millis(10));
        assert_eq!(h.max(), Duration::from_millis(10));
        assert_eq!(h.mean(), Duration::from_nanos(5_000_500));
    }

    #[test]
    fn merge_adds_up() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        a.record(Duration::from_micros(100));
        b.record(Duration::from_micros(300));
        b.record(Duration::from_secs(5));
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.max(), Duration::from_secs(5));
        assert!(a.quantile(0.5) >= Duration::from_micros(300));
        assert!(a.quantile(0.5) < Duration::from_micros(303));
    }

    #[test]
    fn empty_histogram_reports_zero() {
        let h = Histogram::default();
        assert_eq!(h.quantile(0.99), Duration::ZERO);
        assert_eq!(h.mean(), Duration::ZERO);
    }
}
