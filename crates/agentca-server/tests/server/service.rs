//! The service around the protocols: `/healthz`, `/metrics`, the HTTPS listener and its
//! certificate, and OCSP responder rotation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentca_core::ocsp::{self, CertStatus, HashAlgorithm};
use agentca_core::store::SerialEntry;
use axum::routing::get as route_get;
use http_body_util::{BodyExt, Empty};
use hyper::StatusCode;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use super::support::*;

/// `/healthz` says ok while storage writes, `degraded` (503) once it cannot, and recovers
/// without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_reports_storage_that_cannot_write() {
    let ca = TestCa::new();
    let server = Running::start(&ca, test_config()).await;
    let reply = get(server.addrs.http, "/healthz").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(&reply.body[..], br#"{"status":"ok"}"#);

    // A directory where the probe writes its file: the write fails even for root.
    let probe = ca.file(".healthz");
    let _ = std::fs::remove_file(&probe);
    std::fs::create_dir(&probe).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let reply = get(server.addrs.http, "/healthz").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&reply.body).contains("degraded"));
    // OCSP keeps answering from what it has.
    assert_eq!(
        status_of(&post_ocsp(server.addrs.http, b"x".to_vec()).await.body),
        Err(ocsp::OcspResponseStatus::MalformedRequest)
    );

    std::fs::remove_dir(&probe).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        get(server.addrs.http, "/healthz").await.status,
        StatusCode::OK
    );
    let text = metrics_text(server.addrs.http).await;
    assert!(metric(&text, "agentca_health_probe_failures_total") >= 1.0);
    server.stop().await;
}

/// `/metrics` in the OpenMetrics text format: requests by route and status, latency
/// histograms, OCSP cache, CRL number and age, issuance and revocation counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_cover_requests_ocsp_crl_and_issuance() {
    let ca = TestCa::new();
    let server = Running::start(&ca, test_config()).await;
    let record = ca.issue();
    server
        .blocking({
            let r = record.clone();
            move |h| h.issued(&r)
        })
        .await;
    let der = ocsp_request(
        &ca.issuer(),
        HashAlgorithm::Sha1,
        record.intent.serial.as_bytes(),
        None,
    );
    post_ocsp(server.addrs.http, der).await;
    get(server.addrs.http, "/crl").await;
    get(server.addrs.http, "/nothing-here").await;

    let reply = get(server.addrs.http, "/metrics").await;
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = String::from_utf8(reply.body.to_vec()).unwrap();
    for series in [
        "agentca_http_requests_total{listener=\"http\",route=\"ocsp\",status=\"200\"} 1",
        "agentca_http_requests_total{listener=\"http\",route=\"crl\",status=\"200\"} 1",
        "agentca_http_requests_total{listener=\"http\",route=\"other\",status=\"404\"} 1",
        "agentca_http_request_duration_seconds_bucket{le=",
        "agentca_ocsp_answers_total{answer=\"good\"} 1",
        "agentca_certificates_issued_total 1",
        "agentca_certificates_revoked_total 0",
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
    assert!(metric(&text, "agentca_crl_number") >= 1.0);
    assert!(metric(&text, "agentca_crl_age_seconds") >= 0.0);
    assert!(metric(&text, "agentca_ocsp_cache_hits_total") >= 1.0);
    assert!(metric(&text, "agentca_tls_certificate_not_after_seconds") > 0.0);
    assert!(metric(&text, "agentca_ocsp_responder_not_after_seconds") > 0.0);
    server.stop().await;
}

/// The HTTPS listener presents a certificate the CA issued to itself (recorded, audited,
/// with a good OCSP status), serves `/healthz`, answers 404 problem documents elsewhere, and
/// serves routes mounted on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listener_with_a_self_issued_certificate() {
    let ca = TestCa::new();
    let mounted = axum::Router::new().route("/acme/directory", route_get(|| async { "{}" }));
    let server = Running::start_with(&ca, test_config(), |s| s.with_https_routes(mounted)).await;

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca.ca.cert_der("root.pem").unwrap().into())
        .unwrap();
    let client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));

    let mut peer_cert = None;
    for (path, status) in [
        ("/healthz", StatusCode::OK),
        ("/acme/directory", StatusCode::OK),
        ("/ocsp", StatusCode::NOT_FOUND),
        ("/anything", StatusCode::NOT_FOUND),
    ] {
        let tcp = TcpStream::connect(server.addrs.https).await.unwrap();
        let tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        peer_cert = tls.get_ref().1.peer_certificates().map(|c| c[0].to_vec());
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let response = sender
            .send_request(
                hyper::Request::get(path)
                    .header("host", "localhost")
                    .body(Empty::<axum::body::Bytes>::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{path}");
        let content_type = response.headers().get("content-type").cloned();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        if status == StatusCode::NOT_FOUND {
            assert_eq!(content_type.unwrap(), "application/problem+json");
            let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(problem["status"], 404);
        }
    }
    // Also by IP address.
    let tcp = TcpStream::connect(server.addrs.https).await.unwrap();
    connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();

    let cert = peer_cert.unwrap();
    let (_, parsed) = x509_parser::parse_x509_certificate(&cert).unwrap();
    let san = parsed.subject_alternative_name().unwrap().unwrap().value;
    let names: Vec<String> = san.general_names.iter().map(|n| n.to_string()).collect();
    assert!(
        names
            .iter()
            .any(|n| n.contains("spiffe://example.org/agentca/server")),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n.contains("localhost")), "{names:?}");
    assert!(names.iter().any(|n| n.contains("7f:00:00:01")), "{names:?}");
    let eku = parsed.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    let lifetime =
        parsed.validity().not_after.timestamp() - parsed.validity().not_before.timestamp();
    assert_eq!(lifetime, 7 * 86400 + 300);
    // pkilint's domain-name check wants at least two labels; "localhost" is one (and valid in
    // RFC 5280 §4.2.1.6's preferred name syntax), so that one finding is allowed here.
    agentca_testkit::pkilint_cert_allowing(&cert, &["pkix.invalid_domain_name_syntax"]);

    // Recorded in the store and the audit log, and answerable by OCSP without a signature.
    let serial: [u8; 16] = parsed.raw_serial().try_into().unwrap();
    let serial = agentca_core::store::Serial::from_bytes(serial).unwrap();
    match ca.ca.store().serial(&serial).unwrap() {
        Some(SerialEntry::Issued(record)) => {
            assert_eq!(
                record.intent.agent_id,
                "spiffe://example.org/agentca/server"
            );
            assert_eq!(record.der, cert);
        }
        other => panic!("{other:?}"),
    }
    let audit = std::fs::read_to_string(ca.file("audit.log")).unwrap();
    assert!(audit.contains(&serial.to_hex()) && audit.contains("https-listener"));
    let before = server.hooks.responder_signatures();
    let der = ocsp_request(&ca.issuer(), HashAlgorithm::Sha256, serial.as_bytes(), None);
    assert_eq!(
        status_of(&post_ocsp(server.addrs.http, der).await.body),
        Ok(CertStatus::Good)
    );
    assert_eq!(server.hooks.responder_signatures(), before);
    server.stop().await;
}

/// Rotation: a new responder key and certificate (id-kp-OCSPSigning, ocsp-nocheck, issued by
/// the issuing CA, recorded and audited), written over `ocsp.key`/`ocsp.pem`, put in use,
/// every cached response re-signed with it, openssl verifies, and a restart loads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responder_rotation_replaces_key_files_and_cached_responses() {
    let ca = TestCa::new();
    let record = ca.issue();
    let server = Running::start(&ca, test_config()).await;
    let old = server.hooks.responder_certificate();
    let old_key = std::fs::read(ca.file("ocsp.key")).unwrap();
    server.blocking(|h| h.rotate_responder().unwrap()).await;
    let new = server.hooks.responder_certificate();
    assert_ne!(old, new);
    assert_eq!(
        pem::parse(std::fs::read(ca.file("ocsp.pem")).unwrap())
            .unwrap()
            .contents(),
        &new[..]
    );
    assert_ne!(std::fs::read(ca.file("ocsp.key")).unwrap(), old_key);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(ca.file("ocsp.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(!ca.file("ocsp.next.pem").exists() && !ca.file("ocsp.next.key").exists());
    agentca_testkit::assert_ocsp_responder_certificate(&new, ca.authority.ca().cert_der());

    // The cache is re-signed with the new key.
    let issuer = ca.issuer();
    let der = ocsp_request(
        &issuer,
        HashAlgorithm::Sha1,
        record.intent.serial.as_bytes(),
        None,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let response = loop {
        let reply = post_ocsp(server.addrs.http, der.clone()).await;
        let ocsp::ParsedResponse::Successful(basic) = ocsp::parse_response(&reply.body).unwrap()
        else {
            panic!("unsuccessful");
        };
        if basic.certs.first() == Some(&new) {
            break reply.body;
        }
        assert!(
            Instant::now() < deadline,
            "cache not re-signed with the new responder"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    agentca_testkit::pkilint_ocsp(&response);
    if have_openssl() {
        let req = ca.scratch("rot.req");
        std::fs::write(&req, &der).unwrap();
        let resp = ca.scratch("rot.resp");
        std::fs::write(&resp, &response).unwrap();
        let text = openssl(vec![
            "ocsp".into(),
            "-reqin".into(),
            path_arg(&req),
            "-respin".into(),
            path_arg(&resp),
            "-CAfile".into(),
            path_arg(&ca.file("ca-chain.pem")),
        ])
        .await;
        assert!(text.contains("Response verify OK"), "{text}");
    }
    server.stop().await;

    let ca = ca.reopen();
    let server = Running::start(&ca, test_config()).await;
    assert_eq!(server.hooks.responder_certificate(), new);
    server.stop().await;
}
