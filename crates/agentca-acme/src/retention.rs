//! Forgetting ACME orders nothing can still need (the rule: [`agentca_core::retention`]).
//!
//! Every renewal makes an order and its authorizations, so a fleet on short-lived certificates
//! makes thousands a day; kept forever they would fill the store and slow every listing of an
//! account's orders.

use agentca_core::retention::{GRACE, PASS_LIMIT, forget_created_before};
use time::OffsetDateTime;

use crate::AcmeService;

impl AcmeService {
    /// Forgets orders nothing can still need, at most [`PASS_LIMIT`] of them; returns how
    /// many. Blocking: it runs store calls.
    pub fn forget_old_orders(&self, now: OffsetDateTime) -> agentca_core::store::Result<u64> {
        let before =
            forget_created_before(now, self.config.order_lifetime, self.authority.policies());
        // The order's own expiry too: it was set with the order lifetime of its day, which
        // may have been longer than today's.
        self.store()
            .purge_acme_orders(before, now - GRACE, PASS_LIMIT)
    }
}
