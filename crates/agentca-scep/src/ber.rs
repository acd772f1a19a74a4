//! BER input, bounded: every message from the network is first rewritten into DER by
//! [`normalize`], and all further decoding reads DER only.
//!
//! Real SCEP clients send BER: indefinite lengths and OCTET STRINGs cut into chunks (OpenSSL's
//! streaming output, EJBCA, some Windows versions). Rewriting once, into definite lengths and
//! primitive strings, keeps the structural decoders simple and lets every limit be enforced in
//! one place:
//!
//! - the input size is capped by the caller before anything is read;
//! - nesting is bounded by [`MAX_DEPTH`]; the recursion below never goes deeper, whatever the
//!   input;
//! - every length is checked against the bytes actually present before anything is
//!   allocated or copied, so a length larger than the input is an error, not an allocation;
//! - an end-of-contents marker outside an indefinite-length value, an indefinite length on a
//!   primitive value, a length of more than four octets and trailing bytes are errors.
//!
//! DER input comes out byte for byte unchanged (tested), so signatures over DER parts — the
//! signed attributes, the certificates — still verify after normalization.

use crate::error::{Result, ScepError};

/// Deepest nesting of constructed values accepted. A SCEP message needs about ten levels
/// (ContentInfo → SignedData → certificates → Certificate → TBSCertificate → Name → RDN →
/// AttributeTypeAndValue); values nested inside OCTET STRINGs (extensions, the envelope) are
/// not descended into here.
pub(crate) const MAX_DEPTH: usize = 32;

const EOC: [u8; 2] = [0, 0];

/// Rewrites one BER value (the whole input, nothing may follow) into DER.
///
/// Indefinite lengths become definite, constructed string values become primitive, and
/// lengths are encoded minimally. Set ordering and BOOLEAN/INTEGER canonicity are not
/// touched: where those matter, the bytes were signed as sent.
pub(crate) fn normalize(input: &[u8]) -> Result<Vec<u8>> {
    // Most clients send DER. Checked without copying anything, it is returned as it came,
    // which is what rewriting would produce (tested): rewriting allocates and copies at every
    // level of nesting, a few percent of an enrollment's CPU.
    if is_der_shaped(input) {
        return Ok(input.to_vec());
    }
    rewrite(input)
}

/// The full rewrite, for input that is not already DER-shaped (and for every error message).
fn rewrite(input: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut pos = 0;
    convert(input, &mut pos, 0, &mut out)?;
    if pos != input.len() {
        return Err(ScepError::Malformed("trailing bytes after the message"));
    }
    Ok(out)
}

/// A decoded identifier and length.
struct Header<'a> {
    /// The identifier octets exactly as they appeared (one, or several for high tag numbers).
    identifier: &'a [u8],
    constructed: bool,
    /// `None` for an indefinite length.
    length: Option<usize>,
    /// The length is a definite one in the fewest octets (as DER requires).
    minimal_length: bool,
}

impl Header<'_> {
    /// The universal tag number of a string type that BER may send in constructed form
    /// (OCTET STRING, UTF8String, PrintableString, IA5String), or `None`.
    fn constructed_string(&self) -> Option<u8> {
        match self.identifier {
            [0x24] => Some(0x04),
            [0x2c] => Some(0x0c),
            [0x33] => Some(0x13),
            [0x36] => Some(0x16),
            _ => None,
        }
    }
}

fn read_header<'a>(input: &'a [u8], pos: &mut usize) -> Result<Header<'a>> {
    let first = *input
        .get(*pos)
        .ok_or(ScepError::Malformed("truncated: identifier expected"))?;
    let start = *pos;
    *pos += 1;
    if first & 0x1f == 0x1f {
        // High tag number form: base-128 continuation octets; at most four of them.
        let mut count = 0;
        loop {
            let b = *input
                .get(*pos)
                .ok_or(ScepError::Malformed("truncated: tag number"))?;
            *pos += 1;
            count += 1;
            if count > 4 {
                return Err(ScepError::Malformed("tag number too large"));
            }
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    let identifier = input
        .get(start..*pos)
        .ok_or(ScepError::Malformed("truncated: identifier"))?;
    let constructed = first & 0x20 != 0;

    let len_byte = *input
        .get(*pos)
        .ok_or(ScepError::Malformed("truncated: length expected"))?;
    *pos += 1;
    let mut minimal_length = true;
    let length = if len_byte < 0x80 {
        Some(usize::from(len_byte))
    } else if len_byte == 0x80 {
        minimal_length = false;
        if !constructed {
            return Err(ScepError::Malformed(
                "indefinite length on a primitive value",
            ));
        }
        None
    } else {
        let n = usize::from(len_byte & 0x7f);
        if n > 4 {
            return Err(ScepError::Malformed("length of more than four octets"));
        }
        let bytes = input
            .get(*pos..*pos + n)
            .ok_or(ScepError::Malformed("truncated: length octets"))?;
        *pos += n;
        let mut len = 0usize;
        for b in bytes {
            len = (len << 8) | usize::from(*b);
        }
        minimal_length = bytes.first() != Some(&0) && len >= 0x80;
        Some(len)
    };
    if let Some(len) = length {
        // Never trust a length before checking it against what is there.
        if input.len().saturating_sub(*pos) < len {
            return Err(ScepError::Malformed("truncated: length exceeds the input"));
        }
    }
    Ok(Header {
        identifier,
        constructed,
        length,
        minimal_length,
    })
}

/// Whether `input` is one value that [`rewrite`] would return unchanged: definite, minimal
/// lengths throughout, no constructed strings, no end-of-contents, within [`MAX_DEPTH`],
/// nothing after it. Anything else, errors included, is left to [`rewrite`].
fn is_der_shaped(input: &[u8]) -> bool {
    let mut pos = 0;
    der_shaped_value(input, &mut pos, 0) && pos == input.len()
}

fn der_shaped_value(input: &[u8], pos: &mut usize, depth: usize) -> bool {
    let Ok(header) = read_header(input, pos) else {
        return false;
    };
    let Some(len) = header.length else {
        return false;
    };
    if !header.minimal_length || header.identifier == [0x00] {
        return false;
    }
    // `read_header` checked the length against what `input` holds.
    let end = *pos + len;
    if !header.constructed {
        *pos = end;
        return true;
    }
    if depth >= MAX_DEPTH || header.constructed_string().is_some() {
        return false;
    }
    let Some(content) = input.get(..end) else {
        return false;
    };
    while *pos < end {
        if !der_shaped_value(content, pos, depth + 1) {
            return false;
        }
    }
    *pos == end
}

/// Converts the value at `pos` and appends its DER form to `out`.
fn convert(input: &[u8], pos: &mut usize, depth: usize, out: &mut Vec<u8>) -> Result<()> {
    let header = read_header(input, pos)?;
    if header.identifier == [0x00] {
        return Err(ScepError::Malformed(
            "end-of-contents outside an indefinite length",
        ));
    }
    if !header.constructed {
        let len = header.length.unwrap_or(0);
        let content = input
            .get(*pos..*pos + len)
            .ok_or(ScepError::Malformed("truncated: content"))?;
        *pos += len;
        write_tlv(out, header.identifier, content);
        return Ok(());
    }
    if depth >= MAX_DEPTH {
        return Err(ScepError::TooDeep { max: MAX_DEPTH });
    }
    if let Some(primitive_tag) = header.constructed_string() {
        let mut content = Vec::new();
        collect_chunks(
            input,
            pos,
            header.length,
            depth + 1,
            primitive_tag,
            &mut content,
        )?;
        write_tlv(out, &[primitive_tag], &content);
        return Ok(());
    }
    let mut content = Vec::new();
    for_each_child(input, pos, header.length, |input, pos| {
        convert(input, pos, depth + 1, &mut content)
    })?;
    write_tlv(out, header.identifier, &content);
    Ok(())
}

/// Calls `f` once per child value of a constructed value whose content starts at `pos`,
/// stopping at the end of a definite length or at the end-of-contents of an indefinite one.
fn for_each_child(
    input: &[u8],
    pos: &mut usize,
    length: Option<usize>,
    mut f: impl FnMut(&[u8], &mut usize) -> Result<()>,
) -> Result<()> {
    match length {
        Some(len) => {
            let end = *pos + len;
            let content = input
                .get(..end)
                .ok_or(ScepError::Malformed("truncated: content"))?;
            while *pos < end {
                f(content, pos)?;
            }
            if *pos != end {
                return Err(ScepError::Malformed("value overruns its parent"));
            }
            Ok(())
        }
        None => loop {
            match input.get(*pos..*pos + 2) {
                Some(two) if two == EOC => {
                    *pos += 2;
                    return Ok(());
                }
                Some(_) => f(input, pos)?,
                None => return Err(ScepError::Malformed("truncated: end-of-contents expected")),
            }
        },
    }
}

/// Appends the content of the chunks of a constructed string to `out`; chunks must carry the
/// primitive tag of the same string type, or be constructed strings of that type themselves.
fn collect_chunks(
    input: &[u8],
    pos: &mut usize,
    length: Option<usize>,
    depth: usize,
    primitive_tag: u8,
    out: &mut Vec<u8>,
) -> Result<()> {
    for_each_child(input, pos, length, |input, pos| {
        let chunk = read_header(input, pos)?;
        if chunk.identifier == [primitive_tag] {
            let len = chunk.length.unwrap_or(0);
            let content = input
                .get(*pos..*pos + len)
                .ok_or(ScepError::Malformed("truncated: string chunk"))?;
            *pos += len;
            out.extend_from_slice(content);
            Ok(())
        } else if chunk.identifier == [primitive_tag | 0x20] {
            if depth >= MAX_DEPTH {
                return Err(ScepError::TooDeep { max: MAX_DEPTH });
            }
            collect_chunks(input, pos, chunk.length, depth + 1, primitive_tag, out)
        } else {
            Err(ScepError::Malformed(
                "constructed string with a foreign chunk",
            ))
        }
    })
}

fn write_tlv(out: &mut Vec<u8>, identifier: &[u8], content: &[u8]) {
    out.extend_from_slice(identifier);
    crate::der::write_length(out, content.len());
    out.extend_from_slice(content);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn der_passes_through_unchanged() {
        let der = hex("30 0d 06 09 2a 86 48 86 f7 0d 01 07 01 a0 00");
        assert_eq!(normalize(&der).unwrap(), der);
        let long = {
            let mut v = vec![0x04, 0x82, 0x01, 0x00];
            v.extend(std::iter::repeat_n(0xab, 256));
            v
        };
        assert_eq!(normalize(&long).unwrap(), long);
    }

    #[test]
    fn indefinite_lengths_become_definite() {
        let ber = hex("30 80 02 01 05 30 80 05 00 00 00 00 00");
        assert_eq!(normalize(&ber).unwrap(), hex("30 07 02 01 05 30 02 05 00"));
    }

    #[test]
    fn chunked_octet_strings_are_joined() {
        // [0] EXPLICIT { OCTET STRING (constructed, indefinite) { 04 02 aa bb, 04 01 cc } }
        let ber = hex("a0 80 24 80 04 02 aa bb 04 01 cc 00 00 00 00");
        assert_eq!(normalize(&ber).unwrap(), hex("a0 05 04 03 aa bb cc"));
        // Definite-length constructed OCTET STRING, nested chunks.
        let ber = hex("24 09 04 01 01 24 04 04 02 02 03");
        assert_eq!(normalize(&ber).unwrap(), hex("04 03 01 02 03"));
    }

    #[test]
    fn non_minimal_lengths_are_minimized() {
        assert_eq!(normalize(&hex("04 81 01 ff")).unwrap(), hex("04 01 ff"));
    }

    #[test]
    fn malformed_input_is_refused() {
        for bad in [
            "",                        // nothing
            "30",                      // no length
            "30 05 02 01",             // content shorter than the length
            "30 84 ff ff ff ff",       // length far beyond the input
            "30 85 01 00 00 00 00 00", // five length octets
            "04 80 00 00",             // indefinite primitive
            "30 80 02 01 00",          // missing end-of-contents
            "30 02 00 00",             // end-of-contents in a definite value
            "00 00",                   // end-of-contents at top level
            "30 00 00",                // trailing byte
            "24 03 02 01 00",          // OCTET STRING chunk that is an INTEGER
            "1f 81 82 83 84 85 00",    // tag number too large
            "30 03 02 02 00",          // child overruns parent
        ] {
            assert!(normalize(&hex(bad)).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn deep_nesting_is_bounded() {
        for indefinite in [false, true] {
            let depth = 10_000;
            let mut v = Vec::new();
            if indefinite {
                for _ in 0..depth {
                    v.extend_from_slice(&[0x30, 0x80]);
                }
                for _ in 0..depth {
                    v.extend_from_slice(&[0, 0]);
                }
            } else {
                // Definite lengths: build inside out.
                v = vec![0x05, 0x00];
                for _ in 0..depth {
                    let mut outer = vec![0x30];
                    crate::der::write_length(&mut outer, v.len());
                    outer.extend_from_slice(&v);
                    v = outer;
                }
            }
            assert!(matches!(normalize(&v), Err(ScepError::TooDeep { .. })));
        }
        // Chunked strings nest too.
        let mut v = Vec::new();
        for _ in 0..100 {
            v.extend_from_slice(&[0x24, 0x80]);
        }
        for _ in 0..100 {
            v.extend_from_slice(&[0, 0]);
        }
        assert!(matches!(normalize(&v), Err(ScepError::TooDeep { .. })));
    }

    #[test]
    fn within_depth_is_fine() {
        let mut v = vec![0x05, 0x00];
        for _ in 0..MAX_DEPTH {
            let mut outer = vec![0x30];
            crate::der::write_length(&mut outer, v.len());
            outer.extend_from_slice(&v);
            v = outer;
        }
        assert_eq!(normalize(&v).unwrap(), v);
    }

    /// The shortcut takes only what the rewrite would return unchanged.
    fn assert_shortcut_agrees(input: &[u8]) {
        if is_der_shaped(input) {
            assert_eq!(rewrite(input).ok().as_deref(), Some(input), "{input:02x?}");
        }
        assert_eq!(normalize(input).ok(), rewrite(input).ok(), "{input:02x?}");
    }

    #[test]
    fn the_der_shortcut_agrees_with_the_rewrite() {
        for der in [
            "30 0d 06 09 2a 86 48 86 f7 0d 01 07 01 a0 00",
            "1f 81 01 01 00", // high tag number
        ] {
            let der = hex(der);
            assert!(is_der_shaped(&der));
            assert_shortcut_agrees(&der);
        }
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend(std::iter::repeat_n(0xab, 0x80));
        assert!(is_der_shaped(&long));
        assert_shortcut_agrees(&long);
        for not_der in [
            "30 80 02 01 05 00 00", // indefinite
            "24 03 04 01 aa",       // constructed OCTET STRING
            "04 81 01 ff",          // length in two octets where one does
            "04 82 00 81 ff",       // leading zero length octet
            "30 02 00 00",          // end-of-contents inside
            "30 03 02 01 00 00",    // trailing byte
        ] {
            assert!(!is_der_shaped(&hex(not_der)), "{not_der}");
            assert_shortcut_agrees(&hex(not_der));
        }
        let mut deep = vec![0x05, 0x00];
        for _ in 0..=MAX_DEPTH {
            let mut outer = vec![0x30];
            crate::der::write_length(&mut outer, deep.len());
            outer.extend_from_slice(&deep);
            deep = outer;
        }
        assert!(!is_der_shaped(&deep));
        assert!(matches!(normalize(&deep), Err(ScepError::TooDeep { .. })));
    }

    #[test]
    fn random_garbage_never_panics() {
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    // Bias towards structural bytes so that nesting actually happens.
                    match next() % 6 {
                        0 => 0x30,
                        1 => 0x80,
                        2 => 0x00,
                        3 => 0x24,
                        _ => next() as u8,
                    }
                })
                .collect();
            assert_shortcut_agrees(&bytes);
        }
    }
}
