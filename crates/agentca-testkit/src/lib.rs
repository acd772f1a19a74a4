//! Test support for agentca.
//!
//! Every certificate a test obtains from agentca goes through [`assert_issued_invariants`],
//! which checks the issuance invariants INV-1 and INV-3 to INV-7 of the security test plan in
//! one place, so a profile rule is written once and enforced everywhere. CA, OCSP responder and
//! SCEP RA certificates have their own checks in [`ca`].
//!
//! The checker deliberately shares no code with agentca's issuer: it parses with x509-parser
//! and states the profile from the design again, so a mistake in the issuer is not mirrored
//! here.
//!
//! Independent verifiers (INV-8, INV-9) live in [`openssl`], [`webpki_check`] and
//! [`pkilint`]. They shell out to external tools where needed; a missing tool is a notice,
//! or a failure when `AGENTCA_REQUIRE_TOOLS=1` (see [`tools`]).
//!
//! All functions here panic with a message naming the violated invariant: that is how they
//! fail a test.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
// Tests may unwrap: a panic is how they report.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

/// Fails the calling test with a message that names the broken invariant first, so a log
/// line alone says which rule a certificate broke.
macro_rules! violated {
    ($inv:expr, $($arg:tt)+) => {
        panic!("{} violated: {}", $inv, format_args!($($arg)+))
    };
}

pub mod acme;
pub mod ca;
mod der;
pub mod dns;
mod expectation;
mod extensions;
mod leaf;
mod link;
pub mod openssl;
mod parse;
pub mod pkilint;
pub mod postgres;
pub mod scep_cms;
mod serial;
pub mod tools;
mod validity;
pub mod webpki_check;

#[cfg(test)]
mod testpki;

pub use ca::{assert_ca_certificate, assert_ocsp_responder_certificate, assert_ra_certificate};
pub use expectation::{BACKDATE, Expectation};
pub use leaf::assert_issued_invariants;
pub use openssl::{
    Verdict, openssl_verify, openssl_verify_der, openssl_verify_der_with_crl,
    openssl_verify_with_crl,
};
pub use pkilint::{
    pkilint_cert, pkilint_cert_allowing, pkilint_crl, pkilint_crl_allowing, pkilint_issuer_subject,
    pkilint_ocsp, pkilint_ocsp_allowing,
};
pub use serial::assert_serials_random;
pub use webpki_check::{
    assert_webpki_revoked, webpki_verify_client, webpki_verify_client_with_crls,
};
