//! Degenerate certs-only SignedData (RFC 8894 §3.4, RFC 5652 §5): the GetCACert answer when
//! an RA is used, the GetCRL answer, and the inside of a SUCCESS CertRep.

use crate::error::{Result, ScepError};
use crate::signed;

/// A certs-only message with `certificates` (DER) in this order. SCEP clients read the
/// certificates positionally (micromdm takes the first of a CertRep's as the issued one), so
/// the order given is kept rather than DER-sorted.
pub fn certs_only<C: AsRef<[u8]>>(certificates: &[C]) -> Result<Vec<u8>> {
    let certs: Vec<&[u8]> = certificates.iter().map(AsRef::as_ref).collect();
    if certs.is_empty() {
        return Err(ScepError::InvalidInput(
            "a certs-only message needs a certificate",
        ));
    }
    for c in &certs {
        signed::check_single_sequence(c, "certificate")?;
    }
    Ok(signed::encode_certs_only(&certs, &[]))
}

/// The GetCACert answer with an RA (`application/x-x509-ca-ra-cert`): the RA certificate, then
/// the CA chain (issuing CA first).
pub fn get_ca_cert_response<C: AsRef<[u8]>>(
    ra_certificate: &[u8],
    ca_chain: &[C],
) -> Result<Vec<u8>> {
    let mut all: Vec<&[u8]> = vec![ra_certificate];
    all.extend(ca_chain.iter().map(AsRef::as_ref));
    certs_only(&all)
}

/// The GetCRL answer: a certs-only message with `crl` (DER) in its `crls` field.
pub fn crl_only(crl: &[u8]) -> Result<Vec<u8>> {
    signed::check_single_sequence(crl, "CRL")?;
    Ok(signed::encode_certs_only(&[], &[crl]))
}

/// The contents of a certs-only message (or of any SignedData: nothing is verified).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CertsOnly {
    /// Certificates in the order sent (DER).
    pub certificates: Vec<Vec<u8>>,
    /// CRLs in the order sent (DER).
    pub crls: Vec<Vec<u8>>,
}

/// Reads a certs-only message (BER accepted, size and depth bounded).
pub fn parse_certs_only(input: &[u8]) -> Result<CertsOnly> {
    let sd = signed::SignedData::decode(input)?;
    Ok(CertsOnly {
        certificates: sd.certificates,
        crls: sd.crls,
    })
}
