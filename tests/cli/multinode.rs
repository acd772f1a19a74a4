//! Two `agentca serve` nodes on one PostgreSQL database behave as one CA: ACME nonces from
//! either node work on the other, an order started on one is finished on the other, races
//! between the nodes for one order or one EAB credential have one winner, a SCEP challenge
//! spent on one node is refused by the other, and a revocation made through one node is
//! answered `revoked` by the other's OCSP responder and listed on its CRL within the poll
//! interval; both nodes come to serve one CRL, and neither ever serves a lower CRL number than
//! before. lego works through a load balancer in front of both nodes, and micromdm's
//! scepclient enrolls on one node and renews on the other.
//! Faults: a node killed mid-issuance loses nothing it acknowledged while the other
//! keeps issuing; a database lost mid-run makes issuance over ACME and SCEP retry later while
//! OCSP answers from the cache (also for a certificate another node issued after this one
//! started), and service recovers without a restart. Skipped with a notice
//! when PostgreSQL is not installed, a failure under `AGENTCA_REQUIRE_TOOLS=1`.
//!
//! These tests place each request on a chosen node. The protocol suites as a whole also run on
//! two nodes behind a round-robin balancer (`AGENTCA_TEST_NODES=2`, see `harness::Server`).

use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use agentca_testkit::acme::{
    Account, AccountKey, AcmeClient, Eab, EabKnobs, KeyRef, csr, eab_jws, protected, signed,
};
use serde_json::{Value, json};

use super::acme_clients::ocsp_status_at;
use super::balancer::RoundRobin;
use super::harness::{self, Server, crl_serials, free_port, serve_on_free_ports};
use super::support::*;

const SIGNATURES: &str = "agentca_issuing_ca_signatures_total";
const PRESIGNED: &str = "agentca_ocsp_background_signatures_total";

/// The default revocation poll (2 s), a signature, and room for a busy machine.
const LEARN_WITHIN: Duration = Duration::from_secs(8);

/// A CA on a fresh database, and a second data directory copied from the first: two nodes.
struct TwoNodes {
    url: String,
    one: Env,
    two: Env,
}

impl TwoNodes {
    fn new() -> Option<Self> {
        let url = agentca_testkit::postgres::shared()?.fresh_database();
        let one = Env::empty();
        one.init(&["--store", &url]).success();
        let two = one.second_node();
        Some(Self { url, one, two })
    }

    fn serve(&self, env: &Env) -> Server {
        self.serve_with(env, &[])
    }

    fn serve_with(&self, env: &Env, extra: &[&str]) -> Server {
        let mut cmd = serve_on_free_ports(env);
        cmd.args(["--store", &self.url]).args(extra);
        Server::start(cmd)
    }

    /// A single-use EAB credential for `agent`.
    fn eab(&self, agent: &str) -> Eab {
        let doc = self.one.json(&[
            "--store", &self.url, "token", "create", "--agent", agent, "--for", "acme",
        ]);
        Eab::new(
            doc["kid"].as_str().unwrap_or_else(|| panic!("{doc:#}")),
            doc["hmac"].as_str().unwrap_or_else(|| panic!("{doc:#}")),
        )
    }
}

/// Signatures by the issuing CA key on both nodes.
fn signatures(a: &Server, b: &Server) -> f64 {
    a.metric(SIGNATURES) + b.metric(SIGNATURES)
}

#[test]
fn acme_works_across_two_nodes() {
    let Some(nodes) = TwoNodes::new() else { return };
    let id = nodes.one.add_agent(
        "/agent/multi",
        &["--store", &nodes.url, "--dns", "multi.example.org"],
    );
    let a = nodes.serve(&nodes.one);
    let b = nodes.serve(&nodes.two);
    let root = nodes.one.data_file("root.pem");
    // Both nodes behind one name, as behind a load balancer.
    let ca = AcmeClient::new(a.https, &root);
    let cb = ca.via(b.https);

    // A nonce issued by A is good once, on B; then refused on both.
    let eab = nodes.eab(&id);
    let key = AccountKey::es256();
    let new_account = ca.url("new-account");
    let payload = json!({
        "termsOfServiceAgreed": true,
        "externalAccountBinding": eab_jws(&eab, &key.jwk(), &new_account, &EabKnobs::default()),
    })
    .to_string();
    let header = protected(
        key.alg().name(),
        &KeyRef::Jwk(key.jwk()),
        Some(&ca.nonce()),
        &new_account,
    );
    let body = signed(&header, payload.as_bytes(), &key);
    let created = cb.post_body(&new_account, &body);
    assert_eq!(created.status, 201, "{}", created.text());
    let account = Account {
        key,
        url: created.location().unwrap().to_owned(),
    };
    for (node, client) in [("A", &ca), ("B", &cb)] {
        let replayed = client.post_body(&new_account, &body);
        replayed.assert_problem(400, "badNonce");
        // The nonce in B's error answer works on A and the other way round.
        let other = if node == "A" { &cb } else { &ca };
        let fresh = replayed.nonce().unwrap().to_owned();
        let header = protected(
            account.key.alg().name(),
            &KeyRef::Kid(account.url.clone()),
            Some(&fresh),
            &account.url,
        );
        let body = signed(&header, b"", &account.key);
        let r = other.post_body(&account.url, &body);
        assert_eq!(r.status, 200, "node {node}'s error nonce: {}", r.text());
        // The same request signed with an account (kid) again, on either node: spent.
        for again in [&ca, &cb] {
            again
                .post_body(&account.url, &body)
                .assert_problem(400, "badNonce");
        }
    }

    // An order placed on A, looked at and finalized on B, downloaded from A.
    let identifiers = json!([{"type": "dns", "value": "multi.example.org"}]);
    let (order_url, order) = ca.order(&account, &identifiers);
    let authz = cb.get_as(&account, order["authorizations"][0].as_str().unwrap());
    assert_eq!(authz.status, 200, "{}", authz.text());
    assert_eq!(
        authz.json()["status"],
        "valid",
        "pre-authorized: {}",
        authz.text()
    );
    let cert_key = AccountKey::es256();
    let finalized = cb.finalize(
        &account,
        &order,
        &csr(&cert_key, &["multi.example.org"], &[], &[]),
    );
    assert_eq!(finalized.status, 200, "{}", finalized.text());
    let done = ca.poll_order(&account, &order_url, Duration::from_secs(10));
    assert_eq!(done["status"], "valid", "{done:#}");
    let chain = ca.get_as(&account, done["certificate"].as_str().unwrap());
    assert_eq!(chain.status, 200, "{}", chain.text());
    assert!(chain.text().starts_with("-----BEGIN CERTIFICATE-----"));

    // Concurrent finalize of one order on both nodes: one certificate.
    let (order_url, order) = ca.order(&account, &identifiers);
    let csr_der = csr(&cert_key, &["multi.example.org"], &[], &[]);
    let before = signatures(&a, &b);
    let barrier = Barrier::new(8);
    std::thread::scope(|s| {
        for i in 0..8 {
            let client = if i % 2 == 0 { &ca } else { &cb };
            let (account, order, csr_der, barrier) = (&account, &order, &csr_der, &barrier);
            s.spawn(move || {
                barrier.wait();
                let r = client.finalize(account, order, csr_der);
                assert!(
                    r.status == 200 || r.status == 403,
                    "finalize answered {}: {}",
                    r.status,
                    r.text()
                );
            });
        }
    });
    let done = cb.poll_order(&account, &order_url, Duration::from_secs(10));
    assert_eq!(done["status"], "valid", "{done:#}");
    assert_eq!(
        signatures(&a, &b) - before,
        1.0,
        "eight finalizes of one order on two nodes signed more than once"
    );
    let certs = nodes
        .two
        .cert_list(&["--store", &nodes.url, "--agent", &id]);
    assert_eq!(certs.len(), 2, "{certs:#?}");

    // One EAB credential raced on both nodes: one account.
    let eab = nodes.eab(&id);
    let barrier = Barrier::new(8);
    let created: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let client = if i % 2 == 0 { &ca } else { &cb };
                let (eab, barrier, new_account) = (&eab, &barrier, &new_account);
                s.spawn(move || {
                    let key = AccountKey::es256();
                    let binding = eab_jws(eab, &key.jwk(), new_account, &EabKnobs::default());
                    let payload =
                        json!({"termsOfServiceAgreed": true, "externalAccountBinding": binding});
                    barrier.wait();
                    client.new_account_raw(&key, &payload).status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        created.iter().filter(|s| **s == 201).count(),
        1,
        "one EAB credential made several accounts: {created:?}"
    );
}

#[test]
fn a_revocation_through_one_node_is_answered_by_the_other() {
    let Some(nodes) = TwoNodes::new() else { return };
    let id = nodes
        .one
        .add_agent("/agent/revoked", &["--store", &nodes.url]);
    let a = nodes.serve(&nodes.one);
    let b = nodes.serve(&nodes.two);

    // Issued through A (its admin socket), so B holds no pre-signed answer for it yet.
    let doc = nodes
        .one
        .issue(&id, &nodes.one.csr("revoked"), &["--store", &nodes.url]);
    let serial = serial_of(&doc);
    let leaf = nodes
        .one
        .write("leaf.pem", doc["certificate_pem"].as_str().unwrap());
    // B answers good (signing on demand, then from its cache), and so does A.
    assert_eq!(ocsp_status_at(&nodes.two, &b, &leaf), "good");
    assert_eq!(ocsp_status_at(&nodes.two, &b, &leaf), "good");
    assert_eq!(ocsp_status_at(&nodes.one, &a, &leaf), "good");

    nodes
        .one
        .run(&["--store", &nodes.url, "revoke", &serial])
        .success();
    // A says revoked as soon as revoke returns; B within the poll interval.
    assert_eq!(ocsp_status_at(&nodes.one, &a, &leaf), "revoked");
    let started = Instant::now();
    loop {
        if ocsp_status_at(&nodes.two, &b, &leaf) == "revoked" {
            break;
        }
        assert!(
            started.elapsed() < LEARN_WITHIN,
            "node B still answers good {:?} after the revocation on node A",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // B's CRL lists it too (a CRL follows the debounce delay).
    let started = Instant::now();
    loop {
        let crl = b.get("/crl");
        assert_eq!(crl.status, 200);
        if crl_serials(&crl.body).contains(&serial.to_ascii_lowercase()) {
            break;
        }
        assert!(
            started.elapsed() < LEARN_WITHIN,
            "node B's CRL does not list the certificate revoked through node A"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Each node signs CRLs of its own (at start, after revocations it makes or learns of), so
/// their numbers interleave; both nodes still serve one CRL, the highest-numbered, within the
/// poll, and neither ever serves a lower number than it served before.
#[test]
fn both_nodes_serve_one_crl_and_its_number_never_goes_back() {
    let Some(nodes) = TwoNodes::new() else { return };
    let id = nodes
        .one
        .add_agent("/agent/listed", &["--store", &nodes.url]);
    let a = nodes.serve(&nodes.one);
    let b = nodes.serve(&nodes.two);
    let mut last = [0u64; 2];
    // Until both nodes serve the same CRL and `listed` holds for it: that CRL.
    let mut converge = |what: &str, listed: &dyn Fn(&[u8]) -> bool| -> Vec<u8> {
        let started = Instant::now();
        loop {
            let crls: Vec<Vec<u8>> = [&a, &b]
                .iter()
                .map(|node| {
                    let crl = node.get("/crl");
                    assert_eq!(crl.status, 200);
                    crl.body
                })
                .collect();
            for (node, crl) in crls.iter().enumerate() {
                let number = harness::crl_number(crl);
                assert!(
                    number >= last[node],
                    "node {node} served CRL {number} after {}",
                    last[node]
                );
                last[node] = number;
            }
            if crls[0] == crls[1] && listed(&crls[0]) {
                return crls[0].clone();
            }
            assert!(
                started.elapsed() < LEARN_WITHIN,
                "{what}: the nodes still serve CRLs {last:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // Both published at start; B's came second, so A now serves it.
    let first = converge("after start", &|_| true);
    assert!(
        a.metric("agentca_crl_adoptions_total") + b.metric("agentca_crl_adoptions_total") >= 1.0,
        "one node serves the other's CRL without counting it"
    );
    // The adopting node's audit log keeps the number it served (REL-9 on restore).
    let number = harness::crl_number(&first);
    let adopted: Vec<_> = [&nodes.one, &nodes.two]
        .iter()
        .flat_map(|env| env.audit_events("crl.adopted"))
        .filter(|e| e["fields"]["number"] == number)
        .collect();
    assert!(!adopted.is_empty(), "no crl.adopted entry for CRL {number}");

    let doc = nodes
        .one
        .issue(&id, &nodes.one.csr("listed"), &["--store", &nodes.url]);
    let serial = serial_of(&doc).to_ascii_lowercase();
    nodes
        .one
        .run(&["--store", &nodes.url, "revoke", &serial])
        .success();
    // A signs a CRL after the debounce, and so does B once it learns of the revocation.
    let listing = converge("after a revocation", &|crl| {
        crl_serials(crl).contains(&serial)
    });
    assert!(harness::crl_number(&listing) > harness::crl_number(&first));

    // Something other than agentca writes the shared CRL: a far higher number, but not signed
    // by the issuing CA (one bit of the signature flipped). Neither node serves it.
    let adoptions =
        a.metric("agentca_crl_adoptions_total") + b.metric("agentca_crl_adoptions_total");
    let mut forged = listing.clone();
    if let Some(last) = forged.last_mut() {
        *last ^= 1;
    }
    let database = nodes.url.rsplit('/').next().unwrap();
    agentca_testkit::postgres::shared()
        .unwrap()
        .psql(
            database,
            &format!(
                "UPDATE shared_crl SET number = 999999, der = '\\x{}'::bytea",
                hex::encode(&forged)
            ),
        )
        .unwrap();
    let kept = agentca_testkit::postgres::shared()
        .unwrap()
        .psql(database, "SELECT number, length(der) FROM shared_crl")
        .unwrap();
    assert_eq!(kept.trim(), format!("999999|{}", forged.len()));
    std::thread::sleep(Duration::from_secs(5));
    for node in [&a, &b] {
        assert_eq!(
            node.get("/crl").body,
            listing,
            "a node serves a CRL its CA never signed"
        );
    }
    assert_eq!(
        a.metric("agentca_crl_adoptions_total") + b.metric("agentca_crl_adoptions_total"),
        adoptions
    );
}

/// ARI-3 across nodes: a renewal request made through node A opens the window node B offers
/// at once (nothing is cached), and `revoke --replaced` through B, after a replacement was
/// issued through B, is answered `revoked` by A.
#[test]
fn an_early_renewal_asked_through_one_node_opens_the_window_on_the_other() {
    let Some(nodes) = TwoNodes::new() else { return };
    let id = nodes
        .one
        .add_agent("/agent/drilled", &["--store", &nodes.url]);
    let a = nodes.serve(&nodes.one);
    let b = nodes.serve(&nodes.two);
    let doc = nodes
        .one
        .issue(&id, &nodes.one.csr("old"), &["--store", &nodes.url]);
    let old = serial_of(&doc);
    let old_der = pem_certs(doc["certificate_pem"].as_str().unwrap()).remove(0);
    let old_pem = nodes
        .one
        .write("old.pem", doc["certificate_pem"].as_str().unwrap());

    let (start, _, _) = super::drill::renewal_info(&nodes.two, &b, &old_der);
    assert!(start > now() + time::Duration::hours(1), "{start}");
    nodes
        .one
        .json(&["--store", &nodes.url, "cert", "renew-early", "--agent", &id]);
    let (start, end, _) = super::drill::renewal_info(&nodes.two, &b, &old_der);
    let asked = now();
    assert!(start <= asked && asked < end, "{start} {end}");

    // Issued through B; two issuances of the same second do not replace each other.
    std::thread::sleep(Duration::from_millis(1050));
    let new = serial_of(
        &nodes
            .two
            .issue(&id, &nodes.two.csr("new"), &["--store", &nodes.url]),
    );
    let doc = nodes
        .two
        .json(&["--store", &nodes.url, "revoke", "--replaced"]);
    assert_eq!(doc["revoked"][0]["serial"], old.as_str(), "{doc}");
    assert_eq!(doc["revoked"][0]["replaced_by"], new.as_str(), "{doc}");
    let started = Instant::now();
    while ocsp_status_at(&nodes.one, &a, &old_pem) != "revoked" {
        assert!(
            started.elapsed() < LEARN_WITHIN,
            "node A still answers good after revoke --replaced on node B"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Orders one certificate for `name` (pre-authorized) through `client`; `Some(serial)` once
/// the certificate is downloaded (acknowledged), `None` if any step failed.
fn order_certificate(client: &AcmeClient, account: &Account, name: &str) -> Option<String> {
    let r = client.new_order(account, &json!([{"type": "dns", "value": name}]));
    if r.status != 201 {
        return None;
    }
    let order_url = r.location()?.to_owned();
    let order = r.json();
    let key = AccountKey::es256();
    let finalized = client.finalize(account, &order, &csr(&key, &[name], &[], &[]));
    if finalized.status != 200 {
        return None;
    }
    let done = client.get_as(account, &order_url).json();
    let chain = client.get_as(account, done["certificate"].as_str()?);
    if chain.status != 200 {
        return None;
    }
    let der = pem_certs(&chain.text()).into_iter().next()?;
    Some(serial_hex(&der))
}

#[test]
fn a_node_killed_mid_issuance_loses_nothing_and_the_other_keeps_serving() {
    let Some(nodes) = TwoNodes::new() else { return };
    let id = nodes.one.add_agent(
        "/agent/crash",
        &["--store", &nodes.url, "--dns", "crash.example.org"],
    );
    let a = nodes.serve(&nodes.one);
    let b = nodes.serve(&nodes.two);
    let root = nodes.one.data_file("root.pem");
    let ca = AcmeClient::new(a.https, &root);
    let cb = ca.via(b.https);
    let account = cb.new_account(AccountKey::es256(), &nodes.eab(&id));

    // Four clients order through A until it is killed; every certificate they downloaded was
    // acknowledged and must be in the database.
    let stop = AtomicBool::new(false);
    let acknowledged = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..4 {
            let (ca, account, stop, acknowledged) = (&ca, &account, &stop, &acknowledged);
            s.spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let name = "crash.example.org";
                    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        order_certificate(ca, account, name)
                    }));
                    // Requests cut by the kill acknowledged nothing.
                    if let Ok(Some(serial)) = got {
                        acknowledged.lock().unwrap().push(serial);
                    }
                }
            });
        }
        while acknowledged.lock().unwrap().len() < 12 {
            std::thread::sleep(Duration::from_millis(20));
        }
        a.kill();
        stop.store(true, Ordering::SeqCst);
    });
    let acknowledged = acknowledged.into_inner().unwrap();
    assert!(acknowledged.len() >= 12);

    // B still issues, for the same account.
    let after = order_certificate(&cb, &account, "crash.example.org")
        .expect("the surviving node could not issue");

    let stored = nodes
        .two
        .listed_serials(&["--store", &nodes.url, "--agent", &id]);
    for serial in acknowledged.iter().chain([&after]) {
        assert!(
            stored.contains(serial),
            "acknowledged certificate {serial} is not in the database"
        );
    }
    // Each acknowledged order got a certificate of its own: no serial was handed out twice,
    // by one node or across the two (the database's key alone would not show that).
    let mut distinct: Vec<&String> = acknowledged.iter().chain([&after]).collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        acknowledged.len() + 1,
        "a serial was given to two orders: {acknowledged:?}, then {after}"
    );
    // A starts again on its data directory: a torn audit line is recovered, what it signed
    // but never stored is reconciled, and its audit chain verifies.
    let a = nodes.serve(&nodes.one);
    assert_eq!(a.get("/healthz").status, 200);
    drop(a);
    let audit = nodes.one.json(&["--store", &nodes.url, "audit", "verify"]);
    assert_eq!(audit["intact"], true, "{audit:#}");
    // A's log alone does not know B's certificates; with B's log too, each is accounted for.
    let unlogged = |doc: &Value| {
        doc["reconciliation"]["stored_without_audit"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == after.as_str())
    };
    assert!(unlogged(&audit), "{audit:#}");
    let b_log = nodes.two.data_file("audit.log");
    let both = nodes.one.json(&[
        "--store",
        &nodes.url,
        "audit",
        "verify",
        "--audit-log",
        b_log.to_str().unwrap(),
    ]);
    assert_eq!(both["intact"], true, "{both:#}");
    assert_eq!(both["other_logs"][0]["intact"], true, "{both:#}");
    assert_eq!(both["consistent"], true, "{both:#}");
    assert!(!unlogged(&both), "{both:#}");
}

#[test]
fn a_lost_database_makes_issuance_retry_later_while_ocsp_answers_from_its_cache() {
    // A cluster of this test's own: it is stopped and started again.
    let cluster = match agentca_testkit::postgres::PgCluster::start(&[("fsync", "off")]) {
        Ok(Some(cluster)) => cluster,
        Ok(None) => return,
        Err(e) => panic!("could not start a PostgreSQL cluster: {e}"),
    };
    let url = cluster.fresh_database();
    let env = Env::empty();
    env.init(&["--store", &url]).success();
    let id = env.add_agent(
        "/agent/lost",
        &["--store", &url, "--dns", "lost.example.org"],
    );
    let doc = env.issue(&id, &env.csr("lost"), &["--store", &url]);
    let leaf = env.write("leaf.pem", doc["certificate_pem"].as_str().unwrap());
    // A copy of the data directory: what is issued through it is another node's issuance.
    let other = env.second_node();
    let mut cmd = serve_on_free_ports(&env);
    cmd.args(["--store", &url]);
    let server = Server::start(cmd);
    let client = AcmeClient::new(server.https, &env.data_file("root.pem"));
    let account = client.new_account(AccountKey::es256(), &{
        let doc = env.json(&[
            "--store", &url, "token", "create", "--agent", &id, "--for", "acme",
        ]);
        Eab::new(doc["kid"].as_str().unwrap(), doc["hmac"].as_str().unwrap())
    });
    assert!(order_certificate(&client, &account, "lost.example.org").is_some());
    assert_eq!(ocsp_status_at(&env, &server, &leaf), "good");
    // Issued elsewhere after this node started: it pre-signs both answers within a poll,
    // before anyone asks.
    let presigned = server.metric(PRESIGNED);
    let doc = other.issue(&id, &other.csr("elsewhere"), &["--store", &url]);
    let elsewhere = env.write("elsewhere.pem", doc["certificate_pem"].as_str().unwrap());
    let started = Instant::now();
    while server.metric(PRESIGNED) < presigned + 2.0 {
        assert!(
            started.elapsed() < LEARN_WITHIN,
            "the node never pre-signed the answers for a certificate another node issued"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A SCEP enrollment made ready now (its challenge is in the database), sent during the
    // outage.
    let challenge = env.json(&[
        "--store", &url, "token", "create", "--agent", &id, "--for", "scep",
    ])["challenge"]
        .as_str()
        .unwrap()
        .to_owned();
    let pkcs_req = super::scep_clients::ready_pkcs_req(&env, &challenge);
    let signed = server.metric(SIGNATURES);

    cluster.stop_server().unwrap();
    // SCEP: 503 with Retry-After (no CertRep: a FAILURE would be a verdict on the request).
    let r = super::scep_clients::post_pki_message(server.http, &pkcs_req);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("retry-after").is_some(), "{r:?}");
    // Issuance: serverInternal with Retry-After, never a signature.
    let r = client.new_order(
        &account,
        &json!([{"type": "dns", "value": "lost.example.org"}]),
    );
    r.assert_problem(503, "serverInternal");
    assert!(r.header("retry-after").is_some(), "{r:?}");
    assert!(r.nonce().is_some(), "no fresh nonce on the error answer");
    // Status: answered from the pre-signed cache, for what this node and another issued.
    assert_eq!(ocsp_status_at(&env, &server, &leaf), "good");
    assert_eq!(ocsp_status_at(&env, &server, &elsewhere), "good");
    let crl = server.get("/crl");
    assert_eq!(crl.status, 200);
    // Health says so.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(server.get("/healthz").status, 503);
    assert_eq!(server.metric(SIGNATURES), signed);

    // Back without a restart of the node.
    cluster.restart_server().unwrap();
    let started = Instant::now();
    loop {
        if order_certificate(&client, &account, "lost.example.org").is_some() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "issuance did not recover after the database came back"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(server.get("/healthz").status, 200);
}

/// `agentca enroll --scep` with `challenge` through `node`, into `dir`; the outcome.
fn scep_enroll(env: &Env, node: &Server, agent: &str, challenge: &str, dir: &str) -> Outcome {
    std::fs::create_dir_all(env.path(dir)).unwrap();
    let key = env.path(&format!("{dir}/key.pem")).display().to_string();
    let cert = env.path(&format!("{dir}/cert.pem")).display().to_string();
    let root = env.data_file("root.pem").display().to_string();
    env.run(&[
        "enroll",
        "--agent",
        agent,
        "--key",
        &key,
        "--cert",
        &cert,
        "--scep",
        &node.url("/scep"),
        "--challenge",
        challenge,
        "--ca",
        &root,
    ])
}

#[test]
fn a_scep_challenge_is_spent_on_every_node() {
    let Some(nodes) = TwoNodes::new() else { return };
    let id = nodes
        .one
        .add_agent("/agent/scep-multi", &["--store", &nodes.url]);
    let a = nodes.serve(&nodes.one);
    let b = nodes.serve(&nodes.two);
    let created = nodes.one.json(&[
        "--store", &nodes.url, "token", "create", "--agent", &id, "--for", "scep",
    ]);
    let challenge = created["challenge"].as_str().unwrap();

    scep_enroll(&nodes.one, &b, &id, challenge, "first").success();
    let signed = signatures(&a, &b);
    let again = scep_enroll(&nodes.one, &a, &id, challenge, "second");
    assert_ne!(
        again.status.code(),
        Some(0),
        "a spent challenge worked on the other node:\n{again}"
    );
    assert_eq!(
        signatures(&a, &b),
        signed,
        "a refused enrollment was signed"
    );

    // The renewal (a RenewalReq signed by the certificate B issued) and its status on A.
    let key = nodes.one.path("first/key.pem").display().to_string();
    let cert = nodes.one.path("first/cert.pem");
    let before = std::fs::read_to_string(&cert).unwrap();
    nodes
        .one
        .run(&[
            "renew",
            "--key",
            &key,
            "--cert",
            &cert.display().to_string(),
        ])
        .success();
    assert_ne!(std::fs::read_to_string(&cert).unwrap(), before);
    assert_eq!(ocsp_status_at(&nodes.one, &a, &cert), "good");
}

/// lego, as Debian ships it, through the load balancer in front of both nodes: it registers
/// with EAB and obtains a certificate on one node, renews it with that account on the other,
/// and revokes the renewed certificate through the first; each node's OCSP responder answers
/// `revoked` for it and `good` for the first, and the database holds both.
#[test]
fn lego_obtains_renews_and_revokes_through_a_load_balancer_over_two_nodes() {
    if !super::acme_clients::client_present("lego", "the two-node lego test") {
        return;
    }
    let Some(nodes) = TwoNodes::new() else { return };
    let name = "lb.example.org";
    let id = nodes
        .one
        .add_agent("/agent/lb", &["--store", &nodes.url, "--dns", name]);
    let a = nodes.serve(&nodes.one);
    let b = nodes.serve(&nodes.two);
    let lb = RoundRobin::start([a.https, b.https]);
    let token = nodes.one.json(&[
        "--store", &nodes.url, "token", "create", "--agent", &id, "--for", "acme",
    ]);
    let (kid, hmac) = (
        token["kid"].as_str().unwrap().to_owned(),
        token["hmac"].as_str().unwrap().to_owned(),
    );
    let path = nodes.one.path("lego");
    let http_port = free_port();
    let lego = |subcommand: &[&str]| {
        let mut cmd = super::acme_clients::client_command("lego", &nodes.one);
        cmd.env("LEGO_CA_CERTIFICATES", nodes.one.data_file("root.pem"))
            .arg("--server")
            .arg(format!("https://{}/acme/directory", lb.addr))
            .arg("--path")
            .arg(&path)
            .args(["--email", "ops@example.org", "--accept-tos", "--eab"])
            .args(["--kid", &kid, "--hmac", &hmac, "--key-type", "ec256"])
            .args(["--http", "--http.port", &format!("127.0.0.1:{http_port}")])
            .args(["-d", name])
            .args(subcommand);
        super::acme_clients::run_bounded(cmd).success()
    };
    let leaf_of = || {
        let pem = std::fs::read_to_string(path.join(format!("certificates/{name}.crt"))).unwrap();
        pem_certs(&pem).into_iter().next().unwrap()
    };

    lego(&["run"]);
    let first = leaf_of();
    lego(&["renew", "--days", "3650", "--no-random-sleep"]);
    let renewed = leaf_of();
    assert_ne!(
        serial_hex(&first),
        serial_hex(&renewed),
        "renew got no new certificate"
    );
    // lego keeps one connection for a whole run: the account and first certificate were made
    // on one node, the renewal (with that account) on the other.
    let [to_a, to_b] = lb.sent();
    assert!(
        to_a >= 1 && to_b >= 1,
        "the runs did not alternate between the nodes: {to_a} and {to_b} connections"
    );
    let listed = nodes
        .two
        .listed_serials(&["--store", &nodes.url, "--agent", &id]);
    for leaf in [&first, &renewed] {
        assert!(listed.contains(&serial_hex(leaf)), "{listed:?}");
    }

    lego(&["revoke", "--keep"]);
    let renewed_pem = nodes.one.write("renewed.pem", pem_of(&renewed));
    let first_pem = nodes.one.write("first.pem", pem_of(&first));
    let started = Instant::now();
    for node in [&a, &b] {
        loop {
            let status = ocsp_status_at(&nodes.one, node, &renewed_pem);
            if status == "revoked" {
                break;
            }
            assert!(
                started.elapsed() < LEARN_WITHIN,
                "node {} still answers {status} for the revoked certificate",
                node.https
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(ocsp_status_at(&nodes.one, node, &first_pem), "good");
    }
}

/// A certificate as PEM.
fn pem_of(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

/// micromdm's `scepclient` (Debian's `scep`) across the nodes: it enrolls through one with a
/// one-time challenge, renews through the other with the certificate it got, and the challenge
/// it spent on the first is refused by the second, with no signature.
#[test]
fn scepclient_enrolls_on_one_node_and_renews_on_the_other() {
    let Some(nodes) = TwoNodes::new() else { return };
    let id = nodes
        .one
        .add_agent("/agent/scep-lb", &["--store", &nodes.url]);
    // scepclient encrypts with DES.
    let a = nodes.serve_with(&nodes.one, &["--scep-legacy-crypto"]);
    let b = nodes.serve_with(&nodes.two, &["--scep-legacy-crypto"]);
    let challenge = nodes.one.json(&[
        "--store", &nodes.url, "token", "create", "--agent", &id, "--for", "scep",
    ])["challenge"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir = nodes.one.path("scepclient");
    std::fs::create_dir_all(&dir).unwrap();
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    super::scep_clients::generate_pkcs1_rsa(&key);
    let fingerprint = {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(nodes.one.ca_der("scep-ra.pem")))
    };
    let scepclient = |node: &Server, challenge: Option<&str>| {
        let url = node.url("/scep");
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "-server-url".as_ref(),
            url.as_ref(),
            "-private-key".as_ref(),
            key.as_os_str(),
            "-certificate".as_ref(),
            cert.as_os_str(),
            "-ca-fingerprint".as_ref(),
            fingerprint.as_ref(),
        ];
        if let Some(c) = challenge {
            args.push(std::ffi::OsStr::new("-challenge"));
            args.push(std::ffi::OsStr::new(c));
        }
        agentca_testkit::tools::run("scepclient", &args, "the two-node SCEP test")
    };

    let Some(enrolled) = scepclient(&a, Some(&challenge)) else {
        return;
    };
    assert!(
        enrolled.status.success(),
        "{}",
        agentca_testkit::tools::transcript(&enrolled)
    );
    let first = pem_certs(&std::fs::read_to_string(&cert).unwrap())[0].clone();
    let renewed = scepclient(&b, None).unwrap();
    assert!(
        renewed.status.success(),
        "{}",
        agentca_testkit::tools::transcript(&renewed)
    );
    let second = pem_certs(&std::fs::read_to_string(&cert).unwrap())[0].clone();
    assert_ne!(
        serial_hex(&first),
        serial_hex(&second),
        "no new certificate"
    );
    let listed = nodes
        .two
        .listed_serials(&["--store", &nodes.url, "--agent", &id]);
    for leaf in [&first, &second] {
        assert!(listed.contains(&serial_hex(leaf)), "{listed:?}");
    }

    // The spent challenge, with a fresh transient certificate, through the other node.
    std::fs::remove_file(&cert).unwrap();
    let signed = signatures(&a, &b);
    let again = scepclient(&b, Some(&challenge)).unwrap();
    assert!(
        !again.status.success() || !cert.exists(),
        "a spent challenge enrolled again: {}",
        agentca_testkit::tools::transcript(&again)
    );
    assert_eq!(signatures(&a, &b), signed);
    assert!(
        b.stderr().contains("the challenge was already used"),
        "{}",
        b.stderr()
    );
}
