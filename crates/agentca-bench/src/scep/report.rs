//! What a SCEP run measured, as text for a terminal and JSON for scripts: the shape and units
//! of the ACME report (milliseconds, bytes, `errors.by_kind`), with enrollments for orders and
//! the duplicate serials a CA must never issue.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use crate::latency::LatencySummary;
use crate::units::{ProcessUsage, millis, seconds};

/// Failed requests by kind: `HTTP 500`, `FAILURE badRequest` (pkiStatus and failInfo),
/// `PENDING`, `invalid CertRep: …`, `wrong certificate`, `transport`, `timeout`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScepErrors {
    /// How many of each kind.
    pub by_kind: BTreeMap<String, u64>,
    /// The first detail seen for each kind.
    pub examples: BTreeMap<String, String>,
}

impl ScepErrors {
    /// All failed requests.
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
pub enum ScepEnd {
    /// Every request was sent and answered, or failed.
    Completed,
    /// The server answered nothing for `idle`.
    Stalled {
        /// The idle time that ended the run.
        idle: Duration,
    },
    /// The window's time bound passed first.
    TimeLimit {
        /// The bound.
        limit: Duration,
    },
}

impl ScepEnd {
    fn name(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Stalled { .. } => "stalled",
            Self::TimeLimit { .. } => "time limit",
        }
    }

    /// What to tell the operator.
    pub fn message(self, enrollments: u64, requests: u64, requested: u64) -> String {
        let counts = format!("{requests} of {requested} requests done, {enrollments} enrolled");
        match self {
            Self::Completed => counts,
            Self::Stalled { idle } => format!(
                "the server stalled: no answer in {:.1} s ({counts})",
                idle.as_secs_f64()
            ),
            Self::TimeLimit { limit } => format!(
                "the run did not finish within its bound of {:.0} s ({counts})",
                limit.as_secs_f64()
            ),
        }
    }
}

/// The certificate requests were encrypted to, and what the server said it can do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScepServerInfo {
    /// GetCACaps keywords, as sent.
    pub capabilities: Vec<String>,
    /// Certificates in the GetCACert answer.
    pub ca_certificates: usize,
    /// SHA-256 of the recipient (RA) certificate, hex.
    pub recipient_fingerprint: String,
    /// Its subject.
    pub recipient_subject: String,
}

/// The result of [`run_scep`](crate::run_scep): the measured window (key generation and
/// GetCACaps/GetCACert come before it and are reported apart), and the server's resource use
/// over the same window.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ScepBenchReport {
    /// The SCEP URL.
    pub url: String,
    /// Workers (connections, requests in flight).
    pub concurrency: usize,
    /// Requests asked for.
    pub requested: u64,
    /// Requests sent whose outcome is known: enrolled, or failed.
    pub requests: u64,
    /// Requests answered by a verified SUCCESS carrying a certificate for the request's key.
    pub enrollments: u64,
    /// How the run ended.
    pub end: ScepEnd,
    /// Length of the measured window.
    pub elapsed: Duration,
    /// Enrollments per second.
    pub enrollments_per_second: f64,
    /// Latency of the enrollments (request sent to CertRep verified).
    pub latency: LatencySummary,
    /// Latency of the failed requests.
    pub failure_latency: LatencySummary,
    /// Failed requests, by kind.
    pub errors: ScepErrors,
    /// Issued certificates whose issuer and serial an earlier one of the run already had.
    pub duplicate_serials: u64,
    /// Up to five serials (hex) issued more than once, with how many times.
    pub duplicate_serial_examples: Vec<(String, u64)>,
    /// `POST` or `GET`.
    pub http_method: &'static str,
    /// Content encryption of the requests: aes128, aes256, des3 or des.
    pub cipher: &'static str,
    /// RSA key size of the requests.
    pub key_bits: u32,
    /// What GetCACaps and GetCACert said.
    pub server_info: ScepServerInfo,
    /// TCP connections opened in the window.
    pub connections: u64,
    /// Requests prepared before the window (key, CSR, message).
    pub prepared: u64,
    /// Wall time of the preparation.
    pub preparation_elapsed: Duration,
    /// Threads it ran on.
    pub preparation_threads: usize,
    /// The observed server process, if one was given.
    pub server_pid: Option<u32>,
    /// The server's CPU time (user + system) over the window.
    pub server_cpu: Option<Duration>,
    /// `server_cpu` divided by the enrollments.
    pub server_cpu_per_enrollment: Option<Duration>,
    /// `server_cpu` divided by the requests (failed ones included).
    pub server_cpu_per_request: Option<Duration>,
    /// The server's resident memory when the window opened, in bytes.
    pub server_rss_start: Option<u64>,
    /// When it closed.
    pub server_rss_end: Option<u64>,
    /// The largest seen, sampled every second.
    pub server_rss_max: Option<u64>,
    /// The generator's own CPU time per enrollment.
    pub client_cpu_per_enrollment: Option<Duration>,
}

impl ScepBenchReport {
    fn end_message(&self) -> String {
        self.end
            .message(self.enrollments, self.requests, self.requested)
    }

    /// One JSON object; durations in milliseconds (`_ms`) or seconds (`_s`), memory in bytes.
    pub fn to_json(&self) -> Value {
        let server = self.server_pid.map(|pid| {
            json!({
                "pid": pid,
                "cpu_s": self.server_cpu.map(seconds),
                "cpu_per_enrollment_ms": self.server_cpu_per_enrollment.map(millis),
                "cpu_per_request_ms": self.server_cpu_per_request.map(millis),
                "rss_start_bytes": self.server_rss_start,
                "rss_end_bytes": self.server_rss_end,
                "rss_max_bytes": self.server_rss_max,
            })
        });
        let (end_idle, end_limit) = match self.end {
            ScepEnd::Stalled { idle } => (Some(seconds(idle)), None),
            ScepEnd::TimeLimit { limit } => (None, Some(seconds(limit))),
            ScepEnd::Completed => (None, None),
        };
        let examples: Vec<Value> = self
            .duplicate_serial_examples
            .iter()
            .map(|(serial, times)| json!({ "serial": serial, "times": times }))
            .collect();
        json!({
            "url": self.url,
            "concurrency": self.concurrency,
            "requested": self.requested,
            "requests": self.requests,
            "enrollments": self.enrollments,
            "end": {
                "reason": self.end.name(),
                "message": self.end_message(),
                "idle_s": end_idle,
                "limit_s": end_limit,
            },
            "elapsed_s": seconds(self.elapsed),
            "enrollments_per_s": (self.enrollments_per_second * 100.0).round() / 100.0,
            "latency_ms": self.latency.to_json(),
            "failure_latency_ms": self.failure_latency.to_json(),
            "errors": {
                "total": self.errors.total(),
                "by_kind": self.errors.by_kind,
                "examples": self.errors.examples,
            },
            "duplicate_serials": {
                "count": self.duplicate_serials,
                "examples": examples,
            },
            "http_method": self.http_method,
            "cipher": self.cipher,
            "key_bits": self.key_bits,
            "ca": {
                "capabilities": self.server_info.capabilities,
                "certificates": self.server_info.ca_certificates,
                "recipient_sha256": self.server_info.recipient_fingerprint,
                "recipient_subject": self.server_info.recipient_subject,
            },
            "connections": self.connections,
            "preparation": {
                "requests": self.prepared,
                "elapsed_s": seconds(self.preparation_elapsed),
                "threads": self.preparation_threads,
            },
            "server": server,
            "client_cpu_per_enrollment_ms": self.client_cpu_per_enrollment.map(millis),
        })
    }

    /// A few lines for a terminal.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "SCEP {} {}: {} worker{}, {:.1} s measured",
            self.http_method,
            self.url,
            self.concurrency,
            if self.concurrency == 1 { "" } else { "s" },
            self.elapsed.as_secs_f64(),
        );
        if self.end != ScepEnd::Completed {
            let _ = writeln!(out, "ENDED:       {}", self.end_message());
        }
        let _ = writeln!(
            out,
            "enrollments: {} of {} requests, {:.2}/s; {} connection{} opened",
            self.enrollments,
            self.requested,
            self.enrollments_per_second,
            self.connections,
            if self.connections == 1 { "" } else { "s" },
        );
        if self.enrollments > 0 {
            let _ = writeln!(out, "latency:     {}", self.latency.to_text());
        } else {
            let _ = writeln!(out, "latency:     no enrollment");
        }
        let _ = writeln!(
            out,
            "errors:      {} failed requests{}",
            self.errors.total(),
            if self.errors.total() > 0 {
                format!(" ({})", self.failure_latency.to_text())
            } else {
                String::new()
            }
        );
        for (kind, count) in &self.errors.by_kind {
            let example = self.errors.examples.get(kind).map_or("", String::as_str);
            let _ = writeln!(out, "  {count:>8} {kind}: {example}");
        }
        let _ = write!(
            out,
            "serials:     {} duplicate{}",
            self.duplicate_serials,
            if self.duplicate_serials == 1 { "" } else { "s" }
        );
        if !self.duplicate_serial_examples.is_empty() {
            let examples: Vec<String> = self
                .duplicate_serial_examples
                .iter()
                .map(|(serial, times)| format!("{serial} ×{times}"))
                .collect();
            let _ = write!(out, " (e.g. {})", examples.join(", "));
        }
        out.push('\n');
        let _ = writeln!(
            out,
            "requests:    RSA-{} keys, {}, encrypted to {} ({}…); prepared in {:.1} s on {} thread{}",
            self.key_bits,
            self.cipher,
            self.server_info.recipient_subject,
            self.server_info
                .recipient_fingerprint
                .get(..16)
                .unwrap_or(&self.server_info.recipient_fingerprint),
            self.preparation_elapsed.as_secs_f64(),
            self.preparation_threads,
            if self.preparation_threads == 1 {
                ""
            } else {
                "s"
            },
        );
        let _ = writeln!(
            out,
            "server caps: {}",
            self.server_info.capabilities.join(" ")
        );
        ProcessUsage {
            server_pid: self.server_pid,
            server_cpu: self.server_cpu,
            server_cpu_each: self.server_cpu_per_enrollment,
            server_rss: (
                self.server_rss_start,
                self.server_rss_end,
                self.server_rss_max,
            ),
            client_cpu_each: self.client_cpu_per_enrollment,
        }
        .write_text(&mut out, "enrollment");
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn summary(ms: u64, count: u64) -> LatencySummary {
        LatencySummary {
            count,
            mean: Duration::from_millis(ms),
            p50: Duration::from_millis(ms),
            p90: Duration::from_millis(ms * 2),
            p99: Duration::from_millis(ms * 3),
            max: Duration::from_millis(ms * 4),
        }
    }

    fn report() -> ScepBenchReport {
        let mut errors = ScepErrors::default();
        errors.add("HTTP 500".into(), "depot: file exists".into());
        errors.add("HTTP 500".into(), "other".into());
        errors.add(
            "FAILURE badRequest".into(),
            "failInfo badRequest (2)".into(),
        );
        ScepBenchReport {
            url: "http://127.0.0.1:8080/scep".into(),
            concurrency: 8,
            requested: 100,
            requests: 100,
            enrollments: 97,
            end: ScepEnd::Completed,
            elapsed: Duration::from_secs(2),
            enrollments_per_second: 48.5,
            latency: summary(20, 97),
            failure_latency: summary(5, 3),
            errors,
            duplicate_serials: 2,
            duplicate_serial_examples: vec![("0a".into(), 3)],
            http_method: "POST",
            cipher: "aes128",
            key_bits: 2048,
            server_info: ScepServerInfo {
                capabilities: vec!["AES".into(), "POSTPKIOperation".into()],
                ca_certificates: 1,
                recipient_fingerprint: "ab".repeat(32),
                recipient_subject: "O=scep-ca".into(),
            },
            connections: 0,
            prepared: 100,
            preparation_elapsed: Duration::from_millis(12_500),
            preparation_threads: 2,
            server_pid: Some(42),
            server_cpu: Some(Duration::from_millis(776)),
            server_cpu_per_enrollment: Some(Duration::from_millis(8)),
            server_cpu_per_request: Some(Duration::from_micros(7760)),
            server_rss_start: Some(20 << 20),
            server_rss_end: Some(30 << 20),
            server_rss_max: Some(31 << 20),
            client_cpu_per_enrollment: Some(Duration::from_micros(1500)),
        }
    }

    #[test]
    fn json_names_units_and_counts_failures_and_duplicates() {
        let j = report().to_json();
        assert_eq!(j["enrollments"], 97);
        assert_eq!(j["requests"], 100);
        assert_eq!(j["enrollments_per_s"], 48.5);
        assert_eq!(j["end"]["reason"], "completed");
        assert_eq!(j["end"]["message"], "100 of 100 requests done, 97 enrolled");
        assert_eq!(j["latency_ms"]["p50"], 20.0);
        assert_eq!(j["latency_ms"]["p99"], 60.0);
        assert_eq!(j["failure_latency_ms"]["count"], 3);
        assert_eq!(j["errors"]["total"], 3);
        assert_eq!(j["errors"]["by_kind"]["HTTP 500"], 2);
        assert_eq!(j["errors"]["examples"]["HTTP 500"], "depot: file exists");
        assert_eq!(j["errors"]["by_kind"]["FAILURE badRequest"], 1);
        assert_eq!(j["duplicate_serials"]["count"], 2);
        assert_eq!(j["duplicate_serials"]["examples"][0]["serial"], "0a");
        assert_eq!(j["duplicate_serials"]["examples"][0]["times"], 3);
        assert_eq!(j["server"]["cpu_per_enrollment_ms"], 8.0);
        assert_eq!(j["server"]["cpu_per_request_ms"], 7.76);
        assert_eq!(j["server"]["rss_max_bytes"], 31 << 20);
        assert_eq!(j["ca"]["capabilities"][1], "POSTPKIOperation");
        assert_eq!(j["preparation"]["elapsed_s"], 12.5);
        assert_eq!(j["http_method"], "POST");
        assert_eq!(j["client_cpu_per_enrollment_ms"], 1.5);

        let mut stalled = report();
        stalled.end = ScepEnd::Stalled {
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
        assert!(
            text.contains("SCEP POST http://127.0.0.1:8080/scep: 8 workers"),
            "{text}"
        );
        assert!(text.contains("97 of 100 requests, 48.50/s"), "{text}");
        assert!(
            text.contains("p50 20.00 ms, p90 40.00 ms, p99 60.00 ms"),
            "{text}"
        );
        assert!(text.contains("2 HTTP 500: depot: file exists"), "{text}");
        assert!(text.contains("2 duplicates (e.g. 0a ×3)"), "{text}");
        assert!(text.contains("8.00 ms per enrollment"), "{text}");
        assert!(
            text.contains("RSS 20.0 MiB -> 30.0 MiB (max 31.0 MiB)"),
            "{text}"
        );
        assert!(text.contains("prepared in 12.5 s on 2 threads"), "{text}");
        assert!(!text.contains("ENDED"), "{text}");

        let mut limited = report();
        limited.end = ScepEnd::TimeLimit {
            limit: Duration::from_secs(60),
        };
        limited.requests = 40;
        limited.enrollments = 0;
        let text = limited.to_text();
        assert!(text.contains("latency:     no enrollment"), "{text}");
        assert!(
            text.contains(
                "ENDED:       the run did not finish within its bound of 60 s (40 of 100"
            ),
            "{text}"
        );
    }
}
