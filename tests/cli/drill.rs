//! ARI-3, the mass-revocation drill, end to end: renewal daemons run against the real server,
//! the operator asks one cohort to renew early, every daemon of the cohort renews within one
//! `Retry-After` plus the span, the others do not, and only then are the replaced certificates
//! revoked.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::acme_attacks::policy_like_default;
use super::harness::{AcmeServer, Server, https_get};
use super::support::{Env, agent_id, pem_certs, serial_hex};

/// Ten-minute certificates (fifteen with the five-minute backdate): their usual window opens
/// ten minutes in, and the server asks clients to look again after a twelfth of the
/// validity, so a drill is seen within 75 seconds.
const LIFETIME: [(&str, &str); 2] = [
    ("default_lifetime = \"24h\"", "default_lifetime = \"10m\""),
    ("max_lifetime = \"24h\"", "max_lifetime = \"10m\""),
];
const SPAN: Duration = Duration::from_secs(10);

/// The renewal information `server` (a node of `env`'s CA) gives for `der`: the window and
/// the `Retry-After`.
pub(crate) fn renewal_info(
    env: &Env,
    server: &Server,
    der: &[u8],
) -> (time::OffsetDateTime, time::OffsetDateTime, Duration) {
    let id = agentca_agent::acme::ari_cert_id(der).unwrap();
    let answer = https_get(
        &server.https_url(&format!("/acme/renewal-info/{id}")),
        &env.data_file("root.pem"),
        &env.path("ari"),
    )
    .expect("curl is needed");
    assert_eq!(answer.status, 200, "{}", answer.text());
    let doc: Value = serde_json::from_slice(&answer.body).unwrap();
    let at = |name: &str| {
        time::OffsetDateTime::parse(
            doc["suggestedWindow"][name].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    let retry: u64 = answer.header("retry-after").unwrap().parse().unwrap();
    (at("start"), at("end"), Duration::from_secs(retry))
}

/// One agent's files and its running `renew --daemon`, whose JSON events arrive on `events`.
struct Daemon {
    agent: String,
    cert: std::path::PathBuf,
    first: Vec<u8>,
    /// The chain file as enrolled.
    first_chain: String,
    child: Child,
    events: Receiver<Value>,
}

impl Daemon {
    fn enroll_and_start(env: &Env, server: &AcmeServer<'_>, path: &str) -> Self {
        let agent = env.add_agent(path, &[]);
        let name = path.trim_start_matches('/').replace('/', "-");
        std::fs::create_dir_all(env.path(&name)).unwrap();
        let key = env.path(&format!("{name}/key.pem"));
        let cert = env.path(&format!("{name}/cert.pem"));
        let (key_arg, cert_arg) = (key.display().to_string(), cert.display().to_string());
        server.enroll(&agent, &key, &cert);
        let first = leaf(&cert);
        let first_chain = std::fs::read_to_string(&cert).unwrap();
        let mut child = env
            .bare()
            .args([
                "--output", "json", "renew", "--daemon", "--key", &key_arg, "--cert", &cert_arg,
            ])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (send, events) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str::<Value>(&line)
                    && send.send(event).is_err()
                {
                    return;
                }
            }
        });
        Self {
            agent,
            cert,
            first,
            first_chain,
            child,
            events,
        }
    }

    /// The next event named `name` within `limit`, skipping others; `None` if none came.
    fn next(&self, name: &str, limit: Duration) -> Option<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) if event["event"] == name => return Some(event),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => return None,
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("the daemon of {} exited", self.agent)
                }
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn leaf(cert: &std::path::Path) -> Vec<u8> {
    pem_certs(&std::fs::read_to_string(cert).unwrap()).remove(0)
}

fn serials(doc: &Value, field: &str, key: &str) -> Vec<String> {
    let mut all: Vec<String> = doc[field]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v[key].as_str().unwrap().to_owned())
        .collect();
    all.sort();
    all
}

#[test]
fn ari3_a_cohort_asked_to_renew_early_renews_within_one_poll_and_only_then_is_revoked() {
    let env = Env::with_ca();
    policy_like_default(&env, "drill", &LIFETIME);
    policy_like_default(&env, "quiet", &LIFETIME);
    let server = AcmeServer::start(&env);
    let cohort = [
        Daemon::enroll_and_start(&env, &server, "/drill/a"),
        Daemon::enroll_and_start(&env, &server, "/drill/b"),
    ];
    let bystander = Daemon::enroll_and_start(&env, &server, "/quiet/c");
    // Each daemon has asked the server once and planned the usual renewal, minutes away.
    for d in cohort.iter().chain([&bystander]) {
        let planned = d
            .next("planned", Duration::from_secs(30))
            .unwrap_or_else(|| panic!("the daemon of {} planned nothing", d.agent));
        let at = time::OffsetDateTime::parse(
            planned["at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert!(
            at > super::support::now() + time::Duration::minutes(4),
            "{planned}"
        );
    }

    let asked_at = Instant::now();
    let asked = env.json(&[
        "cert",
        "renew-early",
        "--policy",
        "drill",
        "--within",
        "10s",
    ]);
    let mut want_agents = vec![agent_id("/drill/a"), agent_id("/drill/b")];
    want_agents.sort();
    assert_eq!(asked["agents"], json!(want_agents), "{asked}");
    let mut first_serials: Vec<String> = cohort.iter().map(|d| serial_hex(&d.first)).collect();
    first_serials.sort();
    let mut to_replace: Vec<String> = asked["to_replace"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    to_replace.sort();
    assert_eq!(to_replace, first_serials, "{asked}");
    assert_eq!(asked["not_acme"], 0);

    // The cohort's windows are open now and close within the span; the bystander's is as it
    // was. Both are told to look again after the same interval: the drill's latency.
    let now = super::support::now();
    let (start, _, poll) = renewal_info(&env, &server, &bystander.first);
    assert!(start > now + time::Duration::minutes(4), "{start}");
    for d in &cohort {
        let (start, end, retry) = renewal_info(&env, &server, &d.first);
        assert!(
            start <= now && now < end + time::Duration::seconds(2),
            "{start} {end}"
        );
        assert!(end <= now + time::Duration::seconds(11), "{end}");
        assert_eq!(retry, poll);
    }
    assert_eq!(poll, Duration::from_secs(75));

    // Before the replacements exist, nothing is revoked and the cohort is listed as waiting.
    let early = env.json(&["revoke", "--replaced"]);
    assert_eq!(early["revoked"], json!([]), "{early}");
    assert_eq!(
        serials(&early, "awaiting_replacement", "serial"),
        first_serials
    );

    // Every daemon of the cohort renews within one poll interval plus the span.
    let budget = poll + SPAN + Duration::from_secs(15);
    let mut renewed = Vec::new();
    for d in &cohort {
        let left = budget.saturating_sub(asked_at.elapsed());
        let event = d.next("renewed", left).unwrap_or_else(|| {
            panic!(
                "the daemon of {} did not renew within {budget:?} of the request",
                d.agent
            )
        });
        let now_installed = leaf(&d.cert);
        assert_ne!(now_installed, d.first, "{event}");
        assert_eq!(
            event["serial"],
            serial_hex(&now_installed).as_str(),
            "{event}"
        );
        renewed.push((serial_hex(&d.first), serial_hex(&now_installed)));
    }
    let took = asked_at.elapsed();
    // The bystander, under another policy, keeps its usual plan.
    assert!(
        bystander.next("renewed", Duration::from_secs(1)).is_none(),
        "a daemon outside the cohort renewed"
    );
    assert_eq!(leaf(&bystander.cert), bystander.first);

    // Now the replaced certificates are revoked, and nothing else.
    let done = env.json(&["revoke", "--replaced"]);
    assert_eq!(done["reason"], "superseded");
    let pairs = super::revoke::replaced_pairs(&done);
    renewed.sort();
    assert_eq!(pairs, renewed, "{done}");
    assert_eq!(done["awaiting_replacement"], json!([]), "{done}");
    let ocsp = server.url("/ocsp");
    for d in &cohort {
        let old = env.write(&format!("old-{}.pem", serial_hex(&d.first)), &d.first_chain);
        let (kind, message) =
            env.json_error(&["verify", "--cert", old.to_str().unwrap(), "--ocsp", &ocsp]);
        assert_eq!(kind, "revoked", "{message}");
        let current = env.json(&[
            "verify",
            "--cert",
            d.cert.to_str().unwrap(),
            "--ocsp",
            &ocsp,
        ]);
        assert_eq!(current["revocation"]["status"], "good", "{current}");
    }
    let quiet = env.json(&[
        "verify",
        "--cert",
        bystander.cert.to_str().unwrap(),
        "--ocsp",
        &ocsp,
    ]);
    assert_eq!(quiet["revocation"]["status"], "good", "{quiet}");
    eprintln!("the cohort renewed {took:?} after the request");
}
