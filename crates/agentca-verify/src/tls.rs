//! rustls verifiers built on a [`Verifier`], and an acceptor for tokio-rustls servers.
//!
//! rustls calls verifiers synchronously inside the handshake, so they never wait on the
//! network: they check the chain, the agent profile and identity, and revocation from the cache
//! (see [`Verifier::verify_chain`]). [`AgentAcceptor`] closes the gap for servers: its
//! handshake admits a certificate whose revocation status is not cached yet, and it then runs
//! [`Verifier::verify`] (fetching the answer) before it hands over the connection.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConfig, WantsServerCert};
use rustls::{
    CertificateError, ConfigBuilder, DigitallySignedStruct, DistinguishedName, OtherError,
    SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::chain::Usage;
use crate::clock::offset_date_time;
use crate::error::Error;
use crate::verifier::{Miss, VerifiedAgent, Verifier};

/// A rustls [`ClientCertVerifier`] that requires an agent client certificate accepted by a
/// [`Verifier`] (client-authentication usage).
#[derive(Debug)]
pub struct AgentClientCertVerifier {
    verifier: Verifier,
    subjects: Vec<DistinguishedName>,
    miss: Miss,
}

/// A rustls [`ServerCertVerifier`] for an agent calling a service whose certificate is also an
/// agentca certificate: the service is identified by the SPIFFE ID in its certificate, matched
/// against the [`Verifier`]'s expected IDs, **not** by the DNS name or address connected to
/// (that name only selects the server; rustls still sends it as SNI). Server-authentication
/// usage. A stapled OCSP response, when the server sends one, is checked and cached.
#[derive(Debug)]
pub struct AgentServerCertVerifier {
    verifier: Verifier,
}

impl Verifier {
    /// The rustls client-certificate verifier for a relying service. Without a cached
    /// revocation answer it applies the [`crate::FailurePolicy`] (and starts a background
    /// fetch); prefer [`Verifier::acceptor`] with tokio-rustls, which fetches instead.
    pub fn client_cert_verifier(&self) -> Arc<AgentClientCertVerifier> {
        Arc::new(self.client_verifier(Miss::Policy))
    }

    /// The rustls server-certificate verifier for an agent calling an agentca-identified
    /// service.
    pub fn server_cert_verifier(&self) -> Arc<AgentServerCertVerifier> {
        Arc::new(AgentServerCertVerifier {
            verifier: self.clone(),
        })
    }

    /// A tokio-rustls acceptor requiring agent client certificates. `configure` finishes the
    /// rustls server configuration (certificate, key, ALPN…), e.g.
    /// `|b| b.with_single_cert(chain, key)`.
    pub fn acceptor<F>(&self, configure: F) -> Result<AgentAcceptor, Error>
    where
        F: FnOnce(
            ConfigBuilder<ServerConfig, WantsServerCert>,
        ) -> Result<ServerConfig, rustls::Error>,
    {
        let builder = ServerConfig::builder_with_provider(self.provider().clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::TlsConfig(e.to_string()))?
            .with_client_cert_verifier(Arc::new(self.client_verifier(Miss::Defer)));
        let config = configure(builder).map_err(|e| Error::TlsConfig(e.to_string()))?;
        Ok(AgentAcceptor {
            tls: TlsAcceptor::from(Arc::new(config)),
            verifier: self.clone(),
        })
    }

    fn client_verifier(&self, miss: Miss) -> AgentClientCertVerifier {
        AgentClientCertVerifier {
            verifier: self.clone(),
            subjects: self.anchors().subjects(),
            miss,
        }
    }
}

/// Accepts TLS connections from agents: the handshake checks the chain, the identity and any
/// cached revocation answer; then the revocation status is completed as
/// [`Verifier::verify`] does (fetched when not cached) before the stream is returned.
#[derive(Clone)]
pub struct AgentAcceptor {
    tls: TlsAcceptor,
    verifier: Verifier,
}

impl std::fmt::Debug for AgentAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentAcceptor")
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

impl AgentAcceptor {
    /// Runs the handshake on `io`, then the full check of the client's certificate. On
    /// refusal the connection is dropped and the error says why.
    pub async fn accept<IO>(&self, io: IO) -> Result<(TlsStream<IO>, VerifiedAgent), Error>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let stream = self.tls.accept(io).await.map_err(Error::Handshake)?;
        let agent = {
            let (_, connection) = stream.get_ref();
            let Some((leaf, intermediates)) = connection
                .peer_certificates()
                .and_then(|certs| certs.split_first())
            else {
                return Err(Error::Untrusted("the client sent no certificate".into()));
            };
            self.verifier.verify(leaf, intermediates).await?
        };
        Ok((stream, agent))
    }

    /// The rustls configuration, e.g. to serve it through another TLS front end.
    pub fn config(&self) -> &Arc<ServerConfig> {
        self.tls.config()
    }
}

impl ClientCertVerifier for AgentClientCertVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.subjects
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verifier
            .verify_offline(
                end_entity,
                intermediates,
                offset_date_time(now),
                Usage::ClientAuth,
                &[],
                self.miss,
            )
            .map(|_| ClientCertVerified::assertion())
            .map_err(refusal)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.verifier.provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.verifier.provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.verifier
            .provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl ServerCertVerifier for AgentServerCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier
            .verify_offline(
                end_entity,
                intermediates,
                offset_date_time(now),
                Usage::ServerAuth,
                ocsp_response,
                Miss::Policy,
            )
            .map(|_| ServerCertVerified::assertion())
            .map_err(refusal)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.verifier.provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.verifier.provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.verifier
            .provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The refusal as rustls reports it: the standard certificate errors where TLS has an alert
/// for them (revoked, expired, unknown CA…), and otherwise this crate's error, which the
/// application can recover with `downcast_ref::<agentca_verify::Error>()` on the
/// [`OtherError`].
fn refusal(e: Error) -> rustls::Error {
    tracing::debug!(error = %e, "peer certificate refused");
    let error = match e {
        Error::Revoked { .. } => CertificateError::Revoked,
        Error::Expired { .. } => CertificateError::Expired,
        Error::NotYetValid { .. } => CertificateError::NotValidYet,
        Error::Untrusted(_) => CertificateError::UnknownIssuer,
        Error::MalformedCertificate(_) => CertificateError::BadEncoding,
        Error::WrongUsage(_) => CertificateError::InvalidPurpose,
        Error::RevocationUnavailable(_) => CertificateError::UnknownRevocationStatus,
        other => CertificateError::Other(OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(error)
}

#[cfg(test)]
mod tests;
