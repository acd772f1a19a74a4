//! Writes a seed corpus for every fuzz target into `DIR/<target>/` (default `fuzz/corpus`):
//! well-formed inputs made by the project's own clients, which the fuzzer then mutates.

// Linked for the coverage callbacks the instrumented build calls; this binary has its own
// `main` and never fuzzes.
use libfuzzer_sys as _;
use std::path::{Path, PathBuf};

use agentca_core::ocsp::{CertId, HashAlgorithm, build_request};
use agentca_scep::client::{RequestBuilder, SignerKey, csr_with_challenge, transient_certificate};
use agentca_scep::{CertRep, CertRepStatus, ContentCipher, DigestAlgorithm, FailInfo, ScepOptions};
use agentca_testkit::acme::{AccountKey, KeyAlg, KeyRef, protected, signed};

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir).expect("the corpus directory can be made");
    std::fs::write(dir.join(name), bytes).expect("a seed can be written");
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("fuzz/corpus"), PathBuf::from);
    let ra = agentca_fuzz::ra();
    let ra_cert = agentca_fuzz::ra_certificate();

    // SCEP: requests with each cipher and digest, as DER and as indefinite-length BER.
    let account = AccountKey::rsa(0);
    let key = SignerKey::from_pkcs8(account.pkcs8_der()).expect("an RSA signer");
    let params =
        rcgen::CertificateParams::new(vec!["agent.example".to_owned()]).expect("valid parameters");
    let csr = csr_with_challenge(&key, &params, Some("0123456789abcdef")).expect("a CSR");
    let signer = transient_certificate(&key, "fuzz seed").expect("a transient certificate");
    let requests = [
        (
            "pkcs-req-aes",
            RequestBuilder::pkcs_req(&csr, &key, &signer, ra_cert),
        ),
        (
            "pkcs-req-des3-sha1",
            RequestBuilder::pkcs_req(&csr, &key, &signer, ra_cert)
                .cipher(ContentCipher::DesEde3Cbc)
                .digest(DigestAlgorithm::Sha1),
        ),
        (
            "renewal-req",
            RequestBuilder::renewal_req(&csr, &key, &signer, ra_cert),
        ),
        (
            "get-crl",
            RequestBuilder::get_crl(&signer, &key, &signer, ra_cert),
        ),
    ];
    for (name, builder) in requests {
        let request = builder.build().expect("a request");
        write(&dir, "scep_message", name, request.der());
        // The GET form's message= parameter: base64url without padding, one of the forms
        // clients send.
        let text = agentca_testkit::acme::b64(request.der());
        write(
            &dir,
            "scep_message",
            &format!("{name}-param"),
            text.as_bytes(),
        );
        let ber = agentca_scep::client::to_indefinite_ber(request.der()).expect("BER");
        write(&dir, "scep_message", &format!("{name}-ber"), &ber);
        let envelope = agentca_scep::fuzzing::envelope_of(request.der(), &ScepOptions::LEGACY)
            .expect("the request verifies and has an envelope");
        // The fuzzer starts from envelopes that open: its mutations then reach the content.
        agentca_scep::fuzzing::open_envelope(&envelope, ra, &ScepOptions::LEGACY)
            .expect("the seed envelope opens with the fixture RA");
        write(&dir, "scep_envelope", name, &envelope);
        let message = agentca_scep::decode_pki_message(request.der(), &ScepOptions::LEGACY)
            .expect("the request verifies");
        let failure = CertRep {
            reply_to: &message.reply_to(),
            status: CertRepStatus::Failure(FailInfo::BadRequest),
            signing_time: None,
        }
        .encode(ra, &ScepOptions::LEGACY)
        .expect("a FAILURE");
        write(&dir, "scep_message", &format!("{name}-failure"), &failure);
    }
    let ca_certs = agentca_scep::get_ca_cert_response(ra_cert, &[&signer]).expect("GetCACert");
    agentca_scep::parse_certs_only(&ca_certs).expect("the seed GetCACert parses");
    write(&dir, "scep_certs_only", "get-ca-cert", &ca_certs);
    let certs = agentca_scep::certs_only(&[&signer, ra_cert]).expect("certs-only");
    write(&dir, "scep_certs_only", "certs-only", &certs);

    // CSRs: RSA with a challenge (DER), ECDSA with names (DER and PEM).
    write(&dir, "csr", "rsa-challenge", &csr);
    let ec = rcgen::KeyPair::generate().expect("a P-256 key");
    let mut params =
        rcgen::CertificateParams::new(vec!["agent.example".to_owned()]).expect("valid parameters");
    params.subject_alt_names.push(rcgen::SanType::URI(
        "spiffe://example.org/agent/fuzz"
            .try_into()
            .expect("an IA5 URI"),
    ));
    let request = params.serialize_request(&ec).expect("a CSR");
    for seed in [&csr[..], request.der()] {
        agentca_core::csr::CertificateRequest::parse(seed).expect("the seed CSR is accepted");
    }
    write(&dir, "csr", "ec-names", request.der());
    write(
        &dir,
        "csr",
        "ec-names-pem",
        request.pem().expect("PEM").as_bytes(),
    );

    // OCSP requests: SHA-1 and SHA-256 CertIDs, with and without a nonce, several at once.
    let cert_id = |hash, len| CertId {
        hash,
        issuer_name_hash: vec![0x11; len],
        issuer_key_hash: vec![0x22; len],
        serial: vec![0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08],
    };
    let sha1 = cert_id(HashAlgorithm::Sha1, 20);
    let sha256 = cert_id(HashAlgorithm::Sha256, 32);
    for (name, ids, nonce) in [
        ("sha1", vec![sha1.clone()], None),
        (
            "sha256-nonce",
            vec![sha256.clone()],
            Some(&[0x42u8; 16][..]),
        ),
        ("two", vec![sha1, sha256], Some(&[0x42u8; 32][..])),
    ] {
        let request = build_request(&ids, nonce).expect("an OCSP request");
        agentca_core::ocsp::parse_request(&request).expect("the seed OCSP request parses");
        write(&dir, "ocsp_request", name, &request);
    }

    // ACME: a newAccount-style JWS with an embedded key for each algorithm, and a kid one.
    let url = "https://127.0.0.1:8443/acme/new-account";
    let payload = br#"{"termsOfServiceAgreed":true,"contact":["mailto:ops@example.org"]}"#;
    for alg in [KeyAlg::Es256, KeyAlg::Es384, KeyAlg::Rs256, KeyAlg::EdDsa] {
        let key = AccountKey::generate(alg);
        let header = protected(alg.name(), &KeyRef::Jwk(key.jwk()), Some("bm9uY2U"), url);
        let body = signed(&header, payload, &key);
        let jws = agentca_acme::jose::Jws::parse(&body).expect("the seed JWS parses");
        if let agentca_acme::jose::KeyRef::Jwk(jwk) = jws.protected_header().key() {
            jws.verify(jwk).expect("the seed JWS verifies");
        }
        write(&dir, "jws", alg.name(), &body);
    }
    let key = AccountKey::es256();
    let header = protected(
        "ES256",
        &KeyRef::Kid("https://127.0.0.1:8443/acme/acct/1".into()),
        Some("bm9uY2U"),
        url,
    );
    write(&dir, "jws", "kid-post-as-get", &signed(&header, b"", &key));
    println!("seeds written to {}", dir.display());
}
