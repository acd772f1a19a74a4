//! mTLS with tokio-rustls: a relying service admitting agents through the verifiers, and an
//! agent checking the service by SPIFFE ID.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;
use crate::test_pki::{Issued, Leaf, Pki, TestCa, agent, now};
use crate::test_server::TestServer;
use crate::{IdPattern, Revocation, RevocationStatus};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn key(issued: &Issued) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.key.serialize_der()))
}

fn chain(pki: &Pki, leaf: &Issued) -> Vec<CertificateDer<'static>> {
    vec![leaf.cert.clone(), pki.issuing.cert.clone()]
}

/// An agent's TLS client: presents `agent`, expects the service `service_id`.
fn client(pki: &Pki, agent: &Issued, service_id: &str) -> TlsConnector {
    let verifier = Verifier::builder(pki.root.anchors())
        .expect_id(IdPattern::parse(service_id).unwrap())
        .build()
        .unwrap();
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier.server_cert_verifier())
        .with_client_auth_cert(chain(pki, agent), key(agent))
        .unwrap();
    TlsConnector::from(Arc::new(config))
}

/// What one connection did: the client's reply (the ID the server saw, or an error) and the
/// server's verdict.
struct Outcome<T> {
    client: Result<String, String>,
    server: T,
}

/// Runs one connection: the server side is `accept`, which answers with the peer's ID.
async fn connect<T, F, Fut>(connector: &TlsConnector, accept: F) -> Outcome<T>
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send,
    T: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        accept(tcp).await
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    // Any name: the service is identified by its SPIFFE ID, not by this.
    let name = ServerName::try_from("service.invalid").unwrap();
    let client = async {
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"hello").await.map_err(|e| e.to_string())?;
        let mut reply = String::new();
        tls.read_to_string(&mut reply)
            .await
            .map_err(|e| e.to_string())?;
        if reply.is_empty() {
            return Err("closed without a reply".into());
        }
        Ok(reply)
    }
    .await;
    Outcome {
        client,
        server: server.await.unwrap(),
    }
}

/// The crate error inside a refused handshake, when it travels as `OtherError`, or the rustls
/// certificate error otherwise.
fn handshake_refusal(e: &Error) -> Result<&Error, CertificateError> {
    let Error::Handshake(io) = e else {
        panic!("not a handshake error: {e}");
    };
    let rustls_error = io
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .unwrap_or_else(|| panic!("not a rustls error: {io}"));
    match rustls_error {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            Ok(inner.downcast_ref::<Error>().unwrap())
        }
        rustls::Error::InvalidCertificate(other) => Err(other.clone()),
        other => panic!("not a certificate refusal: {other:?}"),
    }
}

struct Service {
    pki: Pki,
    cert: Issued,
}

impl Service {
    fn new() -> Self {
        let pki = Pki::new();
        let cert = pki.agent("/service/api");
        Self { pki, cert }
    }

    fn acceptor(&self, verifier: &Verifier) -> AgentAcceptor {
        let chain = chain(&self.pki, &self.cert);
        let key = key(&self.cert);
        verifier
            .acceptor(|tls| tls.with_single_cert(chain, key))
            .unwrap()
    }
}

async fn serve_once(acceptor: AgentAcceptor, tcp: TcpStream) -> Result<VerifiedAgent, Error> {
    let (mut tls, agent) = acceptor.accept(tcp).await?;
    let mut hello = [0u8; 5];
    tls.read_exact(&mut hello).await.unwrap();
    tls.write_all(agent.spiffe_id.as_str().as_bytes())
        .await
        .unwrap();
    tls.shutdown().await.unwrap();
    Ok(agent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acceptor_admits_matching_agents_and_refuses_others_and_revoked_ones() {
    let service = Service::new();
    let pki = &service.pki;
    // The OCSP responder says the victim is revoked; everyone else is good.
    let victim = pki.agent("/agent/team/victim");
    let victim_serial = victim.serial.clone();
    let responder_key = &pki.responder.key;
    let revoked = crate::ocsp::test_responses::Spec {
        status: crate::ocsp::test_responses::Status::Revoked(now(), Some(1)),
        ..crate::ocsp::test_responses::Spec::new(
            &pki.issuing.cert,
            &victim_serial,
            responder_key,
            &pki.responder.cert,
            now(),
        )
    }
    .build();
    let alice = pki.agent("/agent/team/alice");
    let good = crate::ocsp::test_responses::Spec::new(
        &pki.issuing.cert,
        &alice.serial,
        responder_key,
        &pki.responder.cert,
        now(),
    )
    .build();
    let alice_serial = alice.serial.clone();
    let responder = TestServer::start("/ocsp", move |body| {
        // The request ends with the serial (the CertID's last field; no extensions).
        if body.ends_with(&victim_serial) {
            (200, revoked.clone())
        } else if body.ends_with(&alice_serial) {
            (200, good.clone())
        } else {
            (200, vec![0x30, 0x03, 0x0a, 0x01, 0x06])
        }
    })
    .await;

    let verifier = Verifier::builder(pki.root.anchors())
        .expect_id(IdPattern::parse(&agent("/agent/team/*")).unwrap())
        .revocation(Revocation::ocsp(&responder.url))
        .build()
        .unwrap();
    let acceptor = service.acceptor(&verifier);
    let service_id = agent("/service/api");

    // A matching agent: admitted, its status fetched after the handshake.
    let a = acceptor.clone();
    let outcome = connect(&client(pki, &alice, &service_id), move |tcp| {
        serve_once(a, tcp)
    })
    .await;
    let admitted = outcome.server.unwrap();
    assert_eq!(admitted.spiffe_id.as_str(), agent("/agent/team/alice"));
    assert!(matches!(admitted.revocation, RevocationStatus::Good { .. }));
    assert_eq!(outcome.client.unwrap(), agent("/agent/team/alice"));

    // An agent outside the pattern: refused in the handshake.
    let mallory = pki.agent("/agent/other/mallory");
    let a = acceptor.clone();
    let outcome = connect(&client(pki, &mallory, &service_id), move |tcp| {
        serve_once(a, tcp)
    })
    .await;
    let err = outcome.server.unwrap_err();
    assert!(
        matches!(handshake_refusal(&err), Ok(Error::IdentityMismatch { .. })),
        "{err}"
    );
    assert!(outcome.client.is_err());

    // The revoked agent: admitted by the handshake (nothing cached), refused once the answer
    // is fetched; the second time the cached answer refuses it in the handshake.
    let a = acceptor.clone();
    let outcome = connect(&client(pki, &victim, &service_id), move |tcp| {
        serve_once(a, tcp)
    })
    .await;
    assert!(
        matches!(outcome.server, Err(Error::Revoked { .. })),
        "{:?}",
        outcome.server.err()
    );
    assert!(outcome.client.is_err(), "the revoked agent got a reply");
    let a = acceptor.clone();
    let outcome = connect(&client(pki, &victim, &service_id), move |tcp| {
        serve_once(a, tcp)
    })
    .await;
    let err = outcome.server.unwrap_err();
    assert_eq!(
        handshake_refusal(&err).err(),
        Some(CertificateError::Revoked),
        "{err}"
    );

    // An agent of another CA.
    let stranger = TestCa::root("Other Root").intermediate("Other Issuing CA");
    let intruder = stranger.issue(&Leaf::agent("/agent/team/intruder"));
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(
            Verifier::builder(pki.root.anchors())
                .accept_any_id()
                .build()
                .unwrap()
                .server_cert_verifier(),
        )
        .with_client_auth_cert(
            vec![intruder.cert.clone(), stranger.cert.clone()],
            key(&intruder),
        )
        .unwrap();
    let a = acceptor.clone();
    let outcome = connect(&TlsConnector::from(Arc::new(config)), move |tcp| {
        serve_once(a, tcp)
    })
    .await;
    let err = outcome.server.unwrap_err();
    assert_eq!(
        handshake_refusal(&err).err(),
        Some(CertificateError::UnknownIssuer),
        "{err}"
    );
}

#[tokio::test]
async fn a_plain_rustls_server_with_the_client_cert_verifier_and_a_crl() {
    let service = Service::new();
    let pki = &service.pki;
    let alice = pki.agent("/agent/team/alice");
    let victim = pki.agent("/agent/team/victim");
    let crl = pki.issuing.crl(
        &[(&victim.serial, Some(rcgen::RevocationReason::KeyCompromise))],
        now() - time::Duration::minutes(1),
        now() + time::Duration::hours(1),
    );
    let verifier = Verifier::builder(pki.root.anchors())
        .expect_id(IdPattern::parse(&agent("/agent/team/*")).unwrap())
        .revocation(Revocation::crl(crl))
        .build()
        .unwrap();
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier.client_cert_verifier())
        .with_single_cert(chain(pki, &service.cert), key(&service.cert))
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let service_id = agent("/service/api");
    let serve = |acceptor: TlsAcceptor| {
        move |tcp: TcpStream| async move {
            let mut tls = acceptor.accept(tcp).await?;
            let mut hello = [0u8; 5];
            tls.read_exact(&mut hello).await?;
            tls.write_all(b"welcome").await?;
            tls.shutdown().await
        }
    };

    let outcome = connect(&client(pki, &alice, &service_id), serve(acceptor.clone())).await;
    outcome.server.unwrap();
    assert_eq!(outcome.client.unwrap(), "welcome");

    let outcome = connect(&client(pki, &victim, &service_id), serve(acceptor.clone())).await;
    let err = outcome.server.unwrap_err();
    let refusal = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .unwrap();
    assert_eq!(
        refusal,
        &rustls::Error::InvalidCertificate(CertificateError::Revoked)
    );
    assert!(outcome.client.is_err());
}

#[tokio::test]
async fn the_agent_checks_the_service_by_spiffe_id() {
    let service = Service::new();
    let pki = &service.pki;
    let alice = pki.agent("/agent/team/alice");
    let verifier = Verifier::builder(pki.root.anchors())
        .accept_any_id()
        .build()
        .unwrap();
    let acceptor = service.acceptor(&verifier);

    let a = acceptor.clone();
    let outcome = connect(&client(pki, &alice, &agent("/service/*")), move |tcp| {
        serve_once(a, tcp)
    })
    .await;
    assert_eq!(outcome.client.unwrap(), agent("/agent/team/alice"));

    // Expecting another service: the agent refuses the server.
    let a = acceptor.clone();
    let outcome = connect(
        &client(pki, &alice, &agent("/service/billing")),
        move |tcp| serve_once(a, tcp),
    )
    .await;
    let err = outcome.client.unwrap_err();
    assert!(err.contains("IdentityMismatch"), "{err}");
    assert!(outcome.server.is_err());
}
