//! INV-9 with rustls-webpki: path validation the way rustls-based clients and servers will do
//! it, for client authentication, optionally against CRLs.

use std::time::Duration;

use rustls_pki_types::{CertificateDer, UnixTime};
use time::OffsetDateTime;
use webpki::{
    CertRevocationList, EndEntityCert, KeyUsage, OwnedCertRevocationList, RevocationOptionsBuilder,
    anchor_from_trusted_cert,
};

/// Validates `leaf_der` for client authentication at `at`, with `root_der` as the only trust
/// anchor and `chain_der` as intermediates (the root may be included; it is skipped), and
/// fails with webpki's error otherwise.
pub fn webpki_verify_client(
    leaf_der: &[u8],
    chain_der: &[Vec<u8>],
    root_der: &[u8],
    at: OffsetDateTime,
) {
    if let Err(e) = verify(leaf_der, chain_der, root_der, &[], at) {
        panic!("INV-9 violated: rustls-webpki rejected the certificate for client auth: {e:?}");
    }
}

/// Like [`webpki_verify_client`], with revocation checked against `crls_der` for the whole
/// chain (an unknown status is an error, CRL expiry is enforced). Returns webpki's verdict, so
/// a test can expect `Err(webpki::Error::CertRevoked)`; see also [`assert_webpki_revoked`].
pub fn webpki_verify_client_with_crls(
    leaf_der: &[u8],
    chain_der: &[Vec<u8>],
    root_der: &[u8],
    crls_der: &[Vec<u8>],
    at: OffsetDateTime,
) -> Result<(), webpki::Error> {
    verify(leaf_der, chain_der, root_der, crls_der, at)
}

/// Fails unless rustls-webpki rejects the leaf as revoked by one of `crls_der`.
pub fn assert_webpki_revoked(
    leaf_der: &[u8],
    chain_der: &[Vec<u8>],
    root_der: &[u8],
    crls_der: &[Vec<u8>],
    at: OffsetDateTime,
) {
    match verify(leaf_der, chain_der, root_der, crls_der, at) {
        Err(webpki::Error::CertRevoked) => {}
        Ok(()) => panic!("rustls-webpki accepted a certificate the CRL should revoke"),
        Err(e) => panic!("rustls-webpki rejected the certificate, but not as revoked: {e:?}"),
    }
}

fn verify(
    leaf_der: &[u8],
    chain_der: &[Vec<u8>],
    root_der: &[u8],
    crls_der: &[Vec<u8>],
    at: OffsetDateTime,
) -> Result<(), webpki::Error> {
    let root = CertificateDer::from(root_der);
    let anchor = anchor_from_trusted_cert(&root)?;
    let anchors = [anchor];
    let intermediates: Vec<CertificateDer<'_>> = chain_der
        .iter()
        .filter(|der| der.as_slice() != root_der)
        .map(|der| CertificateDer::from(der.as_slice()))
        .collect();
    let leaf = CertificateDer::from(leaf_der);
    let ee = EndEntityCert::try_from(&leaf)?;

    let crls: Vec<CertRevocationList<'static>> = crls_der
        .iter()
        .map(|der| OwnedCertRevocationList::from_der(der).map(CertRevocationList::from))
        .collect::<Result<_, _>>()?;
    let crl_refs: Vec<&CertRevocationList<'_>> = crls.iter().collect();
    let revocation = match RevocationOptionsBuilder::new(&crl_refs) {
        Ok(builder) => Some(
            builder
                .with_expiration_policy(webpki::ExpirationPolicy::Enforce)
                .build(),
        ),
        // No CRLs given: no revocation checking.
        Err(_) => None,
    };

    let secs = u64::try_from(at.unix_timestamp()).unwrap_or(0);
    let time = UnixTime::since_unix_epoch(Duration::from_secs(secs));
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &intermediates,
        time,
        KeyUsage::client_auth(),
        revocation,
        None,
    )
    .map(|_| ())
}
