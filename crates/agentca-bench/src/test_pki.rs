//! A throwaway issuing CA → {OCSP responder, leaves} hierarchy for the tests, and the files
//! the peer responders (openssl, cfssl) read it from.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// id-pkix-ocsp-nocheck (RFC 6960 §4.2.2.2.1).
const OCSP_NOCHECK: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 1, 5];

pub(crate) struct TestPki {
    pub(crate) issuer_der: Vec<u8>,
    pub(crate) issuer_pem: String,
    pub(crate) responder_der: Vec<u8>,
    pub(crate) responder_pem: String,
    pub(crate) responder_key_pem: String,
    pub(crate) leaf_ders: Vec<Vec<u8>>,
    pub(crate) leaf_pems: Vec<String>,
    pub(crate) serials: Vec<Vec<u8>>,
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
}

/// Tells hierarchies apart by their CA's name, as relying parties do.
fn next_id() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn serial(n: usize) -> Vec<u8> {
    let mut bytes = vec![0x5a; 16];
    bytes[0] = 0x40;
    bytes[1..9].copy_from_slice(&(n as u64).to_be_bytes());
    bytes
}

impl TestPki {
    /// A new hierarchy (fresh keys, so two are never confused) with `leaves` leaf certificates.
    pub(crate) fn new(leaves: usize) -> Self {
        let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
        let ca_key = KeyPair::generate_for(alg).unwrap();
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name.push(
            DnType::CommonName,
            format!("Bench Test Issuing CA {}", next_id()),
        );
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca_params.serial_number = Some(SerialNumber::from_slice(&[0x11; 16]));
        validity(&mut ca_params, 30);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let ca = Issuer::new(ca_params, &ca_key);

        let responder_key = KeyPair::generate_for(alg).unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "Bench Test OCSP Responder");
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::OcspSigning];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(SerialNumber::from_slice(&[0x22; 16]));
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(
                OCSP_NOCHECK,
                vec![0x05, 0x00],
            ));
        validity(&mut params, 7);
        let responder_cert = params.signed_by(&responder_key, &ca).unwrap();
        let responder_key_pem = responder_key.serialize_pem();

        let mut leaf_ders = Vec::new();
        let mut leaf_pems = Vec::new();
        let mut serials = Vec::new();
        let leaf_key = KeyPair::generate_for(alg).unwrap();
        for n in 0..leaves {
            let mut params = CertificateParams::default();
            params.subject_alt_names = vec![SanType::URI(
                format!("spiffe://bench.test/agent/{n}").try_into().unwrap(),
            )];
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            params.use_authority_key_identifier_extension = true;
            params.serial_number = Some(SerialNumber::from_slice(&serial(n)));
            validity(&mut params, 1);
            let cert = params.signed_by(&leaf_key, &ca).unwrap();
            leaf_ders.push(cert.der().to_vec());
            leaf_pems.push(cert.pem());
            serials.push(serial(n));
        }

        Self {
            issuer_der: ca_cert.der().to_vec(),
            issuer_pem: ca_cert.pem(),
            responder_der: responder_cert.der().to_vec(),
            responder_pem: responder_cert.pem(),
            responder_key_pem,
            leaf_ders,
            leaf_pems,
            serials,
        }
    }

    /// Writes `issuing.pem`, `ocsp.pem`, `ocsp.key` and `leaf-N.pem` into `dir`, the names
    /// an agentca data directory uses.
    pub(crate) fn write_files(&self, dir: &Path) {
        std::fs::write(dir.join("issuing.pem"), &self.issuer_pem).unwrap();
        std::fs::write(dir.join("ocsp.pem"), &self.responder_pem).unwrap();
        std::fs::write(dir.join("ocsp.key"), &self.responder_key_pem).unwrap();
        for (n, pem) in self.leaf_pems.iter().enumerate() {
            std::fs::write(dir.join(format!("leaf-{n}.pem")), pem).unwrap();
        }
    }
}
