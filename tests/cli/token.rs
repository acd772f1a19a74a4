//! `agentca token create`: one-time EAB credentials and SCEP challenges, never stored in clear.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::support::{Env, agent_id};

/// Every file under `dir`, concatenated (the store, the audit log, key files, …).
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(all_bytes(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.extend(bytes);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn acme_and_scep_tokens_are_printed_once_and_never_stored_in_clear() {
    let env = Env::with_ca();
    let alice = env.add_agent("/agent/alice", &[]);

    let acme = env.json(&["token", "create", "--agent", &alice, "--for", "acme"]);
    let kid = acme["kid"].as_str().unwrap().to_owned();
    let hmac = acme["hmac"].as_str().unwrap().to_owned();
    assert_eq!(acme["agent"], alice.as_str());
    // uacme takes KID:KEY; lego and uacme refuse padded keys.
    assert!(!kid.contains(':') && !kid.contains('=') && !kid.is_empty());
    let key = URL_SAFE_NO_PAD.decode(&hmac).unwrap();
    assert_eq!(key.len(), 32, "256-bit HMAC key");

    let scep = env.json(&[
        "token", "create", "--agent", &alice, "--for", "scep", "--ttl", "1h",
    ]);
    let challenge = scep["challenge"].as_str().unwrap().to_owned();
    assert!(challenge.len() >= 43);

    let text = env
        .run(&["token", "create", "--agent", &alice, "--for", "acme"])
        .success()
        .stdout;
    assert!(
        text.starts_with("kid:  ") && text.contains("\nhmac: "),
        "{text}"
    );

    // OPS-5: the secrets are nowhere in the data directory (store, audit log, anything).
    let everything = all_bytes(&env.data());
    for secret in [hmac.as_bytes(), &key, challenge.as_bytes()] {
        assert!(
            !contains(&everything, secret),
            "a secret is stored in clear"
        );
    }
    // Every creation is audited, by id, without the secret.
    let created = env.audit_events("token.created");
    assert_eq!(created.len(), 3);
    assert_eq!(created[0]["fields"]["id"], kid.as_str());
    assert_eq!(created[0]["fields"]["kind"], "acme");
    env.assert_audit_intact();
    // The sealing secret is a private file.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(env.data_file("token-seal.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn tokens_are_only_for_agents_that_may_use_them() {
    let env = Env::with_ca();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/strict.toml"),
        env.data_file("policies/strict.toml"),
    )
    .unwrap();
    let payments = env.add_agent("/agent/payments/p1", &[]);
    // strict.toml allows ACME only.
    let (kind, message) =
        env.json_error(&["token", "create", "--agent", &payments, "--for", "scep"]);
    assert_eq!(kind, "policyRefused");
    assert!(message.contains("rule methods"), "{message}");
    env.json(&["token", "create", "--agent", &payments, "--for", "acme"]);

    let (kind, _) = env.json_error(&[
        "token",
        "create",
        "--agent",
        &agent_id("/agent/nobody"),
        "--for",
        "acme",
    ]);
    assert_eq!(kind, "unknownAgent");

    let bob = env.add_agent("/agent/bob", &[]);
    env.run(&["agent", "disable", &bob]).success();
    let (kind, _) = env.json_error(&["token", "create", "--agent", &bob, "--for", "scep"]);
    assert_eq!(kind, "agentDisabled");

    let alice = env.add_agent("/agent/alice", &[]);
    for ttl in ["10s", "31d", "soon"] {
        let (kind, _) = env.json_error(&[
            "token", "create", "--agent", &alice, "--for", "scep", "--ttl", ttl,
        ]);
        assert_eq!(kind, "invalidArgument", "{ttl}");
    }
    assert!(env.audit_events("token.created").len() == 1);
}
