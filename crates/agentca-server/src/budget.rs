//! A token bucket for signatures made while a client waits.
//!
//! Anyone can send OCSP requests with nonces or many CertIDs, each of which wants a fresh
//! signature; the bucket caps how many such signatures a second the responder makes, so a
//! flood costs a bounded amount of CPU and the pre-signed path keeps serving.

use std::sync::Mutex;
use std::time::Instant;

/// Signatures per second, with a burst of one second's worth.
#[derive(Debug)]
pub(crate) struct SigningBudget {
    rate: f64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    tokens: f64,
    refilled: Instant,
}

impl SigningBudget {
    pub(crate) fn new(per_second: u32) -> Self {
        let rate = f64::from(per_second.max(1));
        Self {
            rate,
            state: Mutex::new(State {
                tokens: rate,
                refilled: Instant::now(),
            }),
        }
    }

    /// Takes one signature from the budget; `false` when it is spent.
    pub(crate) fn try_take(&self) -> bool {
        self.try_take_at(Instant::now())
    }

    fn try_take_at(&self, now: Instant) -> bool {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let elapsed = now.saturating_duration_since(state.refilled).as_secs_f64();
        state.tokens = (state.tokens + elapsed * self.rate).min(self.rate);
        state.refilled = now;
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn burst_then_refill() {
        let budget = SigningBudget::new(10);
        let start = Instant::now();
        let taken = (0..100).filter(|_| budget.try_take_at(start)).count();
        assert_eq!(taken, 10);
        assert!(!budget.try_take_at(start + Duration::from_millis(50)));
        assert!(budget.try_take_at(start + Duration::from_millis(150)));
        // A long pause refills only up to the burst.
        let later = start + Duration::from_secs(60);
        assert_eq!((0..100).filter(|_| budget.try_take_at(later)).count(), 10);
    }
}
