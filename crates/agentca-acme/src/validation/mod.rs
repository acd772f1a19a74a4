//! Challenge validation: what the CA does to check http-01, dns-01 (RFC 8555 §8.3, §8.4) and
//! tls-alpn-01 (RFC 8737), for DNS names and IP addresses (RFC 8738).
//!
//! The validator talks to hosts the requester chose, so it is written for hostile peers:
//!
//! - every address is checked against [`address`]'s policy before a socket is opened, and a
//!   name is resolved exactly once per connection, so the address checked is the address used;
//! - one overall timeout bounds resolution, connection, handshake, headers and body;
//! - responses are read up to a fixed size and never repeated in a failure detail or a log.

mod address;
mod dns01;
mod error;
mod http01;
mod record;
mod resolve;
mod target;
mod tlsalpn01;

#[cfg(test)]
mod testutil;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub use address::{AddressPolicy, IpRange, IpRangeParseError, Refused};
pub use error::{ProblemKind, ValidationError, ValidationFailure};
pub use record::ValidationRecord;

use resolve::{Counters, DnsResolver};

/// How the validator reaches validation targets.
#[derive(Clone, Debug)]
pub struct ValidationConfig {
    /// Ranges allowed even though the policy refuses them (loopback, RFC 1918, ...): a private
    /// CA legitimately validates hosts on its own network. Empty for a public-facing CA.
    pub allow: Vec<IpRange>,
    /// The port http-01 fetches from and redirects must stay on (RFC 8555 §8.3: 80).
    pub http01_port: u16,
    /// The port tls-alpn-01 connects to (RFC 8737 §3: 443).
    pub tls_alpn01_port: u16,
    /// DNS servers to query over UDP (TCP for truncated answers); empty means the system's
    /// resolv.conf.
    pub nameservers: Vec<SocketAddr>,
    /// The most one validation may take, from the first DNS query to the last byte read.
    pub timeout: Duration,
    /// The most of an http-01 response body that is read.
    pub max_response_bytes: usize,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            http01_port: 80,
            tls_alpn01_port: 443,
            nameservers: Vec::new(),
            timeout: Duration::from_secs(10),
            max_response_bytes: 4096,
        }
    }
}

/// The ACME identifier being validated.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// A DNS name, lowercase, possibly a wildcard (`*.example.org`, dns-01 only).
    Dns(String),
    /// An IP address (RFC 8738).
    Ip(IpAddr),
}

/// A challenge type the validator knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChallengeType {
    /// RFC 8555 §8.3.
    Http01,
    /// RFC 8555 §8.4.
    Dns01,
    /// RFC 8737.
    TlsAlpn01,
}

impl ChallengeType {
    /// The challenge's `type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http01 => "http-01",
            Self::Dns01 => "dns-01",
            Self::TlsAlpn01 => "tls-alpn-01",
        }
    }

    /// Whether this challenge can prove control of `target`: IP identifiers have no DNS zone
    /// (RFC 8738 §7), and a wildcard names no single host to connect to, so it is proven
    /// through the zone alone (as RFC 8555 §7.1.3's wildcard handling is commonly applied).
    pub fn supports(self, target: &Target) -> bool {
        match target {
            Target::Ip(_) => matches!(self, Self::Http01 | Self::TlsAlpn01),
            Target::Dns(name) if name.starts_with("*.") => self == Self::Dns01,
            Target::Dns(_) => true,
        }
    }
}

/// Runs challenge validations. Cheap to clone; clones share the resolver and the counters.
#[derive(Clone)]
pub struct Validator {
    inner: Arc<Inner>,
}

struct Inner {
    config: ValidationConfig,
    policy: AddressPolicy,
    resolver: DnsResolver,
    counters: Arc<Counters>,
    tls: Arc<rustls::ClientConfig>,
}

impl Validator {
    /// A validator for `config`; fails if the resolver or TLS cannot be set up.
    pub fn new(config: ValidationConfig) -> Result<Self, ValidationError> {
        if config.timeout.is_zero() {
            return Err(ValidationError::Config("timeout must be positive"));
        }
        if config.max_response_bytes == 0 {
            return Err(ValidationError::Config(
                "max_response_bytes must be positive",
            ));
        }
        let counters = Arc::new(Counters::default());
        let resolver = DnsResolver::new(&config.nameservers, config.timeout, counters.clone())?;
        Ok(Self {
            inner: Arc::new(Inner {
                policy: AddressPolicy::new(config.allow.clone()),
                resolver,
                counters,
                tls: tlsalpn01::client_config()?,
                config,
            }),
        })
    }

    /// Validates `challenge` for `target`. `token` is the challenge's token and
    /// `key_authorization` the token joined to the account key's thumbprint (RFC 8555 §8.1).
    pub async fn validate(
        &self,
        challenge: ChallengeType,
        target: &Target,
        token: &str,
        key_authorization: &str,
    ) -> Result<ValidationRecord, ValidationFailure> {
        let inner = &*self.inner;
        if !challenge.supports(target) {
            return Err(ValidationFailure::new(
                ProblemKind::ServerInternal,
                format!("{} cannot validate this identifier", challenge.as_str()),
            ));
        }
        // The token becomes a URL path segment: only its base64url alphabet may get there.
        if token.is_empty()
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ValidationFailure::new(
                ProblemKind::ServerInternal,
                "challenge token is not base64url",
            ));
        }
        target::check(target, &inner.policy)?;

        let mut record = ValidationRecord::default();
        let outcome = tokio::time::timeout(inner.config.timeout, async {
            match challenge {
                ChallengeType::Http01 => {
                    http01::validate(inner, target, token, key_authorization, &mut record).await
                }
                ChallengeType::Dns01 => {
                    dns01::validate(inner, target, key_authorization, &mut record).await
                }
                ChallengeType::TlsAlpn01 => {
                    tlsalpn01::validate(inner, target, key_authorization, &mut record).await
                }
            }
        })
        .await;
        match outcome {
            Ok(Ok(())) => Ok(record),
            Ok(Err(failure)) => Err(failure.with_record(record)),
            Err(_) => Err(error::timed_out(challenge, inner.config.timeout).with_record(record)),
        }
    }

    /// Every outbound socket opened so far: DNS queries (UDP and TCP) and connections to
    /// validation targets. Tests use it to show a refused target cost no socket at all.
    pub fn connections_attempted(&self) -> u64 {
        self.inner.counters.all.load(Ordering::Relaxed)
    }

    /// Connections to validation targets only (what `connections_attempted` counts, less
    /// DNS).
    pub fn target_connections_attempted(&self) -> u64 {
        self.inner.counters.targets.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use agentca_testkit::dns::FakeDns;

    use super::testutil::{HttpServer, KEY_AUTH, Reply, TOKEN, validator};
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn challenge_types_name_themselves_and_know_their_identifiers() {
        let ip = Target::Ip("127.0.0.1".parse().unwrap());
        let name = Target::Dns("a.test".into());
        let wildcard = Target::Dns("*.a.test".into());
        assert_eq!(ChallengeType::Http01.as_str(), "http-01");
        assert_eq!(ChallengeType::Dns01.as_str(), "dns-01");
        assert_eq!(ChallengeType::TlsAlpn01.as_str(), "tls-alpn-01");
        assert!(ChallengeType::Http01.supports(&ip));
        assert!(ChallengeType::TlsAlpn01.supports(&ip));
        assert!(!ChallengeType::Dns01.supports(&ip));
        for challenge in [
            ChallengeType::Http01,
            ChallengeType::Dns01,
            ChallengeType::TlsAlpn01,
        ] {
            assert!(challenge.supports(&name));
            assert_eq!(
                challenge.supports(&wildcard),
                challenge == ChallengeType::Dns01
            );
        }
    }

    #[test]
    fn validator_is_shareable() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<Validator>();
    }

    #[tokio::test]
    async fn refused_ip_identifiers_open_no_socket() {
        let v = validator(&[], 80, 443, None, SECOND);
        for ip in [
            "127.0.0.1",
            "127.0.0.2",
            "::1",
            "0.0.0.0",
            "::",
            "10.0.0.1",
            "172.16.0.1",
            "192.168.0.1",
            "100.64.0.1",
            "169.254.169.254",
            "fe80::1",
            "fc00::1",
            "fd00::1",
            "224.0.0.1",
            "ff02::1",
            "255.255.255.255",
            "192.0.2.1",
            "198.51.100.1",
            "203.0.113.1",
            "2001:db8::1",
            "198.18.0.1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
        ] {
            let target = Target::Ip(ip.parse().unwrap());
            for challenge in [ChallengeType::Http01, ChallengeType::TlsAlpn01] {
                let err = v
                    .validate(challenge, &target, TOKEN, KEY_AUTH)
                    .await
                    .expect_err(ip);
                assert_eq!(err.problem_type(), "rejectedIdentifier", "{ip}: {err}");
                assert!(err.detail().contains("not allowed"), "{ip}: {err}");
            }
        }
        assert_eq!(v.connections_attempted(), 0);
    }

    #[tokio::test]
    async fn allow_list_lets_a_private_address_through() {
        let server = HttpServer::start(|_, _| Reply::ok(KEY_AUTH)).await;
        let refused = validator(&[], server.port(), 443, None, SECOND);
        let target = Target::Ip("127.0.0.1".parse().unwrap());
        let err = refused
            .validate(ChallengeType::Http01, &target, TOKEN, KEY_AUTH)
            .await
            .unwrap_err();
        assert_eq!(err.problem_type(), "rejectedIdentifier");
        assert_eq!(server.accepted(), 0);

        for allow in ["127.0.0.0/8", "127.0.0.1"] {
            let allowed = validator(&[allow], server.port(), 443, None, SECOND);
            allowed
                .validate(ChallengeType::Http01, &target, TOKEN, KEY_AUTH)
                .await
                .unwrap();
        }
        assert_eq!(server.accepted(), 2);
    }

    #[tokio::test]
    async fn names_resolving_only_to_refused_addresses_are_not_connected() {
        let dns = FakeDns::start();
        dns.set_a(
            "private.test",
            vec!["127.0.0.3".parse().unwrap(), "::1".parse().unwrap()],
        );
        let v = validator(&["127.0.0.1"], 80, 443, Some(&dns), SECOND);
        let target = Target::Dns("private.test".into());
        for challenge in [ChallengeType::Http01, ChallengeType::TlsAlpn01] {
            let err = v
                .validate(challenge, &target, TOKEN, KEY_AUTH)
                .await
                .unwrap_err();
            assert_eq!(err.problem_type(), "connection");
            assert!(err.detail().contains("127.0.0.3"), "{err}");
            assert!(err.detail().contains("not allowed"), "{err}");
            let record = err.record().unwrap();
            assert_eq!(record.addresses_resolved.len(), 2);
            assert_eq!(record.address_used, None);
        }
        assert_eq!(v.target_connections_attempted(), 0);
        assert!(v.connections_attempted() > 0, "DNS queries are counted");
    }

    #[tokio::test]
    async fn malformed_names_and_tokens_are_refused_before_any_socket() {
        let v = validator(&[], 80, 443, None, SECOND);
        for name in ["a/b.test", "A.test", "a.test.", "a..test", "a@b.test", ""] {
            let err = v
                .validate(
                    ChallengeType::Http01,
                    &Target::Dns(name.into()),
                    TOKEN,
                    KEY_AUTH,
                )
                .await
                .unwrap_err();
            assert_eq!(err.problem_type(), "rejectedIdentifier", "{name:?}");
        }
        let target = Target::Dns("a.test".into());
        for token in ["", "../x", "a/b", "a?b", "a b"] {
            let err = v
                .validate(ChallengeType::Http01, &target, token, KEY_AUTH)
                .await
                .unwrap_err();
            assert_eq!(err.problem_type(), "serverInternal", "{token:?}");
        }
        let err = v
            .validate(
                ChallengeType::Http01,
                &Target::Dns("*.a.test".into()),
                TOKEN,
                KEY_AUTH,
            )
            .await
            .unwrap_err();
        assert_eq!(err.problem_type(), "serverInternal");
        assert_eq!(v.connections_attempted(), 0);
    }

    #[tokio::test]
    async fn nxdomain_for_http01_is_a_dns_problem() {
        let dns = FakeDns::start();
        let v = validator(&["127.0.0.1"], 80, 443, Some(&dns), SECOND);
        let err = v
            .validate(
                ChallengeType::Http01,
                &Target::Dns("missing.test".into()),
                TOKEN,
                KEY_AUTH,
            )
            .await
            .unwrap_err();
        assert_eq!(err.problem_type(), "dns", "{err}");
        assert!(err.detail().contains("NXDOMAIN"), "{err}");
        assert_eq!(v.target_connections_attempted(), 0);
    }

    #[test]
    fn a_validator_builds_outside_an_async_runtime() {
        Validator::new(ValidationConfig {
            nameservers: vec!["127.0.0.1:9".parse().unwrap()],
            ..Default::default()
        })
        .unwrap();
        // The system's resolver configuration, read but not queried.
        Validator::new(ValidationConfig::default()).unwrap();
    }

    #[test]
    fn bad_configuration_is_refused() {
        let zero = ValidationConfig {
            timeout: Duration::ZERO,
            ..Default::default()
        };
        assert!(Validator::new(zero).is_err());
        let defaults = ValidationConfig::default();
        assert_eq!(defaults.http01_port, 80);
        assert_eq!(defaults.tls_alpn01_port, 443);
        assert_eq!(defaults.timeout, Duration::from_secs(10));
        assert_eq!(defaults.max_response_bytes, 4096);
    }
}
