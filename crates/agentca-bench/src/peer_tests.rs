//! The generator against the responders it is compared with: `openssl ocsp` (an index file,
//! signing each answer) and `cfssl ocspserve` (pre-signed answers from `cfssl ocspsign`).
//! Each test is skipped with a notice when its tool is missing, unless the tools are required.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agentca_testkit::tools;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::requests::requests_for;
use crate::run::{Method, OcspBenchOptions, run_ocsp};
use crate::test_pki::TestPki;

/// A peer server process, killed when dropped.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(program: &str, args: &[&str], dir: &Path, purpose: &str) -> Option<Peer> {
    match Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => Some(Peer(child)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tools::missing(program, purpose);
            None
        }
        Err(e) => panic!("start {program}: {e}"),
    }
}

/// Waits until something accepts connections on `port`.
fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn bench(url: &str, pki: &TestPki, method: Method, pid: u32) -> crate::OcspBenchReport {
    let mut opts = OcspBenchOptions::new(
        url,
        requests_for(&pki.issuer_der, &pki.leaf_ders, false).unwrap(),
    );
    opts.method = method;
    opts.count = Some(100);
    opts.duration = None;
    opts.concurrency = 4;
    opts.warmup = Duration::ZERO;
    opts.server_pid = Some(pid);
    run_ocsp(&opts).unwrap()
}

/// An `index.txt` line for `openssl ocsp -index`: status, expiry, revocation time, serial,
/// file name, subject.
fn index_line(n: usize, der: &[u8]) -> String {
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    let expiry = cert.validity().not_after.to_datetime();
    format!(
        "V\t{:02}{:02}{:02}{:02}{:02}{:02}Z\t\t{}\tunknown\t/CN=leaf-{n}\n",
        expiry.year() % 100,
        u8::from(expiry.month()),
        expiry.day(),
        expiry.hour(),
        expiry.minute(),
        expiry.second(),
        hex::encode_upper(cert.raw_serial()),
    )
}

#[test]
fn openssl_ocsp_responder() {
    let pki = TestPki::new(4);
    let dir = tempfile::tempdir().unwrap();
    pki.write_files(dir.path());
    let index: String = pki
        .leaf_ders
        .iter()
        .enumerate()
        .map(|(n, der)| index_line(n, der))
        .collect();
    std::fs::write(dir.path().join("index.txt"), index).unwrap();

    for method in [Method::Post, Method::Get] {
        // A fresh responder per run: it spins on a connection closed without a request.
        let args = [
            "ocsp",
            "-index",
            "index.txt",
            "-port",
            "0",
            "-rsigner",
            "ocsp.pem",
            "-rkey",
            "ocsp.key",
            "-CA",
            "issuing.pem",
        ];
        let Some(mut peer) = spawn("openssl", &args, dir.path(), "the openssl OCSP peer test")
        else {
            return;
        };
        // "ACCEPT [::]:PORT PID=N"
        let mut line = String::new();
        BufReader::new(peer.0.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .split_whitespace()
            .nth(1)
            .and_then(|addr| addr.rsplit_once(':'))
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        let url = format!("http://127.0.0.1:{port}/");
        let report = bench(&url, &pki, method, peer.0.id());
        assert_eq!(report.requests, 100, "{method}: {}", report.to_text());
        assert_eq!(report.errors.total(), 0, "{method}: {}", report.to_text());
        assert_eq!(report.statuses.good, 100);
        assert!(report.server_cpu.is_some());
    }
}

#[test]
fn cfssl_ocspserve() {
    let pki = TestPki::new(4);
    let dir = tempfile::tempdir().unwrap();
    pki.write_files(dir.path());
    let mut responses = String::new();
    for n in 0..pki.leaf_ders.len() {
        let leaf = format!("leaf-{n}.pem");
        let args = [
            "ocspsign",
            "-ca",
            "issuing.pem",
            "-responder",
            "ocsp.pem",
            "-responder-key",
            "ocsp.key",
            "-cert",
            &leaf,
            "-status",
            "good",
        ];
        let output = match Command::new("cfssl")
            .args(args)
            .current_dir(dir.path())
            .output()
        {
            Ok(output) => output,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tools::missing("cfssl", "the cfssl OCSP peer test");
                return;
            }
            Err(e) => panic!("cfssl ocspsign: {e}"),
        };
        assert!(output.status.success(), "{}", tools::transcript(&output));
        // {"ocspResponse": "<base64 DER>"}; ocspserve reads one base64 response a line.
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        responses.push_str(json["ocspResponse"].as_str().unwrap());
        responses.push('\n');
    }
    std::fs::write(dir.path().join("responses.b64"), responses).unwrap();

    let port = free_port().to_string();
    let args = ["ocspserve", "-port", &port, "-responses", "responses.b64"];
    let Some(peer) = spawn("cfssl", &args, dir.path(), "the cfssl OCSP peer test") else {
        return;
    };
    wait_for_port(port.parse().unwrap());
    let report = bench(
        &format!("http://127.0.0.1:{port}/"),
        &pki,
        Method::Post,
        peer.0.id(),
    );
    assert_eq!(report.requests, 100, "{}", report.to_text());
    assert_eq!(report.errors.total(), 0, "{}", report.to_text());
    assert_eq!(report.statuses.good, 100);
    assert_eq!(report.connections, 4);
}
