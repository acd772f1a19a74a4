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
    serve_ahead_by(env, lib, "+36h")
}

fn serve_ahead_by(env: &Env, lib: &Path, offset: &str) -> Command {
    let mut cmd = serve_on_free_ports(env);
    move_clock(&mut cmd, lib, offset);
    cmd
}

/// Waits until the audit log has `passes` retention passes (`cert.forgotten` entries) and
/// returns the last.
fn retention_pass(env: &Env, server: &Server, passes: usize) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let mut entries = env.audit_events("cert.forgotten");
        if entries.len() >= passes {
            return entries.swap_remove(passes - 1);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no retention pass: {}",
            server.stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
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
    let pass = retention_pass(&env, &server, 1);
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

/// REL-7 (and REV-4) with the clock jumped a month ahead: a revoked certificate that has not
/// expired is neither forgotten nor left off the CRL; one that expired within the last CRL
/// period is still listed (a relying party may hold a CRL from before it expired), and leaves
/// the CRL and the store only once a whole period has passed since; one that expired while
/// the CA was down, long ago, is listed on the first CRL after the restart (RFC 5280 §3.3: an
/// entry stays until a CRL issued after its expiry has carried it) and then forgotten.
#[test]
fn a_month_ahead_keeps_revoked_certificates_until_a_crl_period_after_they_expire() {
    let Some(lib) = libfaketime() else {
        missing("faketime", "the month-ahead retention test (REL-7)");
        return;
    };
    let env = Env::with_ca();
    // The shipped default policy, for one subtree, with certificates of up to 60 days.
    let default = std::fs::read_to_string(env.data_file("policies/default.toml")).unwrap();
    let long = default
        .replace("agents = [\"/agent/**\"]", "agents = [\"/agent/long/**\"]")
        .replace("max_lifetime = \"24h\"", "max_lifetime = \"60d\"");
    assert_ne!(long, default);
    std::fs::write(env.data_file("policies/long.toml"), long).unwrap();
    let agent = env.add_agent("/agent/long/a", &[]);
    let issue =
        |name: &str, ttl: &str| serial_of(&env.issue(&agent, &env.csr(name), &["--ttl", ttl]));
    let unexpired = issue("unexpired", "45d");
    let just_expired = issue("just-expired", "718h"); // 30 days less 2 hours
    let long_gone = issue("long-gone", "10d");
    let live = issue("live", "45d");
    for serial in [&unexpired, &just_expired, &long_gone] {
        env.json(&["revoke", serial, "--reason", "superseded"]);
    }
    keep_expired(&env, "1d");
    let status = |serial: &str| -> String {
        let out = env.run_json(&["cert", "show", serial]);
        match out.status.success() {
            true => out.json()["status"].as_str().unwrap().to_owned(),
            false => out.json_error().0,
        }
    };

    // A CRL today, listing the three; then the CA is down for a month.
    let today = env.json(&["crl"]);
    assert_eq!(today["entries"], 3, "{today}");

    // 30 days on: the one expired 20 days ago, while no CRL was published, is on the first
    // CRL and then forgotten; the one expired two hours ago is within the CRL period (24 h)
    // and stays listed and stored.
    let server = Server::start(serve_ahead_by(&env, &lib, "+30d"));
    let pass = retention_pass(&env, &server, 1);
    assert_eq!(pass["fields"]["count"], 1, "{pass}");
    let crl = super::serve::served_crl(&server);
    for (serial, listed) in [
        (&unexpired, true),
        (&just_expired, true),
        (&long_gone, true),
    ] {
        assert_eq!(
            crl.serials.contains(serial),
            listed,
            "{serial}: {:?}",
            crl.serials
        );
    }
    assert_eq!(status(&unexpired), "revoked");
    assert_eq!(status(&just_expired), "revoked");
    assert_eq!(status(&long_gone), "unknownSerial");
    assert_eq!(status(&live), "valid");
    server.terminate();

    // 32 days on, more than a CRL period after it expired: the second one goes too; the
    // unexpired revoked one is still listed, with a higher CRL number.
    let server = Server::start(serve_ahead_by(&env, &lib, "+32d"));
    let pass = retention_pass(&env, &server, 2);
    assert_eq!(pass["fields"]["count"], 1, "{pass}");
    let later = super::serve::served_crl(&server);
    assert!(later.number > crl.number);
    assert_eq!(later.serials, vec![unexpired.clone()]);
    assert_eq!(status(&unexpired), "revoked");
    assert_eq!(status(&just_expired), "unknownSerial");
    assert_eq!(status(&live), "valid");
    server.terminate();
    let doc = env.json(&["audit", "verify"]);
    assert_eq!(doc["consistent"], true, "{doc}");
    assert_eq!(doc["reconciliation"]["forgotten_after_expiry"], 2, "{doc}");
}
