//! A small PKI built with rcgen for the checker's own tests: a root, an issuing CA and leaves
//! that follow agentca's profile, so each test can break exactly one thing.

use std::panic::{AssertUnwindSafe, catch_unwind};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint,
    CrlIssuingDistributionPoint, CrlScope, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PublicKeyData, RevocationReason, RevokedCertParams, SanType,
    SerialNumber, SignatureAlgorithm,
};
use time::{Duration, OffsetDateTime};

use crate::der::write;
use crate::expectation::{BACKDATE, Expectation};

pub(crate) const AGENT: &str = "spiffe://example.org/agent/alice/mailer";
pub(crate) const BASE_URL: &str = "http://127.0.0.1:8080";

/// 16 random octets in agentca's form: first octet 0x01..=0x7f.
pub(crate) fn random_serial() -> [u8; 16] {
    loop {
        let mut s = [0u8; 16];
        aws_lc_rs::rand::fill(&mut s).unwrap();
        s[0] &= 0x7f;
        if s[0] != 0 {
            return s;
        }
    }
}

/// An authorityInfoAccess extension with the given OCSP and caIssuers URIs.
pub(crate) fn aia(ocsp: &str, ca_issuers: &str) -> CustomExtension {
    let content = write::sequence(&[
        write::sequence(&[write::OID_AD_OCSP.to_vec(), write::uri(ocsp)]),
        write::sequence(&[write::OID_AD_CA_ISSUERS.to_vec(), write::uri(ca_issuers)]),
    ]);
    CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 1], content)
}

/// id-pkix-ocsp-nocheck with its NULL value.
pub(crate) fn ocsp_nocheck() -> CustomExtension {
    CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 48, 1, 5], vec![0x05, 0x00])
}

/// RFC 7093 §2 method 1: the leftmost 160 bits of SHA-256 over the subjectPublicKey bits.
/// (rcgen's own methods hash the whole SubjectPublicKeyInfo, which pkilint reports as an
/// unknown method.)
pub(crate) fn key_id(key: &impl PublicKeyData) -> KeyIdMethod {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.der_bytes());
    KeyIdMethod::PreSpecified(digest.as_ref()[..20].to_vec())
}

/// `params` with the subject key identifier derived from `key`, unless a test chose one.
fn with_key_id(params: &CertificateParams, key: &impl PublicKeyData) -> CertificateParams {
    let mut params = params.clone();
    if !matches!(params.key_identifier_method, KeyIdMethod::PreSpecified(_)) {
        params.key_identifier_method = key_id(key);
    }
    params
}

fn ca_params(cn: &str, lifetime: Duration) -> CertificateParams {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "agentca test");
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    params.not_before = now - Duration::hours(1);
    params.not_after = now + lifetime;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    params
}

/// A 7-day non-CA certificate's parameters, the base of the responder and RA profiles.
pub(crate) fn service_params(cn: &str) -> CertificateParams {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(7);
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    params
}

/// A correct delegated OCSP responder certificate's parameters.
pub(crate) fn responder_params() -> CertificateParams {
    let mut params = service_params("agentca OCSP responder");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::OcspSigning];
    params.custom_extensions = vec![ocsp_nocheck()];
    params
}

/// A root and an issuing CA, both P-256.
pub(crate) struct Pki {
    pub(crate) root_key: KeyPair,
    pub(crate) root_params: CertificateParams,
    pub(crate) root_der: Vec<u8>,
    pub(crate) ca_key: KeyPair,
    pub(crate) ca_params: CertificateParams,
    pub(crate) ca_der: Vec<u8>,
}

impl Pki {
    /// A fresh hierarchy whose names differ from every other one's, so that two of them in
    /// one test are told apart by name as well as by key.
    pub(crate) fn new() -> Self {
        let tag = crate::parse::hex(&random_serial()[..4]);
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let root_params = with_key_id(
            &ca_params(&format!("agentca test root {tag}"), Duration::days(3650)),
            &root_key,
        );
        let root_der = root_params.self_signed(&root_key).unwrap().der().to_vec();

        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca_params = ca_params(
            &format!("agentca test issuing CA {tag}"),
            Duration::days(365),
        );
        ca_params.use_authority_key_identifier_extension = true;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let ca_params = with_key_id(&ca_params, &ca_key);
        let root_issuer = Issuer::from_params(&root_params, &root_key);
        let ca_der = ca_params
            .signed_by(&ca_key, &root_issuer)
            .unwrap()
            .der()
            .to_vec();

        Self {
            root_key,
            root_params,
            root_der,
            ca_key,
            ca_params,
            ca_der,
        }
    }

    /// A CRL from the issuing CA listing `revoked` serials (content octets), valid for a day.
    pub(crate) fn crl(&self, revoked: &[&[u8]]) -> Vec<u8> {
        self.crl_until(revoked, OffsetDateTime::now_utc() + Duration::days(1))
    }

    /// Like [`Pki::crl`] with the given nextUpdate.
    pub(crate) fn crl_until(&self, revoked: &[&[u8]], next_update: OffsetDateTime) -> Vec<u8> {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(1),
            next_update,
            crl_number: SerialNumber::from_slice(&[1]),
            issuing_distribution_point: Some(CrlIssuingDistributionPoint {
                distribution_point: CrlDistributionPoint {
                    uris: vec![format!("{BASE_URL}/crl")],
                },
                scope: Some(CrlScope::UserCertsOnly),
            }),
            revoked_certs: revoked
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(serial),
                    revocation_time: now - Duration::seconds(30),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: self.ca_params.key_identifier_method.clone(),
        };
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        params.signed_by(&issuer).unwrap().der().to_vec()
    }

    /// The chain as agentca hands it out: issuing CA, then root.
    pub(crate) fn chain(&self) -> Vec<Vec<u8>> {
        vec![self.ca_der.clone(), self.root_der.clone()]
    }

    /// Signs `params` for `key` with the issuing CA.
    pub(crate) fn issue(&self, params: &CertificateParams, key: &impl PublicKeyData) -> Vec<u8> {
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        with_key_id(params, key)
            .signed_by(key, &issuer)
            .unwrap()
            .der()
            .to_vec()
    }

    /// Signs `params` for `key` with the root.
    pub(crate) fn issue_by_root(
        &self,
        params: &CertificateParams,
        key: &impl PublicKeyData,
    ) -> Vec<u8> {
        let issuer = Issuer::from_params(&self.root_params, &self.root_key);
        with_key_id(params, key)
            .signed_by(key, &issuer)
            .unwrap()
            .der()
            .to_vec()
    }
}

/// A leaf request: correct parameters for agentca's profile, the key, and when it was made.
pub(crate) struct Leaf {
    pub(crate) params: CertificateParams,
    pub(crate) key: KeyPair,
    pub(crate) signed_at: OffsetDateTime,
}

impl Leaf {
    /// A correct 24 h agent leaf with an ECDSA P-256 key.
    pub(crate) fn new() -> Self {
        Self::with_key(&PKCS_ECDSA_P256_SHA256)
    }

    /// A correct 24 h agent leaf with a fresh key for `alg`.
    pub(crate) fn with_key(alg: &'static SignatureAlgorithm) -> Self {
        let signed_at = OffsetDateTime::now_utc();
        let key = KeyPair::generate_for(alg).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
        params.not_before = signed_at - BACKDATE;
        params.not_after = signed_at + Duration::hours(24);
        params.subject_alt_names = vec![SanType::URI(AGENT.try_into().unwrap())];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.crl_distribution_points = vec![CrlDistributionPoint {
            uris: vec![format!("{BASE_URL}/crl")],
        }];
        params.custom_extensions = vec![aia(
            &format!("{BASE_URL}/ocsp"),
            &format!("{BASE_URL}/ca.crt"),
        )];
        Self {
            params,
            key,
            signed_at,
        }
    }

    /// What a test of this leaf would expect.
    pub(crate) fn expectation(&self) -> Expectation {
        Expectation::new(AGENT, self.signed_at)
            .csr_public_key_spki(self.key.subject_public_key_info())
            .base_url(BASE_URL)
    }
}

/// Runs `f`, which must panic, and returns its message.
pub(crate) fn panic_message(f: impl FnOnce()) -> String {
    // Only the message is looked at afterwards, so no broken state can leak.
    let Err(err) = catch_unwind(AssertUnwindSafe(f)) else {
        panic!("the check passed, but it should have failed");
    };
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

/// Asserts that `f` panics with a message containing every one of `needles`.
pub(crate) fn assert_fails_with(needles: &[&str], f: impl FnOnce()) {
    let msg = panic_message(f);
    for needle in needles {
        assert!(
            msg.contains(needle),
            "expected a failure mentioning {needle:?}, got: {msg}"
        );
    }
}

/// Replaces the first occurrence of `from` in `der` with `to` (same length).
pub(crate) fn patch(der: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = der
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern not found");
    let mut out = der.to_vec();
    out[at..at + to.len()].copy_from_slice(to);
    out
}

/// Replaces the last occurrence of `from` in `der` with `to` (same length).
pub(crate) fn patch_last(der: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = der
        .windows(from.len())
        .rposition(|w| w == from)
        .expect("pattern not found");
    let mut out = der.to_vec();
    out[at..at + to.len()].copy_from_slice(to);
    out
}

/// Signs the (possibly patched) tbsCertificate of `der` again with `key`, so a test can break
/// one field and keep a valid signature.
pub(crate) fn resign(der: &[u8], key: &KeyPair) -> Vec<u8> {
    use rcgen::SigningKey;

    let (cert, _) = crate::der::read_tlv(der).unwrap();
    let (tbs, rest) = crate::der::read_tlv(cert.content).unwrap();
    let (alg, _) = crate::der::read_tlv(rest).unwrap();
    let signature = key.sign(tbs.whole).unwrap();
    let bits = [&[0u8][..], &signature].concat();
    write::sequence(&[
        tbs.whole.to_vec(),
        alg.whole.to_vec(),
        write::tlv(0x03, &bits),
    ])
}
