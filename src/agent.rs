//! `agentca enroll` and `agentca renew`: the agent side, on `agentca-agent`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use agentca_agent::AgentError;
use agentca_agent::acme::Eab;
use agentca_agent::daemon::{self, Observer};
use agentca_agent::enroll::{self, AcmeEnrollment, IdentifierMode, Issued};
use agentca_agent::files::CredentialFiles;
use agentca_agent::schedule::RenewalWindow;
use agentca_core::{Error, Result};
use clap::{Args, ValueEnum};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::OutputFormat;
use crate::output::print;

/// `enroll`: a key made here, a certificate for the agent, both written together.
#[derive(Debug, Args)]
pub(crate) struct EnrollArgs {
    /// The agent ID the certificate is for (bound to the credential by the CA).
    #[arg(long)]
    agent: String,
    /// Where the private key is kept (mode 0600; a link into the state directory beside it).
    #[arg(long)]
    key: PathBuf,
    /// Where the certificate chain is kept, leaf first.
    #[arg(long)]
    cert: PathBuf,
    /// The CA's ACME directory URL (with --eab-kid and --eab-hmac).
    #[arg(long, conflicts_with = "scep", required_unless_present = "scep")]
    acme: Option<String>,
    /// EAB key id from `agentca token create --for acme`.
    #[arg(long, env = "AGENTCA_EAB_KID")]
    eab_kid: Option<String>,
    /// EAB HMAC key from `agentca token create --for acme`.
    #[arg(long, env = "AGENTCA_EAB_HMAC", hide_env_values = true)]
    eab_hmac: Option<String>,
    /// The CA's SCEP URL (with --challenge); the key is then RSA 2048.
    #[arg(long)]
    scep: Option<String>,
    /// One-time SCEP challenge from `agentca token create --for scep`.
    #[arg(long, env = "AGENTCA_SCEP_CHALLENGE", hide_env_values = true)]
    challenge: Option<String>,
    /// The CA's root certificate (PEM): the root the certificate chain must lead to (among
    /// the chains an ACME server offers, the one that does is kept), and the only one
    /// trusted for the CA's TLS unless --tls-ca is given.
    #[arg(long)]
    ca: PathBuf,
    /// Roots (PEM) trusted for the ACME server's TLS instead of --ca, for CAs whose web
    /// server certificate comes from elsewhere.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// A DNS name to order besides the agent identity (repeatable): registered for the agent
    /// at agentca (`agent add --dns`), or proven over http-01 with --http-01-listen.
    #[arg(long)]
    dns: Vec<String>,
    /// Which identifiers ACME orders name: `uri` (agentca's identifier for the agent ID, plus
    /// the --dns names), `dns` (the --dns names only, for CAs that know no `uri`), or `auto`
    /// (`uri`, and `dns` when the CA refuses that type). Kept for renewals.
    #[arg(long, value_enum, default_value_t = Identifiers::Auto)]
    identifiers: Identifiers,
    /// Answer http-01 challenges from a built-in responder listening on ADDR (e.g.
    /// 127.0.0.1:80 or 0.0.0.0:80) while an order needs it; kept for renewals. Without it,
    /// every name must be pre-authorized by the CA.
    #[arg(long = "http-01-listen", value_name = "ADDR")]
    http01_listen: Option<SocketAddr>,
}

/// `--identifiers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Identifiers {
    Auto,
    Uri,
    Dns,
}

/// `renew`: once, or as a daemon.
#[derive(Debug, Args)]
pub(crate) struct RenewArgs {
    /// The certificate chain written by `enroll`.
    #[arg(long)]
    cert: PathBuf,
    /// The private key written by `enroll`.
    #[arg(long)]
    key: PathBuf,
    /// Keep running: renew whenever the certificate is due, until stopped.
    #[arg(long)]
    daemon: bool,
    /// A command run (by `sh -c`) after each new certificate is installed, e.g. to reload a
    /// service.
    #[arg(long)]
    exec: Option<String>,
}

fn agent_error(e: AgentError) -> Error {
    let kind = match &e {
        AgentError::Refused { kind, .. } => kind.rsplit(':').next().unwrap_or("refused").to_owned(),
        AgentError::Unavailable(_) => "unavailable".to_owned(),
        AgentError::Io { .. } => "io".to_owned(),
        AgentError::Responder(_) => "responder".to_owned(),
        _ => "agent".to_owned(),
    };
    Error::Remote {
        kind,
        message: e.to_string(),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("start the async runtime", e))
}

fn issued_json(issued: &Issued) -> serde_json::Value {
    json!({
        "agent": issued.agent_id,
        "serial": issued.serial,
        "not_before": issued.not_before.format(&Rfc3339).unwrap_or_default(),
        "not_after": issued.not_after.format(&Rfc3339).unwrap_or_default(),
    })
}

fn issued_text(verb: &str, issued: &Issued) -> String {
    format!(
        "{verb} {}\nserial {}, valid until {}",
        issued.agent_id,
        issued.serial,
        issued.not_after.format(&Rfc3339).unwrap_or_default()
    )
}

pub(crate) fn enroll(out: OutputFormat, args: EnrollArgs) -> Result<ExitCode> {
    let ca_pem =
        std::fs::read(&args.ca).map_err(|e| Error::io(format!("read {}", args.ca.display()), e))?;
    let files = CredentialFiles::new(&args.key, &args.cert);
    let rt = runtime()?;
    let issued = match (args.acme, args.scep) {
        (Some(directory), None) => {
            let (Some(kid), Some(hmac_b64)) = (args.eab_kid, args.eab_hmac) else {
                return Err(Error::InvalidArgument(
                    "--acme needs --eab-kid and --eab-hmac (agentca token create --for acme)"
                        .into(),
                ));
            };
            let eab = Eab { kid, hmac_b64 };
            let identifiers = match args.identifiers {
                Identifiers::Auto => IdentifierMode::Auto,
                Identifiers::Uri => IdentifierMode::Uri,
                Identifiers::Dns => IdentifierMode::Dns,
            };
            if identifiers == IdentifierMode::Dns && args.dns.is_empty() {
                return Err(Error::InvalidArgument(
                    "--identifiers dns needs at least one --dns NAME".into(),
                ));
            }
            let tls_ca_pem = match &args.tls_ca {
                Some(path) => Some(
                    std::fs::read(path)
                        .map_err(|e| Error::io(format!("read {}", path.display()), e))?,
                ),
                None => None,
            };
            rt.block_on(enroll::enroll_acme(
                &files,
                &ca_pem,
                &AcmeEnrollment {
                    directory: &directory,
                    eab: &eab,
                    agent_id: &args.agent,
                    dns: &args.dns,
                    identifiers,
                    http01_listen: args.http01_listen,
                    tls_ca_pem: tls_ca_pem.as_deref(),
                },
            ))
        }
        (None, Some(url)) => {
            let Some(challenge) = args.challenge else {
                return Err(Error::InvalidArgument(
                    "--scep needs --challenge (agentca token create --for scep)".into(),
                ));
            };
            if !args.dns.is_empty() {
                return Err(Error::InvalidArgument(
                    "--dns is for ACME; SCEP certificates name the agent only".into(),
                ));
            }
            if args.http01_listen.is_some()
                || args.tls_ca.is_some()
                || args.identifiers != Identifiers::Auto
            {
                return Err(Error::InvalidArgument(
                    "--http-01-listen, --tls-ca and --identifiers are for ACME".into(),
                ));
            }
            rt.block_on(enroll::enroll_scep(
                &files,
                &ca_pem,
                &url,
                &challenge,
                &args.agent,
            ))
        }
        _ => {
            return Err(Error::InvalidArgument(
                "give either --acme DIRECTORY_URL or --scep URL".into(),
            ));
        }
    }
    .map_err(agent_error)?;
    print(
        out,
        &issued_text("enrolled", &issued),
        &issued_json(&issued),
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn renew(out: OutputFormat, args: RenewArgs) -> Result<ExitCode> {
    let files = CredentialFiles::new(&args.key, &args.cert);
    let rt = runtime()?;
    if !args.daemon {
        let issued = rt.block_on(enroll::renew(&files)).map_err(agent_error)?;
        run_hook(args.exec.as_deref());
        print(out, &issued_text("renewed", &issued), &issued_json(&issued));
        return Ok(ExitCode::SUCCESS);
    }
    let mut observer = Log { out };
    let exec = args.exec.clone();
    rt.block_on(daemon::run(&files, &mut observer, |_| {
        run_hook(exec.as_deref());
    }))
    .map_err(agent_error)?;
    Ok(ExitCode::SUCCESS)
}

/// Runs the `--exec` hook; its failure is reported, not fatal (the new pair is in place).
fn run_hook(command: Option<&str>) {
    let Some(command) = command else {
        return;
    };
    match std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .status()
    {
        Ok(status) if status.success() => {}
        Ok(status) => eprintln!("agentca renew: --exec {command:?} exited with {status}"),
        Err(e) => eprintln!("agentca renew: --exec {command:?} did not start: {e}"),
    }
}

/// The daemon's progress, one line (or one JSON document) per event on standard error.
struct Log {
    out: OutputFormat,
}

impl Log {
    fn line(&self, text: String, doc: serde_json::Value) {
        match self.out {
            OutputFormat::Text => eprintln!("{text}"),
            OutputFormat::Json => eprintln!("{doc}"),
        }
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

impl Observer for Log {
    fn planned(&mut self, at: OffsetDateTime, _window: Option<RenewalWindow>) {
        self.line(
            format!("next renewal at {}", rfc3339(at)),
            json!({"event": "planned", "at": rfc3339(at)}),
        );
    }

    fn renewed(&mut self, issued: &Issued) {
        let mut doc = issued_json(issued);
        doc["event"] = json!("renewed");
        self.line(issued_text("renewed", issued), doc);
    }

    fn revoked(&mut self, detail: &str) {
        self.line(
            format!("{detail}; renewing now"),
            json!({"event": "revoked", "detail": detail}),
        );
    }

    fn clock_skew(&mut self, offset: time::Duration) {
        let seconds = offset.whole_seconds();
        self.line(
            format!(
                "the CA's clock is {} s {} ours; planning in the CA's time",
                seconds.abs(),
                if seconds >= 0 { "ahead of" } else { "behind" }
            ),
            json!({"event": "clock_skew", "offset_s": seconds}),
        );
    }

    fn failed(&mut self, error: &AgentError, retry_in: std::time::Duration) {
        self.line(
            format!("renewal failed: {error}; next attempt in {} s", retry_in.as_secs()),
            json!({"event": "failed", "error": error.to_string(), "retry_in_s": retry_in.as_secs()}),
        );
    }
}
