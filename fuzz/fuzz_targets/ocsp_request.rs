//! An OCSP request body, as `/ocsp` reads it (and the status a refusal is answered with).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match agentca_core::ocsp::parse_request(data) {
        Ok(request) => assert!(request.cert_ids.len() <= agentca_core::ocsp::MAX_REQUESTS),
        Err(e) => {
            let _ = e.response_status();
        }
    }
});
