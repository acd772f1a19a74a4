//! `agentca bench`: load generators that measure any compliant server from the outside.

use std::path::PathBuf;
use std::process::ExitCode;

use agentca_bench::{Method, OcspBenchOptions, load_certificates, requests_for_hash, run_ocsp};
use agentca_core::ocsp::HashAlgorithm;
use agentca_core::policy::parse_duration;
use agentca_core::{Error, Result};
use clap::{Args, Subcommand};

use crate::OutputFormat;
use crate::output::print;

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Load an RFC 6960 OCSP responder (agentca's or any other) with closed-loop clients.
    Ocsp(OcspArgs),
}

#[derive(Debug, Args)]
pub(crate) struct OcspArgs {
    /// The responder URL, e.g. http://127.0.0.1:8080/ocsp.
    #[arg(long)]
    url: String,
    /// The issuing CA certificate (PEM or DER).
    #[arg(long)]
    issuer: PathBuf,
    /// Certificates to ask about (PEM files may hold many); requests cycle through them.
    #[arg(long = "cert", required = true)]
    certs: Vec<PathBuf>,
    /// Concurrent connections, each with one request in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Length of the measured window, e.g. 30s (default 10s unless --count is given).
    #[arg(long)]
    duration: Option<String>,
    /// Number of requests in the measured window.
    #[arg(long)]
    count: Option<u64>,
    /// Unmeasured warm-up before the window.
    #[arg(long, default_value = "1s")]
    warmup: String,
    /// post or get (RFC 6960 Appendix A).
    #[arg(long, default_value = "post")]
    method: String,
    /// Send a fresh nonce with every request (forces a signature per answer on responders
    /// that honour nonces).
    #[arg(long)]
    nonce: bool,
    /// SHA-256 CertIDs instead of SHA-1.
    #[arg(long)]
    sha256: bool,
    /// The server's process id, to report its CPU time per request and memory from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
}

pub(crate) fn run(out: OutputFormat, command: BenchCommand) -> Result<ExitCode> {
    let BenchCommand::Ocsp(args) = command;
    let bench = |e: agentca_bench::BenchError| Error::InvalidArgument(e.to_string());
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|e| Error::io(format!("read {}", path.display()), e))
    };
    let issuer = load_certificates(&read(&args.issuer)?)
        .map_err(bench)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::InvalidArgument("--issuer holds no certificate".into()))?;
    let mut leaves = Vec::new();
    for path in &args.certs {
        // A chain file (leaf + issuing CA, as `agentca issue` writes) contributes its leaves.
        leaves.extend(
            load_certificates(&read(path)?)
                .map_err(bench)?
                .into_iter()
                .filter(|der| *der != issuer),
        );
    }
    let hash = if args.sha256 {
        HashAlgorithm::Sha256
    } else {
        HashAlgorithm::Sha1
    };
    let requests = requests_for_hash(&issuer, &leaves, hash, args.nonce).map_err(bench)?;
    let duration = |s: &str, flag: &str| {
        parse_duration(s)
            .map(|d| std::time::Duration::from_secs(d.whole_seconds().unsigned_abs()))
            .map_err(|e| Error::InvalidArgument(format!("{flag}: {e}")))
    };
    let mut options = OcspBenchOptions::new(args.url, requests);
    options.concurrency = args.concurrency;
    options.count = args.count;
    options.duration = match (&args.duration, args.count) {
        (Some(d), _) => Some(duration(d, "--duration")?),
        (None, Some(_)) => None,
        (None, None) => Some(std::time::Duration::from_secs(10)),
    };
    options.warmup = duration(&args.warmup, "--warmup")?;
    options.method = args.method.parse::<Method>().map_err(bench)?;
    options.server_pid = args.server_pid;
    let report = run_ocsp(&options).map_err(bench)?;
    print(out, &report.to_text(), &report.to_json());
    Ok(ExitCode::SUCCESS)
}
