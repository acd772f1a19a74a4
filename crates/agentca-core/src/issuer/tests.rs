//! Issuance tests.
