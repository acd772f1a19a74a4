//! What the server can be told: listeners, names, validity periods, schedules and limits.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::error::ServerError;

/// The server's settings. [`Default`] gives design §6's defaults; the binary fills them from
/// flags, environment and the configuration file.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// HTTPS listener (ACME mounts its routes there). Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Plain HTTP listener: `/ocsp`, `/crl`, `/crl.pem`, `/ca.pem`, `/ca.crt`, `/healthz`,
    /// `/metrics`. Port 0 picks a free port.
    pub http_listen: SocketAddr,
    /// DNS names and IP addresses the HTTPS certificate is issued for. The host of the CA's
    /// base URL is added when missing.
    pub tls_names: Vec<String>,
    /// Validity of OCSP responses (`nextUpdate - thisUpdate`); refreshed before half of it.
    pub ocsp_validity: time::Duration,
    /// Validity of CRLs (`nextUpdate - thisUpdate`).
    pub crl_validity: time::Duration,
    /// A new CRL is published at least this often.
    pub crl_interval: std::time::Duration,
    /// After a revocation, a new CRL is published this long later, so a burst of revocations
    /// makes one CRL.
    pub crl_debounce: std::time::Duration,
    /// Largest accepted request body; larger ones get 413 without being read.
    pub max_body: usize,
    /// A request must be complete (headers, body, handler) within this time, else 408.
    pub request_timeout: std::time::Duration,
    /// A client must send a complete request head within this time of the connection opening
    /// or going idle, and finish a TLS handshake within it, else the connection is closed.
    /// Bounds slow-header (slowloris) clients and idle keep-alive connections alike.
    pub header_timeout: std::time::Duration,
    /// Open connections per listener; further clients wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Signatures per second the OCSP request path may make (for nonces, several CertIDs
    /// and responses not yet pre-signed). Beyond it, a single-CertID request gets the
    /// pre-signed response without its nonce, and others get `tryLater`.
    pub ocsp_signing_rate: u32,
    /// How long in-flight requests may take to finish at shutdown.
    pub shutdown_grace: std::time::Duration,
    /// With a store other nodes write too, how often to ask it for their revocations: the
    /// bound (plus a signature) on how long this node's pre-signed OCSP responses may still
    /// say `good` for a certificate revoked through another node.
    pub revocation_poll: std::time::Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        Self {
            listen: SocketAddr::new(loopback, 8443),
            http_listen: SocketAddr::new(loopback, 8080),
            tls_names: vec!["localhost".into(), "127.0.0.1".into()],
            ocsp_validity: agentca_core::status::DEFAULT_VALIDITY,
            crl_validity: agentca_core::crl::DEFAULT_VALIDITY,
            crl_interval: std::time::Duration::from_secs(3600),
            crl_debounce: std::time::Duration::from_secs(1),
            max_body: 16 * 1024,
            request_timeout: std::time::Duration::from_secs(10),
            header_timeout: std::time::Duration::from_secs(5),
            max_connections: 1024,
            ocsp_signing_rate: 1000,
            shutdown_grace: std::time::Duration::from_secs(10),
            revocation_poll: std::time::Duration::from_secs(2),
        }
    }
}

/// BR §4.9.10 and §7.2: neither OCSP responses nor CRLs may be valid for more than ten days.
const MAX_STATUS_VALIDITY: time::Duration = time::Duration::days(10);

impl ServerConfig {
    /// Checks every value against its allowed range.
    pub fn validate(&self) -> Result<(), ServerError> {
        let fail = |what: String| Err(ServerError::Config(what));
        let minute = time::Duration::minutes(1);
        if self.revocation_poll < std::time::Duration::from_secs(1)
            || self.revocation_poll > std::time::Duration::from_secs(300)
        {
            return fail(format!(
                "revocation_poll {:?} must be between 1 second and 5 minutes",
                self.revocation_poll
            ));
        }
        if self.ocsp_validity < minute || self.ocsp_validity > MAX_STATUS_VALIDITY {
            return fail(format!(
                "OCSP validity {} must be between 1 minute and 10 days",
                self.ocsp_validity
            ));
        }
        if self.crl_validity < minute || self.crl_validity > MAX_STATUS_VALIDITY {
            return fail(format!(
                "CRL validity {} must be between 1 minute and 10 days",
                self.crl_validity
            ));
        }
        // A CRL must be replaced well before it expires, or relying parties see a stale one.
        let half_crl = self.crl_validity.unsigned_abs() / 2;
        if self.crl_interval.is_zero() || self.crl_interval > half_crl {
            return fail(format!(
                "CRL interval {:?} must be positive and at most half the CRL validity ({half_crl:?})",
                self.crl_interval
            ));
        }
        if self.crl_debounce > self.crl_interval {
            return fail("CRL debounce must not exceed the CRL interval".into());
        }
        if self.max_body < 1024 {
            return fail(format!(
                "max body {} bytes is too small for an OCSP request",
                self.max_body
            ));
        }
        for (name, value) in [
            ("request timeout", self.request_timeout),
            ("header timeout", self.header_timeout),
        ] {
            if value.is_zero() {
                return fail(format!("{name} must be positive"));
            }
        }
        if self.max_connections == 0 {
            return fail("max connections must be positive".into());
        }
        if self.ocsp_signing_rate == 0 {
            return fail("OCSP signing rate must be positive".into());
        }
        if self.tls_names.iter().any(|n| n.is_empty()) {
            return fail("empty TLS name".into());
        }
        Ok(())
    }
}

/// The host of a base URL such as `https://ca.example.org:8443/path`, without brackets for
/// IPv6 literals; `None` if the URL has no host.
pub(crate) fn base_url_host(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        ServerConfig::default().validate().unwrap();
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let bad = [
            ServerConfig {
                ocsp_validity: time::Duration::days(11),
                ..Default::default()
            },
            ServerConfig {
                crl_interval: std::time::Duration::from_secs(13 * 3600),
                ..Default::default()
            },
            ServerConfig {
                max_body: 10,
                ..Default::default()
            },
            ServerConfig {
                max_connections: 0,
                ..Default::default()
            },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?}");
        }
    }

    #[test]
    fn host_of_base_urls() {
        for (url, host) in [
            ("http://127.0.0.1:8080", Some("127.0.0.1")),
            ("https://CA.example.org/acme", Some("ca.example.org")),
            ("https://[::1]:8443/", Some("::1")),
            ("http://user@host.example:1", Some("host.example")),
            ("ftp://x", None),
            ("http://", None),
        ] {
            assert_eq!(base_url_host(url).as_deref(), host, "{url}");
        }
    }
}
