//! Load generators that measure agentca, or any server speaking the same protocol, from the
//! outside.
//!
//! The OCSP generator ([`run_ocsp`]) is closed-loop: each of `concurrency` workers holds one
//! keep-alive HTTP/1.1 connection and sends its next request when the previous answer has
//! arrived, so the figures are those of a fixed population of clients, and the latency of one
//! request is not hidden behind the queue of another. Every answer is checked to be a successful
//! OCSP response naming the certificate asked about; signatures are not verified, which would
//! make the generator rather than the server the bottleneck.
//!
//! When given the server's process id, the generator also reads the server's CPU time and
//! resident memory from `/proc` at the edges of the measured window, so that the server's cost
//! per request is measured on its own even when the generator shares the machine.
//!
//! The ACME generator ([`run_acme`]) is closed-loop in the same way, with complete certificate
//! orders instead of requests: each worker owns an account and runs one order after another,
//! and the server's CPU time is reported per completed order.
//!
//! The SCEP generator ([`run_scep`]) sends PKCSReq messages in the same closed loop, each with
//! a fresh RSA key made before the window, and reports enrollments, failures by kind and
//! duplicate serials among the issued certificates.

#![warn(missing_docs)]

mod acme;
mod affinity;
mod error;
mod failure;
mod histogram;
mod http;
mod latency;
mod proc_stat;
mod report;
mod requests;
mod run;
mod scep;
mod target;
mod units;

#[cfg(test)]
mod peer_tests;
#[cfg(test)]
mod test_pki;
#[cfg(test)]
mod test_server;

pub use acme::{
    AcmeBenchOptions, AcmeBenchReport, AcmeEnd, AcmeErrors, Eab, EabCredential, StepLatencies,
    parse_eab_file, run_acme,
};
pub use error::BenchError;
pub use latency::LatencySummary;
pub use proc_stat::{ProcessSample, sample as sample_process};
pub use report::{ErrorCounts, OcspBenchReport, StatusCounts};
pub use requests::{load_certificates, requests_for, requests_for_hash};
pub use run::{Method, OcspBenchOptions, run_ocsp};
pub use scep::{
    Challenge, ScepBenchOptions, ScepBenchReport, ScepEnd, ScepErrors, ScepServerInfo,
    parse_challenge_file, parse_cipher, parse_cpu_list, run_scep,
};
