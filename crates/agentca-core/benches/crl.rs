//! CRL generation with 100,000 revoked entries.
//!
//! The entries are the same on every run (seeded): serials shaped like agentca's (16 bytes,
//! first byte 0x01..=0x7f), revocation times spread over the last 24 hours in whole seconds,
//! and reasons mixed as 60% unspecified (no reasonCode extension, RFC 5280 §5.3.1) and 10% each
//! keyCompromise, superseded, cessationOfOperation and affiliationChanged.
//!
//! Before timing, the benchmark prints the CRL's size: bytes per entry is the DER size of the
//! 100k-entry CRL minus that of the same CRL with no entries, divided by 100k.
//!
//! | benchmark | what one iteration does |
//! |---|---|
//! | `crl/build/100000` | `crl::build` from entries in memory: encode and sign |
//! | `crl/publish_from_store/100000` | `crl::publish`: allocate the CRL number durably, read the revoked entries from the store, build and sign (what `agentca crl` does after opening the CA) |
//!
//! With `AGENTCA_BENCH_CRL_FIXTURE=DIR` the CA and its store are kept in `DIR/data`, and the
//! same entries are written for other tools: `serials.dec` and `serials.hex` (one serial a
//! line), `index.txt` and `openssl.cnf` for `openssl ca -gencrl`, their empty counterparts
//! (`serials-empty.dec`, `index-empty.txt`, `openssl-empty.cnf`), the CA's certificate and key
//! (`ca.pem`, `ca.key`), and agentca's own CRLs (`agentca.crl`, `agentca-empty.crl`, DER).

// A benchmark whose fixture fails must stop at once and say where; nothing here sees untrusted
// input.
#![allow(clippy::expect_used)]

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use agentca_core::crl;
use agentca_core::profile;
use agentca_core::store::{Revocation, RevocationReason, RevokedEntry};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use num_bigint::BigUint;
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::FromDer;

use common::{Fixture, Requester, Seeded, record_certificate, serial_offset, template_der};

/// The reason of entry `i`: six in ten unspecified, one in ten each of the others.
fn reason_of(i: usize) -> RevocationReason {
    match i % 10 {
        0..=5 => RevocationReason::Unspecified,
        6 => RevocationReason::KeyCompromise,
        7 => RevocationReason::Superseded,
        8 => RevocationReason::CessationOfOperation,
        _ => RevocationReason::AffiliationChanged,
    }
}

fn entries(n: usize, now: OffsetDateTime) -> Vec<RevokedEntry> {
    let mut rng = Seeded::new(0x00c1_2023_5280);
    let mut entries: Vec<RevokedEntry> = (0..n)
        .map(|i| RevokedEntry {
            serial: rng.serial(),
            revocation: Revocation {
                revoked_at: now - Duration::seconds(60 + (rng.next_u64() % 86_400) as i64),
                reason: reason_of(i),
            },
            not_after: now + Duration::hours(1 + (rng.next_u64() % 23) as i64),
        })
        .collect();
    // The store hands entries out in serial order.
    entries.sort_by_key(|e| e.serial);
    entries
}

/// Checks the CRL parses and lists what was put in, so the sizes describe a correct CRL.
fn check(der: &[u8], entries: &[RevokedEntry]) {
    let (rest, parsed) =
        x509_parser::revocation_list::CertificateRevocationList::from_der(der).expect("CRL parses");
    assert!(rest.is_empty(), "trailing bytes after the CRL");
    let listed: Vec<_> = parsed.iter_revoked_certificates().collect();
    assert_eq!(listed.len(), entries.len(), "entry count");
    let with_reason = listed.iter().filter(|r| r.reason_code().is_some()).count();
    let expected = entries
        .iter()
        .filter(|e| e.revocation.reason != RevocationReason::Unspecified)
        .count();
    assert_eq!(with_reason, expected, "entries carrying a reasonCode");
}

/// `YYMMDDHHMMSSZ`, the UTCTime form `openssl ca` keeps in its index.
fn utc_time(t: OffsetDateTime) -> String {
    format!(
        "{:02}{:02}{:02}{:02}{:02}{:02}Z",
        t.year() % 100,
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn write(dir: &Path, name: &str, contents: &[u8]) {
    std::fs::write(dir.join(name), contents).expect("write a fixture file");
}

fn openssl_cnf(index: &str) -> String {
    format!(
        "# openssl ca -gencrl over the benchmark's revoked entries\n\
         [ ca ]\n\
         default_ca = bench\n\n\
         [ bench ]\n\
         dir = .\n\
         database = $dir/{index}\n\
         crlnumber = $dir/crlnumber\n\
         certificate = $dir/ca.pem\n\
         private_key = $dir/ca.key\n\
         default_md = sha256\n\
         default_crl_hours = 24\n\
         unique_subject = no\n\
         crl_extensions = crl_ext\n\n\
         [ crl_ext ]\n\
         authorityKeyIdentifier = keyid:always\n"
    )
}

/// Writes the same entries in the forms `openssl ca` and `cfssl gencrl` read.
fn export(dir: &Path, fx: &Fixture, entries: &[RevokedEntry], full: &[u8], empty: &[u8]) {
    let mut hex = String::new();
    let mut dec = String::new();
    let mut index = String::new();
    for (i, e) in entries.iter().enumerate() {
        let serial = e.serial.as_bytes();
        let _ = writeln!(hex, "{}", e.serial.to_hex());
        let _ = writeln!(dec, "{}", BigUint::from_bytes_be(serial));
        let reason = match e.revocation.reason {
            RevocationReason::Unspecified => String::new(),
            // openssl spells these as RFC 5280 does, except for the CA compromise cases.
            r => format!(",{}", r.name()),
        };
        let _ = writeln!(
            index,
            "R\t{}\t{}{}\t{}\tunknown\t/CN=agent-{i}",
            utc_time(e.not_after),
            utc_time(e.revocation.revoked_at),
            reason,
            e.serial.to_hex().to_uppercase(),
        );
    }
    write(dir, "serials.hex", hex.as_bytes());
    write(dir, "serials.dec", dec.as_bytes());
    write(dir, "serials-empty.dec", b"");
    write(dir, "index.txt", index.as_bytes());
    write(dir, "index-empty.txt", b"");
    write(dir, "index.txt.attr", b"unique_subject = no\n");
    write(dir, "index-empty.txt.attr", b"unique_subject = no\n");
    write(dir, "crlnumber", b"1000\n");
    write(dir, "openssl.cnf", openssl_cnf("index.txt").as_bytes());
    write(
        dir,
        "openssl-empty.cnf",
        openssl_cnf("index-empty.txt").as_bytes(),
    );
    write(dir, "agentca.crl", full);
    write(dir, "agentca-empty.crl", empty);
    for (from, to) in [("issuing.pem", "ca.pem"), ("issuing.key", "ca.key")] {
        std::fs::copy(fx.dir.file(from), dir.join(to)).expect("copy the CA certificate and key");
    }
}

/// Stores a certificate for every entry and revokes it with the entry's time and reason.
fn populate(fx: &Fixture, entries: &[RevokedEntry]) {
    let requester = Requester::register(&fx.ca, "crl-bench");
    let template = template_der(&fx.authority, &requester);
    let at = serial_offset(&template);
    let store = fx.ca.store();
    let now = OffsetDateTime::now_utc();
    for (i, e) in entries.iter().enumerate() {
        record_certificate(
            store.as_ref(),
            &template,
            at,
            e.serial,
            &requester.agent_id,
            now,
        );
        store.revoke(&e.serial, e.revocation).expect("revoke");
        if i % 5_000 == 4_999 {
            store.commit().expect("commit");
        }
    }
    store.commit().expect("commit");
}

fn main() {
    let n = if common::measuring() { 100_000 } else { 1_000 };
    let fixture_dir = std::env::var_os("AGENTCA_BENCH_CRL_FIXTURE").map(PathBuf::from);
    let fx = match &fixture_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).expect("fixture directory");
            Fixture::at(&dir.join("data"))
        }
        None => Fixture::new(),
    };
    let ca = fx.authority.ca();
    let now = profile::whole_seconds(OffsetDateTime::now_utc());
    let next = now + crl::DEFAULT_VALIDITY;
    let entries = entries(n, now);

    let empty = crl::build(ca, 1, now, next, &[]).expect("empty CRL");
    let full = crl::build(ca, 1, now, next, &entries).expect("full CRL");
    check(&full, &entries);
    let with_reason = entries
        .iter()
        .filter(|e| e.revocation.reason != RevocationReason::Unspecified)
        .count();
    println!(
        "agentca CRL: {} entries ({} with a reasonCode), {} bytes DER; empty CRL {} bytes; {:.2} bytes/entry",
        n,
        with_reason,
        full.len(),
        empty.len(),
        (full.len() - empty.len()) as f64 / n as f64
    );
    if let Some(dir) = &fixture_dir {
        export(dir, &fx, &entries, &full, &empty);
        println!("fixture for other tools written");
    }
    let t = std::time::Instant::now();
    populate(&fx, &entries);
    println!(
        "store filled with {n} revoked certificates in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let mut c = Criterion::default()
        .sample_size(10)
        .measurement_time(std::time::Duration::from_secs(15))
        .configure_from_args();
    let mut group = c.benchmark_group("crl");
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(n as u64));
    group.bench_with_input(BenchmarkId::new("build", n), &entries, |b, entries| {
        b.iter(|| crl::build(ca, 2, now, next, entries).expect("CRL"))
    });
    group.bench_function(BenchmarkId::new("publish_from_store", n), |b| {
        b.iter(|| {
            let crl = crl::publish(
                &fx.authority,
                OffsetDateTime::now_utc(),
                crl::DEFAULT_VALIDITY,
            )
            .expect("CRL");
            assert_eq!(crl.entries, n);
            crl
        })
    });
    group.finish();
    c.final_summary();
}
