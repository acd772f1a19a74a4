//! The `message=` parameter of `GET ?operation=PKIOperation&message=…` (RFC 8894 §4.1).

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::error::{Result, ScepError};
use crate::signed::MAX_MESSAGE_LEN;

/// Longest parameter value accepted: base64 of [`MAX_MESSAGE_LEN`] bytes, percent-encoded
/// three times over in the worst case.
pub const MAX_MESSAGE_PARAM_LEN: usize = MAX_MESSAGE_LEN / 3 * 4 * 3 + 64;

const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Decodes the value of a `message=` GET parameter into the pkiMessage bytes.
///
/// Takes the value either still percent-encoded (the raw query) or already decoded, and
/// undoes what real clients and intermediaries do to it:
///
/// - percent-encoding (`%2B`, `%2F`, `%3D`, `%0A`), also applied twice;
/// - a `+` that became a space (form decoding of an unescaped `+`);
/// - line breaks inside the base64;
/// - the URL-safe alphabet (`-`, `_`) instead of the standard one;
/// - missing `=` padding.
///
/// A literal `%` cannot occur in base64, so its presence means the value is still
/// percent-encoded. Inputs over [`MAX_MESSAGE_PARAM_LEN`] characters, or decoding to more than
/// [`MAX_MESSAGE_LEN`] bytes, are refused before any work proportional to them.
pub fn decode_message_param(value: &str) -> Result<Vec<u8>> {
    if value.len() > MAX_MESSAGE_PARAM_LEN {
        return Err(ScepError::TooLarge {
            len: value.len(),
            max: MAX_MESSAGE_PARAM_LEN,
        });
    }
    let mut bytes = value.as_bytes().to_vec();
    for _ in 0..3 {
        if !bytes.contains(&b'%') {
            break;
        }
        bytes = percent_decode(&bytes)?;
    }
    let cleaned: Vec<u8> = bytes
        .iter()
        .filter_map(|&b| match b {
            b' ' => Some(b'+'),
            b'\r' | b'\n' | b'\t' => None,
            b'-' => Some(b'+'),
            b'_' => Some(b'/'),
            b => Some(b),
        })
        .collect();
    if cleaned.is_empty() {
        return Err(ScepError::Malformed("empty message parameter"));
    }
    if cleaned.len() / 4 * 3 > MAX_MESSAGE_LEN + 3 {
        return Err(ScepError::TooLarge {
            len: cleaned.len() / 4 * 3,
            max: MAX_MESSAGE_LEN,
        });
    }
    let decoded = LENIENT
        .decode(&cleaned)
        .map_err(|_| ScepError::Malformed("message parameter is not base64"))?;
    if decoded.len() > MAX_MESSAGE_LEN {
        return Err(ScepError::TooLarge {
            len: decoded.len(),
            max: MAX_MESSAGE_LEN,
        });
    }
    Ok(decoded)
}

fn percent_decode(input: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            let hex = input
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(ScepError::Malformed(
                    "bad percent-encoding in message parameter",
                ))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    #[test]
    fn client_quirks_decode() {
        let data: Vec<u8> = (0u8..=255).collect();
        let b64 = STANDARD.encode(&data);
        assert!(b64.contains('+') && b64.contains('/'));
        let expect = |v: &str| assert_eq!(decode_message_param(v).unwrap(), data, "{v}");
        expect(&b64);
        // Percent-encoded (raw query), once and twice.
        let pct = b64
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        expect(&pct);
        expect(&pct.replace('%', "%25"));
        // Lowercase hex digits.
        expect(&b64.replace('+', "%2b").replace('/', "%2f"));
        // '+' turned into space by form decoding.
        expect(&b64.replace('+', " "));
        // Padding missing; only '=' escaped (macOS); line breaks.
        expect(b64.trim_end_matches('='));
        expect(&b64.replace('=', "%3D"));
        let wrapped: String = b64
            .as_bytes()
            .chunks(64)
            .map(|c| format!("{}%0A", std::str::from_utf8(c).unwrap()))
            .collect();
        expect(&wrapped);
        // URL-safe alphabet.
        expect(&b64.replace('+', "-").replace('/', "_"));
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(decode_message_param("").is_err());
        assert!(decode_message_param("%zz").is_err());
        assert!(decode_message_param("%4").is_err());
        assert!(decode_message_param("!!!!").is_err());
        let huge = "A".repeat(MAX_MESSAGE_PARAM_LEN + 1);
        assert!(matches!(
            decode_message_param(&huge),
            Err(ScepError::TooLarge { .. })
        ));
        let big = "A".repeat(MAX_MESSAGE_LEN / 3 * 4 + 400);
        assert!(matches!(
            decode_message_param(&big),
            Err(ScepError::TooLarge { .. })
        ));
    }
}
