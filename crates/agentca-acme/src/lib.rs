//! The ACME (RFC 8555) side of agentca.
//!
//! This crate holds the protocol logic that the HTTP front end calls into. It starts with the
//! part that decides who is speaking: [`jose`], which parses and verifies the JSON Web
//! Signatures that carry every ACME request, including the external account binding that ties a
//! new account to an operator-issued credential, and [`nonce`], the single-use anti-replay
//! nonces every response carries.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod jose;
pub mod nonce;
pub mod validation;
