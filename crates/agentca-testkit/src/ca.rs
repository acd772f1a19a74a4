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
    check_common(INV, "responder certificate", &cert, der, &issuer, Aki::Required);
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
