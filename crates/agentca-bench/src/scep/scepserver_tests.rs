//! The generator against a real SCEP server: micromdm's `scepserver` (Debian package `scep`),
//! with its own CA in a temporary directory, a static challenge and a free port. Skipped with
//! a notice when it is not installed, a failure under `AGENTCA_REQUIRE_TOOLS=1`.
//!
//! Also checks, without it, that an absent, silent or stalling server ends a run quickly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{CertificateParams, DnType, KeyPair, KeyUsagePurpose, PKCS_RSA_SHA256, RsaKeySize};

use super::*;
use crate::error::BenchError;

const CHALLENGE: &str = "bench-static-challenge";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// A `scepserver` process with a fresh CA; killed when dropped.
struct ScepServer {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl ScepServer {
    /// `None` when scepserver is not installed.
    fn start() -> Option<Self> {
        let Some(program) = on_path("scepserver") else {
            agentca_testkit::tools::missing(
                "scepserver",
                "the SCEP benchmark against a real server (Debian package scep)",
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let depot = dir.path().join("depot");
        let init = Command::new(&program)
            .args(["ca", "-init", "-keySize", "2048", "-depot"])
            .arg(&depot)
            .output()
            .unwrap();
        assert!(
            init.status.success(),
            "{}",
            agentca_testkit::tools::transcript(&init)
        );
        let port = free_port();
        let child = Command::new(&program)
            .arg("-depot")
            .arg(&depot)
            .args(["-port", &port.to_string(), "-challenge", CHALLENGE])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Self {
            child,
            url: format!("http://127.0.0.1:{port}/scep"),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "scepserver did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(server)
    }

    fn options(&self, count: u64, challenge: &str) -> ScepBenchOptions {
        let mut o = ScepBenchOptions::new(&self.url, Challenge::Static(challenge.into()));
        o.count = count;
        o.timeout = Duration::from_secs(5);
        o.stall_after = Duration::from_secs(10);
        o.max_duration = Duration::from_secs(60);
        o
    }
}

impl Drop for ScepServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn scepserver_enrolls_every_request() {
    let Some(server) = ScepServer::start() else {
        return;
    };
    let mut opts = server.options(6, CHALLENGE);
    opts.server_pid = Some(server.child.id());
    let report = run_scep(&opts).unwrap();
    let text = report.to_text();
    assert_eq!(report.enrollments, 6, "{text}");
    assert_eq!(report.requests, 6, "{text}");
    assert_eq!(report.end, ScepEnd::Completed);
    assert_eq!(report.errors.total(), 0, "{text}");
    assert_eq!(report.duplicate_serials, 0, "{text}");
    assert_eq!(report.latency.count, 6);
    assert!(report.latency.p50 <= report.latency.max);
    // micromdm advertises POSTPKIOperation and sends its one CA certificate.
    assert_eq!(report.http_method, "POST", "{text}");
    assert_eq!(report.server_info.ca_certificates, 1, "{text}");
    assert!(
        report.server_info.recipient_subject.contains("scep-ca"),
        "{text}"
    );
    assert_eq!(report.connections, 1, "keep-alive: {text}");
    assert_eq!(report.prepared, 6);
    assert!(report.server_cpu_per_enrollment.is_some(), "{text}");
    assert!(report.server_rss_max >= report.server_rss_start);
    assert_eq!(report.to_json()["enrollments"], 6);

    // The RA named by its fingerprint, and AES-256 and two workers.
    let mut opts = server.options(4, CHALLENGE);
    opts.ca_fingerprint = Some(report.server_info.recipient_fingerprint.clone());
    opts.cipher = agentca_scep::ContentCipher::Aes256Cbc;
    opts.concurrency = 2;
    let report = run_scep(&opts).unwrap();
    // Under concurrency micromdm may fail some requests or repeat serials: counted, not fatal.
    assert_eq!(report.requests, 4, "{}", report.to_text());
    assert_eq!(
        report.enrollments + report.errors.total(),
        4,
        "{}",
        report.to_text()
    );
}

#[test]
fn a_wrong_challenge_is_counted_as_the_servers_failure() {
    let Some(server) = ScepServer::start() else {
        return;
    };
    let report = run_scep(&server.options(3, "not-the-challenge")).unwrap();
    let text = report.to_text();
    assert_eq!(report.enrollments, 0, "{text}");
    assert_eq!(report.errors.total(), 3, "{text}");
    assert_eq!(report.end, ScepEnd::Completed, "{text}");
    // Every failure is of one kind, and it is the server's answer, not the client's error.
    assert_eq!(report.errors.by_kind.len(), 1, "{text}");
    let kind = report.errors.by_kind.keys().next().unwrap();
    assert!(
        kind.starts_with("FAILURE ") || kind.starts_with("HTTP "),
        "{text}"
    );

    // A fingerprint that names no certificate ends the run before any key is made.
    let mut opts = server.options(1, CHALLENGE);
    opts.ca_fingerprint = Some("00".repeat(32));
    match run_scep(&opts) {
        Err(BenchError::Scep { step, reason }) => {
            assert_eq!(step, "GetCACert");
            assert!(
                reason.contains("no certificate has the fingerprint"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_absent_or_silent_server_ends_the_run() {
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/scep", closed.local_addr().unwrap());
    drop(closed);
    let static_challenge = || Challenge::Static("x".into());
    match run_scep(&ScepBenchOptions::new(&url, static_challenge())) {
        Err(BenchError::Scep { step, reason }) => {
            assert_eq!(step, "GetCACaps");
            assert!(reason.starts_with("transport"), "{reason}");
        }
        other => panic!("{other:?}"),
    }

    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/scep", silent.local_addr().unwrap());
    let mut opts = ScepBenchOptions::new(url, static_challenge());
    opts.timeout = Duration::from_millis(200);
    let started = Instant::now();
    match run_scep(&opts) {
        Err(BenchError::Scep { step, reason }) => {
            assert_eq!(step, "GetCACaps");
            assert!(reason.starts_with("timeout"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(silent);
}

/// A server that answers GetCACaps and GetCACert and then never a PKIOperation: a CA whose
/// back end hangs.
fn hanging_server() -> String {
    let key = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048).unwrap();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "hanging RA");
    params.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
    let ra = params.self_signed(&key).unwrap().der().to_vec();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/scep", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let ra = ra.clone();
            std::thread::spawn(move || serve_until_pki_operation(stream, &ra));
        }
    });
    url
}

fn serve_until_pki_operation(mut stream: TcpStream, ra: &[u8]) {
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&pending[..end]).into_owned();
        pending.drain(..end + 4);
        let (content_type, body): (&str, &[u8]) = if head.contains("operation=GetCACaps") {
            ("text/plain", b"AES\nPOSTPKIOperation\nSHA-256\n")
        } else if head.contains("operation=GetCACert") {
            ("application/x-x509-ca-cert", ra)
        } else {
            // Hold the connection open and answer nothing.
            std::thread::sleep(Duration::from_secs(30));
            return;
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        if stream.write_all(head.as_bytes()).is_err() || stream.write_all(body).is_err() {
            return;
        }
    }
}

#[test]
fn a_server_that_stops_answering_is_reported_as_stalled() {
    let url = hanging_server();
    let mut opts = ScepBenchOptions::new(url, Challenge::Static("x".into()));
    // Ten requests timing out two at a time take 1.5 s: the stall (1 s) comes first.
    opts.count = 10;
    opts.concurrency = 2;
    opts.timeout = Duration::from_millis(300);
    opts.stall_after = Duration::from_millis(1_000);
    let started = Instant::now();
    let result = run_scep(&opts);
    assert!(started.elapsed() < Duration::from_secs(30));
    match result {
        Err(BenchError::ScepUnfinished(report)) => {
            let text = report.to_text();
            // Requests time out (a timeout is no progress), then the stall ends the run.
            assert!(matches!(report.end, ScepEnd::Stalled { .. }), "{text}");
            assert_eq!(report.enrollments, 0, "{text}");
            let timeouts = report.errors.by_kind.get("timeout").copied().unwrap_or(0);
            assert!((2..10).contains(&timeouts), "{text}");
            assert_eq!(report.errors.total(), timeouts, "{text}");
            assert!(text.contains("the server stalled"), "{text}");
            assert_eq!(report.to_json()["end"]["reason"], "stalled");
            assert_eq!(report.server_info.recipient_subject, "CN=hanging RA");
        }
        other => panic!("{other:?}"),
    }
}
