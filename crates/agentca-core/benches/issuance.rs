//! In-memory issuance: build + lint + sign of one agent certificate, no store, and the pieces
//! around it, so a slow total can be traced to its part.
//!
//! Run pinned to one core for the per-core figure:
//! `taskset -c 0 cargo bench -p agentca-core --bench issuance`.
//!
//! | benchmark | what one iteration does |
//! |---|---|
//! | `issuance/sign_leaf` | `IssuingCa::sign_leaf` with a fresh random serial: build the TBS, lint it, sign it, assemble the certificate |
//! | `issuance/raw_sign_400B` | one `Signer::sign` of a 400-byte message with the issuing key (the floor) |
//! | `issuance/leaf_params` | `profile::leaf_params`: the certificate's parameters from an authorization |
//! | `issuance/encode_without_key` | what `sign_leaf` asks of rcgen (load the CA certificate as issuer, encode TBS and certificate) with a signer that returns a fixed signature: encoding cost without the key and without the lint |
//! | `issuance/csr_parse_verify` | `CertificateRequest::parse` of a DER CSR: parse, key checks, signature verification |
//! | `issuance/authorize` | `Authority::authorize`: identity, agent lookup in the store, policy, key block list |

// A benchmark whose fixture fails must stop at once and say where; nothing here sees untrusted
// input.
#![allow(clippy::expect_used)]

mod common;

use std::hint::black_box;

use agentca_core::csr::CertificateRequest;
use agentca_core::profile;
use criterion::{Criterion, Throughput};
use rcgen::{Issuer, PublicKeyData, SigningKey, SubjectPublicKeyInfo};
use time::OffsetDateTime;

use common::{Fixture, Requester, random_serial};

fn issuance(c: &mut Criterion) {
    let fx = Fixture::new();
    let requester = Requester::register(&fx.ca, "bench-0");
    let ca = fx.authority.ca();
    let now = profile::whole_seconds(OffsetDateTime::now_utc());
    let auth = fx
        .authority
        .authorize(&requester.request(), now)
        .expect("authorized");
    let (not_before, not_after) = profile::validity(now, auth.lifetime());

    let mut group = c.benchmark_group("issuance");
    group.throughput(Throughput::Elements(1));

    group.bench_function("sign_leaf", |b| {
        b.iter(|| {
            ca.sign_leaf(&auth, random_serial(), not_before, not_after)
                .expect("signed")
        })
    });

    let message = [0x5a_u8; 400];
    group.bench_function("raw_sign_400B", |b| {
        b.iter(|| ca.signer().sign(black_box(&message)).expect("signed"))
    });

    group.bench_function("leaf_params", |b| {
        b.iter(|| {
            profile::leaf_params(&auth, random_serial(), not_before, not_after, ca.urls())
                .expect("params")
        })
    });

    let null = FixedSignature::for_key(&ca.signer().subject_public_key_info());
    let subject = SubjectPublicKeyInfo::from_der(requester.csr.spki_der()).expect("SPKI");
    let ca_cert = rustls_pki_types::CertificateDer::from(ca.cert_der());
    group.bench_function("encode_without_key", |b| {
        b.iter(|| {
            let issuer = Issuer::from_ca_cert_der(&ca_cert, &null).expect("issuer");
            let params =
                profile::leaf_params(&auth, random_serial(), not_before, not_after, ca.urls())
                    .expect("params");
            params.signed_by(&subject, &issuer).expect("encoded")
        })
    });

    group.bench_function("csr_parse_verify", |b| {
        b.iter(|| CertificateRequest::parse(black_box(&requester.csr_der)).expect("parsed"))
    });

    group.bench_function("authorize", |b| {
        b.iter(|| {
            fx.authority
                .authorize(black_box(&requester.request()), now)
                .expect("authorized")
        })
    });

    group.finish();
}

/// Stands in for the issuing key and returns a constant, well-formed ECDSA-Sig-Value of the
/// usual length, so the encoding can be timed without the signature.
struct FixedSignature {
    spki: SubjectPublicKeyInfo,
}

impl FixedSignature {
    fn for_key(spki_der: &[u8]) -> Self {
        Self {
            spki: SubjectPublicKeyInfo::from_der(spki_der).expect("CA SPKI"),
        }
    }
}

impl PublicKeyData for FixedSignature {
    fn der_bytes(&self) -> &[u8] {
        self.spki.der_bytes()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl SigningKey for FixedSignature {
    fn sign(&self, _msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        // SEQUENCE { INTEGER r (33 octets), INTEGER s (33 octets) }: 72 bytes, the common size.
        let mut sig = vec![0x30, 0x46, 0x02, 0x21, 0x00];
        sig.extend_from_slice(&[0x81; 32]);
        sig.extend_from_slice(&[0x02, 0x21, 0x00]);
        sig.extend_from_slice(&[0x82; 32]);
        Ok(sig)
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    issuance(&mut c);
    c.final_summary();
}
