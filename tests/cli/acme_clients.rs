//! The ACME server under stock clients: certbot and lego, as Debian ships them, against the
//! real `agentca serve` on loopback.
//!
//! - certbot registers with EAB, proves a name by http-01 with its standalone server (the
//!   name resolves to 127.0.0.1 through the fake DNS, so validation really connects), renews,
//!   revokes for keyCompromise with the account key and the first certificate with its own key
//!   (both then on the CRL); revoking again is refused.
//! - lego registers with EAB, obtains ECDSA P-256 and RSA 2048 certificates for names the
//!   agent is pre-authorized for and one for a name it proves by tls-alpn-01 with its own TLS
//!   server, then revokes them; the spent EAB credential makes no second account.
//!
//! Every certificate goes through the project's full leaf checks (invariants, `openssl verify`,
//! rustls-webpki, pkilint) plus `openssl verify -purpose sslserver` for each DNS name; OCSP
//! answers `good` right after issuance and `revoked` after revocation; the audit log verifies.
//!
//! A missing client skips the test with a notice, or fails it under `AGENTCA_REQUIRE_TOOLS=1`.

use std::ffi::OsStr;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::harness::{AcmeServer, Server};
use super::support::{BASE_URL, Env, agent_id, now, pem_certs};

/// The longest one client run may take; past it the client is killed and the test fails.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);
/// The contact address the clients register with.
const EMAIL: &str = "ops@example.org";

/// Whether `program` can be run; if not, reports it (a notice, or a panic when tools are
/// required) and returns false.
pub(crate) fn client_present(program: &str, purpose: &str) -> bool {
    match Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            agentca_testkit::tools::missing(program, purpose);
            false
        }
        Err(e) => panic!("could not run {program}: {e}"),
    }
}

/// A finished client run.
pub(crate) struct ClientRun {
    what: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl ClientRun {
    /// Requires exit status 0.
    #[track_caller]
    pub(crate) fn success(self) -> Self {
        assert!(self.status.success(), "{self}");
        self
    }

    /// Both streams, for searching.
    fn text(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Display for ClientRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\nstatus: {} after {:?}\nstdout:\n{}\nstderr:\n{}",
            self.what, self.status, self.elapsed, self.stdout, self.stderr
        )
    }
}

fn drain(from: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let mut from = from;
        let _ = from.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs `cmd` to completion within [`CLIENT_TIMEOUT`], killing it (and failing) past that.
pub(crate) fn run_bounded(mut cmd: Command) -> ClientRun {
    let what = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(OsStr::to_string_lossy)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let started = Instant::now();
    let mut child: Child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {what}: {e}"));
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > CLIENT_TIMEOUT {
            let _ = child.kill();
            let status = child.wait().unwrap();
            panic!(
                "{what} did not finish within {CLIENT_TIMEOUT:?} and was killed ({status})\n\
                 stdout:\n{}\nstderr:\n{}",
                stdout.join().unwrap(),
                stderr.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    let run = ClientRun {
        what,
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
        elapsed: started.elapsed(),
    };
    eprintln!("{} took {:?}", run.what, run.elapsed);
    run
}

/// A client command with a clean environment: `HOME` in the scratch directory, no proxies,
/// and nothing but loopback for the server.
pub(crate) fn client_command(program: &str, env: &Env) -> Command {
    let home = env.path("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut cmd = Command::new(program);
    cmd.current_dir(&home).env("HOME", &home);
    for var in [
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost");
    cmd
}

/// A certificate a client obtained, as the client stored it.
struct Obtained {
    /// The leaf alone, PEM, in the scratch directory.
    leaf_pem: PathBuf,
    leaf_der: Vec<u8>,
    serial: String,
}

/// The serials (lowercase hex, as `serial_hex` writes them) the served CRL lists.
fn crl_serials(server: &AcmeServer<'_>) -> Vec<String> {
    let response = server.get("/crl");
    assert_eq!(response.status, 200, "{}", response.text());
    super::harness::crl_serials(&response.body)
}

/// The DER SubjectPublicKeyInfo of a PEM private key (`openssl pkey -pubout`).
pub(crate) fn spki_of_key(key: &Path) -> Vec<u8> {
    let output = Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(key)
        .output()
        .expect("openssl is needed for these tests");
    assert!(
        output.status.success(),
        "openssl pkey: {}",
        agentca_testkit::tools::transcript(&output)
    );
    output.stdout
}

/// The DNS names of a certificate's subjectAltName, in order, and its URI names.
pub(crate) fn san_names(der: &[u8]) -> (Vec<String>, Vec<String>) {
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    let mut dns = Vec::new();
    let mut uris = Vec::new();
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(d) => dns.push((*d).to_owned()),
            GeneralName::URI(u) => uris.push((*u).to_owned()),
            other => panic!("unexpected name in the SAN: {other:?}"),
        }
    }
    (dns, uris)
}

/// Checks a chain a client stored (`chain_pem`: leaf first) for `agent` and `dns`, with the
/// key in `key`, signed no earlier than `signed_at`; writes the leaf to `NAME.pem`.
fn check_obtained(
    server: &AcmeServer<'_>,
    name: &str,
    chain_pem: &Path,
    key: &Path,
    agent: &str,
    dns: &[&str],
    signed_at: time::OffsetDateTime,
) -> Obtained {
    let env = server.env;
    let text = std::fs::read_to_string(chain_pem).unwrap();
    let chain = pem_certs(&text);
    assert_eq!(
        chain.len(),
        2,
        "{name}: expected the leaf and the issuing CA in {}",
        chain_pem.display()
    );
    assert_eq!(
        chain[1],
        env.ca_der("issuing.pem"),
        "{name}: not the issuer"
    );
    let leaf_der = chain[0].clone();

    let expect = agentca_testkit::Expectation::new(agent, signed_at)
        .dns(dns.iter().copied())
        .csr_public_key_spki(spki_of_key(key))
        .base_url(BASE_URL);
    env.check_leaf(&leaf_der, &expect);

    // The agent as the one URI SAN, and exactly the names the client ordered.
    let (names, uris) = san_names(&leaf_der);
    assert_eq!(uris, vec![agent.to_owned()], "{name}");
    let mut sorted = names.clone();
    sorted.sort();
    let mut wanted: Vec<String> = dns.iter().map(|d| (*d).to_owned()).collect();
    wanted.sort();
    assert_eq!(sorted, wanted, "{name}: DNS names {names:?}");
    let (_, cert) = X509Certificate::from_der(&leaf_der).unwrap();
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && eku.server_auth, "{name}: {eku:?}");

    let leaf_pem = env.write(
        &format!("{name}.pem"),
        agentca_testkit::tools::pem("CERTIFICATE", &[&leaf_der]),
    );
    // A TLS client would accept it for each of its names.
    for host in dns {
        let output = Command::new("openssl")
            .args(["verify", "-purpose", "sslserver", "-verify_hostname", host])
            .arg("-CAfile")
            .arg(env.data_file("root.pem"))
            .arg("-untrusted")
            .arg(env.data_file("issuing.pem"))
            .arg(&leaf_pem)
            .output()
            .expect("openssl is needed for these tests");
        assert!(
            output.status.success(),
            "{name}: openssl verify -purpose sslserver -verify_hostname {host}: {}",
            agentca_testkit::tools::transcript(&output)
        );
    }

    let serial = hex::encode(cert.raw_serial());
    // The store and the audit log know it as an ACME issuance for the agent.
    let shown = env.json(&["cert", "show", &serial]);
    assert_eq!(shown["agent"], agent, "{shown:#}");
    let issued = env.audit_events("cert.issued");
    let entry = issued
        .iter()
        .find(|e| e["fields"]["serial"] == serial.as_str())
        .unwrap_or_else(|| panic!("{name}: no cert.issued line for {serial}"));
    assert_eq!(entry["fields"]["agent"], agent, "{entry:#}");
    assert_eq!(entry["fields"]["method"], "acme", "{entry:#}");

    assert_eq!(ocsp_status(server, &leaf_pem), "good", "{name} just issued");
    Obtained {
        leaf_pem,
        leaf_der,
        serial,
    }
}

/// `openssl ocsp` against the server's responder: the status word (`good`, `revoked`, ...),
/// after checking the response verifies.
fn ocsp_status(server: &AcmeServer<'_>, leaf_pem: &Path) -> String {
    ocsp_status_at(server.env, &server.server, leaf_pem)
}

/// [`ocsp_status`] for any running server of `env`.
pub(crate) fn ocsp_status_at(env: &Env, server: &Server, leaf_pem: &Path) -> String {
    let text = ocsp_query_at(env, server, leaf_pem);
    let prefix = format!("{}: ", leaf_pem.display());
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .unwrap_or_else(|| panic!("no status for {prefix:?} in:\n{text}"))
}

/// The transcript of a verified `openssl ocsp` query for `leaf_pem`.
fn ocsp_query(server: &AcmeServer<'_>, leaf_pem: &Path) -> String {
    ocsp_query_at(server.env, &server.server, leaf_pem)
}

fn ocsp_query_at(env: &Env, server: &Server, leaf_pem: &Path) -> String {
    let url = server.url("/ocsp");
    let output = Command::new("openssl")
        .args(["ocsp", "-no_nonce", "-timeout", "10", "-url", &url])
        .arg("-issuer")
        .arg(env.data_file("issuing.pem"))
        .arg("-CAfile")
        .arg(env.data_file("ca-chain.pem"))
        .arg("-cert")
        .arg(leaf_pem)
        .output()
        .expect("openssl is needed for these tests");
    let text = agentca_testkit::tools::transcript(&output);
    assert!(
        output.status.success() && text.contains("Response verify OK"),
        "openssl ocsp: {text}"
    );
    text
}

/// `cert show SERIAL`: the status the store records.
fn store_status(env: &Env, serial: &str) -> Value {
    env.json(&["cert", "show", serial])
}

/// certbot's directories and the arguments every certbot command takes.
struct Certbot<'a> {
    server: &'a AcmeServer<'a>,
    config: PathBuf,
}

impl<'a> Certbot<'a> {
    fn new(server: &'a AcmeServer<'a>) -> Self {
        let config = server.env.path("certbot/config");
        Self { server, config }
    }

    /// `certbot SUBCOMMAND` with the scratch directories, the server and the trust anchor.
    fn command(&self, subcommand: &str) -> Command {
        let env = self.server.env;
        let mut cmd = client_command("certbot", env);
        cmd.env("REQUESTS_CA_BUNDLE", self.server.root_pem())
            .arg(subcommand)
            .arg("--non-interactive")
            .arg(format!("--server={}", self.server.acme_directory_url()))
            .arg("--config-dir")
            .arg(&self.config)
            .arg("--work-dir")
            .arg(env.path("certbot/work"))
            .arg("--logs-dir")
            .arg(env.path("certbot/logs"));
        cmd
    }

    /// The end of certbot's debug log, for failure messages.
    fn log_tail(&self) -> String {
        let log = self.server.env.path("certbot/logs/letsencrypt.log");
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// `live/NAME/FILE`.
    fn live(&self, name: &str, file: &str) -> PathBuf {
        self.config.join("live").join(name).join(file)
    }
}

#[test]
fn certbot_registers_with_eab_validates_http01_renews_and_revokes() {
    if !client_present("certbot", "the certbot end-to-end test") {
        return;
    }
    let env = Env::with_ca();
    let server = AcmeServer::start(&env);
    let agent = env.add_agent("/agent/web", &[]);
    let host = "web.agent.test";
    server
        .dns
        .set_a(host, vec![std::net::Ipv4Addr::LOCALHOST.into()]);
    let (kid, hmac) = server.eab(&agent);
    let certbot = Certbot::new(&server);
    let port = server.http01_port().to_string();

    // Register with EAB and obtain: the standalone server answers the http-01 challenge that
    // the CA, resolving the name through the fake DNS, fetches from 127.0.0.1.
    let signed_at = now();
    let mut cmd = certbot.command("certonly");
    cmd.args(["--standalone", "--agree-tos", "-m", EMAIL])
        .arg(format!("--eab-kid={kid}"))
        .arg(format!("--eab-hmac-key={hmac}"))
        .args(["--key-type", "ecdsa", "--elliptic-curve", "secp256r1"])
        .arg(format!("--http-01-port={port}"))
        .arg("--http-01-address=127.0.0.1")
        .args(["--cert-name", "web", "-d", host]);
    run_bounded(cmd).success();
    assert!(
        server.dns.queries(host, "A") > 0,
        "validation never looked {host} up: was it pre-authorized?"
    );
    let first = check_obtained(
        &server,
        "certbot-1",
        &certbot.live("web", "fullchain.pem"),
        &certbot.live("web", "privkey.pem"),
        &agent,
        &[host],
        signed_at,
    );
    let listed = env.json(&["cert", "list", "--agent", &agent]);
    assert_eq!(listed["certificates"].as_array().unwrap().len(), 1);

    // Renew: a new certificate for the same agent and name, from the same account.
    let signed_at = now();
    let mut cmd = certbot.command("renew");
    cmd.args(["--force-renewal", "--no-random-sleep-on-renew"])
        .args(["--cert-name", "web"])
        .arg(format!("--http-01-port={port}"))
        .arg("--http-01-address=127.0.0.1");
    run_bounded(cmd).success();
    let renewed = check_obtained(
        &server,
        "certbot-2",
        &certbot.live("web", "fullchain.pem"),
        &certbot.live("web", "privkey.pem"),
        &agent,
        &[host],
        signed_at,
    );
    assert_ne!(
        renewed.serial, first.serial,
        "renew did not get a new certificate"
    );
    assert_ne!(renewed.leaf_der, first.leaf_der);

    // Revoke the renewed certificate for keyCompromise with the account key.
    let cert_path = certbot.live("web", "cert.pem");
    let revoke = || {
        let mut cmd = certbot.command("revoke");
        cmd.arg("--cert-path").arg(&cert_path).args([
            "--reason",
            "keycompromise",
            "--no-delete-after-revoke",
        ]);
        run_bounded(cmd)
    };
    revoke().success();
    server.await_revoked_everywhere(&renewed.serial);
    let text = ocsp_query(&server, &renewed.leaf_pem);
    assert!(
        text.contains(&format!("{}: revoked", renewed.leaf_pem.display()))
            && text.contains("Reason: keyCompromise"),
        "{text}"
    );
    let shown = store_status(&env, &renewed.serial);
    assert_eq!(shown["status"], "revoked", "{shown:#}");
    // The first certificate has its own key (certbot makes a new one on renewal): still good.
    assert_eq!(ocsp_status(&server, &first.leaf_pem), "good");

    // Revoked with the certificate's own key (RFC 8555 §7.6: a JWS with that key as `jwk`, no
    // account), which certbot does when given the key.
    let mut cmd = certbot.command("revoke");
    cmd.arg("--cert-path")
        .arg(&first.leaf_pem)
        .arg("--key-path")
        .arg(certbot.config.join("archive/web/privkey1.pem"))
        .args(["--reason", "superseded", "--no-delete-after-revoke"]);
    run_bounded(cmd).success();
    server.await_revoked_everywhere(&first.serial);
    let text = ocsp_query(&server, &first.leaf_pem);
    assert!(
        text.contains(&format!("{}: revoked", first.leaf_pem.display()))
            && text.contains("Reason: superseded"),
        "{text}"
    );
    // Both revocations reach the served CRL, as the CLI's do, within seconds.
    let started = Instant::now();
    loop {
        let listed = crl_serials(&server);
        if [&first.serial, &renewed.serial]
            .iter()
            .all(|s| listed.contains(&s.to_ascii_lowercase()))
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the CRL does not list {} and {}: {listed:?}",
            first.serial,
            renewed.serial
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Revoking again is an ACME error, `alreadyRevoked`. certbot 2.1 with Python 3.11 reports
    // any ACME error raised in `revoke` as "AttributeError: can't set attribute" (its error
    // type is immutable and the traceback cannot be attached to it), so the problem document
    // is read from certbot's debug log when the message does not name it.
    let again = revoke();
    assert!(
        !again.status.success(),
        "a second revocation succeeded:\n{again}"
    );
    let said = again.text();
    let log = certbot.log_tail();
    assert!(
        said.contains("alreadyRevoked")
            || log.contains("acme.messages.Error: urn:ietf:params:acme:error:alreadyRevoked"),
        "{again}\ncertbot's log:\n{log}"
    );
    let shown = store_status(&env, &renewed.serial);
    assert_eq!(shown["revocation_reason"], "keyCompromise", "{shown:#}");

    server.assert_every_node_served();
    env.assert_audit_intact();
}

/// How lego answers challenges: its own HTTP server (http-01) or TLS server (tls-alpn-01), on
/// the port the CA validates.
#[derive(Clone, Copy, Debug)]
enum Solver {
    Http,
    TlsAlpn,
}

/// lego's arguments for one account on `server`.
struct Lego<'a> {
    server: &'a AcmeServer<'a>,
    path: PathBuf,
    kid: String,
    hmac: String,
}

impl Lego<'_> {
    /// `lego GLOBAL… -d NAME… SUBCOMMAND`. The EAB credential goes on every command: lego
    /// asks for it whenever the directory says `externalAccountRequired`, even when the
    /// account already exists and the credential is not used again.
    fn command(
        &self,
        solver: Solver,
        key_type: &str,
        domains: &[&str],
        subcommand: &[&str],
    ) -> Command {
        let mut cmd = client_command("lego", self.server.env);
        cmd.env("LEGO_CA_CERTIFICATES", self.server.root_pem())
            .arg("--server")
            .arg(self.server.acme_directory_url())
            .arg("--path")
            .arg(&self.path)
            .args(["--email", EMAIL, "--accept-tos", "--eab"])
            .args(["--kid", &self.kid, "--hmac", &self.hmac])
            .args(["--key-type", key_type])
            .args(["--cert.timeout", "30"]);
        // Pre-authorized names need no challenge, but lego wants one configured.
        match solver {
            Solver::Http => cmd
                .args(["--http", "--http.port"])
                .arg(format!("127.0.0.1:{}", self.server.http01_port())),
            Solver::TlsAlpn => cmd
                .args(["--tls", "--tls.port"])
                .arg(format!("127.0.0.1:{}", self.server.tls_alpn01_port())),
        };
        for domain in domains {
            cmd.args(["-d", domain]);
        }
        cmd.args(subcommand);
        cmd
    }

    /// `certificates/NAME.SUFFIX`.
    fn file(&self, first_domain: &str, suffix: &str) -> PathBuf {
        self.path
            .join("certificates")
            .join(format!("{first_domain}.{suffix}"))
    }
}

#[test]
fn lego_registers_with_eab_obtains_ec256_rsa2048_and_tls_alpn01_certificates_and_revokes_them() {
    if !client_present("lego", "the lego end-to-end test") {
        return;
    }
    let env = Env::with_ca();
    let server = AcmeServer::start(&env);
    let agent = agent_id("/agent/api");
    env.add_agent(
        "/agent/api",
        &[
            "--dns",
            "api.agent.test",
            "--dns",
            "www.api.agent.test",
            "--dns",
            "rsa.agent.test",
        ],
    );
    let (kid, hmac) = server.eab(&agent);
    let lego = Lego {
        server: &server,
        path: env.path("lego"),
        kid,
        hmac,
    };

    // Names the agent is pre-authorized for, by http-01 configuration only (nothing is
    // validated), in both key types; and a name proven by tls-alpn-01: the CA resolves it
    // through the fake DNS and connects to lego's TLS server.
    let proven = "tls.agent.test";
    server
        .dns
        .set_a(proven, vec![std::net::Ipv4Addr::LOCALHOST.into()]);
    let cases: [(Solver, &str, &[&str]); 3] = [
        (
            Solver::Http,
            "ec256",
            &["api.agent.test", "www.api.agent.test"],
        ),
        (Solver::Http, "rsa2048", &["rsa.agent.test"]),
        (Solver::TlsAlpn, "ec256", &[proven]),
    ];
    let mut obtained = Vec::new();
    for (solver, key_type, domains) in cases {
        let signed_at = now();
        run_bounded(lego.command(solver, key_type, domains, &["run"])).success();
        let leaf = check_obtained(
            &server,
            &format!("lego-{key_type}-{}", domains[0]),
            &lego.file(domains[0], "crt"),
            &lego.file(domains[0], "key"),
            &agent,
            domains,
            signed_at,
        );
        // lego keeps the issuer apart too.
        let issuer = std::fs::read_to_string(lego.file(domains[0], "issuer.crt")).unwrap();
        assert_eq!(pem_certs(&issuer), vec![env.ca_der("issuing.pem")]);
        obtained.push((solver, key_type, domains, leaf));
    }
    // Pre-authorized names: nothing was looked up, nothing connected. The proven one was.
    for name in ["api.agent.test", "www.api.agent.test", "rsa.agent.test"] {
        assert_eq!(server.dns.queries(name, "A"), 0, "{name}");
    }
    assert!(
        server.dns.queries(proven, "A") > 0,
        "{proven} never looked up"
    );

    // The credential was consumed by the account: it makes no second one.
    let reuse = Lego {
        server: &server,
        path: env.path("lego-again"),
        kid: lego.kid.clone(),
        hmac: lego.hmac.clone(),
    };
    let refused = run_bounded(reuse.command(Solver::Http, "ec256", &["api.agent.test"], &["run"]));
    assert!(
        !refused.status.success()
            && refused
                .text()
                .contains("urn:ietf:params:acme:error:unauthorized :: external account binding"),
        "{refused}"
    );
    // One account made every certificate.
    let certificates = env.json(&["cert", "list", "--agent", &agent]);
    assert_eq!(
        certificates["certificates"].as_array().unwrap().len(),
        cases.len()
    );

    // Revocation with the account key, one reason each (RFC 5280 codes as lego takes them).
    // `unspecified` is not stated in the OCSP answer.
    for ((solver, key_type, domains, leaf), (code, reason)) in obtained.iter().zip([
        ("4", Some("superseded")),
        ("1", Some("keyCompromise")),
        ("0", None),
    ]) {
        run_bounded(lego.command(
            *solver,
            key_type,
            domains,
            &["revoke", "--keep", "--reason", code],
        ))
        .success();
        server.await_revoked_everywhere(&leaf.serial);
        let text = ocsp_query(&server, &leaf.leaf_pem);
        assert!(
            text.contains(&format!("{}: revoked", leaf.leaf_pem.display())),
            "{key_type} {domains:?}: {text}"
        );
        let shown = store_status(&env, &leaf.serial);
        assert_eq!(shown["status"], "revoked", "{shown:#}");
        if let Some(reason) = reason {
            assert!(text.contains(&format!("Reason: {reason}")), "{text}");
            assert_eq!(shown["revocation_reason"], reason, "{shown:#}");
        }
    }

    server.assert_every_node_served();
    env.assert_audit_intact();
}
