//! Flow tests over a PKI made at test time: a CA, an RSA RA certificate, requester keys.
//! Nothing here is a committed key or a vector from elsewhere.

mod decrypt;
mod fuzz;
mod interop;
mod negative;
mod roundtrip;

use std::sync::OnceLock;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256, RsaKeySize, SanType,
};

use crate::client::{RequestBuilder, SignerKey, transient_certificate};
use crate::key::RaIdentity;

pub(crate) struct Pki {
    ca_key: KeyPair,
    ca_params: CertificateParams,
    pub(crate) ca_cert: Vec<u8>,
    pub(crate) ra_cert: Vec<u8>,
    pub(crate) ra_key: Vec<u8>,
    /// A second RSA certificate that is not the RA's (a wrong recipient, an untrusted signer).
    pub(crate) other_cert: Vec<u8>,
    pub(crate) other_key: Vec<u8>,
    /// The requester's RSA key, its transient certificate and its CSR.
    pub(crate) req_key: Vec<u8>,
    pub(crate) req_self_signed: Vec<u8>,
    pub(crate) req_csr: Vec<u8>,
    /// A certificate issued to the requester's key (for RenewalReq and SUCCESS replies).
    pub(crate) req_issued: Vec<u8>,
    /// An ECDSA P-256 requester.
    pub(crate) ec_key: Vec<u8>,
    pub(crate) ec_self_signed: Vec<u8>,
    pub(crate) ec_csr: Vec<u8>,
}

fn rsa_key() -> KeyPair {
    KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048).unwrap()
}

impl Pki {
    fn new() -> Self {
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca_params = CertificateParams::default();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "test issuing CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x11; 16]));
        let ca_cert = ca_params.self_signed(&ca_key).unwrap().der().to_vec();

        let ra_key = rsa_key();
        let other_key = rsa_key();
        let req_key = rsa_key();
        let ec_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();

        let mut pki = Self {
            ca_key,
            ca_params,
            ca_cert,
            ra_cert: Vec::new(),
            ra_key: ra_key.serialize_der(),
            other_cert: Vec::new(),
            other_key: other_key.serialize_der(),
            req_key: req_key.serialize_der(),
            req_self_signed: Vec::new(),
            req_csr: csr(&req_key),
            req_issued: Vec::new(),
            ec_key: ec_key.serialize_der(),
            ec_self_signed: Vec::new(),
            ec_csr: csr(&ec_key),
        };
        pki.ra_cert = pki.sign_end_entity(&ra_key, "test SCEP RA", 0x21);
        pki.other_cert = pki.sign_end_entity(&other_key, "not the RA", 0x22);
        pki.req_issued = pki.sign_end_entity(&req_key, "issued to the requester", 0x23);
        let req = SignerKey::from_pkcs8(&pki.req_key).unwrap();
        pki.req_self_signed = transient_certificate(&req, "requester").unwrap();
        let ec = SignerKey::from_pkcs8(&pki.ec_key).unwrap();
        pki.ec_self_signed = transient_certificate(&ec, "ec requester").unwrap();
        pki
    }

    fn sign_end_entity(&self, key: &KeyPair, cn: &str, serial: u8) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = vec![SanType::URI(
            "spiffe://example.org/agent/test".try_into().unwrap(),
        )];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[serial; 16]));
        // Writes basicConstraints cA=false and, with it, a subjectKeyIdentifier.
        params.is_ca = IsCa::ExplicitNoCa;
        let issuer = Issuer::new(self.ca_params.clone(), &self.ca_key);
        params.signed_by(key, &issuer).unwrap().der().to_vec()
    }

    /// A certificate for the requester's key, as the CA would issue it.
    pub(crate) fn issue_for_requester(&self) -> Vec<u8> {
        self.req_issued.clone()
    }

    /// A CRL signed by the CA.
    pub(crate) fn crl(&self) -> Vec<u8> {
        let now = time::OffsetDateTime::now_utc();
        let params = rcgen::CertificateRevocationListParams {
            this_update: now,
            next_update: now + time::Duration::days(1),
            crl_number: rcgen::SerialNumber::from_slice(&[1]),
            issuing_distribution_point: None,
            revoked_certs: Vec::new(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let issuer = Issuer::new(self.ca_params.clone(), &self.ca_key);
        params.signed_by(&issuer).unwrap().der().to_vec()
    }
}

fn csr(key: &KeyPair) -> Vec<u8> {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "scep test request");
    params.serialize_request(key).unwrap().der().to_vec()
}

pub(crate) fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(Pki::new)
}

pub(crate) fn ra() -> &'static RaIdentity {
    static RA: OnceLock<RaIdentity> = OnceLock::new();
    RA.get_or_init(|| RaIdentity::from_pkcs8(&pki().ra_cert, &pki().ra_key).unwrap())
}

pub(crate) fn requester_key() -> &'static SignerKey {
    static KEY: OnceLock<SignerKey> = OnceLock::new();
    KEY.get_or_init(|| SignerKey::from_pkcs8(&pki().req_key).unwrap())
}

pub(crate) fn ec_key() -> &'static SignerKey {
    static KEY: OnceLock<SignerKey> = OnceLock::new();
    KEY.get_or_init(|| SignerKey::from_pkcs8(&pki().ec_key).unwrap())
}

/// A correct PKCSReq builder for the RSA requester.
pub(crate) fn pkcs_req() -> RequestBuilder<'static> {
    let p = pki();
    RequestBuilder::pkcs_req(&p.req_csr, requester_key(), &p.req_self_signed, &p.ra_cert)
}

/// PEM armour for handing DER to openssl.
pub(crate) fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
