//! `agentca agent add|list|show|disable`.

use super::support::{Env, agent_id};

#[test]
fn add_list_show_disable_in_text() {
    let env = Env::with_ca();
    let alice = agent_id("/agent/alice/mailer");
    let out = env
        .run(&[
            "agent",
            "add",
            &alice,
            "--owner",
            "team-mail",
            "--dns",
            "mail.example.org",
        ])
        .success();
    assert_eq!(
        out.stdout.trim_end(),
        format!("added agent {alice} (policy default)")
    );
    let bob = env.add_agent("/agent/bob", &[]);

    let list = env.run(&["agent", "list"]).success().stdout;
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    assert!(
        lines.contains(&format!("{alice}\tenabled\tpolicy=default\towner=team-mail").as_str()),
        "{list}"
    );
    assert!(
        lines.contains(&format!("{bob}\tenabled\tpolicy=default\towner=-").as_str()),
        "{list}"
    );

    let show = env.run(&["agent", "show", &alice]).success().stdout;
    for line in [
        format!("agent:        {alice}"),
        "status:       enabled".to_owned(),
        "policy:       default".to_owned(),
        "owner:        team-mail".to_owned(),
        "dns:          mail.example.org".to_owned(),
        "certificates: 0 (0 valid)".to_owned(),
    ] {
        assert!(show.lines().any(|l| l == line), "{line:?} missing:\n{show}");
    }

    env.issue_fresh(&alice, "alice");
    let show = env.run(&["agent", "show", &alice]).success().stdout;
    assert!(show.contains("certificates: 1 (1 valid)"), "{show}");

    let out = env.run(&["agent", "disable", &alice]).success();
    assert!(
        out.stdout.starts_with(&format!("disabled agent {alice}")),
        "{out}"
    );
    assert!(
        out.stdout.contains("revoke --agent"),
        "the hint to revoke is missing:\n{out}"
    );
    let out = env.run(&["agent", "disable", &alice]).success();
    assert!(out.stdout.starts_with("already disabled:"), "{out}");
    assert_eq!(env.audit_events("agent.disabled").len(), 1);

    let list = env.run(&["agent", "list"]).success().stdout;
    assert!(list.contains(&format!("{alice}\tdisabled\t")), "{list}");
    let show = env.run(&["agent", "show", &alice]).success().stdout;
    assert!(show.contains("status:       disabled"), "{show}");
    // Disabling does not revoke.
    assert!(show.contains("certificates: 1 (1 valid)"), "{show}");
    env.assert_audit_intact();
}

#[test]
fn add_list_show_disable_in_json() {
    let env = Env::with_ca();
    assert_eq!(
        env.json(&["agent", "list"])["agents"],
        serde_json::json!([])
    );
    assert_eq!(env.run(&["agent", "list"]).success().stdout, "no agents\n");

    let alice = agent_id("/agent/alice");
    let doc = env.json(&[
        "agent",
        "add",
        &alice,
        "--owner",
        "ops",
        "--dns",
        "a.example.org",
        "--dns",
        "b.example.org",
    ]);
    assert_eq!(doc["id"], alice.as_str());
    assert_eq!(doc["owner"], "ops");
    assert_eq!(doc["policy"], "default");
    assert!(doc["explicit_policy"].is_null());
    assert_eq!(
        doc["dns"],
        serde_json::json!(["a.example.org", "b.example.org"])
    );
    assert_eq!(doc["disabled"], false);
    let created = doc["created_at"].as_str().unwrap();
    time::OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339).unwrap();

    let list = env.json(&["agent", "list"]);
    assert_eq!(list["agents"].as_array().unwrap().len(), 1);
    assert_eq!(list["agents"][0], doc);

    let show = env.json(&["agent", "show", &alice]);
    assert_eq!(show["id"], alice.as_str());
    assert_eq!(show["certificates"], 0);
    assert_eq!(show["valid_certificates"], 0);

    let disabled = env.json(&["agent", "disable", &alice]);
    assert_eq!(disabled["disabled"], true);
    assert_eq!(env.json(&["agent", "show", &alice])["disabled"], true);

    let (kind, message) = env.json_error(&["agent", "show", &agent_id("/agent/nobody")]);
    assert_eq!(kind, "unknownAgent");
    assert!(message.contains("/agent/nobody"), "{message}");
    let (kind, _) = env.json_error(&["agent", "disable", &agent_id("/agent/nobody")]);
    assert_eq!(kind, "unknownAgent");
}

#[test]
fn non_canonical_ids_are_rejected_with_the_reason() {
    let env = Env::with_ca();
    let long = format!("spiffe://example.org/agent/{}", "a".repeat(2100));
    let cases: [(&str, &str); 16] = [
        ("SPIFFE://example.org/agent/a", "scheme"),
        ("spiffe://Example.org/agent/a", "lowercase"),
        ("spiffe://example.org:8443/agent/a", "port"),
        ("spiffe://user@example.org/agent/a", "userinfo"),
        ("spiffe://example.org/agent/a?x=1", "query"),
        ("spiffe://example.org/agent/a#frag", "fragment"),
        ("spiffe://example.org/agent/../a", "'..'"),
        ("spiffe://example.org/agent/./a", "'.'"),
        ("spiffe://example.org/agent//a", "empty path segment"),
        ("spiffe://example.org/agent/a/", "trailing slash"),
        ("spiffe://example.org/agent/%2e%2e", "percent-encoding"),
        ("spiffe://example.org/agent/%61", "percent-encoding"),
        ("spiffe://example.org", "path"),
        ("https://example.org/agent/a", "spiffe://"),
        ("example.org/agent/a", "spiffe://"),
        (long.as_str(), "2048"),
    ];
    for (id, reason) in cases {
        let out = env.run(&["agent", "add", id]);
        let line = out.error_line();
        assert!(
            line.starts_with("error: invalid agent ID: "),
            "{id}: {line}"
        );
        assert!(line.contains(reason), "{id}: expected {reason:?} in {line}");
        let (kind, message) = env.json_error(&["agent", "add", id]);
        assert_eq!(kind, "invalidAgentId", "{id}");
        assert!(message.contains(reason), "{id}: {message}");
    }
    // Nothing was registered, not even a repaired spelling.
    assert_eq!(
        env.json(&["agent", "list"])["agents"],
        serde_json::json!([])
    );
    assert!(env.audit_events("agent.added").is_empty());
}

#[test]
fn foreign_trust_domain_is_rejected() {
    let env = Env::with_ca();
    for id in [
        "spiffe://other.org/agent/a",
        "spiffe://sub.example.org/agent/a",
        "spiffe://example.com/agent/a",
    ] {
        let line = env.run(&["agent", "add", id]).error_line().to_owned();
        assert!(
            line.contains("trust domain") && line.contains("example.org"),
            "{line}"
        );
        let (kind, _) = env.json_error(&["agent", "add", id]);
        assert_eq!(kind, "invalidAgentId");
    }
    assert_eq!(
        env.json(&["agent", "list"])["agents"],
        serde_json::json!([])
    );
}

#[test]
fn duplicate_add_is_rejected_and_keeps_the_first() {
    let env = Env::with_ca();
    let alice = env.add_agent("/agent/alice", &["--owner", "first"]);
    let line = env
        .run(&["agent", "add", &alice, "--owner", "second"])
        .error_line()
        .to_owned();
    assert!(line.contains("already exists"), "{line}");
    let (kind, _) = env.json_error(&["agent", "add", &alice]);
    assert_eq!(kind, "agentExists");
    let show = env.json(&["agent", "show", &alice]);
    assert_eq!(show["owner"], "first");
    assert_eq!(env.audit_events("agent.added").len(), 1);
}

#[test]
fn bad_dns_names_are_rejected() {
    let env = Env::with_ca();
    let alice = agent_id("/agent/alice");
    for name in ["not a name", "*.example.org.", "-x.example.org", ""] {
        let (kind, message) = env.json_error(&["agent", "add", &alice, &format!("--dns={name}")]);
        assert_eq!(kind, "invalidArgument", "{name:?}: {message}");
        assert!(message.contains("--dns"), "{message}");
    }
    assert_eq!(
        env.json(&["agent", "list"])["agents"],
        serde_json::json!([])
    );
}

#[test]
fn strict_policy_refuses_an_agent_outside_its_paths() {
    let env = Env::with_ca();
    let repo_strict = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/strict.toml");
    std::fs::copy(repo_strict, env.data_file("policies/strict.toml")).unwrap();

    let alice = agent_id("/agent/alice");
    let line = env
        .run(&["agent", "add", &alice, "--policy", "strict"])
        .error_line()
        .to_owned();
    assert!(
        line.contains("\"strict\""),
        "the policy is not named: {line}"
    );
    assert!(
        line.contains("rule agents"),
        "the rule is not named: {line}"
    );
    assert!(line.contains("/agent/alice"), "{line}");
    let (kind, _) = env.json_error(&["agent", "add", &alice, "--policy", "strict"]);
    assert_eq!(kind, "policyRefused");

    // A policy that does not exist is named too.
    let (kind, message) = env.json_error(&["agent", "add", &alice, "--policy", "lenient"]);
    assert_eq!(kind, "policyFile");
    assert!(message.contains("lenient"), "{message}");

    // Inside its paths the strict policy applies, both explicitly and as the most specific.
    let pay = agent_id("/agent/payments/settle");
    let doc = env.json(&["agent", "add", &pay, "--policy", "strict"]);
    assert_eq!(doc["policy"], "strict");
    assert_eq!(doc["explicit_policy"], "strict");
    let refund = agent_id("/agent/payments/refund");
    assert_eq!(env.json(&["agent", "add", &refund])["policy"], "strict");
    // ... and it allows ACME only, so the operator CLI cannot issue, naming the rule.
    let csr = env.csr("pay");
    let (kind, message) = env.json_error(&["issue", "--agent", &pay, "--csr", csr.arg()]);
    assert_eq!(kind, "policyRefused");
    assert!(message.contains("rule methods"), "{message}");
    assert!(env.cert_list(&[]).is_empty());
    assert_eq!(
        env.json(&["agent", "list"])["agents"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn a_disabled_agent_cannot_be_issued_to_and_the_refusal_is_audited() {
    let env = Env::with_ca();
    let alice = env.add_agent("/agent/alice", &[]);
    env.run(&["agent", "disable", &alice]).success();
    let csr = env.csr("alice");
    let serials = env.serial_count();

    let line = env
        .run(&["issue", "--agent", &alice, "--csr", csr.arg()])
        .error_line()
        .to_owned();
    assert!(line.contains("disabled"), "{line}");
    let (kind, _) = env.json_error(&["issue", "--agent", &alice, "--csr", csr.arg()]);
    assert_eq!(kind, "agentDisabled");

    assert!(env.cert_list(&[]).is_empty());
    assert_eq!(
        env.serial_count(),
        serials,
        "a refused issue consumed a serial"
    );
    let refused = env.audit_events("cert.refused");
    assert_eq!(refused.len(), 2, "{refused:#?}");
    for entry in &refused {
        assert_eq!(entry["fields"]["agent"], alice.as_str());
        assert_eq!(entry["fields"]["method"], "cli");
        assert!(
            entry["fields"]["reason"]
                .as_str()
                .unwrap()
                .contains("disabled"),
            "{entry}"
        );
    }
    assert!(env.audit_events("cert.issued").is_empty());
    env.assert_audit_intact();
}

#[test]
fn issuing_to_an_unregistered_agent_is_refused_and_audited() {
    let env = Env::with_ca();
    let csr = env.csr("ghost");
    let ghost = agent_id("/agent/ghost");
    let (kind, message) = env.json_error(&["issue", "--agent", &ghost, "--csr", csr.arg()]);
    assert_eq!(kind, "unknownAgent");
    assert!(message.contains(&ghost), "{message}");
    assert_eq!(env.audit_events("cert.refused").len(), 1);
    assert!(env.cert_list(&[]).is_empty());
}
