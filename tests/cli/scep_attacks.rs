//! Bad SCEP input against the real `agentca serve` (security-test-plan.md §1.5, SCEP-1 …
//! SCEP-8, and PARSE-1 for the CMS decoder; coverage-guided fuzzing of the same decoders is in
//! `fuzz/`). Business failures are signed CertReps with HTTP
//! 200 and the right failInfo; only input that is not a pkiMessage gets HTTP 400; nothing
//! reaches the CA's signer (`agentca_issuing_ca_signatures_total` stays put), and a
//! challenge is spent only by a request that is granted. Most requests come from the project's
//! own client; one test sends them from a client built on RustCrypto's `cms` instead.

use agentca_scep::client::{RequestBuilder, SignerKey, Tamper};
use agentca_scep::{ContentCipher, FailInfo, TransactionId};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::acme_clients::san_names;
use super::scep_clients::{ScepServer, fail_info, issued, pkcs_req, rsa_key};
use super::support::{Env, serial_hex};

/// A CSR for `key` naming `agent` as its URI, without a challenge unless given.
fn csr_naming(key: &SignerKey, agent: &str, challenge: Option<&str>) -> Vec<u8> {
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(agent.try_into().unwrap())];
    agentca_scep::client::csr_with_challenge(key, &params, challenge).unwrap()
}

/// A request tampered with `tamper`, from a fresh transient certificate.
fn tampered(server: &ScepServer<'_>, challenge: &str, tamper: Tamper) -> FailInfo {
    let key = rsa_key(0);
    let (parts, transient) = pkcs_req(server, &key, Some(challenge));
    let request = parts
        .builder(&key, &transient)
        .tamper(tamper)
        .build()
        .unwrap();
    fail_info(server.exchange(&request, &key))
}

#[test]
fn wrong_foreign_and_reused_challenges_are_refused_without_a_signature() {
    let env = Env::with_ca();
    let alice = env.add_agent("/agent/alice", &[]);
    let bob = env.add_agent("/agent/bob", &[]);
    let server = ScepServer::start(&env);
    let challenge = server.challenge(&alice);
    let key = rsa_key(0);
    let signatures = server.ca_signatures();

    // SCEP-2: an unknown challenge, an empty one, and none at all.
    for wrong in [Some("not-a-challenge"), Some(""), None] {
        let (parts, transient) = pkcs_req(&server, &key, wrong);
        let request = parts.builder(&key, &transient).build().unwrap();
        assert_eq!(
            fail_info(server.exchange(&request, &key)),
            FailInfo::BadRequest
        );
    }
    // A near miss: the right challenge with its last character changed.
    let mut near = challenge.clone();
    let last = near.pop().unwrap();
    near.push(if last == 'A' { 'B' } else { 'A' });
    let (parts, transient) = pkcs_req(&server, &key, Some(&near));
    let request = parts.builder(&key, &transient).build().unwrap();
    assert_eq!(
        fail_info(server.exchange(&request, &key)),
        FailInfo::BadRequest
    );

    // SCEP-2: alice's challenge with a CSR that asks for bob's identity is refused by policy
    // — and, refused before the challenge is spent, alice can still use it.
    let csr = csr_naming(&key, &bob, Some(&challenge));
    let transient = agentca_scep::client::transient_certificate(&key, "x").unwrap();
    let request = RequestBuilder::pkcs_req(&csr, &key, &transient, &server.ra)
        .build()
        .unwrap();
    assert_eq!(
        fail_info(server.exchange(&request, &key)),
        FailInfo::BadRequest
    );
    assert_eq!(server.ca_signatures(), signatures, "refusals never sign");

    let (parts, transient) = pkcs_req(&server, &key, Some(&challenge));
    let request = parts.builder(&key, &transient).build().unwrap();
    let leaf = issued(server.exchange(&request, &key));
    assert!(
        String::from_utf8_lossy(&leaf).contains(alice.as_str()),
        "the challenge's agent, not what the CSR might ask"
    );
    assert!(
        server.ca_signatures() > signatures,
        "the counter counts: an issuance signs"
    );
    let signatures = server.ca_signatures();

    // SCEP-2, reuse: the challenge is spent; a new transaction with it is refused.
    let (parts, transient) = pkcs_req(&server, &key, Some(&challenge));
    let request = parts.builder(&key, &transient).build().unwrap();
    assert_eq!(
        fail_info(server.exchange(&request, &key)),
        FailInfo::BadRequest
    );
    assert_eq!(server.ca_signatures(), signatures);
}

/// SCEP-2: a PKCSReq refused by the hourly certificate quota, which is taken only with the
/// issuance, leaves its challenge usable once the quota allows again.
#[test]
fn a_challenge_refused_by_the_certificate_quota_can_be_used_later() {
    let env = Env::with_ca();
    let path = env.data_file("policies/default.toml");
    let policy = std::fs::read_to_string(&path).unwrap();
    let limited = policy.replace(
        "certificates_per_agent_per_hour = 0",
        "certificates_per_agent_per_hour = 1",
    );
    assert_ne!(policy, limited, "the default policy sets no quota");
    std::fs::write(&path, &limited).unwrap();
    let agent = env.add_agent("/agent/quota", &[]);
    let key = rsa_key(0);
    let second = {
        let server = ScepServer::start(&env);
        let first = server.challenge(&agent);
        let second = server.challenge(&agent);
        let (parts, transient) = pkcs_req(&server, &key, Some(&first));
        issued(server.exchange(&parts.builder(&key, &transient).build().unwrap(), &key));
        let signatures = server.ca_signatures();
        let (parts, transient) = pkcs_req(&server, &key, Some(&second));
        let request = parts.builder(&key, &transient).build().unwrap();
        assert_eq!(
            fail_info(server.exchange(&request, &key)),
            FailInfo::BadRequest
        );
        assert_eq!(server.ca_signatures(), signatures, "refusals never sign");
        second
    };
    // The quota lifted (and the server restarted, so the refusal's state is what was stored).
    std::fs::write(&path, &policy).unwrap();
    let server = ScepServer::start(&env);
    let (parts, transient) = pkcs_req(&server, &key, Some(&second));
    let leaf = issued(server.exchange(&parts.builder(&key, &transient).build().unwrap(), &key));
    assert!(String::from_utf8_lossy(&leaf).contains(agent.as_str()));
}

#[test]
fn a_retried_transaction_gets_the_same_certificate_and_costs_no_signature() {
    let env = Env::with_ca();
    let agent = env.add_agent("/agent/retry", &[]);
    let server = ScepServer::start(&env);
    let key = rsa_key(1);
    let challenge = server.challenge(&agent);
    let (parts, transient) = pkcs_req(&server, &key, Some(&challenge));
    let request = parts
        .builder(&key, &transient)
        .transaction_id(TransactionId::new("retried-transaction").unwrap())
        .build()
        .unwrap();
    let first = issued(server.exchange(&request, &key));
    let signatures = server.ca_signatures();
    // The client resends the very same message (no answer reached it, say).
    let again = issued(server.exchange(&request, &key));
    assert_eq!(first, again);
    assert_eq!(server.ca_signatures(), signatures);
    // The same transactionID under another signer is another request: the challenge is spent.
    let other = agentca_scep::client::transient_certificate(&key, "other").unwrap();
    let request = parts
        .builder(&key, &other)
        .transaction_id(TransactionId::new("retried-transaction").unwrap())
        .build()
        .unwrap();
    assert_eq!(
        fail_info(server.exchange(&request, &key)),
        FailInfo::BadRequest
    );
}

#[test]
fn concurrent_uses_of_one_challenge_issue_one_certificate() {
    let env = Env::with_ca();
    let agent = env.add_agent("/agent/race", &[]);
    let server = ScepServer::start(&env);
    let challenge = server.challenge(&agent);
    let key = rsa_key(0);
    let (parts, transient) = pkcs_req(&server, &key, Some(&challenge));
    let requests: Vec<_> = (0..8)
        .map(|_| parts.builder(&key, &transient).build().unwrap())
        .collect();
    let outcomes: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = requests
            .iter()
            .map(|r| s.spawn(|| server.exchange(r, &key)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let successes = outcomes
        .iter()
        .filter(|o| matches!(o, agentca_scep::client::CertRepOutcome::Success { .. }))
        .count();
    assert_eq!(successes, 1, "{outcomes:?}");
    let listed = env.cert_list(&["--agent", &agent]);
    assert_eq!(listed.len(), 1, "{listed:?}");
}

#[test]
fn forged_and_broken_messages_get_bad_message_check() {
    let env = Env::with_ca();
    let agent = env.add_agent("/agent/forged", &[]);
    let server = ScepServer::start(&env);
    let challenge = server.challenge(&agent);
    let signatures = server.ca_signatures();
    // SCEP-4: bad signature, digest mismatch, a signer certificate left out.
    for tamper in [
        Tamper {
            corrupt_signature: true,
            ..Tamper::default()
        },
        Tamper {
            wrong_message_digest: true,
            ..Tamper::default()
        },
        Tamper {
            omit_signer_certificate: true,
            ..Tamper::default()
        },
    ] {
        assert_eq!(
            tampered(&server, &challenge, tamper.clone()),
            FailInfo::BadMessageCheck,
            "{tamper:?}"
        );
    }
    // SCEP-4: an MD5 digest, or one nobody knows, named in the SignedData: badAlg.
    for named in ["1.2.840.113549.2.5", "1.2.3.4.5"] {
        let tamper = Tamper {
            digest_oid: Some(const_oid::ObjectIdentifier::new_unwrap(named)),
            ..Tamper::default()
        };
        assert_eq!(
            tampered(&server, &challenge, tamper),
            FailInfo::BadAlg,
            "digest {named}"
        );
    }
    // SCEP-6: every way the envelope fails to open gets the same answer (no padding oracle).
    let stranger = agentca_scep::client::transient_certificate(&rsa_key(1), "stranger").unwrap();
    for tamper in [
        Tamper {
            corrupt_encrypted_key: true,
            ..Tamper::default()
        },
        Tamper {
            bad_cbc_padding: true,
            ..Tamper::default()
        },
        Tamper {
            cek_override: Some(vec![7; 5]),
            ..Tamper::default()
        },
        Tamper {
            encrypt_to: Some(stranger.clone()),
            ..Tamper::default()
        },
    ] {
        assert_eq!(
            tampered(&server, &challenge, tamper.clone()),
            FailInfo::BadMessageCheck,
            "{tamper:?}"
        );
    }
    // Garbage inside a good envelope is a bad request.
    assert_eq!(
        tampered(
            &server,
            &challenge,
            Tamper {
                content_override: Some(vec![0x30, 0x03, 0x02, 0x01, 0x00]),
                ..Tamper::default()
            }
        ),
        FailInfo::BadRequest
    );
    assert_eq!(server.ca_signatures(), signatures);
    // None of that spent the challenge.
    let key = rsa_key(0);
    let (parts, transient) = pkcs_req(&server, &key, Some(&challenge));
    let request = parts.builder(&key, &transient).build().unwrap();
    issued(server.exchange(&request, &key));
}

#[test]
fn message_types_outside_the_allow_list_are_refused() {
    let env = Env::with_ca();
    let agent = env.add_agent("/agent/types", &[]);
    let server = ScepServer::start(&env);
    let challenge = server.challenge(&agent);
    let signatures = server.ca_signatures();
    // SCEP-5: UpdateReq, CertPoll, GetCert, a CertRep sent to the CA, unknown numbers.
    for n in [3, 18, 20, 21, 0, 99] {
        let outcome = tampered(
            &server,
            &challenge,
            Tamper {
                message_type_number: Some(n),
                ..Tamper::default()
            },
        );
        assert_eq!(outcome, FailInfo::BadRequest, "messageType {n}");
    }
    assert_eq!(server.ca_signatures(), signatures);
    assert!(
        server
            .server
            .metric("agentca_scep_answers_total{request=\"unsupported\",answer=\"bad_request\"}")
            >= 6.0
    );
}

#[test]
fn legacy_ciphers_need_the_option() {
    let env = Env::with_ca();
    let agent = env.add_agent("/agent/legacy", &[]);
    let server = ScepServer::start_with(&env, &[]);
    let caps = server.server.get("/scep?operation=GetCACaps").text();
    assert!(!caps.contains("DES3") && !caps.contains("SHA-1"), "{caps}");
    let challenge = server.challenge(&agent);
    let key = rsa_key(0);
    for cipher in [ContentCipher::DesCbc, ContentCipher::DesEde3Cbc] {
        let (parts, transient) = pkcs_req(&server, &key, Some(&challenge));
        let request = parts
            .builder(&key, &transient)
            .cipher(cipher)
            .build()
            .unwrap();
        assert_eq!(fail_info(server.exchange(&request, &key)), FailInfo::BadAlg);
    }
    // An ECDSA signer could not read an RSA key-transport reply: refused before issuing.
    let ec = SignerKey::from_pkcs8(agentca_testkit::acme::AccountKey::es256().pkcs8_der()).unwrap();
    let (parts, transient) = pkcs_req(&server, &ec, Some(&challenge));
    let request = parts.builder(&ec, &transient).build().unwrap();
    let response = server.post(request.der());
    assert_eq!(response.status, 200);
    let outcome = request
        .parse_reply(
            &response.body,
            &[&server.ra],
            &ec,
            &agentca_scep::ScepOptions::STRICT,
        )
        .unwrap();
    assert_eq!(fail_info(outcome), FailInfo::BadAlg);
}

#[test]
fn renewals_need_a_current_certificate_of_ours() {
    let env = Env::with_ca();
    let agent = env.add_agent("/agent/renew", &[]);
    let server = ScepServer::start(&env);
    let key = rsa_key(0);
    let challenge = server.challenge(&agent);
    let (parts, transient) = pkcs_req(&server, &key, Some(&challenge));
    let current = issued(server.exchange(&parts.builder(&key, &transient).build().unwrap(), &key));
    let csr =
        agentca_scep::client::csr_with_challenge(&key, &rcgen::CertificateParams::default(), None)
            .unwrap();
    // The failInfo of a RenewalReq for `csr` signed under `signer`.
    let renewal = |csr: &[u8], signer: &[u8]| {
        let request = RequestBuilder::renewal_req(csr, &key, signer, &server.ra)
            .build()
            .unwrap();
        fail_info(server.exchange(&request, &key))
    };

    // SCEP-3: signed by the current certificate, it works.
    let request = RequestBuilder::renewal_req(&csr, &key, &current, &server.ra)
        .build()
        .unwrap();
    issued(server.exchange(&request, &key));
    let signatures = server.ca_signatures();

    // SCEP-3, other identity: the agent's certificate signs a renewal whose CSR asks for
    // another agent's identity: refused by policy, whoever that other agent is.
    let other = env.add_agent("/agent/other", &[]);
    assert_eq!(
        renewal(&csr_naming(&key, &other, None), &current),
        FailInfo::BadRequest
    );
    assert_eq!(server.ca_signatures(), signatures);

    // Signed by a self-signed certificate (of the same key), it does not.
    assert_eq!(renewal(&csr, &transient), FailInfo::BadMessageCheck);

    // Signed by another CA's copy of the current certificate (its serial, subject and the
    // agent's URI, for the same key), it does not: only the certificate stored under that
    // serial, byte for byte, is ours.
    let forged = {
        let (_, ours) = X509Certificate::from_der(&current).unwrap();
        let foreign_ca = rcgen::Issuer::new(
            {
                let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
                ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
                ca.distinguished_name = rcgen::DistinguishedName::new();
                ca.distinguished_name
                    .push(rcgen::DnType::CommonName, "agentca issuing CA");
                ca
            },
            rcgen::KeyPair::generate().unwrap(),
        );
        let mut params = rcgen::CertificateParams::default();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(ours.raw_serial()));
        params.subject_alt_names = vec![rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from(agent.as_str()).unwrap(),
        )];
        let leaf_key =
            rcgen::KeyPair::try_from(agentca_testkit::acme::AccountKey::rsa(0).pkcs8_der())
                .unwrap();
        params
            .signed_by(&leaf_key, &foreign_ca)
            .unwrap()
            .der()
            .to_vec()
    };
    assert_eq!(renewal(&csr, &forged), FailInfo::BadMessageCheck);

    // A PKCSReq whose challenge is spent, signed by the current certificate, is a renewal
    // too (how certmonger renews); signed by the transient certificate it is refused for the
    // challenge, with no signature.
    let spent = |signer: &[u8]| {
        RequestBuilder::pkcs_req(&parts.csr, &key, signer, &server.ra)
            .build()
            .unwrap()
    };
    assert_eq!(
        fail_info(server.exchange(&spent(&transient), &key)),
        FailInfo::BadRequest
    );
    assert_eq!(server.ca_signatures(), signatures);
    let renewed = issued(server.exchange(&spent(&current), &key));
    assert_eq!(san_names(&renewed).1, vec![agent.clone()]);

    // A live challenge wins over the signer: signed by this agent's certificate, a PKCSReq
    // with the other agent's challenge enrolls the other agent (and spends the challenge).
    let (theirs, _) = pkcs_req(&server, &key, Some(&server.challenge(&other)));
    let request = RequestBuilder::pkcs_req(&theirs.csr, &key, &current, &server.ra)
        .build()
        .unwrap();
    assert_eq!(
        san_names(&issued(server.exchange(&request, &key))).1,
        vec![other.clone()]
    );
    let signatures = server.ca_signatures();
    let spent_theirs = RequestBuilder::pkcs_req(&theirs.csr, &key, &transient, &server.ra)
        .build()
        .unwrap();
    assert_eq!(
        fail_info(server.exchange(&spent_theirs, &key)),
        FailInfo::BadRequest,
        "the other agent's challenge was spent by the request it granted"
    );

    // Signed by a revoked certificate of ours, neither a RenewalReq nor a PKCSReq with a spent
    // challenge is granted.
    let serial = serial_hex(&current);
    env.run(&["revoke", &serial]).success();
    assert_eq!(renewal(&csr, &current), FailInfo::BadRequest);
    assert_eq!(
        fail_info(server.exchange(&spent(&current), &key)),
        FailInfo::BadRequest
    );
    assert_eq!(server.ca_signatures(), signatures);
}

#[test]
fn unparseable_input_gets_400_and_nothing_else() {
    let env = Env::with_ca();
    let agent = env.add_agent("/agent/parse", &[]);
    let server = ScepServer::start(&env);
    let challenge = server.challenge(&agent);
    let key = rsa_key(0);
    let (parts, transient) = pkcs_req(&server, &key, Some(&challenge));
    let good = parts.builder(&key, &transient).build().unwrap();
    let signatures = server.ca_signatures();

    // PARSE-1: garbage, truncations, deep nesting, missing SCEP attributes.
    let mut deep = Vec::new();
    for _ in 0..200 {
        deep.extend([0x30, 0x80]);
    }
    deep.extend(std::iter::repeat_n(0u8, 400));
    let mut inputs: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"hello".to_vec(),
        vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
        deep,
    ];
    for cut in [1, 10, good.der().len() / 2, good.der().len() - 1] {
        inputs.push(good.der()[..cut].to_vec());
    }
    for tamper in [
        Tamper {
            omit_sender_nonce: true,
            ..Tamper::default()
        },
        Tamper {
            omit_transaction_id: true,
            ..Tamper::default()
        },
        Tamper {
            sender_nonce_bytes: Some(vec![1; 3]),
            ..Tamper::default()
        },
    ] {
        inputs.push(
            parts
                .builder(&key, &transient)
                .tamper(tamper)
                .build()
                .unwrap()
                .der()
                .to_vec(),
        );
    }
    for input in &inputs {
        let response = server.post(input);
        assert_eq!(
            response.status,
            400,
            "{} bytes: {}",
            input.len(),
            response.text()
        );
    }
    // GET with a message parameter that is not base64, and one far too long.
    let bad = server
        .server
        .get("/scep?operation=PKIOperation&message=%%%not-base64");
    assert_eq!(bad.status, 400);
    let long = format!(
        "/scep?operation=PKIOperation&message={}",
        "A".repeat(agentca_scep::MAX_MESSAGE_PARAM_LEN + 10)
    );
    let response = server.server.get(&long);
    assert!(
        [400, 414, 431].contains(&response.status),
        "{}",
        response.status
    );
    assert_eq!(
        server.server.get("/scep?operation=Nope").status,
        400,
        "unknown operation"
    );
    assert_eq!(server.ca_signatures(), signatures);
    // Each 400 wrote an audit event; the over-long parameter may be refused by the HTTP layer
    // (414 or 431) before any SCEP code runs, and then writes none.
    let refused_with_400 = inputs.len() + 2 + usize::from(response.status == 400);
    let refusals = env.audit_events("scep.refused");
    let unparseable = refusals
        .iter()
        .filter(|e| {
            e["fields"]["request"] == "unparseable"
                && e["fields"]["status"] == 400
                && e["fields"]["client"] == "127.0.0.1"
        })
        .count();
    assert_eq!(
        unparseable, refused_with_400,
        "scep.refused entries for the requests refused with 400"
    );

    // Indefinite-length BER of a good request is accepted, and by GET too: the challenge
    // was not spent by any of the above.
    let ber = parts
        .builder(&key, &transient)
        .tamper(Tamper {
            indefinite_ber: true,
            ..Tamper::default()
        })
        .build()
        .unwrap();
    let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, ber.der());
    let response = server.server.get(&format!(
        "/scep?operation=PKIOperation&message={}",
        encoded
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
    ));
    assert_eq!(response.status, 200, "{}", response.text());
    issued(
        ber.parse_reply(
            &response.body,
            &[&server.ra],
            &key,
            &agentca_scep::ScepOptions::STRICT,
        )
        .unwrap(),
    );
}

#[test]
fn get_crl_returns_the_served_crl() {
    let env = Env::with_ca();
    let agent = env.add_agent("/agent/crl", &[]);
    let server = ScepServer::start(&env);
    let key = rsa_key(0);
    let challenge = server.challenge(&agent);
    let (parts, transient) = pkcs_req(&server, &key, Some(&challenge));
    let current = issued(server.exchange(&parts.builder(&key, &transient).build().unwrap(), &key));
    // IssuerAndSerialNumber of the certificate: SEQUENCE { issuer Name, serial INTEGER }.
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(&current).unwrap();
    let issuer = cert.issuer().as_raw();
    let serial = cert.raw_serial();
    let mut content = issuer.to_vec();
    content.push(0x02);
    content.push(u8::try_from(serial.len()).unwrap());
    content.extend_from_slice(serial);
    let mut ias = vec![0x30, u8::try_from(content.len()).unwrap()];
    ias.extend(content);
    let request = RequestBuilder::get_crl(&ias, &key, &current, &server.ra)
        .build()
        .unwrap();
    match server.exchange(&request, &key) {
        agentca_scep::client::CertRepOutcome::Crls(crls) => {
            // Each node signs its own CRL (numbers from the shared store); the reply carries
            // the one its node serves.
            let served: Vec<Vec<u8>> = server
                .server
                .get_on_each_node("/crl")
                .into_iter()
                .map(|response| response.body)
                .collect();
            assert_eq!(crls.len(), 1);
            assert!(
                served.contains(&crls[0]),
                "the reply's CRL is not served on /crl"
            );
        }
        other => panic!("expected a CRL, got {other:?}"),
    }
}

/// SCEP-1, expired: a challenge past its validity is refused like an unknown one. (Tokens live
/// at least a minute, so the test writes an expired one into the store while no server runs.)
#[test]
fn an_expired_challenge_is_refused() {
    let env = Env::with_ca();
    let agent = env.add_agent("/agent/expired", &[]);
    let challenge = "expired-challenge-0123456789abcdefghijklmnopqrstuv";
    {
        let store = env.open_store();
        let now = time::OffsetDateTime::now_utc();
        store
            .insert_token(&agentca_store::TokenRecord {
                id: agentca_core::token::scep_token_id(challenge),
                kind: agentca_store::TokenKind::Scep,
                agent_id: agent.clone(),
                verifier: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(challenge)),
                expires_at: now - time::Duration::minutes(1),
                created_at: now - time::Duration::hours(1),
                consumed_at: None,
            })
            .unwrap();
        store.commit().unwrap();
    }
    let server = ScepServer::start(&env);
    let signatures = server.ca_signatures();
    let key = rsa_key(0);
    let (parts, transient) = pkcs_req(&server, &key, Some(challenge));
    let request = parts.builder(&key, &transient).build().unwrap();
    assert_eq!(
        fail_info(server.exchange(&request, &key)),
        FailInfo::BadRequest
    );
    assert_eq!(server.ca_signatures(), signatures);
    assert!(
        server.server.stderr().contains("the challenge has expired"),
        "{}",
        server.server.stderr()
    );
}

/// Every certificate a SUCCESS was sent for is in the store and the audit log after the
/// server is killed with SIGKILL right after the last answer, and every consumed challenge
/// stays consumed.
#[test]
fn acknowledged_enrollments_survive_kill_9() {
    const CLIENTS: usize = 6;
    let env = Env::with_ca();
    let agent = env.add_agent("/agent/kill9", &[]);
    let server = ScepServer::start(&env);
    let challenges: Vec<String> = (0..CLIENTS).map(|_| server.challenge(&agent)).collect();
    let key = rsa_key(1);
    let serials: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = challenges
            .iter()
            .map(|challenge| {
                let (server, key) = (&server, &key);
                s.spawn(move || {
                    let (parts, transient) = pkcs_req(server, key, Some(challenge));
                    let request = parts.builder(key, &transient).build().unwrap();
                    let leaf = issued(server.exchange(&request, key));
                    serial_hex(&leaf)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ScepServer { server, .. } = server;
    server.kill();

    let listed = env.listed_serials(&["--agent", &agent]);
    let audit = env.audit_text();
    for serial in &serials {
        assert!(
            listed.contains(serial),
            "{serial} was acknowledged but is lost"
        );
        assert!(
            audit
                .lines()
                .any(|l| l.contains("cert.issued") && l.contains(serial.as_str())),
            "{serial} was acknowledged but has no audit line"
        );
    }
    env.assert_audit_intact();
    // The challenges stay spent after the restart.
    let server = ScepServer::start(&env);
    let (parts, transient) = pkcs_req(&server, &key, Some(&challenges[0]));
    let request = parts.builder(&key, &transient).build().unwrap();
    assert_eq!(
        fail_info(server.exchange(&request, &key)),
        FailInfo::BadRequest
    );
}

/// SCEP-3, a signer outside its validity: the agent's own certificate signs a RenewalReq that a
/// server reads two days later (its clock moved by libfaketime, past the 24-hour lifetime): a
/// FAILURE with badTime, and no signature.
#[test]
fn a_renewal_signed_by_an_expired_certificate_gets_bad_time() {
    let Some(libfaketime) = super::support::libfaketime() else {
        agentca_testkit::tools::missing("faketime", "the expired SCEP signer test (SCEP-3)");
        return;
    };
    let env = Env::with_ca();
    let agent = env.add_agent("/agent/expired", &[]);
    let key = rsa_key(0);
    let current = {
        let server = ScepServer::start(&env);
        let challenge = server.challenge(&agent);
        let (parts, transient) = pkcs_req(&server, &key, Some(&challenge));
        issued(server.exchange(&parts.builder(&key, &transient).build().unwrap(), &key))
    };
    let csr =
        agentca_scep::client::csr_with_challenge(&key, &rcgen::CertificateParams::default(), None)
            .unwrap();

    let mut cmd = super::harness::serve_on_free_ports(&env);
    cmd.arg("--scep-legacy-crypto");
    super::support::move_clock(&mut cmd, &libfaketime, "+2d");
    let later = ScepServer::of(super::harness::Server::start(cmd), &env);
    let signatures = later.ca_signatures();
    let request = RequestBuilder::renewal_req(&csr, &key, &current, &later.ra)
        .build()
        .unwrap();
    assert_eq!(fail_info(later.exchange(&request, &key)), FailInfo::BadTime);
    assert_eq!(later.ca_signatures(), signatures);
}

/// The request and reply codec checked against another implementation: a client built on
/// RustCrypto's `cms` (not on the server's CMS code) enrolls with a live challenge and decrypts
/// its certificate from the reply; a used challenge, an unknown one, a message type outside
/// the allow-list and a signature by another key each get a FAILURE, signed by the RA, with
/// the right failInfo and the request's transactionID and nonce, and no CA signature.
#[test]
fn a_client_on_another_cms_implementation_enrolls_and_is_refused_where_it_must_be() {
    use agentca_testkit::scep_cms::{CmsReply, read_reply, request};
    let env = Env::with_ca();
    let agent = env.add_agent("/agent/cms", &[]);
    let server = ScepServer::start_with(&env, &[]);
    let pkcs8 = |i| {
        agentca_testkit::acme::AccountKey::rsa(i)
            .pkcs8_der()
            .to_vec()
    };
    let (key, other_key) = (pkcs8(0), pkcs8(1));
    let send = |message_type: &str, challenge: &str, signer_key: &[u8], requester: usize| {
        let requester_key = rsa_key(requester);
        let csr = agentca_scep::client::csr_with_challenge(
            &requester_key,
            &rcgen::CertificateParams::default(),
            Some(challenge),
        )
        .unwrap();
        let transient =
            agentca_scep::client::transient_certificate(&requester_key, "cms client").unwrap();
        let sent = request(message_type, &csr, &transient, signer_key, &server.ra);
        let response = server.post(&sent.der);
        assert_eq!(response.status, 200, "{}", response.text());
        read_reply(&response.body, &sent, &server.ra, &pkcs8(requester))
    };

    let challenge = server.challenge(&agent);
    let CmsReply::Success(certificates) = send("19", &challenge, &key, 0) else {
        panic!("the enrollment was refused");
    };
    // The issued certificate is the one with names (the others are the CA chain).
    let names: Vec<Vec<String>> = certificates
        .iter()
        .filter_map(|der| {
            let (_, cert) = X509Certificate::from_der(der).unwrap();
            let san = cert.subject_alternative_name().unwrap()?;
            Some(
                san.value
                    .general_names
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            )
        })
        .collect();
    assert_eq!(names, [[format!("URI({agent})")]], "{names:?}");
    let signatures = server.ca_signatures();

    const BAD_MESSAGE_CHECK: u8 = 1;
    const BAD_REQUEST: u8 = 2;
    // The same challenge for another key: used.
    assert_eq!(
        send("19", &challenge, &other_key, 1),
        CmsReply::Failure(BAD_REQUEST)
    );
    assert_eq!(
        send("19", "not-a-challenge", &other_key, 1),
        CmsReply::Failure(BAD_REQUEST)
    );
    // CertPoll (20) is not served.
    let fresh = server.challenge(&agent);
    assert_eq!(
        send("20", &fresh, &other_key, 1),
        CmsReply::Failure(BAD_REQUEST)
    );
    // Signed by another key than the signer certificate's.
    assert_eq!(
        send("19", &fresh, &key, 1),
        CmsReply::Failure(BAD_MESSAGE_CHECK)
    );
    assert_eq!(server.ca_signatures(), signatures);
    // The fresh challenge was spent by none of them.
    assert!(matches!(
        send("19", &fresh, &other_key, 1),
        CmsReply::Success(_)
    ));
}
