//! Checking a signature over received bytes with a certificate's key, using webpki's
//! algorithm implementations (the same list rustls uses), selected by the signature's
//! `AlgorithmIdentifier` exactly as received.

use rustls_pki_types::SignatureVerificationAlgorithm;
use webpki::EndEntityCert;

/// Why a signature was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SignatureError {
    /// No supported algorithm has this identifier for the signer's key type.
    Unsupported,
    /// The signature does not verify.
    Invalid,
}

/// Verifies `signature` over `message` with `signer`'s public key. `algorithm_id` is the DER
/// content (without the outer SEQUENCE) of the signature's `AlgorithmIdentifier`.
pub(crate) fn verify(
    signer: &EndEntityCert<'_>,
    algs: &[&dyn SignatureVerificationAlgorithm],
    algorithm_id: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    let mut verdict = SignatureError::Unsupported;
    for alg in algs
        .iter()
        .filter(|alg| alg.signature_alg_id().as_ref() == algorithm_id)
    {
        match signer.verify_signature(*alg, message, signature) {
            Ok(()) => return Ok(()),
            // The algorithm names another key type (several share one signature identifier,
            // e.g. ECDSA with SHA-256 on P-256 and on P-384).
            Err(webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_)) => {}
            #[allow(deprecated)]
            Err(webpki::Error::UnsupportedSignatureAlgorithmForPublicKey) => {}
            Err(_) => verdict = SignatureError::Invalid,
        }
    }
    Err(verdict)
}
