//! Issuance policy: which agents may get what, loaded from `policies/*.toml`.
//!
//! A policy file is parsed into typed rules once ("parse, don't validate"); a syntax or
//! semantic error names the file, line and key. At issuance, every check that refuses names
//! the policy, its file and the rule (TOML key), so an operator can find and change it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;
use serde::de::Error as _;
use time::Duration;

use crate::csr::KeyKind;
use crate::error::{Error, Result};
use crate::identity::SpiffeId;
use crate::store::EnrollmentMethod;

/// The shortest certificate lifetime agentca issues (design §2).
pub const MIN_LIFETIME: Duration = Duration::minutes(5);
/// No policy may allow more than this.
pub const MAX_POLICY_LIFETIME: Duration = Duration::days(398);

/// All policies of a CA.
#[derive(Clone, Debug)]
pub struct PolicySet {
    policies: Vec<Policy>,
}

/// One policy file, parsed.
#[derive(Clone, Debug)]
pub struct Policy {
    name: String,
    file: String,
    description: String,
    patterns: Vec<PathPattern>,
    methods: Vec<EnrollmentMethod>,
    default_lifetime: Duration,
    max_lifetime: Duration,
    key_types: Vec<KeyKind>,
    server_auth_always: bool,
    dns: Vec<DnsPattern>,
    ips: Vec<IpNet>,
    rate_limits: RateLimits,
}

/// Rate limits a policy sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimits {
    /// Certificates per agent per hour; 0 = unlimited.
    pub certificates_per_agent_per_hour: u32,
    /// New ACME orders per account per hour; 0 = unlimited.
    pub acme_orders_per_account_per_hour: u32,
    /// New ACME orders per agent per hour, over all its accounts; 0 = unlimited.
    pub acme_orders_per_agent_per_hour: u32,
    /// Failed ACME challenge validations per account per hour; 0 = unlimited.
    pub acme_failed_validations_per_account_per_hour: u32,
    /// Failed ACME challenge validations per agent per hour; 0 = unlimited.
    pub acme_failed_validations_per_agent_per_hour: u32,
}

impl RateLimits {
    /// What a policy without a `[rate_limits]` entry gets: no certificate quota, and ACME
    /// limits that an agent renewing every few hours never meets but a runaway client does.
    pub const DEFAULT: Self = Self {
        certificates_per_agent_per_hour: 0,
        acme_orders_per_account_per_hour: 300,
        acme_orders_per_agent_per_hour: 600,
        acme_failed_validations_per_account_per_hour: 30,
        acme_failed_validations_per_agent_per_hour: 60,
    };
}

impl PolicySet {
    /// Loads every `*.toml` file in `dir`; the policy's name is the file stem.
    pub fn load_dir(dir: &Path) -> Result<Self> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| Error::io(format!("read policy directory {}", dir.display()), e))?;
        let mut files = BTreeMap::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read policy directory", e))?;
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
            files.insert(name.to_owned(), (path.display().to_string(), text));
        }
        let policies = files
            .into_iter()
            .map(|(name, (file, text))| Policy::parse(&name, &file, &text))
            .collect::<Result<Vec<_>>>()?;
        if policies.is_empty() {
            return Err(Error::PolicyFile {
                file: dir.display().to_string(),
                reason: "no *.toml policy files; without a policy nothing can be issued".into(),
            });
        }
        Ok(Self { policies })
    }

    /// A set from already parsed policies (tests, embedded defaults).
    pub fn from_policies(policies: Vec<Policy>) -> Self {
        Self { policies }
    }

    /// All policies, by name.
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// The longest `max_lifetime` of the policies (zero without any): no certificate issued
    /// under them lives longer.
    pub fn longest_max_lifetime(&self) -> Duration {
        self.policies
            .iter()
            .map(Policy::max_lifetime)
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// A policy by name.
    pub fn get(&self, name: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| p.name == name)
    }

    /// The policy governing `agent`: the explicit one if given (it must cover the agent's
    /// path), else the matching policy with the most literal path segments.
    pub fn for_agent(&self, agent: &SpiffeId, explicit: Option<&str>) -> Result<&Policy> {
        if let Some(name) = explicit {
            let policy = self.get(name).ok_or_else(|| Error::PolicyFile {
                file: format!("{name}.toml"),
                reason: format!("agent {agent} names policy {name:?}, which is not loaded"),
            })?;
            if policy.specificity(agent).is_none() {
                return Err(policy.refuse(
                    "agents",
                    format!("path {} matches none of its patterns", agent.path()),
                ));
            }
            return Ok(policy);
        }
        self.policies
            .iter()
            .filter_map(|p| p.specificity(agent).map(|s| (s, p)))
            // max_by_key returns the last maximum; iterate reversed so ties go to the first name.
            .rev()
            .max_by_key(|(s, _)| *s)
            .map(|(_, p)| p)
            .ok_or_else(|| Error::PolicyRefused {
                policy: "(none)".into(),
                file: "policies/".into(),
                rule: "agents".into(),
                reason: format!("no policy covers the path {}", agent.path()),
            })
    }
}

impl Policy {
    /// Parses one policy file. Errors name the file and, where the TOML parser knows it, the
    /// line and key.
    pub fn parse(name: &str, file: &str, text: &str) -> Result<Self> {
        let raw: RawPolicy = toml::from_str(text).map_err(|e| Error::PolicyFile {
            file: file.to_owned(),
            reason: one_line(&e.to_string()),
        })?;
        let invalid = |rule: &str, reason: String| Error::PolicyFile {
            file: file.to_owned(),
            reason: format!("rule {rule}: {reason}"),
        };
        if raw.agents.is_empty() {
            return Err(invalid("agents", "lists no path pattern".into()));
        }
        if raw.methods.is_empty() {
            return Err(invalid("methods", "lists no enrollment method".into()));
        }
        if raw.methods.contains(&EnrollmentMethod::Internal) {
            return Err(invalid(
                "methods",
                "\"internal\" is reserved for the CA's own certificates; use acme, scep or cli"
                    .into(),
            ));
        }
        if raw.key_types.is_empty() {
            return Err(invalid("key_types", "lists no key type".into()));
        }
        let default_lifetime = raw.default_lifetime.0;
        let max_lifetime = raw.max_lifetime.0;
        for (rule, d) in [
            ("default_lifetime", default_lifetime),
            ("max_lifetime", max_lifetime),
        ] {
            if d < MIN_LIFETIME {
                return Err(invalid(rule, "is shorter than the 5m minimum".into()));
            }
            if d > MAX_POLICY_LIFETIME {
                return Err(invalid(rule, "is longer than 398d".into()));
            }
        }
        if default_lifetime > max_lifetime {
            return Err(invalid(
                "default_lifetime",
                "is longer than max_lifetime".into(),
            ));
        }
        if !raw.ekus.iter().any(|e| e == "clientAuth") {
            return Err(invalid(
                "ekus",
                "must include clientAuth (X509-SVID §4.4)".into(),
            ));
        }
        let mut server_auth_always = false;
        for eku in &raw.ekus {
            match eku.as_str() {
                "clientAuth" => {}
                "serverAuth" => server_auth_always = true,
                other => {
                    return Err(invalid(
                        "ekus",
                        format!("{other:?} is not one of clientAuth, serverAuth"),
                    ));
                }
            }
        }
        Ok(Self {
            name: name.to_owned(),
            file: file.to_owned(),
            description: raw.description.unwrap_or_default(),
            patterns: raw.agents,
            methods: raw.methods,
            default_lifetime,
            max_lifetime,
            key_types: raw.key_types,
            server_auth_always,
            dns: raw.dns,
            ips: raw.ips,
            rate_limits: raw.rate_limits.map_or(RateLimits::DEFAULT, |r| RateLimits {
                certificates_per_agent_per_hour: r.certificates_per_agent_per_hour,
                acme_orders_per_account_per_hour: r.acme_orders_per_account_per_hour,
                acme_orders_per_agent_per_hour: r.acme_orders_per_agent_per_hour,
                acme_failed_validations_per_account_per_hour: r
                    .acme_failed_validations_per_account_per_hour,
                acme_failed_validations_per_agent_per_hour: r
                    .acme_failed_validations_per_agent_per_hour,
            }),
        })
    }

    /// The policy's name (its file stem).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file it was loaded from.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The operator's description.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The lifetime a certificate gets when none is requested.
    pub fn default_lifetime(&self) -> Duration {
        self.default_lifetime
    }

    /// The longest lifetime this policy grants.
    pub fn max_lifetime(&self) -> Duration {
        self.max_lifetime
    }

    /// Whether every certificate carries serverAuth (otherwise only those with DNS/IP names).
    pub fn server_auth_always(&self) -> bool {
        self.server_auth_always
    }

    /// Rate limits.
    pub fn rate_limits(&self) -> RateLimits {
        self.rate_limits
    }

    /// Refuses unless `method` may issue under this policy.
    pub fn check_method(&self, method: EnrollmentMethod) -> Result<()> {
        if self.methods.contains(&method) {
            return Ok(());
        }
        Err(self.refuse("methods", format!("enrollment by {method} is not allowed")))
    }

    /// The lifetime to issue: the requested one if within limits, else the default.
    pub fn lifetime(&self, requested: Option<Duration>) -> Result<Duration> {
        let Some(requested) = requested else {
            return Ok(self.default_lifetime);
        };
        if requested < MIN_LIFETIME {
            return Err(self.refuse(
                "max_lifetime",
                format!(
                    "requested lifetime {} is below the 5m minimum",
                    format_duration(requested)
                ),
            ));
        }
        if requested > self.max_lifetime {
            return Err(self.refuse(
                "max_lifetime",
                format!(
                    "requested lifetime {} exceeds the maximum {}",
                    format_duration(requested),
                    format_duration(self.max_lifetime)
                ),
            ));
        }
        Ok(requested)
    }

    /// Refuses keys whose type or size is not listed.
    pub fn check_key(&self, key: KeyKind) -> Result<()> {
        if self.key_types.contains(&key) {
            return Ok(());
        }
        let allowed: Vec<String> = self.key_types.iter().map(ToString::to_string).collect();
        Err(self.refuse(
            "key_types",
            format!(
                "{key} keys are not allowed (allowed: {})",
                allowed.join(", ")
            ),
        ))
    }

    /// Refuses a DNS name unless the agent was given it or the policy pre-authorizes it.
    /// `name` must already be lowercase and syntactically valid.
    pub fn check_dns(&self, name: &str, agent_dns: &[String]) -> Result<()> {
        if agent_dns.iter().any(|d| d == name) || self.dns.iter().any(|p| p.matches(name)) {
            return Ok(());
        }
        Err(self.refuse(
            "dns",
            format!("DNS name {name} is not pre-authorized for this agent"),
        ))
    }

    /// Refuses an IP address unless the policy pre-authorizes it.
    pub fn check_ip(&self, ip: IpAddr) -> Result<()> {
        if self.ips.iter().any(|n| n.contains(ip)) {
            return Ok(());
        }
        Err(self.refuse(
            "ips",
            format!("IP address {ip} is not pre-authorized for this agent"),
        ))
    }

    /// An error naming this policy and `rule`.
    pub fn refuse(&self, rule: &str, reason: String) -> Error {
        Error::PolicyRefused {
            policy: self.name.clone(),
            file: self.file.clone(),
            rule: rule.to_owned(),
            reason,
        }
    }

    /// `None` if no pattern matches; otherwise the best match's literal segment count.
    fn specificity(&self, agent: &SpiffeId) -> Option<usize> {
        let segments: Vec<&str> = agent.segments().collect();
        self.patterns
            .iter()
            .filter(|p| p.matches(&segments))
            .map(PathPattern::literal_segments)
            .max()
    }
}

/// A path pattern: literal segments, `*` for one segment, a final `**` for one or more.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PathPattern {
    segments: Vec<PatternSegment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PatternSegment {
    Literal(String),
    One,
    Rest,
}

impl PathPattern {
    fn parse(s: &str) -> std::result::Result<Self, String> {
        let Some(body) = s.strip_prefix('/') else {
            return Err(format!("pattern {s:?} must start with '/'"));
        };
        let parts: Vec<&str> = body.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            segments.push(match *part {
                "*" => PatternSegment::One,
                "**" if i + 1 == parts.len() => PatternSegment::Rest,
                "**" => return Err(format!("pattern {s:?}: '**' must be the last segment")),
                "" | "." | ".." => {
                    return Err(format!("pattern {s:?} has an empty, '.' or '..' segment"));
                }
                lit if lit
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) =>
                {
                    PatternSegment::Literal(lit.to_owned())
                }
                _ => {
                    return Err(format!(
                        "pattern {s:?} has a character not allowed in a SPIFFE path"
                    ));
                }
            });
        }
        Ok(Self { segments })
    }

    fn matches(&self, path: &[&str]) -> bool {
        let mut i = 0;
        for seg in &self.segments {
            match seg {
                PatternSegment::Rest => return path.len() > i,
                PatternSegment::One if i < path.len() => {}
                PatternSegment::Literal(l) if path.get(i) == Some(&l.as_str()) => {}
                _ => return false,
            }
            i += 1;
        }
        i == path.len()
    }

    fn literal_segments(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| matches!(s, PatternSegment::Literal(_)))
            .count()
    }
}

/// An exact DNS name, or `*.suffix` matching exactly one more label.
#[derive(Clone, Debug, PartialEq, Eq)]
enum DnsPattern {
    Exact(String),
    OneLabel(String),
}

impl DnsPattern {
    fn parse(s: &str) -> std::result::Result<Self, String> {
        let (wild, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        check_dns_name(name).map_err(|e| format!("{s:?}: {e}"))?;
        Ok(if wild {
            Self::OneLabel(format!(".{name}"))
        } else {
            Self::Exact(name.to_owned())
        })
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Self::Exact(n) => n == name,
            Self::OneLabel(suffix) => name
                .strip_suffix(suffix.as_str())
                .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        }
    }
}

/// Checks a DNS name is lowercase LDH labels (RFC 1123), at most 253 bytes.
pub fn check_dns_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err("a DNS name is 1 to 253 characters".into());
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("a DNS label is 1 to 63 characters".into());
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("a DNS name is lowercase letters, digits, '-' and '.'".into());
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a DNS label cannot start or end with '-'".into());
        }
    }
    Ok(())
}

/// An IP network in CIDR notation (a bare address is a /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    fn parse(s: &str) -> std::result::Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?} has an invalid prefix length"))?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        fn masked(bits: u128, prefix: u8, width: u8) -> u128 {
            if prefix == 0 {
                0
            } else {
                bits >> (width - prefix)
            }
        }
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(net).into(), self.prefix, 32)
                    == masked(u32::from(ip).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), self.prefix, 128)
                    == masked(u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    description: Option<String>,
    agents: Vec<PathPattern>,
    methods: Vec<EnrollmentMethod>,
    default_lifetime: Lifetime,
    max_lifetime: Lifetime,
    key_types: Vec<KeyKind>,
    #[serde(default = "default_ekus")]
    ekus: Vec<String>,
    #[serde(default)]
    dns: Vec<DnsPattern>,
    #[serde(default)]
    ips: Vec<IpNet>,
    rate_limits: Option<RawRateLimits>,
}

fn default_ekus() -> Vec<String> {
    vec!["clientAuth".into()]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimits {
    #[serde(default)]
    certificates_per_agent_per_hour: u32,
    #[serde(default = "default_orders_per_account")]
    acme_orders_per_account_per_hour: u32,
    #[serde(default = "default_orders_per_agent")]
    acme_orders_per_agent_per_hour: u32,
    #[serde(default = "default_failures_per_account")]
    acme_failed_validations_per_account_per_hour: u32,
    #[serde(default = "default_failures_per_agent")]
    acme_failed_validations_per_agent_per_hour: u32,
}

fn default_orders_per_account() -> u32 {
    RateLimits::DEFAULT.acme_orders_per_account_per_hour
}

fn default_orders_per_agent() -> u32 {
    RateLimits::DEFAULT.acme_orders_per_agent_per_hour
}

fn default_failures_per_account() -> u32 {
    RateLimits::DEFAULT.acme_failed_validations_per_account_per_hour
}

fn default_failures_per_agent() -> u32 {
    RateLimits::DEFAULT.acme_failed_validations_per_agent_per_hour
}

struct Lifetime(Duration);

macro_rules! deserialize_from_str {
    ($ty:ty, $parse:expr) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(
                d: D,
            ) -> std::result::Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $parse(&s).map_err(D::Error::custom)
            }
        }
    };
}

deserialize_from_str!(PathPattern, PathPattern::parse);
deserialize_from_str!(DnsPattern, DnsPattern::parse);
deserialize_from_str!(IpNet, IpNet::parse);
deserialize_from_str!(Lifetime, |s: &str| parse_duration(s).map(Lifetime));

/// Parses a duration such as `90s`, `15m`, `24h`, `7d` or `1h30m`.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration like 90s, 15m, 24h, 7d or 1h30m");
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: i64 = digits.parse().map_err(|_| bad())?;
        if n > 100_000_000 {
            return Err(bad());
        }
        digits.clear();
        total += match c {
            's' => Duration::seconds(n),
            'm' => Duration::minutes(n),
            'h' => Duration::hours(n),
            'd' => Duration::days(n),
            _ => return Err(bad()),
        };
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

/// Formats a duration the way [`parse_duration`] reads it.
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.whole_seconds();
    if secs <= 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, n) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= n {
            out.push_str(&format!("{}{unit}", secs / n));
            secs %= n;
        }
    }
    out
}

fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "|")
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    fn shipped() -> PolicySet {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
        PolicySet::load_dir(&dir).unwrap()
    }

    #[test]
    fn shipped_policies_parse() {
        let set = shipped();
        let default = set.get("default").unwrap();
        assert_eq!(default.default_lifetime(), Duration::hours(24));
        let strict = set.get("strict").unwrap();
        assert_eq!(strict.max_lifetime(), Duration::hours(1));
        assert!(strict.check_method(EnrollmentMethod::Cli).is_err());
        assert!(strict.check_key(KeyKind::Rsa { bits: 2048 }).is_err());
        strict.check_key(KeyKind::EcdsaP256).unwrap();
        strict
            .check_dns("pay1.payments.internal.example.org", &[])
            .unwrap();
        assert!(
            strict
                .check_dns("a.b.payments.internal.example.org", &[])
                .is_err()
        );
        assert!(
            strict
                .check_dns("payments.internal.example.org", &[])
                .is_err()
        );
        strict.check_ip("10.20.3.4".parse().unwrap()).unwrap();
        assert!(strict.check_ip("10.21.0.1".parse().unwrap()).is_err());
    }

    #[test]
    fn most_specific_policy_wins() {
        let set = shipped();
        let p = set
            .for_agent(&id("spiffe://example.org/agent/payments/p1"), None)
            .unwrap();
        assert_eq!(p.name(), "strict");
        let p = set
            .for_agent(&id("spiffe://example.org/agent/mail/m1"), None)
            .unwrap();
        assert_eq!(p.name(), "default");
        // `/agent/**` needs at least one segment after /agent.
        let err = set
            .for_agent(&id("spiffe://example.org/agent"), None)
            .unwrap_err();
        assert!(err.to_string().contains("no policy covers"), "{err}");
        let err = set
            .for_agent(&id("spiffe://example.org/service/x"), None)
            .unwrap_err();
        assert!(err.to_string().contains("rule agents"), "{err}");
    }

    #[test]
    fn explicit_policy_must_cover_the_agent() {
        let set = shipped();
        let err = set
            .for_agent(&id("spiffe://example.org/agent/mail/m1"), Some("strict"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"strict\"") && err.contains("rule agents"),
            "{err}"
        );
        assert!(
            set.for_agent(&id("spiffe://example.org/agent/x"), Some("nope"))
                .is_err()
        );
    }

    #[test]
    fn lifetimes() {
        let set = shipped();
        let p = set.get("strict").unwrap();
        assert_eq!(p.lifetime(None).unwrap(), Duration::hours(1));
        assert_eq!(
            p.lifetime(Some(Duration::minutes(10))).unwrap(),
            Duration::minutes(10)
        );
        let err = p
            .lifetime(Some(Duration::hours(2)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("rule max_lifetime") && err.contains("2h"),
            "{err}"
        );
        assert!(p.lifetime(Some(Duration::minutes(4))).is_err());
    }

    #[test]
    fn patterns() {
        let p = PathPattern::parse("/agent/*/mailer").unwrap();
        assert!(p.matches(&["agent", "alice", "mailer"]));
        assert!(!p.matches(&["agent", "alice", "mailer", "x"]));
        assert!(!p.matches(&["agent", "mailer"]));
        let p = PathPattern::parse("/agent/a").unwrap();
        assert!(p.matches(&["agent", "a"]));
        assert!(!p.matches(&["agent", "ab"]), "prefix sibling");
        assert!(!p.matches(&["agent", "a", "x"]), "child path");
        for bad in [
            "agent",
            "/agent/**/x",
            "/agent//x",
            "/agent/../x",
            "/agent/a b",
        ] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_name_file_line_and_rule() {
        let err = Policy::parse("p", "policies/p.toml", "agents = [\"/a/**\"]\nmethods = [\"acme\"]\ndefault_lifetime = \"1x\"\nmax_lifetime=\"1h\"\nkey_types=[\"ecdsa-p256\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("policies/p.toml") && err.contains("line 3"),
            "{err}"
        );
        let err = Policy::parse("p", "p.toml", "agents = [\"/a/**\"]\nmethods = [\"acme\"]\ndefault_lifetime = \"2h\"\nmax_lifetime=\"1h\"\nkey_types=[\"ecdsa-p256\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("rule default_lifetime"), "{err}");
        let err = Policy::parse("p", "p.toml", "agents = [\"/a/**\"]\nmethods = [\"acme\"]\ndefault_lifetime = \"1h\"\nmax_lifetime=\"1h\"\nkey_types=[\"rsa-1024\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 5"), "{err}");
        let err = Policy::parse(
            "p",
            "p.toml",
            "agents = [\"/a/**\"]\nmethods = [\"internal\"]\ndefault_lifetime = \"1h\"\nmax_lifetime=\"1h\"\nkey_types=[\"ecdsa-p256\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("rule methods") && err.contains("reserved"),
            "{err}"
        );
        let err = Policy::parse("p", "p.toml", "agents = [\"/a/**\"]\nmethod = [\"acme\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("method"), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::minutes(90));
        assert_eq!(parse_duration("7d").unwrap(), Duration::days(7));
        for bad in ["", "h", "10", "1w", "-1h", "1.5h", "99999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(Duration::minutes(90)), "1h30m");
        assert_eq!(format_duration(Duration::hours(48)), "2d");
    }

    #[test]
    fn ip_networks() {
        let n = IpNet::parse("10.20.0.0/16").unwrap();
        assert!(n.contains("10.20.255.1".parse().unwrap()));
        assert!(!n.contains("10.21.0.1".parse().unwrap()));
        assert!(!n.contains("::1".parse().unwrap()));
        let n = IpNet::parse("fd00::/8").unwrap();
        assert!(n.contains("fd12::1".parse().unwrap()));
        assert!(
            IpNet::parse("0.0.0.0/0")
                .unwrap()
                .contains("1.2.3.4".parse().unwrap())
        );
        assert!(IpNet::parse("10.0.0.0/33").is_err());
    }
}
