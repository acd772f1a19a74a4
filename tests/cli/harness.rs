//! The test harness for `agentca serve`: starting the real binary on free ports, reading the
//! addresses it announces, talking HTTP to it, stopping it — and, for ACME tests, a server
//! with an `[acme]` configuration whose validation reaches loopback through a [`FakeDns`].
//!
//! Every server is killed when its handle is dropped, also when a test panics.

// Shared by several test modules; not every module uses every helper.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::Deref;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use agentca_testkit::dns::FakeDns;
use serde_json::Value;

use super::balancer::RoundRobin;
use super::support::Env;

/// How long a server may take to announce its addresses (it signs the HTTPS certificate, a
/// CRL and the OCSP responses first).
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to stop after SIGTERM.
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The settings of `serve` that could leak in from the developer's shell.
pub(crate) const SERVE_VARS: [&str; 6] = [
    "AGENTCA_LISTEN",
    "AGENTCA_HTTP_LISTEN",
    "AGENTCA_CONFIG",
    "AGENTCA_LOG_FORMAT",
    "AGENTCA_TLS_NAMES",
    "AGENTCA_LOG",
];

/// `agentca --data-dir DIR serve` with a clean environment and no listener flags yet.
pub(crate) fn serve_command(env: &Env) -> Command {
    let mut cmd = env.command();
    for var in SERVE_VARS {
        cmd.env_remove(var);
    }
    cmd.arg("serve");
    cmd
}

/// `cmd` run by `program` with `args` before it (a shell that `exec`s it, a tracer): the same
/// environment and working directory.
pub(crate) fn wrapped(program: &str, args: &[&std::ffi::OsStr], cmd: &Command) -> Command {
    let mut outer = Command::new(program);
    outer.args(args).arg(cmd.get_program()).args(cmd.get_args());
    same_environment(&mut outer, cmd);
    outer
}

/// Gives `to` the variables `from` sets or removes, and its working directory.
fn same_environment(to: &mut Command, from: &Command) {
    for (key, value) in from.get_envs() {
        match value {
            Some(value) => to.env(key, value),
            None => to.env_remove(key),
        };
    }
    if let Some(dir) = from.get_current_dir() {
        to.current_dir(dir);
    }
}

/// [`serve_command`] on free ports: the usual way to start a test server.
pub(crate) fn serve_on_free_ports(env: &Env) -> Command {
    let mut cmd = serve_command(env);
    cmd.args(["--http-listen", "127.0.0.1:0", "--listen", "127.0.0.1:0"]);
    cmd
}

/// A server that exited before announcing its addresses.
#[derive(Debug)]
pub(crate) struct Exited {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// A running `agentca serve`. Dropping it kills the process (SIGKILL), so a failing test
/// leaves nothing behind.
///
/// Under `AGENTCA_TEST_NODES=2` (see [`super::support::test_nodes`]) it is two nodes on one
/// PostgreSQL database behind a [`RoundRobin`] balancer for each listener: `http` and `https`
/// are the balancers' addresses, so every connection a test or a stock client opens goes to
/// the other node than the one before, and what the handle reports (metrics, logs) and does
/// (kill, terminate) covers both nodes.
pub(crate) struct Server {
    child: Child,
    pub(crate) http: SocketAddr,
    pub(crate) https: SocketAddr,
    pub(crate) admin: PathBuf,
    /// This node's own HTTP listener (`http` is a balancer's when there are two nodes).
    own_http: SocketAddr,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    /// The second node and the balancers in front of both, under `AGENTCA_TEST_NODES=2`.
    second: Option<(Box<Server>, [RoundRobin; 2])>,
}

/// Copies a child's output into `sink` line by line, reporting each line on `lines`.
fn collect(
    from: impl Read + Send + 'static,
    sink: Arc<Mutex<String>>,
    lines: Option<mpsc::Sender<String>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push_str(&format!("{line}\n"));
            if let Some(tx) = &lines {
                let _ = tx.send(line);
            }
        }
    })
}

impl Server {
    /// Starts `cmd` (a [`serve_command`]) and waits for its addresses; panics if it exits.
    pub(crate) fn start(cmd: Command) -> Self {
        match Self::try_start(cmd) {
            Ok(server) => server,
            Err(e) => panic!(
                "agentca serve exited before listening: {}\nstdout:\n{}\nstderr:\n{}",
                e.status, e.stdout, e.stderr
            ),
        }
    }

    /// Starts `cmd` and waits for the `agentca listening:` line, or for the process to exit;
    /// under `AGENTCA_TEST_NODES=2`, a second node of the same CA as well (see [`Server`]).
    pub(crate) fn try_start(cmd: Command) -> Result<Self, Exited> {
        let second = match super::support::test_nodes() {
            2 => second_node(&cmd),
            _ => None,
        };
        let mut first = Self::try_start_one(cmd)?;
        if let Some(cmd) = second {
            let peer = Self::try_start_one(cmd).unwrap_or_else(|e| {
                panic!(
                    "the second node exited before listening: {}\nstdout:\n{}\nstderr:\n{}",
                    e.status, e.stdout, e.stderr
                )
            });
            let balancers = [
                RoundRobin::start([first.http, peer.http]),
                RoundRobin::start([first.https, peer.https]),
            ];
            first.http = balancers[0].addr;
            first.https = balancers[1].addr;
            first.second = Some((Box::new(peer), balancers));
        }
        Ok(first)
    }

    /// The nodes: this one, and the second under `AGENTCA_TEST_NODES=2`.
    fn nodes(&self) -> impl Iterator<Item = &Server> {
        std::iter::once(self).chain(self.second.as_ref().map(|(peer, _)| peer.as_ref()))
    }

    /// With two nodes, asserts that the balancers sent each node connections (so a stock
    /// client's run crossed nodes); with one, does nothing.
    pub(crate) fn assert_every_node_served(&self) {
        if let Some((_, [http, https])) = self.second.as_ref() {
            let ([h0, h1], [s0, s1]) = (http.sent(), https.sent());
            assert!(
                h0 + s0 > 0 && h1 + s1 > 0,
                "connections per node: http {h0}/{h1}, https {s0}/{s1}"
            );
        }
    }

    fn try_start_one(mut cmd: Command) -> Result<Self, Exited> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let readers = vec![
            collect(child.stdout.take().unwrap(), stdout.clone(), Some(tx)),
            collect(child.stderr.take().unwrap(), stderr.clone(), None),
        ];
        let mut server = Self {
            child,
            http: SocketAddr::from(([0, 0, 0, 0], 0)),
            https: SocketAddr::from(([0, 0, 0, 0], 0)),
            admin: PathBuf::new(),
            own_http: SocketAddr::from(([0, 0, 0, 0], 0)),
            stdout,
            stderr,
            readers,
            second: None,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("agentca listening: ") {
                        server.parse_listening(rest);
                        return Ok(server);
                    }
                }
                // Standard output closed: the process is ending.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = server.child.wait().unwrap();
                    for reader in server.readers.drain(..) {
                        reader.join().unwrap();
                    }
                    return Err(Exited {
                        status,
                        stdout: server.stdout(),
                        stderr: server.stderr(),
                    });
                }
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "agentca serve did not announce its addresses within {START_TIMEOUT:?}:\n\
                     stdout:\n{}\nstderr:\n{}",
                    server.stdout(),
                    server.stderr()
                ),
            }
        }
    }

    /// `https=ADDR http=ADDR admin=PATH`.
    fn parse_listening(&mut self, rest: &str) {
        let (addrs, admin) = rest.split_once(" admin=").unwrap();
        for word in addrs.split_whitespace() {
            match word.split_once('=') {
                Some(("https", a)) => self.https = a.parse().unwrap(),
                Some(("http", a)) => self.http = a.parse().unwrap(),
                _ => panic!("unexpected listening line: {rest}"),
            }
        }
        assert_ne!(self.http.port(), 0, "{rest}");
        assert_ne!(self.https.port(), 0, "{rest}");
        self.own_http = self.http;
        self.admin = PathBuf::from(admin);
    }

    /// Everything printed on standard output so far.
    /// The server's process id (also after `serve` re-executed itself at start).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Everything logged on standard error so far (by every node, one after the other).
    pub(crate) fn stderr(&self) -> String {
        self.nodes()
            .map(|node| node.stderr.lock().unwrap().clone())
            .collect::<Vec<_>>()
            .join("")
    }

    /// Waits up to ten seconds until the log (standard error) of a node contains `needle`.
    pub(crate) fn wait_log(&self, needle: &str) {
        wait_for(|| self.stderr(), needle);
    }

    /// Waits until standard output contains `needle` (it may still be arriving after the
    /// `listening` line) and returns all of it.
    pub(crate) fn wait_stdout(&self, needle: &str) -> String {
        wait_for(|| self.stdout(), needle);
        self.stdout()
    }

    /// `http://ADDR` + `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// GET on the HTTP listener.
    pub(crate) fn get(&self, path: &str) -> HttpResponse {
        http(self.http, "GET", path, &[], &[])
    }

    /// Sends SIGTERM and waits for the process to exit; returns its status and full log
    /// (with two nodes: the first node's status, once both have stopped, and both logs).
    pub(crate) fn terminate(mut self) -> (ExitStatus, String) {
        let peer_log = match self.second.take() {
            Some((peer, balancers)) => {
                drop(balancers);
                let (status, log) = peer.terminate();
                assert!(status.success(), "the second node: {status}\n{log}");
                log
            }
            None => String::new(),
        };
        let (status, log) = self.terminate_one();
        (status, log + &peer_log)
    }

    fn terminate_one(self) -> (ExitStatus, String) {
        let pid = self.child.id();
        self.terminate_through(pid)
    }

    /// [`Server::terminate`] for a server started under a wrapper that does not pass SIGTERM
    /// on (a tracer): sends it to `pid`, the server itself, and waits for the wrapper to end.
    pub(crate) fn terminate_through(mut self, pid: u32) -> (ExitStatus, String) {
        let pid = pid.to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not stop within {STOP_TIMEOUT:?} of SIGTERM:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        (status, self.stderr())
    }

    /// Kills the process (every node) with SIGKILL and waits for it.
    pub(crate) fn kill(mut self) {
        if let Some((peer, _)) = self.second.take() {
            peer.kill();
        }
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "{status}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL; the process may already be gone.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The command of a second node beside `cmd` (`agentca --data-dir DIR … serve …` on one
/// PostgreSQL database): the same arguments and environment, its own copy of the data
/// directory (the CA's keys and certificates are shared by configuration, as in a deployment;
/// the audit log, the admin socket and the pre-signed OCSP responses are each node's own) and
/// free ports. `None` for any other command.
fn second_node(cmd: &Command) -> Option<Command> {
    let args: Vec<&std::ffi::OsStr> = cmd.get_args().collect();
    if !args.iter().any(|a| *a == "serve") {
        return None;
    }
    let at = args.iter().position(|a| *a == "--data-dir")?;
    let data = PathBuf::from(args.get(at + 1)?);
    let copy = super::support::second_node_data(&data);
    let _ = std::fs::remove_dir_all(&copy);
    super::support::copy_dir(&data, &copy);
    let mut second = Command::new(cmd.get_program());
    let mut listener = false;
    for (n, arg) in args.iter().enumerate() {
        if n == at + 1 {
            second.arg(&copy);
        } else if listener {
            second.arg("127.0.0.1:0");
        } else {
            second.arg(arg);
        }
        listener = *arg == "--listen" || *arg == "--http-listen";
    }
    same_environment(&mut second, cmd);
    Some(second)
}

/// The serials (lowercase hex, as `serial_hex` and `cert list` write them) the DER CRL `der`
/// lists; none if it does not parse.
pub(crate) fn crl_serials(der: &[u8]) -> Vec<String> {
    use x509_parser::prelude::{CertificateRevocationList, FromDer};
    let Ok((_, crl)) = CertificateRevocationList::from_der(der) else {
        return Vec::new();
    };
    crl.iter_revoked_certificates()
        .map(|entry| hex::encode(entry.raw_serial()))
        .collect()
}

/// The CRL number of a DER CRL.
pub(crate) fn crl_number(der: &[u8]) -> u64 {
    use x509_parser::prelude::{CertificateRevocationList, FromDer};
    let (_, crl) = CertificateRevocationList::from_der(der).expect("a CRL");
    let digits = crl.crl_number().expect("a CRL number").to_bytes_be();
    digits.iter().fold(0, |n, d| (n << 8) | u64::from(*d))
}

/// Waits up to ten seconds for `needle` to appear in what `output` reads.
fn wait_for(output: impl Fn() -> String, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !output().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "the server never printed {needle:?}:\n{}",
            output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What [`http`] received.
#[derive(Debug)]
pub(crate) struct HttpResponse {
    pub(crate) status: u16,
    /// Names in lowercase.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl HttpResponse {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A minimal HTTP/1.1 client: one request per connection (`Connection: close`). The body is
/// written from another thread while the answer is read, because a server refusing a large
/// body answers (and closes) before reading it; a write error is then expected and ignored.
/// `Content-Length` is added unless `headers` name a transfer encoding.
pub(crate) fn http(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    try_http(addr, method, target, headers, body)
        .unwrap_or_else(|e| panic!("{method} {target} at {addr}: {e}"))
}

/// [`http`] that says why instead of panicking when there is no whole answer (nobody
/// listening, the server dying mid-answer).
pub(crate) fn try_http(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<HttpResponse, String> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut request =
        format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    let chunked = headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"));
    if !chunked && (method == "POST" || !body.is_empty()) {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&bytes);
    });
    let mut raw = Vec::new();
    // A reset after the answer (the server closing on an unread body) is not a failure: the
    // bytes read before it are kept.
    let read = (&stream).read_to_end(&mut raw);
    sender.join().unwrap();
    if !whole_response(&raw) {
        return Err(match read {
            Err(e) => format!("no whole answer ({} bytes, then {e})", raw.len()),
            Ok(_) => format!("no whole answer ({} bytes)", raw.len()),
        });
    }
    Ok(parse_http_response(&raw))
}

/// Whether `raw` holds a response head and all the body its `Content-Length` announces
/// (chunked and unsized bodies are taken as read to the end).
fn whole_response(raw: &[u8]) -> bool {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let Ok(head) = std::str::from_utf8(&raw[..split]) else {
        return false;
    };
    let length = head.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    length.is_none_or(|len| raw.len() - (split + 4) >= len)
}

fn parse_http_response(raw: &[u8]) -> HttpResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no HTTP response head in {:?}",
                String::from_utf8_lossy(raw)
            )
        });
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let rest = &raw[split + 4..];
    let mut response = parse_head(head);
    response.body = if response.header("transfer-encoding") == Some("chunked") {
        dechunk(rest)
    } else if let Some(len) = response.header("content-length") {
        let len: usize = len.parse().unwrap();
        assert!(rest.len() >= len, "truncated body: {} of {len}", rest.len());
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    response
}

/// The status line and headers of a response; no body yet.
fn parse_head(head: &str) -> HttpResponse {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    HttpResponse {
        status,
        headers,
        body: Vec::new(),
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = std::str::from_utf8(&data[..eol]).unwrap();
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        data = &data[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// A port nobody listens on right now, for a process to bind later (a stock client's
/// validation port, a port named in a configuration).
///
/// It comes from below the kernel's ephemeral range, which is where every `bind` to port 0
/// and every outgoing connection takes its port: a port from that range is free only until
/// one of the many servers and clients the other tests start is handed it, so a test that
/// names it a little later would find it taken now and then. Below the range only this
/// function hands out ports, never the same one twice in a run.
pub(crate) fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::hash::{BuildHasher, RandomState};
    use std::sync::OnceLock;
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let low = ephemeral_start.saturating_sub(12_000).max(1024);
    let span = u64::from(ephemeral_start - low).max(1);
    let mut given = GIVEN.get_or_init(Mutex::default).lock().unwrap();
    for attempt in 0u64..1000 {
        let pick = RandomState::new().hash_one(attempt) % span;
        let port = low + u16::try_from(pick).unwrap();
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free port in {low}..{ephemeral_start}");
}

impl Server {
    /// `https://ADDR` + `path`.
    pub(crate) fn https_url(&self, path: &str) -> String {
        format!("https://{}{path}", self.https)
    }

    /// The ACME directory URL, on the HTTPS listener.
    pub(crate) fn acme_directory_url(&self) -> String {
        self.https_url("/acme/directory")
    }

    /// The sum of every sample of `series` on `/metrics` (HTTP listener), over every node. `series` is a metric
    /// name (`agentca_http_requests_total`: all its label sets added up) or a name with labels
    /// exactly as printed (`agentca_http_requests_total{route="healthz",status="200"}`).
    /// A series that was never recorded counts as 0.
    pub(crate) fn metric(&self, series: &str) -> f64 {
        self.nodes().map(|node| node.own_metric(series)).sum()
    }

    /// `GET path` on the HTTP listener of each node itself (not through a balancer): one
    /// response per node.
    pub(crate) fn get_on_each_node(&self, path: &str) -> Vec<HttpResponse> {
        self.nodes()
            .map(|node| http(node.own_http, "GET", path, &[], &[]))
            .collect()
    }

    /// Waits until every node lists the certificate with serial `serial` (hex) on its CRL,
    /// and so answers it `revoked` over OCSP too (a node re-signs its OCSP answer before it
    /// schedules the CRL). With one node it returns at once: the node that revoked answers
    /// `revoked` as soon as the revocation is acknowledged, which the suites assert. With two,
    /// the other node learns within its poll interval (2 s by default).
    pub(crate) fn await_revoked_everywhere(&self, serial: &str) {
        if self.second.is_none() {
            return;
        }
        let wanted = serial.to_ascii_lowercase();
        let deadline = Instant::now() + Duration::from_secs(8);
        for node in self.nodes() {
            loop {
                let crl = http(node.own_http, "GET", "/crl", &[], &[]);
                if crl.status == 200 && crl_serials(&crl.body).contains(&wanted) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {} never listed {serial} on its CRL",
                    node.own_http
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn own_metric(&self, series: &str) -> f64 {
        let response = http(self.own_http, "GET", "/metrics", &[], &[]);
        assert_eq!(response.status, 200, "{}", response.text());
        let text = response.text();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                let matches = name == series
                    || (!series.contains('{') && name.split('{').next() == Some(series));
                matches.then(|| {
                    value
                        .parse::<f64>()
                        .unwrap_or_else(|e| panic!("not a sample ({e}): {l}"))
                })
            })
            .sum()
    }
}

/// The `[acme]` table of a test server's configuration file.
#[derive(Debug, Clone)]
pub(crate) struct AcmeOptions {
    /// The port http-01 validation connects to (default: a free one).
    pub(crate) http01_port: u16,
    /// The port tls-alpn-01 validation connects to (default: a free one).
    pub(crate) tls_alpn01_port: u16,
    /// Address ranges validation may reach (default: `127.0.0.0/8`).
    pub(crate) allow_addresses: Vec<String>,
    /// `order_lifetime`, if set.
    pub(crate) order_lifetime: Option<String>,
    /// More top-level TOML lines, written before `[acme]` (e.g. `crl_interval = "1h"`).
    pub(crate) top_level: String,
}

impl Default for AcmeOptions {
    fn default() -> Self {
        Self {
            http01_port: free_port(),
            tls_alpn01_port: free_port(),
            allow_addresses: vec!["127.0.0.0/8".to_owned()],
            order_lifetime: None,
            top_level: String::new(),
        }
    }
}

impl AcmeOptions {
    /// The configuration file's text, with validation lookups sent to `nameserver`.
    pub(crate) fn toml(&self, nameserver: SocketAddr) -> String {
        let quoted = |items: &[String]| {
            items
                .iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut text = self.top_level.clone();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!(
            "[acme]\nallow_addresses = [{}]\nnameservers = [\"{nameserver}\"]\n\
             http01_port = {}\ntls_alpn01_port = {}\n",
            quoted(&self.allow_addresses),
            self.http01_port,
            self.tls_alpn01_port,
        ));
        if let Some(lifetime) = &self.order_lifetime {
            text.push_str(&format!("order_lifetime = {lifetime:?}\n"));
        }
        text
    }
}

/// A running `agentca serve` with ACME validation pointed at loopback: names set on
/// [`AcmeServer::dns`] resolve for validation, and http-01 / tls-alpn-01 connect to the chosen
/// ports on 127.0.0.1. Derefs to [`Server`]; dropping it kills the server and the DNS server.
pub(crate) struct AcmeServer<'e> {
    pub(crate) server: Server,
    pub(crate) env: &'e Env,
    /// The DNS server validation asks (`[acme] nameservers`).
    pub(crate) dns: FakeDns,
    /// What the configuration file says.
    pub(crate) options: AcmeOptions,
}

impl Deref for AcmeServer<'_> {
    type Target = Server;

    fn deref(&self) -> &Server {
        &self.server
    }
}

impl<'e> AcmeServer<'e> {
    /// Starts `serve` on `env` (which should hold a CA, e.g. [`Env::with_ca`]) with the
    /// default [`AcmeOptions`].
    pub(crate) fn start(env: &'e Env) -> Self {
        Self::start_with(env, AcmeOptions::default())
    }

    /// Starts `serve` on `env` with `options`, written to `acme.toml` beside the data
    /// directory.
    pub(crate) fn start_with(env: &'e Env, options: AcmeOptions) -> Self {
        let dns = FakeDns::start();
        let config = env.write("acme.toml", options.toml(dns.addr()));
        let mut cmd = serve_on_free_ports(env);
        cmd.arg("--config").arg(&config);
        let server = Server::start(cmd);
        Self {
            server,
            env,
            dns,
            options,
        }
    }

    /// The port http-01 validation connects to: where a client's standalone server listens.
    pub(crate) fn http01_port(&self) -> u16 {
        self.options.http01_port
    }

    /// The port tls-alpn-01 validation connects to.
    pub(crate) fn tls_alpn01_port(&self) -> u16 {
        self.options.tls_alpn01_port
    }

    /// `root.pem`, what ACME clients must trust for the HTTPS listener.
    pub(crate) fn root_pem(&self) -> PathBuf {
        self.env.data_file("root.pem")
    }

    /// A fresh single-use EAB credential for `agent` (`token create --for acme`, through the
    /// admin socket): `(kid, hmac)`.
    pub(crate) fn eab(&self, agent: &str) -> (String, String) {
        let doc = self
            .env
            .json(&["token", "create", "--agent", agent, "--for", "acme"]);
        assert_eq!(doc["agent"], agent, "{doc:#}");
        let field = |name: &str| {
            doc[name]
                .as_str()
                .unwrap_or_else(|| panic!("no {name} in {doc:#}"))
                .to_owned()
        };
        (field("kid"), field("hmac"))
    }

    /// `agentca enroll` of `agent` over ACME with a fresh EAB credential, writing `key` and
    /// `cert`; must succeed.
    pub(crate) fn enroll(&self, agent: &str, key: &Path, cert: &Path) -> super::support::Outcome {
        let (kid, hmac) = self.eab(agent);
        let path = |p: &Path| p.display().to_string();
        self.env
            .run(&[
                "enroll",
                "--agent",
                agent,
                "--key",
                &path(key),
                "--cert",
                &path(cert),
                "--acme",
                &self.acme_directory_url(),
                "--eab-kid",
                &kid,
                "--eab-hmac",
                &hmac,
                "--ca",
                &path(&self.root_pem()),
            ])
            .success()
    }

    /// GET `path` on the HTTPS listener with curl trusting `root.pem`; `None` (after a notice,
    /// or a panic under `AGENTCA_REQUIRE_TOOLS=1`) when curl is missing.
    pub(crate) fn https_get(&self, path: &str) -> Option<HttpResponse> {
        https_get(
            &self.https_url(path),
            &self.root_pem(),
            &self.env.path("https"),
        )
    }

    /// The ACME directory object, fetched over HTTPS; `None` when curl is missing.
    pub(crate) fn acme_directory(&self) -> Option<Value> {
        let response = self.https_get("/acme/directory")?;
        assert_eq!(response.status, 200, "{}", response.text());
        Some(serde_json::from_slice(&response.body).unwrap_or_else(|e| {
            panic!("the ACME directory is not JSON ({e}): {}", response.text())
        }))
    }
}

/// GET `url` with curl trusting `ca`, keeping its files under `scratch` (`.head`, `.body`).
pub(crate) fn https_get(url: &str, ca: &Path, scratch: &Path) -> Option<HttpResponse> {
    let head = scratch.with_extension("head");
    let body = scratch.with_extension("body");
    let args = [
        "-sS".as_ref(),
        "--max-time".as_ref(),
        "20".as_ref(),
        "--cacert".as_ref(),
        ca.as_os_str(),
        "-D".as_ref(),
        head.as_os_str(),
        "-o".as_ref(),
        body.as_os_str(),
        url.as_ref(),
    ];
    let output = agentca_testkit::tools::run("curl", &args, "HTTPS requests to agentca serve")?;
    assert!(
        output.status.success(),
        "curl {url}: {}",
        agentca_testkit::tools::transcript(&output)
    );
    let head_text = std::fs::read_to_string(&head).unwrap();
    let mut response = parse_head(head_text.trim_end());
    response.body = std::fs::read(&body).unwrap();
    Some(response)
}

/// The harness itself: an ACME server comes up with its `[acme]` file, serves the directory
/// over HTTPS trusting `root.pem`, hands out EAB credentials while it runs, and counts
/// requests on `/metrics`.
#[test]
fn harness_starts_an_acme_server() {
    let env = Env::with_ca();
    let server = AcmeServer::start(&env);
    let text = std::fs::read_to_string(env.path("acme.toml")).unwrap();
    assert!(
        text.contains("[acme]") && text.contains("127.0.0.0/8"),
        "{text}"
    );
    let agent = env.add_agent("/agent/harness", &[]);
    let (kid, hmac) = server.eab(&agent);
    assert!(!kid.is_empty() && !hmac.is_empty());
    assert_ne!(server.eab(&agent).0, kid, "EAB credentials are single use");
    if let Some(directory) = server.acme_directory() {
        assert!(directory["newAccount"].is_string(), "{directory:#}");
        assert_eq!(
            directory["meta"]["externalAccountRequired"], true,
            "{directory:#}"
        );
    }
    assert_eq!(server.get("/healthz").status, 200);
    assert!(server.metric("agentca_http_requests_total") >= 1.0);
    assert_eq!(server.metric("agentca_no_such_metric"), 0.0);
}
