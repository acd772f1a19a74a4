//! What the fuzz targets and their seed generator share: the SCEP RA the envelopes are
//! addressed to. Its key (`ra-key.pk8`, made for these targets and for nothing else) and its
//! certificate are fixed, so that seeds written by one process open in another.

use std::sync::OnceLock;

use agentca_scep::RaIdentity;

/// The RA's key, PKCS#8 DER.
pub const RA_KEY: &[u8] = include_bytes!("../ra-key.pk8");

/// The RA certificate: self-signed with fixed fields, so the same DER in every process
/// (RSA PKCS#1 v1.5 signatures are deterministic).
pub fn ra_certificate() -> &'static [u8] {
    static CERT: OnceLock<Vec<u8>> = OnceLock::new();
    CERT.get_or_init(|| {
        let key = rcgen::KeyPair::try_from(RA_KEY).expect("the fixture key is RSA PKCS#8");
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "fuzzing RA");
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[1]));
        params.not_before = time::macros::datetime!(2026-01-01 0:00 UTC);
        params.not_after = time::macros::datetime!(2036-01-01 0:00 UTC);
        params
            .self_signed(&key)
            .expect("the fixture certificate signs")
            .der()
            .to_vec()
    })
}

/// The RA identity of [`ra_certificate`] and [`RA_KEY`].
pub fn ra() -> &'static RaIdentity {
    static RA: OnceLock<RaIdentity> = OnceLock::new();
    RA.get_or_init(|| {
        RaIdentity::from_pkcs8(ra_certificate(), RA_KEY).expect("the fixture RA is usable")
    })
}
