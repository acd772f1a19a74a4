//! The ACME (RFC 8555) load generator: closed-loop workers, each with its own account and
//! keep-alive connection, running complete orders — newOrder, authorizations, finalize,
//! certificate — one after another against any compliant server.
//!
//! Accounts are created before the measured window and timed apart, because a fleet of agents
//! registers once and renews many times; certificate keys are generated before it too, since
//! that is the client's work. A failed order is counted by its step and the server's problem
//! type and retried under new names, so the run completes exactly the orders asked for,
//! unless the server stops completing any: then the run ends, with the report of what was
//! done, rather than waiting forever.

mod client;
mod failure;
mod jose;
mod options;
mod order;
mod report;
mod run;

#[cfg(test)]
mod pebble_tests;

pub use options::{AcmeBenchOptions, Eab, EabCredential, parse_eab_file};
pub use report::{AcmeBenchReport, AcmeEnd, AcmeErrors, StepLatencies};
pub use run::run_acme;
