//! What forgetting expired certificates costs (`Store::purge_certificates`), on sled and on
//! PostgreSQL (a throwaway cluster, when its binaries are installed).
//!
//! For each size in `AGENTCA_BENCH_PURGE_SIZES` (10,000 and 100,000): a fresh store holding
//! that many expired certificates and as many live ones (DER of a real certificate's size),
//! then purge passes of 10,000 (the server's pass limit) until one forgets nothing. Reported:
//! the time per pass and per certificate, and the store's size on disk before and after
//! (sled only; its log keeps dead versions until it compacts, so the figure says what a
//! restart would read). `cargo bench -p agentca-store --bench purge`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use agentca_store::{
    CertificateRecord, EnrollmentMethod, IssuanceIntent, PostgresStore, Serial, SledStore, Store,
};
use time::OffsetDateTime;

/// The server's pass limit (`agentca_core::retention::PASS_LIMIT`).
const PASS_LIMIT: usize = 10_000;
/// About the size of an agent certificate's DER.
const DER_BYTES: usize = 700;

fn serial(n: u64) -> Serial {
    let mut bytes = [0u8; Serial::LEN];
    bytes[0] = 0x40;
    bytes[8..].copy_from_slice(&n.to_be_bytes());
    Serial::from_bytes(bytes).unwrap()
}

fn fill(store: &dyn Store, count: u64, now: OffsetDateTime) {
    for n in 0..count * 2 {
        let expired = n % 2 == 0;
        let not_after = if expired {
            now - time::Duration::days(30) + time::Duration::seconds(n as i64)
        } else {
            now + time::Duration::hours(1)
        };
        let intent = IssuanceIntent {
            serial: serial(n),
            agent_id: format!("spiffe://bench.test/agent/{}", n % 1000),
            method: EnrollmentMethod::Acme,
            not_before: not_after - time::Duration::hours(1),
            not_after,
            key_sha256: format!("{n:064x}"),
            reserved_at: not_after - time::Duration::hours(1),
        };
        store.reserve_serial(&intent).unwrap();
        store
            .record_certificate(&CertificateRecord {
                der: vec![0x30; DER_BYTES],
                issued_at: intent.reserved_at,
                intent,
                revocation: None,
            })
            .unwrap();
        if n % 10_000 == 0 {
            store.commit().unwrap();
        }
    }
    store.commit().unwrap();
}

fn dir_bytes(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                dir_bytes(&e.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

fn purge_all(store: &dyn Store, now: OffsetDateTime) -> (u64, Vec<Duration>) {
    let cutoff = now - time::Duration::days(7);
    let mut passes = Vec::new();
    let mut total = 0;
    loop {
        let started = Instant::now();
        let forgotten = store
            .purge_certificates(cutoff, cutoff, PASS_LIMIT)
            .unwrap();
        store.commit().unwrap();
        let took = started.elapsed();
        if forgotten == 0 {
            break;
        }
        total += forgotten;
        passes.push(took);
    }
    (total, passes)
}

fn report(backend: &str, size: u64, forgotten: u64, passes: &[Duration], disk: Option<(u64, u64)>) {
    let total: Duration = passes.iter().sum();
    let mut sorted = passes.to_vec();
    sorted.sort();
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
    let per_cert_us = total.as_secs_f64() * 1e6 / forgotten.max(1) as f64;
    let disk = disk.map_or_else(
        || "n/a".to_owned(),
        |(before, after)| {
            format!(
                "{:.1} -> {:.1} MiB",
                before as f64 / 1048576.0,
                after as f64 / 1048576.0
            )
        },
    );
    println!(
        "{backend:<10} {size:>8} expired + {size:>8} live: forgot {forgotten:>8} in {} passes, \
         median pass {:>8.1} ms, {per_cert_us:>6.1} us per certificate, disk {disk}",
        passes.len(),
        median.as_secs_f64() * 1e3,
    );
}

fn main() {
    let sizes: Vec<u64> = std::env::var("AGENTCA_BENCH_PURGE_SIZES")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("AGENTCA_BENCH_PURGE_SIZES: numbers")
        })
        .collect();
    let now = OffsetDateTime::now_utc();
    for &size in &sizes {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let store = SledStore::open(&path).unwrap();
            fill(&store, size, now);
        }
        // Reopened, as a server would find it: nothing of the fill in memory.
        let store = SledStore::open(&path).unwrap();
        let before = dir_bytes(&path);
        let (forgotten, passes) = purge_all(&store, now);
        let after = dir_bytes(&path);
        report("sled", size, forgotten, &passes, Some((before, after)));
    }
    let cluster = match agentca_testkit::postgres::PgCluster::start(&[]) {
        Ok(Some(cluster)) => cluster,
        Ok(None) => {
            println!("postgresql: not installed, skipped");
            return;
        }
        Err(e) => panic!("could not start a PostgreSQL cluster: {e}"),
    };
    for &size in &sizes {
        let store = PostgresStore::open(&cluster.fresh_database()).unwrap();
        fill(&store, size, now);
        let (forgotten, passes) = purge_all(&store, now);
        report("postgresql", size, forgotten, &passes, None);
    }
}
