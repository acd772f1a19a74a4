//! A throwaway root → issuing CA → {OCSP responder, leaf} hierarchy for the OCSP tests.

#![allow(clippy::unwrap_used)]

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::signer::KeyPairSigner;

/// id-pkix-ocsp-nocheck (RFC 6960 §4.2.2.2.1).
const OCSP_NOCHECK: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 1, 5];

pub(super) struct TestPki {
    pub(super) root_pem: String,
    pub(super) issuer_der: Vec<u8>,
    pub(super) issuer_pem: String,
    pub(super) responder_der: Vec<u8>,
    pub(super) responder: KeyPairSigner,
    pub(super) leaf_serial: Vec<u8>,
    pub(super) leaf_pem: String,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "OCSP Test");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, 30);
    params
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
}

/// Builds the hierarchy; `alg` is the responder's (and CAs') key algorithm.
pub(super) fn make(alg: &'static rcgen::SignatureAlgorithm) -> TestPki {
    let root_key = KeyPair::generate_for(alg).unwrap();
    let root_params = ca_params("OCSP Test Root");
    let root_cert = root_params.self_signed(&root_key).unwrap();
    let root = Issuer::new(root_params, &root_key);

    let issuer_key = KeyPair::generate_for(alg).unwrap();
    let mut issuer_params = ca_params("OCSP Test Issuing CA");
    issuer_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    issuer_params.use_authority_key_identifier_extension = true;
    issuer_params.serial_number = Some(SerialNumber::from_slice(&[0x11; 16]));
    let issuer_cert = issuer_params.signed_by(&issuer_key, &root).unwrap();
    let issuer = Issuer::new(issuer_params, &issuer_key);

    let responder_key = KeyPair::generate_for(alg).unwrap();
    let mut responder_params = CertificateParams::default();
    responder_params
        .distinguished_name
        .push(DnType::CommonName, "OCSP Test Responder");
    responder_params.is_ca = IsCa::ExplicitNoCa;
    responder_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    responder_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::OcspSigning];
    responder_params.use_authority_key_identifier_extension = true;
    responder_params.serial_number = Some(SerialNumber::from_slice(&[0x22; 16]));
    responder_params
        .custom_extensions
        .push(CustomExtension::from_oid_content(
            OCSP_NOCHECK,
            vec![0x05, 0x00],
        ));
    validity(&mut responder_params, 7);
    let responder_cert = responder_params.signed_by(&responder_key, &issuer).unwrap();

    let leaf_key = KeyPair::generate_for(alg).unwrap();
    let leaf_serial = vec![0x3a; 16];
    let mut leaf_params = CertificateParams::default();
    leaf_params.subject_alt_names = vec![SanType::URI(
        "spiffe://example.test/agent/one".try_into().unwrap(),
    )];
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    leaf_params.use_authority_key_identifier_extension = true;
    leaf_params.serial_number = Some(SerialNumber::from_slice(&leaf_serial));
    validity(&mut leaf_params, 1);
    let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer).unwrap();

    TestPki {
        root_pem: root_cert.pem(),
        issuer_der: issuer_cert.der().to_vec(),
        issuer_pem: issuer_cert.pem(),
        responder_der: responder_cert.der().to_vec(),
        responder: KeyPairSigner::new(responder_key).unwrap(),
        leaf_serial,
        leaf_pem: leaf_cert.pem(),
    }
}
