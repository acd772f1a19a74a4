//! What an ACME run measured, as text for a terminal and JSON for scripts; the same units and
//! key conventions as the OCSP report, in milliseconds because an order takes that long.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use crate::latency::LatencySummary;
use crate::units::{ProcessUsage, millis, seconds};

/// Failed orders (and failed account creations never get here: they end the run), by
/// `step: HTTP status problem-type` or `step: transport`, `timeout`, `invalid response`, ….
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AcmeErrors {
    /// How many of each kind.
    pub by_kind: BTreeMap<String, u64>,
    /// The first detail seen for each kind (the server's `detail`, or what was wrong).
    pub examples: BTreeMap<String, String>,
}

impl AcmeErrors {
    /// All failed orders.
    pub fn total(&self) -> u64 {
        self.by_kind.values().sum()
    }

    pub(crate) fn add(&mut self, kind: String, detail: String) {
        *self.by_kind.entry(kind.clone()).or_default() += 1;
        self.examples.entry(kind).or_insert(detail);
    }
}

/// How the run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AcmeEnd {
    /// Every order asked for completed.
    Completed,
    /// No order completed for `idle`: the server stopped making progress.
    Stalled {
        /// The idle time that ended the run.
        idle: Duration,
    },
    /// The run's time bound passed first.
    TimeLimit {
        /// The bound.
        limit: Duration,
    },
}

impl AcmeEnd {
    fn name(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Stalled { .. } => "stalled",
            Self::TimeLimit { .. } => "time limit",
        }
    }

    /// What to tell the operator.
    pub fn message(self, orders: u64, requested: u64) -> String {
        match self {
            Self::Completed => format!("{orders} of {requested} orders completed"),
            Self::Stalled { idle } => format!(
                "the server stalled: no order completed in {:.1} s ({orders} of {requested} \
                 orders completed)",
                idle.as_secs_f64()
            ),
            Self::TimeLimit { limit } => format!(
                "the run did not finish within its bound of {:.0} s ({orders} of {requested} \
                 orders completed)",
                limit.as_secs_f64()
            ),
        }
    }
}

/// Per step of the completed orders.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StepLatencies {
    /// newOrder.
    pub new_order: LatencySummary,
    /// Fetching the authorizations, triggering their challenges and waiting for them.
    pub authorize: LatencySummary,
    /// finalize with the CSR, and polling the order until it is valid.
    pub finalize: LatencySummary,
    /// Downloading and checking the certificate.
    pub certificate: LatencySummary,
}

/// The result of [`run_acme`](crate::run_acme): the measured window (accounts are created
/// before it and reported apart), and the server's resource use over the same window.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct AcmeBenchReport {
    /// The directory URL.
    pub directory: String,
    /// Workers (accounts, connections).
    pub concurrency: usize,
    /// Orders asked for.
    pub orders_requested: u64,
    /// Orders completed: certificate downloaded and checked.
    pub orders: u64,
    /// How the run ended.
    pub end: AcmeEnd,
    /// Length of the measured window.
    pub elapsed: Duration,
    /// Completed orders per second.
    pub orders_per_second: f64,
    /// Whole-order latency, newOrder to certificate.
    pub latency: LatencySummary,
    /// The same, step by step.
    pub steps: StepLatencies,
    /// Failed order attempts, by kind.
    pub errors: AcmeErrors,
    /// `badNonce` answers retried successfully or not (a retried request is no error).
    pub bad_nonce_retries: u64,
    /// HTTP requests sent in the window, including polls and nonce requests.
    pub requests: u64,
    /// TCP connections opened in the window.
    pub connections: u64,
    /// Accounts created before the window.
    pub accounts: u64,
    /// Wall time to create them all (concurrently, one per worker).
    pub accounts_elapsed: Duration,
    /// Per account: newNonce and newAccount (and connecting, for the first).
    pub account_latency: LatencySummary,
    /// The observed server process, if one was given.
    pub server_pid: Option<u32>,
    /// The server's CPU time (user + system) over the window.
    pub server_cpu: Option<Duration>,
    /// `server_cpu` divided by the completed orders.
    pub server_cpu_per_order: Option<Duration>,
    /// The server's resident memory when the window opened, in bytes.
    pub server_rss_start: Option<u64>,
    /// When it closed.
    pub server_rss_end: Option<u64>,
    /// The largest seen, sampled every second.
    pub server_rss_max: Option<u64>,
    /// The generator's own CPU time per completed order.
    pub client_cpu_per_order: Option<Duration>,
}

impl AcmeBenchReport {
    /// One JSON object; durations in milliseconds (`_ms`) or seconds (`_s`), memory in bytes.
    pub fn to_json(&self) -> Value {
        let server = self.server_pid.map(|pid| {
            json!({
                "pid": pid,
                "cpu_s": self.server_cpu.map(seconds),
                "cpu_per_order_ms": self.server_cpu_per_order.map(millis),
                "rss_start_bytes": self.server_rss_start,
                "rss_end_bytes": self.server_rss_end,
                "rss_max_bytes": self.server_rss_max,
            })
        });
        let (end_idle, end_limit) = match self.end {
            AcmeEnd::Stalled { idle } => (Some(seconds(idle)), None),
            AcmeEnd::TimeLimit { limit } => (None, Some(seconds(limit))),
            AcmeEnd::Completed => (None, None),
        };
        json!({
            "directory": self.directory,
            "concurrency": self.concurrency,
            "orders_requested": self.orders_requested,
            "orders": self.orders,
            "end": {
                "reason": self.end.name(),
                "message": self.end.message(self.orders, self.orders_requested),
                "idle_s": end_idle,
                "limit_s": end_limit,
            },
            "elapsed_s": seconds(self.elapsed),
            "orders_per_s": (self.orders_per_second * 100.0).round() / 100.0,
            "latency_ms": self.latency.to_json(),
            "steps_ms": {
                "new_order": self.steps.new_order.to_json(),
                "authorize": self.steps.authorize.to_json(),
                "finalize": self.steps.finalize.to_json(),
                "certificate": self.steps.certificate.to_json(),
            },
            "errors": {
                "total": self.errors.total(),
                "by_kind": self.errors.by_kind,
                "examples": self.errors.examples,
            },
            "bad_nonce_retries": self.bad_nonce_retries,
            "requests": self.requests,
            "connections": self.connections,
            "accounts": {
                "count": self.accounts,
                "elapsed_s": seconds(self.accounts_elapsed),
                "latency_ms": self.account_latency.to_json(),
            },
            "server": server,
            "client_cpu_per_order_ms": self.client_cpu_per_order.map(millis),
        })
    }

    /// A few lines for a terminal.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "ACME {}: {} worker{}, {:.1} s measured",
            self.directory,
            self.concurrency,
            if self.concurrency == 1 { "" } else { "s" },
            self.elapsed.as_secs_f64(),
        );
        if self.end != AcmeEnd::Completed {
            let _ = writeln!(
                out,
                "ENDED:       {}",
                self.end.message(self.orders, self.orders_requested)
            );
        }
        let _ = writeln!(
            out,
            "orders:      {} of {} completed, {:.2}/s; {} HTTP requests ({:.1} per order), {} connections opened",
            self.orders,
            self.orders_requested,
            self.orders_per_second,
            self.requests,
            if self.orders > 0 {
                self.requests as f64 / self.orders as f64
            } else {
                0.0
            },
            self.connections,
        );
        let _ = writeln!(out, "latency:     {}", self.latency.to_text());
        for (name, step) in [
            ("newOrder", self.steps.new_order),
            ("authorize", self.steps.authorize),
            ("finalize", self.steps.finalize),
            ("certificate", self.steps.certificate),
        ] {
            let _ = writeln!(out, "  {name:<12}{}", step.to_text());
        }
        let _ = writeln!(
            out,
            "errors:      {} failed orders, {} badNonce retries",
            self.errors.total(),
            self.bad_nonce_retries
        );
        for (kind, count) in &self.errors.by_kind {
            let example = self.errors.examples.get(kind).map_or("", String::as_str);
            let _ = writeln!(out, "  {count:>8} {kind}: {example}");
        }
        let _ = writeln!(
            out,
            "accounts:    {} in {:.2} s before the window; each {}",
            self.accounts,
            self.accounts_elapsed.as_secs_f64(),
            self.account_latency.to_text()
        );
        ProcessUsage {
            server_pid: self.server_pid,
            server_cpu: self.server_cpu,
            server_cpu_each: self.server_cpu_per_order,
            server_rss: (
                self.server_rss_start,
                self.server_rss_end,
                self.server_rss_max,
            ),
            client_cpu_each: self.client_cpu_per_order,
        }
        .write_text(&mut out, "order");
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn summary(ms: u64) -> LatencySummary {
        LatencySummary {
            count: 100,
            mean: Duration::from_millis(ms),
            p50: Duration::from_millis(ms),
            p90: Duration::from_millis(ms * 2),
            p99: Duration::from_millis(ms * 3),
            max: Duration::from_millis(ms * 4),
        }
    }

    pub(crate) fn report() -> AcmeBenchReport {
        let mut errors = AcmeErrors::default();
        errors.add(
            "finalize: HTTP 400 urn:ietf:params:acme:error:badCSR".into(),
            "bad key".into(),
        );
        errors.add(
            "finalize: HTTP 400 urn:ietf:params:acme:error:badCSR".into(),
            "other".into(),
        );
        errors.add("newOrder: timeout".into(), "no answer".into());
        AcmeBenchReport {
            directory: "https://127.0.0.1:14000/dir".into(),
            concurrency: 8,
            orders_requested: 1000,
            orders: 1000,
            end: AcmeEnd::Completed,
            elapsed: Duration::from_secs(4),
            orders_per_second: 250.0,
            latency: summary(30),
            steps: StepLatencies {
                new_order: summary(5),
                authorize: summary(10),
                finalize: summary(12),
                certificate: summary(3),
            },
            errors,
            bad_nonce_retries: 4,
            requests: 7000,
            connections: 0,
            accounts: 8,
            accounts_elapsed: Duration::from_millis(120),
            account_latency: summary(60),
            server_pid: Some(42),
            server_cpu: Some(Duration::from_secs(2)),
            server_cpu_per_order: Some(Duration::from_millis(2)),
            server_rss_start: Some(20 << 20),
            server_rss_end: Some(30 << 20),
            server_rss_max: Some(31 << 20),
            client_cpu_per_order: Some(Duration::from_micros(1500)),
        }
    }

    #[test]
    fn json_names_units_and_counts_errors_by_kind() {
        let j = report().to_json();
        assert_eq!(j["orders"], 1000);
        assert_eq!(j["orders_per_s"], 250.0);
        assert_eq!(j["end"]["reason"], "completed");
        assert!(j["end"]["idle_s"].is_null());
        assert_eq!(j["latency_ms"]["p50"], 30.0);
        assert_eq!(j["latency_ms"]["p99"], 90.0);
        assert_eq!(j["steps_ms"]["finalize"]["p90"], 24.0);
        assert_eq!(j["errors"]["total"], 3);
        assert_eq!(
            j["errors"]["by_kind"]["finalize: HTTP 400 urn:ietf:params:acme:error:badCSR"],
            2
        );
        assert_eq!(
            j["errors"]["examples"]["finalize: HTTP 400 urn:ietf:params:acme:error:badCSR"],
            "bad key"
        );
        assert_eq!(j["server"]["cpu_per_order_ms"], 2.0);
        assert_eq!(j["server"]["rss_max_bytes"], 31 << 20);
        assert_eq!(j["accounts"]["count"], 8);
        assert_eq!(j["accounts"]["elapsed_s"], 0.12);
        assert_eq!(j["client_cpu_per_order_ms"], 1.5);

        let mut stalled = report();
        stalled.end = AcmeEnd::Stalled {
            idle: Duration::from_secs(20),
        };
        stalled.server_pid = None;
        let j = stalled.to_json();
        assert_eq!(j["end"]["reason"], "stalled");
        assert_eq!(j["end"]["idle_s"], 20.0);
        assert!(j["server"].is_null());
    }

    #[test]
    fn text_is_readable() {
        let text = report().to_text();
        assert!(text.contains("8 workers"), "{text}");
        assert!(text.contains("1000 of 1000 completed, 250.00/s"), "{text}");
        assert!(text.contains("7.0 per order"), "{text}");
        assert!(
            text.contains("p50 30.00 ms, p90 60.00 ms, p99 90.00 ms"),
            "{text}"
        );
        assert!(
            text.contains("2 finalize: HTTP 400 urn:ietf:params:acme:error:badCSR: bad key"),
            "{text}"
        );
        assert!(text.contains("2.00 ms per order"), "{text}");
        assert!(
            text.contains("RSS 20.0 MiB -> 30.0 MiB (max 31.0 MiB)"),
            "{text}"
        );
        assert!(!text.contains("ENDED"), "{text}");

        let mut stalled = report();
        stalled.orders = 12;
        stalled.end = AcmeEnd::Stalled {
            idle: Duration::from_secs(20),
        };
        let text = stalled.to_text();
        assert!(
            text.contains(
                "ENDED:       the server stalled: no order completed in 20.0 s (12 of 1000"
            ),
            "{text}"
        );
    }
}
