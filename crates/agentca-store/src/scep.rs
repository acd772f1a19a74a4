//! What the store keeps for the SCEP front end (RFC 8894): the transactions that issued a
//! certificate, so that a retried request gets the certificate it already caused instead of a
//! second one (RFC 8894 §3.3.1: a client that got no answer resends the same request).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::Serial;

/// A SCEP transaction that issued a certificate.
///
/// It is found by the requested public key together with the client's transactionID: the
/// transactionID alone is chosen by the client, so another requester reusing it must not be
/// able to reach this record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScepTransaction {
    /// SHA-256 (hex) of the requested SubjectPublicKeyInfo, as in
    /// [`IssuanceIntent::key_sha256`](crate::IssuanceIntent::key_sha256).
    pub key_sha256: String,
    /// The client's transactionID.
    pub transaction_id: String,
    /// The certificate it issued.
    pub serial: Serial,
    /// The agent it was issued to.
    pub agent_id: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}
