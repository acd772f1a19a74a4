//! Order identifiers, parsed once (RFC 8555 §7.1.4, RFC 8738): `dns` names, `ip` addresses, and
//! `uri` for the agent's own SPIFFE ID (agentca's extension, see docs/acme.md). Anything that is
//! not in canonical form is refused, never repaired — except DNS case, which DNS ignores.

use std::net::IpAddr;

use agentca_core::store::AcmeIdentifier;
use serde_json::Value;

use crate::error::{AcmeError, ProblemType, Subproblem, problem_urn};

/// The most identifiers one order may carry (Boulder uses 100 as well).
pub const MAX_IDENTIFIERS: usize = 100;

/// A parsed identifier.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Identifier {
    /// A DNS name, lowercase, without a trailing dot.
    Dns(String),
    /// An IP address (its canonical text form is what the order shows).
    Ip(IpAddr),
    /// The account's agent ID.
    Uri(String),
}

impl Identifier {
    /// The stored form.
    pub fn to_record(&self) -> AcmeIdentifier {
        let (kind, value) = match self {
            Self::Dns(name) => ("dns", name.clone()),
            Self::Ip(ip) => ("ip", ip.to_string()),
            Self::Uri(uri) => ("uri", uri.clone()),
        };
        AcmeIdentifier {
            kind: kind.into(),
            value,
        }
    }

    /// Back from the stored form (written by us, so already canonical).
    pub fn from_record(record: &AcmeIdentifier) -> Option<Self> {
        match record.kind.as_str() {
            "dns" => Some(Self::Dns(record.value.clone())),
            "ip" => record.value.parse().ok().map(Self::Ip),
            "uri" => Some(Self::Uri(record.value.clone())),
            _ => None,
        }
    }

    /// The DNS name, if this is a `dns` identifier.
    pub fn dns(&self) -> Option<&str> {
        match self {
            Self::Dns(name) => Some(name),
            _ => None,
        }
    }

    /// The address, if this is an `ip` identifier.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Self::Ip(ip) => Some(*ip),
            _ => None,
        }
    }

    /// The JSON form used in orders, authorizations and subproblems.
    pub fn to_json(&self) -> Value {
        let r = self.to_record();
        serde_json::json!({"type": r.kind, "value": r.value})
    }
}

/// Parses an order's `identifiers` for an account bound to `agent_id`. Each identifier that
/// fails becomes a subproblem; any failure refuses the whole order with all of them.
pub fn parse_identifiers(
    value: Option<&Value>,
    agent_id: &str,
) -> Result<Vec<Identifier>, AcmeError> {
    let Some(Value::Array(items)) = value else {
        return Err(AcmeError::malformed("identifiers must be an array"));
    };
    if items.is_empty() {
        return Err(AcmeError::malformed(
            "an order needs at least one identifier",
        ));
    }
    if items.len() > MAX_IDENTIFIERS {
        return Err(AcmeError::malformed(format!(
            "an order may have at most {MAX_IDENTIFIERS} identifiers"
        )));
    }
    let mut out = Vec::with_capacity(items.len());
    let mut problems = Vec::new();
    // The order's problem type: the identifiers' own when they agree, else rejectedIdentifier.
    let mut kinds = Vec::new();
    for item in items {
        match parse_one(item, agent_id) {
            Ok(id) => {
                if !out.contains(&id) {
                    out.push(id);
                }
            }
            Err((kind, detail)) => {
                kinds.push(kind);
                problems.push(Subproblem {
                    kind: problem_urn(kind),
                    detail,
                    identifier: echo(item),
                });
            }
        }
    }
    if let (Some(first), Some(&first_kind)) = (problems.first(), kinds.first()) {
        let kind = if kinds.iter().all(|k| *k == first_kind) {
            first_kind
        } else {
            ProblemType::RejectedIdentifier
        };
        let detail = match problems.len() {
            1 => format!("cannot issue for this identifier: {}", first.detail),
            n => format!("cannot issue for {n} of the identifiers"),
        };
        return Err(AcmeError::new(kind, detail).with_subproblems(problems));
    }
    out.sort();
    Ok(out)
}

type Refusal = (ProblemType, String);

fn parse_one(item: &Value, agent_id: &str) -> Result<Identifier, Refusal> {
    let malformed = |d: &str| (ProblemType::Malformed, d.to_owned());
    let obj = item
        .as_object()
        .ok_or_else(|| malformed("an identifier is an object with type and value"))?;
    let (Some(Value::String(kind)), Some(Value::String(value))) =
        (obj.get("type"), obj.get("value"))
    else {
        return Err(malformed(
            "an identifier needs string members type and value",
        ));
    };
    match kind.as_str() {
        "dns" => parse_dns(value).map(Identifier::Dns),
        "ip" => parse_ip(value).map(Identifier::Ip),
        "uri" => {
            if value == agent_id {
                Ok(Identifier::Uri(value.clone()))
            } else {
                Err((
                    ProblemType::RejectedIdentifier,
                    "a uri identifier must be the account's own agent ID".into(),
                ))
            }
        }
        _ => Err((
            ProblemType::UnsupportedIdentifier,
            "identifier types are dns, ip and uri".into(),
        )),
    }
}

/// A DNS name as a certificate may carry it: LDH labels of 1–63 bytes, at most 253 bytes, not
/// all-numeric at the end (that would be an IP address in disguise), no wildcard.
pub fn parse_dns(value: &str) -> Result<String, Refusal> {
    let rejected = |d: &str| (ProblemType::RejectedIdentifier, d.to_owned());
    if value.starts_with("*.") {
        return Err(rejected("wildcard names are not issued"));
    }
    if !value.is_ascii() {
        return Err(rejected(
            "DNS names must be ASCII (use the A-label form of internationalized names)",
        ));
    }
    let name = value.to_ascii_lowercase();
    agentca_core::policy::check_dns_name(&name).map_err(|e| rejected(&e))?;
    // `1.2.3.4` or `10.0.0.010` as a dns identifier: an IP address in disguise, which
    // resolvers and URL parsers may take as one.
    if name
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(rejected(
            "the last label of a DNS name cannot be all digits",
        ));
    }
    Ok(name)
}

/// An IP address in its canonical text form only (RFC 8738 §3: RFC 1123 dotted quad for v4,
/// RFC 5952 for v6), so that `0127.0.0.1`, `2130706433` and `::FFFF:7f00:1` are refused.
pub fn parse_ip(value: &str) -> Result<IpAddr, Refusal> {
    let ip: IpAddr = value.parse().map_err(|_| {
        (
            ProblemType::Malformed,
            "not an IP address in canonical form".to_owned(),
        )
    })?;
    if ip.to_string() != value {
        return Err((
            ProblemType::Malformed,
            "not an IP address in canonical form".into(),
        ));
    }
    Ok(ip)
}

/// A short, safe echo of a refused identifier for its subproblem.
fn echo(item: &Value) -> Value {
    let field = |name: &str| {
        item.get(name)
            .and_then(Value::as_str)
            .map(|s| s.chars().take(256).collect::<String>())
            .unwrap_or_default()
    };
    serde_json::json!({"type": field("type"), "value": field("value")})
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const AGENT: &str = "spiffe://example.org/agent/a";

    fn parse(v: Value) -> Result<Vec<Identifier>, AcmeError> {
        parse_identifiers(Some(&v), AGENT)
    }

    #[test]
    fn canonical_identifiers_parse_sorted_and_deduplicated() {
        let ids = parse(json!([
            {"type": "dns", "value": "B.example.org"},
            {"type": "ip", "value": "10.0.0.1"},
            {"type": "dns", "value": "b.example.org"},
            {"type": "uri", "value": AGENT},
        ]))
        .unwrap();
        assert_eq!(
            ids,
            vec![
                Identifier::Dns("b.example.org".into()),
                Identifier::Ip("10.0.0.1".parse().unwrap()),
                Identifier::Uri(AGENT.into()),
            ]
        );
    }

    #[test]
    fn acme_o11_every_bad_identifier_is_a_subproblem() {
        let e = parse(json!([
            {"type": "dns", "value": "ok.example.org"},
            {"type": "dns", "value": "*.example.org"},
            {"type": "dns", "value": "bücher.example"},
            {"type": "dns", "value": "a..b"},
            {"type": "uri", "value": "spiffe://example.org/agent/other"},
        ]))
        .unwrap_err();
        assert_eq!(e.kind, ProblemType::RejectedIdentifier);
        assert_eq!(e.subproblems.len(), 4);
        assert_eq!(e.subproblems[0].identifier["value"], "*.example.org");
    }

    #[test]
    fn unknown_types_are_unsupported() {
        let e = parse(json!([{"type": "email", "value": "a@b.c"}])).unwrap_err();
        assert_eq!(e.kind, ProblemType::UnsupportedIdentifier);
    }

    #[test]
    fn acme_o6_ip_spellings_other_than_canonical_are_refused() {
        for ip in [
            "0127.0.0.1",
            "2130706433",
            "0x7f.0.0.1",
            "127.1",
            "::FFFF:7f00:1",
            "1.2.3.4 ",
        ] {
            let e = parse(json!([{"type": "ip", "value": ip}])).unwrap_err();
            assert_eq!(e.kind, ProblemType::Malformed, "{ip}");
        }
        assert!(parse(json!([{"type": "ip", "value": "::ffff:127.0.0.1"}])).is_ok());
    }

    #[test]
    fn acme_o12_size_limits() {
        let many: Vec<Value> = (0..=MAX_IDENTIFIERS)
            .map(|i| json!({"type": "dns", "value": format!("n{i}.example.org")}))
            .collect();
        assert_eq!(
            parse(Value::Array(many)).unwrap_err().kind,
            ProblemType::Malformed
        );
        assert_eq!(parse(json!([])).unwrap_err().kind, ProblemType::Malformed);
        assert_eq!(parse(json!("x")).unwrap_err().kind, ProblemType::Malformed);
        let long = format!("{}.example.org", "a".repeat(64));
        assert_eq!(
            parse(json!([{"type": "dns", "value": long}]))
                .unwrap_err()
                .kind,
            ProblemType::RejectedIdentifier
        );
    }
}
