//! The certificate profiles (design §2), built from decisions alone, and the pre-signing lint.
//!
//! [`leaf_params`] turns an [`Authorization`] into rcgen parameters; nothing in it comes from a
//! CSR except the public key and the names policy authorized. [`lint_leaf_tbs`] parses the
//! to-be-signed bytes back and checks them against the same authorization *before* the CA key
//! signs them (BR §4.3.1.2 pre-issuance linting; Boulder lints a throwaway-signed TBS, we lint
//! the TBS itself inside the signing call, which costs no extra signature).

use std::net::IpAddr;

use rcgen::{
    CertificateParams, CrlDistributionPoint, CustomExtension, DistinguishedName,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::TbsCertificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::csr::KeyKind;
use crate::error::{Error, Result};
use crate::identity::SpiffeId;
use crate::store::Serial;

/// How far `notBefore` is set before the signing time, for clients with slow clocks.
pub const BACKDATE: Duration = Duration::minutes(5);

/// Where relying parties find status and the issuer, built from `--base-url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Urls {
    /// OCSP responder (`/ocsp`).
    pub ocsp: String,
    /// Issuing CA certificate, DER (`/ca.crt`; RFC 5280 §4.2.2.1 wants DER or certs-only CMS).
    pub ca_issuers: String,
    /// Full CRL, DER (`/crl`).
    pub crl: String,
}

impl Urls {
    /// The URLs under a base URL such as `http://127.0.0.1:8080`.
    pub fn from_base(base: &str) -> Self {
        let base = base.trim_end_matches('/');
        Self {
            ocsp: format!("{base}/ocsp"),
            ca_issuers: format!("{base}/ca.crt"),
            crl: format!("{base}/crl"),
        }
    }
}

/// What policy granted: the only input to a leaf certificate besides serial and time.
/// Built only by [`crate::issuer`] after every check passed.
#[derive(Clone, Debug)]
pub struct Authorization {
    pub(crate) agent: SpiffeId,
    pub(crate) dns: Vec<String>,
    pub(crate) ips: Vec<IpAddr>,
    pub(crate) lifetime: Duration,
    pub(crate) key: KeyKind,
    pub(crate) spki_der: Vec<u8>,
    pub(crate) server_auth: bool,
    /// The policy's per-agent hourly certificate quota (0: none).
    pub(crate) certificates_per_hour: u32,
}

impl Authorization {
    /// The agent the certificate is for.
    pub fn agent(&self) -> &SpiffeId {
        &self.agent
    }

    /// Authorized DNS names.
    pub fn dns(&self) -> &[String] {
        &self.dns
    }

    /// Authorized IP addresses.
    pub fn ips(&self) -> &[IpAddr] {
        &self.ips
    }

    /// The granted lifetime, counted from signing.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }
}

/// The validity of a certificate signed at `now`.
pub fn validity(now: OffsetDateTime, lifetime: Duration) -> (OffsetDateTime, OffsetDateTime) {
    let now = whole_seconds(now);
    (now - BACKDATE, now + lifetime)
}

/// Truncates to whole seconds: X.509 times have no fractions, and what we store must equal
/// what we sign.
pub fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

/// rcgen parameters for an agent certificate.
pub fn leaf_params(
    auth: &Authorization,
    serial: Serial,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    urls: &Urls,
) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.serial_number = Some(SerialNumber::from_slice(serial.as_bytes()));
    params.not_before = not_before;
    params.not_after = not_after;
    // Empty subject: the identity is the URI SAN (X509-SVID §2), and rcgen then marks the SAN
    // critical (RFC 5280 §4.1.2.6).
    params.distinguished_name = DistinguishedName::new();
    let uri = auth
        .agent
        .as_str()
        .try_into()
        .map_err(|_| Error::Unreachable("a SPIFFE ID is valid IA5"))?;
    params.subject_alt_names.push(SanType::URI(uri));
    for name in &auth.dns {
        let name = name
            .as_str()
            .try_into()
            .map_err(|_| Error::Unreachable("checked DNS names are IA5"))?;
        params.subject_alt_names.push(SanType::DnsName(name));
    }
    for ip in &auth.ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if auth.key.is_rsa() {
        params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if auth.server_auth || !auth.dns.is_empty() || !auth.ips.is_empty() {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    params.use_authority_key_identifier_extension = true;
    params.key_identifier_method = KeyIdMethod::PreSpecified(key_identifier(&auth.spki_der)?);
    params.crl_distribution_points = vec![CrlDistributionPoint {
        uris: vec![urls.crl.clone()],
    }];
    params
        .custom_extensions
        .push(authority_info_access(Some(&urls.ocsp), &urls.ca_issuers));
    Ok(params)
}

/// What the TBS of a leaf must say, checked before signing.
pub(crate) struct LeafExpectation<'a> {
    pub(crate) auth: &'a Authorization,
    pub(crate) serial: Serial,
    pub(crate) not_before: OffsetDateTime,
    pub(crate) not_after: OffsetDateTime,
    pub(crate) issuer_subject: &'a [u8],
    pub(crate) issuer_not_after: OffsetDateTime,
}

/// Parses the to-be-signed certificate and checks it against the authorization and profile.
pub(crate) fn lint_leaf_tbs(tbs: &[u8], expect: &LeafExpectation<'_>) -> Result<()> {
    let fail = |what: &str| Err(Error::ProfileViolation(what.to_owned()));
    let Ok((rest, tbs)) = TbsCertificate::from_der(tbs) else {
        return fail("TBS does not parse");
    };
    if !rest.is_empty() {
        return fail("trailing bytes after the TBS");
    }
    if tbs.raw_serial() != expect.serial.as_bytes() {
        return fail("serial differs from the reserved serial");
    }
    if tbs.issuer.as_raw() != expect.issuer_subject {
        return fail("issuer name differs from the CA subject");
    }
    if !tbs.subject.as_raw().is_empty() && tbs.subject.iter().count() != 0 {
        return fail("subject is not empty");
    }
    let validity = tbs.validity();
    if validity.not_before.timestamp() != expect.not_before.unix_timestamp()
        || validity.not_after.timestamp() != expect.not_after.unix_timestamp()
    {
        return fail("validity differs from the authorized validity");
    }
    if expect.not_after > expect.issuer_not_after {
        return fail("notAfter is beyond the issuing CA's notAfter");
    }
    if tbs.subject_pki.raw != expect.auth.spki_der.as_slice() {
        return fail("public key differs from the request's");
    }
    let mut uris = 0;
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    let mut seen_ku = false;
    let mut seen_eku = false;
    for ext in tbs.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::BasicConstraints(bc) if bc.ca => return fail("cA=TRUE"),
            ParsedExtension::KeyUsage(ku) => {
                seen_ku = true;
                if !ext.critical || !ku.digital_signature() || ku.key_cert_sign() || ku.crl_sign() {
                    return fail("keyUsage is not the leaf profile's");
                }
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                seen_eku = true;
                if !eku.client_auth || eku.any || !eku.other.is_empty() || eku.code_signing {
                    return fail("extendedKeyUsage is not the leaf profile's");
                }
            }
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    match name {
                        GeneralName::URI(u) => {
                            uris += 1;
                            if *u != expect.auth.agent.as_str() {
                                return fail("URI SAN differs from the agent ID");
                            }
                        }
                        GeneralName::DNSName(d) => dns.push((*d).to_owned()),
                        GeneralName::IPAddress(b) => ips.push(b.to_vec()),
                        _ => return fail("unexpected subjectAltName type"),
                    }
                }
            }
            ParsedExtension::NameConstraints(_) => return fail("name constraints on a leaf"),
            _ => {}
        }
    }
    if uris != 1 {
        return fail("not exactly one URI SAN");
    }
    if dns != expect.auth.dns {
        return fail("DNS SANs differ from the authorized names");
    }
    let expected_ips: Vec<Vec<u8>> = expect
        .auth
        .ips
        .iter()
        .map(|ip| match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        })
        .collect();
    if ips != expected_ips {
        return fail("IP SANs differ from the authorized addresses");
    }
    if !seen_ku || !seen_eku {
        return fail("keyUsage or extendedKeyUsage missing");
    }
    Ok(())
}

/// The subjectKeyIdentifier of a public key: RFC 7093 §2 method 1, the leftmost 160 bits of
/// the SHA-256 of the subjectPublicKey BIT STRING contents (rcgen's default hashes the whole
/// SubjectPublicKeyInfo, which linters do not recognize as any published method).
pub fn key_identifier(spki_der: &[u8]) -> Result<Vec<u8>> {
    use sha2::{Digest, Sha256};
    let bits = crate::signer::subject_public_key_bits(spki_der)?;
    Ok(Sha256::digest(bits)[..20].to_vec())
}

/// The AuthorityInfoAccess extension (RFC 5280 §4.2.2.1): OCSP (if given) and caIssuers.
pub fn authority_info_access(ocsp: Option<&str>, ca_issuers: &str) -> CustomExtension {
    // id-ad-ocsp 1.3.6.1.5.5.7.48.1, id-ad-caIssuers 1.3.6.1.5.5.7.48.2
    const OCSP: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01];
    const CA_ISSUERS: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x02];
    let access = |method: &[u8], uri: &str| {
        let mut body = tlv(0x06, method);
        body.extend(tlv(0x86, uri.as_bytes())); // [6] IMPLICIT IA5String
        tlv(0x30, &body)
    };
    let mut descriptions = Vec::new();
    if let Some(ocsp) = ocsp {
        descriptions.extend(access(OCSP, ocsp));
    }
    descriptions.extend(access(CA_ISSUERS, ca_issuers));
    CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 1], tlv(0x30, &descriptions))
}

/// id-pkix-ocsp-nocheck (RFC 6960 §4.2.2.2.1), for the delegated responder certificate.
pub fn ocsp_nocheck() -> CustomExtension {
    CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 48, 1, 5], vec![0x05, 0x00])
}

/// A DER TLV with a one-byte tag.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = Vec::with_capacity(len + 6);
    out.push(tag);
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}
