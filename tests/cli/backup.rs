//! `backup` and `restore` (REL-9): a restored snapshot keeps every acknowledged revocation, never
//! hands out a serial again, and continues the CRL number above every published one; sled and
//! PostgreSQL stores migrate both ways; a damaged, truncated, unknown or foreign backup is
//! refused and changes nothing.

use std::path::{Path, PathBuf};

use super::harness::{Server, serve_on_free_ports};
use super::support::*;

/// `backup --out NAME` beside the data directory; must succeed.
fn backup(env: &Env, name: &str, extra: &[&str]) -> PathBuf {
    let out = env.path(name);
    let mut args = extra.to_vec();
    args.extend(["backup", "--out", out.to_str().unwrap()]);
    let doc = env.json(&args);
    assert_eq!(doc["path"], out.to_str().unwrap(), "{doc:#}");
    out
}

/// Moves the embedded store aside, as an operator restoring onto a fresh store would.
fn move_store_aside(env: &Env, name: &str) {
    std::fs::rename(env.data_file("store"), env.path(name)).unwrap();
}

/// `crl --output json`: the new CRL's number.
fn crl_number(env: &Env, extra: &[&str]) -> u64 {
    let mut args = extra.to_vec();
    args.push("crl");
    env.json(&args)["number"].as_u64().unwrap()
}

fn cert_status(env: &Env, serial: &str, extra: &[&str]) -> String {
    let mut args = extra.to_vec();
    args.extend(["cert", "show", serial]);
    env.json(&args)["status"].as_str().unwrap().to_owned()
}

fn issue_to_file(env: &Env, agent: &str, name: &str) -> (String, PathBuf) {
    let csr = env.csr(name);
    let out = env.path(&format!("{name}.pem"));
    let doc = env.issue(agent, &csr, &["--out", out.to_str().unwrap()]);
    (serial_of(&doc), out)
}

#[test]
fn a_restored_snapshot_keeps_later_revocations_serials_and_crl_numbers() {
    let env = Env::with_ca();
    let agent = env.add_agent("/agent/backup", &[]);
    let (early, early_pem) = issue_to_file(&env, &agent, "early");
    let first_crl = crl_number(&env, &[]);
    let snapshot = backup(&env, "snapshot.agentca-backup", &[]);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&snapshot).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "backup file mode {mode:o}");

    // After the snapshot: a revocation of a certificate it holds, two issuances (one revoked;
    // nobody kept the other's file), and CRLs published with higher numbers; one of them saved
    // as a relying party would.
    env.run(&["revoke", &early, "--reason", "keyCompromise"])
        .success();
    let (later, later_pem) = issue_to_file(&env, &agent, "later");
    let unsaved = serial_of(&env.issue(&agent, &env.csr("unsaved"), &[]));
    env.run(&["revoke", &later]).success();
    let saved = env.path("published.crl");
    env.run(&["crl", "--out", saved.to_str().unwrap()])
        .success();
    let last_published = crl_number(&env, &[]);
    assert!(last_published > first_crl);

    move_store_aside(&env, "store.old");
    let doc = env.json(&[
        "restore",
        snapshot.to_str().unwrap(),
        "--published-crl",
        saved.to_str().unwrap(),
    ]);
    assert_eq!(doc["target"], "sled", "{doc:#}");
    let mut replayed = vec![early.clone(), later.clone()];
    replayed.sort();
    assert_eq!(
        doc["revocations_replayed"],
        serde_json::json!(replayed),
        "{doc:#}"
    );
    assert_eq!(
        doc["revocations_not_restorable"],
        serde_json::json!([]),
        "{doc:#}"
    );
    // Both later certificates come back from their audit lines, which carry them.
    let mut issued_later = vec![later.clone(), unsaved.clone()];
    issued_later.sort();
    assert_eq!(
        doc["certificates_restored"],
        serde_json::json!(issued_later),
        "{doc:#}"
    );
    assert_eq!(
        doc["certificates_not_restorable"],
        serde_json::json!([]),
        "{doc:#}"
    );
    assert_eq!(doc["crl_number_known"].as_u64().unwrap(), last_published);
    assert!(doc["crl_number"].as_u64().unwrap() > last_published);
    assert_eq!(doc["keys_blocked"], 1, "{doc:#}");

    // Both later revocations survived, and the certificate nobody kept is back, unrevoked.
    assert_eq!(cert_status(&env, &early, &[]), "revoked");
    assert_eq!(cert_status(&env, &later, &[]), "revoked");
    assert_eq!(cert_status(&env, &unsaved, &[]), "valid");
    assert_eq!(env.serial_count(), 3);
    let next = crl_number(&env, &[]);
    assert!(
        next > last_published,
        "CRL number {next} after {last_published}"
    );
    assert_eq!(env.audit_events("store.restored").len(), 1);

    // A served node answers from the restored store: revoked, and the CRL lists both.
    let server = Server::start(serve_on_free_ports(&env));
    for pem in [&early_pem, &later_pem] {
        let out = env.run(&[
            "verify",
            "--cert",
            pem.to_str().unwrap(),
            "--ca",
            env.data_file("root.pem").to_str().unwrap(),
            "--ocsp",
            &server.url("/ocsp"),
        ]);
        assert!(out.error_line().contains("revoked"), "{out}");
    }
    // The running server holds the embedded store: both commands refuse at once.
    let out = env.run(&["backup", "--out", env.path("x").to_str().unwrap()]);
    assert!(out.error_line().contains("stop it"), "{out}");
    let out = env.run(&["restore", snapshot.to_str().unwrap()]);
    assert!(out.error_line().contains("stop it"), "{out}");
    server.kill();

    // New issuance works on the restored store.
    env.issue_fresh(&agent, "after");
}

/// Restores `file` expecting a refusal whose message contains `why`, and checks that no
/// store appeared.
fn assert_refused(env: &Env, file: &Path, why: &str) {
    let out = env.run(&["restore", file.to_str().unwrap()]);
    let line = out.error_line();
    assert!(line.contains(why), "expected {why:?}:\n{out}");
    assert!(line.contains("nothing was changed"), "{out}");
    assert!(!env.data_file("store").exists(), "a store appeared: {why}");
}

#[test]
fn damaged_truncated_unknown_and_foreign_backups_are_refused() {
    let env = Env::with_ca();
    let agent = env.add_agent("/agent/refused", &[]);
    env.issue_fresh(&agent, "one");
    let good = backup(&env, "good.agentca-backup", &[]);
    let bytes = std::fs::read(&good).unwrap();

    // Into a store that holds records: refused, the store keeps its certificate.
    let out = env.run(&["restore", good.to_str().unwrap()]);
    assert!(out.error_line().contains("already holds records"), "{out}");
    assert_eq!(env.cert_list(&[]).len(), 1);
    move_store_aside(&env, "store.old");

    // One flipped byte in the middle of a record.
    let mut flipped = bytes.clone();
    let at = bytes.len() / 2;
    flipped[at] ^= 0x01;
    assert_refused(&env, &env.write("flipped", &flipped), "checksum mismatch");

    // Cut short, anywhere (the end line goes with it).
    for keep in [bytes.len() - 1, bytes.len() - 40, bytes.len() / 3] {
        assert_refused(&env, &env.write("cut", &bytes[..keep]), "truncated");
    }

    // A version this agentca does not know.
    let text = String::from_utf8(bytes.clone()).unwrap();
    let newer = text.replacen("\"version\":1,", "\"version\":2,", 1);
    assert_ne!(newer, text);
    assert_refused(&env, &env.write("newer", newer), "format version 2");

    // Not a backup at all.
    assert_refused(&env, &env.write("junk", "hello\n"), "not an agentca backup");

    // Another CA's backup, intact.
    let other = Env::with_ca();
    let foreign = backup(&other, "foreign.agentca-backup", &[]);
    assert_refused(&env, &foreign, "another CA");

    // The intact one still restores after all that.
    env.run(&["restore", good.to_str().unwrap()]).success();
    assert_eq!(env.cert_list(&[]).len(), 1);
}

const PASSWORD: &str = "pw-not-for-logs";

fn database() -> Option<String> {
    let url = agentca_testkit::postgres::shared()?.fresh_database();
    Some(url.replacen("postgres@", &format!("postgres:{PASSWORD}@"), 1))
}

#[test]
fn sled_migrates_to_postgres_and_back() {
    let Some(url) = database() else { return };
    let env = Env::with_ca();
    let agent = env.add_agent("/agent/migrant", &[]);
    let kept = env.issue_fresh(&agent, "kept");
    let revoked = env.issue_fresh(&agent, "revoked");
    env.run(&["revoke", &revoked]).success();
    let before_move = crl_number(&env, &[]);
    let listed = env.listed_serials(&[]);
    let to_pg = backup(&env, "to-pg.agentca-backup", &[]);

    // sled → PostgreSQL: the CA now needs --store, and holds the same certificates.
    let out = env.run(&["--store", &url, "restore", to_pg.to_str().unwrap()]);
    let out = out.success();
    assert!(out.stdout.contains("postgres"), "{out}");
    assert!(
        !out.stdout.contains(PASSWORD) && !out.stderr.contains(PASSWORD),
        "{out}"
    );
    let config = std::fs::read_to_string(env.data_file("config.toml")).unwrap();
    assert!(config.contains("store = \"postgres\""), "{config}");
    assert!(!config.contains(PASSWORD));
    let pg = ["--store", url.as_str()];
    assert_eq!(env.listed_serials(&pg), listed);
    assert_eq!(cert_status(&env, &revoked, &pg), "revoked");
    assert_eq!(cert_status(&env, &kept, &pg), "valid");
    let on_pg = crl_number(&env, &pg);
    assert!(on_pg > before_move);
    // A second restore into the now used database is refused.
    let out = env.run(&["--store", &url, "restore", to_pg.to_str().unwrap()]);
    assert!(out.error_line().contains("already holds records"), "{out}");

    // Work on PostgreSQL, then PostgreSQL → sled.
    let pg_only = serial_of(&env.issue(&agent, &env.csr("pg-only"), &pg));
    env.run(&["--store", &url, "revoke", &kept]).success();
    let to_sled = backup(&env, "to-sled.agentca-backup", &pg);
    move_store_aside(&env, "store.before-pg");
    let doc = env.json(&["restore", to_sled.to_str().unwrap()]);
    assert_eq!(doc["source"], "postgres", "{doc:#}");
    assert_eq!(doc["target"], "sled", "{doc:#}");
    assert_eq!(doc["config_updated"], true, "{doc:#}");
    let mut all = listed.clone();
    all.push(pg_only.clone());
    all.sort();
    assert_eq!(env.listed_serials(&[]), all);
    assert_eq!(cert_status(&env, &kept, &[]), "revoked");
    assert_eq!(cert_status(&env, &pg_only, &[]), "valid");
    assert!(crl_number(&env, &[]) > on_pg);
}

#[test]
fn a_restore_replays_the_other_nodes_audit_logs() {
    let (Some(url), Some(fresh)) = (database(), database()) else {
        return;
    };
    let one = Env::empty();
    one.init(&["--store", &url]).success();
    let two = one.second_node();
    let pg = ["--store", url.as_str()];
    let agent = agent_id("/agent/nodes");
    one.run(&["--store", &url, "agent", "add", &agent])
        .success();
    let early = serial_of(&one.issue(&agent, &one.csr("early"), &pg));
    let snapshot = backup(&one, "nodes.agentca-backup", &pg);

    // The other node revokes, issues and publishes after the snapshot; only its own audit
    // log says so.
    two.run(&["--store", &url, "revoke", &early]).success();
    let later = serial_of(&two.issue(&agent, &two.csr("later"), &pg));
    let published = crl_number(&two, &pg);

    let other_log = two.data_file("audit.log");
    let doc = one.json(&[
        "--store",
        &fresh,
        "restore",
        snapshot.to_str().unwrap(),
        "--audit-log",
        other_log.to_str().unwrap(),
    ]);
    assert_eq!(
        doc["revocations_replayed"],
        serde_json::json!([early]),
        "{doc:#}"
    );
    // The other node's certificate comes back from its log's line.
    assert_eq!(
        doc["certificates_restored"],
        serde_json::json!([later]),
        "{doc:#}"
    );
    assert_eq!(
        doc["certificates_not_restorable"],
        serde_json::json!([]),
        "{doc:#}"
    );
    assert!(
        doc["crl_number_known"].as_u64().unwrap() >= published,
        "{doc:#}"
    );
    let restored = ["--store", fresh.as_str()];
    assert_eq!(cert_status(&one, &early, &restored), "revoked");
    assert_eq!(cert_status(&one, &later, &restored), "valid");
    assert!(crl_number(&one, &restored) > published);
    // The other node works on the restored database too.
    assert_eq!(cert_status(&two, &early, &restored), "revoked");
}
