//! Rate limits shared by the backends: the generic cell rate algorithm (GCRA) and the one
//! value it keeps per key, so that a backend only needs an atomic read-modify-write of that value.

use crate::{RateDecision, Result, StoreError};

/// A key's stored theoretical arrival time (16 bytes, big-endian nanoseconds), or `now` for a
/// key never limited.
pub(crate) fn decode_tat(key: &str, stored: Option<&[u8]>, now_ns: i128) -> Result<i128> {
    match stored {
        None => Ok(now_ns),
        Some(raw) => <[u8; 16]>::try_from(raw)
            .map(i128::from_be_bytes)
            .map_err(|_| StoreError::Corrupt {
                key: key.to_owned(),
                reason: "rate limit state is not 16 bytes".into(),
            }),
    }
}

pub(crate) fn limited(wait_ns: i128) -> RateDecision {
    RateDecision::Limited {
        retry_after: time::Duration::nanoseconds(i64::try_from(wait_ns).unwrap_or(i64::MAX)),
    }
}

/// The generic cell rate algorithm: `limit` units per `window`, bursts up to `limit`.
/// The only state is the theoretical arrival time (TAT) of the next unit.
pub(crate) struct Gcra {
    /// Nanoseconds one unit costs.
    interval: i128,
    /// How far the TAT may run ahead of now.
    tolerance: i128,
}

impl Gcra {
    pub(crate) fn new(limit: u32, window: time::Duration) -> Self {
        let interval = (window.whole_nanoseconds() / i128::from(limit.max(1))).max(1);
        Self {
            interval,
            tolerance: interval * i128::from(limit.max(1)) - interval,
        }
    }

    /// The new TAT if a unit may be taken at `now`, else how long to wait (nanoseconds).
    pub(crate) fn take(&self, tat: i128, now: i128) -> std::result::Result<i128, i128> {
        let tat = tat.max(now);
        let earliest = tat - self.tolerance;
        if now < earliest {
            return Err(earliest - now);
        }
        Ok(tat + self.interval)
    }

    /// The TAT after one unit taken by [`Gcra::take`] is given back at `now`. A TAT at or
    /// before `now` already means a full budget, so it never goes below `now`.
    pub(crate) fn give_back(&self, tat: i128, now: i128) -> i128 {
        (tat - self.interval).max(now)
    }
}

#[cfg(test)]
mod tests {
    use super::Gcra;

    #[test]
    fn gcra_allows_a_burst_then_paces() {
        let second = 1_000_000_000i128;
        let g = Gcra::new(3, time::Duration::seconds(3));
        let mut tat = 0;
        for _ in 0..3 {
            tat = g.take(tat, 0).unwrap();
        }
        let wait = g.take(tat, 0).unwrap_err();
        assert_eq!(wait, second);
        assert!(g.take(tat, second).is_ok());
    }

    #[test]
    fn a_unit_given_back_can_be_taken_again_and_no_more() {
        let g = Gcra::new(2, time::Duration::seconds(2));
        let full = g.take(g.take(0, 0).unwrap(), 0).unwrap();
        assert!(g.take(full, 0).is_err());
        let returned = g.give_back(full, 0);
        let again = g.take(returned, 0).unwrap();
        assert!(g.take(again, 0).is_err());
        // Nothing taken, nothing to give back: the budget stays a burst of 2.
        let idle = g.give_back(g.give_back(0, 0), 0);
        assert_eq!(idle, 0);
        let two = g.take(g.take(idle, 0).unwrap(), 0).unwrap();
        assert!(g.take(two, 0).is_err());
    }
}
