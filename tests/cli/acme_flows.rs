//! The ACME flows the Debian clients cannot drive, with instant-acme against the real
//! `agentca serve`: ARI windows and `replaces` (with `alreadyReplaced`), revocation by the
//! account and the immediate window it opens, key rollover, account deactivation, and many
//! accounts ordering at once.

use std::sync::Arc;

use agentca_store::AcmeOrderStatus;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use instant_acme::{
    Account, AccountCredentials, CertificateIdentifier, ExternalAccountKey, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy, RevocationReason, RevocationRequest,
};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::acme_clients::ocsp_status_at;
use super::harness::AcmeServer;
use super::support::{BASE_URL, Env, agent_id, now, pem_certs, serial_hex};

pub(super) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn new_account(server: &AcmeServer<'_>, agent: &str) -> (Account, AccountCredentials) {
    let (kid, hmac) = server.eab(agent);
    let key = ExternalAccountKey::new(kid, &URL_SAFE_NO_PAD.decode(hmac).unwrap());
    Account::builder_with_root(server.root_pem())
        .unwrap()
        .create(
            &NewAccount {
                contact: &["mailto:ops@example.org"],
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            server.acme_directory_url(),
            Some(&key),
        )
        .await
        .unwrap()
}

/// The account whose key is `key_der`, found again by its key (e.g. after a restart).
async fn existing_account(
    server: &AcmeServer<'_>,
    key_der: PrivatePkcs8KeyDer<'static>,
) -> Account {
    let key = instant_acme::Key::from_pkcs8_der(key_der.clone_key()).unwrap();
    Account::builder_with_root(server.root_pem())
        .unwrap()
        .from_key((key, key_der.into()), server.acme_directory_url())
        .await
        .unwrap()
        .0
}

/// Orders `names` (pre-authorized, so the order is ready at once), finalizes with a fresh key,
/// and returns the chain's DER certificates.
async fn obtain(
    account: &Account,
    names: &[&str],
    replaces: Option<&CertificateDer<'_>>,
) -> Vec<Vec<u8>> {
    let ids: Vec<Identifier> = names.iter().map(|n| Identifier::Dns((*n).into())).collect();
    let mut new_order = NewOrder::new(&ids);
    if let Some(cert) = replaces {
        new_order = new_order.replaces(CertificateIdentifier::try_from(cert).unwrap());
    }
    let mut order = account.new_order(&new_order).await.unwrap();
    let status = order.poll_ready(&RetryPolicy::default()).await.unwrap();
    assert_eq!(status, OrderStatus::Ready);
    order.finalize().await.unwrap();
    let chain = order
        .poll_certificate(&RetryPolicy::default())
        .await
        .unwrap();
    let certs = pem_certs(&chain);
    assert_eq!(certs.len(), 2, "leaf and issuing CA");
    certs
}

#[test]
fn ari_windows_replacement_and_revocation() {
    let env = Env::with_ca();
    let agent = env.add_agent("/agent/ari", &["--dns", "ari.agent.test"]);
    let server = AcmeServer::start(&env);
    runtime().block_on(async {
        let (account, _) = new_account(&server, &agent).await;
        let signed_at = now();
        let first = obtain(&account, &["ari.agent.test"], None).await;
        let expect = agentca_testkit::Expectation::new(&agent, signed_at)
            .dns(["ari.agent.test"])
            .base_url(BASE_URL);
        env.check_leaf(&first[0], &expect);

        // A window inside the validity, and a Retry-After.
        let first_der = CertificateDer::from(first[0].clone());
        let id = CertificateIdentifier::try_from(&first_der).unwrap();
        let (info, retry) = account.renewal_info(&id).await.unwrap();
        let (_, cert) = X509Certificate::from_der(&first[0]).unwrap();
        let not_before = cert.validity().not_before.timestamp();
        let not_after = cert.validity().not_after.timestamp();
        let (start, end) = (
            info.suggested_window.start.unix_timestamp(),
            info.suggested_window.end.unix_timestamp(),
        );
        assert!(
            not_before < start && start < end && end < not_after,
            "{info:?}"
        );
        assert!(retry.as_secs() > 0, "Retry-After {retry:?}");

        // A renewal that replaces the first certificate; a second replacement is refused.
        let signed_at = now();
        let second = obtain(&account, &["ari.agent.test"], Some(&first_der)).await;
        assert_ne!(serial_hex(&first[0]), serial_hex(&second[0]));
        let expect = agentca_testkit::Expectation::new(&agent, signed_at)
            .dns(["ari.agent.test"])
            .base_url(BASE_URL);
        env.check_leaf(&second[0], &expect);
        let pems = [&first, &second].map(|chain| {
            let name = format!("ari-{}.pem", serial_hex(&chain[0]));
            env.write(
                &name,
                agentca_testkit::tools::pem("CERTIFICATE", &[&chain[0]]),
            )
        });
        for pem in &pems {
            assert_eq!(ocsp_status_at(&env, &server, pem), "good");
        }
        let ids = [Identifier::Dns("ari.agent.test".into())];
        let Err(again) = account
            .new_order(&NewOrder::new(&ids).replaces(id.clone()))
            .await
        else {
            panic!("a second replacement of one certificate was accepted");
        };
        assert!(
            again.to_string().contains("alreadyReplaced"),
            "replacing twice: {again}"
        );

        // Revoked by the account: the window opens at once, and OCSP says revoked.
        let second_der = CertificateDer::from(second[0].clone());
        account
            .revoke(&RevocationRequest {
                certificate: &second_der,
                reason: Some(RevocationReason::Superseded),
            })
            .await
            .unwrap();
        server.await_revoked_everywhere(&serial_hex(&second[0]));
        let second_id = CertificateIdentifier::try_from(&second_der).unwrap();
        let (info, _) = account.renewal_info(&second_id).await.unwrap();
        let now = time::OffsetDateTime::now_utc();
        assert!(
            info.suggested_window.end <= now + time::Duration::seconds(2),
            "a revoked certificate should be renewed now: {info:?}"
        );
        let shown = env.json(&["cert", "show", &serial_hex(&second[0])]);
        assert_eq!(shown["status"], "revoked", "{shown}");
        assert_eq!(ocsp_status_at(&env, &server, &pems[1]), "revoked");
        assert_eq!(ocsp_status_at(&env, &server, &pems[0]), "good");
        // Revoking twice is refused.
        let twice = account
            .revoke(&RevocationRequest {
                certificate: &second_der,
                reason: None,
            })
            .await
            .unwrap_err();
        assert!(twice.to_string().contains("alreadyRevoked"), "{twice}");
    });
    env.assert_audit_intact();
}

#[test]
fn key_rollover_and_deactivation() {
    let env = Env::with_ca();
    let agent = env.add_agent("/agent/roll", &["--dns", "roll.agent.test"]);
    let server = AcmeServer::start(&env);
    runtime().block_on(async {
        let (mut account, old_credentials) = new_account(&server, &agent).await;
        let old_credentials: AccountCredentials =
            serde_json::from_value(serde_json::to_value(&old_credentials).unwrap()).unwrap();
        let new_credentials = account.update_key().await.unwrap();
        // The new key works.
        obtain(&account, &["roll.agent.test"], None).await;
        // The old key no longer names the account.
        let old = Account::builder_with_root(server.root_pem())
            .unwrap()
            .from_credentials(old_credentials)
            .await
            .unwrap();
        let ids = [Identifier::Dns("roll.agent.test".into())];
        let Err(refused) = old.new_order(&NewOrder::new(&ids)).await else {
            panic!("the rolled-over key still orders");
        };
        assert!(
            refused.to_string().contains("unauthorized")
                || refused.to_string().contains("signature"),
            "{refused}"
        );

        // Deactivated, the account can do nothing more.
        let restored = Account::builder_with_root(server.root_pem())
            .unwrap()
            .from_credentials(new_credentials)
            .await
            .unwrap();
        restored.deactivate().await.unwrap();
        let Err(refused) = account.new_order(&NewOrder::new(&ids)).await else {
            panic!("a deactivated account still orders");
        };
        assert!(refused.to_string().contains("deactivated"), "{refused}");
    });
    let events: Vec<_> = env
        .audit_entries()
        .into_iter()
        .filter_map(|e| e["event"].as_str().map(str::to_owned))
        .filter(|e| e.starts_with("acme.account"))
        .collect();
    assert_eq!(
        events,
        [
            "acme.account.created",
            "acme.account.key-changed",
            "acme.account.deactivated"
        ]
    );
    env.assert_audit_intact();
}

#[test]
fn many_accounts_order_at_once_with_unique_serials() {
    const ACCOUNTS: usize = 6;
    const ORDERS: usize = 4;
    let env = Env::with_ca();
    let agent = env.add_agent("/agent/fleet", &["--dns", "fleet.agent.test"]);
    let server = AcmeServer::start(&env);
    let issued_before = server.metric("agentca_certificates_issued_total");
    let serials = runtime().block_on(async {
        let mut accounts = Vec::new();
        for _ in 0..ACCOUNTS {
            accounts.push(Arc::new(new_account(&server, &agent).await.0));
        }
        let tasks: Vec<_> = accounts
            .into_iter()
            .map(|account| {
                tokio::spawn(async move {
                    let mut serials = Vec::new();
                    for _ in 0..ORDERS {
                        let chain = obtain(&account, &["fleet.agent.test"], None).await;
                        serials.push(serial_hex(&chain[0]));
                    }
                    serials
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        all
    });
    let mut unique = serials.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        ACCOUNTS * ORDERS,
        "duplicate serials: {serials:?}"
    );
    let issued = server.metric("agentca_certificates_issued_total") - issued_before;
    assert_eq!(issued as usize, ACCOUNTS * ORDERS);
    let listed = env.listed_serials(&["--agent", &agent_id("/agent/fleet")]);
    for serial in &serials {
        assert!(listed.contains(serial), "{serial} not in the store");
    }
}

/// ACME-A2 across a crash: once newAccount has answered, the EAB credential is spent and the
/// account exists, even if the server is killed with SIGKILL right after.
#[test]
fn a_spent_eab_credential_and_its_account_survive_kill_9() {
    let env = Env::with_ca();
    let agent = env.add_agent("/agent/crash", &["--dns", "crash.agent.test"]);
    let first = AcmeServer::start(&env);
    let (kid, hmac) = first.eab(&agent);
    let hmac = URL_SAFE_NO_PAD.decode(hmac).unwrap();
    let rt = runtime();
    let key_der = rt.block_on(async {
        let (_, credentials) = Account::builder_with_root(first.root_pem())
            .unwrap()
            .create(
                &NewAccount {
                    contact: &[],
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                first.acme_directory_url(),
                Some(&ExternalAccountKey::new(kid.clone(), &hmac)),
            )
            .await
            .unwrap();
        credentials.private_key().clone_key()
    });
    let AcmeServer { server, .. } = first;
    server.kill();

    let second = AcmeServer::start(&env);
    rt.block_on(async {
        // The spent credential makes no second account.
        let refused = Account::builder_with_root(second.root_pem())
            .unwrap()
            .create(
                &NewAccount {
                    contact: &[],
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                second.acme_directory_url(),
                Some(&ExternalAccountKey::new(kid, &hmac)),
            )
            .await;
        let Err(refused) = refused else {
            panic!("a spent EAB credential made a second account after a restart");
        };
        assert!(refused.to_string().contains("unauthorized"), "{refused}");
        // The account made before the kill is still there, and orders.
        let account = existing_account(&second, key_der).await;
        obtain(&account, &["crash.agent.test"], None).await;
    });
    env.assert_audit_intact();
}

/// Acknowledged writes across a crash: certificates issued by concurrent finalizes (which share
/// flushes on the commit thread) are all in the store and in the audit log after the server is
/// killed with SIGKILL right after the last answer.
#[test]
fn certificates_from_concurrent_finalizes_survive_kill_9() {
    const ACCOUNTS: usize = 8;
    let env = Env::with_ca();
    let agent = env.add_agent("/agent/batch", &["--dns", "batch.agent.test"]);
    let server = AcmeServer::start(&env);
    let serials = runtime().block_on(async {
        let mut accounts = Vec::new();
        for _ in 0..ACCOUNTS {
            accounts.push(Arc::new(new_account(&server, &agent).await.0));
        }
        let tasks: Vec<_> = accounts
            .into_iter()
            .map(|account| {
                tokio::spawn(async move {
                    let chain = obtain(&account, &["batch.agent.test"], None).await;
                    serial_hex(&chain[0])
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.push(task.await.unwrap());
        }
        all
    });
    let AcmeServer { server, .. } = server;
    server.kill();

    let listed = env.listed_serials(&["--agent", &agent_id("/agent/batch")]);
    for serial in &serials {
        assert!(
            listed.contains(serial),
            "{serial} was acknowledged but is lost"
        );
    }
    let audit = env.audit_text();
    for serial in &serials {
        assert!(
            audit
                .lines()
                .any(|line| line.contains("cert.issued") && line.contains(serial.as_str())),
            "{serial} was acknowledged but has no audit line"
        );
    }
    env.assert_audit_intact();
}

/// An order left `processing` by a finalize that never finished (a crash after a flush that
/// caught `processing` and before the certificate's) is ready again once it is stale, and
/// finalizes into one certificate.
#[test]
fn an_abandoned_processing_order_can_be_finalized_again() {
    let env = Env::with_ca();
    let agent = env.add_agent("/agent/stuck", &["--dns", "stuck.agent.test"]);
    let first = AcmeServer::start(&env);
    let rt = runtime();
    let (key_der, order_id) = rt.block_on(async {
        let (account, credentials) = new_account(&first, &agent).await;
        let ids = [Identifier::Dns("stuck.agent.test".into())];
        let order = account.new_order(&NewOrder::new(&ids)).await.unwrap();
        let id = order.url().rsplit('/').next().unwrap().to_owned();
        (credentials.private_key().clone_key(), id)
    });
    let AcmeServer { server, .. } = first;
    server.terminate();

    {
        let store = env.open_store();
        let mut order = store.acme_order(&order_id).unwrap().unwrap();
        assert_eq!(order.status, AcmeOrderStatus::Ready);
        order.status = AcmeOrderStatus::Processing;
        order.processing_since = Some(time::OffsetDateTime::now_utc() - time::Duration::minutes(3));
        store
            .update_acme_order(&order, AcmeOrderStatus::Ready)
            .unwrap();
        store.commit().unwrap();
    }

    let second = AcmeServer::start(&env);
    rt.block_on(async {
        let account = existing_account(&second, key_der).await;
        let mut order = account
            .order(second.https_url(&format!("/acme/order/{order_id}")))
            .await
            .unwrap();
        assert_eq!(order.state().status, OrderStatus::Ready);
        order.finalize().await.unwrap();
        let chain = order
            .poll_certificate(&RetryPolicy::default())
            .await
            .unwrap();
        assert_eq!(pem_certs(&chain).len(), 2);
    });
    let listed = env.listed_serials(&["--agent", &agent_id("/agent/stuck")]);
    assert_eq!(listed.len(), 1, "{listed:?}");
}

#[test]
fn protocol_records_nothing_needs_are_forgotten_and_certificates_kept() {
    let env = Env::with_ca();
    let agent = env.add_agent("/agent/old", &["--dns", "old.agent.test"]);
    let first = AcmeServer::start(&env);
    let rt = runtime();
    let recent_id = rt.block_on(async {
        let (account, _) = new_account(&first, &agent).await;
        let ids = [Identifier::Dns("old.agent.test".into())];
        let mut order = account.new_order(&NewOrder::new(&ids)).await.unwrap();
        order.poll_ready(&RetryPolicy::default()).await.unwrap();
        order.finalize().await.unwrap();
        order
            .poll_certificate(&RetryPolicy::default())
            .await
            .unwrap();
        order.url().rsplit('/').next().unwrap().to_owned()
    });
    let AcmeServer { server, .. } = first;
    server.terminate();

    // An order of the same account from more than the longest certificate lifetime any policy
    // may allow (398 days) ago, as the store would hold it.
    let long_ago = time::OffsetDateTime::now_utc() - time::Duration::days(400);
    let account_id = {
        let store = env.open_store();
        let recent = store.acme_order(&recent_id).unwrap().unwrap();
        let mut old = recent.clone();
        old.id = "order-from-long-ago".into();
        old.authorizations = vec!["authz-from-long-ago".into()];
        old.created_at = long_ago;
        old.expires = long_ago + time::Duration::hours(8);
        old.certificate = None;
        old.status = AcmeOrderStatus::Invalid;
        let authz = agentca_store::AcmeAuthorization {
            id: "authz-from-long-ago".into(),
            account_id: recent.account_id.clone(),
            identifier: agentca_store::AcmeIdentifier {
                kind: "dns".into(),
                value: "old.agent.test".into(),
            },
            status: agentca_store::AcmeAuthorizationStatus::Expired,
            expires: old.expires,
            challenges: vec![],
            order_id: Some(old.id.clone()),
        };
        store.insert_acme_order(&old, &[authz], long_ago).unwrap();
        // And a SCEP transaction record from as long ago (SCEP keeps them for retries).
        store
            .record_scep_transaction(&agentca_store::ScepTransaction {
                request_key: "ab".repeat(32),
                transaction_id: "txn-from-long-ago".into(),
                serial: recent.certificate.unwrap(),
                agent_id: recent.agent_id.clone(),
                created_at: long_ago,
            })
            .unwrap();
        store.commit().unwrap();
        assert_eq!(
            store
                .acme_orders_of_account(&recent.account_id)
                .unwrap()
                .len(),
            2
        );
        recent.account_id
    };

    // The pass at start forgets it; the recent order and every certificate stay.
    let second = AcmeServer::start(&env);
    second.server.wait_log("old ACME orders forgotten");
    second.server.wait_log("old SCEP transactions forgotten");
    let AcmeServer { server, .. } = second;
    let (_, log) = server.terminate();
    assert!(log.contains("forgotten=1"), "{log}");
    assert!(!log.contains("forgetting old"), "{log}");
    let store = env.open_store();
    assert_eq!(store.acme_order("order-from-long-ago").unwrap(), None);
    assert_eq!(
        store.acme_authorization("authz-from-long-ago").unwrap(),
        None
    );
    assert_eq!(store.scep_transaction(&"ab".repeat(32)).unwrap(), None);
    assert_eq!(
        store.acme_orders_of_account(&account_id).unwrap(),
        [recent_id.as_str()]
    );
    assert!(
        store
            .acme_order(&recent_id)
            .unwrap()
            .unwrap()
            .certificate
            .is_some()
    );
    drop(store);
    let listed = env.listed_serials(&["--agent", &agent_id("/agent/old")]);
    assert_eq!(listed.len(), 1, "{listed:?}");
}
