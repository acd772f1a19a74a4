//! A PKCS#10 request, PEM or DER, as every issuance path reads it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(csr) = agentca_core::csr::CertificateRequest::parse(data) {
        let _ = (csr.names(), csr.challenge_password(), csr.key_kind());
    }
});
