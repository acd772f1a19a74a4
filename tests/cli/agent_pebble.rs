//! `agentca enroll` and `agentca renew [--daemon]` against a CA that is not agentca: Debian's
//! pebble (RFC 8555 test server), on 127.0.0.1 with free ports and a TLS certificate made
//! here, rows CLI-1 … CLI-7 of the security test plan.
//!
//! Pebble knows no `uri` identifier, so the agent orders its DNS name (`localhost`) and proves
//! it over http-01 from its built-in responder, on the port pebble's validator connects to.
//! Pebble 2.4 has no ARI (`renewalInfo`) and no `replaces`: the daemon renews at two thirds
//! of the lifetime there, and `alreadyReplaced` can only be met at agentca (tests/cli/enroll.rs).
//!
//! Skipped with a notice when pebble (or, for the clock test, faketime) is missing; a failure
//! under `AGENTCA_REQUIRE_TOOLS=1`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentca_testkit::tools::on_path;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use serde_json::{Value, json};

use super::acme_clients::spki_of_key;
use super::enroll::kill_renewals;
use super::harness::free_port;
use super::support::{Env, Outcome, agent_id, pem_certs};

/// The DNS name every agent here orders: pebble resolves it with the system resolver, to
/// 127.0.0.1, where the agent's responder listens.
const NAME: &str = "localhost";
/// One EAB key per agent a test enrolls (pebble lets a key bind more than one account, so
/// this is for tidiness only); 48 bytes, base64url.
const EAB_HMAC: &str = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
const EAB_KIDS: [&str; 4] = ["agent-0", "agent-1", "agent-2", "agent-3"];

/// How a test's pebble behaves: its `PEBBLE_*` variables and configuration.
#[derive(Clone)]
struct PebbleOptions {
    /// `PEBBLE_*` variables (pebble's own defaults apply to the others).
    vars: Vec<(&'static str, String)>,
    /// The lifetime of the certificates pebble issues (`certificateValidityPeriod`).
    validity_seconds: u64,
    /// The port pebble's http-01 validator connects to (`httpPort`): where the agent's
    /// responder listens.
    http_port: u16,
}

impl PebbleOptions {
    /// Validation for real (pebble fetches the key authorization from the responder), no
    /// random validation sleeps, no rejected nonces.
    fn validating() -> Self {
        Self {
            vars: vec![
                ("PEBBLE_VA_NOSLEEP", "1".into()),
                ("PEBBLE_WFE_NONCEREJECT", "0".into()),
            ],
            validity_seconds: 3600,
            http_port: free_port(),
        }
    }

    fn var(mut self, name: &'static str, value: &str) -> Self {
        self.vars.retain(|(n, _)| *n != name);
        self.vars.push((name, value.to_owned()));
        self
    }

    fn without(mut self, name: &str) -> Self {
        self.vars.retain(|(n, _)| *n != name);
        self
    }

    fn validity(mut self, seconds: u64) -> Self {
        self.validity_seconds = seconds;
        self
    }
}

/// A running pebble; killed when dropped.
struct Pebble {
    child: Child,
    port: u16,
    management: u16,
    http_port: u16,
    /// The root of pebble's TLS certificate (made here), for `--tls-ca`.
    tls_root: PathBuf,
    tls: Arc<rustls::ClientConfig>,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Pebble {
    /// `None` (after a notice, or a panic under `AGENTCA_REQUIRE_TOOLS=1`) when pebble is
    /// not installed.
    fn start(options: PebbleOptions) -> Option<Self> {
        let Some(program) = on_path("pebble") else {
            agentca_testkit::tools::missing("pebble", "the agent's tests against a stock ACME CA");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let (tls_root, tls) = write_tls_files(dir.path());
        let port = free_port();
        let management = free_port();
        let keys: BTreeMap<&str, &str> = EAB_KIDS.iter().map(|k| (*k, EAB_HMAC)).collect();
        let config = json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{port}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": dir.path().join("cert.pem"),
                "privateKey": dir.path().join("key.pem"),
                "httpPort": options.http_port,
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": true,
                "externalAccountMACKeys": keys,
                "certificateValidityPeriod": options.validity_seconds,
            }
        });
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = dir.path().join("pebble.log");
        let mut cmd = Command::new(program);
        cmd.arg("-config")
            .arg(&config_path)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null());
        for var in [
            "PEBBLE_VA_ALWAYS_VALID",
            "PEBBLE_VA_NOSLEEP",
            "PEBBLE_VA_SLEEPTIME",
            "PEBBLE_WFE_NONCEREJECT",
            "PEBBLE_AUTHZREUSE",
            "PEBBLE_ALTERNATE_ROOTS",
            "PEBBLE_CHAIN_LENGTH",
        ] {
            cmd.env_remove(var);
        }
        for (name, value) in &options.vars {
            cmd.env(name, value);
        }
        let child = cmd.spawn().unwrap();
        let pebble = Self {
            child,
            port,
            management,
            http_port: options.http_port,
            tls_root,
            tls,
            log,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        for p in [port, management] {
            while TcpStream::connect(("127.0.0.1", p)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "pebble did not listen on {p}:\n{}",
                    pebble.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Some(pebble)
    }

    fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET `path` on the management interface (HTTPS, pebble's TLS certificate); the body.
    fn management_get(&self, path: &str) -> Vec<u8> {
        let tcp = TcpStream::connect(("127.0.0.1", self.management)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let conn = rustls::ClientConnection::new(self.tls.clone(), name).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        write!(
            tls,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = Vec::new();
        // Pebble closes without close_notify now and then; what was read is kept.
        let _ = tls.read_to_end(&mut raw);
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&raw[..split]);
        assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
        raw[split + 4..].to_vec()
    }

    /// Pebble's root number `n` (0 is the default chain's), PEM, written to a file.
    fn root(&self, n: usize) -> PathBuf {
        let pem = self.management_get(&format!("/roots/{n}"));
        let path = self.dir.path().join(format!("pebble-root-{n}.pem"));
        std::fs::write(&path, pem).unwrap();
        path
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A root and a TLS certificate for 127.0.0.1 signed by it, valid from a day ago for two
/// days (so a daemon whose clock is hours off still trusts it); returns the root's path and a
/// client configuration trusting it.
fn write_tls_files(dir: &Path) -> (PathBuf, Arc<rustls::ClientConfig>) {
    let window = |params: &mut CertificateParams| {
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(1);
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    window(&mut ca_params);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    window(&mut params);
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    let root = dir.join("tls-root.pem");
    std::fs::write(&root, ca_cert.pem()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (root, Arc::new(config))
}

/// One agent's files, in the scratch directory.
struct Agent<'a> {
    env: &'a Env,
    id: String,
    key: PathBuf,
    cert: PathBuf,
    /// Where its http-01 responder listens: pebble's http-01 port, unless agents run side by
    /// side against a pebble that validates without fetching (each needs a port of its own).
    http01_port: Option<u16>,
}

impl<'a> Agent<'a> {
    fn new(env: &'a Env, name: &str) -> Self {
        std::fs::create_dir_all(env.path(name)).unwrap();
        Self {
            env,
            id: agent_id(&format!("/agent/{name}")),
            key: env.path(&format!("{name}/key.pem")),
            cert: env.path(&format!("{name}/cert.pem")),
            http01_port: None,
        }
    }

    /// `enroll` at `pebble` with EAB key `kid`, `--ca root` (pebble's root 0 unless given),
    /// its TLS root as `--tls-ca`, `--dns localhost`, the responder on pebble's http-01 port,
    /// plus `extra`.
    fn enroll(&self, pebble: &Pebble, kid: &str, root: Option<&Path>, extra: &[&str]) -> Outcome {
        let root = root.map_or_else(|| pebble.root(0), Path::to_owned);
        let mut cmd = self.env.bare();
        cmd.args(["--output", "json", "enroll", "--agent", &self.id, "--key"])
            .arg(&self.key)
            .arg("--cert")
            .arg(&self.cert)
            .args(["--acme", &pebble.directory(), "--eab-kid", kid])
            .args(["--eab-hmac", EAB_HMAC, "--ca"])
            .arg(root)
            .arg("--tls-ca")
            .arg(&pebble.tls_root)
            .args(["--dns", NAME, "--http-01-listen"])
            .arg(format!(
                "127.0.0.1:{}",
                self.http01_port.unwrap_or(pebble.http_port)
            ))
            .args(extra);
        Outcome::of(&mut cmd)
    }

    /// `renew` once (`--output json`).
    fn renew(&self) -> Outcome {
        let mut cmd = self.env.bare();
        cmd.args(["--output", "json", "renew", "--key"])
            .arg(&self.key)
            .arg("--cert")
            .arg(&self.cert);
        Outcome::of(&mut cmd)
    }

    /// The installed chain, DER, leaf first.
    fn chain(&self) -> Vec<Vec<u8>> {
        pem_certs(&std::fs::read_to_string(&self.cert).unwrap())
    }

    /// The installed pair belongs together, names `localhost`, and the key is mode 0600;
    /// returns the leaf.
    fn check_pair(&self) -> Vec<u8> {
        let chain = self.chain();
        let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
        assert_eq!(
            leaf.public_key().raw,
            spki_of_key(&self.key),
            "a mismatched pair"
        );
        let names: Vec<String> = leaf
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names, [format!("DNSName({NAME})")], "{names:?}");
        assert_eq!(
            std::fs::metadata(&self.key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        chain[0].clone()
    }

    fn enrollment(&self) -> Value {
        let path = self.key.parent().unwrap().join(".agentca/enrollment.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }
}

/// `openssl verify` of the installed chain against `root` alone, the chain's other
/// certificates untrusted: `Ok` or the transcript.
fn openssl_verify(agent: &Agent<'_>, root: &Path) -> Result<(), String> {
    let chain = agent.chain();
    let dir = tempfile::tempdir().unwrap();
    let leaf = dir.path().join("leaf.pem");
    let rest = dir.path().join("untrusted.pem");
    let pem = |ders: &[Vec<u8>]| {
        let refs: Vec<&[u8]> = ders.iter().map(Vec::as_slice).collect();
        agentca_testkit::tools::pem("CERTIFICATE", &refs)
    };
    std::fs::write(&leaf, pem(&chain[..1])).unwrap();
    std::fs::write(&rest, pem(&chain[1..])).unwrap();
    let output = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(root)
        .arg("-untrusted")
        .arg(&rest)
        .arg(&leaf)
        .output()
        .expect("openssl is needed for these tests");
    if output.status.success() {
        Ok(())
    } else {
        Err(agentca_testkit::tools::transcript(&output))
    }
}

/// http-01 for real: pebble's validator fetches the key authorization from the agent's
/// responder. `auto` finds out at enrollment that pebble refuses the `uri` identifier, keeps
/// `dns`, and renewals answer a challenge each time (no authorization reuse). Without a
/// responder the same enrollment fails: the challenge is not optional.
#[test]
fn an_agent_enrolls_and_renews_over_http01_at_pebble() {
    let options = PebbleOptions::validating().var("PEBBLE_AUTHZREUSE", "0");
    let Some(pebble) = Pebble::start(options) else {
        return;
    };
    let env = Env::empty();

    // Without --http-01-listen the pending authorization is reported, not assumed valid.
    let unanswered = Agent::new(&env, "silent");
    let mut cmd = env.bare();
    cmd.args([
        "--output",
        "json",
        "enroll",
        "--agent",
        &unanswered.id,
        "--key",
    ])
    .arg(&unanswered.key)
    .arg("--cert")
    .arg(&unanswered.cert)
    .args(["--acme", &pebble.directory(), "--eab-kid", EAB_KIDS[1]])
    .args(["--eab-hmac", EAB_HMAC, "--ca"])
    .arg(pebble.root(0))
    .arg("--tls-ca")
    .arg(&pebble.tls_root)
    .args(["--dns", NAME]);
    let refused = Outcome::of(&mut cmd);
    let (kind, message) = refused.json_error();
    assert_eq!(kind, "authorizationPending", "{refused}");
    assert!(message.contains("--http-01-listen"), "{message}");
    assert!(!unanswered.cert.exists());

    let agent = Agent::new(&env, "web");
    let enrolled = agent.enroll(&pebble, EAB_KIDS[0], None, &[]).success();
    assert_eq!(enrolled.json()["agent"], agent.id.as_str(), "{enrolled}");
    let first = agent.check_pair();
    let record = agent.enrollment();
    assert_eq!(record["identifiers"], "dns", "{record:#}");
    assert_eq!(record["dns"], json!([NAME]), "{record:#}");
    openssl_verify(&agent, &pebble.root(0)).unwrap();

    assert_eq!(
        validations_in(&pebble),
        1,
        "pebble did not validate the enrollment over http-01:\n{}",
        pebble.log()
    );
    // Renewals until two of them got a new authorization, which pebble validated by fetching
    // from the responder (it logs each one). PEBBLE_AUTHZREUSE=0 still reuses one order in a
    // hundred (see `reused_authorizations_and_slow_validation_cli_2`), so allow four tries.
    let mut validated = 0;
    for _ in 0..4 {
        let key = std::fs::read(&agent.key).unwrap();
        let validations = validations_in(&pebble);
        agent.renew().success();
        assert_ne!(std::fs::read(&agent.key).unwrap(), key, "key not rotated");
        assert_ne!(agent.check_pair(), first);
        openssl_verify(&agent, &pebble.root(0)).unwrap();
        let new = validations_in(&pebble) - validations;
        assert!(
            new <= 1,
            "one renewal, {new} validations:\n{}",
            pebble.log()
        );
        validated += new;
        if validated == 2 {
            break;
        }
    }
    assert_eq!(
        validated,
        2,
        "pebble did not validate the renewals over http-01:\n{}",
        pebble.log()
    );
}

/// CLI-1: pebble rejects half of all good nonces; every request is retried with the nonce
/// the `badNonce` answer carries, so enrollment and renewals succeed (with ten or so signed
/// requests each, one try per request would fail almost always).
#[test]
fn half_of_all_nonces_rejected_cli_1() {
    let options = PebbleOptions::validating().var("PEBBLE_WFE_NONCEREJECT", "50");
    let Some(pebble) = Pebble::start(options) else {
        return;
    };
    assert!(
        pebble.log().contains("reject 50% of good nonces"),
        "{}",
        pebble.log()
    );
    let env = Env::empty();
    let agent = Agent::new(&env, "nonces");
    agent.enroll(&pebble, EAB_KIDS[0], None, &[]).success();
    let mut seen = vec![agent.check_pair()];
    for _ in 0..3 {
        agent.renew().success();
        seen.push(agent.check_pair());
    }
    seen.dedup();
    assert_eq!(seen.len(), 4, "every renewal installs a new certificate");
}

/// CLI-2: with authorization reuse always on, a renewal's order is `ready` at once (its
/// authorization is the enrollment's, still valid), and the agent finalizes without a
/// challenge: the test holds the responder's port, so a renewal that needed one would fail.
/// With reuse off the same renewal must fail for that reason, which shows the port blocks it.
/// Validation sleeps a random 0–3 s (PEBBLE_VA_SLEEPTIME), so authorizations are polled.
///
/// Pebble creates a new authorization only when `rand.Intn(100) > PEBBLE_AUTHZREUSE`, so
/// "0" still reuses one order in a hundred. A renewal that succeeds while the port is held
/// must then have been such a reuse (pebble validated nothing new), and the next renewal is
/// tried; three reuses in a row (one chance in a million) fail the test.
#[test]
fn reused_authorizations_and_slow_validation_cli_2() {
    for reuse in ["100", "0"] {
        let options = PebbleOptions::validating()
            .without("PEBBLE_VA_NOSLEEP")
            .var("PEBBLE_VA_SLEEPTIME", "3")
            .var("PEBBLE_AUTHZREUSE", reuse);
        let Some(pebble) = Pebble::start(options) else {
            return;
        };
        let env = Env::empty();
        let agent = Agent::new(&env, "reuse");
        agent.enroll(&pebble, EAB_KIDS[0], None, &[]).success();
        let first = agent.check_pair();
        if reuse == "100" {
            let blocker = TcpListener::bind(("127.0.0.1", pebble.http_port)).unwrap();
            let renewed = agent.renew();
            drop(blocker);
            renewed.success();
            assert_ne!(agent.check_pair(), first);
            continue;
        }
        let mut refused = None;
        for _ in 0..3 {
            let validations = validations_in(&pebble);
            let before = agent.check_pair();
            let blocker = TcpListener::bind(("127.0.0.1", pebble.http_port)).unwrap();
            let renewed = agent.renew();
            drop(blocker);
            if renewed.status.success() {
                assert_eq!(
                    validations_in(&pebble),
                    validations,
                    "a renewal with its port held was validated:\n{}",
                    pebble.log()
                );
                assert_ne!(agent.check_pair(), before);
                continue;
            }
            refused = Some((renewed, before));
            break;
        }
        let Some((renewed, before)) = refused else {
            panic!("pebble reused the authorization three times with PEBBLE_AUTHZREUSE=0");
        };
        let (kind, message) = renewed.json_error();
        assert_eq!(kind, "responder", "{message}");
        assert!(message.contains("cannot listen"), "{message}");
        assert_eq!(agent.check_pair(), before, "the old pair stays");
        // With the port free again, the challenge is answered.
        agent.renew().success();
        assert_ne!(agent.check_pair(), before);
    }
}

/// How many authorizations pebble has validated by a completed challenge (it logs each).
fn validations_in(pebble: &Pebble) -> usize {
    pebble
        .log()
        .matches("set VALID by completed challenge")
        .count()
}

/// CLI-3: pebble offers three chains, each to its own root through three intermediates;
/// the agent keeps the one that leads to the root it was given, fetched from pebble's
/// management interface, at enrollment and at renewal. That chain validates with OpenSSL
/// against that root alone, and not against the default chain's root.
#[test]
fn the_chain_to_the_given_root_is_kept_cli_3() {
    let options = PebbleOptions::validating()
        .var("PEBBLE_VA_ALWAYS_VALID", "1")
        .var("PEBBLE_ALTERNATE_ROOTS", "2")
        .var("PEBBLE_CHAIN_LENGTH", "3");
    let Some(pebble) = Pebble::start(options) else {
        return;
    };
    let env = Env::empty();
    let roots: Vec<PathBuf> = (0..3).map(|n| pebble.root(n)).collect();
    for (n, root) in roots.iter().enumerate() {
        let agent = Agent::new(&env, &format!("chain{n}"));
        agent
            .enroll(&pebble, EAB_KIDS[n], Some(root), &["--identifiers", "dns"])
            .success();
        for step in ["enrolled", "renewed"] {
            agent.check_pair();
            assert!(agent.chain().len() >= 3, "{step}: a longer chain");
            if let Err(transcript) = openssl_verify(&agent, root) {
                panic!("{step} with root {n}: the chain does not lead to it:\n{transcript}");
            }
            for (other, other_root) in roots.iter().enumerate().filter(|(o, _)| *o != n) {
                assert!(
                    openssl_verify(&agent, other_root).is_err(),
                    "{step} with root {n}: the chain validates against root {other} too"
                );
            }
            if step == "enrolled" {
                agent.renew().success();
            }
        }
    }
}

/// CLI-5 at pebble: `renew` killed with SIGKILL at points spread over a whole renewal (which
/// here takes a second or two: an order, a challenge, polls) never leaves a mismatched pair
/// or a key readable by others, and a renewal afterwards works from whatever was left.
#[test]
fn renewals_killed_at_random_points_cli_5() {
    let options = PebbleOptions::validating().var("PEBBLE_AUTHZREUSE", "0");
    let Some(pebble) = Pebble::start(options) else {
        return;
    };
    let env = Env::empty();
    let agent = Agent::new(&env, "killed");
    agent.enroll(&pebble, EAB_KIDS[0], None, &[]).success();
    let mut seen = kill_renewals(
        &env,
        &agent.key,
        &agent.cert,
        10,
        Duration::from_millis(180),
    );
    seen.insert(agent.check_pair());
    agent.renew().success();
    seen.insert(agent.check_pair());
    println!("{} distinct certificates seen installed", seen.len());
    assert!(seen.len() >= 2);
}

fn rfc3339(value: &Value) -> time::OffsetDateTime {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {value}"));
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap()
}

/// A process started in a process group of its own (`process_group(0)`): dropping it kills
/// the whole group (the daemon and anything it started), also when a test fails half-way.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        // Not reaped before this, so the group's id is still this process's own.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

/// What one daemon reported: its JSON events, by line.
fn events(lines: &[String], name: &str) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == name)
        .collect()
}

/// CLI-6 and CLI-7: daemons against pebble, which has no ARI, so they renew at two thirds of
/// the 30-second lifetime. Two of them run with libfaketime preloaded and their clocks 2 hours ahead
/// and 2 hours behind. Planning in the CA's time (its `Date`), each renews once or twice in
/// 33 seconds like the one with a correct clock: a clock ahead would otherwise see every new
/// certificate as expired and renew in a loop, a clock behind would wait hours and let it
/// expire.
#[test]
fn daemons_with_skewed_clocks_renew_on_the_cas_time_cli_6_cli_7() {
    let faketime = super::support::libfaketime();
    if faketime.is_none() {
        agentca_testkit::tools::missing("faketime", "the daemon's clock-skew test (CLI-7)");
    }
    let options = PebbleOptions::validating()
        .var("PEBBLE_VA_ALWAYS_VALID", "1")
        .validity(30);
    let Some(pebble) = Pebble::start(options) else {
        return;
    };
    let env = Env::empty();
    let mut skews = vec![("correct", None)];
    if faketime.is_some() {
        skews.push(("ahead", Some("+2h")));
        skews.push(("behind", Some("-2h")));
    }
    let mut daemons = Vec::new();
    for (n, (name, skew)) in skews.iter().enumerate() {
        let mut agent = Agent::new(&env, name);
        agent.http01_port = Some(free_port());
        let enrolled = agent
            .enroll(&pebble, EAB_KIDS[n], None, &["--identifiers", "dns"])
            .success();
        let enrolled_nb = rfc3339(&enrolled.json()["not_before"]);
        let mut cmd = env.bare();
        if let (Some(offset), Some(lib)) = (skew, &faketime) {
            super::support::move_clock(&mut cmd, lib, offset);
        }
        cmd.args(["--output", "json", "renew", "--daemon", "--key"])
            .arg(&agent.key)
            .arg("--cert")
            .arg(&agent.cert)
            // What a daemon that exits says (its error) is on standard output.
            .stdout(std::fs::File::create(env.path(&format!("{name}.stdout"))).unwrap())
            .stderr(Stdio::piped())
            // A group of its own, so that nothing it started outlives the test.
            .process_group(0);
        let mut child = Group(cmd.spawn().unwrap());
        let stderr = child.0.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        daemons.push((name, skew, agent, child, reader, enrolled_nb));
    }
    std::thread::sleep(Duration::from_secs(33));
    // All stopped before anything is asserted, so a failure leaves none running.
    let stopped: Vec<_> = daemons
        .into_iter()
        .map(|(name, skew, agent, child, reader, enrolled_nb)| {
            drop(child);
            (name, skew, agent, reader.join().unwrap(), enrolled_nb)
        })
        .collect();
    for (name, skew, agent, lines, enrolled_nb) in stopped {
        let exited = std::fs::read_to_string(env.path(&format!("{name}.stdout"))).unwrap();
        let transcript = format!("{}\nstandard output: {exited}", lines.join("\n"));
        let renewed = events(&lines, "renewed").len();
        assert!(
            (1..=2).contains(&renewed),
            "the daemon whose clock is {name} renewed {renewed} times in 33 s:\n{transcript}"
        );
        assert!(events(&lines, "failed").is_empty(), "{name}:\n{transcript}");
        // Without ARI each renewal comes two thirds into the lifetime (20 s), moved earlier
        // by up to a twentieth (1.5 s); it takes a second or so, more on a loaded machine,
        // and must be done before the 30 s are over.
        let mut previous = enrolled_nb;
        for event in events(&lines, "renewed") {
            let nb = rfc3339(&event["not_before"]);
            let after = (nb - previous).whole_seconds();
            assert!(
                (16..=29).contains(&after),
                "{name}: renewed {after} s into a 30 s lifetime:\n{transcript}"
            );
            previous = nb;
        }
        let skew_events = events(&lines, "clock_skew");
        match skew {
            Some(offset) => {
                let expected: i64 = if offset.starts_with('+') { -7200 } else { 7200 };
                let measured = skew_events
                    .first()
                    .and_then(|e| e["offset_s"].as_i64())
                    .unwrap_or_else(|| panic!("{name}: no clock_skew event:\n{transcript}"));
                assert!(
                    (measured - expected).abs() <= 5,
                    "{name}: measured {measured} s:\n{transcript}"
                );
            }
            None => assert!(skew_events.is_empty(), "{name}:\n{transcript}"),
        }
        agent.check_pair();
    }
}
