//! The leaf profile (design §2): INV-1 and INV-3 to INV-7 on one issued certificate.

use std::collections::BTreeSet;
use std::net::IpAddr;

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
use x509_parser::x509::X509Version;

use crate::expectation::Expectation;
use crate::extensions::{self as ext, find, parsed};
use crate::link::{Aki, check_issued_by};
use crate::parse::{self, hex};
use crate::{serial, validity};

/// The extensions a leaf may carry (INV-7). Anything else, CSR-borne or CA-only, is a defect.
const ALLOWED: [&str; 8] = [
    ext::SUBJECT_ALT_NAME,
    ext::KEY_USAGE,
    ext::EXT_KEY_USAGE,
    ext::BASIC_CONSTRAINTS,
    ext::AUTHORITY_KEY_ID,
    ext::SUBJECT_KEY_ID,
    ext::AUTHORITY_INFO_ACCESS,
    ext::CRL_DISTRIBUTION_POINTS,
];

/// Checks every issuance invariant on one leaf certificate and panics, naming the invariant,
/// on the first violation.
///
/// `chain_der` is the chain agentca returned, issuing CA first (then the root, if included).
/// Each certificate in it must be signed by the next. The leaf is checked for:
///
/// - version v3;
/// - INV-1: serial positive, ≤ 20 octets, DER-minimal, exactly 16 octets starting with
///   0x01..=0x7f, not one repeated octet;
/// - INV-3: notBefore = signing time − 5 min, lifetime from signing ≤ `max_lifetime`
///   (and = `requested_lifetime` when given), notAfter ≤ the issuer's notAfter, UTCTime
///   before 2050 and GeneralizedTime from 2050;
/// - INV-4: issuer DN byte-identical to the CA's subject, AKI = the CA's SKI, both signature
///   AlgorithmIdentifiers byte-identical, signature valid under the CA's key;
/// - INV-5: never cA=true; keyUsage critical with digitalSignature only (plus
///   keyEncipherment for RSA keys); extKeyUsage with clientAuth, plus serverAuth exactly when
///   DNS or IP names are present, and nothing else;
/// - INV-6: one URI SAN equal to the agent ID, DNS and IP SANs equal to the expected sets, no
///   other name types, SAN critical when the subject is empty;
/// - INV-7: only allow-listed extensions, non-critical AKI/SKI/AIA/CDP; AIA with one OCSP
///   and one caIssuers URI, one CRL distribution point URI (equal to `base_url` + `/ocsp`,
///   `/ca.crt` and `/crl` when a base URL is expected);
/// - the public key equal to the CSR's, when given.
pub fn assert_issued_invariants(leaf_der: &[u8], chain_der: &[Vec<u8>], expect: &Expectation) {
    let Some(issuer_der) = chain_der.first() else {
        panic!("assert_issued_invariants: the chain is empty; pass the issuing CA first");
    };
    let leaf = parse::certificate("leaf", leaf_der);
    let issuer = parse::certificate("issuing CA", issuer_der);
    check_chain_links(chain_der);

    if leaf.version() != X509Version::V3 {
        violated!("version", "the leaf is {:?}, not v3", leaf.version());
    }
    serial::check_agentca(leaf.raw_serial());
    validity::check_leaf(&leaf, &issuer, expect);
    check_issued_by(
        "INV-4 (issuer link)",
        "leaf",
        &leaf,
        leaf_der,
        &issuer,
        Aki::Required,
    );
    ext::check_unique("INV-7 (extensions)", &leaf);
    check_allow_list(&leaf);
    let names = check_names(&leaf, expect);
    check_usages(&leaf, names.has_dns_or_ip());
    check_status_pointers(&leaf, expect.base_url.as_deref());

    if let Some(spki) = &expect.csr_public_key_spki {
        if leaf.public_key().raw != spki.as_slice() {
            violated!(
                "public key",
                "the leaf's SubjectPublicKeyInfo {} is not the CSR's {}",
                hex(leaf.public_key().raw),
                hex(spki)
            );
        }
    }
}

/// Each chain element must be issued by the next one; the last is only parsed.
fn check_chain_links(chain_der: &[Vec<u8>]) {
    for (i, pair) in chain_der.windows(2).enumerate() {
        let cert = parse::certificate("chain", &pair[0]);
        let issuer = parse::certificate("chain", &pair[1]);
        check_issued_by(
            "INV-4 (issuer link)",
            &format!("chain certificate {i}"),
            &cert,
            &pair[0],
            &issuer,
            Aki::Required,
        );
    }
}

fn check_allow_list(leaf: &X509Certificate<'_>) {
    const INV: &str = "INV-7 (extensions)";
    for e in leaf.extensions() {
        let oid = e.oid.to_id_string();
        if !ALLOWED.contains(&oid.as_str()) {
            violated!(
                INV,
                "the leaf carries {} ({oid}), which is not on the leaf allow-list",
                ext::name(&oid)
            );
        }
        let must_be_non_critical = [
            ext::AUTHORITY_INFO_ACCESS,
            ext::CRL_DISTRIBUTION_POINTS,
            ext::AUTHORITY_KEY_ID,
            ext::SUBJECT_KEY_ID,
        ];
        if e.critical && must_be_non_critical.contains(&oid.as_str()) {
            violated!(INV, "{} is marked critical", ext::name(&oid));
        }
    }
}

/// The names found in the SAN, once INV-6 has accepted them.
struct Names {
    dns: usize,
    ips: usize,
}

impl Names {
    fn has_dns_or_ip(&self) -> bool {
        self.dns + self.ips > 0
    }
}

fn check_names(leaf: &X509Certificate<'_>, expect: &Expectation) -> Names {
    const INV: &str = "INV-6 (subjectAltName)";
    let Some(san_ext) = find(leaf, ext::SUBJECT_ALT_NAME) else {
        violated!(INV, "the leaf has no subjectAltName extension");
    };
    let ParsedExtension::SubjectAlternativeName(san) = parsed(INV, san_ext) else {
        violated!(INV, "subjectAltName did not decode as GeneralNames");
    };

    let subject_empty = leaf.subject().iter().next().is_none();
    if subject_empty && !san_ext.critical {
        violated!(
            INV,
            "the subject is empty but subjectAltName is not critical (RFC 5280 §4.2.1.6)"
        );
    }

    let mut uris = Vec::new();
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for name in &san.general_names {
        match name {
            GeneralName::URI(u) => uris.push(*u),
            GeneralName::DNSName(d) => dns.push(d.to_string()),
            GeneralName::IPAddress(bytes) => ips.push(ip_from_san(INV, bytes)),
            other => violated!(
                INV,
                "the SAN holds a {} ({other:?}); only URI, DNS and IP names are allowed",
                ext::general_name_kind(other)
            ),
        }
    }

    match uris.as_slice() {
        [uri] if *uri == expect.agent_id => {}
        [uri] => violated!(
            INV,
            "the URI SAN is {uri:?}, not the agent ID {:?}",
            expect.agent_id
        ),
        other => violated!(
            INV,
            "the SAN holds {} URIs ({other:?}); an X.509-SVID has exactly one",
            other.len()
        ),
    }

    let dns_set = distinct(INV, "DNS name", &dns);
    let expected_dns = expect.dns.iter().cloned().collect::<BTreeSet<_>>();
    if dns_set != expected_dns {
        violated!(
            INV,
            "DNS SANs are {dns_set:?}, expected {expected_dns:?}"
        );
    }
    let ip_set = distinct(INV, "IP address", &ips);
    let expected_ips = expect.ips.iter().copied().collect::<BTreeSet<_>>();
    if ip_set != expected_ips {
        violated!(INV, "IP SANs are {ip_set:?}, expected {expected_ips:?}");
    }

    Names {
        dns: dns.len(),
        ips: ips.len(),
    }
}

fn ip_from_san(inv: &str, bytes: &[u8]) -> IpAddr {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        IpAddr::from(v4)
    } else if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        IpAddr::from(v6)
    } else {
        violated!(
            inv,
            "an iPAddress SAN has {} octets ({}); it must have 4 or 16",
            bytes.len(),
            hex(bytes)
        )
    }
}

/// The set of `items`, failing if one appears twice: a repeated name is a sign that names
/// were concatenated rather than decided.
fn distinct<T: Ord + Clone + std::fmt::Debug>(inv: &str, what: &str, items: &[T]) -> BTreeSet<T> {
    let mut set = BTreeSet::new();
    for item in items {
        if !set.insert(item.clone()) {
            violated!(inv, "the {what} {item:?} appears twice in the SAN");
        }
    }
    set
}

fn check_usages(leaf: &X509Certificate<'_>, has_dns_or_ip: bool) {
    const INV: &str = "INV-5 (key usage)";

    if let Some(bc) = find(leaf, ext::BASIC_CONSTRAINTS) {
        match parsed(INV, bc) {
            ParsedExtension::BasicConstraints(bc) if bc.ca => {
                violated!(INV, "basicConstraints says cA=true on a leaf")
            }
            ParsedExtension::BasicConstraints(bc) if bc.path_len_constraint.is_some() => {
                violated!(INV, "basicConstraints has a pathLenConstraint on a leaf")
            }
            ParsedExtension::BasicConstraints(_) => {}
            other => violated!(INV, "basicConstraints decoded as {other:?}"),
        }
    }

    let Some(ku_ext) = find(leaf, ext::KEY_USAGE) else {
        violated!(INV, "the leaf has no keyUsage extension");
    };
    if !ku_ext.critical {
        violated!(INV, "keyUsage is not critical");
    }
    let ParsedExtension::KeyUsage(ku) = parsed(INV, ku_ext) else {
        violated!(INV, "keyUsage did not decode as a KeyUsage bit string");
    };
    if !ku.digital_signature() {
        violated!(INV, "keyUsage lacks digitalSignature ({ku})");
    }
    if ku.key_cert_sign() || ku.crl_sign() {
        violated!(INV, "keyUsage on a leaf has keyCertSign or cRLSign ({ku})");
    }
    if ku.key_encipherment() && !ext::is_rsa(leaf) {
        violated!(
            INV,
            "keyUsage has keyEncipherment but the key is not RSA ({ku})"
        );
    }
    // digitalSignature (bit 0) and keyEncipherment (bit 2) are the whole profile.
    let extra = ku.flags & !0b101;
    if extra != 0 {
        violated!(
            INV,
            "keyUsage has bits beyond digitalSignature/keyEncipherment ({ku})"
        );
    }

    let Some(eku_ext) = find(leaf, ext::EXT_KEY_USAGE) else {
        violated!(INV, "the leaf has no extKeyUsage extension");
    };
    let ParsedExtension::ExtendedKeyUsage(eku) = parsed(INV, eku_ext) else {
        violated!(INV, "extKeyUsage did not decode as a list of purposes");
    };
    if !eku.client_auth {
        violated!(INV, "extKeyUsage lacks clientAuth");
    }
    if eku.server_auth != has_dns_or_ip {
        if has_dns_or_ip {
            violated!(
                INV,
                "the leaf has DNS/IP SANs but extKeyUsage lacks serverAuth"
            );
        }
        violated!(
            INV,
            "extKeyUsage has serverAuth but the leaf has no DNS or IP SANs"
        );
    }
    if eku.any
        || eku.code_signing
        || eku.email_protection
        || eku.time_stamping
        || eku.ocsp_signing
        || !eku.other.is_empty()
    {
        violated!(
            INV,
            "extKeyUsage has purposes beyond clientAuth/serverAuth: {eku:?}"
        );
    }
}

fn check_status_pointers(leaf: &X509Certificate<'_>, base_url: Option<&str>) {
    const INV: &str = "INV-7 (extensions)";
    let base = base_url.map(|b| b.trim_end_matches('/'));

    let Some(aia_ext) = find(leaf, ext::AUTHORITY_INFO_ACCESS) else {
        violated!(INV, "the leaf has no authorityInfoAccess extension");
    };
    let ParsedExtension::AuthorityInfoAccess(aia) = parsed(INV, aia_ext) else {
        violated!(INV, "authorityInfoAccess did not decode");
    };
    let mut ocsp = Vec::new();
    let mut ca_issuers = Vec::new();
    for desc in aia.iter() {
        let method = desc.access_method.to_id_string();
        let GeneralName::URI(uri) = &desc.access_location else {
            violated!(
                INV,
                "an authorityInfoAccess location is a {}, not a URI",
                ext::general_name_kind(&desc.access_location)
            );
        };
        match method.as_str() {
            ext::AD_OCSP => ocsp.push(*uri),
            ext::AD_CA_ISSUERS => ca_issuers.push(*uri),
            other => violated!(INV, "authorityInfoAccess has an unexpected method {other}"),
        }
    }
    let ocsp = exactly_one(INV, "OCSP URI in authorityInfoAccess", &ocsp);
    let ca_issuers = exactly_one(INV, "caIssuers URI in authorityInfoAccess", &ca_issuers);

    let Some(cdp_ext) = find(leaf, ext::CRL_DISTRIBUTION_POINTS) else {
        violated!(INV, "the leaf has no cRLDistributionPoints extension");
    };
    let ParsedExtension::CRLDistributionPoints(cdp) = parsed(INV, cdp_ext) else {
        violated!(INV, "cRLDistributionPoints did not decode");
    };
    let [point] = cdp.points.as_slice() else {
        violated!(
            INV,
            "cRLDistributionPoints has {} points; agentca publishes one",
            cdp.points.len()
        );
    };
    if point.reasons.is_some() || point.crl_issuer.is_some() {
        violated!(
            INV,
            "the CRL distribution point has reasons or cRLIssuer: {point:?}"
        );
    }
    let crl = match &point.distribution_point {
        Some(DistributionPointName::FullName(names)) => match names.as_slice() {
            [GeneralName::URI(uri)] => *uri,
            other => violated!(
                INV,
                "the CRL distribution point's fullName is not one URI: {other:?}"
            ),
        },
        other => violated!(
            INV,
            "the CRL distribution point has no fullName: {other:?}"
        ),
    };

    if let Some(base) = base {
        for (what, got, path) in [
            ("OCSP URI", ocsp, "/ocsp"),
            ("caIssuers URI", ca_issuers, "/ca.crt"),
            ("CRL distribution point", crl, "/crl"),
        ] {
            let want = format!("{base}{path}");
            if got != want {
                violated!(INV, "the {what} is {got:?}, expected {want:?}");
            }
        }
    }
}

fn exactly_one<'a>(inv: &str, what: &str, items: &[&'a str]) -> &'a str {
    match items {
        [one] => one,
        other => violated!(inv, "expected exactly one {what}, found {other:?}"),
    }
}
