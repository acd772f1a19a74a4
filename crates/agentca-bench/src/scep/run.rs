//! The closed-loop SCEP load: GetCACaps and GetCACert, the requests prepared on every CPU, then
//! the measured window in which every worker sends one PKCSReq after another, watched for
//! progress so that a stalled server ends the run.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::ca::{self, ScepCa};
use super::enroll::{Endpoint, Transport, enroll, server_answered};
use super::options::{ScepBenchOptions, cipher_name};
use super::prepare::{Prepared, Recipe, key_size, prepare_all};
use super::report::{ScepBenchReport, ScepEnd, ScepErrors, ScepServerInfo};
use super::serials::SerialRegistry;
use super::url::ScepUrl;
use crate::error::BenchError;
use crate::histogram::Histogram;
use crate::http::{Connector, Http};
use crate::latency::LatencySummary;
use crate::proc_stat::{self, ProcessSample};
use crate::units::{growth, per};

/// The `User-Agent` of every request.
const USER_AGENT: &str = "agentca-bench-scep";
/// How often the server's memory is sampled, and progress checked.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// What the workers measured together. An enrollment takes milliseconds, so one lock per
/// enrollment is no contention worth a per-worker merge.
#[derive(Default)]
struct Tally {
    enrolled: Histogram,
    failed: Histogram,
    errors: ScepErrors,
    serials: SerialRegistry,
    connections: u64,
}

struct Shared {
    endpoint: Endpoint,
    requests: Vec<Prepared>,
    /// The next request to send: each is sent once, by whichever worker takes it.
    next: AtomicUsize,
    /// When the server last answered anything, as nanoseconds since `start`.
    progress_ns: AtomicU64,
    start: Instant,
    tally: Mutex<Tally>,
}

impl Shared {
    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_nanos(self.progress_ns.load(Ordering::Acquire));
        self.start.elapsed().saturating_sub(last)
    }
}

/// One closed-loop client: a request, its answer, the next request.
async fn worker(shared: Arc<Shared>, mut http: Http) {
    loop {
        let index = shared.next.fetch_add(1, Ordering::Relaxed);
        let Some(prepared) = shared.requests.get(index) else {
            return;
        };
        let started = Instant::now();
        let result = enroll(&mut http, &shared.endpoint, prepared).await;
        let latency = started.elapsed();
        let answered = result.as_ref().map_or_else(server_answered, |_| true);
        {
            let mut tally = shared.tally();
            tally.connections += std::mem::take(&mut http.opened);
            match result {
                Ok(issued) => {
                    tally.enrolled.record(latency);
                    tally.serials.record(&issued.issuer, &issued.serial);
                }
                Err(failure) => {
                    tally.failed.record(latency);
                    tally.errors.add(failure.kind, failure.detail);
                }
            }
        }
        if answered {
            let now = u64::try_from(shared.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            shared.progress_ns.fetch_max(now, Ordering::AcqRel);
        }
    }
}

fn observe(pid: Option<u32>) -> Result<Option<ProcessSample>, BenchError> {
    pid.map(proc_stat::sample).transpose()
}

fn runtime_error(e: std::io::Error) -> BenchError {
    BenchError::Io {
        context: "start a runtime".into(),
        source: e,
    }
}

fn cpus_available() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Runs the benchmark and returns its report. Blocking: it starts its own tokio runtimes.
///
/// Fails when the run cannot be made (bad options, no GetCACert, no certificate to encrypt
/// to, an unreadable server process, a key that cannot be made), and with
/// [`BenchError::ScepUnfinished`], carrying the report of what was done, when the server
/// stalled or the window's bound passed. Failed requests are counted in the report.
///
/// With [`ScepBenchOptions::load_cpus`], the calling thread stays pinned to those CPUs.
pub fn run_scep(opts: &ScepBenchOptions) -> Result<ScepBenchReport, BenchError> {
    let fingerprint = opts.check()?;
    let url = ScepUrl::parse(&opts.url)?;
    let key_size = key_size(opts.key_bits)?;
    let count = usize::try_from(opts.count)
        .map_err(|_| BenchError::Options("too many requests for this machine".into()))?;
    // A wrong pid is found before any key is made.
    observe(opts.server_pid)?;
    let connector = Connector::new(None)?;

    let setup = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(runtime_error)?;
    let ca = setup
        .block_on(async {
            // Each of its two requests is bounded by the request timeout.
            let mut http = Http::new(connector.clone(), opts.timeout, USER_AGENT);
            ScepCa::fetch(&mut http, &url, fingerprint.as_ref()).await
        })
        .map_err(|(step, f)| BenchError::Scep {
            step: step.to_owned(),
            reason: format!("{}: {}", f.kind, f.detail),
        })?;
    drop(setup);

    // The requests are the client's work: made on every CPU before anything is timed.
    let mut run_id = [0u8; 4];
    aws_lc_rs::rand::fill(&mut run_id)
        .map_err(|_| BenchError::Crypto("random run identifier".into()))?;
    let recipe = Recipe {
        recipient: ca.recipient_certificate(),
        cipher: opts.cipher,
        key_size,
        common_name_prefix: format!("agentca-bench-{}", hex::encode(run_id)),
    };
    let challenge = |i: usize| opts.challenge.for_request(i);
    let preparation = prepare_all(&recipe, count, cpus_available(), &challenge, opts.progress)?;

    if let Some(cpus) = &opts.load_cpus {
        crate::affinity::pin_to(cpus)?;
    }
    let threads = opts
        .threads
        .unwrap_or_else(cpus_available)
        .clamp(1, opts.concurrency);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("scep-load")
        .enable_all()
        .build()
        .map_err(runtime_error)?;
    let server_info = ScepServerInfo {
        capabilities: ca.capabilities.clone(),
        ca_certificates: ca.certificates.len(),
        recipient_fingerprint: ca::fingerprint(ca.recipient_certificate()),
        recipient_subject: ca::subject(ca.recipient_certificate()),
    };
    let transport = if ca.takes_post() {
        Transport::Post
    } else {
        Transport::Get
    };
    let endpoint = Endpoint {
        url,
        transport,
        trusted: ca.certificates,
    };
    let frame = Frame {
        server_info,
        prepared: preparation.requests.len() as u64,
        preparation_elapsed: preparation.elapsed,
        preparation_threads: preparation.threads,
    };
    let result = runtime.block_on(drive(
        opts,
        connector,
        endpoint,
        preparation.requests,
        frame,
    ));
    // Aborted requests have nothing left worth waiting for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// What the report says about the run besides the window.
struct Frame {
    server_info: ScepServerInfo,
    prepared: u64,
    preparation_elapsed: Duration,
    preparation_threads: usize,
}

async fn drive(
    opts: &ScepBenchOptions,
    connector: Connector,
    endpoint: Endpoint,
    requests: Vec<Prepared>,
    frame: Frame,
) -> Result<ScepBenchReport, BenchError> {
    let http_method = endpoint.transport.name();
    let first = observe(opts.server_pid).ok().flatten();
    let client_first = proc_stat::own_cpu();
    let shared = Arc::new(Shared {
        endpoint,
        requests,
        next: AtomicUsize::new(0),
        progress_ns: AtomicU64::new(0),
        start: Instant::now(),
        tally: Mutex::new(Tally::default()),
    });
    let deadline = shared.start + opts.max_duration;
    let mut set = JoinSet::new();
    for _ in 0..opts.concurrency {
        let http = Http::new(connector.clone(), opts.timeout, USER_AGENT);
        set.spawn(worker(shared.clone(), http));
    }

    let mut rss_max = first.map(|s| s.rss);
    let mut next_sample = Instant::now() + SAMPLE_INTERVAL;
    let end = loop {
        let wake = next_sample.min(deadline);
        tokio::select! {
            joined = set.join_next() => {
                if joined.is_none() {
                    break ScepEnd::Completed;
                }
            }
            () = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                if now >= next_sample {
                    if let Ok(Some(s)) = observe(opts.server_pid) {
                        rss_max = rss_max.max(Some(s.rss));
                    }
                    next_sample = now + SAMPLE_INTERVAL;
                }
                if shared.idle() >= opts.stall_after {
                    break ScepEnd::Stalled { idle: opts.stall_after };
                }
                if now >= deadline {
                    break ScepEnd::TimeLimit { limit: opts.max_duration };
                }
            }
        }
    };
    let elapsed = shared.start.elapsed();
    let last = observe(opts.server_pid).ok().flatten();
    let client_last = proc_stat::own_cpu();
    set.abort_all();
    while set.join_next().await.is_some() {}

    let tally = std::mem::take(&mut *shared.tally());
    let enrollments = tally.enrolled.count();
    let requests = enrollments + tally.failed.count();
    let server_cpu = growth(first.map(|s| s.cpu), last.map(|s| s.cpu));
    let client_cpu = growth(client_first, client_last);
    if let Some(s) = last {
        rss_max = rss_max.max(Some(s.rss));
    }
    let report = ScepBenchReport {
        url: opts.url.clone(),
        concurrency: opts.concurrency,
        requested: opts.count,
        requests,
        enrollments,
        end,
        elapsed,
        enrollments_per_second: enrollments as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE),
        latency: LatencySummary::of(&tally.enrolled),
        failure_latency: LatencySummary::of(&tally.failed),
        errors: tally.errors,
        duplicate_serials: tally.serials.duplicates(),
        duplicate_serial_examples: tally.serials.examples(),
        http_method,
        cipher: cipher_name(opts.cipher),
        key_bits: opts.key_bits,
        server_info: frame.server_info,
        connections: tally.connections,
        prepared: frame.prepared,
        preparation_elapsed: frame.preparation_elapsed,
        preparation_threads: frame.preparation_threads,
        server_pid: opts.server_pid,
        server_cpu,
        server_cpu_per_enrollment: server_cpu.and_then(|c| per(c, enrollments)),
        server_cpu_per_request: server_cpu.and_then(|c| per(c, requests)),
        server_rss_start: first.map(|s| s.rss),
        server_rss_end: last.map(|s| s.rss),
        server_rss_max: rss_max.filter(|_| first.is_some()),
        client_cpu_per_enrollment: client_cpu.and_then(|c| per(c, enrollments)),
    };
    match end {
        ScepEnd::Completed => Ok(report),
        _ => Err(BenchError::ScepUnfinished(Box::new(report))),
    }
}
