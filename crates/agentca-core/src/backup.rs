//! Backups of a CA's records, and restoring them into an empty store of either kind (the path
//! from one embedded store to a PostgreSQL database shared by several nodes, and back).
//!
//! # File format (version 1)
//!
//! UTF-8 text, one JSON document per line, each line ending in `\n`:
//!
//! 1. a header: `{"format":"agentca-backup","version":1,"agentca":…,"root_sha256":…,
//!    "created_at":…,"source":"sled"|"postgres","audit":{"seq":…,"hash":…}|null}` — the CA it
//!    belongs to (SHA-256 of its root certificate) and the audit log's last entry when the
//!    snapshot was taken;
//! 2. one line per record, `{"kind":…,"record":…}` ([`BackupRecord`]), kind by kind;
//! 3. a trailer: `{"end":{"records":N,"counts":{kind: n, …}},"sha256":…}`, where `sha256` is the
//!    SHA-256 (hex) of every byte before the trailer line.
//!
//! A reader refuses a file that does not start with the header, a version it does not know, a
//! missing or damaged trailer (truncation), a checksum or count mismatch, and a backup of
//! another CA, before it changes anything.
//!
//! # What a restore adds to the snapshot
//!
//! The snapshot is older than the CA's last acknowledged operations. The audit log in the data
//! directory (and the logs of other nodes, given with `--audit-log`) is replayed over it:
//! revocations, serials issued after the snapshot (reserved again, so never reused; their
//! certificates cannot come back because audit lines do not carry the DER), agents added or
//! disabled, EAB keys spent, ACME accounts deactivated or re-keyed. The CRL number restarts
//! above every number the snapshot, the audit logs (`crl.published`, and `crl.adopted` for
//! the CRLs another node signed) and any published CRL
//! files given show, plus a margin for numbers published where no log saw them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use agentca_store::{
    AcmeAccountStatus, AgentRecord, Backup, BackupRecord, CertificateRecord, CrlState,
    EnrollmentMethod, IssuanceIntent, PostgresStore, RecordCounts, Revocation, RevocationReason,
    Serial, SledStore, TokenKind,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::audit::{self, AuditLog, Entry};
use crate::ca::{self, CaConfig, DataDir, StoreKind, StoreLocation};
use crate::error::{Error, Result};
use crate::issuer::rfc3339;

/// The header's `format`.
pub const MAGIC: &str = "agentca-backup";
/// The format version this agentca writes and the only one it reads.
pub const VERSION: u64 = 1;

/// A restore moves the CRL number at least this far above the highest number it knows of, for
/// numbers published where no audit log it read saw them (another node, a lost log).
pub const CRL_NUMBER_MARGIN: u64 = 1_000_000;
/// And this much more per second since the backup: a node publishes at most about one CRL a
/// second (revocations are debounced), so this covers 16 nodes publishing flat out.
pub const CRL_NUMBERS_PER_SECOND: u64 = 16;

/// The header line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// [`MAGIC`].
    pub format: String,
    /// [`VERSION`].
    pub version: u64,
    /// The agentca version that wrote it.
    pub agentca: String,
    /// SHA-256 (hex) of the CA's root certificate.
    pub root_sha256: String,
    /// When the snapshot was taken.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The kind of store it was taken from.
    pub source: StoreKind,
    /// The data directory's last audit entry when the snapshot was taken.
    pub audit: Option<AuditPoint>,
}

/// One entry of an audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPoint {
    /// Its `seq`.
    pub seq: u64,
    /// Its `hash`.
    pub hash: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Trailer {
    end: End,
    sha256: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct End {
    records: u64,
    counts: BTreeMap<String, u64>,
}

/// What `backup` wrote.
#[derive(Clone, Debug, Serialize)]
pub struct BackupReport {
    /// The file.
    pub path: PathBuf,
    /// Its header.
    pub header: Header,
    /// Records per kind.
    pub counts: BTreeMap<String, u64>,
    /// Records in all.
    pub records: u64,
    /// SHA-256 of the file (hex).
    pub file_sha256: String,
}

/// A backup read and verified.
#[derive(Debug)]
pub struct BackupFile {
    /// Its header.
    pub header: Header,
    /// Its records, in file order.
    pub records: Vec<BackupRecord>,
    /// SHA-256 of the whole file (hex).
    pub file_sha256: String,
}

/// SHA-256 (hex) of the data directory's root certificate.
pub fn root_sha256(dir: &DataDir) -> Result<String> {
    let path = dir.file("root.pem");
    let text =
        std::fs::read(&path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    let root = pem::parse(&text).map_err(|e| Error::Der(format!("{}: {e}", path.display())))?;
    Ok(hex::encode(Sha256::digest(root.contents())))
}

fn read_config(dir: &DataDir) -> Result<CaConfig> {
    let path = dir.config();
    let text = std::fs::read_to_string(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::DataDir {
                path: dir.path().to_owned(),
                reason: "no CA here; run `agentca init --trust-domain DOMAIN` first".into(),
            }
        } else {
            Error::io(format!("read {}", path.display()), e)
        }
    })?;
    toml::from_str(&text).map_err(|e| Error::DataDir {
        path,
        reason: e.to_string(),
    })
}

/// The last entry of the audit log, if it has one. Read without opening the log for appending,
/// so a server may hold it meanwhile.
fn audit_point(path: &Path) -> Result<Option<AuditPoint>> {
    if !path.exists() {
        return Ok(None);
    }
    let mut last = None;
    audit::verify_each(path, |entry| {
        last = Some(AuditPoint {
            seq: entry.seq,
            hash: entry.hash.clone(),
        });
    })?;
    Ok(last)
}

fn is_sled_in_use(e: &agentca_store::StoreError) -> bool {
    e.to_string().contains("in use by another process")
}

fn open_sled(path: &Path) -> Result<SledStore> {
    SledStore::open(path).map_err(|e| {
        if is_sled_in_use(&e) {
            Error::DataDir {
                path: path.to_owned(),
                reason: "the embedded store is held by a running `agentca serve` (it allows one \
                         process); stop the server first"
                    .into(),
            }
        } else {
            e.into()
        }
    })
}

/// Writes a backup of the CA in `dir` (its store as `--store` names it) to `out`: a temporary
/// file beside it (mode 0600), fsync, rename, directory fsync.
pub fn backup(dir: &DataDir, out: &Path) -> Result<BackupReport> {
    let config = read_config(dir)?;
    let root = root_sha256(dir)?;
    // Checks that the store is the CA's (kind, and the database's CA) before reading it.
    drop(ca::open_store(dir)?);
    // Taken before the snapshot: every entry up to here describes a write the snapshot holds
    // (the store is written before the audit line), and a restore replays the rest.
    let point = audit_point(&dir.audit_log())?;
    let header = Header {
        format: MAGIC.into(),
        version: VERSION,
        agentca: env!("CARGO_PKG_VERSION").into(),
        root_sha256: root,
        created_at: OffsetDateTime::now_utc(),
        source: config.store,
        audit: point,
    };
    let store: Box<dyn Backup> = match dir.store_location() {
        StoreLocation::DataDir => Box::new(open_sled(&dir.store())?),
        StoreLocation::Sled(path) => Box::new(open_sled(path)?),
        StoreLocation::Postgres(url) => Box::new(PostgresStore::open(url)?),
    };
    let mut writer = AtomicWriter::create(out, 0o600)?;
    let mut line = serde_json::to_vec(&header).map_err(encode_error)?;
    line.push(b'\n');
    writer.write(&line)?;
    let mut counts = RecordCounts::default();
    store.export(&mut |record| {
        counts.add(&record);
        let mut line = serde_json::to_vec(&record)
            .map_err(|e| agentca_store::StoreError::Backend(format!("encode record: {e}")))?;
        line.push(b'\n');
        writer
            .write(&line)
            .map_err(|e| agentca_store::StoreError::Backend(e.to_string()))
    })?;
    let counts_map: BTreeMap<String, u64> = counts
        .iter()
        .map(|(kind, n)| (kind.to_owned(), n))
        .collect();
    let trailer = Trailer {
        end: End {
            records: counts.total(),
            counts: counts_map.clone(),
        },
        sha256: hex::encode(writer.digest.clone().finalize()),
    };
    let mut line = serde_json::to_vec(&trailer).map_err(encode_error)?;
    line.push(b'\n');
    writer.write(&line)?;
    let file_sha256 = writer.commit()?;
    Ok(BackupReport {
        path: out.to_owned(),
        header,
        counts: counts_map,
        records: counts.total(),
        file_sha256,
    })
}

fn encode_error(_: serde_json::Error) -> Error {
    Error::Unreachable("backup lines encode as JSON")
}

/// A file written under a temporary name and renamed into place once complete and durable.
struct AtomicWriter {
    path: PathBuf,
    tmp: PathBuf,
    file: std::io::BufWriter<File>,
    /// Over everything written so far.
    digest: Sha256,
    done: bool,
}

impl AtomicWriter {
    fn create(path: &Path, mode: u32) -> Result<Self> {
        let name = path
            .file_name()
            .ok_or_else(|| {
                Error::InvalidArgument(format!("--out {}: not a file name", path.display()))
            })?
            .to_string_lossy()
            .into_owned();
        let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
        Ok(Self {
            path: path.to_owned(),
            tmp,
            file: std::io::BufWriter::new(file),
            digest: Sha256::new(),
            done: false,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.digest.update(bytes);
        self.file
            .write_all(bytes)
            .map_err(|e| Error::io(format!("write {}", self.path.display()), e))
    }

    /// Makes the file durable under its name; returns the SHA-256 of its contents.
    fn commit(mut self) -> Result<String> {
        let io = |e| Error::io(format!("write {}", self.path.display()), e);
        self.file.flush().map_err(io)?;
        self.file.get_ref().sync_all().map_err(io)?;
        std::fs::rename(&self.tmp, &self.path).map_err(io)?;
        self.done = true;
        sync_parent(&self.path)?;
        Ok(hex::encode(self.digest.clone().finalize()))
    }
}

impl Drop for AtomicWriter {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

fn sync_parent(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("sync {}", dir.display()), e))
}

fn refused(path: &Path, why: impl Into<String>) -> Error {
    Error::InvalidArgument(format!(
        "{} is refused: {}; nothing was changed",
        path.display(),
        why.into()
    ))
}

/// Reads and verifies a backup: header, version, checksum, counts, and (when given) that it
/// belongs to the CA whose root certificate has SHA-256 `expected_root`.
pub fn read(path: &Path, expected_root: Option<&str>) -> Result<BackupFile> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    let file_sha256 = hex::encode(Sha256::digest(&bytes));
    let Some(header_end) = bytes.iter().position(|b| *b == b'\n') else {
        return Err(refused(path, "not an agentca backup (no header line)"));
    };
    let header: Value = serde_json::from_slice(&bytes[..header_end]).map_err(|_| {
        refused(
            path,
            "not an agentca backup (the first line is not its header)",
        )
    })?;
    if header.get("format").and_then(Value::as_str) != Some(MAGIC) {
        return Err(refused(path, "not an agentca backup"));
    }
    match header.get("version").and_then(Value::as_u64) {
        Some(VERSION) => {}
        Some(v) => {
            return Err(refused(
                path,
                format!(
                    "backup format version {v} is not one this agentca reads (it reads version \
                     {VERSION}); use the agentca that wrote it"
                ),
            ));
        }
        None => return Err(refused(path, "the header has no format version")),
    }
    let header: Header = serde_json::from_value(header)
        .map_err(|e| refused(path, format!("damaged header: {e}")))?;

    // The trailer is the last line; a file cut anywhere lacks it (or its newline).
    let truncated = || refused(path, "truncated or damaged: its end line is missing");
    if bytes.last() != Some(&b'\n') {
        return Err(truncated());
    }
    let body = &bytes[..bytes.len() - 1];
    let trailer_start = body.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if trailer_start <= header_end {
        return Err(truncated());
    }
    let trailer: Trailer =
        serde_json::from_slice(&body[trailer_start..]).map_err(|_| truncated())?;
    let sum = hex::encode(Sha256::digest(&bytes[..trailer_start]));
    if sum != trailer.sha256 {
        return Err(refused(
            path,
            "checksum mismatch: the file was damaged or edited",
        ));
    }
    if let Some(expected) = expected_root
        && header.root_sha256 != expected
    {
        return Err(refused(
            path,
            format!(
                "it is a backup of another CA (root certificate SHA-256 {}, this data \
                 directory's is {expected})",
                header.root_sha256
            ),
        ));
    }

    let mut records = Vec::new();
    let mut counts = RecordCounts::default();
    let mut lines: Vec<&[u8]> = bytes[header_end + 1..trailer_start]
        .split(|b| *b == b'\n')
        .collect();
    // Every line ends in a newline, so the split ends with an empty piece.
    lines.pop();
    for (i, line) in lines.into_iter().enumerate() {
        let record: BackupRecord = serde_json::from_slice(line)
            .map_err(|e| refused(path, format!("line {}: {e}", i + 2)))?;
        counts.add(&record);
        records.push(record);
    }
    let counted: BTreeMap<String, u64> = counts
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k.to_owned(), n))
        .collect();
    let declared: BTreeMap<String, u64> = trailer
        .end
        .counts
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    if counted != declared || counts.total() != trailer.end.records {
        return Err(refused(path, "its record counts do not match its end line"));
    }
    Ok(BackupFile {
        header,
        records,
        file_sha256,
    })
}

/// What `restore` may read besides the backup.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Audit logs of the CA's other nodes, replayed like the data directory's own.
    pub audit_logs: Vec<PathBuf>,
    /// CRLs the CA published (DER or PEM), whose numbers the new CRL number must exceed.
    pub published_crls: Vec<PathBuf>,
    /// Certificates issued after the snapshot (PEM or DER files, e.g. collected from their
    /// agents): each one whose SHA-256 matches its `cert.issued` audit line is restored.
    pub certificates: Vec<PathBuf>,
}

/// What `restore` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RestoreReport {
    /// The backup's header.
    pub backup_created_at: String,
    /// The store kind it was taken from.
    pub source: String,
    /// The store kind restored into.
    pub target: String,
    /// SHA-256 of the backup file.
    pub file_sha256: String,
    /// Records loaded per kind (after the replay).
    pub counts: BTreeMap<String, u64>,
    /// Audit entries read (all logs).
    pub audit_entries_read: u64,
    /// Entries of the data directory's log written after the snapshot, when the log continues
    /// the one the backup was taken with.
    pub audit_entries_after_backup: Option<u64>,
    /// Revocations the snapshot lacked, applied from the audit logs.
    pub revocations_replayed: Vec<String>,
    /// Serials issued after the snapshot, reserved again (never reused) but without their
    /// certificate: their `cert.issued` lines were written by a version that logged only the
    /// certificate's hash, and no file given held it. They answer OCSP `unknown`.
    pub certificates_not_restorable: Vec<String>,
    /// Certificates issued after the snapshot and restored, from their `cert.issued` lines
    /// or from the files given.
    pub certificates_restored: Vec<String>,
    /// Revocations of such certificates: recorded in the audit log and reported here, but the
    /// store cannot list them on CRLs without the certificate.
    pub revocations_not_restorable: Vec<String>,
    /// Keys blocked because a replayed revocation was for keyCompromise.
    pub keys_blocked: u64,
    /// Agents added or disabled after the snapshot, applied.
    pub agents_replayed: u64,
    /// One-time tokens marked used (spent after the snapshot, or possibly spent).
    pub tokens_marked_used: Vec<String>,
    /// ACME accounts deactivated (after the snapshot, or re-keyed with a key the log lacks).
    pub accounts_deactivated: Vec<String>,
    /// The highest CRL number known from the snapshot, the logs and the CRL files.
    pub crl_number_known: u64,
    /// The CRL number the store now holds as its last; the next CRL gets a higher one.
    pub crl_number: u64,
    /// Whether `config.toml` was changed to the target's store kind.
    pub config_updated: bool,
    /// Things the operator should know.
    pub warnings: Vec<String>,
}

/// What the audit logs say happened, folded for replay.
#[derive(Default)]
struct Replay {
    issued: BTreeMap<Serial, IssuanceIntent>,
    /// The `cert_sha256` and time of each `cert.issued` line.
    issued_sha256: BTreeMap<Serial, String>,
    /// The certificate of each `cert.issued` line that carries it.
    issued_der: BTreeMap<Serial, Vec<u8>>,
    issued_at: BTreeMap<Serial, OffsetDateTime>,
    revoked: BTreeMap<Serial, Revocation>,
    agents_added: BTreeMap<String, AgentRecord>,
    agents_disabled: BTreeSet<String>,
    eab_spent: BTreeMap<String, OffsetDateTime>,
    /// SCEP issuances by agent (when, which serial): a challenge of that agent created before
    /// one may have paid for it, since the log does not name the challenge.
    scep_issued: BTreeMap<String, Vec<(OffsetDateTime, Serial)>>,
    accounts_deactivated: BTreeSet<String>,
    /// The last key each re-keyed account moved to (its thumbprint; the log lacks the JWK).
    accounts_rekeyed: BTreeMap<String, String>,
    crl_number: u64,
    crl_this_update: Option<OffsetDateTime>,
    entries: u64,
}

fn field<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    fields.get(name).and_then(Value::as_str)
}

fn time_field(fields: &Map<String, Value>, name: &str) -> Option<OffsetDateTime> {
    field(fields, name)
        .and_then(|s| OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok())
}

impl Replay {
    fn visit(&mut self, entry: &Entry) {
        self.entries += 1;
        let f = &entry.fields;
        match entry.event.as_str() {
            "cert.issued" => {
                let intent = (|| {
                    Some(IssuanceIntent {
                        serial: field(f, "serial")?.parse().ok()?,
                        agent_id: field(f, "agent")?.to_owned(),
                        method: serde_json::from_value::<EnrollmentMethod>(
                            f.get("method")?.clone(),
                        )
                        .ok()?,
                        not_before: time_field(f, "not_before")?,
                        not_after: time_field(f, "not_after")?,
                        key_sha256: field(f, "key_sha256")?.to_owned(),
                        reserved_at: entry.time,
                    })
                })();
                if let Some(intent) = intent {
                    if intent.method == EnrollmentMethod::Scep {
                        self.scep_issued
                            .entry(intent.agent_id.clone())
                            .or_default()
                            .push((entry.time, intent.serial));
                    }
                    if let Some(sum) = field(f, "cert_sha256") {
                        self.issued_sha256
                            .entry(intent.serial)
                            .or_insert_with(|| sum.to_owned());
                    }
                    if let Some(der) = audit::issued_certificate(f) {
                        self.issued_der.entry(intent.serial).or_insert(der);
                    }
                    self.issued_at.entry(intent.serial).or_insert(entry.time);
                    self.issued.entry(intent.serial).or_insert(intent);
                }
            }
            "cert.revoked" => {
                let revocation = (|| {
                    Some((
                        field(f, "serial")?.parse::<Serial>().ok()?,
                        Revocation {
                            revoked_at: time_field(f, "revoked_at").unwrap_or(entry.time),
                            reason: field(f, "reason")?.parse::<RevocationReason>().ok()?,
                        },
                    ))
                })();
                if let Some((serial, revocation)) = revocation {
                    // The first revocation stands, as in the store.
                    self.revoked.entry(serial).or_insert(revocation);
                }
            }
            "agent.added" => {
                if let Some(id) = field(f, "id") {
                    let agent = AgentRecord {
                        id: id.to_owned(),
                        owner: field(f, "owner").map(str::to_owned),
                        policy: field(f, "explicit_policy").map(str::to_owned),
                        dns: f
                            .get("dns")
                            .and_then(Value::as_array)
                            .map(|a| {
                                a.iter()
                                    .filter_map(Value::as_str)
                                    .map(str::to_owned)
                                    .collect()
                            })
                            .unwrap_or_default(),
                        disabled: false,
                        created_at: time_field(f, "created_at").unwrap_or(entry.time),
                        early_renewal: None,
                    };
                    self.agents_added.entry(agent.id.clone()).or_insert(agent);
                }
            }
            "agent.disabled" => {
                if let Some(id) = field(f, "agent") {
                    self.agents_disabled.insert(id.to_owned());
                }
            }
            "acme.account.created" => {
                if let Some(kid) = field(f, "eab_kid") {
                    self.eab_spent.entry(kid.to_owned()).or_insert(entry.time);
                }
            }
            "acme.account.deactivated" => {
                if let Some(id) = field(f, "account") {
                    self.accounts_deactivated.insert(id.to_owned());
                }
            }
            "acme.account.key-changed" => {
                if let (Some(id), Some(new)) = (field(f, "account"), field(f, "new_thumbprint")) {
                    self.accounts_rekeyed.insert(id.to_owned(), new.to_owned());
                }
            }
            // A CRL another node signed and this node served counts as published here too:
            // its number was seen by relying parties whichever log the signer's is.
            "crl.published" | "crl.adopted" => {
                if let Some(n) = f.get("number").and_then(Value::as_u64) {
                    self.crl_number = self.crl_number.max(n);
                }
                if let Some(t) = time_field(f, "this_update") {
                    self.crl_this_update = Some(self.crl_this_update.map_or(t, |p| p.max(t)));
                }
            }
            _ => {}
        }
    }
}

/// Reads one audit log into `replay`; a broken chain refuses the restore (what is after the
/// break cannot be trusted, and what it hides could be a revocation).
fn replay_log(path: &Path, replay: &mut Replay) -> Result<Vec<AuditPoint>> {
    let mut seen = Vec::new();
    let report = audit::verify_each(path, |entry| {
        replay.visit(entry);
        seen.push(AuditPoint {
            seq: entry.seq,
            hash: entry.hash.clone(),
        });
    })?;
    report.ensure_intact().map_err(|e| {
        Error::Audit(format!(
            "the audit log {} is damaged ({e}); a restore replays it and cannot trust it; \
             nothing was changed",
            path.display()
        ))
    })?;
    Ok(seen)
}

/// The CRL number and `thisUpdate` of a CRL file (DER or PEM) of this CA's issuing CA.
fn published_crl(path: &Path, issuing_der: &[u8]) -> Result<(u64, OffsetDateTime)> {
    use x509_parser::prelude::FromDer;
    let bytes =
        std::fs::read(path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    let der = match pem::parse(&bytes) {
        Ok(p) if p.tag() == "X509 CRL" => p.into_contents(),
        _ => bytes,
    };
    let bad =
        |why: &str| Error::InvalidArgument(format!("--published-crl {}: {why}", path.display()));
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(&der)
        .map_err(|_| bad("not a CRL (DER or PEM)"))?;
    let (_, issuing) = x509_parser::certificate::X509Certificate::from_der(issuing_der)
        .map_err(|_| bad("cannot read issuing.pem"))?;
    if crl.issuer().as_raw() != issuing.subject().as_raw() {
        return Err(bad("not issued by this CA's issuing CA"));
    }
    let number = crate::crl::number_of(&crl).map_err(bad)?;
    let this_update = crl.last_update().to_datetime();
    Ok((number, this_update))
}

/// Every certificate in a PEM file (any number of `CERTIFICATE` blocks) or one DER file.
fn certificates_in(path: &Path) -> Result<Vec<Vec<u8>>> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    if let Ok(blocks) = pem::parse_many(&bytes)
        && !blocks.is_empty()
    {
        return Ok(blocks
            .into_iter()
            .filter(|b| b.tag() == "CERTIFICATE")
            .map(pem::Pem::into_contents)
            .collect());
    }
    Ok(vec![bytes])
}

/// The serial of an agentca certificate, or `None` for anything else (a CA certificate of a
/// chain file, garbage).
fn leaf_serial(der: &[u8]) -> Option<Serial> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    if cert.is_ca() {
        return None;
    }
    let bytes: [u8; Serial::LEN] = cert.raw_serial().try_into().ok()?;
    Serial::from_bytes(bytes)
}

fn issuing_der(dir: &DataDir) -> Result<Vec<u8>> {
    let path = dir.file("issuing.pem");
    let text =
        std::fs::read(&path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    Ok(pem::parse(&text)
        .map_err(|e| Error::Der(format!("{}: {e}", path.display())))?
        .into_contents())
}

/// The restore target, checked and ready to load.
enum Target {
    /// An embedded store loaded into `staging` and moved to `path` when complete.
    Sled {
        path: PathBuf,
        staging: PathBuf,
        store: Option<Box<SledStore>>,
    },
    Postgres(PostgresStore),
}

impl Target {
    fn open(dir: &DataDir) -> Result<Self> {
        let path = match dir.store_location() {
            StoreLocation::Postgres(url) => {
                let pg = PostgresStore::open(url)?;
                let root = root_sha256(dir)?;
                if let Some(owner) = pg.ca_identity()?
                    && owner != root
                {
                    return Err(Error::DataDir {
                        path: dir.path().to_owned(),
                        reason: format!(
                            "the database at {} serves another CA (root SHA-256 {owner}); \
                             nothing was changed",
                            pg.target()
                        ),
                    });
                }
                if !Backup::is_empty(&pg)? {
                    return Err(Error::DataDir {
                        path: dir.path().to_owned(),
                        reason: format!(
                            "the database at {} already holds records; restore into an empty \
                             database; nothing was changed",
                            pg.target()
                        ),
                    });
                }
                return Ok(Self::Postgres(pg));
            }
            StoreLocation::DataDir => dir.store(),
            StoreLocation::Sled(path) => path.clone(),
        };
        if path.exists() {
            let existing = open_sled(&path)?;
            if !Backup::is_empty(&existing)? {
                return Err(Error::DataDir {
                    path: path.clone(),
                    reason: "the store already holds records; a restore needs an empty store \
                             (move this directory aside, or give --store a new directory); \
                             nothing was changed"
                        .into(),
                });
            }
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "store".into());
        let staging = path.with_file_name(format!(".{name}.restoring-{}", std::process::id()));
        if let Some(parent) = staging.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("create {}", parent.display()), e))?;
        }
        std::fs::create_dir(&staging)
            .map_err(|e| Error::io(format!("create {}", staging.display()), e))?;
        let store = match SledStore::open(&staging) {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(e.into());
            }
        };
        Ok(Self::Sled {
            path,
            staging,
            store: Some(Box::new(store)),
        })
    }

    fn kind(&self) -> StoreKind {
        match self {
            Self::Sled { .. } => StoreKind::Sled,
            Self::Postgres(_) => StoreKind::Postgres,
        }
    }

    fn store(&self) -> Result<&dyn Backup> {
        match self {
            Self::Sled { store: Some(s), .. } => Ok(s.as_ref()),
            Self::Sled { store: None, .. } => Err(Error::Unreachable("staging store closed")),
            Self::Postgres(pg) => Ok(pg),
        }
    }

    /// Puts the loaded store in place.
    fn finish(mut self, root: &str) -> Result<()> {
        match &mut self {
            Self::Postgres(pg) => {
                pg.claim_for_ca(root)?;
                Ok(())
            }
            Self::Sled {
                path,
                staging,
                store,
            } => {
                // Closed (and its lock released) before it moves.
                drop(store.take());
                if path.exists() {
                    // Checked empty when opened: an embedded store with no records.
                    std::fs::remove_dir_all(&*path)
                        .map_err(|e| Error::io(format!("replace {}", path.display()), e))?;
                }
                std::fs::rename(&*staging, &*path).map_err(|e| {
                    Error::io(format!("move the restored store to {}", path.display()), e)
                })?;
                // Nothing left to clean up.
                *staging = PathBuf::new();
                sync_parent(path)
            }
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Self::Sled { staging, store, .. } = self {
            drop(store.take());
            if !staging.as_os_str().is_empty() {
                let _ = std::fs::remove_dir_all(&*staging);
            }
        }
    }
}

/// Restores `file` into the empty store `dir` names, replays the audit logs over it, raises
/// the CRL number, records the kind of store in `config.toml` and audits `store.restored`.
/// Every check runs before anything is written; the server must be stopped.
pub fn restore(dir: &DataDir, file: &Path, options: &RestoreOptions) -> Result<RestoreReport> {
    let mut config = read_config(dir)?;
    let root = root_sha256(dir)?;
    let backup = read(file, Some(&root))?;
    // Held to the end: no other process appends while the log is replayed and extended.
    let audit_log = AuditLog::open(&dir.audit_log())?;

    let mut replay = Replay::default();
    let mut report = RestoreReport {
        backup_created_at: rfc3339(backup.header.created_at),
        source: kind_name(backup.header.source).into(),
        file_sha256: backup.file_sha256.clone(),
        ..RestoreReport::default()
    };
    let own = replay_log(&dir.audit_log(), &mut replay)?;
    let continues = match &backup.header.audit {
        None => true,
        Some(point) => own
            .iter()
            .any(|e| e.seq == point.seq && e.hash == point.hash),
    };
    if continues {
        let after = backup.header.audit.as_ref().map_or(0, |p| p.seq);
        report.audit_entries_after_backup =
            Some(own.iter().filter(|e| e.seq > after).count() as u64);
    } else {
        report.warnings.push(format!(
            "the audit log {} does not contain the entry the backup was taken at: events after \
             the snapshot may be missing, so every unused one-time token is restored as used",
            dir.audit_log().display()
        ));
    }
    for log in &options.audit_logs {
        replay_log(log, &mut replay)?;
    }
    report.audit_entries_read = replay.entries;

    let issuing = issuing_der(dir)?;
    let mut known_crl = replay.crl_number;
    let mut this_update = replay.crl_this_update;
    for crl in &options.published_crls {
        let (number, t) = published_crl(crl, &issuing)?;
        known_crl = known_crl.max(number);
        this_update = Some(this_update.map_or(t, |p| p.max(t)));
    }

    let target = Target::open(dir)?;
    let target_kind = target.kind();
    report.target = kind_name(target_kind).into();

    let now = OffsetDateTime::now_utc();
    let mut records = backup.records;
    let mut supplied = BTreeMap::new();
    for path in &options.certificates {
        for der in certificates_in(path)? {
            if let Some(serial) = leaf_serial(&der) {
                supplied.insert(serial, der);
            }
        }
    }
    apply(
        &mut records,
        &replay,
        &supplied,
        continues,
        now,
        &mut report,
    );

    // CRL number: above every number anyone may have seen, with the margin.
    let snapshot_crl = records.iter().find_map(|r| match r {
        BackupRecord::CrlState(s) => Some(*s),
        _ => None,
    });
    if let Some(s) = snapshot_crl {
        known_crl = known_crl.max(s.number);
        this_update = Some(this_update.map_or(s.this_update, |p| p.max(s.this_update)));
    }
    let elapsed = u64::try_from((now - backup.header.created_at).whole_seconds()).unwrap_or(0);
    let number = known_crl
        .saturating_add(CRL_NUMBER_MARGIN)
        .saturating_add(elapsed.saturating_mul(CRL_NUMBERS_PER_SECOND));
    records.retain(|r| !matches!(r, BackupRecord::CrlState(_)));
    records.push(BackupRecord::CrlState(CrlState {
        number,
        this_update: this_update.unwrap_or(now),
    }));
    report.crl_number_known = known_crl;
    report.crl_number = number;

    let counts = target.store()?.import(&mut records.into_iter())?;
    report.counts = counts
        .iter()
        .map(|(kind, n)| (kind.to_owned(), n))
        .collect();
    target.finish(&root)?;

    // After the store is in place: until then the CA keeps refusing the new store's kind.
    if config.store != target_kind {
        config.store = target_kind;
        write_config(dir, &config)?;
        report.config_updated = true;
    }
    if !report.revocations_not_restorable.is_empty() {
        report.warnings.push(format!(
            "{} revocation(s) of certificates issued after the snapshot cannot be put on CRLs \
             (the certificates are not in the backup); their serials answer OCSP `unknown`",
            report.revocations_not_restorable.len()
        ));
    }

    audit_log.append_durable(
        "store.restored",
        json!({
            "backup_sha256": report.file_sha256,
            "backup_created_at": report.backup_created_at,
            "source": report.source,
            "target": report.target,
            "records": report.counts,
            "audit_entries_read": report.audit_entries_read,
            "revocations_replayed": report.revocations_replayed,
            "certificates_restored": report.certificates_restored,
            "certificates_not_restorable": report.certificates_not_restorable,
            "revocations_not_restorable": report.revocations_not_restorable,
            "tokens_marked_used": report.tokens_marked_used,
            "accounts_deactivated": report.accounts_deactivated,
            "crl_number": report.crl_number,
        }),
    )?;
    Ok(report)
}

fn kind_name(kind: StoreKind) -> &'static str {
    match kind {
        StoreKind::Sled => "sled",
        StoreKind::Postgres => "postgres",
    }
}

fn write_config(dir: &DataDir, config: &CaConfig) -> Result<()> {
    let text = toml::to_string(config).map_err(|_| Error::Unreachable("config encodes as TOML"))?;
    // As `init` wrote it: the configuration holds no secret.
    let mut writer = AtomicWriter::create(&dir.config(), 0o644)?;
    writer.write(text.as_bytes())?;
    writer.commit().map(drop)
}

/// Folds the replay into the snapshot's records.
fn apply(
    records: &mut Vec<BackupRecord>,
    replay: &Replay,
    supplied: &BTreeMap<Serial, Vec<u8>>,
    log_continues: bool,
    now: OffsetDateTime,
    report: &mut RestoreReport,
) {
    let mut serials: BTreeMap<Serial, usize> = BTreeMap::new();
    let mut agents: BTreeSet<String> = BTreeSet::new();
    let mut blocked: BTreeSet<String> = BTreeSet::new();
    for (i, r) in records.iter().enumerate() {
        match r {
            BackupRecord::Reservation(intent) => {
                serials.insert(intent.serial, i);
            }
            BackupRecord::Certificate { certificate, .. } => {
                serials.insert(certificate.intent.serial, i);
            }
            BackupRecord::Agent(a) => {
                agents.insert(a.id.clone());
            }
            BackupRecord::BlockedKey { key_sha256 } => {
                blocked.insert(key_sha256.clone());
            }
            _ => {}
        }
    }
    let certified: BTreeSet<Serial> = records
        .iter()
        .filter_map(|r| match r {
            BackupRecord::Certificate { certificate, .. } => Some(certificate.intent.serial),
            _ => None,
        })
        .collect();
    let mut extra = Vec::new();

    for (serial, intent) in &replay.issued {
        let at = serials.get(serial).copied();
        if let Some(i) = at
            && matches!(records[i], BackupRecord::Certificate { .. })
        {
            continue;
        }
        // The certificate its line carries, or one the operator supplied for a line written
        // before lines carried it; either way the very one the log recorded.
        let candidate = replay
            .issued_der
            .get(serial)
            .or_else(|| supplied.get(serial));
        let restored = candidate.and_then(|der| {
            let sum = hex::encode(Sha256::digest(der));
            (replay.issued_sha256.get(serial) == Some(&sum)).then(|| {
                BackupRecord::certificate(CertificateRecord {
                    intent: intent.clone(),
                    der: der.clone(),
                    issued_at: replay
                        .issued_at
                        .get(serial)
                        .copied()
                        .unwrap_or(intent.reserved_at),
                    revocation: None,
                })
            })
        });
        let record = match restored {
            Some(record) => {
                report.certificates_restored.push(serial.to_hex());
                record
            }
            None => {
                report.certificates_not_restorable.push(serial.to_hex());
                BackupRecord::Reservation(intent.clone())
            }
        };
        match at {
            Some(i) => records[i] = record,
            None => {
                serials.insert(*serial, records.len());
                records.push(record);
            }
        }
    }
    for serial in supplied.keys() {
        if !report.certificates_restored.contains(&serial.to_hex()) {
            report.warnings.push(format!(
                "certificate {serial} was given but is not one the audit logs record as issued \
                 after the snapshot (or its SHA-256 differs): ignored"
            ));
        }
    }
    for (serial, revocation) in &replay.revoked {
        let key = match serials.get(serial).map(|i| &mut records[*i]) {
            Some(BackupRecord::Certificate { certificate, .. }) => {
                if certificate.revocation.is_none() {
                    certificate.revocation = Some(*revocation);
                    report.revocations_replayed.push(serial.to_hex());
                }
                Some(certificate.intent.key_sha256.clone())
            }
            _ => {
                report.revocations_not_restorable.push(serial.to_hex());
                replay.issued.get(serial).map(|i| i.key_sha256.clone())
            }
        };
        if revocation.reason == RevocationReason::KeyCompromise
            && let Some(key) = key
            && key.len() == 64
            && blocked.insert(key.clone())
        {
            report.keys_blocked += 1;
            extra.push(BackupRecord::BlockedKey { key_sha256: key });
        }
    }
    for (id, agent) in &replay.agents_added {
        if agents.insert(id.clone()) {
            let mut agent = agent.clone();
            agent.disabled = replay.agents_disabled.contains(id);
            report.agents_replayed += 1;
            extra.push(BackupRecord::Agent(agent));
        }
    }

    for record in records.iter_mut() {
        match record {
            BackupRecord::Agent(agent)
                if !agent.disabled && replay.agents_disabled.contains(&agent.id) =>
            {
                agent.disabled = true;
                report.agents_replayed += 1;
            }
            BackupRecord::Token(token) if token.consumed_at.is_none() => {
                let spent = match token.kind {
                    TokenKind::Acme => replay.eab_spent.get(&token.id).copied(),
                    // Only issuances the snapshot lacks: one it holds was paid for before it.
                    TokenKind::Scep => replay.scep_issued.get(&token.agent_id).and_then(|issued| {
                        issued
                            .iter()
                            .filter(|(t, serial)| {
                                *t >= token.created_at && !certified.contains(serial)
                            })
                            .map(|(t, _)| *t)
                            .min()
                    }),
                    _ => None,
                };
                let spent = spent.or((!log_continues).then_some(now));
                if let Some(at) = spent {
                    token.consumed_at = Some(at);
                    report.tokens_marked_used.push(token.id.clone());
                }
            }
            BackupRecord::AcmeAccount(account) => {
                let stale_key = replay
                    .accounts_rekeyed
                    .get(&account.id)
                    .is_some_and(|new| *new != account.thumbprint);
                if account.status == AcmeAccountStatus::Valid
                    && (replay.accounts_deactivated.contains(&account.id) || stale_key)
                {
                    account.status = AcmeAccountStatus::Deactivated;
                    report.accounts_deactivated.push(account.id.clone());
                }
            }
            _ => {}
        }
    }
    records.extend(extra);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use agentca_store::{AcmeAccount, TokenRecord};
    use time::Duration;

    use super::*;

    const A: &str = "spiffe://example.org/agent/a";
    const B: &str = "spiffe://example.org/agent/b";

    fn t(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + secs).unwrap()
    }

    fn serial(n: u8) -> Serial {
        let mut bytes = [0x22u8; Serial::LEN];
        bytes[15] = n;
        Serial::from_bytes(bytes).unwrap()
    }

    fn intent(n: u8, agent: &str) -> IssuanceIntent {
        IssuanceIntent {
            serial: serial(n),
            agent_id: agent.into(),
            method: EnrollmentMethod::Scep,
            not_before: t(0),
            not_after: t(0) + Duration::hours(24),
            key_sha256: format!("{n:02x}").repeat(32),
            reserved_at: t(0),
        }
    }

    fn entry(seq: u64, at: OffsetDateTime, event: &str, fields: Value) -> Entry {
        let Value::Object(fields) = fields else {
            panic!("fields must be an object")
        };
        Entry {
            seq,
            time: at,
            event: event.into(),
            fields,
            prev: String::new(),
            hash: String::new(),
        }
    }

    fn issued(seq: u64, n: u8, agent: &str) -> Entry {
        let i = intent(n, agent);
        entry(
            seq,
            t(100 + seq as i64),
            "cert.issued",
            json!({
                "serial": i.serial.to_hex(),
                "agent": agent,
                "method": "scep",
                "not_before": rfc3339(i.not_before),
                "not_after": rfc3339(i.not_after),
                "key_sha256": i.key_sha256,
            }),
        )
    }

    fn token(id: &str, kind: TokenKind, agent: &str) -> BackupRecord {
        BackupRecord::Token(TokenRecord {
            id: id.into(),
            kind,
            agent_id: agent.into(),
            verifier: "00".into(),
            expires_at: t(10_000),
            created_at: t(10),
            consumed_at: None,
        })
    }

    fn account(id: &str, thumbprint: &str) -> BackupRecord {
        BackupRecord::AcmeAccount(AcmeAccount {
            id: id.into(),
            jwk: "{}".into(),
            thumbprint: thumbprint.into(),
            agent_id: A.into(),
            eab_kid: format!("kid-{id}"),
            contact: vec![],
            status: AcmeAccountStatus::Valid,
            created_at: t(0),
        })
    }

    fn snapshot() -> Vec<BackupRecord> {
        vec![
            BackupRecord::Agent(AgentRecord {
                id: A.into(),
                owner: None,
                policy: None,
                dns: vec![],
                disabled: false,
                created_at: t(0),
                early_renewal: None,
            }),
            BackupRecord::certificate(CertificateRecord {
                intent: intent(1, A),
                der: vec![0x30, 0x00],
                issued_at: t(0),
                revocation: None,
            }),
            BackupRecord::certificate(CertificateRecord {
                intent: intent(2, B),
                der: vec![0x30, 0x00],
                issued_at: t(0),
                revocation: None,
            }),
            token("scep-a", TokenKind::Scep, A),
            token("scep-b", TokenKind::Scep, B),
            token("eab", TokenKind::Acme, A),
            token("idle", TokenKind::Acme, B),
            account("rekeyed", "old"),
            account("current", "new"),
            account("quit", "q"),
        ]
    }

    fn log() -> Replay {
        let mut replay = Replay::default();
        for e in [
            // In the snapshot already: B's SCEP certificate does not spend B's challenge.
            issued(1, 2, B),
            entry(
                2,
                t(200),
                "cert.revoked",
                json!({"serial": serial(1).to_hex(), "reason": "keyCompromise",
                       "revoked_at": rfc3339(t(200))}),
            ),
            // After the snapshot: A's SCEP certificate, then its revocation.
            issued(3, 3, A),
            entry(
                4,
                t(210),
                "cert.revoked",
                json!({"serial": serial(3).to_hex(), "reason": "superseded"}),
            ),
            entry(5, t(220), "acme.account.created", json!({"eab_kid": "eab"})),
            entry(
                6,
                t(230),
                "acme.account.key-changed",
                json!({"account": "rekeyed", "new_thumbprint": "newer"}),
            ),
            entry(
                7,
                t(231),
                "acme.account.key-changed",
                json!({"account": "current", "new_thumbprint": "new"}),
            ),
            entry(
                8,
                t(240),
                "acme.account.deactivated",
                json!({"account": "quit"}),
            ),
            entry(
                9,
                t(250),
                "agent.added",
                json!({"id": B, "owner": "ops", "explicit_policy": null, "dns": ["b.example.org"],
                       "disabled": false, "created_at": rfc3339(t(250))}),
            ),
            entry(10, t(260), "agent.disabled", json!({"agent": A})),
            entry(
                11,
                t(270),
                "crl.published",
                json!({"number": 41, "this_update": rfc3339(t(270))}),
            ),
            entry(12, t(280), "crl.published", json!({"number": 40})),
            entry(13, t(285), "crl.adopted", json!({"number": 43})),
        ] {
            replay.visit(&e);
        }
        replay
    }

    fn find(records: &[BackupRecord], pick: impl Fn(&BackupRecord) -> bool) -> &BackupRecord {
        records.iter().find(|r| pick(r)).unwrap()
    }

    fn token_used(records: &[BackupRecord], id: &str) -> bool {
        records
            .iter()
            .any(|r| matches!(r, BackupRecord::Token(t) if t.id == id && t.consumed_at.is_some()))
    }

    fn account_status(records: &[BackupRecord], id: &str) -> AcmeAccountStatus {
        match find(
            records,
            |r| matches!(r, BackupRecord::AcmeAccount(a) if a.id == id),
        ) {
            BackupRecord::AcmeAccount(a) => a.status,
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_audit_log_is_folded_into_the_snapshot() {
        let replay = log();
        assert_eq!(replay.crl_number, 43);
        let mut records = snapshot();
        let mut report = RestoreReport::default();
        apply(
            &mut records,
            &replay,
            &BTreeMap::new(),
            true,
            t(1000),
            &mut report,
        );

        assert_eq!(report.revocations_replayed, [serial(1).to_hex()]);
        assert!(matches!(
            find(&records, |r| matches!(r, BackupRecord::Certificate { certificate, .. }
                if certificate.intent.serial == serial(1))),
            BackupRecord::Certificate { certificate, .. }
                if certificate.revocation.is_some_and(|r| r.reason == RevocationReason::KeyCompromise)
        ));
        assert!(records.contains(&BackupRecord::BlockedKey {
            key_sha256: "01".repeat(32)
        }));
        // Issued after the snapshot: reserved, and its revocation reported.
        assert!(records.contains(&BackupRecord::Reservation(IssuanceIntent {
            reserved_at: t(103),
            ..intent(3, A)
        })));
        assert_eq!(report.certificates_not_restorable, [serial(3).to_hex()]);
        assert_eq!(report.revocations_not_restorable, [serial(3).to_hex()]);

        assert!(
            token_used(&records, "scep-a"),
            "spent by the later SCEP issuance"
        );
        assert!(
            !token_used(&records, "scep-b"),
            "its agent's SCEP issuance is in the snapshot"
        );
        assert!(token_used(&records, "eab"));
        assert!(!token_used(&records, "idle"));
        assert_eq!(
            account_status(&records, "rekeyed"),
            AcmeAccountStatus::Deactivated
        );
        assert_eq!(
            account_status(&records, "current"),
            AcmeAccountStatus::Valid
        );
        assert_eq!(
            account_status(&records, "quit"),
            AcmeAccountStatus::Deactivated
        );
        assert!(
            records
                .iter()
                .any(|r| matches!(r, BackupRecord::Agent(a) if a.id == A && a.disabled))
        );
        assert!(records.iter().any(|r| matches!(r, BackupRecord::Agent(a)
            if a.id == B && !a.disabled && a.dns == ["b.example.org"])));
    }

    #[test]
    fn without_the_backups_point_in_the_log_every_unused_token_is_spent() {
        let mut records = snapshot();
        let mut report = RestoreReport::default();
        apply(
            &mut records,
            &Replay::default(),
            &BTreeMap::new(),
            false,
            t(1000),
            &mut report,
        );
        for id in ["scep-a", "scep-b", "eab", "idle"] {
            assert!(token_used(&records, id), "{id}");
        }
    }

    #[test]
    fn a_supplied_certificate_comes_back_only_if_its_hash_matches() {
        let mut replay = log();
        let der = vec![0x30, 0x03, 0x02, 0x01, 0x03];
        replay
            .issued_sha256
            .insert(serial(3), hex::encode(Sha256::digest(&der)));
        let mut wrong = BTreeMap::new();
        wrong.insert(serial(3), vec![0x30, 0x00]);
        let mut records = snapshot();
        let mut report = RestoreReport::default();
        apply(&mut records, &replay, &wrong, true, t(1000), &mut report);
        assert!(report.certificates_restored.is_empty());
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);

        let mut right = BTreeMap::new();
        right.insert(serial(3), der.clone());
        let mut records = snapshot();
        let mut report = RestoreReport::default();
        apply(&mut records, &replay, &right, true, t(1000), &mut report);
        assert_eq!(report.certificates_restored, [serial(3).to_hex()]);
        assert!(report.revocations_not_restorable.is_empty());
        assert!(records.iter().any(
            |r| matches!(r, BackupRecord::Certificate { certificate, der: hex_der }
            if certificate.intent.serial == serial(3)
                && certificate.revocation.is_some()
                && *hex_der == hex::encode(&der))
        ));
    }

    #[test]
    fn a_certificate_comes_back_from_the_line_that_carries_it() {
        let der = vec![0x30, 0x03, 0x02, 0x01, 0x03];
        let mut line = issued(3, 3, A);
        for (name, value) in audit::issued_certificate_fields(&der) {
            line.fields.insert(name.into(), value);
        }
        let mut replay = log();
        replay.visit(&line);
        let mut records = snapshot();
        let mut report = RestoreReport::default();
        apply(
            &mut records,
            &replay,
            &BTreeMap::new(),
            true,
            t(1000),
            &mut report,
        );
        assert_eq!(report.certificates_restored, [serial(3).to_hex()]);
        assert!(report.certificates_not_restorable.is_empty());
        assert!(report.revocations_not_restorable.is_empty(), "{report:?}");

        // A line whose certificate does not match its own hash carries none.
        let mut forged = issued(4, 4, A);
        for (name, value) in audit::issued_certificate_fields(&der) {
            forged.fields.insert(name.into(), value);
        }
        forged
            .fields
            .insert("cert_sha256".into(), json!(hex::encode([0u8; 32])));
        assert!(audit::issued_certificate(&forged.fields).is_none());
        assert_eq!(audit::issued_certificate(&line.fields), Some(der));
    }
}
