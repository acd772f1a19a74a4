//! http-01 (RFC 8555 §8.3): fetch the key authorization from the identifier's web server.
//!
//! hyper speaks HTTP/1.1 over a socket connected here, to an address the policy checked; it
//! never resolves or connects by itself, and no proxy is consulted. Redirects are followed by
//! hand so each hop goes through the same lookup and policy as the first.

use std::net::IpAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::header::{ACCEPT, CONNECTION, CONTENT_LENGTH, HOST, LOCATION, USER_AGENT};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use url::{Position, Url};

use super::error::ValidationFailure;
use super::record::ValidationRecord;
use super::target::{self, Host};
use super::{Inner, Target};

/// Redirects followed before giving up (Boulder's limit too).
const MAX_REDIRECTS: usize = 10;
/// hyper's read buffer, and so the most a response head may take.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Redirect targets are shown in details up to this length.
const MAX_URL_IN_DETAIL: usize = 256;

/// Why an http-01 fetch failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    /// The exchange broke down: malformed response, reset, closed early.
    #[error("HTTP exchange with {0} failed: {1}")]
    Protocol(IpAddr, String),
    /// A redirect this validator will not follow.
    #[error("refused redirect: {0}")]
    Redirect(String),
    /// The final response was not 200.
    #[error("the challenge URL answered with HTTP status {0}, expected 200")]
    Status(u16),
    /// The body is larger than the configured limit; reading stopped there.
    #[error("the response body exceeds {0} bytes")]
    BodyTooLarge(usize),
    /// The body is not the key authorization (its contents are deliberately not shown).
    #[error("the response body does not match the key authorization")]
    BodyMismatch,
}

/// Aborts the task driving the connection when the exchange is over or abandoned (a
/// timeout drops the validation future), so no socket outlives its validation.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(super) async fn validate(
    inner: &Inner,
    target: &Target,
    token: &str,
    key_authorization: &str,
    record: &mut ValidationRecord,
) -> Result<(), ValidationFailure> {
    let port = inner.config.http01_port;
    let host = match target {
        Target::Dns(name) => name.clone(),
        Target::Ip(IpAddr::V4(v4)) => v4.to_string(),
        Target::Ip(IpAddr::V6(v6)) => format!("[{v6}]"),
    };
    let mut url = Url::parse(&format!(
        "http://{host}:{port}/.well-known/acme-challenge/{token}"
    ))
    .map_err(|_| HttpError::Redirect("challenge URL does not parse".into()))?;
    let mut next_host = Host::of(target);
    let mut visited: Vec<Url> = Vec::new();

    loop {
        *record = ValidationRecord {
            url: Some(url.to_string()),
            hostname: next_host.hostname(),
            port: Some(port.to_string()),
            ..Default::default()
        };
        let candidates = target::addresses(inner, &next_host, record).await?;
        let (stream, peer) = target::connect(inner, &candidates, port, record).await?;
        let (response, driver) = fetch(stream, &url, peer).await?;

        if is_redirect(response.status()) {
            visited.push(url.clone());
            let next = redirect_target(&response, &url, port, &visited)?;
            drop(driver);
            next_host = host_of(&next)?;
            url = next;
            continue;
        }
        let status = response.status();
        if status != StatusCode::OK {
            return Err(HttpError::Status(status.as_u16()).into());
        }
        let body = read_body(response, inner.config.max_response_bytes, peer).await?;
        drop(driver);
        // RFC 8555 §8.3: trailing whitespace is ignored; anything else must match exactly.
        return if body.trim_ascii_end() == key_authorization.as_bytes() {
            Ok(())
        } else {
            Err(HttpError::BodyMismatch.into())
        };
    }
}

async fn fetch(
    stream: TcpStream,
    url: &Url,
    peer: IpAddr,
) -> Result<(Response<Incoming>, AbortOnDrop), HttpError> {
    let protocol = |e: hyper::Error| HttpError::Protocol(peer, e.to_string());
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(64)
        .handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(protocol)?;
    let driver = AbortOnDrop(tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "http-01 connection ended with an error");
        }
    }));
    // Host carries the port only when it is not 80 (RFC 9110 §7.2), which url's
    // serialization already omits.
    let authority = &url[Position::BeforeHost..Position::AfterPort];
    let request = Request::get(&url[Position::BeforePath..Position::AfterQuery])
        .header(HOST, authority)
        .header(
            USER_AGENT,
            concat!("agentca-validator/", env!("CARGO_PKG_VERSION")),
        )
        .header(ACCEPT, "*/*")
        .header(CONNECTION, "close")
        .body(Empty::new())
        .map_err(|_| HttpError::Redirect("URL cannot be requested".into()))?;
    let response = sender.send_request(request).await.map_err(protocol)?;
    Ok((response, driver))
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// The next hop, if this validator follows it: http only, on the http-01 port, not seen
/// before, within the hop limit. Its host is resolved and checked by the caller's next
/// round, before anything connects to it.
fn redirect_target(
    response: &Response<Incoming>,
    current: &Url,
    port: u16,
    visited: &[Url],
) -> Result<Url, HttpError> {
    let location = response
        .headers()
        .get(LOCATION)
        .ok_or_else(|| HttpError::Redirect("redirect without a Location header".into()))?;
    let location = location
        .to_str()
        .map_err(|_| HttpError::Redirect("Location header is not ASCII".into()))?;
    let mut next = current
        .join(location)
        .map_err(|_| HttpError::Redirect("Location header is not a URL".into()))?;
    next.set_fragment(None);
    let shown = shorten(next.as_str());
    if visited.len() > MAX_REDIRECTS {
        return Err(HttpError::Redirect(format!(
            "more than {MAX_REDIRECTS} redirects"
        )));
    }
    if next.scheme() != "http" {
        return Err(HttpError::Redirect(format!(
            "{shown}: only http redirects are followed"
        )));
    }
    if next.port_or_known_default() != Some(port) {
        return Err(HttpError::Redirect(format!(
            "{shown}: redirects must stay on port {port}"
        )));
    }
    if visited.contains(&next) {
        return Err(HttpError::Redirect(format!("{shown}: redirect loop")));
    }
    Ok(next)
}

fn host_of(url: &Url) -> Result<Host, HttpError> {
    match url.host() {
        Some(url::Host::Domain(name)) => Ok(Host::Name(name.to_ascii_lowercase())),
        Some(url::Host::Ipv4(v4)) => Ok(Host::Ip(IpAddr::V4(v4))),
        Some(url::Host::Ipv6(v6)) => Ok(Host::Ip(IpAddr::V6(v6))),
        None => Err(HttpError::Redirect("redirect has no host".into())),
    }
}

fn shorten(s: &str) -> String {
    match s.char_indices().nth(MAX_URL_IN_DETAIL) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_owned(),
    }
}

/// Reads the body up to `limit` bytes and stops at the first frame that would exceed it.
async fn read_body(
    response: Response<Incoming>,
    limit: usize,
    peer: IpAddr,
) -> Result<Vec<u8>, HttpError> {
    let declared = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(HttpError::BodyTooLarge(limit));
    }
    let mut body = response.into_body();
    let mut buf = Vec::with_capacity(limit.min(1024));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| HttpError::Protocol(peer, e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(HttpError::BodyTooLarge(limit));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::net::IpAddr;
    use std::time::{Duration, Instant};

    use agentca_testkit::dns::FakeDns;

    use super::super::testutil::{HttpServer, KEY_AUTH, Reply, TOKEN, validator};
    use super::super::{ChallengeType, Target, ValidationFailure, Validator};

    const SECOND: Duration = Duration::from_secs(1);
    const CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

    fn loopback() -> Target {
        Target::Ip("127.0.0.1".parse().unwrap())
    }

    async fn http01(
        v: &Validator,
        target: &Target,
    ) -> Result<super::ValidationRecord, ValidationFailure> {
        v.validate(ChallengeType::Http01, target, TOKEN, KEY_AUTH)
            .await
    }

    #[tokio::test]
    async fn http01_succeeds_for_an_ip_identifier() {
        let server = HttpServer::start(|_, _| Reply::ok(&format!("{KEY_AUTH}\r\n \t"))).await;
        let v = validator(&["127.0.0.1"], server.port(), 443, None, SECOND);
        let record = http01(&v, &loopback()).await.unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            record.url.as_deref(),
            Some(format!("http://127.0.0.1:{}{CHALLENGE_PATH}{TOKEN}", server.port()).as_str())
        );
        assert_eq!(record.hostname, "127.0.0.1");
        assert_eq!(record.port, Some(server.port().to_string()));
        assert_eq!(record.address_used, Some(ip));
        let seen = server.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].path, format!("{CHALLENGE_PATH}{TOKEN}"));
        assert_eq!(seen[0].host, Some(format!("127.0.0.1:{}", server.port())));
        assert_eq!(v.connections_attempted(), 1);
    }

    #[tokio::test]
    async fn http01_succeeds_for_a_dns_identifier_and_sends_its_host() {
        let dns = FakeDns::start();
        dns.set_a("web.test", vec!["127.0.0.1".parse().unwrap()]);
        let server = HttpServer::start(|_, _| Reply::ok(KEY_AUTH)).await;
        let v = validator(&["127.0.0.1"], server.port(), 443, Some(&dns), SECOND);
        let record = http01(&v, &Target::Dns("web.test".into())).await.unwrap();
        assert_eq!(record.hostname, "web.test");
        assert_eq!(
            record.addresses_resolved,
            vec!["127.0.0.1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            server.seen.lock().unwrap()[0].host,
            Some(format!("web.test:{}", server.port()))
        );
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["addressUsed"], "127.0.0.1");
    }

    #[tokio::test]
    async fn a_wrong_body_is_an_incorrect_response_that_never_repeats_the_body() {
        let server = HttpServer::start(|_, _| Reply::ok("SECRET-BODY-d41d8cd98f00b204")).await;
        let v = validator(&["127.0.0.1"], server.port(), 443, None, SECOND);
        let err = http01(&v, &loopback()).await.unwrap_err();
        assert_eq!(err.problem_type(), "incorrectResponse");
        assert!(!err.detail().contains("SECRET"), "{err}");
        assert!(!format!("{err:?}").contains("SECRET"), "{err:?}");
        assert_eq!(
            err.record().unwrap().address_used,
            Some("127.0.0.1".parse().unwrap())
        );
    }

    #[tokio::test]
    async fn a_key_authorization_with_a_prefix_or_suffix_does_not_match() {
        for body in [
            format!(" {KEY_AUTH}"),
            format!("{KEY_AUTH}x"),
            KEY_AUTH[1..].to_owned(),
        ] {
            let server = HttpServer::start(move |_, _| Reply::ok(&body)).await;
            let v = validator(&["127.0.0.1"], server.port(), 443, None, SECOND);
            let err = http01(&v, &loopback()).await.unwrap_err();
            assert_eq!(err.problem_type(), "incorrectResponse");
        }
    }

    #[tokio::test]
    async fn a_404_is_an_incorrect_response() {
        let server = HttpServer::start(|_, _| Reply::status(404, KEY_AUTH)).await;
        let v = validator(&["127.0.0.1"], server.port(), 443, None, SECOND);
        let err = http01(&v, &loopback()).await.unwrap_err();
        assert_eq!(err.problem_type(), "incorrectResponse");
        assert!(err.detail().contains("404"), "{err}");
    }

    #[tokio::test]
    async fn an_oversized_body_is_refused_declared_or_chunked() {
        let big = format!("{KEY_AUTH}{}", " ".repeat(5000));
        let declared = HttpServer::start(move |_, _| Reply::ok(&big)).await;
        let v = validator(&["127.0.0.1"], declared.port(), 443, None, SECOND);
        let err = http01(&v, &loopback()).await.unwrap_err();
        assert_eq!(err.problem_type(), "incorrectResponse");
        assert!(err.detail().contains("4096"), "{err}");

        let chunked = HttpServer::start(|_, _| {
            let mut reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for _ in 0..100 {
                reply.extend_from_slice(b"64\r\n");
                reply.extend_from_slice(&[b'a'; 100]);
                reply.extend_from_slice(b"\r\n");
            }
            reply.extend_from_slice(b"0\r\n\r\n");
            Reply::Raw(reply)
        })
        .await;
        let v = validator(&["127.0.0.1"], chunked.port(), 443, None, SECOND);
        let err = http01(&v, &loopback()).await.unwrap_err();
        assert_eq!(err.problem_type(), "incorrectResponse");
        assert!(err.detail().contains("4096"), "{err}");
    }

    #[tokio::test]
    async fn a_trickling_server_fails_within_the_timeout() {
        for reply in [
            // Headers that never end, and a body that never ends.
            b"HTTP/1.1 200 OK\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_vec(),
            format!("HTTP/1.1 200 OK\r\nContent-Length: 4000\r\n\r\n{KEY_AUTH}").into_bytes(),
        ] {
            let server = HttpServer::start(move |_, _| {
                Reply::Trickle(reply.clone(), Duration::from_millis(50))
            })
            .await;
            let timeout = Duration::from_millis(500);
            let v = validator(&["127.0.0.1"], server.port(), 443, None, timeout);
            let start = Instant::now();
            let err = http01(&v, &loopback()).await.unwrap_err();
            let elapsed = start.elapsed();
            assert_eq!(err.problem_type(), "connection", "{err}");
            assert!(err.detail().contains("timed out"), "{err}");
            assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
            assert_eq!(
                err.record().unwrap().address_used,
                Some("127.0.0.1".parse().unwrap())
            );
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connection_problem() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let v = validator(&["127.0.0.1"], port, 443, None, SECOND);
        let err = http01(&v, &loopback()).await.unwrap_err();
        assert_eq!(err.problem_type(), "connection", "{err}");
    }

    #[tokio::test]
    async fn allowed_redirects_are_followed_and_recorded() {
        let dns = FakeDns::start();
        dns.set_a("other.test", vec!["127.0.0.1".parse().unwrap()]);
        let server = HttpServer::start(|path, port| match path {
            "/final" => Reply::ok(KEY_AUTH),
            "/second" => Reply::redirect("third"),
            "/third" => Reply::redirect(&format!("http://Other.Test:{port}/final#fragment")),
            _ => Reply::redirect("/second"),
        })
        .await;
        let port = server.port();
        let v = validator(&["127.0.0.1"], port, 443, Some(&dns), SECOND);
        let record = http01(&v, &loopback()).await.unwrap();
        assert_eq!(record.url, Some(format!("http://other.test:{port}/final")));
        assert_eq!(record.hostname, "other.test");
        assert_eq!(record.address_used, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(server.accepted(), 4);
        assert_eq!(dns.queries("other.test", "A"), 1);
        let seen = server.seen.lock().unwrap().clone();
        let paths: Vec<_> = seen.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                &format!("{CHALLENGE_PATH}{TOKEN}"),
                "/second",
                "/third",
                "/final"
            ]
        );
        assert_eq!(seen[3].host, Some(format!("other.test:{port}")));
    }

    #[tokio::test]
    async fn redirects_off_policy_are_refused_without_connecting() {
        let dns = FakeDns::start();
        dns.set_a("refused.test", vec!["10.0.0.1".parse().unwrap()]);
        let cases: [(&str, &str); 7] = [
            ("http://127.0.0.3:{port}/x", "127.0.0.3"),
            ("http://[::1]:{port}/x", "::1"),
            ("http://refused.test:{port}/x", "10.0.0.1"),
            ("https://127.0.0.1:{port}/x", "only http"),
            ("ftp://127.0.0.1:{port}/x", "only http"),
            ("http://127.0.0.1:{other}/x", "port"),
            ("http://127.0.0.1/x", "port"),
        ];
        for (location, expected) in cases {
            let server = HttpServer::start(move |_, port| {
                let other = port.wrapping_add(1).max(1);
                Reply::redirect(
                    &location
                        .replace("{port}", &port.to_string())
                        .replace("{other}", &other.to_string()),
                )
            })
            .await;
            let v = validator(&["127.0.0.1"], server.port(), 443, Some(&dns), SECOND);
            let err = http01(&v, &loopback()).await.unwrap_err();
            assert_eq!(err.problem_type(), "connection", "{location}: {err}");
            assert!(err.detail().contains(expected), "{location}: {err}");
            assert_eq!(server.accepted(), 1, "{location}");
            assert_eq!(v.target_connections_attempted(), 1, "{location}");
        }
    }

    fn hops(limit: u32) -> impl Fn(&str, u16) -> Reply + Send + Sync + 'static {
        move |path, _| {
            let n: u32 = path
                .strip_prefix("/hop/")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            if n >= limit {
                Reply::ok(KEY_AUTH)
            } else {
                Reply::redirect(&format!("/hop/{}", n + 1))
            }
        }
    }

    #[tokio::test]
    async fn ten_redirects_are_followed_and_an_eleventh_is_not() {
        let server = HttpServer::start(hops(10)).await;
        let v = validator(&["127.0.0.1"], server.port(), 443, None, SECOND);
        http01(&v, &loopback()).await.unwrap();
        assert_eq!(server.accepted(), 11);

        let server = HttpServer::start(hops(11)).await;
        let v = validator(&["127.0.0.1"], server.port(), 443, None, SECOND);
        let err = http01(&v, &loopback()).await.unwrap_err();
        assert_eq!(err.problem_type(), "connection");
        assert!(err.detail().contains("more than 10 redirects"), "{err}");
        assert_eq!(server.accepted(), 11);
    }

    #[tokio::test]
    async fn a_redirect_loop_is_refused() {
        let server = HttpServer::start(|path, port| match path {
            "/a" => Reply::redirect("/b"),
            "/b" => Reply::redirect(&format!("http://127.0.0.1:{port}/a")),
            _ => Reply::redirect("/a"),
        })
        .await;
        let v = validator(&["127.0.0.1"], server.port(), 443, None, SECOND);
        let err = http01(&v, &loopback()).await.unwrap_err();
        assert_eq!(err.problem_type(), "connection");
        assert!(err.detail().contains("loop"), "{err}");
        assert_eq!(server.accepted(), 3);
    }

    #[tokio::test]
    async fn a_rebinding_name_is_connected_at_the_address_that_was_checked() {
        let dns = FakeDns::start();
        dns.set_a_alternating(
            "rebind.test",
            vec!["127.0.0.1".parse().unwrap()],
            vec!["127.0.0.3".parse().unwrap()],
        );
        let server = HttpServer::start(|_, _| Reply::ok(KEY_AUTH)).await;
        let v = validator(&["127.0.0.1"], server.port(), 443, Some(&dns), SECOND);
        let target = Target::Dns("rebind.test".into());
        let record = http01(&v, &target).await.unwrap();
        assert_eq!(
            record.addresses_resolved,
            vec!["127.0.0.1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(record.address_used, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(dns.queries("rebind.test", "A"), 1, "resolved exactly once");
        assert_eq!(server.accepted(), 1);

        // The next answer is the refused one: refused before any connection.
        let err = http01(&v, &target).await.unwrap_err();
        assert_eq!(err.problem_type(), "connection");
        assert!(err.detail().contains("127.0.0.3"), "{err}");
        assert_eq!(dns.queries("rebind.test", "A"), 2);
        assert_eq!(v.target_connections_attempted(), 1);
    }
}
