//! The verifier end to end: test PKIs made with rcgen, OCSP and CRL servers on 127.0.0.1:0.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use agentca_core::ocsp as core_ocsp;
use agentca_core::store::RevocationReason as CoreReason;
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use crate::test_pki::{Issued, Leaf, Pki, TestCa, agent, now};
use crate::test_server::{TestServer, closed_port_url};
use crate::{
    Builder, Clock, Error, FailurePolicy, IdPattern, Revocation, RevocationReason,
    RevocationSource, RevocationStatus, Usage, VerifiedAgent, Verifier,
};

fn builder(pki: &Pki) -> Builder {
    Verifier::builder(pki.root.anchors())
}

fn any(pki: &Pki) -> Verifier {
    builder(pki).accept_any_id().build().unwrap()
}

fn check(verifier: &Verifier, pki: &Pki, leaf: &Issued) -> Result<VerifiedAgent, Error> {
    verifier.verify_chain(&leaf.cert, &pki.chain(), now())
}

/// A clock tests move by hand.
#[derive(Debug)]
struct TestClock(Mutex<OffsetDateTime>);

impl TestClock {
    fn new() -> Arc<Self> {
        Arc::new(Self(Mutex::new(now())))
    }

    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for TestClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap()
    }
}

/// An OCSP responder speaking through agentca-core's encoder, signing with the PKI's
/// delegated responder. Certificates not in `statuses` are `good`.
struct Responder {
    server: TestServer,
    statuses: Arc<Mutex<HashMap<Vec<u8>, core_ocsp::CertStatus>>>,
}

impl Responder {
    async fn start(pki: &Pki, validity: Duration) -> Self {
        let key = rcgen::KeyPair::try_from(pki.responder.key.serialize_der()).unwrap();
        let signer = agentca_core::signer::KeyPairSigner::new(key).unwrap();
        let cert = pki.responder.cert.to_vec();
        let statuses: Arc<Mutex<HashMap<Vec<u8>, core_ocsp::CertStatus>>> = Arc::default();
        let known = statuses.clone();
        let server = TestServer::start("/ocsp", move |body| {
            let Ok(request) = core_ocsp::parse_request(body) else {
                return (
                    200,
                    core_ocsp::error_response(core_ocsp::OcspResponseStatus::MalformedRequest),
                );
            };
            let statuses = known.lock().unwrap();
            let singles: Vec<_> = request
                .cert_ids
                .iter()
                .map(|id| core_ocsp::SingleStatus {
                    cert_id: id.clone(),
                    status: statuses
                        .get(&id.serial)
                        .copied()
                        .unwrap_or(core_ocsp::CertStatus::Good),
                    this_update: now() - Duration::minutes(1),
                    next_update: now() + validity,
                })
                .collect();
            let responder = core_ocsp::Responder::new(&signer, &cert).unwrap();
            (200, responder.respond(&singles, now(), None).unwrap())
        })
        .await;
        Self { server, statuses }
    }

    fn revoke(&self, serial: &[u8], reason: CoreReason) {
        self.statuses.lock().unwrap().insert(
            serial.to_vec(),
            core_ocsp::CertStatus::Revoked {
                revoked_at: now() - Duration::minutes(30),
                reason: Some(reason),
            },
        );
    }
}

// --- Chain and identity ------------------------------------------------------------------

#[test]
fn accepts_a_good_agent() {
    let pki = Pki::new();
    let leaf = pki.agent("/agent/alice/mailer");
    let verified = check(&any(&pki), &pki, &leaf).unwrap();
    assert_eq!(verified.spiffe_id.as_str(), agent("/agent/alice/mailer"));
    assert_eq!(verified.serial.as_bytes(), leaf.serial);
    assert_eq!(verified.serial.to_string(), hex::encode(&leaf.serial));
    assert!(verified.not_before < now() && now() < verified.not_after);
    assert_eq!(verified.revocation, RevocationStatus::NotChecked);

    // With the root in the presented chain too, and for server authentication.
    let verifier = builder(&pki)
        .accept_any_id()
        .usage(Usage::ServerAuth)
        .build()
        .unwrap();
    let chain = [pki.issuing.cert.clone(), pki.root.cert.clone()];
    verifier.verify_chain(&leaf.cert, &chain, now()).unwrap();
}

#[test]
fn a_leaf_issued_by_the_anchor_itself() {
    let pki = Pki::new();
    let verifier = Verifier::builder(pki.issuing.anchors())
        .accept_any_id()
        .build()
        .unwrap();
    let leaf = pki.agent("/agent/a");
    verifier.verify_chain(&leaf.cert, &[], now()).unwrap();
}

#[test]
fn refuses_a_wrong_trust_anchor() {
    let pki = Pki::new();
    let other = TestCa::root("Other Root").intermediate("Other Issuing CA");
    let leaf = other.issue(&Leaf::agent("/agent/alice"));
    let err = any(&pki)
        .verify_chain(&leaf.cert, std::slice::from_ref(&other.cert), now())
        .unwrap_err();
    assert!(matches!(err, Error::Untrusted(_)), "{err}");
    assert!(err.to_string().contains("unknown issuer"), "{err}");
    // A look-alike hierarchy (same names, other keys) fails on the signatures.
    let twin = Pki::new();
    let leaf = twin.agent("/agent/alice");
    let err = check(&any(&pki), &twin, &leaf).unwrap_err();
    assert!(matches!(err, Error::Untrusted(_)), "{err}");
    // The right chain without the intermediate cannot be completed either.
    let leaf = pki.agent("/agent/alice");
    let err = any(&pki).verify_chain(&leaf.cert, &[], now()).unwrap_err();
    assert!(matches!(err, Error::Untrusted(_)), "{err}");
}

/// PARSE-3: many look-alike intermediates (the issuing CA's name, other keys) cost bounded
/// work, whether or not the real one is among them.
#[test]
fn look_alike_intermediates_cost_bounded_work() {
    let pki = Pki::new();
    let verifier = any(&pki);
    let leaf = pki.agent("/agent/a");
    let decoys: Vec<CertificateDer<'static>> = (0..60)
        .map(|_| {
            TestCa::root("Test Root")
                .intermediate("Test Issuing CA")
                .cert
        })
        .collect();
    let started = std::time::Instant::now();
    let err = verifier
        .verify_chain(&leaf.cert, &decoys, now())
        .unwrap_err();
    assert!(matches!(err, Error::Untrusted(_)), "{err}");
    let mut with_real = decoys.clone();
    with_real.push(pki.issuing.cert.clone());
    // Accepted, or refused once webpki's signature budget is spent: either way, quickly.
    let _ = verifier.verify_chain(&leaf.cert, &with_real, now());
    assert!(
        started.elapsed() < StdDuration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn refuses_expired_and_not_yet_valid() {
    let pki = Pki::new();
    let verifier = any(&pki);
    let mut expired = Leaf::agent("/agent/old");
    expired.not_before = now() - Duration::days(2);
    expired.not_after = now() - Duration::hours(1);
    let err = check(&verifier, &pki, &pki.issuing.issue(&expired)).unwrap_err();
    assert!(matches!(err, Error::Expired { .. }), "{err}");
    assert!(err.to_string().contains("expired at"), "{err}");

    let mut early = Leaf::agent("/agent/new");
    early.not_before = now() + Duration::hours(1);
    early.not_after = now() + Duration::days(1);
    let err = check(&verifier, &pki, &pki.issuing.issue(&early)).unwrap_err();
    assert!(matches!(err, Error::NotYetValid { .. }), "{err}");

    // The same certificate at another time.
    let good = pki.agent("/agent/a");
    let later = now() + Duration::days(2);
    assert!(matches!(
        verifier.verify_chain(&good.cert, &pki.chain(), later),
        Err(Error::Expired { .. })
    ));
}

/// A verified path is kept, but only while every certificate of it is valid: the leaf's and
/// the intermediate's windows both end the reuse, and another set of intermediates, another
/// usage or another verifier is another path.
#[test]
fn verified_paths_are_reused_only_while_valid() {
    let pki = Pki::new();
    let verifier = any(&pki);
    let mut long = Leaf::agent("/agent/long");
    long.not_after = now() + Duration::days(400);
    let leaf = pki.issuing.issue(&long);
    let at = |t| verifier.verify_chain(&leaf.cert, &pki.chain(), t);
    at(now()).unwrap();
    assert_eq!(verifier.cached_paths(), 1);
    at(now() + Duration::days(300)).unwrap();
    assert_eq!(verifier.cached_paths(), 1, "the same path, reused");
    // The issuing CA (valid for 365 days) expires before the leaf.
    assert!(matches!(
        at(now() + Duration::days(370)),
        Err(Error::Expired { .. })
    ));
    assert!(matches!(
        at(now() - Duration::hours(1)),
        Err(Error::NotYetValid { .. })
    ));
    at(now()).unwrap();

    // Without the intermediate there is no path, cached or not.
    assert!(matches!(
        verifier.verify_chain(&leaf.cert, &[], now()),
        Err(Error::Untrusted(_))
    ));
    // Another usage is checked on its own.
    let server = builder(&pki)
        .accept_any_id()
        .usage(Usage::ServerAuth)
        .build()
        .unwrap();
    let mut client_only = Leaf::agent("/agent/client");
    client_only.eku = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client_only = pki.issuing.issue(&client_only);
    verifier
        .verify_chain(&client_only.cert, &pki.chain(), now())
        .unwrap();
    assert!(matches!(
        server.verify_chain(&client_only.cert, &pki.chain(), now()),
        Err(Error::WrongUsage(_))
    ));
    // Refusals are not kept; a verifier expecting other IDs has its own paths.
    let strict = builder(&pki)
        .expect_id(IdPattern::parse(&agent("/agent/other")).unwrap())
        .build()
        .unwrap();
    for _ in 0..2 {
        assert!(matches!(
            strict.verify_chain(&leaf.cert, &pki.chain(), now()),
            Err(Error::IdentityMismatch { .. })
        ));
    }
    assert_eq!(strict.cached_paths(), 0);

    let uncached = builder(&pki)
        .accept_any_id()
        .path_cache_capacity(0)
        .build()
        .unwrap();
    uncached
        .verify_chain(&leaf.cert, &pki.chain(), now())
        .unwrap();
    assert_eq!(uncached.cached_paths(), 0);
}

/// A reused path still has its revocation checked on every call.
#[tokio::test]
async fn a_reused_path_is_still_checked_for_revocation() {
    let pki = Pki::new();
    let responder = Responder::start(&pki, Duration::hours(12)).await;
    let verifier = ocsp_verifier(&pki, &responder.server.url).build().unwrap();
    let leaf = pki.agent("/agent/reused");
    verifier.verify(&leaf.cert, &pki.chain()).await.unwrap();
    check(&verifier, &pki, &leaf).unwrap();
    assert_eq!(verifier.cached_paths(), 1);
    responder.revoke(&leaf.serial, CoreReason::KeyCompromise);
    assert!(matches!(
        verifier.verify_fresh(&leaf.cert, &pki.chain()).await,
        Err(Error::Revoked { .. })
    ));
    assert!(matches!(
        check(&verifier, &pki, &leaf),
        Err(Error::Revoked { .. })
    ));
}

#[test]
fn refuses_wrong_missing_or_several_uri_sans() {
    let pki = Pki::new();
    let verifier = any(&pki);
    let with_uris = |uris: &[&str], dns: &[&str]| {
        let mut leaf = Leaf::agent("/unused");
        leaf.uris = uris.iter().map(|s| s.to_string()).collect();
        leaf.dns = dns.iter().map(|s| s.to_string()).collect();
        check(&verifier, &pki, &pki.issuing.issue(&leaf))
    };
    assert!(matches!(
        with_uris(&[], &["a.example.org"]),
        Err(Error::NoUriSan)
    ));
    assert!(matches!(
        with_uris(&[&agent("/agent/a"), &agent("/agent/b")], &[]),
        Err(Error::MultipleUriSans(2))
    ));
    for uri in [
        "https://example.org/agent/a",
        "urn:agent:a",
        "spiffe://Example.org/agent/a",
        "spiffe://example.org/agent/../a",
        "spiffe://example.org:8443/agent/a",
        "spiffe://example.org/agent/a?x=1",
        "spiffe://example.org",
    ] {
        match with_uris(&[uri], &[]) {
            Err(Error::NotSpiffeId { uri: got, .. }) => assert_eq!(got, uri),
            other => panic!("{uri}: {other:?}"),
        }
    }
    // A DNS name beside the one URI is fine.
    with_uris(&[&agent("/agent/svc")], &["svc.example.org"]).unwrap();
}

#[test]
fn refuses_agents_not_expected() {
    let pki = Pki::new();
    let verifier = builder(&pki)
        .expect_id(IdPattern::parse(&agent("/agent/team/*")).unwrap())
        .expect_id(IdPattern::parse(&agent("/agent/ops/alice")).unwrap())
        .build()
        .unwrap();
    for (path, ok) in [
        ("/agent/team/bob", true),
        ("/agent/ops/alice", true),
        ("/agent/team/bob/x", false),
        ("/agent/ops/alicia", false),
        ("/agent/team", false),
    ] {
        let result = check(&verifier, &pki, &pki.agent(path));
        match (ok, result) {
            (true, Ok(v)) => assert_eq!(v.spiffe_id.path(), path),
            (false, Err(Error::IdentityMismatch { id, expected })) => {
                assert_eq!(id.path(), path);
                assert!(expected.contains("/agent/team/* or "), "{expected}");
            }
            (_, other) => panic!("{path}: {other:?}"),
        }
    }
    // Another trust domain under the same CA never matches.
    let mut foreign = Leaf::agent("/x");
    foreign.uris = vec!["spiffe://other.org/agent/team/bob".into()];
    assert!(matches!(
        check(&verifier, &pki, &pki.issuing.issue(&foreign)),
        Err(Error::IdentityMismatch { .. })
    ));
}

#[test]
fn refuses_ca_certificates_as_leaves() {
    let pki = Pki::new();
    let verifier = any(&pki);
    let err = verifier
        .verify_chain(&pki.issuing.cert, &[], now())
        .unwrap_err();
    assert!(matches!(err, Error::CaCertificate), "{err}");
    let mut ca = Leaf::agent("/agent/ca");
    ca.ca = true;
    assert!(matches!(
        check(&verifier, &pki, &pki.issuing.issue(&ca)),
        Err(Error::CaCertificate)
    ));
}

#[test]
fn refuses_the_wrong_usage() {
    let pki = Pki::new();
    let mut server_only = Leaf::agent("/agent/svc");
    server_only.eku = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = pki.issuing.issue(&server_only);
    assert!(matches!(
        check(&any(&pki), &pki, &leaf),
        Err(Error::WrongUsage(Usage::ClientAuth))
    ));
    let server = builder(&pki)
        .accept_any_id()
        .usage(Usage::ServerAuth)
        .build()
        .unwrap();
    check(&server, &pki, &leaf).unwrap();
    // The OCSP responder's certificate is no agent certificate.
    assert!(check(&server, &pki, &pki.responder).is_err());
}

#[test]
fn garbage_is_malformed_not_a_panic() {
    let pki = Pki::new();
    let verifier = any(&pki);
    let leaf = pki.agent("/agent/a");
    for len in [0, 1, 10, leaf.cert.len() / 2, leaf.cert.len() - 1] {
        let cut = CertificateDer::from(leaf.cert[..len].to_vec());
        assert!(matches!(
            verifier.verify_chain(&cut, &pki.chain(), now()),
            Err(Error::MalformedCertificate(_))
        ));
    }
    let mut trailing = leaf.cert.to_vec();
    trailing.push(0);
    assert!(matches!(
        verifier.verify_chain(&CertificateDer::from(trailing), &pki.chain(), now()),
        Err(Error::MalformedCertificate(_))
    ));
}

#[test]
fn builder_refuses_bad_settings() {
    let pki = Pki::new();
    assert!(matches!(
        builder(&pki).build(),
        Err(Error::NoIdentityPolicy)
    ));
    for url in ["https://ca.example/ocsp", "http://u:p@ca/ocsp", "::"] {
        assert!(matches!(
            builder(&pki)
                .accept_any_id()
                .revocation(Revocation::ocsp(url))
                .build(),
            Err(Error::InvalidUrl { .. })
        ));
    }
    assert!(matches!(
        builder(&pki)
            .accept_any_id()
            .revocation(Revocation::crl(b"not a crl".to_vec()))
            .build(),
        Err(Error::InvalidCrl(_))
    ));
    assert!(matches!(
        crate::TrustAnchors::from_pem_or_der(b"-----BEGIN X-----\nAAAA\n-----END X-----\n"),
        Err(Error::InvalidTrustAnchor(_))
    ));
}

// --- OCSP ---------------------------------------------------------------------------------

fn ocsp_verifier(pki: &Pki, url: &str) -> Builder {
    builder(pki)
        .accept_any_id()
        .revocation(Revocation::ocsp(url))
        .timeout(StdDuration::from_secs(5))
}

#[tokio::test]
async fn ocsp_good_and_revoked() {
    let pki = Pki::new();
    let responder = Responder::start(&pki, Duration::hours(12)).await;
    let verifier = ocsp_verifier(&pki, &responder.server.url).build().unwrap();
    let good = pki.agent("/agent/good");
    let victim = pki.agent("/agent/victim");
    responder.revoke(&victim.serial, CoreReason::KeyCompromise);

    let verified = verifier.verify(&good.cert, &pki.chain()).await.unwrap();
    match verified.revocation {
        RevocationStatus::Good {
            source,
            this_update,
            next_update,
        } => {
            assert_eq!(source, RevocationSource::Ocsp);
            assert!(this_update <= now() && now() < next_update);
        }
        other => panic!("{other:?}"),
    }
    match verifier.verify(&victim.cert, &pki.chain()).await {
        Err(Error::Revoked {
            serial,
            revoked_at,
            reason,
            by,
        }) => {
            assert_eq!(serial, hex::encode(&victim.serial));
            assert!(revoked_at.is_some());
            assert_eq!(reason, Some(RevocationReason::KeyCompromise));
            assert_eq!(by, RevocationSource::Ocsp);
        }
        other => panic!("{other:?}"),
    }
    // The revoked answer is cached too: the synchronous check refuses without asking again.
    let hits = responder.server.hits();
    assert!(matches!(
        check(&verifier, &pki, &victim),
        Err(Error::Revoked { .. })
    ));
    assert_eq!(responder.server.hits(), hits);
}

#[tokio::test]
async fn ocsp_at_the_responder_the_certificate_names() {
    let pki = Pki::new();
    let responder = Responder::start(&pki, Duration::hours(12)).await;
    let verifier = builder(&pki)
        .accept_any_id()
        .revocation(Revocation::ocsp_from_certificate())
        .build()
        .unwrap();
    let mut spec = Leaf::agent("/agent/aia");
    spec.ocsp_url = Some(responder.server.url.clone());
    let leaf = pki.issuing.issue(&spec);
    verifier.verify(&leaf.cert, &pki.chain()).await.unwrap();
    assert_eq!(responder.server.hits(), 1);
    // No responder named: no answer, so the (closed) policy refuses.
    let bare = pki.agent("/agent/bare");
    match verifier.verify(&bare.cert, &pki.chain()).await {
        Err(Error::RevocationUnavailable(why)) => assert!(why.contains("names no"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_ocsp_cache_hit_does_not_refetch() {
    let pki = Pki::new();
    let responder = Responder::start(&pki, Duration::hours(12)).await;
    let verifier = ocsp_verifier(&pki, &responder.server.url).build().unwrap();
    let leaf = pki.agent("/agent/a");
    for _ in 0..5 {
        verifier.verify(&leaf.cert, &pki.chain()).await.unwrap();
        check(&verifier, &pki, &leaf).unwrap();
    }
    assert_eq!(responder.server.hits(), 1);
    // Another certificate is another entry.
    verifier
        .verify(&pki.agent("/agent/b").cert, &pki.chain())
        .await
        .unwrap();
    assert_eq!(responder.server.hits(), 2);
}

/// A poller sees a revocation at its next look although the cached answer was still fresh,
/// and what it learns is cached for everyone else.
#[tokio::test]
async fn verify_fresh_asks_the_responder_every_time() {
    let pki = Pki::new();
    let responder = Responder::start(&pki, Duration::hours(12)).await;
    let verifier = ocsp_verifier(&pki, &responder.server.url).build().unwrap();
    let leaf = pki.agent("/agent/poller");
    for expected_hits in 1..=3 {
        let verified = verifier
            .verify_fresh(&leaf.cert, &pki.chain())
            .await
            .unwrap();
        assert_eq!(verified.revocation.name(), "good");
        assert_eq!(responder.server.hits(), expected_hits);
    }
    responder.revoke(&leaf.serial, CoreReason::Superseded);
    assert!(
        verifier.verify(&leaf.cert, &pki.chain()).await.is_ok(),
        "the cached answer still stands for verify"
    );
    assert!(matches!(
        verifier.verify_fresh(&leaf.cert, &pki.chain()).await,
        Err(Error::Revoked {
            reason: Some(RevocationReason::Superseded),
            ..
        })
    ));
    assert!(matches!(
        check(&verifier, &pki, &leaf),
        Err(Error::Revoked { .. })
    ));

    // No responder: the failure policy decides, as for verify.
    let verifier = ocsp_verifier(&pki, &closed_port_url("/ocsp"))
        .build()
        .unwrap();
    assert!(matches!(
        verifier.verify_fresh(&leaf.cert, &pki.chain()).await,
        Err(Error::RevocationUnavailable(_))
    ));
}

#[tokio::test]
async fn a_fetched_crl_is_fetched_again_by_verify_fresh() {
    let pki = Pki::new();
    let good = pki.agent("/agent/good");
    let crl = pki.issuing.crl(
        &[],
        now() - Duration::minutes(1),
        now() + Duration::hours(12),
    );
    let server = TestServer::fixed("/crl", crl).await;
    let verifier = builder(&pki)
        .accept_any_id()
        .revocation(Revocation::crl_url(&server.url))
        .build()
        .unwrap();
    verifier.verify(&good.cert, &pki.chain()).await.unwrap();
    verifier.verify(&good.cert, &pki.chain()).await.unwrap();
    assert_eq!(server.hits(), 1);
    verifier
        .verify_fresh(&good.cert, &pki.chain())
        .await
        .unwrap();
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn ocsp_answers_are_kept_until_next_update_or_the_maximum_age() {
    let pki = Pki::new();
    let responder = Responder::start(&pki, Duration::hours(2)).await;
    let leaf = pki.agent("/agent/a");

    let clock = TestClock::new();
    let verifier = ocsp_verifier(&pki, &responder.server.url)
        .clock(clock.clone())
        .max_cache_age(StdDuration::from_secs(24 * 3600))
        .build()
        .unwrap();
    verifier.verify(&leaf.cert, &pki.chain()).await.unwrap();
    clock.advance(Duration::minutes(50));
    verifier.verify(&leaf.cert, &pki.chain()).await.unwrap();
    assert_eq!(responder.server.hits(), 1);
    // Past the answer's nextUpdate the cache has nothing: the responder is asked again. (Its
    // answers are dated by the real clock, so to the moved clock the new one is stale.)
    clock.advance(Duration::minutes(71));
    assert!(matches!(
        verifier.verify(&leaf.cert, &pki.chain()).await,
        Err(Error::OcspStale { .. })
    ));
    assert_eq!(responder.server.hits(), 2);

    let clock = TestClock::new();
    let short = ocsp_verifier(&pki, &responder.server.url)
        .clock(clock.clone())
        .max_cache_age(StdDuration::from_secs(60))
        .build()
        .unwrap();
    short.verify(&leaf.cert, &pki.chain()).await.unwrap();
    assert_eq!(responder.server.hits(), 3);
    clock.advance(Duration::minutes(2));
    short.verify(&leaf.cert, &pki.chain()).await.unwrap();
    assert_eq!(
        responder.server.hits(),
        4,
        "the maximum age bounds the cache"
    );
}

#[tokio::test]
async fn fail_closed_and_fail_open_when_the_responder_is_unreachable() {
    let pki = Pki::new();
    let url = closed_port_url("/ocsp");
    let leaf = pki.agent("/agent/a");
    let closed = ocsp_verifier(&pki, &url).build().unwrap();
    match closed.verify(&leaf.cert, &pki.chain()).await {
        Err(Error::RevocationUnavailable(why)) => assert!(why.contains("connect"), "{why}"),
        other => panic!("{other:?}"),
    }
    let open = ocsp_verifier(&pki, &url)
        .failure_policy(FailurePolicy::Open)
        .build()
        .unwrap();
    let verified = open.verify(&leaf.cert, &pki.chain()).await.unwrap();
    assert!(
        matches!(&verified.revocation, RevocationStatus::Unavailable { reason } if reason.contains("connect")),
        "{:?}",
        verified.revocation
    );
    // Open does not mean blind: a bad certificate is still refused.
    let other = Pki::new().agent("/agent/a");
    assert!(matches!(
        open.verify(&other.cert, &pki.chain()).await,
        Err(Error::Untrusted(_))
    ));
}

#[tokio::test]
async fn fail_closed_and_fail_open_when_the_responder_times_out() {
    let pki = Pki::new();
    let silent = TestServer::silent("/ocsp").await;
    let leaf = pki.agent("/agent/a");
    for policy in [FailurePolicy::Closed, FailurePolicy::Open] {
        let verifier = ocsp_verifier(&pki, &silent.url)
            .timeout(StdDuration::from_millis(300))
            .failure_policy(policy)
            .build()
            .unwrap();
        let started = std::time::Instant::now();
        let result = verifier.verify(&leaf.cert, &pki.chain()).await;
        assert!(
            started.elapsed() < StdDuration::from_secs(3),
            "the timeout held"
        );
        match (policy, result) {
            (FailurePolicy::Closed, Err(Error::RevocationUnavailable(why)))
            | (
                FailurePolicy::Open,
                Ok(VerifiedAgent {
                    revocation: RevocationStatus::Unavailable { reason: why },
                    ..
                }),
            ) => assert!(why.contains("no answer within"), "{why}"),
            (policy, other) => panic!("{policy:?}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn temporary_errors_follow_the_policy_but_bad_answers_never_do() {
    let pki = Pki::new();
    let leaf = pki.agent("/agent/a");
    let try_later = TestServer::fixed("/ocsp", vec![0x30, 0x03, 0x0a, 0x01, 0x03]).await;
    let http_error = TestServer::start("/ocsp", |_| (503, Vec::new())).await;
    for server in [&try_later, &http_error] {
        let open = ocsp_verifier(&pki, &server.url)
            .failure_policy(FailurePolicy::Open)
            .build()
            .unwrap();
        let verified = open.verify(&leaf.cert, &pki.chain()).await.unwrap();
        assert_eq!(verified.revocation.name(), "unavailable");
        let closed = ocsp_verifier(&pki, &server.url).build().unwrap();
        assert!(matches!(
            closed.verify(&leaf.cert, &pki.chain()).await,
            Err(Error::RevocationUnavailable(_))
        ));
    }

    let mut stale = crate::ocsp::test_responses::Spec::new(
        &pki.issuing.cert,
        &leaf.serial,
        &pki.responder.key,
        &pki.responder.cert,
        now(),
    );
    stale.this_update = now() - Duration::days(3);
    stale.next_update = Some(now() - Duration::days(1));
    let mut forged = crate::ocsp::test_responses::Spec::new(
        &pki.issuing.cert,
        &leaf.serial,
        &pki.responder.key,
        &pki.responder.cert,
        now(),
    );
    forged.signature = crate::ocsp::test_responses::Signature::Corrupted;
    let unauthorized = vec![0x30, 0x03, 0x0a, 0x01, 0x06];
    for (body, kind) in [
        (stale.build(), "ocspStale"),
        (forged.build(), "ocspBadSignature"),
        (unauthorized, "ocspRefused"),
        (b"<html>".to_vec(), "ocspMalformed"),
    ] {
        let server = TestServer::fixed("/ocsp", body).await;
        let open = ocsp_verifier(&pki, &server.url)
            .failure_policy(FailurePolicy::Open)
            .build()
            .unwrap();
        let err = open.verify(&leaf.cert, &pki.chain()).await.unwrap_err();
        assert_eq!(err.kind(), kind, "{err}");
        // Nothing bad is cached: the next check asks again.
        let _ = open.verify(&leaf.cert, &pki.chain()).await;
        assert_eq!(server.hits(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_synchronous_check_uses_the_cache_and_refreshes_in_the_background() {
    let pki = Pki::new();
    let responder = Responder::start(&pki, Duration::hours(12)).await;
    let leaf = pki.agent("/agent/a");

    let closed = ocsp_verifier(&pki, &responder.server.url).build().unwrap();
    match check(&closed, &pki, &leaf) {
        Err(Error::RevocationUnavailable(why)) => assert!(why.contains("being fetched"), "{why}"),
        other => panic!("{other:?}"),
    }
    // The background fetch fills the cache; no further request is needed after that.
    let verified = eventually(|| check(&closed, &pki, &leaf).ok()).await;
    assert!(matches!(verified.revocation, RevocationStatus::Good { .. }));
    check(&closed, &pki, &leaf).unwrap();
    assert_eq!(responder.server.hits(), 1);

    // Fail-open admits at once, and learns of the revocation in the background.
    let victim = pki.agent("/agent/victim");
    responder.revoke(&victim.serial, CoreReason::Superseded);
    let open = ocsp_verifier(&pki, &responder.server.url)
        .failure_policy(FailurePolicy::Open)
        .build()
        .unwrap();
    assert_eq!(
        check(&open, &pki, &victim).unwrap().revocation.name(),
        "unavailable"
    );
    let err = eventually(|| check(&open, &pki, &victim).err()).await;
    assert!(
        matches!(
            err,
            Error::Revoked {
                reason: Some(RevocationReason::Superseded),
                ..
            }
        ),
        "{err}"
    );
}

/// Polls `f` until it returns something (at most five seconds).
async fn eventually<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + StdDuration::from_secs(5);
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(std::time::Instant::now() < deadline, "never happened");
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
}

// --- CRL ----------------------------------------------------------------------------------

fn crl_verifier(pki: &Pki, crl: Vec<u8>) -> Result<Verifier, Error> {
    builder(pki)
        .accept_any_id()
        .revocation(Revocation::crl(crl))
        .build()
}

#[test]
fn crl_good_and_revoked() {
    let pki = Pki::new();
    let good = pki.agent("/agent/good");
    let victim = pki.agent("/agent/victim");
    let plain = pki.agent("/agent/plain");
    let crl = pki.issuing.crl(
        &[
            (&victim.serial, Some(rcgen::RevocationReason::KeyCompromise)),
            (&plain.serial, None),
        ],
        now() - Duration::hours(1),
        now() + Duration::hours(23),
    );
    let verifier = crl_verifier(&pki, crl.clone()).unwrap();
    let verified = check(&verifier, &pki, &good).unwrap();
    assert!(matches!(
        verified.revocation,
        RevocationStatus::Good {
            source: RevocationSource::Crl,
            ..
        }
    ));
    match check(&verifier, &pki, &victim) {
        Err(Error::Revoked {
            serial,
            revoked_at,
            reason,
            by,
        }) => {
            assert_eq!(serial, hex::encode(&victim.serial));
            assert!(revoked_at.is_some());
            assert_eq!(reason, Some(RevocationReason::KeyCompromise));
            assert_eq!(by, RevocationSource::Crl);
        }
        other => panic!("{other:?}"),
    }
    let err = check(&verifier, &pki, &plain).unwrap_err();
    assert!(err.to_string().contains("no reason given"), "{err}");
    // PEM works as well as DER.
    let pem = pem::encode(&pem::Pem::new("X509 CRL", crl));
    let verifier = crl_verifier(&pki, pem.into_bytes()).unwrap();
    assert!(matches!(
        check(&verifier, &pki, &victim),
        Err(Error::Revoked { .. })
    ));
}

#[test]
fn crl_stale_future_foreign_and_forged_are_refused() {
    let pki = Pki::new();
    let leaf = pki.agent("/agent/a");
    let stale = pki
        .issuing
        .crl(&[], now() - Duration::days(2), now() - Duration::hours(1));
    assert!(matches!(
        check(&crl_verifier(&pki, stale).unwrap(), &pki, &leaf),
        Err(Error::CrlStale { .. })
    ));
    let future = pki
        .issuing
        .crl(&[], now() + Duration::hours(1), now() + Duration::days(1));
    assert!(matches!(
        check(&crl_verifier(&pki, future).unwrap(), &pki, &leaf),
        Err(Error::CrlNotYetValid { .. })
    ));
    let foreign = TestCa::root("Other Root").intermediate("Other Issuing CA");
    let crl = foreign.crl(&[], now() - Duration::hours(1), now() + Duration::hours(1));
    assert!(matches!(
        check(&crl_verifier(&pki, crl).unwrap(), &pki, &leaf),
        Err(Error::CrlNotAuthoritative(_))
    ));
    // Same issuer name, another key: the signature gives it away.
    let impostor = TestCa::root("Other Root").intermediate("Test Issuing CA");
    let crl = impostor.crl(&[], now() - Duration::hours(1), now() + Duration::hours(1));
    assert!(matches!(
        check(&crl_verifier(&pki, crl).unwrap(), &pki, &leaf),
        Err(Error::CrlBadSignature)
    ));
}

#[tokio::test]
async fn a_fetched_crl_is_cached_until_it_is_due() {
    let pki = Pki::new();
    let good = pki.agent("/agent/good");
    let victim = pki.agent("/agent/victim");
    let crl = pki.issuing.crl(
        &[(&victim.serial, Some(rcgen::RevocationReason::Superseded))],
        now() - Duration::minutes(1),
        now() + Duration::hours(12),
    );
    let server = TestServer::fixed("/crl", crl).await;
    let verifier = builder(&pki)
        .accept_any_id()
        .revocation(Revocation::crl_url(&server.url))
        .build()
        .unwrap();
    for _ in 0..3 {
        verifier.verify(&good.cert, &pki.chain()).await.unwrap();
        check(&verifier, &pki, &good).unwrap();
        assert!(matches!(
            verifier.verify(&victim.cert, &pki.chain()).await,
            Err(Error::Revoked {
                by: RevocationSource::Crl,
                ..
            })
        ));
    }
    assert_eq!(server.hits(), 1);

    let unreachable = closed_port_url("/crl");
    for policy in [FailurePolicy::Closed, FailurePolicy::Open] {
        let verifier = builder(&pki)
            .accept_any_id()
            .revocation(Revocation::crl_url(&unreachable))
            .failure_policy(policy)
            .build()
            .unwrap();
        let result = verifier.verify(&good.cert, &pki.chain()).await;
        match policy {
            FailurePolicy::Closed => {
                assert!(matches!(result, Err(Error::RevocationUnavailable(_))));
            }
            _ => assert_eq!(result.unwrap().revocation.name(), "unavailable"),
        }
    }
}
