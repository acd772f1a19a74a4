//! Profiles of the certificates agentca makes for itself (design §2): root and issuing CA,
//! delegated OCSP responder (RFC 6960 §4.2.2.2), SCEP RA.

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, KeyUsage, ParsedExtension};
use x509_parser::x509::X509Version;

use crate::extensions::{self as ext, find, parsed};
use crate::link::{Aki, check_issued_by};
use crate::{parse, serial, validity};

/// Checks a CA certificate against its issuer; pass the certificate itself as
/// `issuer_der_or_self` for a self-signed root.
///
/// Checks: v3; RFC 5280 serial rules; validity well-ordered, well-encoded and within the
/// issuer's; issuer DN, AKI (required unless self-signed), identical signature algorithms and
/// a valid signature; basicConstraints critical with cA=true; keyUsage critical with
/// keyCertSign and cRLSign; subjectKeyIdentifier present; no URI name constraints (they make
/// rustls-webpki reject the whole chain); no unknown critical extension.
pub fn assert_ca_certificate(der: &[u8], issuer_der_or_self: &[u8]) {
    const INV: &str = "CA profile";
    let cert = parse::certificate("CA", der);
    let issuer = parse::certificate("CA's issuer", issuer_der_or_self);
    let self_signed = der == issuer_der_or_self;
    let aki = if self_signed {
        Aki::Optional
    } else {
        Aki::Required
    };

    check_common(INV, "CA certificate", &cert, der, &issuer, aki);

    match basic_constraints(INV, &cert) {
        Some((true, true)) => {}
        Some((false, _)) => violated!(INV, "basicConstraints says cA=false"),
        Some((true, false)) => violated!(INV, "basicConstraints is not critical"),
        None => violated!(INV, "the CA certificate has no basicConstraints"),
    }
    let ku = key_usage(INV, &cert);
    if !ku.key_cert_sign() || !ku.crl_sign() {
        violated!(INV, "keyUsage lacks keyCertSign or cRLSign ({ku})");
    }
    if ext::subject_key_id(INV, &cert).is_none() {
        violated!(INV, "the CA certificate has no subjectKeyIdentifier");
    }
    if let Some(nc) = find(&cert, ext::NAME_CONSTRAINTS) {
        let ParsedExtension::NameConstraints(nc) = parsed(INV, nc) else {
            violated!(INV, "nameConstraints did not decode");
        };
        let subtrees = nc
            .permitted_subtrees
            .iter()
            .chain(nc.excluded_subtrees.iter())
            .flatten();
        for subtree in subtrees {
            if let GeneralName::URI(uri) = subtree.base {
                violated!(
                    INV,
                    "nameConstraints has a URI subtree {uri:?}; rustls-webpki rejects chains \
                     carrying URI name constraints"
                );
            }
        }
    }
    check_known_critical(
        INV,
        &cert,
        &[
            ext::BASIC_CONSTRAINTS,
            ext::KEY_USAGE,
            ext::NAME_CONSTRAINTS,
        ],
    );
}

/// Checks the delegated OCSP responder certificate (RFC 6960 §4.2.2.2): issued by the CA
/// whose certificates it speaks for, cA=false, extKeyUsage exactly id-kp-OCSPSigning,
/// id-pkix-ocsp-nocheck present, keyUsage critical with digitalSignature and no CA bits.
pub fn assert_ocsp_responder_certificate(der: &[u8], issuer_der: &[u8]) {
    const INV: &str = "OCSP responder profile";
    let cert = parse::certificate("OCSP responder", der);
    let issuer = parse::certificate("OCSP responder's issuer", issuer_der);
    check_common(
        INV,
        "responder certificate",
        &cert,
        der,
        &issuer,
        Aki::Required,
    );
    check_not_ca(INV, &cert);

    let ku = key_usage(INV, &cert);
    if !ku.digital_signature() {
        violated!(INV, "keyUsage lacks digitalSignature ({ku})");
    }

    let Some(eku_ext) = find(&cert, ext::EXT_KEY_USAGE) else {
        violated!(INV, "the responder certificate has no extKeyUsage");
    };
    let ParsedExtension::ExtendedKeyUsage(eku) = parsed(INV, eku_ext) else {
        violated!(INV, "extKeyUsage did not decode");
    };
    let only_ocsp = eku.ocsp_signing
        && !eku.any
        && !eku.server_auth
        && !eku.client_auth
        && !eku.code_signing
        && !eku.email_protection
        && !eku.time_stamping
        && eku.other.is_empty();
    if !only_ocsp {
        violated!(
            INV,
            "extKeyUsage must be exactly id-kp-OCSPSigning, found {eku:?}"
        );
    }
    match find(&cert, ext::OCSP_NOCHECK) {
        None => violated!(INV, "the responder certificate lacks id-pkix-ocsp-nocheck"),
        // RFC 6960 §4.2.2.2.1: the extension's value is NULL.
        Some(nocheck) if nocheck.value != [0x05, 0x00] => violated!(
            INV,
            "id-pkix-ocsp-nocheck's value is {}, not NULL",
            parse::hex(nocheck.value)
        ),
        Some(_) => {}
    }
    check_known_critical(INV, &cert, &[ext::BASIC_CONSTRAINTS, ext::KEY_USAGE]);
}

/// Checks the SCEP RA certificate: issued by the CA, cA=false, an RSA key (SCEP envelopes are
/// encrypted to it), keyUsage critical with keyEncipherment and without keyCertSign/cRLSign.
pub fn assert_ra_certificate(der: &[u8], issuer_der: &[u8]) {
    const INV: &str = "SCEP RA profile";
    let cert = parse::certificate("SCEP RA", der);
    let issuer = parse::certificate("SCEP RA's issuer", issuer_der);
    check_common(INV, "RA certificate", &cert, der, &issuer, Aki::Required);
    check_not_ca(INV, &cert);
    if !ext::is_rsa(&cert) {
        violated!(
            INV,
            "the RA key is {}, not RSA; SCEP clients encrypt to it with RSA",
            cert.public_key().algorithm.algorithm.to_id_string()
        );
    }
    let ku = key_usage(INV, &cert);
    if !ku.key_encipherment() {
        violated!(INV, "keyUsage lacks keyEncipherment ({ku})");
    }
    if ku.key_cert_sign() || ku.crl_sign() {
        violated!(INV, "keyUsage has keyCertSign or cRLSign ({ku})");
    }
    check_known_critical(INV, &cert, &[ext::BASIC_CONSTRAINTS, ext::KEY_USAGE]);
}

fn check_common(
    inv: &str,
    what: &str,
    cert: &X509Certificate<'_>,
    der: &[u8],
    issuer: &X509Certificate<'_>,
    aki: Aki,
) {
    if cert.version() != X509Version::V3 {
        violated!(inv, "the {what} is {:?}, not v3", cert.version());
    }
    serial::check_rfc5280(cert.raw_serial());
    validity::check_within_issuer(inv, cert, issuer);
    check_issued_by(inv, what, cert, der, issuer, aki);
    ext::check_unique(inv, cert);
}

/// `(cA, critical)` of basicConstraints, if present.
fn basic_constraints(inv: &str, cert: &X509Certificate<'_>) -> Option<(bool, bool)> {
    let bc_ext = find(cert, ext::BASIC_CONSTRAINTS)?;
    match parsed(inv, bc_ext) {
        ParsedExtension::BasicConstraints(bc) => Some((bc.ca, bc_ext.critical)),
        other => violated!(inv, "basicConstraints decoded as {other:?}"),
    }
}

fn check_not_ca(inv: &str, cert: &X509Certificate<'_>) {
    if let Some((true, _)) = basic_constraints(inv, cert) {
        violated!(inv, "basicConstraints says cA=true");
    }
}

fn key_usage<'c>(inv: &str, cert: &'c X509Certificate<'_>) -> &'c KeyUsage {
    let Some(ku_ext) = find(cert, ext::KEY_USAGE) else {
        violated!(inv, "there is no keyUsage extension");
    };
    if !ku_ext.critical {
        violated!(inv, "keyUsage is not critical");
    }
    match parsed(inv, ku_ext) {
        ParsedExtension::KeyUsage(ku) => ku,
        other => violated!(inv, "keyUsage decoded as {other:?}"),
    }
}

/// A critical extension a relying party does not understand makes it reject the certificate
/// (RFC 5280 §4.2); only the ones this profile expects may be critical.
fn check_known_critical(inv: &str, cert: &X509Certificate<'_>, allowed: &[&str]) {
    for e in cert.extensions() {
        let oid = e.oid.to_id_string();
        if e.critical && !allowed.contains(&oid.as_str()) {
            violated!(
                inv,
                "{} ({oid}) is critical; only {allowed:?} may be",
                ext::name(&oid)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose as Eku, GeneralSubtree, IsCa,
        KeyPair, KeyUsagePurpose as Ku, NameConstraints, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256,
    };
    use time::{Duration, OffsetDateTime};

    use super::*;
    use crate::testpki::{Pki, assert_fails_with, patch, resign, responder_params, service_params};

    fn ra_params() -> CertificateParams {
        let mut params = service_params("agentca SCEP RA");
        params.key_usages = vec![Ku::DigitalSignature, Ku::KeyEncipherment];
        params
    }

    #[test]
    fn correct_root_and_issuing_ca_pass() {
        let pki = Pki::new();
        assert_ca_certificate(&pki.root_der, &pki.root_der);
        assert_ca_certificate(&pki.ca_der, &pki.root_der);
    }

    #[test]
    fn ca_without_ca_flag_fails() {
        let pki = Pki::new();
        let mut params = pki.ca_params.clone();
        params.is_ca = IsCa::ExplicitNoCa;
        let der = pki.issue_by_root(&params, &pki.ca_key);
        assert_fails_with(&["CA profile", "cA=false"], || {
            assert_ca_certificate(&der, &pki.root_der)
        });
    }

    #[test]
    fn ca_without_basic_constraints_fails() {
        let pki = Pki::new();
        let mut params = pki.ca_params.clone();
        params.is_ca = IsCa::NoCa;
        let der = pki.issue_by_root(&params, &pki.ca_key);
        assert_fails_with(&["CA profile", "no basicConstraints"], || {
            assert_ca_certificate(&der, &pki.root_der)
        });
    }

    #[test]
    fn ca_without_crl_sign_fails() {
        let pki = Pki::new();
        let mut params = pki.ca_params.clone();
        params.key_usages = vec![Ku::KeyCertSign, Ku::DigitalSignature];
        let der = pki.issue_by_root(&params, &pki.ca_key);
        assert_fails_with(&["CA profile", "keyCertSign or cRLSign"], || {
            assert_ca_certificate(&der, &pki.root_der)
        });
    }

    #[test]
    fn intermediate_without_aki_fails() {
        let pki = Pki::new();
        let mut params = pki.ca_params.clone();
        params.use_authority_key_identifier_extension = false;
        let der = pki.issue_by_root(&params, &pki.ca_key);
        assert_fails_with(&["CA profile", "no authorityKeyIdentifier"], || {
            assert_ca_certificate(&der, &pki.root_der)
        });
    }

    #[test]
    fn ca_with_uri_name_constraint_fails() {
        let pki = Pki::new();
        let mut params = pki.ca_params.clone();
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: vec![GeneralSubtree::DnsName("example.org".into())],
            excluded_subtrees: vec![],
        });
        // A DNS constraint is fine...
        let der = pki.issue_by_root(&params, &pki.ca_key);
        assert_ca_certificate(&der, &pki.root_der);
        // ...a URI constraint is not. rcgen cannot write one, so patch the dNSName tag [2]
        // of the subtree into uniformResourceIdentifier [6].
        let dns_base = [&[0x82, 11][..], b"example.org"].concat();
        let uri_base = [&[0x86, 11][..], b"example.org"].concat();
        let patched = resign(&patch(&der, &dns_base, &uri_base), &pki.root_key);
        assert_fails_with(&["CA profile", "URI subtree"], || {
            assert_ca_certificate(&patched, &pki.root_der)
        });
    }

    #[test]
    fn ca_signed_by_stranger_fails() {
        let pki = Pki::new();
        let stranger = Pki::new();
        assert_fails_with(&["CA profile"], || {
            assert_ca_certificate(&pki.ca_der, &stranger.root_der)
        });
    }

    #[test]
    fn ca_outliving_root_fails() {
        let pki = Pki::new();
        let mut params = pki.ca_params.clone();
        params.not_after = OffsetDateTime::now_utc() + Duration::days(4000);
        let der = pki.issue_by_root(&params, &pki.ca_key);
        assert_fails_with(&["CA profile", "after the issuer's notAfter"], || {
            assert_ca_certificate(&der, &pki.root_der)
        });
    }

    #[test]
    fn correct_responder_passes() {
        let pki = Pki::new();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let der = pki.issue(&responder_params(), &key);
        assert_ocsp_responder_certificate(&der, &pki.ca_der);
    }

    #[test]
    fn responder_without_nocheck_fails() {
        let pki = Pki::new();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = responder_params();
        params.custom_extensions.clear();
        let der = pki.issue(&params, &key);
        assert_fails_with(&["OCSP responder profile", "ocsp-nocheck"], || {
            assert_ocsp_responder_certificate(&der, &pki.ca_der)
        });
    }

    #[test]
    fn responder_with_extra_eku_fails() {
        let pki = Pki::new();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = responder_params();
        params.extended_key_usages.push(Eku::ClientAuth);
        let der = pki.issue(&params, &key);
        assert_fails_with(
            &["OCSP responder profile", "exactly id-kp-OCSPSigning"],
            || assert_ocsp_responder_certificate(&der, &pki.ca_der),
        );
    }

    #[test]
    fn responder_that_is_a_ca_fails() {
        let pki = Pki::new();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = responder_params();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let der = pki.issue(&params, &key);
        assert_fails_with(&["OCSP responder profile", "cA=true"], || {
            assert_ocsp_responder_certificate(&der, &pki.ca_der)
        });
    }

    #[test]
    fn responder_from_another_ca_fails() {
        let pki = Pki::new();
        let stranger = Pki::new();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let der = stranger.issue(&responder_params(), &key);
        assert_fails_with(&["OCSP responder profile"], || {
            assert_ocsp_responder_certificate(&der, &pki.ca_der)
        });
    }

    #[test]
    fn correct_ra_passes() {
        let pki = Pki::new();
        let key = KeyPair::generate_for(&PKCS_RSA_SHA256).unwrap();
        let der = pki.issue(&ra_params(), &key);
        assert_ra_certificate(&der, &pki.ca_der);
    }

    #[test]
    fn ra_with_ec_key_fails() {
        let pki = Pki::new();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let der = pki.issue(&ra_params(), &key);
        assert_fails_with(&["SCEP RA profile", "not RSA"], || {
            assert_ra_certificate(&der, &pki.ca_der)
        });
    }

    #[test]
    fn ra_without_key_encipherment_fails() {
        let pki = Pki::new();
        let key = KeyPair::generate_for(&PKCS_RSA_SHA256).unwrap();
        let mut params = ra_params();
        params.key_usages = vec![Ku::DigitalSignature];
        let der = pki.issue(&params, &key);
        assert_fails_with(&["SCEP RA profile", "lacks keyEncipherment"], || {
            assert_ra_certificate(&der, &pki.ca_der)
        });
    }

    #[test]
    fn ra_with_cert_sign_fails() {
        let pki = Pki::new();
        let key = KeyPair::generate_for(&PKCS_RSA_SHA256).unwrap();
        let mut params = ra_params();
        params.key_usages.push(Ku::KeyCertSign);
        let der = pki.issue(&params, &key);
        assert_fails_with(&["SCEP RA profile", "keyCertSign or cRLSign"], || {
            assert_ra_certificate(&der, &pki.ca_der)
        });
    }

    #[test]
    fn unknown_critical_extension_fails() {
        let pki = Pki::new();
        let key = KeyPair::generate_for(&PKCS_RSA_SHA256).unwrap();
        let mut params = ra_params();
        let mut ext = rcgen::CustomExtension::from_oid_content(&[1, 2, 3, 4], vec![0x05, 0x00]);
        ext.set_criticality(true);
        params.custom_extensions.push(ext);
        let der = pki.issue(&params, &key);
        assert_fails_with(&["SCEP RA profile", "is critical"], || {
            assert_ra_certificate(&der, &pki.ca_der)
        });
    }
}
