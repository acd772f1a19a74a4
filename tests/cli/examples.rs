//! The examples end to end with the real binaries: an agent enrolled over ACME or over SCEP
//! with 5-minute certificates (the shortest agentca issues), `agentca renew --daemon --exec`
//! rotating them, the `relying_service` example admitting the fleet's IDs with OCSP, and the
//! `agent_client` example calling it in a loop with the rotating files.
//!
//! A 5-minute certificate is backdated 5 minutes, so it spans 10. Over ACME, agentca's ARI
//! window puts its renewal 1m40s to 3m20s after issuance; the daemon asks again every minute
//! (the window's `Retry-After`) and draws a new point each time, which brings the renewal to
//! about 2.5 minutes on average. Over SCEP (no ARI) the daemon renews at two thirds of the
//! span less up to a twentieth: 1m10s to 1m40s after issuance. The revocation test sees one
//! natural renewal over ACME first; `several_renewals_over_acme_…` and
//! `several_renewals_over_scep_…` see three in a row, about 7.5 and 4.5 minutes (bounded at
//! 13). Their waits end on the daemon's events, never on a fixed sleep, and tests share
//! nothing (each has its own CA, ports and files), so they run alongside the rest of the
//! suite.
//!
//! The example binaries are built by `cargo test` (and `cargo build --examples`), not by
//! `cargo test --test cli` alone.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use time::OffsetDateTime;

use super::acme_clients::ocsp_status_at;
use super::harness::{Server, free_port, serve_command};
use super::support::{Env, KeyAlg, TRUST_DOMAIN};

/// How long the relying service uses an OCSP answer: the longest it may admit a revoked agent.
const OCSP_MAX_AGE: Duration = Duration::from_secs(10);
/// On top of a bound: the OCSP fetch, process start-up, a busy machine.
const SLACK: Duration = Duration::from_secs(8);
/// The daemon looks at OCSP every sixtieth of the lifetime, at least every 10 s; a 10-minute
/// span gives 10 s.
const DAEMON_OCSP_INTERVAL: Duration = Duration::from_secs(10);
/// The latest a natural renewal comes: the end of the ARI window (3m20s after issuance), plus
/// the daemon's minute between ARI looks at most.
const RENEWAL_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// The bound on a whole run with three renewals: three ends of the ARI window (10 minutes)
/// and the set-up, with room for a loaded machine.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(13 * 60);
/// How far agentca backdates `notBefore`, for clock skew.
const BACKDATE: time::Duration = time::Duration::minutes(5);
/// How long a 5-minute certificate is valid: backdated 5 minutes, so 10.
const LIFETIME_SPAN: time::Duration = time::Duration::minutes(10);
/// Certificate times have one-second resolution, and the test sees a line a little after it
/// was printed.
const CLOCK_TOLERANCE: time::Duration = time::Duration::seconds(2);
/// The service's SPIFFE ID, which the client expects in its certificate.
const SERVICE_PATH: &str = "/agent/service/echo";

/// The path of an example binary built next to this test binary.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/cli-<hash> -> target/<profile>/examples/<name>
    let path = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: the examples are built by `cargo test` or `cargo build --examples`",
        path.display()
    );
    path
}

/// The end of a short wait (for a line, a file, a few calls), counted in time this test
/// process was running: a stall of the whole machine (seconds or minutes without being
/// scheduled) moves it later, since the awaited process was most likely stopped as well and
/// cannot have been late. The long waits, for renewals, are bounded in wall time instead.
struct Deadline {
    at: Instant,
    last: Instant,
}

impl Deadline {
    fn new(timeout: Duration) -> Self {
        let now = Instant::now();
        Self {
            at: now + timeout,
            last: now,
        }
    }

    /// Whether the wait is over; call it at least every few hundred milliseconds.
    fn passed(&mut self) -> bool {
        let now = Instant::now();
        let gap = now - self.last;
        if gap > Stalls::NOTED {
            self.at += gap;
        }
        self.last = now;
        now >= self.at
    }
}

/// A child process whose standard output and error lines are collected as they come, with the
/// time each arrived. Killed when dropped.
struct Running {
    name: String,
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Running {
    fn spawn(name: &str, mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name} did not start: {e}"));
        let lines: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        for from in [Box::new(stdout) as Box<dyn Read + Send>, Box::new(stderr)] {
            let sink = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(from).lines() {
                    let Ok(line) = line else { break };
                    sink.lock().unwrap().push((Instant::now(), line));
                }
            });
        }
        Self {
            name: name.to_owned(),
            child,
            lines,
        }
    }

    /// Every line so far, with when it arrived.
    fn lines(&self) -> Vec<(Instant, String)> {
        self.lines.lock().unwrap().clone()
    }

    fn transcript(&self) -> String {
        self.lines()
            .into_iter()
            .map(|(_, l)| l)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits up to `timeout` for a line after `since` that `wanted` accepts, and returns it
    /// with its arrival time.
    fn wait_line(
        &mut self,
        since: Instant,
        timeout: Duration,
        what: &str,
        wanted: impl Fn(&str) -> bool,
    ) -> (Instant, String) {
        let mut deadline = Deadline::new(timeout);
        loop {
            if let Some(found) = self
                .lines()
                .into_iter()
                .find(|(at, line)| *at >= since && wanted(line))
            {
                return found;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "{} exited ({status}) before {what}:\n{}",
                    self.name,
                    self.transcript()
                );
            }
            assert!(
                !deadline.passed(),
                "{} did not show {what} within {timeout:?}:\n{}",
                self.name,
                self.transcript()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One call as `agent_client` prints it.
#[derive(Debug)]
struct Call {
    at: Instant,
    ok: bool,
    serial: String,
    /// The line as printed, which says why a call failed.
    line: String,
}

fn calls(client: &Running) -> Vec<Call> {
    client
        .lines()
        .into_iter()
        .filter_map(|(at, line)| {
            let (ok, rest) = if let Some(rest) = line.strip_prefix("ok ") {
                (true, rest)
            } else {
                (false, line.strip_prefix("failed ")?)
            };
            let serial = rest.split_whitespace().nth(2)?.trim_end_matches(':');
            Some(Call {
                at,
                ok,
                serial: serial.to_owned(),
                line: line.clone(),
            })
        })
        .collect()
}

/// A daemon event (`renew --daemon --output json` prints one JSON document per line).
fn events(daemon: &Running, name: &str) -> Vec<(Instant, Value)> {
    daemon
        .lines()
        .into_iter()
        .filter_map(|(at, line)| Some((at, serde_json::from_str::<Value>(&line).ok()?)))
        .filter(|(_, doc)| doc["event"] == name)
        .collect()
}

/// The first daemon event `name` after `since`, waiting up to `timeout` for it, and when it
/// was printed.
fn wait_event(
    daemon: &mut Running,
    since: Instant,
    timeout: Duration,
    name: &str,
) -> (Instant, Value) {
    let (at, line) = daemon.wait_line(since, timeout, &format!("a {name:?} event"), |line| {
        serde_json::from_str::<Value>(line).is_ok_and(|doc| doc["event"] == name)
    });
    (at, serde_json::from_str(&line).unwrap())
}

/// How the fleet's agent gets its first certificate; the daemon renews the same way (ACME
/// orders with ARI, SCEP RenewalReqs signed by the current certificate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    /// `enroll --acme` with an EAB credential; an ECDSA P-256 key.
    Acme,
    /// `enroll --scep` with a one-time challenge; an RSA 2048 key.
    Scep,
}

/// The CA, one agent of the fleet enrolled over ACME or SCEP with its renewal daemon, the
/// relying service, and the agent's client calling it.
struct Fleet {
    /// Before anything was started: every line comes after it.
    started: Instant,
    protocol: Protocol,
    env: Env,
    server: Server,
    agent: String,
    key: PathBuf,
    cert: PathBuf,
    /// Where the daemon's `--exec` hook copies each chain it is run for, as
    /// `rotation-N.pem` (N counting from 1).
    hooked: PathBuf,
    daemon: Running,
    service: Running,
    client: Running,
    service_url: String,
    stalls: Stalls,
}

impl Fleet {
    fn start(name: &str, protocol: Protocol) -> Self {
        let started = Instant::now();
        let stalls = Stalls::start();
        // The certificates' OCSP URL must reach this server: the daemon and the relying
        // service ask the responder the certificate names.
        let env = Env::empty();
        let http_port = free_port();
        let base = format!("http://127.0.0.1:{http_port}");
        env.init(&["--base-url", &base]).success();
        let default = std::fs::read_to_string(env.data_file("policies/default.toml")).unwrap();
        let fleet = default
            .replace("agents = [\"/agent/**\"]", "agents = [\"/agent/fleet/*\"]")
            .replace("default_lifetime = \"24h\"", "default_lifetime = \"5m\"")
            .replace("max_lifetime = \"24h\"", "max_lifetime = \"5m\"");
        assert!(fleet.contains("\"5m\"") && fleet.contains("/agent/fleet/*"));
        std::fs::write(env.data_file("policies/fleet.toml"), fleet).unwrap();

        let agent = env.add_agent(&format!("/agent/fleet/{name}"), &[]);
        let service_id = env.add_agent(SERVICE_PATH, &["--dns", "localhost"]);
        let csr = env.csr_with("service", KeyAlg::P256, &["localhost"]);
        let service_pem = env.path("service.pem");
        env.issue(&service_id, &csr, &["--out", service_pem.to_str().unwrap()]);

        // Its own ports (the HTTPS one chosen by the kernel), so that fleets of concurrent
        // tests never wait for each other.
        let mut serve = serve_command(&env);
        serve.args([
            "--http-listen",
            &format!("127.0.0.1:{http_port}"),
            "--listen",
            "127.0.0.1:0",
        ]);
        let server = Server::start(serve);

        std::fs::create_dir_all(env.path("agent")).unwrap();
        let key = env.path("agent/key.pem");
        let cert = env.path("agent/cert.pem");
        let root = env.data_file("root.pem");
        let mut enroll: Vec<String> = vec![
            "enroll".into(),
            "--agent".into(),
            agent.clone(),
            "--key".into(),
            key.to_str().unwrap().into(),
            "--cert".into(),
            cert.to_str().unwrap().into(),
            "--ca".into(),
            root.to_str().unwrap().into(),
        ];
        match protocol {
            Protocol::Acme => {
                let token = env.json(&["token", "create", "--agent", &agent, "--for", "acme"]);
                enroll.extend([
                    "--acme".into(),
                    format!("https://{}/acme/directory", server.https),
                    "--eab-kid".into(),
                    token["kid"].as_str().unwrap().into(),
                    "--eab-hmac".into(),
                    token["hmac"].as_str().unwrap().into(),
                ]);
            }
            Protocol::Scep => {
                let token = env.json(&["token", "create", "--agent", &agent, "--for", "scep"]);
                enroll.extend([
                    "--scep".into(),
                    server.url("/scep"),
                    "--challenge".into(),
                    token["challenge"].as_str().unwrap().into(),
                ]);
            }
        }
        env.run(&enroll).success();

        // The hook stands for a service reload: it runs after each rotation, and copies what
        // the certificate path leads to then, so the test sees that it ran, once per renewal,
        // after the switch. Copied under a hidden name first so that the test never reads a
        // half-written file.
        let hooked = env.path("hooked");
        std::fs::create_dir_all(&hooked).unwrap();
        let dir = sh_quote(&hooked);
        let hook = format!(
            "n=$(($(ls {dir} | wc -l) + 1)) && cp {cert} {dir}/.copy && \
             mv {dir}/.copy {dir}/rotation-$n.pem",
            cert = sh_quote(&cert)
        );
        let mut daemon = env.bare();
        daemon.args(["--output", "json", "renew", "--daemon", "--key"]);
        daemon
            .arg(&key)
            .arg("--cert")
            .arg(&cert)
            .arg("--exec")
            .arg(hook);
        let daemon = Running::spawn("agentca renew --daemon", daemon);

        let mut service = Command::new(example("relying_service"));
        service
            .args(["--listen", "127.0.0.1:0", "--ca"])
            .arg(&root)
            .arg("--cert")
            .arg(&service_pem)
            .arg("--key")
            .arg(env.path("service.key"))
            .args([
                "--allow",
                &format!("spiffe://{TRUST_DOMAIN}/agent/fleet/*"),
                "--ocsp-max-age",
                &OCSP_MAX_AGE.as_secs().to_string(),
            ]);
        let mut service = Running::spawn("relying_service", service);
        let (_, listening) =
            service.wait_line(started, Duration::from_secs(20), "its address", |l| {
                l.starts_with("listening on ")
            });
        let port = listening.rsplit(':').next().unwrap();
        let service_url = format!("https://localhost:{port}/");

        let client = Running::spawn(
            "agent_client",
            client_command(&env, &service_url, &key, &cert, None),
        );
        Self {
            started,
            protocol,
            env,
            server,
            agent,
            key,
            cert,
            hooked,
            daemon,
            service,
            client,
            service_url,
            stalls,
        }
    }

    /// Waits until the client has made `n` successful calls since `since`.
    fn wait_ok_calls(&mut self, since: Instant, n: usize, timeout: Duration) {
        let mut deadline = Deadline::new(timeout);
        while calls(&self.client)
            .iter()
            .filter(|c| c.at >= since && c.ok)
            .count()
            < n
        {
            assert!(
                !deadline.passed(),
                "fewer than {n} successful calls within {timeout:?}:\n{}\nservice:\n{}",
                self.client.transcript(),
                self.service.transcript()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The serial of the installed leaf, lowercase hex.
    fn installed_serial(&self) -> String {
        Held::read(&self.cert).serial
    }

    /// Copies the installed pair (from the generation the links lead to) under `dir`.
    fn copy_pair(&self, dir: &str) -> (PathBuf, PathBuf) {
        std::fs::create_dir_all(self.env.path(dir)).unwrap();
        let key = self.env.path(&format!("{dir}/key.pem"));
        let cert = self.env.path(&format!("{dir}/cert.pem"));
        std::fs::copy(std::fs::canonicalize(&self.key).unwrap(), &key).unwrap();
        std::fs::copy(std::fs::canonicalize(&self.cert).unwrap(), &cert).unwrap();
        (key, cert)
    }

    /// One call with the pair at `key` and `cert`: whether the service admitted it.
    fn call_once_with(&self, key: &Path, cert: &Path) -> (bool, String) {
        let out = client_command(&self.env, &self.service_url, key, cert, Some(1))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn failed_calls(&self) -> Vec<Call> {
        calls(&self.client).into_iter().filter(|c| !c.ok).collect()
    }

    /// Asserts that no call has failed so far (`when` says at which point of the run). The
    /// message gives each failed call's line, with when it and its neighbours came, and any
    /// moment the test process itself was not scheduled for seconds: a machine that stalls
    /// everything for longer than a call's 10 s timeout fails a call whatever the agent does,
    /// and the message should tell that apart from a rotation gone wrong.
    fn assert_no_failed_call(&self, when: &str) {
        let all = calls(&self.client);
        let since = |at: Instant| at.saturating_duration_since(self.started);
        let mut report = Vec::new();
        for (i, call) in all.iter().enumerate().filter(|(_, c)| !c.ok) {
            let before = i.checked_sub(1).map(|j| since(all[j].at));
            let after = all.get(i + 1).map(|c| since(c.at));
            report.push(format!(
                "at {:?}: {} (call before at {before:?}, after at {after:?})",
                since(call.at),
                call.line
            ));
        }
        assert!(
            report.is_empty(),
            "{} failed call(s) {when}:\n{}\nthe test process stalled (at, for): {:?}\n\
             service:\n{}",
            report.len(),
            report.join("\n"),
            self.stalls
                .seen()
                .into_iter()
                .map(|(at, gap)| (since(at), gap))
                .collect::<Vec<_>>(),
            self.service.transcript()
        );
    }
}

/// Watches how regularly this test process is scheduled: a thread that wakes every 100 ms
/// notes every wake-up that came seconds late.
struct Stalls {
    seen: Arc<Mutex<Vec<(Instant, Duration)>>>,
    stop: Arc<AtomicBool>,
}

impl Stalls {
    /// Later than this is a stall: far beyond scheduling noise, well under a call's timeout.
    const NOTED: Duration = Duration::from_secs(2);

    fn start() -> Self {
        let seen: Arc<Mutex<Vec<(Instant, Duration)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (sink, stopped) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            let tick = Duration::from_millis(100);
            let mut last = Instant::now();
            while !stopped.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                let now = Instant::now();
                let gap = now - last;
                if gap > Self::NOTED {
                    sink.lock().unwrap().push((last, gap));
                }
                last = now;
            }
        });
        Self { seen, stop }
    }

    /// When a stall began, and how long it lasted.
    fn seen(&self) -> Vec<(Instant, Duration)> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Stalls {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn client_command(env: &Env, url: &str, key: &Path, cert: &Path, count: Option<u64>) -> Command {
    let mut cmd = Command::new(example("agent_client"));
    cmd.args(["--url", url, "--server-id"])
        .arg(format!("spiffe://{TRUST_DOMAIN}{SERVICE_PATH}"))
        .arg("--ca")
        .arg(env.data_file("root.pem"))
        .arg("--key")
        .arg(key)
        .arg("--cert")
        .arg(cert)
        .args(["--interval-ms", "250"]);
    if let Some(count) = count {
        cmd.args(["--count", &count.to_string()]);
    }
    cmd
}

/// A certificate the agent held.
#[derive(Debug)]
struct Held {
    serial: String,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl Held {
    /// The leaf of the chain at `path`.
    fn read(path: &Path) -> Self {
        let pem =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let chain = super::support::pem_certs(&pem);
        let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
        Self {
            serial: hex::encode(leaf.raw_serial()),
            not_before: leaf.validity().not_before.to_datetime(),
            not_after: leaf.validity().not_after.to_datetime(),
        }
    }

    /// When the CA issued it: agentca backdates `notBefore` by a fixed 5 minutes.
    fn issued_at(&self) -> OffsetDateTime {
        self.not_before + BACKDATE
    }

    /// The earliest a natural renewal may come: two thirds into the validity, moved earlier
    /// by the daemon's largest jitter without ARI (a twentieth of it). ARI's window, for
    /// ACME, opens at two thirds. Anything earlier would be a daemon renewing in a loop.
    fn earliest_renewal(&self) -> OffsetDateTime {
        let span = self.not_after - self.not_before;
        self.not_before + span * (2.0 / 3.0 - 1.0 / 20.0)
    }
}

/// Waits up to `timeout` for the daemon's `n`-th `renewed` event (counting from 1), and
/// returns it with when it was printed.
fn wait_renewal(daemon: &mut Running, n: usize, timeout: Duration, what: &str) -> (Instant, Value) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = events(daemon, "renewed").into_iter().nth(n - 1) {
            return found;
        }
        if let Some(status) = daemon.child.try_wait().unwrap() {
            panic!(
                "the daemon exited ({status}) before {what}:\n{}",
                daemon.transcript()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within {timeout:?}; the daemon said:\n{}",
            daemon.transcript()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits up to `timeout` for `path` to exist.
fn wait_file(path: &Path, timeout: Duration, what: &str) {
    let mut deadline = Deadline::new(timeout);
    while !path.exists() {
        assert!(!deadline.passed(), "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The daemon renews on its own, `renewals` times in a row, and the client moves to each new
/// certificate without a failed call. Each renewal comes naturally (not before two thirds of
/// the lifetime less the jitter, and before the certificate it replaces expires), installs a
/// certificate with a serial never seen before that OCSP says is `good`, and runs the
/// `--exec` hook once, after the switch. All within [`SCENARIO_TIMEOUT`] of the start.
fn renew_without_a_failed_call(fleet: &mut Fleet, renewals: usize) {
    let deadline = fleet.started + SCENARIO_TIMEOUT;
    let mut held = vec![Held::read(&fleet.cert)];
    for round in 1..=renewals {
        let previous = held.last().unwrap();
        let left = deadline.saturating_duration_since(Instant::now());
        let what = format!(
            "renewal {round} of {renewals} (each is due within {RENEWAL_TIMEOUT:?}, all within \
             {SCENARIO_TIMEOUT:?} of the start)"
        );
        let (renewed_at, event) =
            wait_renewal(&mut fleet.daemon, round, RENEWAL_TIMEOUT.min(left), &what);
        let serial = event["serial"].as_str().unwrap().to_owned();

        // The hook ran once for this rotation, and after the switch: the certificate path
        // already led to the new certificate.
        let hooked = fleet.hooked.join(format!("rotation-{round}.pem"));
        wait_file(
            &hooked,
            Duration::from_secs(10),
            &format!("the --exec hook did not run after renewal {round} ({serial})"),
        );
        let renewed = Held::read(&hooked);
        assert_eq!(
            renewed.serial, serial,
            "the --exec hook of renewal {round} saw another certificate installed"
        );
        assert!(
            held.iter().all(|h| h.serial != serial),
            "renewal {round} brought no new serial: {serial} in {held:#?}"
        );
        let span = renewed.not_after - renewed.not_before;
        assert!(
            (span - LIFETIME_SPAN).abs() <= CLOCK_TOLERANCE,
            "renewal {round}: a certificate spanning {span}, not a 5-minute one: {renewed:?}"
        );
        // When the CA issued it, read from the certificate rather than from when this test
        // saw the event: a paused or busy test process sees events late, the CA's clock
        // does not move with it.
        let issued = renewed.issued_at();
        assert!(
            issued + CLOCK_TOLERANCE >= previous.earliest_renewal() && issued < previous.not_after,
            "renewal {round} issued at {issued}, outside {} .. {} ({previous:?}):\n{}",
            previous.earliest_renewal(),
            previous.not_after,
            fleet.daemon.transcript()
        );
        let status = ocsp_status_at(&fleet.env, &fleet.server, &hooked);
        assert_eq!(status, "good", "OCSP on renewal {round} ({serial})");

        // The client loads the new pair and calls with it.
        fleet.client.wait_line(
            renewed_at,
            Duration::from_secs(10),
            "the renewed certificate in use",
            |l| l.starts_with("ok ") && l.contains(&format!("serial {serial}:")),
        );
        // Checked at each renewal too, so that a failure ends the run minutes earlier.
        fleet.assert_no_failed_call(&format!("up to renewal {round}"));
        println!(
            "{:?} renewal {round}: {} -> {serial}, issued {} after the previous one, OCSP {status}",
            fleet.protocol,
            previous.serial,
            issued - previous.issued_at(),
        );
        held.push(renewed);
    }

    fleet.assert_no_failed_call(&format!("over {renewals} renewal(s)"));
    let calls = calls(&fleet.client);
    for h in &held {
        assert!(
            calls.iter().any(|c| c.serial == h.serial),
            "no call with {}:\n{}",
            h.serial,
            fleet.client.transcript()
        );
    }
    assert!(
        fleet.client.child.try_wait().unwrap().is_none(),
        "the client stopped calling:\n{}",
        fleet.client.transcript()
    );
    println!(
        "{:?}: {} calls, none failed, over {renewals} renewal(s) in {:?}",
        fleet.protocol,
        calls.len(),
        fleet.started.elapsed()
    );
}

/// The issue's scenario: an agent enrolled over ACME keeps calling the relying service while
/// the daemon renews; then the operator revokes its certificate: the relying service refuses
/// that certificate within its OCSP cache bound, the daemon sees the revocation over OCSP and
/// renews at once, and the client's calls go through again with the fresh certificate.
#[test]
fn an_agent_keeps_calling_through_a_renewal_and_a_revocation() {
    let mut fleet = Fleet::start("worker-1", Protocol::Acme);
    fleet.wait_ok_calls(Instant::now(), 3, Duration::from_secs(20));
    renew_without_a_failed_call(&mut fleet, 1);

    // A copy of the current pair, to show what the service says to it after the revocation.
    let serial = fleet.installed_serial();
    let (old_key, old_cert) = fleet.copy_pair("revoked");
    let (admitted, text) = fleet.call_once_with(&old_key, &old_cert);
    assert!(admitted, "before the revocation: {text}");

    let revoked_at = Instant::now();
    fleet
        .env
        .run(&["revoke", &serial, "--reason", "keyCompromise"])
        .success();

    // The relying service refuses the revoked certificate within its cache bound.
    let refused_at = loop {
        let (admitted, text) = fleet.call_once_with(&old_key, &old_cert);
        if !admitted {
            println!("revoked certificate refused: {}", text.trim_end());
            break Instant::now();
        }
        assert!(
            revoked_at.elapsed() < OCSP_MAX_AGE + SLACK,
            "the revoked certificate was still admitted {:?} after the revocation:\n{}",
            revoked_at.elapsed(),
            fleet.service.transcript()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    println!(
        "refused {:?} after the revocation (bound {OCSP_MAX_AGE:?})",
        refused_at - revoked_at
    );
    fleet.service.wait_line(
        revoked_at,
        Duration::from_secs(5),
        "a refusal naming the revocation",
        |l| l.starts_with("refused ") && l.contains("Revoked"),
    );

    // The daemon notices through OCSP, well before its next ARI look (a minute away at most),
    // and renews at once.
    let (seen_at, revoked) = wait_event(
        &mut fleet.daemon,
        revoked_at,
        DAEMON_OCSP_INTERVAL + SLACK,
        "revoked",
    );
    let detail = revoked["detail"].as_str().unwrap();
    assert!(
        detail.contains(&serial) && detail.contains("keyCompromise") && detail.contains("OCSP"),
        "{revoked}"
    );
    let (renewed_at, _) = wait_event(&mut fleet.daemon, revoked_at, SLACK, "renewed");
    println!(
        "the daemon saw the revocation after {:?} and renewed after {:?}",
        seen_at - revoked_at,
        renewed_at - revoked_at
    );
    assert!(seen_at - revoked_at <= DAEMON_OCSP_INTERVAL + SLACK);
    let fresh = fleet.installed_serial();
    assert_ne!(fresh, serial);

    // The client goes on with the fresh certificate.
    fleet.client.wait_line(
        revoked_at,
        Duration::from_secs(10),
        "a call with the fresh certificate",
        |l| l.starts_with("ok ") && l.contains(&format!("serial {fresh}:")),
    );
    let failed_after = fleet
        .failed_calls()
        .into_iter()
        .filter(|c| c.at >= revoked_at)
        .count();
    println!("{failed_after} call(s) failed between the revocation and the fresh certificate");
    assert!(
        fleet
            .failed_calls()
            .iter()
            .all(|c| c.at >= revoked_at && c.serial == serial),
        "only calls with the revoked certificate may fail: {:#?}",
        fleet.failed_calls()
    );
}

/// `revoke --agent` with `agent disable`: the service refuses the agent within its cache
/// bound, and the daemon, although it sees the revocation, cannot get a new certificate.
#[test]
fn a_disabled_and_revoked_agent_is_refused_and_cannot_renew() {
    let mut fleet = Fleet::start("worker-2", Protocol::Acme);
    fleet.wait_ok_calls(Instant::now(), 3, Duration::from_secs(20));
    let serial = fleet.installed_serial();

    let revoked_at = Instant::now();
    // Disabled first, so the daemon cannot slip a renewal in between.
    fleet.env.run(&["agent", "disable", &fleet.agent]).success();
    fleet
        .env
        .run(&[
            "revoke",
            "--agent",
            &fleet.agent,
            "--reason",
            "cessationOfOperation",
        ])
        .success();

    // Refused within the bound ...
    let (first_failure, line) =
        fleet
            .client
            .wait_line(revoked_at, OCSP_MAX_AGE + SLACK, "a refused call", |l| {
                l.starts_with("failed ")
            });
    println!(
        "first refusal {:?} after the revocation: {line}",
        first_failure - revoked_at
    );
    fleet.service.wait_line(
        revoked_at,
        Duration::from_secs(5),
        "a refusal naming the revocation",
        |l| l.starts_with("refused ") && l.contains("Revoked"),
    );
    // ... the daemon sees the revocation and tries, but the CA refuses a disabled agent ...
    wait_event(
        &mut fleet.daemon,
        revoked_at,
        DAEMON_OCSP_INTERVAL + SLACK,
        "revoked",
    );
    let (_, failed) = wait_event(&mut fleet.daemon, revoked_at, SLACK, "failed");
    println!("the daemon's renewal: {failed}");
    // ... so every call from then on fails, and nothing new is installed.
    let settled = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let after: Vec<Call> = calls(&fleet.client)
        .into_iter()
        .filter(|c| c.at >= settled)
        .collect();
    assert!(
        after.len() >= 5 && after.iter().all(|c| !c.ok),
        "{after:#?}"
    );
    assert!(
        events(&fleet.daemon, "renewed").is_empty(),
        "{}",
        fleet.daemon.transcript()
    );
    assert_eq!(fleet.installed_serial(), serial);
}

/// The long run of the issue: an agent enrolled over `protocol` keeps calling the relying
/// service while the daemon renews its 5-minute certificates three times in a row, and not
/// one call fails.
fn several_renewals_without_a_failed_call(name: &str, protocol: Protocol) {
    let mut fleet = Fleet::start(name, protocol);
    fleet.wait_ok_calls(Instant::now(), 3, Duration::from_secs(20));
    renew_without_a_failed_call(&mut fleet, 3);
}

/// Over ACME the daemon renews inside agentca's ARI window: about 2.5 minutes a renewal.
#[test]
fn several_renewals_over_acme_without_a_failed_call() {
    several_renewals_without_a_failed_call("worker-3", Protocol::Acme);
}

/// Over SCEP (no ARI) the daemon renews at two thirds of the lifetime less jitter, with a
/// RenewalReq signed by the current certificate: about 1.5 minutes a renewal.
#[test]
fn several_renewals_over_scep_without_a_failed_call() {
    several_renewals_without_a_failed_call("worker-4", Protocol::Scep);
}

/// A word for `sh -c`: single-quoted.
fn sh_quote(path: &Path) -> String {
    let text = path.to_str().unwrap();
    format!("'{}'", text.replace('\'', "'\\''"))
}
