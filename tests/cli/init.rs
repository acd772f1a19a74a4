//! `agentca init`: the files it writes, how the keys are protected, and the CA it makes.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use agentca_testkit::{
    assert_ca_certificate, assert_ocsp_responder_certificate, assert_ra_certificate, pkilint,
};
use sha2::{Digest, Sha256};
use x509_parser::prelude::FromDer;

use super::support::{
    Env, KeyAlg, Outcome, PASSPHRASE, PKILINT_ALLOWED_ANY, TRUST_DOMAIN, agent_id, expect, now,
    pem_certs,
};

const KEYS: [&str; 4] = ["root.key", "issuing.key", "ocsp.key", "scep-ra.key"];
const CERTS: [&str; 5] = [
    "root.pem",
    "ca-chain.pem",
    "issuing.pem",
    "ocsp.pem",
    "scep-ra.pem",
];

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Whether `openssl pkey` opens the key with `passphrase` in `AGENTCA_PASSPHRASE`.
fn openssl_opens(key: &Path, passphrase: Option<&str>) -> bool {
    let mut cmd = Command::new("openssl");
    cmd.arg("pkey").arg("-in").arg(key).arg("-noout");
    match passphrase {
        Some(p) => {
            cmd.args(["-passin", "env:AGENTCA_PASSPHRASE"])
                .env("AGENTCA_PASSPHRASE", p);
        }
        // An empty passphrase, so OpenSSL never prompts.
        None => {
            cmd.args(["-passin", "pass:"]);
        }
    }
    cmd.output().unwrap().status.success()
}

/// Every file under `dir` with its bytes and mode.
fn snapshot(dir: &Path) -> BTreeMap<String, (Vec<u8>, u32)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.strip_prefix(dir).unwrap().display().to_string();
                out.insert(name, (std::fs::read(&path).unwrap(), mode(&path)));
            }
        }
    }
    out
}

/// How much pkilint a test runs: each run costs most of a second.
#[derive(Clone, Copy, PartialEq)]
enum Lint {
    /// Every certificate, and the issuer–subject pairs.
    Full,
    /// The root, issuing CA and responder certificates, whose keys follow `--key-type` (the
    /// RA is always RSA-2048, linted in the `Full` test).
    KeyTyped,
    /// The testkit's profile checks only.
    None,
}

/// The CA, responder and RA certificates pass the testkit's profile checks and pkilint.
fn check_ca_certificates(env: &Env, lint: Lint) {
    let root = env.ca_der("root.pem");
    let issuing = env.ca_der("issuing.pem");
    let ocsp = env.ca_der("ocsp.pem");
    let ra = env.ca_der("scep-ra.pem");
    assert_ca_certificate(&root, &root);
    assert_ca_certificate(&issuing, &root);
    assert_ocsp_responder_certificate(&ocsp, &issuing);
    assert_ra_certificate(&ra, &issuing);
    let linted: &[&Vec<u8>] = match lint {
        Lint::Full => &[&root, &issuing, &ocsp, &ra],
        Lint::KeyTyped => &[&root, &issuing, &ocsp],
        Lint::None => &[],
    };
    for der in linted {
        pkilint::pkilint_cert_allowing(der, PKILINT_ALLOWED_ANY);
    }
    if lint == Lint::Full {
        pkilint::pkilint_issuer_subject(&root, &issuing);
        pkilint::pkilint_issuer_subject(&issuing, &ocsp);
        pkilint::pkilint_issuer_subject(&issuing, &ra);
    }

    // ca-chain.pem is the issuing CA then the root, what a client presents or trusts.
    let chain = pem_certs(&std::fs::read_to_string(env.data_file("ca-chain.pem")).unwrap());
    assert_eq!(chain, vec![issuing, root]);
}

#[test]
fn init_writes_the_hierarchy_with_encrypted_private_keys() {
    let env = Env::empty();
    let out = env.init(&[]).success();

    for name in CERTS.iter().chain(["config.toml", "audit.log"].iter()) {
        assert!(env.data_file(name).is_file(), "{name} missing:\n{out}");
    }
    assert_eq!(mode(&env.data()), 0o700, "the data directory is private");
    for name in KEYS {
        let path = env.data_file(name);
        assert_eq!(mode(&path), 0o600, "{name}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"),
            "{name} is not encrypted PKCS#8:\n{text}"
        );
        assert!(!text.contains("BEGIN PRIVATE KEY"), "{name}");
        assert!(
            openssl_opens(&path, Some(PASSPHRASE)),
            "openssl cannot open {name}"
        );
        assert!(
            !openssl_opens(&path, Some("not the passphrase")),
            "openssl opened {name} with a wrong passphrase"
        );
        assert!(
            !openssl_opens(&path, None),
            "{name} opens without a passphrase"
        );
    }
    check_ca_certificates(&env, Lint::Full);

    let entries = env.audit_entries();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["event"], "ca.initialized");
    assert_eq!(entries[0]["fields"]["insecure_plaintext_keys"], false);
    env.assert_audit_intact();
}

#[test]
fn init_text_output_names_the_files_and_the_next_steps() {
    let env = Env::empty();
    let out = env.init(&[]).success();
    let root_sha256 = hex::encode(Sha256::digest(env.ca_der("root.pem")));
    let text = &out.stdout;
    assert!(
        text.contains(&format!("trust domain {TRUST_DOMAIN}")),
        "{out}"
    );
    assert!(
        text.contains("root.pem") && text.contains("ca-chain.pem"),
        "{out}"
    );
    assert!(
        text.contains(&root_sha256),
        "root fingerprint missing:\n{out}"
    );
    assert!(text.contains("Next steps:"), "{out}");
    for step in [
        "agent add spiffe://",
        "openssl req -new",
        "issue --agent",
        "cert list",
    ] {
        assert!(text.contains(step), "next step {step:?} missing:\n{out}");
    }
    assert!(!text.contains("WARNING"), "{out}");
}

#[test]
fn init_json_output() {
    let env = Env::empty();
    let doc = env.json(&["init", "--trust-domain", TRUST_DOMAIN]);
    assert_eq!(doc["trust_domain"], TRUST_DOMAIN);
    assert_eq!(doc["insecure_plaintext_keys"], false);
    assert_eq!(
        doc["root_sha256"],
        hex::encode(Sha256::digest(env.ca_der("root.pem")))
    );
    assert_eq!(
        Path::new(doc["root_pem"].as_str().unwrap()),
        env.data_file("root.pem")
    );
    assert_eq!(
        Path::new(doc["chain_pem"].as_str().unwrap()),
        env.data_file("ca-chain.pem")
    );
}

#[test]
fn init_twice_refuses_and_changes_nothing() {
    let env = Env::with_ca();
    let before = snapshot(&env.data());
    let line = env.init(&[]).error_line().to_owned();
    assert!(line.contains("data directory"), "{line}");
    // Not even a development CA may replace a real one.
    env.init(&["--insecure-unencrypted-keys", "--key-type", "ed25519"])
        .error_line();
    let mut other_domain = env.command();
    other_domain.args(["init", "--trust-domain", "other.example"]);
    Outcome::of(&mut other_domain).error_line();
    assert!(
        before == snapshot(&env.data()),
        "a refused init changed the data directory"
    );
    env.assert_audit_intact();
}

#[test]
fn init_without_a_passphrase_refuses_naming_the_variable() {
    let env = Env::empty();
    let mut cmd = env.command();
    cmd.env_remove("AGENTCA_PASSPHRASE")
        .args(["init", "--trust-domain", TRUST_DOMAIN]);
    let out = Outcome::of(&mut cmd);
    let line = out.error_line();
    assert!(line.contains("AGENTCA_PASSPHRASE"), "{line}");
    assert!(line.contains("--insecure-unencrypted-keys"), "{line}");
    for name in KEYS {
        assert!(
            !env.data_file(name).exists(),
            "{name} written without a passphrase"
        );
    }
}

#[test]
fn init_refuses_an_empty_passphrase() {
    let env = Env::empty();
    let mut cmd = env.command();
    cmd.env("AGENTCA_PASSPHRASE", "")
        .args(["init", "--trust-domain", TRUST_DOMAIN]);
    Outcome::of(&mut cmd).error_line();
    assert!(!env.data_file("root.key").exists());
}

#[test]
fn insecure_unencrypted_keys_are_plain_and_work_without_a_passphrase() {
    let env = Env::empty();
    let mut cmd = env.command();
    cmd.env_remove("AGENTCA_PASSPHRASE").args([
        "init",
        "--trust-domain",
        TRUST_DOMAIN,
        "--insecure-unencrypted-keys",
    ]);
    let out = Outcome::of(&mut cmd).success();
    assert!(out.stdout.contains("WARNING"), "{out}");
    for name in KEYS {
        let path = env.data_file(name);
        assert_eq!(mode(&path), 0o600, "{name}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("-----BEGIN PRIVATE KEY-----\n"),
            "{name}:\n{text}"
        );
        assert!(openssl_opens(&path, None), "{name}");
    }
    check_ca_certificates(&env, Lint::None);
    assert_eq!(
        env.audit_entries()[0]["fields"]["insecure_plaintext_keys"],
        true
    );

    let alice = env.add_agent("/agent/alice", &[]);
    let csr = env.csr("alice");
    let mut issue = env.command();
    issue
        .env_remove("AGENTCA_PASSPHRASE")
        .args(["--output", "json", "issue", "--agent", &alice, "--csr"])
        .arg(&csr.path);
    let signed_at = now();
    let doc = Outcome::of(&mut issue).success().json();
    let chain = pem_certs(doc["certificate_pem"].as_str().unwrap());
    env.check_leaf(&chain[0], &expect(&alice, &csr, signed_at));
}

#[test]
fn a_wrong_passphrase_on_issue_fails_clearly() {
    let env = Env::with_ca();
    let alice = env.add_agent("/agent/alice", &[]);
    let csr = env.csr("alice");
    let serials = env.serial_count();

    let mut cmd = env.command();
    cmd.env("AGENTCA_PASSPHRASE", "not the passphrase")
        .args(["issue", "--agent", &alice, "--csr"])
        .arg(&csr.path);
    let out = Outcome::of(&mut cmd);
    let line = out.error_line();
    assert!(line.contains("issuing.key"), "{line}");
    assert!(line.contains("wrong passphrase"), "{line}");
    assert!(
        !line.contains("not the passphrase"),
        "the passphrase was echoed: {line}"
    );

    let mut missing = env.command();
    missing
        .env_remove("AGENTCA_PASSPHRASE")
        .args(["issue", "--agent", &alice, "--csr"])
        .arg(&csr.path);
    let out = Outcome::of(&mut missing);
    assert!(out.error_line().contains("AGENTCA_PASSPHRASE"), "{out}");

    assert_eq!(
        env.serial_count(),
        serials,
        "a refused issue consumed a serial"
    );
    assert!(env.cert_list(&[]).is_empty());
    env.assert_audit_intact();
}

#[test]
fn passphrase_file_unlocks_the_keys() {
    let env = Env::with_ca();
    let alice = env.add_agent("/agent/alice", &[]);
    let csr = env.csr("alice");
    let file = env.write("passphrase", format!("{PASSPHRASE}\n"));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();

    let mut cmd = env.command();
    cmd.env_remove("AGENTCA_PASSPHRASE")
        .arg("--passphrase-file")
        .arg(&file)
        .args(["--output", "json", "issue", "--agent", &alice, "--csr"])
        .arg(&csr.path);
    let doc = Outcome::of(&mut cmd).success().json();
    assert_eq!(doc["agent"], alice.as_str());

    // The file wins over the variable.
    let mut cmd = env.command();
    cmd.env("AGENTCA_PASSPHRASE", "not the passphrase")
        .arg("--passphrase-file")
        .arg(&file)
        .args(["crl"]);
    Outcome::of(&mut cmd).success();

    // A passphrase file others can read is refused, like a key file.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut cmd = env.command();
    cmd.env_remove("AGENTCA_PASSPHRASE")
        .arg("--passphrase-file")
        .arg(&file)
        .args(["issue", "--agent", &alice, "--csr"])
        .arg(&csr.path);
    let out = Outcome::of(&mut cmd);
    assert!(out.error_line().contains("0644"), "{out}");
}

#[test]
fn init_accepts_a_passphrase_file() {
    let env = Env::empty();
    let file = env.write("passphrase", "from a file\n");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cmd = env.command();
    cmd.env_remove("AGENTCA_PASSPHRASE")
        .arg("--passphrase-file")
        .arg(&file)
        .args(["init", "--trust-domain", TRUST_DOMAIN]);
    Outcome::of(&mut cmd).success();
    assert!(openssl_opens(
        &env.data_file("issuing.key"),
        Some("from a file")
    ));
}

#[test]
fn a_key_readable_by_others_is_refused() {
    let env = Env::with_ca();
    let alice = env.add_agent("/agent/alice", &[]);
    let csr = env.csr("alice");
    let key = env.data_file("issuing.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = env.run(&["issue", "--agent", &alice, "--csr", csr.arg()]);
    let line = out.error_line();
    assert!(
        line.contains("issuing.key") && line.contains("0644"),
        "{line}"
    );
    assert!(env.cert_list(&[]).is_empty());

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    env.issue(&alice, &csr, &[]);
}

/// A CA of `key_type` signs a certificate every verifier accepts.
fn key_type_works(key_type: &str, root_key_oid: &str) {
    let env = Env::with_ca_of(key_type);
    check_ca_certificates(&env, Lint::KeyTyped);
    for name in ["root.pem", "issuing.pem"] {
        let der = env.ca_der(name);
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der).unwrap();
        assert_eq!(
            cert.public_key().algorithm.algorithm.to_id_string(),
            root_key_oid,
            "{name} of a {key_type} CA"
        );
    }
    let config = std::fs::read_to_string(env.data_file("config.toml")).unwrap();
    assert!(config.contains(key_type), "{config}");

    let alice = env.add_agent("/agent/alice", &[]);
    let csr = env.csr_with("alice", KeyAlg::P256, &[]);
    let signed_at = now();
    let doc = env.issue(&alice, &csr, &[]);
    let chain = pem_certs(doc["certificate_pem"].as_str().unwrap());
    env.check_leaf(&chain[0], &expect(&alice, &csr, signed_at));
    assert_eq!(doc["agent"], agent_id("/agent/alice"));
}

#[test]
fn key_type_ecdsa_p256() {
    key_type_works("ecdsa-p256", "1.2.840.10045.2.1");
}

#[test]
fn key_type_ecdsa_p384() {
    key_type_works("ecdsa-p384", "1.2.840.10045.2.1");
}

#[test]
fn key_type_ed25519() {
    key_type_works("ed25519", "1.3.101.112");
}

#[test]
fn key_type_rsa_2048() {
    key_type_works("rsa-2048", "1.2.840.113549.1.1.1");
}

#[test]
fn unknown_key_type_and_bad_trust_domain_are_refused() {
    let env = Env::empty();
    let out = env.init(&["--key-type", "dsa-1024"]);
    assert_eq!(out.status.code(), Some(2), "clap rejects the value:\n{out}");
    assert!(out.stderr.contains("dsa-1024"), "{out}");

    let mut cmd = env.command();
    cmd.args(["init", "--trust-domain", "Example.ORG"]);
    let out = Outcome::of(&mut cmd);
    assert!(out.error_line().contains("trust domain"), "{out}");
    assert!(!env.data_file("root.key").exists());
}

#[test]
fn init_makes_an_existing_data_directory_private() {
    let env = Env::empty();
    std::fs::create_dir(env.data()).unwrap();
    std::fs::set_permissions(env.data(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = env.init(&[]);
    if out.status.success() {
        assert_eq!(
            mode(&env.data()),
            0o700,
            "the data directory is left open to other users"
        );
    } else {
        // Refusing an open directory is as good as tightening it.
        out.error_line();
        assert!(!env.data_file("root.key").exists());
    }
}
