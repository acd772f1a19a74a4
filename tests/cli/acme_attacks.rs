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
use std::net::{IpAddr, TcpListener, TcpStream};
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
use super::support::{AuditClaims, Env};

const SIGNATURES: &str = "agentca_issuing_ca_signatures_total";
const ISSUED: &str = "agentca_certificates_issued_total";

/// A test's server and client.
struct Fx<'e> {
    srv: AcmeServer<'e>,
    c: AcmeClient,
    /// The `acme.refused` audit entries that checked refusals have claimed.
    refusals: AuditClaims,
}

impl<'e> Fx<'e> {
    fn start(env: &'e Env) -> Self {
        Self::start_with(env, AcmeOptions::default())
    }

    fn start_with(env: &'e Env, options: AcmeOptions) -> Self {
        let srv = AcmeServer::start_with(env, options);
        let c = AcmeClient::new(srv.https, &srv.root_pem());
        Self {
            srv,
            c,
            refusals: AuditClaims::default(),
        }
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
        // Every rejection writes an audit event (the plan's rule for every row).
        self.srv
            .env
            .claim_audit_entry(&self.refusals, "acme.refused", what, |e| {
                e["fields"]["type"] == kind
                    && e["fields"]["status"] == status
                    && e["fields"]["detail"].is_string()
                    && e["fields"]["client"] == "127.0.0.1"
            });
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

    /// The account's order URLs (its orders list).
    fn orders(&self, account: &Account) -> Vec<Value> {
        let r = self.c.get_as(account, &format!("{}/orders", account.url));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["orders"].as_array().unwrap().clone()
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

/// `policies/NAME.toml`: the default policy for the agents under `/NAME/`, with each
/// `(from, to)` of `changes` applied (each must change something).
pub(crate) fn policy_like_default(env: &Env, name: &str, changes: &[(&str, &str)]) {
    let default = std::fs::read_to_string(env.data_file("policies/default.toml")).unwrap();
    let mut policy = default.replace(
        "agents = [\"/agent/**\"]",
        &format!("agents = [\"/{name}/**\"]"),
    );
    for (from, to) in changes {
        assert!(policy.contains(from), "the default policy has no {from:?}");
        policy = policy.replace(from, to);
    }
    assert_ne!(policy, default);
    std::fs::write(env.data_file(&format!("policies/{name}.toml")), policy).unwrap();
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
    // Methods no ACME resource has, and path segments that do not decode: problem
    // documents and audited refusals too, not bare HTTP errors.
    for method in ["PUT", "DELETE", "PATCH", "OPTIONS"] {
        let r = fx.c.request(method, &new_order, &[], &[]);
        fx.refused(&format!("J10 {method}"), &r, 405, "malformed", sigs);
        assert!(r.header("allow").is_some(), "405 without Allow: {r:?}");
    }
    let r = fx.c.request("POST", &fx.c.url("issuer"), &[], &[]);
    fx.refused("J10 POST issuer", &r, 405, "malformed", sigs);
    for path in ["acct/%FF", "order/%FF%FE/finalize", "renewal-info/%FF"] {
        let method = if path.starts_with("renewal-info") {
            "GET"
        } else {
            "POST"
        };
        let r = fx.c.request(method, &fx.c.url(path), &[], &[]);
        fx.refused(&format!("J10 {method} {path}"), &r, 400, "malformed", sigs);
    }
    let r = fx.c.request("GET", &fx.c.url(""), &[], &[]);
    fx.refused("J10 GET /acme/", &r, 404, "malformed", sigs);
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

/// ACME-J11, the answer's form: a body over the server's limit is refused before any JWS is
/// read, with a `malformed` problem document and a fresh `Replay-Nonce` like every other
/// answer.
#[test]
fn acme_j11_a_refused_body_size_still_gets_a_problem_and_a_nonce() {
    let env = Env::with_ca();
    let fx = Fx::start(&env);
    let r =
        fx.c.post_body(&fx.c.url("new-order"), &vec![b' '; 64 * 1024]);
    r.assert_problem(413, "malformed");
    fx.redeem(r.nonce().unwrap());
}

/// ACME-J8: missing, reused, malformed, unknown and pre-restart nonces; one nonce raced by
/// 16 requests.
#[test]
fn acme_j8_nonces_are_single_use() {
    let env = Env::with_ca();
    let fx = Fx::start(&env);
    let agent = fx.agent("nonce", &[]);
    let account = fx.account(&agent);
    let new_order = fx.c.url("new-order");
    let payload = json!({"identifiers": [ident("uri", &agent)]}).to_string();
    let sigs = fx.signatures();
    let kid = KeyRef::Kid(account.url.clone());
    let with_nonce = |nonce: Option<&str>| {
        let header = protected("ES256", &kid, nonce, &new_order);
        signed(&header, payload.as_bytes(), &account.key)
    };
    let orders_before = fx.orders(&account);

    for (what, nonce) in [
        ("missing", None),
        ("empty", Some(String::new())),
        ("not base64url", Some("!!!not-a-nonce!!!".to_owned())),
        ("padded", Some(format!("{}=", fx.c.nonce()))),
        ("unknown", Some(b64([7u8; 16]))),
        ("overlong", Some("A".repeat(4096))),
    ] {
        let r = fx.c.post_body(&new_order, &with_nonce(nonce.as_deref()));
        fx.refused(&format!("J8 {what} nonce"), &r, 400, "badNonce", sigs);
    }
    assert_eq!(
        fx.orders(&account),
        orders_before,
        "J8: an order was created"
    );

    // Replaying a successful request byte for byte.
    let body = with_nonce(Some(&fx.c.nonce()));
    assert_eq!(fx.c.post_body(&new_order, &body).status, 201);
    let r = fx.c.post_body(&new_order, &body);
    fx.refused("J8 replayed request", &r, 400, "badNonce", sigs);

    // One nonce, 16 concurrent requests: exactly one is served.
    let body = Arc::new(with_nonce(Some(&fx.c.nonce())));
    let barrier = Arc::new(Barrier::new(16));
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let (c, body, barrier, url) = (
                fx.c.clone(),
                body.clone(),
                barrier.clone(),
                new_order.clone(),
            );
            std::thread::spawn(move || {
                barrier.wait();
                c.post_body(&url, &body)
            })
        })
        .collect();
    let answers: Vec<Response> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let won = answers.iter().filter(|r| r.status == 201).count();
    assert_eq!(
        won, 1,
        "J8: {won} of 16 requests with one nonce were served"
    );
    for r in answers.iter().filter(|r| r.status != 201) {
        fx.refused("J8 raced nonce", r, 400, "badNonce", sigs);
    }
    for r in &answers {
        assert!(r.nonce().is_some());
    }

    // A nonce issued before a restart is unknown after it with the embedded store, where
    // nonces live in the node's memory; with PostgreSQL it stays good, as on any other node
    // (docs/acme.md, RFC 8555 §6.5).
    let old = fx.c.nonce();
    let Fx { srv, .. } = fx;
    let AcmeServer {
        server, options, ..
    } = srv;
    server.terminate();
    let fx = Fx::start_with(&env, options);
    let header = protected(
        "ES256",
        &KeyRef::Kid(fx.c.url(&account.url[account.url.find("acct/").unwrap()..])),
        Some(&old),
        &fx.c.url("new-order"),
    );
    let r = fx.c.post_body(
        &fx.c.url("new-order"),
        &signed(&header, payload.as_bytes(), &account.key),
    );
    if env.postgres_url().is_some() {
        assert_eq!(
            r.status,
            201,
            "J8 nonce from before a restart: {}",
            r.text()
        );
        return;
    }
    fx.refused(
        "J8 nonce from before a restart",
        &r,
        400,
        "badNonce",
        fx.signatures(),
    );
}

/// ACME-J9: the `url` header must be the URL the request was sent to.
#[test]
fn acme_j9_url_must_match_the_request() {
    let env = Env::with_ca();
    let fx = Fx::start(&env);
    let agent = fx.agent("url", &[]);
    let account = fx.account(&agent);
    let (_, order) = fx.ready_order(&account, &agent);
    let finalize = order["finalize"].as_str().unwrap().to_owned();
    let new_order = fx.c.url("new-order");
    let payload = json!({"identifiers": [ident("uri", &agent)]}).to_string();
    let sigs = fx.signatures();
    let orders_before = fx.orders(&account);
    let signed_for = |url: &str| {
        let header = fx.c.header_for(&account.key, Some(&account.url), url);
        signed(&header, payload.as_bytes(), &account.key)
    };
    // A valid newOrder JWS replayed elsewhere.
    for target in [
        finalize.clone(),
        fx.c.url("revoke-cert"),
        fx.c.url("key-change"),
        account.url.clone(),
    ] {
        let r = fx.c.post_body(&target, &signed_for(&new_order));
        fx.refused(
            &format!("J9 newOrder JWS at {target}"),
            &r,
            403,
            "unauthorized",
            sigs,
        );
    }
    // Variants of the URL in the header.
    let port = fx.c.addr().port();
    for variant in [
        format!("{new_order}/"),
        format!("{new_order}?x=1"),
        format!("{new_order}#f"),
        new_order.replace("https://", "http://"),
        new_order.replace("127.0.0.1", "localhost"),
        new_order.replace(&format!(":{port}"), ""),
        new_order.replace("new-order", "new%2Dorder"),
        new_order.replace("new-order", "NEW-ORDER"),
        format!("{new_order} "),
    ] {
        let r = fx.c.post_body(&new_order, &signed_for(&variant));
        fx.refused(&format!("J9 url {variant}"), &r, 403, "unauthorized", sigs);
    }
    // The request URL differs: a query string, another Host.
    let r =
        fx.c.post_body("/acme/new-order?x=1", &signed_for(&new_order));
    fx.refused("J9 query on the request", &r, 403, "unauthorized", sigs);
    let host = format!("localhost:{port}");
    let r = fx.c.request(
        "POST",
        "/acme/new-order",
        &[("Host", &host), ("Content-Type", "application/jose+json")],
        &signed_for(&new_order),
    );
    assert_eq!(
        (r.status, r.problem().as_str()),
        (403, "unauthorized"),
        "J9 Host: {}",
        r.text()
    );
    assert!(r.nonce().is_some());
    // No url at all.
    let header = format!(
        r#"{{"alg":"ES256","kid":"{}","nonce":"{}"}}"#,
        account.url,
        fx.c.nonce()
    );
    let r = fx.c.post_body(
        &new_order,
        &signed(&header, payload.as_bytes(), &account.key),
    );
    fx.refused("J9 url missing", &r, 400, "malformed", sigs);
    assert_eq!(
        fx.orders(&account),
        orders_before,
        "J9: an order was created"
    );
}

/// ACME-J12, A5, A6, A7: deactivated accounts and key rollover.
#[test]
fn acme_deactivation_and_key_rollover() {
    let env = Env::with_ca();
    let fx = Fx::start(&env);
    let agent = fx.agent("roll", &[]);
    let key_change = fx.c.url("key-change");

    // ACME-J12: a deactivated account can do nothing.
    let gone = fx.account(&agent);
    let (leaf, _) = fx.issue(&gone, &agent);
    let (_, ready) = fx.ready_order(&gone, &agent);
    let r =
        fx.c.post_as(&gone, &gone.url, &json!({"status": "deactivated"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "deactivated");
    let sigs = fx.signatures();
    let issued = fx.issued();
    let r = fx.c.new_order(&gone, &json!([ident("uri", &agent)]));
    fx.refused("J12 newOrder", &r, 401, "unauthorized", sigs);
    let cert_key = AccountKey::es256();
    let r =
        fx.c.finalize(&gone, &ready, &csr(&cert_key, &[], &[], &[&agent]));
    fx.refused("J12 finalize", &r, 401, "unauthorized", sigs);
    let r = fx.c.post_as(
        &gone,
        &fx.c.url("revoke-cert"),
        &json!({"certificate": b64(&leaf)}),
    );
    fx.refused("J12 revokeCert", &r, 401, "unauthorized", sigs);
    let r =
        fx.c.new_account_raw(&gone.key, &json!({"onlyReturnExisting": true}));
    fx.refused("J12 newAccount with the key", &r, 401, "unauthorized", sigs);
    assert_eq!(fx.issued(), issued);

    // Rollover: A's key K1 → K2; the old key is no longer A's.
    let a = fx.account(&agent);
    let b = fx.account(&agent);
    let k1_jwk = a.key.jwk();
    let k2 = AccountKey::es256();
    let inner = key_change_inner(&k2, &key_change, &a.url, &k1_jwk, None);
    let r = fx.c.post_as(&a, &key_change, &inner);
    assert_eq!(r.status, 200, "rollover: {}", r.text());
    let r =
        fx.c.new_account_raw(&a.key, &json!({"onlyReturnExisting": true}));
    fx.refused(
        "J12 old key, onlyReturnExisting",
        &r,
        400,
        "accountDoesNotExist",
        sigs,
    );
    let r = fx.c.new_order(&a, &json!([ident("uri", &agent)]));
    // Only the current key is tried, so the old one is a signature that does not verify
    // (docs/acme.md, divergences).
    fx.refused(
        "J12 newOrder signed by the old key",
        &r,
        400,
        "malformed",
        sigs,
    );
    let a = Account {
        key: k2,
        url: a.url,
    };
    assert_eq!(fx.account_of_key(&a.key).as_deref(), Some(a.url.as_str()));

    // ACME-A5: rolling to a key another account uses: 409 with its Location.
    let inner = key_change_inner(&b.key, &key_change, &a.url, &a.key.jwk(), None);
    let r = fx.c.post_as(&a, &key_change, &inner);
    assert_eq!(r.status, 409, "A5: {}", r.text());
    assert_eq!(r.location(), Some(b.url.as_str()), "A5: {r:?}");
    assert!(r.nonce().is_some());
    fx.redeem(r.nonce().unwrap());
    assert_eq!(fx.account_of_key(&a.key).as_deref(), Some(a.url.as_str()));
    assert_eq!(fx.account_of_key(&b.key).as_deref(), Some(b.url.as_str()));

    // ACME-A6: inner JWS defects, one check at a time.
    let k3 = AccountKey::es256();
    let stranger = AccountKey::es256();
    let cases: Vec<(&str, Value)> = vec![
        (
            "inner nonce",
            key_change_inner(&k3, &key_change, &a.url, &a.key.jwk(), Some(&fx.c.nonce())),
        ),
        (
            "inner url differs",
            key_change_inner(&k3, &fx.c.url("new-order"), &a.url, &a.key.jwk(), None),
        ),
        (
            "account is another account",
            key_change_inner(&k3, &key_change, &b.url, &a.key.jwk(), None),
        ),
        (
            "oldKey is not the current key",
            key_change_inner(&k3, &key_change, &a.url, &stranger.jwk(), None),
        ),
        (
            "oldKey is K1, rolled away",
            key_change_inner(&k3, &key_change, &a.url, &k1_jwk, None),
        ),
        ("inner signed by the old key", {
            let header = protected("ES256", &KeyRef::Jwk(k3.jwk()), None, &key_change);
            let payload = json!({"account": a.url, "oldKey": a.key.jwk()}).to_string();
            signed_value(&header, payload.as_bytes(), &a.key)
        }),
        ("inner with kid", {
            let header = protected("ES256", &KeyRef::Kid(a.url.clone()), None, &key_change);
            let payload = json!({"account": a.url, "oldKey": a.key.jwk()}).to_string();
            signed_value(&header, payload.as_bytes(), &k3)
        }),
        (
            "inner is not a JWS",
            json!({"account": a.url, "oldKey": a.key.jwk()}),
        ),
    ];
    for (what, inner) in cases {
        let r = fx.c.post_as(&a, &key_change, &inner);
        fx.refused(&format!("A6 {what}"), &r, 400, "malformed", sigs);
        assert_eq!(fx.account_of_key(&k3), None, "A6 {what}: the key changed");
        assert_eq!(fx.account_of_key(&a.key).as_deref(), Some(a.url.as_str()));
    }

    // ACME-A7: A→K3, K3→K4, then the A→K3 inner replayed with a fresh outer nonce.
    let first = key_change_inner(&k3, &key_change, &a.url, &a.key.jwk(), None);
    assert_eq!(fx.c.post_as(&a, &key_change, &first).status, 200);
    let a = Account {
        key: k3,
        url: a.url,
    };
    let k4 = AccountKey::es256();
    let second = key_change_inner(&k4, &key_change, &a.url, &a.key.jwk(), None);
    assert_eq!(fx.c.post_as(&a, &key_change, &second).status, 200);
    let a = Account {
        key: k4,
        url: a.url,
    };
    let r = fx.c.post_as(&a, &key_change, &first);
    fx.refused("A7 replayed rollover", &r, 400, "malformed", sigs);
    assert_eq!(fx.account_of_key(&a.key).as_deref(), Some(a.url.as_str()));

    // Eight concurrent rollovers of one account: one wins, the index follows it.
    let new_keys: Vec<Arc<AccountKey>> = (0..8).map(|_| Arc::new(AccountKey::es256())).collect();
    let a = Arc::new(a);
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = new_keys
        .iter()
        .map(|k| {
            let (c, k, a, barrier, url) = (
                fx.c.clone(),
                k.clone(),
                a.clone(),
                barrier.clone(),
                key_change.clone(),
            );
            let inner = key_change_inner(&k, &url, &a.url, &a.key.jwk(), None);
            let body = {
                let header = c.header_for(&a.key, Some(&a.url), &url);
                signed(&header, inner.to_string().as_bytes(), &a.key)
            };
            std::thread::spawn(move || {
                barrier.wait();
                c.post_body(&url, &body)
            })
        })
        .collect();
    let answers: Vec<Response> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let winners: Vec<usize> = (0..8).filter(|i| answers[*i].status == 200).collect();
    assert_eq!(
        winners.len(),
        1,
        "A7: {} concurrent rollovers won",
        winners.len()
    );
    for (i, r) in answers.iter().enumerate() {
        assert!(r.nonce().is_some());
        if i != winners[0] {
            assert!(
                r.status == 400 || r.status == 409,
                "A7 loser: {} {}",
                r.status,
                r.text()
            );
            assert_eq!(
                fx.account_of_key(&new_keys[i]),
                None,
                "A7: loser key indexed"
            );
        }
    }
    assert_eq!(
        fx.account_of_key(&new_keys[winners[0]]).as_deref(),
        Some(a.url.as_str())
    );
    assert_eq!(fx.account_of_key(&a.key), None);
    assert_eq!(fx.signatures(), sigs);
}

/// ACME-A4, an expired key id: a credential created (by a clock moved back two minutes) with
/// the shortest lifetime, one minute, is refused like an unknown one, and creates nothing.
#[test]
fn acme_a4_an_expired_credential_is_refused() {
    let Some(libfaketime) = super::support::libfaketime() else {
        agentca_testkit::tools::missing("faketime", "the expired EAB credential test (ACME-A4)");
        return;
    };
    let env = Env::with_ca();
    let agent = env.add_agent("/agent/late", &[]);
    // Before the server starts, so the command writes the store itself, with its own clock.
    let mut create = env.command();
    create.args([
        "--output", "json", "token", "create", "--agent", &agent, "--for", "acme", "--ttl", "1m",
    ]);
    super::support::move_clock(&mut create, &libfaketime, "-2m");
    let created = super::support::Outcome::of(&mut create).success().json();
    let eab = Eab::new(
        created["kid"].as_str().unwrap(),
        created["hmac"].as_str().unwrap(),
    );
    let fx = Fx::start(&env);
    let sigs = fx.signatures();
    let key = AccountKey::es256();
    let new_account = |eab: &Eab| {
        let binding = eab_jws(
            eab,
            &key.jwk(),
            &fx.c.url("new-account"),
            &EabKnobs::default(),
        );
        fx.c.new_account_raw(&key, &json!({"externalAccountBinding": binding}))
    };
    let r = new_account(&eab);
    fx.refused("A4 expired kid", &r, 403, "unauthorized", sigs);
    assert_eq!(fx.account_of_key(&key), None, "an account was created");
    // The control: the same kind of credential, unexpired, binds the same key.
    let fresh = fx.srv.env.json(&[
        "token", "create", "--agent", &agent, "--for", "acme", "--ttl", "1m",
    ]);
    let r = new_account(&Eab::new(
        fresh["kid"].as_str().unwrap(),
        fresh["hmac"].as_str().unwrap(),
    ));
    assert_eq!(r.status, 201, "{}", r.text());
}

/// ACME-A1, A2, A3, A4, A9, A10: account creation and the external account binding.
#[test]
fn acme_accounts_and_external_account_binding() {
    let env = Env::with_ca();
    let fx = Fx::start(&env);
    let agent = fx.agent("eab", &[]);
    let url = fx.c.url("new-account");
    let sigs = fx.signatures();

    // ACME-A1.
    let r = fx.c.request("GET", "/acme/directory", &[], &[]);
    assert_eq!(
        r.json()["meta"]["externalAccountRequired"],
        true,
        "{}",
        r.text()
    );
    let key = AccountKey::es256();
    let r =
        fx.c.new_account_raw(&key, &json!({"termsOfServiceAgreed": true}));
    fx.refused("A1 no EAB", &r, 400, "externalAccountRequired", sigs);
    assert_eq!(fx.account_of_key(&key), None);

    // ACME-A4 (and A3): defective bindings leave the credential unused.
    let eab = fx.eab(&agent);
    let other = AccountKey::es256();
    let knobs = |f: &dyn Fn(&mut EabKnobs)| {
        let mut k = EabKnobs::default();
        f(&mut k);
        k
    };
    let full_tag = {
        let b = eab_jws(&eab, &key.jwk(), &url, &EabKnobs::default());
        agentca_testkit::acme::unb64(b["signature"].as_str().unwrap())
    };
    let cases: Vec<(&str, EabKnobs, &str)> = vec![
        (
            "A3 binds another key",
            knobs(&|k| k.jwk = Some(other.jwk())),
            "unauthorized",
        ),
        (
            "A4 nonce present",
            knobs(&|k| k.nonce = Some(fx.c.nonce())),
            "malformed",
        ),
        (
            "A4 url differs",
            knobs(&|k| k.url = Some(fx.c.url("new-order"))),
            "unauthorized",
        ),
        (
            "A4 url with a slash",
            knobs(&|k| k.url = Some(format!("{url}/"))),
            "unauthorized",
        ),
        (
            "A4 alg ES256",
            knobs(&|k| k.alg = Some("ES256".into())),
            "malformed",
        ),
        (
            "A4 alg none",
            knobs(&|k| k.alg = Some("none".into())),
            "malformed",
        ),
        (
            "A4 wrong MAC key",
            knobs(&|k| k.mac_key = Some(vec![0x42; 32])),
            "unauthorized",
        ),
        (
            "A4 unknown kid",
            knobs(&|k| k.kid = Some("no-such-kid".into())),
            "unauthorized",
        ),
        (
            "A4 empty kid",
            knobs(&|k| k.kid = Some(String::new())),
            "malformed",
        ),
        (
            "A4 empty MAC",
            knobs(&|k| k.signature = Some(Vec::new())),
            "malformed",
        ),
        (
            "A4 truncated MAC",
            knobs(&|k| k.signature = Some(full_tag[..16].to_vec())),
            "unauthorized",
        ),
        (
            "A4 one bit flipped",
            knobs(&|k| {
                let mut t = full_tag.clone();
                t[0] ^= 1;
                k.signature = Some(t);
            }),
            "unauthorized",
        ),
        (
            "A4 duplicate kid member",
            knobs(&|k| k.extra_header = Some(r#","kid":"other""#.into())),
            "malformed",
        ),
    ];
    for (what, knobs, kind) in cases {
        let binding = eab_jws(&eab, &key.jwk(), &url, &knobs);
        let r =
            fx.c.new_account_raw(&key, &json!({"externalAccountBinding": binding}));
        fx.refused(
            what,
            &r,
            if kind == "unauthorized" { 403 } else { 400 },
            kind,
            sigs,
        );
        assert_eq!(
            fx.account_of_key(&key),
            None,
            "{what}: an account was created"
        );
    }
    // The binding as a string, or as a JWS that is no object.
    for bad in [
        json!("x.y.z"),
        json!([1]),
        json!({"protected": "", "payload": "", "signature": ""}),
    ] {
        let r =
            fx.c.new_account_raw(&key, &json!({"externalAccountBinding": bad}));
        fx.refused("A4 not a JWS", &r, 400, "malformed", sigs);
    }

    // ACME-A10: bad contacts, refused before the binding is used.
    let long = format!("mailto:{}@example.org", "a".repeat(250));
    for (contact, kind) in [
        (json!("mailto:a@example.org"), "malformed"),
        (json!([1]), "malformed"),
        (json!([""]), "invalidContact"),
        (json!(["mailto:"]), "invalidContact"),
        (json!(["mailto:ü@example.org"]), "invalidContact"),
        (json!(["mailto:a@b@example.org"]), "invalidContact"),
        (json!(["mailto:a@example.org?subject=hi"]), "invalidContact"),
        (
            json!(["mailto:a@example.org,b@example.org"]),
            "invalidContact",
        ),
        (json!(["mailto:a@localhost"]), "invalidContact"),
        (json!([long]), "invalidContact"),
        (
            json!([
                "mailto:a@x.org",
                "mailto:b@x.org",
                "mailto:c@x.org",
                "mailto:d@x.org",
                "mailto:e@x.org"
            ]),
            "invalidContact",
        ),
        (json!(["tel:+15555555555"]), "unsupportedContact"),
        (json!(["https://example.org/contact"]), "unsupportedContact"),
    ] {
        let binding = eab_jws(&eab, &key.jwk(), &url, &EabKnobs::default());
        let r = fx.c.new_account_raw(
            &key,
            &json!({"contact": contact, "externalAccountBinding": binding}),
        );
        fx.refused(&format!("A10 contact {contact}"), &r, 400, kind, sigs);
        assert_eq!(fx.account_of_key(&key), None);
    }

    // The credential survived all of that: it makes exactly one account.
    let a = fx.c.new_account(key, &eab);
    // ACME-A2: sequential reuse.
    let second = AccountKey::es256();
    let binding = eab_jws(&eab, &second.jwk(), &url, &EabKnobs::default());
    let r =
        fx.c.new_account_raw(&second, &json!({"externalAccountBinding": binding}));
    fx.refused("A2 reused EAB", &r, 403, "unauthorized", sigs);
    assert_eq!(fx.account_of_key(&second), None);

    // ACME-A9: the same key again returns the same account; an unknown key with
    // onlyReturnExisting does not exist.
    let binding = eab_jws(&fx.eab(&agent), &a.key.jwk(), &url, &EabKnobs::default());
    let r =
        fx.c.new_account_raw(&a.key, &json!({"externalAccountBinding": binding}));
    assert_eq!(r.status, 200, "A9: {}", r.text());
    assert_eq!(r.location(), Some(a.url.as_str()));
    let r = fx.c.new_account_raw(&a.key, &json!({}));
    assert_eq!(r.status, 200, "A9 without EAB: {}", r.text());
    assert_eq!(r.location(), Some(a.url.as_str()));
    let r =
        fx.c.new_account_raw(&AccountKey::es256(), &json!({"onlyReturnExisting": true}));
    fx.refused("A9 unknown key", &r, 400, "accountDoesNotExist", sigs);

    // ACME-A2: 16 concurrent newAccounts with one credential (16 keys): one wins.
    let eab = fx.eab(&agent);
    let keys: Vec<Arc<AccountKey>> = (0..16).map(|_| Arc::new(AccountKey::es256())).collect();
    let barrier = Arc::new(Barrier::new(16));
    let threads: Vec<_> = keys
        .iter()
        .map(|k| {
            let binding = eab_jws(&eab, &k.jwk(), &url, &EabKnobs::default());
            let header = fx.c.header_for(k, None, &url);
            let body = signed(
                &header,
                json!({"externalAccountBinding": binding})
                    .to_string()
                    .as_bytes(),
                k,
            );
            let (c, barrier, url) = (fx.c.clone(), barrier.clone(), url.clone());
            std::thread::spawn(move || {
                barrier.wait();
                c.post_body(&url, &body)
            })
        })
        .collect();
    let answers: Vec<Response> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let won: Vec<usize> = (0..16).filter(|i| answers[*i].status == 201).collect();
    assert_eq!(
        won.len(),
        1,
        "A2: {} accounts from one credential",
        won.len()
    );
    for (i, r) in answers.iter().enumerate() {
        if i != won[0] {
            fx.refused("A2 concurrent reuse", r, 403, "unauthorized", sigs);
            assert_eq!(fx.account_of_key(&keys[i]), None);
        }
    }
    assert!(fx.account_of_key(&keys[won[0]]).is_some());
    // Consumed: a 17th use fails too.
    let late = AccountKey::es256();
    let binding = eab_jws(&eab, &late.jwk(), &url, &EabKnobs::default());
    let r =
        fx.c.new_account_raw(&late, &json!({"externalAccountBinding": binding}));
    fx.refused("A2 after the race", &r, 403, "unauthorized", sigs);
}

/// ACME-O1, O3, O4, O11, O12, A8: orders and finalize.
#[test]
fn acme_orders_and_finalize() {
    let env = Env::with_ca();
    // A policy with a small order rate limit, for agents under /limited/.
    policy_like_default(
        &env,
        "limited",
        &[(
            "acme_orders_per_account_per_hour = 300",
            "acme_orders_per_account_per_hour = 3",
        )],
    );
    let fx = Fx::start(&env);
    let names = [
        "a.example.org",
        "b.example.org",
        "c.example.org",
        "d.example.org",
    ];
    let agent = fx.agent("orders", &names);
    let other_agent = fx.agent("other", &[]);
    let account = fx.account(&agent);
    let sigs = fx.signatures();
    let orders_before = fx.orders(&account).len();

    // ACME-O1: N identifiers, one refused, at every position.
    for n in 1..=5 {
        for bad_at in 0..n {
            let mut ids: Vec<Value> = (0..n)
                .map(|i| ident("dns", &format!("n{i}.example.org")))
                .collect();
            ids[bad_at] = ident("uri", &other_agent);
            let r = fx.c.new_order(&account, &Value::Array(ids));
            let what = format!("O1 N={n} bad at {bad_at}");
            fx.refused(&what, &r, 400, "rejectedIdentifier", sigs);
            let subs = r.json()["subproblems"].clone();
            assert_eq!(
                subs.as_array().map(Vec::len),
                Some(1),
                "{what}: {}",
                r.text()
            );
            assert_eq!(
                subs[0]["identifier"]["value"],
                other_agent.as_str(),
                "{what}"
            );
            assert_eq!(
                subs[0]["type"],
                "urn:ietf:params:acme:error:rejectedIdentifier"
            );
        }
    }

    // ACME-O11: unsupported and malformed identifiers, with subproblems.
    let long_name = format!("{}.example.org", "a".repeat(300));
    for (what, ids, kind) in [
        (
            "email type",
            json!([ident("email", "a@example.org")]),
            "unsupportedIdentifier",
        ),
        (
            "wildcard",
            json!([ident("dns", "*.example.org")]),
            "rejectedIdentifier",
        ),
        (
            "unicode",
            json!([ident("dns", "bücher.example.org")]),
            "rejectedIdentifier",
        ),
        (
            "oversized",
            json!([ident("dns", &long_name)]),
            "rejectedIdentifier",
        ),
        (
            "trailing dot",
            json!([ident("dns", "a.example.org.")]),
            "rejectedIdentifier",
        ),
        (
            "numeric tld",
            json!([ident("dns", "1.2.3.4")]),
            "rejectedIdentifier",
        ),
        (
            "uri wildcard",
            json!([ident("uri", "spiffe://example.org/agent/*")]),
            "rejectedIdentifier",
        ),
        (
            "uri of another agent",
            json!([ident("uri", &other_agent)]),
            "rejectedIdentifier",
        ),
        (
            "ip decimal",
            json!([ident("ip", "2130706433")]),
            "malformed",
        ),
        ("ip octal", json!([ident("ip", "0177.0.0.1")]), "malformed"),
        ("ip hex", json!([ident("ip", "0x7f.0.0.1")]), "malformed"),
        (
            "ip uppercase v6",
            json!([ident("ip", "::FFFF:7f00:1")]),
            "malformed",
        ),
        ("no value", json!([{"type": "dns"}]), "malformed"),
        ("not an object", json!(["a.example.org"]), "malformed"),
        ("empty", json!([]), "malformed"),
        ("not an array", json!("a.example.org"), "malformed"),
        (
            "mixed",
            json!([
                ident("email", "x@y.org"),
                ident("dns", "*.x.org"),
                ident("dns", "ok.example.org")
            ]),
            "rejectedIdentifier",
        ),
    ] {
        let r = fx.c.new_order(&account, &ids);
        fx.refused(&format!("O11 {what}"), &r, 400, kind, sigs);
        if what == "mixed" {
            assert_eq!(
                r.json()["subproblems"].as_array().map(Vec::len),
                Some(2),
                "{}",
                r.text()
            );
        }
    }
    // notBefore / notAfter are not the client's to choose.
    let r = fx.c.post_as(
        &account,
        &fx.c.url("new-order"),
        &json!({"identifiers": [ident("uri", &agent)], "notAfter": "2099-01-01T00:00:00Z"}),
    );
    fx.refused("O11 notAfter", &r, 400, "malformed", sigs);

    // ACME-O12: 101 identifiers.
    let many: Vec<Value> = (0..101)
        .map(|i| ident("dns", &format!("h{i}.example.org")))
        .collect();
    let r = fx.c.new_order(&account, &Value::Array(many));
    fx.refused("O12 101 identifiers", &r, 400, "malformed", sigs);
    assert_eq!(
        fx.orders(&account).len(),
        orders_before,
        "O1/O11/O12 created orders"
    );

    // ACME-O3: the CSR must name exactly the order's identifiers; the order stays ready.
    let (order_url, order) =
        fx.c.order(&account, &dns_ids(&["a.example.org", "b.example.org"]));
    assert_eq!(order["status"], "ready", "pre-authorized names: {order}");
    let ck = AccountKey::es256();
    let ip: IpAddr = "192.0.2.1".parse().unwrap();
    let bad_csrs: Vec<(&str, Vec<u8>)> = vec![
        (
            "extra SAN",
            csr(
                &ck,
                &["a.example.org", "b.example.org", "c.example.org"],
                &[],
                &[],
            ),
        ),
        ("missing SAN", csr(&ck, &["a.example.org"], &[], &[])),
        (
            "extra IP",
            csr(&ck, &["a.example.org", "b.example.org"], &[ip], &[]),
        ),
        (
            "another URI",
            csr(
                &ck,
                &["a.example.org", "b.example.org"],
                &[],
                &[&other_agent],
            ),
        ),
        (
            "CN not among the SANs",
            csr_with_cn(
                &ck,
                &["a.example.org", "b.example.org"],
                &[],
                &[],
                Some("c.example.org"),
            ),
        ),
        ("not a CSR", b"not a CSR".to_vec()),
        (
            "A8 account key",
            csr(&account.key, &["a.example.org", "b.example.org"], &[], &[]),
        ),
    ];
    let another_account = fx.account(&other_agent);
    let sigs = fx.signatures();
    let mut bad_csrs = bad_csrs;
    bad_csrs.push((
        "A8 another account's key",
        csr(
            &another_account.key,
            &["a.example.org", "b.example.org"],
            &[],
            &[],
        ),
    ));
    for (what, der) in &bad_csrs {
        let r = fx.c.finalize(&account, &order, der);
        fx.refused(&format!("O3 {what}"), &r, 400, "badCSR", sigs);
        let now = fx.c.get_as(&account, &order_url).json();
        assert_eq!(now["status"], "ready", "O3 {what}: {now}");
    }
    let r =
        fx.c.post_as(&account, order["finalize"].as_str().unwrap(), &json!({}));
    fx.refused("O3 no csr", &r, 400, "malformed", sigs);
    let r = fx.c.post_as(
        &account,
        order["finalize"].as_str().unwrap(),
        &json!({"csr": format!("{}==", b64(csr(&ck, &["a.example.org", "b.example.org"], &[], &[])))}),
    );
    fx.refused("O3 padded csr", &r, 400, "badCSR", sigs);

    // ACME-O4: finalize before ready.
    let (_, pending) = fx.c.order(&account, &dns_ids(&["pending.example.net"]));
    assert_eq!(pending["status"], "pending");
    let r = fx.c.finalize(
        &account,
        &pending,
        &csr(&ck, &["pending.example.net"], &[], &[]),
    );
    fx.refused("O4 finalize while pending", &r, 403, "orderNotReady", sigs);

    // ACME-O4: 16 concurrent finalizes of one order: one certificate, one URL.
    let issued = fx.issued();
    let good = Arc::new(csr(&ck, &["a.example.org", "b.example.org"], &[], &[]));
    let account = Arc::new(account);
    let barrier = Arc::new(Barrier::new(16));
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let url = order["finalize"].as_str().unwrap().to_owned();
            let header = fx.c.header_for(&account.key, Some(&account.url), &url);
            let body = signed(
                &header,
                json!({"csr": b64(good.as_slice())}).to_string().as_bytes(),
                &account.key,
            );
            let (c, barrier) = (fx.c.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                c.post_body(&url, &body)
            })
        })
        .collect();
    let answers: Vec<Response> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let mut urls = std::collections::BTreeSet::new();
    for r in &answers {
        assert_eq!(r.status, 200, "O4 concurrent finalize: {}", r.text());
        assert!(r.nonce().is_some());
        if let Some(u) = r.json()["certificate"].as_str() {
            urls.insert(u.to_owned());
        }
    }
    let last =
        fx.c.poll_order(&account, &order_url, Duration::from_secs(10));
    assert_eq!(last["status"], "valid", "{last}");
    urls.insert(last["certificate"].as_str().unwrap().to_owned());
    assert_eq!(urls.len(), 1, "O4: several certificate URLs: {urls:?}");
    assert_eq!(fx.issued(), issued + 1.0, "O4: not exactly one certificate");
    // A retry after the fact gets the same certificate.
    let r = fx.c.finalize(&account, &order, &good);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["certificate"], last["certificate"]);
    assert_eq!(fx.issued(), issued + 1.0);
    let sigs = fx.signatures();

    // ACME-O12: the order rate limit, 429 with Retry-After.
    let limited = fx.srv.env.add_agent("/limited/x", &[]);
    let limited_account = fx.account(&limited);
    for _ in 0..3 {
        let r =
            fx.c.new_order(&limited_account, &json!([ident("uri", &limited)]));
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let r =
        fx.c.new_order(&limited_account, &json!([ident("uri", &limited)]));
    fx.refused("O12 order rate limit", &r, 429, "rateLimited", sigs);
    let after: u64 = r
        .header("retry-after")
        .expect("429 without Retry-After")
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&after), "Retry-After {after}");
}

/// ACME-O3, the case variant: DNS names compare case-insensitively (RFC 4343), so a CSR that
/// spells an ordered name in another case is accepted, and the certificate carries the order's
/// lowercase form — never the CSR's spelling (docs/acme.md, divergences).
/// RFC 8555 §7.5.2 and §7.1.6: an authorization the client gives up fails its order, ready
/// or pending; finalize then refuses, and another order for the name starts afresh.
#[test]
fn acme_a_deactivated_authorization_fails_its_order() {
    let env = Env::with_ca();
    let fx = Fx::start(&env);
    let names = ["r.example.org", "s.example.org"];
    let agent = fx.agent("relinquish", &names);
    let account = fx.account(&agent);
    let ck = AccountKey::es256();
    let good = csr(&ck, &names, &[], &[]);

    let (order_url, order) = fx.c.order(&account, &dns_ids(&names));
    assert_eq!(order["status"], "ready", "pre-authorized names: {order}");
    let authz_url = order["authorizations"][1].as_str().unwrap();
    let r =
        fx.c.post_as(&account, authz_url, &json!({"status": "deactivated"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "deactivated");
    let now = fx.c.get_as(&account, &order_url).json();
    assert_eq!(now["status"], "invalid", "{now}");
    assert!(
        now["error"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("deactivated")),
        "{now}"
    );
    let sigs = fx.signatures();
    let r = fx.c.finalize(&account, &order, &good);
    fx.refused(
        "finalize after deactivation",
        &r,
        403,
        "orderNotReady",
        sigs,
    );
    // Given up once, refused again: only a pending or valid authorization is deactivated.
    let r =
        fx.c.post_as(&account, authz_url, &json!({"status": "deactivated"}));
    fx.refused("deactivated twice", &r, 400, "malformed", sigs);

    // A pending order fails the same way.
    let (pending_url, pending) = fx.c.order(&account, &dns_ids(&["pending.example.net"]));
    assert_eq!(pending["status"], "pending");
    let r = fx.c.post_as(
        &account,
        pending["authorizations"][0].as_str().unwrap(),
        &json!({"status": "deactivated"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        fx.c.get_as(&account, &pending_url).json()["status"],
        "invalid"
    );

    // A new order for the same names is ready again, and issues.
    let (_, again) = fx.c.order(&account, &dns_ids(&names));
    assert_eq!(again["status"], "ready", "{again}");
    let r = fx.c.finalize(&account, &again, &good);
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A name its policy pre-authorized when the order was made is checked against the policy
/// again at finalize: a policy changed since (loaded by a restart) decides, where a name a
/// challenge proved would not be asked about again.
#[test]
fn acme_a_pre_authorized_name_the_policy_no_longer_allows_is_refused_at_finalize() {
    let env = Env::with_ca();
    let allowing = ("dns = []", "dns = [\"*.pre.example.org\"]");
    policy_like_default(&env, "pre", &[allowing]);
    let agent = env.add_agent("/pre/bot", &[]);
    let (key, account_path, order_path) = {
        let fx = Fx::start(&env);
        let account = fx.account(&agent);
        let (order_url, order) = fx.c.order(&account, &dns_ids(&["a.pre.example.org"]));
        assert_eq!(
            order["status"], "ready",
            "pre-authorized by the policy: {order}"
        );
        let path = |url: &str| url.split_once("/acme/").unwrap().1.to_owned();
        let kept = (account.key, path(&account.url), path(&order_url));
        // A clean stop: the order is kept (orders are not flushed one by one).
        let AcmeServer { server, .. } = fx.srv;
        server.terminate();
        kept
    };
    // The policy no longer lists the name; the server is restarted to load it.
    let policy = env.data_file("policies/pre.toml");
    let text = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(&policy, text.replace(allowing.1, allowing.0)).unwrap();
    let fx = Fx::start(&env);
    let account = Account {
        key,
        url: fx.c.url(&account_path),
    };
    let order = fx.c.get_as(&account, &fx.c.url(&order_path)).json();
    assert_eq!(order["status"], "ready", "{order}");
    let sigs = fx.signatures();
    let r = fx.c.finalize(
        &account,
        &order,
        &csr(&AccountKey::es256(), &["a.pre.example.org"], &[], &[]),
    );
    fx.refused(
        "finalize of a name no longer pre-authorized",
        &r,
        400,
        "rejectedIdentifier",
        sigs,
    );
    assert!(r.text().contains("a.pre.example.org"), "{}", r.text());
}

#[test]
fn acme_o3_csr_name_case_variant_is_accepted_and_canonicalized() {
    let env = Env::with_ca();
    let fx = Fx::start(&env);
    let agent = fx.agent("case", &["a.example.org"]);
    let account = fx.account(&agent);
    let (_, order) = fx.c.order(&account, &dns_ids(&["a.example.org"]));
    let ck = AccountKey::es256();
    let r =
        fx.c.finalize(&account, &order, &csr(&ck, &["A.Example.org"], &[], &[]));
    assert_eq!(r.status, 200, "{}", r.text());
    let done = r.json();
    assert_eq!(done["status"], "valid", "{done}");
    let cert =
        fx.c.download(&account, done["certificate"].as_str().unwrap());
    let pem = String::from_utf8_lossy(&cert.body).into_owned();
    let leaf = super::support::pem_certs(&pem).remove(0);
    let (_, parsed) = x509_parser::prelude::X509Certificate::from_der(&leaf).unwrap();
    let san = parsed.subject_alternative_name().unwrap().unwrap();
    let dns: Vec<String> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::prelude::GeneralName::DNSName(d) => Some((*d).to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(dns, ["a.example.org"]);
}

/// ACME-O2, for certificates: only the account whose order produced a certificate downloads
/// it, whether the node answers from the certificates it just issued (at once) or from the
/// store (after a restart).
#[test]
fn acme_o2_a_certificate_is_downloaded_only_by_its_account() {
    let env = Env::with_ca();
    let fx = Fx::start(&env);
    let agent = fx.agent("owner", &[]);
    let owner = fx.account(&agent);
    let other = fx.account(&fx.agent("other", &[]));
    let (_, order) = fx.ready_order(&owner, &agent);
    let ck = AccountKey::es256();
    let r =
        fx.c.finalize(&owner, &order, &csr(&ck, &[], &[], &[&agent]));
    assert_eq!(r.status, 200, "{}", r.text());
    let url = r.json()["certificate"].as_str().unwrap().to_owned();
    let sigs = fx.signatures();
    let r = fx.c.download(&other, &url);
    fx.refused(
        "O2 another account's certificate",
        &r,
        404,
        "malformed",
        sigs,
    );
    let issued = fx.c.download(&owner, &url);
    assert_eq!(issued.status, 200, "{}", issued.text());

    let Fx { srv, .. } = fx;
    let AcmeServer {
        server, options, ..
    } = srv;
    server.terminate();
    let fx = Fx::start_with(&env, options);
    // The restarted node listens on another port: the same accounts and certificate, there.
    let here = |url: &str| {
        fx.c.url(&url[url.find("/acme/").unwrap() + "/acme/".len()..])
    };
    let url = here(&url);
    let owner = Account {
        url: here(&owner.url),
        ..owner
    };
    let other = Account {
        url: here(&other.url),
        ..other
    };
    let r = fx.c.download(&other, &url);
    fx.refused(
        "O2 another account's certificate, after a restart",
        &r,
        404,
        "malformed",
        fx.signatures(),
    );
    let again = fx.c.download(&owner, &url);
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.body, issued.body, "the store's answer differs");
}

/// What the loopback http-01 target answers for one path.
#[derive(Clone, Debug)]
enum Target {
    Body(String),
    Redirect(String),
    /// Headers, then one byte every 300 ms.
    Trickle,
}

/// A loopback http-01 target on 127.0.0.1 that serves what the test sets per path.
struct Http01 {
    routes: Arc<Mutex<HashMap<String, Target>>>,
    hits: Arc<Mutex<HashMap<String, u32>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Http01 {
    fn start(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let routes: Arc<Mutex<HashMap<String, Target>>> = Arc::default();
        let hits: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (r, h, s) = (routes.clone(), hits.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (r, h, s) = (r.clone(), h.clone(), s.clone());
                        std::thread::spawn(move || serve_one(stream, &r, &h, &s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self {
            routes,
            hits,
            stop,
            thread: Some(thread),
        }
    }

    fn set(&self, path: &str, target: Target) {
        self.routes.lock().unwrap().insert(path.to_owned(), target);
    }

    fn hits(&self, path: &str) -> u32 {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

impl Drop for Http01 {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(
    mut stream: TcpStream,
    routes: &Mutex<HashMap<String, Target>>,
    hits: &Mutex<HashMap<String, u32>>,
    stop: &AtomicBool,
) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let path = text.split_whitespace().nth(1).unwrap_or("").to_owned();
    *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    let target = routes.lock().unwrap().get(&path).cloned();
    let _ = match target {
        Some(Target::Body(body)) => write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
        Some(Target::Redirect(to)) => write!(
            stream,
            "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        Some(Target::Trickle) => {
            let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n");
            // Bounded: at most 20 s, and not past the test's end.
            for _ in 0..66 {
                if stop.load(Ordering::Relaxed) || stream.write_all(b"x").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            Ok(())
        }
        None => write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    };
}

/// A pending order for `name` (resolving via the fake DNS to `addresses`): (order URL,
/// authz URL, http-01 challenge).
fn pending_http01(
    fx: &Fx<'_>,
    account: &Account,
    name: &str,
    addresses: Vec<IpAddr>,
) -> (String, String, Value) {
    fx.srv.dns.set_a(name, addresses);
    let (order_url, order) = fx.c.order(account, &dns_ids(&[name]));
    assert_eq!(order["status"], "pending", "{order}");
    let authz_url = order["authorizations"][0].as_str().unwrap().to_owned();
    let authz = fx.c.get_as(account, &authz_url).json();
    let challenge = authz["challenges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "http-01")
        .unwrap()
        .clone();
    (order_url, authz_url, challenge)
}

fn challenge_path(challenge: &Value) -> String {
    format!(
        "/.well-known/acme-challenge/{}",
        challenge["token"].as_str().unwrap()
    )
}

/// The http-01 challenge of a finished authorization.
fn http01_of(authz: &Value) -> Value {
    authz["challenges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "http-01")
        .unwrap()
        .clone()
}

/// ACME-O2, O5, O6 (names), O7, O8, O9, O10: challenges against a hostile target.
#[test]
fn acme_challenges_against_hostile_targets() {
    let env = Env::with_ca();
    // Validation may reach 127.0.0.1 only: 127.0.0.3 stands for a forbidden address.
    let options = AcmeOptions {
        allow_addresses: vec!["127.0.0.1/32".to_owned()],
        ..AcmeOptions::default()
    };
    let fx = Fx::start_with(&env, options);
    let target = Http01::start(fx.srv.http01_port());
    let port = fx.srv.http01_port();
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    let agent_a = fx.agent("chal-a", &[]);
    let agent_b = fx.agent("chal-b", &[]);
    let a = fx.account(&agent_a);
    let b = fx.account(&agent_b);
    let sigs = fx.signatures();
    let secret = "SECRET-7d1f0c-do-not-echo";

    // Each case: a name, what DNS says, what the target serves, who responds.
    struct Case {
        what: &'static str,
        name: &'static str,
        serve: Option<Target>,
        authz: String,
        challenge: Value,
    }
    let mut cases = Vec::new();
    let mut add = |what: &'static str, name: &'static str, addresses: Vec<IpAddr>| {
        let (_, authz, challenge) = pending_http01(&fx, &a, name, addresses);
        cases.push(Case {
            what,
            name,
            serve: None,
            authz,
            challenge,
        });
    };
    add("O5 B's key authorization", "o5.example.org", vec![loopback]);
    add(
        "O5 A's key authorization of another token",
        "o5r.example.org",
        vec![loopback],
    );
    add("O8 secret body", "o8.example.org", vec![loopback]);
    add(
        "O7 redirect to a refused address",
        "o7a.example.org",
        vec![loopback],
    );
    add("O7 redirect to metadata", "o7b.example.org", vec![loopback]);
    add(
        "O7 redirect to another port",
        "o7c.example.org",
        vec![loopback],
    );
    add("O7 redirect to https", "o7d.example.org", vec![loopback]);
    add("O7 redirect loop", "o7e.example.org", vec![loopback]);
    add("O7 eleven hops", "o7f.example.org", vec![loopback]);
    add(
        "O6 name to 127.0.0.3",
        "o6a.example.org",
        vec!["127.0.0.3".parse().unwrap()],
    );
    add(
        "O6 name to metadata",
        "o6b.example.org",
        vec!["169.254.169.254".parse().unwrap()],
    );
    add(
        "O6 name to 0.0.0.0",
        "o6c.example.org",
        vec!["0.0.0.0".parse().unwrap()],
    );
    add(
        "O6 name to ::1",
        "o6d.example.org",
        vec!["::1".parse().unwrap()],
    );
    // The IPv4-mapped form of a refused address (the mapped form of the allowed 127.0.0.1
    // is 127.0.0.1, and allowed).
    add(
        "O6 name to ::ffff:127.0.0.3",
        "o6e.example.org",
        vec!["::ffff:127.0.0.3".parse().unwrap()],
    );
    add("O10 trickling target", "o10.example.org", vec![loopback]);
    // A token of A's own, from another challenge.
    let other_token = cases[0].challenge["token"].as_str().unwrap().to_owned();
    for case in &mut cases {
        let path = challenge_path(&case.challenge);
        let token = case.challenge["token"].as_str().unwrap();
        let serve = match case.name {
            "o5.example.org" => Target::Body(key_authorization(token, &b.key)),
            "o5r.example.org" => Target::Body(key_authorization(&other_token, &a.key)),
            "o8.example.org" => Target::Body(format!("{secret} {}", "x".repeat(200))),
            "o7a.example.org" => Target::Redirect(format!("http://127.0.0.3:{port}{path}")),
            "o7b.example.org" => {
                Target::Redirect("http://169.254.169.254/latest/meta-data/".to_owned())
            }
            "o7c.example.org" => Target::Redirect(format!("http://127.0.0.1:{}{path}", port + 1)),
            "o7d.example.org" => Target::Redirect(format!("https://o7d.example.org{path}")),
            "o7e.example.org" => Target::Redirect(path.clone()),
            // Eleven redirects in all (to /hop/0, then ten more), one more than the validator
            // follows: the body at the end is right, so only the count refuses it.
            "o7f.example.org" => {
                for hop in 0..10 {
                    target.set(
                        &format!("/hop/{hop}"),
                        Target::Redirect(format!("/hop/{}", hop + 1)),
                    );
                }
                target.set("/hop/10", Target::Body(key_authorization(token, &a.key)));
                Target::Redirect("/hop/0".to_owned())
            }
            "o10.example.org" => Target::Trickle,
            // Refused addresses: the correct answer, were anything to connect.
            _ => Target::Body(key_authorization(token, &a.key)),
        };
        target.set(&path, serve.clone());
        case.serve = Some(serve);
    }
    // Start every validation, then wait for all of them.
    let started = Instant::now();
    for case in &cases {
        let r =
            fx.c.post_as(&a, case.challenge["url"].as_str().unwrap(), &json!({}));
        assert_eq!(r.status, 200, "{}: {}", case.what, r.text());
        assert!(r.nonce().is_some());
    }
    for case in &cases {
        let authz = fx.c.poll_authz(&a, &case.authz, Duration::from_secs(25));
        let challenge = http01_of(&authz);
        assert_eq!(authz["status"], "invalid", "{}: {authz}", case.what);
        assert_eq!(challenge["status"], "invalid", "{}: {challenge}", case.what);
        let error = &challenge["error"];
        let kind = error["type"].as_str().unwrap_or("");
        assert!(
            kind.starts_with("urn:ietf:params:acme:error:"),
            "{}: {error}",
            case.what
        );
        let text = authz.to_string();
        assert!(!text.contains(secret), "O8: the body was echoed: {text}");
        match case.name {
            "o5.example.org" | "o5r.example.org" | "o8.example.org" => assert_eq!(
                kind, "urn:ietf:params:acme:error:incorrectResponse",
                "{}: {error}",
                case.what
            ),
            n if n.starts_with("o6") || n == "o10.example.org" => assert_eq!(
                kind, "urn:ietf:params:acme:error:connection",
                "{}: {error}",
                case.what
            ),
            _ => {}
        }
        if case.name.starts_with("o6") {
            assert_eq!(
                target.hits(&challenge_path(&case.challenge)),
                0,
                "{}: the target was reached",
                case.what
            );
        }
    }
    assert!(
        target.hits("/hop/10") == 0,
        "O7: more than 10 redirects were followed"
    );
    // O10: the trickle is cut off by the validation timeout, not read to its end.
    assert!(
        started.elapsed() < Duration::from_secs(18),
        "O10: validations took {:?}",
        started.elapsed()
    );
    assert_eq!(fx.signatures(), sigs);

    // ACME-O9: DNS rebinding. The name answers 127.0.0.1, then 127.0.0.3: the validation
    // resolves once and connects to what it checked.
    let name = "o9.example.org";
    let (order_url, authz_url, challenge) = pending_http01(&fx, &a, name, vec![loopback]);
    fx.srv
        .dns
        .set_a_alternating(name, vec![loopback], vec!["127.0.0.3".parse().unwrap()]);
    let token = challenge["token"].as_str().unwrap();
    target.set(
        &challenge_path(&challenge),
        Target::Body(key_authorization(token, &a.key)),
    );
    let queries = fx.srv.dns.queries(name, "A");
    let r =
        fx.c.post_as(&a, challenge["url"].as_str().unwrap(), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    let authz = fx.c.poll_authz(&a, &authz_url, Duration::from_secs(15));
    assert_eq!(authz["status"], "valid", "O9: {authz}");
    let record = &http01_of(&authz)["validationRecord"][0];
    assert_eq!(record["addressUsed"], "127.0.0.1", "O9: {record}");
    assert_eq!(
        fx.srv.dns.queries(name, "A") - queries,
        1,
        "O9: resolved more than once"
    );
    let order = fx.c.poll_order(&a, &order_url, Duration::from_secs(5));
    assert_eq!(order["status"], "ready", "{order}");

    // ACME-O2: B's valid authorization is neither visible to A nor reused for A.
    let name = "o2.example.org";
    let (_, b_authz, challenge) = pending_http01(&fx, &b, name, vec![loopback]);
    let token = challenge["token"].as_str().unwrap();
    target.set(
        &challenge_path(&challenge),
        Target::Body(key_authorization(token, &b.key)),
    );
    fx.c.post_as(&b, challenge["url"].as_str().unwrap(), &json!({}));
    let done = fx.c.poll_authz(&b, &b_authz, Duration::from_secs(15));
    assert_eq!(done["status"], "valid", "{done}");
    let r = fx.c.get_as(&a, &b_authz);
    fx.refused("O2 another account's authz", &r, 404, "malformed", sigs);
    let r =
        fx.c.post_as(&a, challenge["url"].as_str().unwrap(), &json!({}));
    fx.refused("O2 another account's challenge", &r, 404, "malformed", sigs);
    let (_, order) = fx.c.order(&a, &dns_ids(&[name]));
    assert_eq!(
        order["status"], "pending",
        "O2: A rode on B's authorization: {order}"
    );
    assert_ne!(order["authorizations"][0], b_authz.as_str());
}

/// ACME-O6: IP identifiers validation may not reach are refused at newOrder, when no
/// `allow_addresses` lets validation reach private ranges.
#[test]
fn acme_o6_internal_ip_identifiers_are_refused_at_new_order() {
    let env = Env::with_ca();
    let options = AcmeOptions {
        allow_addresses: Vec::new(),
        ..AcmeOptions::default()
    };
    let fx = Fx::start_with(&env, options);
    let agent = fx.agent("ssrf", &[]);
    let account = fx.account(&agent);
    let sigs = fx.signatures();
    for ip in [
        "127.0.0.1",
        "127.1.2.3",
        "169.254.169.254",
        "::1",
        "::ffff:127.0.0.1",
        "0.0.0.0",
        "::",
        "10.0.0.1",
        "192.168.1.1",
        "fc00::1",
        "fe80::1",
    ] {
        let r = fx.c.new_order(&account, &json!([ident("ip", ip)]));
        fx.refused(&format!("O6 ip {ip}"), &r, 400, "rejectedIdentifier", sigs);
        assert_eq!(r.json()["subproblems"][0]["identifier"]["value"], ip);
    }
    // Among allowed identifiers, the one refused address is named.
    let r = fx.c.new_order(
        &account,
        &json!([ident("uri", &agent), ident("ip", "169.254.169.254")]),
    );
    fx.refused("O6 mixed", &r, 400, "rejectedIdentifier", sigs);
    assert_eq!(r.json()["subproblems"].as_array().map(Vec::len), Some(1));
    assert!(fx.orders(&account).is_empty(), "O6: an order was created");
}

/// The RFC 9773 certID of a leaf: base64url(AKI keyIdentifier) "." base64url(serial).
fn cert_id(leaf: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(leaf).unwrap();
    let aki = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
        .unwrap();
    (aki, cert.raw_serial().to_vec())
}

fn id_text(aki: &[u8], serial: &[u8]) -> String {
    format!("{}.{}", b64(aki), b64(serial))
}

/// ARI-1, ARI-2: renewal information and `replaces`.
#[test]
fn acme_ari_renewal_info_and_replaces() {
    let env = Env::with_ca();
    let fx = Fx::start(&env);
    let agent = fx.agent("ari", &["ari.example.org"]);
    let other_agent = fx.agent("ari-other", &[]);
    let account = fx.account(&agent);
    let other = fx.account(&other_agent);
    let (leaf, _) = fx.issue(&account, &agent);
    let (other_leaf, _) = fx.issue(&other, &other_agent);
    let (aki, serial) = cert_id(&leaf);
    let known = id_text(&aki, &serial);
    let sigs = fx.signatures();
    let get = |id: &str| {
        fx.c.request("GET", &format!("/acme/renewal-info/{id}"), &[], &[])
    };

    // ARI-1: malformed and unknown certIDs.
    let mut padded_serial = vec![0u8];
    padded_serial.extend_from_slice(&serial);
    let mut other_aki = aki.clone();
    other_aki[0] ^= 0xff;
    let mut unknown_serial = serial.clone();
    unknown_serial[5] ^= 0x55;
    for (what, id, status) in [
        ("no dot", format!("{}{}", b64(&aki), b64(&serial)), 400),
        ("bad base64", format!("{}.{}", b64(&aki), "@@@"), 400),
        (
            "padded base64",
            format!("{}=.{}", b64(&aki), b64(&serial)),
            400,
        ),
        (
            "standard base64 alphabet",
            format!("{}+.{}", b64(&aki), b64(&serial)),
            400,
        ),
        ("empty serial", format!("{}.", b64(&aki)), 400),
        ("three parts", format!("{known}.AA"), 400),
        ("superfluous leading 00", id_text(&aki, &padded_serial), 400),
        ("negative serial", id_text(&aki, &[0x80, 1, 2]), 400),
        ("another CA's AKI", id_text(&other_aki, &serial), 404),
        ("unknown serial", id_text(&aki, &unknown_serial), 404),
        ("short serial", id_text(&aki, &[1, 2, 3]), 404),
    ] {
        let r = get(&id);
        let kind = "malformed";
        fx.refused(&format!("ARI-1 {what}"), &r, status, kind, sigs);
    }
    // A known certificate: a window inside its validity, with Retry-After.
    let r = get(&known);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.nonce().is_some());
    let after: u64 = r
        .header("retry-after")
        .expect("no Retry-After")
        .parse()
        .unwrap();
    assert!(after >= 60, "Retry-After {after}");
    let window = r.json()["suggestedWindow"].clone();
    let parse = |v: &Value| {
        time::OffsetDateTime::parse(
            v.as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    let (start, end) = (parse(&window["start"]), parse(&window["end"]));
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&leaf).unwrap();
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    assert!(
        not_before < start.unix_timestamp() && start < end && end.unix_timestamp() < not_after,
        "ARI-1 window {window} outside the validity {not_before}..{not_after}"
    );

    // ARI-2: replaces. Another agent's certificate.
    let (oaki, oserial) = cert_id(&other_leaf);
    let r = fx.c.post_as(
        &account,
        &fx.c.url("new-order"),
        &json!({"identifiers": [ident("uri", &agent)], "replaces": id_text(&oaki, &oserial)}),
    );
    fx.refused(
        "ARI-2 another agent's certificate",
        &r,
        403,
        "unauthorized",
        sigs,
    );
    // No identifier in common (the certificate names only the agent).
    let r = fx.c.post_as(
        &account,
        &fx.c.url("new-order"),
        &json!({"identifiers": [ident("dns", "ari.example.org")], "replaces": known}),
    );
    fx.refused("ARI-2 no common identifier", &r, 400, "malformed", sigs);
    // Unknown, malformed.
    let r = fx.c.post_as(
        &account,
        &fx.c.url("new-order"),
        &json!({"identifiers": [ident("uri", &agent)], "replaces": id_text(&aki, &unknown_serial)}),
    );
    fx.refused("ARI-2 unknown certificate", &r, 404, "malformed", sigs);
    let r = fx.c.post_as(
        &account,
        &fx.c.url("new-order"),
        &json!({"identifiers": [ident("uri", &agent)], "replaces": "nonsense"}),
    );
    fx.refused("ARI-2 malformed certID", &r, 400, "malformed", sigs);

    // ARI-2: a replacing order whose authorization failed, which the client never read
    // again (lego and certbot stop at the authorization), no longer blocks a new one.
    let (second_leaf, _) = fx.issue(&account, &agent);
    let (aki2, serial2) = cert_id(&second_leaf);
    let second = id_text(&aki2, &serial2);
    fx.srv
        .dns
        .set_a("ari-fails.example.org", vec!["127.0.0.3".parse().unwrap()]);
    let r = fx.c.post_as(
        &account,
        &fx.c.url("new-order"),
        &json!({
            "identifiers": [ident("uri", &agent), ident("dns", "ari-fails.example.org")],
            "replaces": second,
        }),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let failing = r.json();
    let authz_url = failing["authorizations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().to_owned())
        .find(|u| fx.c.get_as(&account, u).json()["identifier"]["type"] == "dns")
        .unwrap();
    let challenge = http01_of(&fx.c.get_as(&account, &authz_url).json());
    let r =
        fx.c.post_as(&account, challenge["url"].as_str().unwrap(), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    let authz =
        fx.c.poll_authz(&account, &authz_url, Duration::from_secs(25));
    assert_eq!(authz["status"], "invalid", "{authz}");
    let r = fx.c.post_as(
        &account,
        &fx.c.url("new-order"),
        &json!({"identifiers": [ident("uri", &agent)], "replaces": second}),
    );
    assert_eq!(r.status, 201, "ARI-2 after a failed claimant: {}", r.text());
    let sigs = fx.signatures();

    // Two concurrent orders replacing one certificate: one 201, one 409.
    let account = Arc::new(account);
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let url = fx.c.url("new-order");
            let header = fx.c.header_for(&account.key, Some(&account.url), &url);
            let payload = json!({"identifiers": [ident("uri", &agent)], "replaces": known});
            let body = signed(&header, payload.to_string().as_bytes(), &account.key);
            let (c, barrier) = (fx.c.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                c.post_body(&url, &body)
            })
        })
        .collect();
    let answers: Vec<Response> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let mut statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [201, 409],
        "ARI-2 concurrent replaces: {answers:?}"
    );
    let winner = answers.iter().find(|r| r.status == 201).unwrap();
    let loser = answers.iter().find(|r| r.status == 409).unwrap();
    fx.refused(
        "ARI-2 concurrent replaces",
        loser,
        409,
        "alreadyReplaced",
        sigs,
    );
    // The winner completes; the certificate is then replaced for good.
    let order = winner.json();
    let ck = AccountKey::es256();
    let r =
        fx.c.finalize(&account, &order, &csr(&ck, &[], &[], &[&agent]));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "valid");
    let sigs = fx.signatures();
    let r = fx.c.post_as(
        &account,
        &fx.c.url("new-order"),
        &json!({"identifiers": [ident("uri", &agent)], "replaces": known}),
    );
    fx.refused("ARI-2 already replaced", &r, 409, "alreadyReplaced", sigs);

    // ARI-1: after revocation, the window is already open.
    let r = fx.c.post_as(
        &account,
        &fx.c.url("revoke-cert"),
        &json!({"certificate": b64(&leaf), "reason": 4}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get(&known);
    assert_eq!(r.status, 200, "{}", r.text());
    let window = r.json()["suggestedWindow"].clone();
    let now = time::OffsetDateTime::now_utc();
    assert!(
        parse(&window["start"]) <= now && parse(&window["start"]) < parse(&window["end"]),
        "ARI-1 revoked: window {window} is not open at {now}"
    );
}

/// ACME-O12, failed validations: the limit takes its unit before a validation starts, so
/// challenges started together cannot all pass a limit that failures would fill; a validation
/// that succeeds gives its unit back, and a refused start changes nothing.
#[test]
fn acme_o12_failed_validation_limits_hold_for_challenges_started_together() {
    let env = Env::with_ca();
    policy_like_default(
        &env,
        "failing",
        &[(
            "acme_failed_validations_per_account_per_hour = 30",
            "acme_failed_validations_per_account_per_hour = 2",
        )],
    );
    let fx = Fx::start(&env);
    let target = Http01::start(fx.srv.http01_port());
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    let agent = fx.srv.env.add_agent("/failing/x", &[]);
    let account = fx.account(&agent);
    let sigs = fx.signatures();

    // A validation that succeeds first: it takes a unit and gives it back.
    let (_, ok_authz, ok) = pending_http01(&fx, &account, "ok.example.org", vec![loopback]);
    let token = ok["token"].as_str().unwrap();
    target.set(
        &challenge_path(&ok),
        Target::Body(key_authorization(token, &account.key)),
    );
    let r =
        fx.c.post_as(&account, ok["url"].as_str().unwrap(), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    let authz =
        fx.c.poll_authz(&account, &ok_authz, Duration::from_secs(20));
    assert_eq!(authz["status"], "valid", "{authz}");

    // Eight challenges nothing answers, started at once: two may start (the limit), the
    // others are refused with rateLimited and stay pending.
    let pending: Vec<(String, Value)> = (0..8)
        .map(|i| {
            let name = format!("f{i}.example.org");
            let (_, authz, challenge) = pending_http01(&fx, &account, &name, vec![loopback]);
            (authz, challenge)
        })
        .collect();
    let barrier = Barrier::new(pending.len());
    let answers: Vec<Response> = std::thread::scope(|s| {
        let threads: Vec<_> = pending
            .iter()
            .map(|(_, challenge)| {
                let (c, account, barrier) = (&fx.c, &account, &barrier);
                let url = challenge["url"].as_str().unwrap();
                s.spawn(move || {
                    barrier.wait();
                    c.post_as(account, url, &json!({}))
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let started: Vec<usize> = (0..answers.len())
        .filter(|&i| answers[i].status == 200)
        .collect();
    assert_eq!(
        started.len(),
        2,
        "{:?}",
        answers.iter().map(Response::text).collect::<Vec<_>>()
    );
    for (i, r) in answers.iter().enumerate() {
        if started.contains(&i) {
            continue;
        }
        assert_eq!(
            (r.status, r.problem().as_str()),
            (429, "rateLimited"),
            "{}",
            r.text()
        );
        assert!(r.header("retry-after").is_some(), "{}", r.text());
        assert!(r.nonce().is_some());
        let authz = fx.c.get_as(&account, &pending[i].0).json();
        assert_eq!(
            authz["status"], "pending",
            "a refused start moved it: {authz}"
        );
        assert_eq!(http01_of(&authz)["status"], "pending", "{authz}");
    }
    for &i in &started {
        let authz =
            fx.c.poll_authz(&account, &pending[i].0, Duration::from_secs(20));
        assert_eq!(authz["status"], "invalid", "{authz}");
    }
    // Both failures spent their units: the limit still refuses.
    let (authz, challenge) = &pending[(0..8).find(|i| !started.contains(i)).unwrap()];
    let r =
        fx.c.post_as(&account, challenge["url"].as_str().unwrap(), &json!({}));
    fx.refused("O12 failed validations", &r, 429, "rateLimited", sigs);
    let authz = fx.c.get_as(&account, authz).json();
    assert_eq!(authz["status"], "pending", "{authz}");
}

/// The names of a leaf: `dns:…`, `ip:…` and `uri:…`, in certificate order.
fn leaf_names(der: &[u8]) -> Vec<String> {
    use x509_parser::prelude::{GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::DNSName(d) => format!("dns:{d}"),
            GeneralName::URI(u) => format!("uri:{u}"),
            GeneralName::IPAddress(bytes) => {
                let ip: IpAddr = match bytes.len() {
                    4 => <[u8; 4]>::try_from(*bytes).unwrap().into(),
                    16 => <[u8; 16]>::try_from(*bytes).unwrap().into(),
                    n => panic!("an IP address of {n} bytes"),
                };
                format!("ip:{ip}")
            }
            other => panic!("an unexpected name {other:?}"),
        })
        .collect()
}

/// Identifiers of every kind (RFC 8555 `dns`, RFC 8738 `ip`) with accounts of every key
/// algorithm (ES256, ES384, RS256, EdDSA): names and addresses the agent's policy pre-authorizes
/// make an order ready at once; an address it does not is proven over http-01 (and gets no
/// dns-01 challenge, RFC 8738 §7). Each certificate carries the order's names and the agent's
/// URI, and is served with `Link: rel="up"` to the issuing CA.
#[test]
fn acme_identifiers_of_every_kind_with_every_account_key_algorithm() {
    let env = Env::with_ca();
    policy_like_default(
        &env,
        "fleet",
        &[
            ("dns = []", "dns = [\"*.fleet.test\"]"),
            ("ips = []", "ips = [\"192.0.2.0/24\", \"2001:db8::/32\"]"),
        ],
    );
    let fx = Fx::start(&env);
    let target = Http01::start(fx.srv.http01_port());
    let agent = fx.srv.env.add_agent("/fleet/node", &[]);
    let agent_uri = format!("uri:{agent}");

    for (n, alg) in KeyAlg::ALL.into_iter().enumerate() {
        let account = fx.c.new_account(AccountKey::generate(alg), &fx.eab(&agent));
        let name = format!("n{n}.fleet.test");
        let v4: IpAddr = format!("192.0.2.{}", n + 1).parse().unwrap();
        let v6: IpAddr = format!("2001:db8::{}", n + 1).parse().unwrap();
        let ids = json!([
            ident("dns", &name),
            ident("ip", &v4.to_string()),
            ident("ip", &v6.to_string()),
        ]);
        let key = AccountKey::es256();
        let (_, order, leaf) =
            fx.c.issue_ready(&account, &ids, &csr(&key, &[&name], &[v4, v6], &[]));
        assert_eq!(order["identifiers"], ids, "{alg:?}: {order}");
        let mut names = leaf_names(&leaf);
        names.sort();
        let mut wanted = vec![
            format!("dns:{name}"),
            format!("ip:{v4}"),
            format!("ip:{v6}"),
            agent_uri.clone(),
        ];
        wanted.sort();
        assert_eq!(names, wanted, "{alg:?}");
    }

    // An address outside the policy: pending, proven over http-01, then issued.
    let account =
        fx.c.new_account(AccountKey::generate(KeyAlg::EdDsa), &fx.eab(&agent));
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    let (order_url, order) = fx.c.order(&account, &json!([ident("ip", "127.0.0.1")]));
    assert_eq!(order["status"], "pending", "{order}");
    let authz_url = order["authorizations"][0].as_str().unwrap();
    let authz = fx.c.get_as(&account, authz_url).json();
    let kinds: Vec<&str> = authz["challenges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"http-01") && !kinds.contains(&"dns-01"),
        "{authz}"
    );
    let challenge = http01_of(&authz);
    let token = challenge["token"].as_str().unwrap();
    target.set(
        &challenge_path(&challenge),
        Target::Body(key_authorization(token, &account.key)),
    );
    let r =
        fx.c.post_as(&account, challenge["url"].as_str().unwrap(), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    let authz =
        fx.c.poll_authz(&account, authz_url, Duration::from_secs(20));
    assert_eq!(authz["status"], "valid", "{authz}");
    let order =
        fx.c.poll_order(&account, &order_url, Duration::from_secs(10));
    assert_eq!(order["status"], "ready", "{order}");
    let key = AccountKey::es256();
    let r =
        fx.c.finalize(&account, &order, &csr(&key, &[], &[loopback], &[]));
    assert_eq!(r.status, 200, "{}", r.text());
    let chain =
        fx.c.download(&account, r.json()["certificate"].as_str().unwrap());
    assert_eq!(chain.status, 200, "{}", chain.text());
    let up = chain.headers_named("link");
    assert!(
        up.iter().any(|l| l.contains("rel=\"up\"")),
        "no Link rel=\"up\": {up:?}"
    );
    let leaf = agentca_testkit::acme::pem_first(&chain.text());
    assert_eq!(
        leaf_names(&leaf),
        vec![agent_uri, format!("ip:{loopback}")],
        "the proven address"
    );
}

/// ACME-O13 and REV-6, revocation: a reason a subscriber may not give (cACompromise,
/// certificateHold, unused, aACompromise, a number RFC 5280 does not define) is
/// `badRevocationReason`; another agent's account may not revoke; neither changes anything or
/// reaches the CA key. The certificate's own key may revoke it, with no account (a
/// `jwk`-signed request); REV-7: for keyCompromise, and that key is refused from then on.
#[test]
fn acme_o13_revocation_needs_the_agents_account_or_the_certificates_key() {
    let env = Env::with_ca();
    let fx = Fx::start(&env);
    let owner = fx.agent("revoke-owner", &[]);
    let stranger = fx.agent("revoke-stranger", &[]);
    let account = fx.account(&owner);
    let other = fx.account(&stranger);
    let key = AccountKey::es256();
    let (_, _, leaf) = fx.c.issue_ready(
        &account,
        &json!([ident("uri", &owner)]),
        &csr(&key, &[], &[], &[&owner]),
    );
    let serial = super::support::serial_hex(&leaf);
    let revoke = fx.c.url("revoke-cert");
    let status = || fx.srv.env.json(&["cert", "show", &serial])["status"].clone();
    let sigs = fx.signatures();

    // REV-6 too: certificateHold (6) and aACompromise (10) are not a subscriber's to give.
    for reason in [2, 6, 7, 8, 10, 11] {
        let r = fx.c.post_as(
            &account,
            &revoke,
            &json!({"certificate": b64(&leaf), "reason": reason}),
        );
        fx.refused(
            &format!("O13 reason {reason}"),
            &r,
            400,
            "badRevocationReason",
            sigs,
        );
    }
    let r =
        fx.c.post_as(&other, &revoke, &json!({"certificate": b64(&leaf)}));
    fx.refused("O13 another agent's account", &r, 403, "unauthorized", sigs);
    // A key that is not the certificate's, signing for itself.
    let r = fx.c.post_signed(
        &AccountKey::es256(),
        None,
        &revoke,
        json!({"certificate": b64(&leaf)}).to_string().as_bytes(),
    );
    fx.refused("O13 a stranger's key", &r, 403, "unauthorized", sigs);
    assert_eq!(status(), "valid");

    // The certificate's key, without an account.
    let r = fx.c.post_signed(
        &key,
        None,
        &revoke,
        json!({"certificate": b64(&leaf), "reason": 1})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(status(), "revoked");
    let shown = fx.srv.env.json(&["cert", "show", &serial]);
    assert_eq!(shown["revocation_reason"], "keyCompromise", "{shown}");

    // REV-7: the compromised key is blocked: a new order finalized with it is refused.
    let (_, order) = fx.ready_order(&account, &owner);
    let sigs = fx.signatures();
    let r =
        fx.c.finalize(&account, &order, &csr(&key, &[], &[], &[&owner]));
    fx.refused(
        "REV-7 finalize with the compromised key",
        &r,
        400,
        "badCSR",
        sigs,
    );
}

/// dns-01 end to end (RFC 8555 §8.4): the TXT record at `_acme-challenge.NAME` holding the
/// base64url SHA-256 of the key authorization validates the name, through the server's
/// resolver; a record of another account's key authorization does not, and says why without
/// echoing what it found.
#[test]
fn acme_dns01_validates_a_name_through_its_txt_record() {
    use sha2::{Digest, Sha256};
    let env = Env::with_ca();
    let fx = Fx::start(&env);
    let agent = fx.agent("dns01", &[]);
    let account = fx.account(&agent);
    let stranger = fx.account(&fx.agent("dns01-other", &[]));
    let digest = |token: &str, key: &AccountKey| {
        b64(Sha256::digest(key_authorization(token, key).as_bytes()))
    };
    let dns01 = |name: &str| {
        let (order_url, order) = fx.c.order(&account, &dns_ids(&[name]));
        assert_eq!(order["status"], "pending", "{order}");
        let authz_url = order["authorizations"][0].as_str().unwrap().to_owned();
        let authz = fx.c.get_as(&account, &authz_url).json();
        let challenge = authz["challenges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "dns-01")
            .unwrap_or_else(|| panic!("no dns-01 challenge: {authz}"))
            .clone();
        (order_url, authz_url, challenge)
    };

    let (order_url, authz_url, challenge) = dns01("txt.example.org");
    let token = challenge["token"].as_str().unwrap();
    fx.srv.dns.set_txt(
        "_acme-challenge.txt.example.org",
        vec!["unrelated".to_owned(), digest(token, &account.key)],
    );
    let r =
        fx.c.post_as(&account, challenge["url"].as_str().unwrap(), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    let authz =
        fx.c.poll_authz(&account, &authz_url, Duration::from_secs(20));
    assert_eq!(authz["status"], "valid", "{authz}");
    let order =
        fx.c.poll_order(&account, &order_url, Duration::from_secs(10));
    assert_eq!(order["status"], "ready", "{order}");
    let key = AccountKey::es256();
    let r =
        fx.c.finalize(&account, &order, &csr(&key, &["txt.example.org"], &[], &[]));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "valid", "{}", r.text());

    // Another account's digest in the record: invalid.
    let (_, authz_url, challenge) = dns01("wrong.example.org");
    let token = challenge["token"].as_str().unwrap();
    let planted = digest(token, &stranger.key);
    fx.srv
        .dns
        .set_txt("_acme-challenge.wrong.example.org", vec![planted.clone()]);
    let r =
        fx.c.post_as(&account, challenge["url"].as_str().unwrap(), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    let authz =
        fx.c.poll_authz(&account, &authz_url, Duration::from_secs(20));
    assert_eq!(authz["status"], "invalid", "{authz}");
    let failed = authz["challenges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "dns-01")
        .unwrap()
        .clone();
    assert_eq!(failed["status"], "invalid", "{failed}");
    assert_eq!(
        failed["error"]["type"], "urn:ietf:params:acme:error:incorrectResponse",
        "{failed}"
    );
    assert!(
        !authz.to_string().contains(&planted),
        "the record was echoed: {authz}"
    );
}
