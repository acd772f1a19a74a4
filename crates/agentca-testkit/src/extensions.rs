//! Finding extensions by OID and reading the ones several checks share.
//!
//! OIDs are compared as dotted strings: slower than byte comparison, but the messages and the
//! allow-lists read like the RFCs.

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension, X509Extension};

pub(crate) const SUBJECT_KEY_ID: &str = "2.5.29.14";
pub(crate) const KEY_USAGE: &str = "2.5.29.15";
pub(crate) const SUBJECT_ALT_NAME: &str = "2.5.29.17";
pub(crate) const BASIC_CONSTRAINTS: &str = "2.5.29.19";
pub(crate) const NAME_CONSTRAINTS: &str = "2.5.29.30";
pub(crate) const CRL_DISTRIBUTION_POINTS: &str = "2.5.29.31";
pub(crate) const AUTHORITY_KEY_ID: &str = "2.5.29.35";
pub(crate) const EXT_KEY_USAGE: &str = "2.5.29.37";
pub(crate) const AUTHORITY_INFO_ACCESS: &str = "1.3.6.1.5.5.7.1.1";
/// id-pkix-ocsp-nocheck (RFC 6960 §4.2.2.2.1).
pub(crate) const OCSP_NOCHECK: &str = "1.3.6.1.5.5.7.48.1.5";

pub(crate) const AD_OCSP: &str = "1.3.6.1.5.5.7.48.1";
pub(crate) const AD_CA_ISSUERS: &str = "1.3.6.1.5.5.7.48.2";

pub(crate) const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";

/// Human names for the OIDs above, for messages.
pub(crate) fn name(oid: &str) -> &'static str {
    match oid {
        SUBJECT_KEY_ID => "subjectKeyIdentifier",
        KEY_USAGE => "keyUsage",
        SUBJECT_ALT_NAME => "subjectAltName",
        BASIC_CONSTRAINTS => "basicConstraints",
        NAME_CONSTRAINTS => "nameConstraints",
        CRL_DISTRIBUTION_POINTS => "cRLDistributionPoints",
        AUTHORITY_KEY_ID => "authorityKeyIdentifier",
        EXT_KEY_USAGE => "extKeyUsage",
        AUTHORITY_INFO_ACCESS => "authorityInfoAccess",
        OCSP_NOCHECK => "ocsp-nocheck",
        "2.5.29.32" => "certificatePolicies",
        "2.5.29.18" => "issuerAltName",
        _ => "unknown extension",
    }
}

/// Fails if any extension OID occurs twice (RFC 5280 §4.2: "MUST NOT include more than one
/// instance of a particular extension").
pub(crate) fn check_unique(inv: &str, cert: &X509Certificate<'_>) {
    let mut seen: Vec<String> = Vec::new();
    for ext in cert.extensions() {
        let oid = ext.oid.to_id_string();
        if seen.contains(&oid) {
            violated!(inv, "extension {} ({oid}) occurs twice", name(&oid));
        }
        seen.push(oid);
    }
}

/// The extension with this OID, if present.
pub(crate) fn find<'c, 'a>(
    cert: &'c X509Certificate<'a>,
    oid: &str,
) -> Option<&'c X509Extension<'a>> {
    cert.extensions()
        .iter()
        .find(|ext| ext.oid.to_id_string() == oid)
}

/// The parsed value of an extension, failing if x509-parser could not decode it.
pub(crate) fn parsed<'c, 'a>(inv: &str, ext: &'c X509Extension<'a>) -> &'c ParsedExtension<'a> {
    match ext.parsed_extension() {
        ParsedExtension::ParseError { error } => violated!(
            inv,
            "extension {} ({}) is malformed: {error}",
            name(&ext.oid.to_id_string()),
            ext.oid.to_id_string()
        ),
        other => other,
    }
}

/// The subjectKeyIdentifier's bytes, if the extension is present.
pub(crate) fn subject_key_id<'a>(inv: &str, cert: &X509Certificate<'a>) -> Option<&'a [u8]> {
    let ext = find(cert, SUBJECT_KEY_ID)?;
    if ext.critical {
        violated!(
            inv,
            "subjectKeyIdentifier is critical; RFC 5280 §4.2.1.2 forbids it"
        );
    }
    match parsed(inv, ext) {
        ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0),
        other => violated!(inv, "subjectKeyIdentifier decoded as {other:?}"),
    }
}

/// The authorityKeyIdentifier's keyIdentifier, if the extension is present; `Some(None)` when
/// the extension is there without a keyIdentifier.
pub(crate) fn authority_key_id<'a>(
    inv: &str,
    cert: &X509Certificate<'a>,
) -> Option<Option<&'a [u8]>> {
    let ext = find(cert, AUTHORITY_KEY_ID)?;
    if ext.critical {
        violated!(
            inv,
            "authorityKeyIdentifier is critical; RFC 5280 §4.2.1.1 forbids it"
        );
    }
    match parsed(inv, ext) {
        ParsedExtension::AuthorityKeyIdentifier(aki) => {
            Some(aki.key_identifier.as_ref().map(|k| k.0))
        }
        other => violated!(inv, "authorityKeyIdentifier decoded as {other:?}"),
    }
}

/// Whether the subject public key is RSA.
pub(crate) fn is_rsa(cert: &X509Certificate<'_>) -> bool {
    cert.public_key().algorithm.algorithm.to_id_string() == RSA_ENCRYPTION
}

/// Names a GeneralName's type, for messages.
pub(crate) fn general_name_kind(name: &GeneralName<'_>) -> &'static str {
    match name {
        GeneralName::OtherName(..) => "otherName",
        GeneralName::RFC822Name(_) => "rfc822Name",
        GeneralName::DNSName(_) => "dNSName",
        GeneralName::X400Address(_) => "x400Address",
        GeneralName::DirectoryName(_) => "directoryName",
        GeneralName::EDIPartyName(_) => "ediPartyName",
        GeneralName::URI(_) => "uniformResourceIdentifier",
        GeneralName::IPAddress(_) => "iPAddress",
        GeneralName::RegisteredID(_) => "registeredID",
        GeneralName::Invalid(..) => "an undecodable GeneralName",
    }
}
