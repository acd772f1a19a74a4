//! Just enough DER reading to compare encodings byte for byte.
//!
//! x509-parser hands back decoded values; INV-4 asks for *byte-identical* algorithm
//! identifiers, so the two AlgorithmIdentifier encodings are cut out of the certificate here.

/// One tag-length-value element: its tag byte, its content and its whole encoding.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tlv<'a> {
    pub(crate) tag: u8,
    pub(crate) content: &'a [u8],
    pub(crate) whole: &'a [u8],
}

/// Reads one element with a single-byte tag and a definite length, and returns it with the
/// bytes that follow it. `None` when the input is not such an element.
pub(crate) fn read_tlv(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    // High tag numbers never occur in the certificate structure this module walks.
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (len_bytes, rest) = rest.split_at(count);
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let header_len = input.len() - rest.len();
    let (content, after) = rest.split_at(len);
    let whole = &input[..header_len + len];
    Some((
        Tlv {
            tag,
            content,
            whole,
        },
        after,
    ))
}

/// The two AlgorithmIdentifier encodings of a certificate (or CRL): the one inside the signed
/// part and the one next to the signature.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SignatureAlgorithms<'a> {
    pub(crate) inner: &'a [u8],
    pub(crate) outer: &'a [u8],
}

/// Cuts both signature AlgorithmIdentifiers out of a DER certificate.
pub(crate) fn certificate_signature_algorithms(cert: &[u8]) -> Option<SignatureAlgorithms<'_>> {
    const SEQUENCE: u8 = 0x30;
    const VERSION: u8 = 0xa0;
    const INTEGER: u8 = 0x02;

    let (certificate, _) = read_tlv(cert)?;
    if certificate.tag != SEQUENCE {
        return None;
    }
    let (tbs, after_tbs) = read_tlv(certificate.content)?;
    let (outer, _) = read_tlv(after_tbs)?;
    if tbs.tag != SEQUENCE || outer.tag != SEQUENCE {
        return None;
    }

    let (mut field, mut rest) = read_tlv(tbs.content)?;
    if field.tag == VERSION {
        (field, rest) = read_tlv(rest)?;
    }
    if field.tag != INTEGER {
        return None;
    }
    let (inner, _) = read_tlv(rest)?;
    if inner.tag != SEQUENCE {
        return None;
    }
    Some(SignatureAlgorithms {
        inner: inner.whole,
        outer: outer.whole,
    })
}

/// Test-only DER writing, for building extensions rcgen cannot express.
#[cfg(test)]
pub(crate) mod write {
    /// Encodes one element with a single-byte tag.
    pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len
                .to_be_bytes()
                .into_iter()
                .skip_while(|&b| b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend_from_slice(&bytes);
        }
        out.extend_from_slice(content);
        out
    }

    /// SEQUENCE of already encoded elements.
    pub(crate) fn sequence(items: &[Vec<u8>]) -> Vec<u8> {
        tlv(0x30, &items.concat())
    }

    /// A GeneralName uniformResourceIdentifier.
    pub(crate) fn uri(s: &str) -> Vec<u8> {
        tlv(0x86, s.as_bytes())
    }

    /// id-ad-ocsp, 1.3.6.1.5.5.7.48.1.
    pub(crate) const OID_AD_OCSP: &[u8] = &[0x06, 0x08, 0x2b, 6, 1, 5, 5, 7, 0x30, 1];
    /// id-ad-caIssuers, 1.3.6.1.5.5.7.48.2.
    pub(crate) const OID_AD_CA_ISSUERS: &[u8] = &[0x06, 0x08, 0x2b, 6, 1, 5, 5, 7, 0x30, 2];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_short_and_long_lengths() {
        let short = [0x04, 0x02, 0xaa, 0xbb, 0xcc];
        let (tlv, rest) = read_tlv(&short).unwrap();
        assert_eq!(
            (tlv.tag, tlv.content, rest),
            (0x04, &[0xaa, 0xbb][..], &[0xcc][..])
        );

        let mut long = vec![0x04, 0x81, 0x80];
        long.extend(std::iter::repeat_n(7u8, 0x80));
        let (tlv, rest) = read_tlv(&long).unwrap();
        assert_eq!(tlv.content.len(), 0x80);
        assert_eq!(tlv.whole.len(), long.len());
        assert!(rest.is_empty());
    }

    #[test]
    fn rejects_truncated_and_indefinite() {
        assert!(read_tlv(&[0x04, 0x05, 1, 2]).is_none());
        assert!(read_tlv(&[0x30, 0x80, 0, 0]).is_none());
        assert!(read_tlv(&[]).is_none());
        assert!(read_tlv(&[0x1f, 0x01, 0x00]).is_none());
    }

    #[test]
    fn writer_round_trips() {
        let content = vec![9u8; 300];
        let enc = write::tlv(0x04, &content);
        let (tlv, rest) = read_tlv(&enc).unwrap();
        assert_eq!(tlv.content, &content[..]);
        assert!(rest.is_empty());
    }
}
