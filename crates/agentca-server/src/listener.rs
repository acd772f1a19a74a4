//! Accept loops: connection limits, timeouts, TLS, and draining at shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::metrics::{Listener, ListenerLabels, Metrics};

/// Per-connection limits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnLimits {
    /// Request head (and TLS handshake) must arrive within this.
    pub(crate) header_timeout: Duration,
    /// Open connections at once.
    pub(crate) max_connections: usize,
    /// Time in-flight requests get at shutdown.
    pub(crate) grace: Duration,
}

/// Largest request head buffered per connection; an OCSP GET URL is a few hundred bytes.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// One listening socket and what it serves.
pub(crate) struct Endpoint {
    pub(crate) listener: TcpListener,
    pub(crate) router: Router,
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) label: Listener,
}

/// Accepts until `stop` turns true, then stops accepting and gives open connections
/// `limits.grace` to finish their requests.
pub(crate) async fn serve(
    endpoint: Endpoint,
    limits: ConnLimits,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let Endpoint {
        listener,
        router,
        tls,
        label,
    } = endpoint;
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        // Waiting for a permit before accepting leaves excess clients in the kernel's queue
        // instead of holding sockets (and memory) for them.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = crate::scheduler::stopped(&mut stop) => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, listener = label.as_str(), "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::scheduler::stopped(&mut stop) => break,
        };
        let watcher = graceful.watcher();
        let router = router.clone();
        let tls = tls.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _open = OpenConnection::new(metrics, label);
            handle(stream, peer, router, tls, limits, watcher).await;
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = label.as_str(),
            "requests still in flight after the shutdown grace period; closing them"
        );
    }
}

async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    tls: Option<TlsAcceptor>,
    limits: ConnLimits,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let _ = stream.set_nodelay(true);
    // The client's address, for handlers that record who asked (refusals in the audit log).
    let router = router.map_request(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    });
    let service = TowerToHyperService::new(router);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    let result = match tls {
        None => {
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            watcher.watch(conn).await
        }
        Some(acceptor) => {
            let handshake = tokio::time::timeout(limits.header_timeout, acceptor.accept(stream));
            let stream = match handshake.await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!("TLS handshake timed out");
                    return;
                }
            };
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            watcher.watch(conn).await
        }
    };
    if let Err(e) = result {
        // Timeouts, resets and malformed requests end here; none concern the service.
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Counts a connection in `http_connections_open` while it lives.
struct OpenConnection {
    metrics: Arc<Metrics>,
    label: Listener,
}

impl OpenConnection {
    fn new(metrics: Arc<Metrics>, label: Listener) -> Self {
        metrics
            .connections_open
            .get_or_create(&ListenerLabels { listener: label })
            .inc();
        Self { metrics, label }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.metrics
            .connections_open
            .get_or_create(&ListenerLabels {
                listener: self.label,
            })
            .dec();
    }
}
