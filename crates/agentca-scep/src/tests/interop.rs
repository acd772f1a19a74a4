//! Independent checks with the openssl command line: it must read, verify and decrypt what
//! we build. Skipped with a notice when openssl is missing, failed under
//! `AGENTCA_REQUIRE_TOOLS=1`.

use std::ffi::OsStr;
use std::path::Path;

use agentca_testkit::tools::{Scratch, run};

use super::{pem, pkcs_req, pki, ra};
use crate::{CertRep, CertRepStatus, ContentCipher, FailInfo, ScepOptions, decode_pki_message};

fn openssl(args: &[&OsStr], purpose: &str) -> Option<String> {
    let out = run("openssl", args, purpose)?;
    assert!(
        out.status.success(),
        "openssl {purpose} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn os<P: AsRef<OsStr> + ?Sized>(p: &P) -> &OsStr {
    p.as_ref()
}

fn path(p: &Path) -> &OsStr {
    p.as_os_str()
}

#[test]
fn openssl_reads_verifies_and_decrypts_a_cert_rep() {
    let p = pki();
    let dir = Scratch::new();
    let req = pkcs_req().cipher(ContentCipher::Aes128Cbc).build().unwrap();
    let msg = decode_pki_message(req.der(), &ScepOptions::STRICT).unwrap();
    let cipher = msg.decrypt(ra(), &ScepOptions::STRICT).unwrap().cipher;
    let issued = vec![p.issue_for_requester()];
    let reply = CertRep {
        reply_to: &msg.reply_to(),
        status: CertRepStatus::Success {
            cipher,
            certificates: &issued,
        },
        signing_time: Some(std::time::SystemTime::now()),
    }
    .encode(ra(), &ScepOptions::STRICT)
    .unwrap();
    let reply_path = dir.write("certrep.der", &reply);
    let Some(printed) = openssl(
        &[
            os("cms"),
            os("-cmsout"),
            os("-print"),
            os("-inform"),
            os("DER"),
            os("-in"),
            path(&reply_path),
        ],
        "printing a CertRep",
    ) else {
        return;
    };
    assert!(printed.contains("pkcs7-signedData"), "{printed}");
    assert!(printed.contains("2.16.840.1.113733.1.9.2"), "{printed}");

    // openssl verifies the RA's signature (the chain is not the point here) ...
    let envelope_path = dir.path().join("envelope.der");
    openssl(
        &[
            os("cms"),
            os("-verify"),
            os("-noverify"),
            os("-binary"),
            os("-inform"),
            os("DER"),
            os("-in"),
            path(&reply_path),
            os("-out"),
            path(&envelope_path),
        ],
        "verifying a CertRep",
    );
    // ... and decrypts the envelope with the requester's key.
    let key_path = dir.write("req.key", pem("PRIVATE KEY", &p.req_key).as_bytes());
    let cert_path = dir.write("req.pem", pem("CERTIFICATE", &p.req_self_signed).as_bytes());
    let inner_path = dir.path().join("inner.der");
    openssl(
        &[
            os("cms"),
            os("-decrypt"),
            os("-binary"),
            os("-inform"),
            os("DER"),
            os("-in"),
            path(&envelope_path),
            os("-recip"),
            path(&cert_path),
            os("-inkey"),
            path(&key_path),
            os("-out"),
            path(&inner_path),
        ],
        "decrypting a CertRep envelope",
    );
    let certs = openssl(
        &[
            os("pkcs7"),
            os("-print_certs"),
            os("-inform"),
            os("DER"),
            os("-in"),
            path(&inner_path),
        ],
        "printing the issued certificate",
    )
    .unwrap_or_default();
    assert!(certs.contains("issued to the requester"), "{certs}");
}

#[test]
fn openssl_verifies_a_failure_over_empty_content() {
    let dir = Scratch::new();
    let req = pkcs_req().build().unwrap();
    let msg = decode_pki_message(req.der(), &ScepOptions::STRICT).unwrap();
    let reply = CertRep {
        reply_to: &msg.reply_to(),
        status: CertRepStatus::Failure(FailInfo::BadRequest),
        signing_time: None,
    }
    .encode(ra(), &ScepOptions::STRICT)
    .unwrap();
    let reply_path = dir.write("failure.der", &reply);
    let empty = dir.write("empty", b"");
    // No eContent: openssl treats it as detached content, here empty.
    openssl(
        &[
            os("cms"),
            os("-verify"),
            os("-noverify"),
            os("-binary"),
            os("-inform"),
            os("DER"),
            os("-in"),
            path(&reply_path),
            os("-content"),
            path(&empty),
        ],
        "verifying a CertRep FAILURE",
    );
}

#[test]
fn openssl_verifies_and_decrypts_a_request() {
    let p = pki();
    let dir = Scratch::new();
    for ber in [false, true] {
        let req = pkcs_req()
            .cipher(ContentCipher::Aes256Cbc)
            .tamper(crate::client::Tamper {
                indefinite_ber: ber,
                ..Default::default()
            })
            .build()
            .unwrap();
        let req_path = dir.write("req.der", req.der());
        let env_path = dir.path().join("req-envelope.der");
        let Some(_) = openssl(
            &[
                os("cms"),
                os("-verify"),
                os("-noverify"),
                os("-binary"),
                os("-inform"),
                os("DER"),
                os("-in"),
                path(&req_path),
                os("-out"),
                path(&env_path),
            ],
            "verifying a PKCSReq",
        ) else {
            return;
        };
        let ra_key = dir.write("ra.key", pem("PRIVATE KEY", &p.ra_key).as_bytes());
        let ra_cert = dir.write("ra.pem", pem("CERTIFICATE", &p.ra_cert).as_bytes());
        let csr_path = dir.path().join("csr.der");
        openssl(
            &[
                os("cms"),
                os("-decrypt"),
                os("-binary"),
                os("-inform"),
                os("DER"),
                os("-in"),
                path(&env_path),
                os("-recip"),
                path(&ra_cert),
                os("-inkey"),
                path(&ra_key),
                os("-out"),
                path(&csr_path),
            ],
            "decrypting a PKCSReq envelope",
        );
        assert_eq!(std::fs::read(&csr_path).unwrap(), p.req_csr);
    }
}

#[test]
fn openssl_prints_get_ca_cert_and_get_crl_answers() {
    let p = pki();
    let dir = Scratch::new();
    let ca_certs = crate::get_ca_cert_response(&p.ra_cert, &[&p.ca_cert]).unwrap();
    let ca_path = dir.write("getcacert.der", &ca_certs);
    let Some(printed) = openssl(
        &[
            os("pkcs7"),
            os("-print_certs"),
            os("-inform"),
            os("DER"),
            os("-in"),
            path(&ca_path),
        ],
        "printing a GetCACert answer",
    ) else {
        return;
    };
    assert!(printed.contains("test SCEP RA"), "{printed}");
    assert!(printed.contains("test issuing CA"), "{printed}");
    let crl = crate::crl_only(&p.crl()).unwrap();
    let crl_path = dir.write("getcrl.der", &crl);
    let printed = openssl(
        &[
            os("pkcs7"),
            os("-print_certs"),
            os("-inform"),
            os("DER"),
            os("-in"),
            path(&crl_path),
        ],
        "printing a GetCRL answer",
    )
    .unwrap_or_default();
    assert!(printed.contains("test issuing CA"), "{printed}");
}
