//! What CA nodes sharing one store learn from each other through it.

use time::{Duration, OffsetDateTime};

use crate::{RevokedEntry, Serial};

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

/// How far back a poll of [`Store::issued_since`](crate::Store::issued_since) reaches before
/// the previous poll's `as_of`, for the same reason as [`REVOCATION_FEED_OVERLAP`] but
/// shorter: issuance is frequent, so a long overlap would list many certificates again on
/// every poll, and a certificate a poll misses costs only a signature on its first OCSP
/// request instead of being pre-signed.
pub const ISSUANCE_FEED_OVERLAP: Duration = Duration::seconds(2);

/// The answer to a poll for certificates other nodes stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuanceFeed {
    /// Unrevoked certificates stored at or after the time asked for, in no particular order.
    pub entries: Vec<IssuedEntry>,
    /// The store's clock, read before the scan: the `since` of the next poll (less
    /// [`ISSUANCE_FEED_OVERLAP`]).
    pub as_of: OffsetDateTime,
}

/// A stored certificate as an OCSP responder needs it to sign a `good` answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IssuedEntry {
    /// Its serial.
    pub serial: Serial,
    /// Its `notAfter` (whole seconds: what every backend keeps).
    pub not_after: OffsetDateTime,
}

/// The CRL that nodes sharing a store all serve: the highest-numbered one any of them signed.
/// Each node still signs its own (after revocations, on its period), so the numbers of two
/// nodes' CRLs interleave; without one kept in the store, a relying party balanced across
/// nodes would see the number go back and forth.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedCrl {
    /// Its CRL number.
    pub number: u64,
    /// Its `thisUpdate`.
    pub this_update: OffsetDateTime,
    /// The signed CRL, DER.
    pub der: Vec<u8>,
}

impl std::fmt::Debug for SharedCrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCrl")
            .field("number", &self.number)
            .field("this_update", &self.this_update)
            .field("der_len", &self.der.len())
            .finish()
    }
}
