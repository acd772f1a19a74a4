//! Storage for agentca.
//!
//! One [`Store`] trait, shaped around what the CA must never lose (design §9): reserved serials
//! with their intent, issued certificates, revocations, consumed tokens and the CRL number.
//! Backends: [`SledStore`] (embedded, the default) and [`PostgresStore`] (one database shared by
//! several CA nodes). Every backend runs the same test battery ([`battery`]).
//!
//! Writes become visible at once and durable at the next [`Store::commit`]; callers commit
//! before they acknowledge anything. Concurrent commits share one flush ([`GroupCommit`]).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod acme;
mod backup;
pub mod battery;
mod blocking;
mod error;
mod group_commit;
mod nodes;
mod postgres_store;
mod rate;
mod records;
mod scep;
mod sled_acme;
mod sled_store;

pub use acme::{
    AccountRedemption, AcmeAccount, AcmeAccountStatus, AcmeAuthorization, AcmeAuthorizationStatus,
    AcmeChallenge, AcmeChallengeStatus, AcmeIdentifier, AcmeOrder, AcmeOrderStatus, RateDecision,
    RateLimit, RequestSubject, SubjectRecord,
};
pub use backup::{Backup, BackupRecord, RecordCounts};
pub use blocking::blocking_section;
pub use error::StoreError;
pub use group_commit::{FlushFailed, GroupCommit};
pub use nodes::{
    ISSUANCE_FEED_OVERLAP, IssuanceFeed, IssuedEntry, REVOCATION_FEED_OVERLAP, RevocationFeed,
    SharedCrl,
};
pub use postgres_store::{PostgresOptions, PostgresStore};
pub use records::{
    AgentRecord, CertificateFilter, CertificateRecord, CrlState, EarlyRenewal, EnrollmentMethod,
    InvalidReason, InvalidSerial, IssuanceIntent, Revocation, RevocationReason, RevokedEntry,
    Serial, SerialEntry, TokenKind, TokenRecord,
};
pub use scep::ScepTransaction;
pub use sled_store::SledStore;

use time::OffsetDateTime;

/// What [`Store::issuance_facts`] reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuanceFacts {
    /// The agent, if registered.
    pub agent: Option<AgentRecord>,
    /// Whether the request's key is blocked ([`Store::block_key`]).
    pub key_blocked: bool,
    /// Whether the request's key is an ACME account's key (asked only when a thumbprint is
    /// given).
    pub account_key: bool,
}

/// What [`Store::claim_acme_order_for_issuance`] read and did besides moving the order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderClaim {
    /// The issuance's [`Store::issuance_facts`].
    pub facts: IssuanceFacts,
    /// Whether the serial offered with the claim is now reserved for the issuance (`false`
    /// when none was offered, or when that serial was already taken: the issuer draws
    /// another).
    pub reserved: bool,
}

/// Result alias for store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The CA's system of record.
///
/// Every method is atomic on its own. Methods that check-then-write (`insert_agent`,
/// `reserve_serial`, `revoke`, `consume_token`, `next_crl_number`) do so atomically, so two
/// processes or threads racing for the same thing get one winner.
pub trait Store: Send + Sync {
    /// Adds an agent; [`StoreError::AlreadyExists`] if the ID is taken.
    fn insert_agent(&self, agent: &AgentRecord) -> Result<()>;
    /// Replaces an agent's record, only if it is still `expected` (compare-and-set: of two
    /// operators changing the same agent at once, one gets [`StoreError::Conflict`] and reads
    /// again, so neither change is lost); [`StoreError::NotFound`] if absent.
    fn update_agent(&self, agent: &AgentRecord, expected: &AgentRecord) -> Result<()>;
    /// One agent.
    fn agent(&self, id: &str) -> Result<Option<AgentRecord>>;
    /// All agents, ordered by ID.
    fn agents(&self) -> Result<Vec<AgentRecord>>;

    /// Reserves `intent.serial` and records the intent, only if the serial was never used;
    /// [`StoreError::AlreadyExists`] otherwise (the caller draws a new serial).
    fn reserve_serial(&self, intent: &IssuanceIntent) -> Result<()>;
    /// Forgets a reservation that has no certificate, and returns whether there was one: for an
    /// issuance refused before its signature was attempted (a reservation made ahead of the
    /// checks, see [`Store::claim_acme_order_for_issuance`]). A serial with a certificate, or
    /// with a certificate being recorded, stays.
    fn release_serial(&self, serial: &Serial) -> Result<bool>;
    /// Stores the certificate for a reserved serial. [`StoreError::NotFound`] if the serial
    /// was not reserved, [`StoreError::Conflict`] if it already has a certificate.
    fn record_certificate(&self, record: &CertificateRecord) -> Result<()>;
    /// A serial's state.
    fn serial(&self, serial: &Serial) -> Result<Option<SerialEntry>>;
    /// Issued certificates (with DER), ordered by serial.
    fn certificates(&self, filter: &CertificateFilter) -> Result<Vec<CertificateRecord>>;
    /// Issued certificates (with DER) for a public key, by the key's SHA-256 (hex, as in
    /// [`IssuanceIntent::key_sha256`]), ordered by serial.
    fn certificates_with_key(&self, key_sha256: &str) -> Result<Vec<CertificateRecord>>;
    /// Reserved serials that never got a certificate (for reconciliation).
    fn orphaned_intents(&self) -> Result<Vec<IssuanceIntent>>;
    /// Number of serials ever reserved.
    fn serial_count(&self) -> Result<u64>;

    /// Marks an issued certificate revoked. [`StoreError::NotFound`] if there is no
    /// certificate, [`StoreError::Conflict`] if it is already revoked (the first revocation
    /// stands). Returns the updated record.
    fn revoke(&self, serial: &Serial, revocation: Revocation) -> Result<CertificateRecord>;
    /// Revoked certificates whose `notAfter` is at or after `expiring_after`, for the CRL.
    fn revoked(&self, expiring_after: OffsetDateTime) -> Result<Vec<RevokedEntry>>;
    /// Forgets up to `limit` certificates that expired before `expired_before`: the record,
    /// its DER and its indexes. A revoked one goes only if it also expired before
    /// `revoked_expired_before`, the point after which no CRL lists it any more (REV-4).
    /// Reserved serials without a certificate stay. Returns how many were forgotten; an
    /// interrupted call leaves nothing that a later one does not finish.
    fn purge_certificates(
        &self,
        expired_before: OffsetDateTime,
        revoked_expired_before: OffsetDateTime,
        limit: usize,
    ) -> Result<u64>;

    /// Blocks a key (SHA-256 of its SubjectPublicKeyInfo) from ever being certified again.
    fn block_key(&self, key_sha256: &[u8; 32]) -> Result<()>;
    /// Whether a key is blocked.
    fn is_key_blocked(&self, key_sha256: &[u8; 32]) -> Result<bool>;

    /// What authorizing an issuance reads, in one round trip where a call is one:
    /// [`Store::agent`], [`Store::is_key_blocked`] of the request's key, and, when
    /// `account_thumbprint` is given, whether an ACME account has that key.
    fn issuance_facts(
        &self,
        agent_id: &str,
        key_sha256: &[u8; 32],
        account_thumbprint: Option<&str>,
    ) -> Result<IssuanceFacts> {
        Ok(IssuanceFacts {
            agent: self.agent(agent_id)?,
            key_blocked: self.is_key_blocked(key_sha256)?,
            account_key: match account_thumbprint {
                Some(thumbprint) => self.acme_account_by_thumbprint(thumbprint)?.is_some(),
                None => false,
            },
        })
    }

    /// Stores a new token; [`StoreError::AlreadyExists`] if the id is taken.
    fn insert_token(&self, token: &TokenRecord) -> Result<()>;
    /// One token.
    fn token(&self, id: &str) -> Result<Option<TokenRecord>>;
    /// Marks a token used, only if it is unused; [`StoreError::Conflict`] if it was used.
    fn consume_token(&self, id: &str, at: OffsetDateTime) -> Result<TokenRecord>;
    /// Makes a token unused again, only if it was consumed at `consumed_at` (to the second):
    /// for an enrollment that consumed it and then failed before anything was signed for it
    /// (the CA's key unavailable), so that the client's retry can use it. Returns whether it
    /// did; a token used at another time, or unused, stays as it is.
    fn restore_token(&self, id: &str, consumed_at: OffsetDateTime) -> Result<bool>;

    /// Allocates the next CRL number: strictly greater than any number handed out before, with a
    /// `thisUpdate` never earlier than the previous one (even if the clock stepped back).
    fn next_crl_number(&self, now: OffsetDateTime) -> Result<CrlState>;
    /// The last allocated CRL number, if any.
    fn crl_state(&self) -> Result<Option<CrlState>>;

    /// Creates an ACME account and consumes the EAB token that authorized it, in one atomic
    /// step, so a credential makes at most one account even under concurrent use.
    /// [`StoreError::NotFound`] if the token is unknown, [`StoreError::Conflict`] if it was
    /// used, [`StoreError::AlreadyExists`] if an account already has this key (thumbprint) or
    /// id; in every error case nothing changes.
    fn create_acme_account(
        &self,
        account: &AcmeAccount,
        token_id: &str,
        at: OffsetDateTime,
    ) -> Result<()>;
    /// One account.
    fn acme_account(&self, id: &str) -> Result<Option<AcmeAccount>>;
    /// The account with this key, by RFC 7638 thumbprint.
    fn acme_account_by_thumbprint(&self, thumbprint: &str) -> Result<Option<AcmeAccount>>;
    /// Replaces an account's contact and status; the key cannot change here.
    /// [`StoreError::NotFound`] if absent, [`StoreError::Conflict`] if the stored key differs
    /// or the stored account is deactivated (final, RFC 8555 §7.3.6).
    fn update_acme_account(&self, account: &AcmeAccount) -> Result<()>;
    /// Key rollover (RFC 8555 §7.3.5), atomic with the key index: [`StoreError::Conflict`] if
    /// the account's key is no longer `old_thumbprint` (a concurrent or replayed rollover) or
    /// the account is not valid, [`StoreError::AlreadyExists`] if another account holds the new
    /// key. Returns the updated account.
    fn change_acme_account_key(
        &self,
        id: &str,
        old_thumbprint: &str,
        new_jwk: &str,
        new_thumbprint: &str,
    ) -> Result<AcmeAccount>;

    /// Stores a new order and its new authorizations together. When the order names a
    /// certificate it `replaces`, it claims that certificate: [`StoreError::Conflict`] if an
    /// order that is neither invalid nor expired at `now` already claims it (RFC 9773
    /// `alreadyReplaced`); an abandoned claim stops blocking once its order expires.
    fn insert_acme_order(
        &self,
        order: &AcmeOrder,
        authorizations: &[AcmeAuthorization],
        now: OffsetDateTime,
    ) -> Result<()>;
    /// One order.
    fn acme_order(&self, id: &str) -> Result<Option<AcmeOrder>>;
    /// The ids of an account's orders, oldest first.
    fn acme_orders_of_account(&self, account_id: &str) -> Result<Vec<String>>;
    /// Replaces an order only if its stored status is still `expected` (compare-and-set:
    /// exactly one of several concurrent finalizes moves `ready` to `processing`);
    /// [`StoreError::Conflict`] otherwise. An order that gains a certificate is indexed by it.
    fn update_acme_order(&self, order: &AcmeOrder, expected: AcmeOrderStatus) -> Result<()>;
    /// [`Store::update_acme_order`] of the order an issuance starts on (`ready` to
    /// `processing`), then that issuance's [`Store::issuance_facts`] and, if `reservation` is
    /// given, [`Store::reserve_serial`] of it: one round trip where a call is one. The order's
    /// conflict or absence is the error, as from `update_acme_order`, and then nothing is
    /// reserved; facts read for an order this call did not move are never returned. A serial
    /// already taken is no error: [`OrderClaim::reserved`] says whether it was reserved.
    fn claim_acme_order_for_issuance(
        &self,
        order: &AcmeOrder,
        expected: AcmeOrderStatus,
        agent_id: &str,
        key_sha256: &[u8; 32],
        account_thumbprint: Option<&str>,
        reservation: Option<&IssuanceIntent>,
    ) -> Result<OrderClaim> {
        self.update_acme_order(order, expected)?;
        let facts = self.issuance_facts(agent_id, key_sha256, account_thumbprint)?;
        let reserved = match reservation.map(|intent| self.reserve_serial(intent)) {
            None | Some(Err(StoreError::AlreadyExists { .. })) => false,
            Some(Ok(())) => true,
            Some(Err(e)) => return Err(e),
        };
        Ok(OrderClaim { facts, reserved })
    }
    /// [`Store::record_certificate`], then, only if it succeeded, [`Store::update_acme_order`]
    /// of the order that certificate completes: one round trip where a call is one. The outer
    /// error is the certificate's (the order is then untouched), the inner one the order's
    /// (the certificate is then recorded all the same).
    fn record_certificate_of_order(
        &self,
        record: &CertificateRecord,
        order: &AcmeOrder,
        expected: AcmeOrderStatus,
    ) -> Result<Result<()>> {
        self.record_certificate(record)?;
        Ok(self.update_acme_order(order, expected))
    }
    /// The order that produced a certificate.
    fn acme_order_of_certificate(&self, serial: &Serial) -> Result<Option<AcmeOrder>>;
    /// A certificate an ACME order produced, with that order (a download must check whose it
    /// is): `None` unless an order produced it and it is issued. One read where the backend
    /// can join the two.
    fn acme_certificate(&self, serial: &Serial) -> Result<Option<(AcmeOrder, CertificateRecord)>> {
        let Some(order) = self.acme_order_of_certificate(serial)? else {
            return Ok(None);
        };
        match self.serial(serial)? {
            Some(SerialEntry::Issued(record)) => Ok(Some((order, record))),
            _ => Ok(None),
        }
    }
    /// Forgets up to `limit` ACME orders created before `created_before` and expired before
    /// `expired_before`, with their authorizations, their certificate index entries and the
    /// replacement claims they hold; returns how many. Certificates are not touched. An
    /// interrupted call leaves nothing that a later one does not finish.
    fn purge_acme_orders(
        &self,
        created_before: OffsetDateTime,
        expired_before: OffsetDateTime,
        limit: usize,
    ) -> Result<u64>;
    /// The order claiming to replace an ARI certificate identifier, if any.
    fn acme_replacement(&self, cert_id: &str) -> Result<Option<AcmeOrder>>;
    /// One authorization.
    fn acme_authorization(&self, id: &str) -> Result<Option<AcmeAuthorization>>;
    /// Replaces an authorization only if its stored status is still `expected`;
    /// [`StoreError::Conflict`] otherwise.
    fn update_acme_authorization(
        &self,
        authorization: &AcmeAuthorization,
        expected: AcmeAuthorizationStatus,
    ) -> Result<()>;

    /// Takes one unit from the limit `key` allows (`limit` per `window`, with bursts up to
    /// `limit`), atomically (GCRA: one timestamp per key). `limit == 0` always allows.
    fn take_rate_limit(
        &self,
        key: &str,
        limit: u32,
        window: time::Duration,
        now: OffsetDateTime,
    ) -> Result<RateDecision>;

    /// Whether [`Store::take_rate_limit`] would allow a unit now, without taking one.
    fn check_rate_limit(
        &self,
        key: &str,
        limit: u32,
        window: time::Duration,
        now: OffsetDateTime,
    ) -> Result<RateDecision>;

    /// [`Store::take_rate_limit`] of every limit in `limits` (each key at most once) at once:
    /// a unit from each, or, when one has none left, from none, and that limit's wait is the
    /// answer. So a request refused by one limit spends nothing of the others.
    fn take_rate_limits(&self, limits: &[RateLimit], now: OffsetDateTime) -> Result<RateDecision>;

    /// Gives back one unit that [`Store::take_rate_limit`] took from `key` for an attempt that
    /// turned out not to count: a limit on failures takes its unit before the attempt, so that
    /// concurrent attempts cannot pass it together, and returns it when the attempt succeeds.
    fn return_rate_limit(
        &self,
        key: &str,
        limit: u32,
        window: time::Duration,
        now: OffsetDateTime,
    ) -> Result<()>;

    /// Records the SCEP request that issued a certificate; [`StoreError::AlreadyExists`] if
    /// one with the same `request_key` is recorded (the first stands).
    fn record_scep_transaction(&self, transaction: &ScepTransaction) -> Result<()>;
    /// The SCEP request recorded under `request_key`.
    fn scep_transaction(&self, request_key: &str) -> Result<Option<ScepTransaction>>;
    /// Forgets up to `limit` SCEP transactions recorded before `created_before`; returns how
    /// many. The certificates they issued are not touched.
    fn purge_scep_transactions(&self, created_before: OffsetDateTime, limit: usize) -> Result<u64>;

    /// Whether other processes (other CA nodes) write this store while this one runs. Their
    /// revocations then reach this node only through [`Store::revocations_since`], nonces must
    /// be redeemed through [`Store::redeem_nonce`], and every call may cross a network, so
    /// callers keep them off async workers.
    fn is_shared(&self) -> bool {
        false
    }

    /// The revocations the store recorded at or after `since`, by the store's own clock, and
    /// that clock's reading taken before the scan. A node polling this passes the previous
    /// `as_of`, less a margin for writes in flight ([`REVOCATION_FEED_OVERLAP`]), so it may
    /// see a revocation twice but never misses one.
    fn revocations_since(&self, since: OffsetDateTime) -> Result<RevocationFeed>;

    /// The unrevoked certificates the store recorded at or after `since`, by the store's own
    /// clock, and that clock's reading taken before the scan, as
    /// [`Store::revocations_since`] does for revocations (polled with
    /// [`ISSUANCE_FEED_OVERLAP`]). Nodes sharing a store pre-sign OCSP answers for what the
    /// others issued, so those are answered from memory, even while the store is unreachable.
    /// An unshared store need not make this cheap: its one process issued everything itself.
    fn issued_since(&self, since: OffsetDateTime) -> Result<IssuanceFeed>;

    /// Keeps `crl` as the CRL every node sharing the store serves, unless the store keeps one
    /// with the same or a higher number already; returns whether `crl` was kept. Atomic: of
    /// two nodes sharing CRLs at once, the higher number wins, whatever the order.
    fn share_crl(&self, crl: &SharedCrl) -> Result<bool>;

    /// The CRL kept by [`Store::share_crl`], if its number is above `above`: a node polls this
    /// with the number it serves, so an unchanged CRL costs no transfer.
    fn shared_crl(&self, above: u64) -> Result<Option<SharedCrl>>;

    /// Records an anti-replay nonce as used; `Ok(false)` if it already was. Kept until
    /// `expires_at` (after that the nonce is refused by its age alone).
    fn redeem_nonce(&self, nonce: &[u8; 16], expires_at: OffsetDateTime) -> Result<bool>;

    /// [`Store::redeem_nonce`], then [`Store::acme_account`] of `account_id` and the record
    /// `subject` names, for the requests that name their account: one round trip where a call
    /// is one. The account and the subject are read whether or not the nonce was fresh.
    fn redeem_nonce_and_get_account(
        &self,
        nonce: &[u8; 16],
        expires_at: OffsetDateTime,
        account_id: &str,
        subject: Option<RequestSubject<'_>>,
    ) -> Result<AccountRedemption> {
        let fresh = self.redeem_nonce(nonce, expires_at)?;
        let account = self.acme_account(account_id)?;
        let subject = match subject {
            None => None,
            Some(RequestSubject::AccountAgent) => Some(SubjectRecord::Agent(match &account {
                Some(account) => self.agent(&account.agent_id)?,
                None => None,
            })),
            Some(RequestSubject::Order(id)) => Some(SubjectRecord::Order(self.acme_order(id)?)),
            Some(RequestSubject::Authorization(id)) => {
                Some(SubjectRecord::Authorization(self.acme_authorization(id)?))
            }
        };
        Ok(AccountRedemption {
            fresh,
            account,
            subject,
        })
    }

    /// Forgets used nonces that expired before `now`; returns how many.
    fn purge_nonces(&self, now: OffsetDateTime) -> Result<u64>;

    /// Makes every write that this thread (or any thread) completed before the call durable.
    /// Concurrent callers share flushes.
    fn commit(&self) -> Result<()>;
}

/// Changes an agent's record with `change` and stores it by [`Store::update_agent`], reading
/// it again and redoing the change when someone else changed the record in between. Returns
/// the record as it was and as it is now, or `None` when there is no such agent.
pub fn change_agent(
    store: &dyn Store,
    id: &str,
    mut change: impl FnMut(&mut AgentRecord),
) -> Result<Option<(AgentRecord, AgentRecord)>> {
    loop {
        let Some(before) = store.agent(id)? else {
            return Ok(None);
        };
        let mut after = before.clone();
        change(&mut after);
        if after == before {
            return Ok(Some((before, after)));
        }
        match store.update_agent(&after, &before) {
            Ok(()) => return Ok(Some((before, after))),
            Err(StoreError::Conflict { .. }) => continue,
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

/// Whether two times fall in the same second (what a round trip through a record keeps).
pub(crate) fn same_second(a: OffsetDateTime, b: OffsetDateTime) -> bool {
    a.unix_timestamp() == b.unix_timestamp()
}
