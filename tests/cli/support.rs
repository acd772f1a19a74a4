//! Running the binary against a scratch data directory, making CSRs with OpenSSL, and the
//! checks every issued certificate goes through.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};

use agentca_core::store::{SledStore, Store};
use agentca_testkit::{Expectation, assert_issued_invariants, openssl_verify, pkilint};
use serde_json::Value;
use tempfile::TempDir;
use time::OffsetDateTime;
use x509_parser::prelude::FromDer;

/// The passphrase every test CA is encrypted with.
pub(crate) const PASSPHRASE: &str = "correct horse battery staple";
/// The trust domain of every test CA.
pub(crate) const TRUST_DOMAIN: &str = "example.org";
/// The base URL `init` uses when none is given.
pub(crate) const BASE_URL: &str = "http://127.0.0.1:8080";

/// pkilint findings tolerated on every certificate agentca makes.
///
/// rcgen derives the subjectKeyIdentifier as the leftmost 160 bits of SHA-256 over the whole
/// SubjectPublicKeyInfo. RFC 5280 §4.2.1.2 allows any method that yields unique values, but
/// pkilint 0.13 only recognizes the two methods of RFC 5280 and methods 1–3 of RFC 7093, and
/// says so with a NOTICE.
pub(crate) const PKILINT_ALLOWED_ANY: &[&str] =
    &["pkix.unknown_subject_key_identifier_calculation_method"];

/// pkilint findings tolerated on leaf certificates, on top of [`PKILINT_ALLOWED_ANY`].
///
/// pkilint checks URI syntax with the Python `validators.url` function, which accepts only a
/// fixed list of schemes (http, https, ftp, ...), so every `spiffe://` URI SAN is reported as
/// invalid although it is a well-formed RFC 3986 URI.
pub(crate) const PKILINT_ALLOWED_LEAF: &[&str] = &[
    "pkix.unknown_subject_key_identifier_calculation_method",
    "pkix.invalid_uri_syntax",
];

/// An agent ID in the test trust domain, from its path.
pub(crate) fn agent_id(path: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}{path}")
}

/// The binary under test.
pub(crate) fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_agentca")
}

/// Environment variables of the binary that must not leak in from the developer's shell.
const OWN_VARS: [&str; 6] = [
    "AGENTCA_DATA_DIR",
    "AGENTCA_PASSPHRASE",
    "AGENTCA_PASSPHRASE_FILE",
    "AGENTCA_STORE",
    "AGENTCA_PKCS11_PIN",
    "AGENTCA_PKCS11_PIN_FILE",
];

/// Set to `postgres` to run the tests on PostgreSQL: every [`Env`] then keeps its CA's records
/// in a fresh database of the shared throwaway cluster instead of the embedded store.
pub(crate) const STORE_VAR: &str = "AGENTCA_TEST_STORE";

/// Set to `2` (with [`STORE_VAR`] at `postgres`) to run every server a test starts as two
/// nodes on one database behind a load balancer (see `harness::Server`).
pub(crate) const NODES_VAR: &str = "AGENTCA_TEST_NODES";

/// How many nodes each test server is: 1, or 2 under [`NODES_VAR`].
pub(crate) fn test_nodes() -> usize {
    match std::env::var(NODES_VAR).as_deref() {
        Ok("2") => {
            assert_eq!(
                std::env::var(STORE_VAR).as_deref(),
                Ok("postgres"),
                "{NODES_VAR}=2 needs {STORE_VAR}=postgres: nodes share one database"
            );
            2
        }
        Ok("1") | Ok("") | Err(_) => 1,
        Ok(other) => panic!("{NODES_VAR}={other:?}: 1 or 2"),
    }
}

/// The data directory of the second node beside `data` (a copy of it).
pub(crate) fn second_node_data(data: &Path) -> PathBuf {
    let name = data.file_name().unwrap_or_default().to_string_lossy();
    data.with_file_name(format!("{name}-node2"))
}

/// A scratch directory holding one data directory (`data/`, not created until `init`) and
/// any files a test writes beside it. Removed when dropped.
pub(crate) struct Env {
    tmp: TempDir,
    /// The PostgreSQL URL every command is given (`AGENTCA_STORE`), under [`STORE_VAR`].
    store: Option<String>,
    /// Variables every command of this environment gets (a PKCS#11 module's configuration).
    vars: std::sync::Mutex<Vec<(String, String)>>,
}

impl Env {
    /// An empty scratch directory: no CA yet.
    pub(crate) fn empty() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("agentca-cli")
            .tempdir()
            .unwrap();
        let store = match std::env::var(STORE_VAR).as_deref() {
            Ok("postgres") => Some(
                agentca_testkit::postgres::shared()
                    .expect("PostgreSQL is needed when AGENTCA_TEST_STORE=postgres")
                    .fresh_database(),
            ),
            Ok("sled") | Ok("") | Err(_) => None,
            Ok(other) => panic!("{STORE_VAR}={other:?}: postgres or sled"),
        };
        Self {
            tmp,
            store,
            vars: std::sync::Mutex::default(),
        }
    }

    /// Gives every later command of this environment `key=value`.
    pub(crate) fn set_var(&self, key: &str, value: impl Into<String>) {
        let mut vars = self.vars.lock().unwrap();
        vars.retain(|(k, _)| k != key);
        vars.push((key.to_owned(), value.into()));
    }

    /// The PostgreSQL URL the CA's records are kept at; `None` for the embedded store.
    pub(crate) fn postgres_url(&self) -> Option<&str> {
        self.store.as_deref()
    }

    /// The CA's store opened by the test itself (no server may hold the embedded one).
    pub(crate) fn open_store(&self) -> Box<dyn Store> {
        match &self.store {
            Some(url) => Box::new(agentca_core::store::PostgresStore::open(url).unwrap()),
            None => Box::new(SledStore::open(&self.data_file("store")).unwrap()),
        }
    }

    /// A scratch directory with a CA made by `init` with default options.
    pub(crate) fn with_ca() -> Self {
        let env = Self::empty();
        env.init(&[]).success();
        env
    }

    /// A CA of the given key type.
    pub(crate) fn with_ca_of(key_type: &str) -> Self {
        let env = Self::empty();
        env.init(&["--key-type", key_type]).success();
        env
    }

    /// The data directory.
    pub(crate) fn data(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    /// A new environment whose data directory is a copy of this one's: a second node of the
    /// same CA (keys and certificates by configuration, as a deployment shares them).
    pub(crate) fn second_node(&self) -> Env {
        let node = Env::empty();
        copy_dir(&self.data(), &node.data());
        node
    }

    /// A file in the data directory.
    pub(crate) fn data_file(&self, name: &str) -> PathBuf {
        self.data().join(name)
    }

    /// A path in the scratch directory, beside the data directory.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Writes a file beside the data directory and returns its path.
    pub(crate) fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// The binary with a clean environment: run in the scratch directory, none of agentca's
    /// variables inherited, the test passphrase in `AGENTCA_PASSPHRASE`. No arguments yet.
    pub(crate) fn bare(&self) -> Command {
        self.clean(Command::new(bin()))
    }

    fn clean(&self, mut cmd: Command) -> Command {
        cmd.current_dir(self.tmp.path());
        for var in OWN_VARS {
            cmd.env_remove(var);
        }
        cmd.env("AGENTCA_PASSPHRASE", PASSPHRASE);
        for (key, value) in self.vars.lock().unwrap().iter() {
            cmd.env(key, value);
        }
        if let Some(url) = &self.store {
            cmd.env("AGENTCA_STORE", url);
        }
        cmd
    }

    /// [`Env::bare`] with `--data-dir` first.
    pub(crate) fn command(&self) -> Command {
        let mut cmd = self.bare();
        cmd.arg("--data-dir").arg(self.data());
        cmd
    }

    /// Runs the binary with `--data-dir` and `args` (text output).
    pub(crate) fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Outcome {
        let mut cmd = self.command();
        cmd.args(args);
        Outcome::of(&mut cmd)
    }

    /// Runs with `--output json`.
    pub(crate) fn run_json<S: AsRef<OsStr>>(&self, args: &[S]) -> Outcome {
        let mut cmd = self.command();
        cmd.args(["--output", "json"]).args(args);
        Outcome::of(&mut cmd)
    }

    /// Runs with `--output json`, requires success and returns the document.
    pub(crate) fn json<S: AsRef<OsStr>>(&self, args: &[S]) -> Value {
        self.run_json(args).success().json()
    }

    /// Runs with `--output json`, requires exit code 1 and an error document, and returns
    /// its kind and message.
    pub(crate) fn json_error<S: AsRef<OsStr>>(&self, args: &[S]) -> (String, String) {
        self.run_json(args).json_error()
    }

    /// `init --trust-domain example.org` plus `extra`.
    pub(crate) fn init(&self, extra: &[&str]) -> Outcome {
        let mut args = vec!["init", "--trust-domain", TRUST_DOMAIN];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        if self.store.is_some() && out.status.success() {
            assert!(
                !self.data_file("store").exists(),
                "{STORE_VAR}=postgres, but init made an embedded store"
            );
        }
        out
    }

    /// `agent add` for the agent at `path` (e.g. `/agent/alice`) plus `extra`; must succeed.
    pub(crate) fn add_agent(&self, path: &str, extra: &[&str]) -> String {
        let id = agent_id(path);
        let mut args = vec!["agent", "add", id.as_str()];
        args.extend_from_slice(extra);
        self.run(&args).success();
        id
    }

    /// A fresh P-256 CSR (OpenSSL-made, empty subject) named `name`.
    pub(crate) fn csr(&self, name: &str) -> Csr {
        self.csr_with(name, KeyAlg::P256, &[])
    }

    /// A fresh CSR of key type `alg` asking for `dns` names.
    pub(crate) fn csr_with(&self, name: &str, alg: KeyAlg, dns: &[&str]) -> Csr {
        Csr::new(self.tmp.path(), name, alg, dns)
    }

    /// `issue --output json` for `agent` with `csr` plus `extra`; must succeed.
    pub(crate) fn issue(&self, agent: &str, csr: &Csr, extra: &[&str]) -> Value {
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("issue"),
            OsStr::new("--agent"),
            OsStr::new(agent),
            OsStr::new("--csr"),
            csr.path.as_os_str(),
        ];
        args.extend(extra.iter().map(OsStr::new));
        self.json(&args)
    }

    /// Issues a certificate with a fresh key and returns its serial.
    pub(crate) fn issue_fresh(&self, agent: &str, name: &str) -> String {
        let csr = self.csr(name);
        serial_of(&self.issue(agent, &csr, &[]))
    }

    /// `cert list --output json` plus `extra`: the certificate documents.
    pub(crate) fn cert_list(&self, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["cert", "list"];
        args.extend_from_slice(extra);
        let doc = self.json(&args);
        doc["certificates"].as_array().unwrap().clone()
    }

    /// The serials `cert list` shows, sorted.
    pub(crate) fn listed_serials(&self, extra: &[&str]) -> Vec<String> {
        let mut serials: Vec<String> = self.cert_list(extra).iter().map(serial_of).collect();
        serials.sort();
        serials
    }

    /// The audit log, and the second node's when servers ran as two nodes.
    pub(crate) fn audit_logs(&self) -> Vec<PathBuf> {
        let second = second_node_data(&self.data()).join("audit.log");
        let mut logs = vec![self.data_file("audit.log")];
        logs.extend(second.is_file().then_some(second));
        logs
    }

    /// Every line of the audit logs (see [`Env::audit_logs`]), parsed.
    pub(crate) fn audit_entries(&self) -> Vec<Value> {
        let mut entries = Vec::new();
        for log in self.audit_logs() {
            let text = std::fs::read_to_string(log).unwrap();
            entries.extend(
                text.lines()
                    .map(|l| serde_json::from_str::<Value>(l).unwrap()),
            );
        }
        entries
    }

    /// The text of every audit log (see [`Env::audit_logs`]), one after the other.
    pub(crate) fn audit_text(&self) -> String {
        self.audit_logs()
            .into_iter()
            .map(|log| std::fs::read_to_string(log).unwrap())
            .collect()
    }

    /// The audit entries with this event name.
    pub(crate) fn audit_events(&self, event: &str) -> Vec<Value> {
        self.audit_entries()
            .into_iter()
            .filter(|e| e["event"] == event)
            .collect()
    }

    /// Claims, in `claims`, the first entry of `event` not claimed before for which `matches`
    /// holds: each checked refusal must have an audit entry of its own. Panics, naming `what`,
    /// when there is none.
    #[track_caller]
    pub(crate) fn claim_audit_entry(
        &self,
        claims: &AuditClaims,
        event: &str,
        what: &str,
        matches: impl Fn(&Value) -> bool,
    ) {
        let entries = self.audit_events(event);
        let mut claimed = claims.0.lock().unwrap();
        let hash = |e: &Value| e["hash"].as_str().unwrap_or_default().to_owned();
        let Some(entry) = entries
            .iter()
            .find(|e| matches(e) && !claimed.contains(&hash(e)))
        else {
            panic!(
                "{what}: no unclaimed {event} audit entry that fits ({} entries, {} claimed)",
                entries.len(),
                claimed.len()
            );
        };
        claimed.insert(hash(entry));
    }

    /// `audit verify --output json`; must succeed and report an intact log.
    pub(crate) fn assert_audit_intact(&self) -> Value {
        let mut args = vec!["audit".into(), "verify".into()];
        for other in self.audit_logs().into_iter().skip(1) {
            args.extend(["--audit-log".into(), other.into_os_string()]);
        }
        let doc = self.json(&args);
        assert_eq!(doc["intact"], true, "{doc:#}");
        assert_eq!(doc["consistent"], true, "{doc:#}");
        assert!(doc["broken"].is_null(), "{doc:#}");
        doc
    }

    /// How many serials the store holds, reserved or issued. Opens the store directly, so
    /// only call it while no command runs.
    pub(crate) fn serial_count(&self) -> u64 {
        self.open_store().serial_count().unwrap()
    }

    /// A PEM certificate file of the CA, as DER.
    pub(crate) fn ca_der(&self, name: &str) -> Vec<u8> {
        let text = std::fs::read(self.data_file(name)).unwrap();
        pem::parse(text).unwrap().into_contents()
    }

    /// Every full check of an issued leaf: the testkit's invariants, `openssl verify`,
    /// rustls-webpki for client auth, and pkilint.
    pub(crate) fn check_leaf(&self, leaf_der: &[u8], expect: &Expectation) {
        let issuing = self.ca_der("issuing.pem");
        let root = self.ca_der("root.pem");
        assert_issued_invariants(leaf_der, &[issuing.clone(), root.clone()], expect);
        let leaf_pem = self.write(
            "check-leaf.pem",
            agentca_testkit::tools::pem("CERTIFICATE", &[leaf_der]),
        );
        openssl_verify(
            &leaf_pem,
            &self.data_file("root.pem"),
            &self.data_file("issuing.pem"),
        );
        agentca_testkit::webpki_verify_client(
            leaf_der,
            &[issuing],
            &root,
            OffsetDateTime::now_utc(),
        );
        pkilint::pkilint_cert_allowing(leaf_der, PKILINT_ALLOWED_LEAF);
    }
}

/// What one run of the binary did.
pub(crate) struct Outcome {
    args: Vec<String>,
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Outcome {
    /// Runs `cmd` to completion. Whatever the outcome, the binary must not panic.
    pub(crate) fn of(cmd: &mut Command) -> Self {
        let output = cmd.output().unwrap();
        let args = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        Self::from_output(args, output)
    }

    fn from_output(args: Vec<String>, output: Output) -> Self {
        let outcome = Self {
            args,
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        assert!(
            !outcome.stdout.contains("panicked") && !outcome.stderr.contains("panicked"),
            "the binary panicked:\n{outcome}"
        );
        outcome
    }

    /// Requires exit code 0.
    #[track_caller]
    pub(crate) fn success(self) -> Self {
        assert!(self.status.success(), "expected success:\n{self}");
        self
    }

    /// Requires a failure reported the text way: exit code 1, nothing on stdout, exactly one
    /// line on stderr starting with `error: `. Returns that line.
    #[track_caller]
    pub(crate) fn error_line(&self) -> &str {
        assert_eq!(self.status.code(), Some(1), "expected exit code 1:\n{self}");
        assert!(self.stdout.is_empty(), "stdout not empty on error:\n{self}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "expected exactly one line on stderr:\n{self}"
        );
        assert!(
            lines[0].starts_with("error: "),
            "the error line does not start with `error: `:\n{self}"
        );
        lines[0]
    }

    /// stdout as one JSON document.
    #[track_caller]
    pub(crate) fn json(&self) -> Value {
        match serde_json::from_str(&self.stdout) {
            Ok(v) => v,
            Err(e) => panic!("stdout is not one JSON document ({e}):\n{self}"),
        }
    }

    /// Requires a JSON error document (`{"error":{"kind","message"}}`) and exit code 1;
    /// returns kind and message.
    #[track_caller]
    pub(crate) fn json_error(&self) -> (String, String) {
        assert_eq!(self.status.code(), Some(1), "expected exit code 1:\n{self}");
        let doc = self.json();
        let obj = doc.as_object().unwrap();
        assert_eq!(
            obj.len(),
            1,
            "the error document has other members:\n{self}"
        );
        let err = &doc["error"];
        assert_eq!(err.as_object().map(|o| o.len()), Some(2), "{self}");
        let kind = err["kind"].as_str().unwrap().to_owned();
        let message = err["message"].as_str().unwrap().to_owned();
        (kind, message)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "agentca {}\nstatus: {}\nstdout:\n{}\nstderr:\n{}",
            self.args.join(" "),
            self.status,
            self.stdout,
            self.stderr
        )
    }
}

/// The `serial` member of a certificate document.
/// Debian's libfaketime built for threaded programs (`MT`), if installed. Tests preload it
/// into the binary itself rather than run the `faketime` program: that wrapper keeps a named
/// semaphore per process id in shared memory, which a killed run leaves behind and which makes
/// a later wrapper given the same process id refuse to start ("sem_open: File exists"). The
/// library alone keeps no such state, and the test signals the binary, not a wrapper.
pub(crate) fn libfaketime() -> Option<PathBuf> {
    let lib = Path::new("/usr/lib");
    let multiarch = std::fs::read_dir(lib)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("faketime/libfaketimeMT.so.1"));
    multiarch
        .chain([lib.join("faketime/libfaketimeMT.so.1")])
        .find(|p| p.is_file())
}

/// `cmd` with its clock moved by `offset` (`+2d`, `-2h`) by `lib` (see [`libfaketime`]).
pub(crate) fn move_clock(cmd: &mut Command, lib: &Path, offset: &str) {
    cmd.env("LD_PRELOAD", lib).env("FAKETIME", offset);
}

/// The audit entries (by hash) that checks have claimed; see [`Env::claim_audit_entry`].
#[derive(Debug, Default)]
pub(crate) struct AuditClaims(std::sync::Mutex<std::collections::HashSet<String>>);

pub(crate) fn serial_of(doc: &Value) -> String {
    doc["serial"].as_str().unwrap().to_owned()
}

/// The DER of every `CERTIFICATE` block in a PEM text, in order.
pub(crate) fn pem_certs(text: &str) -> Vec<Vec<u8>> {
    pem::parse_many(text)
        .unwrap()
        .into_iter()
        .map(|p| {
            assert_eq!(p.tag(), "CERTIFICATE");
            p.into_contents()
        })
        .collect()
}

/// Key algorithms OpenSSL makes CSRs with.
#[derive(Clone, Copy, Debug)]
pub(crate) enum KeyAlg {
    P256,
    P384,
    Ed25519,
    Rsa2048,
}

/// A CSR made by `openssl req` with an empty subject, and its key.
pub(crate) struct Csr {
    /// The CSR, PEM.
    pub(crate) path: PathBuf,
    /// The CSR's DER SubjectPublicKeyInfo.
    pub(crate) spki: Vec<u8>,
}

impl Csr {
    /// Makes `dir/name.csr` (and `name.key`) with a fresh key, asking for `dns` names.
    pub(crate) fn new(dir: &Path, name: &str, alg: KeyAlg, dns: &[&str]) -> Self {
        let path = dir.join(format!("{name}.csr"));
        let key = dir.join(format!("{name}.key"));
        let mut cmd = Command::new("openssl");
        cmd.args(["req", "-new", "-nodes", "-subj", "/"]);
        match alg {
            KeyAlg::P256 => cmd.args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]),
            KeyAlg::P384 => cmd.args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"]),
            KeyAlg::Ed25519 => cmd.args(["-newkey", "ed25519"]),
            KeyAlg::Rsa2048 => cmd.args(["-newkey", "rsa:2048"]),
        };
        if !dns.is_empty() {
            let names: Vec<String> = dns.iter().map(|d| format!("DNS:{d}")).collect();
            cmd.arg("-addext")
                .arg(format!("subjectAltName={}", names.join(",")));
        }
        cmd.arg("-keyout").arg(&key).arg("-out").arg(&path);
        let output = cmd.output().expect("openssl is needed to make CSRs");
        assert!(
            output.status.success(),
            "openssl req failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let der = pem::parse(std::fs::read(&path).unwrap())
            .unwrap()
            .into_contents();
        let (_, req) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&der).unwrap();
        let spki = req.certification_request_info.subject_pki.raw.to_vec();
        Self { path, spki }
    }

    /// The CSR's path as a command-line argument.
    pub(crate) fn arg(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// The CSR as DER.
    pub(crate) fn der(&self) -> Vec<u8> {
        pem::parse(std::fs::read(&self.path).unwrap())
            .unwrap()
            .into_contents()
    }
}

/// The expectation for a certificate issued to `agent` for `csr` just after `signed_at`.
pub(crate) fn expect(agent: &str, csr: &Csr, signed_at: OffsetDateTime) -> Expectation {
    Expectation::new(agent, signed_at)
        .csr_public_key_spki(csr.spki.clone())
        .base_url(BASE_URL)
}

/// Now, for [`Expectation::new`]: taken before a request is sent.
pub(crate) fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// The serial number of a DER certificate, as lowercase hex (as `cert show` takes it).
pub(crate) fn serial_hex(der: &[u8]) -> String {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    hex::encode(cert.raw_serial())
}

/// Copies directory `from` to `to` (which must not exist) with `cp -a`: modes and owners kept.
pub(crate) fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}
