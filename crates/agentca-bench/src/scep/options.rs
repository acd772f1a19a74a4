//! What a SCEP run is given: the server, the load, the challenges, the request's algorithms.

use std::collections::HashMap;
use std::time::Duration;

use agentca_scep::ContentCipher;

use crate::error::BenchError;

/// The challengePassword each PKCSReq carries (RFC 8894 §2.2).
#[derive(Clone, PartialEq, Eq)]
pub enum Challenge {
    /// One password for every request (micromdm `scepserver -challenge`, step-ca's static
    /// provisioner challenge).
    Static(String),
    /// Password `i` for request `i`, each used once (agentca's challenges are single use).
    PerRequest(Vec<String>),
}

impl std::fmt::Debug for Challenge {
    /// Without the passwords: options end up in logs and test output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Static(_) => f.write_str("Challenge::Static(..)"),
            Self::PerRequest(all) => write!(f, "Challenge::PerRequest({} challenges)", all.len()),
        }
    }
}

impl Challenge {
    pub(crate) fn for_request(&self, index: usize) -> Option<&str> {
        match self {
            Self::Static(challenge) => Some(challenge),
            Self::PerRequest(all) => all.get(index).map(String::as_str),
        }
    }
}

/// Parses a challenge file: one challenge a line, surrounding blanks removed, blank lines
/// skipped. A challenge that appears twice is refused: each is meant to be spent once, and a
/// repeated line would show up as a failed enrollment that is the file's fault.
pub fn parse_challenge_file(text: &str) -> Result<Vec<String>, BenchError> {
    let mut challenges = Vec::new();
    let mut first_line: HashMap<&str, usize> = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let challenge = line.trim();
        if challenge.is_empty() {
            continue;
        }
        if challenge.chars().any(char::is_control) {
            return Err(BenchError::Options(format!(
                "challenge file line {number}: a control character"
            )));
        }
        if let Some(earlier) = first_line.insert(challenge, number) {
            return Err(BenchError::Options(format!(
                "challenge file line {number} repeats line {earlier}: each challenge is used once"
            )));
        }
        challenges.push(challenge.to_owned());
    }
    Ok(challenges)
}

/// The content-encryption algorithm named on the command line: `aes128` (what the `AES`
/// capability means, RFC 8894 §3.5.2), `aes256`, `des3` or `des` (single DES, for servers
/// that know nothing else).
pub fn parse_cipher(name: &str) -> Result<ContentCipher, BenchError> {
    match name.to_ascii_lowercase().as_str() {
        "aes128" | "aes" => Ok(ContentCipher::Aes128Cbc),
        "aes256" => Ok(ContentCipher::Aes256Cbc),
        "des3" | "3des" => Ok(ContentCipher::DesEde3Cbc),
        "des" => Ok(ContentCipher::DesCbc),
        other => Err(BenchError::Options(format!(
            "cipher {other:?}: aes128, aes256, des3 or des"
        ))),
    }
}

pub(crate) fn cipher_name(cipher: ContentCipher) -> &'static str {
    match cipher {
        ContentCipher::Aes128Cbc => "aes128",
        ContentCipher::Aes192Cbc => "aes192",
        ContentCipher::Aes256Cbc => "aes256",
        ContentCipher::DesEde3Cbc => "des3",
        ContentCipher::DesCbc => "des",
        _ => "other",
    }
}

/// A SHA-256 certificate fingerprint as people write it (hex, with or without colons, any
/// case), as 32 bytes.
pub(crate) fn parse_fingerprint(text: &str) -> Result<[u8; 32], BenchError> {
    let hex_digits: String = text.chars().filter(|c| !matches!(c, ':' | ' ')).collect();
    let mut out = [0u8; 32];
    hex::decode_to_slice(&hex_digits, &mut out).map_err(|_| {
        BenchError::Options(format!(
            "--ca-fingerprint {text:?}: 64 hex digits (a SHA-256 digest) expected"
        ))
    })?;
    Ok(out)
}

/// Parses a CPU list as `taskset -c` takes it: `0`, `0,2`, `0-3`, `0-1,4`.
pub fn parse_cpu_list(text: &str) -> Result<Vec<usize>, BenchError> {
    let bad = || BenchError::Options(format!("CPU list {text:?}: e.g. 0, 0,2 or 0-3"));
    let mut cpus = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let first: usize = first.parse().map_err(|_| bad())?;
        let last: usize = last.parse().map_err(|_| bad())?;
        if first > last || last >= rustix::thread::CpuSet::MAX_CPU {
            return Err(bad());
        }
        cpus.extend(first..=last);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// What [`run_scep`](crate::run_scep) does. [`ScepBenchOptions::new`] fills in the defaults.
#[derive(Clone, Debug)]
pub struct ScepBenchOptions {
    /// The SCEP URL (`http://host:port/scep`, or whatever path the server serves it at).
    pub url: String,
    /// Workers, each with its own keep-alive connection and one request in flight.
    pub concurrency: usize,
    /// PKCSReq messages to send, each with its own fresh key: an attempt each, a failed one
    /// is counted and not repeated (a new attempt would need a new challenge).
    pub count: u64,
    /// The challengePassword of the requests.
    pub challenge: Challenge,
    /// SHA-256 of the RA certificate to encrypt to, when GetCACert returns several candidates.
    pub ca_fingerprint: Option<String>,
    /// The requests' content-encryption algorithm (default AES-128-CBC).
    pub cipher: ContentCipher,
    /// RSA key size of the requesters' keys: 2048, 3072 or 4096.
    pub key_bits: u32,
    /// The server's process id, to measure its CPU time and memory from `/proc`.
    pub server_pid: Option<u32>,
    /// How long one HTTP request (including connecting) may take.
    pub timeout: Duration,
    /// The run ends with an error when the server has answered nothing for this long.
    pub stall_after: Duration,
    /// The run ends with an error when the measured window has lasted this long.
    pub max_duration: Duration,
    /// Load generator threads in the window; by default one per CPU it may run on.
    pub threads: Option<usize>,
    /// Run the measured window on these CPUs only (the keys are made on every CPU first).
    pub load_cpus: Option<Vec<usize>>,
    /// Print the progress of key generation on standard error.
    pub progress: bool,
}

impl ScepBenchOptions {
    /// One worker, 100 requests, AES-128, RSA-2048; 10 s per request, a stall after 30 s
    /// without an answer, 10 minutes at most.
    pub fn new(url: impl Into<String>, challenge: Challenge) -> Self {
        Self {
            url: url.into(),
            concurrency: 1,
            count: 100,
            challenge,
            ca_fingerprint: None,
            cipher: ContentCipher::Aes128Cbc,
            key_bits: 2048,
            server_pid: None,
            timeout: Duration::from_secs(10),
            stall_after: Duration::from_secs(30),
            max_duration: Duration::from_secs(600),
            threads: None,
            load_cpus: None,
            progress: false,
        }
    }

    /// Checks the options; returns the fingerprint, decoded.
    pub(crate) fn check(&self) -> Result<Option<[u8; 32]>, BenchError> {
        let bad = |why: String| Err(BenchError::Options(why));
        if self.concurrency == 0 {
            return bad("concurrency must be at least 1".into());
        }
        if self.count == 0 {
            return bad("the number of requests must be positive".into());
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
        if self.load_cpus.as_ref().is_some_and(Vec::is_empty) {
            return bad("the list of CPUs is empty".into());
        }
        if !matches!(self.key_bits, 2048 | 3072 | 4096) {
            return bad(format!(
                "RSA keys of {} bits: 2048, 3072 or 4096",
                self.key_bits
            ));
        }
        match &self.challenge {
            Challenge::Static(c) if c.is_empty() => return bad("the challenge is empty".into()),
            Challenge::PerRequest(all) if (all.len() as u64) < self.count => {
                return bad(format!(
                    "{} challenges for {} requests: each request spends its own",
                    all.len(),
                    self.count
                ));
            }
            _ => {}
        }
        if !self.url.starts_with("http://") {
            return Err(BenchError::Url {
                url: self.url.clone(),
                reason: "an absolute http:// URL is needed (SCEP secures its messages, not \
                         the transport)"
                    .into(),
            });
        }
        self.ca_fingerprint
            .as_deref()
            .map(parse_fingerprint)
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_challenge_file_has_one_challenge_a_line() {
        let text = "first\n\n  second \r\nthird-with_underscore\n";
        assert_eq!(
            parse_challenge_file(text).unwrap(),
            ["first", "second", "third-with_underscore"]
        );
        assert!(parse_challenge_file("").unwrap().is_empty());
        assert!(parse_challenge_file("\n \n").unwrap().is_empty());

        let err = parse_challenge_file("a\nb\na\n").unwrap_err().to_string();
        assert!(err.contains("line 3 repeats line 1"), "{err}");
        let err = parse_challenge_file("a\nb\x07c\n").unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn challenges_stay_out_of_debug_output() {
        let text = format!("{:?}", Challenge::Static("s3cret".into()));
        assert!(!text.contains("s3cret"), "{text}");
        let text = format!("{:?}", Challenge::PerRequest(vec!["s3cret".into()]));
        assert!(
            !text.contains("s3cret") && text.contains("1 challenges"),
            "{text}"
        );
        let opts = ScepBenchOptions::new("http://x/scep", Challenge::Static("s3cret".into()));
        assert!(!format!("{opts:?}").contains("s3cret"));
    }

    #[test]
    fn each_request_gets_its_challenge() {
        let shared = Challenge::Static("same".into());
        assert_eq!(shared.for_request(0), Some("same"));
        assert_eq!(shared.for_request(99), Some("same"));
        let own = Challenge::PerRequest(vec!["a".into(), "b".into()]);
        assert_eq!(own.for_request(1), Some("b"));
        assert_eq!(own.for_request(2), None);
    }

    #[test]
    fn ciphers_fingerprints_and_cpu_lists_parse() {
        assert_eq!(parse_cipher("aes128").unwrap(), ContentCipher::Aes128Cbc);
        assert_eq!(parse_cipher("AES256").unwrap(), ContentCipher::Aes256Cbc);
        assert_eq!(parse_cipher("des").unwrap(), ContentCipher::DesCbc);
        assert_eq!(parse_cipher("des3").unwrap(), ContentCipher::DesEde3Cbc);
        assert!(parse_cipher("rc2").is_err());
        assert_eq!(cipher_name(ContentCipher::DesEde3Cbc), "des3");

        let hex64 = "ab".repeat(32);
        assert_eq!(parse_fingerprint(&hex64).unwrap(), [0xab; 32]);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_fingerprint(&colons).unwrap(), [0xab; 32]);
        assert!(parse_fingerprint("abcd").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());

        assert_eq!(parse_cpu_list("0").unwrap(), [0]);
        assert_eq!(parse_cpu_list("2,0").unwrap(), [0, 2]);
        assert_eq!(parse_cpu_list("0-2,1").unwrap(), [0, 1, 2]);
        for bad in ["", "a", "2-1", "0,", "99999"] {
            assert!(parse_cpu_list(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn options_are_checked() {
        let good =
            || ScepBenchOptions::new("http://127.0.0.1:8080/scep", Challenge::Static("c".into()));
        assert_eq!(good().check().unwrap(), None);
        let mut o = good();
        o.concurrency = 0;
        assert!(matches!(o.check(), Err(BenchError::Options(_))));
        let mut o = good();
        o.count = 0;
        assert!(o.check().is_err());
        let mut o = good();
        o.key_bits = 1024;
        assert!(o.check().is_err());
        let mut o = good();
        o.challenge = Challenge::Static(String::new());
        assert!(o.check().is_err());
        let mut o = good();
        o.count = 3;
        o.challenge = Challenge::PerRequest(vec!["a".into(), "b".into()]);
        let err = o.check().unwrap_err().to_string();
        assert!(err.contains("2 challenges for 3 requests"), "{err}");
        o.count = 2;
        assert!(o.check().is_ok());
        let mut o = good();
        o.url = "https://127.0.0.1/scep".into();
        assert!(matches!(o.check(), Err(BenchError::Url { .. })));
        let mut o = good();
        o.stall_after = Duration::ZERO;
        assert!(o.check().is_err());
        let mut o = good();
        o.load_cpus = Some(Vec::new());
        assert!(o.check().is_err());
        let mut o = good();
        o.ca_fingerprint = Some("00".repeat(32));
        assert_eq!(o.check().unwrap(), Some([0; 32]));
        o.ca_fingerprint = Some("00".into());
        assert!(o.check().is_err());
    }
}
