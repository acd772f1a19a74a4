//! A fuzz-ish loop over a valid message (PARSE-1, SCEP-7): every truncation, a bit flip at
//! every byte, and random splices must come back as an error or a value — never a panic,
//! never unbounded work.

use super::{pkcs_req, ra};
use crate::client::{Tamper, to_indefinite_ber};
use crate::{ScepOptions, UnverifiedMessage};

/// Runs the whole server path on `input`; returns whether it got through decryption.
fn server_path(input: &[u8]) -> bool {
    let Ok(unverified) = UnverifiedMessage::parse(input) else {
        return false;
    };
    let Ok(msg) = unverified.verify(&ScepOptions::LEGACY) else {
        return false;
    };
    msg.decrypt(ra(), &ScepOptions::LEGACY).is_ok()
}

fn samples() -> Vec<Vec<u8>> {
    let der = pkcs_req().build().unwrap().der().to_vec();
    let ber = pkcs_req()
        .tamper(Tamper {
            indefinite_ber: true,
            ..Tamper::default()
        })
        .build()
        .unwrap()
        .der()
        .to_vec();
    vec![der, ber]
}

#[test]
fn every_truncation_is_an_error() {
    for sample in samples() {
        assert!(server_path(&sample));
        for len in 0..sample.len() {
            assert!(
                UnverifiedMessage::parse(&sample[..len]).is_err(),
                "truncation to {len} of {} parsed",
                sample.len()
            );
        }
    }
}

#[test]
fn bit_flips_never_panic() {
    for sample in samples() {
        let mut survived = 0;
        for i in 0..sample.len() {
            let mut bad = sample.clone();
            bad[i] ^= 1 << (i % 8);
            if server_path(&bad) {
                survived += 1;
            }
        }
        // Flips in unsigned places (the certificates' own signatures, unknown fields) may
        // survive; most must not.
        assert!(
            survived < sample.len() / 4,
            "{survived} of {} flips survived",
            sample.len()
        );
    }
}

#[test]
fn splices_and_garbage_never_panic() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for sample in samples() {
        for _ in 0..300 {
            let a = (next() as usize) % sample.len();
            let b = (next() as usize) % sample.len();
            let (a, b) = (a.min(b), a.max(b));
            let mut spliced = sample[..a].to_vec();
            // Insert a run of structural bytes, then skip part of the original.
            for _ in 0..(next() % 16) {
                spliced.push(match next() % 4 {
                    0 => 0x30,
                    1 => 0x80,
                    2 => 0x00,
                    _ => next() as u8,
                });
            }
            spliced.extend_from_slice(&sample[b..]);
            let _ = server_path(&spliced);
        }
    }
    // The BER re-encoder itself refuses what it cannot read.
    assert!(to_indefinite_ber(&[0x30, 0x05]).is_err());
}
