//! JSON Web Signature verification for ACME requests (RFC 7515, RFC 7517, RFC 7638, restricted
//! by RFC 8555 §6.2).
//!
//! ACME uses a narrow slice of JOSE, and everything outside it is refused rather than ignored:
//! a general JOSE library that silently drops an unprotected header or a second signature is
//! exactly what lets an attacker make the verifier and the request handler see different
//! things. The rules enforced here:
//!
//! - only the flattened JSON serialization, with exactly `protected`, `payload` and `signature`
//!   ([`Jws::parse`]);
//! - one asymmetric algorithm from an allow-list, fixed by the key type ([`Algorithm`]); `none`
//!   and MAC algorithms are refused on the outer signature;
//! - `jwk` xor `kid`, a mandatory `url`, no `crit` or `b64` ([`ProtectedHeader`]);
//! - no duplicate member names anywhere in the JSON we interpret ([`parse_json`]);
//! - unpadded, canonical base64url only;
//! - public keys validated once, when parsed ([`Jwk`]);
//! - external account binding per RFC 8555 §7.3.4 ([`verify_eab`]).
//!
//! Redeeming the nonce and comparing `url` with the request URL are the caller's job, since
//! both need request context; [`Jws::protected_header`] exposes what it needs.

mod alg;
mod b64;
mod eab;
mod error;
mod header;
mod json;
mod jwk;
mod jws;
mod spki;

#[cfg(test)]
mod testutil;

pub use alg::{Algorithm, MacAlgorithm};
pub use eab::verify_eab;
pub use error::JoseError;
pub use header::{KeyRef, ProtectedHeader};
pub use json::parse_json;
pub use jwk::{EcCurve, Jwk, JwkParams};
pub use jws::{Jws, MAX_JWS_BODY};
pub use spki::spki_thumbprint;
