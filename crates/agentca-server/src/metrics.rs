//! What `/metrics` exposes, in the OpenMetrics text format Prometheus scrapes.
//!
//! Every series is created here, at start, so a scrape shows zeros rather than missing series
//! and the request path only increments atomics.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use time::OffsetDateTime;

use agentca_core::issuer::Authority;

/// Label values are written in snake case, as Prometheus conventions ask.
macro_rules! label_value {
    ($ty:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            pub(crate) fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
                self.as_str().encode(encoder)
            }
        }
    };
}

/// The listener a request arrived on.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum Listener {
    Http,
    Https,
}

label_value!(Listener { Http => "http", Https => "https" });

/// The route family of a request, from its path alone (so unmatched paths cannot create
/// unbounded label values).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum Route {
    Ocsp,
    Crl,
    CaCerts,
    Healthz,
    Metrics,
    Scep,
    Other,
}

label_value!(Route {
    Ocsp => "ocsp",
    Crl => "crl",
    CaCerts => "ca_certs",
    Healthz => "healthz",
    Metrics => "metrics",
    Scep => "scep",
    Other => "other",
});

impl Route {
    pub(crate) fn of(path: &str) -> Self {
        match path {
            "/ocsp" => Self::Ocsp,
            p if p.starts_with("/ocsp/") => Self::Ocsp,
            "/crl" | "/crl.pem" => Self::Crl,
            "/ca.pem" | "/ca.crt" => Self::CaCerts,
            "/healthz" => Self::Healthz,
            "/metrics" => Self::Metrics,
            "/scep" | "/scep/pkiclient.exe" => Self::Scep,
            _ => Self::Other,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) listener: Listener,
    pub(crate) route: Route,
    pub(crate) status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub(crate) listener: Listener,
    pub(crate) route: Route,
}

/// What an OCSP request was answered with.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
#[repr(usize)]
pub(crate) enum OcspAnswer {
    Good,
    Revoked,
    Several,
    MalformedRequest,
    Unauthorized,
    TryLater,
    InternalError,
}

impl OcspAnswer {
    const ALL: [Self; 7] = [
        Self::Good,
        Self::Revoked,
        Self::Several,
        Self::MalformedRequest,
        Self::Unauthorized,
        Self::TryLater,
        Self::InternalError,
    ];
}

label_value!(OcspAnswer {
    Good => "good",
    Revoked => "revoked",
    Several => "several",
    MalformedRequest => "malformed_request",
    Unauthorized => "unauthorized",
    TryLater => "try_later",
    InternalError => "internal_error",
});

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OcspLabels {
    pub(crate) answer: OcspAnswer,
}

/// A SCEP PKIOperation's kind and answer; the front end passes values from closed sets.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ScepLabels {
    pub(crate) request: &'static str,
    pub(crate) answer: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ListenerLabels {
    pub(crate) listener: Listener,
}

/// The server's metrics.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) request_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub(crate) connections_open: Family<ListenerLabels, Gauge>,
    pub(crate) ocsp_answers: Family<OcspLabels, Counter>,
    pub(crate) scep_answers: Family<ScepLabels, Counter>,
    /// The series of `ocsp_answers`, by [`OcspAnswer`] discriminant: the request path
    /// increments an atomic without a label lookup.
    answer_counters: Vec<Counter>,
    pub(crate) ocsp_cache_hits: Counter,
    pub(crate) ocsp_cache_misses: Counter,
    pub(crate) ocsp_cache_entries: Gauge,
    pub(crate) ocsp_request_path_signatures: Counter,
    pub(crate) ocsp_background_signatures: Counter,
    pub(crate) ocsp_signing_rate_limited: Counter,
    pub(crate) ocsp_responder_not_after: Gauge,
    pub(crate) crl_number: Gauge,
    pub(crate) crl_this_update: Gauge,
    pub(crate) crl_age_seconds: Gauge,
    pub(crate) crl_entries: Gauge,
    pub(crate) crl_publications: Counter,
    pub(crate) crl_adoptions: Counter,
    pub(crate) crl_failures: Counter,
    pub(crate) certificates_issued: Counter,
    pub(crate) certificates_revoked: Counter,
    pub(crate) tls_not_after: Gauge,
    pub(crate) health_failures: Counter,
    /// Signatures by the issuing CA key (certificates and CRLs), read from its signer at
    /// scrape time: a refused request must leave it unchanged.
    issuing_ca_signatures: Counter,
    issuing_ca: OnceLock<IssuingSignatures>,
}

/// Where [`Metrics::issuing_ca_signatures`] is read from.
struct IssuingSignatures(Arc<Authority>);

impl std::fmt::Debug for IssuingSignatures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IssuingSignatures")
    }
}

fn latency_histogram() -> Histogram {
    // 25 µs to about 0.8 s: a cached OCSP answer takes tens of microseconds, a CRL download
    // of a large CRL or a slow client much longer.
    Histogram::new(exponential_buckets(25e-6, 2.0, 16))
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("agentca");
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        let metrics = Self {
            requests,
            request_seconds,
            connections_open: Family::default(),
            ocsp_answers: Family::default(),
            scep_answers: Family::default(),
            answer_counters: Vec::new(),
            ocsp_cache_hits: Counter::default(),
            ocsp_cache_misses: Counter::default(),
            ocsp_cache_entries: Gauge::default(),
            ocsp_request_path_signatures: Counter::default(),
            ocsp_background_signatures: Counter::default(),
            ocsp_signing_rate_limited: Counter::default(),
            ocsp_responder_not_after: Gauge::default(),
            crl_number: Gauge::default(),
            crl_this_update: Gauge::default(),
            crl_age_seconds: Gauge::default(),
            crl_entries: Gauge::default(),
            crl_publications: Counter::default(),
            crl_adoptions: Counter::default(),
            crl_failures: Counter::default(),
            certificates_issued: Counter::default(),
            certificates_revoked: Counter::default(),
            tls_not_after: Gauge::default(),
            health_failures: Counter::default(),
            issuing_ca_signatures: Counter::default(),
            issuing_ca: OnceLock::new(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "http_requests",
            "HTTP requests by listener, route and status",
            metrics.requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "Time from request head to response head",
            metrics.request_seconds.clone(),
        );
        r.register(
            "http_connections_open",
            "Open client connections",
            metrics.connections_open.clone(),
        );
        r.register(
            "ocsp_answers",
            "OCSP answers by kind (several = more than one CertID)",
            metrics.ocsp_answers.clone(),
        );
        r.register(
            "scep_answers",
            "SCEP PKIOperations by request kind and answer (success, failInfo, bad_input, unavailable)",
            metrics.scep_answers.clone(),
        );
        r.register(
            "ocsp_cache_hits",
            "OCSP requests answered with a pre-signed response",
            metrics.ocsp_cache_hits.clone(),
        );
        r.register(
            "ocsp_cache_misses",
            "Single-CertID OCSP requests without a usable pre-signed response",
            metrics.ocsp_cache_misses.clone(),
        );
        r.register(
            "ocsp_cache_entries",
            "Pre-signed OCSP responses held",
            metrics.ocsp_cache_entries.clone(),
        );
        r.register(
            "ocsp_request_path_signatures",
            "Signatures made while a client waited (nonces, several CertIDs, cache misses)",
            metrics.ocsp_request_path_signatures.clone(),
        );
        r.register(
            "ocsp_background_signatures",
            "Signatures made ahead of requests (priming, refresh, issuance, revocation)",
            metrics.ocsp_background_signatures.clone(),
        );
        r.register(
            "ocsp_signing_rate_limited",
            "OCSP requests that wanted a fresh signature beyond the signing rate",
            metrics.ocsp_signing_rate_limited.clone(),
        );
        r.register(
            "ocsp_responder_not_after_seconds",
            "Expiry of the OCSP responder certificate, Unix time",
            metrics.ocsp_responder_not_after.clone(),
        );
        r.register(
            "crl_number",
            "CRL number of the served CRL",
            metrics.crl_number.clone(),
        );
        r.register(
            "crl_this_update_seconds",
            "thisUpdate of the served CRL, Unix time",
            metrics.crl_this_update.clone(),
        );
        r.register(
            "crl_age_seconds",
            "Seconds since the served CRL's thisUpdate",
            metrics.crl_age_seconds.clone(),
        );
        r.register(
            "crl_entries",
            "Certificates listed on the served CRL",
            metrics.crl_entries.clone(),
        );
        r.register(
            "crl_publications",
            "CRLs published",
            metrics.crl_publications.clone(),
        );
        r.register(
            "crl_adoptions",
            "CRLs another node sharing the store signed, served here in place of a lower number",
            metrics.crl_adoptions.clone(),
        );
        r.register(
            "crl_publication_failures",
            "CRL publications that failed",
            metrics.crl_failures.clone(),
        );
        r.register(
            "certificates_issued",
            "Certificates issued while serving",
            metrics.certificates_issued.clone(),
        );
        r.register(
            "certificates_revoked",
            "Certificates revoked while serving",
            metrics.certificates_revoked.clone(),
        );
        r.register(
            "tls_certificate_not_after_seconds",
            "Expiry of the HTTPS listener's certificate, Unix time",
            metrics.tls_not_after.clone(),
        );
        r.register(
            "health_probe_failures",
            "Storage write probes that failed",
            metrics.health_failures.clone(),
        );
        r.register(
            "issuing_ca_signatures",
            "Signatures made with the issuing CA key (certificates and CRLs)",
            metrics.issuing_ca_signatures.clone(),
        );
        for listener in [Listener::Http, Listener::Https] {
            let _ = metrics
                .connections_open
                .get_or_create(&ListenerLabels { listener });
        }
        let answer_counters = OcspAnswer::ALL
            .iter()
            .map(|&answer| {
                metrics
                    .ocsp_answers
                    .get_or_create(&OcspLabels { answer })
                    .clone()
            })
            .collect();
        Self {
            registry,
            answer_counters,
            ..metrics
        }
    }

    /// Reports the issuing CA key's signature count from `authority`'s signer.
    pub(crate) fn track_issuing_signatures(&self, authority: Arc<Authority>) {
        let _ = self.issuing_ca.set(IssuingSignatures(authority));
    }

    /// The OpenMetrics text of every metric, with time-derived gauges brought up to date.
    pub(crate) fn encode(&self, now: OffsetDateTime) -> String {
        if let Some(IssuingSignatures(authority)) = self.issuing_ca.get() {
            let count = authority.ca().signer().signatures();
            self.issuing_ca_signatures
                .inner()
                .fetch_max(count, Ordering::Relaxed);
        }
        let this_update = self.crl_this_update.get();
        if this_update > 0 {
            self.crl_age_seconds
                .set(now.unix_timestamp().saturating_sub(this_update));
        }
        let mut text = String::with_capacity(8 * 1024);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    pub(crate) fn answered(&self, answer: OcspAnswer) {
        // `ALL` is in discriminant order, so the discriminant indexes the counters.
        if let Some(counter) = self.answer_counters.get(answer as usize) {
            counter.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_present_from_the_start() {
        let metrics = Metrics::new();
        metrics.ocsp_request_path_signatures.inc();
        let text = metrics.encode(OffsetDateTime::now_utc());
        for needle in [
            "agentca_ocsp_request_path_signatures_total 1",
            "agentca_ocsp_cache_hits_total 0",
            "agentca_ocsp_answers_total{answer=\"unauthorized\"} 0",
            "agentca_http_connections_open{listener=\"https\"} 0",
            "agentca_crl_number 0",
            "agentca_issuing_ca_signatures_total 0",
            "# EOF",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
    }

    #[test]
    fn answer_counters_follow_the_discriminants() {
        for (i, answer) in OcspAnswer::ALL.iter().enumerate() {
            assert_eq!(*answer as usize, i);
        }
        let metrics = Metrics::new();
        metrics.answered(OcspAnswer::TryLater);
        let text = metrics.encode(OffsetDateTime::now_utc());
        assert!(
            text.contains("agentca_ocsp_answers_total{answer=\"try_later\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn routes_are_a_closed_set() {
        assert_eq!(Route::of("/ocsp"), Route::Ocsp);
        assert_eq!(Route::of("/ocsp/MEow"), Route::Ocsp);
        assert_eq!(Route::of("/ocspx"), Route::Other);
        assert_eq!(Route::of("/crl.pem"), Route::Crl);
        assert_eq!(Route::of("/../etc"), Route::Other);
    }
}
