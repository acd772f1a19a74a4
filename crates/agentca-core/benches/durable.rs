//! Durable issuance: `Authority::issue` from many concurrent requesters, each call returning
//! only once its certificate is in the store and the audit log and both are flushed to disk.
//!
//! A plain timing harness rather than criterion: the figure wanted is the throughput of 32
//! threads sharing group commits, and the latency of each call, which criterion's model of
//! one routine timed in a loop does not measure.
//!
//! `cargo bench -p agentca-core --bench durable` runs three parts:
//! 1. one requester alone (the latency of a call that cannot share its flush);
//! 2. `AGENTCA_BENCH_REQUESTERS` (32) requesters on a fresh store, `AGENTCA_BENCH_ROUNDS` (5)
//!    rounds of `AGENTCA_BENCH_ISSUES` (20,000) certificates;
//! 3. the growth series: the store is filled through the `Store` trait to each size in
//!    `AGENTCA_BENCH_GROWTH` (10k, 100k, 1M records of real certificate size), and 3 rounds of
//!    `AGENTCA_BENCH_GROWTH_ISSUES` (10,000) are timed at each size. Filling stops when it has
//!    taken `AGENTCA_BENCH_FILL_BUDGET_SECS` (600) in total, and the report says so.
//!
//! `cargo test --benches` runs a few hundred issues only.

// A benchmark whose fixture fails must stop at once and say where; nothing here sees untrusted
// input.
#![allow(clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agentca_core::issuer::Authority;
use time::OffsetDateTime;

use common::{
    Fixture, Requester, Seeded, disk_usage, human_bytes, median, process_cpu, quantile,
    record_certificate, serial_offset, template_der,
};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

struct Settings {
    requesters: usize,
    issues: usize,
    rounds: usize,
    alone: usize,
    growth: Vec<usize>,
    growth_issues: usize,
    growth_rounds: usize,
    fill_budget: Duration,
    piece_writes: usize,
    piece_syncs: usize,
}

impl Settings {
    fn from_env() -> Self {
        if !common::measuring() {
            return Self {
                requesters: 8,
                issues: 200,
                rounds: 1,
                alone: 20,
                growth: vec![1_000],
                growth_issues: 200,
                growth_rounds: 1,
                fill_budget: Duration::from_secs(60),
                piece_writes: 100,
                piece_syncs: 10,
            };
        }
        let growth = std::env::var("AGENTCA_BENCH_GROWTH")
            .unwrap_or_else(|_| "10000,100000,1000000".into())
            .split(',')
            .filter_map(|s| s.trim().replace('_', "").parse().ok())
            .collect();
        Self {
            requesters: env_usize("AGENTCA_BENCH_REQUESTERS", 32),
            issues: env_usize("AGENTCA_BENCH_ISSUES", 20_000),
            rounds: env_usize("AGENTCA_BENCH_ROUNDS", 5),
            alone: env_usize("AGENTCA_BENCH_ALONE_ISSUES", 1_000),
            growth,
            growth_issues: env_usize("AGENTCA_BENCH_GROWTH_ISSUES", 10_000),
            growth_rounds: 3,
            fill_budget: Duration::from_secs(
                env_usize("AGENTCA_BENCH_FILL_BUDGET_SECS", 600) as u64
            ),
            piece_writes: 5_000,
            piece_syncs: 300,
        }
    }
}

/// One timed batch of issues.
struct Round {
    count: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    cpu: Option<Duration>,
}

impl Round {
    fn rate(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64()
    }
}

/// `count` issues shared among `requesters`, one thread each, as fast as they go.
fn run_round(authority: &Authority, requesters: &[Requester], count: usize) -> Round {
    let next = AtomicUsize::new(0);
    let cpu_before = process_cpu();
    let started = Instant::now();
    let per_thread: Vec<Vec<Duration>> = std::thread::scope(|scope| {
        let handles: Vec<_> = requesters
            .iter()
            .map(|requester| {
                let next = &next;
                scope.spawn(move || {
                    let request = requester.request();
                    let mut latencies = Vec::with_capacity(count / requesters.len() + 1);
                    while next.fetch_add(1, Ordering::Relaxed) < count {
                        let t = Instant::now();
                        authority.issue(&request).expect("issued");
                        latencies.push(t.elapsed());
                    }
                    latencies
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("requester thread"))
            .collect()
    });
    let elapsed = started.elapsed();
    let cpu = match (cpu_before, process_cpu()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let mut latencies: Vec<Duration> = per_thread.into_iter().flatten().collect();
    latencies.sort();
    Round {
        count,
        elapsed,
        latencies,
        cpu,
    }
}

/// Rounds at one store size, summarized.
struct Series {
    rate_median: f64,
    rates: Vec<f64>,
    p50: Duration,
    p99: Duration,
    cpu_per_cert: Option<Duration>,
}

fn series(authority: &Authority, requesters: &[Requester], count: usize, rounds: usize) -> Series {
    let mut rates = Vec::new();
    let mut latencies = Vec::new();
    let mut cpu = Some(Duration::ZERO);
    let mut issued = 0;
    for i in 0..rounds {
        let round = run_round(authority, requesters, count);
        println!(
            "    round {}: {} certificates in {:.2} s = {:.0}/s (p50 {:.2} ms, p99 {:.2} ms)",
            i + 1,
            round.count,
            round.elapsed.as_secs_f64(),
            round.rate(),
            ms(quantile(&round.latencies, 0.5)),
            ms(quantile(&round.latencies, 0.99)),
        );
        rates.push(round.rate());
        issued += round.count;
        cpu = cpu.zip(round.cpu).map(|(a, b)| a + b);
        latencies.extend(round.latencies);
    }
    latencies.sort();
    Series {
        rate_median: median(&rates),
        rates,
        p50: quantile(&latencies, 0.5),
        p99: quantile(&latencies, 0.99),
        cpu_per_cert: cpu.map(|c| c / issued.max(1) as u32),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Fills the store to `target` records with two writer threads, committing every few thousand,
/// until `deadline`. Returns how many records it wrote.
fn fill(
    fx: &Fixture,
    template: &[u8],
    serial_at: usize,
    target: usize,
    deadline: Instant,
    seed: u64,
) -> usize {
    let store = fx.ca.store();
    let have = store.serial_count().expect("count") as usize;
    let want = target.saturating_sub(have);
    const WRITERS: usize = 2;
    const COMMIT_EVERY: usize = 5_000;
    let now = OffsetDateTime::now_utc();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|w| {
                let share = want / WRITERS + usize::from(w < want % WRITERS);
                scope.spawn(move || {
                    let mut rng = Seeded::new(seed ^ (w as u64 + 1) << 48);
                    let mut written = 0;
                    while written < share {
                        if written % 1_000 == 0 && Instant::now() > deadline {
                            break;
                        }
                        let agent = format!(
                            "spiffe://{}/agent/fill-{}",
                            common::TRUST_DOMAIN,
                            rng.next_u64() % 1_000
                        );
                        record_certificate(
                            store.as_ref(),
                            template,
                            serial_at,
                            rng.serial(),
                            &agent,
                            now,
                        );
                        written += 1;
                        if written % COMMIT_EVERY == 0 {
                            store.commit().expect("commit");
                        }
                    }
                    store.commit().expect("commit");
                    written
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("writer thread"))
            .sum()
    })
}

/// Each durable step alone, one thread, on a fresh store: what one issue pays besides the
/// signature, and what a group commit costs when nobody shares it.
fn pieces(count: usize, syncs: usize) -> Vec<(&'static str, Duration)> {
    let fx = Fixture::new();
    let requester = Requester::register(&fx.ca, "pieces");
    let template = template_der(&fx.authority, &requester);
    let serial_at = serial_offset(&template);
    let store = fx.ca.store();
    let audit = fx.ca.audit();
    let mut rng = Seeded::new(0x0d0e);
    let now = OffsetDateTime::now_utc();
    let entry = || {
        serde_json::json!({
            "serial": "0123456789abcdef0123456789abcdef",
            "agent": requester.agent_id,
            "method": "acme",
            "not_before": "2026-01-01T00:00:00Z",
            "not_after": "2026-01-02T00:00:00Z",
            "key_sha256": "00".repeat(32),
            "dns": [],
            "ips": [],
            "cert_sha256": "11".repeat(32),
        })
    };

    let per = |started: Instant, n: usize| started.elapsed() / n.max(1) as u32;
    let mut out = Vec::new();

    let t = Instant::now();
    for _ in 0..count {
        record_certificate(
            store.as_ref(),
            &template,
            serial_at,
            rng.serial(),
            &requester.agent_id,
            now,
        );
    }
    out.push((
        "store: reserve_serial + record_certificate (no commit)",
        per(t, count),
    ));
    store.commit().expect("commit");

    let t = Instant::now();
    for _ in 0..count {
        audit.append("cert.issued", entry()).expect("append");
    }
    out.push((
        "audit: append of a cert.issued entry (no sync)",
        per(t, count),
    ));
    audit.sync().expect("sync");

    let t = Instant::now();
    for _ in 0..syncs {
        record_certificate(
            store.as_ref(),
            &template,
            serial_at,
            rng.serial(),
            &requester.agent_id,
            now,
        );
        store.commit().expect("commit");
    }
    let with_commit = per(t, syncs);
    out.push((
        "store: one record + commit (sled flush, fsync file and directory)",
        with_commit,
    ));

    let t = Instant::now();
    for _ in 0..syncs {
        audit.append("cert.issued", entry()).expect("append");
        audit.sync().expect("sync");
    }
    out.push(("audit: one append + sync (fdatasync)", per(t, syncs)));
    out
}

/// One thread's cost at the store's current size: a write without commit (mean of
/// `writes`), and a write followed by its own commit (mean of `commits`).
fn store_costs(
    fx: &Fixture,
    template: &[u8],
    serial_at: usize,
    writes: usize,
    commits: usize,
) -> (Duration, Duration) {
    let store = fx.ca.store();
    let mut rng = Seeded::new(0x5173 ^ writes as u64 ^ store.serial_count().unwrap_or(0));
    let now = OffsetDateTime::now_utc();
    let agent = format!("spiffe://{}/agent/costs", common::TRUST_DOMAIN);
    let t = Instant::now();
    for _ in 0..writes {
        record_certificate(
            store.as_ref(),
            template,
            serial_at,
            rng.serial(),
            &agent,
            now,
        );
    }
    let write = t.elapsed() / writes.max(1) as u32;
    store.commit().expect("commit");
    let t = Instant::now();
    for _ in 0..commits {
        record_certificate(
            store.as_ref(),
            template,
            serial_at,
            rng.serial(),
            &agent,
            now,
        );
        store.commit().expect("commit");
    }
    (write, t.elapsed() / commits.max(1) as u32)
}

fn main() {
    let settings = Settings::from_env();
    println!(
        "durable issuance: {} requesters, {} rounds of {} (mode: {})",
        settings.requesters,
        settings.rounds,
        settings.issues,
        if common::measuring() {
            "bench"
        } else {
            "smoke test"
        }
    );

    // 1 and 2: a fresh store.
    let fx = Fixture::new();
    let requesters: Vec<Requester> = (0..settings.requesters)
        .map(|i| Requester::register(&fx.ca, &format!("requester-{i}")))
        .collect();

    println!("\n[1] one requester alone, {} issues", settings.alone);
    let alone = run_round(&fx.authority, &requesters[..1], settings.alone);
    println!(
        "    {:.0} certificates/s, p50 {:.2} ms, p99 {:.2} ms",
        alone.rate(),
        ms(quantile(&alone.latencies, 0.5)),
        ms(quantile(&alone.latencies, 0.99))
    );

    println!(
        "\n[2] {} concurrent requesters, fresh store",
        settings.requesters
    );
    let fresh = series(&fx.authority, &requesters, settings.issues, settings.rounds);
    let fresh_disk = disk_usage(&fx.store_path());
    drop(requesters);
    drop(fx);

    println!("\n[2b] each durable step alone, one thread, fresh store");
    let steps = pieces(settings.piece_writes, settings.piece_syncs);
    for (what, took) in &steps {
        println!("    {what}: {:.1} µs", us(*took));
    }

    // 3: the growth series on its own CA.
    println!(
        "\n[3] growth: fill the store, then {} rounds of {} at each size",
        settings.growth_rounds, settings.growth_issues
    );
    let fx = Fixture::new();
    let requesters: Vec<Requester> = (0..settings.requesters)
        .map(|i| Requester::register(&fx.ca, &format!("requester-{i}")))
        .collect();
    let template = template_der(&fx.authority, &requesters[0]);
    let serial_at = serial_offset(&template);
    let fill_started = Instant::now();
    let deadline = fill_started + settings.fill_budget;
    let mut rows = Vec::new();
    let mut budget_hit = None;
    for (i, &target) in settings.growth.iter().enumerate() {
        let t = Instant::now();
        let have_before = fx.ca.store().serial_count().expect("count") as usize;
        let written = fill(&fx, &template, serial_at, target, deadline, i as u64 + 7);
        let have = fx.ca.store().serial_count().expect("count") as usize;
        println!(
            "    filled {} -> {} records in {:.1} s ({:.0} records/s), store {}",
            have_before,
            have,
            t.elapsed().as_secs_f64(),
            written as f64 / t.elapsed().as_secs_f64(),
            human_bytes(disk_usage(&fx.store_path()))
        );
        if have < target {
            budget_hit = Some((target, have));
        }
        let s = series(
            &fx.authority,
            &requesters,
            settings.growth_issues,
            settings.growth_rounds,
        );
        let (write, commit) = store_costs(&fx, &template, serial_at, 2_000, 100);
        println!(
            "    one thread: write {:.1} µs, write + commit {:.0} µs",
            us(write),
            us(commit)
        );
        rows.push((have, s, disk_usage(&fx.store_path()), write, commit));
        if budget_hit.is_some() {
            break;
        }
    }

    println!("\n== summary ==");
    println!(
        "one requester alone: {:.0} certificates/s, p50 {:.2} ms, p99 {:.2} ms",
        alone.rate(),
        ms(quantile(&alone.latencies, 0.5)),
        ms(quantile(&alone.latencies, 0.99))
    );
    println!(
        "{} requesters, fresh store: median {:.0} certificates/s over {} rounds (min {:.0}, max {:.0}); latency p50 {:.2} ms, p99 {:.2} ms; CPU {} per certificate; store {} after {} certificates",
        settings.requesters,
        fresh.rate_median,
        fresh.rates.len(),
        fresh.rates.iter().copied().fold(f64::INFINITY, f64::min),
        fresh.rates.iter().copied().fold(0.0, f64::max),
        ms(fresh.p50),
        ms(fresh.p99),
        fresh
            .cpu_per_cert
            .map_or("n/a".into(), |c| format!("{:.0} µs", us(c))),
        human_bytes(fresh_disk),
        settings.issues * settings.rounds,
    );
    println!("one thread, each durable step alone:");
    for (what, took) in &steps {
        println!("    {what}: {:.1} µs", us(*took));
    }
    println!(
        "\n| records in store | certificates/s (median of {}) | wall µs/cert | CPU µs/cert | p50 ms | p99 ms | store on disk | 1 thread: write µs | 1 thread: write + commit µs |",
        settings.growth_rounds
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (have, s, disk, write, commit) in &rows {
        println!(
            "| {} | {:.0} | {:.0} | {} | {:.2} | {:.2} | {} | {:.1} | {:.0} |",
            have,
            s.rate_median,
            1e6 / s.rate_median,
            s.cpu_per_cert
                .map_or("n/a".into(), |c| format!("{:.0}", us(c))),
            ms(s.p50),
            ms(s.p99),
            human_bytes(*disk),
            us(*write),
            us(*commit)
        );
    }
    if let (Some((_, first, ..)), Some((_, last, ..))) = (rows.first(), rows.last()) {
        println!(
            "rate at largest size / rate at smallest: {:.2}",
            last.rate_median / first.rate_median
        );
    }
    if let Some((target, have)) = budget_hit {
        println!(
            "NOTE: filling stopped at {have} of {target} records: the {} s fill budget ran out",
            settings.fill_budget.as_secs()
        );
    }
    println!(
        "growth series took {:.0} s (filling and measuring)",
        fill_started.elapsed().as_secs_f64()
    );
}
