//! A minimal DER reader for the CMS structures SCEP uses, and the encoding helpers the
//! builders share.
//!
//! The reader only ever sees the output of [`crate::ber::normalize`], so it handles definite
//! lengths and single-octet tags only, and hands out borrowed slices: reading never allocates
//! and never copies more than the input holds. Certificates and CSRs are not decoded here
//! (x509-parser does that); this module knows ContentInfo, SignedData, EnvelopedData and
//! their parts.

use crate::error::{Result, ScepError};

// Tags used in CMS.
pub(crate) const INTEGER: u8 = 0x02;
pub(crate) const OCTET_STRING: u8 = 0x04;
pub(crate) const NULL: u8 = 0x05;
pub(crate) const OID: u8 = 0x06;
pub(crate) const PRINTABLE_STRING: u8 = 0x13;
pub(crate) const UTC_TIME: u8 = 0x17;
pub(crate) const GENERALIZED_TIME: u8 = 0x18;
pub(crate) const SEQUENCE: u8 = 0x30;
pub(crate) const SET: u8 = 0x31;

/// `[n]` constructed, context-specific.
pub(crate) const fn context(n: u8) -> u8 {
    0xa0 | n
}

/// `[n]` primitive, context-specific.
pub(crate) const fn context_primitive(n: u8) -> u8 {
    0x80 | n
}

/// One decoded tag-length-value.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tlv<'a> {
    pub(crate) tag: u8,
    pub(crate) content: &'a [u8],
    /// The whole encoding, header included.
    pub(crate) raw: &'a [u8],
}

impl<'a> Tlv<'a> {
    /// A reader over the content of this (constructed) value.
    pub(crate) fn reader(&self) -> Reader<'a> {
        Reader::new(self.content)
    }
}

/// Reads a sequence of DER values from a slice.
#[derive(Clone, Debug)]
pub(crate) struct Reader<'a> {
    input: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(input: &'a [u8]) -> Self {
        Self { input }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.input.is_empty()
    }

    pub(crate) fn peek_tag(&self) -> Option<u8> {
        self.input.first().copied()
    }

    /// Reads the next value, whatever its tag.
    pub(crate) fn read_any(&mut self) -> Result<Tlv<'a>> {
        let input = self.input;
        let tag = *input
            .first()
            .ok_or(ScepError::Malformed("value expected"))?;
        if tag & 0x1f == 0x1f {
            return Err(ScepError::Malformed("unexpected high tag number"));
        }
        let first = *input
            .get(1)
            .ok_or(ScepError::Malformed("truncated: length expected"))?;
        let (len, header_len) = if first < 0x80 {
            (usize::from(first), 2)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return Err(ScepError::Malformed("unsupported length encoding"));
            }
            let bytes = input
                .get(2..2 + n)
                .ok_or(ScepError::Malformed("truncated: length octets"))?;
            let mut len = 0usize;
            for b in bytes {
                len = (len << 8) | usize::from(*b);
            }
            (len, 2 + n)
        };
        if input.len() - header_len < len {
            return Err(ScepError::Malformed("truncated: length exceeds the input"));
        }
        let (raw, rest) = input.split_at(header_len + len);
        self.input = rest;
        Ok(Tlv {
            tag,
            content: &raw[header_len..],
            raw,
        })
    }

    /// Reads the next value, which must carry `tag`.
    pub(crate) fn read(&mut self, tag: u8, what: &'static str) -> Result<Tlv<'a>> {
        match self.peek_tag() {
            Some(t) if t == tag => self.read_any(),
            _ => Err(ScepError::Malformed(what)),
        }
    }

    /// Reads the next value if it carries `tag`.
    pub(crate) fn read_optional(&mut self, tag: u8) -> Result<Option<Tlv<'a>>> {
        match self.peek_tag() {
            Some(t) if t == tag => self.read_any().map(Some),
            _ => Ok(None),
        }
    }

    /// Fails unless everything was read.
    pub(crate) fn finish(&self, what: &'static str) -> Result<()> {
        if self.input.is_empty() {
            Ok(())
        } else {
            Err(ScepError::Malformed(what))
        }
    }

    /// Reads a small non-negative INTEGER (a version number).
    pub(crate) fn read_small_uint(&mut self, what: &'static str) -> Result<u32> {
        let tlv = self.read(INTEGER, what)?;
        small_uint(tlv.content).ok_or(ScepError::Malformed(what))
    }
}

fn small_uint(content: &[u8]) -> Option<u32> {
    match content {
        [] => None,
        [b, ..] if b & 0x80 != 0 => None,
        _ if content.len() > 4 => None,
        _ => Some(
            content
                .iter()
                .fold(0u32, |acc, b| (acc << 8) | u32::from(*b)),
        ),
    }
}

/// Parses a whole input as exactly one value with `tag`.
pub(crate) fn single<'a>(input: &'a [u8], tag: u8, what: &'static str) -> Result<Tlv<'a>> {
    let mut r = Reader::new(input);
    let tlv = r.read(tag, what)?;
    r.finish(what)?;
    Ok(tlv)
}

/// An AlgorithmIdentifier: the OID's content octets and the parameters, if any.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AlgorithmId<'a> {
    pub(crate) oid: &'a [u8],
    pub(crate) params: Option<Tlv<'a>>,
}

pub(crate) fn read_algorithm<'a>(
    r: &mut Reader<'a>,
    what: &'static str,
) -> Result<AlgorithmId<'a>> {
    let seq = r.read(SEQUENCE, what)?;
    let mut inner = seq.reader();
    let oid = inner.read(OID, what)?.content;
    let params = if inner.is_empty() {
        None
    } else {
        Some(inner.read_any()?)
    };
    inner.finish(what)?;
    Ok(AlgorithmId { oid, params })
}

// ---- encoding ----

pub(crate) fn write_length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        // Fits in seven bits.
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let significant = &bytes[skip..];
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
}

/// Encodes one value.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    write_length(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

/// Encodes a constructed value from already encoded parts, in the given order.
pub(crate) fn constructed(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    tlv(tag, &parts.concat())
}

pub(crate) fn sequence(parts: &[&[u8]]) -> Vec<u8> {
    constructed(SEQUENCE, parts)
}

/// A DER `SET OF`: elements sorted by their encodings (X.690 §11.6).
pub(crate) fn set_of(mut elements: Vec<Vec<u8>>) -> Vec<u8> {
    elements.sort();
    tlv(SET, &elements.concat())
}

pub(crate) fn oid(oid: &const_oid::ObjectIdentifier) -> Vec<u8> {
    tlv(OID, oid.as_bytes())
}

pub(crate) fn octet_string(content: &[u8]) -> Vec<u8> {
    tlv(OCTET_STRING, content)
}

pub(crate) fn null() -> Vec<u8> {
    vec![NULL, 0]
}

/// A small non-negative INTEGER.
pub(crate) fn small_integer(value: u8) -> Vec<u8> {
    if value & 0x80 == 0 {
        vec![INTEGER, 1, value]
    } else {
        vec![INTEGER, 2, 0, value]
    }
}

/// An AlgorithmIdentifier with optional encoded parameters.
pub(crate) fn algorithm(oid_value: &const_oid::ObjectIdentifier, params: Option<&[u8]>) -> Vec<u8> {
    let o = oid(oid_value);
    match params {
        Some(p) => sequence(&[&o, p]),
        None => sequence(&[&o]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_round_trip() {
        for len in [0usize, 1, 127, 128, 255, 256, 65_535, 65_536, 1 << 20] {
            let content = vec![0u8; len];
            let enc = tlv(OCTET_STRING, &content);
            let mut r = Reader::new(&enc);
            let t = r.read(OCTET_STRING, "x").unwrap();
            assert_eq!(t.content.len(), len);
            assert_eq!(t.raw, &enc[..]);
            r.finish("x").unwrap();
        }
    }

    #[test]
    fn reader_refuses_bad_lengths() {
        for bad in [
            &[0x30u8][..],
            &[0x30, 0x05, 0x00],
            &[0x30, 0x80],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x1f, 0x01, 0x00],
        ] {
            assert!(Reader::new(bad).read_any().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn small_uints() {
        assert_eq!(small_uint(&[1]), Some(1));
        assert_eq!(small_uint(&[0, 0x80]), Some(128));
        assert_eq!(small_uint(&[0x80]), None);
        assert_eq!(small_uint(&[]), None);
        assert_eq!(small_uint(&[1, 2, 3, 4, 5]), None);
        assert_eq!(small_integer(3), vec![2, 1, 3]);
        assert_eq!(small_integer(200), vec![2, 2, 0, 200]);
    }

    #[test]
    fn set_of_sorts() {
        let s = set_of(vec![vec![0x04, 1, 2], vec![0x02, 1, 1]]);
        assert_eq!(s, vec![0x31, 6, 0x02, 1, 1, 0x04, 1, 2]);
    }
}
