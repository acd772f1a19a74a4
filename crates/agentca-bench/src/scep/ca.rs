//! What the generator learns before the measured window: the server's capabilities
//! (GetCACaps) and certificates (GetCACert), and which certificate a request is encrypted to.

use aws_lc_rs::digest;
use hyper::{Method, StatusCode};
use x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::url::ScepUrl;
use crate::failure::Failure;
use crate::http::Http;

/// The server as the requests need it.
#[derive(Clone, Debug)]
pub(crate) struct ScepCa {
    /// The GetCACaps keywords, as sent.
    pub(crate) capabilities: Vec<String>,
    /// Every certificate of GetCACert (DER): the CertRep may be signed by any of them.
    pub(crate) certificates: Vec<Vec<u8>>,
    /// Which of them requests are encrypted to.
    pub(crate) recipient: usize,
}

impl ScepCa {
    pub(crate) async fn fetch(
        http: &mut Http,
        url: &ScepUrl,
        fingerprint: Option<&[u8; 32]>,
    ) -> Result<Self, (&'static str, Failure)> {
        let caps = get(http, &url.operation("GetCACaps"))
            .await
            .map_err(|f| ("GetCACaps", f))?;
        let capabilities = parse_capabilities(&caps.0);
        let (body, content_type) = get(http, &url.operation("GetCACert"))
            .await
            .map_err(|f| ("GetCACert", f))?;
        let certificates = parse_ca_certificates(content_type.as_deref(), &body)
            .map_err(|d| ("GetCACert", Failure::invalid(d)))?;
        let recipient = choose_recipient(&certificates, fingerprint)
            .map_err(|d| ("GetCACert", Failure::state("no recipient", d)))?;
        Ok(Self {
            capabilities,
            certificates,
            recipient,
        })
    }

    pub(crate) fn recipient_certificate(&self) -> &[u8] {
        &self.certificates[self.recipient]
    }

    /// Whether the server takes PKIOperation by POST (RFC 8894 §3.5.2: `POSTPKIOperation`,
    /// implied by `SCEPStandard`).
    pub(crate) fn takes_post(&self) -> bool {
        self.has("POSTPKIOperation") || self.has("SCEPStandard")
    }

    fn has(&self, keyword: &str) -> bool {
        self.capabilities
            .iter()
            .any(|c| c.eq_ignore_ascii_case(keyword))
    }
}

async fn get(http: &mut Http, url: &str) -> Result<(Vec<u8>, Option<String>), Failure> {
    let response = http.send(Method::GET, url, None, Vec::new()).await?;
    if response.status != StatusCode::OK {
        return Err(Failure::state(
            &format!("HTTP {}", response.status.as_u16()),
            String::from_utf8_lossy(&response.body[..response.body.len().min(200)]).into_owned(),
        ));
    }
    let content_type = response.header("content-type").map(str::to_owned);
    Ok((response.body.to_vec(), content_type))
}

/// GetCACaps keywords: one a line (RFC 8894 §3.5.2), blanks trimmed, empty lines skipped.
pub(crate) fn parse_capabilities(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// GetCACert (RFC 8894 §4.2.1): one DER certificate (`application/x-x509-ca-cert`) or a
/// certs-only SignedData with the RA and CA certificates (`application/x-x509-ca-ra-cert`).
/// Servers label these loosely, so the content is tried both ways, the label's first.
pub(crate) fn parse_ca_certificates(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Vec<Vec<u8>>, String> {
    let single = || -> Option<Vec<Vec<u8>>> {
        match X509Certificate::from_der(body) {
            Ok(([], _)) => Some(vec![body.to_vec()]),
            _ => None,
        }
    };
    let several = || -> Option<Vec<Vec<u8>>> {
        agentca_scep::parse_certs_only(body)
            .ok()
            .map(|c| c.certificates)
            .filter(|c| !c.is_empty())
    };
    let labelled_single =
        content_type.is_some_and(|t| t.trim().eq_ignore_ascii_case("application/x-x509-ca-cert"));
    let found = if labelled_single {
        single().or_else(several)
    } else {
        several().or_else(single)
    };
    let certificates = found.ok_or_else(|| {
        format!(
            "neither a DER certificate nor a certs-only PKCS#7 ({} bytes, {})",
            body.len(),
            content_type.unwrap_or("no content type")
        )
    })?;
    for (index, der) in certificates.iter().enumerate() {
        if !matches!(X509Certificate::from_der(der), Ok(([], _))) {
            return Err(format!("certificate {index} does not parse"));
        }
    }
    Ok(certificates)
}

/// SHA-256 of a certificate's DER, in lowercase hex.
pub(crate) fn fingerprint(der: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, der))
}

/// The subject of a certificate, for the report.
pub(crate) fn subject(der: &[u8]) -> String {
    X509Certificate::from_der(der).map_or_else(|_| "?".into(), |(_, c)| c.subject().to_string())
}

/// Which certificate requests are encrypted to: the one with the given fingerprint; else the
/// one RSA certificate whose key usage allows keyEncipherment (an RA, RFC 8894 §2.1); else,
/// when GetCACert sent a single RSA certificate, that one (a CA that is its own RA, as
/// micromdm's is, with only certificate and CRL signing in its key usage).
pub(crate) fn choose_recipient(
    certificates: &[Vec<u8>],
    fingerprint: Option<&[u8; 32]>,
) -> Result<usize, String> {
    let parsed: Vec<X509Certificate<'_>> = certificates
        .iter()
        .map(|der| X509Certificate::from_der(der).map(|(_, c)| c))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("a certificate does not parse: {e}"))?;
    let is_rsa =
        |c: &X509Certificate<'_>| c.public_key().algorithm.algorithm == OID_PKCS1_RSAENCRYPTION;
    if let Some(wanted) = fingerprint {
        let index = certificates
            .iter()
            .position(|der| digest::digest(&digest::SHA256, der).as_ref() == wanted)
            .ok_or_else(|| {
                format!(
                    "no certificate has the fingerprint {}; GetCACert sent {}",
                    hex::encode(wanted),
                    describe(certificates)
                )
            })?;
        if !is_rsa(&parsed[index]) {
            return Err(
                "the certificate with that fingerprint has no RSA key: it cannot receive a \
                 key-transport envelope"
                    .into(),
            );
        }
        return Ok(index);
    }
    let encipherers: Vec<usize> = parsed
        .iter()
        .enumerate()
        .filter(|(_, c)| is_rsa(c) && allows_key_encipherment(c))
        .map(|(i, _)| i)
        .collect();
    match encipherers.as_slice() {
        [one] => return Ok(*one),
        [] => {}
        _ => {
            return Err(format!(
                "several RSA certificates allow keyEncipherment; choose one with \
                 --ca-fingerprint: {}",
                describe(certificates)
            ));
        }
    }
    match parsed.as_slice() {
        [only] if is_rsa(only) => Ok(0),
        _ => Err(format!(
            "no RSA certificate that allows keyEncipherment; choose one with \
             --ca-fingerprint: {}",
            describe(certificates)
        )),
    }
}

/// Key usage absent means every usage (RFC 5280 §4.2.1.3).
fn allows_key_encipherment(cert: &X509Certificate<'_>) -> bool {
    match cert.key_usage() {
        Ok(Some(usage)) => usage.value.key_encipherment(),
        Ok(None) => true,
        Err(_) => false,
    }
}

fn describe(certificates: &[Vec<u8>]) -> String {
    certificates
        .iter()
        .map(|der| format!("{} ({})", fingerprint(der), subject(der)))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose,
        PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256, RsaKeySize,
    };

    use super::*;

    fn cert(name: &str, rsa: bool, usages: &[KeyUsagePurpose], ca: bool) -> Vec<u8> {
        let key = if rsa {
            KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048).unwrap()
        } else {
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap()
        };
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = usages.to_vec();
        if ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_recipient_is_the_rsa_ra_or_the_lone_rsa_ca() {
        use KeyUsagePurpose::{CrlSign, DigitalSignature, KeyCertSign, KeyEncipherment};
        let ca_ec = cert("CA", false, &[KeyCertSign, CrlSign], true);
        let ra = cert("RA", true, &[DigitalSignature, KeyEncipherment], false);
        let ca_rsa = cert("RSA CA", true, &[KeyCertSign, CrlSign], true);

        // agentca's form: RA, then an ECDSA CA.
        assert_eq!(choose_recipient(&[ra.clone(), ca_ec.clone()], None), Ok(0));
        assert_eq!(choose_recipient(&[ca_rsa.clone(), ra.clone()], None), Ok(1));
        // micromdm's: one RSA CA with certificate signing only.
        assert_eq!(choose_recipient(std::slice::from_ref(&ca_rsa), None), Ok(0));
        // Nothing that can receive an envelope.
        let err = choose_recipient(std::slice::from_ref(&ca_ec), None).unwrap_err();
        assert!(err.contains("--ca-fingerprint"), "{err}");
        // Two candidates: the operator must choose.
        let ra2 = cert("RA2", true, &[KeyEncipherment], false);
        let all = [ra.clone(), ra2.clone(), ca_ec.clone()];
        let err = choose_recipient(&all, None).unwrap_err();
        assert!(err.contains(&fingerprint(&ra2)), "{err}");
        let wanted: [u8; 32] = digest::digest(&digest::SHA256, &ra2)
            .as_ref()
            .try_into()
            .unwrap();
        assert_eq!(choose_recipient(&all, Some(&wanted)), Ok(1));
        // A fingerprint that names no certificate, or an ECDSA one.
        assert!(choose_recipient(&all, Some(&[0; 32])).is_err());
        let ec: [u8; 32] = digest::digest(&digest::SHA256, &ca_ec)
            .as_ref()
            .try_into()
            .unwrap();
        let err = choose_recipient(&all, Some(&ec)).unwrap_err();
        assert!(err.contains("no RSA key"), "{err}");
        // No key usage extension at all allows keyEncipherment.
        let bare = cert("bare", true, &[], false);
        assert_eq!(choose_recipient(&[ca_ec, bare], None), Ok(1));
    }

    #[test]
    fn ca_certificates_come_single_or_as_pkcs7() {
        let a = cert("A", true, &[], false);
        let b = cert("B", false, &[], true);
        let single = parse_ca_certificates(Some("application/x-x509-ca-cert"), &a).unwrap();
        assert_eq!(single, std::slice::from_ref(&a));
        // Mislabelled either way, still read.
        assert_eq!(
            parse_ca_certificates(Some("application/x-x509-ca-ra-cert"), &a).unwrap(),
            std::slice::from_ref(&a)
        );
        let p7 = agentca_scep::certs_only(&[&a, &b]).unwrap();
        assert_eq!(
            parse_ca_certificates(Some("application/x-x509-ca-cert"), &p7).unwrap(),
            [a.clone(), b.clone()]
        );
        assert_eq!(parse_ca_certificates(None, &p7).unwrap(), [a, b]);
        let err = parse_ca_certificates(Some("text/html"), b"<html>").unwrap_err();
        assert!(err.contains("6 bytes, text/html"), "{err}");
    }

    #[test]
    fn capabilities_are_one_keyword_a_line() {
        let caps = parse_capabilities(b"Renewal\r\nSHA-256\n\nAES\n  POSTPKIOperation  \n");
        assert_eq!(caps, ["Renewal", "SHA-256", "AES", "POSTPKIOperation"]);
        let ca = |caps: &[u8]| ScepCa {
            capabilities: parse_capabilities(caps),
            certificates: Vec::new(),
            recipient: 0,
        };
        assert!(ca(b"postpkioperation\n").takes_post());
        assert!(ca(b"SCEPStandard\n").takes_post());
        assert!(!ca(b"AES\nSHA-256\n").takes_post());
        assert!(!ca(b"").takes_post());
    }
}
