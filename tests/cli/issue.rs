//! `agentca issue` with CSRs made by OpenSSL, checked by every verifier.

use serde_json::Value;
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::FromDer;

use super::support::{Env, KeyAlg, agent_id, expect, now, pem_certs, serial_of};

fn rfc3339(doc: &Value, member: &str) -> OffsetDateTime {
    OffsetDateTime::parse(doc[member].as_str().unwrap(), &Rfc3339).unwrap()
}

/// The serial of a DER certificate, lowercase hex.
fn cert_serial(der: &[u8]) -> String {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).unwrap();
    hex::encode(cert.raw_serial())
}

#[test]
fn p256_csr_to_stdout_and_to_a_file() {
    let env = Env::with_ca();
    let alice = env.add_agent("/agent/alice", &[]);
    let csr = env.csr("alice");
    let issuing = env.ca_der("issuing.pem");

    // Standard output: the chain in PEM; the summary goes to stderr so the PEM can be piped.
    let signed_at = now();
    let out = env
        .run(&["issue", "--agent", &alice, "--csr", csr.arg()])
        .success();
    let chain = pem_certs(&out.stdout);
    assert_eq!(chain.len(), 2, "leaf and issuing CA expected:\n{out}");
    assert_eq!(chain[1], issuing);
    env.check_leaf(&chain[0], &expect(&alice, &csr, signed_at));
    let serial = cert_serial(&chain[0]);
    assert!(
        out.stderr
            .starts_with(&format!("issued {serial} for {alice}, valid ")),
        "{out}"
    );

    // --out: the same chain in a file, a summary on stdout.
    let file = env.path("alice.pem");
    let signed_at = now();
    let out = env
        .run(&[
            "issue",
            "--agent",
            &alice,
            "--csr",
            csr.arg(),
            "--out",
            file.to_str().unwrap(),
        ])
        .success();
    let chain = pem_certs(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1], issuing);
    env.check_leaf(&chain[0], &expect(&alice, &csr, signed_at));
    let second = cert_serial(&chain[0]);
    assert_ne!(serial, second, "a serial was reused");
    assert!(
        out.stdout
            .starts_with(&format!("issued {second} for {alice}")),
        "{out}"
    );
    assert!(
        out.stdout.contains(&format!("wrote {}", file.display())),
        "{out}"
    );
    assert!(out.stderr.is_empty(), "{out}");

    // openssl verify accepts the chain file as written (leaf first, issuing CA after it).
    agentca_testkit::openssl_verify(&file, &env.data_file("root.pem"), &file);

    assert_eq!(env.listed_serials(&[]), {
        let mut s = vec![serial, second];
        s.sort();
        s
    });
    env.assert_audit_intact();
}

#[test]
fn rsa_2048_csr() {
    let env = Env::with_ca();
    let alice = env.add_agent("/agent/rsa", &[]);
    let csr = env.csr_with("rsa", KeyAlg::Rsa2048, &[]);
    let signed_at = now();
    let doc = env.issue(&alice, &csr, &[]);
    let chain = pem_certs(doc["certificate_pem"].as_str().unwrap());
    env.check_leaf(&chain[0], &expect(&alice, &csr, signed_at));
}

#[test]
fn p384_and_ed25519_csrs() {
    let env = Env::with_ca();
    let alice = env.add_agent("/agent/alice", &[]);
    for (name, alg) in [("p384", KeyAlg::P384), ("ed", KeyAlg::Ed25519)] {
        let csr = env.csr_with(name, alg, &[]);
        let signed_at = now();
        let doc = env.issue(&alice, &csr, &[]);
        let chain = pem_certs(doc["certificate_pem"].as_str().unwrap());
        env.check_leaf(&chain[0], &expect(&alice, &csr, signed_at));
    }
}

#[test]
fn dns_names_pre_authorized_with_agent_add() {
    let env = Env::with_ca();
    let svc = env.add_agent(
        "/agent/svc",
        &["--dns", "svc.example.org", "--dns", "api.svc.example.org"],
    );
    let csr = env.csr_with(
        "svc",
        KeyAlg::P256,
        &["svc.example.org", "api.svc.example.org"],
    );
    let signed_at = now();
    let doc = env.issue(&svc, &csr, &[]);
    let chain = pem_certs(doc["certificate_pem"].as_str().unwrap());
    // serverAuth joins clientAuth because DNS names are present; the testkit checks that.
    env.check_leaf(
        &chain[0],
        &expect(&svc, &csr, signed_at).dns(["svc.example.org", "api.svc.example.org"]),
    );

    // A name the agent was not given is refused, naming the rule, and nothing is issued.
    let other = env.csr_with(
        "other",
        KeyAlg::P256,
        &["svc.example.org", "evil.example.org"],
    );
    let (kind, message) = env.json_error(&["issue", "--agent", &svc, "--csr", other.arg()]);
    assert_eq!(kind, "policyRefused", "{message}");
    assert!(message.contains("rule dns"), "{message}");
    assert!(message.contains("evil.example.org"), "{message}");

    // A name given to another agent is not this agent's.
    let alice = env.add_agent("/agent/alice", &[]);
    let (kind, _) = env.json_error(&["issue", "--agent", &alice, "--csr", csr.arg()]);
    assert_eq!(kind, "policyRefused");
    assert_eq!(env.cert_list(&[]).len(), 1);
}

#[test]
fn a_requested_ttl_is_honoured() {
    let env = Env::with_ca();
    let alice = env.add_agent("/agent/alice", &[]);
    for (ttl, lifetime) in [
        ("2h", Duration::hours(2)),
        ("30m", Duration::minutes(30)),
        ("5m", Duration::minutes(5)),
    ] {
        let csr = env.csr(&format!("alice-{ttl}"));
        let signed_at = now();
        let doc = env.issue(&alice, &csr, &["--ttl", ttl]);
        assert_eq!(doc["lifetime"], ttl);
        let chain = pem_certs(doc["certificate_pem"].as_str().unwrap());
        env.check_leaf(
            &chain[0],
            &expect(&alice, &csr, signed_at).requested_lifetime(lifetime),
        );
    }
}

#[test]
fn a_ttl_beyond_the_policy_maximum_is_refused() {
    let env = Env::with_ca();
    let alice = env.add_agent("/agent/alice", &[]);
    let csr = env.csr("alice");
    let serials = env.serial_count();

    let line = env
        .run(&[
            "issue",
            "--agent",
            &alice,
            "--csr",
            csr.arg(),
            "--ttl",
            "25h",
        ])
        .error_line()
        .to_owned();
    assert!(
        line.contains("max_lifetime"),
        "the rule is not named: {line}"
    );
    assert!(
        line.contains("\"default\""),
        "the policy is not named: {line}"
    );
    let (kind, message) = env.json_error(&[
        "issue",
        "--agent",
        &alice,
        "--csr",
        csr.arg(),
        "--ttl",
        "7d",
    ]);
    assert_eq!(kind, "policyRefused");
    assert!(message.contains("max_lifetime"), "{message}");

    // Below the 5-minute minimum.
    let (kind, message) = env.json_error(&[
        "issue",
        "--agent",
        &alice,
        "--csr",
        csr.arg(),
        "--ttl",
        "4m",
    ]);
    assert_eq!(kind, "policyRefused");
    assert!(message.contains("5m"), "{message}");

    // Not a duration at all: refused before anything is opened.
    for bad in ["forever", "1h30", "", "99999999999999999999d", "=1h"] {
        let (kind, message) =
            env.json_error(&["issue", "--agent", &alice, "--csr", csr.arg(), "--ttl", bad]);
        assert_eq!(kind, "invalidArgument", "{bad:?}: {message}");
        assert!(message.contains("--ttl"), "{message}");
    }

    assert!(env.cert_list(&[]).is_empty());
    assert_eq!(env.serial_count(), serials);
    assert_eq!(env.audit_events("cert.refused").len(), 3);
}

#[test]
fn json_output_fields() {
    let env = Env::with_ca();
    let alice = env.add_agent("/agent/alice", &[]);
    let csr = env.csr("alice");
    let before = now();
    let doc = env.issue(&alice, &csr, &["--ttl", "90m"]);
    let after = now();

    let members: Vec<&str> = doc
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = vec![
        "agent",
        "certificate_pem",
        "key_sha256",
        "lifetime",
        "method",
        "not_after",
        "not_before",
        "revocation_reason",
        "revoked_at",
        "serial",
        "status",
    ];
    expected.sort_unstable();
    assert_eq!(members, expected, "{doc:#}");

    let serial = serial_of(&doc);
    assert_eq!(serial.len(), 32);
    assert!(
        serial
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "{serial}"
    );
    assert_eq!(doc["agent"], alice.as_str());
    assert_eq!(doc["status"], "valid");
    assert_eq!(doc["method"], "cli");
    assert_eq!(doc["lifetime"], "1h30m");
    assert!(doc["revoked_at"].is_null() && doc["revocation_reason"].is_null());
    assert_eq!(doc["key_sha256"], hex::encode(Sha256::digest(&csr.spki)));

    let not_before = rfc3339(&doc, "not_before");
    let not_after = rfc3339(&doc, "not_after");
    assert_eq!(
        not_after - not_before,
        Duration::minutes(95),
        "90m plus the 5m backdate"
    );
    assert!(not_before >= before - Duration::minutes(5) - Duration::seconds(1));
    assert!(not_before <= after - Duration::minutes(5));

    // The PEM is the leaf alone, and the certificate matches the document.
    let certs = pem_certs(doc["certificate_pem"].as_str().unwrap());
    assert_eq!(certs.len(), 1);
    assert_eq!(cert_serial(&certs[0]), serial);
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&certs[0]).unwrap();
    assert_eq!(
        cert.validity().not_before.timestamp(),
        not_before.unix_timestamp()
    );
    assert_eq!(
        cert.validity().not_after.timestamp(),
        not_after.unix_timestamp()
    );

    // cert show gives the same record.
    let show = env.json(&["cert", "show", &serial]);
    assert_eq!(show, doc);
    let listed = env.cert_list(&[]);
    assert_eq!(listed.len(), 1);
    let mut without_pem = doc.clone();
    without_pem
        .as_object_mut()
        .unwrap()
        .remove("certificate_pem");
    assert_eq!(listed[0], without_pem);

    // The audit log has the issuance with the certificate's hash.
    let issued = env.audit_events("cert.issued");
    assert_eq!(issued.len(), 1);
    let fields = &issued[0]["fields"];
    assert_eq!(fields["serial"], serial.as_str());
    assert_eq!(fields["agent"], alice.as_str());
    assert_eq!(
        fields["cert_sha256"],
        hex::encode(Sha256::digest(&certs[0]))
    );
    assert_eq!(fields["key_sha256"], doc["key_sha256"]);
}

#[test]
fn a_der_csr_is_accepted_too() {
    let env = Env::with_ca();
    let alice = env.add_agent("/agent/alice", &[]);
    let csr = env.csr("alice");
    let der = env.write("alice.der", csr.der());
    let signed_at = now();
    let doc = env.json(&["issue", "--agent", &alice, "--csr", der.to_str().unwrap()]);
    let chain = pem_certs(doc["certificate_pem"].as_str().unwrap());
    env.check_leaf(&chain[0], &expect(&alice, &csr, signed_at));
}

#[test]
fn a_csr_naming_another_agent_is_refused() {
    let env = Env::with_ca();
    let alice = env.add_agent("/agent/alice", &[]);
    env.add_agent("/agent/mallory", &[]);
    // A CSR whose URI SAN claims alice, presented for mallory.
    let path = env.path("claim.csr");
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-new",
            "-nodes",
            "-subj",
            "/",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .arg("-addext")
        .arg(format!("subjectAltName=URI:{alice}"))
        .arg("-keyout")
        .arg(env.path("claim.key"))
        .arg("-out")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let mallory = agent_id("/agent/mallory");
    let (kind, message) = env.json_error(&[
        "issue",
        "--agent",
        &mallory,
        "--csr",
        path.to_str().unwrap(),
    ]);
    assert_eq!(kind, "badCsr", "{message}");
    assert!(message.contains("/agent/alice"), "{message}");
    assert!(env.cert_list(&[]).is_empty());

    // For alice herself the same CSR is fine.
    env.json(&["issue", "--agent", &alice, "--csr", path.to_str().unwrap()]);
}

#[test]
fn a_failed_issue_leaves_no_certificate_behind() {
    let env = Env::with_ca();
    let alice = env.add_agent("/agent/alice", &[]);
    let csr = env.csr("alice");
    let out_path = env.path("no-such-dir/alice.pem");
    let out = env.run(&[
        "issue",
        "--agent",
        &alice,
        "--csr",
        csr.arg(),
        "--out",
        out_path.to_str().unwrap(),
    ]);
    out.error_line();
    assert!(
        env.cert_list(&[]).is_empty(),
        "the command failed, yet a certificate was issued:\n{out}"
    );
    assert!(env.audit_events("cert.issued").is_empty());
}

/// Makes a CSR with `openssl req -new` plus `args` (which must choose the key) at `name.csr`.
fn openssl_csr(env: &Env, name: &str, args: &[&str]) -> String {
    let path = env.path(&format!("{name}.csr"));
    let out = std::process::Command::new("openssl")
        .args(["req", "-new", "-nodes", "-passin", "env:AGENTCA_PASSPHRASE"])
        .args(args)
        .arg("-out")
        .arg(&path)
        .env("AGENTCA_PASSPHRASE", super::support::PASSPHRASE)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path.to_str().unwrap().to_owned()
}

#[test]
fn own_weak_and_unsupported_keys_are_refused() {
    let env = Env::with_ca();
    let alice = env.add_agent("/agent/alice", &[]);
    let mut cases = Vec::new();
    for key in ["root.key", "issuing.key", "ocsp.key", "scep-ra.key"] {
        let key_path = env.data_file(key);
        let csr = openssl_csr(
            &env,
            key,
            &["-subj", "/", "-key", key_path.to_str().unwrap()],
        );
        cases.push((key.to_owned(), csr, "this CA's own public keys"));
    }
    let k = env.path("weak.key");
    let k = k.to_str().unwrap();
    cases.push((
        "RSA-1024".into(),
        openssl_csr(
            &env,
            "rsa1024",
            &["-subj", "/", "-newkey", "rsa:1024", "-keyout", k],
        ),
        "RSA-1024",
    ));
    cases.push((
        "secp256k1".into(),
        openssl_csr(
            &env,
            "k1",
            &[
                "-subj",
                "/",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:secp256k1",
                "-keyout",
                k,
            ],
        ),
        "secp256k1",
    ));
    let serials = env.serial_count();
    for (what, csr, says) in &cases {
        let (kind, message) = env.json_error(&["issue", "--agent", &alice, "--csr", csr]);
        assert_eq!(kind, "badKey", "{what}: {message}");
        assert!(message.contains(says), "{what}: {message}");
    }
    assert!(env.cert_list(&[]).is_empty());
    assert_eq!(env.serial_count(), serials);
    assert_eq!(env.audit_events("cert.refused").len(), cases.len());
}

#[test]
fn nothing_but_the_key_and_authorized_names_comes_from_the_csr() {
    let env = Env::with_ca();
    let alice = env.add_agent("/agent/alice", &[]);
    let k = env.path("x.key");
    let k = k.to_str().unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-keyout",
        k,
    ];

    // A CSR asking to be a CA is refused outright.
    let mut args = vec![
        "-subj",
        "/CN=Evil CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
    ];
    args.extend(ec);
    let csr = openssl_csr(&env, "ca", &args);
    let (kind, message) = env.json_error(&["issue", "--agent", &alice, "--csr", &csr]);
    assert_eq!(kind, "badCsr", "{message}");

    // An unauthorized IP address is refused naming the rule.
    let mut args = vec!["-subj", "/", "-addext", "subjectAltName=IP:10.0.0.1"];
    args.extend(ec);
    let csr = openssl_csr(&env, "ip", &args);
    let (kind, message) = env.json_error(&["issue", "--agent", &alice, "--csr", &csr]);
    assert_eq!(kind, "policyRefused", "{message}");
    assert!(message.contains("rule ips"), "{message}");

    // An extended key usage the profile never grants is refused.
    let mut args = vec!["-subj", "/", "-addext", "extendedKeyUsage=codeSigning"];
    args.extend(ec);
    let csr = openssl_csr(&env, "eku", &args);
    let (kind, message) = env.json_error(&["issue", "--agent", &alice, "--csr", &csr]);
    assert_eq!(kind, "badCsr", "{message}");
    assert!(env.cert_list(&[]).is_empty());

    // A subject and a harmless extra extension are not copied: the certificate has an empty
    // subject and only the profile's extensions (the testkit checks the extension list).
    let mut args = vec![
        "-subj",
        "/CN=alice/O=Someone Else",
        "-addext",
        "nsComment=copied?",
    ];
    args.extend(ec);
    let path = openssl_csr(&env, "subject", &args);
    let signed_at = now();
    let doc = env.json(&["issue", "--agent", &alice, "--csr", &path]);
    let leaf = pem_certs(doc["certificate_pem"].as_str().unwrap()).remove(0);
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&leaf).unwrap();
    assert_eq!(
        cert.subject().iter().count(),
        0,
        "the subject was copied: {}",
        cert.subject()
    );
    let spki = cert.public_key().raw.to_vec();
    env.check_leaf(
        &leaf,
        &agentca_testkit::Expectation::new(&alice, signed_at)
            .csr_public_key_spki(spki)
            .base_url(super::support::BASE_URL),
    );
}
