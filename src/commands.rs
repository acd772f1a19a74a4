//! One function per command; each returns what to print.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use agentca_core::ca::{self, Ca, DataDir, InitOptions};
use agentca_core::csr::KeyKind;
use agentca_core::identity::SpiffeId;
use agentca_core::keyfile::{Passphrase, Protection};
use agentca_core::policy::{check_dns_name, format_duration, parse_duration};
use agentca_core::store::{
    AgentRecord, CertificateFilter, CertificateRecord, EnrollmentMethod, RevocationReason, Serial,
    SerialEntry, Store, StoreError,
};
use agentca_core::{Error, Result, reconcile};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::output::print;
use crate::{
    AgentCommand, AuditCommand, CertCommand, CertStatusFilter, Cli, Command, CrlArgs, InitArgs,
    IssueArgs, OutputFormat, RevokeArgs,
};

pub(crate) fn run(cli: Cli) -> Result<ExitCode> {
    let g = &cli.global;
    let dir = DataDir::new(&g.data_dir);
    let out = g.output;
    match cli.command {
        Command::Init(args) => init(&dir, out, g.passphrase_file.as_deref(), args),
        Command::Agent(cmd) => agent(&dir, out, cmd),
        Command::Issue(args) => issue(&dir, out, g.passphrase_file.as_deref(), args),
        Command::Revoke(args) => revoke(&dir, out, g.passphrase_file.as_deref(), args),
        Command::Cert(cmd) => cert(&dir, out, cmd),
        Command::Crl(args) => crl(&dir, out, g.passphrase_file.as_deref(), args),
        Command::Audit(AuditCommand::Verify) => audit_verify(&dir, out),
    }
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
    let report = ca::init(
        dir,
        &InitOptions {
            trust_domain: args.trust_domain,
            key_type,
            base_url: args.base_url,
            protection,
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
        &serde_json::to_value(&report).unwrap_or(Value::Null),
    );
    Ok(ExitCode::SUCCESS)
}

fn agent(dir: &DataDir, out: OutputFormat, cmd: AgentCommand) -> Result<ExitCode> {
    let ca = Ca::open(dir)?;
    let store = ca.store();
    match cmd {
        AgentCommand::Add {
            id,
            owner,
            policy,
            dns,
        } => {
            let id = SpiffeId::parse(&id)?;
            if id.trust_domain() != ca.config().trust_domain {
                return Err(Error::InvalidAgentId(format!(
                    "{id} is in trust domain {}, this CA serves {}",
                    id.trust_domain(),
                    ca.config().trust_domain
                )));
            }
            for name in &dns {
                check_dns_name(name)
                    .map_err(|e| Error::InvalidArgument(format!("--dns {name:?}: {e}")))?;
            }
            let chosen = ca.policies().for_agent(&id, policy.as_deref())?;
            let record = AgentRecord {
                id: id.to_string(),
                owner,
                policy,
                dns,
                disabled: false,
                created_at: now(),
            };
            store.insert_agent(&record).map_err(|e| match e {
                StoreError::AlreadyExists { .. } => Error::AgentExists(id.to_string()),
                other => other.into(),
            })?;
            ca.audit()
                .append("agent.added", agent_json(&record, chosen.name()))?;
            store.commit()?;
            ca.audit().sync()?;
            print(
                out,
                &format!("added agent {id} (policy {})", chosen.name()),
                &agent_json(&record, chosen.name()),
            );
        }
        AgentCommand::List => {
            let agents = store.agents()?;
            let mut text = String::new();
            let mut docs = Vec::new();
            for a in &agents {
                let policy = policy_name(&ca, a);
                text.push_str(&format!(
                    "{}\t{}\tpolicy={}\towner={}\n",
                    a.id,
                    if a.disabled { "disabled" } else { "enabled" },
                    policy,
                    a.owner.as_deref().unwrap_or("-")
                ));
                docs.push(agent_json(a, &policy));
            }
            if agents.is_empty() {
                text.push_str("no agents\n");
            }
            print(out, &text, &json!({ "agents": docs }));
        }
        AgentCommand::Show { id } => {
            SpiffeId::parse(&id)?;
            let a = store
                .agent(&id)?
                .ok_or_else(|| Error::UnknownAgent(id.clone()))?;
            let policy = policy_name(&ca, &a);
            let certs = store.certificates(&CertificateFilter {
                agent_id: Some(a.id.clone()),
            })?;
            let valid = certs.iter().filter(|c| status(c) == "valid").count();
            let text = format!(
                "agent:        {}\nstatus:       {}\npolicy:       {}\nowner:        {}\ndns:          {}\ncreated:      {}\ncertificates: {} ({} valid)",
                a.id,
                if a.disabled { "disabled" } else { "enabled" },
                policy,
                a.owner.as_deref().unwrap_or("-"),
                if a.dns.is_empty() {
                    "-".into()
                } else {
                    a.dns.join(", ")
                },
                rfc3339(a.created_at),
                certs.len(),
                valid
            );
            let mut doc = agent_json(&a, &policy);
            doc["certificates"] = json!(certs.len());
            doc["valid_certificates"] = json!(valid);
            print(out, &text, &doc);
        }
        AgentCommand::Disable { id } => {
            SpiffeId::parse(&id)?;
            let mut a = store
                .agent(&id)?
                .ok_or_else(|| Error::UnknownAgent(id.clone()))?;
            let was = a.disabled;
            a.disabled = true;
            store.update_agent(&a)?;
            if !was {
                ca.audit()
                    .append("agent.disabled", json!({ "agent": a.id }))?;
            }
            store.commit()?;
            ca.audit().sync()?;
            let policy = policy_name(&ca, &a);
            print(
                out,
                &format!(
                    "{} agent {id}; its certificates stay valid until revoked (agentca revoke --agent {id})",
                    if was { "already disabled:" } else { "disabled" }
                ),
                &agent_json(&a, &policy),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn issue(
    dir: &DataDir,
    out: OutputFormat,
    passphrase_file: Option<&Path>,
    args: IssueArgs,
) -> Result<ExitCode> {
    let ttl = args
        .ttl
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(|e| Error::InvalidArgument(format!("--ttl: {e}")))?;
    let csr = read_limited(&args.csr, agentca_core::csr::MAX_CSR_LEN)?;
    // Where the certificate goes is settled before anything is signed: a certificate that
    // cannot be written would be issued and recorded for nothing, and a retry would issue twice.
    let output = args.out.as_deref().map(AtomicFile::create).transpose()?;
    let ca = Ca::open(dir)?;
    let protection = ca.protection(passphrase_file)?;
    let authority = ca.authority(&protection)?;
    let record = authority.issue_csr(&args.agent, &csr, EnrollmentMethod::Cli, ttl)?;
    let chain_pem = format!(
        "{}{}",
        pem_cert(&record.der),
        pem_cert(authority.ca().cert_der())
    );
    let doc = cert_json(&record, true);
    let summary = format!(
        "issued {} for {}, valid {} to {}",
        record.intent.serial,
        record.intent.agent_id,
        rfc3339(record.intent.not_before),
        rfc3339(record.intent.not_after)
    );
    match output {
        Some(file) => {
            let path = file.path().to_owned();
            file.commit(chain_pem.as_bytes())?;
            print(out, &format!("{summary}\nwrote {}", path.display()), &doc);
        }
        None => {
            if out == OutputFormat::Text {
                eprintln!("{summary}");
            }
            print(out, &chain_pem, &doc);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn revoke(
    dir: &DataDir,
    out: OutputFormat,
    passphrase_file: Option<&Path>,
    args: RevokeArgs,
) -> Result<ExitCode> {
    let reason: RevocationReason = args
        .reason
        .parse()
        .map_err(|e: agentca_core::store::InvalidReason| Error::InvalidArgument(e.to_string()))?;
    let serial = args.serial.as_deref().map(parse_serial).transpose()?;
    let ca = Ca::open(dir)?;
    let protection = ca.protection(passphrase_file)?;
    let authority = ca.authority(&protection)?;
    if let Some(serial) = serial {
        let record = authority.revoke(&serial, reason)?;
        print(
            out,
            &format!(
                "revoked {serial} ({}) reason {reason}",
                record.intent.agent_id
            ),
            &cert_json(&record, false),
        );
        return Ok(ExitCode::SUCCESS);
    }
    let agent = args.agent.unwrap_or_default();
    if ca.store().agent(&agent)?.is_none() {
        return Err(Error::UnknownAgent(agent));
    }
    let now = now();
    let targets: Vec<CertificateRecord> = ca
        .store()
        .certificates(&CertificateFilter {
            agent_id: Some(agent.clone()),
        })?
        .into_iter()
        .filter(|c| c.revocation.is_none() && c.intent.not_after > now)
        .collect();
    let mut revoked = Vec::new();
    for c in &targets {
        match authority.revoke(&c.intent.serial, reason) {
            Ok(r) => revoked.push(r),
            // Revoked concurrently by someone else: the goal is reached.
            Err(Error::AlreadyRevoked(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let text = format!(
        "revoked {} certificate(s) of {agent}, reason {reason}{}",
        revoked.len(),
        revoked
            .iter()
            .map(|r| format!("\n  {}", r.intent.serial))
            .collect::<String>()
    );
    let docs: Vec<Value> = revoked.iter().map(|r| cert_json(r, false)).collect();
    print(out, &text, &json!({ "agent": agent, "revoked": docs }));
    Ok(ExitCode::SUCCESS)
}

fn cert(dir: &DataDir, out: OutputFormat, cmd: CertCommand) -> Result<ExitCode> {
    let ca = Ca::open(dir)?;
    match cmd {
        CertCommand::List {
            agent,
            status: want,
        } => {
            let certs = ca
                .store()
                .certificates(&CertificateFilter { agent_id: agent })?;
            let selected: Vec<&CertificateRecord> = certs
                .iter()
                .filter(|c| match want {
                    None => true,
                    Some(CertStatusFilter::Valid) => status(c) == "valid",
                    Some(CertStatusFilter::Revoked) => status(c) == "revoked",
                    Some(CertStatusFilter::Expired) => status(c) == "expired",
                })
                .collect();
            let mut text = String::new();
            for c in &selected {
                text.push_str(&format!(
                    "{}\t{}\t{}\t{}\n",
                    c.intent.serial,
                    status(c),
                    rfc3339(c.intent.not_after),
                    c.intent.agent_id
                ));
            }
            if selected.is_empty() {
                text.push_str("no certificates\n");
            }
            let docs: Vec<Value> = selected.iter().map(|c| cert_json(c, false)).collect();
            print(out, &text, &json!({ "certificates": docs }));
        }
        CertCommand::Show { serial } => {
            let serial = parse_serial(&serial)?;
            match ca.store().serial(&serial)? {
                Some(SerialEntry::Issued(c)) => {
                    let mut text = format!(
                        "serial:     {}\nagent:      {}\nstatus:     {}\nmethod:     {}\nnot before: {}\nnot after:  {}\nkey sha256: {}\n",
                        c.intent.serial,
                        c.intent.agent_id,
                        status(&c),
                        c.intent.method,
                        rfc3339(c.intent.not_before),
                        rfc3339(c.intent.not_after),
                        c.intent.key_sha256
                    );
                    if let Some(r) = c.revocation {
                        text.push_str(&format!(
                            "revoked:    {} ({})\n",
                            rfc3339(r.revoked_at),
                            r.reason
                        ));
                    }
                    text.push_str(&pem_cert(&c.der));
                    print(out, &text, &cert_json(&c, true));
                }
                Some(SerialEntry::Reserved(intent)) => {
                    return Err(Error::UnknownSerial(format!(
                        "{} (reserved for {} but no certificate was stored)",
                        intent.serial, intent.agent_id
                    )));
                }
                None => return Err(Error::UnknownSerial(serial.to_hex())),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn crl(
    dir: &DataDir,
    out: OutputFormat,
    passphrase_file: Option<&Path>,
    args: CrlArgs,
) -> Result<ExitCode> {
    let ca = Ca::open(dir)?;
    let protection = ca.protection(passphrase_file)?;
    let authority = ca.authority(&protection)?;
    let crl = agentca_core::crl::publish(&authority, now(), agentca_core::crl::DEFAULT_VALIDITY)?;
    let pem = pem_encode("X509 CRL", &crl.der);
    let doc = json!({
        "number": crl.number,
        "this_update": rfc3339(crl.this_update),
        "next_update": rfc3339(crl.next_update),
        "entries": crl.entries,
        "bytes": crl.der.len(),
    });
    let summary = format!(
        "CRL number {} with {} entries, valid until {}",
        crl.number,
        crl.entries,
        rfc3339(crl.next_update)
    );
    match &args.out {
        Some(path) => {
            let is_pem = path.extension().is_some_and(|e| e == "pem");
            AtomicFile::create(path)?.commit(if is_pem { pem.as_bytes() } else { &crl.der })?;
            print(out, &format!("{summary}\nwrote {}", path.display()), &doc);
        }
        None => {
            if out == OutputFormat::Text {
                eprintln!("{summary}");
            }
            let mut doc = doc;
            doc["pem"] = json!(pem);
            print(out, &pem, &doc);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn audit_verify(dir: &DataDir, out: OutputFormat) -> Result<ExitCode> {
    // Only the store is opened: opening the CA would open the audit log for appending, which
    // repairs a torn tail and refuses a damaged last line — verification must see the file as is.
    if !dir.config().exists() {
        return Err(Error::DataDir {
            path: dir.path().to_owned(),
            reason: "no CA here; run `agentca init --trust-domain DOMAIN` first".into(),
        });
    }
    let store = agentca_core::store::SledStore::open(&dir.store())?;
    let (report, rec) = reconcile::reconcile(&store, &dir.audit_log())?;
    let doc = json!({
        "intact": report.is_intact(),
        "entries": report.entries,
        "head": report.head,
        "broken": report.broken.as_ref().map(|b| json!({
            "line": b.line,
            "seq": b.seq,
            "reason": b.reason.to_string(),
        })),
        "clock_steps_back": report.clock_steps_back_total,
        "torn_tail_bytes": report.torn_tail_bytes,
        "reconciliation": rec,
        "consistent": rec.is_consistent(),
    });
    let mut text = report.to_string();
    if report.is_intact() {
        let lines = [
            (
                "issued per the audit log but missing from the store",
                &rec.issued_missing_from_store,
            ),
            (
                "revoked per the audit log but not in the store",
                &rec.revoked_missing_from_store,
            ),
            (
                "stored without an audit entry (in flight at a crash)",
                &rec.stored_without_audit,
            ),
            (
                "revoked without an audit entry (in flight at a crash)",
                &rec.revoked_without_audit,
            ),
            (
                "reserved serials without a certificate",
                &rec.orphaned_intents,
            ),
        ];
        for (what, serials) in lines {
            if !serials.is_empty() {
                text.push_str(&format!(
                    "\n{}: {what}: {}",
                    serials.len(),
                    serials.join(" ")
                ));
            }
        }
        if rec.is_consistent() {
            text.push_str(
                "\nstore and audit log agree on every acknowledged issuance and revocation",
            );
        }
    }
    print(out, &text, &doc);
    Ok(if report.is_intact() && rec.is_consistent() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn policy_name(ca: &Ca, a: &AgentRecord) -> String {
    SpiffeId::parse(&a.id)
        .ok()
        .and_then(|id| ca.policies().for_agent(&id, a.policy.as_deref()).ok())
        .map_or_else(|| "(none)".to_owned(), |p| p.name().to_owned())
}

fn agent_json(a: &AgentRecord, policy: &str) -> Value {
    json!({
        "id": a.id,
        "owner": a.owner,
        "policy": policy,
        "explicit_policy": a.policy,
        "dns": a.dns,
        "disabled": a.disabled,
        "created_at": rfc3339(a.created_at),
    })
}

fn status(c: &CertificateRecord) -> &'static str {
    if c.revocation.is_some() {
        "revoked"
    } else if c.intent.not_after <= now() {
        "expired"
    } else {
        "valid"
    }
}

fn cert_json(c: &CertificateRecord, with_pem: bool) -> Value {
    let mut doc = json!({
        "serial": c.intent.serial.to_hex(),
        "agent": c.intent.agent_id,
        "status": status(c),
        "method": c.intent.method.to_string(),
        "not_before": rfc3339(c.intent.not_before),
        "not_after": rfc3339(c.intent.not_after),
        "lifetime": format_duration(c.intent.not_after - c.intent.not_before - agentca_core::profile::BACKDATE),
        "key_sha256": c.intent.key_sha256,
        "revoked_at": c.revocation.map(|r| rfc3339(r.revoked_at)),
        "revocation_reason": c.revocation.map(|r| r.reason.name()),
    });
    if with_pem {
        doc["certificate_pem"] = json!(pem_cert(&c.der));
    }
    doc
}

fn parse_serial(s: &str) -> Result<Serial> {
    s.parse()
        .map_err(|e| Error::InvalidArgument(format!("serial {s:?}: {e}")))
}

fn pem_cert(der: &[u8]) -> String {
    pem_encode("CERTIFICATE", der)
}

/// PEM with LF line endings (the `pem` crate's default is CRLF).
fn pem_encode(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
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
