//! What nodes sharing a store learn from each other: revocations and used nonces.

use time::Duration;

use super::{intent, issue, now};
use crate::{REVOCATION_FEED_OVERLAP, Revocation, RevocationReason, Store};

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
    const THREADS: u8 = 16;
    const ROUNDS: u8 = 20;
    let shared_wins = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let accounts = &accounts;
                s.spawn(move || {
                    let mut wins = vec![0u32; usize::from(ROUNDS)];
                    for round in 0..ROUNDS {
                        let own = [t, round, 0xA5, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                        let account = &accounts[usize::from(t) % accounts.len()];
                        let (fresh, got) = store
                            .redeem_nonce_and_get_account(&own, expires, &account.id)
                            .unwrap();
                        assert!(fresh, "thread {t} round {round}: a new nonce was refused");
                        assert_eq!(got.as_ref(), Some(account), "another caller's account");
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
    let (fresh, account) = store
        .redeem_nonce_and_get_account(&[20u8; 16], expires, "no-such-account")
        .unwrap();
    assert!(fresh);
    assert!(account.is_none());
    let (fresh, _) = store
        .redeem_nonce_and_get_account(&[20u8; 16], expires, "no-such-account")
        .unwrap();
    assert!(!fresh, "a nonce was redeemed twice");
    assert!(!store.redeem_nonce(&[20u8; 16], expires).unwrap());

    let created = super::acme::account_in(store, "nonce-account");
    let (fresh, account) = store
        .redeem_nonce_and_get_account(&[21u8; 16], expires, &created.id)
        .unwrap();
    assert!(fresh);
    assert_eq!(account, Some(created));
}
