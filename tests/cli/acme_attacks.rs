//! The ACME bad-input battery (security test plan §1.1–§1.3 and §1.8: ACME-J1…J12,
//! ACME-A1…A10, ACME-O1…O12, ARI-1, ARI-2) against the real `agentca serve`.
//!
//! Every refusal is checked the same way ([`Fx::refused`]): the problem type and HTTP status,
//! `application/problem+json`, a fresh `Replay-Nonce` that the server then accepts, and no
//! signature by the issuing CA key (`agentca_issuing_ca_signatures_total` on `/metrics`).
//! State that must not change (accounts, EAB credentials, keys, orders, certificates) is
//! checked after each group of cases.
//!
//! Each test starts its own server, so the signature count moves only with what that test
//! does.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use agentca_testkit::acme::{
    Account, AccountKey, AcmeClient, Eab, EabKnobs, KeyAlg, KeyRef, Response, b64, csr,
    csr_with_cn, eab_jws, hmac_tag, jws_body, key_authorization, key_change_inner, protected,
    sign_parts, signed, signed_value,
};
use serde_json::{Value, json};
use x509_parser::prelude::FromDer;

use super::harness::{AcmeOptions, AcmeServer};
use super::support::{Env, agent_id};

const SIGNATURES: &str = "agentca_issuing_ca_signatures_total";
const ISSUED: &str = "agentca_certificates_issued_total";

/// A test's server and client.
struct Fx<'e> {
    srv: AcmeServer<'e>,
    c: AcmeClient,
}

impl<'e> Fx<'e> {
    fn start(env: &'e Env) -> Self {
        Self::start_with(env, AcmeOptions::default())
    }

    fn start_with(env: &'e Env, options: AcmeOptions) -> Self {
        let srv = AcmeServer::start_with(env, options);
        let c = AcmeClient::new(srv.https, &srv.root_pem());
        Self { srv, c }
    }

    /// Registers `/agent/NAME` with pre-authorized `dns` names.
    fn agent(&self, name: &str, dns: &[&str]) -> String {
        let mut args = Vec::new();
        for d in dns {
            args.push("--dns");
            args.push(*d);
        }
        self.srv.env.add_agent(&format!("/agent/{name}"), &args)
    }

    fn eab(&self, agent: &str) -> Eab {
        let (kid, hmac) = self.srv.eab(agent);
        Eab::new(&kid, &hmac)
    }

    /// A fresh ES256 account bound to `agent`.
    fn account(&self, agent: &str) -> Account {
        self.c.new_account(AccountKey::es256(), &self.eab(agent))
    }

    fn signatures(&self) -> f64 {
        self.srv.metric(SIGNATURES)
    }

    fn issued(&self) -> f64 {
        self.srv.metric(ISSUED)
    }

    /// Redeems `nonce` with a harmless request (onlyReturnExisting for an unknown key), which
    /// fails with badNonce unless the nonce is fresh.
    fn redeem(&self, nonce: &str) {
        let key = AccountKey::es256();
        let url = self.c.url("new-account");
        let header = protected("ES256", &KeyRef::Jwk(key.jwk()), Some(nonce), &url);
        let r = self.c.post_body(
            &url,
            &signed(&header, br#"{"onlyReturnExisting":true}"#, &key),
        );
        assert_eq!(
            (r.status, r.problem().as_str()),
            (400, "accountDoesNotExist"),
            "the Replay-Nonce of a refusal does not redeem: {}",
            r.text()
        );
    }

    /// The checks every refusal gets. `what` names the case in failure messages.
    #[track_caller]
    fn refused(&self, what: &str, r: &Response, status: u16, kind: &str, sigs_before: f64) {
        assert_eq!(
            (r.status, r.problem().as_str()),
            (status, kind),
            "{what}: {}",
            r.text()
        );
        r.assert_problem(status, kind);
        self.redeem(r.nonce().unwrap());
        assert_eq!(
            self.signatures(),
            sigs_before,
            "{what}: the issuing CA key signed"
        );
    }

    /// An account of `agent` with a ready order for the agent's own identity.
    fn ready_order(&self, account: &Account, agent: &str) -> (String, Value) {
        let (url, order) = self
            .c
            .order(account, &json!([{"type": "uri", "value": agent}]));
        assert_eq!(order["status"], "ready", "{order}");
        (url, order)
    }

    /// Issues a certificate for `agent`'s identity through `account`: (leaf DER, order).
    fn issue(&self, account: &Account, agent: &str) -> (Vec<u8>, Value) {
        let key = AccountKey::es256();
        let (_, order, leaf) = self.c.issue_ready(
            account,
            &json!([{"type": "uri", "value": agent}]),
            &csr(&key, &[], &[], &[agent]),
        );
        (leaf, order)
    }

    /// Whether `key` has an account (onlyReturnExisting): its URL.
    fn account_of_key(&self, key: &AccountKey) -> Option<String> {
        let r = self
            .c
            .new_account_raw(key, &json!({"onlyReturnExisting": true}));
        match r.status {
            200 => Some(r.location().unwrap().to_owned()),
            400 if r.problem() == "accountDoesNotExist" => None,
            _ => panic!("onlyReturnExisting: {}", r.text()),
        }
    }
}

fn ident(kind: &str, value: &str) -> Value {
    json!({"type": kind, "value": value})
}

fn dns_ids(names: &[&str]) -> Value {
    Value::Array(names.iter().map(|n| ident("dns", n)).collect())
}

/// ACME-J1, J2, J3, J4, J5, J6, J7, J10, J11: the JWS and HTTP layer.
#[test]
fn acme_jws_layer_refuses_hostile_requests() {
    let env = Env::with_ca();
    let fx = Fx::start(&env);
    let agent = fx.agent("jws", &[]);
    let account = fx.account(&agent);
    let (order_url, order) = fx.ready_order(&account, &agent);
    let finalize = order["finalize"].as_str().unwrap().to_owned();
    let new_account = fx.c.url("new-account");
    let new_order = fx.c.url("new-order");
    let revoke = fx.c.url("revoke-cert");
    let key_change = fx.c.url("key-change");
    let sigs = fx.signatures();
    let issued = fx.issued();
    let order_payload = json!({"identifiers": [ident("uri", &agent)]}).to_string();

    // ACME-J1: alg none, on newAccount, newOrder and revokeCert; an empty signature.
    for (url, key_ref) in [
        (&new_account, KeyRef::Jwk(account.key.jwk())),
        (&new_order, KeyRef::Kid(account.url.clone())),
        (&revoke, KeyRef::Kid(account.url.clone())),
    ] {
        for none in ["none", "None", "NONE"] {
            let header = protected(none, &key_ref, Some(&fx.c.nonce()), url);
            let [p, pl, _] = sign_parts(&header, order_payload.as_bytes(), &account.key);
            for sig in ["AA".to_owned(), String::new()] {
                let r =
                    fx.c.post_body(url, &jws_body(&[p.clone(), pl.clone(), sig.clone()]));
                if sig.is_empty() {
                    fx.refused("J1 empty signature", &r, 400, "malformed", sigs);
                } else {
                    fx.refused("J1 alg none", &r, 400, "badSignatureAlgorithm", sigs);
                    let algs = r.json()["algorithms"].clone();
                    assert!(
                        algs.as_array().is_some_and(|a| a.contains(&json!("ES256"))),
                        "J1: badSignatureAlgorithm without algorithms: {}",
                        r.text()
                    );
                }
            }
        }
        // A correct header with an empty signature.
        let header = fx.c.header_for(&account.key, None, url);
        let [p, pl, _] = sign_parts(&header, order_payload.as_bytes(), &account.key);
        let r = fx.c.post_body(url, &jws_body(&[p, pl, String::new()]));
        fx.refused("J1 empty signature", &r, 400, "malformed", sigs);
    }

    // ACME-J2: a MAC as the outer algorithm, keyed with the account's public key bytes.
    let jwk_text = account.key.jwk().to_string();
    let spki = {
        // The DER SubjectPublicKeyInfo, from a CSR made with the key.
        let der = csr(&account.key, &[], &[], &[&agent]);
        let (_, req) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&der).unwrap();
        req.certification_request_info.subject_pki.raw.to_vec()
    };
    for (mac, key_bytes) in [
        ("HS256", jwk_text.as_bytes()),
        ("HS384", jwk_text.as_bytes()),
        ("HS256", spki.as_slice()),
    ] {
        let header = protected(
            mac,
            &KeyRef::Kid(account.url.clone()),
            Some(&fx.c.nonce()),
            &new_order,
        );
        let p = b64(&header);
        let pl = b64(&order_payload);
        let tag = hmac_tag(mac, key_bytes, format!("{p}.{pl}").as_bytes());
        let r = fx.c.post_body(&new_order, &jws_body(&[p, pl, b64(tag)]));
        fx.refused("J2 MAC outer JWS", &r, 400, "badSignatureAlgorithm", sigs);
    }
    // An EAB-style JWS (HS256 with an EAB key id) as the whole newAccount request.
    let eab = fx.eab(&agent);
    let mut as_outer = eab_jws(
        &eab,
        &account.key.jwk(),
        &new_account,
        &EabKnobs {
            nonce: Some(fx.c.nonce()),
            ..EabKnobs::default()
        },
    );
    as_outer["payload"] = json!(b64(b"{}"));
    let r =
        fx.c.post_body(&new_account, as_outer.to_string().as_bytes());
    fx.refused(
        "J2 EAB JWS as outer",
        &r,
        400,
        "badSignatureAlgorithm",
        sigs,
    );

    // ACME-J3: every (key type × alg) pair that disagrees, on newAccount (jwk) ...
    let keys: Vec<AccountKey> = KeyAlg::ALL
        .iter()
        .map(|a| AccountKey::generate(*a))
        .collect();
    for key in &keys {
        for alg in KeyAlg::ALL {
            let header = protected(
                alg.name(),
                &KeyRef::Jwk(key.jwk()),
                Some(&fx.c.nonce()),
                &new_account,
            );
            let r = fx.c.post_body(
                &new_account,
                &signed(&header, br#"{"onlyReturnExisting":true}"#, key),
            );
            if alg == key.alg() {
                fx.refused("J3 matching pair", &r, 400, "accountDoesNotExist", sigs);
            } else {
                let what = format!("J3 {} header, {:?} key", alg.name(), key.alg());
                fx.refused(&what, &r, 400, "badSignatureAlgorithm", sigs);
            }
        }
        // A JWK alg member contradicting the header.
        let other = KeyAlg::ALL.iter().find(|a| **a != key.alg()).unwrap();
        let mut jwk = key.jwk();
        jwk["alg"] = json!(other.name());
        let header = protected(
            key.alg().name(),
            &KeyRef::Jwk(jwk),
            Some(&fx.c.nonce()),
            &new_account,
        );
        let r = fx.c.post_body(
            &new_account,
            &signed(&header, br#"{"onlyReturnExisting":true}"#, key),
        );
        fx.refused("J3 jwk alg member", &r, 400, "badSignatureAlgorithm", sigs);
    }
    // ... and on a kid request (the account key is P-256).
    for alg in ["ES384", "RS256", "EdDSA"] {
        let header = protected(
            alg,
            &KeyRef::Kid(account.url.clone()),
            Some(&fx.c.nonce()),
            &new_order,
        );
        let r = fx.c.post_body(
            &new_order,
            &signed(&header, order_payload.as_bytes(), &account.key),
        );
        fx.refused(
            "J3 kid alg mismatch",
            &r,
            400,
            "badSignatureAlgorithm",
            sigs,
        );
    }

    // ACME-J4: bad JWKs, each with the signature of a real key so only the key is wrong.
    let ec = &keys[0];
    let p384 = &keys[1];
    let rsa = &keys[2];
    let ed = &keys[3];
    fn with<'k>(key: &'k AccountKey, f: &dyn Fn(&mut Value)) -> (&'k AccountKey, Value) {
        let mut jwk = key.jwk();
        f(&mut jwk);
        (key, jwk)
    }
    let rsa_1024 = b64([0xc5u8; 128]);
    let bad_jwks: Vec<(&str, (&AccountKey, Value))> = vec![
        (
            "off-curve point",
            with(ec, &|j| j["y"] = json!(b64([1u8; 32]))),
        ),
        (
            "P-384 point off the curve",
            with(p384, &|j| j["x"] = json!(b64([2u8; 48]))),
        ),
        ("short x", with(ec, &|j| j["x"] = json!(b64([3u8; 31])))),
        ("long y", with(ec, &|j| j["y"] = json!(b64([3u8; 33])))),
        ("crv P-521", with(ec, &|j| j["crv"] = json!("P-521"))),
        (
            "crv secp256k1",
            with(ec, &|j| j["crv"] = json!("secp256k1")),
        ),
        ("RSA e=1", with(rsa, &|j| j["e"] = json!(b64([1u8])))),
        (
            "RSA e even",
            with(rsa, &|j| j["e"] = json!(b64([1u8, 0, 0]))),
        ),
        ("RSA 1024-bit n", with(rsa, &|j| j["n"] = json!(rsa_1024))),
        (
            "RSA 512-bit n",
            with(rsa, &|j| j["n"] = json!(b64([0xc5u8; 64]))),
        ),
        (
            "Ed25519 short",
            with(ed, &|j| j["x"] = json!(b64([9u8; 31]))),
        ),
        ("crv X25519", with(ed, &|j| j["crv"] = json!("X25519"))),
        ("kty oct", with(ec, &|j| j["kty"] = json!("oct"))),
        ("private d", with(ec, &|j| j["d"] = json!(b64([7u8; 32])))),
    ];
    for (what, (key, jwk)) in bad_jwks {
        let header = protected(
            key.alg().name(),
            &KeyRef::Jwk(jwk),
            Some(&fx.c.nonce()),
            &new_account,
        );
        let r = fx.c.post_body(
            &new_account,
            &signed(&header, br#"{"onlyReturnExisting":true}"#, key),
        );
        fx.refused(&format!("J4 {what}"), &r, 400, "badPublicKey", sigs);
        assert!(
            !r.json()["detail"].as_str().unwrap_or("").is_empty(),
            "J4 {what}: no reason in detail"
        );
    }

    // ACME-J5: jwk and kid, per endpoint.
    let jwk = KeyRef::Jwk(account.key.jwk());
    let kid = KeyRef::Kid(account.url.clone());
    let both = KeyRef::Both(account.key.jwk(), account.url.clone());
    let cases: Vec<(&str, &String, KeyRef)> = vec![
        ("newAccount with kid", &new_account, kid.clone()),
        ("newAccount with both", &new_account, both.clone()),
        ("newAccount with neither", &new_account, KeyRef::Neither),
        ("newOrder with jwk", &new_order, jwk.clone()),
        ("newOrder with both", &new_order, both.clone()),
        ("newOrder with neither", &new_order, KeyRef::Neither),
        ("finalize with jwk", &finalize, jwk.clone()),
        ("order with jwk", &order_url, jwk.clone()),
        ("account with jwk", &account.url, jwk.clone()),
        ("keyChange with jwk", &key_change, jwk.clone()),
        ("revokeCert with both", &revoke, both.clone()),
        ("revokeCert with neither", &revoke, KeyRef::Neither),
    ];
    for (what, url, key_ref) in cases {
        let header = protected("ES256", &key_ref, Some(&fx.c.nonce()), url);
        let r = fx.c.post_body(url, &signed(&header, b"{}", &account.key));
        fx.refused(&format!("J5 {what}"), &r, 400, "malformed", sigs);
    }

    // ACME-J6: unprotected header, general serialization, b64:false, detached payload.
    let header =
        fx.c.header_for(&account.key, Some(&account.url), &new_order);
    let [p, pl, sig] = sign_parts(&header, order_payload.as_bytes(), &account.key);
    let bodies: Vec<(&str, Value)> = vec![
        (
            "unprotected header",
            json!({"protected": p, "payload": pl, "signature": sig, "header": {"kid": account.url}}),
        ),
        (
            "signatures array",
            json!({"payload": pl, "signatures": [{"protected": p, "signature": sig}]}),
        ),
        (
            "signatures array beside flattened",
            json!({"protected": p, "payload": pl, "signature": sig, "signatures": []}),
        ),
        (
            "detached payload",
            json!({"protected": p, "signature": sig}),
        ),
        (
            "compact serialization as a string",
            json!(format!("{p}.{pl}.{sig}")),
        ),
    ];
    for (what, body) in bodies {
        let r = fx.c.post_body(&new_order, body.to_string().as_bytes());
        fx.refused(&format!("J6 {what}"), &r, 400, "malformed", sigs);
    }
    for extra in [r#","b64":false,"crit":["b64"]"#, r#","b64":false"#] {
        let mut header =
            fx.c.header_for(&account.key, Some(&account.url), &new_order);
        header.pop();
        header.push_str(extra);
        header.push('}');
        let r = fx.c.post_body(
            &new_order,
            &signed(&header, order_payload.as_bytes(), &account.key),
        );
        fx.refused("J6 b64:false", &r, 400, "malformed", sigs);
    }

    // ACME-J7: duplicate members in the protected header and in the payload.
    for dup in [
        format!(r#","url":"{}""#, fx.c.url("new-account")),
        r#","alg":"none""#.to_owned(),
        r#","nonce":"AAAA""#.to_owned(),
        format!(r#","kid":"{}""#, account.url),
    ] {
        let mut header =
            fx.c.header_for(&account.key, Some(&account.url), &new_order);
        header.pop();
        header.push_str(&dup);
        header.push('}');
        let r = fx.c.post_body(
            &new_order,
            &signed(&header, order_payload.as_bytes(), &account.key),
        );
        fx.refused(&format!("J7 header {dup}"), &r, 400, "malformed", sigs);
    }
    for (what, url, payload) in [
        (
            "identifiers twice",
            &new_order,
            format!(
                r#"{{"identifiers":[{{"type":"uri","value":"{agent}"}}],"identifiers":[{{"type":"dns","value":"evil.example.org"}}]}}"#
            ),
        ),
        (
            "value twice",
            &new_order,
            format!(r#"{{"identifiers":[{{"type":"uri","value":"{agent}","value":"x"}}]}}"#),
        ),
        (
            "csr twice",
            &finalize,
            r#"{"csr":"AAAA","csr":"BBBB"}"#.to_owned(),
        ),
    ] {
        let header = fx.c.header_for(&account.key, Some(&account.url), url);
        let r =
            fx.c.post_body(url, &signed(&header, payload.as_bytes(), &account.key));
        fx.refused(&format!("J7 payload {what}"), &r, 400, "malformed", sigs);
    }
    // A duplicate member in the JWS body itself.
    let header =
        fx.c.header_for(&account.key, Some(&account.url), &new_order);
    let [p, pl, sig] = sign_parts(&header, order_payload.as_bytes(), &account.key);
    let body = format!(
        r#"{{"protected":"{p}","payload":"{pl}","signature":"{sig}","payload":"{}"}}"#,
        b64("{}")
    );
    let r = fx.c.post_body(&new_order, body.as_bytes());
    fx.refused("J7 body payload twice", &r, 400, "malformed", sigs);

    // ACME-J10: HTTP-level refusals.
    let good = |url: &str| {
        let header = fx.c.header_for(&account.key, Some(&account.url), url);
        signed(&header, order_payload.as_bytes(), &account.key)
    };
    for content_type in [
        None,
        Some("application/json"),
        Some("text/plain"),
        Some("application/jose"),
    ] {
        let headers: Vec<(&str, &str)> = content_type
            .map(|c| vec![("Content-Type", c)])
            .unwrap_or_default();
        let r =
            fx.c.request("POST", &new_order, &headers, &good(&new_order));
        fx.refused(
            &format!("J10 Content-Type {content_type:?}"),
            &r,
            415,
            "malformed",
            sigs,
        );
    }
    for url in [
        &new_account,
        &new_order,
        &revoke,
        &key_change,
        &finalize,
        &order_url,
        &account.url,
    ] {
        let r = fx.c.request("GET", url, &[], &[]);
        fx.refused(&format!("J10 GET {url}"), &r, 405, "malformed", sigs);
        assert!(r.header("allow").is_some(), "405 without Allow: {r:?}");
    }
    for url in [&order_url, &account.url, &fx.c.url("acct/x/orders")] {
        let url = if url.ends_with("/orders") {
            format!("{}/orders", account.url)
        } else {
            url.clone()
        };
        let header = fx.c.header_for(&account.key, Some(&account.url), &url);
        let r = if url == account.url {
            // On the account URL `{}` is a no-op update, which RFC 8555 §7.3.2 allows.
            continue;
        } else {
            fx.c.post_body(&url, &signed(&header, b"{}", &account.key))
        };
        fx.refused("J10 POST-as-GET with {}", &r, 400, "malformed", sigs);
    }
    let nonce = fx.c.nonce();
    let r = fx.c.request(
        "POST",
        &new_order,
        &[
            ("Content-Type", "application/jose+json"),
            ("Replay-Nonce", &nonce),
        ],
        &good(&new_order),
    );
    fx.refused("J10 client Replay-Nonce", &r, 400, "malformed", sigs);

    // ACME-J11: size and depth, each answered in bounded time.
    let started = Instant::now();
    let big = vec![b'A'; 4 * 1024 * 1024];
    let mut body = b"{\"protected\":\"".to_vec();
    body.extend_from_slice(&big);
    body.extend_from_slice(b"\"}");
    for url in [&new_account, &new_order, &finalize] {
        let r = fx.c.post_body(url, &body);
        // The problem document and Replay-Nonce of this answer: see
        // acme_j11_a_refused_body_size_still_gets_a_problem_and_a_nonce.
        assert_eq!(r.status, 413, "J11 4 MiB body: {r:?}");
        assert_eq!(fx.signatures(), sigs);
    }
    // Just over the server's body limit, below the JWS limit.
    let r = fx.c.post_body(&new_order, &vec![b' '; 17 * 1024]);
    assert_eq!(r.status, 413, "J11 17 KiB body: {r:?}");
    // 10^5-deep nesting does not fit the body limit; 8000-deep does, and is refused by the
    // parser's depth limit, not by the stack.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let r = fx.c.post_body(&new_order, deep.as_bytes());
    assert_eq!(r.status, 413, "J11 10^5-deep JSON: {r:?}");
    for depth in [8000, 129] {
        let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let r = fx.c.post_body(&new_order, deep.as_bytes());
        fx.refused("J11 deep JSON body", &r, 400, "malformed", sigs);
        // The same depth inside a correctly signed payload.
        let header =
            fx.c.header_for(&account.key, Some(&account.url), &new_order);
        let payload = format!(
            r#"{{"identifiers":{}}}"#,
            "[".repeat(depth / 2) + &"]".repeat(depth / 2)
        );
        if payload.len() * 4 / 3 < 15 * 1024 {
            let r = fx.c.post_body(
                &new_order,
                &signed(&header, payload.as_bytes(), &account.key),
            );
            fx.refused("J11 deep JSON payload", &r, 400, "malformed", sigs);
        }
    }
    // A huge base64 field within the limit.
    let header = fx.c.header_for(&account.key, Some(&account.url), &finalize);
    let payload = json!({"csr": b64(vec![0x30u8; 6 * 1024])}).to_string();
    let r = fx.c.post_body(
        &finalize,
        &signed(&header, payload.as_bytes(), &account.key),
    );
    fx.refused("J11 huge csr", &r, 400, "badCSR", sigs);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "J11 took {:?}",
        started.elapsed()
    );

    // Nothing of the above changed anything: the order is still ready, nothing was issued,
    // the account key still works.
    let order_now = fx.c.get_as(&account, &order_url);
    assert_eq!(order_now.json()["status"], "ready", "{}", order_now.text());
    assert_eq!(fx.issued(), issued);
    assert_eq!(
        fx.account_of_key(&account.key).as_deref(),
        Some(account.url.as_str())
    );
    for key in &keys {
        assert_eq!(fx.account_of_key(key), None, "an account was created");
    }
}

/// ACME-J11, the answer's form: a body over the server's limit is refused by the HTTP layer
/// in front of the ACME routes, so the 413 is `text/plain` without a `Replay-Nonce`.
#[test]
#[ignore = "server bug: the 413 (and 408) of the listener's body-limit and timeout layers bypass the ACME middleware, so they carry no Replay-Nonce and no problem document"]
fn acme_j11_a_refused_body_size_still_gets_a_problem_and_a_nonce() {
    let env = Env::with_ca();
    let fx = Fx::start(&env);
    let r =
        fx.c.post_body(&fx.c.url("new-order"), &vec![b' '; 64 * 1024]);
    r.assert_problem(413, "malformed");
    fx.redeem(r.nonce().unwrap());
}
