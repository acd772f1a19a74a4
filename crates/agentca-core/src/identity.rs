//! Agent identities: canonical SPIFFE IDs.
//!
//! A [`SpiffeId`] can only be built by parsing, and parsing accepts only the canonical form
//! (SPIFFE-ID §2; X509-SVID §2): lowercase `spiffe` scheme, a trust domain of lowercase
//! letters, digits, `.`, `-` and `_`, and a path of non-empty segments of letters, digits,
//! `.`, `-` and `_` that are not `.` or `..`. No port, userinfo, query, fragment,
//! percent-encoding or trailing slash; at most 2048 bytes. Non-canonical input is rejected,
//! never repaired, so two spellings can never name one agent.

use std::fmt;

use crate::error::{Error, Result};

/// The longest SPIFFE ID accepted (SPIFFE-ID §2.3).
pub const MAX_LEN: usize = 2048;

const SCHEME: &str = "spiffe://";

/// A canonical SPIFFE ID with a non-empty path: the identity of one agent.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpiffeId {
    uri: String,
    /// Byte offset of the path's leading `/` in `uri`.
    path_start: usize,
}

impl SpiffeId {
    /// Parses a canonical SPIFFE ID; anything else is an error naming the first problem.
    pub fn parse(input: &str) -> Result<Self> {
        let bad = |why: &str| Error::InvalidAgentId(format!("{why} (got {})", shorten(input)));
        if input.len() > MAX_LEN {
            return Err(bad("longer than 2048 bytes"));
        }
        let Some(rest) = input.strip_prefix(SCHEME) else {
            if input.len() >= SCHEME.len()
                && input.is_char_boundary(SCHEME.len())
                && input[..SCHEME.len()].eq_ignore_ascii_case(SCHEME)
            {
                return Err(bad("the scheme must be lowercase \"spiffe://\""));
            }
            return Err(bad("must start with spiffe://"));
        };
        let (domain, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        check_trust_domain(domain).map_err(|why| bad(&why))?;
        if path.is_empty() {
            return Err(bad("an agent ID needs a path after the trust domain"));
        }
        check_path(path).map_err(|why| bad(&why))?;
        Ok(Self {
            uri: input.to_owned(),
            path_start: SCHEME.len() + domain.len(),
        })
    }

    /// The whole ID, e.g. `spiffe://example.org/agent/alice`.
    pub fn as_str(&self) -> &str {
        &self.uri
    }

    /// The trust domain, e.g. `example.org`.
    pub fn trust_domain(&self) -> &str {
        &self.uri[SCHEME.len()..self.path_start]
    }

    /// The path, starting with `/`.
    pub fn path(&self) -> &str {
        &self.uri[self.path_start..]
    }

    /// The path's segments.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.path()[1..].split('/')
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.uri)
    }
}

impl std::str::FromStr for SpiffeId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// Checks a trust domain name (also used for `init --trust-domain`).
pub fn check_trust_domain(domain: &str) -> std::result::Result<(), String> {
    if domain.is_empty() {
        return Err("the trust domain is empty".into());
    }
    if domain.contains('@') {
        return Err("userinfo is not allowed in a SPIFFE ID".into());
    }
    if domain.contains(':') {
        return Err("a port is not allowed in a SPIFFE ID".into());
    }
    if domain.contains('?') || domain.contains('#') {
        return Err("a query or fragment is not allowed in a SPIFFE ID".into());
    }
    if domain.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("the trust domain must be lowercase".into());
    }
    if let Some(c) = domain
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_'))
    {
        return Err(format!("character {c:?} is not allowed in a trust domain"));
    }
    if domain.starts_with('.') || domain.ends_with('.') || domain.contains("..") {
        return Err("the trust domain has an empty label".into());
    }
    Ok(())
}

fn check_path(path: &str) -> std::result::Result<(), String> {
    if path.contains('?') || path.contains('#') {
        return Err("a query or fragment is not allowed in a SPIFFE ID".into());
    }
    if path.contains('%') {
        return Err("percent-encoding is not allowed in a SPIFFE ID".into());
    }
    if path.ends_with('/') {
        return Err("trailing slash".into());
    }
    for segment in path[1..].split('/') {
        match segment {
            "" => return Err("empty path segment".into()),
            "." | ".." => return Err("'.' and '..' path segments are not allowed".into()),
            _ => {}
        }
        if let Some(c) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
        {
            return Err(format!("character {c:?} is not allowed in a path segment"));
        }
    }
    Ok(())
}

/// Error messages echo input; keep them to one readable line.
fn shorten(input: &str) -> String {
    let mut s: String = input
        .chars()
        .take(120)
        .flat_map(char::escape_debug)
        .collect();
    if input.chars().count() > 120 {
        s.push('…');
    }
    format!("\"{s}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_ids_parse() {
        let id = SpiffeId::parse("spiffe://example.org/agent/alice/mailer").unwrap();
        assert_eq!(id.trust_domain(), "example.org");
        assert_eq!(id.path(), "/agent/alice/mailer");
        assert_eq!(
            id.segments().collect::<Vec<_>>(),
            ["agent", "alice", "mailer"]
        );
        SpiffeId::parse("spiffe://a-b_c.example/A.b-C_9").unwrap();
    }

    #[test]
    fn non_canonical_ids_are_rejected_not_repaired() {
        let long = format!("spiffe://example.org/{}", "a".repeat(2040));
        let cases = [
            ("", "spiffe://"),
            ("SPIFFE://example.org/agent/a", "lowercase"),
            ("Spiffe://example.org/agent/a", "lowercase"),
            ("https://example.org/agent/a", "spiffe://"),
            ("spiffe://Example.org/agent/a", "lowercase"),
            ("spiffe://example.org", "needs a path"),
            ("spiffe://example.org/", "trailing slash"),
            ("spiffe://example.org/agent/a/", "trailing slash"),
            ("spiffe://example.org/agent//a", "empty path segment"),
            ("spiffe://example.org/agent/a/../b", "'..'"),
            ("spiffe://example.org/agent/./a", "'.'"),
            ("spiffe://example.org/agent/%2e%2e/a", "percent"),
            ("spiffe://example.org:8443/agent/a", "port"),
            ("spiffe://user@example.org/agent/a", "userinfo"),
            ("spiffe://example.org/agent/a?x=1", "query"),
            ("spiffe://example.org/agent/a#frag", "fragment"),
            ("spiffe://example.org/agent/ä", "not allowed"),
            ("spiffe://example.org/agent/a b", "not allowed"),
            ("spiffe://example.org/agent/a\0", "not allowed"),
            ("spiffe:///agent/a", "empty"),
            ("spiffe://exa..mple/agent/a", "empty label"),
            (long.as_str(), "2048"),
        ];
        for (input, why) in cases {
            let err = SpiffeId::parse(input).unwrap_err().to_string();
            assert!(err.contains(why), "{input:?}: {err}");
        }
    }

    #[test]
    fn length_limit_is_inclusive() {
        let prefix = "spiffe://example.org/";
        let ok = format!("{prefix}{}", "a".repeat(MAX_LEN - prefix.len()));
        assert_eq!(ok.len(), MAX_LEN);
        SpiffeId::parse(&ok).unwrap();
    }
}
