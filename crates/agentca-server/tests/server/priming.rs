//! Start-up priming: every unexpired certificate in the store gets its responses signed in
//! the background while the server already answers.

use std::time::{Duration, Instant};

use agentca_core::ocsp::{CertStatus, HashAlgorithm};
use agentca_core::store::{CertificateRecord, EnrollmentMethod, IssuanceIntent, Serial};
use time::OffsetDateTime;

use super::support::*;

/// Stores `n` certificate records directly (the DER is a placeholder: status needs only the
/// record), as a store holding many issued certificates looks at start.
fn fill(ca: &TestCa, n: usize) -> Vec<Serial> {
    let store = ca.ca.store();
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let mut serials = Vec::with_capacity(n);
    for _ in 0..n {
        let mut bytes = [0u8; 16];
        aws_lc_rs::rand::fill(&mut bytes).unwrap();
        bytes[0] = (bytes[0] & 0x7f) | 1;
        let serial = Serial::from_bytes(bytes).unwrap();
        let intent = IssuanceIntent {
            serial,
            agent_id: AGENT.into(),
            method: EnrollmentMethod::Cli,
            not_before: now,
            not_after: now + time::Duration::hours(24),
            key_sha256: "00".repeat(32),
            reserved_at: now,
        };
        store.reserve_serial(&intent).unwrap();
        store
            .record_certificate(&CertificateRecord {
                intent,
                der: vec![0x30, 0x00],
                issued_at: now,
                revocation: None,
            })
            .unwrap();
        serials.push(serial);
    }
    store.commit().unwrap();
    serials
}

async fn prime(n: usize) {
    let ca = TestCa::new();
    let serials = fill(&ca, n);
    let started = Instant::now();
    let server = Running::start(&ca, test_config()).await;
    let issuer = ca.issuer();

    // Answers right away, signing on demand until primed.
    let der = ocsp_request(
        &issuer,
        HashAlgorithm::Sha1,
        serials[n - 1].as_bytes(),
        None,
    );
    assert_eq!(
        status_of(&post_ocsp(server.addrs.http, der).await.body),
        Ok(CertStatus::Good)
    );

    let want = (2 * n + 2) as f64;
    let primed = loop {
        let text = metrics_text(server.addrs.http).await;
        if metric(&text, "agentca_ocsp_cache_entries") >= want {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "priming stalled:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "primed {n} certificates ({} responses) in {:.2} s",
        2 * n,
        primed.as_secs_f64()
    );
    let before = server.hooks.responder_signatures();
    for serial in serials.iter().step_by((n / 100).max(1)) {
        let der = ocsp_request(&issuer, HashAlgorithm::Sha256, serial.as_bytes(), None);
        assert_eq!(
            status_of(&post_ocsp(server.addrs.http, der).await.body),
            Ok(CertStatus::Good)
        );
    }
    assert_eq!(server.hooks.responder_signatures(), before);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_certificates_is_primed_in_the_background() {
    prime(2_000).await;
}

/// The design's scale: 100k certificates. Run with `--ignored --nocapture` (release build
/// recommended) to see how long priming takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: 200,000 signatures"]
async fn one_hundred_thousand_certificates_prime() {
    prime(100_000).await;
}
