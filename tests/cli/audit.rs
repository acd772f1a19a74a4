//! `agentca audit verify` on an honest log and on logs edited after the fact.

use super::support::{Env, agent_id};

/// A CA with a session of ordinary commands behind it, including refusals.
fn session() -> Env {
    let env = Env::with_ca();
    let alice = env.add_agent("/agent/alice", &["--owner", "ops"]);
    let bob = env.add_agent("/agent/bob", &[]);
    let a1 = env.issue_fresh(&alice, "a1");
    env.issue_fresh(&bob, "b1");
    env.json(&["revoke", &a1, "--reason", "superseded"]);
    env.json_error(&["revoke", &a1]);
    env.json_error(&["agent", "add", &alice]);
    env.json(&["agent", "disable", &bob]);
    let csr = env.csr("late");
    env.json_error(&["issue", "--agent", &bob, "--csr", csr.arg()]);
    env.json(&["crl"]);
    env
}

fn log_lines(env: &Env) -> Vec<String> {
    std::fs::read_to_string(env.data_file("audit.log"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_log(env: &Env, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(env.data_file("audit.log"), text).unwrap();
}

#[test]
fn an_honest_log_verifies_in_text_and_json() {
    let env = session();
    let lines = log_lines(&env);
    let last: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();

    let doc = env.assert_audit_intact();
    for member in [
        "broken",
        "clock_steps_back",
        "entries",
        "head",
        "intact",
        "torn_tail_bytes",
    ] {
        assert!(doc.get(member).is_some(), "{member} missing: {doc:#}");
    }
    assert_eq!(doc["clock_steps_back"], 0);
    assert_eq!(doc["entries"], lines.len());
    assert_eq!(doc["head"], last["hash"]);
    assert_eq!(doc["torn_tail_bytes"], 0);

    let out = env.run(&["audit", "verify"]).success();
    assert_eq!(
        out.stdout.lines().next(),
        Some(
            format!(
                "audit log intact: {} entries, head {}",
                lines.len(),
                last["hash"].as_str().unwrap()
            )
            .as_str()
        ),
        "{out}"
    );

    // Every event the session caused is there, in order.
    let events: Vec<String> = env
        .audit_entries()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    for event in [
        "ca.initialized",
        "agent.added",
        "cert.issued",
        "cert.revoked",
        "cert.revoke-refused",
        "agent.disabled",
        "cert.refused",
    ] {
        assert!(
            events.iter().any(|e| e == event),
            "{event} missing: {events:?}"
        );
    }
    for (i, entry) in env.audit_entries().iter().enumerate() {
        assert_eq!(entry["seq"], i + 1);
    }
    // The passphrase never reaches the log.
    let text = std::fs::read_to_string(env.data_file("audit.log")).unwrap();
    assert!(!text.contains(super::support::PASSPHRASE));
}

/// Replaces the log with `lines`, runs `audit verify` both ways and requires a break at
/// `line`; restores the original afterwards.
fn assert_broken_at(env: &Env, original: &[String], lines: &[String], line: usize, what: &str) {
    write_log(env, lines);
    let out = env.run_json(&["audit", "verify"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: verify must fail:\n{out}"
    );
    let doc = out.json();
    assert_eq!(doc["intact"], false, "{what}: {doc:#}");
    assert_eq!(doc["broken"]["line"], line, "{what}: {doc:#}");
    assert!(doc["broken"]["reason"].is_string(), "{what}: {doc:#}");
    assert_eq!(doc["entries"], line - 1, "{what}: entries before the break");

    let out = env.run(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{what}:\n{out}");
    assert!(
        out.stdout
            .starts_with(&format!("audit log broken at line {line}")),
        "{what}: the line is not named:\n{out}"
    );
    write_log(env, original);
}

#[test]
fn edits_are_detected_at_the_right_line() {
    let env = session();
    let original = log_lines(&env);
    assert!(original.len() >= 8, "{original:?}");
    let k = original.len() / 2; // a middle line, 0-based
    let line = k + 1;

    // One byte flipped in several places of the same line: inside the fields, inside the
    // hash, inside the prev link, and the seq itself.
    let target = &original[k];
    for (what, at) in [
        ("fields", target.find("\"fields\":").unwrap() + 12),
        ("hash", target.len() - 10),
        ("prev", target.find("\"prev\":").unwrap() + 10),
        ("time", target.find("\"time\":").unwrap() + 12),
    ] {
        let mut bytes = target.clone().into_bytes();
        bytes[at] ^= 0x01;
        let mut lines = original.clone();
        lines[k] = String::from_utf8(bytes).unwrap();
        assert_broken_at(
            &env,
            &original,
            &lines,
            line,
            &format!("flipped byte in {what}"),
        );
    }

    let mut dropped = original.clone();
    dropped.remove(k);
    assert_broken_at(&env, &original, &dropped, line, "dropped line");

    let mut swapped = original.clone();
    swapped.swap(k, k + 1);
    assert_broken_at(&env, &original, &swapped, line, "swapped lines");

    let mut first_dropped = original.clone();
    first_dropped.remove(0);
    assert_broken_at(&env, &original, &first_dropped, 1, "dropped first line");

    let mut duplicated = original.clone();
    duplicated.insert(k, original[k].clone());
    assert_broken_at(&env, &original, &duplicated, line + 1, "duplicated line");

    // Restored, the log verifies again.
    env.assert_audit_intact();
}

#[test]
fn a_torn_tail_is_reported_then_recovered_on_the_next_open() {
    let env = session();
    let before = log_lines(&env).len();
    let mut text = std::fs::read(env.data_file("audit.log")).unwrap();
    text.extend_from_slice(br#"{"seq":99,"time":"2026-"#);
    std::fs::write(env.data_file("audit.log"), &text).unwrap();

    let doc = env.assert_audit_intact();
    assert_eq!(doc["torn_tail_bytes"], 23);
    assert_eq!(doc["entries"], before);

    // Any command that opens the CA cuts the torn line off and records that it did.
    env.json(&["agent", "list"]);
    let doc = env.assert_audit_intact();
    assert_eq!(doc["torn_tail_bytes"], 0);
    let entries = env.audit_entries();
    assert_eq!(entries.len(), before + 1);
    let last = entries.last().unwrap();
    assert_eq!(last["event"], "audit.recovered");
    assert_eq!(last["fields"]["dropped_bytes"], 23);
}

#[test]
fn a_damaged_last_line_stops_further_writes() {
    let env = session();
    let mut lines = log_lines(&env);
    let n = lines.len();
    lines[n - 1] = lines[n - 1].replace("\"event\":\"", "\"event\":\"x");
    write_log(&env, &lines);
    let alice = agent_id("/agent/alice");
    let line = env
        .run(&["revoke", "--agent", &alice])
        .error_line()
        .to_owned();
    assert!(line.contains("audit"), "{line}");
    // Nothing was appended after the damage.
    assert_eq!(log_lines(&env).len(), n);
    // Reading commands open the log too, and refuse as well rather than hide the damage.
    env.run(&["cert", "list"]).error_line();
    // verify names the line.
    let out = env.run(&["audit", "verify"]);
    assert!(
        out.stdout
            .starts_with(&format!("audit log broken at line {n}")),
        "{out}"
    );
}

/// Copies every file under `from` into `to` (created).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn a_store_that_lost_acknowledged_writes_is_reported() {
    let env = Env::with_ca();
    let alice = env.add_agent("/agent/alice", &[]);
    let kept = env.issue_fresh(&alice, "kept");
    let old_store = env.path("store-before");
    copy_dir(&env.data_file("store"), &old_store);

    // Work the store will "lose": an issuance and a revocation.
    let lost = env.issue_fresh(&alice, "lost");
    env.json(&["revoke", &kept]);
    env.assert_audit_intact();

    std::fs::remove_dir_all(env.data_file("store")).unwrap();
    copy_dir(&old_store, &env.data_file("store"));
    let out = env.run_json(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    let doc = out.json();
    assert_eq!(doc["intact"], true, "the chain itself is fine: {doc:#}");
    assert_eq!(doc["consistent"], false, "{doc:#}");
    assert_eq!(
        doc["reconciliation"]["issued_missing_from_store"],
        serde_json::json!([lost]),
        "{doc:#}"
    );
    assert_eq!(
        doc["reconciliation"]["revoked_missing_from_store"],
        serde_json::json!([kept]),
        "{doc:#}"
    );
    let text = env.run(&["audit", "verify"]);
    assert_eq!(text.status.code(), Some(1), "{text}");
    assert!(text.stdout.contains(&lost), "{text}");
}

/// OPS-3: a checkpoint kept apart from the data directory (`audit checkpoint`, or the one
/// `serve` logs) shows what the chain alone cannot: entries cut from the end, and a log
/// rewritten whole with every hash recomputed.
#[test]
fn a_checkpoint_shows_a_log_cut_short_or_rewritten_whole() {
    let env = session();
    let original = log_lines(&env);
    let checkpoint = env.run(&["audit", "checkpoint"]).success().stdout;
    let checkpoint = checkpoint.trim();
    let last: serde_json::Value = serde_json::from_str(original.last().unwrap()).unwrap();
    assert_eq!(
        checkpoint,
        format!("{}:{}", original.len(), last["hash"].as_str().unwrap())
    );
    let doc = env.json(&["audit", "checkpoint"]);
    assert_eq!(doc["checkpoint"], checkpoint);
    assert_eq!(doc["seq"], original.len());
    assert_eq!(doc["hash"], last["hash"]);
    // One from the middle of the log, as an operator recorded it earlier.
    let middle = original.len() / 2;
    let entry: serde_json::Value = serde_json::from_str(&original[middle - 1]).unwrap();
    let earlier = format!("{middle}:{}", entry["hash"].as_str().unwrap());

    let doc = env.json(&[
        "audit",
        "verify",
        "--checkpoint",
        &earlier,
        "--checkpoint",
        checkpoint,
    ]);
    assert_eq!(doc["intact"], true, "{doc:#}");
    assert_eq!(doc["checkpoints"], serde_json::json!([earlier, checkpoint]));

    // Cut short by two entries: the chain of the rest verifies, the checkpoint does not.
    write_log(&env, &original[..original.len() - 2]);
    env.assert_audit_intact();
    let out = env.run_json(&["audit", "verify", "--checkpoint", checkpoint]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    let doc = out.json();
    assert_eq!(doc["intact"], false, "{doc:#}");
    let reason = doc["broken"]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!(
            "ends at seq {}, before the checkpoint at seq {}",
            original.len() - 2,
            original.len()
        )),
        "{reason}"
    );
    let out = env.run(&["audit", "verify", "--checkpoint", checkpoint]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(
        out.stdout.contains("entries were cut from its end"),
        "{out}"
    );

    // Rewritten whole: the agent's owner changed in its `agent.added` entry, and every hash
    // after it recomputed. The chain verifies; both checkpoints fail, at the earlier one first.
    let rewritten = rechained(&original, |line| {
        line.replace("\"owner\":\"ops\"", "\"owner\":\"eve\"")
    });
    assert_ne!(rewritten, original);
    write_log(&env, &rewritten);
    env.assert_audit_intact();
    let out = env.run_json(&[
        "audit",
        "verify",
        "--checkpoint",
        checkpoint,
        "--checkpoint",
        &earlier,
    ]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    let doc = out.json();
    assert_eq!(doc["broken"]["seq"], middle, "{doc:#}");
    assert!(
        doc["broken"]["reason"]
            .as_str()
            .unwrap()
            .contains("the log was rewritten"),
        "{doc:#}"
    );

    // A checkpoint that is not one is refused, as an argument.
    let (kind, message) = env.json_error(&["audit", "verify", "--checkpoint", "12"]);
    assert_eq!(kind, "invalidArgument", "{message}");

    write_log(&env, &original);
    env.assert_audit_intact();
}

/// `lines` with `edit` applied to each, every `prev` and `hash` recomputed (the documented
/// canonical form): what someone able to rewrite the file can produce.
fn rechained(lines: &[String], edit: impl Fn(&str) -> String) -> Vec<String> {
    use sha2::{Digest, Sha256};
    const SUFFIX: usize = ",\"hash\":\"".len() + 64 + "\"}".len();
    let mut prev = "0".repeat(64);
    lines
        .iter()
        .map(|line| {
            let body = edit(&line[..line.len() - SUFFIX]);
            let at = body.rfind(",\"prev\":\"").unwrap();
            let body = format!("{},\"prev\":\"{prev}\"", &body[..at]);
            let hash = hex::encode(Sha256::digest(format!("{body}}}").as_bytes()));
            prev = hash.clone();
            format!("{body},\"hash\":\"{hash}\"}}")
        })
        .collect()
}

/// `serve` logs its audit log's head as a checkpoint when it starts and again when it stops
/// (if the head moved); `audit checkpoint` reads it beside the running server, and `audit
/// verify --checkpoint` goes through the admin socket.
#[test]
fn serve_logs_checkpoints_and_the_cli_reads_them_beside_it() {
    use super::harness::{Server, serve_on_free_ports};
    let env = session();
    let server = Server::start(serve_on_free_ports(&env));
    server.wait_log("audit checkpoint");
    let at_start = env.run(&["audit", "checkpoint"]).success().stdout;
    let at_start = at_start.trim().to_owned();
    assert!(
        server.stderr().contains(&format!("checkpoint={at_start}")),
        "{}",
        server.stderr()
    );
    env.add_agent("/agent/carol", &[]);
    let moved = env.run(&["audit", "checkpoint"]).success().stdout;
    let moved = moved.trim().to_owned();
    assert_ne!(moved, at_start);
    let doc = env.json(&[
        "audit",
        "verify",
        "--checkpoint",
        &at_start,
        "--checkpoint",
        &moved,
    ]);
    assert_eq!(doc["intact"], true, "{doc:#}");
    let (_, log) = server.terminate();
    assert!(log.contains(&format!("checkpoint={moved}")), "{log}");
}
