//! Independent verifiers: OpenSSL checks our responses and writes requests for our parser;
//! pkilint (when installed) lints the responses against RFC 6960.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use time::{Duration, OffsetDateTime};

use super::test_pki::{self, TestPki};
use super::{CertStatus, HashAlgorithm, IssuerHashes, Responder, SingleStatus, parse_request};
use crate::store::RevocationReason;

const ALGORITHMS: [&rcgen::SignatureAlgorithm; 4] = [
    &rcgen::PKCS_ECDSA_P256_SHA256,
    &rcgen::PKCS_ECDSA_P384_SHA384,
    &rcgen::PKCS_ED25519,
    &rcgen::PKCS_RSA_SHA256,
];

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(pki: &TestPki) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let files = Self { dir };
        files.write("issuer.pem", pki.issuer_pem.as_bytes());
        files.write(
            "chain.pem",
            format!("{}{}", pki.root_pem, pki.issuer_pem).as_bytes(),
        );
        files.write("leaf.pem", pki.leaf_pem.as_bytes());
        files
    }

    fn write(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.dir.path().join(name), bytes).unwrap();
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join(name)).unwrap()
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn run(dir: &Path, program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} could not be run: {e}"))
}

fn text(output: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn leaf_status(pki: &TestPki, hash: HashAlgorithm, status: CertStatus) -> SingleStatus {
    let hashes = IssuerHashes::from_issuer_der(&pki.issuer_der).unwrap();
    let now = OffsetDateTime::now_utc();
    SingleStatus {
        cert_id: hashes.cert_id(hash, &pki.leaf_serial),
        status,
        this_update: now - Duration::minutes(1),
        next_update: now + Duration::days(4),
    }
}

fn respond(pki: &TestPki, statuses: &[SingleStatus], nonce: Option<&[u8]>) -> Vec<u8> {
    let responder = Responder::new(&pki.responder, &pki.responder_der).unwrap();
    responder
        .respond(statuses, OffsetDateTime::now_utc(), nonce)
        .unwrap()
}

fn revoked_key_compromise() -> CertStatus {
    CertStatus::Revoked {
        revoked_at: OffsetDateTime::now_utc() - Duration::hours(3),
        reason: Some(RevocationReason::KeyCompromise),
    }
}

/// `openssl ocsp` checking a response for the leaf against the root and issuer.
fn openssl_check(files: &Files, response: &[u8], hash: HashAlgorithm) -> String {
    files.write("resp.der", response);
    let mut args = vec![
        "ocsp",
        "-respin",
        "resp.der",
        "-issuer",
        "issuer.pem",
        "-CAfile",
        "chain.pem",
        "-cert",
        "leaf.pem",
        "-resp_text",
    ];
    // -cert builds the CertID to look up with this digest; it must match ours.
    if hash == HashAlgorithm::Sha256 {
        args.insert(1, "-sha256");
    }
    let output = run(files.path(), "openssl", &args);
    let all = text(&output);
    assert!(output.status.success(), "{all}");
    assert!(all.contains("Response verify OK"), "{all}");
    all
}

#[test]
fn openssl_verifies_good_revoked_and_unknown() {
    for alg in ALGORITHMS {
        let pki = test_pki::make(alg);
        let files = Files::new(&pki);
        for hash in HashAlgorithm::ALL {
            let good = respond(&pki, &[leaf_status(&pki, hash, CertStatus::Good)], None);
            let out = openssl_check(&files, &good, hash);
            assert!(out.contains("leaf.pem: good"), "{alg:?} {out}");

            let revoked = respond(
                &pki,
                &[leaf_status(&pki, hash, revoked_key_compromise())],
                None,
            );
            let out = openssl_check(&files, &revoked, hash);
            assert!(out.contains("leaf.pem: revoked"), "{alg:?} {out}");
            assert!(out.contains("Reason: keyCompromise"), "{alg:?} {out}");

            let no_reason = CertStatus::Revoked {
                revoked_at: OffsetDateTime::now_utc() - Duration::hours(3),
                reason: None,
            };
            let revoked = respond(&pki, &[leaf_status(&pki, hash, no_reason)], None);
            let out = openssl_check(&files, &revoked, hash);
            assert!(out.contains("leaf.pem: revoked"), "{alg:?} {out}");
            assert!(!out.contains("Reason:"), "{alg:?} {out}");

            let unknown = respond(&pki, &[leaf_status(&pki, hash, CertStatus::Unknown)], None);
            let out = openssl_check(&files, &unknown, hash);
            assert!(out.contains("leaf.pem: unknown"), "{alg:?} {out}");
        }
    }
}

#[test]
fn openssl_rejects_a_response_for_another_leaf_or_a_forged_signature() {
    let pki = test_pki::make(&rcgen::PKCS_ECDSA_P256_SHA256);
    let files = Files::new(&pki);
    let mut other = leaf_status(&pki, HashAlgorithm::Sha1, CertStatus::Good);
    other.cert_id.serial = vec![0x01, 0x02, 0x03];
    files.write("resp.der", &respond(&pki, &[other], None));
    let args = [
        "ocsp",
        "-respin",
        "resp.der",
        "-issuer",
        "issuer.pem",
        "-CAfile",
        "chain.pem",
        "-cert",
        "leaf.pem",
    ];
    let out = text(&run(files.path(), "openssl", &args));
    assert!(out.contains("No Status found"), "{out}");

    // Flip one byte of thisUpdate's seconds inside the signed data.
    let mut forged = respond(
        &pki,
        &[leaf_status(&pki, HashAlgorithm::Sha1, CertStatus::Good)],
        None,
    );
    let z = forged.iter().position(|b| *b == b'Z').unwrap();
    forged[z - 1] = if forged[z - 1] == b'0' { b'1' } else { b'0' };
    files.write("resp.der", &forged);
    let out = text(&run(files.path(), "openssl", &args));
    assert!(!out.contains("Response verify OK"), "{out}");
}

/// Requests written by OpenSSL, with and without nonce, with SHA-1 and SHA-256 CertIDs,
/// parse and match our issuer; the nonce we echo satisfies OpenSSL's nonce check.
#[test]
fn openssl_requests_parse_and_nonce_is_echoed() {
    let pki = test_pki::make(&rcgen::PKCS_ECDSA_P256_SHA256);
    let files = Files::new(&pki);
    let hashes = IssuerHashes::from_issuer_der(&pki.issuer_der).unwrap();
    let cases: [(&[&str], HashAlgorithm, bool); 4] = [
        (&[], HashAlgorithm::Sha1, true),
        (&["-no_nonce"], HashAlgorithm::Sha1, false),
        (&["-sha256"], HashAlgorithm::Sha256, true),
        (&["-sha256", "-no_nonce"], HashAlgorithm::Sha256, false),
    ];
    for (extra, hash, has_nonce) in cases {
        // Digest options must come before -cert.
        let mut args = vec!["ocsp", "-issuer", "issuer.pem"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-cert", "leaf.pem", "-reqout", "req.der"]);
        let output = run(files.path(), "openssl", &args);
        assert!(output.status.success(), "{}", text(&output));

        let request = parse_request(&files.read("req.der")).unwrap();
        assert_eq!(request.cert_ids.len(), 1);
        let id = &request.cert_ids[0];
        assert_eq!(id.hash, hash);
        assert!(hashes.matches(id), "{extra:?}");
        assert_eq!(id.serial, pki.leaf_serial);
        assert_eq!(request.nonce.is_some(), has_nonce, "{extra:?}");
        // Our encoding of the CertID is OpenSSL's, byte for byte, so the echo is exact.
        let id_der = id.to_der().unwrap();
        let request_der = files.read("req.der");
        assert!(
            request_der.windows(id_der.len()).any(|w| w == id_der),
            "{extra:?}"
        );

        let status = SingleStatus {
            cert_id: id.clone(),
            ..leaf_status(&pki, hash, CertStatus::Good)
        };
        files.write(
            "resp.der",
            &respond(&pki, &[status], request.nonce.as_deref()),
        );
        let args = [
            "ocsp",
            "-reqin",
            "req.der",
            "-respin",
            "resp.der",
            "-CAfile",
            "chain.pem",
        ];
        let output = run(files.path(), "openssl", &args);
        let out = text(&output);
        assert!(out.contains("Response verify OK"), "{out}");
        assert!(!out.contains("nonce"), "{out}");
        assert!(!out.contains("Nonce"), "{out}");
    }

    // A response without the nonce the request carried is noticed by OpenSSL, which shows
    // that the check above really compared nonces.
    let output = run(
        files.path(),
        "openssl",
        &[
            "ocsp",
            "-issuer",
            "issuer.pem",
            "-cert",
            "leaf.pem",
            "-reqout",
            "req.der",
        ],
    );
    assert!(output.status.success());
    let request = parse_request(&files.read("req.der")).unwrap();
    assert!(request.nonce.is_some());
    let status = leaf_status(&pki, HashAlgorithm::Sha1, CertStatus::Good);
    files.write("resp.der", &respond(&pki, &[status], None));
    let args = [
        "ocsp",
        "-reqin",
        "req.der",
        "-respin",
        "resp.der",
        "-CAfile",
        "chain.pem",
    ];
    let out = text(&run(files.path(), "openssl", &args));
    assert!(out.contains("WARNING: no nonce in response"), "{out}");
}

/// Runs pkilint's RFC 6960 linter down to its lowest severity; returns what it printed.
fn pkilint(files: &Files, der: &[u8]) -> Output {
    files.write("resp.der", der);
    run(
        files.path(),
        "lint_ocsp_response",
        &[
            "lint",
            "-s",
            "DEBUG",
            "--document-format",
            "DER",
            "resp.der",
        ],
    )
}

/// pkilint's RFC 6960 linter finds nothing, not even notices, in good, revoked, unknown and
/// error responses. Skipped when pkilint is not installed (CI installs it).
#[test]
fn pkilint_finds_nothing() {
    if Command::new("lint_ocsp_response")
        .arg("--help")
        .output()
        .is_err()
    {
        eprintln!("skipped: lint_ocsp_response (pkilint) is not installed");
        return;
    }
    for alg in ALGORITHMS {
        let pki = test_pki::make(alg);
        let files = Files::new(&pki);
        // Every status for the default key type, the good answer for the others.
        let statuses = if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
            vec![
                CertStatus::Good,
                revoked_key_compromise(),
                CertStatus::Unknown,
            ]
        } else {
            vec![CertStatus::Good]
        };
        for status in statuses {
            for (hash, nonce) in [
                (HashAlgorithm::Sha1, None),
                (HashAlgorithm::Sha256, Some(&[0x5a; 32][..])),
            ] {
                let der = respond(&pki, &[leaf_status(&pki, hash, status)], nonce);
                let output = pkilint(&files, &der);
                let out = text(&output);
                assert!(output.status.success(), "{alg:?} {status:?} {out}");
                assert!(
                    output.stdout.trim_ascii().is_empty(),
                    "{alg:?} {status:?} {out}"
                );
            }
        }
    }
    let pki = test_pki::make(&rcgen::PKCS_ECDSA_P256_SHA256);
    let files = Files::new(&pki);
    for status in super::OcspResponseStatus::ALL {
        let output = pkilint(&files, &super::error_response(status));
        let out = text(&output);
        assert!(output.status.success(), "{status:?} {out}");
        assert!(output.stdout.trim_ascii().is_empty(), "{status:?} {out}");
    }
}
