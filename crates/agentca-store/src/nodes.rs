//! What CA nodes sharing one store learn from each other through it.

use time::{Duration, OffsetDateTime};

use crate::RevokedEntry;

/// How far back a poll of [`Store::revocations_since`](crate::Store::revocations_since) reaches
/// before the previous poll's `as_of`: a revocation is stamped when its write runs, which may
/// be before a concurrent poll reads the clock, while it becomes visible only at its commit.
/// Single-statement commits take milliseconds; a minute leaves room for a stalled one.
pub const REVOCATION_FEED_OVERLAP: Duration = Duration::minutes(1);

/// The answer to a poll for revocations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevocationFeed {
    /// Revocations recorded at or after the time asked for, in no particular order.
    pub entries: Vec<RevokedEntry>,
    /// The store's clock, read before the scan: the `since` of the next poll (less
    /// [`REVOCATION_FEED_OVERLAP`]).
    pub as_of: OffsetDateTime,
}
