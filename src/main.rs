//! `agentca`: the command line (design §7). Thin: parse arguments, call the core, print.

#![forbid(unsafe_code)]

mod admin;
mod agent;
mod backup;
mod bench;
mod commands;
mod malloc_tuning;
mod operations;
mod output;
mod renewal;
mod serve;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// A certificate authority for AI agents.
#[derive(Debug, Parser)]
#[command(name = "agentca", version, about, propagate_version = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Options accepted before or after the subcommand.
#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// Data directory of the CA.
    #[arg(
        long,
        global = true,
        env = "AGENTCA_DATA_DIR",
        default_value = "./agentca-data"
    )]
    data_dir: PathBuf,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
    /// File holding the CA key passphrase (otherwise AGENTCA_PASSPHRASE).
    #[arg(long, global = true, env = "AGENTCA_PASSPHRASE_FILE")]
    passphrase_file: Option<PathBuf>,
    /// Where the CA keeps its records: a directory for the embedded store (default
    /// DATA_DIR/store), or a PostgreSQL URL (postgres://USER:PASSWORD@HOST:PORT/DBNAME) that
    /// several nodes share. A CA created with a URL needs it on every command.
    #[arg(
        long,
        global = true,
        env = "AGENTCA_STORE",
        hide_env_values = true,
        value_name = "DIR|URL"
    )]
    store: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new CA: root, issuing CA, OCSP responder and SCEP RA certificates.
    Init(InitArgs),
    /// Register and manage agents.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Sign a CSR for an agent, under its policy.
    Issue(IssueArgs),
    /// Revoke one certificate, or every certificate of an agent.
    Revoke(RevokeArgs),
    /// List and show certificates.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Generate and sign a fresh CRL.
    Crl(CrlArgs),
    /// Check the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Write every record of the CA's store to a portable, checksummed file (server stopped
    /// for the embedded store; any time for PostgreSQL).
    Backup(backup::BackupArgs),
    /// Load a backup into an empty store (embedded or PostgreSQL, as --store says), replay
    /// the audit log over it and move the CRL number past every published one.
    Restore(backup::RestoreArgs),
    /// One-time enrollment credentials bound to one agent.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Run the CA service: OCSP, CRL and CA certificates over HTTP, the HTTPS listener, and
    /// the admin socket the other commands use while it runs. Creates a development CA on the
    /// first run if the data directory holds none.
    Serve(ServeArgs),
    /// Load generators that measure agentca or any other compliant server.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Agent side: obtain a first certificate over ACME or SCEP with a one-time credential.
    Enroll(agent::EnrollArgs),
    /// Agent side: renew the certificate `enroll` wrote, once or as a daemon.
    Renew(agent::RenewArgs),
    /// Check a certificate as a relying service would: chain, agent ID and revocation.
    Verify(verify::VerifyArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// HTTPS listener address (default 127.0.0.1:8443; port 0 picks a free port).
    #[arg(long, env = "AGENTCA_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// HTTP listener address for OCSP, CRL and CA certificates (default 127.0.0.1:8080).
    #[arg(long, env = "AGENTCA_HTTP_LISTEN")]
    http_listen: Option<std::net::SocketAddr>,
    /// TOML file with the same settings (flags and environment take precedence).
    #[arg(long, env = "AGENTCA_CONFIG")]
    config: Option<PathBuf>,
    /// Log format on standard error.
    #[arg(long, value_enum, env = "AGENTCA_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    /// Name for the HTTPS certificate (repeatable; default localhost and 127.0.0.1 plus the
    /// base URL's host).
    #[arg(long = "tls-name", env = "AGENTCA_TLS_NAMES", value_delimiter = ',')]
    tls_name: Vec<String>,
    /// Trust domain of the development CA created on first run (default agents.localhost).
    #[arg(long)]
    trust_domain: Option<String>,
    /// Also accept SCEP requests with DES or 3DES envelopes and SHA-1 digests, for old
    /// clients (micromdm's scepclient encrypts with DES whatever the CA advertises).
    #[arg(long, env = "AGENTCA_SCEP_LEGACY_CRYPTO")]
    scep_legacy_crypto: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// Trust domain of the agents' SPIFFE IDs, e.g. example.org.
    #[arg(long)]
    trust_domain: String,
    /// Key type of the root and issuing CA.
    #[arg(long, default_value = "ecdsa-p256", value_parser = ["ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-2048", "rsa-3072", "rsa-4096"])]
    key_type: String,
    /// Base URL written into certificates for OCSP, CA issuers and CRL (default http://127.0.0.1:8080).
    #[arg(long)]
    base_url: Option<String>,
    /// DEVELOPMENT ONLY: store the CA private keys unencrypted.
    #[arg(long)]
    insecure_unencrypted_keys: bool,
    /// Generate the issuing CA's key in a PKCS#11 token instead of `issuing.key` (the module,
    /// e.g. /usr/lib/softhsm/libsofthsm2.so); its user PIN comes from AGENTCA_PKCS11_PIN or
    /// the file AGENTCA_PKCS11_PIN_FILE names. ECDSA key types only.
    #[arg(long, requires = "pkcs11_token")]
    pkcs11_module: Option<PathBuf>,
    /// The label of the token to generate the issuing CA's key in (with --pkcs11-module).
    #[arg(long, requires = "pkcs11_module")]
    pkcs11_token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AgentCommand {
    /// Register an agent.
    Add {
        /// The agent's SPIFFE ID, e.g. spiffe://example.org/agent/alice/mailer.
        id: String,
        /// Who is responsible for it.
        #[arg(long)]
        owner: Option<String>,
        /// Policy to apply (default: the most specific matching policy).
        #[arg(long)]
        policy: Option<String>,
        /// Extra DNS name pre-authorized for this agent (repeatable).
        #[arg(long = "dns")]
        dns: Vec<String>,
    },
    /// List agents.
    List,
    /// Show one agent.
    Show {
        /// The agent's SPIFFE ID.
        id: String,
    },
    /// Disable an agent: no further certificates are issued to it.
    Disable {
        /// The agent's SPIFFE ID.
        id: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct IssueArgs {
    /// The agent's SPIFFE ID.
    #[arg(long)]
    agent: String,
    /// The CSR, PEM or DER.
    #[arg(long)]
    csr: PathBuf,
    /// Lifetime, e.g. 1h or 30m (default: the policy's default).
    #[arg(long)]
    ttl: Option<String>,
    /// Write the certificate chain (PEM) here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).multiple(true).args(["serial", "agent", "replaced"])))]
pub(crate) struct RevokeArgs {
    /// Serial number, lowercase hex.
    #[arg(conflicts_with_all = ["agent", "replaced"])]
    serial: Option<String>,
    /// Revoke every unexpired certificate of this agent instead.
    #[arg(long)]
    agent: Option<String>,
    /// Revoke only certificates that a later one of the same agent replaces (valid, naming
    /// at least the same identities), of --agent or of every agent; lists the certificates
    /// asked to renew early (cert renew-early) that have no replacement yet.
    #[arg(long)]
    replaced: bool,
    /// RFC 5280 reason: unspecified, keyCompromise, affiliationChanged, superseded,
    /// cessationOfOperation, privilegeWithdrawn, … (default unspecified; superseded with
    /// --replaced)
    #[arg(long)]
    reason: Option<String>,
    /// Revoke nothing: list what this command would revoke now (with keyCompromise, the
    /// other certificates of the same key too). Needs no passphrase.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum CertCommand {
    /// List certificates.
    List {
        /// Only this agent's.
        #[arg(long)]
        agent: Option<String>,
        /// Only certificates in this state.
        #[arg(long, value_enum)]
        status: Option<CertStatusFilter>,
    },
    /// Show one certificate.
    Show {
        /// Serial number, lowercase hex.
        serial: String,
    },
    /// Ask agents to renew the certificates they hold now (a mass-revocation drill): their
    /// ACME renewal information (RFC 9773) opens at once, spread over --within; then
    /// `revoke --replaced` revokes what was replaced.
    #[command(group(clap::ArgGroup::new("cohort").required(true).args(["agent", "policy", "all"])))]
    RenewEarly {
        /// This agent (repeatable).
        #[arg(long)]
        agent: Vec<String>,
        /// Every agent under this policy.
        #[arg(long)]
        policy: Option<String>,
        /// Every agent.
        #[arg(long)]
        all: bool,
        /// The span the renewals are spread over, e.g. 30m (at most 7d).
        #[arg(long, default_value = "1h")]
        within: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum CertStatusFilter {
    Valid,
    Revoked,
    Expired,
}

#[derive(Debug, Args)]
pub(crate) struct CrlArgs {
    /// Write the CRL here (DER, or PEM if the name ends in .pem) instead of PEM on standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Create an ACME EAB credential (key id + HMAC key) or a SCEP challenge for an agent.
    Create {
        /// The agent the credential enrolls.
        #[arg(long)]
        agent: String,
        /// acme or scep.
        #[arg(long = "for", value_parser = ["acme", "scep"])]
        kind: String,
        /// Validity, e.g. 1h (default 24h, at most 30d).
        #[arg(long)]
        ttl: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Verify the hash chain of the audit log and reconcile it with the store.
    Verify {
        /// Another node's audit log, reconciled together with this data directory's
        /// (repeatable; for several nodes on one database).
        #[arg(long = "audit-log", value_name = "FILE")]
        audit_logs: Vec<PathBuf>,
        /// A checkpoint (SEQ:HASH, as `audit checkpoint` prints and `serve` logs) recorded
        /// apart from the data directory: the log must still hold that entry, with that hash
        /// (repeatable). Shows a log cut short or rewritten whole.
        #[arg(long = "checkpoint", value_name = "SEQ:HASH")]
        checkpoints: Vec<String>,
    },
    /// Print the audit log's last entry as a checkpoint (SEQ:HASH), to keep apart from the
    /// data directory and give to `audit verify --checkpoint` later.
    Checkpoint,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = cli.global.output;
    match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            output::error(format, &e);
            ExitCode::FAILURE
        }
    }
}
