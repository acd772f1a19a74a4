//! `agentca revoke`, `agentca cert list` and `agentca cert show`.

use serde_json::{Value, json};

use super::harness::{Server, serve_on_free_ports};
use super::support::{Env, Outcome, agent_id, serial_of};

#[test]
fn revoke_one_certificate_with_a_reason() {
    let env = Env::with_ca();
    let alice = env.add_agent("/agent/alice", &[]);
    let first = env.issue_fresh(&alice, "a1");
    let second = env.issue_fresh(&alice, "a2");

    let doc = env.json(&["revoke", &first, "--reason", "superseded"]);
    assert_eq!(serial_of(&doc), first);
    assert_eq!(doc["status"], "revoked");
    assert_eq!(doc["revocation_reason"], "superseded");
    assert!(doc["revoked_at"].is_string());
    assert!(doc.get("certificate_pem").is_none());

    let out = env.run(&["revoke", &second]).success();
    assert_eq!(
        out.stdout.trim_end(),
        format!("revoked {second} ({alice}) reason unspecified")
    );
    let show = env.json(&["cert", "show", &second]);
    assert_eq!(
        show["revocation_reason"], "unspecified",
        "the default reason"
    );

    let revoked = env.audit_events("cert.revoked");
    assert_eq!(revoked.len(), 2);
    assert_eq!(revoked[0]["fields"]["serial"], first.as_str());
    assert_eq!(revoked[0]["fields"]["reason"], "superseded");
    env.assert_audit_intact();
}

#[test]
fn reason_names_are_rfc_5280_and_case_insensitive() {
    let env = Env::with_ca();
    let alice = env.add_agent("/agent/alice", &[]);
    for (i, (given, stored)) in [
        ("keyCompromise", "keyCompromise"),
        ("affiliationChanged", "affiliationChanged"),
        ("cessationOfOperation", "cessationOfOperation"),
        ("privilegeWithdrawn", "privilegeWithdrawn"),
        ("SUPERSEDED", "superseded"),
    ]
    .into_iter()
    .enumerate()
    {
        let serial = env.issue_fresh(&alice, &format!("r{i}"));
        let doc = env.json(&["revoke", &serial, "--reason", given]);
        assert_eq!(doc["revocation_reason"], stored);
    }
}

#[test]
fn key_compromise_blocks_the_key() {
    let env = Env::with_ca();
    let alice = env.add_agent("/agent/alice", &[]);
    let csr = env.csr("alice");
    let serial = serial_of(&env.issue(&alice, &csr, &[]));
    env.json(&["revoke", &serial, "--reason", "keyCompromise"]);
    let (kind, message) = env.json_error(&["issue", "--agent", &alice, "--csr", csr.arg()]);
    assert_eq!(kind, "badKey", "{message}");
    assert!(message.contains("keyCompromise"), "{message}");
}

#[test]
fn invalid_reasons_and_certificate_hold_are_refused() {
    let env = Env::with_ca();
    let alice = env.add_agent("/agent/alice", &[]);
    let serial = env.issue_fresh(&alice, "alice");
    for reason in ["certificateHold", "removeFromCRL", "compromised", "", "6"] {
        let out = env.run(&["revoke", &serial, "--reason", reason]);
        let line = out.error_line();
        assert!(
            reason.is_empty() || line.contains(reason),
            "the reason is not named: {line}"
        );
        let (kind, _) = env.json_error(&["revoke", &serial, "--reason", reason]);
        assert_eq!(kind, "invalidArgument", "{reason:?}");
    }
    let show = env.json(&["cert", "show", &serial]);
    assert_eq!(show["status"], "valid", "a refused revocation revoked");
    assert!(env.audit_events("cert.revoked").is_empty());
}

#[test]
fn bad_serial_strings_are_refused() {
    let env = Env::with_ca();
    let alice = env.add_agent("/agent/alice", &[]);
    let serial = env.issue_fresh(&alice, "alice");
    let cases = [
        serial.to_uppercase(),
        serial[..30].to_owned(),
        format!("{serial}0"),
        format!("0x{}", &serial[2..]),
        format!("{}zz", &serial[..30]),
        format!("00{}", &serial[2..]),
        format!("{}:{}", &serial[..2], &serial[3..]),
        String::new(),
    ];
    for bad in &cases {
        let line = env.run(&["revoke", bad]).error_line().to_owned();
        assert!(line.contains("serial"), "{bad:?}: {line}");
        let (kind, _) = env.json_error(&["revoke", bad]);
        assert_eq!(kind, "invalidArgument", "{bad:?}");
        let (kind, _) = env.json_error(&["cert", "show", bad]);
        assert_eq!(kind, "invalidArgument", "cert show {bad:?}");
    }
    assert_eq!(env.json(&["cert", "show", &serial])["status"], "valid");
}

#[test]
fn unknown_and_double_revocations_are_refused_and_audited() {
    let env = Env::with_ca();
    let alice = env.add_agent("/agent/alice", &[]);
    let serial = env.issue_fresh(&alice, "alice");

    let unknown = "7f00112233445566778899aabbccddee";
    let line = env.run(&["revoke", unknown]).error_line().to_owned();
    assert!(line.contains(unknown), "{line}");
    let (kind, _) = env.json_error(&["revoke", unknown]);
    assert_eq!(kind, "unknownSerial");
    let (kind, _) = env.json_error(&["cert", "show", unknown]);
    assert_eq!(kind, "unknownSerial");

    env.json(&["revoke", &serial, "--reason", "superseded"]);
    let line = env
        .run(&["revoke", &serial, "--reason", "keyCompromise"])
        .error_line()
        .to_owned();
    assert!(line.contains("already revoked"), "{line}");
    let (kind, _) = env.json_error(&["revoke", &serial]);
    assert_eq!(kind, "alreadyRevoked");
    let show = env.json(&["cert", "show", &serial]);
    assert_eq!(
        show["revocation_reason"], "superseded",
        "the first revocation stands"
    );

    let refused = env.audit_events("cert.revoke-refused");
    assert_eq!(refused.len(), 4, "{refused:#?}");
    assert_eq!(refused[0]["fields"]["serial"], unknown);
    assert_eq!(env.audit_events("cert.revoked").len(), 1);
    env.assert_audit_intact();
}

#[test]
fn revoke_by_agent_takes_exactly_that_agents_certificates() {
    let env = Env::with_ca();
    let a = env.add_agent("/agent/a", &[]);
    let sibling = env.add_agent("/agent/ab", &[]);
    let child = env.add_agent("/agent/a/b", &[]);
    let a1 = env.issue_fresh(&a, "a1");
    let a2 = env.issue_fresh(&a, "a2");
    let s1 = env.issue_fresh(&sibling, "s1");
    let c1 = env.issue_fresh(&child, "c1");
    env.json(&["revoke", &a2, "--reason", "superseded"]);

    let doc = env.json(&["revoke", "--agent", &a, "--reason", "cessationOfOperation"]);
    assert_eq!(doc["agent"], a.as_str());
    let revoked: Vec<String> = doc["revoked"]
        .as_array()
        .unwrap()
        .iter()
        .map(serial_of)
        .collect();
    assert_eq!(
        revoked,
        vec![a1.clone()],
        "only a's unrevoked certificate: {doc:#}"
    );
    assert_eq!(
        doc["revoked"][0]["revocation_reason"],
        "cessationOfOperation"
    );

    for (serial, status) in [
        (&a1, "revoked"),
        (&a2, "revoked"),
        (&s1, "valid"),
        (&c1, "valid"),
    ] {
        assert_eq!(
            env.json(&["cert", "show", serial])["status"],
            status,
            "{serial}"
        );
    }
    // a2 keeps its first reason.
    assert_eq!(
        env.json(&["cert", "show", &a2])["revocation_reason"],
        "superseded"
    );

    let out = env.run(&["revoke", "--agent", &a]).success();
    assert!(out.stdout.starts_with("revoked 0 certificate(s)"), "{out}");

    let (kind, _) = env.json_error(&["revoke", "--agent", &agent_id("/agent/nobody")]);
    assert_eq!(kind, "unknownAgent");
    // A serial and --agent together are a usage error.
    let out = env.run(&["revoke", &s1, "--agent", &sibling]);
    assert_eq!(out.status.code(), Some(2), "{out}");
    assert_eq!(env.json(&["cert", "show", &s1])["status"], "valid");
}

#[test]
fn cert_list_filters_by_status_and_agent() {
    let env = Env::with_ca();
    let a = env.add_agent("/agent/a", &[]);
    let sibling = env.add_agent("/agent/ab", &[]);
    let child = env.add_agent("/agent/a/b", &[]);
    let a1 = env.issue_fresh(&a, "a1");
    let a2 = env.issue_fresh(&a, "a2");
    let s1 = env.issue_fresh(&sibling, "s1");
    let c1 = env.issue_fresh(&child, "c1");
    env.json(&["revoke", &a2]);
    env.json(&["revoke", &s1]);

    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        env.listed_serials(&[]),
        sorted(vec![a1.clone(), a2.clone(), s1.clone(), c1.clone()])
    );
    assert_eq!(
        env.listed_serials(&["--status", "valid"]),
        sorted(vec![a1.clone(), c1.clone()])
    );
    assert_eq!(
        env.listed_serials(&["--status", "revoked"]),
        sorted(vec![a2.clone(), s1.clone()])
    );
    assert!(env.listed_serials(&["--status", "expired"]).is_empty());
    assert_eq!(
        env.listed_serials(&["--agent", &a]),
        sorted(vec![a1.clone(), a2.clone()])
    );
    assert_eq!(env.listed_serials(&["--agent", &sibling]), vec![s1.clone()]);
    assert_eq!(env.listed_serials(&["--agent", &child]), vec![c1.clone()]);
    assert_eq!(
        env.listed_serials(&["--agent", &a, "--status", "valid"]),
        vec![a1.clone()]
    );
    assert!(
        env.listed_serials(&["--agent", &agent_id("/agent/nobody")])
            .is_empty()
    );
    // A prefix of an agent ID is not an agent.
    assert!(
        env.listed_serials(&["--agent", &agent_id("/agent")])
            .is_empty()
    );

    // Text: one line per certificate.
    let text = env.run(&["cert", "list", "--agent", &a]).success().stdout;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{a1}\tvalid\t")) && l.ends_with(&a)),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{a2}\trevoked\t"))),
        "{text}"
    );
    let empty = env
        .run(&["cert", "list", "--status", "expired"])
        .success()
        .stdout;
    assert_eq!(empty, "no certificates\n");
    let bad = env.run(&["cert", "list", "--status", "suspended"]);
    assert_eq!(bad.status.code(), Some(2), "{bad}");
}

#[test]
fn cert_show_in_text_and_json() {
    let env = Env::with_ca();
    let alice = env.add_agent("/agent/alice", &[]);
    let csr = env.csr("alice");
    let issued = env.issue(&alice, &csr, &["--ttl", "1h"]);
    let serial = serial_of(&issued);

    let text = env.run(&["cert", "show", &serial]).success().stdout;
    for line in [
        format!("serial:     {serial}"),
        format!("agent:      {alice}"),
        "status:     valid".to_owned(),
        "method:     cli".to_owned(),
        format!("not before: {}", issued["not_before"].as_str().unwrap()),
        format!("not after:  {}", issued["not_after"].as_str().unwrap()),
        format!("key sha256: {}", issued["key_sha256"].as_str().unwrap()),
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
    }
    assert!(!text.contains("revoked:"), "{text}");
    let certs = super::support::pem_certs(&text[text.find("-----BEGIN").unwrap()..]);
    assert_eq!(
        certs,
        super::support::pem_certs(issued["certificate_pem"].as_str().unwrap())
    );

    env.json(&["revoke", &serial, "--reason", "keyCompromise"]);
    let text = env.run(&["cert", "show", &serial]).success().stdout;
    assert!(text.contains("status:     revoked"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("revoked:    ") && l.ends_with("(keyCompromise)")),
        "{text}"
    );
    let doc = env.json(&["cert", "show", &serial]);
    assert_eq!(doc["status"], "revoked");
    assert_eq!(doc["revocation_reason"], "keyCompromise");
    assert_eq!(doc["certificate_pem"], issued["certificate_pem"]);
}

/// ARI-3's second half: after a mass renewal, revoke what was replaced and only that. A
/// certificate is replaced by a later valid one of the same agent naming at least as much;
/// for keyCompromise the successor must have another key, since revoking would take it too.
#[test]
fn revoke_replaced_revokes_only_what_a_later_certificate_replaces() {
    let env = Env::with_ca();
    let alice = env.add_agent(
        "/agent/alice",
        &["--dns", "a.example.org", "--dns", "b.example.org"],
    );
    let bob = env.add_agent("/agent/bob", &[]);
    let carol = env.add_agent("/agent/carol", &[]);
    // Issuance times are whole seconds, and certificates of the same second do not replace
    // one another: each issuance here starts in a new second.
    let next_second = || std::thread::sleep(std::time::Duration::from_millis(1050));
    let issue = |agent: &str, name: &str, dns: &[&str]| {
        let csr = env.csr_with(name, super::support::KeyAlg::P256, dns);
        next_second();
        serial_of(&env.issue(agent, &csr, &[]))
    };
    let alice_old = issue(&alice, "a1", &["a.example.org"]);
    let alice_new = issue(&alice, "a2", &["a.example.org"]);
    // Newer, but for another name: it replaces neither.
    let alice_other = issue(&alice, "a3", &["b.example.org"]);
    let bob_only = issue(&bob, "b1", &[]);
    let carol_csr = env.csr("c1");
    let carol_old = serial_of(&env.issue(&carol, &carol_csr, &[]));
    next_second();
    let carol_new = serial_of(&env.issue(&carol, &carol_csr, &[]));

    // For keyCompromise, carol's successor has the same key and does not count.
    let doc = env.json(&[
        "revoke",
        "--replaced",
        "--agent",
        &carol,
        "--reason",
        "keyCompromise",
    ]);
    assert_eq!(doc["revoked"], json!([]), "{doc}");
    assert_eq!(env.json(&["cert", "show", &carol_old])["status"], "valid");

    let doc = env.json(&["revoke", "--replaced"]);
    assert_eq!(doc["reason"], "superseded", "the default reason");
    let pairs = replaced_pairs(&doc);
    let mut want = vec![
        (alice_old.clone(), alice_new.clone()),
        (carol_old.clone(), carol_new.clone()),
    ];
    want.sort();
    assert_eq!(pairs, want, "{doc}");
    for (serial, status) in [
        (&alice_old, "revoked"),
        (&alice_new, "valid"),
        (&alice_other, "valid"),
        (&bob_only, "valid"),
        (&carol_old, "revoked"),
        (&carol_new, "valid"),
    ] {
        let show = env.json(&["cert", "show", serial]);
        assert_eq!(show["status"], status, "{serial}");
    }
    assert_eq!(
        env.json(&["cert", "show", &alice_old])["revocation_reason"],
        "superseded"
    );
    // Again: nothing left to revoke.
    let doc = env.json(&["revoke", "--replaced"]);
    assert_eq!(doc["revoked"], json!([]), "{doc}");

    // A cohort asked to renew early is listed until its replacement exists.
    let asked = env.json(&["cert", "renew-early", "--agent", &bob, "--within", "10m"]);
    assert_eq!(asked["agents"], json!([bob]), "{asked}");
    assert_eq!(asked["to_replace"], json!([bob_only]), "{asked}");
    assert_eq!(asked["within"], "10m");
    let shown = env.json(&["agent", "show", &bob]);
    assert_eq!(shown["early_renewal"]["within"], "10m", "{shown}");
    let doc = env.json(&["revoke", "--replaced"]);
    assert_eq!(doc["revoked"], json!([]), "{doc}");
    let waiting: Vec<&str> = doc["awaiting_replacement"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["serial"].as_str().unwrap())
        .collect();
    assert_eq!(waiting, [bob_only.as_str()], "{doc}");
    let text = env.run(&["revoke", "--replaced"]).success().stdout;
    assert!(text.contains("have no replacement yet"), "{text}");
    assert!(text.contains(&bob_only), "{text}");

    let bob_new = issue(&bob, "b2", &[]);
    let doc = env.json(&["revoke", "--replaced", "--agent", &bob]);
    assert_eq!(doc["revoked"][0]["serial"], bob_only.as_str(), "{doc}");
    assert_eq!(doc["revoked"][0]["replaced_by"], bob_new.as_str(), "{doc}");
    assert_eq!(doc["awaiting_replacement"], json!([]), "{doc}");
    assert_eq!(env.audit_events("agent.renewal-advised").len(), 1);
    assert_eq!(env.audit_events("cert.revoked").len(), 3);
    env.assert_audit_intact();
}

/// `cert renew-early` checks everything before it changes anything.
#[test]
fn renew_early_refuses_bad_input_and_changes_nothing() {
    let env = Env::with_ca();
    let alice = env.add_agent("/agent/alice", &[]);
    let ghost = agent_id("/agent/ghost");
    let (kind, message) =
        env.json_error(&["cert", "renew-early", "--agent", &alice, "--agent", &ghost]);
    assert_eq!(kind, "unknownAgent", "{message}");
    for within in ["0s", "8d", "soon", ""] {
        let (kind, message) = env.json_error(&["cert", "renew-early", "--all", "--within", within]);
        assert_eq!(kind, "invalidArgument", "{within:?}: {message}");
    }
    let (kind, message) = env.json_error(&["cert", "renew-early", "--policy", "nosuch"]);
    assert_eq!(kind, "invalidArgument", "{message}");
    assert_eq!(
        env.json(&["agent", "show", &alice])["early_renewal"],
        Value::Null
    );
    assert!(env.audit_events("agent.renewal-advised").is_empty());
    // A cohort must be named, and --replaced does not go with a serial.
    let none = env.run(&["cert", "renew-early"]);
    assert_eq!(none.status.code(), Some(2), "{none}");
    let serial = env.issue_fresh(&alice, "a1");
    let both = env.run(&["revoke", &serial, "--replaced"]);
    assert_eq!(both.status.code(), Some(2), "{both}");
    assert_eq!(env.json(&["cert", "show", &serial])["status"], "valid");

    // A disabled agent is left out: nothing can be issued to it.
    let bob = env.add_agent("/agent/bob", &[]);
    env.run(&["agent", "disable", &bob]).success();
    let doc = env.json(&["cert", "renew-early", "--policy", "default"]);
    assert_eq!(doc["agents"], json!([alice]), "{doc}");
    assert_eq!(doc["skipped_disabled"], json!([bob]), "{doc}");
    assert_eq!(doc["to_replace"], json!([serial]), "{doc}");
    assert_eq!(doc["not_acme"], 1, "a CLI-issued certificate has no ARI");
}

/// What `revoke --replaced --output json` revoked: `(serial, replaced_by)` pairs, sorted.
pub(crate) fn replaced_pairs(doc: &Value) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = doc["revoked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["serial"].as_str().unwrap().to_owned(),
                p["replaced_by"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    pairs.sort();
    pairs
}

/// OPS-2: `revoke --dry-run` lists what the same command would revoke — the other
/// certificates of the key for keyCompromise, the replaced ones for `--replaced` — refuses
/// what it would refuse, needs no passphrase, and changes nothing: no revocation, no blocked
/// key, no audit entry. The real command then revokes exactly what it listed.
#[test]
fn a_dry_run_lists_what_a_revocation_would_take_and_changes_nothing() {
    let env = Env::with_ca();
    let alice = env.add_agent("/agent/alice", &[]);
    let bob = env.add_agent("/agent/bob", &[]);
    // Certificates of the same second do not replace one another.
    let next_second = || std::thread::sleep(std::time::Duration::from_millis(1050));
    let shared_key = env.csr("shared");
    let a1 = serial_of(&env.issue(&alice, &shared_key, &[]));
    let b1 = serial_of(&env.issue(&bob, &shared_key, &[]));
    next_second();
    let a2 = env.issue_fresh(&alice, "a2");
    let before = (
        env.cert_list(&[]),
        env.audit_entries().len(),
        env.serial_count(),
    );
    let dry_run = |args: &[&str]| {
        let mut cmd = env.command();
        cmd.env_remove("AGENTCA_PASSPHRASE")
            .args(["--output", "json", "revoke", "--dry-run"])
            .args(args);
        let doc = Outcome::of(&mut cmd).success().json();
        assert_eq!(doc["dry_run"], true, "{doc}");
        doc
    };
    let serials = |docs: &Value| -> Vec<String> {
        let mut all: Vec<String> = docs
            .as_array()
            .unwrap_or_else(|| panic!("not a list: {docs}"))
            .iter()
            .map(|d| d["serial"].as_str().unwrap().to_owned())
            .collect();
        all.sort();
        all
    };
    let sorted = |mut v: Vec<&String>| {
        v.sort();
        v.into_iter().cloned().collect::<Vec<_>>()
    };

    let doc = dry_run(&[&a1, "--reason", "keyCompromise"]);
    assert_eq!(
        (serial_of(&doc), &doc["status"]),
        (a1.clone(), &json!("valid"))
    );
    assert_eq!(serials(&doc["same_key"]), vec![b1.clone()]);
    assert!(serials(&dry_run(&[&a1])["same_key"]).is_empty());
    let doc = dry_run(&["--agent", &alice]);
    assert_eq!(serials(&doc["would_revoke"]), sorted(vec![&a1, &a2]));
    let doc = dry_run(&["--agent", &alice, "--reason", "keyCompromise"]);
    assert_eq!(serials(&doc["would_revoke"]), sorted(vec![&a1, &a2, &b1]));
    let doc = dry_run(&["--replaced"]);
    assert_eq!(
        doc["would_revoke"],
        json!([{ "serial": a1, "agent": alice, "replaced_by": a2 }]),
        "{doc}"
    );
    let out = env
        .run(&["revoke", "--dry-run", "--agent", &alice])
        .success();
    assert!(
        out.stdout
            .starts_with("dry run, nothing changed: would revoke 2 certificate(s) of"),
        "{out}"
    );
    // Refused as the revocation would be, with the same kinds.
    let unknown = "7f00112233445566778899aabbccddee";
    let (kind, _) = env.json_error(&["revoke", "--dry-run", unknown]);
    assert_eq!(kind, "unknownSerial");
    let (kind, _) = env.json_error(&["revoke", "--dry-run", &a1, "--reason", "removeFromCRL"]);
    assert_eq!(kind, "invalidArgument");

    assert_eq!(
        (
            env.cert_list(&[]),
            env.audit_entries().len(),
            env.serial_count()
        ),
        before,
        "a dry run changed something"
    );
    // The key is not blocked: it is certified again.
    env.issue(&alice, &shared_key, &[]);

    // The real command needs the passphrase and revokes what the dry run listed.
    let mut cmd = env.command();
    cmd.env_remove("AGENTCA_PASSPHRASE").args(["revoke", &a1]);
    assert_ne!(Outcome::of(&mut cmd).status.code(), Some(0));
    assert_eq!(env.json(&["cert", "show", &a1])["status"], "valid");
    let predicted =
        serials(&dry_run(&["--agent", &bob, "--reason", "keyCompromise"])["would_revoke"]);
    let doc = env.json(&["revoke", "--agent", &bob, "--reason", "keyCompromise"]);
    assert_eq!(serials(&doc["revoked"]), predicted);
    let (kind, _) = env.json_error(&["revoke", "--dry-run", &b1]);
    assert_eq!(kind, "alreadyRevoked");

    // Through a running server's admin socket, the same.
    let server = Server::start(serve_on_free_ports(&env));
    let doc = dry_run(&["--agent", &alice]);
    assert_eq!(serials(&doc["would_revoke"]), vec![a2.clone()]);
    assert_eq!(env.json(&["cert", "show", &a2])["status"], "valid");
    drop(server);
    env.assert_audit_intact();
}
