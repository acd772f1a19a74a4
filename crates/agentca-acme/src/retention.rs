//! How long the store keeps ACME orders, and forgetting them after that.
//!
//! Every renewal makes an order and its authorizations, so a fleet on short-lived certificates
//! makes thousands a day; kept forever they would fill the store and slow every listing of an
//! account's orders. An order is forgotten once nothing can still need it:
//!
//! - it has expired (a client can no longer finalize it), plus a day for late downloads of its
//!   certificate and for operators looking into a failure;
//! - the certificate it replaced (RFC 9773 `replaces`) has expired too, so forgetting its claim
//!   cannot let a second order replace a certificate still in use (RFC 9773 §5,
//!   `alreadyReplaced`). That certificate was issued before the order was created, under a
//!   policy's `max_lifetime`, so creation plus the longest `max_lifetime` of the policies bounds
//!   its expiry.
//!
//! The certificates themselves stay: revocation, CRLs and audits need them.

use time::{Duration, OffsetDateTime};

use crate::AcmeService;

/// Kept past the order's own expiry.
pub const GRACE: Duration = Duration::days(1);

/// Orders forgotten per pass at most, so that a pass never holds the store for long; a pass
/// every few minutes still forgets far more orders a day than any fleet makes.
pub const PASS_LIMIT: usize = 10_000;

/// The creation time before which an order may be forgotten at `now`.
pub fn forget_created_before(
    now: OffsetDateTime,
    order_lifetime: Duration,
    longest_certificate: Duration,
) -> OffsetDateTime {
    now - order_lifetime.max(longest_certificate) - GRACE
}

impl AcmeService {
    /// Forgets orders nothing can still need (see the module's rules), at most
    /// [`PASS_LIMIT`] of them; returns how many. Blocking: it runs store calls.
    pub fn forget_old_orders(&self, now: OffsetDateTime) -> agentca_core::store::Result<u64> {
        let longest = self
            .authority
            .policies()
            .policies()
            .iter()
            .map(agentca_core::policy::Policy::max_lifetime)
            .max()
            .unwrap_or(Duration::ZERO);
        let before = forget_created_before(now, self.config.order_lifetime, longest);
        // The order's own expiry too: it was set with the order lifetime of its day, which
        // may have been longer than today's.
        self.store()
            .purge_acme_orders(before, now - GRACE, PASS_LIMIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_outlive_their_own_expiry_and_the_certificates_they_replace() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let eight_hours = Duration::hours(8);
        // Short-lived certificates: the order's own lifetime decides.
        let before = forget_created_before(now, eight_hours, Duration::hours(1));
        assert_eq!(before, now - eight_hours - GRACE);
        // A policy allowing 30 days: an order is kept until any certificate issued before it
        // under that policy has expired.
        let before = forget_created_before(now, eight_hours, Duration::days(30));
        assert_eq!(before, now - Duration::days(31));
        // An order created at the cutoff was expired (and its replaced certificate too) for
        // at least the grace day.
        let created = before;
        assert!(created + eight_hours + GRACE <= now);
        assert!(created + Duration::days(30) + GRACE <= now);
    }
}
