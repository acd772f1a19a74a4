//! A minimal HTTP/1.1 client for OCSP and CRL fetches: one request per connection, a deadline
//! on the whole exchange, a cap on the body. Plain `http://` only: OCSP responses and CRLs
//! are signed, so they are fetched over HTTP (RFC 6960 Appendix A, RFC 5280 §4.2.1.13).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper::header::{ACCEPT, CONNECTION, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use url::{Host, Position, Url};

use crate::error::Error;

/// Parses a responder or CRL URL; only `http://HOST[:PORT]/PATH` is accepted.
pub(crate) fn parse_url(input: &str) -> Result<Url, Error> {
    let bad = |reason: &str| Error::InvalidUrl {
        url: crate::spiffe::shorten(input),
        reason: reason.into(),
    };
    let url = Url::parse(input).map_err(|e| bad(&e.to_string()))?;
    if url.scheme() != "http" {
        return Err(bad(
            "only http:// URLs are supported (the answers are signed)",
        ));
    }
    if url.host().is_none() {
        return Err(bad("no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("credentials in the URL are not allowed"));
    }
    if url.fragment().is_some() {
        return Err(bad("a fragment is not allowed"));
    }
    Ok(url)
}

/// What one fetch may take and return.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) timeout: Duration,
    pub(crate) max_body: usize,
}

/// POSTs `body` and returns the 200 response's body.
pub(crate) async fn post(
    url: &Url,
    content_type: &'static str,
    accept: &'static str,
    body: Vec<u8>,
    limits: Limits,
) -> Result<Vec<u8>, String> {
    with_deadline(
        url,
        limits,
        exchange(url, "POST", Some(content_type), accept, body, limits),
    )
    .await
}

/// GETs `url` and returns the 200 response's body.
pub(crate) async fn get(
    url: &Url,
    accept: &'static str,
    limits: Limits,
) -> Result<Vec<u8>, String> {
    with_deadline(
        url,
        limits,
        exchange(url, "GET", None, accept, Vec::new(), limits),
    )
    .await
}

async fn with_deadline(
    url: &Url,
    limits: Limits,
    exchange: impl Future<Output = Result<Vec<u8>, String>>,
) -> Result<Vec<u8>, String> {
    match tokio::time::timeout(limits.timeout, exchange).await {
        Ok(result) => result.map_err(|e| format!("{}: {e}", origin(url))),
        Err(_) => Err(format!(
            "{}: no answer within {:?}",
            origin(url),
            limits.timeout
        )),
    }
}

/// Aborts the connection task when the exchange ends or is abandoned at the deadline.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn exchange(
    url: &Url,
    method: &'static str,
    content_type: Option<&'static str>,
    accept: &'static str,
    body: Vec<u8>,
    limits: Limits,
) -> Result<Vec<u8>, String> {
    let port = url.port_or_known_default().unwrap_or(80);
    let stream = match url.host() {
        Some(Host::Domain(name)) => TcpStream::connect((name, port)).await,
        Some(Host::Ipv4(ip)) => TcpStream::connect((ip, port)).await,
        Some(Host::Ipv6(ip)) => TcpStream::connect((ip, port)).await,
        None => return Err("no host".into()),
    }
    .map_err(|e| format!("cannot connect: {e}"))?;
    // Small request, small answer: do not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let _driver = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));

    let mut request = Request::builder()
        .method(method)
        .uri(&url[Position::BeforePath..Position::AfterQuery])
        .header(HOST, &url[Position::BeforeHost..Position::AfterPort])
        .header(ACCEPT, accept)
        .header(CONNECTION, "close");
    if let Some(content_type) = content_type {
        request = request.header(CONTENT_TYPE, content_type);
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("HTTP request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    if response.status() != hyper::StatusCode::OK {
        return Err(format!("HTTP status {}", response.status()));
    }
    let body = Limited::new(response.into_body(), limits.max_body)
        .collect()
        .await
        .map_err(|e| format!("HTTP body (at most {} bytes): {e}", limits.max_body))?;
    Ok(body.to_bytes().to_vec())
}

/// `http://host:port`, for messages (never the path or query).
fn origin(url: &Url) -> String {
    url[..Position::AfterPort].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_without_credentials() {
        assert!(parse_url("http://127.0.0.1:8080/ocsp").is_ok());
        assert!(parse_url("http://ca.example/crl?x=1").is_ok());
        for (url, why) in [
            ("https://ca.example/ocsp", "only http"),
            ("ftp://ca.example/crl", "only http"),
            ("http://user:pw@ca.example/ocsp", "credentials"),
            ("http://ca.example/ocsp#x", "fragment"),
            ("not a url", "relative URL"),
        ] {
            let err = parse_url(url).unwrap_err().to_string();
            assert!(err.contains(why), "{url}: {err}");
        }
    }
}
