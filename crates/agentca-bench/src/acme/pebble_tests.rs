//! The generator against a real ACME server: pebble, on 127.0.0.1 with free ports and a TLS
//! certificate made here. Skipped with a notice when pebble is not installed, a failure
//! under `AGENTCA_REQUIRE_TOOLS=1`.
//!
//! Also checks, without pebble, that an unreachable or silent server ends a run quickly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use serde_json::json;

use super::*;
use crate::error::BenchError;

const EAB_KID: &str = "bench-kid";
/// 48 bytes, base64url, like the keys of pebble's example configuration.
const EAB_HMAC: &str = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";

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

/// A pebble process; killed when dropped.
struct Pebble {
    child: Child,
    directory: String,
    root: PathBuf,
    _dir: tempfile::TempDir,
}

impl Pebble {
    /// Starts pebble with EAB required, validation always passing and no sleeps, rejecting
    /// `nonce_reject` percent of good nonces. `None` when pebble is not installed.
    fn start(nonce_reject: u8) -> Option<Self> {
        let Some(program) = on_path("pebble") else {
            agentca_testkit::tools::missing("pebble", "the ACME benchmark against a real server");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let root = write_tls_files(dir.path());
        let port = free_port();
        let config = json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{port}"),
                "managementListenAddress": format!("127.0.0.1:{}", free_port()),
                "certificate": dir.path().join("cert.pem"),
                "privateKey": dir.path().join("key.pem"),
                "httpPort": free_port(),
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": true,
                "externalAccountMACKeys": { EAB_KID: EAB_HMAC },
            }
        });
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let child = Command::new(program)
            .arg("-config")
            .arg(&config_path)
            .env("PEBBLE_VA_ALWAYS_VALID", "1")
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", nonce_reject.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pebble = Self {
            child,
            directory: format!("https://127.0.0.1:{port}/dir"),
            root,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "pebble did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(pebble)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn options(&self, orders: u64, concurrency: usize) -> AcmeBenchOptions {
        let mut o = AcmeBenchOptions::new(&self.directory);
        o.ca = Some(self.root.clone());
        o.orders = orders;
        o.concurrency = concurrency;
        o.eab = Eab::Shared(EabCredential::new(EAB_KID, EAB_HMAC).unwrap());
        o.timeout = Duration::from_secs(5);
        o.stall_after = Duration::from_secs(10);
        o.max_duration = Duration::from_secs(60);
        o
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A root and a server certificate for 127.0.0.1 and localhost; returns the root's path.
fn write_tls_files(dir: &Path) -> PathBuf {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    let root = dir.join("root.pem");
    std::fs::write(&root, ca_cert.pem()).unwrap();
    root
}

#[test]
fn pebble_issues_every_order() {
    let Some(pebble) = Pebble::start(0) else {
        return;
    };
    let mut opts = pebble.options(20, 2);
    opts.server_pid = Some(pebble.pid());
    let report = run_acme(&opts).unwrap();
    let text = report.to_text();
    assert_eq!(report.orders, 20, "{text}");
    assert_eq!(report.end, AcmeEnd::Completed);
    assert_eq!(report.errors.total(), 0, "{text}");
    assert_eq!(report.bad_nonce_retries, 0, "{text}");
    assert_eq!(report.accounts, 2);
    assert_eq!(report.account_latency.count, 2);
    assert_eq!(report.steps.finalize.count, 20);
    assert!(report.latency.p50 <= report.latency.max);
    // newOrder, authorization, challenge, at least one poll, finalize, certificate.
    assert!(report.requests >= 20 * 6, "{text}");
    assert_eq!(report.connections, 0, "keep-alive: {text}");
    assert!(report.server_cpu_per_order.is_some(), "{text}");
    assert!(report.server_rss_max >= report.server_rss_start);
    assert!(report.orders_per_second > 0.0);
    assert_eq!(report.to_json()["orders"], 20);

    // A binding MACed with another key is refused, and that ends the run before the window.
    let mut wrong = pebble.options(1, 1);
    wrong.eab = Eab::Shared(EabCredential::new(EAB_KID, "AQIDBAUGBwgJCgsMDQ4PEA").unwrap());
    match run_acme(&wrong) {
        Err(BenchError::Acme { step, reason }) => {
            assert_eq!(step, "newAccount");
            assert!(reason.starts_with("HTTP "), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn rejected_nonces_are_retried() {
    let Some(pebble) = Pebble::start(20) else {
        return;
    };
    let report = run_acme(&pebble.options(20, 2)).unwrap();
    let text = report.to_text();
    assert_eq!(report.orders, 20, "{text}");
    assert!(report.bad_nonce_retries > 0, "{text}");
    // A request whose retry is rejected too fails its order, and only that way.
    assert!(
        report
            .errors
            .by_kind
            .keys()
            .all(|k| k.ends_with(":badNonce")),
        "{text}"
    );
}

#[test]
fn a_stopped_server_is_reported_as_stalled() {
    let Some(pebble) = Pebble::start(0) else {
        return;
    };
    let mut opts = pebble.options(3_000, 2);
    opts.timeout = Duration::from_millis(500);
    opts.stall_after = Duration::from_millis(1_500);
    let runner = std::thread::spawn(move || run_acme(&opts));
    std::thread::sleep(Duration::from_millis(1_500));
    pebble.signal("STOP");
    let started = Instant::now();
    let result = runner.join().unwrap();
    pebble.signal("CONT");
    assert!(started.elapsed() < Duration::from_secs(10));
    match result {
        Err(BenchError::Unfinished(report)) => {
            assert!(matches!(report.end, AcmeEnd::Stalled { .. }));
            assert!(
                report.orders > 0 && report.orders < 3_000,
                "{}",
                report.to_text()
            );
            assert!(report.to_text().contains("the server stalled"));
            assert_eq!(report.to_json()["end"]["reason"], "stalled");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_absent_or_silent_server_ends_the_run() {
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/dir", closed.local_addr().unwrap());
    drop(closed);
    match run_acme(&AcmeBenchOptions::new(&url)) {
        Err(BenchError::Acme { step, reason }) => {
            assert_eq!(step, "directory");
            assert!(reason.starts_with("transport"), "{reason}");
        }
        other => panic!("{other:?}"),
    }

    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut opts = AcmeBenchOptions::new(format!("http://{}/dir", silent.local_addr().unwrap()));
    opts.timeout = Duration::from_millis(200);
    let started = Instant::now();
    match run_acme(&opts) {
        Err(BenchError::Acme { step, reason }) => {
            assert_eq!(step, "directory");
            assert!(reason.starts_with("timeout"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(silent);
}
