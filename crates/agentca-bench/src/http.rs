//! One keep-alive HTTP/1.1 connection per worker, over TLS trusting only the given roots
//! (or plain HTTP for `http://` URLs), with a timeout on every request: the transport of the
//! ACME and SCEP generators.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST, HeaderMap, HeaderValue, USER_AGENT};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::error::BenchError;
use crate::failure::Failure;

/// The largest body read: a certificate chain is a few kilobytes.
const MAX_BODY_BYTES: usize = 1 << 20;

/// The TLS client configuration shared by every connection, or none for plain HTTP.
#[derive(Clone)]
pub(crate) struct Connector {
    tls: Option<TlsConnector>,
}

impl Connector {
    /// Trusts exactly the certificates of the PEM file `ca`, the server's root: a benchmark
    /// talks to one known server, and the system's roots say nothing about a test CA.
    pub(crate) fn new(ca: Option<&Path>) -> Result<Self, BenchError> {
        let Some(path) = ca else {
            return Ok(Self { tls: None });
        };
        let text = std::fs::read(path).map_err(|e| BenchError::Io {
            context: format!("read {}", path.display()),
            source: e,
        })?;
        let bad = |why: String| BenchError::Certificate(format!("{}: {why}", path.display()));
        let blocks = pem::parse_many(&text).map_err(|e| bad(e.to_string()))?;
        let mut roots = rustls::RootCertStore::empty();
        for block in blocks.iter().filter(|b| b.tag() == "CERTIFICATE") {
            roots
                .add(CertificateDer::from(block.contents().to_vec()))
                .map_err(|e| bad(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(bad("no PEM certificate".into()));
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| BenchError::Crypto(format!("TLS configuration: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: Some(TlsConnector::from(Arc::new(config))),
        })
    }

    pub(crate) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// What came back: only the parts the client reads.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Response {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

type Sender = SendRequest<Full<Bytes>>;

/// A worker's connection: opened on first use, reopened after the server closed it.
pub(crate) struct Http {
    connector: Connector,
    timeout: Duration,
    /// Says which generator sent a request, for the server's logs.
    user_agent: &'static str,
    /// The connection and the `scheme://authority` it goes to.
    conn: Option<(String, Sender)>,
    /// Connections opened and requests sent, for the report.
    pub(crate) opened: u64,
    pub(crate) requests: u64,
}

impl Http {
    pub(crate) fn new(connector: Connector, timeout: Duration, user_agent: &'static str) -> Self {
        Self {
            connector,
            timeout,
            user_agent,
            conn: None,
            opened: 0,
            requests: 0,
        }
    }

    /// Sends one request, within the timeout, connecting first if needed.
    pub(crate) async fn send(
        &mut self,
        method: Method,
        url: &str,
        content_type: Option<&'static str>,
        body: Vec<u8>,
    ) -> Result<Response, Failure> {
        let uri: Uri = url
            .parse()
            .map_err(|e| Failure::invalid(format!("URL {url:?}: {e}")))?;
        self.requests += 1;
        let body = Bytes::from(body);
        match tokio::time::timeout(
            self.timeout,
            self.exchange(method, &uri, content_type, body),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => {
                // Whatever was half-sent on it, the connection cannot be reused.
                self.conn = None;
                Err(Failure::timeout())
            }
        }
    }

    /// A request that a reused connection dropped before answering is retried once on a fresh
    /// one: a server may close an idle keep-alive connection at any moment.
    async fn exchange(
        &mut self,
        method: Method,
        uri: &Uri,
        content_type: Option<&'static str>,
        body: Bytes,
    ) -> Result<Response, Failure> {
        let origin = origin(uri, self.connector.is_tls())?;
        for attempt in 0..2 {
            if let Some((to, sender)) = self.conn.as_mut()
                && (*to != origin || sender.ready().await.is_err())
            {
                self.conn = None;
            }
            let fresh = self.conn.is_none();
            if fresh {
                let mut sender = self.connect(uri).await?;
                sender
                    .ready()
                    .await
                    .map_err(|e| Failure::transport(format!("connection: {e}")))?;
                self.conn = Some((origin.clone(), sender));
            }
            let Some((_, sender)) = self.conn.as_mut() else {
                return Err(Failure::transport("no connection".into()));
            };
            let request = build(&method, uri, self.user_agent, content_type, body.clone())?;
            let response = match sender.send_request(request).await {
                Ok(response) => response,
                Err(e)
                    if attempt == 0 && !fresh && (e.is_canceled() || e.is_incomplete_message()) =>
                {
                    self.conn = None;
                    continue;
                }
                Err(e) => {
                    self.conn = None;
                    return Err(Failure::transport(format!("request: {e}")));
                }
            };
            let (parts, incoming) = response.into_parts();
            let body = match Limited::new(incoming, MAX_BODY_BYTES).collect().await {
                Ok(body) => body.to_bytes(),
                Err(e) => {
                    self.conn = None;
                    return Err(Failure::transport(format!("response body: {e}")));
                }
            };
            return Ok(Response {
                status: parts.status,
                headers: parts.headers,
                body,
            });
        }
        Err(Failure::transport(
            "the server closed the connection twice".into(),
        ))
    }

    async fn connect(&mut self, uri: &Uri) -> Result<Sender, Failure> {
        let host = uri
            .host()
            .ok_or_else(|| Failure::invalid(format!("URL {uri} has no host")))?;
        let tls = self.connector.tls.clone();
        let port = uri
            .port_u16()
            .unwrap_or(if tls.is_some() { 443 } else { 80 });
        let stream = TcpStream::connect(format!("{host}:{port}"))
            .await
            .map_err(|e| Failure::transport(format!("connect to {host}:{port}: {e}")))?;
        // Requests are small single writes; Nagle would only add delay.
        stream
            .set_nodelay(true)
            .map_err(|e| Failure::transport(format!("set TCP_NODELAY: {e}")))?;
        self.opened += 1;
        let Some(tls) = tls else {
            return handshake(stream).await;
        };
        let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
            .map_err(|e| Failure::invalid(format!("TLS name {host:?}: {e}")))?
            .to_owned();
        let stream = tls
            .connect(name, stream)
            .await
            .map_err(|e| Failure::transport(format!("TLS handshake: {e}")))?;
        handshake(stream).await
    }
}

async fn handshake<T>(io: T) -> Result<Sender, Failure>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| Failure::transport(format!("HTTP handshake: {e}")))?;
    tokio::spawn(async move {
        // Its end is seen by the sender (ready() fails), which reconnects.
        let _ = connection.await;
    });
    Ok(sender)
}

/// `scheme://authority`, refusing a scheme the connector cannot speak.
fn origin(uri: &Uri, tls: bool) -> Result<String, Failure> {
    let scheme = uri.scheme_str().unwrap_or("");
    match (scheme, tls) {
        ("https", true) | ("http", false) => {}
        ("https", false) => {
            return Err(Failure::invalid(format!(
                "{uri}: an https URL needs the server's root (--ca)"
            )));
        }
        _ => {
            return Err(Failure::invalid(format!(
                "{uri}: the URLs must all be {}",
                if tls { "https" } else { "http" }
            )));
        }
    }
    let authority = uri
        .authority()
        .ok_or_else(|| Failure::invalid(format!("URL {uri} has no host")))?;
    Ok(format!("{scheme}://{authority}"))
}

fn build(
    method: &Method,
    uri: &Uri,
    user_agent: &'static str,
    content_type: Option<&'static str>,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, Failure> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = method.clone();
    *request.uri_mut() = path
        .parse()
        .map_err(|e| Failure::invalid(format!("path {path:?}: {e}")))?;
    let headers = request.headers_mut();
    if let Some(authority) = uri.authority() {
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|e| Failure::invalid(format!("host {authority}: {e}")))?;
        headers.insert(HOST, host);
    }
    headers.insert(USER_AGENT, HeaderValue::from_static(user_agent));
    headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
    if let Some(content_type) = content_type {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    Ok(request)
}
