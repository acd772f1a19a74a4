//! Shared test setup: a CA in a temporary directory, a running server on port 0, an HTTP
//! client over real TCP, and the openssl command line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use agentca_core::ca::{self, Ca, DataDir, InitOptions};
use agentca_core::csr::KeyKind;
use agentca_core::issuer::Authority;
use agentca_core::keyfile::Protection;
use agentca_core::ocsp::{
    self, CertStatus, HashAlgorithm, IssuerHashes, OcspResponseStatus, ParsedResponse,
};
use agentca_core::store::{AgentRecord, CertificateRecord, EnrollmentMethod};
use agentca_server::{BoundAddresses, Hooks, Server, ServerConfig};
use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request, StatusCode};
use time::OffsetDateTime;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub(crate) const AGENT: &str = "spiffe://example.org/agent/relying/test";

/// A CA created by `init` in a temporary directory.
pub(crate) struct TestCa {
    pub(crate) tmp: tempfile::TempDir,
    pub(crate) dir: DataDir,
    pub(crate) ca: Arc<Ca>,
    pub(crate) authority: Arc<Authority>,
}

impl TestCa {
    pub(crate) fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path().join("ca"));
        ca::init(
            &dir,
            &InitOptions {
                trust_domain: "example.org".into(),
                key_type: KeyKind::EcdsaP256,
                base_url: None,
                protection: Protection::InsecurePlaintext,
                issuing_key_in: None,
            },
        )
        .unwrap();
        let (ca, authority) = open(&dir);
        ca.store()
            .insert_agent(&AgentRecord {
                id: AGENT.into(),
                owner: None,
                policy: None,
                dns: vec![],
                disabled: false,
                created_at: OffsetDateTime::now_utc(),
                early_renewal: None,
            })
            .unwrap();
        Self {
            tmp,
            dir,
            ca,
            authority,
        }
    }

    /// Opens the CA again (after a server on it stopped and every handle was dropped).
    pub(crate) fn reopen(self) -> Self {
        let Self {
            tmp,
            dir,
            ca,
            authority,
        } = self;
        // The store's lock is released only when the last handle is gone.
        drop((ca, authority));
        let (ca, authority) = open(&dir);
        Self {
            tmp,
            dir,
            ca,
            authority,
        }
    }

    /// Issues an agent certificate through the core.
    pub(crate) fn issue(&self) -> CertificateRecord {
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .unwrap();
        self.authority
            .issue_csr(AGENT, csr.der(), EnrollmentMethod::Cli, None)
            .unwrap()
    }

    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.dir.file(name)
    }

    pub(crate) fn issuer(&self) -> IssuerHashes {
        IssuerHashes::from_issuer_der(self.authority.ca().cert_der()).unwrap()
    }

    /// Writes a DER certificate as PEM in the temporary directory.
    pub(crate) fn write_pem(&self, name: &str, label: &str, der: &[u8]) -> PathBuf {
        let path = self.tmp.path().join(name);
        std::fs::write(&path, pem::encode(&pem::Pem::new(label, der.to_vec()))).unwrap();
        path
    }

    pub(crate) fn scratch(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

fn open(dir: &DataDir) -> (Arc<Ca>, Arc<Authority>) {
    let ca = Ca::open(dir).unwrap();
    let authority = ca.authority(&Protection::InsecurePlaintext).unwrap();
    (Arc::new(ca), Arc::new(authority))
}

/// A configuration for tests: loopback port 0 for both listeners, a short debounce.
pub(crate) fn test_config() -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        crl_debounce: Duration::from_millis(300),
        shutdown_grace: Duration::from_secs(5),
        ..ServerConfig::default()
    }
}

/// A server running in the background.
pub(crate) struct Running {
    pub(crate) addrs: BoundAddresses,
    pub(crate) hooks: Arc<Hooks>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), agentca_server::ServerError>>>,
}

impl Running {
    pub(crate) async fn start(ca: &TestCa, config: ServerConfig) -> Self {
        Self::start_with(ca, config, |s| s).await
    }

    pub(crate) async fn start_with(
        ca: &TestCa,
        config: ServerConfig,
        customize: impl FnOnce(Server) -> Server,
    ) -> Self {
        let (ca_, authority) = (ca.ca.clone(), ca.authority.clone());
        let server = tokio::task::spawn_blocking(move || {
            Server::new(ca_, authority, Protection::InsecurePlaintext, config)
        })
        .await
        .unwrap()
        .unwrap();
        let mut server = customize(server);
        let addrs = server.bind().await.unwrap();
        let hooks = server.hooks();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Self {
            addrs,
            hooks,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Signals shutdown and waits for `run` to return.
    pub(crate) async fn stop(mut self) {
        self.signal_stop();
        self.join().await;
    }

    /// Signals shutdown without waiting.
    pub(crate) fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits for `run` to return; it must return `Ok`.
    pub(crate) async fn join(mut self) {
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    pub(crate) fn ocsp_url(&self) -> String {
        format!("http://{}/ocsp", self.addrs.http)
    }

    /// Calls a blocking hook off the async workers.
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Hooks) -> T + Send + 'static,
    ) -> T {
        let hooks = self.hooks.clone();
        tokio::task::spawn_blocking(move || f(&hooks))
            .await
            .unwrap()
    }
}

/// An HTTP/1.1 response.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One request on a new connection, through hyper's client.
pub(crate) async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = sender
        .send_request(builder.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

pub(crate) async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, Method::GET, path, &[], Vec::new()).await
}

pub(crate) async fn post_ocsp(addr: SocketAddr, der: Vec<u8>) -> Reply {
    request(
        addr,
        Method::POST,
        "/ocsp",
        &[("content-type", "application/ocsp-request")],
        der,
    )
    .await
}

/// The single status of a successful response, or the unsuccessful status.
pub(crate) fn status_of(der: &[u8]) -> Result<CertStatus, OcspResponseStatus> {
    match ocsp::parse_response(der).unwrap() {
        ParsedResponse::Successful(basic) => {
            assert_eq!(basic.responses.len(), 1, "one answer expected");
            Ok(basic.responses[0].status)
        }
        ParsedResponse::Unsuccessful(status) => Err(status),
    }
}

/// A DER OCSP request for `serial` under `issuer`.
pub(crate) fn ocsp_request(
    issuer: &IssuerHashes,
    hash: HashAlgorithm,
    serial: &[u8],
    nonce: Option<&[u8]>,
) -> Vec<u8> {
    ocsp::build_request(&[issuer.cert_id(hash, serial)], nonce).unwrap()
}

/// The value of a metric line `name value` in OpenMetrics text.
pub(crate) fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} not found in\n{text}"))
}

pub(crate) async fn metrics_text(addr: SocketAddr) -> String {
    let reply = get(addr, "/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    String::from_utf8(reply.body.to_vec()).unwrap()
}

/// Whether openssl is installed (a missing one skips, or fails under AGENTCA_REQUIRE_TOOLS=1).
pub(crate) fn have_openssl() -> bool {
    if Command::new("openssl").arg("version").output().is_ok() {
        return true;
    }
    agentca_testkit::tools::missing("openssl", "OCSP and CRL interoperability");
    false
}

/// Runs openssl with `args` on a blocking thread; returns stdout and stderr together.
pub(crate) async fn openssl(args: Vec<String>) -> String {
    tokio::task::spawn_blocking(move || {
        let out = Command::new("openssl").args(&args).output().unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
    .await
    .unwrap()
}

pub(crate) fn path_arg(p: &Path) -> String {
    p.display().to_string()
}

/// The CRL number of a DER CRL.
pub(crate) fn crl_number(der: &[u8]) -> u64 {
    let (_, crl) = x509_parser::parse_x509_crl(der).unwrap();
    let number = crl.crl_number().expect("CRL number");
    u64::try_from(number).unwrap()
}

/// Serials listed on a DER CRL.
pub(crate) fn crl_serials(der: &[u8]) -> Vec<Vec<u8>> {
    let (_, crl) = x509_parser::parse_x509_crl(der).unwrap();
    crl.iter_revoked_certificates()
        .map(|r| r.raw_serial().to_vec())
        .collect()
}
