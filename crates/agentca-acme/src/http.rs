//! The ACME HTTP surface under `/acme/` (RFC 8555 §7.1): routing, the HTTP-level checks that
//! come before any JWS is read (§6.2 content type, §6.5 no client `Replay-Nonce`), and the
//! headers every answer carries: a fresh `Replay-Nonce`, `Link: <directory>;rel="index"` and
//! `Cache-Control: no-store`, errors included.

use std::net::SocketAddr;
use std::sync::Arc;

use agentca_core::issuer::{InFlightGuard, StagedIssuance};
use agentca_core::store::{RequestSubject, blocking_section};
use axum::Router;
use axum::body::{Body as HttpBody, Bytes};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::json;

use crate::error::{AcmeError, Result};
use crate::order::{Finalized, PendingFinalize};
use crate::reply::{Body, Reply};
use crate::service::{AcmeService, KeyMode, Links};

/// The ACME routes, to mount on the HTTPS listener. Wrap the listener's whole router with
/// [`with_protocol_headers`] so that every answer under `/acme/` carries a nonce.
pub fn router(service: Arc<AcmeService>) -> Router {
    Router::new()
        .route("/acme/directory", get(directory).post(method_not_allowed))
        .route(
            "/acme/new-nonce",
            get(new_nonce).head(new_nonce).post(method_not_allowed),
        )
        .route(
            "/acme/new-account",
            post(new_account).get(method_not_allowed),
        )
        .route("/acme/new-order", post(new_order).get(method_not_allowed))
        .route(
            "/acme/revoke-cert",
            post(revoke_cert).get(method_not_allowed),
        )
        .route("/acme/key-change", post(key_change).get(method_not_allowed))
        .route(
            "/acme/renewal-info/{id}",
            get(renewal_info).post(method_not_allowed),
        )
        .route("/acme/issuer", get(issuer))
        .route("/acme/acct/{id}", post(account).get(method_not_allowed))
        .route(
            "/acme/acct/{id}/orders",
            post(orders).get(method_not_allowed),
        )
        .route("/acme/order/{id}", post(order).get(method_not_allowed))
        .route(
            "/acme/order/{id}/finalize",
            post(finalize).get(method_not_allowed),
        )
        .route("/acme/authz/{id}", post(authz).get(method_not_allowed))
        .route(
            "/acme/chall/{authz}/{kind}",
            post(challenge).get(method_not_allowed),
        )
        .route(
            "/acme/cert/{serial}",
            post(certificate).get(method_not_allowed),
        )
        .route("/acme/", any(unknown))
        .route("/acme/{*rest}", any(unknown))
        .with_state(service)
}

/// Wraps a router (the HTTPS listener's, outside its body-size and time limits) so that every
/// answer under `/acme/` — including a 413 or 408 given before any ACME code ran — carries a
/// fresh `Replay-Nonce`, the index link and `Cache-Control: no-store`, and is a problem
/// document when it is an error.
pub fn with_protocol_headers(service: Arc<AcmeService>, router: Router) -> Router {
    router.layer(middleware::from_fn_with_state(service, protocol_headers))
}

type Svc = State<Arc<AcmeService>>;

/// The POST endpoints, with the key reference each accepts.
enum Endpoint {
    NewAccount,
    NewOrder,
    RevokeCert,
    KeyChange,
    Account(String),
    Orders(String),
    Order(String),
    Finalize(String),
    Authz(String),
    Challenge(String, String),
    Certificate(String),
}

impl Endpoint {
    /// Whether the endpoint may wait for a durable commit or sign (then it runs on a blocking
    /// thread); the others only read and write the store's memory and verify one signature,
    /// which is cheaper than a hop to another thread.
    fn blocks(&self) -> bool {
        matches!(
            self,
            Self::NewAccount | Self::RevokeCert | Self::KeyChange | Self::Account(_)
        )
    }

    /// The record the handler reads first, for the store to read with the account.
    fn subject(&self) -> Option<RequestSubject<'_>> {
        match self {
            Self::NewOrder => Some(RequestSubject::AccountAgent),
            Self::Order(id) | Self::Finalize(id) => Some(RequestSubject::Order(id)),
            Self::Authz(id) => Some(RequestSubject::Authorization(id)),
            _ => None,
        }
    }

    fn key_mode(&self) -> KeyMode {
        match self {
            Self::NewAccount => KeyMode::Jwk,
            Self::RevokeCert => KeyMode::Either,
            _ => KeyMode::Kid,
        }
    }
}

async fn new_account(s: Svc, h: HeaderMap, u: Uri, b: Bytes) -> Response {
    handle(s, h, u, b, Endpoint::NewAccount).await
}
async fn new_order(s: Svc, h: HeaderMap, u: Uri, b: Bytes) -> Response {
    handle(s, h, u, b, Endpoint::NewOrder).await
}
async fn revoke_cert(s: Svc, h: HeaderMap, u: Uri, b: Bytes) -> Response {
    handle(s, h, u, b, Endpoint::RevokeCert).await
}
async fn key_change(s: Svc, h: HeaderMap, u: Uri, b: Bytes) -> Response {
    handle(s, h, u, b, Endpoint::KeyChange).await
}
async fn account(s: Svc, Path(id): Path<String>, h: HeaderMap, u: Uri, b: Bytes) -> Response {
    handle(s, h, u, b, Endpoint::Account(id)).await
}
async fn orders(s: Svc, Path(id): Path<String>, h: HeaderMap, u: Uri, b: Bytes) -> Response {
    handle(s, h, u, b, Endpoint::Orders(id)).await
}
async fn order(s: Svc, Path(id): Path<String>, h: HeaderMap, u: Uri, b: Bytes) -> Response {
    handle(s, h, u, b, Endpoint::Order(id)).await
}
async fn finalize(s: Svc, Path(id): Path<String>, h: HeaderMap, u: Uri, b: Bytes) -> Response {
    handle(s, h, u, b, Endpoint::Finalize(id)).await
}
async fn authz(s: Svc, Path(id): Path<String>, h: HeaderMap, u: Uri, b: Bytes) -> Response {
    handle(s, h, u, b, Endpoint::Authz(id)).await
}
async fn challenge(
    s: Svc,
    Path((authz, kind)): Path<(String, String)>,
    h: HeaderMap,
    u: Uri,
    b: Bytes,
) -> Response {
    handle(s, h, u, b, Endpoint::Challenge(authz, kind)).await
}
async fn certificate(
    s: Svc,
    Path(serial): Path<String>,
    h: HeaderMap,
    u: Uri,
    b: Bytes,
) -> Response {
    handle(s, h, u, b, Endpoint::Certificate(serial)).await
}

/// Every POST: HTTP checks, then JWS authentication and the endpoint. The endpoints that wait
/// for the disk on their own run on a blocking thread; finalize stages its certificate here and
/// waits for the commit thread without holding one.
async fn handle(
    State(service): Svc,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
    endpoint: Endpoint,
) -> Response {
    let links = match links_for(&headers) {
        Ok(links) => links,
        Err(e) => return problem(&e),
    };
    if let Err(e) = check_post_headers(&headers) {
        return problem(&e);
    }
    let url = format!(
        "https://{}{}",
        host_of(&headers).unwrap_or_default(),
        uri.path_and_query().map_or("", |p| p.as_str())
    );
    let in_flight = service.authority.in_flight().enter();
    // With a shared store, redeeming the nonce is a database round trip: off the workers.
    let endpoint_blocks = endpoint.blocks() || service.store().is_shared();
    let reply_links = links.clone();
    let run = move |worker: Arc<AcmeService>| {
        let req =
            worker.authenticate(&links, &url, &body, endpoint.key_mode(), endpoint.subject())?;
        let reply = match &endpoint {
            Endpoint::NewAccount => worker.new_account(&links, &req),
            Endpoint::NewOrder => worker.new_order(&links, &req),
            Endpoint::RevokeCert => worker.revoke_cert(&req),
            Endpoint::KeyChange => worker.key_change(&links, &req),
            Endpoint::Account(id) => worker.account_request(&links, id, &req),
            Endpoint::Orders(id) => worker.orders_list(&links, id, &req),
            Endpoint::Order(id) => worker.order_request(&links, id, &req),
            Endpoint::Finalize(id) => return worker.finalize(&links, id, &req),
            Endpoint::Authz(id) => worker.authz_request(&links, id, &req),
            Endpoint::Challenge(authz, kind) => worker.challenge_request(&links, authz, kind, &req),
            Endpoint::Certificate(serial) => worker.certificate_request(&links, serial, &req),
        }?;
        Ok::<Finalized, AcmeError>(Finalized::Answered(reply))
    };
    let outcome = if endpoint_blocks {
        let worker = service.clone();
        tokio::task::spawn_blocking(move || blocking_section(|| run(worker))).await
    } else {
        Ok(run(service.clone()))
    };
    let reply = match outcome {
        Ok(Ok(Finalized::Answered(reply))) => Ok(reply),
        Ok(Ok(Finalized::Issuing(issuing))) => {
            let (staged, pending) = *issuing;
            finish_issuing(&service, &reply_links, &in_flight, staged, pending).await
        }
        Ok(Err(e)) => Err(e),
        Err(e) => Err(AcmeError::internal(format!("request task failed: {e}"))),
    };
    match reply {
        Ok(reply) => respond(reply),
        Err(e) => problem(&e),
    }
}

/// Waits, without holding a thread, for the commit thread to make a staged certificate durable.
async fn finish_issuing(
    service: &AcmeService,
    links: &Links,
    request: &InFlightGuard,
    staged: StagedIssuance,
    pending: PendingFinalize,
) -> Result<Reply> {
    let (tell, durable) = tokio::sync::oneshot::channel();
    service
        .authority
        .commit_staged(staged, request, move |result| {
            let _ = tell.send(result);
        });
    let durable = durable
        .await
        .unwrap_or(Err(agentca_core::Error::Unreachable(
            "the commit thread dropped a job",
        )));
    service.finalize_committed(links, pending, durable)
}

/// RFC 8555 §6.2: `application/jose+json`, else 415. A client must not send `Replay-Nonce`
/// itself (Boulder refuses it too: it is a response header, and echoing one is a client bug).
fn check_post_headers(headers: &HeaderMap) -> Result<()> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    if content_type.as_deref() != Some("application/jose+json") {
        return Err(AcmeError::malformed(
            "ACME requests are POSTed with Content-Type application/jose+json",
        )
        .with_status(415));
    }
    if headers.contains_key("replay-nonce") {
        return Err(AcmeError::malformed(
            "Replay-Nonce is a response header; put the nonce in the JWS protected header",
        ));
    }
    Ok(())
}

async fn directory(State(_): Svc, headers: HeaderMap) -> Response {
    let links = match links_for(&headers) {
        Ok(links) => links,
        Err(e) => return problem(&e),
    };
    respond(Reply::ok(json!({
        "newNonce": links.at("new-nonce"),
        "newAccount": links.at("new-account"),
        "newOrder": links.at("new-order"),
        "revokeCert": links.at("revoke-cert"),
        "keyChange": links.at("key-change"),
        "renewalInfo": links.at("renewal-info"),
        "meta": {
            "externalAccountRequired": true,
            "website": "https://github.com/agentca/agentca",
        },
    })))
}

/// §7.2: HEAD answers 200, GET 204; the nonce is added like on every response.
async fn new_nonce(method: Method) -> Response {
    let status = if method == Method::HEAD {
        StatusCode::OK
    } else {
        StatusCode::NO_CONTENT
    };
    status.into_response()
}

async fn renewal_info(State(service): Svc, Path(id): Path<String>) -> Response {
    match service.renewal_info(&id) {
        Ok(reply) => respond(reply),
        Err(e) => problem(&e),
    }
}

async fn issuer(State(service): Svc) -> Response {
    respond(service.issuer_certificate())
}

async fn method_not_allowed(method: Method) -> Response {
    let allow = if method == Method::POST {
        "GET, HEAD"
    } else {
        "POST"
    };
    method_refused(&method, Some(HeaderValue::from_static(allow)))
}

/// 405 as a problem document, with the methods the resource has when they are known.
fn method_refused(method: &Method, allow: Option<HeaderValue>) -> Response {
    let mut response = problem(
        &AcmeError::malformed(format!("{method} is not allowed on this resource")).with_status(405),
    );
    if let Some(allow) = allow {
        response.headers_mut().insert(header::ALLOW, allow);
    }
    response
}

async fn unknown() -> Response {
    problem(&AcmeError::not_found("ACME resource"))
}

/// Adds what every ACME response carries (§6.5, §7.1), and records each refusal in the audit
/// log ([`agentca_core::refusals`]).
async fn protocol_headers(State(service): Svc, request: Request, next: Next) -> Response {
    if !request.uri().path().starts_with("/acme/") {
        return next.run(request).await;
    }
    let index = links_for(request.headers()).ok().map(|l| l.directory());
    // Cheap copies: the refusal record that needs them is the rare case.
    let method = request.method().clone();
    let uri = request.uri().clone();
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    let mut response = next.run(request).await;
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/problem+json");
    // Errors given before any ACME handler ran (the body limit, the timeout, a method the
    // route has no handler for, a path segment that does not decode) are problem documents
    // too, and refusals like any other.
    if !is_problem && response.status().is_client_error() {
        response = match response.status() {
            StatusCode::PAYLOAD_TOO_LARGE => {
                problem(&AcmeError::malformed("the request body is too large").with_status(413))
            }
            StatusCode::REQUEST_TIMEOUT => problem(
                &AcmeError::malformed("the request was not received in time").with_status(408),
            ),
            StatusCode::METHOD_NOT_ALLOWED => {
                method_refused(&method, response.headers().get(header::ALLOW).cloned())
            }
            StatusCode::NOT_FOUND => problem(&AcmeError::not_found("ACME resource")),
            status => problem(
                &AcmeError::malformed("the request URL could not be read")
                    .with_status(status.as_u16()),
            ),
        };
    }
    if response.status().is_client_error()
        && let Some(refused) = response.extensions().get::<Refused>()
    {
        let fields = json!({
            "client": client.map(|ip| ip.to_string()),
            "method": method.as_str(),
            "path": uri.path(),
            "status": response.status().as_u16(),
            "type": refused.kind,
            "detail": refused.detail,
        });
        if let Err(e) = service.authority.refusals().record("acme.refused", fields) {
            tracing::warn!(error = %e, "an ACME refusal could not be recorded in the audit log");
        }
    }
    let headers = response.headers_mut();
    if let Ok(nonce) = HeaderValue::from_str(&service.nonces().issue()) {
        headers.insert("replay-nonce", nonce);
    }
    if let Some(index) = index
        && let Ok(link) = HeaderValue::from_str(&format!("<{index}>;rel=\"index\""))
    {
        headers.append(header::LINK, link);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn respond(reply: Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    let (content_type, body) = match reply.body {
        Body::Json(value) => ("application/json", HttpBody::from(value.to_string())),
        Body::PemChain(pem) => ("application/pem-certificate-chain", HttpBody::from(pem)),
        Body::Der(der, ct) => (ct, HttpBody::from(der)),
        Body::Empty => ("", HttpBody::empty()),
    };
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    if !content_type.is_empty() {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    if let Some(location) = reply.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        headers.insert(header::LOCATION, location);
    }
    for link in reply.links {
        if let Ok(v) = HeaderValue::from_str(&link) {
            headers.append(header::LINK, v);
        }
    }
    if let Some(after) = reply.retry_after {
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from(after.as_secs().max(1)),
        );
    }
    response
}

/// What a problem answer said, for the audit log's record of the refusal.
#[derive(Clone, Debug)]
struct Refused {
    kind: &'static str,
    detail: String,
}

fn problem(e: &AcmeError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = (status, e.to_problem().to_string()).into_response();
    response.extensions_mut().insert(Refused {
        kind: e.kind.name(),
        detail: e.detail.clone(),
    });
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if let Some(after) = e.retry_after {
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from(after.as_secs().max(1)),
        );
    }
    if let Some(location) = e
        .location
        .as_deref()
        .and_then(|l| HeaderValue::from_str(l).ok())
    {
        headers.insert(header::LOCATION, location);
    }
    response
}

/// The host the client addressed: the Host header (HTTP/1.1 requires it), limited to the
/// characters of a host name or IP literal and an optional port, so it can be put into URLs
/// and headers safely.
fn host_of(headers: &HeaderMap) -> Option<&str> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let ok = !host.is_empty()
        && host.len() <= 261
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    ok.then_some(host)
}

fn links_for(headers: &HeaderMap) -> Result<Links> {
    host_of(headers)
        .map(Links::new)
        .ok_or_else(|| AcmeError::malformed("the request has no usable Host header"))
}
