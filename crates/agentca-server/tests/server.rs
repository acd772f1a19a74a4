//! The server against real clients over TCP: each test initializes its own CA in a temporary
//! directory, runs a `Server` on loopback port 0, and talks to it with hyper, rustls, raw
//! sockets and the openssl command line; pkilint checks what it serves.

// Tests may unwrap: a panic is how they report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod server {
    mod support;

    mod crl;
    mod limits;
    mod ocsp;
    mod priming;
    mod service;
}
