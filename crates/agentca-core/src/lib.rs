//! The agentca CA core.
//!
//! Roles are kept apart as in Boulder, even inside one process: [`csr`] parses what a front end
//! received, [`policy`] decides, [`issuer`] builds the certificate from the decision alone, lints
//! it before the key touches it and signs through the narrow [`signer::Signer`] interface, and
//! the store records. [`ca`] creates and loads the CA hierarchy; [`crl`] and [`ocsp`] encode
//! revocation status; [`audit`] keeps the hash-chained audit log.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// A fail point of the crash tests (`tests/failpoints.rs`, REL-1 of the security test plan):
/// nothing at all unless the `fail` crate's `failpoints` feature is on, which only test builds
/// turn on, and a test configures the point. Its `return` action makes the function fail as a
/// storage backend error would.
macro_rules! fail_point {
    ($name:literal) => {
        fail::fail_point!($name, |_| Err($crate::Error::Store(
            $crate::store::StoreError::Backend(concat!("fail point ", $name).into())
        )))
    };
}

pub mod audit;
pub mod backup;
pub mod ca;
pub mod crl;
pub mod csr;
mod error;
pub mod identity;
pub mod issuer;
pub mod keyfile;
pub mod ocsp;
pub mod pkcs11;
pub mod policy;
pub mod profile;
pub mod reconcile;
pub mod refusals;
pub mod replacement;
pub mod retention;
pub mod signer;
pub mod status;
pub mod token;

pub use agentca_store as store;
pub use error::{Error, Result};
