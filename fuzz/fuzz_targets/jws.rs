//! An ACME request body: the flattened JWS, its protected header and embedded JWK, and the
//! signature check with that key; the payload as JSON.
#![no_main]
use agentca_acme::jose::{Jws, KeyRef};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(jws) = Jws::parse(data) {
        if let KeyRef::Jwk(key) = jws.protected_header().key() {
            let _ = key.thumbprint();
            let _ = jws.verify(key);
        }
        let _ = jws.payload_json();
    }
});
