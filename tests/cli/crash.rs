//! REL-1 from the outside: `issue` and `revoke` run back to back against one data directory
//! while the test kills the running process with SIGKILL at random moments. Whatever a
//! command acknowledged (exit 0 and its JSON) must survive; nothing may be duplicated; the
//! audit log must stay a valid chain; the store must open; the CRL must list every
//! acknowledged revocation.
//!
//! The kill lands 5–400 ms after the spawn: for half the commands anywhere in that range, for
//! the other half in the last half of a typical run of that command (measured as the test
//! goes), where the store flush, the audit fsync and the output happen. A command takes
//! roughly 100–200 ms in a debug build, so most kills land mid-command and the rest let the
//! command finish and be acknowledged. Set
//! `AGENTCA_CRASH_SEED` to replay a run; the seed is printed with every failure.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use x509_parser::prelude::FromDer;

use super::support::{Env, serial_of};

/// At least this many cycles, and at least [`MIN_KILLS`] of them killed mid-command.
const MIN_CYCLES: usize = 50;
const MIN_KILLS: usize = 30;
/// Bounds, so a slow machine cannot make the test run away.
const MAX_CYCLES: usize = 150;
const MAX_LOOP_TIME: Duration = Duration::from_secs(45);
const MIN_DELAY_MS: u64 = 5;
const MAX_DELAY_MS: u64 = 400;
const SIGKILL: i32 = 9;

/// xorshift64*: enough randomness for timing, reproducible from its seed.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new() -> (Self, u64) {
        let seed = match std::env::var("AGENTCA_CRASH_SEED") {
            Ok(s) => s.parse().expect("AGENTCA_CRASH_SEED is a u64"),
            Err(_) => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos();
                (nanos as u64) | 1
            }
        };
        (Self(seed.max(1)), seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the writer asked for.
#[derive(Clone, Debug)]
enum Op {
    Issue,
    Revoke(String),
}

/// How one command ended.
enum End {
    /// Killed by the test before it exited.
    Killed,
    /// Exited on its own.
    Exited {
        code: Option<i32>,
        stdout: String,
        stderr: String,
    },
}

/// Waits for `child` until `deadline`, then kills it.
fn run_until(mut child: Child, deadline: Instant) -> End {
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            // Child::kill sends SIGKILL on Unix. The child may have exited in between; the
            // status below tells which.
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    if status.signal() == Some(SIGKILL) {
        return End::Killed;
    }
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    End::Exited {
        code: status.code(),
        stdout,
        stderr,
    }
}

#[test]
fn acknowledged_work_survives_sigkill_at_random_moments() {
    let env = Env::with_ca();
    let alice = env.add_agent("/agent/alice", &[]);
    let csrs: Vec<_> = (0..4).map(|i| env.csr(&format!("k{i}"))).collect();
    let (mut rng, seed) = Rng::new();
    let ctx = format!("crash test seed {seed} (AGENTCA_CRASH_SEED={seed} replays it)");

    // Acknowledged issuances: serial → the certificate PEM the command returned.
    let mut issued: BTreeMap<String, String> = BTreeMap::new();
    let mut issue_order: Vec<String> = Vec::new();
    // Acknowledged revocations.
    let mut revoked: BTreeSet<String> = BTreeSet::new();
    // Found revoked by a later `revoke` (an earlier, killed one got through).
    let mut found_revoked: BTreeSet<String> = BTreeSet::new();
    let (mut cycles, mut kills, mut finished) = (0usize, 0usize, 0usize);
    let mut kills_in_a_row = 0usize;
    let mut killed_ops = BTreeMap::<&str, usize>::new();
    // Running average run time of a finished issue and revoke, in ms.
    let mut typical_ms: [Option<u64>; 2] = [None, None];

    let started = Instant::now();
    while cycles < MAX_CYCLES
        && started.elapsed() < MAX_LOOP_TIME
        && (cycles < MIN_CYCLES || kills < MIN_KILLS)
    {
        cycles += 1;
        let candidates: Vec<&String> = issue_order
            .iter()
            .filter(|s| !revoked.contains(*s) && !found_revoked.contains(*s))
            .collect();
        let op = if !candidates.is_empty() && rng.below(5) < 2 {
            let pick = rng.below(candidates.len() as u64) as usize;
            Op::Revoke(candidates[pick].clone())
        } else {
            Op::Issue
        };

        let mut cmd = env.command();
        cmd.args(["--output", "json"]);
        match &op {
            Op::Issue => {
                let csr = &csrs[rng.below(csrs.len() as u64) as usize];
                cmd.args(["issue", "--agent", &alice, "--csr", csr.arg()]);
            }
            // superseded, not keyCompromise: the keys are reused and must stay usable.
            Op::Revoke(serial) => {
                cmd.args(["revoke", serial, "--reason", "superseded"]);
            }
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let kind = match op {
            Op::Issue => 0,
            Op::Revoke(_) => 1,
        };
        // Half the kills anywhere in 5–400 ms; the other half in the last half of a typical
        // run of this command, where the store flush, the audit fsync and the output happen.
        let delay_ms = match typical_ms[kind] {
            Some(t) if rng.below(2) == 0 => t / 2 + rng.below(t / 2 + t / 10 + 1),
            _ => MIN_DELAY_MS + rng.below(MAX_DELAY_MS - MIN_DELAY_MS + 1),
        };
        let mut delay = Duration::from_millis(delay_ms.clamp(MIN_DELAY_MS, MAX_DELAY_MS));
        // On a slow machine most commands outlive 400 ms; let one finish now and then so
        // there is acknowledged work to check.
        if kills_in_a_row >= 4 {
            delay = Duration::from_secs(60);
        }
        let spawned = Instant::now();
        let child = cmd.spawn().unwrap();
        let deadline = spawned + delay;

        match run_until(child, deadline) {
            End::Killed => {
                kills += 1;
                kills_in_a_row += 1;
                let name = match op {
                    Op::Issue => "issue",
                    Op::Revoke(_) => "revoke",
                };
                *killed_ops.entry(name).or_default() += 1;
            }
            End::Exited {
                code,
                stdout,
                stderr,
            } => {
                finished += 1;
                kills_in_a_row = 0;
                let took = spawned.elapsed().as_millis() as u64;
                typical_ms[kind] = Some(typical_ms[kind].map_or(took, |t| (3 * t + took) / 4));
                assert!(
                    !stdout.contains("panicked") && !stderr.contains("panicked"),
                    "{ctx}: {op:?} panicked after a crash:\n{stdout}\n{stderr}"
                );
                let doc: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
                    panic!(
                        "{ctx}: {op:?} printed no JSON ({e}), code {code:?}:\n{stdout}\n{stderr}"
                    )
                });
                match (code, &op) {
                    (Some(0), Op::Issue) => {
                        let serial = serial_of(&doc);
                        let pem = doc["certificate_pem"].as_str().unwrap().to_owned();
                        assert!(
                            issued.insert(serial.clone(), pem).is_none(),
                            "{ctx}: serial {serial} acknowledged twice"
                        );
                        issue_order.push(serial);
                    }
                    (Some(0), Op::Revoke(serial)) => {
                        assert_eq!(doc["serial"], serial.as_str(), "{ctx}");
                        assert_eq!(doc["status"], "revoked", "{ctx}");
                        revoked.insert(serial.clone());
                    }
                    (Some(1), Op::Revoke(serial)) if doc["error"]["kind"] == "alreadyRevoked" => {
                        found_revoked.insert(serial.clone());
                    }
                    _ => panic!(
                        "{ctx}: after {kills} kills, {op:?} failed with code {code:?}:\n{stdout}\n{stderr}"
                    ),
                }
            }
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{ctx}: {cycles} cycles in {elapsed:?}, {kills} killed ({killed_ops:?}), {finished} finished; \
         {} issued, {} revoked acknowledged; typical run (issue, revoke) {typical_ms:?} ms",
        issued.len(),
        revoked.len()
    );
    assert!(
        kills >= MIN_KILLS,
        "{ctx}: only {kills} kills in {cycles} cycles ({elapsed:?})"
    );
    assert!(
        !issued.is_empty(),
        "{ctx}: no command finished; nothing was checked"
    );

    // The log verifies as it was left, torn last line or not.
    let doc = env.json(&["audit", "verify"]);
    assert_eq!(doc["intact"], true, "{ctx}: {doc:#}");
    assert_eq!(
        doc["consistent"], true,
        "{ctx}: store and log disagree: {doc:#}"
    );
    let torn = doc["torn_tail_bytes"].as_u64().unwrap();
    eprintln!(
        "{ctx}: reconciliation after the loop: {}",
        doc["reconciliation"]
    );

    // The store opens (and the log is repaired) for an ordinary read.
    let listed = env.cert_list(&[]);
    let mut seen = BTreeSet::new();
    let mut status = BTreeMap::new();
    for cert in &listed {
        let serial = serial_of(cert);
        assert!(
            seen.insert(serial.clone()),
            "{ctx}: serial {serial} listed twice"
        );
        assert_eq!(cert["agent"], alice.as_str(), "{ctx}");
        status.insert(serial, cert["status"].as_str().unwrap().to_owned());
    }
    for serial in issued.keys() {
        assert!(
            status.contains_key(serial),
            "{ctx}: acknowledged {serial} is lost"
        );
    }
    for serial in revoked.iter().chain(&found_revoked) {
        assert_eq!(
            status[serial], "revoked",
            "{ctx}: acknowledged revocation of {serial} is lost"
        );
    }
    // The certificate the command returned is the one stored.
    for (serial, pem) in &issued {
        let show = env.json(&["cert", "show", serial]);
        assert_eq!(
            show["certificate_pem"].as_str(),
            Some(pem.as_str()),
            "{ctx}: {serial}"
        );
    }

    let doc = env.assert_audit_intact();
    assert_eq!(
        doc["torn_tail_bytes"], 0,
        "{ctx}: the torn tail was not cut off"
    );
    let entries = env.audit_entries();
    let recovered = entries
        .iter()
        .filter(|e| e["event"] == "audit.recovered")
        .count();
    if torn > 0 {
        assert!(
            recovered > 0,
            "{ctx}: a torn tail was cut without an audit.recovered entry"
        );
    }
    let logged = |event: &str| -> BTreeSet<String> {
        entries
            .iter()
            .filter(|e| e["event"] == event)
            .map(|e| e["fields"]["serial"].as_str().unwrap().to_owned())
            .collect()
    };
    let logged_issued = logged("cert.issued");
    let logged_revoked = logged("cert.revoked");
    for serial in issued.keys() {
        assert!(
            logged_issued.contains(serial),
            "{ctx}: {serial} issued without an audit entry"
        );
    }
    for serial in &revoked {
        assert!(
            logged_revoked.contains(serial),
            "{ctx}: {serial} revoked without an audit entry"
        );
    }
    // An audit entry says no more than the store: nothing logged as issued is missing.
    for serial in &logged_issued {
        assert!(
            status.contains_key(serial),
            "{ctx}: {serial} is in the audit log but not the store"
        );
    }
    eprintln!(
        "{ctx}: audit log has {} entries, {recovered} recoveries",
        entries.len()
    );

    // The final CRL lists every acknowledged revocation.
    let doc = env.json(&["crl"]);
    let block = pem::parse(doc["pem"].as_str().unwrap()).unwrap();
    let (_, crl) =
        x509_parser::revocation_list::CertificateRevocationList::from_der(block.contents())
            .unwrap();
    let on_crl: BTreeSet<String> = crl
        .iter_revoked_certificates()
        .map(|r| hex::encode(r.raw_serial()))
        .collect();
    for serial in revoked.iter().chain(&found_revoked) {
        assert!(
            on_crl.contains(serial),
            "{ctx}: {serial} missing from the CRL"
        );
    }
    let revoked_in_store: BTreeSet<String> = status
        .iter()
        .filter(|(_, s)| s.as_str() == "revoked")
        .map(|(serial, _)| serial.clone())
        .collect();
    assert_eq!(
        on_crl, revoked_in_store,
        "{ctx}: the CRL and the store disagree"
    );

    // And the CA still works.
    let serial = env.issue_fresh(&alice, "after");
    env.json(&["revoke", &serial]);
    env.assert_audit_intact();
}

#[test]
fn concurrent_commands_on_one_data_dir_serialize() {
    let env = Env::with_ca();
    let alice = env.add_agent("/agent/alice", &[]);
    let first = env.issue_fresh(&alice, "first");
    let second = env.issue_fresh(&alice, "second");
    let csr = env.csr("shared");

    let mut children = Vec::new();
    for _ in 0..6 {
        let mut cmd = env.command();
        cmd.args([
            "--output",
            "json",
            "issue",
            "--agent",
            &alice,
            "--csr",
            csr.arg(),
        ]);
        children.push((
            "issue",
            cmd.stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        ));
    }
    for serial in [&first, &second] {
        let mut cmd = env.command();
        cmd.args(["--output", "json", "revoke", serial]);
        children.push((
            "revoke",
            cmd.stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        ));
    }
    let mut issued = BTreeSet::new();
    for (what, child) in children {
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{what} failed while others ran:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let doc: Value = serde_json::from_str(&stdout).unwrap();
        if what == "issue" {
            assert!(
                issued.insert(serial_of(&doc)),
                "a serial was handed out twice"
            );
        }
    }
    let listed: BTreeSet<String> = env.cert_list(&[]).iter().map(serial_of).collect();
    assert_eq!(listed.len(), 8);
    assert!(issued.is_subset(&listed));
    assert_eq!(env.listed_serials(&["--status", "revoked"]), {
        let mut v = vec![first, second];
        v.sort();
        v
    });
    env.assert_audit_intact();
}
