//! A relying service: HTTPS with mutual TLS that admits only agents whose SPIFFE ID matches a
//! pattern and whose certificate is not revoked, and answers each caller with its own identity.
//!
//! ```sh
//! cargo run --example relying_service -- --listen 127.0.0.1:8444 --ca root.pem \
//!     --cert service.pem --key service.key --allow 'spiffe://example.org/agent/fleet/*'
//! ```
//!
//! `--cert` is the service's own chain (leaf first): an agentca certificate with a DNS name
//! carries serverAuth, and its URI SAN is the identity `agent_client` expects. Revocation is
//! checked with OCSP at the responder the client's certificate names (or `--ocsp URL`); an
//! answer is used for at most `--ocsp-max-age`, the longest a revoked agent is still admitted.
//! Every refusal is logged with its reason on standard error.

use std::error::Error;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use agentca_verify::{
    AgentAcceptor, IdPattern, Revocation, TrustAnchors, VerifiedAgent, Verifier, read_certificates,
};
use clap::Parser;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// A peer gets this long for its handshake and its request, so a silent one holds nothing.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head read; the service needs nothing from it but its end.
const MAX_REQUEST_HEAD: usize = 8 << 10;

#[derive(Parser)]
struct Options {
    /// The address to listen on; port 0 picks a free one (the address is printed).
    #[arg(long, default_value = "127.0.0.1:8444")]
    listen: SocketAddr,
    /// The CA's root certificate, the only trust anchor for client certificates.
    #[arg(long)]
    ca: PathBuf,
    /// The service's certificate chain (PEM, leaf first).
    #[arg(long)]
    cert: PathBuf,
    /// The service's private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// The agents admitted: a SPIFFE ID, or a pattern where `*` is one path segment and a
    /// final `**` any number of them (repeatable: any one match admits).
    #[arg(long, required = true)]
    allow: Vec<String>,
    /// The OCSP responder to ask (default: the one each client certificate names).
    #[arg(long)]
    ocsp: Option<String>,
    /// The longest an OCSP answer is used, in seconds.
    #[arg(long, default_value_t = 60)]
    ocsp_max_age: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Options::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relying_service: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(options: Options) -> Result<(), Box<dyn Error>> {
    let acceptor = acceptor(&options)?;
    let listener = TcpListener::bind(options.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, typically: wait instead of spinning.
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(CALL_TIMEOUT, serve(&acceptor, tcp)).await {
                Ok(Ok(agent)) => println!(
                    "admitted {} (serial {}, revocation {})",
                    agent.spiffe_id,
                    agent.serial,
                    agent.revocation.name()
                ),
                Ok(Err(refusal)) => eprintln!("refused {peer}: {refusal}"),
                Err(_) => eprintln!("refused {peer}: no complete call within {CALL_TIMEOUT:?}"),
            }
        });
    }
}

/// The verifier's settings and the service's own TLS identity.
fn acceptor(options: &Options) -> Result<AgentAcceptor, Box<dyn Error>> {
    let anchors = TrustAnchors::from_pem_or_der(&std::fs::read(&options.ca)?)?;
    let revocation = match &options.ocsp {
        Some(url) => Revocation::ocsp(url.clone()),
        None => Revocation::ocsp_from_certificate(),
    };
    let mut verifier = Verifier::builder(anchors)
        .revocation(revocation)
        .max_cache_age(Duration::from_secs(options.ocsp_max_age));
    for pattern in &options.allow {
        verifier = verifier.expect_id(IdPattern::parse(pattern)?);
    }
    let verifier = verifier.build()?;

    let chain = read_certificates(&std::fs::read(&options.cert)?)?;
    let key = PrivateKeyDer::from_pem_slice(&std::fs::read(&options.key)?)?;
    Ok(verifier.acceptor(|tls| {
        let mut config = tls.with_single_cert(chain, key)?;
        // A resumed session skips the client's certificate, and with it the revocation check:
        // every call here is a full handshake.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(config)
    })?)
}

/// One call: the handshake and the agent's checks, then the answer naming the agent.
async fn serve<IO>(acceptor: &AgentAcceptor, io: IO) -> Result<VerifiedAgent, String>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let (mut stream, agent) = acceptor.accept(io).await.map_err(|e| reason(&e))?;
    read_request_head(&mut stream).await?;
    let body = format!("{} (serial {})\n", agent.spiffe_id, agent.serial);
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(response.as_bytes())
        .await
        .map_err(|e| format!("writing the answer: {e}"))?;
    // close_notify, so the client knows the answer is whole.
    let _ = stream.shutdown().await;
    Ok(agent)
}

/// Reads up to the blank line that ends an HTTP/1.1 request head (no request body is used).
async fn read_request_head(stream: &mut (impl AsyncRead + Unpin)) -> Result<(), String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_REQUEST_HEAD {
            return Err(format!("request head over {MAX_REQUEST_HEAD} bytes"));
        }
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("reading the request: {e}"))?;
        if n == 0 {
            return Err("the connection closed before a whole request".into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(())
}

/// The refusal in words. A refusal inside the handshake reaches the acceptor as a rustls
/// error; when it carries the verifier's own error, that one says more.
fn reason(e: &agentca_verify::Error) -> String {
    if let agentca_verify::Error::Handshake(io) = e
        && let Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))) =
            io.get_ref().and_then(|inner| inner.downcast_ref())
        && let Some(verifier_error) = other.0.downcast_ref::<agentca_verify::Error>()
    {
        return format!("{} ({})", verifier_error, verifier_error.kind());
    }
    format!("{e} ({})", e.kind())
}
