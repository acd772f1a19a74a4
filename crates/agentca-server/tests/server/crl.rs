//! `/crl` and revocation propagation: the served CRL lists revocations within the debounce
//! delay, keeps a strictly increasing number across restarts, passes pkilint, and makes
//! `openssl verify -crl_check` reject a revoked certificate.

use std::time::{Duration, Instant};

use agentca_core::ocsp::{CertStatus, HashAlgorithm};
use agentca_core::store::RevocationReason;
use hyper::{Method, StatusCode};

use super::support::*;

/// REL-5: when the revoke command (revoke + hook) returns, OCSP already answers `revoked`,
/// and the CRL lists the serial within the debounce delay plus 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reaches_ocsp_at_once_and_the_crl_within_seconds() {
    let ca = TestCa::new();
    let config = test_config();
    let debounce = config.crl_debounce;
    let server = Running::start(&ca, config).await;
    let record = ca.issue();
    server
        .blocking({
            let r = record.clone();
            move |h| h.issued(&r)
        })
        .await;
    let issuer = ca.issuer();
    let request = ocsp_request(
        &issuer,
        HashAlgorithm::Sha1,
        record.intent.serial.as_bytes(),
        None,
    );
    assert_eq!(
        status_of(&post_ocsp(server.addrs.http, request.clone()).await.body),
        Ok(CertStatus::Good)
    );

    let authority = ca.authority.clone();
    let hooks = server.hooks.clone();
    let serial = record.intent.serial;
    // The revoke command as the admin handler runs it: store, then hook, then return.
    let returned = tokio::task::spawn_blocking(move || {
        let revoked = authority
            .revoke(&serial, RevocationReason::KeyCompromise)
            .unwrap();
        hooks.revoked(&[revoked]);
        Instant::now()
    })
    .await
    .unwrap();

    let reply = post_ocsp(server.addrs.http, request).await;
    let ocsp_delay = returned.elapsed();
    assert!(
        matches!(status_of(&reply.body), Ok(CertStatus::Revoked { .. })),
        "the first request after revoke returned must say revoked"
    );

    let deadline = returned + debounce + Duration::from_secs(2);
    let crl_delay = loop {
        let reply = get(server.addrs.http, "/crl").await;
        assert_eq!(reply.status, StatusCode::OK);
        if crl_serials(&reply.body)
            .iter()
            .any(|s| s.as_slice() == serial.as_bytes())
        {
            break returned.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "the CRL did not list the serial in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!(
        "revocation propagation: OCSP {} ms (first request after revoke returned), CRL {} ms (debounce {} ms)",
        ocsp_delay.as_millis(),
        crl_delay.as_millis(),
        debounce.as_millis()
    );
    server.stop().await;
}

/// REV-5: CRL numbers strictly increase, across publications and across a restart on the
/// same data directory; the served CRL passes pkilint; `/crl.pem` is the same CRL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crl_numbers_increase_across_restarts() {
    let ca = TestCa::new();
    let server = Running::start(&ca, test_config()).await;
    let first = get(server.addrs.http, "/crl").await;
    assert_eq!(first.header("content-type"), Some("application/pkix-crl"));
    let n1 = crl_number(&first.body);
    let published = server.blocking(|h| h.publish_crl().unwrap()).await;
    assert!(published.number > n1);
    let second = get(server.addrs.http, "/crl").await;
    assert_eq!(crl_number(&second.body), published.number);
    agentca_testkit::pkilint_crl(&second.body);

    let pem = get(server.addrs.http, "/crl.pem").await;
    let text = String::from_utf8(pem.body.to_vec()).unwrap();
    assert!(text.starts_with("-----BEGIN X509 CRL-----\n"));
    assert_eq!(pem::parse(&text).unwrap().contents(), &second.body[..]);

    // Revalidation by entity tag.
    let etag = second.header("etag").unwrap().to_owned();
    let again = request(
        server.addrs.http,
        Method::GET,
        "/crl",
        &[("if-none-match", &etag)],
        vec![],
    )
    .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);

    server.stop().await;
    let ca = ca.reopen();
    let server = Running::start(&ca, test_config()).await;
    let after = crl_number(&get(server.addrs.http, "/crl").await.body);
    assert!(
        after > published.number,
        "{after} after restart, {} before",
        published.number
    );
    server.stop().await;
}

/// `openssl verify -crl_check` with the downloaded CRL rejects the revoked certificate and
/// accepts the good one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_verify_with_the_served_crl() {
    let ca = TestCa::new();
    let server = Running::start(&ca, test_config()).await;
    let good = ca.issue();
    let revoked = ca.issue();
    let authority = ca.authority.clone();
    let serial = revoked.intent.serial;
    let revoked_record = tokio::task::spawn_blocking(move || {
        authority
            .revoke(&serial, RevocationReason::Superseded)
            .unwrap()
    })
    .await
    .unwrap();
    server.blocking(move |h| h.revoked(&[revoked_record])).await;
    let crl = server.blocking(|h| h.publish_crl().unwrap()).await;
    let served = get(server.addrs.http, "/crl").await;
    assert_eq!(&served.body[..], &crl.der[..]);

    let issuing = ca.authority.ca().cert_der().to_vec();
    let root = ca.ca.cert_der("root.pem").unwrap();
    agentca_testkit::openssl_verify_der_with_crl(
        &good.der,
        std::slice::from_ref(&issuing),
        &root,
        &served.body,
    )
    .assert_accepted();
    agentca_testkit::openssl_verify_der_with_crl(&revoked.der, &[issuing], &root, &served.body)
        .assert_rejected_with("certificate revoked");
    server.stop().await;
}

/// `/ca.pem` is the issuing CA then the root; `/ca.crt` the issuing CA in DER (the AIA
/// caIssuers target).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_certificates_are_served() {
    let ca = TestCa::new();
    let server = Running::start(&ca, test_config()).await;
    let chain = get(server.addrs.http, "/ca.pem").await;
    assert_eq!(
        chain.header("content-type"),
        Some("application/pem-certificate-chain")
    );
    let blocks = pem::parse_many(&chain.body).unwrap();
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0].contents(), ca.authority.ca().cert_der());
    assert_eq!(blocks[1].contents(), ca.ca.cert_der("root.pem").unwrap());
    let der = get(server.addrs.http, "/ca.crt").await;
    assert_eq!(der.header("content-type"), Some("application/pkix-cert"));
    assert_eq!(&der.body[..], ca.authority.ca().cert_der());
    server.stop().await;
}
