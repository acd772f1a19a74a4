//! The ACME part of the battery: single-use EAB under races, unique account keys, atomic key
//! rollover, compare-and-set order and authorization transitions, ARI replacement claims and
//! rate limits.

use std::sync::atomic::{AtomicUsize, Ordering};

use time::Duration;

use super::{certificate, intent, issue, now, serial, token};
use crate::{
    AcmeAccount, AcmeAccountStatus, AcmeAuthorization, AcmeAuthorizationStatus, AcmeIdentifier,
    AcmeOrder, AcmeOrderStatus, RateDecision, RateLimit, SerialEntry, Store, StoreError,
};

fn account(id: &str, thumbprint: &str) -> AcmeAccount {
    AcmeAccount {
        id: id.into(),
        jwk: format!("{{\"k\":\"{thumbprint}\"}}"),
        thumbprint: thumbprint.into(),
        agent_id: "spiffe://example.org/agent/a".into(),
        eab_kid: format!("kid-{id}"),
        contact: vec![],
        status: AcmeAccountStatus::Valid,
        created_at: now(),
    }
}

/// A stored account `id` (made with a token of its own).
pub fn account_in(store: &dyn Store, id: &str) -> AcmeAccount {
    let kid = format!("token-{id}");
    store.insert_token(&token(&kid)).unwrap();
    let created = account(id, &format!("tp-{id}"));
    store.create_acme_account(&created, &kid, now()).unwrap();
    created
}

fn identifier(name: &str) -> AcmeIdentifier {
    AcmeIdentifier {
        kind: "dns".into(),
        value: name.into(),
    }
}

fn authorization(id: &str, account_id: &str) -> AcmeAuthorization {
    AcmeAuthorization {
        id: id.into(),
        account_id: account_id.into(),
        identifier: identifier("a.example.org"),
        status: AcmeAuthorizationStatus::Pending,
        expires: now() + Duration::hours(8),
        challenges: vec![],
        order_id: None,
    }
}

fn order(id: &str, account_id: &str, replaces: Option<&str>) -> AcmeOrder {
    AcmeOrder {
        id: id.into(),
        account_id: account_id.into(),
        agent_id: "spiffe://example.org/agent/a".into(),
        status: AcmeOrderStatus::Ready,
        identifiers: vec![identifier("a.example.org")],
        authorizations: vec![format!("authz-{id}")],
        expires: now() + Duration::hours(8),
        created_at: now(),
        certificate: None,
        replaces: replaces.map(str::to_owned),
        error: None,
        processing_since: None,
        preauthorized: Vec::new(),
    }
}

/// A stored order of `account_id` with its one authorization.
pub fn order_with_authorization(
    store: &dyn Store,
    account_id: &str,
) -> (AcmeOrder, AcmeAuthorization) {
    let order = order(&format!("order-of-{account_id}"), account_id, None);
    let authorization = authorization(&order.authorizations[0], account_id);
    store
        .insert_acme_order(&order, std::slice::from_ref(&authorization), now())
        .unwrap();
    (order, authorization)
}

pub fn acme_account_consumes_its_token(store: &dyn Store) {
    store.insert_token(&token("eab1")).unwrap();
    let a = account("acct1", "tp1");
    assert!(matches!(
        store.create_acme_account(&a, "unknown", now()),
        Err(StoreError::NotFound { .. })
    ));
    store.create_acme_account(&a, "eab1", now()).unwrap();
    assert!(store.token("eab1").unwrap().unwrap().consumed_at.is_some());
    assert_eq!(store.acme_account("acct1").unwrap(), Some(a.clone()));
    assert_eq!(store.acme_account_by_thumbprint("tp1").unwrap(), Some(a));
    // A used token makes no second account, and the failure changes nothing.
    assert!(matches!(
        store.create_acme_account(&account("acct2", "tp2"), "eab1", now()),
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(store.acme_account("acct2").unwrap(), None);
    assert_eq!(store.acme_account_by_thumbprint("tp2").unwrap(), None);
}

pub fn acme_account_keys_are_unique(store: &dyn Store) {
    store.insert_token(&token("eab1")).unwrap();
    store.insert_token(&token("eab2")).unwrap();
    store
        .create_acme_account(&account("acct1", "tp1"), "eab1", now())
        .unwrap();
    assert!(matches!(
        store.create_acme_account(&account("acct2", "tp1"), "eab2", now()),
        Err(StoreError::AlreadyExists { .. })
    ));
    // The refused creation did not consume the second token.
    assert!(store.token("eab2").unwrap().unwrap().consumed_at.is_none());
}

pub fn concurrent_acme_accounts_from_one_token(store: &dyn Store) {
    store.insert_token(&token("race")).unwrap();
    let wins = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for i in 0..16 {
            let wins = &wins;
            s.spawn(move || {
                let a = account(&format!("acct{i}"), &format!("tp{i}"));
                if store.create_acme_account(&a, "race", now()).is_ok() {
                    wins.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(wins.into_inner(), 1);
}

pub fn acme_key_rollover_is_atomic(store: &dyn Store) {
    store.insert_token(&token("eab1")).unwrap();
    store.insert_token(&token("eab2")).unwrap();
    store
        .create_acme_account(&account("a", "tpA"), "eab1", now())
        .unwrap();
    store
        .create_acme_account(&account("b", "tpB"), "eab2", now())
        .unwrap();
    // To another account's key: refused, nothing changes.
    assert!(matches!(
        store.change_acme_account_key("a", "tpA", "{}", "tpB"),
        Err(StoreError::AlreadyExists { .. })
    ));
    assert_eq!(store.acme_account("a").unwrap().unwrap().thumbprint, "tpA");
    let rolled = store
        .change_acme_account_key("a", "tpA", "{\"k\":\"new\"}", "tpC")
        .unwrap();
    assert_eq!(rolled.thumbprint, "tpC");
    assert_eq!(store.acme_account_by_thumbprint("tpA").unwrap(), None);
    assert_eq!(
        store.acme_account_by_thumbprint("tpC").unwrap().unwrap().id,
        "a"
    );
    // A replayed rollover names a key the account no longer has.
    assert!(matches!(
        store.change_acme_account_key("a", "tpA", "{}", "tpD"),
        Err(StoreError::Conflict { .. })
    ));
    // Concurrent rollovers from the same old key: one wins, the index stays consistent.
    let wins = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for i in 0..8 {
            let wins = &wins;
            s.spawn(move || {
                if store
                    .change_acme_account_key("a", "tpC", "{}", &format!("tpR{i}"))
                    .is_ok()
                {
                    wins.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(wins.into_inner(), 1);
    let now_key = store.acme_account("a").unwrap().unwrap().thumbprint;
    assert_eq!(
        store
            .acme_account_by_thumbprint(&now_key)
            .unwrap()
            .unwrap()
            .id,
        "a"
    );
    let indexed = (0..8)
        .filter(|i| {
            store
                .acme_account_by_thumbprint(&format!("tpR{i}"))
                .unwrap()
                .is_some()
        })
        .count();
    assert_eq!(indexed, 1);
    // Contact updates keep the key; a stale record (old key) is refused.
    let mut a = store.acme_account("a").unwrap().unwrap();
    a.contact = vec!["mailto:ops@example.org".into()];
    store.update_acme_account(&a).unwrap();
    let mut stale = a.clone();
    stale.thumbprint = "tpA".into();
    assert!(matches!(
        store.update_acme_account(&stale),
        Err(StoreError::Conflict { .. })
    ));
    // Deactivation is final (RFC 8555 §7.3.6): an update made from the record as it was read
    // before (a contact change racing the deactivation) cannot bring the account back.
    let before = a.clone();
    let mut deactivated = a;
    deactivated.status = AcmeAccountStatus::Deactivated;
    store.update_acme_account(&deactivated).unwrap();
    let mut racing = before;
    racing.contact = vec!["mailto:other@example.org".into()];
    assert!(matches!(
        store.update_acme_account(&racing),
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(
        store.acme_account("a").unwrap().unwrap().status,
        AcmeAccountStatus::Deactivated
    );
}

pub fn acme_orders_and_authorizations(store: &dyn Store) {
    let o = order("o1", "acct", None);
    let z = authorization("authz-o1", "acct");
    store
        .insert_acme_order(&o, std::slice::from_ref(&z), now())
        .unwrap();
    assert!(matches!(
        store.insert_acme_order(&o, &[], now()),
        Err(StoreError::AlreadyExists { .. })
    ));
    assert_eq!(store.acme_order("o1").unwrap(), Some(o.clone()));
    assert_eq!(
        store.acme_authorization("authz-o1").unwrap(),
        Some(z.clone())
    );
    // A new order whose authorization id is taken: refused whole, neither it nor its other
    // authorization is stored.
    let mut clash = order("o-clash", "acct", None);
    let fresh = authorization("authz-fresh", "acct");
    clash.authorizations = vec![fresh.id.clone(), z.id.clone()];
    let mut z_again = z.clone();
    z_again.status = AcmeAuthorizationStatus::Valid;
    assert!(matches!(
        store.insert_acme_order(&clash, &[fresh.clone(), z_again], now()),
        Err(StoreError::AlreadyExists { .. })
    ));
    assert_eq!(store.acme_order("o-clash").unwrap(), None);
    assert_eq!(store.acme_authorization("authz-fresh").unwrap(), None);
    assert_eq!(
        store.acme_authorization("authz-o1").unwrap(),
        Some(z.clone())
    );
    // Several authorizations in one order are all stored.
    let mut pair = order("o-pair", "other", None);
    let (p1, p2) = (
        authorization("authz-p1", "other"),
        authorization("authz-p2", "other"),
    );
    pair.authorizations = vec![p1.id.clone(), p2.id.clone()];
    store
        .insert_acme_order(&pair, &[p1.clone(), p2.clone()], now())
        .unwrap();
    assert_eq!(store.acme_authorization("authz-p1").unwrap(), Some(p1));
    assert_eq!(store.acme_authorization("authz-p2").unwrap(), Some(p2));
    let mut later = order("o2", "acct", None);
    later.created_at = o.created_at + Duration::seconds(1);
    later.authorizations = vec![];
    store.insert_acme_order(&later, &[], now()).unwrap();
    store
        .insert_acme_order(&order("o3", "other", None), &[], now())
        .unwrap();
    assert_eq!(store.acme_orders_of_account("acct").unwrap(), ["o1", "o2"]);
    assert_eq!(
        store.acme_orders_of_account("other").unwrap(),
        ["o-pair", "o3"]
    );

    let mut valid_z = z.clone();
    valid_z.status = AcmeAuthorizationStatus::Valid;
    store
        .update_acme_authorization(&valid_z, AcmeAuthorizationStatus::Pending)
        .unwrap();
    assert!(matches!(
        store.update_acme_authorization(&valid_z, AcmeAuthorizationStatus::Pending),
        Err(StoreError::Conflict { .. })
    ));

    // One of several concurrent finalizes moves ready to processing.
    let wins = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..16 {
            let wins = &wins;
            let o = &o;
            s.spawn(move || {
                let mut processing = o.clone();
                processing.status = AcmeOrderStatus::Processing;
                if store
                    .update_acme_order(&processing, AcmeOrderStatus::Ready)
                    .is_ok()
                {
                    wins.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(wins.into_inner(), 1);
    let mut valid = o.clone();
    valid.status = AcmeOrderStatus::Valid;
    valid.certificate = Some(serial(7));
    store
        .update_acme_order(&valid, AcmeOrderStatus::Processing)
        .unwrap();
    assert_eq!(
        store.acme_order_of_certificate(&serial(7)).unwrap(),
        Some(valid.clone())
    );
    assert_eq!(store.acme_order_of_certificate(&serial(8)).unwrap(), None);

    // The download's read: nothing until the certificate is issued, then both; never a
    // certificate no order produced.
    assert_eq!(store.acme_certificate(&serial(7)).unwrap(), None);
    let reserved = intent(7);
    store.reserve_serial(&reserved).unwrap();
    assert_eq!(store.acme_certificate(&serial(7)).unwrap(), None);
    let record = certificate(reserved);
    store.record_certificate(&record).unwrap();
    assert_eq!(
        store.acme_certificate(&serial(7)).unwrap(),
        Some((valid, record))
    );
    issue(store, intent(8));
    assert_eq!(store.acme_certificate(&serial(8)).unwrap(), None);
}

/// An order moved to `processing` with the facts of the issuance it starts, and the serial
/// reserved for it: the facts of the agent and key asked about, and the reservation, only for
/// the one claim that moves it.
pub fn an_issuance_claims_its_order_with_its_facts(store: &dyn Store) {
    let agent = super::agent_in(store, "spiffe://example.org/agent/claim");
    let account = account_in(store, "claim");
    let blocked = [0x51u8; 32];
    store.block_key(&blocked).unwrap();
    let ready = order("o-claim", &account.id, None);
    store.insert_acme_order(&ready, &[], now()).unwrap();
    let mut processing = ready.clone();
    processing.status = AcmeOrderStatus::Processing;
    processing.processing_since = Some(now());
    let reservation = super::intent_for(31, &agent.id);

    let claim = store
        .claim_acme_order_for_issuance(
            &processing,
            AcmeOrderStatus::Ready,
            &agent.id,
            &blocked,
            Some(&account.thumbprint),
            Some(&reservation),
        )
        .unwrap();
    assert_eq!(
        claim,
        crate::OrderClaim {
            facts: crate::IssuanceFacts {
                agent: Some(agent.clone()),
                key_blocked: true,
                account_key: true,
            },
            reserved: true,
        }
    );
    assert_eq!(
        store.acme_order("o-claim").unwrap(),
        Some(processing.clone())
    );
    assert_eq!(
        store.serial(&reservation.serial).unwrap(),
        Some(SerialEntry::Reserved(reservation.clone()))
    );

    // A second claim of the same order loses, reserves nothing and changes nothing; an
    // unknown order is not found.
    let mut again = processing.clone();
    again.error = Some("must not be stored".into());
    let losing = super::intent_for(32, &agent.id);
    assert!(matches!(
        store.claim_acme_order_for_issuance(
            &again,
            AcmeOrderStatus::Ready,
            &agent.id,
            &[0x52; 32],
            None,
            Some(&losing),
        ),
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(store.acme_order("o-claim").unwrap(), Some(processing));
    let mut unknown = again;
    unknown.id = "o-claim-none".into();
    assert!(matches!(
        store.claim_acme_order_for_issuance(
            &unknown,
            AcmeOrderStatus::Ready,
            &agent.id,
            &[0x52; 32],
            None,
            Some(&losing),
        ),
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.acme_order("o-claim-none").unwrap(), None);
    assert_eq!(store.serial(&losing.serial).unwrap(), None);
    assert_eq!(store.serial_count().unwrap(), 1);

    // The facts of another agent and key, on a fresh order, without a reservation.
    let second = order("o-claim-2", &account.id, None);
    store.insert_acme_order(&second, &[], now()).unwrap();
    let mut taken = second.clone();
    taken.status = AcmeOrderStatus::Processing;
    let claim = store
        .claim_acme_order_for_issuance(
            &taken,
            AcmeOrderStatus::Ready,
            "spiffe://example.org/agent/claim-none",
            &[0x52; 32],
            Some("tp-none"),
            None,
        )
        .unwrap();
    assert_eq!(
        claim,
        crate::OrderClaim {
            facts: crate::IssuanceFacts {
                agent: None,
                key_blocked: false,
                account_key: false,
            },
            reserved: false,
        }
    );
    assert_eq!(store.serial_count().unwrap(), 1);

    // A serial already taken is not reserved again, and the order moves all the same.
    let third = order("o-claim-3", &account.id, None);
    store.insert_acme_order(&third, &[], now()).unwrap();
    let mut claimed = third.clone();
    claimed.status = AcmeOrderStatus::Processing;
    let mut taken_serial = super::intent_for(31, "spiffe://example.org/agent/other");
    taken_serial.key_sha256 = "ff".repeat(32);
    let claim = store
        .claim_acme_order_for_issuance(
            &claimed,
            AcmeOrderStatus::Ready,
            &agent.id,
            &[0x53; 32],
            None,
            Some(&taken_serial),
        )
        .unwrap();
    assert!(!claim.reserved);
    assert_eq!(store.acme_order("o-claim-3").unwrap(), Some(claimed));
    assert_eq!(
        store.serial(&reservation.serial).unwrap(),
        Some(SerialEntry::Reserved(reservation))
    );
}

/// A certificate recorded with the order it completes: both or, when the certificate cannot
/// be recorded, neither; an order that moved on meanwhile leaves the certificate recorded.
pub fn a_certificate_completes_its_order(store: &dyn Store) {
    let mut processing = order("o-done", "acct", None);
    processing.status = AcmeOrderStatus::Processing;
    store.insert_acme_order(&processing, &[], now()).unwrap();
    let mut valid = processing.clone();
    valid.status = AcmeOrderStatus::Valid;

    // No reservation: refused, the order untouched.
    let unreserved = certificate(intent(700));
    valid.certificate = Some(unreserved.intent.serial);
    assert!(matches!(
        store.record_certificate_of_order(&unreserved, &valid, AcmeOrderStatus::Processing),
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(
        store.acme_order("o-done").unwrap(),
        Some(processing.clone())
    );

    store.reserve_serial(&intent(701)).unwrap();
    let record = certificate(intent(701));
    valid.certificate = Some(record.intent.serial);
    store
        .record_certificate_of_order(&record, &valid, AcmeOrderStatus::Processing)
        .unwrap()
        .unwrap();
    assert_eq!(store.acme_order("o-done").unwrap(), Some(valid.clone()));
    assert_eq!(
        store.acme_certificate(&record.intent.serial).unwrap(),
        Some((valid.clone(), record.clone()))
    );

    // The same certificate again: it has one already, the order stays as it is.
    let mut other = valid.clone();
    other.error = Some("must not be stored".into());
    assert!(matches!(
        store.record_certificate_of_order(&record, &other, AcmeOrderStatus::Valid),
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(store.acme_order("o-done").unwrap(), Some(valid.clone()));

    // The order moved on (no longer processing): the certificate is recorded, the order's
    // answer is a conflict; an unknown order's is not-found.
    for (n, id, expect_conflict) in [(702, "o-done", true), (703, "o-none", false)] {
        store.reserve_serial(&intent(n)).unwrap();
        let record = certificate(intent(n));
        let mut target = valid.clone();
        target.id = id.into();
        target.certificate = Some(record.intent.serial);
        let order_answer = store
            .record_certificate_of_order(&record, &target, AcmeOrderStatus::Processing)
            .unwrap();
        if expect_conflict {
            assert!(
                matches!(order_answer, Err(StoreError::Conflict { .. })),
                "{order_answer:?}"
            );
        } else {
            assert!(
                matches!(order_answer, Err(StoreError::NotFound { .. })),
                "{order_answer:?}"
            );
        }
        assert!(matches!(
            store.serial(&record.intent.serial).unwrap(),
            Some(SerialEntry::Issued(_))
        ));
    }
    assert_eq!(store.acme_order("o-done").unwrap(), Some(valid));
}

pub fn acme_replacement_claims(store: &dyn Store) {
    let first = order("r1", "acct", Some("cert.A"));
    store.insert_acme_order(&first, &[], now()).unwrap();
    assert!(matches!(
        store.insert_acme_order(&order("r2", "acct", Some("cert.A")), &[], now()),
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(store.acme_order("r2").unwrap(), None);
    assert_eq!(store.acme_replacement("cert.A").unwrap().unwrap().id, "r1");
    // Once the claiming order expires unfinished, it stops blocking.
    let after_expiry = first.expires + Duration::seconds(1);
    store
        .insert_acme_order(&order("r3", "acct", Some("cert.A")), &[], after_expiry)
        .unwrap();
    assert_eq!(store.acme_replacement("cert.A").unwrap().unwrap().id, "r3");
    // An invalid claimant never blocks.
    let mut invalid = store.acme_order("r3").unwrap().unwrap();
    invalid.status = AcmeOrderStatus::Invalid;
    store
        .update_acme_order(&invalid, AcmeOrderStatus::Ready)
        .unwrap();
    store
        .insert_acme_order(&order("r4", "acct", Some("cert.A")), &[], now())
        .unwrap();
    // Concurrent claims on a fresh certificate: one winner.
    let wins = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for i in 0..8 {
            let wins = &wins;
            s.spawn(move || {
                let o = order(&format!("c{i}"), "acct", Some("cert.B"));
                if store.insert_acme_order(&o, &[], now()).is_ok() {
                    wins.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(wins.into_inner(), 1);
}

pub fn old_acme_orders_are_forgotten_whole(store: &dyn Store) {
    let day = Duration::days(1);
    // An old finished order: authorization, certificate, replacement claim.
    let mut old = order("old", "acct", Some("cert.X"));
    old.created_at = now() - day * 3;
    old.expires = old.created_at + Duration::hours(8);
    let old_z = authorization("authz-old", "acct");
    store
        .insert_acme_order(&old, std::slice::from_ref(&old_z), now())
        .unwrap();
    let mut valid = old.clone();
    valid.status = AcmeOrderStatus::Valid;
    valid.certificate = Some(serial(21));
    store
        .update_acme_order(&valid, AcmeOrderStatus::Ready)
        .unwrap();
    issue(store, intent(21));
    // An old order of another account whose claim a newer order took over.
    let mut abandoned = order("abandoned", "other", Some("cert.Y"));
    abandoned.created_at = now() - day * 2;
    abandoned.expires = abandoned.created_at + Duration::hours(8);
    abandoned.status = AcmeOrderStatus::Invalid;
    store.insert_acme_order(&abandoned, &[], now()).unwrap();
    // Old, but made when orders lived longer: not expired yet, so kept.
    let mut long_lived = order("long-lived", "other", None);
    long_lived.created_at = now() - day * 4;
    long_lived.expires = now() + Duration::hours(1);
    long_lived.authorizations = vec![];
    store.insert_acme_order(&long_lived, &[], now()).unwrap();
    // Recent orders, one on the boundary (kept: only orders created before it go).
    let recent = order("recent", "acct", Some("cert.Y"));
    let recent_z = authorization("authz-recent", "acct");
    store
        .insert_acme_order(&recent, std::slice::from_ref(&recent_z), now())
        .unwrap();
    let cutoff = now() - day;
    let mut boundary = order("boundary", "other", None);
    boundary.created_at = cutoff;
    boundary.authorizations = vec![];
    store.insert_acme_order(&boundary, &[], now()).unwrap();

    // One at a time, then the rest; nothing left to do after.
    let expired = now() - Duration::hours(1);
    assert_eq!(store.purge_acme_orders(cutoff, expired, 1).unwrap(), 1);
    assert_eq!(store.purge_acme_orders(cutoff, expired, 100).unwrap(), 1);
    assert_eq!(store.purge_acme_orders(cutoff, expired, 100).unwrap(), 0);

    assert_eq!(store.acme_order("old").unwrap(), None);
    assert_eq!(store.acme_order("abandoned").unwrap(), None);
    assert_eq!(store.acme_authorization("authz-old").unwrap(), None);
    assert_eq!(store.acme_order_of_certificate(&serial(21)).unwrap(), None);
    assert_eq!(store.acme_certificate(&serial(21)).unwrap(), None);
    assert_eq!(store.acme_replacement("cert.X").unwrap(), None);
    assert_eq!(store.acme_orders_of_account("acct").unwrap(), ["recent"]);
    assert_eq!(
        store.acme_orders_of_account("other").unwrap(),
        ["long-lived", "boundary"]
    );
    assert_eq!(store.acme_order("long-lived").unwrap(), Some(long_lived));
    // The certificate stays; the claim the recent order holds stays with it.
    assert!(matches!(
        store.serial(&serial(21)).unwrap(),
        Some(SerialEntry::Issued(_))
    ));
    assert_eq!(store.acme_order("recent").unwrap(), Some(recent.clone()));
    assert_eq!(
        store.acme_authorization("authz-recent").unwrap(),
        Some(recent_z)
    );
    assert_eq!(
        store.acme_replacement("cert.Y").unwrap().unwrap().id,
        "recent"
    );
    // The forgotten claim no longer blocks a replacement of its certificate.
    store
        .insert_acme_order(&order("again", "acct", Some("cert.X")), &[], now())
        .unwrap();
}

/// Several limits are taken together or not at all (a request refused by one spends nothing
/// of the others), also under concurrency; a unit given back can be taken again, and only one.
pub fn rate_limits_are_taken_together_and_given_back(store: &dyn Store) {
    let t = now();
    let hour = Duration::hours(1);
    let limit = |key: &str, limit| RateLimit {
        key: key.into(),
        limit,
        window: hour,
    };
    let both = [limit("a", 2), limit("b", 1), limit("none", 0)];
    assert_eq!(
        store.take_rate_limits(&both, t).unwrap(),
        RateDecision::Allowed
    );
    assert!(matches!(
        store.take_rate_limits(&both, t).unwrap(),
        RateDecision::Limited { retry_after } if retry_after > Duration::minutes(50)
    ));
    // `a` gave its second unit to no one.
    assert_eq!(
        store.take_rate_limit("a", 2, hour, t).unwrap(),
        RateDecision::Allowed
    );
    assert!(matches!(
        store.take_rate_limit("a", 2, hour, t).unwrap(),
        RateDecision::Limited { .. }
    ));
    assert_eq!(
        store.take_rate_limits(&[limit("none", 0)], t).unwrap(),
        RateDecision::Allowed
    );
    assert_eq!(
        store.take_rate_limits(&[], t).unwrap(),
        RateDecision::Allowed
    );

    // Given back: one unit again, not two; a key never taken from gains nothing.
    store.return_rate_limit("a", 2, hour, t).unwrap();
    assert_eq!(
        store.take_rate_limit("a", 2, hour, t).unwrap(),
        RateDecision::Allowed
    );
    assert!(matches!(
        store.take_rate_limit("a", 2, hour, t).unwrap(),
        RateDecision::Limited { .. }
    ));
    store.return_rate_limit("never", 1, hour, t).unwrap();
    store.return_rate_limit("never", 1, hour, t).unwrap();
    assert_eq!(
        store.take_rate_limit("never", 1, hour, t).unwrap(),
        RateDecision::Allowed
    );
    assert!(matches!(
        store.take_rate_limit("never", 1, hour, t).unwrap(),
        RateDecision::Limited { .. }
    ));

    // Sixteen requests, each under a shared limit of 5 and one of its own: five pass, and the
    // eleven refused left their own limits untouched.
    let passed = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for i in 0..16 {
            let passed = &passed;
            s.spawn(move || {
                let own = format!("own-{i}");
                let limits = [limit("shared", 5), limit(&own, 100)];
                if store.take_rate_limits(&limits, t).unwrap() == RateDecision::Allowed {
                    passed.lock().unwrap().push(own);
                }
            });
        }
    });
    let passed = passed.into_inner().unwrap();
    assert_eq!(passed.len(), 5, "{passed:?}");
    for i in 0..16 {
        let own = format!("own-{i}");
        // With a limit of 1 per hour, a unit taken a moment ago shows as no unit left.
        let spent = matches!(
            store.check_rate_limit(&own, 1, hour, t).unwrap(),
            RateDecision::Limited { .. }
        );
        assert_eq!(spent, passed.contains(&own), "{own}");
    }
}

pub fn rate_limits(store: &dyn Store) {
    let t = now();
    let hour = Duration::hours(1);
    for _ in 0..3 {
        assert_eq!(
            store.take_rate_limit("k", 3, hour, t).unwrap(),
            RateDecision::Allowed
        );
    }
    assert!(matches!(
        store.check_rate_limit("k", 3, hour, t).unwrap(),
        RateDecision::Limited { .. }
    ));
    assert_eq!(
        store.check_rate_limit("fresh", 3, hour, t).unwrap(),
        RateDecision::Allowed
    );
    let RateDecision::Limited { retry_after } = store.take_rate_limit("k", 3, hour, t).unwrap()
    else {
        panic!("the fourth unit within the window must be refused");
    };
    assert!(retry_after > Duration::ZERO && retry_after <= Duration::minutes(20));
    assert_eq!(
        store
            .take_rate_limit("k", 3, hour, t + retry_after)
            .unwrap(),
        RateDecision::Allowed
    );
    assert_eq!(
        store.take_rate_limit("other", 3, hour, t).unwrap(),
        RateDecision::Allowed
    );
    assert_eq!(
        store.take_rate_limit("unlimited", 0, hour, t).unwrap(),
        RateDecision::Allowed
    );
    // Concurrent takers never get more than the limit.
    let allowed = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..16 {
            let allowed = &allowed;
            s.spawn(move || {
                if store.take_rate_limit("race", 5, hour, t).unwrap() == RateDecision::Allowed {
                    allowed.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(allowed.into_inner(), 5);
}
