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

/// Like [`webpki_verify_client`], with the leaf's revocation status checked against
/// `crls_der`: a status the CRLs cannot tell (no CRL from the leaf's issuer) is an error, and
/// so is a CRL past its nextUpdate. Intermediates are not checked, as agentca publishes no
/// CRL for its root. Returns webpki's verdict, so
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
                .with_depth(webpki::RevocationCheckDepth::EndEntity)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testpki::{Leaf, Pki, assert_fails_with};

    fn issue(pki: &Pki) -> (Vec<u8>, Vec<u8>) {
        let leaf = Leaf::new();
        let der = pki.issue(&leaf.params, &leaf.key);
        (der, leaf.params.serial_number.clone().unwrap().to_bytes())
    }

    #[test]
    fn accepts_a_correct_uri_only_leaf() {
        let pki = Pki::new();
        let (leaf, _) = issue(&pki);
        let now = OffsetDateTime::now_utc();
        webpki_verify_client(&leaf, &pki.chain(), &pki.root_der, now);
        webpki_verify_client(&leaf, std::slice::from_ref(&pki.ca_der), &pki.root_der, now);
    }

    #[test]
    fn rejects_expired_and_not_yet_valid() {
        let pki = Pki::new();
        let (leaf, _) = issue(&pki);
        let now = OffsetDateTime::now_utc();
        let later = now + time::Duration::days(2);
        assert_eq!(
            verify(&leaf, &pki.chain(), &pki.root_der, &[], later),
            Err(webpki::Error::CertExpired {
                time: UnixTime::since_unix_epoch(Duration::from_secs(
                    u64::try_from(later.unix_timestamp()).unwrap()
                )),
                not_after: UnixTime::since_unix_epoch(Duration::from_secs(
                    u64::try_from(
                        x509_parser::parse_x509_certificate(&leaf)
                            .unwrap()
                            .1
                            .validity()
                            .not_after
                            .timestamp()
                    )
                    .unwrap()
                )),
            })
        );
        let earlier = now - time::Duration::hours(1);
        assert!(matches!(
            verify(&leaf, &pki.chain(), &pki.root_der, &[], earlier),
            Err(webpki::Error::CertNotValidYet { .. })
        ));
    }

    #[test]
    fn rejects_a_leaf_from_another_ca() {
        let pki = Pki::new();
        let stranger = Pki::new();
        let (leaf, _) = issue(&stranger);
        assert_fails_with(&["INV-9", "UnknownIssuer"], || {
            webpki_verify_client(
                &leaf,
                &pki.chain(),
                &pki.root_der,
                OffsetDateTime::now_utc(),
            )
        });
    }

    #[test]
    fn crl_revokes_the_listed_leaf_only() {
        let pki = Pki::new();
        let (revoked, serial) = issue(&pki);
        let (fine, _) = issue(&pki);
        let now = OffsetDateTime::now_utc();
        let crls = vec![pki.crl(&[&serial])];

        assert_webpki_revoked(&revoked, &pki.chain(), &pki.root_der, &crls, now);
        assert_eq!(
            webpki_verify_client_with_crls(&fine, &pki.chain(), &pki.root_der, &crls, now),
            Ok(())
        );
        assert_fails_with(&["accepted a certificate the CRL should revoke"], || {
            assert_webpki_revoked(&fine, &pki.chain(), &pki.root_der, &crls, now)
        });
    }

    #[test]
    fn crl_from_another_ca_leaves_status_unknown() {
        let pki = Pki::new();
        let stranger = Pki::new();
        let (leaf, serial) = issue(&pki);
        let crls = vec![stranger.crl(&[&serial])];
        let now = OffsetDateTime::now_utc();
        assert_eq!(
            webpki_verify_client_with_crls(&leaf, &pki.chain(), &pki.root_der, &crls, now),
            Err(webpki::Error::UnknownRevocationStatus)
        );
        assert_fails_with(&["not as revoked", "UnknownRevocationStatus"], || {
            assert_webpki_revoked(&leaf, &pki.chain(), &pki.root_der, &crls, now)
        });
    }

    #[test]
    fn expired_crl_is_an_error() {
        let pki = Pki::new();
        let (leaf, _) = issue(&pki);
        let now = OffsetDateTime::now_utc();
        let crls = vec![pki.crl_until(&[], now + time::Duration::minutes(1))];
        let at = now + time::Duration::hours(2);
        assert!(matches!(
            webpki_verify_client_with_crls(&leaf, &pki.chain(), &pki.root_der, &crls, at),
            Err(webpki::Error::CrlExpired { .. })
        ));
    }
}
