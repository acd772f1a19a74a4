//! The crate's one error type, [`AcmeError`]: an RFC 8555 §6.7 problem in the making. Every
//! refusal, whatever layer it comes from (JWS, nonce, store, core), becomes one of these, and
//! [`AcmeError::to_problem`] is the only place that decides what the client sees.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::jose::JoseError;
use crate::nonce::NonceError;
use agentca_core::store::StoreError;

const PREFIX: &str = "urn:ietf:params:acme:error:";

/// RFC 8555 §6.7 (and RFC 9773 §7.4) problem types agentca uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemType {
    /// The request is malformed.
    Malformed,
    /// The client lacks authorization.
    Unauthorized,
    /// Bad or missing anti-replay nonce.
    BadNonce,
    /// A signature algorithm that is not supported.
    BadSignatureAlgorithm,
    /// An unacceptable public key.
    BadPublicKey,
    /// `onlyReturnExisting` for a key without an account.
    AccountDoesNotExist,
    /// newAccount without external account binding.
    ExternalAccountRequired,
    /// The CSR is unacceptable.
    BadCsr,
    /// Finalize before the order is ready.
    OrderNotReady,
    /// A rate limit was hit.
    RateLimited,
    /// The server will not issue for the identifier.
    RejectedIdentifier,
    /// The identifier type is not supported.
    UnsupportedIdentifier,
    /// Contact URL is invalid.
    InvalidContact,
    /// Contact URL scheme is not supported.
    UnsupportedContact,
    /// The revocation reason is not allowed.
    BadRevocationReason,
    /// The certificate is already revoked.
    AlreadyRevoked,
    /// RFC 9773: the certificate was already replaced.
    AlreadyReplaced,
    /// Validation: could not connect.
    Connection,
    /// Validation: DNS lookup failed.
    Dns,
    /// Validation: the response was wrong.
    IncorrectResponse,
    /// Validation: TLS failed.
    Tls,
    /// Something on our side failed; details stay in our logs.
    ServerInternal,
}

impl ProblemType {
    /// The suffix after `urn:ietf:params:acme:error:`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Unauthorized => "unauthorized",
            Self::BadNonce => "badNonce",
            Self::BadSignatureAlgorithm => "badSignatureAlgorithm",
            Self::BadPublicKey => "badPublicKey",
            Self::AccountDoesNotExist => "accountDoesNotExist",
            Self::ExternalAccountRequired => "externalAccountRequired",
            Self::BadCsr => "badCSR",
            Self::OrderNotReady => "orderNotReady",
            Self::RateLimited => "rateLimited",
            Self::RejectedIdentifier => "rejectedIdentifier",
            Self::UnsupportedIdentifier => "unsupportedIdentifier",
            Self::InvalidContact => "invalidContact",
            Self::UnsupportedContact => "unsupportedContact",
            Self::BadRevocationReason => "badRevocationReason",
            Self::AlreadyRevoked => "alreadyRevoked",
            Self::AlreadyReplaced => "alreadyReplaced",
            Self::Connection => "connection",
            Self::Dns => "dns",
            Self::IncorrectResponse => "incorrectResponse",
            Self::Tls => "tls",
            Self::ServerInternal => "serverInternal",
        }
    }

    /// The type from a suffix (validation failures report theirs by name).
    pub fn from_name(name: &str) -> Self {
        match name {
            "connection" => Self::Connection,
            "dns" => Self::Dns,
            "incorrectResponse" => Self::IncorrectResponse,
            "tls" => Self::Tls,
            "unauthorized" => Self::Unauthorized,
            "rejectedIdentifier" => Self::RejectedIdentifier,
            "malformed" => Self::Malformed,
            _ => Self::ServerInternal,
        }
    }

    /// The HTTP status this type gets unless a handler says otherwise.
    fn default_status(self) -> u16 {
        match self {
            Self::Unauthorized | Self::OrderNotReady => 403,
            Self::RateLimited => 429,
            Self::AlreadyReplaced => 409,
            Self::ServerInternal => 500,
            _ => 400,
        }
    }
}

/// One identifier's problem inside an order-level problem (RFC 8555 §6.7.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Subproblem {
    /// Full problem type URN.
    #[serde(rename = "type")]
    pub kind: String,
    /// What was wrong with this identifier.
    pub detail: String,
    /// The identifier.
    pub identifier: Value,
}

/// A refusal, with everything the response needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcmeError {
    /// The problem type.
    pub kind: ProblemType,
    /// Shown to the client; never a secret, never a validation response body.
    pub detail: String,
    /// HTTP status.
    pub status: u16,
    /// Per-identifier problems.
    pub subproblems: Vec<Subproblem>,
    /// For `rateLimited` (and `processing`): the Retry-After header.
    pub retry_after: Option<Duration>,
    /// A `Location` header (409 on a key already used by another account).
    pub location: Option<String>,
    /// For `badSignatureAlgorithm`: the algorithms we accept (RFC 8555 §6.2).
    pub algorithms: bool,
}

impl std::fmt::Display for AcmeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.detail)
    }
}

impl std::error::Error for AcmeError {}

impl AcmeError {
    /// A problem with its default status.
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            status: kind.default_status(),
            subproblems: Vec::new(),
            retry_after: None,
            location: None,
            algorithms: kind == ProblemType::BadSignatureAlgorithm,
        }
    }

    /// `malformed`.
    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::Malformed, detail)
    }

    /// `unauthorized` (403).
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::Unauthorized, detail)
    }

    /// A resource that does not exist, or that this account may not see: 404 `malformed`,
    /// so that probing ids tells nothing about other accounts.
    pub fn not_found(what: &str) -> Self {
        Self::malformed(format!("no such {what}")).with_status(404)
    }

    /// `serverInternal`; the cause goes to the log, not the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "ACME request failed");
        Self::new(
            ProblemType::ServerInternal,
            "the server could not complete the request; try again later",
        )
        .with_retry_after(Duration::from_secs(5))
        .with_status(503)
    }

    /// Overrides the HTTP status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Adds a Retry-After.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// Adds per-identifier problems.
    pub fn with_subproblems(mut self, subproblems: Vec<Subproblem>) -> Self {
        self.subproblems = subproblems;
        self
    }

    /// The problem document (RFC 7807 with RFC 8555 §6.7 types).
    pub fn to_problem(&self) -> Value {
        let mut doc = serde_json::json!({
            "type": format!("{PREFIX}{}", self.kind.name()),
            "detail": self.detail,
            "status": self.status,
        });
        if !self.subproblems.is_empty() {
            doc["subproblems"] = serde_json::to_value(&self.subproblems).unwrap_or(Value::Null);
        }
        if self.algorithms {
            doc["algorithms"] = serde_json::json!(["ES256", "ES384", "RS256", "EdDSA"]);
        }
        doc
    }
}

/// The URN of a problem type, for subproblems and stored errors.
pub(crate) fn problem_urn(kind: ProblemType) -> String {
    format!("{PREFIX}{}", kind.name())
}

impl From<JoseError> for AcmeError {
    fn from(e: JoseError) -> Self {
        let kind = match e.problem_type() {
            "badSignatureAlgorithm" => ProblemType::BadSignatureAlgorithm,
            "badPublicKey" => ProblemType::BadPublicKey,
            "unauthorized" => ProblemType::Unauthorized,
            _ => ProblemType::Malformed,
        };
        let mut err = Self::new(kind, e.to_string());
        if let JoseError::BodyTooLarge { .. } = e {
            err.status = 413;
        }
        err
    }
}

impl From<NonceError> for AcmeError {
    fn from(e: NonceError) -> Self {
        match e {
            NonceError::Unavailable => Self::internal(e),
            _ => Self::new(ProblemType::BadNonce, e.to_string()),
        }
    }
}

impl From<StoreError> for AcmeError {
    fn from(e: StoreError) -> Self {
        Self::internal(e)
    }
}

impl From<agentca_core::Error> for AcmeError {
    fn from(e: agentca_core::Error) -> Self {
        use agentca_core::Error as E;
        match &e {
            E::BadCsr(_) | E::UnsupportedKey(_) => Self::new(ProblemType::BadCsr, e.to_string()),
            E::PolicyRefused { rule, .. } => match rule.as_str() {
                "key_types" => Self::new(ProblemType::BadCsr, e.to_string()),
                "dns" | "ips" => Self::new(ProblemType::RejectedIdentifier, e.to_string()),
                _ => Self::unauthorized(e.to_string()),
            },
            E::InvalidAgentId(_) | E::UnknownAgent(_) | E::AgentDisabled(_) => {
                Self::unauthorized(e.to_string())
            }
            E::RateLimited {
                retry_after_secs, ..
            } => Self::new(ProblemType::RateLimited, e.to_string())
                .with_retry_after(Duration::from_secs(*retry_after_secs)),
            E::AlreadyRevoked(_) => Self::new(ProblemType::AlreadyRevoked, e.to_string()),
            E::UnknownSerial(_) => Self::not_found("certificate"),
            E::InvalidLifetime(_) => Self::new(ProblemType::BadCsr, e.to_string()),
            _ => Self::internal(e),
        }
    }
}

/// Result alias for the crate.
pub(crate) type Result<T, E = AcmeError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_documents_carry_type_status_and_subproblems() {
        let e = AcmeError::new(ProblemType::RejectedIdentifier, "2 identifiers refused")
            .with_subproblems(vec![Subproblem {
                kind: problem_urn(ProblemType::RejectedIdentifier),
                detail: "not allowed".into(),
                identifier: serde_json::json!({"type": "dns", "value": "x.example"}),
            }]);
        let doc = e.to_problem();
        assert_eq!(doc["type"], "urn:ietf:params:acme:error:rejectedIdentifier");
        assert_eq!(doc["status"], 400);
        assert_eq!(doc["subproblems"][0]["identifier"]["value"], "x.example");
    }

    #[test]
    fn bad_signature_algorithm_lists_the_algorithms() {
        let doc = AcmeError::from(JoseError::ForbiddenAlgorithm).to_problem();
        assert_eq!(
            doc["type"],
            "urn:ietf:params:acme:error:badSignatureAlgorithm"
        );
        assert!(doc["algorithms"].as_array().is_some_and(|a| a.len() == 4));
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let e = AcmeError::from(StoreError::Backend("disk /secret/path failed".into()));
        assert_eq!(e.kind, ProblemType::ServerInternal);
        assert!(!e.detail.contains("secret"));
        assert!(e.retry_after.is_some());
    }
}
