//! A certs-only PKCS#7 (GetCACert, a CertRep's content), as `agentca enroll --scep` reads a
//! server's answers.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = agentca_scep::parse_certs_only(data);
});
