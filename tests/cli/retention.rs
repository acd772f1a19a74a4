//! Expired certificates leave the store once the CA's retention has passed, and the audit log
//! still reconciles with it. The server runs with libfaketime (Debian's `faketime`) preloaded
//! and its clock 36 hours ahead, which makes the short certificates issued here a day and a
//! half old.

use std::path::Path;
use std::process::Command;

use agentca_testkit::tools::missing;

use super::harness::{Server, serve_on_free_ports};
use super::support::{Env, libfaketime, move_clock, serial_of};

fn serve_ahead(env: &Env, lib: &Path) -> Command {
    let mut cmd = serve_on_free_ports(env);
    move_clock(&mut cmd, lib, "+36h");
    cmd
}

fn keep_expired(env: &Env, value: &str) {
    let path = env.data_file("config.toml");
    let mut config = std::fs::read_to_string(&path).unwrap();
    config.push_str(&format!("keep_expired_certificates = \"{value}\"\n"));
    std::fs::write(&path, config).unwrap();
}

#[test]
fn expired_certificates_are_forgotten_and_the_audit_log_still_reconciles() {
    let Some(lib) = libfaketime() else {
        missing("faketime", "the certificate retention test");
        return;
    };
    let env = Env::with_ca();
    let alice = env.add_agent("/agent/alice", &[]);
    let short = |name: &str| serial_of(&env.issue(&alice, &env.csr(name), &["--ttl", "5m"]));
    let expired = short("expired");
    let revoked = short("revoked");
    env.json(&["revoke", &revoked, "--reason", "keyCompromise"]);
    let live = serial_of(&env.issue(&alice, &env.csr("live"), &["--ttl", "24h"]));

    // Shorter than a day is refused before anything starts.
    keep_expired(&env, "1h");
    let refused = serve_ahead(&env, &lib).output().unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("keep_expired_certificates"), "{stderr}");
    let config = std::fs::read_to_string(env.data_file("config.toml")).unwrap();
    std::fs::write(
        env.data_file("config.toml"),
        config.replace("keep_expired_certificates = \"1h\"\n", ""),
    )
    .unwrap();

    // A day: at the server's time both five-minute certificates expired 36 hours ago, the
    // revoked one after the CRL it publishes at start stopped listing it; the live one stays.
    keep_expired(&env, "1d");
    let server = Server::start(serve_ahead(&env, &lib));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let pass = loop {
        if let Some(entry) = env.audit_events("cert.forgotten").pop() {
            break entry;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no retention pass: {}",
            server.stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(pass["fields"]["count"], 2, "{pass}");
    // Through the running server's admin socket (the listing has the server's own TLS
    // certificate too).
    let listed = env.listed_serials(&[]);
    assert!(listed.contains(&live), "{listed:?}");
    assert!(
        !listed.contains(&expired) && !listed.contains(&revoked),
        "{listed:?}"
    );
    let shown = env.run(&["cert", "show", &expired]);
    assert!(!shown.status.success());
    server.terminate();

    // The log names all three; the store holds the live one, and that is consistent.
    let doc = env.json(&["audit", "verify"]);
    assert_eq!(doc["consistent"], true, "{doc}");
    assert_eq!(doc["reconciliation"]["forgotten_after_expiry"], 2, "{doc}");
    assert_eq!(
        doc["reconciliation"]["issued_missing_from_store"],
        serde_json::json!([])
    );
    assert_eq!(
        doc["reconciliation"]["revoked_missing_from_store"],
        serde_json::json!([])
    );
    assert_eq!(env.listed_serials(&[]), listed);
}
