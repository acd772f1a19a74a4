//! The OCSP load generator as a command, with the flags of `agentca bench ocsp`:
//!
//! ```text
//! cargo run --release -p agentca-bench --example ocsp_load -- \
//!     --url http://127.0.0.1:8080/ocsp --issuer issuing.pem --cert leaves.pem \
//!     [--concurrency 16] [--duration 15s | --count N] [--warmup 2s] [--method post|get] \
//!     [--nonce] [--server-pid PID] [--timeout 10s] [--threads N] [--output text|json]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use agentca_bench::{Method, OcspBenchOptions, load_certificates, requests_for, run_ocsp};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// The responder URL (http://HOST:PORT/PATH).
    #[arg(long)]
    url: String,
    /// The issuing CA certificate (PEM or DER).
    #[arg(long)]
    issuer: PathBuf,
    /// Certificates to ask about (PEM files may hold many); requests cycle through them.
    #[arg(long = "cert", required = true)]
    certs: Vec<PathBuf>,
    /// Concurrent connections.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Measured window, e.g. 30s (default 10s unless --count is given).
    #[arg(long, value_parser = duration)]
    duration: Option<Duration>,
    /// Requests to send in the window.
    #[arg(long)]
    count: Option<u64>,
    /// Unmeasured load before the window.
    #[arg(long, value_parser = duration, default_value = "1s")]
    warmup: Duration,
    /// post or get.
    #[arg(long, default_value = "post")]
    method: Method,
    /// Send a fresh RFC 8954 nonce in each request.
    #[arg(long)]
    nonce: bool,
    /// The server's process id, to measure its CPU time and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Per-request timeout.
    #[arg(long, value_parser = duration, default_value = "10s")]
    timeout: Duration,
    /// Load generator threads (default: the CPUs this process may use).
    #[arg(long)]
    threads: Option<usize>,
    /// text or json.
    #[arg(long, default_value = "text")]
    output: String,
}

fn duration(s: &str) -> Result<Duration, String> {
    if let Some(ms) = s.strip_suffix("ms") {
        return ms
            .parse()
            .map(Duration::from_millis)
            .map_err(|_| format!("{s:?} is not a duration"));
    }
    let d = agentca_core::policy::parse_duration(s)?;
    Duration::try_from(d).map_err(|_| format!("{s:?} is negative"))
}

fn run(args: Args) -> Result<String, String> {
    let read =
        |path: &PathBuf| std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()));
    let issuer = load_certificates(&read(&args.issuer)?).map_err(|e| e.to_string())?;
    let issuer = issuer.first().ok_or("no issuer certificate")?;
    let mut leaves = Vec::new();
    for path in &args.certs {
        leaves.extend(load_certificates(&read(path)?).map_err(|e| e.to_string())?);
    }
    let requests = requests_for(issuer, &leaves, args.nonce).map_err(|e| e.to_string())?;
    let mut opts = OcspBenchOptions::new(args.url, requests);
    opts.concurrency = args.concurrency;
    opts.count = args.count;
    opts.duration = match (args.duration, args.count) {
        (None, Some(_)) => None,
        (d, _) => Some(d.unwrap_or(Duration::from_secs(10))),
    };
    opts.warmup = args.warmup;
    opts.method = args.method;
    opts.server_pid = args.server_pid;
    opts.timeout = args.timeout;
    opts.threads = args.threads;
    let report = run_ocsp(&opts).map_err(|e| e.to_string())?;
    Ok(match args.output.as_str() {
        "json" => report.to_json().to_string(),
        _ => report.to_text(),
    })
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(out) => {
            println!("{}", out.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
