//! The CLI side of each command: read local files, run the operation here or through a running
//! server's admin socket, then print and write what it produced.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use agentca_core::ca::{self, Ca, DataDir, InitOptions, StoreLocation};
use agentca_core::csr::KeyKind;
use agentca_core::keyfile::{Passphrase, Protection};
use agentca_core::{Error, Result};

use crate::operations::{self, LocalBackend, Reply, Request, RevokeTarget};
use crate::output::print;
use crate::renewal::Cohort;
use crate::{
    AgentCommand, AuditCommand, CertCommand, CertStatusFilter, Cli, Command, InitArgs,
    OutputFormat, TokenCommand,
};

pub(crate) fn run(cli: Cli) -> Result<ExitCode> {
    let g = &cli.global;
    let mut dir = DataDir::new(&g.data_dir);
    if let Some(store) = &g.store {
        dir = dir.with_store(StoreLocation::parse(store)?);
    }
    let out = g.output;
    let passphrase_file = g.passphrase_file.as_deref();
    let (request, out_path) = match cli.command {
        Command::Init(args) => return init(&dir, out, passphrase_file, args),
        Command::Bench(command) => return crate::bench::run(out, command),
        Command::Enroll(args) => return crate::agent::enroll(out, args),
        Command::Renew(args) => return crate::agent::renew(out, args),
        Command::Verify(args) => return crate::verify::run(&dir, out, args),
        Command::Backup(args) => return crate::backup::run_backup(&dir, out, args),
        Command::Restore(args) => return crate::backup::run_restore(&dir, out, args),
        Command::Serve(args) => {
            crate::serve::serve(&dir, passphrase_file, args)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Agent(AgentCommand::Add {
            id,
            owner,
            policy,
            dns,
        }) => (
            Request::AgentAdd {
                id,
                owner,
                policy,
                dns,
            },
            None,
        ),
        Command::Agent(AgentCommand::List) => (Request::AgentList, None),
        Command::Agent(AgentCommand::Show { id }) => (Request::AgentShow { id }, None),
        Command::Agent(AgentCommand::Disable { id }) => (Request::AgentDisable { id }, None),
        Command::Issue(args) => {
            let csr = read_limited(&args.csr, agentca_core::csr::MAX_CSR_LEN)?;
            (
                Request::Issue {
                    agent: args.agent,
                    csr,
                    ttl: args.ttl,
                },
                args.out,
            )
        }
        Command::Revoke(args) => {
            let reason = args.reason.unwrap_or_else(|| {
                if args.replaced {
                    "superseded"
                } else {
                    "unspecified"
                }
                .to_owned()
            });
            let target = RevokeTarget {
                serial: args.serial,
                agent: args.agent,
                reason,
                replaced: args.replaced,
            };
            let request = if args.dry_run {
                Request::RevokePreview(target)
            } else {
                Request::Revoke(target)
            };
            (request, None)
        }
        Command::Cert(CertCommand::List { agent, status }) => (
            Request::CertList {
                agent,
                status: status.map(|s| {
                    match s {
                        CertStatusFilter::Valid => "valid",
                        CertStatusFilter::Revoked => "revoked",
                        CertStatusFilter::Expired => "expired",
                    }
                    .to_owned()
                }),
            },
            None,
        ),
        Command::Cert(CertCommand::Show { serial }) => (Request::CertShow { serial }, None),
        Command::Cert(CertCommand::RenewEarly {
            agent,
            policy,
            all,
            within,
        }) => {
            let cohort = match (policy, all) {
                (Some(policy), _) => Cohort::Policy(policy),
                (None, true) => Cohort::All,
                (None, false) => Cohort::Agents(agent),
            };
            (Request::RenewEarly { cohort, within }, None)
        }
        Command::Crl(args) => (Request::Crl, args.out),
        Command::Audit(AuditCommand::Checkpoint) => return audit_checkpoint(&dir, out),
        Command::Audit(AuditCommand::Verify {
            audit_logs,
            checkpoints,
        }) => {
            // The server may answer through its admin socket, from another directory.
            let other_logs = audit_logs
                .iter()
                .map(|p| {
                    std::path::absolute(p).map_err(|e| Error::io(format!("{}", p.display()), e))
                })
                .collect::<Result<_>>()?;
            for checkpoint in &checkpoints {
                checkpoint
                    .parse::<agentca_core::audit::Checkpoint>()
                    .map_err(|e| Error::InvalidArgument(e.to_string()))?;
            }
            (
                Request::AuditVerify {
                    other_logs,
                    checkpoints,
                },
                None,
            )
        }
        Command::Token(TokenCommand::Create { agent, kind, ttl }) => {
            (Request::TokenCreate { agent, kind, ttl }, None)
        }
    };
    // Where an artifact goes is settled before the operation runs: a certificate that cannot be
    // written would be issued and recorded for nothing, and a retry would issue twice.
    let output = out_path.as_deref().map(AtomicFile::create).transpose()?;
    let reply = dispatch(&dir, passphrase_file, request)?;
    render(out, reply, output)
}

/// Runs the request through a running server if there is one, else on the data directory.
fn dispatch(dir: &DataDir, passphrase_file: Option<&Path>, request: Request) -> Result<Reply> {
    if let Some(reply) = crate::admin::try_remote(dir, &request)? {
        return reply;
    }
    if let Request::AuditVerify {
        other_logs,
        checkpoints,
    } = &request
    {
        // Only the store is opened: opening the CA would open the audit log for appending,
        // which repairs a torn tail and refuses a damaged last line — verification must see
        // the file as it is.
        if !dir.config().exists() {
            return Err(no_ca(dir));
        }
        let config = ca::read_config(dir)?;
        let store = ca::open_store(dir)?;
        return operations::audit_verify(
            store.as_ref(),
            &dir.audit_log(),
            other_logs,
            checkpoints,
            &config,
        );
    }
    let backend = LocalBackend::new(Ca::open(dir)?, passphrase_file);
    operations::execute(&backend, request)
}

/// `audit checkpoint`: read from the file, without the writer's lock, so it also works
/// beside a running server.
fn audit_checkpoint(dir: &DataDir, out: OutputFormat) -> Result<ExitCode> {
    if !dir.config().exists() {
        return Err(no_ca(dir));
    }
    let reply = operations::audit_checkpoint(&dir.audit_log())?;
    render(out, reply, None)
}

fn no_ca(dir: &DataDir) -> Error {
    Error::DataDir {
        path: dir.path().to_owned(),
        reason: "no CA here; run `agentca init --trust-domain DOMAIN` first".into(),
    }
}

fn render(out: OutputFormat, reply: Reply, output: Option<AtomicFile>) -> Result<ExitCode> {
    let code = if reply.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    match (output, reply.artifact) {
        (Some(file), Some(artifact)) => {
            let path = file.path().to_owned();
            let bytes = match artifact.der {
                Some(der) if path.extension().is_none_or(|e| e != "pem") => der,
                _ => artifact.pem.into_bytes(),
            };
            file.commit(&bytes)?;
            let note = reply.note.unwrap_or_default();
            print(
                out,
                &format!("{note}\nwrote {}", path.display()),
                &reply.json,
            );
        }
        _ => {
            if out == OutputFormat::Text
                && let Some(note) = &reply.note
            {
                eprintln!("{note}");
            }
            print(out, &reply.text, &reply.json);
        }
    }
    Ok(code)
}

fn init(
    dir: &DataDir,
    out: OutputFormat,
    passphrase_file: Option<&Path>,
    args: InitArgs,
) -> Result<ExitCode> {
    let key_type: KeyKind = args.key_type.parse().map_err(Error::InvalidArgument)?;
    let protection = if args.insecure_unencrypted_keys {
        Protection::InsecurePlaintext
    } else if let Some(file) = passphrase_file {
        Protection::Passphrase(Passphrase::from_file(file)?)
    } else {
        match Passphrase::from_env()? {
            Some(p) => Protection::Passphrase(p),
            None => {
                return Err(Error::InvalidArgument(
                    "set AGENTCA_PASSPHRASE (or --passphrase-file) to encrypt the CA keys, or \
                     pass --insecure-unencrypted-keys for a development CA"
                        .into(),
                ));
            }
        }
    };
    let issuing_key_in = match (args.pkcs11_module, args.pkcs11_token) {
        (Some(module), Some(token)) => Some(ca::TokenPlace {
            module,
            token,
            pin: agentca_core::pkcs11::pin_from_environment()?,
        }),
        _ => None,
    };
    let report = ca::init(
        dir,
        &InitOptions {
            trust_domain: args.trust_domain,
            key_type,
            base_url: args.base_url,
            protection,
            issuing_key_in,
        },
    )?;
    let d = report.data_dir.display();
    let mut text = format!(
        "Created a CA for trust domain {} in {d}\n  root certificate: {} (SHA-256 {})\n  chain:            {}\n",
        report.trust_domain,
        report.root_pem.display(),
        report.root_sha256,
        report.chain_pem.display()
    );
    if let Some(token) = &report.issuing_key {
        text.push_str(&format!(
            "  issuing CA key:   in PKCS#11 token {:?} (id {}), never outside it\n",
            token.token, token.id
        ));
    }
    if report.insecure_plaintext_keys {
        text.push_str("\n  WARNING: the CA private keys are NOT encrypted (development mode).\n");
    }
    text.push_str(&format!(
        "\nNext steps:\n  agentca --data-dir {d} agent add spiffe://{td}/agent/demo\n  \
         openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout demo.key -out demo.csr -subj /\n  \
         agentca --data-dir {d} issue --agent spiffe://{td}/agent/demo --csr demo.csr --out demo.pem\n  \
         agentca --data-dir {d} cert list\n",
        td = report.trust_domain
    ));
    print(
        out,
        &text,
        &serde_json::to_value(&report).unwrap_or(serde_json::Value::Null),
    );
    Ok(ExitCode::SUCCESS)
}

/// Reads at most `limit + 1` bytes: enough for the core to see (and audit) that a file is too
/// large, without reading all of it.
fn read_limited(path: &Path, limit: usize) -> Result<Vec<u8>> {
    let file =
        std::fs::File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let mut buf = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    Ok(buf)
}

/// A file written atomically: a temporary file in the target's directory (created up front,
/// so an unwritable destination fails early), then fsync, rename and directory fsync.
struct AtomicFile {
    path: std::path::PathBuf,
    dir: std::path::PathBuf,
    tmp: tempfile::NamedTempFile,
}

impl AtomicFile {
    fn create(path: &Path) -> Result<Self> {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => std::path::PathBuf::from("."),
        };
        let tmp = tempfile::NamedTempFile::new_in(&dir)
            .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
        Ok(Self {
            path: path.to_owned(),
            dir,
            tmp,
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn commit(mut self, contents: &[u8]) -> Result<()> {
        use std::io::Write;
        let path = self.path;
        self.tmp
            .write_all(contents)
            .and_then(|()| self.tmp.as_file().sync_all())
            .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
        self.tmp
            .persist(&path)
            .map_err(|e| Error::io(format!("write {}", path.display()), e.error))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(format!("sync {}", self.dir.display()), e))
    }
}
