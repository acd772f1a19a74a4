//! Loopback test peers for the validators: a scriptable HTTP server and a tls-alpn-01
//! responder. Everything binds 127.0.0.1 and an ephemeral port.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{CertificateParams, CustomExtension, KeyPair, SanType};
use rustls::ServerConfig;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{ValidationConfig, Validator};
use agentca_testkit::dns::FakeDns;

pub(crate) const TOKEN: &str = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";
pub(crate) const KEY_AUTH: &str =
    "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.nP1qzpXGymHBrUEepNY9HCsQk7K8KhOypzEt62jcerQ";

/// A validator allowing exactly `allow`, with the given ports and optional fake DNS.
pub(crate) fn validator(
    allow: &[&str],
    http01_port: u16,
    tls_alpn01_port: u16,
    dns: Option<&FakeDns>,
    timeout: Duration,
) -> Validator {
    Validator::new(ValidationConfig {
        allow: allow.iter().map(|s| s.parse().unwrap()).collect(),
        http01_port,
        tls_alpn01_port,
        // With no fake DNS, point at a port nothing answers on rather than the system's
        // resolver: tests must never query outside the machine.
        nameservers: vec![dns.map_or_else(|| "127.0.0.1:9".parse().unwrap(), FakeDns::addr)],
        timeout,
        max_response_bytes: 4096,
    })
    .unwrap()
}

/// What the HTTP test server sends for one request.
pub(crate) enum Reply {
    /// These bytes, then close.
    Raw(Vec<u8>),
    /// These bytes one at a time, `Duration` apart (a slowloris peer).
    Trickle(Vec<u8>, Duration),
}

impl Reply {
    pub(crate) fn ok(body: &str) -> Self {
        Self::status(200, body)
    }

    pub(crate) fn status(code: u16, body: &str) -> Self {
        Self::Raw(
            format!(
                "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    }

    pub(crate) fn redirect(location: &str) -> Self {
        Self::Raw(
            format!(
                "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .into_bytes(),
        )
    }
}

/// A request as the test server saw it.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) path: String,
    pub(crate) host: Option<String>,
}

/// A loopback HTTP/1.1 server answering each request with `handler(path, own port)`.
pub(crate) struct HttpServer {
    pub(crate) addr: SocketAddr,
    pub(crate) accepted: Arc<AtomicUsize>,
    pub(crate) seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpServer {
    pub(crate) async fn start<F>(handler: F) -> Self
    where
        F: Fn(&str, u16) -> Reply + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(handler);
        let task = {
            let (accepted, seen) = (accepted.clone(), seen.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((mut stream, _)) = listener.accept().await else {
                        return;
                    };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let (handler, seen) = (handler.clone(), seen.clone());
                    tokio::spawn(async move {
                        let mut head = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
                            match stream.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        let head = String::from_utf8_lossy(&head).into_owned();
                        let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                        let host = head
                            .lines()
                            .find_map(|l| l.strip_prefix("host: ").or(l.strip_prefix("Host: ")))
                            .map(str::to_owned);
                        seen.lock().unwrap().push(Seen {
                            path: path.clone(),
                            host,
                        });
                        match handler(&path, addr.port()) {
                            Reply::Raw(bytes) => {
                                let _ = stream.write_all(&bytes).await;
                            }
                            Reply::Trickle(bytes, gap) => {
                                for byte in bytes {
                                    if stream.write_all(&[byte]).await.is_err() {
                                        return;
                                    }
                                    tokio::time::sleep(gap).await;
                                }
                            }
                        }
                        let _ = stream.shutdown().await;
                    });
                }
            })
        };
        Self {
            addr,
            accepted,
            seen,
            task,
        }
    }

    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    pub(crate) fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// How a tls-alpn-01 test responder's certificate and ALPN are made.
pub(crate) struct Responder {
    pub(crate) sans: Vec<SanType>,
    /// The acmeIdentifier extension's value (the digest), or none.
    pub(crate) digest: Option<[u8; 32]>,
    pub(crate) critical: bool,
    /// ALPN protocols the server offers; empty = ignore the client's.
    pub(crate) alpn: Vec<Vec<u8>>,
    /// Sign the handshake with a key other than the certificate's.
    pub(crate) foreign_key: bool,
    /// Speak TLS 1.2 only.
    pub(crate) tls12_only: bool,
}

impl Responder {
    pub(crate) fn new(sans: Vec<SanType>, digest: [u8; 32]) -> Self {
        Self {
            sans,
            digest: Some(digest),
            critical: true,
            alpn: vec![b"acme-tls/1".to_vec()],
            foreign_key: false,
            tls12_only: false,
        }
    }

    fn config(&self) -> ServerConfig {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = self.sans.clone();
        if let Some(digest) = self.digest {
            let mut ext = CustomExtension::new_acme_identifier(&digest);
            ext.set_criticality(self.critical);
            params.custom_extensions = vec![ext];
        }
        let cert = params.self_signed(&key).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let handshake_key = if self.foreign_key {
            KeyPair::generate().unwrap()
        } else {
            key
        };
        let signing_key = provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                handshake_key.serialize_der(),
            )))
            .unwrap();
        // Handed over as is: `with_single_cert` would parse the certificate and refuse the
        // critical acmeIdentifier extension it does not know.
        let certified =
            CertifiedKey::new(vec![CertificateDer::from(cert.der().to_vec())], signing_key);
        let versions: &[&rustls::SupportedProtocolVersion] = if self.tls12_only {
            &[&rustls::version::TLS12]
        } else {
            rustls::DEFAULT_VERSIONS
        };
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
        config.alpn_protocols = self.alpn.clone();
        config
    }

    /// Serves TLS on 127.0.0.1 until dropped; returns the server and its port.
    pub(crate) async fn start(self) -> (TlsServer, u16) {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(self.config()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(stream).await {
                        let mut buf = [0u8; 16];
                        let _ =
                            tokio::time::timeout(Duration::from_secs(2), tls.read(&mut buf)).await;
                    }
                });
            }
        });
        (TlsServer(task), port)
    }
}

/// Aborts the responder's accept loop on drop.
pub(crate) struct TlsServer(JoinHandle<()>);

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// SHA-256 of the test key authorization, as tls-alpn-01 wants it.
pub(crate) fn key_auth_digest() -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, KEY_AUTH.as_bytes());
    digest.as_ref().try_into().unwrap()
}
