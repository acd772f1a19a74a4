//! End-to-end tests of the `agentca` command line: each test starts the real binary against
//! its own data directory and checks what it prints, what it writes, and what independent
//! verifiers (OpenSSL, rustls-webpki, pkilint) make of the results.

// Tests may unwrap: a panic is how they report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli {
    mod harness;
    mod support;

    mod acme_attacks;
    mod acme_clients;
    mod acme_flows;
    mod agent;
    mod agent_pebble;
    mod audit;
    mod backup;
    mod balancer;
    mod crash;
    mod crash_serve;
    mod crl;
    mod deployment;
    mod drill;
    mod durability;
    mod enroll;
    mod examples;
    mod garbage;
    mod global;
    mod hsm;
    mod init;
    mod issue;
    mod multinode;
    mod postgres;
    mod retention;
    mod revoke;
    mod scep_attacks;
    mod scep_clients;
    mod serve;
    mod token;
    mod verify;
}
