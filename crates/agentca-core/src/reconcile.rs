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
//!   signature — reported; it can never be reused and answers `unknown`, never `good`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;

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
}

impl Reconciliation {
    /// True when no acknowledged write is missing.
    pub fn is_consistent(&self) -> bool {
        self.issued_missing_from_store.is_empty() && self.revoked_missing_from_store.is_empty()
    }
}

/// Verifies the audit chain and reconciles it with the store.
pub fn reconcile(store: &dyn Store, audit_log: &Path) -> Result<(VerifyReport, Reconciliation)> {
    let mut issued = BTreeSet::new();
    let mut revoked = BTreeSet::new();
    let report = audit::verify_each(audit_log, |entry| {
        let serial = entry.fields.get("serial").and_then(|v| v.as_str());
        match (entry.event.as_str(), serial) {
            ("cert.issued", Some(s)) => {
                issued.insert(s.to_owned());
            }
            ("cert.revoked", Some(s)) => {
                revoked.insert(s.to_owned());
            }
            _ => {}
        }
    })?;

    let mut out = Reconciliation::default();
    let stored: BTreeMap<String, bool> = store
        .certificates(&CertificateFilter::default())?
        .into_iter()
        .map(|c| (c.intent.serial.to_hex(), c.revocation.is_some()))
        .collect();
    for serial in &issued {
        if !stored.contains_key(serial) {
            out.issued_missing_from_store.push(serial.clone());
        }
    }
    for serial in &revoked {
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
        if !issued.contains(serial) {
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
    Ok((report, out))
}
