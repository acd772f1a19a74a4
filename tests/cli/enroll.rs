//! `agentca enroll` and `agentca renew` against the real `agentca serve`: a key made on the
//! agent's side, the agent identity ordered with agentca's `uri` identifier, the pair written
//! together through links, and a renewal that replaces the certificate.

use std::os::unix::fs::PermissionsExt;

use super::acme_clients::spki_of_key;
use super::harness::AcmeServer;
use super::support::{BASE_URL, Env, Outcome, agent_id, now, pem_certs};

#[test]
fn an_agent_enrolls_over_acme_and_renews_with_replaces() {
    let env = Env::with_ca();
    let agent = env.add_agent("/agent/enroll", &[]);
    let server = AcmeServer::start(&env);
    let (kid, hmac) = server.eab(&agent);
    let key = env.path("agent/key.pem");
    let cert = env.path("agent/cert.pem");
    std::fs::create_dir_all(env.path("agent")).unwrap();
    let enroll_args = |kid: &str, hmac: &str| {
        vec![
            "enroll".to_owned(),
            "--agent".into(),
            agent.clone(),
            "--key".into(),
            key.display().to_string(),
            "--cert".into(),
            cert.display().to_string(),
            "--acme".into(),
            server.acme_directory_url(),
            "--eab-kid".into(),
            kid.to_owned(),
            "--eab-hmac".into(),
            hmac.to_owned(),
            "--ca".into(),
            env.data_file("root.pem").display().to_string(),
        ]
    };

    let signed_at = now();
    let enrolled = env.run(&enroll_args(&kid, &hmac)).success();
    assert!(enrolled.stdout.contains(&agent), "{enrolled}");
    let first = check_pair(&env, &key, &cert, &agent, signed_at);
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The EAB credential is spent: a second enrollment with it is refused, and the files stay.
    let again = env.run(&enroll_args(&kid, &hmac));
    assert!(!again.status.success(), "{again}");
    assert_eq!(check_pair(&env, &key, &cert, &agent, signed_at), first);

    // One renewal: a new key, a new certificate, and the server knows it replaced the first.
    let signed_at = now();
    let key_before = std::fs::read(&key).unwrap();
    let renewed = env
        .run(&[
            "renew",
            "--key",
            &key.display().to_string(),
            "--cert",
            &cert.display().to_string(),
            "--exec",
            &format!("touch {}", env.path("hook-ran").display()),
        ])
        .success();
    assert!(renewed.stdout.contains("renewed"), "{renewed}");
    let second = check_pair(&env, &key, &cert, &agent, signed_at);
    assert_ne!(second, first);
    assert_ne!(
        std::fs::read(&key).unwrap(),
        key_before,
        "the key was not rotated"
    );
    assert!(env.path("hook-ran").exists(), "--exec did not run");
    let listed = env.listed_serials(&["--agent", &agent_id("/agent/enroll")]);
    assert_eq!(listed.len(), 2, "{listed:?}");
    env.assert_audit_intact();
}

/// The daemon asks the server's ARI when to renew: right after a revocation the window is
/// open (RFC 9773 §4.2), so it renews at once, runs its hook, and plans the next renewal.
#[test]
fn the_daemon_renews_a_revoked_certificate_at_once() {
    let env = Env::with_ca();
    let agent = env.add_agent("/agent/daemon", &[]);
    let server = AcmeServer::start(&env);
    std::fs::create_dir_all(env.path("agent")).unwrap();
    let key = env.path("agent/key.pem");
    let cert = env.path("agent/cert.pem");
    let (key_arg, cert_arg) = (key.display().to_string(), cert.display().to_string());
    let enrolled_at = now();
    server.enroll(&agent, &key, &cert);
    let first = check_pair(&env, &key, &cert, &agent, enrolled_at);
    let serial = hex::encode(
        x509_parser::parse_x509_certificate(&first)
            .unwrap()
            .1
            .raw_serial(),
    );
    env.run(&["revoke", &serial, "--reason", "keyCompromise"])
        .success();

    let renewed_at = now();
    let hook = env.path("rotated");
    let mut daemon = env
        .bare()
        .args([
            "renew", "--daemon", "--key", &key_arg, "--cert", &cert_arg, "--exec",
        ])
        .arg(format!("touch {}", hook.display()))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !hook.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon did not renew a revoked certificate"
        );
        if let Some(status) = daemon.try_wait().unwrap() {
            panic!("the daemon exited: {status}");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    let second = check_pair(&env, &key, &cert, &agent, renewed_at);
    assert_ne!(second, first, "still the revoked certificate");
}

/// The chain at `cert` certifies the key at `key` for `agent`; returns the leaf's serial.
fn check_pair(
    env: &Env,
    key: &std::path::Path,
    cert: &std::path::Path,
    agent: &str,
    signed_at: time::OffsetDateTime,
) -> Vec<u8> {
    let chain = pem_certs(&std::fs::read_to_string(cert).unwrap());
    assert_eq!(chain.len(), 2, "leaf and issuing CA");
    let expect = agentca_testkit::Expectation::new(agent, signed_at)
        .csr_public_key_spki(spki_of_key(key))
        .base_url(BASE_URL);
    env.check_leaf(&chain[0], &expect);
    chain[0].clone()
}

/// CLI-5: `renew` killed with SIGKILL at any point leaves a usable pair: the key and the
/// certificate read through the two paths always belong together.
#[test]
fn renewals_killed_at_random_points_never_leave_a_mismatched_pair() {
    let env = Env::with_ca();
    let agent = env.add_agent("/agent/killed", &[]);
    let server = AcmeServer::start(&env);
    let (kid, hmac) = server.eab(&agent);
    std::fs::create_dir_all(env.path("agent")).unwrap();
    let key = env.path("agent/key.pem");
    let cert = env.path("agent/cert.pem");
    let (key_arg, cert_arg) = (key.display().to_string(), cert.display().to_string());
    let root = env.data_file("root.pem").display().to_string();
    let enrolled_at = now();
    env.run(&[
        "enroll",
        "--agent",
        &agent,
        "--key",
        &key_arg,
        "--cert",
        &cert_arg,
        "--acme",
        &server.acme_directory_url(),
        "--eab-kid",
        &kid,
        "--eab-hmac",
        &hmac,
        "--ca",
        &root,
    ])
    .success();
    let mut seen = kill_renewals(&env, &key, &cert, 12, std::time::Duration::from_millis(7));
    seen.insert(check_pair(&env, &key, &cert, &agent, enrolled_at));
    // At the end a renewal still works from whatever the kills left.
    let renewed_at = now();
    env.run(&["renew", "--key", &key_arg, "--cert", &cert_arg])
        .success();
    seen.insert(check_pair(&env, &key, &cert, &agent, renewed_at));
    println!("{} distinct certificates seen installed", seen.len());
    assert!(seen.len() >= 2);
}

/// CLI-5 against any CA: `renew` started `rounds` times and killed with SIGKILL, a little
/// later each round (3 ms, then `step` more per round), so the kills spread over a renewal's
/// life. After each kill the key and the certificate read through the two paths belong
/// together and the key is mode 0600. Returns the leaves seen installed.
pub(super) fn kill_renewals(
    env: &Env,
    key: &std::path::Path,
    cert: &std::path::Path,
    rounds: u32,
    step: std::time::Duration,
) -> std::collections::BTreeSet<Vec<u8>> {
    let (key_arg, cert_arg) = (key.display().to_string(), cert.display().to_string());
    let mut seen = std::collections::BTreeSet::new();
    for round in 0..rounds {
        let mut renew = env
            .bare()
            .args(["renew", "--key", &key_arg, "--cert", &cert_arg])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(3) + step * round);
        let _ = renew.kill();
        let _ = renew.wait();
        let chain = pem_certs(&std::fs::read_to_string(cert).unwrap());
        let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
        assert_eq!(
            leaf.public_key().raw,
            spki_of_key(key),
            "a mismatched pair after a kill in round {round}"
        );
        assert_eq!(
            std::fs::metadata(key).unwrap().permissions().mode() & 0o777,
            0o600,
            "the key's mode after a kill in round {round}"
        );
        seen.insert(chain[0].clone());
    }
    seen
}

/// The ACME-only options are refused with SCEP, and `--identifiers dns` needs a DNS name,
/// before anything is sent or written.
#[test]
fn enroll_refuses_options_that_do_not_fit() {
    let env = Env::empty();
    let ca = env.write("ca.pem", "not used");
    let base = |protocol: &[&str]| {
        let mut args = vec![
            "enroll".to_owned(),
            "--agent".into(),
            agent_id("/agent/args"),
            "--key".into(),
            env.path("key.pem").display().to_string(),
            "--cert".into(),
            env.path("cert.pem").display().to_string(),
            "--ca".into(),
            ca.display().to_string(),
        ];
        args.extend(protocol.iter().map(|s| (*s).to_owned()));
        args
    };
    let scep = ["--scep", "http://127.0.0.1:9/scep", "--challenge", "c"];
    for extra in [
        &["--http-01-listen", "127.0.0.1:80"][..],
        &["--tls-ca", "ca.pem"],
        &["--identifiers", "dns"],
    ] {
        let mut args = base(&scep);
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let outcome = Outcome::of(env.bare().args(&args));
        assert!(outcome.error_line().contains("are for ACME"), "{outcome}");
    }
    let acme = [
        "--acme",
        "https://127.0.0.1:9/dir",
        "--eab-kid",
        "k",
        "--eab-hmac",
        "h",
        "--identifiers",
        "dns",
    ];
    let outcome = Outcome::of(env.bare().args(base(&acme)));
    assert!(
        outcome.error_line().contains("needs at least one --dns"),
        "{outcome}"
    );
    assert!(!env.path("key.pem").exists() && !env.path("cert.pem").exists());
}
