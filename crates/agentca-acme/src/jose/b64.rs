//! Base64url as JOSE uses it (RFC 7515 §2): no padding, and only the canonical encoding.
//!
//! Accepting several spellings of the same bytes would let two parties disagree about whether
//! two values are equal, so padding, the standard alphabet, whitespace and non-zero trailing
//! bits are all refused. The `URL_SAFE_NO_PAD` engine already requires all of this.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::JoseError;

/// Decodes `input`; `field` names the member in the error.
pub(crate) fn decode(input: &str, field: &'static str) -> Result<Vec<u8>, JoseError> {
    URL_SAFE_NO_PAD
        .decode(input)
        .map_err(|_| JoseError::Base64(field))
}

pub(crate) fn encode(input: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictness() {
        assert_eq!(decode("AQID", "x").unwrap(), [1, 2, 3]);
        assert_eq!(decode("-_8", "x").unwrap(), [0xfb, 0xff]);
        assert_eq!(decode("", "x").unwrap(), Vec::<u8>::new());
        for bad in [
            "AQ==",  // padding
            "AQI=",  // padding
            "+/8",   // standard alphabet
            "AQ I",  // whitespace
            "AR",    // non-zero trailing bits (canonical form is "AQ")
            "AQIDB", // impossible length
            "AQ\n",  // newline
        ] {
            assert_eq!(decode(bad, "f"), Err(JoseError::Base64("f")), "{bad:?}");
        }
    }
}
