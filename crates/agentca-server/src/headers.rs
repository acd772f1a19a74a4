//! How signed objects are represented over HTTP: dates, entity tags, PEM.

use axum::http::HeaderValue;
use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

/// RFC 9110 §5.6.7 IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
const IMF_FIXDATE: &[BorrowedFormatItem<'_>] = format_description!(
    "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
);

/// `t` as an HTTP date (UTC).
pub(crate) fn http_date(t: OffsetDateTime) -> HeaderValue {
    let text = t
        .to_offset(time::UtcOffset::UTC)
        .format(IMF_FIXDATE)
        .unwrap_or_default();
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static(""))
}

/// A strong entity tag for `body`: the first 128 bits of its SHA-256, quoted.
pub(crate) fn etag(body: &[u8]) -> HeaderValue {
    let digest = agentca_core::ocsp::HashAlgorithm::Sha256.digest(body);
    let text = format!("\"{}\"", hex::encode(&digest[..16]));
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("\"\""))
}

/// PEM with LF line endings, as everything agentca writes.
pub(crate) fn pem_lf(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// Whether an `If-None-Match` header value names `etag` (or is `*`).
pub(crate) fn none_match(if_none_match: &HeaderValue, etag: &HeaderValue) -> bool {
    let Ok(list) = if_none_match.to_str() else {
        return false;
    };
    let ours = etag.as_bytes();
    list.split(',').map(str::trim).any(|candidate| {
        // Weak comparison (RFC 9110 §13.1.2): W/ prefixes are ignored.
        let candidate = candidate.strip_prefix("W/").unwrap_or(candidate);
        candidate == "*" || candidate.as_bytes() == ours
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imf_fixdate() {
        let t = time::macros::datetime!(1994-11-06 08:49:37 UTC);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        let t = time::macros::datetime!(2030-01-02 03:04:05 +02:00);
        assert_eq!(http_date(t), "Wed, 02 Jan 2030 01:04:05 GMT");
    }

    #[test]
    fn etags_match() {
        let tag = etag(b"response");
        assert_eq!(tag.len(), 34);
        assert!(none_match(&tag, &tag));
        let listed = HeaderValue::from_str(&format!("\"x\", W/{}", tag.to_str().unwrap())).unwrap();
        assert!(none_match(&listed, &tag));
        assert!(none_match(&HeaderValue::from_static("*"), &tag));
        assert!(!none_match(&HeaderValue::from_static("\"other\""), &tag));
    }
}
