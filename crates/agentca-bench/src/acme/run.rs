//! The closed-loop ACME load: accounts first, then the measured window in which every worker
//! runs one order after another, watched for progress so that a stalled server ends the run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rcgen::KeyPair;
use tokio::task::JoinSet;

use super::client::{Client, Directory};
use super::jose::AccountKey;
use super::options::{AcmeBenchOptions, NameTemplate};
use super::order::{Step, run_order};
use super::report::{AcmeBenchReport, AcmeEnd, AcmeErrors, StepLatencies};
use crate::error::BenchError;
use crate::failure::Failure;
use crate::histogram::Histogram;
use crate::http::{Connector, Http};
use crate::latency::LatencySummary;
use crate::proc_stat::{self, ProcessSample};

/// How often the server's memory is sampled, and progress checked.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// newAccount requests rejected for their nonce twice in a row are sent again, up to this many
/// times: an account is set-up, not load, and a server that rejects nonces at random (pebble
/// by default) should not end the run before it has begun.
const ACCOUNT_ATTEMPTS: u32 = 3;
/// The `User-Agent` of every request.
const USER_AGENT: &str = "agentca-bench-acme";
/// Pause after a failed order, so that a server that fails at once is not hammered in a loop.
const FAILURE_PAUSE: Duration = Duration::from_millis(10);

/// What the workers measured together. Orders take milliseconds, so one lock per order is
/// no contention worth a per-worker merge.
#[derive(Default)]
struct Tally {
    orders: Histogram,
    steps: [Histogram; 4],
    errors: AcmeErrors,
    requests: u64,
    connections: u64,
    bad_nonce_retries: u64,
}

struct Shared {
    directory: Directory,
    template: NameTemplate,
    /// Orders still to complete and not yet taken by a worker; a failed order gives its
    /// place back, so that exactly `orders` complete.
    remaining: AtomicU64,
    /// The next `{n}`: every attempt gets new names, a retry included.
    next_name: AtomicU64,
    /// When an order last completed, as nanoseconds since `start`.
    progress_ns: AtomicU64,
    start: Instant,
    /// How long one order may poll before it is given up.
    order_time: Duration,
    /// The certificate keys made before the window; a failed order's key goes back.
    keys: Mutex<Vec<KeyPair>>,
    tally: Mutex<Tally>,
}

impl Shared {
    fn reserve(&self) -> bool {
        self.remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| r.checked_sub(1))
            .is_ok()
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take_key(&self) -> Result<KeyPair, Failure> {
        let key = self
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match key {
            Some(key) => Ok(key),
            None => certificate_key().map_err(|e| Failure::state("certificate key", e.to_string())),
        }
    }

    fn give_back(&self, key: KeyPair) {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(key);
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_nanos(self.progress_ns.load(Ordering::Acquire));
        self.start.elapsed().saturating_sub(last)
    }
}

fn certificate_key() -> Result<KeyPair, BenchError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| BenchError::Crypto(format!("generate a certificate key: {e}")))
}

/// One closed-loop client: an order, its certificate, the next order.
async fn worker(shared: Arc<Shared>, mut client: Client) {
    while shared.reserve() {
        let n = shared.next_name.fetch_add(1, Ordering::Relaxed);
        let names = shared.template.render(n);
        let started = Instant::now();
        let (result, key) = match shared.take_key() {
            Ok(key) => {
                let result = run_order(
                    &mut client,
                    &shared.directory,
                    &names,
                    &key,
                    started + shared.order_time,
                )
                .await;
                (result, Some(key))
            }
            Err(f) => (Err((Step::Finalize, f)), None),
        };
        let latency = started.elapsed();
        let failed = {
            let mut tally = shared.tally();
            tally.requests += std::mem::take(&mut client.http.requests);
            tally.connections += std::mem::take(&mut client.http.opened);
            tally.bad_nonce_retries += std::mem::take(&mut client.bad_nonce_retries);
            match result {
                Ok(times) => {
                    tally.orders.record(latency);
                    for (histogram, time) in tally.steps.iter_mut().zip(times) {
                        histogram.record(time);
                    }
                    false
                }
                Err((step, failure)) => {
                    tally
                        .errors
                        .add(format!("{}: {}", step.name(), failure.kind), failure.detail);
                    true
                }
            }
        };
        if failed {
            if let Some(key) = key {
                shared.give_back(key);
            }
            shared.remaining.fetch_add(1, Ordering::AcqRel);
            tokio::time::sleep(FAILURE_PAUSE).await;
        } else {
            let now = u64::try_from(shared.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            shared.progress_ns.fetch_max(now, Ordering::AcqRel);
        }
    }
}

fn observe(pid: Option<u32>) -> Result<Option<ProcessSample>, BenchError> {
    pid.map(proc_stat::sample).transpose()
}

fn setup_error(step: &str, f: Failure) -> BenchError {
    BenchError::Acme {
        step: step.to_owned(),
        reason: format!("{}: {}", f.kind, f.detail),
    }
}

/// Accounts, one per worker, created concurrently and timed; any failure ends the run, since
/// a worker without an account has nothing to measure.
async fn create_accounts(
    opts: &AcmeBenchOptions,
    connector: &Connector,
    directory: &Directory,
    deadline: Instant,
) -> Result<(Vec<Client>, Histogram, Duration), BenchError> {
    let mut keys = Vec::with_capacity(opts.concurrency);
    for _ in 0..opts.concurrency {
        keys.push(AccountKey::generate()?);
    }
    let started = Instant::now();
    let mut set = JoinSet::new();
    for (worker, key) in keys.into_iter().enumerate() {
        let mut client = Client::new(Http::new(connector.clone(), opts.timeout, USER_AGENT), key);
        let directory = directory.clone();
        let eab = opts.eab.for_worker(worker).cloned();
        set.spawn(async move {
            let started = Instant::now();
            let mut attempt = 1;
            loop {
                match client.create_account(&directory, eab.as_ref()).await {
                    Ok(()) => return Ok((client, started.elapsed())),
                    Err(f) if f.is_bad_nonce() && attempt < ACCOUNT_ATTEMPTS => attempt += 1,
                    Err(f) => return Err(f),
                }
            }
        });
    }
    let mut clients = Vec::with_capacity(opts.concurrency);
    let mut latencies = Histogram::default();
    while !set.is_empty() {
        let joined = match tokio::time::timeout_at(deadline.into(), set.join_next()).await {
            Ok(Some(joined)) => joined,
            Ok(None) => break,
            Err(_) => {
                return Err(BenchError::Acme {
                    step: "newAccount".into(),
                    reason: format!(
                        "{} of {} accounts created within the run's bound",
                        clients.len(),
                        opts.concurrency
                    ),
                });
            }
        };
        match joined {
            Ok(Ok((client, latency))) => {
                latencies.record(latency);
                clients.push(client);
            }
            Ok(Err(f)) => return Err(setup_error("newAccount", f)),
            Err(e) => {
                return Err(BenchError::Io {
                    context: "an account task".into(),
                    source: std::io::Error::other(e.to_string()),
                });
            }
        }
    }
    Ok((clients, latencies, started.elapsed()))
}

/// Runs the benchmark and returns its report. Blocking: it starts its own tokio runtime.
///
/// Fails when the run cannot be made (bad options, no directory, an account refused, an
/// unreadable server process), and with [`BenchError::Unfinished`], carrying the report of
/// what was done, when the server stalled or the run's bound passed. Failed orders are
/// counted in the report and retried under new names.
pub fn run_acme(opts: &AcmeBenchOptions) -> Result<AcmeBenchReport, BenchError> {
    let template = opts.check()?;
    // A wrong pid is found before any load is sent.
    observe(opts.server_pid)?;
    let connector = Connector::new(opts.ca.as_deref())?;
    // Key generation is the client's work, not the server's: done before anything is timed.
    let capacity = usize::try_from(opts.orders).unwrap_or(usize::MAX);
    let mut keys = Vec::with_capacity(capacity.min(1 << 20));
    for _ in 0..opts.orders {
        keys.push(certificate_key()?);
    }
    let parallelism = std::thread::available_parallelism().map_or(1, usize::from);
    let threads = opts
        .threads
        .unwrap_or(parallelism)
        .clamp(1, opts.concurrency);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("acme-load")
        .enable_all()
        .build()
        .map_err(|e| BenchError::Io {
            context: "start a runtime".into(),
            source: e,
        })?;
    let deadline = Instant::now() + opts.max_duration;
    let result = runtime.block_on(drive(opts, template, connector, keys, deadline));
    // Aborted requests have nothing left worth waiting for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn drive(
    opts: &AcmeBenchOptions,
    template: NameTemplate,
    connector: Connector,
    keys: Vec<KeyPair>,
    deadline: Instant,
) -> Result<AcmeBenchReport, BenchError> {
    let mut http = Http::new(connector.clone(), opts.timeout, USER_AGENT);
    let directory = Directory::fetch(&mut http, &opts.directory)
        .await
        .map_err(|f| setup_error("directory", f))?;
    drop(http);
    let (mut clients, account_latencies, accounts_elapsed) =
        create_accounts(opts, &connector, &directory, deadline).await?;
    for client in &mut clients {
        client.http.requests = 0;
        client.http.opened = 0;
        client.bad_nonce_retries = 0;
    }

    let first = observe(opts.server_pid).ok().flatten();
    let client_first = proc_stat::own_cpu();
    let shared = Arc::new(Shared {
        directory,
        template,
        remaining: AtomicU64::new(opts.orders),
        next_name: AtomicU64::new(0),
        progress_ns: AtomicU64::new(0),
        start: Instant::now(),
        order_time: opts.stall_after,
        keys: Mutex::new(keys),
        tally: Mutex::new(Tally::default()),
    });
    let mut set = JoinSet::new();
    for client in clients {
        set.spawn(worker(shared.clone(), client));
    }

    let mut rss_max = first.map(|s| s.rss);
    let mut next_sample = Instant::now() + SAMPLE_INTERVAL;
    let end = loop {
        let wake = next_sample.min(deadline);
        tokio::select! {
            joined = set.join_next() => {
                if joined.is_none() {
                    break AcmeEnd::Completed;
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
                    break AcmeEnd::Stalled { idle: opts.stall_after };
                }
                if now >= deadline {
                    break AcmeEnd::TimeLimit { limit: opts.max_duration };
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
    let orders = tally.orders.count();
    let per_order = |total: Duration| crate::units::per(total, orders);
    let server_cpu = crate::units::growth(first.map(|s| s.cpu), last.map(|s| s.cpu));
    let client_cpu = crate::units::growth(client_first, client_last);
    if let Some(s) = last {
        rss_max = rss_max.max(Some(s.rss));
    }
    let [new_order, authorize, finalize, certificate] = &tally.steps;
    let report = AcmeBenchReport {
        directory: opts.directory.clone(),
        concurrency: opts.concurrency,
        orders_requested: opts.orders,
        orders,
        end,
        elapsed,
        orders_per_second: orders as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE),
        latency: LatencySummary::of(&tally.orders),
        steps: StepLatencies {
            new_order: LatencySummary::of(new_order),
            authorize: LatencySummary::of(authorize),
            finalize: LatencySummary::of(finalize),
            certificate: LatencySummary::of(certificate),
        },
        errors: tally.errors,
        bad_nonce_retries: tally.bad_nonce_retries,
        requests: tally.requests,
        connections: tally.connections,
        accounts: account_latencies.count(),
        accounts_elapsed,
        account_latency: LatencySummary::of(&account_latencies),
        server_pid: opts.server_pid,
        server_cpu,
        server_cpu_per_order: server_cpu.and_then(per_order),
        server_rss_start: first.map(|s| s.rss),
        server_rss_end: last.map(|s| s.rss),
        server_rss_max: rss_max.filter(|_| first.is_some()),
        client_cpu_per_order: client_cpu.and_then(per_order),
    };
    match end {
        AcmeEnd::Completed => Ok(report),
        _ => Err(BenchError::Unfinished(Box::new(report))),
    }
}
