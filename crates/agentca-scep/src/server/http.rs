//! `/scep` over HTTP (RFC 8894 §4): `?operation=GetCACaps|GetCACert|PKIOperation`, the last by
//! GET (`message=` base64) or POST (the DER body). `/scep/pkiclient.exe` is the same endpoint,
//! for clients that append the path of the first SCEP servers.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{Answer, RequestKind, ScepReply, ScepService};
use crate::param::decode_message_param;

const PKI_MESSAGE: &str = "application/x-pki-message";
const CA_RA_CERT: &str = "application/x-x509-ca-ra-cert";
/// How long a client should wait before retrying a request the CA could not finish.
const RETRY_AFTER_SECS: &str = "5";

/// The `/scep` routes, with the service as state.
pub fn router(service: Arc<ScepService>) -> Router {
    Router::new()
        .route("/scep", get(scep).post(scep))
        .route("/scep/pkiclient.exe", get(scep).post(scep))
        .with_state(service)
}

/// Every `/scep` request; an unparseable one is recorded in the audit log as refused.
async fn scep(
    State(service): State<Arc<ScepService>>,
    method: Method,
    uri: Uri,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: Bytes,
) -> Response {
    let client = peer.map(|Extension(ConnectInfo(addr))| addr.ip());
    let response = operation(&service, client, &method, &uri, &body).await;
    if let Some(BadInput(reason)) = response.extensions().get::<BadInput>() {
        service.record_refusal(serde_json::json!({
            "client": client.map(|ip| ip.to_string()),
            "request": RequestKind::Unparseable.as_str(),
            "status": response.status().as_u16(),
            "reason": reason,
        }));
    }
    response
}

async fn operation(
    service: &Arc<ScepService>,
    client: Option<IpAddr>,
    method: &Method,
    uri: &Uri,
    body: &Bytes,
) -> Response {
    let query = uri.query().unwrap_or("");
    let Some(operation) = raw_param(query, "operation") else {
        return bad_request("missing operation parameter");
    };
    match operation {
        "GetCACaps" => text(StatusCode::OK, service.ca_caps()),
        "GetCACert" => match service.ca_certs() {
            Ok(bytes) => with_type(StatusCode::OK, CA_RA_CERT, bytes),
            Err(e) => unavailable(&format!("GetCACert: {e}")),
        },
        "PKIOperation" => {
            let message = if method == Method::POST {
                body.to_vec()
            } else {
                let Some(raw) = raw_param(query, "message") else {
                    return bad_request("PKIOperation by GET needs a message parameter");
                };
                match decode_message_param(raw) {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        service
                            .events
                            .answered(RequestKind::Unparseable, Answer::BadInput);
                        return bad_request(&format!("message parameter: {e}"));
                    }
                }
            };
            match service.pki_operation(message, client).await {
                ScepReply::CertRep(bytes) => with_type(StatusCode::OK, PKI_MESSAGE, bytes),
                ScepReply::BadInput(reason) => bad_request(&reason),
                // The reason was logged; the client learns only that it may retry.
                ScepReply::Unavailable(_) => {
                    unavailable("the CA could not complete the request; retry later")
                }
            }
        }
        _ => bad_request("unknown operation (served: GetCACaps, GetCACert, PKIOperation)"),
    }
}

/// A query parameter's value as sent (still percent-encoded): the `message` value must not
/// go through form decoding, which would turn its `+` into spaces.
fn raw_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

fn with_type(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// Why a request got HTTP 400, for the audit log.
#[derive(Clone, Debug)]
struct BadInput(String);

fn bad_request(reason: &str) -> Response {
    let mut response = text(StatusCode::BAD_REQUEST, format!("{reason}\n"));
    response
        .extensions_mut()
        .insert(BadInput(reason.to_owned()));
    response
}

fn unavailable(reason: &str) -> Response {
    let mut response = text(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n"));
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECS),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::raw_param;

    #[test]
    fn parameters_are_found_without_form_decoding() {
        let q = "operation=PKIOperation&message=ab+c%2Fd==";
        assert_eq!(raw_param(q, "operation"), Some("PKIOperation"));
        assert_eq!(raw_param(q, "message"), Some("ab+c%2Fd=="));
        assert_eq!(raw_param(q, "other"), None);
        assert_eq!(raw_param("operation", "operation"), Some(""));
        assert_eq!(raw_param("xoperation=a", "operation"), None);
    }
}
