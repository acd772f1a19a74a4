//! What a relying service pays per call to check an agent's certificate: a leaf and its issuing
//! CA against a root, with the OCSP answer already cached (the state of a service whose agents
//! call it more often than their answers expire).
//!
//! `scripts/bench-verify.sh` runs it on a chain made by the real `agentca init` and `agentca
//! issue` and an answer from `agentca serve` (`AGENTCA_BENCH_CHAIN_DIR` holding `root.pem` and
//! `leaf.pem`, leaf then issuing CA; the leaf's own OCSP URL is asked once, to warm the cache).
//! Without it the chain is made here with rcgen, in the same profile (ECDSA P-256 throughout),
//! and the answer comes from a responder on 127.0.0.1 signing with agentca-core's encoder.
//!
//! | benchmark | what one iteration does |
//! |---|---|
//! | `verify/chain_ocsp_cached` | `Verifier::verify_chain` with the default settings, the chain seen before: the leaf's parse and profile checks, the verified path from its cache, the OCSP answer from the cache |
//! | `verify/chain_full_ocsp_cached` | the same with the path cache off: path building and both signatures (rustls-webpki) on every call |
//! | `verify/chain_full_no_revocation` | path cache off and revocation not checked: what the OCSP lookup adds is the difference |
//! | `verify/async_ocsp_cached` | `Verifier::verify` (default settings) on a current-thread runtime, the answer cached |
//! | `verify/p256_signature` | one ECDSA P-256 SHA-256 signature verification with aws-lc-rs, the floor: a chain has two |

// A benchmark whose fixture fails must stop at once and say where.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code, unreachable_pub)]
#[path = "../src/test_pki.rs"]
mod test_pki;
#[allow(dead_code, unreachable_pub)]
#[path = "../src/test_server.rs"]
mod test_server;

use std::hint::black_box;
use std::path::Path;

use agentca_core::ocsp as core_ocsp;
// Named at the crate root, where the shared test PKI looks for it.
use agentca_verify::TrustAnchors;
use agentca_verify::{IdPattern, Revocation, RevocationStatus, Verifier, read_certificates};
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair};
use criterion::Criterion;
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

/// What one iteration checks.
struct Fixture {
    anchors_pem: Vec<u8>,
    leaf: CertificateDer<'static>,
    intermediates: Vec<CertificateDer<'static>>,
    pattern: String,
    revocation: Revocation,
    /// Keeps the in-process responder alive.
    _responder: Option<test_server::TestServer>,
}

impl Fixture {
    /// Files made by agentca: `root.pem`, and `leaf.pem` (leaf first, then the issuing CA).
    fn from_dir(dir: &Path) -> Self {
        let anchors_pem = std::fs::read(dir.join("root.pem")).expect("root.pem");
        let mut chain = read_certificates(&std::fs::read(dir.join("leaf.pem")).expect("leaf.pem"))
            .expect("the chain")
            .into_iter();
        let leaf = chain.next().expect("a leaf");
        let (_, parsed) = x509_parser::parse_x509_certificate(&leaf).expect("the leaf");
        let id = parsed
            .subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|san| {
                san.value.general_names.iter().find_map(|n| match n {
                    x509_parser::prelude::GeneralName::URI(uri) => Some(uri.to_string()),
                    _ => None,
                })
            })
            .expect("a URI SAN");
        Self {
            anchors_pem,
            pattern: pattern_for(&id),
            leaf,
            intermediates: chain.collect(),
            revocation: Revocation::ocsp_from_certificate(),
            _responder: None,
        }
    }

    /// A chain made here and a responder that answers `good` for it.
    async fn generated() -> Self {
        let pki = test_pki::Pki::new();
        let key = rcgen::KeyPair::try_from(pki.responder.key.serialize_der()).unwrap();
        let signer = agentca_core::signer::KeyPairSigner::new(key).unwrap();
        let responder_cert = pki.responder.cert.to_vec();
        let server = test_server::TestServer::start("/ocsp", move |body| {
            let request = core_ocsp::parse_request(body).unwrap();
            let now = test_pki::now();
            let singles: Vec<_> = request
                .cert_ids
                .iter()
                .map(|id| core_ocsp::SingleStatus {
                    cert_id: id.clone(),
                    status: core_ocsp::CertStatus::Good,
                    this_update: now - Duration::minutes(1),
                    next_update: now + Duration::hours(12),
                })
                .collect();
            let responder = core_ocsp::Responder::new(&signer, &responder_cert).unwrap();
            (200, responder.respond(&singles, now, None).unwrap())
        })
        .await;
        let leaf = pki.agent("/agent/team/worker-1");
        let anchors_pem = pem::encode(&pem::Pem::new("CERTIFICATE", pki.root.cert.to_vec()));
        Self {
            anchors_pem: anchors_pem.into_bytes(),
            leaf: leaf.cert,
            intermediates: pki.chain(),
            pattern: test_pki::agent("/agent/team/*"),
            revocation: Revocation::ocsp(server.url.clone()),
            _responder: Some(server),
        }
    }

    fn verifier(&self, revocation: Revocation, path_cache: bool) -> Verifier {
        let mut builder =
            Verifier::builder(TrustAnchors::from_pem_or_der(&self.anchors_pem).unwrap())
                .expect_id(IdPattern::parse(&self.pattern).unwrap())
                .revocation(revocation);
        if !path_cache {
            builder = builder.path_cache_capacity(0);
        }
        builder.build().unwrap()
    }
}

/// The agent's siblings: its ID with the last segment a wildcard, as a service admitting one
/// team would configure.
fn pattern_for(id: &str) -> String {
    match id.rsplit_once('/') {
        Some((parent, _)) => format!("{parent}/*"),
        None => id.to_owned(),
    }
}

fn verify(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let fixture = match std::env::var_os("AGENTCA_BENCH_CHAIN_DIR") {
        Some(dir) => Fixture::from_dir(Path::new(&dir)),
        None => rt.block_on(Fixture::generated()),
    };
    let cached = fixture.verifier(fixture.revocation.clone(), true);
    let full = fixture.verifier(fixture.revocation.clone(), false);
    // One fetch fills the cache; every iteration after that is a hit.
    for verifier in [&cached, &full] {
        let warm = rt
            .block_on(verifier.verify(&fixture.leaf, &fixture.intermediates))
            .expect("the first check, which fetches the OCSP answer");
        assert!(
            matches!(warm.revocation, RevocationStatus::Good { .. }),
            "{warm:?}"
        );
    }
    let plain = fixture.verifier(Revocation::None, false);
    let now = OffsetDateTime::now_utc();

    let mut group = c.benchmark_group("verify");
    group.bench_function("chain_ocsp_cached", |b| {
        b.iter(|| {
            let agent = cached
                .verify_chain(black_box(&fixture.leaf), &fixture.intermediates, now)
                .unwrap();
            debug_assert!(matches!(agent.revocation, RevocationStatus::Good { .. }));
            agent
        })
    });
    group.bench_function("chain_full_ocsp_cached", |b| {
        b.iter(|| {
            full.verify_chain(black_box(&fixture.leaf), &fixture.intermediates, now)
                .unwrap()
        })
    });
    group.bench_function("chain_full_no_revocation", |b| {
        b.iter(|| {
            plain
                .verify_chain(black_box(&fixture.leaf), &fixture.intermediates, now)
                .unwrap()
        })
    });
    group.bench_function("async_ocsp_cached", |b| {
        b.iter(|| {
            rt.block_on(cached.verify(black_box(&fixture.leaf), &fixture.intermediates))
                .unwrap()
        })
    });

    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref())
        .unwrap();
    let message = vec![0x5a; 400];
    let sig = key.sign(&rng, &message).unwrap();
    let public =
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, key.public_key());
    group.bench_function("p256_signature", |b| {
        b.iter(|| public.verify(black_box(&message), sig.as_ref()).unwrap())
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    verify(&mut c);
    c.final_summary();
}
