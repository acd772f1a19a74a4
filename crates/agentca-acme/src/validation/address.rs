//! Which addresses the validator may connect to.
//!
//! A validator that connects wherever DNS points is a server-side request forgery tool: a
//! requester who controls a name can aim it at the CA's own loopback services or its private
//! network. Every address is checked here before a socket is opened, and an address that
//! embeds an IPv4 address (mapped, compatible, NAT64) is judged by the address it reaches.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// A CIDR range such as `10.0.0.0/8`, or a single address such as `127.0.0.2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpRange {
    network: IpAddr,
    prefix: u8,
}

/// Why a string is not an [`IpRange`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpRangeParseError {
    /// The part before the `/` is not an IP address.
    #[error("{0:?} is not an IP address")]
    Address(String),
    /// The prefix length is not a number within the address family's width.
    #[error("{0:?} is not a valid prefix length")]
    Prefix(String),
    /// Bits beyond the prefix are set, so the range is probably not what was meant.
    #[error("{0} has bits set beyond its prefix length")]
    HostBits(String),
}

impl IpRange {
    /// The range of `prefix` leading bits of `network`; `None` if the prefix is too long or
    /// `network` has bits set beyond it.
    pub fn new(network: IpAddr, prefix: u8) -> Option<Self> {
        let width = width(network);
        if prefix > width || (bits(network) & !mask(prefix, width)) != 0 {
            return None;
        }
        Some(Self { network, prefix })
    }

    /// Whether `ip` lies in this range. Families never match each other: an IPv4 range does
    /// not contain an IPv4-mapped IPv6 address (the policy unwraps those itself).
    pub fn contains(&self, ip: IpAddr) -> bool {
        if ip.is_ipv4() != self.network.is_ipv4() {
            return false;
        }
        let mask = mask(self.prefix, width(ip));
        bits(ip) & mask == bits(self.network)
    }
}

impl FromStr for IpRange {
    type Err = IpRangeParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| IpRangeParseError::Address(addr.to_owned()))?;
        let prefix = match prefix {
            None => width(network),
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width(network))
                .ok_or_else(|| IpRangeParseError::Prefix(p.to_owned()))?,
        };
        Self::new(network, prefix).ok_or_else(|| IpRangeParseError::HostBits(s.to_owned()))
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn width(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn mask(prefix: u8, width: u8) -> u128 {
    let all = if width == 32 {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    };
    match u32::from(width - prefix) {
        128 => 0,
        shift => all & (all << shift),
    }
}

/// An address the policy refuses, with the name of the range it falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// The address as it was given (not the IPv4 address it may embed).
    pub address: IpAddr,
    /// The special-purpose range, e.g. "loopback".
    pub range: &'static str,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "address {} is not allowed ({})",
            self.address, self.range
        )
    }
}

/// Special-purpose IPv4 ranges (RFC 6890 and its updates) no public validation target lives in.
const REFUSED_V4: &[(Ipv4Addr, u8, &str)] = &[
    (
        Ipv4Addr::new(0, 0, 0, 0),
        8,
        "unspecified, \"this network\"",
    ),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private, RFC 1918"),
    (
        Ipv4Addr::new(100, 64, 0, 0),
        10,
        "shared address space, RFC 6598",
    ),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
    (Ipv4Addr::new(169, 254, 0, 0), 16, "link-local"),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private, RFC 1918"),
    (Ipv4Addr::new(192, 0, 0, 0), 24, "IETF protocol assignments"),
    (Ipv4Addr::new(192, 0, 2, 0), 24, "documentation"),
    (Ipv4Addr::new(192, 88, 99, 0), 24, "6to4 relay anycast"),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "private, RFC 1918"),
    (Ipv4Addr::new(198, 18, 0, 0), 15, "benchmarking"),
    (Ipv4Addr::new(198, 51, 100, 0), 24, "documentation"),
    (Ipv4Addr::new(203, 0, 113, 0), 24, "documentation"),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast"),
    (
        Ipv4Addr::new(240, 0, 0, 0),
        4,
        "reserved, or limited broadcast",
    ),
];

/// Special-purpose IPv6 ranges. Ranges that embed an IPv4 address and can reach it
/// (::ffff:0:0/96, 64:ff9b::/96) are not here: they are judged by the embedded address.
const REFUSED_V6: &[(Ipv6Addr, u8, &str)] = &[
    (Ipv6Addr::UNSPECIFIED, 128, "unspecified"),
    (Ipv6Addr::LOCALHOST, 128, "loopback"),
    // Deprecated (RFC 4291 §2.5.5.1); refused outright rather than judged by the embedded address.
    (
        Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0),
        96,
        "IPv4-compatible IPv6",
    ),
    (
        Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0),
        48,
        "local-use NAT64, RFC 8215",
    ),
    (
        Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0),
        64,
        "discard-only",
    ),
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        23,
        "IETF protocol assignments",
    ),
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        "documentation",
    ),
    (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16, "6to4"),
    (
        Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
        20,
        "documentation",
    ),
    (
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        7,
        "unique-local",
    ),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, "link-local"),
    (
        Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),
        10,
        "site-local (deprecated)",
    ),
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, "multicast"),
];

/// NAT64 well-known prefix (RFC 6052 §2.1): the last 32 bits are the IPv4 address reached.
const NAT64_WELL_KNOWN: Ipv6Addr = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0);

fn special_range(ip: IpAddr) -> Option<&'static str> {
    let hit = |network: IpAddr, prefix: u8| IpRange { network, prefix }.contains(ip);
    match ip {
        IpAddr::V4(_) => REFUSED_V4
            .iter()
            .find(|(net, prefix, _)| hit(IpAddr::V4(*net), *prefix))
            .map(|(_, _, name)| *name),
        IpAddr::V6(_) => REFUSED_V6
            .iter()
            .find(|(net, prefix, _)| hit(IpAddr::V6(*net), *prefix))
            .map(|(_, _, name)| *name),
    }
}

/// The IPv4 address a packet to `ip` actually reaches, for the IPv6 forms that carry one.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let nat64 = IpRange {
        network: IpAddr::V6(NAT64_WELL_KNOWN),
        prefix: 96,
    };
    if nat64.contains(IpAddr::V6(ip)) {
        let [.., a, b, c, d] = ip.octets();
        return Some(Ipv4Addr::new(a, b, c, d));
    }
    None
}

/// The refused special-purpose ranges, less the operator's allowed ones.
#[derive(Clone, Debug, Default)]
pub struct AddressPolicy {
    allow: Vec<IpRange>,
}

impl AddressPolicy {
    /// A policy that lets `allow` through even where it overlaps a refused range.
    pub fn new(allow: Vec<IpRange>) -> Self {
        Self { allow }
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|range| range.contains(ip))
    }

    /// Whether the validator may connect to `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refused> {
        if self.allowed(ip) {
            return Ok(());
        }
        let refuse = |range| Refused { address: ip, range };
        if let Some(range) = special_range(ip) {
            return Err(refuse(range));
        }
        if let IpAddr::V6(v6) = ip
            && let Some(v4) = embedded_v4(v6)
            && !self.allowed(IpAddr::V4(v4))
            && let Some(range) = special_range(IpAddr::V4(v4))
        {
            return Err(refuse(range));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_parse_and_match() {
        let r: IpRange = "10.0.0.0/8".parse().unwrap();
        assert!(r.contains(ip("10.255.1.2")));
        assert!(!r.contains(ip("11.0.0.0")));
        assert!(!r.contains(ip("::ffff:10.0.0.1")));
        let single: IpRange = "127.0.0.2".parse().unwrap();
        assert!(single.contains(ip("127.0.0.2")));
        assert!(!single.contains(ip("127.0.0.3")));
        let all: IpRange = "::/0".parse().unwrap();
        assert!(all.contains(ip("2001:db8::1")));
        assert!(!all.contains(ip("1.2.3.4")));
        let v4all: IpRange = "0.0.0.0/0".parse().unwrap();
        assert!(v4all.contains(ip("8.8.8.8")));
        assert_eq!(r.to_string(), "10.0.0.0/8");
    }

    #[test]
    fn bad_ranges_are_refused() {
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "x",
            "10.0.0.0/",
            "1.2.3.4/-1",
        ] {
            assert!(bad.parse::<IpRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn special_ranges_are_refused_in_every_spelling() {
        let policy = AddressPolicy::default();
        for refused in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "0.0.0.0",
            "0.1.2.3",
            "::",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.169.254",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "224.0.0.1",
            "239.255.255.250",
            "ff02::1",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.1",
            "198.51.100.1",
            "203.0.113.1",
            "2001:db8::1",
            "3fff::1",
            "198.18.0.1",
            "198.19.255.255",
            "2001:2::1",
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::8.8.8.8",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::192.168.0.1",
            "64:ff9b:1::1",
            "2002:7f00:1::",
            "fec0::1",
            "100::1",
        ] {
            let err = policy.check(ip(refused)).expect_err(refused);
            assert_eq!(err.address, ip(refused));
            assert!(err.to_string().contains(&ip(refused).to_string()));
        }
    }

    #[test]
    fn public_addresses_pass() {
        let policy = AddressPolicy::default();
        for ok in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            policy.check(ip(ok)).expect(ok);
        }
    }

    #[test]
    fn allow_list_overrides_refusal() {
        let policy = AddressPolicy::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "127.0.0.2".parse().unwrap(),
        ]);
        policy.check(ip("10.20.30.40")).unwrap();
        policy.check(ip("127.0.0.2")).unwrap();
        policy.check(ip("::ffff:127.0.0.2")).unwrap();
        policy.check(ip("64:ff9b::a00:1")).unwrap();
        assert!(policy.check(ip("127.0.0.1")).is_err());
        assert!(policy.check(ip("::ffff:127.0.0.3")).is_err());
        assert!(policy.check(ip("192.168.0.1")).is_err());
    }
}
