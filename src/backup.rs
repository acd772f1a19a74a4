//! `backup` and `restore`: a portable, checksummed copy of the CA's records, and loading one
//! into an empty store of either kind (see `agentca_core::backup` and docs/deployment.md).

use std::path::PathBuf;
use std::process::ExitCode;

use agentca_core::backup::{self, RestoreOptions};
use agentca_core::ca::{DataDir, StoreLocation};
use agentca_core::{Error, Result};
use clap::Args;
use serde_json::json;

use crate::OutputFormat;
use crate::output::print;

#[derive(Debug, Args)]
pub(crate) struct BackupArgs {
    /// The file to write (mode 0600, replaced atomically if it exists).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct RestoreArgs {
    /// The backup file `agentca backup` wrote.
    file: PathBuf,
    /// The audit log of another node of this CA, replayed too (repeatable).
    #[arg(long = "audit-log", value_name = "FILE")]
    audit_logs: Vec<PathBuf>,
    /// A CRL the CA published (DER or PEM, e.g. saved from /crl): the CRL number restarts
    /// above its number (repeatable).
    #[arg(long = "published-crl", value_name = "FILE")]
    published_crls: Vec<PathBuf>,
    /// A certificate issued after the backup whose audit line holds only its hash (lines of
    /// older versions; PEM or DER, e.g. from its agent): restored if it is the one the line
    /// recorded (repeatable).
    #[arg(long = "certificate", value_name = "FILE")]
    certificates: Vec<PathBuf>,
}

/// Both commands need the data directory to themselves for the embedded store (it allows one
/// process), and `restore` needs the audit log too: refused at once, not after a lock wait.
fn refuse_running_server(dir: &DataDir, what: &str, always: bool) -> Result<()> {
    let embedded = !matches!(dir.store_location(), StoreLocation::Postgres(_));
    if (always || embedded)
        && std::os::unix::net::UnixStream::connect(crate::admin::socket_path(dir)).is_ok()
    {
        return Err(Error::DataDir {
            path: dir.path().to_owned(),
            reason: format!(
                "`agentca serve` is running on this data directory; stop it before `{what}`"
            ),
        });
    }
    Ok(())
}

pub(crate) fn run_backup(dir: &DataDir, out: OutputFormat, args: BackupArgs) -> Result<ExitCode> {
    refuse_running_server(dir, "backup", false)?;
    let report = backup::backup(dir, &args.out)?;
    let kinds: Vec<String> = report
        .counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    let text = format!(
        "wrote {} ({} records: {}), SHA-256 {}",
        report.path.display(),
        report.records,
        kinds.join(", "),
        report.file_sha256
    );
    let doc = json!({
        "path": report.path,
        "records": report.records,
        "counts": report.counts,
        "sha256": report.file_sha256,
        "header": report.header,
    });
    print(out, &text, &doc);
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn run_restore(dir: &DataDir, out: OutputFormat, args: RestoreArgs) -> Result<ExitCode> {
    refuse_running_server(dir, "restore", true)?;
    let report = backup::restore(
        dir,
        &args.file,
        &RestoreOptions {
            audit_logs: args.audit_logs,
            published_crls: args.published_crls,
            certificates: args.certificates,
        },
    )?;
    let loaded: u64 = report.counts.values().sum();
    let mut text = format!(
        "restored {loaded} records from a {} backup of {} into the {} store\n",
        report.source, report.backup_created_at, report.target
    );
    text.push_str(&format!(
        "  audit entries read: {} ({} after the backup)\n",
        report.audit_entries_read,
        report
            .audit_entries_after_backup
            .map_or_else(|| "unknown how many".to_owned(), |n| n.to_string())
    ));
    text.push_str(&format!(
        "  revocations replayed: {}\n  certificates issued after the backup: {} restored, \
         {} reserved without their certificate\n",
        report.revocations_replayed.len(),
        report.certificates_restored.len(),
        report.certificates_not_restorable.len()
    ));
    if report.agents_replayed > 0 || !report.tokens_marked_used.is_empty() {
        text.push_str(&format!(
            "  agents updated: {}, tokens marked used: {}\n",
            report.agents_replayed,
            report.tokens_marked_used.len()
        ));
    }
    if !report.accounts_deactivated.is_empty() {
        text.push_str(&format!(
            "  ACME accounts deactivated: {}\n",
            report.accounts_deactivated.len()
        ));
    }
    text.push_str(&format!(
        "  CRL number: highest known {}, next CRL above {}\n",
        report.crl_number_known, report.crl_number
    ));
    if report.config_updated {
        text.push_str(&format!(
            "  config.toml now records the {} store\n",
            report.target
        ));
    }
    for warning in &report.warnings {
        text.push_str(&format!("warning: {warning}\n"));
    }
    let doc = serde_json::to_value(&report).unwrap_or(serde_json::Value::Null);
    print(out, &text, &doc);
    Ok(ExitCode::SUCCESS)
}
