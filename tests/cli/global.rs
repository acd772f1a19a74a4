//! Global options: before or after the subcommand, and from the environment.

use super::support::{Env, Outcome, TRUST_DOMAIN, agent_id};

#[test]
fn global_options_work_before_and_after_the_subcommand() {
    let env = Env::with_ca();
    env.add_agent("/agent/alice", &[]);
    let data = env.data();
    let data = data.to_str().unwrap();

    let mut before = env.bare();
    before.args(["--data-dir", data, "--output", "json", "agent", "list"]);
    let before = Outcome::of(&mut before).success().json();

    let mut after = env.bare();
    after.args(["agent", "list", "--data-dir", data, "--output", "json"]);
    let after = Outcome::of(&mut after).success().json();

    let mut between = env.bare();
    between.args(["--output", "json", "agent", "--data-dir", data, "list"]);
    let between = Outcome::of(&mut between).success().json();

    assert_eq!(before, after);
    assert_eq!(before, between);
    assert_eq!(before["agents"][0]["id"], agent_id("/agent/alice"));
}

#[test]
fn the_data_dir_comes_from_the_environment() {
    let env = Env::with_ca();
    env.add_agent("/agent/alice", &[]);

    let mut cmd = env.bare();
    cmd.env("AGENTCA_DATA_DIR", env.data())
        .args(["--output", "json", "agent", "list"]);
    let doc = Outcome::of(&mut cmd).success().json();
    assert_eq!(doc["agents"][0]["id"], agent_id("/agent/alice"));

    // The option wins over the variable.
    let mut cmd = env.bare();
    cmd.env("AGENTCA_DATA_DIR", env.path("elsewhere"))
        .arg("--data-dir")
        .arg(env.data())
        .args(["--output", "json", "agent", "list"]);
    let doc = Outcome::of(&mut cmd).success().json();
    assert_eq!(doc["agents"].as_array().unwrap().len(), 1);

    // A variable pointing at nothing is an error naming the directory.
    let mut cmd = env.bare();
    cmd.env("AGENTCA_DATA_DIR", env.path("elsewhere"))
        .args(["agent", "list"]);
    let out = Outcome::of(&mut cmd);
    let line = out.error_line();
    assert!(
        line.contains("elsewhere") && line.contains("agentca init"),
        "{line}"
    );
}

#[test]
fn the_default_data_dir_is_agentca_data_in_the_working_directory() {
    let env = Env::empty();
    let mut cmd = env.bare();
    cmd.args(["init", "--trust-domain", TRUST_DOMAIN]);
    Outcome::of(&mut cmd).success();
    assert!(env.path("agentca-data").join("root.pem").is_file());
    assert!(!env.data().exists());
}

#[test]
fn usage_errors_exit_with_2() {
    let env = Env::with_ca();
    for args in [
        vec!["--output", "yaml", "agent", "list"],
        vec!["frobnicate"],
        vec!["revoke"],
        vec!["issue", "--agent", "spiffe://example.org/agent/a"],
    ] {
        let mut cmd = env.command();
        cmd.args(&args);
        let out = Outcome::of(&mut cmd);
        assert_eq!(out.status.code(), Some(2), "{out}");
        assert!(out.stdout.is_empty(), "{out}");
    }
}

#[test]
fn a_command_without_a_ca_says_how_to_make_one() {
    let env = Env::empty();
    let line = env.run(&["cert", "list"]).error_line().to_owned();
    assert!(line.contains("agentca init"), "{line}");
    let (kind, message) = env.json_error(&["agent", "list"]);
    assert_eq!(kind, "dataDir");
    assert!(message.contains("agentca init"), "{message}");
    assert!(
        !env.data().exists(),
        "a read command created the data directory"
    );
}

/// Runs `args` with standard output a pipe whose reading end is closed at once, as with
/// `agentca ... | head -0`; returns the outcome with stderr.
fn with_closed_stdout(env: &Env, args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = env.command();
    cmd.args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // The binary needs far longer to start than this takes, so it writes into a closed pipe.
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_closed_stdout_is_not_a_panic() {
    let env = Env::with_ca();
    env.add_agent("/agent/alice", &[]);
    for args in [
        &["agent", "list"][..],
        &["--output", "json", "agent", "list"][..],
        &["agent", "show", "spiffe://example.org/agent/nobody"][..],
    ] {
        let (code, stderr) = with_closed_stdout(&env, args);
        assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
        assert!(matches!(code, Some(0 | 1)), "{args:?}: {code:?}\n{stderr}");
    }
}

#[test]
fn a_json_error_into_a_closed_stdout_is_not_a_panic() {
    let env = Env::with_ca();
    let (code, stderr) = with_closed_stdout(
        &env,
        &[
            "--output",
            "json",
            "agent",
            "show",
            "spiffe://example.org/agent/nobody",
        ],
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(code, Some(1), "{stderr}");
}
