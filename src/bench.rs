//! `agentca bench`: load generators that measure any compliant server from the outside.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use agentca_bench::{
    AcmeBenchOptions, BenchError, Challenge, Eab, EabCredential, Method, OcspBenchOptions,
    ScepBenchOptions, load_certificates, parse_challenge_file, parse_cipher, parse_cpu_list,
    parse_eab_file, requests_for_hash, run_acme, run_ocsp, run_scep,
};
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
    /// Load an RFC 8555 ACME server (agentca's or any other) with closed-loop clients, each
    /// with its own account, running complete orders.
    Acme(AcmeArgs),
    /// Load an RFC 8894 SCEP server (agentca's or any other) with closed-loop clients sending
    /// PKCSReq enrollments, each with a fresh RSA key made before the measured window.
    #[command(after_help = SCEP_AFTER_HELP)]
    Scep(ScepArgs),
}

const SCEP_AFTER_HELP: &str = "\
Before the measured window, the generator fetches GetCACaps and GetCACert and makes every
request: a fresh RSA key, a CSR with the challenge, a self-signed certificate and the signed,
encrypted PKCSReq, on every CPU it may use. Key generation is the slow part: about 0.06 s per
2048-bit key per core (10,000 requests take about 5 minutes on 2 cores), about ten times that
for 4096 bits; progress is shown on a terminal. Each request is sent once: a failure is
counted, not retried.";

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

#[derive(Debug, Args)]
pub(crate) struct AcmeArgs {
    /// The directory URL, e.g. https://127.0.0.1:8443/acme/directory.
    #[arg(long)]
    directory: String,
    /// PEM file with the root certificate of the server's TLS chain (needed for https).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Workers, each with its own account, connection and one order at a time.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Orders to complete in the measured window.
    #[arg(long, default_value_t = 100)]
    orders: u64,
    /// EAB key identifier, shared by every account (with --eab-hmac).
    #[arg(long, requires = "eab_hmac", conflicts_with = "eab_file")]
    eab_kid: Option<String>,
    /// EAB HMAC key (base64url), shared by every account (with --eab-kid).
    #[arg(long, requires = "eab_kid")]
    eab_hmac: Option<String>,
    /// File of EAB credentials, `KID HMAC` one a line, one per worker (for single-use ones).
    #[arg(long)]
    eab_file: Option<PathBuf>,
    /// DNS identifiers of each order, comma-separated; the order's number replaces the
    /// placeholder of the default (n in braces), so that every order asks for new names.
    #[arg(long, default_value = "{n}.bench.test")]
    names: String,
    /// The server's process id, to report its CPU time per order and memory from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Timeout of one HTTP request.
    #[arg(long, default_value = "10s")]
    timeout: String,
    /// End the run with an error when no order has completed for this long.
    #[arg(long, default_value = "30s")]
    stall_after: String,
    /// End the run with an error when it has not finished in this time.
    #[arg(long, default_value = "10m")]
    max_duration: String,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("challenges").required(true).args(["challenge", "challenge_file"]))]
pub(crate) struct ScepArgs {
    /// The SCEP URL, e.g. http://127.0.0.1:8080/scep.
    #[arg(long)]
    url: String,
    /// Workers, each with its own connection and one request in flight.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// PKCSReq requests to send in the measured window, each with its own key.
    #[arg(long, default_value_t = 100)]
    count: u64,
    /// One challenge password for every request (a server's static challenge).
    #[arg(long)]
    challenge: Option<String>,
    /// File of single-use challenges, one a line, one per request (as `agentca token create
    /// --for scep` makes them).
    #[arg(long)]
    challenge_file: Option<PathBuf>,
    /// SHA-256 fingerprint (hex) of the GetCACert certificate to encrypt to; by default the
    /// RSA certificate allowing keyEncipherment, or the only certificate.
    #[arg(long)]
    ca_fingerprint: Option<String>,
    /// Content encryption of the requests.
    #[arg(long, default_value = "aes128", value_parser = ["aes128", "aes256", "des3", "des"])]
    cipher: String,
    /// RSA key size of the requests: 2048, 3072 or 4096.
    #[arg(long, default_value_t = 2048)]
    key_bits: u32,
    /// The server's process id, to report its CPU time per enrollment and memory from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// After making the keys on every CPU, send the load from these CPUs only (as taskset -c
    /// takes them, e.g. 0 or 0-1).
    #[arg(long)]
    load_cpus: Option<String>,
    /// Timeout of one HTTP request.
    #[arg(long, default_value = "10s")]
    timeout: String,
    /// End the run with an error when the server has answered nothing for this long.
    #[arg(long, default_value = "30s")]
    stall_after: String,
    /// End the run with an error when the measured window has lasted this long.
    #[arg(long, default_value = "10m")]
    max_duration: String,
}

pub(crate) fn run(out: OutputFormat, command: BenchCommand) -> Result<ExitCode> {
    match command {
        BenchCommand::Ocsp(args) => ocsp(out, args),
        BenchCommand::Acme(args) => acme(out, args),
        BenchCommand::Scep(args) => scep(out, args),
    }
}

fn seconds(s: &str, flag: &str) -> Result<std::time::Duration> {
    parse_duration(s)
        .map(|d| std::time::Duration::from_secs(d.whole_seconds().unsigned_abs()))
        .map_err(|e| Error::InvalidArgument(format!("{flag}: {e}")))
}

fn acme(out: OutputFormat, args: AcmeArgs) -> Result<ExitCode> {
    let bench = |e: BenchError| Error::InvalidArgument(e.to_string());
    let mut options = AcmeBenchOptions::new(args.directory);
    options.ca = args.ca;
    options.concurrency = args.concurrency;
    options.orders = args.orders;
    options.names = args.names;
    options.server_pid = args.server_pid;
    options.timeout = seconds(&args.timeout, "--timeout")?;
    options.stall_after = seconds(&args.stall_after, "--stall-after")?;
    options.max_duration = seconds(&args.max_duration, "--max-duration")?;
    options.eab = match (args.eab_kid, args.eab_hmac, args.eab_file) {
        (Some(kid), Some(hmac), _) => Eab::Shared(EabCredential::new(&kid, &hmac).map_err(bench)?),
        (_, _, Some(path)) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
            Eab::PerWorker(parse_eab_file(&text).map_err(bench)?)
        }
        _ => Eab::None,
    };
    match run_acme(&options) {
        Ok(report) => {
            print(out, &report.to_text(), &report.to_json());
            Ok(ExitCode::SUCCESS)
        }
        // What was measured before the server stalled is worth having; the exit status and
        // the report's `end` say the run is incomplete.
        Err(BenchError::Unfinished(report)) => {
            print(out, &report.to_text(), &report.to_json());
            if out == OutputFormat::Text {
                eprintln!(
                    "error: {}",
                    report.end.message(report.orders, report.orders_requested)
                );
            }
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(bench(e)),
    }
}

fn scep(out: OutputFormat, args: ScepArgs) -> Result<ExitCode> {
    let bench = |e: BenchError| Error::InvalidArgument(e.to_string());
    let challenge = match (args.challenge, args.challenge_file) {
        (Some(challenge), _) => Challenge::Static(challenge),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
            Challenge::PerRequest(parse_challenge_file(&text).map_err(bench)?)
        }
        (None, None) => {
            return Err(Error::InvalidArgument(
                "--challenge or --challenge-file is needed".into(),
            ));
        }
    };
    let mut options = ScepBenchOptions::new(args.url, challenge);
    options.concurrency = args.concurrency;
    options.count = args.count;
    options.ca_fingerprint = args.ca_fingerprint;
    options.cipher = parse_cipher(&args.cipher).map_err(bench)?;
    options.key_bits = args.key_bits;
    options.server_pid = args.server_pid;
    options.load_cpus = args
        .load_cpus
        .as_deref()
        .map(parse_cpu_list)
        .transpose()
        .map_err(bench)?;
    options.timeout = seconds(&args.timeout, "--timeout")?;
    options.stall_after = seconds(&args.stall_after, "--stall-after")?;
    options.max_duration = seconds(&args.max_duration, "--max-duration")?;
    options.progress = std::io::stderr().is_terminal();
    match run_scep(&options) {
        Ok(report) => {
            print(out, &report.to_text(), &report.to_json());
            Ok(ExitCode::SUCCESS)
        }
        // As for ACME: the report of a stalled run is printed, and the exit status says so.
        Err(BenchError::ScepUnfinished(report)) => {
            print(out, &report.to_text(), &report.to_json());
            if out == OutputFormat::Text {
                eprintln!(
                    "error: {}",
                    report
                        .end
                        .message(report.enrollments, report.requests, report.requested)
                );
            }
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(bench(e)),
    }
}

fn ocsp(out: OutputFormat, args: OcspArgs) -> Result<ExitCode> {
    let bench = |e: BenchError| Error::InvalidArgument(e.to_string());
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
    let duration = seconds;
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
