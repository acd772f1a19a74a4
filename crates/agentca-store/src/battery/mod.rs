//! The test battery every [`Store`] backend must pass.
//!
//! A backend's tests instantiate it with [`store_battery!`](crate::store_battery), giving a
//! closure that opens a fresh, empty store in a temporary directory:
//!
//! ```ignore
//! agentca_store::store_battery!(|dir: &std::path::Path| SledStore::open(dir).unwrap());
//! ```
//!
//! The functions panic on failure (they are test code) and take `&dyn Store`, so the same
//! battery runs unchanged on every backend.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

pub mod acme;
pub mod backup;
pub mod nodes;

use time::{Duration, OffsetDateTime};

use crate::{
    AgentRecord, CertificateFilter, CertificateRecord, EnrollmentMethod, IssuanceIntent,
    Revocation, RevocationReason, Serial, SerialEntry, Store, StoreError, TokenKind, TokenRecord,
};

/// Instantiates the battery as `#[test]` functions for one backend.
///
/// `store_battery!(open)` takes a closure from a temporary directory to a fresh store;
/// `store_battery!(optional open)` takes one returning `Option<store>`, for backends that need
/// an external server: `None` skips the test (the closure prints why).
#[macro_export]
macro_rules! store_battery {
    (optional $open:expr) => {
        mod store_battery {
            #[allow(unused_imports)]
            use super::*;

            fn with_store(check: fn(&dyn $crate::Store)) {
                let dir = tempfile::tempdir().unwrap();
                let open = $open;
                if let Some(store) = open(dir.path()) {
                    check(&store);
                }
            }

            $crate::store_battery!(@tests);
        }
    };
    (@tests) => {
            #[test]
            fn agents() {
                with_store($crate::battery::agents)
            }
            #[test]
            fn concurrent_agent_changes_are_all_kept() {
                with_store($crate::battery::concurrent_agent_changes_are_all_kept)
            }
            #[test]
            fn serial_reservation_is_insert_if_absent() {
                with_store($crate::battery::serial_reservation_is_insert_if_absent)
            }
            #[test]
            fn a_reservation_without_a_certificate_can_be_released() {
                with_store($crate::battery::a_reservation_without_a_certificate_can_be_released)
            }
            #[test]
            fn expired_certificates_are_forgotten() {
                with_store($crate::battery::expired_certificates_are_forgotten)
            }
            #[test]
            fn certificates_need_a_reservation() {
                with_store($crate::battery::certificates_need_a_reservation)
            }
            #[test]
            fn certificate_listing() {
                with_store($crate::battery::certificate_listing)
            }
            #[test]
            fn certificates_by_key() {
                with_store($crate::battery::certificates_by_key)
            }
            #[test]
            fn revocation_is_once() {
                with_store($crate::battery::revocation_is_once)
            }
            #[test]
            fn revoked_entries_stay_until_expiry() {
                with_store($crate::battery::revoked_entries_stay_until_expiry)
            }
            #[test]
            fn revocation_feed_lists_what_was_revoked_since() {
                with_store($crate::battery::nodes::revocation_feed_lists_what_was_revoked_since)
            }
            #[test]
            fn issuance_feed_lists_what_was_stored_since() {
                with_store($crate::battery::nodes::issuance_feed_lists_what_was_stored_since)
            }
            #[test]
            fn the_shared_crl_is_the_highest_numbered() {
                with_store($crate::battery::nodes::the_shared_crl_is_the_highest_numbered)
            }
            #[test]
            fn a_nonce_and_an_account_in_one_call() {
                with_store($crate::battery::nodes::a_nonce_and_an_account_in_one_call)
            }
            #[test]
            fn a_request_subject_is_read_with_its_account() {
                with_store($crate::battery::nodes::a_request_subject_is_read_with_its_account)
            }
            #[test]
            fn nonces_are_redeemed_once() {
                with_store($crate::battery::nodes::nonces_are_redeemed_once)
            }
            #[test]
            fn concurrent_reads_each_get_their_own_record() {
                with_store($crate::battery::concurrent_reads_each_get_their_own_record)
            }
            #[test]
            fn concurrent_redemptions_each_get_their_own_answer() {
                with_store($crate::battery::nodes::concurrent_redemptions_each_get_their_own_answer)
            }
            #[test]
            fn tokens_are_single_use() {
                with_store($crate::battery::tokens_are_single_use)
            }
            #[test]
            fn crl_numbers_increase_even_when_the_clock_steps_back() {
                with_store($crate::battery::crl_numbers_increase_even_when_the_clock_steps_back)
            }
            #[test]
            fn blocked_keys() {
                with_store($crate::battery::blocked_keys)
            }
            #[test]
            fn concurrent_reservations_have_one_winner() {
                with_store($crate::battery::concurrent_reservations_have_one_winner)
            }
            #[test]
            fn concurrent_token_use_has_one_winner() {
                with_store($crate::battery::concurrent_token_use_has_one_winner)
            }
            #[test]
            fn concurrent_commits() {
                with_store($crate::battery::concurrent_commits)
            }
            #[test]
            fn scep_transactions_first_stands() {
                with_store($crate::battery::scep_transactions_first_stands)
            }
            #[test]
            fn concurrent_scep_transactions_have_one_winner() {
                with_store($crate::battery::concurrent_scep_transactions_have_one_winner)
            }
            #[test]
            fn acme_account_consumes_its_token() {
                with_store($crate::battery::acme::acme_account_consumes_its_token)
            }
            #[test]
            fn acme_account_keys_are_unique() {
                with_store($crate::battery::acme::acme_account_keys_are_unique)
            }
            #[test]
            fn concurrent_acme_accounts_from_one_token() {
                with_store($crate::battery::acme::concurrent_acme_accounts_from_one_token)
            }
            #[test]
            fn acme_key_rollover_is_atomic() {
                with_store($crate::battery::acme::acme_key_rollover_is_atomic)
            }
            #[test]
            fn issuance_facts_are_the_single_reads() {
                with_store($crate::battery::issuance_facts_are_the_single_reads)
            }
            #[test]
            fn an_issuance_claims_its_order_with_its_facts() {
                with_store($crate::battery::acme::an_issuance_claims_its_order_with_its_facts)
            }
            #[test]
            fn a_certificate_completes_its_order() {
                with_store($crate::battery::acme::a_certificate_completes_its_order)
            }
            #[test]
            fn acme_orders_and_authorizations() {
                with_store($crate::battery::acme::acme_orders_and_authorizations)
            }
            #[test]
            fn acme_replacement_claims() {
                with_store($crate::battery::acme::acme_replacement_claims)
            }
            #[test]
            fn old_acme_orders_are_forgotten_whole() {
                with_store($crate::battery::acme::old_acme_orders_are_forgotten_whole)
            }
            #[test]
            fn old_scep_transactions_are_forgotten() {
                with_store($crate::battery::old_scep_transactions_are_forgotten)
            }
            #[test]
            fn rate_limits() {
                with_store($crate::battery::acme::rate_limits)
            }
            #[test]
            fn rate_limits_are_taken_together_and_given_back() {
                with_store($crate::battery::acme::rate_limits_are_taken_together_and_given_back)
            }
    };
    ($open:expr) => {
        mod store_battery {
            #[allow(unused_imports)]
            use super::*;

            fn with_store(check: fn(&dyn $crate::Store)) {
                let dir = tempfile::tempdir().unwrap();
                let open = $open;
                let store = open(dir.path());
                check(&store);
            }

            $crate::store_battery!(@tests);
        }
    };
}

pub(crate) fn now() -> OffsetDateTime {
    // Whole seconds: some backends store times at second precision.
    OffsetDateTime::from_unix_timestamp(OffsetDateTime::now_utc().unix_timestamp()).unwrap()
}

/// A stored agent `id`, enabled, with the default policy and no names of its own.
pub fn agent_in(store: &dyn Store, id: &str) -> AgentRecord {
    let agent = AgentRecord {
        id: id.into(),
        owner: None,
        policy: None,
        dns: Vec::new(),
        disabled: false,
        created_at: now(),
        early_renewal: None,
    };
    store.insert_agent(&agent).unwrap();
    agent
}

/// A serial derived from `n` (tests only; real serials are random).
pub fn serial(n: u64) -> Serial {
    let mut bytes = [0x11u8; Serial::LEN];
    bytes[8..].copy_from_slice(&n.to_be_bytes());
    Serial::from_bytes(bytes).unwrap()
}

/// An intent for `serial(n)` for agent `spiffe://example.org/agent/n`.
pub fn intent(n: u64) -> IssuanceIntent {
    intent_for(n, &format!("spiffe://example.org/agent/{n}"))
}

pub(crate) fn intent_for(n: u64, agent: &str) -> IssuanceIntent {
    let t = now();
    IssuanceIntent {
        serial: serial(n),
        agent_id: agent.into(),
        method: EnrollmentMethod::Cli,
        not_before: t - Duration::minutes(5),
        not_after: t + Duration::hours(24),
        key_sha256: "00".repeat(32),
        reserved_at: t,
    }
}

fn certificate(intent: IssuanceIntent) -> CertificateRecord {
    CertificateRecord {
        der: format!("DER of {}", intent.serial).into_bytes(),
        issued_at: intent.reserved_at,
        intent,
        revocation: None,
    }
}

pub(crate) fn issue(store: &dyn Store, intent: IssuanceIntent) -> CertificateRecord {
    store.reserve_serial(&intent).unwrap();
    let record = certificate(intent);
    store.record_certificate(&record).unwrap();
    record
}

/// Many requests reading at once, as a busy node's do (a store may answer them together):
/// agents, accounts by key, blocked keys, present and absent, each caller its own answer.
pub fn concurrent_reads_each_get_their_own_record(store: &dyn Store) {
    const KINDS: usize = 4;
    let agents: Vec<AgentRecord> = (0..KINDS)
        .map(|i| {
            let agent = AgentRecord {
                id: format!("spiffe://example.org/agent/reader-{i}"),
                owner: Some(format!("team-{i}")),
                policy: None,
                dns: vec![],
                disabled: false,
                created_at: now(),
                early_renewal: None,
            };
            store.insert_agent(&agent).unwrap();
            agent
        })
        .collect();
    let accounts: Vec<_> = (0..KINDS)
        .map(|i| acme::account_in(store, &format!("reader-{i}")))
        .collect();
    let blocked = [[0xB1u8; 32], [0xB2u8; 32]];
    for key in &blocked {
        store.block_key(key).unwrap();
    }
    std::thread::scope(|s| {
        for t in 0..16usize {
            let (agents, accounts) = (&agents, &accounts);
            s.spawn(move || {
                for round in 0..30usize {
                    let i = (t + round) % KINDS;
                    assert_eq!(
                        store.agent(&agents[i].id).unwrap().as_ref(),
                        Some(&agents[i])
                    );
                    assert_eq!(
                        store.agent(&format!("{}-gone", agents[i].id)).unwrap(),
                        None
                    );
                    assert_eq!(
                        store
                            .acme_account_by_thumbprint(&accounts[i].thumbprint)
                            .unwrap()
                            .as_ref(),
                        Some(&accounts[i])
                    );
                    let key = [0xB1 + u8::try_from(i).unwrap(); 32];
                    assert_eq!(store.is_key_blocked(&key).unwrap(), i < blocked.len());
                }
            });
        }
    });
}

pub fn agents(store: &dyn Store) {
    let agent = AgentRecord {
        id: "spiffe://example.org/agent/a".into(),
        owner: Some("team".into()),
        policy: None,
        dns: vec!["a.example.org".into()],
        disabled: false,
        created_at: now(),
        early_renewal: None,
    };
    store.insert_agent(&agent).unwrap();
    assert!(matches!(
        store.insert_agent(&agent),
        Err(StoreError::AlreadyExists { .. })
    ));
    assert_eq!(store.agent(&agent.id).unwrap(), Some(agent.clone()));
    assert_eq!(store.agent("spiffe://example.org/agent/ab").unwrap(), None);

    let mut disabled = agent.clone();
    disabled.disabled = true;
    store.update_agent(&disabled, &agent).unwrap();
    assert_eq!(store.agent(&agent.id).unwrap(), Some(disabled.clone()));

    // A change made from a stale read is refused and changes nothing.
    let mut stale = agent.clone();
    stale.owner = Some("mallory".into());
    assert!(matches!(
        store.update_agent(&stale, &agent),
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(store.agent(&agent.id).unwrap(), Some(disabled.clone()));

    // The early-renewal request survives the round trip.
    let mut advised = disabled.clone();
    advised.early_renewal = Some(crate::EarlyRenewal {
        advised_at: now(),
        within_seconds: 3600,
    });
    store.update_agent(&advised, &disabled).unwrap();
    assert_eq!(store.agent(&agent.id).unwrap(), Some(advised));

    let mut ghost = agent.clone();
    ghost.id = "spiffe://example.org/agent/ghost".into();
    assert!(matches!(
        store.update_agent(&ghost, &ghost),
        Err(StoreError::NotFound { .. })
    ));

    let mut b = agent.clone();
    b.id = "spiffe://example.org/agent/b".into();
    store.insert_agent(&b).unwrap();
    let ids: Vec<String> = store.agents().unwrap().into_iter().map(|a| a.id).collect();
    assert_eq!(ids, vec![agent.id, b.id]);
}

/// Operators changing different fields of one agent at once: every change lands, none is lost
/// to a read-modify-write race.
pub fn concurrent_agent_changes_are_all_kept(store: &dyn Store) {
    let agent = agent_in(store, "spiffe://example.org/agent/contended");
    const WRITERS: usize = 8;
    std::thread::scope(|s| {
        for i in 0..WRITERS {
            let id = agent.id.clone();
            s.spawn(move || {
                crate::change_agent(store, &id, |a| a.dns.push(format!("n{i}.example.org")))
                    .unwrap()
                    .unwrap();
            });
        }
    });
    let mut names = store.agent(&agent.id).unwrap().unwrap().dns;
    names.sort();
    let mut want: Vec<String> = (0..WRITERS).map(|i| format!("n{i}.example.org")).collect();
    want.sort();
    assert_eq!(names, want);
    assert_eq!(
        crate::change_agent(store, "spiffe://example.org/agent/none", |a| a.disabled =
            true)
        .unwrap(),
        None
    );
}

pub fn serial_reservation_is_insert_if_absent(store: &dyn Store) {
    let first = intent(1);
    store.reserve_serial(&first).unwrap();
    let mut other = intent(1);
    other.agent_id = "spiffe://example.org/agent/intruder".into();
    assert!(matches!(
        store.reserve_serial(&other),
        Err(StoreError::AlreadyExists { .. })
    ));
    // The first reservation is untouched.
    assert_eq!(
        store.serial(&first.serial).unwrap(),
        Some(SerialEntry::Reserved(first.clone()))
    );
    // A used serial stays used after its certificate is stored.
    store.record_certificate(&certificate(first)).unwrap();
    assert!(store.reserve_serial(&intent(1)).is_err());
    assert_eq!(store.serial_count().unwrap(), 1);
}

/// A reservation is released only while it has no certificate; a released serial is free.
pub fn a_reservation_without_a_certificate_can_be_released(store: &dyn Store) {
    let reserved = intent(21);
    store.reserve_serial(&reserved).unwrap();
    let issued = issue(store, intent(22));
    assert_eq!(store.serial_count().unwrap(), 2);

    assert!(store.release_serial(&reserved.serial).unwrap());
    assert_eq!(store.serial(&reserved.serial).unwrap(), None);
    assert_eq!(store.serial_count().unwrap(), 1);
    assert!(store.orphaned_intents().unwrap().is_empty());
    assert!(
        !store.release_serial(&reserved.serial).unwrap(),
        "released twice"
    );
    assert!(
        !store.release_serial(&serial(23)).unwrap(),
        "never reserved"
    );

    assert!(!store.release_serial(&issued.intent.serial).unwrap());
    assert_eq!(
        store.serial(&issued.intent.serial).unwrap(),
        Some(SerialEntry::Issued(issued))
    );
    // Nothing was signed with it, so the serial may be reserved again.
    store.reserve_serial(&reserved).unwrap();
    assert_eq!(
        store.serial(&reserved.serial).unwrap(),
        Some(SerialEntry::Reserved(reserved))
    );
}

pub fn certificates_need_a_reservation(store: &dyn Store) {
    assert!(matches!(
        store.record_certificate(&certificate(intent(7))),
        Err(StoreError::NotFound { .. })
    ));
    let record = issue(store, intent(7));
    assert!(matches!(
        store.record_certificate(&record),
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(
        store.serial(&record.intent.serial).unwrap(),
        Some(SerialEntry::Issued(record))
    );
    assert!(store.orphaned_intents().unwrap().is_empty());
    // One intent: two calls of `intent` may fall on either side of a second.
    let orphan = intent(8);
    store.reserve_serial(&orphan).unwrap();
    assert_eq!(store.orphaned_intents().unwrap(), vec![orphan]);
}

pub fn certificate_listing(store: &dyn Store) {
    let a = "spiffe://example.org/agent/a";
    let ab = "spiffe://example.org/agent/ab";
    let r1 = issue(store, intent_for(3, a));
    let r2 = issue(store, intent_for(1, a));
    let r3 = issue(store, intent_for(2, ab));
    store.reserve_serial(&intent_for(4, a)).unwrap(); // reserved only: not listed

    let mut all = vec![r1.clone(), r2.clone(), r3.clone()];
    all.sort_by_key(|r| r.intent.serial);
    assert_eq!(
        store.certificates(&CertificateFilter::default()).unwrap(),
        all
    );

    // A prefix sibling's certificates are not the agent's.
    let mut of_a = vec![r1, r2];
    of_a.sort_by_key(|r| r.intent.serial);
    let filter = CertificateFilter {
        agent_id: Some(a.into()),
    };
    assert_eq!(store.certificates(&filter).unwrap(), of_a);
    let filter = CertificateFilter {
        agent_id: Some(ab.into()),
    };
    assert_eq!(store.certificates(&filter).unwrap(), vec![r3]);
}

pub fn certificates_by_key(store: &dyn Store) {
    let mut a = intent(21);
    a.key_sha256 = "aa".repeat(32);
    let mut b = intent_for(22, "spiffe://example.org/agent/other");
    b.key_sha256 = "aa".repeat(32);
    let mut c = intent(23);
    c.key_sha256 = "bb".repeat(32);
    let ra = issue(store, a);
    let rb = issue(store, b);
    issue(store, c);
    let found = store.certificates_with_key(&"aa".repeat(32)).unwrap();
    assert_eq!(found, vec![ra, rb]);
    assert!(
        store
            .certificates_with_key(&"cc".repeat(32))
            .unwrap()
            .is_empty()
    );
}

pub fn revocation_is_once(store: &dyn Store) {
    let record = issue(store, intent(5));
    let first = Revocation {
        revoked_at: now(),
        reason: RevocationReason::KeyCompromise,
    };
    let revoked = store.revoke(&record.intent.serial, first).unwrap();
    assert_eq!(revoked.revocation, Some(first));
    assert_eq!(revoked.der, record.der);

    let second = Revocation {
        revoked_at: now() + Duration::hours(1),
        reason: RevocationReason::Superseded,
    };
    assert!(matches!(
        store.revoke(&record.intent.serial, second),
        Err(StoreError::Conflict { .. })
    ));
    match store.serial(&record.intent.serial).unwrap() {
        Some(SerialEntry::Issued(r)) => assert_eq!(r.revocation, Some(first)),
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        store.revoke(&serial(99), first),
        Err(StoreError::NotFound { .. })
    ));
    store.reserve_serial(&intent(6)).unwrap();
    assert!(matches!(
        store.revoke(&serial(6), first),
        Err(StoreError::NotFound { .. })
    ));
}

pub fn revoked_entries_stay_until_expiry(store: &dyn Store) {
    let t = now();
    let mut expired = intent(10);
    expired.not_after = t - Duration::hours(2);
    let live = intent(11);
    for i in [expired.clone(), live.clone()] {
        issue(store, i.clone());
        store
            .revoke(
                &i.serial,
                Revocation {
                    revoked_at: t,
                    reason: RevocationReason::CessationOfOperation,
                },
            )
            .unwrap();
    }
    let entries = store.revoked(t - Duration::hours(1)).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].serial, live.serial);
    assert_eq!(entries[0].not_after, live.not_after);
    assert_eq!(
        entries[0].revocation.reason,
        RevocationReason::CessationOfOperation
    );
    assert_eq!(entries[0].revocation.revoked_at, t);
    assert_eq!(store.revoked(t - Duration::days(1)).unwrap().len(), 2);
}

/// Expired certificates go with their DER and indexes; live ones, reservations, and revoked
/// ones a CRL may still list stay; a pass forgets at most `limit`.
pub fn expired_certificates_are_forgotten(store: &dyn Store) {
    let t = now();
    let agent = "spiffe://example.org/agent/expiring";
    let with_expiry = |n: u64, not_after: OffsetDateTime| {
        let mut i = intent_for(n, agent);
        i.key_sha256 = format!("{n:064x}");
        i.not_after = not_after;
        i
    };
    let long_ago = with_expiry(20, t - Duration::days(30));
    let days_ago = with_expiry(21, t - Duration::days(3));
    let hours_ago = with_expiry(22, t - Duration::hours(2));
    let live = with_expiry(23, t + Duration::hours(1));
    let revoked_long_ago = with_expiry(24, t - Duration::days(20));
    let revoked_recently = with_expiry(25, t - Duration::days(3));
    for i in [
        &long_ago,
        &days_ago,
        &hours_ago,
        &live,
        &revoked_long_ago,
        &revoked_recently,
    ] {
        issue(store, (*i).clone());
    }
    for i in [&revoked_long_ago, &revoked_recently] {
        store
            .revoke(
                &i.serial,
                Revocation {
                    revoked_at: i.not_after - Duration::hours(1),
                    reason: RevocationReason::KeyCompromise,
                },
            )
            .unwrap();
    }
    let mut reserved = with_expiry(26, t - Duration::days(40));
    reserved.agent_id = agent.into();
    store.reserve_serial(&reserved).unwrap();

    let expired_before = t - Duration::days(1);
    let revoked_expired_before = t - Duration::days(10);
    // One at a time: the oldest first.
    assert_eq!(
        store
            .purge_certificates(expired_before, revoked_expired_before, 1)
            .unwrap(),
        1
    );
    assert!(store.serial(&long_ago.serial).unwrap().is_none());
    assert_eq!(
        store
            .purge_certificates(expired_before, revoked_expired_before, 100)
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .purge_certificates(expired_before, revoked_expired_before, 100)
            .unwrap(),
        0
    );
    for gone in [&long_ago, &days_ago, &revoked_long_ago] {
        assert!(
            store.serial(&gone.serial).unwrap().is_none(),
            "{}",
            gone.serial
        );
        assert!(
            store
                .certificates_with_key(&gone.key_sha256)
                .unwrap()
                .is_empty()
        );
    }
    let left: Vec<Serial> = store
        .certificates(&CertificateFilter {
            agent_id: Some(agent.into()),
        })
        .unwrap()
        .iter()
        .map(|c| c.intent.serial)
        .collect();
    let mut kept = vec![hours_ago.serial, live.serial, revoked_recently.serial];
    kept.sort();
    assert_eq!(left, kept);
    let all: Vec<Serial> = store
        .certificates(&CertificateFilter::default())
        .unwrap()
        .iter()
        .map(|c| c.intent.serial)
        .collect();
    assert_eq!(all, kept);
    assert_eq!(
        store
            .certificates_with_key(&hours_ago.key_sha256)
            .unwrap()
            .len(),
        1
    );
    // The revoked one still due on a CRL is still listed for it.
    let listed: Vec<Serial> = store
        .revoked(t - Duration::days(365))
        .unwrap()
        .iter()
        .map(|e| e.serial)
        .collect();
    assert_eq!(listed, vec![revoked_recently.serial]);
    // The reservation without a certificate stays: its serial is never handed out again.
    assert!(matches!(
        store.serial(&reserved.serial).unwrap(),
        Some(SerialEntry::Reserved(_))
    ));
    // Once the CRL cutoff passes it, the revoked one goes too; the live one never.
    assert_eq!(
        store
            .purge_certificates(t - Duration::hours(1), t - Duration::days(2), 100)
            .unwrap(),
        2
    );
    assert!(store.serial(&revoked_recently.serial).unwrap().is_none());
    assert!(store.revoked(t - Duration::days(365)).unwrap().is_empty());
    assert!(matches!(
        store.serial(&live.serial).unwrap(),
        Some(SerialEntry::Issued(_))
    ));
    // A forgotten certificate cannot be revoked (it does not exist any more).
    assert!(matches!(
        store.revoke(
            &days_ago.serial,
            Revocation {
                revoked_at: t,
                reason: RevocationReason::Unspecified,
            },
        ),
        Err(StoreError::NotFound { .. })
    ));
    store.commit().unwrap();
}

pub(crate) fn token(id: &str) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        kind: TokenKind::Scep,
        agent_id: "spiffe://example.org/agent/a".into(),
        verifier: "ab".repeat(32),
        expires_at: now() + Duration::hours(1),
        created_at: now(),
        consumed_at: None,
    }
}

pub fn tokens_are_single_use(store: &dyn Store) {
    let t = token("tok1");
    store.insert_token(&t).unwrap();
    assert!(matches!(
        store.insert_token(&t),
        Err(StoreError::AlreadyExists { .. })
    ));
    let used = store.consume_token("tok1", now()).unwrap();
    assert!(used.consumed_at.is_some());
    assert!(matches!(
        store.consume_token("tok1", now()),
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        store.consume_token("nope", now()),
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.token("tok1").unwrap(), Some(used.clone()));

    // A consumption is undone only by whoever made it (its time), and only once.
    let at = used.consumed_at.unwrap();
    assert!(
        !store
            .restore_token("tok1", at - Duration::seconds(5))
            .unwrap()
    );
    assert!(!store.restore_token("nope", at).unwrap());
    assert_eq!(store.token("tok1").unwrap(), Some(used));
    assert!(store.restore_token("tok1", at).unwrap());
    assert_eq!(store.token("tok1").unwrap().unwrap().consumed_at, None);
    assert!(!store.restore_token("tok1", at).unwrap());
    let again = store.consume_token("tok1", now()).unwrap();
    assert!(again.consumed_at.is_some());
    assert!(matches!(
        store.consume_token("tok1", now()),
        Err(StoreError::Conflict { .. })
    ));
}

pub fn crl_numbers_increase_even_when_the_clock_steps_back(store: &dyn Store) {
    assert_eq!(store.crl_state().unwrap(), None);
    let t = now();
    let a = store.next_crl_number(t).unwrap();
    let b = store.next_crl_number(t - Duration::hours(1)).unwrap();
    let c = store.next_crl_number(t + Duration::seconds(1)).unwrap();
    assert!(a.number < b.number && b.number < c.number);
    assert!(b.this_update >= a.this_update, "thisUpdate went backwards");
    assert_eq!(store.crl_state().unwrap(), Some(c));
}

/// The reads of an issuance's authorization, together: each fact as the single reads give it.
pub fn issuance_facts_are_the_single_reads(store: &dyn Store) {
    let agent = AgentRecord {
        id: "spiffe://example.org/agent/facts".into(),
        owner: None,
        policy: Some("p".into()),
        dns: vec!["facts.example.org".into()],
        disabled: true,
        created_at: now(),
        early_renewal: None,
    };
    store.insert_agent(&agent).unwrap();
    let account = acme::account_in(store, "facts");
    let (blocked, free) = ([0x42u8; 32], [0x43u8; 32]);
    store.block_key(&blocked).unwrap();
    for agent_id in [agent.id.as_str(), "spiffe://example.org/agent/none"] {
        for key in [blocked, free] {
            for thumbprint in [None, Some(account.thumbprint.as_str()), Some("tp-none")] {
                let facts = store.issuance_facts(agent_id, &key, thumbprint).unwrap();
                assert_eq!(facts.agent, store.agent(agent_id).unwrap(), "{agent_id}");
                assert_eq!(facts.key_blocked, key == blocked);
                assert_eq!(
                    facts.account_key,
                    thumbprint == Some(account.thumbprint.as_str()),
                    "{thumbprint:?}"
                );
            }
        }
    }
}

pub fn blocked_keys(store: &dyn Store) {
    let key = [7u8; 32];
    assert!(!store.is_key_blocked(&key).unwrap());
    store.block_key(&key).unwrap();
    store.block_key(&key).unwrap();
    assert!(store.is_key_blocked(&key).unwrap());
    assert!(!store.is_key_blocked(&[8u8; 32]).unwrap());
}

pub fn concurrent_reservations_have_one_winner(store: &dyn Store) {
    let wins = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for i in 0..16 {
            let wins = &wins;
            s.spawn(move || {
                let mut it = intent(42);
                it.agent_id = format!("spiffe://example.org/agent/racer{i}");
                if store.reserve_serial(&it).is_ok() {
                    wins.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(wins.into_inner(), 1);
}

pub fn concurrent_token_use_has_one_winner(store: &dyn Store) {
    store.insert_token(&token("race")).unwrap();
    let wins = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..16 {
            let wins = &wins;
            s.spawn(move || {
                if store.consume_token("race", now()).is_ok() {
                    wins.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(wins.into_inner(), 1);
}

pub fn concurrent_commits(store: &dyn Store) {
    std::thread::scope(|s| {
        for t in 0..8u64 {
            s.spawn(move || {
                for i in 0..20 {
                    issue(store, intent(1000 + t * 100 + i));
                    store.commit().unwrap();
                }
            });
        }
    });
    assert_eq!(store.serial_count().unwrap(), 160);
}

pub fn scep_transactions_first_stands(store: &dyn Store) {
    let first = crate::ScepTransaction {
        request_key: "a".repeat(64),
        transaction_id: "txn-1".into(),
        serial: serial(1),
        agent_id: "spiffe://example.org/agent/a".into(),
        created_at: now(),
    };
    assert_eq!(store.scep_transaction(&first.request_key).unwrap(), None);
    store.record_scep_transaction(&first).unwrap();
    let retry = crate::ScepTransaction {
        serial: serial(2),
        ..first.clone()
    };
    assert!(matches!(
        store.record_scep_transaction(&retry),
        Err(StoreError::AlreadyExists { .. })
    ));
    assert_eq!(
        store.scep_transaction(&first.request_key).unwrap(),
        Some(first.clone())
    );
    // The same transactionID under another request key is another request.
    let other = crate::ScepTransaction {
        request_key: "b".repeat(64),
        serial: serial(3),
        ..first.clone()
    };
    store.record_scep_transaction(&other).unwrap();
    assert_eq!(
        store.scep_transaction(&other.request_key).unwrap(),
        Some(other)
    );
    assert_eq!(store.scep_transaction(&"c".repeat(64)).unwrap(), None);
}

pub fn old_scep_transactions_are_forgotten(store: &dyn Store) {
    let t = now();
    let record = |key: char, created_at: OffsetDateTime, n: u64| crate::ScepTransaction {
        request_key: key.to_string().repeat(64),
        transaction_id: format!("txn-{key}"),
        serial: serial(n),
        agent_id: "spiffe://example.org/agent/a".into(),
        created_at,
    };
    let cutoff = t - Duration::days(1);
    let old = [
        record('a', t - Duration::days(3), 1),
        record('b', t - Duration::days(2), 2),
    ];
    // On the boundary: kept (only records made before it go), as is a recent one.
    let kept = [record('c', cutoff, 3), record('d', t, 4)];
    for transaction in old.iter().chain(&kept) {
        store.record_scep_transaction(transaction).unwrap();
    }
    issue(store, intent(1));
    assert_eq!(store.purge_scep_transactions(cutoff, 1).unwrap(), 1);
    assert_eq!(store.purge_scep_transactions(cutoff, 10).unwrap(), 1);
    assert_eq!(store.purge_scep_transactions(cutoff, 10).unwrap(), 0);
    for transaction in &old {
        assert_eq!(
            store.scep_transaction(&transaction.request_key).unwrap(),
            None
        );
    }
    for transaction in &kept {
        assert_eq!(
            store.scep_transaction(&transaction.request_key).unwrap(),
            Some(transaction.clone())
        );
    }
    // The certificate a forgotten transaction issued stays.
    assert!(matches!(
        store.serial(&serial(1)).unwrap(),
        Some(SerialEntry::Issued(_))
    ));
}

pub fn concurrent_scep_transactions_have_one_winner(store: &dyn Store) {
    let wins = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for i in 0..16 {
            let wins = &wins;
            s.spawn(move || {
                let t = crate::ScepTransaction {
                    request_key: "c".repeat(64),
                    transaction_id: "race".into(),
                    serial: serial(100 + i),
                    agent_id: "spiffe://example.org/agent/c".into(),
                    created_at: now(),
                };
                if store.record_scep_transaction(&t).is_ok() {
                    wins.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(wins.into_inner(), 1);
}
