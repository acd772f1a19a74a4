//! What nodes sharing a store learn from each other: revocations, certificates, used nonces
//! and the CRL they serve.

use time::{Duration, OffsetDateTime};

use super::{intent, issue, now};
use crate::{
    ISSUANCE_FEED_OVERLAP, REVOCATION_FEED_OVERLAP, RequestSubject, Revocation, RevocationReason,
    SharedCrl, Store, SubjectRecord,
};

pub fn revocation_feed_lists_what_was_revoked_since(store: &dyn Store) {
    let far_past = now() - Duration::days(3650);
    let first = store.revocations_since(far_past).unwrap();
    assert!(first.entries.is_empty());

    let a = issue(store, intent(40));
    let b = issue(store, intent(41));
    let revocation = Revocation {
        revoked_at: now(),
        reason: RevocationReason::KeyCompromise,
    };
    store.revoke(&a.intent.serial, revocation).unwrap();

    let second = store
        .revocations_since(first.as_of - REVOCATION_FEED_OVERLAP)
        .unwrap();
    assert_eq!(second.entries.len(), 1, "{:?}", second.entries);
    let entry = &second.entries[0];
    assert_eq!(entry.serial, a.intent.serial);
    assert_eq!(entry.revocation, revocation);
    assert_eq!(entry.not_after, a.intent.not_after);
    assert!(second.as_of >= first.as_of);

    // Polling again with the overlap may list it again; nothing recorded later is missed.
    store.revoke(&b.intent.serial, revocation).unwrap();
    let third = store
        .revocations_since(second.as_of - REVOCATION_FEED_OVERLAP)
        .unwrap();
    let mut serials: Vec<_> = third.entries.iter().map(|e| e.serial).collect();
    serials.sort();
    assert_eq!(serials, vec![a.intent.serial, b.intent.serial]);

    // Nothing was recorded after the clock's reading plus an hour.
    let later = store
        .revocations_since(third.as_of + Duration::hours(1))
        .unwrap();
    assert!(later.entries.is_empty(), "{:?}", later.entries);
}

pub fn issuance_feed_lists_what_was_stored_since(store: &dyn Store) {
    let far_past = now() - Duration::days(3650);
    let first = store.issued_since(far_past).unwrap();
    assert!(first.entries.is_empty(), "{:?}", first.entries);

    // A reservation alone is not a certificate.
    store.reserve_serial(&intent(50)).unwrap();
    let a = issue(store, intent(51));
    let b = issue(store, intent(52));
    let second = store
        .issued_since(first.as_of - ISSUANCE_FEED_OVERLAP)
        .unwrap();
    let mut entries = second.entries.clone();
    entries.sort_by_key(|e| e.serial);
    let listed: Vec<_> = entries.iter().map(|e| (e.serial, e.not_after)).collect();
    assert_eq!(
        listed,
        vec![
            (a.intent.serial, a.intent.not_after),
            (b.intent.serial, b.intent.not_after)
        ]
    );
    assert!(second.as_of >= first.as_of);

    // A revoked certificate is the revocation feed's to report, not this one's.
    let revocation = Revocation {
        revoked_at: now(),
        reason: RevocationReason::Superseded,
    };
    store.revoke(&a.intent.serial, revocation).unwrap();
    let third = store
        .issued_since(second.as_of - ISSUANCE_FEED_OVERLAP)
        .unwrap();
    let serials: Vec<_> = third.entries.iter().map(|e| e.serial).collect();
    assert_eq!(serials, vec![b.intent.serial]);

    let later = store
        .issued_since(third.as_of + Duration::hours(1))
        .unwrap();
    assert!(later.entries.is_empty(), "{:?}", later.entries);
}

pub fn nonces_are_redeemed_once(store: &dyn Store) {
    let expires = now() + Duration::minutes(10);
    let nonce = [7u8; 16];
    assert!(store.redeem_nonce(&nonce, expires).unwrap());
    assert!(!store.redeem_nonce(&nonce, expires).unwrap());
    assert!(store.redeem_nonce(&[8u8; 16], expires).unwrap());

    // One winner under concurrency.
    let winners = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| store.redeem_nonce(&[9u8; 16], expires).unwrap()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|won| *won)
            .count()
    });
    assert_eq!(winners, 1);

    // Purging drops only expired nonces.
    let expired = [10u8; 16];
    assert!(
        store
            .redeem_nonce(&expired, now() - Duration::minutes(1))
            .unwrap()
    );
    assert_eq!(store.purge_nonces(now()).unwrap(), 1);
    assert!(!store.redeem_nonce(&nonce, expires).unwrap());
    assert!(store.redeem_nonce(&expired, expires).unwrap());
}

/// Many requests spending nonces at once, as a busy node's do (a store may answer them
/// together): each distinct nonce is fresh once, a nonce spent by every thread has one winner
/// per round, and each caller gets its own account back.
pub fn concurrent_redemptions_each_get_their_own_answer(store: &dyn Store) {
    let expires = now() + Duration::minutes(10);
    let accounts: Vec<_> = (0..4)
        .map(|i| super::acme::account_in(store, &format!("redeemer-{i}")))
        .collect();
    // Half the callers also ask for their account's agent, the rest for an order of theirs.
    let agent = super::agent_in(store, &accounts[0].agent_id);
    let orders: Vec<_> = accounts
        .iter()
        .map(|a| super::acme::order_with_authorization(store, &a.id).0)
        .collect();
    const THREADS: u8 = 16;
    const ROUNDS: u8 = 20;
    let shared_wins = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (accounts, orders, agent) = (&accounts, &orders, &agent);
                s.spawn(move || {
                    let mut wins = vec![0u32; usize::from(ROUNDS)];
                    for round in 0..ROUNDS {
                        let own = [t, round, 0xA5, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                        let which = usize::from(t) % accounts.len();
                        let account = &accounts[which];
                        let (subject, expected) = if t % 2 == 0 {
                            (
                                RequestSubject::AccountAgent,
                                SubjectRecord::Agent(Some(agent.clone())),
                            )
                        } else {
                            (
                                RequestSubject::Order(&orders[which].id),
                                SubjectRecord::Order(Some(orders[which].clone())),
                            )
                        };
                        let got = store
                            .redeem_nonce_and_get_account(&own, expires, &account.id, Some(subject))
                            .unwrap();
                        assert!(
                            got.fresh,
                            "thread {t} round {round}: a new nonce was refused"
                        );
                        assert_eq!(
                            got.account.as_ref(),
                            Some(account),
                            "another caller's account"
                        );
                        assert_eq!(got.subject, Some(expected), "another caller's subject");
                        let shared = [0xEE, round, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                        if store.redeem_nonce(&shared, expires).unwrap() {
                            wins[usize::from(round)] += 1;
                        }
                    }
                    wins
                })
            })
            .collect();
        let mut total = vec![0u32; usize::from(ROUNDS)];
        for h in handles {
            for (sum, w) in total.iter_mut().zip(h.join().unwrap()) {
                *sum += w;
            }
        }
        total
    });
    assert!(
        shared_wins.iter().all(|w| *w == 1),
        "winners per round: {shared_wins:?}"
    );
    // Spent for good: none of them is fresh again.
    for t in 0..THREADS {
        let own = [t, 0, 0xA5, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(!store.redeem_nonce(&own, expires).unwrap());
    }
}

pub fn a_nonce_and_an_account_in_one_call(store: &dyn Store) {
    let expires = now() + Duration::minutes(10);
    let got = store
        .redeem_nonce_and_get_account(&[20u8; 16], expires, "no-such-account", None)
        .unwrap();
    assert!(got.fresh);
    assert!(got.account.is_none());
    assert!(got.subject.is_none());
    let got = store
        .redeem_nonce_and_get_account(
            &[20u8; 16],
            expires,
            "no-such-account",
            Some(RequestSubject::AccountAgent),
        )
        .unwrap();
    assert!(!got.fresh, "a nonce was redeemed twice");
    assert_eq!(got.subject, Some(SubjectRecord::Agent(None)));
    assert!(!store.redeem_nonce(&[20u8; 16], expires).unwrap());

    let created = super::acme::account_in(store, "nonce-account");
    let got = store
        .redeem_nonce_and_get_account(&[21u8; 16], expires, &created.id, None)
        .unwrap();
    assert!(got.fresh);
    assert_eq!(got.account, Some(created));
}

/// The record a request names comes with its account, whether or not the nonce is fresh;
/// absent records are `None` of their kind.
pub fn a_request_subject_is_read_with_its_account(store: &dyn Store) {
    let expires = now() + Duration::minutes(10);
    let account = super::acme::account_in(store, "subject-account");
    let agent = super::agent_in(store, &account.agent_id);
    let (order, authorization) = super::acme::order_with_authorization(store, &account.id);
    let mut nonce = 30u8;
    let mut read = |subject| {
        nonce += 1;
        store
            .redeem_nonce_and_get_account(&[nonce; 16], expires, &account.id, Some(subject))
            .unwrap()
    };
    let got = read(RequestSubject::AccountAgent);
    assert!(got.fresh);
    assert_eq!(got.account.as_ref(), Some(&account));
    assert_eq!(got.subject, Some(SubjectRecord::Agent(Some(agent))));
    let got = read(RequestSubject::Order(&order.id));
    assert_eq!(got.subject, Some(SubjectRecord::Order(Some(order.clone()))));
    let got = read(RequestSubject::Order("no-such-order"));
    assert_eq!(got.subject, Some(SubjectRecord::Order(None)));
    let got = read(RequestSubject::Authorization(&authorization.id));
    assert_eq!(
        got.subject,
        Some(SubjectRecord::Authorization(Some(authorization.clone())))
    );
    let got = read(RequestSubject::Authorization("no-such-authz"));
    assert_eq!(got.subject, Some(SubjectRecord::Authorization(None)));
    // A spent nonce: refused, and still read.
    let got = store
        .redeem_nonce_and_get_account(
            &[31u8; 16],
            expires,
            &account.id,
            Some(RequestSubject::AccountAgent),
        )
        .unwrap();
    assert!(!got.fresh);
    assert!(matches!(got.subject, Some(SubjectRecord::Agent(Some(_)))));
}

pub fn the_shared_crl_is_the_highest_numbered(store: &dyn Store) {
    let crl = |number: u64, fill: u8, len: usize| SharedCrl {
        number,
        this_update: OffsetDateTime::from_unix_timestamp(1_800_000_000 + number as i64).unwrap(),
        der: vec![fill; len],
    };
    assert_eq!(store.shared_crl(0).unwrap(), None);

    // A CRL of 100,000 entries is a few megabytes.
    let five = crl(5, 0x30, 4 << 20);
    assert!(store.share_crl(&five).unwrap());
    assert_eq!(store.shared_crl(0).unwrap().as_ref(), Some(&five));
    assert_eq!(store.shared_crl(4).unwrap().as_ref(), Some(&five));
    assert_eq!(
        store.shared_crl(5).unwrap(),
        None,
        "not above what the poller serves"
    );
    assert_eq!(store.shared_crl(9).unwrap(), None);

    // A lower number, or the same one signed again, never replaces it.
    assert!(!store.share_crl(&crl(3, 1, 10)).unwrap());
    assert!(!store.share_crl(&crl(5, 2, 10)).unwrap());
    assert_eq!(store.shared_crl(0).unwrap().as_ref(), Some(&five));

    // Nodes sharing at once, in any order: the highest number is what stays.
    let numbers: Vec<u64> = vec![9, 6, 13, 7, 12, 8, 11, 10];
    let kept: usize = std::thread::scope(|s| {
        let handles: Vec<_> = numbers
            .iter()
            .map(|&n| s.spawn(move || usize::from(store.share_crl(&crl(n, n as u8, 64)).unwrap())))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert!((1..=numbers.len()).contains(&kept), "{kept} kept");
    assert_eq!(store.shared_crl(5).unwrap(), Some(crl(13, 13, 64)));
    assert!(!store.share_crl(&crl(13, 0, 64)).unwrap());
}
