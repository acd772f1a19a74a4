//! Running external tools, and what happens when one is missing.
//!
//! A developer without openssl or pkilint still gets a passing local run (with a notice on
//! stderr); the project's test script sets `AGENTCA_REQUIRE_TOOLS=1`, so there a missing tool
//! fails the test instead of silently skipping a check.

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tempfile::TempDir;

/// The environment variable that turns a missing tool into a failure.
pub const REQUIRE_TOOLS_VAR: &str = "AGENTCA_REQUIRE_TOOLS";

/// Whether missing external tools must fail tests (`AGENTCA_REQUIRE_TOOLS=1`).
pub fn tools_required() -> bool {
    std::env::var(REQUIRE_TOOLS_VAR).is_ok_and(|v| v == "1")
}

/// Where `program` is on `PATH`, if it is.
pub fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Runs `program` with `args`. Returns `None` when the program is not installed, after
/// printing a notice, or panics when tools are required.
pub fn run(program: &str, args: &[&std::ffi::OsStr], purpose: &str) -> Option<Output> {
    match Command::new(program).args(args).output() {
        Ok(output) => Some(output),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            missing(program, purpose);
            None
        }
        Err(e) => panic!("could not run {program} for {purpose}: {e}"),
    }
}

/// Reports a missing tool: a panic under `AGENTCA_REQUIRE_TOOLS=1`, otherwise a notice.
pub fn missing(program: &str, purpose: &str) {
    if tools_required() {
        panic!(
            "{program} is not installed but {REQUIRE_TOOLS_VAR}=1 requires it (for {purpose}); \
             run scripts/install-test-deps.sh"
        );
    }
    eprintln!(
        "notice: {program} is not installed; skipping {purpose}. Set {REQUIRE_TOOLS_VAR}=1 to \
         make this a failure."
    );
}

/// A scratch directory for files handed to external tools; removed when dropped.
#[derive(Debug)]
pub struct Scratch {
    dir: TempDir,
}

impl Scratch {
    /// Creates an empty scratch directory.
    pub fn new() -> Self {
        match tempfile::Builder::new().prefix("agentca-testkit").tempdir() {
            Ok(dir) => Self { dir },
            Err(e) => panic!("could not create a scratch directory: {e}"),
        }
    }

    /// Writes `contents` to `name` inside the directory and returns its path.
    pub fn write(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        let written = std::fs::File::create(&path).and_then(|mut f| f.write_all(contents));
        if let Err(e) = written {
            panic!("could not write {}: {e}", path.display());
        }
        path
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

/// PEM-encodes DER blocks under one label (RFC 7468), e.g. `"CERTIFICATE"` or `"X509 CRL"`.
pub fn pem(label: &str, ders: &[&[u8]]) -> String {
    let mut out = String::new();
    for der in ders {
        out.push_str(&format!("-----BEGIN {label}-----\n"));
        let b64 = STANDARD.encode(der);
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
    }
    out
}

/// The text a tool printed, both streams, for messages.
pub fn transcript(output: &Output) -> String {
    format!(
        "exit status: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_wraps_at_64_columns() {
        let der = vec![0xabu8; 100];
        let text = pem("CERTIFICATE", &[&der]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.last().copied(), Some("-----END CERTIFICATE-----"));
        let body: String = lines[1..lines.len() - 1].concat();
        assert_eq!(STANDARD.decode(body).unwrap(), der);
    }

    #[test]
    fn missing_program_is_none_or_panics() {
        let result = std::panic::catch_unwind(|| {
            run(
                "agentca-testkit-no-such-program",
                &[],
                "a test of the tool rule",
            )
        });
        match result {
            Ok(output) => {
                assert!(!tools_required());
                assert!(output.is_none());
            }
            Err(_) => assert!(tools_required()),
        }
    }
}
