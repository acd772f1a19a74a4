//! agentca's network service (design §5, §6): the HTTP listener relying parties use (OCSP,
//! CRLs, CA certificates), the HTTPS listener enrollment protocols mount on, `/healthz`,
//! `/metrics`, and the scheduler that keeps status information fresh.
//!
//! ```text
//! let server = Server::new(ca, authority, protection, ServerConfig::default())?;
//! let hooks = server.hooks();            // for the admin socket: issued / revoked / publish_crl
//! let addrs = server.bind().await?;      // port 0 resolves here
//! server.run(shutdown_signal).await?;    // until the signal; drains, stops jobs, commits
//! ```
//!
//! Roles stay apart as in the core: the `http` module parses and maps answers to HTTP, the
//! `ocsp` module decides when a request may cost a signature and otherwise serves pre-signed
//! bytes, the core's `StatusResponder` and `crl::publish` sign, and the store records.
//!
//! # How `/ocsp` answers
//!
//! - One CertID without a nonce (the RFC 5019 profile, the fast path): a pre-signed response,
//!   no signature and no store access. Responses are signed at start for every unexpired
//!   certificate (in the background, while serving), at issuance and revocation through
//!   [`Hooks`], and re-signed before half of their validity.
//! - A nonce (RFC 8954): echoed in a freshly signed response — a signature per request, the
//!   price of replay protection. Fresh signatures (nonces, several CertIDs, responses not yet
//!   pre-signed) come from a budget of [`ServerConfig::ocsp_signing_rate`] per second; beyond
//!   it a one-CertID request gets its pre-signed response without the nonce (RFC 5019 §4 and
//!   RFC 8954 §2.1 let clients accept that) and others get `tryLater`.
//! - A serial of our issuer without a stored certificate: `unauthorized`, unsigned (RFC 5019
//!   §2.2.3 allows it for responders working from pre-produced responses). A signed `unknown`
//!   would let anyone make the responder sign for every random serial sent (REV-1). A serial is
//!   `good` only if the store holds its certificate.
//! - Another issuer: `unauthorized`; anything malformed (including more than 64 CertIDs, a
//!   nonce outside 1–32 bytes, a hash other than SHA-1/SHA-256): `malformedRequest`. Every
//!   OCSP answer is HTTP 200; bodies over [`ServerConfig::max_body`] get 413.
//!
//! # Start-up cost
//!
//! Every unexpired certificate gets two OCSP responses (SHA-1 and SHA-256 CertIDs) signed in
//! the background, on about half of the cores, while requests are served (until its response
//! is ready, a certificate is signed for on demand). The list is read from the store once,
//! with each certificate's DER. Priming 100,000 certificates takes about 10 s of one core
//! in a release build (`tests/server/priming.rs`, ignored test).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod budget;
mod cache;
mod certs;
mod config;
mod crl;
mod error;
mod headers;
mod health;
mod hooks;
mod http;
mod listener;
mod metrics;
mod ocsp;
mod peers;
mod rotation;
mod scheduler;
mod split_body;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use agentca_core::ca::Ca;
use agentca_core::issuer::Authority;
use agentca_core::keyfile::Protection;
use axum::Router;
use axum::body::Bytes;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use config::ServerConfig;
pub use error::ServerError;
pub use hooks::Hooks;
pub use rotation::finish_interrupted_rotation;

use crate::certs::TlsName;
use crate::crl::CrlPublisher;
use crate::health::Health;
use crate::listener::{ConnLimits, Endpoint};
use crate::metrics::{Listener, Metrics};
use crate::ocsp::OcspService;
use crate::scheduler::{Jobs, Maintenance, Scheduler};
use crate::tls::TlsIdentity;

/// See [`Server::with_https_wrapper`].
type HttpsWrapper = Box<dyn FnOnce(Router) -> Router + Send>;

/// The addresses the listeners are bound to (port 0 resolved).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoundAddresses {
    /// The HTTPS listener.
    pub https: SocketAddr,
    /// The plain HTTP listener.
    pub http: SocketAddr,
}

/// The service: built by [`Server::new`], bound by [`Server::bind`], run by [`Server::run`].
pub struct Server {
    config: ServerConfig,
    authority: Arc<Authority>,
    metrics: Arc<Metrics>,
    ocsp: Arc<OcspService>,
    crl: Arc<CrlPublisher>,
    tls: Arc<TlsIdentity>,
    maintenance: Arc<Maintenance>,
    hooks: Arc<Hooks>,
    shared: Arc<http::Shared>,
    extra_http: Router,
    extra_https: Router,
    https_wrapper: Option<HttpsWrapper>,
    bound: Option<(TcpListener, TcpListener)>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Loads everything the service needs and prepares it; blocks for a few signatures and
    /// store flushes, so call it before serving (or from a blocking thread).
    ///
    /// - `ca`: the opened CA (store, audit log, policies, data directory);
    /// - `authority`: its issuing authority (issuing key loaded);
    /// - `protection`: how the CA's key files are protected. The OCSP responder key is loaded
    ///   with it (after completing an interrupted rotation, see
    ///   [`finish_interrupted_rotation`]), and rotated responder keys are written with it.
    ///
    /// At the end of `new`, the HTTPS certificate has been issued (recorded and audited like
    /// every certificate), its OCSP responses pre-signed, and a first CRL published.
    pub fn new(
        ca: Arc<Ca>,
        authority: Arc<Authority>,
        protection: Protection,
        config: ServerConfig,
    ) -> Result<Self, ServerError> {
        config.validate()?;
        if config.ocsp_validity < time::Duration::hours(8) {
            tracing::warn!(
                validity = %config.ocsp_validity,
                "OCSP responses valid for less than 8 hours (BR §4.9.10 asks for 8 hours to 10 days)"
            );
        }
        let metrics = Arc::new(Metrics::new());
        metrics.track_issuing_signatures(authority.clone());

        let responder = rotation::load(&ca, &authority, &protection, config.ocsp_validity)?;
        let ocsp = Arc::new(OcspService::new(
            authority.clone(),
            responder,
            config.ocsp_validity,
            config.ocsp_signing_rate,
            metrics.clone(),
        )?);

        let names = tls_names(&config, &ca.config().base_url)?;
        let (tls, tls_record) = TlsIdentity::issue(&authority, names)?;
        let tls = Arc::new(tls);
        metrics.tls_not_after.set(tls.not_after().unix_timestamp());
        ocsp.presign(&tls_record);

        let crl = Arc::new(CrlPublisher::new(
            authority.clone(),
            config.crl_validity,
            metrics.clone(),
        ));
        crl.publish()?;

        let issuing = authority.ca().cert_der().to_vec();
        let root = ca.cert_der("root.pem")?;
        let ca_pem = format!(
            "{}{}",
            headers::pem_lf("CERTIFICATE", &issuing),
            headers::pem_lf("CERTIFICATE", &root)
        );
        let shared = Arc::new(http::Shared {
            ocsp: ocsp.clone(),
            crl: crl.clone(),
            health: Health::new(ca.clone(), metrics.clone()),
            metrics: metrics.clone(),
            ca_pem: Bytes::from(ca_pem),
            ca_der: Bytes::from(issuing),
        });
        let maintenance = Arc::new(Maintenance::new(
            ca,
            authority.clone(),
            protection,
            ocsp.clone(),
            tls.clone(),
            metrics.clone(),
        ));
        let hooks = Arc::new(Hooks {
            ocsp: ocsp.clone(),
            crl: crl.clone(),
            metrics: metrics.clone(),
            maintenance: maintenance.clone(),
        });
        Ok(Self {
            config,
            authority,
            metrics,
            ocsp,
            crl,
            tls,
            maintenance,
            hooks,
            shared,
            extra_http: Router::new(),
            extra_https: Router::new(),
            https_wrapper: None,
            bound: None,
        })
    }

    /// Adds routes to the HTTPS listener (ACME). They get the same limits, metrics and
    /// timeouts as the built-in routes. The router must have its state applied and no
    /// fallback, and its paths must not clash with `/healthz` (axum refuses either when the
    /// listeners are built in [`Server::run`]).
    pub fn with_https_routes(mut self, routes: Router) -> Self {
        self.extra_https = self.extra_https.merge(routes);
        self
    }

    /// Wraps the whole HTTPS router, outside the limits every request passes: for headers a
    /// protocol needs on *every* answer, including the 413 and 408 the limits give before any
    /// route runs (ACME's `Replay-Nonce`, RFC 8555 §6.5).
    pub fn with_https_wrapper(
        mut self,
        wrap: impl FnOnce(Router) -> Router + Send + 'static,
    ) -> Self {
        self.https_wrapper = Some(Box::new(wrap));
        self
    }

    /// Adds routes to the plain HTTP listener (SCEP); same rules as
    /// [`Server::with_https_routes`], and no clash with `/ocsp`, `/crl`, `/crl.pem`, `/ca.pem`,
    /// `/ca.crt` or `/metrics`.
    pub fn with_http_routes(mut self, routes: Router) -> Self {
        self.extra_http = self.extra_http.merge(routes);
        self
    }

    /// The hooks operator commands call while the server runs.
    pub fn hooks(&self) -> Arc<Hooks> {
        self.hooks.clone()
    }

    /// The configuration in force.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Binds both listeners and returns their addresses (with port 0 resolved). Nothing is
    /// accepted before [`Server::run`].
    pub async fn bind(&mut self) -> Result<BoundAddresses, ServerError> {
        let https = TcpListener::bind(self.config.listen)
            .await
            .map_err(|e| ServerError::io(format!("listen on {}", self.config.listen), e))?;
        let http = TcpListener::bind(self.config.http_listen)
            .await
            .map_err(|e| ServerError::io(format!("listen on {}", self.config.http_listen), e))?;
        let addresses = BoundAddresses {
            https: local_addr(&https)?,
            http: local_addr(&http)?,
        };
        self.bound = Some((https, http));
        Ok(addresses)
    }

    /// Serves until `shutdown` resolves. Then: stops accepting, gives in-flight requests
    /// [`ServerConfig::shutdown_grace`] to finish, stops the scheduler, and commits the store
    /// and the audit log. Binds first if [`Server::bind`] was not called.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        if self.bound.is_none() {
            self.bind().await?;
        }
        let Some((https, http)) = self.bound.take() else {
            return Err(ServerError::Task("listeners not bound".into()));
        };
        let limits = ConnLimits {
            header_timeout: self.config.header_timeout,
            max_connections: self.config.max_connections,
            grace: self.config.shutdown_grace,
        };
        let acceptor = TlsAcceptor::from(self.tls.server_config()?);
        let endpoints = [
            Endpoint {
                listener: http,
                router: http::http_router(self.shared.clone(), &self.config, self.extra_http),
                tls: None,
                label: Listener::Http,
            },
            Endpoint {
                listener: https,
                router: {
                    let router =
                        http::https_router(self.shared.clone(), &self.config, self.extra_https);
                    match self.https_wrapper.take() {
                        Some(wrap) => wrap(router),
                        None => router,
                    }
                },
                tls: Some(acceptor),
                label: Listener::Https,
            },
        ];

        let peer_watch = if self.authority.store().is_shared() {
            let store = self.authority.shared_store();
            let since = {
                let store = store.clone();
                tokio::task::spawn_blocking(move || peers::PeerWatch::start_point(store.as_ref()))
                    .await
                    .map_err(|e| ServerError::Task(e.to_string()))??
            };
            Some(peers::PeerWatch {
                store,
                ocsp: self.ocsp.clone(),
                crl: self.crl.clone(),
                interval: self.config.revocation_poll,
                since,
            })
        } else {
            None
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let halt = Arc::new(AtomicBool::new(false));
        let scheduler = Scheduler::start(
            Jobs {
                ocsp: self.ocsp.clone(),
                crl: self.crl.clone(),
                maintenance: self.maintenance.clone(),
                crl_interval: self.config.crl_interval,
                crl_debounce: self.config.crl_debounce,
                peer_watch,
            },
            stop_rx.clone(),
            halt.clone(),
        );
        let listeners: Vec<_> = endpoints
            .into_iter()
            .map(|endpoint| {
                tokio::spawn(listener::serve(
                    endpoint,
                    limits,
                    self.metrics.clone(),
                    stop_rx.clone(),
                ))
            })
            .collect();
        tracing::info!("serving");

        shutdown.await;
        tracing::info!("shutting down: draining requests");
        halt.store(true, Ordering::Relaxed);
        let _ = stop_tx.send(true);
        for task in listeners {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "a listener failed");
            }
        }
        scheduler.join(self.config.shutdown_grace).await;

        let authority = self.authority.clone();
        tokio::task::spawn_blocking(move || {
            authority.store().commit()?;
            authority.audit().sync()?;
            Ok::<(), ServerError>(())
        })
        .await
        .map_err(|e| ServerError::Task(e.to_string()))??;
        tracing::info!("stopped");
        Ok(())
    }
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, ServerError> {
    listener
        .local_addr()
        .map_err(|e| ServerError::io("read the bound address", e))
}

/// The configured names plus the base URL's host, parsed and without repeats.
fn tls_names(config: &ServerConfig, base_url: &str) -> Result<Vec<TlsName>, ServerError> {
    let mut names = Vec::new();
    let base_host = config::base_url_host(base_url);
    for name in config
        .tls_names
        .iter()
        .map(String::as_str)
        .chain(base_host.as_deref())
    {
        let name = TlsName::parse(name)?;
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
}
