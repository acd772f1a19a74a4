//! The CA hierarchy on disk: created by `init`, opened by every other command.
//!
//! ```text
//! DATA_DIR/
//!   config.toml          trust domain, base URL, key type, key protection
//!   root.pem root.key    root CA (long-lived; its key is used only by explicit operator commands)
//!   issuing.pem issuing.key  online issuing CA (signs agents, CRLs)
//!   ca-chain.pem         issuing CA + root, what clients present or trust
//!   ocsp.pem ocsp.key    delegated OCSP responder (id-kp-OCSPSigning, ocsp-nocheck)
//!   scep-ra.pem scep-ra.key  RSA SCEP RA certificate (decrypts SCEP envelopes only)
//!   policies/*.toml      issuance policies
//!   store/               the embedded store (sled), unless the CA uses PostgreSQL
//!   audit.log            hash-chained audit log
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CrlDistributionPoint, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RsaKeySize,
    SerialNumber,
};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::audit::AuditLog;
use crate::csr::KeyKind;
use crate::error::{Error, Result};
use crate::identity::check_trust_domain;
use crate::issuer::{Authority, IssuingCa};
use crate::keyfile::{self, Passphrase, Protection};
use crate::policy::PolicySet;
use crate::profile::{self, Urls};
use crate::reconcile::{self, CaughtUp};
use crate::signer::{KeyPairSigner, RcgenSigner, Signer};
use crate::status::StatusResponder;
use crate::store::{PostgresStore, SledStore, Store};
use crate::token::TokenSealer;

/// The default policy written by `init` (the same file as `policies/default.toml`).
pub const DEFAULT_POLICY: &str = include_str!("../../../policies/default.toml");

/// Lifetimes of the CA's own certificates.
const ROOT_LIFETIME: Duration = Duration::days(3650);
const ISSUING_LIFETIME: Duration = Duration::days(1825);
const RESPONDER_LIFETIME: Duration = Duration::days(90);
const RA_LIFETIME: Duration = Duration::days(730);

/// Where a CA keeps its records.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum StoreLocation {
    /// The embedded store in the data directory's `store/`.
    #[default]
    DataDir,
    /// The embedded store in another directory.
    Sled(PathBuf),
    /// A PostgreSQL database (`postgres://…`), which several CA nodes may share.
    Postgres(String),
}

impl StoreLocation {
    /// A `postgres://` or `postgresql://` URL, else a directory for the embedded store. Any
    /// other URL is refused rather than taken for a directory name.
    pub fn parse(location: &str) -> Result<Self> {
        if PostgresStore::is_url(location) {
            Ok(Self::Postgres(location.to_owned()))
        } else if let Some((scheme, _)) = location.split_once("://") {
            Err(Error::InvalidArgument(format!(
                "--store: {scheme}:// is not a supported store; give a directory or a \
                 postgres:// URL"
            )))
        } else {
            Ok(Self::Sled(PathBuf::from(location)))
        }
    }

    /// Which kind of store, as `config.toml` records it.
    pub fn kind(&self) -> StoreKind {
        match self {
            Self::DataDir | Self::Sled(_) => StoreKind::Sled,
            Self::Postgres(_) => StoreKind::Postgres,
        }
    }
}

/// The URL may carry a password: shown as `user@host:port/dbname` only.
impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::DataDir => f.write_str("DataDir"),
            Self::Sled(path) => f.debug_tuple("Sled").field(path).finish(),
            Self::Postgres(url) => f
                .debug_tuple("Postgres")
                .field(&PostgresStore::describe_url(url))
                .finish(),
        }
    }
}

/// The kind of store a CA was created with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The embedded store.
    #[default]
    Sled,
    /// PostgreSQL.
    Postgres,
}

impl StoreKind {
    fn is_sled(&self) -> bool {
        *self == Self::Sled
    }
}

/// The files of a data directory, and where its records are.
#[derive(Clone, Debug)]
pub struct DataDir {
    path: PathBuf,
    store: StoreLocation,
}

impl DataDir {
    /// A data directory at `path` (not checked), with the embedded store inside it.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            store: StoreLocation::DataDir,
        }
    }

    /// The same directory with its records at `store`.
    pub fn with_store(mut self, store: StoreLocation) -> Self {
        self.store = store;
        self
    }

    /// Where the records are.
    pub fn store_location(&self) -> &StoreLocation {
        &self.store
    }

    /// Opens the store the location names (creating an empty one, or bringing a database's
    /// schema up to date). [`Ca::open`] also checks that it is the kind the CA was created with.
    pub fn open_store(&self) -> Result<Arc<dyn Store>> {
        Ok(match &self.store {
            StoreLocation::DataDir => Arc::new(SledStore::open(&self.store())?),
            StoreLocation::Sled(path) => Arc::new(SledStore::open(path)?),
            StoreLocation::Postgres(url) => Arc::new(PostgresStore::open(url)?),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A file in the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// `config.toml`.
    pub fn config(&self) -> PathBuf {
        self.file("config.toml")
    }

    /// The embedded store's default directory.
    pub fn store(&self) -> PathBuf {
        self.file("store")
    }

    /// The audit log.
    pub fn audit_log(&self) -> PathBuf {
        self.file("audit.log")
    }

    /// `in-use`: present while a process has the CA open. Found by [`Ca::open`], it says the
    /// last process did not close the CA (a crash), so the audit log may lack the lines of
    /// writes that were in flight, and [`reconcile::catch_up`] runs.
    pub fn in_use_marker(&self) -> PathBuf {
        self.file("in-use")
    }

    /// The policy directory.
    pub fn policies(&self) -> PathBuf {
        self.file("policies")
    }
}

/// `config.toml`: what `init` decided.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaConfig {
    /// Trust domain of every agent ID.
    pub trust_domain: String,
    /// Base URL for AIA and CRL distribution points.
    pub base_url: String,
    /// Key type of the root and issuing CA.
    pub key_type: String,
    /// Development mode: keys stored without encryption.
    #[serde(default)]
    pub insecure_plaintext_keys: bool,
    /// When `init` ran.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The kind of store `init` created; absent means the embedded one. The location itself
    /// (a URL that may hold a password) is given to every command instead.
    #[serde(default, skip_serializing_if = "StoreKind::is_sled")]
    pub store: StoreKind,
    /// How long a certificate's record stays in the store after its `notAfter` (`"7d"`), or
    /// `"forever"`; absent means [`crate::retention::DEFAULT_KEEP_EXPIRED`]. See
    /// [`CaConfig::keep_expired_certificates`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_expired_certificates: Option<String>,
    /// The PKCS#11 token that holds the issuing CA's key; absent means `issuing.key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuing_key: Option<crate::pkcs11::TokenKey>,
}

impl CaConfig {
    /// How long an expired certificate's record stays in the store; `None` keeps it forever.
    /// The audit log keeps its `cert.issued` line whatever this says.
    pub fn keep_expired_certificates(&self) -> Result<Option<Duration>> {
        let bad = |reason: String| Error::DataDir {
            path: PathBuf::from("config.toml"),
            reason: format!("keep_expired_certificates: {reason}"),
        };
        match self.keep_expired_certificates.as_deref() {
            None => Ok(Some(crate::retention::DEFAULT_KEEP_EXPIRED)),
            Some("forever") => Ok(None),
            Some(text) => {
                let keep = crate::policy::parse_duration(text).map_err(bad)?;
                if keep < crate::retention::GRACE {
                    return Err(bad(format!(
                        "{text:?} is shorter than a day; use at least \"1d\", or \"forever\""
                    )));
                }
                Ok(Some(keep))
            }
        }
    }
}

/// What `init` needs.
#[derive(Debug)]
pub struct InitOptions {
    /// The trust domain, e.g. `example.org`.
    pub trust_domain: String,
    /// Root and issuing CA key type.
    pub key_type: KeyKind,
    /// Base URL for AIA/CDP (default: the HTTP listener's default address).
    pub base_url: Option<String>,
    /// How the keys are protected.
    pub protection: Protection,
    /// Generate the issuing CA's key in this PKCS#11 token instead of a key file.
    pub issuing_key_in: Option<TokenPlace>,
}

/// A PKCS#11 token to generate the issuing CA's key in (`init --pkcs11-module … --pkcs11-token
/// …`).
#[derive(Clone, Debug)]
pub struct TokenPlace {
    /// The PKCS#11 module.
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    /// The token's user PIN.
    pub pin: crate::pkcs11::Pin,
}

/// The default base URL: the HTTP listener's default address (design §6).
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:8080";

/// What `init` created.
#[derive(Debug, Clone, Serialize)]
pub struct InitReport {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The trust domain.
    pub trust_domain: String,
    /// `root.pem`.
    pub root_pem: PathBuf,
    /// `ca-chain.pem`.
    pub chain_pem: PathBuf,
    /// SHA-256 fingerprint of the root certificate, hex.
    pub root_sha256: String,
    /// Whether keys were written unencrypted.
    pub insecure_plaintext_keys: bool,
    /// The token holding the issuing CA's key, if it is not `issuing.key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuing_key: Option<crate::pkcs11::TokenKey>,
}

/// Creates a new CA in `dir`. Refuses if `dir` already holds one.
pub fn init(dir: &DataDir, options: &InitOptions) -> Result<InitReport> {
    check_trust_domain(&options.trust_domain).map_err(|why| Error::DataDir {
        path: dir.path().to_owned(),
        reason: format!("invalid trust domain {:?}: {why}", options.trust_domain),
    })?;
    let base_url = options
        .base_url
        .clone()
        .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
    if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
        return Err(Error::DataDir {
            path: dir.path().to_owned(),
            reason: format!("--base-url {base_url:?} must start with http:// or https://"),
        });
    }
    refuse_existing(dir)?;
    // A database is checked before anything is written: one that already serves a CA must not
    // get a second hierarchy issuing over its serials and CRL numbers.
    let database = match dir.store_location() {
        StoreLocation::Postgres(url) => {
            let pg = Arc::new(PostgresStore::open(url)?);
            refuse_used_database(&pg, dir)?;
            Some(pg)
        }
        StoreLocation::DataDir | StoreLocation::Sled(_) => None,
    };
    // The issuing CA's key first, a key file's or one that never leaves its token: a token
    // that is missing or refuses the PIN stops `init` before anything is written.
    let (issuing_signer, issuing_file_key, issuing_token): (Arc<dyn Signer>, _, _) =
        match &options.issuing_key_in {
            None => {
                let key = generate_key(options.key_type)?;
                let der = key.serialize_der();
                (Arc::new(KeyPairSigner::new(key)?), Some(der), None)
            }
            Some(place) => {
                let label = format!("{} agent issuing CA", options.trust_domain);
                let (signer, token) = crate::pkcs11::TokenSigner::generate(
                    &place.module,
                    &place.token,
                    options.key_type,
                    &label,
                    place.pin.clone(),
                )?;
                (Arc::new(signer), None, Some(token))
            }
        };
    let issuing_key = RcgenSigner::new(issuing_signer.as_ref())?;
    create_private_dir(dir.path())?;
    let store: Arc<dyn Store> = match &database {
        Some(pg) => pg.clone(),
        None => dir.open_store()?,
    };

    let urls = Urls::from_base(&base_url);
    let now = profile::whole_seconds(OffsetDateTime::now_utc());
    let td = &options.trust_domain;

    // Root.
    let root_key = generate_key(options.key_type)?;
    let mut root_params = ca_params(&format!("{td} agent root CA"), td, now, ROOT_LIFETIME)?;
    root_params.key_identifier_method = ski(&root_key)?;
    root_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    let root_cert = root_params
        .self_signed(&root_key)
        .map_err(|e| Error::Signing(format!("root certificate: {e}")))?;
    let root_issuer = Issuer::new(root_params, &root_key);

    // Issuing CA.
    let mut issuing_params =
        ca_params(&format!("{td} agent issuing CA"), td, now, ISSUING_LIFETIME)?;
    issuing_params.key_identifier_method = ski(&issuing_key)?;
    issuing_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    issuing_params.use_authority_key_identifier_extension = true;
    let issuing_cert = issuing_params
        .signed_by(&issuing_key, &root_issuer)
        .map_err(|e| Error::Signing(format!("issuing CA certificate: {e}")))?;
    let issuing_issuer = Issuer::new(issuing_params, &issuing_key);

    // Delegated OCSP responder (RFC 6960 §4.2.2.2), same key type as the CA.
    let responder_key = generate_key(options.key_type)?;
    let responder = ocsp_responder_params(
        td,
        random_serial_number()?,
        now - profile::BACKDATE,
        now + RESPONDER_LIFETIME,
        &responder_key,
    )?;
    let responder_cert = responder
        .signed_by(&responder_key, &issuing_issuer)
        .map_err(|e| Error::Signing(format!("OCSP responder certificate: {e}")))?;

    // SCEP RA: RSA, because SCEP clients encrypt to it with RSA key transport.
    let ra_key = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048)
        .map_err(|e| Error::Signing(format!("generate RA key: {e}")))?;
    let mut ra = end_entity_params(&format!("{td} SCEP RA"), td, now, RA_LIFETIME)?;
    ra.key_identifier_method = ski(&ra_key)?;
    ra.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    ra.crl_distribution_points = vec![CrlDistributionPoint {
        uris: vec![urls.crl.clone()],
    }];
    ra.custom_extensions.push(profile::authority_info_access(
        Some(&urls.ocsp),
        &urls.ca_issuers,
    ));
    let ra_cert = ra
        .signed_by(&ra_key, &issuing_issuer)
        .map_err(|e| Error::Signing(format!("SCEP RA certificate: {e}")))?;

    // The database is bound to this root before any file exists, so of two `init`s racing for
    // one database the loser leaves nothing behind.
    let root_sha256 = hex::encode(sha256(root_cert.der()));
    if let Some(pg) = &database {
        pg.claim_for_ca(&root_sha256)?;
    }

    // Keys first (create_new, 0600), then certificates, then config last: a crash mid-init
    // leaves no config.toml, and a rerun refuses because keys exist — nothing is overwritten.
    for (name, key) in [
        ("root.key", &root_key),
        ("ocsp.key", &responder_key),
        ("scep-ra.key", &ra_key),
    ] {
        keyfile::write_key(&dir.file(name), &key.serialize_der(), &options.protection)?;
    }
    if let Some(der) = &issuing_file_key {
        keyfile::write_key(&dir.file("issuing.key"), der, &options.protection)?;
    }
    write_token_seal_key(dir, &options.protection)?;
    write_new(&dir.file("root.pem"), root_cert.pem().as_bytes())?;
    write_new(&dir.file("issuing.pem"), issuing_cert.pem().as_bytes())?;
    write_new(
        &dir.file("ca-chain.pem"),
        format!("{}{}", issuing_cert.pem(), root_cert.pem()).as_bytes(),
    )?;
    write_new(&dir.file("ocsp.pem"), responder_cert.pem().as_bytes())?;
    write_new(&dir.file("scep-ra.pem"), ra_cert.pem().as_bytes())?;

    create_private_dir(&dir.policies())?;
    write_new(
        &dir.policies().join("default.toml"),
        DEFAULT_POLICY.as_bytes(),
    )?;

    let insecure = matches!(options.protection, Protection::InsecurePlaintext);
    let config = CaConfig {
        trust_domain: td.clone(),
        base_url,
        key_type: options.key_type.to_string(),
        insecure_plaintext_keys: insecure,
        created_at: now,
        store: dir.store_location().kind(),
        keep_expired_certificates: None,
        issuing_key: issuing_token,
    };
    store.commit()?;
    drop(store);
    let audit = AuditLog::open(&dir.audit_log())?;
    audit.append_durable(
        "ca.initialized",
        serde_json::json!({
            "trust_domain": td,
            "key_type": options.key_type.to_string(),
            "root_sha256": root_sha256,
            "insecure_plaintext_keys": insecure,
        }),
    )?;
    let config_text =
        toml::to_string(&config).map_err(|_| Error::Unreachable("config encodes as TOML"))?;
    write_new(&dir.config(), config_text.as_bytes())?;
    sync_dir(dir.path())?;

    Ok(InitReport {
        data_dir: dir.path().to_owned(),
        trust_domain: td.clone(),
        root_pem: dir.file("root.pem"),
        chain_pem: dir.file("ca-chain.pem"),
        root_sha256,
        insecure_plaintext_keys: insecure,
        issuing_key: config.issuing_key,
    })
}

fn refuse_used_database(store: &PostgresStore, dir: &DataDir) -> Result<()> {
    if store.ca_identity()?.is_some()
        || store.serial_count()? != 0
        || !store.agents()?.is_empty()
        || store.crl_state()?.is_some()
    {
        return Err(Error::DataDir {
            path: dir.path().to_owned(),
            reason: "the store already holds a CA's records; `init` needs an empty one (other \
                     nodes of a CA copy its data directory instead)"
                .into(),
        });
    }
    Ok(())
}

/// Refuses a store of another kind than the CA was created with: an embedded store opened in
/// place of the CA's database would be empty, and the CA would hand out serials, tokens and
/// CRL numbers again.
fn check_store_kind(dir: &DataDir, config: &CaConfig) -> Result<()> {
    let given = dir.store_location().kind();
    if given == config.store {
        return Ok(());
    }
    let reason = match config.store {
        StoreKind::Postgres => {
            "this CA keeps its records in PostgreSQL: pass --store postgres://… \
             (or set AGENTCA_STORE)"
        }
        StoreKind::Sled => {
            "this CA keeps its records in its embedded store; --store postgres://… is for CAs \
             created with `init --store postgres://…`"
        }
    };
    Err(Error::DataDir {
        path: dir.config(),
        reason: reason.into(),
    })
}

/// Reads `config.toml` and opens the CA's store after checking its kind, without the rest of
/// the CA (for `audit verify`, which must not open the audit log for appending).
pub fn open_store(dir: &DataDir) -> Result<Arc<dyn Store>> {
    let config = read_config(dir)?;
    open_checked_store(dir, &config)
}

/// Opens the store after checking that it is the kind the CA was created with and, for a
/// database, that it serves this CA (the root certificate it was bound to by `init`).
fn open_checked_store(dir: &DataDir, config: &CaConfig) -> Result<Arc<dyn Store>> {
    check_store_kind(dir, config)?;
    let StoreLocation::Postgres(url) = dir.store_location() else {
        return dir.open_store();
    };
    let pg = Arc::new(PostgresStore::open(url)?);
    let path = dir.file("root.pem");
    let text =
        std::fs::read(&path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    let root = pem::parse(&text).map_err(|e| Error::Der(format!("{}: {e}", path.display())))?;
    let root_sha256 = hex::encode(sha256(root.contents()));
    match pg.ca_identity()? {
        Some(owner) if owner == root_sha256 => Ok(pg),
        Some(owner) => Err(Error::DataDir {
            path: dir.path().to_owned(),
            reason: format!(
                "the database at {} serves another CA (root SHA-256 {owner}, this one is \
                 {root_sha256})",
                pg.target()
            ),
        }),
        None => Err(Error::DataDir {
            path: dir.path().to_owned(),
            reason: format!(
                "the database at {} serves no CA yet: give every node the database `init` \
                 created",
                pg.target()
            ),
        }),
    }
}

/// Reads `config.toml` of `dir`.
pub fn read_config(dir: &DataDir) -> Result<CaConfig> {
    let text = std::fs::read_to_string(dir.config()).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::DataDir {
                path: dir.path().to_owned(),
                reason: "no CA here; run `agentca init --trust-domain DOMAIN` first".into(),
            }
        } else {
            Error::io(format!("read {}", dir.config().display()), e)
        }
    })?;
    toml::from_str(&text).map_err(|e| Error::DataDir {
        path: dir.config(),
        reason: e.to_string(),
    })
}

/// An opened CA: configuration, store, audit log and policies; keys load on demand.
pub struct Ca {
    dir: DataDir,
    config: CaConfig,
    store: Arc<dyn Store>,
    audit: Arc<AuditLog>,
    policies: PolicySet,
    caught_up: CaughtUp,
}

impl Drop for Ca {
    /// Says the CA was closed, unless the store or the audit log is still shared (a commit
    /// thread, a server's tasks): what they may still write is then left to the next open's
    /// catch-up, as is the line of an append that failed (a full disk). A marker that cannot
    /// be removed only costs that catch-up.
    fn drop(&mut self) {
        let marker = self.dir.in_use_marker();
        if let Some(lost) = self.audit.lost_since() {
            // Kept, saying since when (again, should the note at the failure have failed):
            // the next open catches up from there, however long ago.
            note_lost_lines(&marker, lost);
            return;
        }
        if Arc::strong_count(&self.store) == 1
            && Arc::strong_count(&self.audit) == 1
            && self.store.commit().is_ok()
            && self.audit.sync().is_ok()
        {
            let _ = std::fs::remove_file(marker);
        }
    }
}

/// The in-use marker's line saying since when audit lines may be missing.
const LOST_SINCE_PREFIX: &str = "audit lines missing since ";

/// The in-use marker's line while no audit line is known to be missing: as long as the other
/// line (a time in whole seconds takes 20 characters), so that writing that one over it, in
/// place, needs no new block of a disk that may be full.
const NOTHING_LOST: &str = "no audit line known to be missing  ";

/// Writes the in-use marker (see [`DataDir::in_use_marker`]), saying since when audit lines
/// may be missing or that none is known to be, over what it held, and syncs it.
fn write_in_use_marker(marker: &Path, lost_since: Option<OffsetDateTime>) -> Result<()> {
    let text = match lost_since.map(|t| t.format(&time::format_description::well_known::Rfc3339)) {
        Some(Ok(t)) => format!("{LOST_SINCE_PREFIX}{t}\n"),
        _ => format!("{NOTHING_LOST:<46}\n"),
    };
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(marker)?;
        std::io::Write::write_all(&mut file, text.as_bytes())?;
        file.set_len(text.len() as u64)?;
        file.sync_all()
    };
    write().map_err(|e| Error::io(format!("write {}", marker.display()), e))
}

/// Has the in-use marker say audit lines may be missing since `at`, or since the earlier time
/// it already says. A failure is left to the caller's fallback (the drop notes it again, and
/// without a note the next open still catches up its usual window).
fn note_lost_lines(marker: &Path, at: OffsetDateTime) {
    let since = read_in_use_marker(marker).map_or(at, |t| t.min(at));
    let _ = write_in_use_marker(marker, Some(since));
}

/// The time an in-use marker says audit lines may be missing since, if it says one.
fn read_in_use_marker(marker: &Path) -> Option<OffsetDateTime> {
    let text = std::fs::read_to_string(marker).ok()?;
    text.lines().find_map(|line| {
        let t = line.strip_prefix(LOST_SINCE_PREFIX)?;
        OffsetDateTime::parse(t.trim(), &time::format_description::well_known::Rfc3339).ok()
    })
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("dir", &self.dir)
            .field("trust_domain", &self.config.trust_domain)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Opens the CA in `dir`.
    pub fn open(dir: &DataDir) -> Result<Self> {
        let config = read_config(dir)?;
        let policies = PolicySet::load_dir(&dir.policies())?;
        let store = open_checked_store(dir, &config)?;
        let audit = Arc::new(AuditLog::open(&dir.audit_log())?);
        // The audit log's lock is held: no other process opens the CA until it is dropped.
        let marker = dir.in_use_marker();
        // An audit line lost while the CA runs on is noted in the marker at once, so that a
        // process killed later still leaves its time to the next open (the drop notes it too).
        let noted = marker.clone();
        audit.on_first_loss(move |at| note_lost_lines(&noted, at));
        let caught_up = if marker.exists() {
            let lost_since = read_in_use_marker(&marker);
            let caught_up = reconcile::catch_up(store.as_ref(), &audit, lost_since)?;
            if lost_since.is_some() {
                // Caught up from then: a later catch-up starts from the log's end again.
                write_in_use_marker(&marker, None)?;
            }
            caught_up
        } else {
            write_in_use_marker(&marker, None)?;
            sync_dir(dir.path())?;
            CaughtUp::default()
        };
        Ok(Self {
            dir: dir.clone(),
            config,
            store,
            audit,
            policies,
            caught_up,
        })
    }

    /// The audit lines [`Ca::open`] wrote for writes a crash kept from their line.
    pub fn caught_up(&self) -> &CaughtUp {
        &self.caught_up
    }

    /// The configuration.
    pub fn config(&self) -> &CaConfig {
        &self.config
    }

    /// The data directory.
    pub fn dir(&self) -> &DataDir {
        &self.dir
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The audit log.
    pub fn audit(&self) -> &Arc<AuditLog> {
        &self.audit
    }

    /// The policies.
    pub fn policies(&self) -> &PolicySet {
        &self.policies
    }

    /// How keys of this CA are protected: from the configuration, plus a passphrase from
    /// `passphrase_file` or `AGENTCA_PASSPHRASE` unless the CA is in development mode.
    pub fn protection(&self, passphrase_file: Option<&Path>) -> Result<Protection> {
        if self.config.insecure_plaintext_keys {
            return Ok(Protection::InsecurePlaintext);
        }
        passphrase(passphrase_file).map(Protection::Passphrase)
    }

    /// A certificate file of the CA, DER.
    pub fn cert_der(&self, name: &str) -> Result<Vec<u8>> {
        let path = self.dir.file(name);
        let text =
            std::fs::read(&path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        let block =
            pem::parse(&text).map_err(|e| Error::Der(format!("{}: {e}", path.display())))?;
        Ok(block.into_contents())
    }

    /// Loads a CA key.
    pub fn signer(&self, key_file: &str, protection: &Protection) -> Result<KeyPairSigner> {
        let path = self.dir.file(key_file);
        let der = keyfile::read_key(&path, protection)?;
        let pair = KeyPair::try_from(der.as_slice()).map_err(|e| Error::KeyFile {
            path: path.clone(),
            reason: format!("not a usable private key: {e}"),
        })?;
        KeyPairSigner::new(pair)
    }

    /// The issuing CA with its key loaded.
    pub fn issuing_ca(&self, protection: &Protection) -> Result<IssuingCa> {
        let signer: Arc<dyn Signer> = match &self.config.issuing_key {
            Some(token) => Arc::new(crate::pkcs11::TokenSigner::open(
                token,
                crate::pkcs11::pin_from_environment()?,
            )?),
            None => Arc::new(self.signer("issuing.key", protection)?),
        };
        let mut own_keys = Vec::new();
        for name in ["root.pem", "issuing.pem", "ocsp.pem", "scep-ra.pem"] {
            own_keys.push(spki_of(&self.cert_der(name)?)?);
        }
        IssuingCa::new(
            signer,
            self.cert_der("issuing.pem")?,
            Urls::from_base(&self.config.base_url),
            self.config.trust_domain.clone(),
            own_keys,
        )
    }

    /// The OCSP status responder (loads the responder key).
    pub fn status_responder(&self, protection: &Protection) -> Result<StatusResponder> {
        let signer = self.signer("ocsp.key", protection)?;
        StatusResponder::new(
            Arc::new(signer),
            self.cert_der("ocsp.pem")?,
            &self.cert_der("issuing.pem")?,
            crate::status::DEFAULT_VALIDITY,
        )
    }

    /// The token sealer (EAB keys), from `token-seal.key`, created on first use.
    pub fn token_sealer(&self, protection: &Protection) -> Result<TokenSealer> {
        let path = self.dir.file(TOKEN_SEAL_KEY);
        if !path.exists() {
            write_token_seal_key(&self.dir, protection)?;
        }
        let secret = keyfile::read_key(&path, protection)?;
        TokenSealer::from_secret(&secret)
    }

    /// The full issuance and revocation authority (loads the issuing key).
    pub fn authority(&self, protection: &Protection) -> Result<Authority> {
        let store: Arc<dyn Store> = self.store.clone();
        Ok(Authority::new(
            self.issuing_ca(protection)?,
            self.policies.clone(),
            store,
            self.audit.clone(),
        ))
    }
}

/// Reads the passphrase from a file if given, else from `AGENTCA_PASSPHRASE`.
pub fn passphrase(file: Option<&Path>) -> Result<Passphrase> {
    if let Some(file) = file {
        return Passphrase::from_file(file);
    }
    Passphrase::from_env()?.ok_or_else(|| Error::KeyFile {
        path: PathBuf::from("AGENTCA_PASSPHRASE"),
        reason: "the CA keys are encrypted: set AGENTCA_PASSPHRASE or pass --passphrase-file"
            .into(),
    })
}

/// The token-sealing secret. It is kept in an Ed25519 PKCS#8 key file so it gets the CA keys'
/// encryption and permission handling; only its bytes are used, as HKDF input.
const TOKEN_SEAL_KEY: &str = "token-seal.key";

fn write_token_seal_key(dir: &DataDir, protection: &Protection) -> Result<()> {
    let secret = KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .map_err(|e| Error::Signing(format!("generate the token-sealing secret: {e}")))?;
    keyfile::write_key(
        &dir.file(TOKEN_SEAL_KEY),
        &secret.serialize_der(),
        protection,
    )
}

fn spki_of(cert_der: &[u8]) -> Result<Vec<u8>> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert_der)
        .map_err(|_| Error::Der("CA certificate does not parse".into()))?;
    Ok(cert.tbs_certificate.subject_pki.raw.to_vec())
}

fn refuse_existing(dir: &DataDir) -> Result<()> {
    let markers = [
        "config.toml",
        "root.key",
        "issuing.key",
        "ocsp.key",
        "scep-ra.key",
        "root.pem",
        "store",
        "audit.log",
    ];
    if let Some(found) = markers.iter().find(|m| dir.file(m).exists()) {
        return Err(Error::DataDir {
            path: dir.path().to_owned(),
            reason: format!(
                "already holds a CA ({found} exists); refusing to overwrite it — choose another --data-dir"
            ),
        });
    }
    Ok(())
}

fn generate_key(kind: KeyKind) -> Result<KeyPair> {
    let result = match kind {
        KeyKind::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        KeyKind::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
        KeyKind::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519),
        KeyKind::Rsa { bits: 2048 } => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048)
        }
        KeyKind::Rsa { bits: 3072 } => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_3072)
        }
        KeyKind::Rsa { bits: 4096 } => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_4096)
        }
        KeyKind::Rsa { bits } => {
            return Err(Error::UnsupportedKey(format!(
                "CA keys of rsa-{bits} are not offered"
            )));
        }
    };
    result.map_err(|e| Error::Signing(format!("generate {kind} key: {e}")))
}

/// RFC 7093 method 1 key identifiers for the CA's own certificates too.
fn ski(key: &impl rcgen::PublicKeyData) -> Result<KeyIdMethod> {
    Ok(KeyIdMethod::PreSpecified(profile::key_identifier(
        &key.subject_public_key_info(),
    )?))
}

fn random_serial_number() -> Result<SerialNumber> {
    let serial = crate::issuer::random_serial()?;
    Ok(SerialNumber::from_slice(serial.as_bytes()))
}

fn name(common_name: &str, trust_domain: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, format!("agentca {trust_domain}"));
    dn.push(DnType::CommonName, common_name);
    dn
}

fn ca_params(
    common_name: &str,
    trust_domain: &str,
    now: OffsetDateTime,
    lifetime: Duration,
) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.serial_number = Some(random_serial_number()?);
    params.distinguished_name = name(common_name, trust_domain);
    params.not_before = now - profile::BACKDATE;
    params.not_after = now + lifetime;
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

/// The delegated OCSP responder's certificate profile (RFC 6960 §4.2.2.2): issued by the
/// issuing CA, id-kp-OCSPSigning only, id-pkix-ocsp-nocheck (§4.2.2.2.1, so no AIA or CRL
/// distribution point), named like the CA's other certificates. Used by `init` and by the
/// server when it rotates the responder.
pub fn ocsp_responder_params(
    trust_domain: &str,
    serial: SerialNumber,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    key: &KeyPair,
) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.serial_number = Some(serial);
    params.distinguished_name = name(&format!("{trust_domain} OCSP responder"), trust_domain);
    params.not_before = not_before;
    params.not_after = not_after;
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    params.key_identifier_method = ski(key)?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::OcspSigning];
    params.custom_extensions.push(profile::ocsp_nocheck());
    Ok(params)
}

fn end_entity_params(
    common_name: &str,
    trust_domain: &str,
    now: OffsetDateTime,
    lifetime: Duration,
) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.serial_number = Some(random_serial_number()?);
    params.distinguished_name = name(common_name, trust_domain);
    params.not_before = now - profile::BACKDATE;
    params.not_after = now + lifetime;
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

/// Creates a directory only its owner can enter, or makes an existing one so: the store and
/// the audit log inside it are not meant for other local users.
fn create_private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(format!("restrict {} to its owner", path.display()), e))
}

/// Writes a new file (never replacing one), mode 0644 for certificates and config, durably.
fn write_new(path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(format!("write {}", path.display()), e))
}

fn sync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("sync {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_in_use_marker_says_since_when_lines_are_missing_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("in-use");
        write_in_use_marker(&marker, None).unwrap();
        let empty = std::fs::metadata(&marker).unwrap().len();
        assert_eq!(read_in_use_marker(&marker), None);

        let at = OffsetDateTime::from_unix_timestamp(1_796_000_000).unwrap();
        write_in_use_marker(&marker, Some(at)).unwrap();
        assert_eq!(
            std::fs::metadata(&marker).unwrap().len(),
            empty,
            "the note takes the place of the placeholder, byte for byte"
        );
        assert_eq!(read_in_use_marker(&marker), Some(at));

        write_in_use_marker(&marker, None).unwrap();
        assert_eq!(read_in_use_marker(&marker), None);
        // A marker an older version left empty, or one holding anything else, says nothing.
        std::fs::write(&marker, b"").unwrap();
        assert_eq!(read_in_use_marker(&marker), None);
        std::fs::write(&marker, b"audit lines missing since yesterday\n").unwrap();
        assert_eq!(read_in_use_marker(&marker), None);
    }
}
