//! `agentca serve`, the real binary on port 0: what it creates on first run, what it serves
//! over HTTP, how operator commands reach it through the admin socket, what stock OCSP and CRL
//! clients make of its answers, how fast a revocation shows, restarts, configuration
//! precedence and bad input.
//!
//! Every test starts its own server in its own scratch directory, reads the bound addresses
//! from the `agentca listening:` line, and kills the server when it ends, also on a panic.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use agentca_testkit::acme::{AccountKey, AcmeClient, Eab};
use base64::Engine;
use serde_json::Value;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use super::harness::{Server, free_port, http, serve_command, serve_on_free_ports};
use super::support::{Env, Outcome, TRUST_DOMAIN, agent_id, expect, now, pem_certs, serial_of};

/// The issuing CA's signature count in `/metrics`.
const SIGNATURES: &str = "agentca_issuing_ca_signatures_total";

/// REL-5: the longest a revocation may take to appear on the served CRL.
const CRL_PROPAGATION_LIMIT: Duration = Duration::from_secs(5);
/// OCSP `malformedRequest`: an OCSPResponse with only the status (RFC 6960 §4.2.1).
const MALFORMED_REQUEST: [u8; 5] = [0x30, 0x03, 0x0a, 0x01, 0x01];

/// `body` in HTTP/1.1 chunked encoding, 64 KiB per chunk.
fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in body.chunks(64 * 1024) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// A finished run of `openssl`.
struct Run {
    success: bool,
    /// Standard output then standard error.
    text: String,
}

/// Runs `openssl` with `args`.
fn openssl<S: AsRef<OsStr>>(args: &[S]) -> Run {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is needed for these tests");
    Run {
        success: output.status.success(),
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// Paths handed to `openssl ocsp`.
pub(crate) struct OcspFiles {
    issuing: String,
    chain: String,
    root: String,
}

impl OcspFiles {
    pub(crate) fn of(env: &Env) -> Self {
        let s = |name: &str| env.data_file(name).to_str().unwrap().to_owned();
        Self {
            issuing: s("issuing.pem"),
            chain: s("ca-chain.pem"),
            root: s("root.pem"),
        }
    }

    /// `openssl ocsp -issuer issuing.pem -cert LEAF -url URL -CAfile ca-chain.pem` plus
    /// `extra`; must succeed (exit 0 and "Response verify OK").
    pub(crate) fn query(&self, server: &Server, leaf: &Path, extra: &[&str]) -> String {
        let leaf = leaf.to_str().unwrap();
        let url = server.url("/ocsp");
        let mut args = vec![
            "ocsp",
            "-issuer",
            &self.issuing,
            "-cert",
            leaf,
            "-url",
            &url,
            "-CAfile",
            &self.chain,
        ];
        args.extend_from_slice(extra);
        let run = openssl(&args);
        assert!(
            run.success && run.text.contains("Response verify OK"),
            "openssl ocsp {args:?}:\n{}",
            run.text
        );
        run.text
    }
}

/// A leaf issued through `agentca issue`, written to `NAME.pem` (the leaf alone).
struct Leaf {
    serial: String,
    pem: PathBuf,
}

/// Issues a certificate for `agent` with a fresh OpenSSL key and runs every leaf check on it.
fn issue_checked(env: &Env, agent: &str, name: &str) -> Leaf {
    let csr = env.csr(name);
    let signed_at = now();
    let doc = env.issue(agent, &csr, &[]);
    let pem_text = doc["certificate_pem"].as_str().unwrap();
    let der = pem_certs(pem_text).remove(0);
    env.check_leaf(&der, &expect(agent, &csr, signed_at));
    Leaf {
        serial: serial_of(&doc),
        pem: env.write(&format!("{name}.pem"), pem_text),
    }
}

/// The served CRL (`/crl`): its number and the serials it lists (lowercase hex).
pub(crate) struct ServedCrl {
    pub(crate) der: Vec<u8>,
    pub(crate) number: u64,
    pub(crate) serials: Vec<String>,
}

/// `GET /crl`, checked to be a whole CRL.
pub(crate) fn served_crl(server: &Server) -> ServedCrl {
    let response = server.get("/crl");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.header("content-type"),
        Some("application/pkix-crl")
    );
    let der = response.body;
    let (rest, crl) = CertificateRevocationList::from_der(&der).unwrap();
    assert!(rest.is_empty(), "bytes after the CRL");
    let number = crl.crl_number().unwrap().to_string().parse().unwrap();
    let serials = crl
        .iter_revoked_certificates()
        .map(|r| hex::encode(r.raw_serial()))
        .collect();
    ServedCrl {
        der,
        number,
        serials,
    }
}

/// The PEM label of a key file.
fn pem_label(path: &Path) -> String {
    pem::parse(std::fs::read(path).unwrap())
        .unwrap()
        .tag()
        .to_owned()
}

/// Whether another process holds the exclusive lock on the store (`flock -n` fails).
fn store_is_locked(env: &Env) -> bool {
    let db = env.data_file("store").join("db");
    let status = Command::new("flock")
        .arg("-n")
        .arg(&db)
        .arg("true")
        .status()
        .expect("flock(1) is needed to inspect the store lock");
    !status.success()
}

#[test]
fn serve_first_run_creates_a_development_ca_and_publishes_it() {
    let env = Env::empty();
    let mut cmd = serve_on_free_ports(&env);
    cmd.env_remove("AGENTCA_PASSPHRASE");
    let server = Server::start(cmd);
    let out = server.stdout();
    assert!(
        out.contains("created a DEVELOPMENT CA for trust domain agents.localhost")
            && out.contains("UNENCRYPTED"),
        "{out}"
    );
    for file in ["root.pem", "issuing.pem", "ca-chain.pem", "ocsp.pem"] {
        assert!(env.data_file(file).is_file(), "{file} missing");
    }
    // A development CA says what it is: its keys are plain PKCS#8.
    assert_eq!(pem_label(&env.data_file("issuing.key")), "PRIVATE KEY");
    assert!(server.admin.starts_with(env.data()), "{:?}", server.admin);

    let health = server.get("/healthz");
    assert_eq!(health.status, 200, "{}", health.text());
    let health: Value = serde_json::from_slice(&health.body).unwrap();
    assert_eq!(health["status"], "ok");

    // /ca.pem: the issuing CA then the root, as in ca-chain.pem.
    let chain = server.get("/ca.pem");
    assert_eq!(chain.status, 200);
    let served = pem_certs(&chain.text());
    assert_eq!(
        served,
        vec![env.ca_der("issuing.pem"), env.ca_der("root.pem")]
    );
    let chain_file = std::fs::read_to_string(env.data_file("ca-chain.pem")).unwrap();
    assert_eq!(served, pem_certs(&chain_file));

    // /ca.crt: the issuing CA's DER, what certificates' AIA caIssuers points at.
    let crt = server.get("/ca.crt");
    assert_eq!(crt.status, 200);
    assert_eq!(crt.header("content-type"), Some("application/pkix-cert"));
    assert_eq!(crt.body, env.ca_der("issuing.pem"));

    // /metrics: Prometheus (OpenMetrics) text, counting the requests above.
    let metrics = server.get("/metrics");
    assert_eq!(metrics.status, 200);
    let content_type = metrics.header("content-type").unwrap();
    assert!(
        content_type.starts_with("application/openmetrics-text")
            || content_type.starts_with("text/plain"),
        "{content_type}"
    );
    let text = metrics.text();
    let mut samples = 0;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let (name, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "not a sample: {line}");
        let name = name.split('{').next().unwrap();
        assert!(
            name.starts_with("agentca_")
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "not a metric name: {line}"
        );
        samples += 1;
    }
    assert!(samples > 0, "{text}");
    assert!(text.contains("# TYPE "), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("agentca_http_requests_total{")
                && l.contains("route=\"healthz\"")
                && l.contains("status=\"200\"")),
        "the /healthz request is not counted:\n{text}"
    );

    // What to do next is printed too.
    server.wait_stdout("Next steps");
    drop(server);

    // A second start finds the CA and creates nothing.
    let mut cmd = serve_on_free_ports(&env);
    cmd.env_remove("AGENTCA_PASSPHRASE");
    let server = Server::start(cmd);
    assert!(
        !server.stdout().contains("No CA was found"),
        "{}",
        server.stdout()
    );
    assert_eq!(server.get("/ca.crt").body, env.ca_der("issuing.pem"));
}

#[test]
fn serve_needs_the_right_passphrase_for_an_encrypted_ca() {
    let env = Env::with_ca();
    assert_eq!(
        pem_label(&env.data_file("issuing.key")),
        "ENCRYPTED PRIVATE KEY"
    );

    let started = Instant::now();
    let mut cmd = serve_on_free_ports(&env);
    cmd.env("AGENTCA_PASSPHRASE", "not the passphrase");
    let e = Server::try_start(cmd)
        .err()
        .expect("a wrong passphrase must stop serve");
    assert_eq!(e.status.code(), Some(1), "{e:?}");
    assert!(
        e.stderr
            .lines()
            .any(|l| l.starts_with("error: ") && l.contains("wrong passphrase")),
        "{e:?}"
    );
    assert!(!e.stdout.contains("listening"), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(10));

    let mut cmd = serve_on_free_ports(&env);
    cmd.env_remove("AGENTCA_PASSPHRASE");
    let e = Server::try_start(cmd)
        .err()
        .expect("no passphrase must stop serve");
    assert_eq!(e.status.code(), Some(1), "{e:?}");
    assert!(
        e.stderr
            .lines()
            .any(|l| l.starts_with("error: ") && l.contains("AGENTCA_PASSPHRASE")),
        "{e:?}"
    );
    assert!(!env.data_file("admin.sock").exists());

    // The right one: the keys stay encrypted on disk and the service runs.
    let server = Server::start(serve_on_free_ports(&env));
    assert!(!server.stdout().contains("No CA was found"));
    assert_eq!(server.get("/healthz").status, 200);
    assert_eq!(
        pem_label(&env.data_file("issuing.key")),
        "ENCRYPTED PRIVATE KEY"
    );
}

/// An operator command's failure, both ways it is printed.
struct Failure {
    args: Vec<String>,
    line: String,
    kind: String,
}

fn failure(env: &Env, args: &[String]) -> Failure {
    let out = env.run(args);
    let line = out.error_line().to_owned();
    let (kind, _) = env.json_error(args);
    Failure {
        args: args.to_vec(),
        line,
        kind,
    }
}

#[test]
fn serve_runs_operator_commands_through_the_admin_socket() {
    let env = Env::with_ca();
    let before = env.add_agent("/agent/before", &[]);
    let garbage = env.write("garbage.csr", b"\x30\x82\x01\x00 this is not a CSR");
    let failing: Vec<Vec<String>> = [
        vec![
            "issue",
            "--agent",
            &before,
            "--csr",
            garbage.to_str().unwrap(),
        ],
        vec!["agent", "add", &before],
        vec!["revoke", "00112233445566778899aabbccddeeff"],
        vec![
            "issue",
            "--agent",
            &agent_id("/agent/nobody"),
            "--csr",
            garbage.to_str().unwrap(),
        ],
        vec![
            "revoke",
            "00112233445566778899aabbccddeeff",
            "--reason",
            "bored",
        ],
        vec!["cert", "show", "not-hex"],
    ]
    .iter()
    .map(|a| a.iter().map(|s| (*s).to_owned()).collect())
    .collect();
    let local: Vec<Failure> = failing.iter().map(|a| failure(&env, a)).collect();
    assert_eq!(local[0].kind, "badCsr");

    let server = Server::start(serve_on_free_ports(&env));
    assert!(
        store_is_locked(&env),
        "the server does not hold the store lock, so commands could not be told apart"
    );

    // Each command must go through the socket: opening the store locally would wait for the
    // lock and then fail.
    let started = Instant::now();
    let alice = env.add_agent("/agent/alice", &["--owner", "team-a"]);
    let agents = env.json(&["agent", "list"]);
    let ids: Vec<&str> = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{agents:#}");
    assert!(ids.contains(&alice.as_str()) && ids.contains(&before.as_str()));

    let good = issue_checked(&env, &alice, "good");
    let victim = issue_checked(&env, &alice, "victim");
    // `issue --out` writes the chain, as without a server.
    let out_path = env.path("chain.pem");
    let csr = env.csr("third");
    let out = env
        .run(&[
            "issue",
            "--agent",
            &alice,
            "--csr",
            csr.arg(),
            "--out",
            out_path.to_str().unwrap(),
        ])
        .success();
    assert!(out.stdout.contains("wrote "), "{out}");
    let chain = pem_certs(&std::fs::read_to_string(&out_path).unwrap());
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1], env.ca_der("issuing.pem"));

    let listed = env.listed_serials(&["--agent", &alice]);
    assert_eq!(listed.len(), 3);
    assert!(listed.contains(&good.serial) && listed.contains(&victim.serial));

    let doc = env.json(&["revoke", &victim.serial, "--reason", "keyCompromise"]);
    assert_eq!(doc["status"], "revoked");
    assert_eq!(doc["revocation_reason"], "keyCompromise");
    let revoked = env.listed_serials(&["--status", "revoked"]);
    assert_eq!(revoked, vec![victim.serial.clone()]);

    let crl_path = env.path("served.crl");
    let out = env
        .run(&["crl", "--out", crl_path.to_str().unwrap()])
        .success();
    assert!(out.stdout.contains("with 1 entries"), "{out}");
    let crl_der = std::fs::read(&crl_path).unwrap();
    let (_, crl) = CertificateRevocationList::from_der(&crl_der).unwrap();
    let listed: Vec<String> = crl
        .iter_revoked_certificates()
        .map(|r| hex::encode(r.raw_serial()))
        .collect();
    assert_eq!(listed, vec![victim.serial.clone()]);
    // The server serves that CRL from then on, or the one it publishes after the revocation's
    // debounce delay, whichever came last.
    let number: u64 = crl.crl_number().unwrap().to_string().parse().unwrap();
    let served = served_crl(&server);
    assert!(served.number >= number, "{} < {number}", served.number);
    assert!(served.serials.contains(&victim.serial));

    env.assert_audit_intact();
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(12),
        "the commands took {elapsed:?}: did they wait for the store lock?"
    );
    assert!(store_is_locked(&env));

    // Failures read the same through the socket, text and JSON.
    for (args, local) in failing.iter().zip(&local) {
        let remote = failure(&env, args);
        assert_eq!(remote.line, local.line, "{:?}", local.args);
        assert_eq!(remote.kind, local.kind, "{:?}", local.args);
    }

    // What the server did is in the store and the audit log once it has stopped.
    let (status, _) = server.terminate();
    assert!(status.success(), "{status}");
    assert!(!store_is_locked(&env));
    env.assert_audit_intact();
    // The server's own HTTPS certificate is audited too; count Alice's.
    let issued = env.audit_events("cert.issued");
    let alices = issued
        .iter()
        .filter(|e| e["fields"]["agent"] == alice.as_str());
    assert_eq!(alices.count(), 3, "{issued:#?}");
    assert_eq!(
        env.listed_serials(&["--status", "revoked"]),
        vec![victim.serial]
    );
}

#[test]
fn serve_keeps_the_admin_socket_private_and_admin_operations_off_the_network() {
    let env = Env::with_ca();
    let server = Server::start(serve_on_free_ports(&env));
    let alice = env.add_agent("/agent/alice", &[]);
    let leaf = issue_checked(&env, &alice, "leaf");

    let dir_mode = std::fs::metadata(env.data()).unwrap().permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o700, "data dir mode {dir_mode:o}");
    assert_eq!(server.admin, env.data_file("admin.sock"));
    let meta = std::fs::symlink_metadata(&server.admin).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "socket mode {:o}",
        meta.permissions().mode()
    );

    // What an admin request looks like on the socket, sent over HTTP instead.
    let revoke = format!(
        r#"{{"op":"revoke","serial":"{}","agent":null,"reason":"keyCompromise"}}"#,
        leaf.serial
    );
    let add = format!(
        r#"{{"op":"agent-add","id":"{}","owner":null,"policy":null,"dns":[]}}"#,
        agent_id("/agent/mallory")
    );
    let paths = [
        "/admin",
        "/admin.sock",
        "/admin/revoke",
        "/api/v1/revoke",
        "/revoke",
        "/issue",
        "/agent",
        "/agents",
        "/cert",
        "/certs",
        "/audit",
        "/crl/publish",
        "/shutdown",
        "/debug/pprof",
    ];
    for path in paths {
        for (method, body) in [
            ("GET", ""),
            ("POST", revoke.as_str()),
            ("POST", add.as_str()),
        ] {
            let response = http(
                server.http,
                method,
                path,
                &[("Content-Type", "application/json")],
                body.as_bytes(),
            );
            assert_eq!(
                response.status,
                404,
                "HTTP {method} {path}: {}",
                response.text()
            );
        }
    }
    // Under /ocsp/ everything is an OCSP request, and these are malformed ones.
    for path in ["/ocsp/../admin", "/ocsp/%2E%2E/revoke"] {
        let response = http(
            server.http,
            "POST",
            path,
            &[("Content-Type", "application/json")],
            revoke.as_bytes(),
        );
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(response.body, MALFORMED_REQUEST, "{path}");
        let response = server.get(path);
        assert_eq!(response.body, MALFORMED_REQUEST, "{path}");
    }
    // The socket protocol spoken raw to the HTTP port is not HTTP, and does nothing.
    for line in [&revoke, &add] {
        let mut stream = TcpStream::connect(server.http).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
            "{answer}"
        );
    }

    // HTTPS, with a stock client trusting root.pem: the TLS certificate is valid for
    // 127.0.0.1, only /healthz answers, and admin paths are 404 there too.
    let root = env.data_file("root.pem");
    let https_status = |method: &str, path: &str, body: &str| -> Option<u16> {
        let mut args: Vec<&OsStr> = ["-sS", "--max-time", "10", "--cacert"]
            .map(OsStr::new)
            .to_vec();
        args.push(root.as_os_str());
        args.extend(["-o", "/dev/null", "-w", "%{http_code}", "-X", method].map(OsStr::new));
        if !body.is_empty() {
            args.extend(
                [
                    "-H",
                    "Content-Type: application/json",
                    "--data-binary",
                    body,
                ]
                .map(OsStr::new),
            );
        }
        let url = format!("https://{}{path}", server.https);
        args.push(OsStr::new(&url));
        let output = agentca_testkit::tools::run("curl", &args, "HTTPS checks of agentca serve")?;
        assert!(
            output.status.success(),
            "curl {args:?}: {}",
            agentca_testkit::tools::transcript(&output)
        );
        Some(
            String::from_utf8_lossy(&output.stdout)
                .trim()
                .parse()
                .unwrap(),
        )
    };
    if let Some(status) = https_status("GET", "/healthz", "") {
        assert_eq!(status, 200);
        for path in paths.iter().chain(&["/ocsp", "/crl", "/metrics"]) {
            assert_eq!(https_status("GET", path, ""), Some(404), "HTTPS GET {path}");
            assert_eq!(
                https_status("POST", path, &revoke),
                Some(404),
                "HTTPS POST {path}"
            );
        }
    }

    peer_credentials_are_checked(&env, &server);

    // Nothing above changed anything.
    let show = env.json(&["cert", "show", &leaf.serial]);
    assert_eq!(show["status"], "valid");
    let agents = env.json(&["agent", "list"]);
    assert_eq!(agents["agents"].as_array().unwrap().len(), 1, "{agents:#}");
}

/// The user ID this test runs as (`id -u`).
fn own_uid() -> Option<u32> {
    let output = Command::new("id").arg("-u").output().ok()?;
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

/// Runs `agentca --output json agent list` on `env`'s data directory as the unprivileged user
/// 65534 (setpriv(1)); `None` when this test cannot act as another user (it is not root).
fn agent_list_as_nobody(env: &Env) -> Option<Outcome> {
    if own_uid() != Some(0) {
        eprintln!("notice: not root; skipping the admin socket's peer credential checks");
        return None;
    }
    if let Err(e) = Command::new("setpriv").arg("--version").output() {
        agentca_testkit::tools::missing("setpriv", &format!("acting as another user ({e})"));
        return None;
    }
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        "--",
    ])
    .arg(super::support::bin())
    .arg("--data-dir")
    .arg(env.data())
    .args(["--output", "json", "agent", "list"])
    .current_dir("/")
    .env_remove("AGENTCA_DATA_DIR");
    Some(Outcome::of(&mut cmd))
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Lets other users traverse the scratch directory (not list or read it), so they reach the
/// data directory's entry.
fn open_scratch(env: &Env) -> PathBuf {
    let scratch = env.data().parent().unwrap().to_owned();
    set_mode(&scratch, 0o711);
    scratch
}

/// The modes a careless operator might set: the socket reachable by every local user.
fn loosen(env: &Env, server: &Server) {
    set_mode(&env.data(), 0o711);
    set_mode(&server.admin, 0o666);
}

fn restore(env: &Env, server: &Server, scratch: &Path) {
    set_mode(&server.admin, 0o600);
    set_mode(&env.data(), 0o700);
    set_mode(scratch, 0o700);
}

/// Another local user cannot operate the CA: the 0700 data directory keeps them from the
/// socket, and if its modes are loosened by mistake the server still checks the peer's
/// credentials and executes nothing.
fn peer_credentials_are_checked(env: &Env, server: &Server) {
    let scratch = open_scratch(env);
    let Some(out) = agent_list_as_nobody(env) else {
        set_mode(&scratch, 0o700);
        return;
    };
    let (kind, message) = out.json_error();
    assert_eq!(kind, "io", "{out}");
    assert!(message.contains("ermission denied"), "{out}");

    loosen(env, server);
    let out = agent_list_as_nobody(env).unwrap();
    restore(env, server, &scratch);
    // Refused either way; the answer the client gets is racy, see
    // serve_refuses_other_users_with_a_clear_message.
    let (kind, _) = out.json_error();
    assert!(kind == "unauthorized" || kind == "io", "{out}");
    assert!(!out.stdout.contains("agents\""), "{out}");
    server.wait_log("admin connection refused");
}

/// The OCSP request for `leaf` without a nonce, as `openssl ocsp -reqout` makes it.
fn ocsp_request(files: &OcspFiles, leaf: &Leaf, out: &Path) -> Vec<u8> {
    let run = openssl(&[
        "ocsp",
        "-issuer",
        &files.issuing,
        "-cert",
        leaf.pem.to_str().unwrap(),
        "-no_nonce",
        "-reqout",
        out.to_str().unwrap(),
    ]);
    assert!(run.success, "{}", run.text);
    std::fs::read(out).unwrap()
}

/// `/ocsp/` + the URL encoding of the base64 of `der` (RFC 6960 Appendix A.1).
fn get_path(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let encoded = b64
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    format!("/ocsp/{encoded}")
}

/// `openssl ocsp -reqin REQ -respin RESP -CAfile CHAIN -resp_text`: verifies a response
/// fetched by the test's own client; returns the transcript.
fn verify_response(files: &OcspFiles, req: &Path, resp: &Path) -> String {
    let run = openssl(&[
        "ocsp",
        "-reqin",
        req.to_str().unwrap(),
        "-respin",
        resp.to_str().unwrap(),
        "-CAfile",
        &files.chain,
        "-resp_text",
    ]);
    assert!(
        run.success && run.text.contains("Response verify OK"),
        "{}",
        run.text
    );
    run.text
}

#[test]
fn serve_answers_openssl_ocsp_good_then_revoked_by_post_and_get() {
    let env = Env::empty();
    let mut cmd = serve_on_free_ports(&env);
    cmd.args(["--trust-domain", TRUST_DOMAIN]);
    let server = Server::start(cmd);
    assert!(
        server
            .stdout()
            .contains("keys encrypted with your passphrase")
    );
    let files = OcspFiles::of(&env);
    let alice = env.add_agent("/agent/alice", &[]);
    let leaf = issue_checked(&env, &alice, "leaf");

    // POST, with a nonce (openssl's default) and without.
    let name = leaf.pem.to_str().unwrap();
    let text = files.query(&server, &leaf.pem, &[]);
    assert!(text.contains(&format!("{name}: good")), "{text}");
    assert!(
        !text.contains("WARNING"),
        "the nonce was not echoed:\n{text}"
    );
    let text = files.query(&server, &leaf.pem, &["-no_nonce"]);
    assert!(text.contains(&format!("{name}: good")), "{text}");

    // GET, with this test's client.
    let req_path = env.path("req.der");
    let req = ocsp_request(&files, &leaf, &req_path);
    let response = server.get(&get_path(&req));
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("application/ocsp-response")
    );
    let cache_control = response.header("cache-control").unwrap_or_default();
    assert!(cache_control.contains("max-age="), "{cache_control}");
    let etag = response.header("etag").unwrap().to_owned();
    let resp_path = env.write("resp.der", &response.body);
    let text = verify_response(&files, &req_path, &resp_path);
    assert!(text.contains("Cert Status: good"), "{text}");
    // The same URL with the entity tag: not modified.
    let again = http(
        server.http,
        "GET",
        &get_path(&req),
        &[("If-None-Match", &etag)],
        &[],
    );
    assert_eq!(again.status, 304);

    // Revoked: POST and GET both say so, with the reason; the old entity tag no longer
    // matches.
    env.json(&["revoke", &leaf.serial, "--reason", "keyCompromise"]);
    for extra in [&[][..], &["-no_nonce"][..]] {
        let text = files.query(&server, &leaf.pem, extra);
        assert!(text.contains(&format!("{name}: revoked")), "{text}");
        assert!(text.contains("Reason: keyCompromise"), "{text}");
        assert!(text.contains("Revocation Time:"), "{text}");
    }
    let response = http(
        server.http,
        "GET",
        &get_path(&req),
        &[("If-None-Match", &etag)],
        &[],
    );
    assert_eq!(response.status, 200);
    assert_ne!(response.header("etag"), Some(etag.as_str()));
    let resp_path = env.write("resp-revoked.der", &response.body);
    let text = verify_response(&files, &req_path, &resp_path);
    assert!(text.contains("Cert Status: revoked"), "{text}");
    assert!(text.contains("Revocation Reason: keyCompromise"), "{text}");

    // Trusting only the root. `openssl ocsp` first verifies with the response's own
    // certificates (just the responder's, which the root did not sign directly), then retries
    // with the -issuer certificates as untrusted intermediates, which completes the chain: a
    // client that has the issuer to build its CertID (RFC 6960 §4.1.1) verifies against the
    // root alone.
    let url = server.url("/ocsp");
    let run = openssl(&[
        "ocsp",
        "-issuer",
        &files.issuing,
        "-cert",
        name,
        "-url",
        &url,
        "-CAfile",
        &files.root,
    ]);
    assert!(
        run.success && run.text.contains("Response verify OK") && run.text.contains(": revoked"),
        "{}",
        run.text
    );
    // Given only a saved request and response, the root alone is not enough (the response
    // does not carry the issuing CA's certificate); naming the issuer as an untrusted
    // certificate is.
    let root_only = openssl(&[
        "ocsp",
        "-reqin",
        req_path.to_str().unwrap(),
        "-respin",
        resp_path.to_str().unwrap(),
        "-CAfile",
        &files.root,
    ]);
    eprintln!(
        "openssl ocsp -reqin/-respin with only root.pem trusted: {}",
        if root_only.success {
            "verified"
        } else {
            "not verified"
        }
    );
    let run = openssl(&[
        "ocsp",
        "-reqin",
        req_path.to_str().unwrap(),
        "-respin",
        resp_path.to_str().unwrap(),
        "-CAfile",
        &files.root,
        "-verify_other",
        &files.issuing,
    ]);
    assert!(
        run.success && run.text.contains("Response verify OK"),
        "{}",
        run.text
    );
}

#[test]
fn serve_propagates_a_revocation_to_ocsp_before_revoke_returns_and_to_the_crl_in_seconds() {
    let env = Env::with_ca();
    let server = Server::start(serve_on_free_ports(&env));
    let files = OcspFiles::of(&env);
    let alice = env.add_agent("/agent/alice", &[]);
    let good = issue_checked(&env, &alice, "good");
    let victim = issue_checked(&env, &alice, "victim");
    let req_path = env.path("victim-req.der");
    let req = ocsp_request(&files, &victim, &req_path);
    let first_crl = served_crl(&server);
    assert!(!first_crl.serials.contains(&victim.serial));

    let started = Instant::now();
    env.run(&["revoke", &victim.serial, "--reason", "keyCompromise"])
        .success();
    let returned = Instant::now();
    // The very first lookup after the command returns.
    let response = http(
        server.http,
        "POST",
        "/ocsp",
        &[("Content-Type", "application/ocsp-request")],
        &req,
    );
    let ocsp_delay = returned.elapsed();
    assert_eq!(response.status, 200);
    let resp_path = env.write("victim-resp.der", &response.body);
    let text = verify_response(&files, &req_path, &resp_path);
    assert!(
        text.contains("Cert Status: revoked"),
        "the first OCSP answer after `revoke` returned is not `revoked`:\n{text}"
    );

    let crl = loop {
        let crl = served_crl(&server);
        if crl.serials.contains(&victim.serial) {
            break crl;
        }
        assert!(
            returned.elapsed() <= CRL_PROPAGATION_LIMIT,
            "REL-5: the served CRL did not list {} within {CRL_PROPAGATION_LIMIT:?}",
            victim.serial
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let crl_delay = returned.elapsed();
    eprintln!(
        "REL-5: revoke took {:?}; OCSP said revoked {ocsp_delay:?} after it returned (first \
         try); the served CRL listed the serial {crl_delay:?} after it returned",
        returned - started
    );
    assert!(crl.number > first_crl.number);
    assert!(!crl.serials.contains(&good.serial));

    // OpenSSL with the downloaded CRL: the revoked certificate is refused, the good one
    // accepted.
    let pem_crl = server.get("/crl.pem");
    assert_eq!(pem_crl.status, 200);
    assert_eq!(
        pem::parse(&pem_crl.body).unwrap().contents(),
        crl.der.as_slice()
    );
    let crl_path = env.write("crl.pem", &pem_crl.body);
    let root = env.data_file("root.pem");
    let issuing = env.data_file("issuing.pem");
    agentca_testkit::openssl_verify_with_crl(&victim.pem, &root, &issuing, &crl_path)
        .assert_rejected_with("certificate revoked");
    agentca_testkit::openssl_verify_with_crl(&good.pem, &root, &issuing, &crl_path)
        .assert_accepted();

    // pkilint on the served CRL and on every signed OCSP response shape.
    agentca_testkit::pkilint_crl(&crl.der);
    let url = server.url("/ocsp");
    let mut shapes = Vec::new();
    for (name, leaf, nonce) in [
        ("good", &good, false),
        ("good-nonce", &good, true),
        ("revoked", &victim, false),
        ("revoked-nonce", &victim, true),
    ] {
        let out = env.path(&format!("{name}.ocsp"));
        let mut args = vec![
            "ocsp",
            "-issuer",
            &files.issuing,
            "-cert",
            leaf.pem.to_str().unwrap(),
            "-url",
            &url,
            "-CAfile",
            &files.chain,
            "-respout",
            out.to_str().unwrap(),
        ];
        if !nonce {
            args.push("-no_nonce");
        }
        let run = openssl(&args);
        assert!(run.success, "{}", run.text);
        shapes.push((name, std::fs::read(&out).unwrap()));
    }
    // A serial this CA never issued gets `unauthorized`, unsigned (never `good`).
    let unassigned = env.path("unassigned.ocsp");
    let run = openssl(&[
        "ocsp",
        "-issuer",
        &files.issuing,
        "-serial",
        "0x0123456789abcdef0123456789abcdef",
        "-url",
        &url,
        "-CAfile",
        &files.chain,
        "-respout",
        unassigned.to_str().unwrap(),
    ]);
    assert!(run.text.contains("unauthorized"), "{}", run.text);
    shapes.push(("unassigned serial", std::fs::read(&unassigned).unwrap()));
    for (name, der) in &shapes {
        eprintln!("pkilint: OCSP response {name}");
        agentca_testkit::pkilint_ocsp(der);
    }
}

#[test]
fn serve_restarts_keep_statuses_and_crl_numbers() {
    let env = Env::with_ca();
    let files = OcspFiles::of(&env);
    let server = Server::start(serve_on_free_ports(&env));
    let alice = env.add_agent("/agent/alice", &[]);
    let good = issue_checked(&env, &alice, "good");
    let victim = issue_checked(&env, &alice, "victim");
    env.json(&["revoke", &victim.serial, "--reason", "superseded"]);
    env.json(&["crl"]);
    let before = served_crl(&server);
    assert!(before.serials.contains(&victim.serial));

    // SIGTERM: a clean exit, logged, socket removed.
    let socket = server.admin.clone();
    let (status, log) = server.terminate();
    assert_eq!(status.code(), Some(0), "{status}\n{log}");
    assert!(log.lines().any(|l| l.contains("stopped")), "{log}");
    assert!(!socket.exists(), "the socket file outlived the server");

    let server = Server::start(serve_on_free_ports(&env));
    let after = served_crl(&server);
    assert!(
        after.number > before.number,
        "CRL number {} after the restart, {} before",
        after.number,
        before.number
    );
    assert!(after.serials.contains(&victim.serial));
    let text = files.query(&server, &victim.pem, &["-no_nonce"]);
    assert!(
        text.contains(": revoked") && text.contains("Reason: superseded"),
        "{text}"
    );
    let text = files.query(&server, &good.pem, &[]);
    assert!(text.contains(": good"), "{text}");

    // SIGKILL: the socket file stays behind.
    let socket = server.admin.clone();
    let number = served_crl(&server).number;
    server.kill();
    assert!(socket.exists(), "expected a stale socket after SIGKILL");
    // With nobody listening, commands fall back to the data directory.
    let agents = env.json(&["agent", "list"]);
    assert_eq!(agents["agents"].as_array().unwrap().len(), 1);
    // The stale socket does not stop the next start, and commands reach the new server.
    let server = Server::start(serve_on_free_ports(&env));
    assert!(store_is_locked(&env));
    assert!(served_crl(&server).number > number);
    let fresh = issue_checked(&env, &alice, "fresh");
    let text = files.query(&server, &fresh.pem, &["-no_nonce"]);
    assert!(text.contains(": good"), "{text}");
    let text = files.query(&server, &victim.pem, &["-no_nonce"]);
    assert!(text.contains(": revoked"), "{text}");
    env.json(&["revoke", &good.serial]);
    let text = files.query(&server, &good.pem, &["-no_nonce"]);
    assert!(text.contains(": revoked"), "{text}");
    env.assert_audit_intact();
}

/// Whether every line of a log is a JSON object.
fn is_json_log(log: &str) -> bool {
    !log.trim().is_empty()
        && log
            .lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v.is_object()))
}

#[test]
fn serve_configuration_precedence_is_flag_then_environment_then_file() {
    let env = Env::empty();
    let config = env.write(
        "agentca.toml",
        "http_listen = \"127.0.0.1:0\"\nlisten = \"127.0.0.1:0\"\nlog_format = \"json\"\n",
    );
    let config = config.to_str().unwrap();
    let default_ports = [8080, 8443];

    // The file alone: free ports (not the defaults), JSON logs.
    let mut cmd = serve_command(&env);
    cmd.args(["--config", config]);
    let server = Server::start(cmd);
    assert!(
        !default_ports.contains(&server.http.port()),
        "{}",
        server.http
    );
    assert!(
        !default_ports.contains(&server.https.port()),
        "{}",
        server.https
    );
    server.wait_log("listening");
    let log = server.stderr();
    assert!(
        is_json_log(&log),
        "the file's log_format was not used:\n{log}"
    );
    drop(server);

    // The environment beats the file: the HTTP port and the log format it names.
    let port = free_port();
    let mut cmd = serve_command(&env);
    cmd.args(["--config", config])
        .env("AGENTCA_HTTP_LISTEN", format!("127.0.0.1:{port}"))
        .env("AGENTCA_LOG_FORMAT", "text");
    let server = Server::start(cmd);
    assert_eq!(server.http.port(), port);
    assert!(
        !default_ports.contains(&server.https.port()),
        "{}",
        server.https
    );
    server.wait_log("listening");
    let log = server.stderr();
    assert!(!is_json_log(&log) && log.contains("INFO"), "{log}");
    drop(server);

    // Flags beat the environment; the file may come from the environment too.
    let mut cmd = serve_command(&env);
    cmd.args(["--http-listen", "127.0.0.1:0", "--log-format", "json"])
        .env("AGENTCA_CONFIG", config)
        .env("AGENTCA_HTTP_LISTEN", format!("127.0.0.1:{port}"))
        .env("AGENTCA_LOG_FORMAT", "text");
    let server = Server::start(cmd);
    assert_ne!(server.http.port(), port);
    assert!(
        !default_ports.contains(&server.https.port()),
        "{}",
        server.https
    );
    server.wait_log("listening");
    let log = server.stderr();
    assert!(is_json_log(&log), "{log}");
    assert_eq!(server.get("/healthz").status, 200);
    drop(server);

    // A bad file is one clear error naming it.
    let bad = env.write("bad.toml", "listen = \"nowhere\"\n");
    let mut cmd = serve_command(&env);
    cmd.args(["--config", bad.to_str().unwrap()]);
    let out = Outcome::of(&mut cmd);
    assert!(out.error_line().contains("bad.toml"), "{out}");
    let unknown = env.write("unknown.toml", "listen_on = \"127.0.0.1:0\"\n");
    let mut cmd = serve_command(&env);
    cmd.args(["--config", unknown.to_str().unwrap()]);
    let out = Outcome::of(&mut cmd);
    assert!(out.error_line().contains("listen_on"), "{out}");
}

#[test]
fn serve_refuses_bad_http_input_and_keeps_serving() {
    let env = Env::with_ca();
    let server = Server::start(serve_on_free_ports(&env));
    let files = OcspFiles::of(&env);
    let alice = env.add_agent("/agent/alice", &[]);
    let leaf = issue_checked(&env, &alice, "leaf");
    let megabyte = vec![0x30u8; 1024 * 1024];
    let ocsp_type = ("Content-Type", "application/ocsp-request");

    // 1 MB announced by Content-Length, and 1 MB chunked (no length up front).
    let response = http(server.http, "POST", "/ocsp", &[ocsp_type], &megabyte);
    assert_eq!(response.status, 413, "{}", response.text());
    let response = http(
        server.http,
        "POST",
        "/ocsp",
        &[ocsp_type, ("Transfer-Encoding", "chunked")],
        &chunked(&megabyte),
    );
    assert_eq!(response.status, 413, "{}", response.text());

    // Bodies that are not OCSP requests: malformedRequest, unsigned, over HTTP 200.
    let truncated = {
        let req = ocsp_request(&files, &leaf, &env.path("req.der"));
        req[..req.len() / 2].to_vec()
    };
    for (what, body) in [
        ("garbage", b"this is not DER at all".to_vec()),
        ("empty", Vec::new()),
        ("truncated", truncated),
        ("a CSR", env.csr("x").der()),
    ] {
        let response = http(server.http, "POST", "/ocsp", &[ocsp_type], &body);
        assert_eq!(response.status, 200, "{what}");
        assert_eq!(
            response.header("content-type"),
            Some("application/ocsp-response"),
            "{what}"
        );
        assert_eq!(response.body, MALFORMED_REQUEST, "{what}");
    }
    for path in ["/ocsp/!!!!", "/ocsp/%zz", "/ocsp/aGVsbG8%3D", "/ocsp"] {
        let response = server.get(path);
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(response.body, MALFORMED_REQUEST, "{path}");
    }

    // Still serving: health, CRL, and a real OCSP answer.
    assert_eq!(server.get("/healthz").status, 200);
    served_crl(&server);
    let text = files.query(&server, &leaf.pem, &[]);
    assert!(text.contains(": good"), "{text}");
    let metrics = server.get("/metrics").text();
    assert!(metrics.contains("status=\"413\""), "{metrics}");
}

#[test]
fn serve_text_logs_on_a_pipe_have_no_terminal_escapes() {
    let env = Env::empty();
    let mut cmd = serve_on_free_ports(&env);
    cmd.env_remove("AGENTCA_PASSPHRASE").env_remove("NO_COLOR");
    let server = Server::start(cmd);
    server.wait_log("listening");
    let log = server.stderr();
    assert!(!log.contains('\u{1b}'), "{log:?}");
}

#[test]
fn serve_refuses_other_users_with_a_clear_message() {
    let env = Env::with_ca();
    let server = Server::start(serve_on_free_ports(&env));
    let scratch = open_scratch(&env);
    loosen(&env, &server);
    let mut kinds = Vec::new();
    for _ in 0..20 {
        let Some(out) = agent_list_as_nobody(&env) else {
            break;
        };
        kinds.push(out.json_error());
    }
    restore(&env, &server, &scratch);
    for (kind, message) in &kinds {
        assert_eq!(kind, "unauthorized", "{message}; all answers: {kinds:?}");
        assert!(message.contains("owner of the data directory"), "{message}");
    }
}

/// The `GLIBC_TUNABLES` value of a running process. glibc's loader parses the value in place,
/// ending each tunable with a NUL where the `:` was, so the tunables after the first appear in
/// `/proc/PID/environ` as entries of their own.
fn tunables_of(server: &Server) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{}/environ", server.pid())).unwrap();
    let mut entries = environ
        .split(|b| *b == 0)
        .filter_map(|entry| std::str::from_utf8(entry).ok());
    let first = entries.find_map(|entry| entry.strip_prefix("GLIBC_TUNABLES="))?;
    let rest = entries.take_while(|entry| entry.starts_with("glibc.") && !entry.contains(' '));
    Some(
        std::iter::once(first)
            .chain(rest)
            .collect::<Vec<_>>()
            .join(":"),
    )
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn serve_fixes_the_allocators_mmap_threshold_and_keeps_an_operators_tunables() {
    let env = Env::with_ca();
    let cases = [
        (None, "glibc.malloc.mmap_threshold=131072"),
        (
            Some("glibc.malloc.arena_max=4"),
            "glibc.malloc.arena_max=4:glibc.malloc.mmap_threshold=131072",
        ),
        (
            Some("glibc.malloc.mmap_threshold=262144"),
            "glibc.malloc.mmap_threshold=262144",
        ),
    ];
    for (given, expected) in cases {
        let mut cmd = serve_on_free_ports(&env);
        match given {
            Some(value) => cmd.env("GLIBC_TUNABLES", value),
            None => cmd.env_remove("GLIBC_TUNABLES"),
        };
        let server = Server::start(cmd);
        // The process the test started is the one serving, with the tunable in its environment.
        assert_eq!(
            tunables_of(&server).as_deref(),
            Some(expected),
            "given {given:?}"
        );
        assert_eq!(server.get("/healthz").status, 200);
        let (status, log) = server.terminate();
        assert_eq!(status.code(), Some(0), "{status}\n{log}");
        assert!(!log.contains("mmap threshold"), "{log}");
    }
}

/// Lowers (or, with `unlimited`, lifts) the file-size limit of a running process.
fn set_file_size_limit(pid: u32, limit: &str) {
    let status = Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--fsize={limit}:unlimited"),
        ])
        .status()
        .expect("prlimit(1) (util-linux) is needed for the full-disk test");
    assert!(status.success(), "prlimit --fsize={limit}: {status}");
}

/// REL-8: a disk that takes no more bytes. The server's file-size limit is lowered to one byte
/// while it runs, so every write to the store, the audit log and the health probe fails (with
/// EFBIG and SIGXFSZ, whose default disposition would kill the process), as on a full disk.
/// Issuance and revocation are refused with the storage error, nothing they attempted is
/// recorded, `/healthz` says degraded, OCSP and the CRL keep answering, and the server lives.
/// sled keeps a write error until it is opened again, so recovery is a restart: after it the
/// store holds exactly what was acknowledged and the CA issues and revokes again.
#[test]
fn serve_degrades_on_a_full_disk_and_recovers_after_a_restart() {
    degrades_on_a_full_disk(None);
}

/// The same with the server's log in a file on the full disk (`serve 2>>FILE`): the log lines
/// are lost, and nothing else may be — a failed log write once panicked the thread that
/// logged, and when that was one of sled's I/O threads the store waited for it forever.
#[test]
fn serve_degrades_on_a_full_disk_that_also_holds_its_log() {
    degrades_on_a_full_disk(Some("serve.log"));
}

/// `cmd` with its stderr appended to `log` by a shell that then becomes the server (same pid).
fn with_stderr_in(cmd: &Command, log: &Path) -> Command {
    let script = ["-c", "log=$1; shift; exec \"$@\" 2>>\"$log\"", "sh"];
    let mut args: Vec<&OsStr> = script.iter().map(OsStr::new).collect();
    args.push(log.as_os_str());
    super::harness::wrapped("sh", &args, cmd)
}

fn degrades_on_a_full_disk(log_file: Option<&str>) {
    let env = Env::with_ca();
    // The limit is the server's: PostgreSQL writes in its own process.
    if env.postgres_url().is_some() {
        return;
    }
    let log_file = log_file.map(|name| env.path(name));
    let start = || {
        let cmd = serve_on_free_ports(&env);
        Server::start(match &log_file {
            Some(log) => with_stderr_in(&cmd, log),
            None => cmd,
        })
    };
    let server = start();
    let files = OcspFiles::of(&env);
    let alice = env.add_agent("/agent/alice", &["--dns", "full.example.org"]);
    let leaf = issue_checked(&env, &alice, "leaf");
    let acme = AcmeClient::new(server.https, &env.data_file("root.pem"));
    let account = acme.new_account(AccountKey::es256(), &{
        let doc = env.json(&["token", "create", "--agent", &alice, "--for", "acme"]);
        Eab::new(doc["kid"].as_str().unwrap(), doc["hmac"].as_str().unwrap())
    });
    // A SCEP enrollment made ready now (its challenge is recorded), sent on the full disk.
    let challenge = env.json(&["token", "create", "--agent", &alice, "--for", "scep"])["challenge"]
        .as_str()
        .unwrap()
        .to_owned();
    let pkcs_req = super::scep_clients::ready_pkcs_req(&env, &challenge);
    let before = env.listed_serials(&[]);
    // The HTTPS listener's certificate (issued at start, recorded like any other) and the leaf.
    let reserved = 2;

    set_file_size_limit(server.pid(), "1");
    let csr = env.csr("refused");
    let started = Instant::now();
    let (kind, message) = env.json_error(&[
        OsStr::new("issue"),
        OsStr::new("--agent"),
        OsStr::new(&alice),
        OsStr::new("--csr"),
        csr.path.as_os_str(),
    ]);
    assert!(
        message.contains("File too large") || message.contains("storage"),
        "{kind}: {message}"
    );
    let (kind, message) = env.json_error(&["revoke", &leaf.serial]);
    assert!(
        message.contains("File too large") || message.contains("storage"),
        "{kind}: {message}"
    );
    // The embedded store makes a reservation durable with its certificate, so the refused
    // issuance above may have been signed (and then thrown away); an ACME order is refused
    // before any signature.
    let signatures = server.metric(SIGNATURES);
    let r = acme.new_order(
        &account,
        &serde_json::json!([{"type": "dns", "value": "full.example.org"}]),
    );
    r.assert_problem(503, "serverInternal");
    assert!(r.header("retry-after").is_some(), "{r:?}");
    assert!(r.nonce().is_some(), "no fresh nonce on the error answer");
    // SCEP: 503 with Retry-After (a FAILURE would be a verdict on the request).
    let r = super::scep_clients::post_pki_message(server.http, &pkcs_req);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("retry-after").is_some(), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the refusals took {:?}",
        started.elapsed()
    );
    assert_eq!(
        server.metric(SIGNATURES),
        signatures,
        "a refused order was signed"
    );
    // A probe result lives for a second; the next one must fail.
    let deadline = Instant::now() + Duration::from_secs(5);
    let health = loop {
        let health = server.get("/healthz");
        if health.status != 200 || Instant::now() > deadline {
            break health;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(health.status, 503, "{}", health.text());
    assert!(health.text().contains("degraded"), "{}", health.text());
    // Read-only service goes on: OCSP (pre-signed and freshly signed with a nonce), the CRL.
    let text = files.query(&server, &leaf.pem, &["-no_nonce"]);
    assert!(text.contains(": good"), "{text}");
    let text = files.query(&server, &leaf.pem, &[]);
    assert!(text.contains(": good"), "{text}");
    assert!(served_crl(&server).serials.is_empty());
    // Not busy either (a warning about a failed write, written to a log past the limit, once
    // raised the signal it was about, forever).
    let cpu = || agentca_bench::sample_process(server.pid()).unwrap().cpu;
    let idle_from = cpu();
    std::thread::sleep(Duration::from_secs(2));
    let busy = cpu() - idle_from;
    assert!(
        busy < Duration::from_millis(500),
        "{busy:?} of CPU in 2 s while idle"
    );
    match &log_file {
        None => {
            server.wait_log("file-size limit");
            assert!(!server.stderr().contains("panicked"), "{}", server.stderr());
        }
        Some(log) => {
            let log = std::fs::read_to_string(log).unwrap();
            assert!(log.contains("listening"), "{log}");
            assert!(!log.contains("panicked"), "{log}");
        }
    }

    set_file_size_limit(server.pid(), "unlimited");
    server.kill();
    assert_eq!(
        env.listed_serials(&[]),
        before,
        "a refused issuance was recorded"
    );
    assert_eq!(
        env.serial_count(),
        reserved,
        "a refused issuance reserved a serial"
    );
    env.assert_audit_intact();

    let server = start();
    assert_eq!(server.get("/healthz").status, 200);
    let fresh = issue_checked(&env, &alice, "after");
    env.run(&["revoke", &leaf.serial]).success();
    let text = files.query(&server, &leaf.pem, &[]);
    assert!(text.contains(": revoked"), "{text}");
    let text = files.query(&server, &fresh.pem, &[]);
    assert!(text.contains(": good"), "{text}");
    // The refused enrollment did not spend its challenge: the same request now succeeds.
    let r = super::scep_clients::post_pki_message(server.http, &pkcs_req);
    assert_eq!(r.status, 200, "{}", r.text());
    // Since the restart: its HTTPS certificate, `fresh` and this enrollment's.
    assert_eq!(env.listed_serials(&[]).len(), before.len() + 3);
}

/// KEY-3: the root CA's key is for the ceremony, not for the online service. With `root.key`
/// moved out of the data directory after `init` (as an operator keeping it offline would), the
/// operator commands and `serve` issue, revoke and publish CRLs and OCSP answers as before:
/// nothing online reads the root key.
#[test]
fn nothing_online_needs_the_root_key() {
    let env = Env::with_ca();
    let offline = env.path("offline-root.key");
    std::fs::rename(env.data_file("root.key"), &offline).unwrap();

    // Without a server.
    let alice = env.add_agent("/agent/alice", &[]);
    let first = issue_checked(&env, &alice, "first");
    let crl = env.path("offline.crl");
    env.run(&["crl", "--out", crl.to_str().unwrap()]).success();

    // With one.
    let server = Server::start(serve_on_free_ports(&env));
    let files = OcspFiles::of(&env);
    let second = issue_checked(&env, &alice, "second");
    env.run(&["revoke", &first.serial]).success();
    server.await_revoked_everywhere(&first.serial);
    let text = files.query(&server, &first.pem, &[]);
    assert!(text.contains(": revoked"), "{text}");
    let text = files.query(&server, &second.pem, &[]);
    assert!(text.contains(": good"), "{text}");
    // The served CRL follows within REL-5's bound.
    let deadline = Instant::now() + CRL_PROPAGATION_LIMIT;
    while !served_crl(&server).serials.contains(&first.serial) {
        assert!(
            Instant::now() < deadline,
            "the CRL never listed the revocation"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!env.data_file("root.key").exists());
}

/// The `This Update` of the single response in `openssl ocsp -resp_text` output, Unix seconds.
fn this_update_of(text: &str) -> i64 {
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("This Update: "))
        .unwrap_or_else(|| panic!("no This Update in:\n{text}"));
    let out = Command::new("date")
        .args(["-u", "-d", line, "+%s"])
        .output()
        .unwrap();
    assert!(out.status.success(), "date -d {line:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// REL-7: the server's wall clock steps back an hour while it runs (libfaketime reading its
/// offset from a file; the monotonic clock is left alone, as a real step leaves it). A
/// response signed afterwards, the `revoked` one included, is never dated before a response
/// already given out, so no cache that keeps the newest response can prefer the old `good`.
#[test]
fn ocsp_answers_are_never_dated_back_when_the_clock_steps_back() {
    let Some(lib) = super::support::libfaketime() else {
        agentca_testkit::tools::missing("faketime", "the OCSP clock-step test (REL-7)");
        return;
    };
    let env = Env::with_ca();
    let offset = env.write("clock-offset", "+0\n");
    let mut cmd = serve_on_free_ports(&env);
    cmd.env("LD_PRELOAD", &lib)
        .env("FAKETIME_TIMESTAMP_FILE", &offset)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    let server = Server::start(cmd);
    let files = OcspFiles::of(&env);
    let alice = env.add_agent("/agent/alice", &[]);
    let leaf = issue_checked(&env, &alice, "leaf");
    let signed_now = ["-resp_text"]; // with a nonce: signed for the request
    let pre_signed = ["-resp_text", "-no_nonce"];
    let before = [
        this_update_of(&files.query(&server, &leaf.pem, &signed_now)),
        this_update_of(&files.query(&server, &leaf.pem, &pre_signed)),
    ];
    let latest = before.into_iter().max().unwrap();

    std::fs::write(&offset, "-1h\n").unwrap();
    // The step took: what the server issues now starts an hour earlier (less the backdating).
    let stepped = env.issue(&alice, &env.csr("stepped"), &[]);
    let started = x509_not_before(stepped["certificate_pem"].as_str().unwrap());
    assert!(
        started < latest - 3000,
        "the server's clock did not step back (notBefore {started}, before {latest})"
    );
    env.run(&["revoke", &leaf.serial]).success();
    for extra in [&signed_now[..], &pre_signed[..]] {
        let text = files.query(&server, &leaf.pem, extra);
        assert!(text.contains(": revoked"), "{text}");
        let dated = this_update_of(&text);
        assert!(
            dated >= latest,
            "{extra:?}: the revoked answer is dated {dated}, before the good one ({latest})"
        );
    }
}

/// notBefore of the first certificate in `pem`, Unix seconds.
fn x509_not_before(pem: &str) -> i64 {
    let der = pem_certs(pem).remove(0);
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der).unwrap();
    cert.validity().not_before.timestamp()
}
