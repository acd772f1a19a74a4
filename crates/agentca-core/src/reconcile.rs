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
/// them. It looks at the log's entries of the [`CATCH_UP_WINDOW`] before its last one, and at
/// the certificates issued and revoked in that window: on a store of its own, all of them; on
/// a store other nodes share, those this node's `cert.signing` and `cert.revoking` lines name
/// (and, for a keyCompromise revocation, the other certificates of the key revoked with it),
/// since a certificate does not say which node wrote it. An empty log is left alone: it gives
/// no time to start from, and a store written without one has no line to catch up to.
pub fn catch_up(store: &dyn Store, audit: &AuditLog) -> Result<CaughtUp> {
    let recent = audit.recent_entries(CATCH_UP_WINDOW)?;
    let Some(newest) = recent.first() else {
        return Ok(CaughtUp::default());
    };
    let since = newest.time - CATCH_UP_WINDOW;
    let mut logged = Logged::default();
    let mut serials: BTreeSet<Serial> = BTreeSet::new();
    let mut revoking = Vec::new();
    // Certificates whose revocation, not issuance, is this node's: the ones it revoked (another
    // node may have issued them) and a compromised key's others.
    let mut revoked_here: BTreeSet<Serial> = BTreeSet::new();
    for entry in &recent {
        logged.visit(entry);
        let serial = || {
            entry
                .fields
                .get("serial")
                .and_then(|v| v.as_str())
                .and_then(|s| s.parse::<Serial>().ok())
        };
        match entry.event.as_str() {
            crate::issuer::SIGNING_EVENT => serials.extend(serial()),
            crate::issuer::REVOKING_EVENT => revoking.extend(serial()),
            _ => {}
        }
    }
    for serial in revoking {
        revoked_here.insert(serial);
        // A keyCompromise revocation takes the key's other certificates with it.
        if let Some(SerialEntry::Issued(record)) = store.serial(&serial)?
            && record
                .revocation
                .is_some_and(|r| r.reason == RevocationReason::KeyCompromise)
        {
            let others = store.certificates_with_key(&record.intent.key_sha256)?;
            revoked_here.extend(others.into_iter().map(|c| c.intent.serial));
        }
    }
    if !store.is_shared() {
        serials.extend(
            store
                .issued_since(since)?
                .entries
                .into_iter()
                .map(|e| e.serial),
        );
        serials.extend(
            store
                .revocations_since(since)?
                .entries
                .into_iter()
                .map(|e| e.serial),
        );
    }
    let candidates = serials
        .iter()
        .map(|s| (*s, true))
        .chain(revoked_here.difference(&serials).map(|s| (*s, false)));
    let mut missing = Vec::new();
    for (serial, issuance_too) in candidates {
        if let Some(SerialEntry::Issued(record)) = store.serial(&serial)? {
            let hex = serial.to_hex();
            let issued =
                issuance_too && record.issued_at >= since && !logged.issued.contains_key(&hex);
            let revoked = record
                .revocation
                .is_some_and(|r| r.revoked_at >= since && !logged.revoked.contains(&hex));
            if issued || revoked {
                missing.push((record, issued, revoked));
            }
        }
    }
    missing.sort_by_key(|(record, _, _)| record.issued_at);

    let mut out = CaughtUp::default();
    for (record, issued, revoked) in &missing {
        let serial = record.intent.serial.to_hex();
        if *issued {
            let (dns, ips) = names_of(&record.der)?;
            let line = crate::issuer::issued_line(record, &dns, &ips);
            audit.append("cert.issued", recovered(line))?;
            out.issued.push(serial.clone());
        }
        if let (true, Some(revocation)) = (revoked, &record.revocation) {
            let line = crate::issuer::revoked_line(record, revocation);
            audit.append("cert.revoked", recovered(line))?;
            out.revoked.push(serial);
        }
    }
    if !out.is_empty() {
        audit.sync()?;
    }
    Ok(out)
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
