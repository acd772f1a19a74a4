//! tls-alpn-01 (RFC 8737): a TLS handshake negotiating `acme-tls/1` whose certificate carries
//! the key authorization's digest in a critical id-pe-acmeIdentifier extension.
//!
//! The certificate is self-signed by design, so no chain is verified; the handshake
//! signature still is, which proves the peer holds the key of the certificate it showed.

use std::net::IpAddr;
use std::sync::Arc;

use aws_lc_rs::digest;
use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, DnsName, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use tokio_rustls::TlsConnector;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

use super::error::{ValidationError, ValidationFailure};
use super::record::ValidationRecord;
use super::target::{self, Host};
use super::{Inner, Target};

/// The ALPN protocol identifier (RFC 8737 §6.2).
pub(crate) const ACME_TLS_1: &[u8] = b"acme-tls/1";

/// id-pe-acmeIdentifier, 1.3.6.1.5.5.7.1.31 (RFC 8737 §6.1), as DER OID content octets.
const ACME_IDENTIFIER_OID: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x1f];

/// SubjectAltName, 2.5.29.17, as DER OID content octets.
const SUBJECT_ALT_NAME_OID: &[u8] = &[0x55, 0x1d, 0x11];

/// Why a tls-alpn-01 check failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsAlpnError {
    /// The TLS handshake failed.
    #[error("TLS handshake with {0} failed")]
    Handshake(String),
    /// The server sent no certificate.
    #[error("the server presented no certificate")]
    NoCertificate,
    /// The server did not select `acme-tls/1`.
    #[error("the server did not negotiate the acme-tls/1 protocol")]
    Alpn,
    /// The certificate does not carry exactly one subjectAltName entry.
    #[error("the certificate has {0} subjectAltName entries, expected exactly one")]
    SanCount(usize),
    /// The one subjectAltName entry is not the identifier.
    #[error("the certificate's subjectAltName is not {0}")]
    SanMismatch(String),
    /// The certificate does not parse.
    #[error("the certificate is not a valid X.509 certificate")]
    Certificate,
    /// No id-pe-acmeIdentifier extension.
    #[error("the certificate has no acmeIdentifier extension")]
    ExtensionMissing,
    /// The extension is there but not marked critical (RFC 8737 §3).
    #[error("the certificate's acmeIdentifier extension is not critical")]
    ExtensionNotCritical,
    /// The extension's value is not the expected digest.
    #[error("the certificate's acmeIdentifier extension does not match the key authorization")]
    ExtensionValue,
}

/// Accepts any certificate and checks the handshake signature with it.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AnyCertificate {
    /// Checks the handshake signature against the certificate's public key. rustls' own
    /// helpers parse the whole certificate with webpki, which rejects the very critical
    /// extension a tls-alpn-01 certificate must carry; only the key matters here.
    fn verify(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let bad = || rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature);
        let (_, parsed) = X509Certificate::from_der(cert.as_ref()).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        let spki = SubjectPublicKeyInfoDer::from(parsed.tbs_certificate.subject_pki.raw);
        let key = webpki::RawPublicKeyEntity::try_from(&spki).map_err(|_| bad())?;
        let algorithms = self
            .algorithms
            .mapping
            .iter()
            .find(|(scheme, _)| *scheme == dss.scheme)
            .map(|(_, algorithms)| *algorithms)
            .ok_or(rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme)?;
        // A scheme may map to several algorithms (one per key encoding); any may verify.
        if algorithms
            .iter()
            .any(|alg| key.verify_signature(*alg, message, dss.signature()).is_ok())
        {
            Ok(HandshakeSignatureValid::assertion())
        } else {
            Err(bad())
        }
    }
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // RFC 8737 §3: the certificate is judged by its contents after the handshake.
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// TLS 1.2 and 1.3 (RFC 8737 §3 requires at least 1.2), ALPN `acme-tls/1` only, no session
/// resumption: a resumed session would show no certificate.
pub(crate) fn client_config() -> Result<Arc<ClientConfig>, ValidationError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|_| ValidationError::Config("TLS versions unsupported by the provider"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate { algorithms }))
        .with_no_client_auth();
    config.alpn_protocols = vec![ACME_TLS_1.to_vec()];
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

pub(super) async fn validate(
    inner: &Inner,
    target: &Target,
    key_authorization: &str,
    record: &mut ValidationRecord,
) -> Result<(), ValidationFailure> {
    let port = inner.config.tls_alpn01_port;
    let host = Host::of(target);
    record.hostname = host.hostname();
    record.port = Some(port.to_string());
    let sni = match target {
        Target::Dns(name) => name.clone(),
        Target::Ip(ip) => target::reverse_name(*ip),
    };
    let server_name = DnsName::try_from(sni)
        .map(|name| ServerName::DnsName(name.to_owned()))
        .map_err(|_| super::error::malformed_identifier())?;

    let candidates = target::addresses(inner, &host, record).await?;
    let (stream, peer) = target::connect(inner, &candidates, port, record).await?;
    let tls = TlsConnector::from(inner.tls.clone())
        .connect(server_name, stream)
        .await
        .map_err(|err| {
            tracing::debug!(error = %err, %peer, "tls-alpn-01 handshake failed");
            TlsAlpnError::Handshake(peer.to_string())
        })?;
    let (_, connection) = tls.get_ref();
    if connection.alpn_protocol() != Some(ACME_TLS_1) {
        return Err(TlsAlpnError::Alpn.into());
    }
    let certificate = connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or(TlsAlpnError::NoCertificate)?;
    let expected = digest::digest(&digest::SHA256, key_authorization.as_bytes());
    check_certificate(certificate, target, expected.as_ref())?;
    Ok(())
}

/// RFC 8737 §3 on the first certificate: exactly one SAN, the identifier; a critical
/// acmeIdentifier extension whose value is the DER OCTET STRING of the digest.
fn check_certificate(
    der: &CertificateDer<'_>,
    target: &Target,
    expected: &[u8],
) -> Result<(), TlsAlpnError> {
    let (_, cert) =
        X509Certificate::from_der(der.as_ref()).map_err(|_| TlsAlpnError::Certificate)?;
    let extensions = cert.extensions();

    let mut sans = extensions
        .iter()
        .filter(|ext| ext.oid.as_bytes() == SUBJECT_ALT_NAME_OID);
    let names = match (sans.next(), sans.next()) {
        (None, _) => return Err(TlsAlpnError::SanCount(0)),
        (Some(ext), None) => match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => &san.general_names,
            _ => return Err(TlsAlpnError::Certificate),
        },
        (Some(_), Some(_)) => return Err(TlsAlpnError::Certificate),
    };
    let [name] = names.as_slice() else {
        return Err(TlsAlpnError::SanCount(names.len()));
    };
    let matches = match (name, target) {
        (GeneralName::DNSName(dns), Target::Dns(id)) => dns.eq_ignore_ascii_case(id),
        (GeneralName::IPAddress(bytes), Target::Ip(IpAddr::V4(v4))) => *bytes == v4.octets(),
        (GeneralName::IPAddress(bytes), Target::Ip(IpAddr::V6(v6))) => *bytes == v6.octets(),
        _ => false,
    };
    if !matches {
        let shown = match target {
            Target::Dns(name) => name.clone(),
            Target::Ip(ip) => ip.to_string(),
        };
        return Err(TlsAlpnError::SanMismatch(shown));
    }

    let mut ids = extensions
        .iter()
        .filter(|ext| ext.oid.as_bytes() == ACME_IDENTIFIER_OID);
    let ext = match (ids.next(), ids.next()) {
        (None, _) => return Err(TlsAlpnError::ExtensionMissing),
        (Some(ext), None) => ext,
        (Some(_), Some(_)) => return Err(TlsAlpnError::Certificate),
    };
    if !ext.critical {
        return Err(TlsAlpnError::ExtensionNotCritical);
    }
    // extnValue holds `Authorization ::= OCTET STRING (SIZE (32))`: tag 04, length 32.
    let mut der_value = Vec::with_capacity(2 + expected.len());
    der_value.extend_from_slice(&[0x04, 0x20]);
    der_value.extend_from_slice(expected);
    if ext.value == der_value.as_slice() {
        Ok(())
    } else {
        Err(TlsAlpnError::ExtensionValue)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::net::IpAddr;
    use std::time::Duration;

    use agentca_testkit::dns::FakeDns;
    use rcgen::SanType;

    use super::super::testutil::{KEY_AUTH, Responder, TOKEN, key_auth_digest, validator};
    use super::super::{ChallengeType, Target, ValidationFailure, ValidationRecord};

    const SECOND: Duration = Duration::from_secs(2);

    fn dns_san(name: &str) -> SanType {
        SanType::DnsName(name.try_into().unwrap())
    }

    fn loopback() -> IpAddr {
        "127.0.0.1".parse().unwrap()
    }

    /// Runs tls-alpn-01 for `target` against `responder`, resolving names via a fake DNS
    /// that points `alpn.test` at 127.0.0.1.
    async fn run(
        responder: Responder,
        target: Target,
    ) -> Result<ValidationRecord, ValidationFailure> {
        let dns = FakeDns::start();
        dns.set_a("alpn.test", vec![loopback()]);
        let (_server, port) = responder.start().await;
        let v = validator(&["127.0.0.1"], 80, port, Some(&dns), SECOND);
        v.validate(ChallengeType::TlsAlpn01, &target, TOKEN, KEY_AUTH)
            .await
    }

    fn name() -> Target {
        Target::Dns("alpn.test".into())
    }

    #[tokio::test]
    async fn tls_alpn01_succeeds_for_a_name() {
        let responder = Responder::new(vec![dns_san("ALPN.test")], key_auth_digest());
        let record = run(responder, name()).await.unwrap();
        assert_eq!(record.hostname, "alpn.test");
        assert_eq!(record.address_used, Some(loopback()));
        assert_eq!(record.addresses_resolved, vec![loopback()]);
        assert!(record.url.is_none());
    }

    #[tokio::test]
    async fn tls_alpn01_succeeds_for_an_ip() {
        let responder = Responder::new(vec![SanType::IpAddress(loopback())], key_auth_digest());
        let record = run(responder, Target::Ip(loopback())).await.unwrap();
        assert_eq!(record.hostname, "127.0.0.1");
        assert_eq!(record.address_used, Some(loopback()));
    }

    #[tokio::test]
    async fn tls_alpn01_succeeds_over_tls_1_2() {
        let mut responder = Responder::new(vec![dns_san("alpn.test")], key_auth_digest());
        responder.tls12_only = true;
        run(responder, name()).await.unwrap();
    }

    #[tokio::test]
    async fn a_handshake_not_signed_by_the_certificate_key_fails() {
        for tls12_only in [false, true] {
            let mut responder = Responder::new(vec![dns_san("alpn.test")], key_auth_digest());
            responder.foreign_key = true;
            responder.tls12_only = tls12_only;
            let err = run(responder, name()).await.unwrap_err();
            assert_eq!(err.problem_type(), "tls", "{err}");
        }
    }

    #[tokio::test]
    async fn a_server_without_acme_tls_1_is_unauthorized() {
        let mut responder = Responder::new(vec![dns_san("alpn.test")], key_auth_digest());
        responder.alpn = Vec::new();
        let err = run(responder, name()).await.unwrap_err();
        assert_eq!(err.problem_type(), "unauthorized", "{err}");
        assert!(err.detail().contains("acme-tls/1"), "{err}");
    }

    #[tokio::test]
    async fn a_server_insisting_on_another_protocol_fails_the_handshake() {
        let mut responder = Responder::new(vec![dns_san("alpn.test")], key_auth_digest());
        responder.alpn = vec![b"h2".to_vec()];
        let err = run(responder, name()).await.unwrap_err();
        assert_eq!(err.problem_type(), "tls", "{err}");
    }

    #[tokio::test]
    async fn a_missing_extension_is_unauthorized() {
        let mut responder = Responder::new(vec![dns_san("alpn.test")], key_auth_digest());
        responder.digest = None;
        let err = run(responder, name()).await.unwrap_err();
        assert_eq!(err.problem_type(), "unauthorized", "{err}");
        assert!(err.detail().contains("no acmeIdentifier"), "{err}");
    }

    #[tokio::test]
    async fn a_non_critical_extension_is_unauthorized() {
        let mut responder = Responder::new(vec![dns_san("alpn.test")], key_auth_digest());
        responder.critical = false;
        let err = run(responder, name()).await.unwrap_err();
        assert_eq!(err.problem_type(), "unauthorized", "{err}");
        assert!(err.detail().contains("not critical"), "{err}");
    }

    #[tokio::test]
    async fn a_wrong_digest_is_an_incorrect_response() {
        let mut digest = key_auth_digest();
        digest[31] ^= 1;
        let responder = Responder::new(vec![dns_san("alpn.test")], digest);
        let err = run(responder, name()).await.unwrap_err();
        assert_eq!(err.problem_type(), "incorrectResponse", "{err}");
    }

    #[tokio::test]
    async fn two_sans_or_the_wrong_san_are_unauthorized() {
        let two = Responder::new(
            vec![dns_san("alpn.test"), dns_san("other.test")],
            key_auth_digest(),
        );
        let err = run(two, name()).await.unwrap_err();
        assert_eq!(err.problem_type(), "unauthorized", "{err}");
        assert!(err.detail().contains("2 subjectAltName"), "{err}");

        let wrong = Responder::new(vec![dns_san("other.test")], key_auth_digest());
        let err = run(wrong, name()).await.unwrap_err();
        assert_eq!(err.problem_type(), "unauthorized", "{err}");
        assert!(!err.detail().contains("other.test"), "{err}");

        // A DNS SAN spelling the address is not the IP identifier.
        let spelled = Responder::new(vec![dns_san("127.0.0.1")], key_auth_digest());
        let err = run(spelled, Target::Ip(loopback())).await.unwrap_err();
        assert_eq!(err.problem_type(), "unauthorized", "{err}");
    }

    #[tokio::test]
    async fn a_plain_tcp_server_is_a_tls_problem() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while let Ok((mut stream, _)) = listener.accept().await {
                let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        let v = validator(&["127.0.0.1"], 80, port, None, SECOND);
        let err = v
            .validate(
                ChallengeType::TlsAlpn01,
                &Target::Ip(loopback()),
                TOKEN,
                KEY_AUTH,
            )
            .await
            .unwrap_err();
        assert_eq!(err.problem_type(), "tls", "{err}");
        server.abort();
    }

    #[test]
    fn the_extension_value_must_be_exactly_the_octet_string() {
        use rcgen::{CertificateParams, CustomExtension, KeyPair};
        use rustls_pki_types::CertificateDer;

        let digest = key_auth_digest();
        let mut content = vec![0x04, 0x20];
        content.extend_from_slice(&digest);
        let mut trailing = content.clone();
        trailing.push(0);
        let mut bare = digest.to_vec();
        bare.push(0);
        for (value, ok) in [
            (content, true),
            (trailing, false),
            (bare, false),
            (vec![0x04, 0x00], false),
        ] {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(vec!["alpn.test".to_string()]).unwrap();
            let mut ext = CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 31], value);
            ext.set_criticality(true);
            params.custom_extensions = vec![ext];
            let cert = params.self_signed(&key).unwrap();
            let der = CertificateDer::from(cert.der().to_vec());
            let result = super::check_certificate(&der, &name(), &digest);
            assert_eq!(result.is_ok(), ok, "{result:?}");
        }
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        assert!(matches!(
            super::check_certificate(&garbage, &name(), &digest),
            Err(super::TlsAlpnError::Certificate)
        ));
    }
}
