//! Fills an agentca data directory with issued certificates for the OCSP benchmark, and writes
//! what the peer responders and the load generator need.
//!
//! ```text
//! cargo run --release -p agentca-bench --example ocsp_fixture -- \
//!     --data-dir DIR [--store URL] --count 100000 --sample 1000 --threads 32 --out OUT
//! ```
//!
//! `DIR` holds a CA made by `agentca init --insecure-unencrypted-keys`. Every certificate goes
//! through `Authority::issue`, the path the CLI and the enrollment front ends take (policy,
//! serial reservation, signature, durable record, audit), from `--threads` concurrent
//! requesters so that their store flushes are shared. Written to `OUT`:
//!
//! - `leaves.pem`: `--sample` of the issued certificates, spread evenly over the issue order
//!   (the certificates the load generator asks about);
//! - `index.txt`, `index.txt.attr`: every issued certificate as `openssl ocsp -index` reads them.

// A fixture that fails must stop at once and say why; nothing here sees untrusted input.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use agentca_core::ca::{Ca, DataDir, StoreLocation};
use agentca_core::csr::CertificateRequest;
use agentca_core::issuer::IssueRequest;
use agentca_core::store::{AgentRecord, CertificateRecord, EnrollmentMethod};
use clap::Parser;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use time::OffsetDateTime;

#[derive(Parser)]
struct Args {
    /// The CA's data directory (development CA, plaintext keys).
    #[arg(long)]
    data_dir: PathBuf,
    /// The CA's store, as `agentca --store` takes it: needed for a CA whose records are in
    /// PostgreSQL (otherwise AGENTCA_STORE; default: the data directory's embedded store).
    #[arg(long, env = "AGENTCA_STORE", hide_env_values = true)]
    store: Option<String>,
    /// Certificates to issue.
    #[arg(long, default_value_t = 100_000)]
    count: usize,
    /// Certificates written to leaves.pem.
    #[arg(long, default_value_t = 1_000)]
    sample: usize,
    /// Concurrent requesters.
    #[arg(long, default_value_t = 32)]
    threads: usize,
    /// Where the output files go (created if missing).
    #[arg(long)]
    out: PathBuf,
}

/// What is kept of each certificate: enough for an index line, and the DER if sampled.
struct Issued {
    serial_hex: String,
    not_after: OffsetDateTime,
    der: Option<Vec<u8>>,
}

fn main() {
    let args = Args::parse();
    let threads = args.threads.clamp(1, args.count.max(1));
    let mut dir = DataDir::new(&args.data_dir);
    if let Some(store) = &args.store {
        dir = dir.with_store(StoreLocation::parse(store).expect("--store"));
    }
    let ca = Ca::open(&dir).expect("open the CA");
    let protection = ca
        .protection(None)
        .expect("a development CA (plaintext keys)");
    let authority = ca.authority(&protection).expect("load the issuing key");
    let trust_domain = ca.config().trust_domain.clone();

    // One agent per requester, each with its own key and CSR, reused for all its certificates.
    let requesters: Vec<(String, CertificateRequest)> = (0..threads)
        .map(|i| {
            let id = format!("spiffe://{trust_domain}/agent/ocsp-bench-{i}");
            ca.store()
                .insert_agent(&AgentRecord {
                    id: id.clone(),
                    owner: Some("ocsp benchmark".into()),
                    policy: None,
                    dns: Vec::new(),
                    disabled: false,
                    created_at: OffsetDateTime::now_utc(),
                    early_renewal: None,
                })
                .expect("register the agent");
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("agent key");
            let mut params = CertificateParams::default();
            params.distinguished_name = DistinguishedName::new();
            params.subject_alt_names = vec![SanType::URI(id.as_str().try_into().unwrap())];
            let csr = params.serialize_request(&key).expect("CSR");
            (
                id,
                CertificateRequest::parse(csr.der()).expect("the CSR parses"),
            )
        })
        .collect();

    let sample_every = (args.count / args.sample.max(1)).max(1);
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let mut issued: Vec<(usize, Issued)> = std::thread::scope(|scope| {
        let workers: Vec<_> = requesters
            .iter()
            .map(|(agent_id, csr)| {
                let (authority, next) = (&authority, &next);
                scope.spawn(move || {
                    let mut mine = Vec::new();
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= args.count {
                            return mine;
                        }
                        let record: CertificateRecord = authority
                            .issue(&IssueRequest {
                                agent_id,
                                csr,
                                method: EnrollmentMethod::Cli,
                                lifetime: None,
                                validated_dns: &[],
                                validated_ips: &[],
                                csr_key_thumbprint: None,
                            })
                            .expect("issue");
                        if (n + 1) % 10_000 == 0 {
                            eprintln!(
                                "issued {} in {:.1} s",
                                n + 1,
                                started.elapsed().as_secs_f64()
                            );
                        }
                        let sampled = n % sample_every == 0;
                        mine.push((
                            n,
                            Issued {
                                serial_hex: record.intent.serial.to_hex().to_uppercase(),
                                not_after: record.intent.not_after,
                                der: sampled.then_some(record.der),
                            },
                        ));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("requester thread"))
            .collect()
    });
    let elapsed = started.elapsed();
    issued.sort_by_key(|(n, _)| *n);
    eprintln!(
        "issued {} certificates in {:.1} s ({:.0}/s) with {threads} requesters",
        issued.len(),
        elapsed.as_secs_f64(),
        issued.len() as f64 / elapsed.as_secs_f64()
    );

    std::fs::create_dir_all(&args.out).expect("create the output directory");
    let mut leaves = String::new();
    let mut index = String::new();
    let mut sampled = 0;
    for (n, cert) in &issued {
        if let Some(der) = &cert.der
            && sampled < args.sample
        {
            leaves.push_str(&pem::encode(&pem::Pem::new("CERTIFICATE", der.clone())));
            sampled += 1;
        }
        let t = cert.not_after;
        let _ = writeln!(
            index,
            "V\t{:02}{:02}{:02}{:02}{:02}{:02}Z\t\t{}\tunknown\t/CN=ocsp-bench-{n}",
            t.year() % 100,
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            cert.serial_hex
        );
    }
    std::fs::write(args.out.join("leaves.pem"), leaves).expect("write leaves.pem");
    std::fs::write(args.out.join("index.txt"), index).expect("write index.txt");
    std::fs::write(args.out.join("index.txt.attr"), "unique_subject = no\n")
        .expect("write index.txt.attr");
    eprintln!(
        "wrote {sampled} sampled certificates to leaves.pem and {} lines to index.txt",
        issued.len()
    );
}
