//! SCEP (RFC 8894) against the real `agentca serve`, with the stock client: micromdm's
//! `scepclient` enrolls with a one-time challenge, renews with the certificate it got, and
//! cannot use the challenge twice. `openssl cms` and `openssl pkcs7` read every kind of reply;
//! every certificate passes the invariant helper, pkilint, rustls-webpki and OpenSSL, and OCSP
//! says `good`. `agentca enroll --scep` and `agentca renew` go the same way.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use agentca_scep::client::{
    BuiltRequest, CertRepOutcome, RequestBuilder, SignerKey, csr_with_challenge,
    transient_certificate,
};
use agentca_scep::{FailInfo, ScepOptions};
use sha2::{Digest, Sha256};

use super::acme_clients::{ocsp_status_at, spki_of_key};
use super::harness::{HttpResponse, Server, http, serve_on_free_ports};
use super::support::{AuditClaims, BASE_URL, Env, now, pem_certs, serial_hex};

/// A running `serve` with SCEP, and what a client needs to talk to it.
pub(crate) struct ScepServer<'e> {
    pub(crate) server: Server,
    pub(crate) env: &'e Env,
    /// The RA certificate (DER): requests are encrypted to it, replies signed by it.
    pub(crate) ra: Vec<u8>,
    /// The `scep.refused` audit entries that checked FAILUREs have claimed.
    refusals: AuditClaims,
}

impl<'e> ScepServer<'e> {
    /// `serve` with `--scep-legacy-crypto` (scepclient encrypts with DES).
    pub(crate) fn start(env: &'e Env) -> Self {
        Self::start_with(env, &["--scep-legacy-crypto"])
    }

    pub(crate) fn start_with(env: &'e Env, extra: &[&str]) -> Self {
        let mut cmd = serve_on_free_ports(env);
        cmd.args(extra);
        Self::of(Server::start(cmd), env)
    }

    /// A server already started on `env`'s data directory.
    pub(crate) fn of(server: Server, env: &'e Env) -> Self {
        Self {
            server,
            env,
            ra: env.ca_der("scep-ra.pem"),
            refusals: AuditClaims::default(),
        }
    }

    pub(crate) fn url(&self) -> String {
        self.server.url("/scep")
    }

    /// A one-time challenge for `agent`.
    pub(crate) fn challenge(&self, agent: &str) -> String {
        let created = self
            .env
            .json(&["token", "create", "--agent", agent, "--for", "scep"]);
        created["challenge"].as_str().unwrap().to_owned()
    }

    /// POSTs a PKIOperation.
    pub(crate) fn post(&self, body: &[u8]) -> HttpResponse {
        post_pki_message(self.server.http, body)
    }

    /// Sends `request` by POST and verifies the CertRep against the RA certificate.
    pub(crate) fn exchange(&self, request: &BuiltRequest, key: &SignerKey) -> CertRepOutcome {
        let response = self.post(request.der());
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(
            response.header("content-type"),
            Some("application/x-pki-message")
        );
        let outcome = request
            .parse_reply(&response.body, &[&self.ra], key, &ScepOptions::LEGACY)
            .unwrap();
        if let CertRepOutcome::Failure(info) = &outcome {
            // Every rejection writes an audit event, naming the transaction and the failInfo.
            let transaction = request.transaction_id().as_str();
            self.env.claim_audit_entry(
                &self.refusals,
                "scep.refused",
                &format!("{} of transaction {transaction}", info.name()),
                |e| {
                    e["fields"]["transaction"] == transaction
                        && e["fields"]["fail_info"] == info.name()
                        && e["fields"]["reason"].is_string()
                        && e["fields"]["client"] == "127.0.0.1"
                },
            );
        }
        outcome
    }

    /// How many times the server (every node) has logged `reason`.
    fn logged(&self, reason: &str) -> usize {
        self.server.stderr().matches(reason).count()
    }

    /// Checks that the CA signed nothing since it counted `signatures`, and that the server
    /// logged `reason` once more than the `before` times it had (its nodes' logs are read one
    /// after the other, so a position in them says nothing of time).
    fn assert_refused_unsigned(&self, signatures: f64, before: usize, reason: &str) {
        assert_eq!(self.ca_signatures(), signatures);
        assert_eq!(self.logged(reason), before + 1, "{}", self.server.stderr());
    }

    /// Signatures made by the issuing CA key so far.
    pub(crate) fn ca_signatures(&self) -> f64 {
        self.server.metric("agentca_issuing_ca_signatures_total")
    }
}

/// What the server logs when a spent challenge is presented.
const USED: &str = "the challenge was already used";

/// An RSA key of the shared pool (0 or 1), for the Rust client.
pub(crate) fn rsa_key(index: usize) -> SignerKey {
    SignerKey::from_pkcs8(agentca_testkit::acme::AccountKey::rsa(index).pkcs8_der()).unwrap()
}

/// A PKCSReq (DER) with `challenge` for the pool's first RSA key, enveloped to `env`'s RA:
/// made ready while the store works, to be sent when it does not.
pub(crate) fn ready_pkcs_req(env: &Env, challenge: &str) -> Vec<u8> {
    let key = rsa_key(0);
    let (parts, transient) = pkcs_req_to(env.ca_der("scep-ra.pem"), &key, Some(challenge));
    parts
        .builder(&key, &transient)
        .build()
        .unwrap()
        .der()
        .to_vec()
}

/// POSTs a pkiMessage to `/scep` at `addr`.
pub(crate) fn post_pki_message(addr: std::net::SocketAddr, der: &[u8]) -> HttpResponse {
    http(
        addr,
        "POST",
        "/scep?operation=PKIOperation",
        &[("content-type", "application/x-pki-message")],
        der,
    )
}

/// A PKCSReq for `key` with `challenge`, signed under a fresh transient certificate; returns
/// the request and the transient certificate.
pub(crate) fn pkcs_req(
    server: &ScepServer<'_>,
    key: &SignerKey,
    challenge: Option<&str>,
) -> (RequestBuilderParts, Vec<u8>) {
    pkcs_req_to(server.ra.clone(), key, challenge)
}

/// [`pkcs_req`] enveloped to the RA certificate `ra`.
pub(crate) fn pkcs_req_to(
    ra: Vec<u8>,
    key: &SignerKey,
    challenge: Option<&str>,
) -> (RequestBuilderParts, Vec<u8>) {
    let csr = csr_with_challenge(key, &rcgen::CertificateParams::default(), challenge).unwrap();
    let transient = transient_certificate(key, "scep test").unwrap();
    (RequestBuilderParts { csr, ra }, transient)
}

/// The parts a [`RequestBuilder`] borrows.
pub(crate) struct RequestBuilderParts {
    pub(crate) csr: Vec<u8>,
    pub(crate) ra: Vec<u8>,
}

impl RequestBuilderParts {
    pub(crate) fn builder<'a>(
        &'a self,
        key: &'a SignerKey,
        signer: &'a [u8],
    ) -> RequestBuilder<'a> {
        RequestBuilder::pkcs_req(&self.csr, key, signer, &self.ra)
    }
}

/// The issued certificate of a SUCCESS.
pub(crate) fn issued(outcome: CertRepOutcome) -> Vec<u8> {
    match outcome {
        CertRepOutcome::Success { certificates } => certificates[0].clone(),
        other => panic!("expected SUCCESS, got {other:?}"),
    }
}

/// The failInfo of a FAILURE.
pub(crate) fn fail_info(outcome: CertRepOutcome) -> FailInfo {
    match outcome {
        CertRepOutcome::Failure(info) => info,
        other => panic!("expected FAILURE, got {other:?}"),
    }
}

/// micromdm's scepclient in `dir`, with `key.pem` and `cert.pem` there.
struct Scepclient<'a> {
    server: &'a ScepServer<'a>,
    dir: PathBuf,
}

impl Scepclient<'_> {
    fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    /// Runs it; `None` when it is not installed (after the notice).
    fn run(&self, challenge: Option<&str>) -> Option<Output> {
        // scepclient accepts the CA certificate by fingerprint only; the RA certificate is
        // the one that signs CertReps (the CA certificates are ECDSA).
        let fingerprint = hex::encode(Sha256::digest(&self.server.ra));
        let mut args: Vec<std::ffi::OsString> = vec![
            "-server-url".into(),
            self.server.url().into(),
            "-private-key".into(),
            self.key().into(),
            "-certificate".into(),
            self.cert().into(),
            "-ca-fingerprint".into(),
            fingerprint.into(),
            "-cn".into(),
            "whatever the client asks".into(),
        ];
        if let Some(c) = challenge {
            args.push("-challenge".into());
            args.push(c.into());
        }
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        agentca_testkit::tools::run("scepclient", &args, "SCEP interoperability tests")
    }
}

pub(crate) fn generate_pkcs1_rsa(path: &Path) {
    // scepclient reads only PKCS#1 ("RSA PRIVATE KEY") keys.
    let output = Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(path)
        .arg("2048")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        agentca_testkit::tools::transcript(&output)
    );
}

fn check_issued(env: &Env, der: &[u8], agent: &str, key: &Path, signed_at: time::OffsetDateTime) {
    let expect = agentca_testkit::Expectation::new(agent, signed_at)
        .csr_public_key_spki(spki_of_key(key))
        .base_url(BASE_URL);
    env.check_leaf(der, &expect);
}

#[test]
fn scepclient_enrolls_renews_and_cannot_reuse_its_challenge() {
    let env = Env::with_ca();
    let agent = env.add_agent("/agent/scep", &[]);
    let server = ScepServer::start(&env);
    let client = Scepclient {
        server: &server,
        dir: env.path("scepclient"),
    };
    std::fs::create_dir_all(&client.dir).unwrap();
    generate_pkcs1_rsa(&client.key());
    let challenge = server.challenge(&agent);

    let signed_at = now();
    let Some(enrolled) = client.run(Some(&challenge)) else {
        return;
    };
    let transcript = agentca_testkit::tools::transcript(&enrolled);
    assert!(enrolled.status.success(), "{transcript}");
    let first = pem_certs(&std::fs::read_to_string(client.cert()).unwrap())[0].clone();
    // The agent ID is the one URI SAN, whatever CN the client asked for.
    check_issued(&env, &first, &agent, &client.key(), signed_at);
    assert_eq!(ocsp_status_at(&env, &server.server, &client.cert()), "good");
    let shown = env.json(&["cert", "show", &serial_hex(&first)]);
    assert_eq!(shown["method"], "scep", "{shown}");

    // Renewal: the same key, signed by the certificate it holds, no challenge.
    let signed_at = now();
    let renewed = client.run(None).unwrap();
    assert!(
        renewed.status.success(),
        "{}",
        agentca_testkit::tools::transcript(&renewed)
    );
    let second = pem_certs(&std::fs::read_to_string(client.cert()).unwrap())[0].clone();
    assert_ne!(
        serial_hex(&first),
        serial_hex(&second),
        "a renewal is a new certificate"
    );
    check_issued(&env, &second, &agent, &client.key(), signed_at);

    // The challenge is spent: enrolling again with it (a new transient certificate, as after
    // losing the certificate) is refused, and the CA key signs nothing.
    std::fs::remove_file(client.cert()).unwrap();
    let signatures = server.ca_signatures();
    let logged = server.logged(USED);
    let again = client.run(Some(&challenge)).unwrap();
    assert!(
        !again.status.success() || !client.cert().exists(),
        "a used challenge enrolled again: {}",
        agentca_testkit::tools::transcript(&again)
    );
    server.assert_refused_unsigned(signatures, logged, USED);
    server.server.assert_every_node_served();
}

/// certmonger (Debian package `certmonger`) in a daemon of its own on a private D-Bus session
/// bus, its state in `dir`, driven with `getcert`.
struct Certmonger {
    dir: PathBuf,
}

impl Certmonger {
    const PURPOSE: &'static str = "the certmonger SCEP interoperability test (SCEP-8)";

    fn new(dir: PathBuf) -> Self {
        for sub in ["requests", "cas", "local", "config", "tmp"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        // Renewal only when asked: with its default thresholds (28 days and less before
        // expiry) certmonger would renew a 24-hour certificate whenever it starts.
        std::fs::write(
            dir.join("config/certmonger.conf"),
            "[defaults]\nenroll_ttls = 3600\nnotify_ttls = 3600\n",
        )
        .unwrap();
        Self { dir }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Runs the `getcert` commands of `script` while a certmonger serves the session bus, and
    /// what `getcert list` says of request `id` afterwards; `None` when certmonger is missing.
    fn session(&self, script: &str, id: &str) -> Option<String> {
        let daemon = agentca_testkit::tools::on_path("certmonger")
            .or_else(|| Some(PathBuf::from("/usr/sbin/certmonger")).filter(|p| p.exists()));
        let (Some(daemon), Some(_), Some(_)) = (
            daemon,
            agentca_testkit::tools::on_path("getcert"),
            agentca_testkit::tools::on_path("dbus-run-session"),
        ) else {
            agentca_testkit::tools::missing("certmonger", Self::PURPOSE);
            return None;
        };
        let file = self.file("session.sh");
        std::fs::write(&file, format!("{script}\ngetcert list -s -i {id}\n")).unwrap();
        // The gate command (-c) inherits no environment of ours, so everything it needs is in
        // the script. certmonger reads its directories from its environment, and without
        // CERTMONGER_SYSTEM_LOCK_FILE it locks the system instance's file even on a session
        // bus (which a non-root user may not open, and a running system certmonger holds).
        let output = Command::new("timeout")
            .arg("120")
            .arg("dbus-run-session")
            .arg("--")
            .arg(daemon)
            .args(["-s", "-n", "-d", "1", "-c"])
            .arg(format!("sh {}", file.display()))
            .env("CERTMONGER_REQUESTS_DIR", self.file("requests"))
            .env("CERTMONGER_CAS_DIR", self.file("cas"))
            .env("CERTMONGER_LOCAL_CA_DIR", self.file("local"))
            .env("CERTMONGER_CONFIG_DIR", self.file("config"))
            .env("CERTMONGER_SYSTEM_LOCK_FILE", self.file("lock"))
            .env("CERTMONGER_TMPDIR", self.file("tmp"))
            .output()
            .unwrap();
        let transcript = agentca_testkit::tools::transcript(&output);
        assert!(output.status.success(), "{transcript}");
        Some(transcript)
    }
}

/// SCEP-8 with certmonger: it reads GetCACaps and GetCACert, enrolls with a one-time challenge
/// (AES-256 and SHA-256, as advertised, without `--scep-legacy-crypto`), renews with a PKCSReq
/// signed by the certificate it holds, and a request with the spent challenge ends in
/// CA_REJECTED (it can read the FAILURE) with no signature by the CA.
#[test]
fn certmonger_enrolls_renews_and_reads_a_refusal() {
    let env = Env::with_ca();
    let agent = env.add_agent("/agent/certmonger", &[]);
    let server = ScepServer::start_with(&env, &[]);
    let certmonger = Certmonger::new(env.path("certmonger"));
    let (key, cert) = (certmonger.file("key.pem"), certmonger.file("cert.pem"));
    let challenge = certmonger.file("challenge");
    std::fs::write(&challenge, server.challenge(&agent)).unwrap();

    let signed_at = now();
    let Some(listed) = certmonger.session(
        &format!(
            "getcert add-scep-ca -s -c agentca -u {url}\n\
             getcert request -s -c agentca -I agent -k {key} -f {cert} -l {challenge} \
             -N CN=whatever -w",
            url = server.url(),
            key = key.display(),
            cert = cert.display(),
            challenge = challenge.display(),
        ),
        "agent",
    ) else {
        return;
    };
    assert!(listed.contains("status: MONITORING"), "{listed}");
    let first = pem_certs(&std::fs::read_to_string(&cert).unwrap())[0].clone();
    check_issued(&env, &first, &agent, &key, signed_at);
    assert_eq!(ocsp_status_at(&env, &server.server, &cert), "good");
    let shown = env.json(&["cert", "show", &serial_hex(&first)]);
    assert_eq!(shown["method"], "scep", "{shown}");

    // Renewal, as certmonger does it before expiry: no new challenge.
    let signed_at = now();
    let listed = certmonger
        .session("getcert resubmit -s -i agent -w", "agent")
        .unwrap();
    assert!(listed.contains("status: MONITORING"), "{listed}");
    let second = pem_certs(&std::fs::read_to_string(&cert).unwrap())[0].clone();
    assert_ne!(serial_hex(&first), serial_hex(&second), "{listed}");
    check_issued(&env, &second, &agent, &key, signed_at);
    certmonger
        .session("getcert stop-tracking -s -i agent", "agent")
        .unwrap();

    // A new key with the spent challenge: refused, and certmonger knows it was refused.
    let signatures = server.ca_signatures();
    let logged = server.logged(USED);
    let again = certmonger.file("again.pem");
    let listed = certmonger
        .session(
            &format!(
                "getcert request -s -c agentca -I again -k {key} -f {cert} -l {challenge} -w",
                key = certmonger.file("again.key").display(),
                cert = again.display(),
                challenge = challenge.display(),
            ),
            "again",
        )
        .unwrap();
    assert!(listed.contains("status: CA_REJECTED"), "{listed}");
    assert!(!again.exists(), "{listed}");
    server.assert_refused_unsigned(signatures, logged, USED);
    server.server.assert_every_node_served();
}

/// Every kind of reply parses with OpenSSL: GetCACert (`openssl pkcs7`), a SUCCESS CertRep
/// (`openssl cms -verify`, then `-decrypt` with the requester's key, then `openssl pkcs7`),
/// and a FAILURE CertRep (`openssl cms -cmsout`).
#[test]
fn openssl_reads_get_ca_cert_and_cert_reps() {
    let env = Env::with_ca();
    let agent = env.add_agent("/agent/openssl-scep", &[]);
    let server = ScepServer::start(&env);

    // Exactly what is implemented (this server has the legacy option), nothing more.
    let caps = server.server.get("/scep?operation=GetCACaps");
    assert_eq!(caps.status, 200);
    let mut advertised: Vec<String> = caps.text().lines().map(str::to_owned).collect();
    advertised.sort();
    let mut implemented = [
        "AES",
        "DES3",
        "POSTPKIOperation",
        "Renewal",
        "SCEPStandard",
        "SHA-1",
        "SHA-256",
        "SHA-512",
    ];
    implemented.sort_unstable();
    assert_eq!(advertised, implemented, "{}", caps.text());

    let ca_cert = server.server.get("/scep?operation=GetCACert");
    assert_eq!(ca_cert.status, 200);
    assert_eq!(
        ca_cert.header("content-type"),
        Some("application/x-x509-ca-ra-cert")
    );
    let p7 = env.write("getcacert.p7", &ca_cert.body);
    let printed = openssl(
        &["pkcs7", "-inform", "DER", "-print_certs", "-noout", "-in"],
        &p7,
    );
    assert_eq!(
        printed.matches("subject=").count(),
        3,
        "RA, issuing CA, root: {printed}"
    );

    let key = rsa_key(0);
    let challenge = server.challenge(&agent);
    let (parts, transient) = pkcs_req(&server, &key, Some(&challenge));
    let request = parts.builder(&key, &transient).build().unwrap();
    let response = server.post(request.der());
    assert_eq!(response.status, 200);
    let reply = env.write("success.der", &response.body);
    let enveloped = env.path("success-envelope.der");
    openssl_status(
        &[
            "cms",
            "-verify",
            "-inform",
            "DER",
            "-noverify",
            "-binary",
            "-in",
        ],
        &reply,
        &["-out".as_ref(), enveloped.as_os_str()],
    );
    let key_pem = env.write(
        "requester.key",
        agentca_testkit::tools::pem(
            "PRIVATE KEY",
            &[agentca_testkit::acme::AccountKey::rsa(0).pkcs8_der()],
        ),
    );
    let transient_pem = env.write(
        "transient.pem",
        agentca_testkit::tools::pem("CERTIFICATE", &[&transient]),
    );
    let decrypted = env.path("success-content.der");
    openssl_status(
        &["cms", "-decrypt", "-inform", "DER", "-binary", "-in"],
        &enveloped,
        &[
            "-recip".as_ref(),
            transient_pem.as_os_str(),
            "-inkey".as_ref(),
            key_pem.as_os_str(),
            "-out".as_ref(),
            decrypted.as_os_str(),
        ],
    );
    let printed = openssl(
        &["pkcs7", "-inform", "DER", "-print_certs", "-noout", "-in"],
        &decrypted,
    );
    assert_eq!(
        printed.matches("subject=").count(),
        2,
        "leaf and issuing CA: {printed}"
    );
    // The Rust client agrees, and the certificate is a good one.
    let leaf = issued(
        request
            .parse_reply(&response.body, &[&server.ra], &key, &ScepOptions::STRICT)
            .unwrap(),
    );
    let spki_key = env.write("leaf-key.pem", std::fs::read(&key_pem).unwrap());
    check_issued(
        &env,
        &leaf,
        &agent,
        &spki_key,
        now() - time::Duration::minutes(1),
    );

    // A FAILURE (the challenge is used now) parses too.
    let (parts, transient) = pkcs_req(&server, &key, Some(&challenge));
    let request = parts.builder(&key, &transient).build().unwrap();
    let response = server.post(request.der());
    assert_eq!(response.status, 200);
    let failure = env.write("failure.der", &response.body);
    let printed = openssl(
        &["cms", "-cmsout", "-print", "-inform", "DER", "-in"],
        &failure,
    );
    assert!(printed.contains("signerInfos"), "{printed}");
    assert_eq!(
        fail_info(
            request
                .parse_reply(&response.body, &[&server.ra], &key, &ScepOptions::STRICT)
                .unwrap()
        ),
        FailInfo::BadRequest
    );
}

/// `agentca enroll --scep`, then `agentca renew` over SCEP (a RenewalReq signed by the
/// current certificate).
#[test]
fn agentca_enrolls_and_renews_over_scep() {
    let env = Env::with_ca();
    let agent = env.add_agent("/agent/scep-cli", &[]);
    let server = ScepServer::start(&env);
    let challenge = server.challenge(&agent);
    std::fs::create_dir_all(env.path("agent")).unwrap();
    let key = env.path("agent/key.pem");
    let cert = env.path("agent/cert.pem");
    let (key_arg, cert_arg) = (key.display().to_string(), cert.display().to_string());
    let root = env.data_file("root.pem").display().to_string();
    let signed_at = now();
    let enrolled = env
        .run(&[
            "enroll",
            "--agent",
            &agent,
            "--key",
            &key_arg,
            "--cert",
            &cert_arg,
            "--scep",
            &server.url(),
            "--challenge",
            &challenge,
            "--ca",
            &root,
        ])
        .success();
    assert!(enrolled.stdout.contains(&agent), "{enrolled}");
    let first = pem_certs(&std::fs::read_to_string(&cert).unwrap())[0].clone();
    check_issued(&env, &first, &agent, &key, signed_at);

    let signed_at = now();
    env.run(&["renew", "--key", &key_arg, "--cert", &cert_arg])
        .success();
    let second = pem_certs(&std::fs::read_to_string(&cert).unwrap())[0].clone();
    assert_ne!(serial_hex(&first), serial_hex(&second));
    check_issued(&env, &second, &agent, &key, signed_at);
    assert_eq!(ocsp_status_at(&env, &server.server, &cert), "good");
}

fn openssl(args: &[&str], input: &Path) -> String {
    let output = Command::new("openssl")
        .args(args)
        .arg(input)
        .output()
        .unwrap();
    let text = agentca_testkit::tools::transcript(&output);
    assert!(output.status.success(), "openssl {args:?}: {text}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn openssl_status(args: &[&str], input: &Path, more: &[&std::ffi::OsStr]) {
    let output = Command::new("openssl")
        .args(args)
        .arg(input)
        .args(more)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        agentca_testkit::tools::transcript(&output)
    );
}
