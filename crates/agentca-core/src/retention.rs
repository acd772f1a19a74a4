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
//! Certificates themselves are not forgotten here: revocation, CRLs and audits need them.

use time::{Duration, OffsetDateTime};

use crate::policy::PolicySet;

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
