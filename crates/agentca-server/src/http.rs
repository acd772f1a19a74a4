//! The HTTP surface (design §6): routes, handlers and the limits every request passes.
//!
//! Plain HTTP carries what relying parties fetch (OCSP, CRLs, CA certificates) plus health
//! and metrics; HTTPS carries `/healthz` and whatever protocol routes are mounted on it (ACME).
//! Neither exposes an operator operation.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use time::OffsetDateTime;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::ServerConfig;
use crate::crl::CrlPublisher;
use crate::headers;
use crate::health::Health;
use crate::metrics::{Listener, Metrics, RequestLabels, Route, RouteLabels};
use crate::ocsp::{Answer, OcspService};

const OCSP_RESPONSE: &str = "application/ocsp-response";
const PKIX_CRL: &str = "application/pkix-crl";
const PKIX_CERT: &str = "application/pkix-cert";
const PEM_CHAIN: &str = "application/pem-certificate-chain";
const PEM_FILE: &str = "application/x-pem-file";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROBLEM_JSON: &str = "application/problem+json";

/// What the handlers share.
pub(crate) struct Shared {
    pub(crate) ocsp: Arc<OcspService>,
    pub(crate) crl: Arc<CrlPublisher>,
    pub(crate) health: Health,
    pub(crate) metrics: Arc<Metrics>,
    /// Issuing CA then root, PEM.
    pub(crate) ca_pem: Bytes,
    /// Issuing CA, DER (the AIA caIssuers target).
    pub(crate) ca_der: Bytes,
}

type AppState = Arc<Shared>;

/// The plain HTTP router, with `extra` routes (e.g. SCEP) merged in.
pub(crate) fn http_router(shared: AppState, config: &ServerConfig, extra: Router) -> Router {
    let routes = Router::new()
        .route("/ocsp", get(ocsp_get_empty).post(ocsp_post))
        .route("/ocsp/", get(ocsp_get_empty).post(ocsp_post))
        .route("/ocsp/{*request}", get(ocsp_get).post(ocsp_post))
        .route("/crl", get(crl_der))
        .route("/crl.pem", get(crl_pem))
        .route("/ca.pem", get(ca_pem))
        .route("/ca.crt", get(ca_crt))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(shared.clone());
    limits(routes.merge(extra), shared, config, Listener::Http)
}

/// The HTTPS router: `/healthz` and `extra` (ACME); everything else is a 404 problem.
pub(crate) fn https_router(shared: AppState, config: &ServerConfig, extra: Router) -> Router {
    let routes = Router::new()
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .with_state(shared.clone());
    limits(routes.merge(extra), shared, config, Listener::Https)
}

/// Every request: counted and timed, cut off after the request timeout (408), and refused
/// with 413 once its body passes the limit (up front when Content-Length says so, else as
/// soon as the limit is read — never reading further).
fn limits(router: Router, shared: AppState, config: &ServerConfig, listener: Listener) -> Router {
    router
        .layer(RequestBodyLimitLayer::new(config.max_body))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
        ))
        .layer(middleware::from_fn_with_state(
            Track {
                metrics: shared.metrics.clone(),
                listener,
            },
            track,
        ))
        .layer(TraceLayer::new_for_http())
}

#[derive(Clone)]
struct Track {
    metrics: Arc<Metrics>,
    listener: Listener,
}

async fn track(State(t): State<Track>, request: Request, next: Next) -> Response {
    let route = Route::of(request.uri().path());
    let started = Instant::now();
    let response = next.run(request).await;
    let listener = t.listener;
    t.metrics
        .requests
        .get_or_create(&RequestLabels {
            listener,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    t.metrics
        .request_seconds
        .get_or_create(&RouteLabels { listener, route })
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn ocsp_post(State(s): State<AppState>, body: Bytes) -> Response {
    ocsp_response(s.ocsp.answer(&body), None)
}

/// `GET /ocsp` or `/ocsp/` carries no request.
async fn ocsp_get_empty(State(s): State<AppState>) -> Response {
    ocsp_response(s.ocsp.answer(&[]), None)
}

/// RFC 6960 Appendix A.1 / RFC 5019 §5: `GET {url}/{url-encoding of base-64 encoding of the
/// DER OCSPRequest}`. Standard base64 contains `/`, so the request is taken from the raw path,
/// not from a path segment.
async fn ocsp_get(State(s): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    let raw = uri.path().strip_prefix("/ocsp/").unwrap_or_default();
    let der = decode_get_request(raw).unwrap_or_default();
    let answer = s.ocsp.answer(&der);
    ocsp_response(answer, Some(&headers))
}

/// Percent-decodes, then base64-decodes (standard alphabet, padding optional). `+` is taken
/// literally: in a path it is not an encoded space.
pub(crate) fn decode_get_request(raw: &str) -> Option<Vec<u8>> {
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    LENIENT.decode(decoded).ok()
}

/// An OCSP answer over HTTP: always 200 (the OCSP status is inside). Pre-signed answers to GET
/// requests are cacheable as RFC 5019 §6 describes.
fn ocsp_response(answer: Answer, get: Option<&HeaderMap>) -> Response {
    let mut response = Response::new(Body::empty());
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(OCSP_RESPONSE),
    );
    match (get, &answer.cached) {
        (Some(request), Some(cached)) => {
            let max_age = (cached.next_update - OffsetDateTime::now_utc())
                .whole_seconds()
                .max(0);
            if let Ok(v) = HeaderValue::from_str(&format!(
                "max-age={max_age}, public, no-transform, must-revalidate"
            )) {
                h.insert(header::CACHE_CONTROL, v);
            }
            h.insert(header::ETAG, cached.etag.clone());
            h.insert(header::LAST_MODIFIED, cached.last_modified.clone());
            h.insert(header::EXPIRES, cached.expires.clone());
            if request
                .get(header::IF_NONE_MATCH)
                .is_some_and(|inm| headers::none_match(inm, &cached.etag))
            {
                *response.status_mut() = StatusCode::NOT_MODIFIED;
                return response;
            }
        }
        (Some(_), None) => {
            // Fresh (nonce) and unsigned answers must not be reused by a cache.
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        (None, _) => {}
    }
    *response.body_mut() = Body::new(answer.der);
    response
}

async fn crl_der(State(s): State<AppState>, headers: HeaderMap) -> Response {
    serve_crl(&s, &headers, |c| (PKIX_CRL, c.der.clone()))
}

async fn crl_pem(State(s): State<AppState>, headers: HeaderMap) -> Response {
    serve_crl(&s, &headers, |c| (PEM_FILE, c.pem.clone()))
}

fn serve_crl(
    s: &Shared,
    request: &HeaderMap,
    pick: impl Fn(&crate::crl::ServedCrl) -> (&'static str, Bytes),
) -> Response {
    let Some(crl) = s.crl.served() else {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "no CRL has been published yet; retry shortly",
        );
    };
    let (content_type, body) = pick(&crl);
    let mut response = Response::new(Body::empty());
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // A newer CRL can appear seconds after a revocation: caches must ask every time, cheaply
    // thanks to the entity tag.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=0, must-revalidate"),
    );
    h.insert(header::ETAG, crl.etag.clone());
    h.insert(header::LAST_MODIFIED, crl.last_modified.clone());
    if request
        .get(header::IF_NONE_MATCH)
        .is_some_and(|inm| headers::none_match(inm, &crl.etag))
    {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        return response;
    }
    *response.body_mut() = Body::from(body);
    response
}

async fn ca_pem(State(s): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, PEM_CHAIN)], s.ca_pem.clone()).into_response()
}

async fn ca_crt(State(s): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, PKIX_CERT)], s.ca_der.clone()).into_response()
}

async fn healthz(State(s): State<AppState>) -> Response {
    let (status, body) = if s.health.healthy().await {
        (StatusCode::OK, r#"{"status":"ok"}"#)
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"degraded","reason":"storage cannot write"}"#,
        )
    };
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
    let text = s.metrics.encode(OffsetDateTime::now_utc());
    (
        [
            (header::CONTENT_TYPE, OPENMETRICS),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response()
}

async fn not_found() -> Response {
    problem(StatusCode::NOT_FOUND, "no such resource")
}

/// An RFC 9457 problem document.
pub(crate) fn problem(status: StatusCode, detail: &str) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    (
        status,
        [(header::CONTENT_TYPE, PROBLEM_JSON)],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_requests_decode_in_every_spelling() {
        let der: Vec<u8> = (0u8..=255).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
        assert!(b64.contains('+') && b64.contains('/') && b64.ends_with('='));
        let encoded = b64
            .replace('%', "%25")
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        for spelling in [
            b64.clone(),
            encoded.clone(),
            b64.trim_end_matches('=').to_owned(),
            b64.replace('/', "%2f"),
        ] {
            assert_eq!(
                decode_get_request(&spelling).as_deref(),
                Some(&der[..]),
                "{spelling}"
            );
        }
    }

    #[test]
    fn bad_get_requests_do_not_decode() {
        for bad in ["%", "%4", "%zz", "!!!!", "a b", "%ff%fe"] {
            assert!(decode_get_request(bad).is_none(), "{bad}");
        }
    }
}
