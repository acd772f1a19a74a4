//! A small OCSP responder for the tests, with switchable misbehaviour.
//!
//! It signs a fresh `good` answer for every CertID asked about (with the core's `Responder`),
//! and decodes GET requests strictly as RFC 6960 Appendix A.1 writes them, so a client that
//! forgets to URL-encode its base64 gets HTTP 400.

#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use agentca_core::ocsp::{self, CertStatus, OcspResponseStatus, Responder, SingleStatus};
use agentca_core::signer::KeyPairSigner;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::CONNECTION;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use time::{Duration, OffsetDateTime};

use crate::test_pki::TestPki;

/// What the server answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Behaviour {
    /// Signed `good` answers on keep-alive connections.
    Sign,
    /// Signed answers, then `Connection: close` (one request per connection).
    SignAndClose,
    /// HTTP 500.
    HttpError,
    /// An unsigned `tryLater` response.
    TryLater,
    /// Bytes that are not an OCSP response.
    Garbage,
    /// A signed answer about a different serial.
    WrongSerial,
}

struct State {
    behaviour: Behaviour,
    signer: KeyPairSigner,
    responder_der: Vec<u8>,
    gets: AtomicU64,
    posts: AtomicU64,
}

pub(crate) struct TestServer {
    pub(crate) url: String,
    state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    pub(crate) fn start(pki: &TestPki, behaviour: Behaviour) -> Self {
        let key = rcgen::KeyPair::from_pem(&pki.responder_key_pem).unwrap();
        let state = Arc::new(State {
            behaviour,
            signer: KeyPairSigner::new(key).unwrap(),
            responder_der: pki.responder_der.clone(),
            gets: AtomicU64::new(0),
            posts: AtomicU64::new(0),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}/ocsp", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = state.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(serve(listener, served, stopped));
        });
        Self {
            url,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub(crate) fn gets(&self) -> u64 {
        self.state.gets.load(Ordering::Relaxed)
    }

    pub(crate) fn posts(&self) -> u64 {
        self.state.posts.load(Ordering::Relaxed)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    state: Arc<State>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
}

fn reply(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

/// Decodes `/ocsp/{url-encoded base64}`; only the three escapes that standard base64 needs
/// are accepted, and the raw characters they stand for are refused.
fn decode_get(path: &str) -> Option<Vec<u8>> {
    let encoded = path.strip_prefix("/ocsp/")?;
    if encoded.contains(['+', '/', '=']) {
        return None;
    }
    let mut b64 = String::new();
    let mut rest = encoded;
    while let Some(at) = rest.find('%') {
        b64.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3)?;
        b64.push(match escape {
            "%2B" => '+',
            "%2F" => '/',
            "%3D" => '=',
            _ => return None,
        });
        rest = &rest[at + 3..];
    }
    b64.push_str(rest);
    STANDARD.decode(b64).ok()
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let der = match *req.method() {
        hyper::Method::POST => {
            state.posts.fetch_add(1, Ordering::Relaxed);
            if req.uri().path() != "/ocsp" {
                return Ok(reply(StatusCode::NOT_FOUND, Vec::new()));
            }
            match req.into_body().collect().await {
                Ok(body) => body.to_bytes().to_vec(),
                Err(_) => return Ok(reply(StatusCode::BAD_REQUEST, Vec::new())),
            }
        }
        hyper::Method::GET => {
            state.gets.fetch_add(1, Ordering::Relaxed);
            match decode_get(req.uri().path()) {
                Some(der) => der,
                None => return Ok(reply(StatusCode::BAD_REQUEST, Vec::new())),
            }
        }
        _ => return Ok(reply(StatusCode::METHOD_NOT_ALLOWED, Vec::new())),
    };
    let body = match state.behaviour {
        Behaviour::HttpError => return Ok(reply(StatusCode::INTERNAL_SERVER_ERROR, Vec::new())),
        Behaviour::TryLater => ocsp::error_response(OcspResponseStatus::TryLater),
        Behaviour::Garbage => b"this is not OCSP".to_vec(),
        Behaviour::Sign | Behaviour::SignAndClose | Behaviour::WrongSerial => sign(&state, &der),
    };
    let mut response = reply(StatusCode::OK, body);
    if state.behaviour == Behaviour::SignAndClose {
        response
            .headers_mut()
            .insert(CONNECTION, hyper::header::HeaderValue::from_static("close"));
    }
    Ok(response)
}

fn sign(state: &State, der: &[u8]) -> Vec<u8> {
    let request = match ocsp::parse_request(der) {
        Ok(r) => r,
        Err(e) => return ocsp::error_response(e.response_status()),
    };
    let now = OffsetDateTime::now_utc();
    let statuses: Vec<SingleStatus> = request
        .cert_ids
        .into_iter()
        .map(|mut cert_id| {
            if state.behaviour == Behaviour::WrongSerial {
                cert_id.serial = vec![0x01];
            }
            SingleStatus {
                cert_id,
                status: CertStatus::Good,
                this_update: now,
                next_update: now + Duration::hours(1),
            }
        })
        .collect();
    Responder::new(&state.signer, &state.responder_der)
        .unwrap()
        .respond(&statuses, now, request.nonce.as_deref())
        .unwrap()
}
