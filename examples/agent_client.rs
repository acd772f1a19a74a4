//! An agent calling a relying service in a loop with the certificate that
//! `agentca renew --daemon` keeps fresh.
//!
//! ```sh
//! cargo run --example agent_client -- --url https://localhost:8444/ --ca root.pem \
//!     --key /etc/worker/key.pem --cert /etc/worker/cert.pem \
//!     --server-id spiffe://example.org/agent/service/echo
//! ```
//!
//! Every call is a new connection, so every call presents the current certificate. Before
//! each call the client looks at the key and certificate paths: the daemon switches both at
//! once by replacing a link (see `agentca_agent::files`), so a change of the files the paths
//! lead to means a new pair, which is loaded before the call. A pair that does not match (read
//! while a rotation was under way) is not used; the loaded one stays until the next look.
//!
//! One line per call on standard output: `ok N serial S: ANSWER` or `failed N serial S: WHY`.
//! With `--count`, the exit status says whether the last call succeeded.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agentca_verify::{IdPattern, TrustAnchors, Verifier, read_certificates};
use clap::Parser;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The whole call (connection, handshake, request, answer) must fit in this.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read.
const MAX_ANSWER: u64 = 64 << 10;

#[derive(Parser)]
struct Options {
    /// The service, e.g. https://localhost:8444/ (a DNS name or an IPv4 address).
    #[arg(long)]
    url: String,
    /// The service's SPIFFE ID (or a pattern), checked in its certificate instead of the host.
    #[arg(long)]
    server_id: String,
    /// The CA's root certificate, the only trust anchor for the service's certificate.
    #[arg(long)]
    ca: PathBuf,
    /// The agent's private key, as `agentca enroll` wrote it.
    #[arg(long)]
    key: PathBuf,
    /// The agent's certificate chain, as `agentca enroll` wrote it.
    #[arg(long)]
    cert: PathBuf,
    /// The pause between calls, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Stop after this many calls (default: never).
    #[arg(long)]
    count: Option<u64>,
}

/// Where the service is.
struct Target {
    host: String,
    port: u16,
    path: String,
}

/// A loaded key and certificate, ready for calls.
struct Loaded {
    connector: TlsConnector,
    serial: String,
    /// What the paths led to when it was loaded.
    files: FilesSeen,
}

/// The files the key and certificate paths lead to, and when each was last modified: a
/// rotation changes the first (a new generation directory), a plain file rewritten in place
/// the second.
type FilesSeen = [(PathBuf, Option<SystemTime>); 2];

#[tokio::main]
async fn main() -> ExitCode {
    match run(Options::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("agent_client: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Calls until `--count` is reached; returns whether the last call succeeded.
async fn run(options: Options) -> Result<bool, Box<dyn Error>> {
    let target = parse_url(&options.url)?;
    // The service is known by the SPIFFE ID in its certificate. Only its chain and identity
    // are checked here; the relying service is the one checking revocation.
    let verifier = Verifier::builder(TrustAnchors::from_pem_or_der(&std::fs::read(&options.ca)?)?)
        .expect_id(IdPattern::parse(&options.server_id)?)
        .build()?;

    let mut loaded: Option<Loaded> = None;
    let mut call = 0u64;
    loop {
        call += 1;
        reload_if_changed(&options, &verifier, &mut loaded);
        let succeeded = match &loaded {
            None => {
                println!("failed {call} serial -: no usable key and certificate");
                false
            }
            Some(current) => {
                match tokio::time::timeout(CALL_TIMEOUT, call_once(current, &target)).await {
                    Ok(Ok(answer)) => {
                        println!("ok {call} serial {}: {}", current.serial, answer.trim_end());
                        true
                    }
                    Ok(Err(e)) => {
                        println!("failed {call} serial {}: {e}", current.serial);
                        false
                    }
                    Err(_) => {
                        println!(
                            "failed {call} serial {}: no answer within {CALL_TIMEOUT:?}",
                            current.serial
                        );
                        false
                    }
                }
            }
        };
        if options.count.is_some_and(|count| call >= count) {
            return Ok(succeeded);
        }
        tokio::time::sleep(Duration::from_millis(options.interval_ms)).await;
    }
}

/// Loads the pair again when the files behind the paths changed; keeps the loaded one when
/// the new one cannot be used yet.
fn reload_if_changed(options: &Options, verifier: &Verifier, loaded: &mut Option<Loaded>) {
    let files = match files_seen(&options.key, &options.cert) {
        Ok(files) => files,
        Err(e) => {
            eprintln!("agent_client: the credential files: {e}");
            return;
        }
    };
    if loaded.as_ref().is_some_and(|l| l.files == files) {
        return;
    }
    match load(verifier, files) {
        Ok(new) => {
            println!("loaded serial {}", new.serial);
            *loaded = Some(new);
        }
        Err(e) => eprintln!("agent_client: not loading the changed credentials yet: {e}"),
    }
}

fn files_seen(key: &Path, cert: &Path) -> std::io::Result<FilesSeen> {
    let seen = |path: &Path| -> std::io::Result<(PathBuf, Option<SystemTime>)> {
        let real = std::fs::canonicalize(path)?;
        let modified = std::fs::metadata(&real)?.modified().ok();
        Ok((real, modified))
    };
    Ok([seen(key)?, seen(cert)?])
}

/// Reads the pair from the files the paths led to (not through the links again, which a
/// rotation may have switched since) and makes a TLS client presenting it.
fn load(verifier: &Verifier, files: FilesSeen) -> Result<Loaded, Box<dyn Error>> {
    let [(key_path, _), (cert_path, _)] = &files;
    let key = PrivateKeyDer::from_pem_slice(&std::fs::read(key_path)?)?;
    let chain = read_certificates(&std::fs::read(cert_path)?)?;
    let serial = match chain.first() {
        Some(leaf) => x509_parser::parse_x509_certificate(leaf)
            .map(|(_, cert)| hex::encode(cert.raw_serial()))
            .map_err(|e| format!("the certificate: {e}"))?,
        None => return Err("no certificate in the chain file".into()),
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    // rustls refuses a key that does not belong to the certificate.
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier.server_cert_verifier())
        .with_client_auth_cert(chain, key)?;
    Ok(Loaded {
        connector: TlsConnector::from(Arc::new(config)),
        serial,
        files,
    })
}

/// One GET on a new connection; the answer's body when the status is 200.
async fn call_once(loaded: &Loaded, target: &Target) -> Result<String, String> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let name = ServerName::try_from(target.host.clone())
        .map_err(|e| format!("server name {:?}: {e}", target.host))?;
    let mut tls = loaded
        .connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nhost: {}:{}\r\nconnection: close\r\n\r\n",
        target.path, target.host, target.port
    );
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending the request: {e}"))?;
    // With TLS 1.3 the service's verdict on our certificate arrives after our side of the
    // handshake is done, so a refusal shows up here, as an alert or a closed connection.
    let mut answer = Vec::new();
    tls.take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .await
        .map_err(|e| format!("refused or cut off: {e}"))?;
    let answer = String::from_utf8_lossy(&answer);
    let Some((head, body)) = answer.split_once("\r\n\r\n") else {
        return Err("no HTTP answer".into());
    };
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("the service answered {status:?}"));
    }
    Ok(body.to_owned())
}

/// `https://HOST[:PORT][/PATH]`.
fn parse_url(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("{url:?}: the URL must start with https://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse()
                .map_err(|e| format!("{url:?}: port {port:?}: {e}"))?,
        ),
        None => (authority, 443),
    };
    if host.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    Ok(Target {
        host: host.to_owned(),
        port,
        path: path.to_owned(),
    })
}
