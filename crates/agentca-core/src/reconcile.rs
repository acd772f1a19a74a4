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

use crate::audit::{self, VerifyReport};
use crate::error::Result;
use crate::store::{CertificateFilter, Serial, SerialEntry, Store};

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
/// may have been forgotten), `None` when the CA keeps them forever.
pub fn reconcile(
    store: &dyn Store,
    audit_logs: &[&Path],
    forgotten_before: Option<OffsetDateTime>,
) -> Result<(Vec<VerifyReport>, Reconciliation)> {
    let mut logged = Logged {
        forgotten_before,
        ..Logged::default()
    };
    let mut reports = Vec::with_capacity(audit_logs.len());
    for log in audit_logs {
        reports.push(audit::verify_each(log, |entry| logged.visit(entry))?);
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
