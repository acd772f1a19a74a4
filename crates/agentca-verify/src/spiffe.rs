//! SPIFFE IDs as a relying party accepts them: canonical form only.
//!
//! The rules are the CA's (design §2, SPIFFE-ID §2): the scheme is exactly `spiffe://`; the
//! trust domain is lowercase letters, digits, `.`, `-` and `_`, with no empty label, port or
//! userinfo; the path is one or more non-empty segments of letters, digits, `.`, `-` and `_`,
//! none of them `.` or `..`; no query, fragment, percent-encoding or trailing slash; at most
//! 2048 bytes. Anything else is refused, never normalized, so two spellings never name one
//! agent.

use std::fmt;

/// The longest SPIFFE ID accepted (SPIFFE-ID §2.3).
pub const MAX_LEN: usize = 2048;

pub(crate) const SCHEME: &str = "spiffe://";

/// A canonical SPIFFE ID with a non-empty path: one agent's identity. Only built by parsing.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpiffeId {
    uri: String,
    /// Where the path's leading `/` is in `uri`.
    path_start: usize,
}

impl SpiffeId {
    /// Parses a canonical SPIFFE ID; the error names the first problem.
    pub fn parse(input: &str) -> Result<Self, String> {
        if input.len() > MAX_LEN {
            return Err(format!("longer than {MAX_LEN} bytes"));
        }
        let (domain, path) = split(input)?;
        check_trust_domain(domain)?;
        if path.is_empty() {
            return Err("no path after the trust domain".into());
        }
        check_path(path, |_| false)?;
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

    /// The path's segments, in order.
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

/// Splits `spiffe://DOMAIN/PATH` into the domain and the path (with its `/`, possibly empty).
pub(crate) fn split(input: &str) -> Result<(&str, &str), String> {
    let Some(rest) = input.strip_prefix(SCHEME) else {
        let lower = input.get(..SCHEME.len()).map(str::to_ascii_lowercase);
        return Err(if lower.as_deref() == Some(SCHEME) {
            "the scheme must be lowercase \"spiffe://\"".into()
        } else {
            "does not start with spiffe://".into()
        });
    };
    Ok(match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    })
}

pub(crate) fn check_trust_domain(domain: &str) -> Result<(), String> {
    if domain.is_empty() {
        return Err("the trust domain is empty".into());
    }
    if domain.contains('@') {
        return Err("userinfo is not allowed".into());
    }
    if domain.contains(':') {
        return Err("a port is not allowed".into());
    }
    if domain.contains('?') || domain.contains('#') {
        return Err("a query or fragment is not allowed".into());
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

/// Checks a non-empty path starting with `/`; `special` lets a pattern admit its wildcard
/// segments.
pub(crate) fn check_path(path: &str, special: impl Fn(&str) -> bool) -> Result<(), String> {
    if path.contains('?') || path.contains('#') {
        return Err("a query or fragment is not allowed".into());
    }
    if path.contains('%') {
        return Err("percent-encoding is not allowed".into());
    }
    if path.ends_with('/') {
        return Err("trailing slash".into());
    }
    for segment in path[1..].split('/') {
        if special(segment) {
            continue;
        }
        match segment {
            "" => return Err("empty path segment".into()),
            "." | ".." => return Err("'.' and '..' segments are not allowed".into()),
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

/// Error messages quote input; keep it to one readable line.
pub(crate) fn shorten(input: &str) -> String {
    let mut s: String = input
        .chars()
        .take(120)
        .flat_map(char::escape_debug)
        .collect();
    if input.chars().count() > 120 {
        s.push('…');
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
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
    fn non_canonical_ids_are_refused() {
        let long = format!("spiffe://example.org/{}", "a".repeat(MAX_LEN));
        for (input, why) in [
            ("", "spiffe://"),
            ("SPIFFE://example.org/a", "lowercase"),
            ("https://example.org/a", "spiffe://"),
            ("spiffe://Example.org/a", "lowercase"),
            ("spiffe://example.org", "no path"),
            ("spiffe://example.org/", "trailing slash"),
            ("spiffe://example.org/a//b", "empty path segment"),
            ("spiffe://example.org/a/../b", "'..'"),
            ("spiffe://example.org/./a", "'.'"),
            ("spiffe://example.org/%61", "percent"),
            ("spiffe://example.org:443/a", "port"),
            ("spiffe://u@example.org/a", "userinfo"),
            ("spiffe://example.org/a?x", "query"),
            ("spiffe://example.org/a#x", "fragment"),
            ("spiffe://example.org/ä", "not allowed"),
            ("spiffe://example.org/a*", "not allowed"),
            ("spiffe:///a", "empty"),
            ("spiffe://a..b/a", "empty label"),
            (long.as_str(), "longer"),
        ] {
            let err = SpiffeId::parse(input).unwrap_err();
            assert!(err.contains(why), "{input:?}: {err}");
        }
    }

    #[test]
    fn the_length_limit_is_inclusive() {
        let prefix = "spiffe://example.org/";
        let ok = format!("{prefix}{}", "a".repeat(MAX_LEN - prefix.len()));
        SpiffeId::parse(&ok).unwrap();
    }

    /// The CA and the relying party must agree on what an agent ID is.
    #[test]
    fn agrees_with_the_ca() {
        for input in [
            "spiffe://example.org/agent/alice",
            "spiffe://example.org/a.b/c-d/e_f/G9",
            "spiffe://example.org",
            "spiffe://example.org/",
            "spiffe://EXAMPLE.org/a",
            "spiffe://example.org/a/./b",
            "spiffe://example.org/a%20b",
            "spiffe://example.org/a b",
            "spiffe://example.org:1/a",
            "spiffe://x@example.org/a",
            "spiffe://.example.org/a",
            "spiffe://example.org/a?b",
            "Spiffe://example.org/a",
            "spiffe://example.org/a/",
            "spiffe://example.org//a",
            "spiffe://example.org/ü",
        ] {
            assert_eq!(
                SpiffeId::parse(input).is_ok(),
                agentca_core::identity::SpiffeId::parse(input).is_ok(),
                "{input:?}"
            );
        }
    }
}
