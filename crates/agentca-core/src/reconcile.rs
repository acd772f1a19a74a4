//! Reconciliation of the audit log against the store (REL-6): the CA's orphan finder.
//!
//! Issuance makes the certificate durable in the store before its audit line is written, and
//! acknowledges only after both. So after any crash:
//! - an `cert.issued` line whose serial the store does not hold as issued means the store lost an
//!   acknowledged write — a failure;
//! - a `cert.revoked` line whose certificate the store does not hold as revoked — a failure;
//! - a stored certificate or revocation without its line is a write that was in flight when the
//!   process died (never acknowledged) — reported, not a failure;
//! - a reserved serial without a certificate is an issuance that died before or right after the
//!   signature — reported; it can never be reused and answers `unknown`, never `good`;
//! - a certificate the store no longer holds because it had expired long enough to be forgotten
//!   ([`crate::retention`]) is counted, not a failure: its `notAfter` (from its `cert.issued`
//!   line) is before the retention bound, or before the cutoff of a `cert.forgotten` line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::audit::{self, AuditLog, VerifyReport};
use crate::error::Result;
use crate::store::{CertificateFilter, RevocationReason, Serial, SerialEntry, Store};

/// What reconciliation found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Reconciliation {
    /// Serials the audit log says were issued but the store does not hold (lost writes).
    pub issued_missing_from_store: Vec<String>,
    /// Serials the audit log says were revoked but the store does not hold as revoked.
    pub revoked_missing_from_store: Vec<String>,
    /// Certificates in the store without a `cert.issued` line (in flight at a crash).
    pub stored_without_audit: Vec<String>,
    /// Revocations in the store without a `cert.revoked` line (in flight at a crash).
    pub revoked_without_audit: Vec<String>,
    /// Serials reserved (intent recorded) that never got a certificate.
    pub orphaned_intents: Vec<String>,
    /// Certificates in the audit log that the store forgot after they expired, as it should.
    pub forgotten_after_expiry: u64,
}

impl Reconciliation {
    /// True when no acknowledged write is missing.
    pub fn is_consistent(&self) -> bool {
        self.issued_missing_from_store.is_empty() && self.revoked_missing_from_store.is_empty()
    }
}

/// What the audit logs say, gathered line by line.
#[derive(Default)]
struct Logged {
    /// Serial → notAfter (`None` when the line has none, as lines of old versions may).
    issued: BTreeMap<String, Option<OffsetDateTime>>,
    revoked: BTreeSet<String>,
    /// The latest `expired_before` of a `cert.forgotten` line, or the retention bound.
    forgotten_before: Option<OffsetDateTime>,
}

impl Logged {
    fn visit(&mut self, entry: &audit::Entry) {
        let time_field = |name: &str| {
            entry
                .fields
                .get(name)
                .and_then(|v| v.as_str())
                .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
        };
        let serial = entry.fields.get("serial").and_then(|v| v.as_str());
        match (entry.event.as_str(), serial) {
            ("cert.issued", Some(s)) => {
                self.issued.insert(s.to_owned(), time_field("not_after"));
            }
            ("cert.revoked", Some(s)) => {
                self.revoked.insert(s.to_owned());
            }
            ("cert.forgotten", _) => {
                if let Some(t) = time_field("expired_before") {
                    self.forgotten_before = Some(self.forgotten_before.map_or(t, |b| b.max(t)));
                }
            }
            _ => {}
        }
    }

    /// Whether the store may have forgotten `serial` after it expired.
    fn may_be_forgotten(&self, serial: &str) -> bool {
        matches!(
            (self.issued.get(serial), self.forgotten_before),
            (Some(Some(not_after)), Some(bound)) if *not_after < bound
        )
    }
}

/// Verifies the audit chains and reconciles them with the store. `audit_logs` are the logs of
/// every node that writes the store (one on a single machine); their reports come back in the
/// same order. `forgotten_before` is the retention bound (certificates that expired before it
/// may have been forgotten), `None` when the CA keeps them forever. `checkpoints` are held
/// against the first log (see [`audit::Checkpoint`]).
pub fn reconcile(
    store: &dyn Store,
    audit_logs: &[&Path],
    forgotten_before: Option<OffsetDateTime>,
    checkpoints: &[audit::Checkpoint],
) -> Result<(Vec<VerifyReport>, Reconciliation)> {
    let mut logged = Logged {
        forgotten_before,
        ..Logged::default()
    };
    let mut reports = Vec::with_capacity(audit_logs.len());
    for (n, log) in audit_logs.iter().enumerate() {
        let held_to = if n == 0 { checkpoints } else { &[] };
        reports.push(audit::verify_against(log, held_to, |entry| {
            logged.visit(entry)
        })?);
    }
    let Logged {
        ref issued,
        ref revoked,
        ..
    } = logged;

    let mut out = Reconciliation::default();
    let stored: BTreeMap<String, bool> = store
        .certificates(&CertificateFilter::default())?
        .into_iter()
        .map(|c| (c.intent.serial.to_hex(), c.revocation.is_some()))
        .collect();
    for serial in issued.keys() {
        if !stored.contains_key(serial) {
            if logged.may_be_forgotten(serial) {
                out.forgotten_after_expiry += 1;
            } else {
                out.issued_missing_from_store.push(serial.clone());
            }
        }
    }
    for serial in revoked {
        if !stored.contains_key(serial) && logged.may_be_forgotten(serial) {
            continue;
        }
        let held_revoked = match serial.parse::<Serial>() {
            Ok(s) => {
                matches!(store.serial(&s)?, Some(SerialEntry::Issued(c)) if c.revocation.is_some())
            }
            Err(_) => false,
        };
        if !held_revoked {
            out.revoked_missing_from_store.push(serial.clone());
        }
    }
    for (serial, is_revoked) in &stored {
        if !issued.contains_key(serial) {
            out.stored_without_audit.push(serial.clone());
        }
        if *is_revoked && !revoked.contains(serial) {
            out.revoked_without_audit.push(serial.clone());
        }
    }
    out.orphaned_intents = store
        .orphaned_intents()?
        .into_iter()
        .map(|i| i.serial.to_hex())
        .collect();
    Ok((reports, out))
}

/// How far before the audit log's last entry [`catch_up`] looks for certificates and
/// revocations the store holds and the log lacks. A line is written a moment after its store
/// commit, so only writes in flight at a crash can lack one; ten minutes is far longer than
/// that moment and short enough to read at every start after a crash.
pub const CATCH_UP_WINDOW: time::Duration = time::Duration::minutes(10);

/// What [`catch_up`] wrote: the serials whose lines were missing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CaughtUp {
    /// Certificates given their `cert.issued` line.
    pub issued: Vec<String>,
    /// Revocations given their `cert.revoked` line.
    pub revoked: Vec<String>,
}

impl CaughtUp {
    /// True when nothing was missing.
    pub fn is_empty(&self) -> bool {
        self.issued.is_empty() && self.revoked.is_empty()
    }
}

/// Writes the `cert.issued` and `cert.revoked` lines that a crash between a store commit and
/// its audit line kept from being written (INV-10: every certificate the store holds, and so
/// can hand out after a restart, is audited), each marked `"recovered": true`, and syncs
/// them. It looks at the certificates issued and revoked in the [`CATCH_UP_WINDOW`] before the
/// log's last entry written before the crash (not the ones the restart wrote, such as the
/// repair of a torn last line), or from `lost_since` on when an append failed then; and at
/// the log's entries from twice as far back, so that a clock stepped back a little does not
/// hide a line that was written.
///
/// On a store of its own, every certificate issued or revoked in the window is this CA's. On
/// a store other nodes share, a certificate does not say which node wrote it, so only what
/// this node's own intent lines name is caught up: the issuance of a serial named by a
/// `cert.signing` line, and a revocation named by a `cert.revoking` line whose time stamp the
/// stored revocation carries (for keyCompromise, also the key's other certificates revoked
/// with that stamp), never one another node made. An empty log is left alone: it gives no
/// time to start from, and a store written without one has no line to catch up to.
pub fn catch_up(
    store: &dyn Store,
    audit: &AuditLog,
    lost_since: Option<OffsetDateTime>,
) -> Result<CaughtUp> {
    let mut logged = Logged::default();
    let mut signing: BTreeSet<Serial> = BTreeSet::new();
    // Serial → the revocation times this node's intents stamped.
    let mut revoking: BTreeMap<Serial, BTreeSet<OffsetDateTime>> = BTreeMap::new();
    let reach_back = lost_since.map(|t| t - CATCH_UP_WINDOW * 2);
    let anchor = audit.visit_recent(
        CATCH_UP_WINDOW * 2,
        reach_back,
        |entry| !written_by_a_recovery(entry),
        |entry| {
            logged.visit(&entry);
            let serial = entry
                .fields
                .get("serial")
                .and_then(|v| v.as_str())
                .and_then(|s| s.parse::<Serial>().ok());
            match (entry.event.as_str(), serial) {
                (crate::issuer::SIGNING_EVENT, Some(serial)) => {
                    signing.insert(serial);
                }
                (crate::issuer::REVOKING_EVENT, Some(serial)) => {
                    let stamp = entry
                        .fields
                        .get("revoked_at")
                        .and_then(|v| v.as_str())
                        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok());
                    revoking.entry(serial).or_default().extend(stamp);
                }
                _ => {}
            }
        },
    )?;
    let Some(anchor) = anchor else {
        return Ok(CaughtUp::default());
    };
    let since = lost_since.map_or(anchor - CATCH_UP_WINDOW, |t| {
        t.min(anchor) - CATCH_UP_WINDOW
    });

    let shared = store.is_shared();
    // Serials whose issuance may lack its line.
    let mut issued_here = signing;
    // Serials whose revocation may lack its line (and, for a compromised key's others, the
    // serial whose revocation took them along).
    let mut revoked_here: BTreeMap<Serial, Option<Serial>> = BTreeMap::new();
    if shared {
        for (serial, stamps) in &revoking {
            let Some(SerialEntry::Issued(record)) = store.serial(serial)? else {
                continue;
            };
            let Some(revocation) = record.revocation.filter(|r| stamps.contains(&r.revoked_at))
            else {
                continue;
            };
            revoked_here.insert(*serial, None);
            if revocation.reason == RevocationReason::KeyCompromise {
                for other in store.certificates_with_key(&record.intent.key_sha256)? {
                    if other.intent.serial != *serial && other.revocation == Some(revocation) {
                        revoked_here
                            .entry(other.intent.serial)
                            .or_insert(Some(*serial));
                    }
                }
            }
        }
    } else {
        issued_here.extend(
            store
                .issued_since(since)?
                .entries
                .into_iter()
                .map(|e| e.serial),
        );
        revoked_here.extend(
            store
                .revocations_since(since)?
                .entries
                .into_iter()
                .map(|e| (e.serial, None)),
        );
    }
    let candidates: BTreeSet<Serial> = issued_here
        .iter()
        .chain(revoked_here.keys())
        .copied()
        .collect();
    let mut missing = Vec::new();
    for serial in candidates {
        if let Some(SerialEntry::Issued(record)) = store.serial(&serial)? {
            let hex = serial.to_hex();
            let issued = issued_here.contains(&serial)
                && record.issued_at >= since
                && !logged.issued.contains_key(&hex);
            let because_key_of = revoked_here.get(&serial).copied();
            let revoked = because_key_of.is_some()
                && record
                    .revocation
                    .is_some_and(|r| r.revoked_at >= since && !logged.revoked.contains(&hex));
            if issued || revoked {
                missing.push((record, issued, revoked.then_some(because_key_of.flatten())));
            }
        }
    }
    missing.sort_by_key(|(record, _, _)| record.issued_at);

    let mut out = CaughtUp::default();
    for (record, issued, revoked) in &missing {
        let serial = record.intent.serial.to_hex();
        if *issued {
            // A stored DER that does not parse is for reconciliation to report; the line is
            // written without its names rather than stopping every command at the start.
            let names = names_of(&record.der);
            let (dns, ips) = names.as_ref().cloned().unwrap_or_default();
            let mut line = crate::issuer::issued_line(record, &dns, &ips);
            if let (Err(e), Some(fields)) = (&names, line.as_object_mut()) {
                fields.insert("names_unreadable".to_owned(), e.to_string().into());
            }
            audit.append("cert.issued", recovered(line))?;
            out.issued.push(serial.clone());
        }
        if let (Some(because_key_of), Some(revocation)) = (revoked, &record.revocation) {
            let line = crate::issuer::revoked_line(record, revocation, because_key_of.as_ref());
            audit.append("cert.revoked", recovered(line))?;
            out.revoked.push(serial);
        }
    }
    if !out.is_empty() {
        audit.sync()?;
    }
    Ok(out)
}

/// Whether `entry` was written by a recovery (the repair of a torn line, a catch-up) rather
/// than by the work the CA did before it stopped.
fn written_by_a_recovery(entry: &audit::Entry) -> bool {
    entry.event == audit::RECOVERED_EVENT
        || entry.fields.get("recovered") == Some(&serde_json::Value::Bool(true))
}

fn recovered(mut line: serde_json::Value) -> serde_json::Value {
    if let Some(fields) = line.as_object_mut() {
        fields.insert("recovered".to_owned(), serde_json::Value::Bool(true));
    }
    line
}

/// The DNS names and IP addresses a stored certificate carries, as its `cert.issued` line
/// lists them.
fn names_of(der: &[u8]) -> Result<(Vec<String>, Vec<String>)> {
    use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| crate::Error::Der(format!("a stored certificate: {e}")))?;
    let (mut dns, mut ips) = (Vec::new(), Vec::new());
    for ext in cert.tbs_certificate.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(d) => dns.push((*d).to_owned()),
                    GeneralName::IPAddress(b) => {
                        let ip = match b.len() {
                            4 => <[u8; 4]>::try_from(*b).map(std::net::IpAddr::from).ok(),
                            16 => <[u8; 16]>::try_from(*b).map(std::net::IpAddr::from).ok(),
                            _ => None,
                        };
                        ips.extend(ip.map(|ip| ip.to_string()));
                    }
                    _ => {}
                }
            }
        }
    }
    Ok((dns, ips))
}
