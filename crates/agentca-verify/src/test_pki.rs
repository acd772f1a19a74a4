//! Test PKIs made at test time with rcgen: roots, issuing CAs, OCSP responder certificates,
//! agent leaves and CRLs, each with the knobs the refusal tests turn.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU32, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CustomExtension,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevokedCertParams, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use crate::TrustAnchors;

pub(crate) const TD: &str = "example.org";

/// id-pkix-ocsp-nocheck (RFC 6960 §4.2.2.2.1).
const OCSP_NOCHECK: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 1, 5];
/// id-pe-authorityInfoAccess.
const AIA: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 1];

pub(crate) fn now() -> OffsetDateTime {
    // Whole seconds: certificate and OCSP times have no fractions.
    OffsetDateTime::from_unix_timestamp(OffsetDateTime::now_utc().unix_timestamp()).unwrap()
}

pub(crate) fn agent(path: &str) -> String {
    format!("spiffe://{TD}{path}")
}

/// A fresh serial for each certificate of a test run: 16 bytes, positive.
fn next_serial() -> Vec<u8> {
    static COUNTER: AtomicU32 = AtomicU32::new(1);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut serial = vec![0x5a; 12];
    serial.extend_from_slice(&n.to_be_bytes());
    serial
}

/// A CA: its parameters (to sign with), key and certificate.
pub(crate) struct TestCa {
    params: CertificateParams,
    pub(crate) key: KeyPair,
    pub(crate) cert: CertificateDer<'static>,
}

/// A certificate with its key.
pub(crate) struct Issued {
    pub(crate) cert: CertificateDer<'static>,
    pub(crate) key: KeyPair,
    pub(crate) serial: Vec<u8>,
}

fn ca_params(name: &str, path_len: u8) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "agentca test");
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now() - Duration::days(1);
    params.not_after = now() + Duration::days(365);
    params.serial_number = Some(SerialNumber::from_slice(&next_serial()));
    params.use_authority_key_identifier_extension = true;
    params
}

impl TestCa {
    pub(crate) fn root(name: &str) -> Self {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = ca_params(name, 1);
        params.use_authority_key_identifier_extension = false;
        let cert = params.self_signed(&key).unwrap();
        Self {
            params,
            key,
            cert: cert.der().clone(),
        }
    }

    /// An issuing CA under this one.
    pub(crate) fn intermediate(&self, name: &str) -> Self {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params = ca_params(name, 0);
        let cert = params.signed_by(&key, &self.issuer()).unwrap();
        Self {
            params,
            key,
            cert: cert.der().clone(),
        }
    }

    pub(crate) fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }

    pub(crate) fn anchors(&self) -> TrustAnchors {
        TrustAnchors::from_der([self.cert.clone()]).unwrap()
    }

    pub(crate) fn issue(&self, spec: &Leaf) -> Issued {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = spec
            .uris
            .iter()
            .map(|u| SanType::URI(u.as_str().try_into().unwrap()))
            .chain(
                spec.dns
                    .iter()
                    .map(|d| SanType::DnsName(d.as_str().try_into().unwrap())),
            )
            .collect();
        params.is_ca = if spec.ca {
            IsCa::Ca(BasicConstraints::Unconstrained)
        } else {
            IsCa::ExplicitNoCa
        };
        params.key_usages = if spec.ca {
            vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::DigitalSignature,
            ]
        } else {
            vec![KeyUsagePurpose::DigitalSignature]
        };
        params.extended_key_usages = spec.eku.clone();
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        params.serial_number = Some(SerialNumber::from_slice(&spec.serial));
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = KeyIdMethod::Sha256;
        if let Some(url) = &spec.ocsp_url {
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(AIA, aia(url)));
        }
        if spec.ocsp_nocheck {
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(
                    OCSP_NOCHECK,
                    vec![0x05, 0x00],
                ));
        }
        let cert = params.signed_by(&key, &self.issuer()).unwrap();
        Issued {
            cert: cert.der().clone(),
            key,
            serial: spec.serial.clone(),
        }
    }

    /// A delegated OCSP responder certificate (id-kp-OCSPSigning, ocsp-nocheck).
    pub(crate) fn responder(&self) -> Issued {
        self.issue(&Leaf::responder())
    }

    /// A CRL listing `revoked` (serial, reason code) valid from `this_update` to `next_update`.
    pub(crate) fn crl(
        &self,
        revoked: &[(&[u8], Option<rcgen::RevocationReason>)],
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Vec<u8> {
        let params = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from_slice(&[1]),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|(serial, reason)| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(serial),
                    revocation_time: this_update - Duration::minutes(10),
                    reason_code: *reason,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer()).unwrap().der().to_vec()
    }
}

/// What a leaf looks like; [`Leaf::agent`] is a good agentca agent certificate.
#[derive(Clone)]
pub(crate) struct Leaf {
    pub(crate) uris: Vec<String>,
    pub(crate) dns: Vec<String>,
    pub(crate) ca: bool,
    pub(crate) eku: Vec<ExtendedKeyUsagePurpose>,
    pub(crate) not_before: OffsetDateTime,
    pub(crate) not_after: OffsetDateTime,
    pub(crate) serial: Vec<u8>,
    pub(crate) ocsp_url: Option<String>,
    pub(crate) ocsp_nocheck: bool,
}

impl Leaf {
    pub(crate) fn agent(path: &str) -> Self {
        Self {
            uris: vec![agent(path)],
            dns: Vec::new(),
            ca: false,
            eku: vec![
                ExtendedKeyUsagePurpose::ClientAuth,
                ExtendedKeyUsagePurpose::ServerAuth,
            ],
            not_before: now() - Duration::minutes(5),
            not_after: now() + Duration::hours(24),
            serial: next_serial(),
            ocsp_url: None,
            ocsp_nocheck: false,
        }
    }

    pub(crate) fn responder() -> Self {
        Self {
            uris: Vec::new(),
            eku: vec![ExtendedKeyUsagePurpose::OcspSigning],
            ocsp_nocheck: true,
            ..Self::agent("/unused")
        }
    }
}

/// The DER of an AuthorityInfoAccessSyntax with one OCSP access description.
fn aia(url: &str) -> Vec<u8> {
    let oid = [0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01];
    let location = tlv(0x86, url.as_bytes());
    let description = tlv(0x30, &[&oid[..], &location].concat());
    tlv(0x30, &description)
}

pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(u8::try_from(len).unwrap());
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | u8::try_from(bytes.len() - skip).unwrap());
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// A root, an issuing CA under it, and a delegated OCSP responder of the issuing CA.
pub(crate) struct Pki {
    pub(crate) root: TestCa,
    pub(crate) issuing: TestCa,
    pub(crate) responder: Issued,
}

impl Pki {
    pub(crate) fn new() -> Self {
        let root = TestCa::root("Test Root");
        let issuing = root.intermediate("Test Issuing CA");
        let responder = issuing.responder();
        Self {
            root,
            issuing,
            responder,
        }
    }

    /// A good agent certificate at `path`.
    pub(crate) fn agent(&self, path: &str) -> Issued {
        self.issuing.issue(&Leaf::agent(path))
    }

    pub(crate) fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.issuing.cert.clone()]
    }
}
