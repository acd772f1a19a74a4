//! `--store postgres://…`: a CA whose records live in PostgreSQL, used from two data
//! directories (two nodes) at once, on a throwaway cluster. Skipped with a notice when
//! PostgreSQL is not installed, a failure under `AGENTCA_REQUIRE_TOOLS=1`.

use super::support::*;

const PASSWORD: &str = "pw-not-for-logs";

/// A fresh database's URL, with a password (trust authentication ignores it) that must never
/// be printed.
fn database() -> Option<String> {
    let url = agentca_testkit::postgres::shared()?.fresh_database();
    Some(url.replacen("postgres@", &format!("postgres:{PASSWORD}@"), 1))
}

#[test]
fn two_nodes_share_one_database() {
    let Some(url) = database() else { return };
    let one = Env::empty();
    one.init(&["--store", &url]).success();
    let config = std::fs::read_to_string(one.data_file("config.toml")).unwrap();
    assert!(config.contains("store = \"postgres\""), "{config}");
    assert!(
        !config.contains(PASSWORD),
        "the URL was written to config.toml"
    );
    assert!(
        !one.data_file("store").exists(),
        "an embedded store was created too"
    );
    let two = one.second_node();

    let id = agent_id("/agent/shared");
    one.run(&["--store", &url, "agent", "add", &id]).success();
    // The environment variable works as well as the option.
    let mut show = two.command();
    show.env("AGENTCA_STORE", &url).args(["agent", "show", &id]);
    Outcome::of(&mut show).success();

    // Issued on one node, listed and revoked on the other.
    let csr = two.csr("shared");
    let serial = serial_of(&two.issue(&id, &csr, &["--store", &url]));
    let listed = one.cert_list(&["--store", &url]);
    assert_eq!(listed.len(), 1);
    one.run(&["--store", &url, "revoke", &serial]).success();
    let again = two.run(&["--store", &url, "revoke", &serial]);
    assert_ne!(again.status.code(), Some(0), "revoked twice:\n{again}");

    // One CRL number sequence for the CA, whichever node signs.
    let out = one.path("one.crl");
    let first = one
        .run(&["--store", &url, "crl", "--out", out.to_str().unwrap()])
        .success();
    let out = two.path("two.crl");
    let second = two
        .run(&["--store", &url, "crl", "--out", out.to_str().unwrap()])
        .success();
    assert!(first.stdout.contains("CRL number 1 "), "{first}");
    assert!(second.stdout.contains("CRL number 2 "), "{second}");
}

#[test]
fn the_store_kind_must_match_the_ca() {
    let Some(url) = database() else { return };
    let pg = Env::empty();
    pg.init(&["--store", &url]).success();
    let out = pg.run(&["agent", "list"]);
    assert!(out.error_line().contains("PostgreSQL"), "{out}");

    let sled = Env::with_ca();
    let Some(other) = database() else { return };
    let out = sled.run(&["--store", &other, "agent", "list"]);
    assert!(out.error_line().contains("embedded store"), "{out}");
    assert!(!out.stderr.contains(PASSWORD), "{out}");

    // A database that already serves a CA gets no second one.
    let again = Env::empty();
    let out = again.init(&["--store", &url]);
    assert!(out.error_line().contains("already holds"), "{out}");
    assert!(
        !again.data_file("root.key").exists(),
        "keys written before the refusal"
    );

    // A node of another CA given this database refuses it.
    let stranger = Env::empty();
    stranger.init(&["--store", &other]).success();
    let out = stranger.run(&["--store", &url, "agent", "list"]);
    assert!(out.error_line().contains("serves another CA"), "{out}");
}

#[test]
fn an_unreachable_database_is_a_clear_error() {
    let Some(url) = database() else { return };
    let env = Env::empty();
    env.init(&["--store", &url]).success();
    let port = super::harness::free_port();
    let down = format!("postgres://postgres:{PASSWORD}@127.0.0.1:{port}/agentca");
    for args in [
        vec!["agent", "list"],
        vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ],
    ] {
        let mut all = vec!["--store", down.as_str()];
        all.extend(args);
        let out = env.run(&all);
        assert_ne!(out.status.code(), Some(0), "{out}");
        assert!(out.stderr.contains("cannot connect to PostgreSQL"), "{out}");
        assert!(out.stderr.contains(&format!("127.0.0.1:{port}")), "{out}");
        assert!(!out.stderr.contains(PASSWORD), "password printed:\n{out}");
    }
    let out = env.run(&["--store", "mysql://u:pw@db/x", "agent", "list"]);
    assert!(out.error_line().contains("not a supported store"), "{out}");
    assert!(!out.stderr.contains("pw@"), "{out}");

    let fresh = Env::empty();
    let out = fresh.init(&["--store", &down]);
    assert!(out.error_line().contains("cannot connect"), "{out}");
    assert!(!fresh.data().exists(), "init left a data directory behind");
}

#[test]
fn serve_reports_a_lost_database_and_reconnects() {
    use super::harness::{Server, serve_on_free_ports};
    // Its own cluster: stopping the shared one would break the other tests.
    let Some(cluster) = agentca_testkit::postgres::PgCluster::start(&[("fsync", "off")]).unwrap()
    else {
        return;
    };
    let url = cluster.fresh_database();
    let env = Env::empty();
    env.init(&["--store", &url]).success();
    let mut cmd = serve_on_free_ports(&env);
    cmd.env("AGENTCA_STORE", &url);
    let server = Server::start(cmd);
    let healthy = |want: u16| {
        // The probe result is cached for a second.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let status = server.get("/healthz").status;
            if status == want {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "/healthz stayed {status}, not {want}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    healthy(200);
    cluster.stop_server().unwrap();
    healthy(503);
    cluster.restart_server().unwrap();
    healthy(200);
    // The operator commands work through the running server again.
    env.add_agent("/agent/after-restart", &[]);
    server.kill();
}

#[test]
fn a_ca_on_a_database_reached_over_verified_tls() {
    use agentca_testkit::postgres::{PgCluster, TlsAccess};
    // Its own cluster, which refuses plain TCP and wants the password: every session below is
    // TLS, authenticated with SCRAM.
    let Some(cluster) = PgCluster::start_tls(
        &[("fsync", "off")],
        TlsAccess::Password(PASSWORD.to_owned()),
    )
    .unwrap() else {
        return;
    };
    let Some(tls) = cluster.tls() else {
        panic!("a TLS cluster without its files")
    };
    let plain = cluster
        .fresh_database()
        .replacen("postgres@", &format!("postgres:{PASSWORD}@"), 1);
    let url = format!(
        "{plain}?sslmode=verify-full&sslrootcert={}",
        tls.root.display()
    );
    let env = Env::empty();
    env.init(&["--store", &url]).success();
    let id = agent_id("/agent/over-tls");
    env.run(&["--store", &url, "agent", "add", &id]).success();
    let listed = env.run(&["--store", &url, "agent", "list"]).success();
    assert!(listed.stdout.contains(&id), "{listed}");

    // The same database behind a certificate of another CA is refused, with the reason.
    let wrong = format!(
        "{plain}?sslmode=verify-full&sslrootcert={}",
        tls.other_root.display()
    );
    let out = env.run(&["--store", &wrong, "agent", "list"]);
    assert_ne!(out.status.code(), Some(0), "{out}");
    assert!(out.stderr.contains("certificate is not trusted"), "{out}");
    assert!(out.stderr.contains("postgres@127.0.0.1:"), "{out}");
    assert!(!out.stderr.contains(PASSWORD), "password printed:\n{out}");
    // And so is plain TCP.
    let out = env.run(&[
        "--store",
        &format!("{plain}?sslmode=disable"),
        "agent",
        "list",
    ]);
    assert!(out.stderr.contains("no pg_hba.conf entry"), "{out}");
    assert!(!out.stderr.contains(PASSWORD), "password printed:\n{out}");
}
