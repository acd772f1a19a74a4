#![allow(clippy::unwrap_used)]

use time::Duration;

use super::test_responses::{Signature, Spec, Status, error_response};
use super::*;
use crate::test_pki::{Leaf, Pki, TestCa, now};

const SKEW: Duration = Duration::minutes(5);

fn algs() -> &'static [&'static dyn SignatureVerificationAlgorithm] {
    rustls::crypto::aws_lc_rs::default_provider()
        .signature_verification_algorithms
        .all
}

fn check(pki: &Pki, serial: &[u8], der: &[u8]) -> Result<Answer, Error> {
    let issuer = Issuer::new(&pki.issuing.cert).unwrap();
    check_response(der, &issuer, serial, now(), SKEW, algs())
}

fn delegated<'a>(pki: &'a Pki, serial: &[u8]) -> Spec<'a> {
    Spec::new(
        &pki.issuing.cert,
        serial,
        &pki.responder.key,
        &pki.responder.cert,
        now(),
    )
}

#[test]
fn good_from_the_delegated_responder() {
    let pki = Pki::new();
    let serial = [0x42; 16];
    let answer = check(&pki, &serial, &delegated(&pki, &serial).build()).unwrap();
    assert_eq!(answer.status, AnswerStatus::Good);
    assert_eq!(answer.this_update, now() - Duration::minutes(1));
    assert_eq!(answer.next_update, now() + Duration::hours(12));
}

#[test]
fn good_from_the_issuer_itself_by_key_or_name_and_sha256_cert_ids() {
    let pki = Pki::new();
    let serial = [0x42; 16];
    for (by_name, sha256) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut spec = Spec::new(
            &pki.issuing.cert,
            &serial,
            &pki.issuing.key,
            &pki.issuing.cert,
            now(),
        );
        spec.by_name = by_name;
        spec.sha256 = sha256;
        spec.certs.clear();
        let answer = check(&pki, &serial, &spec.build()).unwrap();
        assert_eq!(answer.status, AnswerStatus::Good);
    }
    // A delegated responder named by name is found among the included certificates.
    let mut spec = delegated(&pki, &serial);
    spec.by_name = true;
    check(&pki, &serial, &spec.build()).unwrap();
}

#[test]
fn revoked_with_time_and_reason() {
    let pki = Pki::new();
    let serial = [0x42; 16];
    let at = now() - Duration::hours(3);
    for (code, reason) in [
        (Some(1), Some(RevocationReason::KeyCompromise)),
        (Some(4), Some(RevocationReason::Superseded)),
        (None, None),
        // Unknown codes are reported as no reason, not as a broken answer.
        (Some(99), None),
    ] {
        let mut spec = delegated(&pki, &serial);
        spec.status = Status::Revoked(at, code);
        let answer = check(&pki, &serial, &spec.build()).unwrap();
        assert_eq!(answer.status, AnswerStatus::Revoked { at, reason });
    }
}

#[test]
fn unknown_is_a_refusal() {
    let pki = Pki::new();
    let mut spec = delegated(&pki, &[1]);
    spec.status = Status::Unknown;
    assert!(matches!(
        check(&pki, &[1], &spec.build()),
        Err(Error::OcspUnknown)
    ));
}

#[test]
fn stale_future_and_open_ended_answers_are_refused() {
    let pki = Pki::new();
    let serial = [7; 16];
    let mut spec = delegated(&pki, &serial);
    spec.this_update = now() - Duration::days(2);
    spec.next_update = Some(now() - Duration::seconds(1));
    assert!(matches!(
        check(&pki, &serial, &spec.build()),
        Err(Error::OcspStale { .. })
    ));
    spec.next_update = Some(now());
    assert!(
        matches!(
            check(&pki, &serial, &spec.build()),
            Err(Error::OcspStale { .. })
        ),
        "nextUpdate equal to now is stale"
    );
    spec.next_update = None;
    assert!(matches!(
        check(&pki, &serial, &spec.build()),
        Err(Error::OcspNoNextUpdate)
    ));
    let mut spec = delegated(&pki, &serial);
    spec.this_update = now() + SKEW + Duration::seconds(1);
    spec.next_update = Some(now() + Duration::days(1));
    assert!(matches!(
        check(&pki, &serial, &spec.build()),
        Err(Error::OcspNotYetValid { .. })
    ));
    spec.this_update = now() + SKEW;
    assert!(
        check(&pki, &serial, &spec.build()).is_ok(),
        "within the clock skew"
    );
}

#[test]
fn unsigned_and_badly_signed_answers_are_refused() {
    let pki = Pki::new();
    let serial = [7; 16];
    for signature in [Signature::Corrupted, Signature::Empty] {
        let mut spec = delegated(&pki, &serial);
        spec.signature = signature;
        assert!(
            matches!(
                check(&pki, &serial, &spec.build()),
                Err(Error::OcspBadSignature)
            ),
            "{signature:?}"
        );
    }
    // Signed by a key other than the named responder's.
    let other = pki.issuing.responder();
    let mut spec = delegated(&pki, &serial);
    spec.signer = &other.key;
    assert!(matches!(
        check(&pki, &serial, &spec.build()),
        Err(Error::OcspBadSignature)
    ));
    // Naming the issuer but signed by the responder.
    let mut spec = delegated(&pki, &serial);
    spec.named = &pki.issuing.cert;
    assert!(matches!(
        check(&pki, &serial, &spec.build()),
        Err(Error::OcspBadSignature)
    ));
}

#[test]
fn answers_for_another_certificate_are_refused() {
    let pki = Pki::new();
    let serial = [7; 16];
    let spec = delegated(&pki, &[8; 16]);
    assert!(matches!(
        check(&pki, &serial, &spec.build()),
        Err(Error::OcspWrongCertificate)
    ));
    // Same serial, another issuer's hashes (signed by that issuer's own responder, which is
    // not authorized for ours either).
    let other = TestCa::root("Other Root").intermediate("Other Issuing CA");
    let mut spec = delegated(&pki, &serial);
    spec.issuer = &other.cert;
    assert!(matches!(
        check(&pki, &serial, &spec.build()),
        Err(Error::OcspWrongCertificate)
    ));
}

#[test]
fn unauthorized_responders_are_refused() {
    let pki = Pki::new();
    let serial = [7; 16];
    let expect = |responder: &crate::test_pki::Issued, why: &str| {
        let spec = Spec::new(
            &pki.issuing.cert,
            &serial,
            &responder.key,
            &responder.cert,
            now(),
        );
        match check(&pki, &serial, &spec.build()) {
            Err(Error::OcspUnauthorizedResponder(msg)) => assert!(msg.contains(why), "{msg}"),
            other => panic!("{why}: {other:?}"),
        }
    };
    // No id-kp-OCSPSigning.
    let mut no_eku = Leaf::responder();
    no_eku.eku = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    expect(&pki.issuing.issue(&no_eku), "lacks id-kp-OCSPSigning");
    // An agent certificate (no EKU restricting it to OCSP either).
    let mut plain = Leaf::agent("/agent/x");
    plain.eku.clear();
    expect(&pki.issuing.issue(&plain), "lacks id-kp-OCSPSigning");
    // A responder of another CA.
    let other = TestCa::root("Other Root").intermediate("Other Issuing CA");
    expect(&other.responder(), "not issued by the certificate's issuer");
    // A responder certificate issued by the root, not by the issuing CA.
    expect(
        &pki.root.responder(),
        "not issued by the certificate's issuer",
    );
    // Expired.
    let mut old = Leaf::responder();
    old.not_before = now() - Duration::days(10);
    old.not_after = now() - Duration::days(1);
    expect(&pki.issuing.issue(&old), "expired");
    // Named but not included.
    let mut spec = delegated(&pki, &serial);
    spec.certs.clear();
    assert!(matches!(
        check(&pki, &serial, &spec.build()),
        Err(Error::OcspUnauthorizedResponder(_))
    ));
}

#[test]
fn error_statuses() {
    let pki = Pki::new();
    for (code, temporary) in [(1, false), (2, true), (3, true), (5, false), (6, false)] {
        let result = check(&pki, &[1], &error_response(code));
        if temporary {
            assert!(
                matches!(result, Err(Error::RevocationUnavailable(_))),
                "{code}: {result:?}"
            );
        } else {
            assert!(
                matches!(result, Err(Error::OcspRefused(_))),
                "{code}: {result:?}"
            );
        }
    }
    for code in [0, 4, 7] {
        assert!(matches!(
            check(&pki, &[1], &error_response(code)),
            Err(Error::OcspMalformed(_))
        ));
    }
}

#[test]
fn critical_extensions_and_garbage_are_refused_without_panics() {
    let pki = Pki::new();
    let serial = [7; 16];
    let mut spec = delegated(&pki, &serial);
    spec.critical_extension = true;
    assert!(matches!(
        check(&pki, &serial, &spec.build()),
        Err(Error::OcspMalformed(_))
    ));
    let good = delegated(&pki, &serial).build();
    for len in 0..good.len() {
        assert!(
            check(&pki, &serial, &good[..len]).is_err(),
            "truncated at {len}"
        );
    }
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(check(&pki, &serial, &trailing).is_err());
    for i in (0..good.len()).step_by(7) {
        let mut flipped = good.clone();
        flipped[i] ^= 0x40;
        // Any outcome but a panic; a flip inside the signed data must not verify.
        if let Ok(answer) = check(&pki, &serial, &flipped) {
            assert_eq!(answer.status, AnswerStatus::Good, "byte {i}");
        }
    }
}

/// The CA's own responder (agentca-core) and this client agree on the wire format.
#[test]
fn responses_of_the_agentca_responder_are_understood() {
    use agentca_core::ocsp as core;
    let pki = Pki::new();
    let serial = [0x3b; 16];
    let key = rcgen::KeyPair::try_from(pki.responder.key.serialize_der()).unwrap();
    let signer = agentca_core::signer::KeyPairSigner::new(key).unwrap();
    let responder = core::Responder::new(&signer, &pki.responder.cert).unwrap();
    let hashes = core::IssuerHashes::from_issuer_der(&pki.issuing.cert).unwrap();

    // Our request parses on the CA side.
    let issuer = Issuer::new(&pki.issuing.cert).unwrap();
    let parsed = core::parse_request(&request(&issuer, &serial).unwrap()).unwrap();
    assert_eq!(
        parsed.cert_ids,
        [hashes.cert_id(core::HashAlgorithm::Sha1, &serial)]
    );
    assert_eq!(parsed.nonce, None);

    let at = now() - Duration::hours(1);
    for (status, expected) in [
        (core::CertStatus::Good, AnswerStatus::Good),
        (
            core::CertStatus::Revoked {
                revoked_at: at,
                reason: Some(agentca_core::store::RevocationReason::KeyCompromise),
            },
            AnswerStatus::Revoked {
                at,
                reason: Some(RevocationReason::KeyCompromise),
            },
        ),
    ] {
        for hash in core::HashAlgorithm::ALL {
            let single = core::SingleStatus {
                cert_id: hashes.cert_id(hash, &serial),
                status,
                this_update: now(),
                next_update: now() + Duration::days(1),
            };
            let der = responder.respond(&[single], now(), None).unwrap();
            assert_eq!(check(&pki, &serial, &der).unwrap().status, expected);
        }
    }
    let single = core::SingleStatus {
        cert_id: hashes.cert_id(core::HashAlgorithm::Sha1, &serial),
        status: core::CertStatus::Unknown,
        this_update: now(),
        next_update: now() + Duration::days(1),
    };
    let der = responder.respond(&[single], now(), None).unwrap();
    assert!(matches!(
        check(&pki, &serial, &der),
        Err(Error::OcspUnknown)
    ));
    let der = core::error_response(core::OcspResponseStatus::Unauthorized);
    assert!(matches!(
        check(&pki, &serial, &der),
        Err(Error::OcspRefused("unauthorized"))
    ));
}
