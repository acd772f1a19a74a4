//! The built-in http-01 responder (RFC 8555 §8.3): serves key authorizations at
//! `/.well-known/acme-challenge/TOKEN` on the address given to `--http-01-listen`, for as long
//! as one order needs it.
//!
//! It answers nothing else: any other path, an unknown token or a method other than GET or
//! HEAD gets a 404 or 405, so the listener tells a stranger nothing but the key
//! authorizations, which are public by design (the CA's validator fetches them unauthenticated).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::error::{AgentError, Result};

const PREFIX: &str = "/.well-known/acme-challenge/";
/// How long one validator connection may stay open: a fetch is one short request.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

type Tokens = Arc<Mutex<HashMap<String, String>>>;

/// A listening responder; it stops (and frees its address) when dropped.
#[derive(Debug)]
pub struct Responder {
    addr: SocketAddr,
    tokens: Tokens,
    task: JoinHandle<()>,
}

impl Responder {
    /// Listens on `addr` (port 0 picks a free one; [`Responder::local_addr`] says which).
    pub async fn bind(addr: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| AgentError::Responder(format!("cannot listen on {addr}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| AgentError::Responder(format!("its address: {e}")))?;
        let tokens: Tokens = Arc::default();
        let task = tokio::spawn(serve(listener, tokens.clone()));
        Ok(Self { addr, tokens, task })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `key_authorization` for `token` from now on.
    pub fn add(&self, token: &str, key_authorization: &str) {
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.insert(token.to_owned(), key_authorization.to_owned());
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, tokens: Tokens) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors or the like: try again shortly rather than spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let tokens = tokens.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let tokens = tokens.clone();
                async move { Ok::<_, Infallible>(answer(&request, &tokens)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
        });
    }
}

fn answer(request: &Request<Incoming>, tokens: &Tokens) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        response
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, String::new());
    }
    let found = request
        .uri()
        .path()
        .strip_prefix(PREFIX)
        .and_then(|token| tokens.lock().ok()?.get(token).cloned());
    match found {
        Some(key_authorization) => reply(StatusCode::OK, key_authorization),
        None => reply(StatusCode::NOT_FOUND, String::new()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::{Read, Write};

    use super::*;

    async fn get(addr: SocketAddr, method: &str, path: &str) -> String {
        let request = format!("{method} {path} HTTP/1.1\r\nHost: example\r\n\r\n");
        tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).unwrap();
            answer
        })
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn serves_only_the_tokens_it_was_given() {
        let responder = Responder::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = responder.local_addr();
        responder.add("tok-1", "tok-1.thumb");
        let ok = get(addr, "GET", "/.well-known/acme-challenge/tok-1").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.ends_with("\r\n\r\ntok-1.thumb"), "{ok}");
        let unknown = get(addr, "GET", "/.well-known/acme-challenge/tok-2").await;
        assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");
        let elsewhere = get(addr, "GET", "/tok-1").await;
        assert!(elsewhere.starts_with("HTTP/1.1 404"), "{elsewhere}");
        let post = get(addr, "POST", "/.well-known/acme-challenge/tok-1").await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        drop(responder);
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The address is free again once the responder is gone.
        let again = Responder::bind(addr).await.unwrap();
        assert_eq!(again.local_addr(), addr);
    }
}
