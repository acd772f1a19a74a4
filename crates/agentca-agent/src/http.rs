//! The HTTP an agent speaks to its CA: HTTP/1.1, TLS trusting only the CA's roots (or plain
//! HTTP for `http://` URLs, as SCEP uses), a timeout on every request and a cap on what is
//! read. One connection per request: an agent talks to its CA a few times an hour.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_TYPE, HOST, HeaderMap, HeaderValue, USER_AGENT};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::error::{AgentError, Result};

/// The largest body read: a chain or a CertRep is a few kilobytes.
const MAX_BODY_BYTES: usize = 1 << 20;

/// An answer: status, headers, body.
#[derive(Debug)]
pub struct Response {
    /// The HTTP status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, at most [`MAX_BODY_BYTES`].
    pub body: Bytes,
}

impl Response {
    /// A header as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends requests to the CA.
#[derive(Clone)]
pub struct HttpClient {
    tls: TlsConnector,
    timeout: Duration,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// Trusts exactly the certificates in `roots_pem` (the CA's root): the system's roots say
    /// nothing about a private CA, and trusting them would let any public CA impersonate it.
    pub fn new(roots_pem: &[u8], timeout: Duration) -> Result<Self> {
        let blocks = pem::parse_many(roots_pem)
            .map_err(|e| AgentError::Credentials(format!("CA certificates: {e}")))?;
        let mut roots = rustls::RootCertStore::empty();
        for block in blocks.iter().filter(|b| b.tag() == "CERTIFICATE") {
            roots
                .add(CertificateDer::from(block.contents().to_vec()))
                .map_err(|e| AgentError::Credentials(format!("CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(AgentError::Credentials(
                "no PEM certificate in the CA file".into(),
            ));
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| AgentError::Protocol(format!("TLS configuration: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: TlsConnector::from(Arc::new(config)),
            timeout,
        })
    }

    /// Sends one request and reads the whole answer, within the timeout.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        content_type: Option<&'static str>,
        body: Vec<u8>,
    ) -> Result<Response> {
        let uri: Uri = url
            .parse()
            .map_err(|e| AgentError::Protocol(format!("URL {url:?}: {e}")))?;
        match tokio::time::timeout(
            self.timeout,
            self.exchange(method, &uri, content_type, body),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(AgentError::Unavailable(format!(
                "{url}: no answer within {:?}",
                self.timeout
            ))),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        uri: &Uri,
        content_type: Option<&'static str>,
        body: Vec<u8>,
    ) -> Result<Response> {
        let unavailable =
            |e: &dyn std::fmt::Display| AgentError::Unavailable(format!("{uri}: {e}"));
        let host = uri
            .host()
            .ok_or_else(|| AgentError::Protocol(format!("URL {uri} has no host")))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(AgentError::Protocol(format!("URL {uri}: http or https"))),
        };
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let host_name = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let tcp = TcpStream::connect((host_name.as_str(), port))
            .await
            .map_err(|e| unavailable(&e))?;
        let _ = tcp.set_nodelay(true);
        let authority = uri
            .authority()
            .map_or_else(|| host.to_owned(), |a| a.as_str().to_owned());
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, authority)
            .header(USER_AGENT, concat!("agentca/", env!("CARGO_PKG_VERSION")));
        if let Some(ct) = content_type {
            request = request.header(CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| AgentError::Protocol(format!("request: {e}")))?;
        let response = if tls {
            let name = ServerName::try_from(host_name)
                .map_err(|e| AgentError::Protocol(format!("server name: {e}")))?;
            let stream = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| unavailable(&e))?;
            send_on(TokioIo::new(stream), request).await
        } else {
            send_on(TokioIo::new(tcp), request).await
        }
        .map_err(|e| unavailable(&e))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| AgentError::Protocol(format!("{uri}: reading the answer: {e}")))?
            .to_bytes();
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

async fn send_on<T>(
    io: TokioIo<T>,
    request: Request<Full<Bytes>>,
) -> std::result::Result<hyper::Response<hyper::body::Incoming>, hyper::Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender.send_request(request).await
}
