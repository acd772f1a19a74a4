//! What the store keeps for the ACME front end (RFC 8555): accounts, orders, authorizations
//! with their challenges, and ARI replacement claims. Plain data, as for the CA's own records:
//! the ACME crate owns the state machine and only asks the store for atomic transitions.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::Serial;

/// An ACME account (RFC 8555 §7.1.2), bound to the agent its EAB credential named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeAccount {
    /// Random URL-safe identifier; the account URL ends with it.
    pub id: String,
    /// The account's public key as a JWK in RFC 7638 canonical form.
    pub jwk: String,
    /// RFC 7638 thumbprint of `jwk` (base64url), unique across accounts.
    pub thumbprint: String,
    /// The agent every certificate of this account is issued to.
    pub agent_id: String,
    /// The EAB key id that created it (consumed with the account, atomically).
    pub eab_kid: String,
    /// `mailto:` contacts, as given.
    pub contact: Vec<String>,
    /// valid or deactivated.
    pub status: AcmeAccountStatus,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// RFC 8555 §7.1.6 account states (`revoked` is server-initiated; agentca deactivates instead).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum AcmeAccountStatus {
    /// Usable.
    Valid,
    /// Deactivated by its holder; final.
    Deactivated,
}

/// An identifier in an order or authorization (RFC 8555 §9.7.7, RFC 8738).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AcmeIdentifier {
    /// `dns`, `ip` or `uri` (the agent's own SPIFFE ID).
    #[serde(rename = "type")]
    pub kind: String,
    /// The name, address or URI, in canonical form.
    pub value: String,
}

/// RFC 8555 §7.1.6 order states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum AcmeOrderStatus {
    /// Some authorization is not valid yet.
    Pending,
    /// Every authorization is valid; the order may be finalized.
    Ready,
    /// Finalize won the race and the certificate is being issued.
    Processing,
    /// Issued.
    Valid,
    /// Failed, expired, or one of its authorizations failed.
    Invalid,
}

/// An order (RFC 8555 §7.1.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeOrder {
    /// Random identifier.
    pub id: String,
    /// The account that placed it.
    pub account_id: String,
    /// The account's agent at the time of the order.
    pub agent_id: String,
    /// State.
    pub status: AcmeOrderStatus,
    /// Distinct identifiers, sorted.
    pub identifiers: Vec<AcmeIdentifier>,
    /// Authorization ids, one per identifier, in the same order.
    pub authorizations: Vec<String>,
    /// When the order stops being usable.
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The issued certificate, once valid.
    pub certificate: Option<Serial>,
    /// The ARI certificate identifier this order replaces (RFC 9773 §5).
    pub replaces: Option<String>,
    /// Why the order is invalid: a problem document as JSON.
    pub error: Option<String>,
    /// When a finalize moved it to `processing`; a `processing` order much older than that
    /// lost its finalize (a crash between two flushes) and may be finalized again.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub processing_since: Option<OffsetDateTime>,
    /// The identifiers whose authorizations were valid at creation because the agent's
    /// registration or policy listed them, not because a challenge proved them: finalize has
    /// the issuer check them against the policy of that moment. Empty in orders stored before
    /// agentca kept them, which are finalized as before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preauthorized: Vec<AcmeIdentifier>,
}

/// RFC 8555 §7.1.6 authorization states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum AcmeAuthorizationStatus {
    /// Waiting for a challenge.
    Pending,
    /// Proven (or pre-authorized).
    Valid,
    /// A challenge failed.
    Invalid,
    /// Deactivated by the client.
    Deactivated,
    /// Past `expires`.
    Expired,
    /// Revoked by the server.
    Revoked,
}

/// RFC 8555 §7.1.6 challenge states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum AcmeChallengeStatus {
    /// Not attempted.
    Pending,
    /// Being validated.
    Processing,
    /// Succeeded.
    Valid,
    /// Failed.
    Invalid,
}

/// One challenge of an authorization (RFC 8555 §8).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeChallenge {
    /// `http-01`, `dns-01` or `tls-alpn-01`; unique within its authorization.
    #[serde(rename = "type")]
    pub kind: String,
    /// 128 random bits, base64url (§8.1 asks for at least 128).
    pub token: String,
    /// State.
    pub status: AcmeChallengeStatus,
    /// When it became valid.
    #[serde(with = "time::serde::rfc3339::option")]
    pub validated: Option<OffsetDateTime>,
    /// Why it failed: a problem document as JSON.
    pub error: Option<String>,
    /// The validation record (§8.3) as JSON.
    pub validation_record: Option<String>,
}

/// An authorization (RFC 8555 §7.1.4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeAuthorization {
    /// Random identifier.
    pub id: String,
    /// The account it belongs to; no other account may use it.
    pub account_id: String,
    /// What it authorizes.
    pub identifier: AcmeIdentifier,
    /// State.
    pub status: AcmeAuthorizationStatus,
    /// When it stops being usable.
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    /// Challenges offered; none when the identifier was pre-authorized (valid at creation
    /// because the agent's registration or policy lists it).
    pub challenges: Vec<AcmeChallenge>,
    /// The order it was made for (every order makes its own authorizations); `None` in
    /// records stored before agentca kept it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
}

/// The outcome of taking one unit from a rate limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateDecision {
    /// Taken.
    Allowed,
    /// Over the limit; try again after this long.
    Limited {
        /// How long until one unit is available again.
        retry_after: time::Duration,
    },
}

/// One limit of [`crate::Store::take_rate_limits`]: `limit` units per `window` (bursts up to
/// `limit`) under `key`; a `limit` of 0 is no limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// What is limited, e.g. `acme-orders/account/ID`.
    pub key: String,
    /// Units per window.
    pub limit: u32,
    /// The window.
    pub window: time::Duration,
}

/// What a request names besides its account, read in the call that spends its nonce
/// ([`crate::Store::redeem_nonce_and_get_account`]): the record its handler reads first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestSubject<'a> {
    /// The agent the account is bound to (newOrder).
    AccountAgent,
    /// An order, by id (its URL, its finalize URL).
    Order(&'a str),
    /// An authorization, by id.
    Authorization(&'a str),
}

/// The record a [`RequestSubject`] named, `None` inside where there is none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubjectRecord {
    /// [`RequestSubject::AccountAgent`]: `None` also when there is no account.
    Agent(Option<crate::AgentRecord>),
    /// [`RequestSubject::Order`].
    Order(Option<AcmeOrder>),
    /// [`RequestSubject::Authorization`].
    Authorization(Option<AcmeAuthorization>),
}

/// What [`crate::Store::redeem_nonce_and_get_account`] read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountRedemption {
    /// Whether the nonce was fresh (and is now spent).
    pub fresh: bool,
    /// The account, if it exists.
    pub account: Option<AcmeAccount>,
    /// The subject's record, when one was asked for.
    pub subject: Option<SubjectRecord>,
}
