//! From an identifier to a connected socket: syntax, address policy, one lookup, one
//! connection to an address from that lookup.

use std::net::{IpAddr, SocketAddr};

use tokio::net::TcpStream;

use super::address::{AddressPolicy, Refused};
use super::error::{self, ValidationFailure};
use super::record::ValidationRecord;
use super::{Inner, Target};

/// Refuses identifiers no validation may proceed for: a DNS name that is not a name (it
/// would otherwise reach a URL or a query), or an IP identifier the address policy refuses.
pub(super) fn check(target: &Target, policy: &AddressPolicy) -> Result<(), ValidationFailure> {
    match target {
        Target::Ip(ip) => policy.check(*ip).map_err(error::refused_identifier),
        Target::Dns(name) => {
            let bare = name.strip_prefix("*.").unwrap_or(name);
            if is_dns_name(bare) {
                Ok(())
            } else {
                Err(error::malformed_identifier())
            }
        }
    }
}

/// Lowercase LDH labels (underscores tolerated, as DNS itself does), 1–63 octets each, at
/// most 253 in all, no trailing dot.
fn is_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
}

/// The host a connection is made to: the identifier, or a redirect's host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Host {
    Name(String),
    Ip(IpAddr),
}

impl Host {
    pub(super) fn of(target: &Target) -> Self {
        match target {
            Target::Dns(name) => Self::Name(name.clone()),
            Target::Ip(ip) => Self::Ip(*ip),
        }
    }

    pub(super) fn hostname(&self) -> String {
        match self {
            Self::Name(name) => name.clone(),
            Self::Ip(ip) => ip.to_string(),
        }
    }
}

/// Resolves `host` once (an IP host is its own answer), records what came back, and keeps
/// the allowed addresses: the first IPv6 and the first IPv4 one, in that order (a v6 failure
/// falls back to v4, as RFC 8305 suggests, without a second lookup).
pub(super) async fn addresses(
    inner: &Inner,
    host: &Host,
    record: &mut ValidationRecord,
) -> Result<Vec<IpAddr>, ValidationFailure> {
    let resolved = match host {
        Host::Ip(ip) => vec![*ip],
        Host::Name(name) => inner.resolver.addresses(name).await?,
    };
    record.addresses_resolved = resolved.clone();
    let mut first_refusal: Option<Refused> = None;
    let mut allowed = Vec::new();
    for ip in resolved {
        match inner.policy.check(ip) {
            Ok(()) => allowed.push(ip),
            Err(refused) => {
                first_refusal.get_or_insert(refused);
            }
        }
    }
    let v6 = allowed.iter().find(|ip| ip.is_ipv6()).copied();
    let v4 = allowed.iter().find(|ip| ip.is_ipv4()).copied();
    let chosen: Vec<IpAddr> = v6.into_iter().chain(v4).collect();
    match (chosen.is_empty(), first_refusal) {
        (false, _) => Ok(chosen),
        (true, Some(refused)) => Err(refused.into()),
        (true, None) => Err(error::no_usable_address(&host.hostname())),
    }
}

/// Connects to the first of `candidates` that accepts, recording the address used.
pub(super) async fn connect(
    inner: &Inner,
    candidates: &[IpAddr],
    port: u16,
    record: &mut ValidationRecord,
) -> Result<(TcpStream, IpAddr), ValidationFailure> {
    let mut last_error = None;
    for ip in candidates {
        record.address_used = Some(*ip);
        let addr = SocketAddr::new(*ip, port);
        match inner.counters.connect_target(addr).await {
            Ok(stream) => return Ok((stream, *ip)),
            Err(err) => last_error = Some((addr, err)),
        }
    }
    Err(match last_error {
        Some((addr, err)) => error::connect_failed(addr, &err),
        None => error::no_usable_address("target"),
    })
}

/// The reverse-mapping name of `ip` (RFC 8738 §6: the tls-alpn-01 SNI for IP identifiers).
pub(super) fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        IpAddr::V6(v6) => {
            let mut name = String::with_capacity(72);
            for byte in v6.octets().iter().rev() {
                name.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            name.push_str("ip6.arpa");
            name
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn dns_names_are_checked_for_syntax() {
        for ok in ["a.test", "xn--bcher-kva.example", "_acme.a-b.test", "a"] {
            assert!(is_dns_name(ok), "{ok}");
        }
        let long = format!("{}.test", "a".repeat(64));
        for bad in [
            "",
            "a..test",
            "a.test.",
            "A.test",
            "a/b.test",
            "a@b.test",
            "a b.test",
            "-a.test",
            "a-.test",
            "a.test:80",
            long.as_str(),
        ] {
            assert!(!is_dns_name(bad), "{bad}");
        }
    }

    #[test]
    fn reverse_names_follow_rfc_8738() {
        assert_eq!(
            reverse_name("1.2.3.4".parse().unwrap()),
            "4.3.2.1.in-addr.arpa"
        );
        assert_eq!(
            reverse_name("2001:db8::1".parse().unwrap()),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
    }
}
