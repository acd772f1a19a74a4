//! The server a benchmark talks to, and the request URIs for it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hyper::Uri;

use crate::error::BenchError;

/// A plain-HTTP OCSP responder URL, taken apart once.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// `host:port`, to resolve and connect to.
    pub(crate) connect: String,
    /// The `Host` header: the URL's authority as written.
    pub(crate) host_header: String,
    /// The path that POST requests go to.
    pub(crate) post_path: String,
    /// The path GET requests append their encoded request to, without a trailing `/`.
    get_prefix: String,
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Self, BenchError> {
        let bad = |reason: &str| BenchError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|e| bad(&format!("{e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            // RFC 6960 Appendix A.1 defines OCSP over HTTP; responders do not serve TLS.
            Some(_) => return Err(bad("only http:// URLs are supported")),
            None => return Err(bad("an absolute http:// URL is needed")),
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user information is not supported"));
        }
        if uri.query().is_some() {
            // A GET request's encoded request is the last path segment; a query would have to
            // follow it, which no responder expects.
            return Err(bad("a query string is not supported"));
        }
        let port = authority.port_u16().unwrap_or(80);
        let path = uri.path();
        Ok(Self {
            connect: format!("{}:{port}", authority.host()),
            host_header: authority.as_str().to_owned(),
            post_path: path.to_owned(),
            get_prefix: path.trim_end_matches('/').to_owned(),
        })
    }

    /// The GET URI for a DER request: the URL's path, `/`, then the request in standard base64,
    /// URL-encoded (RFC 6960 Appendix A.1).
    pub(crate) fn get_path(&self, request_der: &[u8]) -> String {
        let encoded = STANDARD.encode(request_der);
        let mut path = String::with_capacity(self.get_prefix.len() + 1 + encoded.len() * 3 / 2);
        path.push_str(&self.get_prefix);
        path.push('/');
        for c in encoded.chars() {
            match c {
                '+' => path.push_str("%2B"),
                '/' => path.push_str("%2F"),
                '=' => path.push_str("%3D"),
                c => path.push(c),
            }
        }
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port_and_path() {
        let t = Target::parse("http://127.0.0.1:8080/ocsp").unwrap();
        assert_eq!(t.connect, "127.0.0.1:8080");
        assert_eq!(t.host_header, "127.0.0.1:8080");
        assert_eq!(t.post_path, "/ocsp");

        let t = Target::parse("http://localhost").unwrap();
        assert_eq!(t.connect, "localhost:80");
        assert_eq!(t.post_path, "/");
        assert_eq!(t.get_path(&[0xfb, 0xff]), "/%2B%2F8%3D");

        let t = Target::parse("http://[::1]:9/a/ocsp/").unwrap();
        assert_eq!(t.connect, "[::1]:9");
        assert_eq!(t.get_path(&[0xfb, 0xff]), "/a/ocsp/%2B%2F8%3D");
    }

    #[test]
    fn refuses_what_it_cannot_serve() {
        for url in [
            "https://127.0.0.1/ocsp",
            "/ocsp",
            "127.0.0.1:8080",
            "http://user@host/ocsp",
            "http://host/ocsp?x=1",
            "not a url",
        ] {
            assert!(
                matches!(Target::parse(url), Err(BenchError::Url { .. })),
                "{url}"
            );
        }
    }
}
