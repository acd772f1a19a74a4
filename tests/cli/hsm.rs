//! KEY-2: the issuing CA's key in a PKCS#11 token, here a SoftHSM2 token in the test's own
//! directory. `init` generates the key inside the token (sensitive, never extractable) and
//! writes no `issuing.key`; certificates, CRLs and a running server's answers are signed by
//! the token; a wrong PIN, a missing token, a key the token would let out are refused clearly
//! and change nothing (OpenSC's `pkcs11-tool` reads the key's flags); and a token that goes away while the server runs gets 503 with
//! Retry-After (a SCEP client keeps its challenge for the retry), then is used again, without
//! a restart, once it is back.

use std::path::{Path, PathBuf};

use agentca_testkit::tools::{missing, on_path};

use super::harness::{AcmeServer, Server, serve_on_free_ports};
use super::support::{Env, Outcome, expect, now, pem_certs, serial_of};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "4321";
const SO_PIN: &str = "87654321";
const TOKEN: &str = "agentca-test";

/// A SoftHSM2 token directory of the test's own, and its configuration.
struct SoftHsm {
    conf: PathBuf,
    tokens: PathBuf,
}

impl SoftHsm {
    /// A fresh token labelled [`TOKEN`], configured for every command of `env`.
    fn new(env: &Env) -> Option<Self> {
        let Some(util) = on_path("softhsm2-util") else {
            missing("softhsm2-util", "the PKCS#11 issuing key tests (KEY-2)");
            return None;
        };
        if !Path::new(MODULE).exists() {
            missing(MODULE, "the PKCS#11 issuing key tests (KEY-2)");
            return None;
        }
        let tokens = env.path("softhsm-tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = env.write(
            "softhsm2.conf",
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        );
        let made = std::process::Command::new(util)
            .args(["--init-token", "--free", "--label", TOKEN])
            .args(["--pin", PIN, "--so-pin", SO_PIN])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .unwrap();
        assert!(made.status.success(), "{made:?}");
        env.set_var("SOFTHSM2_CONF", conf.to_str().unwrap());
        env.set_var("AGENTCA_PKCS11_PIN", PIN);
        Some(Self { conf, tokens })
    }

    /// `init` with the issuing key generated in the token.
    fn init(&self, env: &Env, extra: &[&str]) -> Outcome {
        let mut args = vec!["--pkcs11-module", MODULE, "--pkcs11-token", TOKEN];
        args.extend_from_slice(extra);
        env.init(&args)
    }

    /// The token's files moved away (the token unplugged, the HSM unreachable), and back.
    fn unplug(&self) {
        std::fs::rename(&self.tokens, self.tokens.with_extension("away")).unwrap();
    }

    fn plug_back(&self) {
        std::fs::rename(self.tokens.with_extension("away"), &self.tokens).unwrap();
    }

    /// What OpenSC's `pkcs11-tool` lists of the token's private keys (their usage and
    /// access flags).
    fn private_keys(&self) -> String {
        let Some(tool) = on_path("pkcs11-tool") else {
            missing("pkcs11-tool", "reading the token key's flags (KEY-2)");
            return String::new();
        };
        let out = std::process::Command::new(tool)
            .args([
                "--module",
                MODULE,
                "--token-label",
                TOKEN,
                "--login",
                "--pin",
                PIN,
            ])
            .args(["--list-objects", "--type", "privkey"])
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[test]
fn the_issuing_key_lives_in_the_token_and_signs_everything() {
    let env = Env::empty();
    let Some(hsm) = SoftHsm::new(&env) else {
        return;
    };
    let out = hsm.init(&env, &[]).success();
    assert!(
        out.stdout.contains("issuing CA key:   in PKCS#11 token"),
        "{out}"
    );
    assert!(
        !env.data_file("issuing.key").exists(),
        "a key file was written"
    );
    let config = std::fs::read_to_string(env.data_file("config.toml")).unwrap();
    assert!(
        config.contains("[issuing_key]") && config.contains(TOKEN),
        "{config}"
    );
    assert!(!config.contains(PIN), "the PIN is in config.toml");

    let alice = env.add_agent("/agent/alice", &[]);
    let csr = env.csr("alice");
    let signed_at = now();
    let doc = env.issue(&alice, &csr, &[]);
    let leaf = pem_certs(doc["certificate_pem"].as_str().unwrap()).remove(0);
    env.check_leaf(&leaf, &expect(&alice, &csr, signed_at));
    env.json(&["revoke", &serial_of(&doc), "--reason", "keyCompromise"]);
    let crl = env.json(&["crl"]);
    assert_eq!(crl["entries"], 1, "{crl}");

    // A running server signs with the token too: its HTTPS certificate at start, an issuance
    // through the admin socket, and OCSP says good for it at once.
    let server = Server::start(serve_on_free_ports(&env));
    let live = env.issue(&alice, &env.csr("live"), &[]);
    let leaf_pem = env.write("live.pem", live["certificate_pem"].as_str().unwrap());
    let answer = super::serve::OcspFiles::of(&env).query(&server, &leaf_pem, &[]);
    assert!(answer.contains(": good"), "{answer}");
    let (status, log) = server.terminate();
    assert!(status.success(), "{status}\n{log}");
    assert!(!log.contains(PIN), "the PIN was logged:\n{log}");

    // An agent enrolls over ACME with a certificate the token signed.
    let server = AcmeServer::start(&env);
    std::fs::create_dir_all(env.path("agent")).unwrap();
    let (key, cert) = (env.path("agent/key.pem"), env.path("agent/cert.pem"));
    server.enroll(&alice, &key, &cert);
    agentca_testkit::openssl_verify(
        &cert,
        &env.data_file("root.pem"),
        &env.data_file("issuing.pem"),
    );
    drop(server);

    // The key cannot leave the token, and signs only.
    let listed = hsm.private_keys();
    if !listed.is_empty() {
        assert_eq!(
            listed.matches("Private Key Object; EC").count(),
            1,
            "{listed}"
        );
        assert!(
            listed.contains("Access:     sensitive, always sensitive, never extractable"),
            "{listed}"
        );
        assert!(listed.contains("Usage:      sign\n"), "{listed}");
    }
}

#[test]
fn a_wrong_pin_a_missing_token_and_unsupported_keys_are_refused_clearly() {
    let env = Env::empty();
    let Some(hsm) = SoftHsm::new(&env) else {
        return;
    };
    // At init: no token of that label, no module there, an RSA key type.
    let mut cmd = env.command();
    cmd.args(["init", "--trust-domain", "example.org"]).args([
        "--pkcs11-module",
        MODULE,
        "--pkcs11-token",
        "no-such-token",
    ]);
    let out = Outcome::of(&mut cmd);
    assert!(out.error_line().contains("no token labelled"), "{out}");
    assert!(!env.data_file("config.toml").exists());
    let mut cmd = env.command();
    cmd.args(["init", "--trust-domain", "example.org"]).args([
        "--pkcs11-module",
        "/nonexistent/libpkcs11.so",
        "--pkcs11-token",
        TOKEN,
    ]);
    let out = Outcome::of(&mut cmd);
    assert!(
        out.error_line().contains("cannot load the PKCS#11 module"),
        "{out}"
    );
    let out = hsm.init(&env, &["--key-type", "rsa-2048"]);
    assert!(
        out.error_line().contains("ecdsa-p256 or ecdsa-p384"),
        "{out}"
    );
    assert!(!env.data_file("config.toml").exists());

    hsm.init(&env, &["--key-type", "ecdsa-p384"]).success();
    let alice = env.add_agent("/agent/alice", &[]);
    let csr = env.csr("alice");
    let serials = env.serial_count();
    let refused = |pin: Option<&str>, expected: &str| {
        let mut cmd = env.command();
        match pin {
            Some(pin) => cmd.env("AGENTCA_PKCS11_PIN", pin),
            None => cmd.env_remove("AGENTCA_PKCS11_PIN"),
        };
        cmd.args([
            "--output",
            "json",
            "issue",
            "--agent",
            &alice,
            "--csr",
            csr.arg(),
        ]);
        let (kind, message) = Outcome::of(&mut cmd).json_error();
        assert_eq!(kind, "pkcs11", "{message}");
        assert!(message.contains(expected), "{message}");
        assert!(!message.contains(PIN));
    };
    refused(Some("0000"), "PIN_INCORRECT");
    refused(None, "AGENTCA_PKCS11_PIN");
    assert_eq!(
        env.serial_count(),
        serials,
        "a refused issuance reserved a serial"
    );
    assert!(env.cert_list(&[]).is_empty());
    // With the right PIN, a P-384 token key issues.
    env.issue(&alice, &csr, &[]);
}

#[test]
fn a_token_that_goes_away_gets_503_and_is_used_again_without_a_restart() {
    let env = Env::empty();
    let Some(hsm) = SoftHsm::new(&env) else {
        return;
    };
    hsm.init(&env, &[]).success();
    let alice = env.add_agent("/agent/alice", &[]);
    let server = Server::start(serve_on_free_ports(&env));
    env.issue(&alice, &env.csr("before"), &[]);
    let challenge = env.json(&["token", "create", "--agent", &alice, "--for", "scep"]);
    let request =
        super::scep_clients::ready_pkcs_req(&env, challenge["challenge"].as_str().unwrap());
    let listed = env.cert_list(&[]).len();

    hsm.unplug();
    let mut cmd = env.command();
    cmd.args(["--output", "json", "issue", "--agent", &alice, "--csr"])
        .arg(env.csr("away").arg());
    let (kind, message) = Outcome::of(&mut cmd).json_error();
    assert_eq!(kind, "pkcs11", "{message}");
    let answer = super::scep_clients::post_pki_message(server.http, &request);
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert!(answer.header("retry-after").is_some());
    assert_eq!(
        env.cert_list(&[]).len(),
        listed,
        "something was issued while away"
    );

    hsm.plug_back();
    env.issue(&alice, &env.csr("back"), &[]);
    // The SCEP client's retry of the same request enrolls: its challenge was given back.
    let answer = super::scep_clients::post_pki_message(server.http, &request);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(env.cert_list(&[]).len(), listed + 2);
    let (status, log) = server.terminate();
    assert!(status.success(), "{status}\n{log}");
}
