//! OCSP requests to send: one per certificate, built from the issuer's and the leaf's DER.

use agentca_core::ocsp::{HashAlgorithm, IssuerHashes, build_request};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::BenchError;

/// The nonce length sent when nonces are asked for: what OpenSSL's client sends, within the
/// 1–32 bytes of RFC 8954 §2.1.
const NONCE_LEN: usize = 16;

/// Builds one DER `OCSPRequest` per leaf certificate, each asking about that one certificate
/// with a SHA-1 `CertID` and, unless `nonce` is set, no extensions: the RFC 5019 profile that
/// browsers and most relying parties send, and the one a pre-signed response can answer.
///
/// With `nonce`, every request carries its own random 16-byte nonce (RFC 8954), which forces a
/// responder that honours nonces to sign each answer.
pub fn requests_for(
    issuer_der: &[u8],
    leaf_ders: &[Vec<u8>],
    nonce: bool,
) -> Result<Vec<Vec<u8>>, BenchError> {
    requests_for_hash(issuer_der, leaf_ders, HashAlgorithm::Sha1, nonce)
}

/// [`requests_for`] with the `CertID` hash chosen.
///
/// Fails if a leaf does not parse or names a different issuer than `issuer_der`'s subject: a
/// request about it would measure the responder's refusal path, not its answers.
pub fn requests_for_hash(
    issuer_der: &[u8],
    leaf_ders: &[Vec<u8>],
    hash: HashAlgorithm,
    nonce: bool,
) -> Result<Vec<Vec<u8>>, BenchError> {
    let issuer = parse_certificate(issuer_der, "issuer")?;
    let hashes = IssuerHashes::from_issuer_der(issuer_der)?;
    let issuer_name = issuer.tbs_certificate.subject.as_raw();
    leaf_ders
        .iter()
        .enumerate()
        .map(|(i, der)| {
            let leaf = parse_certificate(der, &format!("leaf #{}", i + 1))?;
            if leaf.tbs_certificate.issuer.as_raw() != issuer_name {
                return Err(BenchError::Certificate(format!(
                    "leaf #{} (serial {}) was not issued by the given issuer",
                    i + 1,
                    leaf.tbs_certificate.raw_serial_as_string()
                )));
            }
            let cert_id = hashes.cert_id(hash, leaf.tbs_certificate.raw_serial());
            let nonce = nonce.then(random_nonce).transpose()?;
            Ok(build_request(
                &[cert_id],
                nonce.as_ref().map(|n| n.as_slice()),
            )?)
        })
        .collect()
}

/// Reads certificates from a file's contents: any number of PEM `CERTIFICATE` blocks (other
/// blocks are skipped), or a single DER certificate.
pub fn load_certificates(data: &[u8]) -> Result<Vec<Vec<u8>>, BenchError> {
    if data.first() == Some(&0x30) {
        parse_certificate(data, "DER input")?;
        return Ok(vec![data.to_vec()]);
    }
    let blocks = pem::parse_many(data).map_err(|e| BenchError::Certificate(format!("PEM: {e}")))?;
    let certs: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect();
    if certs.is_empty() {
        return Err(BenchError::Certificate(
            "no CERTIFICATE block in the PEM input".into(),
        ));
    }
    Ok(certs)
}

fn parse_certificate<'a>(der: &'a [u8], what: &str) -> Result<X509Certificate<'a>, BenchError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(BenchError::Certificate(format!(
            "{what}: trailing bytes after the certificate"
        ))),
        Err(e) => Err(BenchError::Certificate(format!("{what}: {e}"))),
    }
}

fn random_nonce() -> Result<[u8; NONCE_LEN], BenchError> {
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce)
        .map_err(|_| BenchError::Options("the system random number generator failed".into()))?;
    Ok(nonce)
}

#[cfg(test)]
mod tests {
    use agentca_core::ocsp::parse_request;

    use super::*;
    use crate::test_pki::TestPki;

    #[test]
    fn one_sha1_request_per_leaf_without_nonce() {
        let pki = TestPki::new(3);
        let requests = requests_for(&pki.issuer_der, &pki.leaf_ders, false).unwrap();
        assert_eq!(requests.len(), 3);
        let hashes = IssuerHashes::from_issuer_der(&pki.issuer_der).unwrap();
        for (request, serial) in requests.iter().zip(&pki.serials) {
            let parsed = parse_request(request).unwrap();
            assert_eq!(
                parsed.cert_ids,
                vec![hashes.cert_id(HashAlgorithm::Sha1, serial)]
            );
            assert_eq!(parsed.nonce, None);
        }
    }

    #[test]
    fn nonces_are_fresh_per_request() {
        let pki = TestPki::new(2);
        let requests =
            requests_for_hash(&pki.issuer_der, &pki.leaf_ders, HashAlgorithm::Sha256, true)
                .unwrap();
        let a = parse_request(&requests[0]).unwrap();
        let b = parse_request(&requests[1]).unwrap();
        assert_eq!(a.cert_ids[0].hash, HashAlgorithm::Sha256);
        let (a, b) = (a.nonce.unwrap(), b.nonce.unwrap());
        assert_eq!(a.len(), NONCE_LEN);
        assert_ne!(a, b);
    }

    #[test]
    fn refuses_a_leaf_of_another_issuer_and_garbage() {
        let pki = TestPki::new(1);
        let other = TestPki::new(1);
        let err = requests_for(&pki.issuer_der, &other.leaf_ders, false).unwrap_err();
        assert!(err.to_string().contains("not issued by"), "{err}");
        assert!(requests_for(&pki.issuer_der, &[vec![0x30, 0x00]], false).is_err());
        assert!(requests_for(b"junk", &pki.leaf_ders, false).is_err());
    }

    #[test]
    fn loads_pem_bundles_and_der() {
        let pki = TestPki::new(2);
        let bundle = pki
            .leaf_ders
            .iter()
            .map(|d| pem::encode(&pem::Pem::new("CERTIFICATE", d.clone())))
            .collect::<String>();
        let with_key =
            format!("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n{bundle}");
        assert_eq!(
            load_certificates(with_key.as_bytes()).unwrap(),
            pki.leaf_ders
        );
        assert_eq!(
            load_certificates(&pki.issuer_der).unwrap(),
            vec![pki.issuer_der.clone()]
        );
        assert!(load_certificates(b"").is_err());
        assert!(load_certificates(&[0x30, 0x03, 1, 2, 3]).is_err());
    }
}
