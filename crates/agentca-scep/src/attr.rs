//! The SCEP authenticated attributes (RFC 8894 §3.2.1) as typed values, and the signed
//! attribute set they travel in.

use std::collections::BTreeSet;
use std::fmt;

use const_oid::ObjectIdentifier;

use crate::der::{self, Reader};
use crate::error::{Result, ScepAttribute, ScepError};
use crate::oid;

/// The most signed attributes a message may carry. A SCEP request has about eight (RFC 8894
/// §3.2.1: contentType, messageDigest, signingTime, messageType, transactionID, senderNonce,
/// and the like); the bound leaves room for what other clients add.
const MAX_SIGNED_ATTRIBUTES: usize = 64;

/// The `messageType` of a pkiMessage: an allow-list of the types agentca handles, and
/// [`MessageType::Unsupported`] for every other number.
///
/// A dispatcher matches on this with a default arm that refuses (CertRep FAILURE
/// `badRequest`): a type that parses is not a type that is authorized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MessageType {
    /// CertRep (3): the CA's answer.
    CertRep,
    /// RenewalReq (17): a request authenticated by the requester's current certificate.
    RenewalReq,
    /// PKCSReq (19): an initial request, authenticated by a challenge password.
    PkcsReq,
    /// GetCRL (22): a request for the CRL that covers a certificate.
    GetCrl,
    /// Any other number (UpdateReq 18, CertPoll 20, GetCert 21, or unknown).
    Unsupported(u32),
}

impl MessageType {
    /// The number as it travels (a decimal PrintableString).
    pub fn number(self) -> u32 {
        match self {
            Self::CertRep => 3,
            Self::RenewalReq => 17,
            Self::PkcsReq => 19,
            Self::GetCrl => 22,
            Self::Unsupported(n) => n,
        }
    }

    /// The type for a number.
    pub fn from_number(n: u32) -> Self {
        match n {
            3 => Self::CertRep,
            17 => Self::RenewalReq,
            19 => Self::PkcsReq,
            22 => Self::GetCrl,
            n => Self::Unsupported(n),
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CertRep => f.write_str("CertRep (3)"),
            Self::RenewalReq => f.write_str("RenewalReq (17)"),
            Self::PkcsReq => f.write_str("PKCSReq (19)"),
            Self::GetCrl => f.write_str("GetCRL (22)"),
            Self::Unsupported(n) => write!(f, "unsupported ({n})"),
        }
    }
}

/// The `pkiStatus` of a CertRep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PkiStatus {
    /// SUCCESS (0): the certificate is enclosed.
    Success,
    /// FAILURE (2): see the failInfo.
    Failure,
    /// PENDING (3): the request awaits manual approval.
    Pending,
}

impl PkiStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Success => "0",
            Self::Failure => "2",
            Self::Pending => "3",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "0" => Some(Self::Success),
            "2" => Some(Self::Failure),
            "3" => Some(Self::Pending),
            _ => None,
        }
    }
}

/// The `failInfo` of a CertRep FAILURE (RFC 8894 §3.2.1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailInfo {
    /// badAlg (0): unrecognized or unsupported algorithm.
    BadAlg,
    /// badMessageCheck (1): integrity check (signature, digest, decryption) failed.
    BadMessageCheck,
    /// badRequest (2): transaction not permitted or supported.
    BadRequest,
    /// badTime (3): the signingTime was not close enough to the CA's time.
    BadTime,
    /// badCertId (4): no certificate matches the criteria.
    BadCertId,
}

impl FailInfo {
    /// The number as it travels (a decimal PrintableString).
    pub fn number(self) -> u8 {
        match self {
            Self::BadAlg => 0,
            Self::BadMessageCheck => 1,
            Self::BadRequest => 2,
            Self::BadTime => 3,
            Self::BadCertId => 4,
        }
    }

    /// The RFC 8894 name.
    pub fn name(self) -> &'static str {
        match self {
            Self::BadAlg => "badAlg",
            Self::BadMessageCheck => "badMessageCheck",
            Self::BadRequest => "badRequest",
            Self::BadTime => "badTime",
            Self::BadCertId => "badCertId",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "0" => Some(Self::BadAlg),
            "1" => Some(Self::BadMessageCheck),
            "2" => Some(Self::BadRequest),
            "3" => Some(Self::BadTime),
            "4" => Some(Self::BadCertId),
            _ => None,
        }
    }
}

impl fmt::Display for FailInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.number())
    }
}

/// A `senderNonce` or `recipientNonce`: 16 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nonce([u8; Nonce::LEN]);

impl Nonce {
    /// The only length accepted.
    pub const LEN: usize = 16;

    /// A fresh nonce from the operating system's CSPRNG.
    pub fn random() -> Result<Self> {
        let mut bytes = [0u8; Self::LEN];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| ScepError::Crypto("random nonce"))?;
        Ok(Self(bytes))
    }

    /// A nonce with these bytes.
    pub fn from_bytes(bytes: [u8; Self::LEN]) -> Self {
        Self(bytes)
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// A `transactionID`: a non-empty PrintableString of at most [`TransactionId::MAX_LEN`]
/// characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TransactionId(String);

impl TransactionId {
    /// Longest accepted (clients use hashes of their key: 28 to 64 characters).
    pub const MAX_LEN: usize = 128;

    /// Validates `s` as a transaction ID.
    pub fn new(s: &str) -> Result<Self> {
        if s.is_empty() || s.len() > Self::MAX_LEN || !s.bytes().all(is_printable) {
            return Err(ScepError::InvalidInput(
                "a transactionID is 1 to 128 PrintableString characters",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// A fresh random transaction ID (32 hex digits).
    pub fn random() -> Result<Self> {
        let nonce = Nonce::random()?;
        Ok(Self(
            nonce
                .as_bytes()
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect(),
        ))
    }

    /// The ID.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// X.680 §41.4: the PrintableString alphabet.
fn is_printable(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b" '()+,-./:=?".contains(&b)
}

/// The signed attributes of a SignerInfo, decoded: every attribute type once, each with its
/// single value.
#[derive(Debug, Default)]
pub(crate) struct SignedAttributes<'a> {
    attrs: Vec<(&'a [u8], der::Tlv<'a>)>,
}

impl<'a> SignedAttributes<'a> {
    /// Decodes the content of `[0] IMPLICIT SignedAttributes`.
    ///
    /// Attribute types must be unique (RFC 5652 §5.3 for contentType and messageDigest, and
    /// the only sane reading for the SCEP ones). Attributes with several values are refused
    /// when they are one we read; unknown attributes are kept but never interpreted.
    pub(crate) fn parse(content: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(content);
        let mut attrs: Vec<(&'a [u8], der::Tlv<'a>)> = Vec::new();
        let mut seen: BTreeSet<&'a [u8]> = BTreeSet::new();
        if r.is_empty() {
            return Err(ScepError::Malformed("empty signed attributes"));
        }
        let mut count = 0;
        while !r.is_empty() {
            // Read before any signature is checked: bounded, so that a message made of
            // thousands of tiny attributes costs no more than a real one.
            count += 1;
            if count > MAX_SIGNED_ATTRIBUTES {
                return Err(ScepError::Malformed("too many signed attributes"));
            }
            let attr = r.read(der::SEQUENCE, "signed attribute")?;
            let mut a = attr.reader();
            let oid = a.read(der::OID, "attribute type")?.content;
            let values = a.read(der::SET, "attribute values")?;
            a.finish("attribute")?;
            if !seen.insert(oid) {
                return Err(duplicate(oid));
            }
            let mut v = values.reader();
            let first = v.read_any()?;
            if !v.is_empty() {
                if let Some(attribute) = known(oid) {
                    return Err(ScepError::InvalidAttribute {
                        attribute,
                        reason: "more than one value",
                    });
                }
                continue;
            }
            attrs.push((oid, first));
        }
        Ok(Self { attrs })
    }

    fn get(&self, oid: &ObjectIdentifier) -> Option<der::Tlv<'a>> {
        self.attrs
            .iter()
            .find(|(o, _)| *o == oid.as_bytes())
            .map(|(_, v)| *v)
    }

    /// The content octets of the single OBJECT IDENTIFIER value of contentType.
    pub(crate) fn content_type(&self) -> Result<&'a [u8]> {
        let v = self
            .get(&oid::CONTENT_TYPE)
            .ok_or(ScepError::MissingAttribute(ScepAttribute::ContentType))?;
        expect_tag(v, der::OID, ScepAttribute::ContentType)
    }

    pub(crate) fn message_digest(&self) -> Result<&'a [u8]> {
        let v = self
            .get(&oid::MESSAGE_DIGEST)
            .ok_or(ScepError::MissingAttribute(ScepAttribute::MessageDigest))?;
        expect_tag(v, der::OCTET_STRING, ScepAttribute::MessageDigest)
    }

    pub(crate) fn message_type(&self) -> Result<MessageType> {
        let s = self.printable(&oid::SCEP_MESSAGE_TYPE, ScepAttribute::MessageType)?;
        let n = parse_decimal(s).ok_or(ScepError::InvalidAttribute {
            attribute: ScepAttribute::MessageType,
            reason: "not a decimal number",
        })?;
        Ok(MessageType::from_number(n))
    }

    pub(crate) fn transaction_id(&self) -> Result<TransactionId> {
        let s = self.printable(&oid::SCEP_TRANSACTION_ID, ScepAttribute::TransactionId)?;
        TransactionId::new(s).map_err(|_| ScepError::InvalidAttribute {
            attribute: ScepAttribute::TransactionId,
            reason: "empty or longer than 128 characters",
        })
    }

    pub(crate) fn sender_nonce(&self) -> Result<Nonce> {
        self.nonce(&oid::SCEP_SENDER_NONCE, ScepAttribute::SenderNonce)
    }

    pub(crate) fn recipient_nonce(&self) -> Result<Nonce> {
        self.nonce(&oid::SCEP_RECIPIENT_NONCE, ScepAttribute::RecipientNonce)
    }

    pub(crate) fn pki_status(&self) -> Result<PkiStatus> {
        let s = self.printable(&oid::SCEP_PKI_STATUS, ScepAttribute::PkiStatus)?;
        PkiStatus::parse(s).ok_or(ScepError::InvalidAttribute {
            attribute: ScepAttribute::PkiStatus,
            reason: "not 0, 2 or 3",
        })
    }

    pub(crate) fn fail_info(&self) -> Result<FailInfo> {
        let s = self.printable(&oid::SCEP_FAIL_INFO, ScepAttribute::FailInfo)?;
        FailInfo::parse(s).ok_or(ScepError::InvalidAttribute {
            attribute: ScepAttribute::FailInfo,
            reason: "not 0 to 4",
        })
    }

    fn nonce(&self, oid: &ObjectIdentifier, attribute: ScepAttribute) -> Result<Nonce> {
        let v = self
            .get(oid)
            .ok_or(ScepError::MissingAttribute(attribute))?;
        let bytes = expect_tag(v, der::OCTET_STRING, attribute)?;
        let array: [u8; Nonce::LEN] =
            bytes.try_into().map_err(|_| ScepError::InvalidAttribute {
                attribute,
                reason: "not 16 bytes",
            })?;
        Ok(Nonce(array))
    }

    fn printable(&self, oid: &ObjectIdentifier, attribute: ScepAttribute) -> Result<&'a str> {
        let v = self
            .get(oid)
            .ok_or(ScepError::MissingAttribute(attribute))?;
        let bytes = expect_tag(v, der::PRINTABLE_STRING, attribute)?;
        if !bytes.iter().copied().all(is_printable) {
            return Err(ScepError::InvalidAttribute {
                attribute,
                reason: "characters outside PrintableString",
            });
        }
        std::str::from_utf8(bytes).map_err(|_| ScepError::InvalidAttribute {
            attribute,
            reason: "characters outside PrintableString",
        })
    }
}

fn expect_tag<'a>(v: der::Tlv<'a>, tag: u8, attribute: ScepAttribute) -> Result<&'a [u8]> {
    if v.tag != tag {
        return Err(ScepError::InvalidAttribute {
            attribute,
            reason: "value of the wrong type",
        });
    }
    Ok(v.content)
}

/// A canonical decimal number of at most nine digits ("19", not "019" or "+19").
fn parse_decimal(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s.len() > 1 && s.starts_with('0') {
        return None;
    }
    s.parse().ok()
}

fn known(oid: &[u8]) -> Option<ScepAttribute> {
    [
        (oid::CONTENT_TYPE, ScepAttribute::ContentType),
        (oid::MESSAGE_DIGEST, ScepAttribute::MessageDigest),
        (oid::SCEP_MESSAGE_TYPE, ScepAttribute::MessageType),
        (oid::SCEP_PKI_STATUS, ScepAttribute::PkiStatus),
        (oid::SCEP_FAIL_INFO, ScepAttribute::FailInfo),
        (oid::SCEP_SENDER_NONCE, ScepAttribute::SenderNonce),
        (oid::SCEP_RECIPIENT_NONCE, ScepAttribute::RecipientNonce),
        (oid::SCEP_TRANSACTION_ID, ScepAttribute::TransactionId),
    ]
    .into_iter()
    .find(|(o, _)| o.as_bytes() == oid)
    .map(|(_, a)| a)
}

fn duplicate(oid: &[u8]) -> ScepError {
    match known(oid) {
        Some(attribute) => ScepError::InvalidAttribute {
            attribute,
            reason: "appears more than once",
        },
        None => ScepError::Malformed("an attribute type appears more than once"),
    }
}

// ---- encoding ----

/// One encoded `Attribute ::= SEQUENCE { attrType, attrValues SET OF }` with one value.
pub(crate) fn attribute(oid_value: &ObjectIdentifier, value: &[u8]) -> Vec<u8> {
    der::sequence(&[&der::oid(oid_value), &der::tlv(der::SET, value)])
}

pub(crate) fn printable_attribute(oid_value: &ObjectIdentifier, s: &str) -> Vec<u8> {
    attribute(oid_value, &der::tlv(der::PRINTABLE_STRING, s.as_bytes()))
}

pub(crate) fn message_type_attribute(n: u32) -> Vec<u8> {
    printable_attribute(&oid::SCEP_MESSAGE_TYPE, &n.to_string())
}

pub(crate) fn pki_status_attribute(status: PkiStatus) -> Vec<u8> {
    printable_attribute(&oid::SCEP_PKI_STATUS, status.as_str())
}

pub(crate) fn fail_info_attribute(fail_info: FailInfo) -> Vec<u8> {
    printable_attribute(&oid::SCEP_FAIL_INFO, &fail_info.number().to_string())
}

pub(crate) fn nonce_attribute(oid_value: &ObjectIdentifier, bytes: &[u8]) -> Vec<u8> {
    attribute(oid_value, &der::octet_string(bytes))
}

pub(crate) fn content_type_attribute(content_type: &ObjectIdentifier) -> Vec<u8> {
    attribute(&oid::CONTENT_TYPE, &der::oid(content_type))
}

pub(crate) fn message_digest_attribute(digest: &[u8]) -> Vec<u8> {
    attribute(&oid::MESSAGE_DIGEST, &der::octet_string(digest))
}

/// signingTime (RFC 5652 §11.3): UTCTime through 2049, GeneralizedTime after.
pub(crate) fn signing_time_attribute(t: std::time::SystemTime) -> Result<Vec<u8>> {
    let t = time::OffsetDateTime::from(t);
    let value = if (1950..2050).contains(&t.year()) {
        let s = format!(
            "{:02}{:02}{:02}{:02}{:02}{:02}Z",
            t.year() % 100,
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        );
        der::tlv(der::UTC_TIME, s.as_bytes())
    } else if (0..10_000).contains(&t.year()) {
        let s = format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        );
        der::tlv(der::GENERALIZED_TIME, s.as_bytes())
    } else {
        return Err(ScepError::InvalidInput("signing time out of range"));
    };
    Ok(attribute(&oid::SIGNING_TIME, &value))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` attributes of distinct two-byte OIDs, each with one NULL value.
    fn tiny_attributes(n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|i| {
                let [hi, lo] = u16::try_from(i).unwrap().to_be_bytes();
                [
                    0x30,
                    0x08,
                    0x06,
                    0x02,
                    0x2a | (hi & 0x01),
                    lo & 0x7f,
                    0x31,
                    0x02,
                    0x05,
                    0x00,
                ]
            })
            .collect()
    }

    #[test]
    fn the_number_of_signed_attributes_is_bounded() {
        assert!(SignedAttributes::parse(&tiny_attributes(MAX_SIGNED_ATTRIBUTES)).is_ok());
        for n in [MAX_SIGNED_ATTRIBUTES + 1, 12_000] {
            let many = tiny_attributes(n);
            let started = std::time::Instant::now();
            let refused = SignedAttributes::parse(&many);
            assert!(
                matches!(
                    refused,
                    Err(ScepError::Malformed("too many signed attributes"))
                ),
                "{n}: {refused:?}"
            );
            assert!(started.elapsed() < std::time::Duration::from_millis(50));
        }
        let mut twice = tiny_attributes(2);
        twice.extend_from_slice(&tiny_attributes(1));
        assert!(SignedAttributes::parse(&twice).is_err(), "a type twice");
    }

    #[test]
    fn message_types_are_an_allow_list() {
        assert_eq!(MessageType::from_number(19), MessageType::PkcsReq);
        assert_eq!(MessageType::from_number(17), MessageType::RenewalReq);
        assert_eq!(MessageType::from_number(3), MessageType::CertRep);
        assert_eq!(MessageType::from_number(22), MessageType::GetCrl);
        assert_eq!(MessageType::GetCrl.number(), 22);
        for n in [18, 20, 21, 23, 0, 4_000_000] {
            assert_eq!(MessageType::from_number(n), MessageType::Unsupported(n));
            assert_eq!(MessageType::from_number(n).number(), n);
        }
    }

    #[test]
    fn decimals_are_canonical() {
        assert_eq!(parse_decimal("19"), Some(19));
        assert_eq!(parse_decimal("0"), Some(0));
        for bad in ["", "019", "+19", "1 9", "x", "1234567890"] {
            assert_eq!(parse_decimal(bad), None, "{bad}");
        }
    }

    #[test]
    fn transaction_ids_are_printable() {
        assert!(TransactionId::new("abc+/=").is_ok());
        assert!(TransactionId::new("").is_err());
        assert!(TransactionId::new("a*b").is_err());
        assert!(TransactionId::new(&"a".repeat(129)).is_err());
        let r = TransactionId::random().unwrap();
        assert_eq!(r.as_str().len(), 32);
    }

    fn attrs(list: &[Vec<u8>]) -> Vec<u8> {
        list.concat()
    }

    #[test]
    fn attributes_decode() {
        let nonce = [7u8; 16];
        let content = attrs(&[
            message_type_attribute(19),
            printable_attribute(&oid::SCEP_TRANSACTION_ID, "T1"),
            nonce_attribute(&oid::SCEP_SENDER_NONCE, &nonce),
        ]);
        let a = SignedAttributes::parse(&content).unwrap();
        assert_eq!(a.message_type().unwrap(), MessageType::PkcsReq);
        assert_eq!(a.transaction_id().unwrap().as_str(), "T1");
        assert_eq!(a.sender_nonce().unwrap().as_bytes(), &nonce);
        assert!(matches!(
            a.recipient_nonce(),
            Err(ScepError::MissingAttribute(ScepAttribute::RecipientNonce))
        ));
    }

    #[test]
    fn attribute_defects_are_typed() {
        let dup = attrs(&[message_type_attribute(19), message_type_attribute(17)]);
        assert!(matches!(
            SignedAttributes::parse(&dup),
            Err(ScepError::InvalidAttribute {
                attribute: ScepAttribute::MessageType,
                ..
            })
        ));
        let two_values = attribute(
            &oid::SCEP_MESSAGE_TYPE,
            &[
                der::tlv(der::PRINTABLE_STRING, b"19"),
                der::tlv(der::PRINTABLE_STRING, b"17"),
            ]
            .concat(),
        );
        assert!(SignedAttributes::parse(&two_values).is_err());
        let short_nonce = nonce_attribute(&oid::SCEP_SENDER_NONCE, &[1; 8]);
        let a = SignedAttributes::parse(&short_nonce).unwrap();
        assert!(matches!(
            a.sender_nonce(),
            Err(ScepError::InvalidAttribute {
                attribute: ScepAttribute::SenderNonce,
                ..
            })
        ));
        let utf8_type = attribute(&oid::SCEP_MESSAGE_TYPE, &der::tlv(0x0c, b"19"));
        let a = SignedAttributes::parse(&utf8_type).unwrap();
        assert!(a.message_type().is_err());
        assert!(SignedAttributes::parse(&[]).is_err());
    }

    #[test]
    fn signing_time_encodes() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let a = signing_time_attribute(t).unwrap();
        assert!(a.windows(13).any(|w| w == b"231114221320Z"));
    }
}
