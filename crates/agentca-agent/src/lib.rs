//! The agent side of agentca: what keeps an agent enrolled without anyone watching.
//!
//! [`files`] keeps an agent's key and certificate chain on disk so that a reader always finds a
//! matching pair, even across a crash in the middle of a rotation; [`schedule`] decides when a
//! certificate is renewed, and [`revocation`] notices when it must be renewed at once.

pub mod acme;
pub mod daemon;
pub mod enroll;
pub mod error;
pub mod files;
pub mod http;
pub mod http01;
pub mod revocation;
pub mod scep;
pub mod schedule;

pub use error::{AgentError, Result};
