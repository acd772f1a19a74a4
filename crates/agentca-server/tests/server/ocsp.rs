//! `/ocsp` against real clients: openssl over POST and GET, pkilint on every response shape,
//! the pre-signed fast path, and the bad-input rows of the security test plan (REV-1, REV-2,
//! REV-9, PARSE-4).

use std::time::Instant;

use agentca_core::ocsp::{self, CertStatus, HashAlgorithm, IssuerHashes, OcspResponseStatus};
use agentca_core::store::{RevocationReason, Serial};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hyper::{Method, StatusCode};

use super::support::*;

fn openssl_ocsp_args(ca: &TestCa, leaf: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "ocsp".to_owned(),
        "-issuer".to_owned(),
        path_arg(&ca.file("issuing.pem")),
        "-cert".to_owned(),
        path_arg(leaf),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

async fn openssl_post(
    ca: &TestCa,
    server: &Running,
    leaf: &std::path::Path,
    extra: &[&str],
) -> String {
    let mut args = openssl_ocsp_args(ca, leaf, &["-url", &server.ocsp_url(), "-CAfile"]);
    args.push(path_arg(&ca.file("ca-chain.pem")));
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    openssl(args).await
}

/// openssl builds the request (`-reqout`), our client fetches it with GET, openssl verifies
/// the response (`-respin`).
async fn openssl_get(ca: &TestCa, server: &Running, leaf: &std::path::Path, name: &str) -> String {
    let req = ca.scratch(&format!("{name}.req"));
    let out = openssl(openssl_ocsp_args(
        ca,
        leaf,
        &["-no_nonce", "-reqout", &path_arg(&req)],
    ))
    .await;
    let der = std::fs::read(&req).unwrap_or_else(|e| panic!("{e}: {out}"));
    let path = format!("/ocsp/{}", STANDARD.encode(&der));
    let reply = get(server.addrs.http, &path).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("content-type"),
        Some("application/ocsp-response")
    );
    let resp = ca.scratch(&format!("{name}.resp"));
    std::fs::write(&resp, &reply.body).unwrap();
    openssl(vec![
        "ocsp".into(),
        "-reqin".into(),
        path_arg(&req),
        "-respin".into(),
        path_arg(&resp),
        "-CAfile".into(),
        path_arg(&ca.file("ca-chain.pem")),
        "-issuer".into(),
        path_arg(&ca.file("issuing.pem")),
        "-cert".into(),
        path_arg(leaf),
    ])
    .await
}

fn assert_verified(text: &str, status: &str) {
    assert!(text.contains("Response verify OK"), "{text}");
    assert!(
        text.contains(&format!(": {status}")),
        "expected {status}:\n{text}"
    );
}

/// REV-9: stock OpenSSL verifies the delegated responder's answers, POST with and without a
/// nonce and GET, before and after revocation; and against `root.pem` alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_sees_good_then_revoked_over_post_and_get() {
    if !have_openssl() {
        return;
    }
    let ca = TestCa::new();
    let server = Running::start(&ca, test_config()).await;
    let record = ca.issue();
    let hooks = server.hooks.clone();
    let issued = record.clone();
    tokio::task::spawn_blocking(move || hooks.issued(&issued))
        .await
        .unwrap();
    let leaf = ca.write_pem("leaf.pem", "CERTIFICATE", &record.der);

    assert_verified(&openssl_post(&ca, &server, &leaf, &[]).await, "good");
    assert_verified(
        &openssl_post(&ca, &server, &leaf, &["-no_nonce"]).await,
        "good",
    );
    assert_verified(&openssl_get(&ca, &server, &leaf, "good").await, "good");
    // The issue's wording: -verify against root.pem, with the issuing CA as an untrusted
    // intermediate.
    let text = openssl_post(
        &ca,
        &server,
        &leaf,
        &["-verify_other", &path_arg(&ca.file("issuing.pem"))],
    )
    .await;
    assert_verified(&text, "good");

    let serial = record.intent.serial;
    let authority = ca.authority.clone();
    let revoked = tokio::task::spawn_blocking(move || {
        authority
            .revoke(&serial, RevocationReason::KeyCompromise)
            .unwrap()
    })
    .await
    .unwrap();
    let again = revoked.clone();
    server.blocking(move |h| h.revoked(&[revoked])).await;
    // Told again (as a refused second revocation tells it): nothing is signed.
    let signatures = server.hooks.responder_signatures();
    server.blocking(move |h| h.revoked(&[again])).await;
    assert_eq!(server.hooks.responder_signatures(), signatures);

    let text = openssl_post(&ca, &server, &leaf, &[]).await;
    assert_verified(&text, "revoked");
    assert!(text.contains("Reason: keyCompromise"), "{text}");
    assert_verified(
        &openssl_post(&ca, &server, &leaf, &["-no_nonce"]).await,
        "revoked",
    );
    assert_verified(
        &openssl_get(&ca, &server, &leaf, "revoked").await,
        "revoked",
    );
    server.stop().await;
}

/// The hot path signs nothing: single-CertID requests without a nonce, POST and GET, for
/// good and revoked certificates, are all served from pre-signed responses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_signed_path_makes_no_signature() {
    let ca = TestCa::new();
    // Certificates issued before the server starts are primed by the scheduler; one issued
    // while it runs is pre-signed by the hook.
    let before: Vec<_> = (0..20).map(|_| ca.issue()).collect();
    let server = Running::start(&ca, test_config()).await;
    let during = ca.issue();
    let hook_record = during.clone();
    server.blocking(move |h| h.issued(&hook_record)).await;
    let revoked = before[0].clone();
    let authority = ca.authority.clone();
    let revoked = tokio::task::spawn_blocking(move || {
        authority
            .revoke(&revoked.intent.serial, RevocationReason::Superseded)
            .unwrap()
    })
    .await
    .unwrap();
    server.blocking(move |h| h.revoked(&[revoked])).await;

    // Wait for priming: 21 agent certificates and the HTTPS certificate, two CertIDs each.
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let text = metrics_text(server.addrs.http).await;
        if metric(&text, "agentca_ocsp_cache_entries") >= 44.0 {
            break;
        }
        assert!(Instant::now() < deadline, "priming did not finish:\n{text}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let issuer = ca.issuer();
    let signatures_before = server.hooks.responder_signatures();
    let mut requests = 0;
    for (i, record) in before.iter().chain([&during]).enumerate() {
        for hash in HashAlgorithm::ALL {
            let der = ocsp_request(&issuer, hash, record.intent.serial.as_bytes(), None);
            let reply = post_ocsp(server.addrs.http, der.clone()).await;
            let want_revoked = i == 0;
            match status_of(&reply.body) {
                Ok(CertStatus::Good) => assert!(!want_revoked),
                Ok(CertStatus::Revoked { .. }) => assert!(want_revoked),
                other => panic!("{other:?}"),
            }
            let reply = get(
                server.addrs.http,
                &format!("/ocsp/{}", STANDARD.encode(&der)),
            )
            .await;
            assert!(status_of(&reply.body).is_ok());
            requests += 2;
        }
    }
    assert_eq!(
        server.hooks.responder_signatures(),
        signatures_before,
        "the cached path signed"
    );
    let text = metrics_text(server.addrs.http).await;
    assert_eq!(
        metric(&text, "agentca_ocsp_request_path_signatures_total"),
        0.0
    );
    assert!(metric(&text, "agentca_ocsp_cache_hits_total") >= f64::from(requests));
    assert!(metric(&text, "agentca_ocsp_answers_total{answer=\"revoked\"}") >= 4.0);
    println!("{requests} requests, 0 signatures on the request path");

    // A nonce costs one signature, and the answer echoes it.
    let nonce = [0x5au8; 16];
    let der = ocsp_request(
        &issuer,
        HashAlgorithm::Sha1,
        during.intent.serial.as_bytes(),
        Some(&nonce),
    );
    let reply = post_ocsp(server.addrs.http, der).await;
    match ocsp::parse_response(&reply.body).unwrap() {
        ocsp::ParsedResponse::Successful(basic) => {
            assert_eq!(basic.nonce.as_deref(), Some(&nonce[..]))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(server.hooks.responder_signatures(), signatures_before + 1);
    let text = metrics_text(server.addrs.http).await;
    assert_eq!(
        metric(&text, "agentca_ocsp_request_path_signatures_total"),
        1.0
    );
    server.stop().await;
}

/// REV-1: serials nobody was issued are never `good`, and cost no signature however many
/// arrive; REV-2: another issuer's CertID is `unauthorized`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unassigned_serials_and_foreign_issuers_are_unauthorized_and_cost_nothing() {
    let ca = TestCa::new();
    let server = Running::start(&ca, test_config()).await;
    let issuer = ca.issuer();
    let signatures_before = server.hooks.responder_signatures();
    for i in 0..300u32 {
        let mut serial = [0u8; 16];
        aws_lc_rs::rand::fill(&mut serial).unwrap();
        serial[0] = (serial[0] & 0x7f) | 1;
        let nonce = (i % 3 == 0).then_some([7u8; 16]);
        let hash = if i % 2 == 0 {
            HashAlgorithm::Sha1
        } else {
            HashAlgorithm::Sha256
        };
        let der = ocsp_request(&issuer, hash, &serial, nonce.as_ref().map(|n| &n[..]));
        let reply = post_ocsp(server.addrs.http, der).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            status_of(&reply.body),
            Err(OcspResponseStatus::Unauthorized)
        );
    }
    // Odd shapes: too short, too long, negative, zero.
    for serial in [&[1u8][..], &[0x7f; 20], &[0xff; 16], &[0]] {
        let der = ocsp_request(&issuer, HashAlgorithm::Sha1, serial, None);
        let reply = post_ocsp(server.addrs.http, der).await;
        assert_eq!(
            status_of(&reply.body),
            Err(OcspResponseStatus::Unauthorized)
        );
    }
    // A reserved serial whose certificate was never stored (REV-3) is no different.
    let record = ca.issue();
    let reserved = agentca_core::store::IssuanceIntent {
        serial: Serial::from_bytes([0x42; 16]).unwrap(),
        ..record.intent.clone()
    };
    agentca_core::store::Store::reserve_serial(ca.ca.store().as_ref(), &reserved).unwrap();
    let der = ocsp_request(
        &issuer,
        HashAlgorithm::Sha1,
        reserved.serial.as_bytes(),
        None,
    );
    assert_eq!(
        status_of(&post_ocsp(server.addrs.http, der).await.body),
        Err(OcspResponseStatus::Unauthorized)
    );
    // Several CertIDs, one of them unassigned: unauthorized as a whole.
    let ids = [
        issuer.cert_id(HashAlgorithm::Sha1, record.intent.serial.as_bytes()),
        issuer.cert_id(HashAlgorithm::Sha1, &[0x33; 16]),
    ];
    let der = ocsp::build_request(&ids, None).unwrap();
    assert_eq!(
        status_of(&post_ocsp(server.addrs.http, der).await.body),
        Err(OcspResponseStatus::Unauthorized)
    );
    assert_eq!(server.hooks.responder_signatures(), signatures_before);

    // REV-2: the root's hashes, and a CA that has nothing to do with us.
    let root = IssuerHashes::from_issuer_der(&ca.ca.cert_der("root.pem").unwrap()).unwrap();
    let other_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other = params.self_signed(&other_key).unwrap();
    let other = IssuerHashes::from_issuer_der(other.der()).unwrap();
    for foreign in [root, other] {
        for hash in HashAlgorithm::ALL {
            let der = ocsp_request(&foreign, hash, record.intent.serial.as_bytes(), None);
            let reply = post_ocsp(server.addrs.http, der).await;
            assert_eq!(
                status_of(&reply.body),
                Err(OcspResponseStatus::Unauthorized)
            );
        }
    }
    let text = metrics_text(server.addrs.http).await;
    assert_eq!(
        metric(&text, "agentca_ocsp_request_path_signatures_total"),
        0.0
    );
    server.stop().await;
}

/// PARSE-4 and garbage: every malformed request gets `malformedRequest` over HTTP 200, fast,
/// and the server keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_malformed_request() {
    let ca = TestCa::new();
    // 1,000 CertIDs are about 45 KiB: beyond the default 16 KiB body limit (413, see the
    // body-limit test), so the limit is raised here to let the parser see them.
    let config = agentca_server::ServerConfig {
        max_body: 64 * 1024,
        ..test_config()
    };
    let server = Running::start(&ca, config).await;
    let issuer = ca.issuer();
    let record = ca.issue();
    server
        .blocking({
            let r = record.clone();
            move |h| h.issued(&r)
        })
        .await;
    let serial = record.intent.serial.as_bytes().to_vec();

    let thousand: Vec<_> = (0..1000u32)
        .map(|i| issuer.cert_id(HashAlgorithm::Sha1, &[0x11, (i >> 8) as u8, i as u8]))
        .collect();
    let valid = ocsp_request(&issuer, HashAlgorithm::Sha256, &serial, None);
    // SHA-256's OID with its last arc changed to SHA-384's.
    let sha256_oid = [
        0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
    ];
    let at = valid
        .windows(sha256_oid.len())
        .position(|w| w == sha256_oid)
        .unwrap();
    let mut unknown_hash = valid.clone();
    unknown_hash[at + sha256_oid.len() - 1] = 0x02;

    let mut bad: Vec<(String, Vec<u8>)> = vec![
        (
            "1,000 CertIDs".into(),
            ocsp::build_request(&thousand, None).unwrap(),
        ),
        (
            "65 CertIDs".into(),
            ocsp::build_request(&thousand[..65], None).unwrap(),
        ),
        (
            "33-byte nonce".into(),
            ocsp_request(&issuer, HashAlgorithm::Sha1, &serial, Some(&[1; 33])),
        ),
        (
            "empty nonce".into(),
            ocsp_request(&issuer, HashAlgorithm::Sha1, &serial, Some(&[])),
        ),
        ("unknown hash".into(), unknown_hash),
        ("empty body".into(), Vec::new()),
        ("garbage".into(), b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        ("0xff".into(), vec![0xff; 4096]),
        ("deep nesting".into(), [[0x30u8, 0x80]; 2000].concat()),
        (
            "huge length".into(),
            vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x30],
        ),
    ];
    for cut in 1..valid.len() {
        bad.push((format!("truncated at {cut}"), valid[..cut].to_vec()));
    }
    let mut trailing = valid.clone();
    trailing.push(0);
    bad.push(("trailing byte".into(), trailing));

    for (name, der) in bad {
        let started = Instant::now();
        let reply = post_ocsp(server.addrs.http, der).await;
        assert_eq!(reply.status, StatusCode::OK, "{name}");
        assert_eq!(
            reply.header("content-type"),
            Some("application/ocsp-response")
        );
        assert_eq!(
            status_of(&reply.body),
            Err(OcspResponseStatus::MalformedRequest),
            "{name}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{name} was slow"
        );
    }
    for path in ["/ocsp/!!!", "/ocsp/%zz", "/ocsp/AAAA", "/ocsp", "/ocsp/"] {
        let reply = get(server.addrs.http, path).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(
            status_of(&reply.body),
            Err(OcspResponseStatus::MalformedRequest),
            "{path}"
        );
    }
    // Other methods: 405.
    for method in [Method::PUT, Method::DELETE, Method::PATCH] {
        let reply = request(server.addrs.http, method.clone(), "/ocsp", &[], Vec::new()).await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
    }
    // Still serving.
    let reply = post_ocsp(server.addrs.http, valid).await;
    assert_eq!(status_of(&reply.body), Ok(CertStatus::Good));
    server.stop().await;
}

/// RFC 5019 §5 GET spellings: raw base64 with `+` and `/`, URL-encoded, lowercase escapes,
/// no padding; and the caching headers of §6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_accepts_every_base64_spelling_and_is_cacheable() {
    let ca = TestCa::new();
    let server = Running::start(&ca, test_config()).await;
    let issuer = ca.issuer();
    // Find requests whose base64 has a '+' and a '/' (a few certificates suffice).
    let (mut plus, mut slash) = (None, None);
    for _ in 0..40 {
        let record = ca.issue();
        server
            .blocking({
                let r = record.clone();
                move |h| h.issued(&r)
            })
            .await;
        for hash in HashAlgorithm::ALL {
            let b64 = STANDARD.encode(ocsp_request(
                &issuer,
                hash,
                record.intent.serial.as_bytes(),
                None,
            ));
            if b64.contains('+') && plus.is_none() {
                plus = Some(b64.clone());
            }
            if b64.contains('/') && slash.is_none() {
                slash = Some(b64);
            }
        }
        if plus.is_some() && slash.is_some() {
            break;
        }
    }
    let (plus, slash) = (plus.unwrap(), slash.unwrap());
    for b64 in [plus, slash] {
        let encoded = b64
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        for spelling in [
            b64.clone(),
            encoded.clone(),
            encoded.replace("%2B", "%2b").replace("%2F", "%2f"),
            b64.replace('/', "%2f").replace('+', "%2b"),
            b64.trim_end_matches('=').to_owned(),
        ] {
            let reply = get(server.addrs.http, &format!("/ocsp/{spelling}")).await;
            assert_eq!(reply.status, StatusCode::OK, "{spelling}");
            assert_eq!(status_of(&reply.body), Ok(CertStatus::Good), "{spelling}");
            let cache_control = reply.header("cache-control").unwrap();
            let max_age: i64 = cache_control
                .strip_prefix("max-age=")
                .and_then(|r| r.split(',').next())
                .unwrap()
                .parse()
                .unwrap();
            assert!(
                (8 * 3600 - 120..=8 * 3600).contains(&max_age),
                "{cache_control}"
            );
            assert!(cache_control.contains("public") && cache_control.contains("no-transform"));
            assert!(reply.header("etag").is_some());
            assert!(reply.header("last-modified").unwrap().ends_with(" GMT"));
            assert!(reply.header("expires").is_some());
        }
        // Revalidation.
        let first = get(server.addrs.http, &format!("/ocsp/{b64}")).await;
        let etag = first.header("etag").unwrap().to_owned();
        let again = request(
            server.addrs.http,
            Method::GET,
            &format!("/ocsp/{b64}"),
            &[("if-none-match", &etag)],
            Vec::new(),
        )
        .await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED);
        assert!(again.body.is_empty());
    }
    server.stop().await;
}

/// Every response shape the responder produces passes pkilint's OCSP linter (REV-8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_shape_passes_pkilint() {
    let ca = TestCa::new();
    let server = Running::start(&ca, test_config()).await;
    let issuer = ca.issuer();
    let good = ca.issue();
    let revoked = ca.issue();
    server
        .blocking({
            let (g, r) = (good.clone(), revoked.clone());
            move |h| {
                h.issued(&g);
                h.issued(&r);
            }
        })
        .await;
    let authority = ca.authority.clone();
    let serial = revoked.intent.serial;
    let revoked = tokio::task::spawn_blocking(move || {
        authority
            .revoke(&serial, RevocationReason::CessationOfOperation)
            .unwrap()
    })
    .await
    .unwrap();
    server
        .blocking({
            let r = revoked.clone();
            move |h| h.revoked(&[r])
        })
        .await;

    let mut shapes = Vec::new();
    for hash in HashAlgorithm::ALL {
        for (name, record) in [("good", &good), ("revoked", &revoked)] {
            for nonce in [None, Some(&[9u8; 32][..])] {
                let der = ocsp_request(&issuer, hash, record.intent.serial.as_bytes(), nonce);
                shapes.push((format!("{name} {hash:?} nonce={}", nonce.is_some()), der));
            }
        }
    }
    let ids = [
        issuer.cert_id(HashAlgorithm::Sha1, good.intent.serial.as_bytes()),
        issuer.cert_id(HashAlgorithm::Sha256, revoked.intent.serial.as_bytes()),
    ];
    shapes.push(("several".into(), ocsp::build_request(&ids, None).unwrap()));
    shapes.push((
        "unauthorized".into(),
        ocsp_request(&issuer, HashAlgorithm::Sha1, &[0x22; 16], None),
    ));
    shapes.push(("malformed".into(), b"nonsense".to_vec()));
    for (name, der) in shapes {
        let reply = post_ocsp(server.addrs.http, der).await;
        assert_eq!(reply.status, StatusCode::OK, "{name}");
        println!("pkilint {name}");
        agentca_testkit::pkilint_ocsp(&reply.body);
    }
    server.stop().await;
}

/// Beyond the signing budget, nonce requests get the pre-signed response without the nonce
/// and multi-CertID requests get `tryLater`: a flood of requests that each want a fresh
/// signature costs a bounded number of signatures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_signatures_are_rate_limited() {
    let ca = TestCa::new();
    let config = agentca_server::ServerConfig {
        ocsp_signing_rate: 5,
        ..test_config()
    };
    let server = Running::start(&ca, config).await;
    let record = ca.issue();
    server
        .blocking({
            let r = record.clone();
            move |h| h.issued(&r)
        })
        .await;
    let issuer = ca.issuer();
    let before = server.hooks.responder_signatures();
    let started = Instant::now();
    let (mut echoed, mut without) = (0, 0);
    for i in 0..40u8 {
        let nonce = [i + 1; 16];
        let der = ocsp_request(
            &issuer,
            HashAlgorithm::Sha256,
            record.intent.serial.as_bytes(),
            Some(&nonce),
        );
        let reply = post_ocsp(server.addrs.http, der).await;
        let ocsp::ParsedResponse::Successful(basic) = ocsp::parse_response(&reply.body).unwrap()
        else {
            panic!("unsuccessful");
        };
        assert_eq!(basic.responses[0].status, CertStatus::Good);
        match basic.nonce {
            Some(n) => {
                assert_eq!(n, nonce);
                echoed += 1;
            }
            None => without += 1,
        }
    }
    let ids = [
        issuer.cert_id(HashAlgorithm::Sha1, record.intent.serial.as_bytes()),
        issuer.cert_id(HashAlgorithm::Sha256, record.intent.serial.as_bytes()),
    ];
    let several = ocsp::build_request(&ids, None).unwrap();
    let mut try_later = 0;
    for _ in 0..20 {
        let reply = post_ocsp(server.addrs.http, several.clone()).await;
        if status_of_any(&reply.body) == Some(OcspResponseStatus::TryLater) {
            try_later += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let signed = server.hooks.responder_signatures() - before;
    let allowed = 5.0 + 5.0 * elapsed + 1.0;
    println!(
        "{echoed} nonces echoed, {without} served pre-signed, {try_later} tryLater, {signed} signatures in {elapsed:.2} s"
    );
    assert!(
        (signed as f64) <= allowed,
        "{signed} signatures, budget {allowed}"
    );
    assert!(echoed >= 1 && without >= 1 && try_later >= 1);
    let text = metrics_text(server.addrs.http).await;
    assert!(metric(&text, "agentca_ocsp_signing_rate_limited_total") >= 1.0);
    server.stop().await;
}

/// The unsuccessful status of a response, if it is one.
fn status_of_any(der: &[u8]) -> Option<OcspResponseStatus> {
    match ocsp::parse_response(der).unwrap() {
        ocsp::ParsedResponse::Unsuccessful(status) => Some(status),
        ocsp::ParsedResponse::Successful(_) => None,
    }
}

/// keyCompromise revokes every certificate of the key; the hook, given only the one the
/// operator named, makes OCSP say `revoked` for all of them before it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_compromise_changes_every_certificate_of_the_key() {
    let ca = TestCa::new();
    let server = Running::start(&ca, test_config()).await;
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap();
    let records: Vec<_> = (0..3)
        .map(|_| {
            ca.authority
                .issue_csr(
                    AGENT,
                    csr.der(),
                    agentca_core::store::EnrollmentMethod::Cli,
                    None,
                )
                .unwrap()
        })
        .collect();
    server
        .blocking({
            let records = records.clone();
            move |h| records.iter().for_each(|r| h.issued(r))
        })
        .await;
    let issuer = ca.issuer();
    for record in &records {
        let der = ocsp_request(
            &issuer,
            HashAlgorithm::Sha1,
            record.intent.serial.as_bytes(),
            None,
        );
        assert_eq!(
            status_of(&post_ocsp(server.addrs.http, der).await.body),
            Ok(CertStatus::Good)
        );
    }
    let authority = ca.authority.clone();
    let serial = records[0].intent.serial;
    let mut revoked = tokio::task::spawn_blocking(move || {
        authority
            .revoke_all(&serial, RevocationReason::KeyCompromise)
            .unwrap()
    })
    .await
    .unwrap();
    // The core reports every certificate of the key; the hook needs nothing else.
    assert_eq!(revoked.len(), 3);
    // A hook call for a certificate that is not revoked is ignored, not harmful.
    let unrevoked = ca.issue();
    server
        .blocking({
            let unrevoked = unrevoked.clone();
            move |h| {
                h.issued(&unrevoked);
                revoked.push(unrevoked);
                h.revoked(&revoked);
            }
        })
        .await;
    for record in &records {
        for hash in HashAlgorithm::ALL {
            let der = ocsp_request(&issuer, hash, record.intent.serial.as_bytes(), None);
            let status = status_of(&post_ocsp(server.addrs.http, der).await.body);
            assert!(
                matches!(
                    status,
                    Ok(CertStatus::Revoked {
                        reason: Some(RevocationReason::KeyCompromise),
                        ..
                    })
                ),
                "{:?}: {status:?}",
                record.intent.serial
            );
        }
    }
    let der = ocsp_request(
        &issuer,
        HashAlgorithm::Sha1,
        unrevoked.intent.serial.as_bytes(),
        None,
    );
    assert_eq!(
        status_of(&post_ocsp(server.addrs.http, der).await.body),
        Ok(CertStatus::Good)
    );
    let text = metrics_text(server.addrs.http).await;
    assert_eq!(metric(&text, "agentca_certificates_revoked_total"), 3.0);
    assert_eq!(
        metric(&text, "agentca_ocsp_request_path_signatures_total"),
        0.0
    );
    server.stop().await;
}
