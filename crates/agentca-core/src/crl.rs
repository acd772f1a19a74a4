//! Full CRLs (RFC 5280 §5) signed by the issuing CA.
//!
//! The CRL number comes from the store, which hands out strictly increasing numbers and a
//! `thisUpdate` that never goes backwards, even across restarts and clock steps; the number is
//! durable before the CRL leaves this module. A revoked certificate stays listed until one CRL
//! validity period after it expires, so at least one CRL issued after its expiry lists it
//! (REV-4); entries are never dropped earlier.

use rcgen::{
    CertificateRevocationListParams, CrlDistributionPoint, CrlIssuingDistributionPoint, CrlScope,
    Issuer, KeyIdMethod, RevokedCertParams, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::error::{Error, Result};
use crate::issuer::{Authority, IssuingCa};
use crate::signer::RcgenSigner;
use crate::store::{RevocationReason, RevokedEntry};

/// How long a CRL is valid by default (BR §7.2 allows up to 10 days; agents' certificates are
/// short-lived, so a day).
pub const DEFAULT_VALIDITY: Duration = Duration::hours(24);

/// A signed CRL and what went into it.
#[derive(Clone, Debug)]
pub struct Crl {
    /// The CRL, DER.
    pub der: Vec<u8>,
    /// Its CRL number.
    pub number: u64,
    /// `thisUpdate`.
    pub this_update: OffsetDateTime,
    /// `nextUpdate`.
    pub next_update: OffsetDateTime,
    /// How many certificates it lists.
    pub entries: usize,
}

/// Allocates the next CRL number durably, collects the revoked entries and signs the CRL.
pub fn publish(authority: &Authority, now: OffsetDateTime, validity: Duration) -> Result<Crl> {
    let store = authority.store();
    let previous = store.crl_state()?;
    let state = store.next_crl_number(crate::profile::whole_seconds(now))?;
    // The number is durable before any CRL carrying it exists.
    store.commit()?;
    fail_point!("crl::numbered");
    let this_update = state.this_update;
    let next_update = this_update + validity;
    let entries = store.revoked(listed_since(this_update, validity, previous.as_ref()))?;
    let der = build(
        authority.ca(),
        state.number,
        this_update,
        next_update,
        &entries,
    )?;
    fail_point!("crl::signed");
    // The data directory's record of the highest number published, kept apart from the store
    // so that restoring an older snapshot of the store cannot bring the number back (REL-9).
    authority.audit().append_durable(
        "crl.published",
        serde_json::json!({
            "number": state.number,
            "this_update": crate::issuer::rfc3339(this_update),
            "entries": entries.len(),
        }),
    )?;
    Ok(Crl {
        der,
        number: state.number,
        this_update,
        next_update,
        entries: entries.len(),
    })
}

/// The oldest `notAfter` a CRL at `this_update` lists. RFC 5280 §3.3: an entry stays until it
/// has appeared on one CRL issued after its certificate expired. One CRL validity back keeps a
/// relying party's cached CRL in step; and every certificate that expired after the previous
/// CRL's `thisUpdate` has not been on such a CRL yet, however long ago that was (a CA that was
/// down for longer than a CRL validity). Those that expired before it were on that CRL, if it
/// listed them, or on an earlier one. With no CRL before this one, every revoked certificate is
/// listed.
fn listed_since(
    this_update: OffsetDateTime,
    validity: Duration,
    previous: Option<&agentca_store::CrlState>,
) -> OffsetDateTime {
    match previous {
        Some(previous) => (this_update - validity).min(previous.this_update),
        None => OffsetDateTime::UNIX_EPOCH,
    }
}

/// Records, durably, that this node serves `crl`, which another node signed (and
/// [`read_signed`] checked): a restore from this node's data directory alone then numbers its
/// CRLs above it, as it does above the node's own (REL-9).
pub fn record_adopted(authority: &Authority, crl: &Crl) -> Result<()> {
    authority.audit().append_durable(
        "crl.adopted",
        serde_json::json!({
            "number": crl.number,
            "this_update": crate::issuer::rfc3339(crl.this_update),
            "entries": crl.entries,
        }),
    )?;
    Ok(())
}

/// Reads a CRL that another node of this CA signed (as the store shares it): it must parse
/// whole, name `ca` as its issuer and carry `ca`'s signature, so that a store written by
/// something else cannot make a node serve a CRL its CA never signed.
pub fn read_signed(ca: &IssuingCa, der: &[u8]) -> Result<Crl> {
    use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
    use x509_parser::prelude::FromDer;
    use x509_parser::revocation_list::CertificateRevocationList;
    let bad = |why: &str| Error::Der(format!("shared CRL: {why}"));
    let (rest, crl) = CertificateRevocationList::from_der(der).map_err(|_| bad("not a CRL"))?;
    if !rest.is_empty() {
        return Err(bad("trailing bytes"));
    }
    let (_, issuing) = x509_parser::certificate::X509Certificate::from_der(ca.cert_der())
        .map_err(|_| bad("cannot read the issuing CA certificate"))?;
    if crl.issuer().as_raw() != issuing.subject().as_raw() {
        return Err(bad("another issuer"));
    }
    crl.verify_signature(issuing.public_key())
        .map_err(|_| bad("not signed by the issuing CA"))?;
    // Its scope must be this node's CRL URL, the one this node's certificates name (RFC 5280
    // §6.3.3 has relying parties check it): nodes configured with other URLs do not share.
    let scope = crl
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::IssuingDistributionPoint(idp) => idp.distribution_point.as_ref(),
            _ => None,
        });
    let names_ours = matches!(scope, Some(DistributionPointName::FullName(names))
        if names.iter().any(|n| matches!(n, GeneralName::URI(uri) if *uri == ca.urls().crl)));
    if !names_ours {
        return Err(bad("another distribution point"));
    }
    let number = number_of(&crl).map_err(bad)?;
    let next_update = crl.next_update().ok_or_else(|| bad("no nextUpdate"))?;
    Ok(Crl {
        number,
        this_update: crl.last_update().to_datetime(),
        next_update: next_update.to_datetime(),
        entries: crl.iter_revoked_certificates().count(),
        der: der.to_vec(),
    })
}

/// A parsed CRL's number, if it has one agentca could have given.
pub(crate) fn number_of(
    crl: &x509_parser::revocation_list::CertificateRevocationList<'_>,
) -> std::result::Result<u64, &'static str> {
    let digits = crl.crl_number().ok_or("has no CRL number")?.to_bytes_be();
    if digits.len() > 8 {
        return Err("its CRL number is larger than agentca's");
    }
    Ok(digits.iter().fold(0u64, |n, d| (n << 8) | u64::from(*d)))
}

/// Builds and signs a CRL from the given entries (no store involved).
pub fn build(
    ca: &IssuingCa,
    number: u64,
    this_update: OffsetDateTime,
    next_update: OffsetDateTime,
    entries: &[RevokedEntry],
) -> Result<Vec<u8>> {
    let params = CertificateRevocationListParams {
        this_update,
        next_update,
        crl_number: SerialNumber::from_slice(&minimal_be(number)),
        issuing_distribution_point: Some(CrlIssuingDistributionPoint {
            distribution_point: CrlDistributionPoint {
                uris: vec![ca.urls().crl.clone()],
            },
            scope: Some(CrlScope::UserCertsOnly),
        }),
        revoked_certs: entries
            .iter()
            .map(|e| RevokedCertParams {
                serial_number: SerialNumber::from_slice(e.serial.as_bytes()),
                revocation_time: e.revocation.revoked_at,
                reason_code: reason(e.revocation.reason),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::PreSpecified(ca.key_identifier().to_vec()),
    };
    let signer = RcgenSigner::new(ca.signer())?;
    let issuer = Issuer::from_ca_cert_der(&ca.cert_der().into(), &signer)
        .map_err(|e| Error::Der(format!("issuing CA certificate: {e}")))?;
    let crl = params.signed_by(&issuer).map_err(|e| {
        signer
            .take_error()
            .unwrap_or_else(|| Error::Signing(format!("CRL: {e}")))
    })?;
    Ok(crl.der().to_vec())
}

/// RFC 5280 §5.3.1: the reasonCode extension is omitted for `unspecified`.
fn reason(r: RevocationReason) -> Option<rcgen::RevocationReason> {
    use rcgen::RevocationReason as R;
    Some(match r {
        RevocationReason::Unspecified => return None,
        RevocationReason::KeyCompromise => R::KeyCompromise,
        RevocationReason::CaCompromise => R::CaCompromise,
        RevocationReason::AffiliationChanged => R::AffiliationChanged,
        RevocationReason::Superseded => R::Superseded,
        RevocationReason::CessationOfOperation => R::CessationOfOperation,
        RevocationReason::RemoveFromCrl => R::RemoveFromCrl,
        RevocationReason::PrivilegeWithdrawn => R::PrivilegeWithdrawn,
        RevocationReason::AaCompromise => R::AaCompromise,
        _ => R::Unspecified,
    })
}

fn minimal_be(n: u64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(7);
    bytes[skip..].to_vec()
}

#[cfg(test)]
mod listing_tests {
    use super::*;

    #[test]
    fn an_entry_stays_until_a_crl_issued_after_its_expiry_has_listed_it() {
        let day = Duration::days(1);
        let now = OffsetDateTime::UNIX_EPOCH + Duration::days(1000);
        let previous = |ago: Duration| agentca_store::CrlState {
            number: 7,
            this_update: now - ago,
        };
        // CRLs every hour: one validity back, for a relying party's cached CRL.
        assert_eq!(
            listed_since(now, day, Some(&previous(Duration::hours(1)))),
            now - day
        );
        // The first CRL after 30 days down: everything that expired since the last one.
        assert_eq!(
            listed_since(now, day, Some(&previous(Duration::days(30)))),
            now - Duration::days(30)
        );
        // No CRL before: every revoked certificate.
        assert_eq!(listed_since(now, day, None), OffsetDateTime::UNIX_EPOCH);
    }
}
