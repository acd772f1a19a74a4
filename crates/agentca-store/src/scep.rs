//! What the store keeps for the SCEP front end (RFC 8894): the requests that issued a
//! certificate, so that a retried request gets the certificate it already caused instead of a
//! second one (RFC 8894 §3.3.1: a client that got no answer resends the same request).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::Serial;

/// A SCEP request that issued a certificate.
///
/// It is found by `request_key`, which the front end derives from what makes a retry a retry
/// (the requested key, the signer's certificate and the client's transactionID): the
/// transactionID alone is the client's choice, and clients derive it from the key, so a later
/// renewal with the same key repeats it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScepTransaction {
    /// The lookup key (hex), unique per request.
    pub request_key: String,
    /// The client's transactionID, for the record.
    pub transaction_id: String,
    /// The certificate it issued.
    pub serial: Serial,
    /// The agent it was issued to.
    pub agent_id: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}
