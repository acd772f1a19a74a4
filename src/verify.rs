//! `agentca verify`: the relying party's checks (`agentca-verify`) on a certificate file.
//! Exit code 0 and the agent's facts when it is accepted; 1 and the reason when not.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use agentca_core::ca::DataDir;
use agentca_core::policy::parse_duration;
use agentca_core::{Error, Result};
use agentca_verify::{
    FailurePolicy, IdPattern, Revocation, RevocationStatus, TrustAnchors, VerifiedAgent, Verifier,
    read_certificates,
};
use clap::{ArgGroup, Args};
use serde_json::json;

use crate::OutputFormat;
use crate::output::print;

/// The largest certificate or trust-anchor file read.
const MAX_CERT_FILE: u64 = 1 << 20;
/// The largest CRL file read.
const MAX_CRL_FILE: u64 = 16 << 20;

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("revocation").args(["ocsp", "crl", "crl_file"])))]
pub(crate) struct VerifyArgs {
    /// The certificate: PEM (the leaf first, then any intermediates) or DER.
    #[arg(long)]
    cert: PathBuf,
    /// Trust anchors, PEM or DER (default: root.pem in the data directory).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The expected agent: a SPIFFE ID, or a pattern where `*` is one path segment and a
    /// final `**` any number of them, e.g. spiffe://example.org/agent/team/*.
    #[arg(long = "expect-id", value_name = "ID|PATTERN")]
    expect_id: Option<String>,
    /// Check revocation with this OCSP responder, e.g. http://127.0.0.1:8080/ocsp.
    #[arg(long, value_name = "URL")]
    ocsp: Option<String>,
    /// Check revocation against the CRL at this URL, e.g. http://127.0.0.1:8080/crl.
    #[arg(long, value_name = "URL")]
    crl: Option<String>,
    /// Check revocation against this CRL file (DER or PEM).
    #[arg(long = "crl-file", value_name = "FILE")]
    crl_file: Option<PathBuf>,
    /// Accept the certificate when its revocation status cannot be obtained.
    #[arg(long)]
    fail_open: bool,
    /// How long to wait for the OCSP responder or CRL server, e.g. 5s.
    #[arg(long, default_value = "5s")]
    timeout: String,
}

pub(crate) fn run(dir: &DataDir, out: OutputFormat, args: VerifyArgs) -> Result<ExitCode> {
    let certs = read_certificates(&read(&args.cert, MAX_CERT_FILE)?)
        .map_err(|e| Error::InvalidArgument(format!("{}: {e}", args.cert.display())))?;
    let Some((leaf, intermediates)) = certs.split_first() else {
        return Err(Error::InvalidArgument(format!(
            "{}: no certificate",
            args.cert.display()
        )));
    };
    let ca = match &args.ca {
        Some(path) => path.clone(),
        None => {
            let root = dir.file("root.pem");
            if !root.exists() {
                return Err(Error::InvalidArgument(format!(
                    "no --ca given and {} does not exist",
                    root.display()
                )));
            }
            root
        }
    };
    let anchors = read(&ca, MAX_CERT_FILE)?;
    let revocation = match (&args.ocsp, &args.crl, &args.crl_file) {
        (Some(url), _, _) => Revocation::ocsp(url),
        (_, Some(url), _) => Revocation::crl_url(url),
        (_, _, Some(path)) => Revocation::crl(read(path, MAX_CRL_FILE)?),
        _ => Revocation::None,
    };
    let timeout = parse_duration(&args.timeout)
        .ok()
        .and_then(|d| Duration::try_from(d).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| Error::InvalidArgument(format!("bad --timeout {:?}", args.timeout)))?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("start the runtime", e))?;
    let verdict = runtime.block_on(async {
        let mut builder = Verifier::builder(TrustAnchors::from_pem_or_der(&anchors)?)
            .revocation(revocation)
            .timeout(timeout)
            .failure_policy(if args.fail_open {
                FailurePolicy::Open
            } else {
                FailurePolicy::Closed
            });
        builder = match &args.expect_id {
            Some(id) => builder.expect_id(IdPattern::parse(id)?),
            None => builder.accept_any_id(),
        };
        builder.build()?.verify(leaf, intermediates).await
    });
    Ok(match verdict {
        Ok(agent) => {
            print(out, &text(&agent), &document(&agent));
            ExitCode::SUCCESS
        }
        Err(refused) => {
            match out {
                OutputFormat::Text => eprintln!("error: {refused}"),
                OutputFormat::Json => print(
                    out,
                    "",
                    &json!({ "error": { "kind": refused.kind(), "message": refused.to_string() } }),
                ),
            }
            ExitCode::FAILURE
        }
    })
}

fn read(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let file =
        std::fs::File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let mut buf = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    if buf.len() as u64 > limit {
        return Err(Error::InvalidArgument(format!(
            "{} is larger than {limit} bytes",
            path.display()
        )));
    }
    Ok(buf)
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

fn revocation_text(status: &RevocationStatus) -> String {
    match status {
        RevocationStatus::Good {
            source,
            next_update,
            ..
        } => format!(
            "good (checked with {source}, current until {})",
            rfc3339(*next_update)
        ),
        RevocationStatus::Unavailable { reason } => format!("not checked: {reason}"),
        _ => "not checked (no --ocsp, --crl or --crl-file)".into(),
    }
}

fn text(agent: &VerifiedAgent) -> String {
    format!(
        "agent:      {}\nserial:     {}\nnot after:  {}\nrevocation: {}\n",
        agent.spiffe_id,
        agent.serial,
        rfc3339(agent.not_after),
        revocation_text(&agent.revocation)
    )
}

fn document(agent: &VerifiedAgent) -> serde_json::Value {
    let revocation = match &agent.revocation {
        RevocationStatus::Good {
            source,
            this_update,
            next_update,
        } => json!({
            "status": "good",
            "source": match source {
                agentca_verify::RevocationSource::Ocsp => "ocsp",
                _ => "crl",
            },
            "this_update": rfc3339(*this_update),
            "next_update": rfc3339(*next_update),
        }),
        RevocationStatus::Unavailable { reason } => {
            json!({ "status": "unavailable", "reason": reason })
        }
        other => json!({ "status": other.name() }),
    };
    json!({
        "agent_id": agent.spiffe_id.as_str(),
        "serial": agent.serial.to_string(),
        "not_before": rfc3339(agent.not_before),
        "not_after": rfc3339(agent.not_after),
        "revocation": revocation,
    })
}
