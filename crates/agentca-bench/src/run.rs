//! The closed-loop OCSP load: workers on keep-alive connections, a warm-up, and the measured
//! window at whose edges the server is observed.

use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::{Duration, Instant};

use agentca_core::ocsp::{self, CertId, CertStatus, ParsedResponse};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::error::BenchError;
use crate::histogram::Histogram;
use crate::proc_stat::{self, ProcessSample};
use crate::report::{ErrorCounts, OcspBenchReport, StatusCounts};
use crate::target::Target;

/// The largest response body read; a responder sending more is answering something else.
const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// Pause after a failed connection, so that a server that is down is not hammered in a loop.
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);
/// How often the server's memory is sampled during the window.
const RSS_INTERVAL: Duration = Duration::from_millis(500);

/// How requests reach the responder (RFC 6960 Appendix A.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Method {
    /// The DER request as the body of a POST to the URL.
    #[default]
    Post,
    /// `GET URL/{url-encoding of base64 of the DER request}`.
    Get,
}

impl Method {
    /// `POST` or `GET`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Post => "POST",
            Self::Get => "GET",
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Method {
    type Err = BenchError;

    /// `post` or `get`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("post") {
            Ok(Self::Post)
        } else if s.eq_ignore_ascii_case("get") {
            Ok(Self::Get)
        } else {
            Err(BenchError::Options(format!(
                "method {s:?}: expected post or get"
            )))
        }
    }
}

/// What [`run_ocsp`] does. [`OcspBenchOptions::new`] fills in the defaults.
#[derive(Clone, Debug)]
pub struct OcspBenchOptions {
    /// The responder's `http://` URL (the POST target, and the prefix of GET requests).
    pub url: String,
    /// Concurrent connections, each with one request in flight at a time.
    pub concurrency: usize,
    /// Length of the measured window. With `count` too, whichever ends first.
    pub duration: Option<Duration>,
    /// Requests to send in the measured window (successful or not).
    pub count: Option<u64>,
    /// POST or GET.
    pub method: Method,
    /// DER OCSP requests, cycled through in order (worker `i` starts at request `i`).
    pub requests: Vec<Vec<u8>>,
    /// The server's process id, to measure its CPU time and memory from `/proc`.
    pub server_pid: Option<u32>,
    /// Load sent before the window opens and not counted: it fills the server's caches and
    /// lets connections be established.
    pub warmup: Duration,
    /// How long one request (including connecting) may take before it counts as a timeout.
    pub timeout: Duration,
    /// Load generator threads; by default one per CPU this process may run on (so `taskset`
    /// limits them), and never more than `concurrency`.
    pub threads: Option<usize>,
}

impl OcspBenchOptions {
    /// One connection, POST, a 10-second window after a 1-second warm-up, 10-second timeout.
    pub fn new(url: impl Into<String>, requests: Vec<Vec<u8>>) -> Self {
        Self {
            url: url.into(),
            concurrency: 1,
            duration: Some(Duration::from_secs(10)),
            count: None,
            method: Method::Post,
            requests,
            server_pid: None,
            warmup: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            threads: None,
        }
    }

    fn check(&self) -> Result<(), BenchError> {
        let bad = |why: &str| Err(BenchError::Options(why.to_owned()));
        if self.concurrency == 0 {
            return bad("concurrency must be at least 1");
        }
        if self.requests.is_empty() {
            return bad("no requests to send");
        }
        match (self.duration, self.count) {
            (None, None) => return bad("give a duration or a count"),
            (Some(d), _) if d.is_zero() => return bad("the duration must be positive"),
            (_, Some(0)) => return bad("the count must be positive"),
            _ => {}
        }
        if self.timeout.is_zero() {
            return bad("the timeout must be positive");
        }
        if self.threads == Some(0) {
            return bad("threads must be at least 1");
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    Warmup = 0,
    Measuring = 1,
    Done = 2,
}

/// One request, prepared once so that the hot loop only clones reference-counted bytes.
struct Prepared {
    body: Bytes,
    get_uri: Uri,
    cert_ids: Vec<CertId>,
    /// The first successful answer seen, and what it said. Pre-signed responses repeat byte
    /// for byte, and a byte comparison is far cheaper than a parse, so the generator does not
    /// become the bottleneck of a fast server; an answer that differs is parsed in full.
    verified: OnceLock<(Bytes, StatusCounts)>,
}

struct Shared {
    addr: SocketAddr,
    host: HeaderValue,
    post_uri: Uri,
    method: Method,
    timeout: Duration,
    concurrency: usize,
    count: Option<u64>,
    requests: Vec<Prepared>,
    phase: AtomicU8,
    tickets: AtomicU64,
}

impl Shared {
    fn prepare(opts: &OcspBenchOptions) -> Result<Self, BenchError> {
        let target = Target::parse(&opts.url)?;
        let url_error = |reason: String| BenchError::Url {
            url: opts.url.clone(),
            reason,
        };
        let addr = target
            .connect
            .to_socket_addrs()
            .map_err(|e| url_error(format!("cannot resolve {}: {e}", target.connect)))?
            .next()
            .ok_or_else(|| url_error(format!("{} resolves to nothing", target.connect)))?;
        let host = HeaderValue::from_str(&target.host_header)
            .map_err(|e| url_error(format!("host: {e}")))?;
        let post_uri: Uri = target
            .post_path
            .parse()
            .map_err(|e| url_error(format!("path: {e}")))?;
        let requests = opts
            .requests
            .iter()
            .enumerate()
            .map(|(i, der)| {
                let parsed = ocsp::parse_request(der).map_err(|e| {
                    BenchError::Options(format!("request #{} is not an OCSP request: {e}", i + 1))
                })?;
                let get_uri = target
                    .get_path(der)
                    .parse()
                    .map_err(|e| url_error(format!("GET path: {e}")))?;
                Ok(Prepared {
                    body: Bytes::copy_from_slice(der),
                    get_uri,
                    cert_ids: parsed.cert_ids,
                    verified: OnceLock::new(),
                })
            })
            .collect::<Result<_, BenchError>>()?;
        Ok(Self {
            addr,
            host,
            post_uri,
            method: opts.method,
            timeout: opts.timeout,
            concurrency: opts.concurrency,
            count: opts.count,
            requests,
            phase: AtomicU8::new(Phase::Warmup as u8),
            tickets: AtomicU64::new(0),
        })
    }

    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Warmup,
            1 => Phase::Measuring,
            _ => Phase::Done,
        }
    }

    fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    fn request(&self, which: &Prepared) -> Request<Full<Bytes>> {
        let (method, uri, body) = match self.method {
            Method::Post => (
                hyper::Method::POST,
                self.post_uri.clone(),
                which.body.clone(),
            ),
            Method::Get => (hyper::Method::GET, which.get_uri.clone(), Bytes::new()),
        };
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        request.headers_mut().insert(HOST, self.host.clone());
        if self.method == Method::Post {
            request.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/ocsp-request"),
            );
        }
        request
    }
}

/// How one request ended.
enum Outcome {
    Answered(StatusCounts),
    Transport,
    Timeout,
    HttpStatus,
    Unsuccessful,
    Unparsable,
    Mismatched,
}

/// What one worker (and, merged, one thread) measured.
#[derive(Default)]
struct Tally {
    latencies: Histogram,
    statuses: StatusCounts,
    errors: ErrorCounts,
    connections: u64,
}

impl Tally {
    fn merge(&mut self, other: &Self) {
        self.latencies.merge(&other.latencies);
        self.statuses.add(&other.statuses);
        self.errors.add(&other.errors);
        self.connections += other.connections;
    }

    fn record(&mut self, outcome: &Outcome, latency: Duration) {
        match outcome {
            Outcome::Answered(statuses) => {
                self.latencies.record(latency);
                self.statuses.add(statuses);
            }
            Outcome::Transport => self.errors.transport += 1,
            Outcome::Timeout => self.errors.timeout += 1,
            Outcome::HttpStatus => self.errors.http_status += 1,
            Outcome::Unsuccessful => self.errors.ocsp_unsuccessful += 1,
            Outcome::Unparsable => self.errors.unparsable += 1,
            Outcome::Mismatched => self.errors.mismatched += 1,
        }
    }
}

type Sender = SendRequest<Full<Bytes>>;

async fn connect(shared: &Shared) -> Option<Sender> {
    let stream = TcpStream::connect(shared.addr).await.ok()?;
    // Requests are small single writes; Nagle would only add delay.
    stream.set_nodelay(true).ok()?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(async move {
        // Its end is seen by the sender (ready() fails), which reconnects.
        let _ = connection.await;
    });
    Some(sender)
}

/// Sends one request on the worker's connection, reconnecting when it was closed. A request
/// that a reused connection dropped before answering is retried once on a fresh connection:
/// a server may close an idle keep-alive connection at any moment, and that is no error of its.
async fn exchange(
    shared: &Shared,
    conn: &mut Option<Sender>,
    opened: &mut u64,
    which: &Prepared,
) -> Outcome {
    for attempt in 0..2 {
        if let Some(sender) = conn.as_mut()
            && sender.ready().await.is_err()
        {
            *conn = None;
        }
        let fresh = conn.is_none();
        if fresh {
            match connect(shared).await {
                Some(mut sender) => {
                    *opened += 1;
                    if sender.ready().await.is_err() {
                        return Outcome::Transport;
                    }
                    *conn = Some(sender);
                }
                None => return Outcome::Transport,
            }
        }
        let Some(sender) = conn.as_mut() else {
            return Outcome::Transport;
        };
        let response = match sender.send_request(shared.request(which)).await {
            Ok(response) => response,
            Err(e) if attempt == 0 && !fresh && (e.is_canceled() || e.is_incomplete_message()) => {
                *conn = None;
                continue;
            }
            Err(_) => {
                *conn = None;
                return Outcome::Transport;
            }
        };
        let status = response.status();
        let body = match Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
        {
            Ok(body) => body.to_bytes(),
            Err(_) => {
                *conn = None;
                return Outcome::Transport;
            }
        };
        if status != StatusCode::OK {
            return Outcome::HttpStatus;
        }
        return check(which, body);
    }
    Outcome::Transport
}

/// Whether `body` is a successful OCSP response answering for every certificate asked about.
fn check(which: &Prepared, body: Bytes) -> Outcome {
    if let Some((seen, statuses)) = which.verified.get()
        && *seen == body
    {
        return Outcome::Answered(*statuses);
    }
    let basic = match ocsp::parse_response(&body) {
        Ok(ParsedResponse::Successful(basic)) => basic,
        Ok(ParsedResponse::Unsuccessful(_)) => return Outcome::Unsuccessful,
        Err(_) => return Outcome::Unparsable,
    };
    let mut statuses = StatusCounts::default();
    for id in &which.cert_ids {
        let Some(single) = basic.responses.iter().find(|r| r.cert_id == *id) else {
            return Outcome::Mismatched;
        };
        match single.status {
            CertStatus::Good => statuses.good += 1,
            CertStatus::Revoked { .. } => statuses.revoked += 1,
            CertStatus::Unknown => statuses.unknown += 1,
        }
    }
    let _ = which.verified.set((body, statuses));
    Outcome::Answered(statuses)
}

/// One closed-loop client: a request, its answer, the next request.
async fn worker(shared: Arc<Shared>, index: usize) -> Tally {
    let mut tally = Tally::default();
    let mut conn = None;
    let mut next = index;
    loop {
        let phase = shared.phase();
        match phase {
            Phase::Done => break,
            Phase::Measuring => {
                if let Some(count) = shared.count
                    && shared.tickets.fetch_add(1, Ordering::Relaxed) >= count
                {
                    break;
                }
            }
            Phase::Warmup => {}
        }
        let which = &shared.requests[next % shared.requests.len()];
        next = next.wrapping_add(shared.concurrency);

        let mut opened = 0;
        let started = Instant::now();
        let outcome = tokio::time::timeout(
            shared.timeout,
            exchange(&shared, &mut conn, &mut opened, which),
        )
        .await
        .unwrap_or(Outcome::Timeout);
        let latency = started.elapsed();
        // Only requests wholly inside the window count.
        if phase == Phase::Measuring && shared.phase() == Phase::Measuring {
            tally.record(&outcome, latency);
            tally.connections += opened;
        }
        if matches!(outcome, Outcome::Transport | Outcome::Timeout) {
            conn = None;
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
    }
    tally
}

/// Runs the workers `indices` on a single-threaded runtime in a thread of their own: each
/// thread's workers share nothing with other threads' but the counters, so no task migrates.
fn spawn_thread(
    shared: Arc<Shared>,
    indices: Vec<usize>,
    done: mpsc::Sender<Result<Tally, String>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ocsp-load".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("start a runtime: {e}"))
                .and_then(|runtime| {
                    runtime.block_on(async {
                        let tasks: Vec<_> = indices
                            .into_iter()
                            .map(|i| tokio::spawn(worker(shared.clone(), i)))
                            .collect();
                        let mut tally = Tally::default();
                        for task in tasks {
                            let worker = task.await.map_err(|e| format!("a worker failed: {e}"))?;
                            tally.merge(&worker);
                        }
                        Ok(tally)
                    })
                });
            // The receiver is gone only if the run itself was abandoned.
            let _ = done.send(result);
        })
}

/// The opening of the measured window: when, and the CPU counters at that moment.
struct Window {
    first: Option<ProcessSample>,
    client_first: Option<Duration>,
    start: Instant,
}

impl Window {
    fn open(shared: &Shared, pid: Option<u32>) -> Self {
        let first = observe(pid).ok().flatten();
        let client_first = proc_stat::own_cpu();
        shared.set_phase(Phase::Measuring);
        Self {
            first,
            client_first,
            start: Instant::now(),
        }
    }
}

/// Samples the server, if one is observed.
fn observe(pid: Option<u32>) -> Result<Option<ProcessSample>, BenchError> {
    pid.map(proc_stat::sample).transpose()
}

/// Runs the benchmark and returns its report. Blocking: it starts its own threads and tokio
/// runtimes, and returns when the window has closed and every in-flight request has ended
/// (within `timeout`).
///
/// Fails only when the run cannot be made (bad options, an unresolvable host, an unreadable
/// server process); requests that fail are counted in the report.
pub fn run_ocsp(opts: &OcspBenchOptions) -> Result<OcspBenchReport, BenchError> {
    opts.check()?;
    let shared = Arc::new(Shared::prepare(opts)?);
    // A wrong pid is found before any load is sent.
    observe(opts.server_pid)?;

    let parallelism = std::thread::available_parallelism().map_or(1, usize::from);
    let threads = opts
        .threads
        .unwrap_or(parallelism)
        .clamp(1, opts.concurrency);
    // Without a warm-up the window opens before the first connection, so that connecting is
    // measured too.
    let window = opts
        .warmup
        .is_zero()
        .then(|| Window::open(&shared, opts.server_pid));
    let (done_tx, done_rx) = mpsc::channel();
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let indices = (t..opts.concurrency).step_by(threads).collect();
        let handle = spawn_thread(shared.clone(), indices, done_tx.clone()).map_err(|e| {
            shared.set_phase(Phase::Done);
            BenchError::Io {
                context: "start a load generator thread".into(),
                source: e,
            }
        })?;
        handles.push(handle);
    }
    drop(done_tx);

    let mut finished = Vec::with_capacity(threads);
    let warmup_end = Instant::now() + opts.warmup;
    while window.is_none() && finished.len() < threads {
        let now = Instant::now();
        if now >= warmup_end {
            break;
        }
        match done_rx.recv_timeout(warmup_end - now) {
            Ok(result) => finished.push(result),
            Err(_) => break,
        }
    }
    let window = match window {
        Some(w) => w,
        None => Window::open(&shared, opts.server_pid),
    };
    let (first, client_first, start) = (window.first, window.client_first, window.start);
    let deadline = opts.duration.map(|d| start + d);
    let mut rss_max = first.map(|s| s.rss);
    while finished.len() < threads {
        let now = Instant::now();
        let wait = match deadline {
            Some(d) if now >= d => break,
            Some(d) => RSS_INTERVAL.min(d - now),
            None => RSS_INTERVAL,
        };
        match done_rx.recv_timeout(wait) {
            Ok(result) => finished.push(result),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Ok(Some(s)) = observe(opts.server_pid) {
                    rss_max = rss_max.max(Some(s.rss));
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let elapsed = start.elapsed();
    let last = observe(opts.server_pid).ok().flatten();
    let client_last = proc_stat::own_cpu();
    shared.set_phase(Phase::Done);

    finished.extend(done_rx.iter());
    for handle in handles {
        let _ = handle.join();
    }
    let mut tally = Tally::default();
    for result in finished {
        tally.merge(&result.map_err(|e| BenchError::Io {
            context: "load generator".into(),
            source: std::io::Error::other(e),
        })?);
    }

    let requests = tally.latencies.count();
    let per_request = |total: Duration| crate::units::per(total, requests);
    let server_cpu = crate::units::growth(first.map(|s| s.cpu), last.map(|s| s.cpu));
    let client_cpu = crate::units::growth(client_first, client_last);
    if let Some(s) = last {
        rss_max = rss_max.max(Some(s.rss));
    }
    let h = &tally.latencies;
    Ok(OcspBenchReport {
        url: opts.url.clone(),
        method: opts.method,
        concurrency: opts.concurrency,
        warmup: opts.warmup,
        requests,
        errors: tally.errors,
        statuses: tally.statuses,
        elapsed,
        rps: requests as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE),
        mean: h.mean(),
        p50: h.quantile(0.50),
        p90: h.quantile(0.90),
        p99: h.quantile(0.99),
        p999: h.quantile(0.999),
        max: h.max(),
        connections: tally.connections,
        server_pid: opts.server_pid,
        server_cpu,
        server_cpu_per_request: server_cpu.and_then(per_request),
        server_rss_start: first.map(|s| s.rss),
        server_rss_end: last.map(|s| s.rss),
        server_rss_max: rss_max.filter(|_| first.is_some()),
        client_cpu_per_request: client_cpu.and_then(per_request),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::requests::requests_for;
    use crate::test_pki::TestPki;
    use crate::test_server::{Behaviour, TestServer};

    fn options(url: &str, pki: &TestPki, count: u64, concurrency: usize) -> OcspBenchOptions {
        let mut opts = OcspBenchOptions::new(
            url,
            requests_for(&pki.issuer_der, &pki.leaf_ders, false).unwrap(),
        );
        opts.count = Some(count);
        opts.duration = None;
        opts.concurrency = concurrency;
        opts.warmup = Duration::ZERO;
        opts.timeout = Duration::from_secs(5);
        opts
    }

    #[test]
    fn post_and_get_are_answered_and_counted() {
        let pki = TestPki::new(5);
        let server = TestServer::start(&pki, Behaviour::Sign);
        let mut opts = options(&server.url, &pki, 300, 4);
        opts.server_pid = Some(std::process::id());

        let report = run_ocsp(&opts).unwrap();
        assert_eq!(report.requests, 300, "{}", report.to_text());
        assert_eq!(report.errors, ErrorCounts::default());
        assert_eq!(report.statuses.good, 300);
        assert!(
            (1..=4).contains(&report.connections),
            "{}",
            report.connections
        );
        assert!(report.p50 <= report.p99 && report.p99 <= report.max);
        assert!(report.rps > 0.0);
        assert!(report.server_cpu.is_some() && report.server_cpu_per_request.is_some());
        assert!(report.server_rss_start.unwrap() > 0);
        assert!(report.server_rss_max >= report.server_rss_end);
        assert_eq!(server.posts(), 300);

        opts.method = Method::Get;
        opts.server_pid = None;
        let report = run_ocsp(&opts).unwrap();
        assert_eq!(report.requests, 300, "{}", report.to_text());
        assert_eq!(report.errors.total(), 0);
        assert_eq!(server.gets(), 300);
        assert_eq!(report.server_cpu, None);
        assert!(report.to_json()["server"].is_null());
    }

    #[test]
    fn a_duration_run_measures_only_its_window() {
        let pki = TestPki::new(2);
        let server = TestServer::start(&pki, Behaviour::Sign);
        let mut opts = options(&server.url, &pki, 1, 2);
        opts.count = None;
        opts.duration = Some(Duration::from_millis(300));
        opts.warmup = Duration::from_millis(100);
        let report = run_ocsp(&opts).unwrap();
        assert!(report.requests > 0);
        assert_eq!(report.errors.total(), 0);
        assert!(
            report.elapsed >= Duration::from_millis(300),
            "{:?}",
            report.elapsed
        );
        assert!(
            report.elapsed < Duration::from_secs(2),
            "{:?}",
            report.elapsed
        );
        // Warm-up requests went to the server but not into the report.
        assert!(server.posts() > report.requests);
    }

    #[test]
    fn one_request_per_connection_is_no_error() {
        let pki = TestPki::new(3);
        let server = TestServer::start(&pki, Behaviour::SignAndClose);
        let report = run_ocsp(&options(&server.url, &pki, 60, 3)).unwrap();
        assert_eq!(report.requests, 60, "{}", report.to_text());
        assert_eq!(report.errors.total(), 0);
        assert_eq!(report.connections, 60);
    }

    #[test]
    fn each_kind_of_failure_is_counted_apart() {
        let pki = TestPki::new(2);
        for (behaviour, expect) in [
            (
                Behaviour::HttpError,
                ErrorCounts {
                    http_status: 20,
                    ..ErrorCounts::default()
                },
            ),
            (
                Behaviour::TryLater,
                ErrorCounts {
                    ocsp_unsuccessful: 20,
                    ..ErrorCounts::default()
                },
            ),
            (
                Behaviour::Garbage,
                ErrorCounts {
                    unparsable: 20,
                    ..ErrorCounts::default()
                },
            ),
            (
                Behaviour::WrongSerial,
                ErrorCounts {
                    mismatched: 20,
                    ..ErrorCounts::default()
                },
            ),
        ] {
            let server = TestServer::start(&pki, behaviour);
            let report = run_ocsp(&options(&server.url, &pki, 20, 2)).unwrap();
            assert_eq!(report.errors, expect, "{behaviour:?}");
            assert_eq!(report.requests, 0, "{behaviour:?}");
        }
    }

    #[test]
    fn refused_connections_and_silent_servers_are_counted() {
        let pki = TestPki::new(1);
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/ocsp", closed.local_addr().unwrap());
        drop(closed);
        let report = run_ocsp(&options(&url, &pki, 5, 1)).unwrap();
        assert_eq!(report.errors.transport, 5);
        assert_eq!(report.requests, 0);

        // Accepts connections and never answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/ocsp", silent.local_addr().unwrap());
        let mut opts = options(&url, &pki, 2, 1);
        opts.timeout = Duration::from_millis(200);
        let report = run_ocsp(&opts).unwrap();
        assert_eq!(report.errors.timeout, 2);
        drop(silent);
    }

    #[test]
    fn unusable_options_are_refused_before_any_load() {
        let pki = TestPki::new(1);
        let good = options("http://127.0.0.1:9/ocsp", &pki, 1, 1);
        let mut cases = Vec::new();
        let mut o = good.clone();
        o.concurrency = 0;
        cases.push(o);
        let mut o = good.clone();
        o.requests.clear();
        cases.push(o);
        let mut o = good.clone();
        o.count = None;
        cases.push(o);
        let mut o = good.clone();
        o.count = Some(0);
        cases.push(o);
        let mut o = good.clone();
        o.requests = vec![b"not a request".to_vec()];
        cases.push(o);
        for o in cases {
            assert!(matches!(run_ocsp(&o), Err(BenchError::Options(_))), "{o:?}");
        }
        let mut o = good.clone();
        o.url = "https://127.0.0.1/ocsp".into();
        assert!(matches!(run_ocsp(&o), Err(BenchError::Url { .. })));
        let mut o = good;
        o.server_pid = Some(u32::MAX);
        assert!(matches!(run_ocsp(&o), Err(BenchError::Server { .. })));
    }

    #[test]
    fn method_names() {
        assert_eq!("post".parse::<Method>().unwrap(), Method::Post);
        assert_eq!("GET".parse::<Method>().unwrap(), Method::Get);
        assert!("put".parse::<Method>().is_err());
        assert_eq!(Method::Get.to_string(), "GET");
    }
}
