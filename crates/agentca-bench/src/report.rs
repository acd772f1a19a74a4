//! What a benchmark run measured, as text for a terminal and JSON for scripts.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use crate::units::{ProcessUsage, human, seconds};

use crate::run::Method;

/// Requests that did not end in a usable OCSP answer, by cause. None of them is in the
/// latency figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ErrorCounts {
    /// Connection refused or reset, or a response that could not be read.
    pub transport: u64,
    /// No answer within the request timeout.
    pub timeout: u64,
    /// An HTTP status other than 200.
    pub http_status: u64,
    /// A well-formed OCSP response whose status is not `successful` (tryLater,
    /// unauthorized, …).
    pub ocsp_unsuccessful: u64,
    /// A body that is not a DER `OCSPResponse`.
    pub unparsable: u64,
    /// A successful response that does not answer for the certificate asked about.
    pub mismatched: u64,
}

impl ErrorCounts {
    /// All errors together.
    pub fn total(&self) -> u64 {
        self.transport
            + self.timeout
            + self.http_status
            + self.ocsp_unsuccessful
            + self.unparsable
            + self.mismatched
    }

    pub(crate) fn add(&mut self, other: &Self) {
        self.transport += other.transport;
        self.timeout += other.timeout;
        self.http_status += other.http_status;
        self.ocsp_unsuccessful += other.ocsp_unsuccessful;
        self.unparsable += other.unparsable;
        self.mismatched += other.mismatched;
    }
}

/// The certificate statuses in the successful answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatusCounts {
    /// `good`.
    pub good: u64,
    /// `revoked`.
    pub revoked: u64,
    /// `unknown`.
    pub unknown: u64,
}

impl StatusCounts {
    pub(crate) fn add(&mut self, other: &Self) {
        self.good += other.good;
        self.revoked += other.revoked;
        self.unknown += other.unknown;
    }
}

/// The result of [`run_ocsp`](crate::run_ocsp): counts and latencies of the measured window
/// (the warm-up excluded), and the server's resource use over the same window.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct OcspBenchReport {
    /// The responder URL.
    pub url: String,
    /// How requests were sent.
    pub method: Method,
    /// Concurrent connections (closed-loop workers).
    pub concurrency: usize,
    /// The warm-up before the window.
    pub warmup: Duration,
    /// Requests answered with a successful OCSP response for the certificate asked about.
    pub requests: u64,
    /// Requests that failed, by cause.
    pub errors: ErrorCounts,
    /// Statuses in the successful answers.
    pub statuses: StatusCounts,
    /// Length of the measured window.
    pub elapsed: Duration,
    /// Successful requests per second.
    pub rps: f64,
    /// Mean latency of successful requests.
    pub mean: Duration,
    /// Median latency.
    pub p50: Duration,
    /// 90th percentile latency.
    pub p90: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// 99.9th percentile latency.
    pub p999: Duration,
    /// Largest latency.
    pub max: Duration,
    /// TCP connections opened in the window: none for a keep-alive server once the warm-up
    /// has opened them, one per request for a server that closes every connection.
    pub connections: u64,
    /// The observed server process, if one was given.
    pub server_pid: Option<u32>,
    /// The server's CPU time (user + system) over the window.
    pub server_cpu: Option<Duration>,
    /// `server_cpu` divided by `requests`.
    pub server_cpu_per_request: Option<Duration>,
    /// The server's resident memory at the start of the window, in bytes.
    pub server_rss_start: Option<u64>,
    /// The server's resident memory at the end of the window, in bytes.
    pub server_rss_end: Option<u64>,
    /// The largest resident memory seen during the window (sampled every half second).
    pub server_rss_max: Option<u64>,
    /// The load generator's own CPU time per successful request (to show whether it, rather
    /// than the server, limited the rate).
    pub client_cpu_per_request: Option<Duration>,
}

fn micros(d: Duration) -> f64 {
    (d.as_nanos() as f64 / 100.0).round() / 10.0
}

impl OcspBenchReport {
    /// One JSON object; durations in microseconds (`_us`) or seconds (`_s`), memory in bytes.
    pub fn to_json(&self) -> Value {
        let server = self.server_pid.map(|pid| {
            json!({
                "pid": pid,
                "cpu_s": self.server_cpu.map(seconds),
                "cpu_per_request_us": self.server_cpu_per_request.map(micros),
                "rss_start_bytes": self.server_rss_start,
                "rss_end_bytes": self.server_rss_end,
                "rss_max_bytes": self.server_rss_max,
            })
        });
        json!({
            "url": self.url,
            "method": self.method.as_str(),
            "concurrency": self.concurrency,
            "warmup_s": seconds(self.warmup),
            "elapsed_s": seconds(self.elapsed),
            "requests": self.requests,
            "rps": (self.rps * 10.0).round() / 10.0,
            "errors": {
                "total": self.errors.total(),
                "transport": self.errors.transport,
                "timeout": self.errors.timeout,
                "http_status": self.errors.http_status,
                "ocsp_unsuccessful": self.errors.ocsp_unsuccessful,
                "unparsable": self.errors.unparsable,
                "mismatched": self.errors.mismatched,
            },
            "statuses": {
                "good": self.statuses.good,
                "revoked": self.statuses.revoked,
                "unknown": self.statuses.unknown,
            },
            "latency_us": {
                "mean": micros(self.mean),
                "p50": micros(self.p50),
                "p90": micros(self.p90),
                "p99": micros(self.p99),
                "p99_9": micros(self.p999),
                "max": micros(self.max),
            },
            "connections": self.connections,
            "server": server,
            "client_cpu_per_request_us": self.client_cpu_per_request.map(micros),
        })
    }

    /// A few lines for a terminal.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "OCSP {} {}: {} connection{}, {:.1} s measured after {:.1} s warm-up",
            self.method,
            self.url,
            self.concurrency,
            if self.concurrency == 1 { "" } else { "s" },
            self.elapsed.as_secs_f64(),
            self.warmup.as_secs_f64(),
        );
        let _ = writeln!(
            out,
            "requests:    {} successful, {:.1}/s (good {}, revoked {}, unknown {})",
            self.requests,
            self.rps,
            self.statuses.good,
            self.statuses.revoked,
            self.statuses.unknown
        );
        let e = &self.errors;
        let _ = writeln!(
            out,
            "errors:      {} (transport {}, timeout {}, HTTP status {}, OCSP unsuccessful {}, \
             unparsable {}, mismatched {})",
            e.total(),
            e.transport,
            e.timeout,
            e.http_status,
            e.ocsp_unsuccessful,
            e.unparsable,
            e.mismatched
        );
        let _ = writeln!(
            out,
            "latency:     mean {}, p50 {}, p90 {}, p99 {}, p99.9 {}, max {}",
            human(self.mean),
            human(self.p50),
            human(self.p90),
            human(self.p99),
            human(self.p999),
            human(self.max)
        );
        let _ = writeln!(out, "connections: {} opened", self.connections);
        ProcessUsage {
            server_pid: self.server_pid,
            server_cpu: self.server_cpu,
            server_cpu_each: self.server_cpu_per_request,
            server_rss: (
                self.server_rss_start,
                self.server_rss_end,
                self.server_rss_max,
            ),
            client_cpu_each: self.client_cpu_per_request,
        }
        .write_text(&mut out, "request");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> OcspBenchReport {
        OcspBenchReport {
            url: "http://127.0.0.1:8080/ocsp".into(),
            method: Method::Post,
            concurrency: 16,
            warmup: Duration::from_secs(2),
            requests: 150_000,
            errors: ErrorCounts {
                http_status: 2,
                ..ErrorCounts::default()
            },
            statuses: StatusCounts {
                good: 150_000,
                ..StatusCounts::default()
            },
            elapsed: Duration::from_secs(15),
            rps: 10_000.0,
            mean: Duration::from_micros(1_500),
            p50: Duration::from_micros(1_400),
            p90: Duration::from_micros(2_000),
            p99: Duration::from_micros(4_250),
            p999: Duration::from_micros(9_000),
            max: Duration::from_millis(20),
            connections: 16,
            server_pid: Some(42),
            server_cpu: Some(Duration::from_secs(3)),
            server_cpu_per_request: Some(Duration::from_micros(20)),
            server_rss_start: Some(10 << 20),
            server_rss_end: Some(11 << 20),
            server_rss_max: Some(12 << 20),
            client_cpu_per_request: Some(Duration::from_micros(25)),
        }
    }

    #[test]
    fn json_names_units() {
        let j = report().to_json();
        assert_eq!(j["method"], "POST");
        assert_eq!(j["requests"], 150_000);
        assert_eq!(j["rps"], 10_000.0);
        assert_eq!(j["errors"]["total"], 2);
        assert_eq!(j["errors"]["http_status"], 2);
        assert_eq!(j["latency_us"]["p99"], 4250.0);
        assert_eq!(j["server"]["cpu_per_request_us"], 20.0);
        assert_eq!(j["server"]["rss_end_bytes"], 11 << 20);
        assert_eq!(j["client_cpu_per_request_us"], 25.0);

        let mut without = report();
        without.server_pid = None;
        assert!(without.to_json()["server"].is_null());
    }

    #[test]
    fn text_is_readable() {
        let text = report().to_text();
        assert!(text.contains("16 connections"), "{text}");
        assert!(text.contains("10000.0/s"), "{text}");
        assert!(text.contains("p99 4.25 ms"), "{text}");
        assert!(text.contains("20.0 µs per request"), "{text}");
        assert!(
            text.contains("RSS 10.0 MiB -> 11.0 MiB (max 12.0 MiB)"),
            "{text}"
        );
    }
}
