//! How long the records an enrollment protocol keeps for itself stay in the store: ACME orders
//! (with their authorizations and `replaces` claims) and SCEP transactions.
//!
//! Such a record is forgotten once nothing can still use it:
//!
//! - its protocol is done with it (an ACME order has expired, plus a day for late downloads and
//!   for operators looking into a failure);
//! - the certificate it was made against has expired too: the certificate an ACME order
//!   replaces (RFC 9773 `replaces`, whose claim stops a second order replacing a certificate
//!   still in use), or the certificate that signed a SCEP renewal (whose transaction record
//!   stops a replayed request from issuing again). That certificate was issued before the
//!   record was made, under a policy's `max_lifetime`, so creation plus the longest
//!   `max_lifetime` of the policies in force bounds its expiry.
//!
//! Certificates are kept longer, and by their own rule: a certificate record goes once it has
//! been expired for the CA's `keep_expired_certificates` (a week by default), and a revoked one
//! not before the newest CRL has stopped listing it, so that it appeared on a CRL issued after
//! its expiry (REV-4). Its `cert.issued` and `cert.revoked` lines stay in the audit log.

use time::{Duration, OffsetDateTime};

use crate::error::Result;
use crate::issuer::{Authority, rfc3339};
use crate::policy::PolicySet;
use crate::store::CrlState;

/// How long an expired certificate's record stays in the store unless `config.toml` says
/// otherwise: a week of history for `cert list` and `cert show`.
pub const DEFAULT_KEEP_EXPIRED: Duration = Duration::days(7);

/// Kept past the bounds above.
pub const GRACE: Duration = Duration::days(1);

/// Records forgotten per pass at most, so that a pass never holds the store for long; a pass
/// every few minutes still forgets far more a day than any fleet makes.
pub const PASS_LIMIT: usize = 10_000;

/// The creation time before which a record whose protocol keeps it for `own_lifetime` may be
/// forgotten at `now`.
pub fn forget_created_before(
    now: OffsetDateTime,
    own_lifetime: Duration,
    policies: &PolicySet,
) -> OffsetDateTime {
    now - own_lifetime.max(policies.longest_max_lifetime()) - GRACE
}

/// Which certificates a purge at `now` may forget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CertificateCutoffs {
    /// Certificates that expired before this.
    pub expired_before: OffsetDateTime,
    /// Revoked ones only if they also expired before this: the newest CRL lists revoked
    /// certificates until one CRL validity after their expiry, so a certificate that expired
    /// before its `thisUpdate` minus that validity is no longer on it, nor on any later one
    /// (`thisUpdate` never goes back). Without a published CRL, no revoked certificate goes.
    pub revoked_expired_before: OffsetDateTime,
}

/// The cutoffs for a purge at `now` keeping expired certificates for `keep`.
pub fn certificate_cutoffs(
    now: OffsetDateTime,
    keep: Duration,
    newest_crl: Option<&CrlState>,
    crl_validity: Duration,
) -> CertificateCutoffs {
    let expired_before = now - keep;
    let revoked_expired_before = match newest_crl {
        Some(crl) => (crl.this_update - crl_validity).min(expired_before),
        None => OffsetDateTime::UNIX_EPOCH,
    };
    CertificateCutoffs {
        expired_before,
        revoked_expired_before,
    }
}

/// Forgets at most [`PASS_LIMIT`] certificates that expired more than `keep` ago (see the
/// module's rule), and records the pass in the audit log when it forgot any. Returns how many.
/// Blocking: it runs store calls.
pub fn forget_expired_certificates(
    authority: &Authority,
    now: OffsetDateTime,
    keep: Duration,
    crl_validity: Duration,
) -> Result<u64> {
    let store = authority.store();
    let crl = store.crl_state()?;
    let cutoffs = certificate_cutoffs(now, keep, crl.as_ref(), crl_validity);
    let forgotten = store.purge_certificates(
        cutoffs.expired_before,
        cutoffs.revoked_expired_before,
        PASS_LIMIT,
    )?;
    if forgotten > 0 {
        store.commit()?;
        // After the purge: a crash in between loses only this line, and reconciliation
        // recognises such certificates by the retention rule itself.
        authority.audit().append_durable(
            "cert.forgotten",
            serde_json::json!({
                "count": forgotten,
                "expired_before": rfc3339(cutoffs.expired_before),
                "revoked_expired_before": rfc3339(cutoffs.revoked_expired_before),
            }),
        )?;
    }
    Ok(forgotten)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    fn policy(max_lifetime: &str) -> Policy {
        let text = format!(
            "agents = [\"/agent/**\"]\nmethods = [\"acme\"]\ndefault_lifetime = \"5m\"\n\
             max_lifetime = \"{max_lifetime}\"\nkey_types = [\"ecdsa-p256\"]\n"
        );
        Policy::parse(&format!("p{max_lifetime}"), "p.toml", &text).unwrap()
    }

    #[test]
    fn revoked_certificates_wait_for_the_crl_to_drop_them() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let week = Duration::days(7);
        let day = Duration::days(1);
        // No CRL yet: nothing revoked goes.
        let none = certificate_cutoffs(now, week, None, day);
        assert_eq!(none.expired_before, now - week);
        assert_eq!(none.revoked_expired_before, OffsetDateTime::UNIX_EPOCH);
        // A CRL of now: it lists what expired within its validity; the week decides.
        let crl = CrlState {
            number: 9,
            this_update: now,
        };
        let fresh = certificate_cutoffs(now, week, Some(&crl), day);
        assert_eq!(fresh.revoked_expired_before, now - week);
        // A CRL two weeks old (the CRL job stopped): it still lists what expired the day
        // before it, so those stay.
        let old = CrlState {
            number: 9,
            this_update: now - Duration::days(14),
        };
        let stale = certificate_cutoffs(now, week, Some(&old), day);
        assert_eq!(stale.revoked_expired_before, now - Duration::days(15));
        assert!(stale.revoked_expired_before < stale.expired_before);
    }

    #[test]
    fn records_outlive_their_own_use_and_every_certificate_made_before_them() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let eight_hours = Duration::hours(8);
        // Short-lived certificates: the record's own lifetime decides.
        let short = PolicySet::from_policies(vec![policy("1h")]);
        assert_eq!(
            forget_created_before(now, eight_hours, &short),
            now - eight_hours - GRACE
        );
        // The longest policy decides, whichever it is.
        let mixed = PolicySet::from_policies(vec![policy("1h"), policy("30d"), policy("1d")]);
        assert_eq!(mixed.longest_max_lifetime(), Duration::days(30));
        let before = forget_created_before(now, eight_hours, &mixed);
        assert_eq!(before, now - Duration::days(31));
        // A record made at the cutoff has outlived the certificate it was made against.
        assert!(before + Duration::days(30) + GRACE <= now);
        // Without policies, only the record's own lifetime.
        let none = PolicySet::from_policies(vec![]);
        assert_eq!(
            forget_created_before(now, Duration::ZERO, &none),
            now - GRACE
        );
    }
}
