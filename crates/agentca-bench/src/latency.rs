//! Quantiles of one latency distribution, as every report prints them: milliseconds in JSON,
//! readable units in text.

use std::time::Duration;

use serde_json::{Value, json};

use crate::histogram::Histogram;
use crate::units::{human, millis};

/// Quantiles of one latency distribution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean: Duration,
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
}

impl LatencySummary {
    pub(crate) fn of(h: &Histogram) -> Self {
        Self {
            count: h.count(),
            mean: h.mean(),
            p50: h.quantile(0.50),
            p90: h.quantile(0.90),
            p99: h.quantile(0.99),
            max: h.max(),
        }
    }

    pub(crate) fn to_json(self) -> Value {
        json!({
            "count": self.count,
            "mean": millis(self.mean),
            "p50": millis(self.p50),
            "p90": millis(self.p90),
            "p99": millis(self.p99),
            "max": millis(self.max),
        })
    }

    pub(crate) fn to_text(self) -> String {
        format!(
            "p50 {}, p90 {}, p99 {}, max {}",
            human(self.p50),
            human(self.p90),
            human(self.p99),
            human(self.max)
        )
    }
}
