//! The ACME (RFC 8555) side of agentca: the `/acme/` routes ([`router`]) over an
//! [`AcmeService`], which authenticates every request, keeps accounts, orders and
//! authorizations in the CA's store, validates challenges, and issues and revokes through the
//! CA's `Authority` — the same path, policy and audit as every other front end.
//!
//! The part that decides who is speaking: [`jose`], which parses and verifies the JSON Web
//! Signatures that carry every ACME request, including the external account binding that ties a
//! new account to an operator-issued credential, and [`nonce`], the single-use anti-replay
//! nonces every response carries.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod account;
pub mod ari;
mod challenge;
mod error;
mod http;
pub mod identifier;
pub mod jose;
mod limits;
pub mod nonce;
mod order;
mod recent;
mod reply;
pub mod retention;
mod revoke;
mod service;
pub mod validation;

pub use error::{AcmeError, ProblemType, Subproblem};
pub use http::{router, with_protocol_headers};
pub use service::{AcmeConfig, AcmeService, IssuanceEvents, Links};
