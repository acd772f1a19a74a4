//! Which agents a verifier accepts: exact SPIFFE IDs or path patterns ([`IdPattern`]).

use std::fmt;
use std::str::FromStr;

use crate::error::Error;
use crate::spiffe::{self, SpiffeId};

/// An exact SPIFFE ID or a pattern over agent paths: which agents a verifier accepts.
///
/// # Grammar
///
/// ```text
/// pattern      = "spiffe://" trust-domain "/" segments
/// segments     = *(segment-pat "/") last
/// segment-pat  = segment / "*"
/// last         = segment / "*" / "**"
/// ```
///
/// `trust-domain` and `segment` are as in a canonical SPIFFE ID ([`crate::SpiffeId`]). The trust
/// domain is always literal and must match exactly. `*` matches exactly one path segment (any
/// value); `**`, allowed only as the last segment, matches one or more segments. There are no
/// partial-segment wildcards (`team-*` is refused), and literal segments compare
/// byte for byte, so `/agent/a` never matches `/agent/ab`. A pattern without wildcards is an
/// exact SPIFFE ID.
///
/// | pattern                              | matches                                   | does not match                  |
/// |--------------------------------------|-------------------------------------------|---------------------------------|
/// | `spiffe://td/agent/alice`            | `spiffe://td/agent/alice`                 | `spiffe://td/agent/alice/x`     |
/// | `spiffe://td/agent/team/*`           | `spiffe://td/agent/team/bob`              | `spiffe://td/agent/team/bob/x`  |
/// | `spiffe://td/agent/*/mailer`         | `spiffe://td/agent/bob/mailer`            | `spiffe://td/agent/mailer`      |
/// | `spiffe://td/agent/**`               | `spiffe://td/agent/a`, `…/agent/a/b/c`    | `spiffe://td/agent`, `spiffe://other/agent/a` |
/// | `spiffe://td/**`                     | every agent of trust domain `td`          | any other trust domain          |
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdPattern {
    source: String,
    trust_domain: String,
    segments: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    One,
    /// `**` (last only): one or more segments.
    Rest,
}

impl IdPattern {
    /// Parses a pattern; the error names the first problem.
    pub fn parse(input: &str) -> Result<Self, Error> {
        let bad = |reason: String| Error::InvalidPattern {
            pattern: spiffe::shorten(input),
            reason,
        };
        if input.len() > spiffe::MAX_LEN {
            return Err(bad(format!("longer than {} bytes", spiffe::MAX_LEN)));
        }
        let (domain, path) = spiffe::split(input).map_err(bad)?;
        spiffe::check_trust_domain(domain).map_err(bad)?;
        if path.is_empty() {
            return Err(bad("no path after the trust domain".into()));
        }
        spiffe::check_path(path, |s| s == "*" || s == "**").map_err(bad)?;
        let parts: Vec<&str> = path[1..].split('/').collect();
        let last = parts.len() - 1;
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            segments.push(match *part {
                "*" => Segment::One,
                "**" if i == last => Segment::Rest,
                "**" => return Err(bad("'**' is only allowed as the last segment".into())),
                literal => Segment::Literal(literal.to_owned()),
            });
        }
        Ok(Self {
            source: input.to_owned(),
            trust_domain: domain.to_owned(),
            segments,
        })
    }

    /// The pattern matching exactly `id`.
    pub fn exact(id: &SpiffeId) -> Self {
        Self {
            source: id.as_str().to_owned(),
            trust_domain: id.trust_domain().to_owned(),
            segments: id
                .segments()
                .map(|s| Segment::Literal(s.to_owned()))
                .collect(),
        }
    }

    /// Whether `id` is one of the agents this pattern names.
    pub fn matches(&self, id: &SpiffeId) -> bool {
        if id.trust_domain() != self.trust_domain {
            return false;
        }
        let mut given = id.segments();
        for segment in &self.segments {
            match segment {
                Segment::Rest => return given.next().is_some(),
                Segment::One => {
                    if given.next().is_none() {
                        return false;
                    }
                }
                Segment::Literal(want) => {
                    if given.next() != Some(want.as_str()) {
                        return false;
                    }
                }
            }
        }
        given.next().is_none()
    }

    /// Whether the pattern is an exact ID (no wildcard).
    pub fn is_exact(&self) -> bool {
        self.segments
            .iter()
            .all(|s| matches!(s, Segment::Literal(_)))
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl FromStr for IdPattern {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

impl fmt::Display for IdPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl fmt::Debug for IdPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdPattern({})", self.source)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    fn matches(pattern: &str, ids: &[&str]) -> Vec<bool> {
        let p = IdPattern::parse(pattern).unwrap();
        ids.iter().map(|s| p.matches(&id(s))).collect()
    }

    #[test]
    fn exact_ids() {
        assert_eq!(
            matches(
                "spiffe://td/agent/alice",
                &[
                    "spiffe://td/agent/alice",
                    "spiffe://td/agent/alice/x",
                    "spiffe://td/agent/alic",
                    "spiffe://td/agent/alicex",
                    "spiffe://td2/agent/alice",
                    "spiffe://td/agent/Alice",
                ]
            ),
            [true, false, false, false, false, false]
        );
        let p = IdPattern::exact(&id("spiffe://td/a/b"));
        assert!(p.is_exact());
        assert!(p.matches(&id("spiffe://td/a/b")));
        assert!(!p.matches(&id("spiffe://td/a")));
    }

    #[test]
    fn one_segment_wildcard() {
        assert_eq!(
            matches(
                "spiffe://td/agent/team/*",
                &[
                    "spiffe://td/agent/team/bob",
                    "spiffe://td/agent/team/bob/x",
                    "spiffe://td/agent/team",
                    "spiffe://td/agent/teams/bob",
                    "spiffe://other/agent/team/bob",
                ]
            ),
            [true, false, false, false, false]
        );
        assert_eq!(
            matches(
                "spiffe://td/agent/*/mailer",
                &[
                    "spiffe://td/agent/bob/mailer",
                    "spiffe://td/agent/mailer",
                    "spiffe://td/agent/bob/x/mailer",
                ]
            ),
            [true, false, false]
        );
    }

    #[test]
    fn any_depth_wildcard() {
        assert_eq!(
            matches(
                "spiffe://td/agent/**",
                &[
                    "spiffe://td/agent/a",
                    "spiffe://td/agent/a/b/c",
                    "spiffe://td/agent",
                    "spiffe://td/agents/a",
                    "spiffe://td2/agent/a",
                ]
            ),
            [true, true, false, false, false]
        );
        assert_eq!(
            matches("spiffe://td/**", &["spiffe://td/a", "spiffe://td/a/b"]),
            [true, true]
        );
        assert!(!IdPattern::parse("spiffe://td/**").unwrap().is_exact());
    }

    #[test]
    fn bad_patterns_are_refused() {
        for (input, why) in [
            ("spiffe://td/agent/**/x", "last segment"),
            ("spiffe://td/agent/team-*", "not allowed"),
            ("spiffe://td/agent/***", "not allowed"),
            ("spiffe://*/agent/a", "not allowed in a trust domain"),
            ("spiffe://TD/agent", "lowercase"),
            ("spiffe://td", "no path"),
            ("spiffe://td/", "trailing slash"),
            ("spiffe://td/a/", "trailing slash"),
            ("spiffe://td/a//b", "empty"),
            ("spiffe://td/a/../b", "'..'"),
            ("spiffe://td:1/a", "port"),
            ("spiffe://td/a?q", "query"),
            ("http://td/a", "spiffe://"),
        ] {
            let err = IdPattern::parse(input).unwrap_err().to_string();
            assert!(err.contains(why), "{input:?}: {err}");
        }
    }
}
