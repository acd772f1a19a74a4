//! `agentca verify` against a running `agentca serve`: OCSP and CRL (served and from a file),
//! before and after `agentca revoke`, and identity expectations.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::harness::{Server, serve_on_free_ports};
use super::support::{Env, Outcome, agent_id, pem_certs, serial_of};

/// How long the served CRL may take to list a revocation (it is regenerated, debounced).
const CRL_PROPAGATION_LIMIT: Duration = Duration::from_secs(10);

/// Issues a certificate for `agent` and writes its chain (leaf first) to `NAME.pem`.
fn issue_to_file(env: &Env, agent: &str, name: &str) -> (String, PathBuf) {
    let csr = env.csr(name);
    let path = env.path(&format!("{name}.pem"));
    let doc = env.issue(agent, &csr, &["--out", path.to_str().unwrap()]);
    let pem = std::fs::read_to_string(&path).unwrap();
    assert!(
        pem_certs(&pem).len() >= 2,
        "the issued file carries the chain"
    );
    (serial_of(&doc), path)
}

fn verify_args<'a>(cert: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["verify", "--cert", cert.to_str().unwrap()];
    args.extend_from_slice(extra);
    args
}

#[test]
fn verify_with_ocsp_and_crl_before_and_after_revocation() {
    let env = Env::with_ca();
    let server = Server::start(serve_on_free_ports(&env));
    let alice = env.add_agent("/agent/team/alice", &[]);
    let bob = env.add_agent("/agent/team/bob", &[]);
    let (serial, cert) = issue_to_file(&env, &alice, "alice");
    let (bob_serial, bob_cert) = issue_to_file(&env, &bob, "bob");
    let ocsp = server.url("/ocsp");
    let crl = server.url("/crl");

    // Good by OCSP: text names the agent, serial, expiry and status; JSON the same facts.
    let out = env.run(&verify_args(&cert, &["--ocsp", &ocsp])).success();
    assert!(
        out.stdout.contains(&format!("agent:      {alice}")),
        "{out}"
    );
    assert!(
        out.stdout.contains(&format!("serial:     {serial}")),
        "{out}"
    );
    assert!(out.stdout.contains("not after:  20"), "{out}");
    assert!(
        out.stdout.contains("revocation: good (checked with OCSP"),
        "{out}"
    );
    let doc = env.json(&verify_args(&cert, &["--ocsp", &ocsp]));
    assert_eq!(doc["agent_id"], alice.as_str());
    assert_eq!(doc["serial"], serial.as_str());
    assert!(doc["not_after"].is_string());
    assert_eq!(doc["revocation"]["status"], "good");
    assert_eq!(doc["revocation"]["source"], "ocsp");
    // `--ca` defaults to the data directory's root.pem; naming it changes nothing.
    let root = env.data_file("root.pem");
    let root = root.to_str().unwrap();
    env.run(&verify_args(&cert, &["--ca", root, "--ocsp", &ocsp]))
        .success();

    // Good by the served CRL and by a CRL file.
    let doc = env.json(&verify_args(&cert, &["--crl", &crl]));
    assert_eq!(doc["revocation"]["source"], "crl", "{doc:#}");
    let crl_file = env.path("before.crl");
    env.run(&["crl", "--out", crl_file.to_str().unwrap()])
        .success();
    let doc = env.json(&verify_args(
        &cert,
        &["--crl-file", crl_file.to_str().unwrap()],
    ));
    assert_eq!(doc["revocation"]["status"], "good", "{doc:#}");

    // Identity expectations: exact, pattern, mismatch.
    env.run(&verify_args(&cert, &["--expect-id", &alice]))
        .success();
    env.run(&verify_args(
        &cert,
        &["--expect-id", &agent_id("/agent/team/*"), "--ocsp", &ocsp],
    ))
    .success();
    let out = env.run(&verify_args(&cert, &["--expect-id", &bob]));
    let line = out.error_line();
    assert!(line.contains(&alice) && line.contains(&bob), "{line}");
    let (kind, message) = env.json_error(&verify_args(
        &cert,
        &["--expect-id", &agent_id("/agent/ops/**")],
    ));
    assert_eq!(kind, "identityMismatch", "{message}");

    // Revoked: OCSP says so as soon as `revoke` returns (on every node once it has learned).
    env.run(&["revoke", &serial, "--reason", "keyCompromise"])
        .success();
    server.await_revoked_everywhere(&serial);
    let out = env.run(&verify_args(&cert, &["--ocsp", &ocsp]));
    let line = out.error_line();
    assert!(
        line.contains("revoked") && line.contains("keyCompromise") && line.contains(&serial),
        "{line}"
    );
    let (kind, _) = env.json_error(&verify_args(&cert, &["--ocsp", &ocsp]));
    assert_eq!(kind, "revoked");
    // Fail-open does not admit a revoked certificate: the answer is there.
    assert_eq!(
        env.json_error(&verify_args(&cert, &["--ocsp", &ocsp, "--fail-open"]))
            .0,
        "revoked"
    );
    // The other agent is still good.
    env.run(&verify_args(&bob_cert, &["--ocsp", &ocsp]))
        .success();

    // The served CRL lists it shortly after; so does a freshly written CRL file.
    let started = Instant::now();
    loop {
        let outcome = env.run_json(&verify_args(&cert, &["--crl", &crl]));
        if !outcome.status.success() {
            let (kind, message) = outcome.json_error();
            assert_eq!(kind, "revoked", "{message}");
            assert!(message.contains("the CRL"), "{message}");
            break;
        }
        assert!(
            started.elapsed() < CRL_PROPAGATION_LIMIT,
            "the served CRL did not list {serial} within {CRL_PROPAGATION_LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let crl_file = env.path("after.crl");
    env.run(&["crl", "--out", crl_file.to_str().unwrap()])
        .success();
    let (kind, message) = env.json_error(&verify_args(
        &cert,
        &["--crl-file", crl_file.to_str().unwrap()],
    ));
    assert_eq!(kind, "revoked", "{message}");
    let doc = env.json(&verify_args(
        &bob_cert,
        &["--crl-file", crl_file.to_str().unwrap()],
    ));
    assert_eq!(doc["serial"], bob_serial.as_str());

    drop(server);
}

#[test]
fn verify_refuses_foreign_and_unparseable_certificates_and_reports_unreachable_responders() {
    let env = Env::with_ca();
    let other = Env::with_ca();
    let alice = other.add_agent("/agent/alice", &[]);
    let (_, foreign) = issue_to_file(&other, &alice, "foreign");
    let foreign = env.write("foreign.pem", std::fs::read(foreign).unwrap());
    let (kind, message) = env.json_error(&verify_args(&foreign, &[]));
    assert_eq!(kind, "untrusted", "{message}");

    let garbage = env.write("garbage.pem", "not a certificate");
    let (kind, message) = env.json_error(&verify_args(&garbage, &[]));
    assert_eq!(kind, "malformedCertificate", "{message}");

    // A responder nobody answers for: refused, unless --fail-open.
    let own = env.add_agent("/agent/own", &[]);
    let (_, cert) = issue_to_file(&env, &own, "own");
    let dead = format!("http://127.0.0.1:{}/ocsp", super::harness::free_port());
    let out: Outcome = env.run(&verify_args(&cert, &["--ocsp", &dead, "--timeout", "2s"]));
    let line = out.error_line();
    assert!(line.contains("revocation status unavailable"), "{line}");
    let doc = env.json(&verify_args(&cert, &["--ocsp", &dead, "--fail-open"]));
    assert_eq!(doc["revocation"]["status"], "unavailable", "{doc:#}");

    // Without --ca and without a CA in the data directory there is nothing to trust.
    let empty = Env::empty();
    let cert = empty.write("own.pem", std::fs::read(&cert).unwrap());
    let (kind, message) = empty.json_error(&verify_args(&cert, &[]));
    assert_eq!(kind, "invalidArgument", "{message}");
    assert!(message.contains("root.pem"), "{message}");

    // Conflicting revocation sources are a usage error.
    let out = env.run(&verify_args(&cert, &["--ocsp", &dead, "--crl", &dead]));
    assert_eq!(out.status.code(), Some(2), "{out}");
}
