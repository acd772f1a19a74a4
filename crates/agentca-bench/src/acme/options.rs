//! What an ACME run is given: the server, the load, the credentials, the names to order.

use std::path::PathBuf;
use std::time::Duration;

use super::jose::b64_decode;
use crate::error::BenchError;

/// One External Account Binding credential: the key identifier and the HMAC key the server's
/// operator issued (RFC 8555 §7.3.4).
#[derive(Clone, PartialEq, Eq)]
pub struct EabCredential {
    /// The key identifier, as the operator gave it.
    pub kid: String,
    /// The decoded HMAC key.
    pub hmac_key: Vec<u8>,
}

impl std::fmt::Debug for EabCredential {
    /// Without the key: options end up in logs and test output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EabCredential")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl EabCredential {
    /// `hmac` is base64url, as pebble's configuration and `agentca token create` write it.
    pub fn new(kid: &str, hmac: &str) -> Result<Self, BenchError> {
        if kid.is_empty() {
            return Err(BenchError::Options("an EAB key identifier is empty".into()));
        }
        let hmac_key = b64_decode(hmac).filter(|k| !k.is_empty()).ok_or_else(|| {
            BenchError::Options(format!("the EAB HMAC key of {kid:?} is not base64url"))
        })?;
        Ok(Self {
            kid: kid.to_owned(),
            hmac_key,
        })
    }
}

/// Parses an EAB file: one `KID HMAC` a line; blank lines and lines starting with `#` are
/// skipped. One line per worker, because agentca's credentials bind one account each.
pub fn parse_eab_file(text: &str) -> Result<Vec<EabCredential>, BenchError> {
    let mut credentials = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_ascii_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some(kid), Some(hmac), None) => {
                credentials.push(EabCredential::new(kid, hmac).map_err(|e| {
                    BenchError::Options(format!("EAB file line {}: {e}", number + 1))
                })?)
            }
            _ => {
                return Err(BenchError::Options(format!(
                    "EAB file line {}: expected `KID HMAC`",
                    number + 1
                )));
            }
        }
    }
    Ok(credentials)
}

/// Which EAB credential each account binds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Eab {
    /// No binding (the server does not require one).
    #[default]
    None,
    /// The same credential for every account (pebble accepts a key any number of times).
    Shared(EabCredential),
    /// Credential `i` for worker `i` (single-use credentials, as agentca issues them).
    PerWorker(Vec<EabCredential>),
}

impl Eab {
    pub(crate) fn for_worker(&self, worker: usize) -> Option<&EabCredential> {
        match self {
            Self::None => None,
            Self::Shared(credential) => Some(credential),
            Self::PerWorker(credentials) => credentials.get(worker),
        }
    }
}

/// The DNS identifiers of order `n`: comma-separated names in which `{n}` is replaced by the
/// order's number, so that each order asks for names no earlier order had (a server may
/// reuse authorizations for names it has seen, which would measure less work).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NameTemplate {
    /// Per name, its literal pieces; `{n}` goes between consecutive pieces.
    names: Vec<Vec<String>>,
}

impl NameTemplate {
    pub(crate) fn parse(template: &str) -> Result<Self, BenchError> {
        let bad = |why: &str| BenchError::Options(format!("--names {template:?}: {why}"));
        let mut names = Vec::new();
        for name in template.split(',') {
            let name = name.trim();
            if name.is_empty() {
                return Err(bad("an empty name"));
            }
            let pieces: Vec<String> = name.split("{n}").map(str::to_owned).collect();
            if pieces.iter().any(|p| p.contains(['{', '}'])) {
                return Err(bad("the only placeholder is {n}"));
            }
            if pieces.iter().any(|p| {
                p.chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '/')
            }) {
                return Err(bad("a name with a space, control character or slash"));
            }
            names.push(pieces);
        }
        Ok(Self { names })
    }

    pub(crate) fn render(&self, n: u64) -> Vec<String> {
        let n = n.to_string();
        self.names.iter().map(|pieces| pieces.join(&n)).collect()
    }
}

/// What [`run_acme`](crate::run_acme) does. [`AcmeBenchOptions::new`] fills in the defaults.
#[derive(Clone, Debug)]
pub struct AcmeBenchOptions {
    /// The server's directory URL (`https://…/directory`; `http://` for a server without TLS).
    pub directory: String,
    /// PEM file with the root(s) the server's TLS certificate chains to; needed for https.
    pub ca: Option<PathBuf>,
    /// Workers, each with its own account and connection and one order in progress at a time.
    pub concurrency: usize,
    /// Orders to complete in the measured window (failed ones are retried under new names).
    pub orders: u64,
    /// External account binding for the accounts.
    pub eab: Eab,
    /// The identifiers to order (see `NameTemplate`): default `{n}.bench.test`.
    pub names: String,
    /// The server's process id, to measure its CPU time and memory from `/proc`.
    pub server_pid: Option<u32>,
    /// How long one HTTP request (including connecting) may take.
    pub timeout: Duration,
    /// The run ends with an error when no order has completed for this long.
    pub stall_after: Duration,
    /// The run ends with an error when it has not finished in this time (accounts included).
    pub max_duration: Duration,
    /// Load generator threads; by default one per CPU this process may run on.
    pub threads: Option<usize>,
}

impl AcmeBenchOptions {
    /// One worker, 100 orders, `{n}.bench.test`, no EAB; 10 s per request, a stall after
    /// 30 s without a completed order, 10 minutes at most.
    pub fn new(directory: impl Into<String>) -> Self {
        Self {
            directory: directory.into(),
            ca: None,
            concurrency: 1,
            orders: 100,
            eab: Eab::None,
            names: "{n}.bench.test".into(),
            server_pid: None,
            timeout: Duration::from_secs(10),
            stall_after: Duration::from_secs(30),
            max_duration: Duration::from_secs(600),
            threads: None,
        }
    }

    pub(crate) fn check(&self) -> Result<NameTemplate, BenchError> {
        let bad = |why: String| Err(BenchError::Options(why));
        if self.concurrency == 0 {
            return bad("concurrency must be at least 1".into());
        }
        if self.orders == 0 {
            return bad("the number of orders must be positive".into());
        }
        for (what, d) in [
            ("the timeout", self.timeout),
            ("the stall time", self.stall_after),
            ("the run's time bound", self.max_duration),
        ] {
            if d.is_zero() {
                return bad(format!("{what} must be positive"));
            }
        }
        if self.threads == Some(0) {
            return bad("threads must be at least 1".into());
        }
        if let Eab::PerWorker(credentials) = &self.eab
            && credentials.len() < self.concurrency
        {
            return bad(format!(
                "{} EAB credentials for {} workers: each worker's account needs its own",
                credentials.len(),
                self.concurrency
            ));
        }
        let https = self.directory.starts_with("https://");
        if !https && !self.directory.starts_with("http://") {
            return Err(BenchError::Url {
                url: self.directory.clone(),
                reason: "an absolute https:// (or http://) URL is needed".into(),
            });
        }
        if https && self.ca.is_none() {
            return Err(BenchError::Url {
                url: self.directory.clone(),
                reason: "an https directory needs the server's root certificate (--ca)".into(),
            });
        }
        NameTemplate::parse(&self.names)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_template_numbers_every_name() {
        let t = NameTemplate::parse("{n}.bench.test").unwrap();
        assert_eq!(t.render(0), ["0.bench.test"]);
        assert_eq!(t.render(1234), ["1234.bench.test"]);
        let t = NameTemplate::parse("a{n}.x.test, www.a{n}.x.test,fixed.test").unwrap();
        assert_eq!(t.render(7), ["a7.x.test", "www.a7.x.test", "fixed.test"]);
        let t = NameTemplate::parse("{n}-{n}.test").unwrap();
        assert_eq!(t.render(3), ["3-3.test"]);
        for bad in ["", "a,,b", "{m}.test", "{n.test", "a b.test", "x/{n}"] {
            assert!(NameTemplate::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_eab_file_has_one_credential_a_line() {
        let text = "# kid hmac\n\nk1 AQID\n  k2\tBAUG==  \n";
        let creds = parse_eab_file(text).unwrap();
        assert_eq!(creds.len(), 2);
        assert_eq!(creds[0].kid, "k1");
        assert_eq!(creds[0].hmac_key, [1, 2, 3]);
        assert_eq!(creds[1].kid, "k2");
        assert_eq!(creds[1].hmac_key, [4, 5, 6]);
        assert!(parse_eab_file("").unwrap().is_empty());

        let err = parse_eab_file("k1 AQID\nk2\n").unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(parse_eab_file("k1 AQID extra\n").is_err());
        assert!(parse_eab_file("k1 not*base64\n").is_err());
        // The key never shows in debug output.
        assert!(!format!("{:?}", creds[0]).contains("AQID"));
    }

    #[test]
    fn options_are_checked() {
        let good = || {
            let mut o = AcmeBenchOptions::new("https://127.0.0.1:14000/dir");
            o.ca = Some("root.pem".into());
            o
        };
        assert!(good().check().is_ok());
        let mut o = good();
        o.concurrency = 0;
        assert!(matches!(o.check(), Err(BenchError::Options(_))));
        let mut o = good();
        o.orders = 0;
        assert!(o.check().is_err());
        let mut o = good();
        o.concurrency = 2;
        o.eab = Eab::PerWorker(vec![EabCredential::new("k", "AQID").unwrap()]);
        assert!(o.check().is_err());
        let mut o = good();
        o.ca = None;
        assert!(matches!(o.check(), Err(BenchError::Url { .. })));
        let mut o = good();
        o.directory = "ftp://x/dir".into();
        assert!(matches!(o.check(), Err(BenchError::Url { .. })));
        let mut o = good();
        o.names = "{x}".into();
        assert!(o.check().is_err());
        let mut o = good();
        o.stall_after = Duration::ZERO;
        assert!(o.check().is_err());
        assert!(
            AcmeBenchOptions::new("http://127.0.0.1:1/dir")
                .check()
                .is_ok()
        );
    }
}
