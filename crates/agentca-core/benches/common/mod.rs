//! What every benchmark needs: a CA on disk, registered agents with their CSRs, serials, a
//! certificate template for filling the store, and a way to tell a measuring run from the quick
//! run that `cargo test --benches` does.
//!
//! Each benchmark uses a different part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use agentca_core::ca::{self, Ca, DataDir, InitOptions};
use agentca_core::csr::{CertificateRequest, KeyKind};
use agentca_core::issuer::{Authority, IssueRequest};
use agentca_core::keyfile::Protection;
use agentca_core::profile;
use agentca_core::store::{
    AgentRecord, CertificateRecord, EnrollmentMethod, IssuanceIntent, Serial, Store,
};
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use time::OffsetDateTime;

/// The trust domain of every benchmark CA.
pub(crate) const TRUST_DOMAIN: &str = "bench.example";

/// Whether this is a measuring run (`cargo bench`) rather than the single smoke pass that
/// `cargo test --benches` makes; cargo passes `--bench` only to the former (and criterion
/// treats `--bench --test` as a test run too).
pub(crate) fn measuring() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test")
}

/// A CA in its own data directory, with the issuing key loaded.
pub(crate) struct Fixture {
    // Kept for its Drop: the directory goes away with the fixture (None for a kept directory).
    _temp: Option<tempfile::TempDir>,
    pub(crate) dir: DataDir,
    pub(crate) ca: Ca,
    pub(crate) authority: Authority,
}

impl Fixture {
    /// A new ECDSA P-256 CA in a temporary directory.
    pub(crate) fn new() -> Self {
        let temp = tempfile::tempdir().expect("temporary directory");
        let dir = DataDir::new(temp.path().join("ca"));
        Self::init(dir, Some(temp))
    }

    /// A new ECDSA P-256 CA in `path`, which must not exist yet, kept after the run.
    pub(crate) fn at(path: &Path) -> Self {
        Self::init(DataDir::new(path), None)
    }

    fn init(dir: DataDir, temp: Option<tempfile::TempDir>) -> Self {
        ca::init(
            &dir,
            &InitOptions {
                trust_domain: TRUST_DOMAIN.into(),
                key_type: KeyKind::EcdsaP256,
                base_url: None,
                protection: Protection::InsecurePlaintext,
                issuing_key_in: None,
            },
        )
        .expect("init the benchmark CA");
        let ca = Ca::open(&dir).expect("open the benchmark CA");
        let authority = ca
            .authority(&Protection::InsecurePlaintext)
            .expect("load the issuing key");
        Self {
            _temp: temp,
            dir,
            ca,
            authority,
        }
    }

    /// The store directory (for its size on disk).
    pub(crate) fn store_path(&self) -> PathBuf {
        self.dir.store()
    }
}

/// An agent with its own P-256 key and a CSR naming it, as an enrolling client would send.
pub(crate) struct Requester {
    pub(crate) agent_id: String,
    pub(crate) csr_der: Vec<u8>,
    pub(crate) csr: CertificateRequest,
}

impl Requester {
    /// Registers `spiffe://bench.example/agent/NAME` and makes its CSR.
    pub(crate) fn register(ca: &Ca, name: &str) -> Self {
        let agent_id = format!("spiffe://{TRUST_DOMAIN}/agent/{name}");
        ca.store()
            .insert_agent(&AgentRecord {
                id: agent_id.clone(),
                owner: Some("bench".into()),
                policy: None,
                dns: Vec::new(),
                disabled: false,
                created_at: OffsetDateTime::now_utc(),
                early_renewal: None,
            })
            .expect("register the agent");
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("agent key");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(
            agent_id.as_str().try_into().expect("a SPIFFE ID is IA5"),
        )];
        let csr_der = params.serialize_request(&key).expect("CSR").der().to_vec();
        let csr = CertificateRequest::parse(&csr_der).expect("the CSR parses");
        Self {
            agent_id,
            csr_der,
            csr,
        }
    }

    /// The request as a front end hands it to the authority.
    pub(crate) fn request(&self) -> IssueRequest<'_> {
        IssueRequest {
            agent_id: &self.agent_id,
            csr: &self.csr,
            method: EnrollmentMethod::Cli,
            lifetime: None,
            validated_dns: &[],
            validated_ips: &[],
            csr_key_thumbprint: None,
        }
    }
}

/// A fresh serial as agentca draws it: 16 bytes from the OS CSPRNG, first byte 0x01..=0x7f.
pub(crate) fn random_serial() -> Serial {
    loop {
        let mut bytes = [0u8; Serial::LEN];
        aws_lc_rs::rand::fill(&mut bytes).expect("system RNG");
        bytes[0] &= 0x7f;
        if let Some(serial) = Serial::from_bytes(bytes) {
            return serial;
        }
    }
}

/// A small seeded generator (SplitMix64) for fixtures that must be the same on every run:
/// the CRL's serials, times and reasons. Not for anything secret.
pub(crate) struct Seeded(u64);

impl Seeded {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A serial shaped like agentca's (16 bytes, first byte 0x01..=0x7f).
    pub(crate) fn serial(&mut self) -> Serial {
        loop {
            let mut bytes = [0u8; Serial::LEN];
            bytes[..8].copy_from_slice(&self.next_u64().to_be_bytes());
            bytes[8..].copy_from_slice(&self.next_u64().to_be_bytes());
            bytes[0] &= 0x7f;
            if let Some(serial) = Serial::from_bytes(bytes) {
                return serial;
            }
        }
    }
}

/// Signs one real leaf for `requester`; its DER is the template for records written straight
/// into the store.
pub(crate) fn template_der(authority: &Authority, requester: &Requester) -> Vec<u8> {
    let now = profile::whole_seconds(OffsetDateTime::now_utc());
    let auth = authority
        .authorize(&requester.request(), now)
        .expect("authorized");
    let (not_before, not_after) = profile::validity(now, auth.lifetime());
    authority
        .ca()
        .sign_leaf(&auth, random_serial(), not_before, not_after)
        .expect("template certificate")
}

/// Writes a certificate record for `serial` the way issuance does (reserve, then record), with
/// `template` carrying the serial in place of its own so that no two DERs are equal.
pub(crate) fn record_certificate(
    store: &dyn Store,
    template: &[u8],
    template_serial_at: usize,
    serial: Serial,
    agent_id: &str,
    now: OffsetDateTime,
) -> CertificateRecord {
    let (not_before, not_after) = profile::validity(now, time::Duration::hours(24));
    let intent = IssuanceIntent {
        serial,
        agent_id: agent_id.to_owned(),
        method: EnrollmentMethod::Acme,
        not_before,
        not_after,
        key_sha256: hex::encode(serial.as_bytes()).repeat(2),
        reserved_at: now,
    };
    store.reserve_serial(&intent).expect("reserve");
    let mut der = template.to_vec();
    der[template_serial_at..template_serial_at + Serial::LEN].copy_from_slice(serial.as_bytes());
    let record = CertificateRecord {
        intent,
        der,
        issued_at: now,
        revocation: None,
    };
    store.record_certificate(&record).expect("record");
    record
}

/// Where the serial's 16 bytes sit in a certificate's DER (the first `02 10` INTEGER).
pub(crate) fn serial_offset(der: &[u8]) -> usize {
    der.windows(2)
        .position(|w| w == [0x02, 0x10])
        .map(|at| at + 2)
        .expect("a 16-byte serial INTEGER")
}

/// Bytes used by the files under `path` (apparent size, like `du --apparent-size`).
pub(crate) fn disk_usage(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => disk_usage(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// CPU time (user + system) this process has used so far, from `/proc/self/stat`.
pub(crate) fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(
        ticks as f64 / clock_ticks_per_second(),
    ))
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The value at quantile `q` (0..=1) of sorted `values`.
pub(crate) fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

/// The median of unsorted `values`.
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `1234567` → `"1.2 MB"`-style sizes for the printed tables.
pub(crate) fn human_bytes(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2} GB", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1} MB", n / 1e6)
    } else {
        format!("{:.1} kB", n / 1e3)
    }
}
