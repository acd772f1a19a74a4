//! The one DNS resolver every validation uses, and the counted sockets beneath it.
//!
//! http-01 and tls-alpn-01 look a name up here once and then connect to an address from that
//! answer; nothing downstream resolves again, so the address the policy checked is the one
//! connected to (a second lookup would let a rebinding name swap in a refused address). The
//! cache is off for the same reason: the server's answer is what counts, every time.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::{RuntimeProvider, TokioRuntimeProvider};
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::{Name, RData};
use hickory_resolver::{Resolver, ResolverBuilder};
use tokio::net::TcpStream;

use super::error::ValidationError;

/// Counts every outbound socket the validator opens, DNS included, so tests can assert
/// that a refused target never got as far as a socket.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Sockets of every kind: DNS (UDP and TCP) and connections to validation targets.
    pub(crate) all: AtomicU64,
    /// Connections to validation targets only.
    pub(crate) targets: AtomicU64,
}

impl Counters {
    /// Connects to a validation target, counting the attempt.
    pub(crate) async fn connect_target(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        self.all.fetch_add(1, Ordering::Relaxed);
        self.targets.fetch_add(1, Ordering::Relaxed);
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// hickory's Tokio runtime with every socket counted.
#[derive(Clone)]
struct CountingRuntime {
    inner: TokioRuntimeProvider,
    counters: Arc<Counters>,
}

impl RuntimeProvider for CountingRuntime {
    type Handle = <TokioRuntimeProvider as RuntimeProvider>::Handle;
    type Timer = <TokioRuntimeProvider as RuntimeProvider>::Timer;
    type Udp = <TokioRuntimeProvider as RuntimeProvider>::Udp;
    type Tcp = <TokioRuntimeProvider as RuntimeProvider>::Tcp;

    fn create_handle(&self) -> Self::Handle {
        self.inner.create_handle()
    }

    fn connect_tcp(
        &self,
        server_addr: SocketAddr,
        bind_addr: Option<SocketAddr>,
        timeout: Option<Duration>,
    ) -> Pin<Box<dyn Send + Future<Output = Result<Self::Tcp, io::Error>>>> {
        self.counters.all.fetch_add(1, Ordering::Relaxed);
        self.inner.connect_tcp(server_addr, bind_addr, timeout)
    }

    fn bind_udp(
        &self,
        local_addr: SocketAddr,
        server_addr: SocketAddr,
    ) -> Pin<Box<dyn Send + Future<Output = Result<Self::Udp, io::Error>>>> {
        self.counters.all.fetch_add(1, Ordering::Relaxed);
        self.inner.bind_udp(local_addr, server_addr)
    }
}

/// A name the validator could not turn into addresses or records.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResolveError {
    /// The identifier is not a name DNS can carry.
    #[error("{0:?} is not a valid DNS name")]
    InvalidName(String),
    /// The lookup itself failed: NXDOMAIN, SERVFAIL, timeout.
    #[error("DNS problem: {reason} looking up {record_type} for {name}")]
    Lookup {
        name: String,
        record_type: &'static str,
        reason: String,
    },
    /// Both lookups succeeded without a single address.
    #[error("DNS problem: no A or AAAA records found for {name}")]
    NoAddresses { name: String },
}

/// What a lookup of one record type came back with, in words that repeat nothing the
/// DNS server chose except a response code.
pub(crate) enum LookupFailure {
    NoRecords,
    Failed(String),
}

fn describe(err: &NetError) -> LookupFailure {
    match err {
        e if e.is_nx_domain() => LookupFailure::Failed("NXDOMAIN".into()),
        NetError::Dns(DnsError::NoRecordsFound(_)) => LookupFailure::NoRecords,
        NetError::Dns(DnsError::ResponseCode(code)) => LookupFailure::Failed(code.to_string()),
        NetError::Timeout => LookupFailure::Failed("timeout".into()),
        other => {
            tracing::debug!(error = %other, "DNS lookup failed");
            LookupFailure::Failed("lookup failed".into())
        }
    }
}

/// Most addresses kept from one answer; more add nothing but memory.
const MAX_ADDRESSES: usize = 32;
/// Most TXT records examined from one answer.
pub(crate) const MAX_TXT_RECORDS: usize = 64;

/// The validator's resolver.
#[derive(Clone)]
pub(crate) struct DnsResolver {
    inner: Resolver<CountingRuntime>,
}

impl DnsResolver {
    /// A resolver for `nameservers` (UDP, falling back to TCP for truncated answers), or the
    /// system's configuration when that is empty. `timeout` bounds each query.
    pub(crate) fn new(
        nameservers: &[SocketAddr],
        timeout: Duration,
        counters: Arc<Counters>,
    ) -> Result<Self, ValidationError> {
        let runtime = CountingRuntime {
            inner: TokioRuntimeProvider::default(),
            counters,
        };
        let mut builder: ResolverBuilder<CountingRuntime> = if nameservers.is_empty() {
            Resolver::builder(runtime).map_err(|e| ValidationError::Resolver(e.to_string()))?
        } else {
            let servers = nameservers
                .iter()
                .map(|addr| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = addr.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = addr.port();
                    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                })
                .collect();
            Resolver::builder_with_config(ResolverConfig::from_name_servers(servers), runtime)
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.cache_size = 0;
        opts.use_hosts_file = ResolveHosts::Never;
        opts.timeout = timeout;
        opts.attempts = 1;
        // Names are always queried fully qualified; no search list applies.
        opts.ndots = 0;
        let inner = builder
            .build()
            .map_err(|e| ValidationError::Resolver(e.to_string()))?;
        Ok(Self { inner })
    }

    fn fqdn(name: &str) -> Result<Name, ResolveError> {
        let mut fqdn = Name::from_ascii(name)
            .map_err(|_| ResolveError::InvalidName(name.to_owned()))?
            .to_lowercase();
        fqdn.set_fqdn(true);
        Ok(fqdn)
    }

    /// A and AAAA for `name`, queried once each, in parallel.
    pub(crate) async fn addresses(&self, name: &str) -> Result<Vec<IpAddr>, ResolveError> {
        let fqdn = Self::fqdn(name)?;
        let (v4, v6) = tokio::join!(
            self.inner.ipv4_lookup(fqdn.clone()),
            self.inner.ipv6_lookup(fqdn)
        );
        let mut addresses = Vec::new();
        let mut failure = None;
        for (result, record_type) in [(v4, "A"), (v6, "AAAA")] {
            match result {
                Ok(lookup) => addresses.extend(
                    lookup
                        .answers()
                        .iter()
                        .filter_map(|record| match &record.data {
                            RData::A(a) => Some(IpAddr::V4(a.0)),
                            RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                            _ => None,
                        })
                        .take(MAX_ADDRESSES),
                ),
                Err(err) => {
                    if let LookupFailure::Failed(reason) = describe(&err) {
                        failure.get_or_insert(ResolveError::Lookup {
                            name: name.to_owned(),
                            record_type,
                            reason,
                        });
                    }
                }
            }
        }
        addresses.dedup();
        match (addresses.is_empty(), failure) {
            (false, _) => Ok(addresses),
            (true, Some(failure)) => Err(failure),
            (true, None) => Err(ResolveError::NoAddresses {
                name: name.to_owned(),
            }),
        }
    }

    /// The TXT records at `name`, each as its character-strings joined (RFC 8555 §8.4).
    pub(crate) async fn txt(&self, name: &str) -> Result<Vec<Vec<u8>>, LookupFailure> {
        let fqdn = Self::fqdn(name).map_err(|e| LookupFailure::Failed(e.to_string()))?;
        match self.inner.txt_lookup(fqdn).await {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::TXT(txt) => Some(txt.txt_data.concat()),
                    _ => None,
                })
                .take(MAX_TXT_RECORDS)
                .collect()),
            Err(err) => Err(describe(&err)),
        }
    }
}
