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

    if let Some(spki) = &expect.csr_public_key_spki
        && leaf.public_key().raw != spki.as_slice()
    {
        violated!(
            "public key",
            "the leaf's SubjectPublicKeyInfo {} is not the CSR's {}",
            hex(leaf.public_key().raw),
            hex(spki)
        );
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
        violated!(INV, "DNS SANs are {dns_set:?}, expected {expected_dns:?}");
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
        other => violated!(INV, "the CRL distribution point has no fullName: {other:?}"),
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

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use rcgen::{
        CrlDistributionPoint, CustomExtension, DnType, ExtendedKeyUsagePurpose as Eku, IsCa,
        Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose as Ku, NameConstraints,
        PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256, PublicKeyData, SanType, SerialNumber,
    };
    use time::Duration;

    use super::*;
    use crate::der::write;
    use crate::testpki::{
        AGENT, BASE_URL, Leaf, Pki, aia, assert_fails_with, patch, patch_last, random_serial,
    };

    /// Issues `leaf` from `pki` and checks it against `expect`, failing with the expected
    /// message fragments.
    fn fails(pki: &Pki, leaf: &Leaf, expect: &Expectation, needles: &[&str]) {
        let der = pki.issue(&leaf.params, &leaf.key);
        let chain = pki.chain();
        assert_fails_with(needles, || assert_issued_invariants(&der, &chain, expect));
    }

    /// Breaks one thing in an otherwise correct leaf and expects the named failure.
    fn broken(edit: impl FnOnce(&mut Leaf), needles: &[&str]) {
        let pki = Pki::new();
        let mut leaf = Leaf::new();
        edit(&mut leaf);
        let expect = leaf.expectation();
        fails(&pki, &leaf, &expect, needles);
    }

    fn dns(name: &str) -> SanType {
        SanType::DnsName(name.try_into().unwrap())
    }

    fn uri(u: &str) -> SanType {
        SanType::URI(u.try_into().unwrap())
    }

    // ---- correct certificates pass ----

    #[test]
    fn correct_leaf_passes() {
        let pki = Pki::new();
        let leaf = Leaf::new();
        let der = pki.issue(&leaf.params, &leaf.key);
        assert_issued_invariants(&der, &pki.chain(), &leaf.expectation());
        // The issuing CA alone is a valid chain too.
        assert_issued_invariants(&der, std::slice::from_ref(&pki.ca_der), &leaf.expectation());
    }

    #[test]
    fn correct_leaf_with_names_and_requested_lifetime_passes() {
        let pki = Pki::new();
        let mut leaf = Leaf::new();
        let v4 = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        leaf.params.subject_alt_names.extend([
            dns("b.example.org"),
            dns("a.example.org"),
            SanType::IpAddress(v4),
            SanType::IpAddress(v6),
        ]);
        leaf.params.extended_key_usages = vec![Eku::ClientAuth, Eku::ServerAuth];
        leaf.params.not_after = leaf.signed_at + Duration::hours(1);
        let expect = leaf
            .expectation()
            .dns(["a.example.org", "b.example.org"])
            .ips([v6, v4])
            .requested_lifetime(Duration::hours(1))
            .max_lifetime(Duration::hours(2));
        let der = pki.issue(&leaf.params, &leaf.key);
        assert_issued_invariants(&der, &pki.chain(), &expect);
    }

    #[test]
    fn correct_rsa_leaf_with_key_encipherment_passes() {
        let pki = Pki::new();
        let mut leaf = Leaf::with_key(&PKCS_RSA_SHA256);
        leaf.params.key_usages = vec![Ku::DigitalSignature, Ku::KeyEncipherment];
        let der = pki.issue(&leaf.params, &leaf.key);
        assert_issued_invariants(&der, &pki.chain(), &leaf.expectation());
    }

    #[test]
    fn leaf_with_subject_and_without_explicit_basic_constraints_passes() {
        let pki = Pki::new();
        let mut leaf = Leaf::new();
        leaf.params
            .distinguished_name
            .push(DnType::CommonName, "alice");
        leaf.params.is_ca = IsCa::NoCa;
        let der = pki.issue(&leaf.params, &leaf.key);
        assert_issued_invariants(&der, &pki.chain(), &leaf.expectation());
    }

    #[test]
    fn urls_are_free_without_a_base_url() {
        let pki = Pki::new();
        let mut leaf = Leaf::new();
        leaf.params.custom_extensions = vec![aia("http://ca.test/o", "http://ca.test/c")];
        let der = pki.issue(&leaf.params, &leaf.key);
        let mut expect = leaf.expectation();
        expect.base_url = None;
        assert_issued_invariants(&der, &pki.chain(), &expect);
        // ...and checked with one.
        assert_fails_with(&["INV-7", "OCSP URI"], || {
            assert_issued_invariants(&der, &pki.chain(), &leaf.expectation())
        });
    }

    // ---- version ----

    #[test]
    fn v2_fails() {
        let pki = Pki::new();
        let leaf = Leaf::new();
        let der = pki.issue(&leaf.params, &leaf.key);
        let v2 = patch(
            &der,
            &[0xa0, 0x03, 0x02, 0x01, 0x02],
            &[0xa0, 0x03, 0x02, 0x01, 0x01],
        );
        assert_fails_with(&["version", "not v3"], || {
            assert_issued_invariants(&v2, &pki.chain(), &leaf.expectation())
        });
    }

    // ---- INV-1 ----

    fn serial_broken(serial: &[u8], needles: &[&str]) {
        let serial = serial.to_vec();
        broken(
            move |l| l.params.serial_number = Some(SerialNumber::from_slice(&serial)),
            needles,
        );
    }

    /// Issues a correct leaf whose serial starts with `first` and rewrites those octets.
    fn serial_patched(first: [u8; 2], to: [u8; 2], needles: &[&str]) {
        let pki = Pki::new();
        let mut leaf = Leaf::new();
        let mut serial = random_serial();
        serial[..2].copy_from_slice(&first);
        leaf.params.serial_number = Some(SerialNumber::from_slice(&serial));
        let der = pki.issue(&leaf.params, &leaf.key);
        let patched = patch(
            &der,
            &[0x02, 0x10, first[0], first[1]],
            &[0x02, 0x10, to[0], to[1]],
        );
        assert_fails_with(needles, || {
            assert_issued_invariants(&patched, &pki.chain(), &leaf.expectation())
        });
    }

    #[test]
    fn negative_serial_fails() {
        serial_patched([0x01, 0x02], [0x81, 0x02], &["INV-1", "negative"]);
    }

    #[test]
    fn non_minimal_serial_fails() {
        serial_patched([0x01, 0x02], [0x00, 0x02], &["INV-1", "not DER-minimal"]);
    }

    #[test]
    fn serial_over_20_octets_fails() {
        serial_broken(&[0x42; 21], &["INV-1", "at most 20"]);
    }

    #[test]
    fn short_serial_fails() {
        // 15 octets whose first is below 0x80, so no sign padding brings it back to 16.
        let mut s = random_serial();
        s[1] = 0x35;
        serial_broken(&s[1..], &["INV-1", "exactly 16"]);
    }

    #[test]
    fn long_serial_fails() {
        let mut s = random_serial().to_vec();
        s.push(0x33);
        serial_broken(&s, &["INV-1", "exactly 16"]);
    }

    #[test]
    fn serial_with_sign_padding_fails() {
        // 128 random bits with the top bit set: DER needs a 0x00 pad, giving 00 8x ... .
        let mut s = random_serial();
        s[0] |= 0x80;
        let mut padded = vec![0u8];
        padded.extend_from_slice(&s[..15]);
        serial_broken(&padded, &["INV-1", "0x01..=0x7f"]);
    }

    #[test]
    fn constant_serial_fails() {
        serial_broken(&[0x11; 16], &["INV-1", "repeats one octet"]);
    }

    // ---- INV-3 ----

    #[test]
    fn missing_backdate_fails() {
        broken(
            |l| l.params.not_before = l.signed_at + Duration::seconds(2),
            &["INV-3", "backdate is missing"],
        );
    }

    #[test]
    fn excessive_backdate_fails() {
        broken(
            |l| l.params.not_before = l.signed_at - Duration::hours(1),
            &["INV-3", "backdated by more"],
        );
    }

    #[test]
    fn lifetime_over_maximum_fails() {
        broken(
            |l| l.params.not_after = l.signed_at + Duration::hours(24) + Duration::seconds(2),
            &["INV-3", "above the policy maximum"],
        );
    }

    #[test]
    fn lifetime_counted_from_not_before_is_caught() {
        // notAfter = notBefore + 24 h would be right; notAfter = signing + 24 h + 5 min is not.
        broken(
            |l| l.params.not_after = l.signed_at + Duration::hours(24) + BACKDATE_FOR_TEST,
            &["INV-3", "above the policy maximum"],
        );
    }
    const BACKDATE_FOR_TEST: Duration = Duration::minutes(5);

    #[test]
    fn requested_lifetime_ignored_fails() {
        let pki = Pki::new();
        let leaf = Leaf::new();
        let expect = leaf.expectation().requested_lifetime(Duration::hours(1));
        fails(&pki, &leaf, &expect, &["INV-3", "the request asked for"]);
    }

    #[test]
    fn not_after_beyond_issuer_fails() {
        let pki = Pki::new();
        let mut leaf = Leaf::new();
        leaf.params.not_after = leaf.signed_at + Duration::days(400);
        let expect = leaf.expectation().max_lifetime(Duration::days(500));
        fails(
            &pki,
            &leaf,
            &expect,
            &["INV-3", "after the issuing CA's notAfter"],
        );
    }

    #[test]
    fn time_encoding_rule() {
        use x509_parser::time::ASN1Time;
        let y2049 = time::macros::datetime!(2049-12-31 23:59:59 UTC);
        let y2050 = time::macros::datetime!(2050-01-01 00:00:00 UTC);
        validity::check_time_encoding("t", "notAfter", &ASN1Time::new_utc(y2049));
        validity::check_time_encoding("t", "notAfter", &ASN1Time::new_generalized(y2050));
        assert_fails_with(&["before 2050", "GeneralizedTime"], || {
            validity::check_time_encoding("t", "notAfter", &ASN1Time::new_generalized(y2049))
        });
        assert_fails_with(&["from 2050", "not encoded as GeneralizedTime"], || {
            validity::check_time_encoding("t", "notAfter", &ASN1Time::new_utc(y2050))
        });
    }

    // ---- INV-4 ----

    #[test]
    fn issuer_dn_mismatch_fails() {
        let pki = Pki::new();
        let leaf = Leaf::new();
        // Same key, different name: only the DN is wrong.
        let mut other = pki.ca_params.clone();
        other
            .distinguished_name
            .push(DnType::CommonName, "someone else");
        let issuer = Issuer::from_params(&other, &pki.ca_key);
        let der = leaf
            .params
            .signed_by(&leaf.key, &issuer)
            .unwrap()
            .der()
            .to_vec();
        assert_fails_with(
            &["INV-4", "not byte-identical to the issuer's subject"],
            || assert_issued_invariants(&der, &pki.chain(), &leaf.expectation()),
        );
    }

    #[test]
    fn missing_aki_fails() {
        broken(
            |l| l.params.use_authority_key_identifier_extension = false,
            &["INV-4", "no authorityKeyIdentifier"],
        );
    }

    #[test]
    fn wrong_aki_fails() {
        let pki = Pki::new();
        let leaf = Leaf::new();
        let mut other = pki.ca_params.clone();
        other.key_identifier_method = KeyIdMethod::PreSpecified(vec![0xab; 20]);
        let issuer = Issuer::from_params(&other, &pki.ca_key);
        let der = leaf
            .params
            .signed_by(&leaf.key, &issuer)
            .unwrap()
            .der()
            .to_vec();
        assert_fails_with(&["INV-4", "differs from the issuer's SKI"], || {
            assert_issued_invariants(&der, &pki.chain(), &leaf.expectation())
        });
    }

    #[test]
    fn signature_algorithm_mismatch_fails() {
        let pki = Pki::new();
        let leaf = Leaf::new();
        let der = pki.issue(&leaf.params, &leaf.key);
        // ecdsa-with-SHA256 → ecdsa-with-SHA384 in the outer AlgorithmIdentifier only.
        let sha256 = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
        let sha384 = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
        let patched = patch_last(&der, &sha256, &sha384);
        assert_fails_with(
            &["INV-4", "not byte-identical to tbsCertificate.signature"],
            || assert_issued_invariants(&patched, &pki.chain(), &leaf.expectation()),
        );
    }

    #[test]
    fn bad_signature_fails() {
        let pki = Pki::new();
        let leaf = Leaf::new();
        let mut der = pki.issue(&leaf.params, &leaf.key);
        let last = der.len() - 1;
        der[last] ^= 0x01;
        assert_fails_with(&["INV-4", "does not verify"], || {
            assert_issued_invariants(&der, &pki.chain(), &leaf.expectation())
        });
    }

    #[test]
    fn leaf_signed_by_root_fails() {
        let pki = Pki::new();
        let leaf = Leaf::new();
        let der = pki.issue_by_root(&leaf.params, &leaf.key);
        assert_fails_with(&["INV-4"], || {
            assert_issued_invariants(&der, &pki.chain(), &leaf.expectation())
        });
    }

    #[test]
    fn broken_chain_fails() {
        let pki = Pki::new();
        let stranger = Pki::new();
        let leaf = Leaf::new();
        let der = pki.issue(&leaf.params, &leaf.key);
        let chain = vec![pki.ca_der.clone(), stranger.root_der.clone()];
        assert_fails_with(&["INV-4", "chain certificate 0"], || {
            assert_issued_invariants(&der, &chain, &leaf.expectation())
        });
    }

    // ---- INV-5 ----

    #[test]
    fn ca_true_fails() {
        broken(
            |l| l.params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained),
            &["INV-5", "cA=true"],
        );
    }

    #[test]
    fn missing_key_usage_fails() {
        broken(|l| l.params.key_usages.clear(), &["INV-5", "no keyUsage"]);
    }

    #[test]
    fn non_critical_key_usage_fails() {
        broken(
            |l| {
                l.params.key_usages.clear();
                // BIT STRING, 7 unused bits, digitalSignature.
                l.params
                    .custom_extensions
                    .push(CustomExtension::from_oid_content(
                        &[2, 5, 29, 15],
                        vec![0x03, 0x02, 0x07, 0x80],
                    ));
            },
            &["INV-5", "keyUsage is not critical"],
        );
    }

    #[test]
    fn missing_digital_signature_fails() {
        broken(
            |l| l.params.key_usages = vec![Ku::KeyAgreement],
            &["INV-5", "lacks digitalSignature"],
        );
    }

    #[test]
    fn key_cert_sign_fails() {
        broken(
            |l| l.params.key_usages = vec![Ku::DigitalSignature, Ku::KeyCertSign],
            &["INV-5", "keyCertSign or cRLSign"],
        );
    }

    #[test]
    fn crl_sign_fails() {
        broken(
            |l| l.params.key_usages = vec![Ku::DigitalSignature, Ku::CrlSign],
            &["INV-5", "keyCertSign or cRLSign"],
        );
    }

    #[test]
    fn key_encipherment_on_ec_key_fails() {
        broken(
            |l| l.params.key_usages = vec![Ku::DigitalSignature, Ku::KeyEncipherment],
            &["INV-5", "not RSA"],
        );
    }

    #[test]
    fn extra_key_usage_bit_fails() {
        broken(
            |l| l.params.key_usages = vec![Ku::DigitalSignature, Ku::ContentCommitment],
            &["INV-5", "bits beyond"],
        );
    }

    #[test]
    fn missing_eku_fails() {
        broken(
            |l| l.params.extended_key_usages.clear(),
            &["INV-5", "no extKeyUsage"],
        );
    }

    #[test]
    fn eku_without_client_auth_fails() {
        let pki = Pki::new();
        let mut leaf = Leaf::new();
        leaf.params.subject_alt_names.push(dns("a.example.org"));
        leaf.params.extended_key_usages = vec![Eku::ServerAuth];
        let expect = leaf.expectation().dns(["a.example.org"]);
        fails(&pki, &leaf, &expect, &["INV-5", "lacks clientAuth"]);
    }

    #[test]
    fn server_auth_without_names_fails() {
        broken(
            |l| l.params.extended_key_usages = vec![Eku::ClientAuth, Eku::ServerAuth],
            &["INV-5", "serverAuth but the leaf has no DNS or IP"],
        );
    }

    #[test]
    fn names_without_server_auth_fail() {
        let pki = Pki::new();
        let mut leaf = Leaf::new();
        let ip = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
        leaf.params.subject_alt_names.push(SanType::IpAddress(ip));
        let expect = leaf.expectation().ips([ip]);
        fails(&pki, &leaf, &expect, &["INV-5", "lacks serverAuth"]);
    }

    #[test]
    fn extra_eku_fails() {
        broken(
            |l| l.params.extended_key_usages = vec![Eku::ClientAuth, Eku::CodeSigning],
            &["INV-5", "purposes beyond"],
        );
    }

    #[test]
    fn any_eku_fails() {
        broken(
            |l| l.params.extended_key_usages = vec![Eku::ClientAuth, Eku::Any],
            &["INV-5", "purposes beyond"],
        );
    }

    // ---- INV-6 ----

    #[test]
    fn missing_san_fails() {
        broken(
            |l| l.params.subject_alt_names.clear(),
            &["INV-6", "no subjectAltName"],
        );
    }

    #[test]
    fn wrong_uri_fails() {
        broken(
            |l| l.params.subject_alt_names = vec![uri("spiffe://example.org/agent/mallory")],
            &["INV-6", "not the agent ID"],
        );
    }

    #[test]
    fn uri_differing_only_in_case_fails() {
        broken(
            |l| l.params.subject_alt_names = vec![uri(&AGENT.replace("alice", "Alice"))],
            &["INV-6", "not the agent ID"],
        );
    }

    #[test]
    fn two_uris_fail() {
        broken(
            |l| {
                l.params
                    .subject_alt_names
                    .push(uri("spiffe://example.org/agent/bob"))
            },
            &["INV-6", "2 URIs"],
        );
    }

    #[test]
    fn no_uri_fails() {
        let pki = Pki::new();
        let mut leaf = Leaf::new();
        leaf.params.subject_alt_names = vec![dns("a.example.org")];
        leaf.params.extended_key_usages = vec![Eku::ClientAuth, Eku::ServerAuth];
        let expect = leaf.expectation().dns(["a.example.org"]);
        fails(&pki, &leaf, &expect, &["INV-6", "0 URIs"]);
    }

    #[test]
    fn unexpected_dns_name_fails() {
        broken(
            |l| {
                l.params.subject_alt_names.push(dns("evil.example.org"));
                l.params.extended_key_usages = vec![Eku::ClientAuth, Eku::ServerAuth];
            },
            &["INV-6", "DNS SANs are"],
        );
    }

    #[test]
    fn missing_dns_name_fails() {
        let pki = Pki::new();
        let leaf = Leaf::new();
        let expect = leaf.expectation().dns(["a.example.org"]);
        fails(&pki, &leaf, &expect, &["INV-6", "DNS SANs are"]);
    }

    #[test]
    fn duplicate_dns_name_fails() {
        let pki = Pki::new();
        let mut leaf = Leaf::new();
        leaf.params
            .subject_alt_names
            .extend([dns("a.example.org"), dns("a.example.org")]);
        leaf.params.extended_key_usages = vec![Eku::ClientAuth, Eku::ServerAuth];
        let expect = leaf.expectation().dns(["a.example.org"]);
        fails(&pki, &leaf, &expect, &["INV-6", "appears twice"]);
    }

    #[test]
    fn wrong_ip_fails() {
        let pki = Pki::new();
        let mut leaf = Leaf::new();
        leaf.params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))));
        leaf.params.extended_key_usages = vec![Eku::ClientAuth, Eku::ServerAuth];
        let expect = leaf
            .expectation()
            .ips([IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))]);
        fails(&pki, &leaf, &expect, &["INV-6", "IP SANs are"]);
    }

    #[test]
    fn email_san_fails() {
        broken(
            |l| {
                l.params
                    .subject_alt_names
                    .push(SanType::Rfc822Name("a@example.org".try_into().unwrap()))
            },
            &["INV-6", "rfc822Name"],
        );
    }

    #[test]
    fn non_critical_san_with_empty_subject_fails() {
        broken(
            |l| {
                l.params.subject_alt_names.clear();
                l.params
                    .custom_extensions
                    .push(CustomExtension::from_oid_content(
                        &[2, 5, 29, 17],
                        write::sequence(&[write::uri(AGENT)]),
                    ));
            },
            &[
                "INV-6",
                "subject is empty but subjectAltName is not critical",
            ],
        );
    }

    // ---- INV-7 ----

    #[test]
    fn unlisted_extension_fails() {
        broken(
            |l| {
                // certificatePolicies { anyPolicy }
                let any_policy = vec![0x06, 0x04, 0x55, 0x1d, 0x20, 0x00];
                l.params
                    .custom_extensions
                    .push(CustomExtension::from_oid_content(
                        &[2, 5, 29, 32],
                        write::sequence(&[write::sequence(&[any_policy])]),
                    ));
            },
            &["INV-7", "certificatePolicies", "not on the leaf allow-list"],
        );
    }

    #[test]
    fn name_constraints_on_leaf_fail() {
        broken(
            |l| {
                l.params.name_constraints = Some(NameConstraints {
                    permitted_subtrees: vec![rcgen::GeneralSubtree::DnsName("example.org".into())],
                    excluded_subtrees: vec![],
                })
            },
            &["INV-7", "nameConstraints"],
        );
    }

    #[test]
    fn duplicate_extension_fails() {
        broken(
            |l| {
                let extra = l.params.custom_extensions[0].clone();
                l.params.custom_extensions.push(extra);
            },
            &["INV-7", "occurs twice"],
        );
    }

    #[test]
    fn missing_aia_fails() {
        broken(
            |l| l.params.custom_extensions.clear(),
            &["INV-7", "no authorityInfoAccess"],
        );
    }

    #[test]
    fn critical_aia_fails() {
        broken(
            |l| l.params.custom_extensions[0].set_criticality(true),
            &["INV-7", "authorityInfoAccess is marked critical"],
        );
    }

    #[test]
    fn aia_without_ca_issuers_fails() {
        broken(
            |l| {
                let content = write::sequence(&[write::sequence(&[
                    write::OID_AD_OCSP.to_vec(),
                    write::uri(&format!("{BASE_URL}/ocsp")),
                ])]);
                l.params.custom_extensions = vec![CustomExtension::from_oid_content(
                    &[1, 3, 6, 1, 5, 5, 7, 1, 1],
                    content,
                )];
            },
            &["INV-7", "exactly one caIssuers URI"],
        );
    }

    #[test]
    fn wrong_ca_issuers_url_fails() {
        broken(
            |l| {
                l.params.custom_extensions = vec![aia(
                    &format!("{BASE_URL}/ocsp"),
                    &format!("{BASE_URL}/ca.pem"),
                )]
            },
            &["INV-7", "caIssuers URI is"],
        );
    }

    #[test]
    fn missing_crl_distribution_point_fails() {
        broken(
            |l| l.params.crl_distribution_points.clear(),
            &["INV-7", "no cRLDistributionPoints"],
        );
    }

    #[test]
    fn two_crl_uris_fail() {
        broken(
            |l| {
                l.params.crl_distribution_points = vec![CrlDistributionPoint {
                    uris: vec![format!("{BASE_URL}/crl"), "ldap://x/crl".into()],
                }]
            },
            &["INV-7", "not one URI"],
        );
    }

    #[test]
    fn wrong_crl_url_fails() {
        broken(
            |l| {
                l.params.crl_distribution_points = vec![CrlDistributionPoint {
                    uris: vec![format!("{BASE_URL}/crl.pem")],
                }]
            },
            &["INV-7", "CRL distribution point is"],
        );
    }

    #[test]
    fn trailing_slash_in_base_url_is_tolerated() {
        let pki = Pki::new();
        let leaf = Leaf::new();
        let der = pki.issue(&leaf.params, &leaf.key);
        let expect = leaf.expectation().base_url(format!("{BASE_URL}/"));
        assert_issued_invariants(&der, &pki.chain(), &expect);
    }

    // ---- public key ----

    #[test]
    fn different_public_key_fails() {
        let pki = Pki::new();
        let leaf = Leaf::new();
        let other = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let expect = leaf
            .expectation()
            .csr_public_key_spki(other.subject_public_key_info());
        fails(&pki, &leaf, &expect, &["public key", "not the CSR's"]);
    }
}
