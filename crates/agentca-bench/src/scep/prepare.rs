//! The requests, made before the measured window: per request a fresh RSA key, a CSR with its
//! challengePassword (`agentca_scep::client::csr_with_challenge`), the transient self-signed certificate that signs the PKCSReq (RFC 8894
//! §2.3), and the signed and encrypted message itself.
//!
//! RSA key generation is the slow part (tens to hundreds of milliseconds per 2048-bit key, far
//! more for 4096 bits, and with a long tail: it searches for primes), so it runs on every CPU
//! the process may use, and never inside the window, where it would measure the client.

use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agentca_scep::client::{
    BuiltRequest, RequestBuilder, SignerKey, csr_with_challenge, transient_certificate,
};
use agentca_scep::{ContentCipher, DigestAlgorithm};
use rcgen::{CertificateParams, DnType, KeyPair, PKCS_RSA_SHA256, PublicKeyData, RsaKeySize};

use crate::error::BenchError;

/// One PKCSReq ready to send, with what checking its answer needs.
pub(crate) struct Prepared {
    /// The requester's key: it signs the request and opens the SUCCESS envelope.
    pub(crate) key: SignerKey,
    /// Its SubjectPublicKeyInfo (DER), which the issued certificate must carry.
    pub(crate) spki: Vec<u8>,
    pub(crate) request: BuiltRequest,
}

/// What every request shares.
pub(crate) struct Recipe<'a> {
    /// The RA certificate (DER) the envelopes are encrypted to.
    pub(crate) recipient: &'a [u8],
    pub(crate) cipher: ContentCipher,
    pub(crate) key_size: RsaKeySize,
    /// Subjects are `CN=<prefix>-<n>`: distinct, for servers that refuse a name they have
    /// issued for (micromdm does, until the certificate nears its end).
    pub(crate) common_name_prefix: String,
}

/// The result of [`prepare_all`].
pub(crate) struct Preparation {
    pub(crate) requests: Vec<Prepared>,
    pub(crate) elapsed: Duration,
    pub(crate) threads: usize,
}

pub(crate) fn key_size(bits: u32) -> Result<RsaKeySize, BenchError> {
    match bits {
        2048 => Ok(RsaKeySize::_2048),
        3072 => Ok(RsaKeySize::_3072),
        4096 => Ok(RsaKeySize::_4096),
        other => Err(BenchError::Options(format!(
            "RSA keys of {other} bits: 2048, 3072 or 4096"
        ))),
    }
}

/// Makes request `n` with `challenge`.
pub(crate) fn prepare(
    recipe: &Recipe<'_>,
    n: usize,
    challenge: &str,
) -> Result<Prepared, BenchError> {
    let crypto = |what: &str, e: &dyn std::fmt::Display| BenchError::Crypto(format!("{what}: {e}"));
    let pair = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, recipe.key_size)
        .map_err(|e| crypto("generate an RSA key", &e))?;
    let key =
        SignerKey::from_pkcs8(&pair.serialize_der()).map_err(|e| crypto("load the RSA key", &e))?;
    let common_name = format!("{}-{n}", recipe.common_name_prefix);
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name.as_str());
    let csr =
        csr_with_challenge(&key, &params, Some(challenge)).map_err(|e| crypto("the CSR", &e))?;
    let certificate = transient_certificate(&key, &common_name)
        .map_err(|e| crypto("the transient certificate", &e))?;
    let request = RequestBuilder::pkcs_req(&csr, &key, &certificate, recipe.recipient)
        .cipher(recipe.cipher)
        .digest(DigestAlgorithm::Sha256)
        .build()
        .map_err(|e| crypto("the PKCSReq", &e))?;
    Ok(Prepared {
        spki: pair.subject_public_key_info(),
        key,
        request,
    })
}

/// Prepares `count` requests on `threads` threads, request `i` with `challenge(i)`.
pub(crate) fn prepare_all<'c>(
    recipe: &Recipe<'_>,
    count: usize,
    threads: usize,
    challenge: &(dyn Fn(usize) -> Option<&'c str> + Sync),
    progress: bool,
) -> Result<Preparation, BenchError> {
    let started = Instant::now();
    let threads = threads.clamp(1, count.max(1));
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<BenchError>> = Mutex::new(None);
    let made: Mutex<Vec<(usize, Prepared)>> = Mutex::new(Vec::with_capacity(count));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut mine = Vec::new();
                while !failed.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count {
                        break;
                    }
                    let result = challenge(n)
                        .ok_or_else(|| BenchError::Options(format!("no challenge for request {n}")))
                        .and_then(|c| prepare(recipe, n, c));
                    match result {
                        Ok(prepared) => mine.push((n, prepared)),
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            first_error
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .get_or_insert(e);
                            break;
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                made.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .append(&mut mine);
            });
        }
        if progress {
            report_progress(&done, &failed, count, started, threads);
        }
    });
    if let Some(e) = first_error
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
    {
        return Err(e);
    }
    let mut made = made.into_inner().unwrap_or_else(PoisonError::into_inner);
    // Request i carries challenge i: sent in that order, a challenge file is spent from its top.
    made.sort_unstable_by_key(|(n, _)| *n);
    Ok(Preparation {
        requests: made.into_iter().map(|(_, p)| p).collect(),
        elapsed: started.elapsed(),
        threads,
    })
}

/// A line on standard error, rewritten every half second until all are made.
fn report_progress(
    done: &AtomicUsize,
    failed: &AtomicBool,
    count: usize,
    started: Instant,
    threads: usize,
) {
    loop {
        let made = done.load(Ordering::Relaxed);
        let elapsed = started.elapsed().as_secs_f64();
        let left = if made > 0 {
            format!(
                ", about {:.0} s left",
                elapsed / made as f64 * (count - made) as f64
            )
        } else {
            String::new()
        };
        eprint!("\rpreparing requests (RSA keys, {threads} threads): {made}/{count}{left}   ");
        if made >= count || failed.load(Ordering::Relaxed) {
            eprintln!();
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn requests_are_made_in_parallel_each_with_its_key() {
        let ra = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "RA");
        let ra_cert = params.self_signed(&ra).unwrap().der().to_vec();
        let recipe = Recipe {
            recipient: &ra_cert,
            cipher: ContentCipher::Aes128Cbc,
            key_size: RsaKeySize::_2048,
            common_name_prefix: "bench-test".into(),
        };
        let challenges = ["c0", "c1", "c2"];
        let challenge = |i: usize| challenges.get(i).copied();
        let made = prepare_all(&recipe, 3, 2, &challenge, false).unwrap();
        assert_eq!(made.requests.len(), 3);
        assert_eq!(made.threads, 2);
        let spkis: std::collections::HashSet<_> =
            made.requests.iter().map(|p| p.spki.clone()).collect();
        assert_eq!(spkis.len(), 3, "a fresh key per request");

        // A missing challenge stops the preparation with an error.
        let err = prepare_all(&recipe, 4, 2, &challenge, false)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no challenge for request 3"), "{err}");
        assert!(key_size(1024).is_err());
    }
}
