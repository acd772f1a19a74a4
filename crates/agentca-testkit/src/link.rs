//! INV-4: the link between a certificate and its issuer (BR §7.1.2.7, RFC 5280 §4.1.1.2,
//! §4.1.2.4, §4.2.1.1).

use x509_parser::certificate::X509Certificate;

use crate::der::certificate_signature_algorithms;
use crate::extensions::{authority_key_id, subject_key_id};
use crate::parse::hex;

/// Whether the issuer's key identifier must appear in the certificate's AKI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Aki {
    /// Leaves and intermediates: AKI keyIdentifier present and equal to the issuer's SKI.
    Required,
    /// Self-signed roots: AKI may be absent; when present it must name the root's own SKI.
    Optional,
}

/// Checks that `cert` (encoded as `cert_der`) names `issuer` as its issuer in every way and
/// carries a valid signature by the issuer's key.
pub(crate) fn check_issued_by(
    inv: &str,
    what: &str,
    cert: &X509Certificate<'_>,
    cert_der: &[u8],
    issuer: &X509Certificate<'_>,
    aki: Aki,
) {
    if cert.issuer().as_raw() != issuer.subject().as_raw() {
        violated!(
            inv,
            "the {what}'s issuer DN ({}, {}) is not byte-identical to the issuer's subject \
             ({}, {})",
            cert.issuer(),
            hex(cert.issuer().as_raw()),
            issuer.subject(),
            hex(issuer.subject().as_raw())
        );
    }

    let issuer_ski = subject_key_id(inv, issuer);
    match (authority_key_id(inv, cert), aki) {
        (None, Aki::Optional) => {}
        (None, Aki::Required) => {
            violated!(inv, "the {what} has no authorityKeyIdentifier extension")
        }
        (Some(None), _) => violated!(
            inv,
            "the {what}'s authorityKeyIdentifier has no keyIdentifier"
        ),
        (Some(Some(id)), _) => match issuer_ski {
            None => violated!(
                inv,
                "the {what}'s issuer has no subjectKeyIdentifier for the AKI to match"
            ),
            Some(ski) if ski != id => violated!(
                inv,
                "the {what}'s AKI keyIdentifier {} differs from the issuer's SKI {}",
                hex(id),
                hex(ski)
            ),
            Some(_) => {}
        },
    }

    let Some(algs) = certificate_signature_algorithms(cert_der) else {
        violated!(
            inv,
            "the {what}'s signature AlgorithmIdentifiers could not be located in its DER"
        );
    };
    if algs.inner != algs.outer {
        violated!(
            inv,
            "the {what}'s signatureAlgorithm ({}) is not byte-identical to tbsCertificate.signature \
             ({})",
            hex(algs.outer),
            hex(algs.inner)
        );
    }

    if let Err(e) = cert.verify_signature(Some(issuer.public_key())) {
        violated!(
            inv,
            "the {what}'s signature does not verify with the issuer's public key: {e}"
        );
    }
}
