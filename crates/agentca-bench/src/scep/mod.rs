//! The SCEP (RFC 8894) load generator: closed-loop workers, each with its own keep-alive
//! connection, sending PKCSReq messages one after another to any compliant server, and
//! checking every CertRep with `agentca_scep::client`.
//!
//! Before the measured window: GetCACaps (POST or GET), GetCACert (which certificate to
//! encrypt to), and every request made in advance, on every CPU — a fresh RSA key, a CSR with
//! the challenge, the transient self-signed certificate, the signed and encrypted message —
//! because that is the client's work, and slow. In the window, each request is sent once: a
//! failure is counted by its kind (HTTP status, pkiStatus and failInfo, what was wrong with
//! the CertRep) and not repeated, since a new attempt would need a new challenge. The serials
//! of the issued certificates are checked for duplicates. A server that answers nothing for
//! `stall_after` ends the run, with the report of what was done.

mod ca;
mod enroll;
mod options;
mod prepare;
mod report;
mod run;
mod serials;
mod url;

#[cfg(test)]
mod scepserver_tests;
#[cfg(test)]
mod test_ra;

pub use options::{
    Challenge, ScepBenchOptions, parse_challenge_file, parse_cipher, parse_cpu_list,
};
pub use report::{ScepBenchReport, ScepEnd, ScepErrors, ScepServerInfo};
pub use run::run_scep;
