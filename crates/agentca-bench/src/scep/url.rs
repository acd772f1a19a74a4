//! The request URLs of one SCEP server (RFC 8894 §4.1): `operation=` appended to the URL the
//! operator gave, and the PKIOperation message in the query for GET.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hyper::Uri;

use crate::error::BenchError;

/// A SCEP URL such as `http://host:8080/scep` or `http://host/cgi-bin/pkiclient.exe`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ScepUrl {
    base: String,
}

impl ScepUrl {
    pub(crate) fn parse(url: &str) -> Result<Self, BenchError> {
        let bad = |reason: String| BenchError::Url {
            url: url.to_owned(),
            reason,
        };
        let uri: Uri = url.parse().map_err(|e| bad(format!("{e}")))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("an absolute http:// URL is needed".into()));
        }
        let authority = uri.authority().ok_or_else(|| bad("no host".into()))?;
        if authority.as_str().contains('@') {
            return Err(bad("user information is not supported".into()));
        }
        if url.contains('#') {
            return Err(bad("a fragment is not supported".into()));
        }
        Ok(Self {
            base: url.to_owned(),
        })
    }

    /// `URL?operation=OP` (or `&operation=OP` after a query the operator gave).
    pub(crate) fn operation(&self, operation: &str) -> String {
        let separator = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{separator}operation={operation}", self.base)
    }

    /// The GET form of a PKIOperation: the message in standard base64, percent-encoded.
    pub(crate) fn pki_operation_get(&self, message: &[u8]) -> String {
        let encoded = STANDARD.encode(message);
        let mut url = self.operation("PKIOperation");
        url.reserve(9 + encoded.len() * 11 / 10);
        url.push_str("&message=");
        for c in encoded.chars() {
            match c {
                '+' => url.push_str("%2B"),
                '/' => url.push_str("%2F"),
                '=' => url.push_str("%3D"),
                c => url.push(c),
            }
        }
        url
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn operations_are_appended_to_the_url() {
        let url = ScepUrl::parse("http://127.0.0.1:8080/scep").unwrap();
        assert_eq!(
            url.operation("GetCACaps"),
            "http://127.0.0.1:8080/scep?operation=GetCACaps"
        );
        let get = url.pki_operation_get(&[0xfb, 0xff]);
        assert_eq!(
            get,
            "http://127.0.0.1:8080/scep?operation=PKIOperation&message=%2B%2F8%3D"
        );
        // What the server will decode it to.
        let message = get.rsplit_once("message=").unwrap().1;
        assert_eq!(
            agentca_scep::decode_message_param(message).unwrap(),
            [0xfb, 0xff]
        );

        let url = ScepUrl::parse("http://host/cgi-bin/pkiclient.exe?ca=one").unwrap();
        assert_eq!(
            url.operation("GetCACert"),
            "http://host/cgi-bin/pkiclient.exe?ca=one&operation=GetCACert"
        );
    }

    #[test]
    fn unusable_urls_are_refused() {
        for url in [
            "https://127.0.0.1/scep",
            "/scep",
            "127.0.0.1:8080",
            "http://user@host/scep",
            "http://host/scep#x",
            "not a url",
        ] {
            assert!(
                matches!(ScepUrl::parse(url), Err(BenchError::Url { .. })),
                "{url}"
            );
        }
    }
}
