//! Relying-party checks for agentca certificates.
//!
//! A [`Verifier`] decides whether a peer's certificate identifies an agent this service
//! trusts:
//!
//! 1. the chain leads to one of the [`TrustAnchors`] (rustls-webpki path building, with the
//!    client- or server-authentication usage asked for), inside every validity window;
//! 2. the leaf is an agent certificate: not a CA, exactly one URI SAN, and that URI a
//!    canonical [`SpiffeId`];
//! 3. the ID matches one of the expected IDs or [`IdPattern`]s (trust domain exactly,
//!    `*` for one path segment, a final `**` for any depth);
//! 4. it is not revoked, per the [`Revocation`] policy: OCSP (RFC 6960, delegated or
//!    issuer-signed responses, cached per issuer and serial until nextUpdate) or a CRL (given,
//!    or fetched and cached until nextUpdate), with a [`FailurePolicy`] for when no answer can
//!    be had.
//!
//! Every refusal is an [`Error`] variant that says exactly why.
//!
//! # Synchronous and asynchronous checks
//!
//! [`Verifier::verify_chain`] never touches the network: revocation comes from the cache, and
//! without a cached answer the failure policy decides (and a background fetch starts, so the
//! next check finds one). The rustls verifiers ([`Verifier::client_cert_verifier`],
//! [`Verifier::server_cert_verifier`]) are built on it, since rustls calls them synchronously
//! inside the handshake. [`Verifier::verify`] fetches a missing answer (bounded by the
//! timeout) and caches it.
//!
//! # A tokio-rustls server that admits only agents of one team
//!
//! [`Verifier::acceptor`] puts the two together: the handshake checks chain, identity and any
//! cached status; the acceptor then completes the revocation check before handing over the
//! connection, so a fail-closed policy does not refuse an agent's first connection only because
//! its status was not cached yet.
//!
//! ```no_run
//! use agentca_verify::{IdPattern, Revocation, TrustAnchors, Verifier};
//! use rustls::pki_types::{CertificateDer, PrivateKeyDer};
//!
//! async fn serve(
//!     root_pem: &[u8],
//!     chain: Vec<CertificateDer<'static>>,
//!     key: PrivateKeyDer<'static>,
//! ) -> Result<(), Box<dyn std::error::Error>> {
//!     let verifier = Verifier::builder(TrustAnchors::from_pem_or_der(root_pem)?)
//!         .expect_id(IdPattern::parse("spiffe://example.org/agent/team/*")?)
//!         .revocation(Revocation::ocsp("http://127.0.0.1:8080/ocsp"))
//!         .build()?;
//!     let acceptor = verifier.acceptor(|tls| tls.with_single_cert(chain, key))?;
//!
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
//!     loop {
//!         let (tcp, _) = listener.accept().await?;
//!         let acceptor = acceptor.clone();
//!         tokio::spawn(async move {
//!             match acceptor.accept(tcp).await {
//!                 Ok((_stream, agent)) => println!("{} connected", agent.spiffe_id),
//!                 Err(refused) => eprintln!("refused: {refused}"),
//!             }
//!         });
//!     }
//! }
//! ```
//!
//! A server configured by other means can use the verifier alone:
//! `ServerConfig::builder().with_client_cert_verifier(verifier.client_cert_verifier())`.
//!
//! # An agent calling such a service
//!
//! ```no_run
//! # fn f(verifier: agentca_verify::Verifier,
//! #      chain: Vec<rustls::pki_types::CertificateDer<'static>>,
//! #      key: rustls::pki_types::PrivateKeyDer<'static>) -> Result<(), rustls::Error> {
//! // `verifier` expects the service's SPIFFE ID; the DNS name connected to is not checked.
//! let config = rustls::ClientConfig::builder()
//!     .dangerous()
//!     .with_custom_certificate_verifier(verifier.server_cert_verifier())
//!     .with_client_auth_cert(chain, key)?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod anchors;
mod cache;
mod chain;
mod clock;
mod crl;
mod error;
mod http;
mod ocsp;
mod paths;
mod pattern;
mod revocation;
mod signature;
mod spiffe;
mod tls;
mod verifier;

#[cfg(test)]
mod test_pki;
#[cfg(test)]
mod test_server;
#[cfg(test)]
mod tests;

pub use anchors::{TrustAnchors, read_certificates};
pub use chain::Usage;
pub use clock::{Clock, SystemClock};
pub use error::{Error, RevocationReason};
pub use pattern::IdPattern;
pub use revocation::{
    CrlSource, FailurePolicy, OcspSource, Revocation, RevocationSource, RevocationStatus,
};
pub use spiffe::{MAX_LEN as MAX_SPIFFE_ID_LEN, SpiffeId};
pub use tls::{AgentAcceptor, AgentClientCertVerifier, AgentServerCertVerifier};
pub use verifier::{Builder, Serial, VerifiedAgent, Verifier};
