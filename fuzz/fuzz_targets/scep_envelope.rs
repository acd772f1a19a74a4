//! The EnvelopedData of a request, opened with the RA's key: reachable by anyone who signs a
//! request with a key of their own.
#![no_main]
use agentca_scep::ScepOptions;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ra = agentca_fuzz::ra();
    let _ = agentca_scep::fuzzing::open_envelope(data, ra, &ScepOptions::LEGACY);
});
