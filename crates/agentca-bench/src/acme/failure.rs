//! ACME's kinds of [`Failure`]: an HTTP status with the problem document's type, and the one
//! problem a request may be retried for.

use serde_json::Value;

use crate::failure::Failure;
use crate::http::Response;

/// The problem type a retry is allowed for (RFC 8555 §6.5).
pub(crate) const BAD_NONCE: &str = "urn:ietf:params:acme:error:badNonce";

impl Failure {
    /// An HTTP error status, with the problem document's type when there is one (§6.7).
    pub(crate) fn from_response(response: &Response) -> Self {
        let problem = problem(response);
        let status = response.status.as_u16();
        match problem {
            Some((kind, detail)) => Self {
                kind: format!("HTTP {status} {kind}"),
                detail,
            },
            None => Self {
                kind: format!("HTTP {status}"),
                detail: String::from_utf8_lossy(&response.body[..response.body.len().min(200)])
                    .into_owned(),
            },
        }
    }

    /// Whether this is the retryable `badNonce` problem.
    pub(crate) fn is_bad_nonce(&self) -> bool {
        self.kind.ends_with(BAD_NONCE)
    }
}

/// `(type, detail)` of a problem document; a body that is JSON but has no type is `about:blank`
/// (RFC 7807 §4.2).
fn problem(response: &Response) -> Option<(String, String)> {
    let doc: Value = serde_json::from_slice(&response.body).ok()?;
    let doc = doc.as_object()?;
    let kind = doc
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("about:blank")
        .to_owned();
    let detail = doc
        .get("detail")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    Some((kind, detail))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use hyper::StatusCode;
    use hyper::header::HeaderMap;

    use super::*;

    fn response(status: u16, body: &str) -> Response {
        Response {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::IM_A_TEAPOT),
            headers: HeaderMap::new(),
            body: Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    #[test]
    fn problems_are_counted_by_status_and_type() {
        let f = Failure::from_response(&response(
            400,
            r#"{"type":"urn:ietf:params:acme:error:badNonce","detail":"JWS has an invalid anti-replay nonce","status":400}"#,
        ));
        assert_eq!(f.kind, "HTTP 400 urn:ietf:params:acme:error:badNonce");
        assert_eq!(f.detail, "JWS has an invalid anti-replay nonce");
        assert!(f.is_bad_nonce());

        let f = Failure::from_response(&response(503, "overloaded"));
        assert_eq!(f.kind, "HTTP 503");
        assert_eq!(f.detail, "overloaded");
        assert!(!f.is_bad_nonce());

        let f = Failure::from_response(&response(403, r#"{"detail":"no"}"#));
        assert_eq!(f.kind, "HTTP 403 about:blank");
        assert_eq!(Failure::timeout().kind, "timeout");
    }
}
