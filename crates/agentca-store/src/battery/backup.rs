//! The backup part of the battery: a store with every kind of record exports, goes through
//! its JSON form line by line, loads into an empty store of any backend, and the copy exports
//! the same list and answers every lookup (so the indexes were rebuilt) as the original does.

use time::Duration;

use super::{certificate, intent, intent_for, issue, now, serial, token};
use crate::{
    AcmeAccount, AcmeAccountStatus, AcmeAuthorization, AcmeAuthorizationStatus, AcmeIdentifier,
    AcmeOrder, AcmeOrderStatus, AgentRecord, Backup, BackupRecord, CertificateFilter, Revocation,
    RevocationReason, ScepTransaction, SerialEntry, Store, StoreError,
};

const AGENT: &str = "spiffe://example.org/agent/backup";

/// Fills `store` with at least one record of every kind.
pub fn populate(store: &dyn Store) {
    let t = now();
    for (id, disabled) in [(AGENT, false), ("spiffe://example.org/agent/gone", true)] {
        store
            .insert_agent(&AgentRecord {
                id: id.into(),
                owner: Some("ops".into()),
                policy: None,
                dns: vec!["a.example.org".into()],
                disabled,
                created_at: t,
                // One agent asked to renew early: the request is part of its record.
                early_renewal: (!disabled).then_some(crate::EarlyRenewal {
                    advised_at: t,
                    within_seconds: 600,
                }),
            })
            .unwrap();
    }
    // An orphaned reservation, three certificates (two of one key), one revoked.
    store.reserve_serial(&intent(90)).unwrap();
    let first = issue(store, intent_for(91, AGENT));
    issue(store, intent_for(92, AGENT));
    let mut other_key = intent_for(93, AGENT);
    other_key.key_sha256 = "ab".repeat(32);
    issue(store, other_key);
    store
        .revoke(
            &first.intent.serial,
            Revocation {
                revoked_at: t,
                reason: RevocationReason::KeyCompromise,
            },
        )
        .unwrap();
    store.block_key(&[7u8; 32]).unwrap();

    store.insert_token(&token("unused")).unwrap();
    store.insert_token(&token("spent")).unwrap();
    store.consume_token("spent", t).unwrap();
    store
        .record_scep_transaction(&ScepTransaction {
            request_key: "key\u{0}with nul".into(),
            transaction_id: "tid".into(),
            serial: serial(92),
            agent_id: AGENT.into(),
            created_at: t,
        })
        .unwrap();

    store.insert_token(&token("eab")).unwrap();
    let account = AcmeAccount {
        id: "acct".into(),
        jwk: "{\"k\":\"v\"}".into(),
        thumbprint: "thumb".into(),
        agent_id: AGENT.into(),
        eab_kid: "eab".into(),
        contact: vec!["mailto:ops@example.org".into()],
        status: AcmeAccountStatus::Valid,
        created_at: t,
    };
    store.create_acme_account(&account, "eab", t).unwrap();
    let identifier = AcmeIdentifier {
        kind: "dns".into(),
        value: "a.example.org".into(),
    };
    let authz = AcmeAuthorization {
        id: "authz".into(),
        account_id: "acct".into(),
        identifier: identifier.clone(),
        status: AcmeAuthorizationStatus::Pending,
        expires: t + Duration::hours(8),
        challenges: vec![],
        order_id: Some("order".into()),
    };
    let mut order = AcmeOrder {
        id: "order".into(),
        account_id: "acct".into(),
        agent_id: AGENT.into(),
        status: AcmeOrderStatus::Ready,
        identifiers: vec![identifier.clone()],
        authorizations: vec!["authz".into()],
        expires: t + Duration::hours(8),
        created_at: t,
        certificate: None,
        replaces: Some("aki.serial".into()),
        error: None,
        processing_since: None,
        preauthorized: vec![identifier],
    };
    store
        .insert_acme_order(&order, std::slice::from_ref(&authz), t)
        .unwrap();
    let mut valid = authz;
    valid.status = AcmeAuthorizationStatus::Valid;
    store
        .update_acme_authorization(&valid, AcmeAuthorizationStatus::Pending)
        .unwrap();
    order.status = AcmeOrderStatus::Valid;
    order.certificate = Some(serial(93));
    store
        .update_acme_order(&order, AcmeOrderStatus::Ready)
        .unwrap();

    store.next_crl_number(t).unwrap();
    store.next_crl_number(t).unwrap();
    store.commit().unwrap();
}

/// Every record of `store`.
pub fn export(store: &dyn Backup) -> Vec<BackupRecord> {
    let mut out = Vec::new();
    store
        .export(&mut |r| {
            out.push(r);
            Ok(())
        })
        .unwrap();
    out
}

/// Exports `source` (populated), loads the JSON lines into the empty `target` and checks the
/// copy record by record and lookup by lookup.
pub fn round_trip(source: &dyn Backup, target: &dyn Backup) {
    populate(source);
    assert!(!source.is_empty().unwrap());
    assert!(target.is_empty().unwrap());
    let records = export(source);
    for kind in BackupRecord::KINDS {
        assert!(
            records.iter().any(|r| r.kind() == kind),
            "no {kind} exported"
        );
    }
    // Through the text form, as a backup file carries them.
    let lines: Vec<String> = records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect();
    let mut parsed = lines
        .iter()
        .map(|l| serde_json::from_str::<BackupRecord>(l).unwrap());
    let counts = target.import(&mut parsed).unwrap();
    assert_eq!(counts.total(), records.len() as u64);
    assert_eq!(export(target), records, "the copy exports other records");

    // The indexes were rebuilt with the records.
    let all = CertificateFilter::default();
    assert_eq!(
        target.certificates(&all).unwrap(),
        source.certificates(&all).unwrap()
    );
    let mine = CertificateFilter {
        agent_id: Some(AGENT.into()),
    };
    assert_eq!(target.certificates(&mine).unwrap().len(), 3);
    assert_eq!(
        target
            .certificates_with_key(&"00".repeat(32))
            .unwrap()
            .len(),
        2
    );
    let far_past = now() - Duration::days(1);
    assert_eq!(
        target.revoked(far_past).unwrap(),
        source.revoked(far_past).unwrap()
    );
    assert_eq!(target.revoked(far_past).unwrap().len(), 1);
    assert_eq!(
        target.orphaned_intents().unwrap(),
        source.orphaned_intents().unwrap()
    );
    assert_eq!(target.orphaned_intents().unwrap().len(), 1);
    assert_eq!(target.serial_count().unwrap(), 4);
    assert!(matches!(
        target.serial(&serial(91)).unwrap(),
        Some(SerialEntry::Issued(r)) if r.revocation.is_some() && !r.der.is_empty()
    ));
    assert!(target.is_key_blocked(&[7u8; 32]).unwrap());
    assert!(
        target
            .token("spent")
            .unwrap()
            .unwrap()
            .consumed_at
            .is_some()
    );
    assert!(matches!(
        target.consume_token("eab", now()),
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(
        target.acme_account_by_thumbprint("thumb").unwrap(),
        source.acme_account("acct").unwrap()
    );
    assert_eq!(target.acme_orders_of_account("acct").unwrap(), ["order"]);
    assert_eq!(
        target
            .acme_order_of_certificate(&serial(93))
            .unwrap()
            .map(|o| o.id),
        Some("order".into())
    );
    assert_eq!(
        target.acme_replacement("aki.serial").unwrap(),
        source.acme_replacement("aki.serial").unwrap()
    );
    assert!(
        target
            .scep_transaction("key\u{0}with nul")
            .unwrap()
            .is_some()
    );
    assert_eq!(target.crl_state().unwrap().unwrap().number, 2);
    assert_eq!(target.next_crl_number(now()).unwrap().number, 3);
    // A serial the copy holds is never reserved again.
    assert!(matches!(
        target.reserve_serial(&intent(92)),
        Err(StoreError::AlreadyExists { .. })
    ));

    // A second load is refused and changes nothing.
    let before = export(target);
    let again = target.import(&mut records.clone().into_iter());
    assert!(
        matches!(again, Err(StoreError::Conflict { .. })),
        "{again:?}"
    );
    assert_eq!(export(target), before);
}

/// A backup that names one record twice is refused whole.
pub fn duplicates_are_refused(target: &dyn Backup) {
    let record = BackupRecord::certificate(certificate(intent(5)));
    let result = target.import(&mut vec![record.clone(), record].into_iter());
    assert!(
        matches!(result, Err(StoreError::Conflict { .. })),
        "{result:?}"
    );
}
