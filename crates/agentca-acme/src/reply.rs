//! What an endpoint answers, before HTTP: status, body and the headers that carry protocol
//! meaning (`Location`, `Link`, `Retry-After`). `http` adds `Replay-Nonce` and the index link.

use std::time::Duration;

use serde_json::Value;

/// A successful answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Body,
    pub(crate) location: Option<String>,
    /// Full `Link` header values (`<url>;rel="up"`).
    pub(crate) links: Vec<String>,
    pub(crate) retry_after: Option<Duration>,
}

/// The body of a [`Reply`].
#[derive(Debug)]
pub(crate) enum Body {
    /// `application/json`.
    Json(Value),
    /// `application/pem-certificate-chain`.
    PemChain(String),
    /// DER with the given content type.
    Der(Vec<u8>, &'static str),
    /// No body.
    Empty,
}

impl Reply {
    pub(crate) fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body: Body::Json(body),
            location: None,
            links: Vec::new(),
            retry_after: None,
        }
    }

    pub(crate) fn ok(body: Value) -> Self {
        Self::json(200, body)
    }

    pub(crate) fn with_location(mut self, location: String) -> Self {
        self.location = Some(location);
        self
    }

    pub(crate) fn with_link(mut self, url: &str, rel: &str) -> Self {
        self.links.push(format!("<{url}>;rel=\"{rel}\""));
        self
    }

    pub(crate) fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }
}
