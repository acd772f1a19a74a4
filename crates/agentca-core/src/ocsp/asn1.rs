//! The RFC 6960 ASN.1 module (§4.1.1 requests, §4.2.1 responses), plus the RFC 8954 nonce.
//!
//! The module is declared `EXPLICIT TAGS` (RFC 6960 Appendix B.1), so every context tag below
//! is explicit unless the RFC writes `IMPLICIT`, as it does only inside `CertStatus`. These
//! types are the wire format only; the rest of the OCSP module converts them to and from the
//! types callers see, which is where the RFCs' value rules are applied.

use der::asn1::{Any, BitString, GeneralizedTime, Int, Null, ObjectIdentifier, OctetString};
use der::{
    Choice, DecodeValue, EncodeValue, Enumerated, FixedTag, Header, Length, Reader, Sequence, Tag,
    Writer,
};
use x509_cert::ext::Extensions;
use x509_cert::name::Name;
use x509_cert::spki::AlgorithmIdentifierOwned;

/// id-pkix-ocsp-basic (RFC 6960 §4.2.1).
pub(crate) const ID_PKIX_OCSP_BASIC: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.1");
/// id-pkix-ocsp-nonce (RFC 6960 §4.4.1, RFC 8954).
pub(crate) const ID_PKIX_OCSP_NONCE: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.2");
/// id-sha1 (RFC 3279 §2.2.1), only ever as a CertID hash.
pub(crate) const ID_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
/// id-sha256 (RFC 5754 §2.2).
pub(crate) const ID_SHA256: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");

/// `Version ::= INTEGER { v1(0) }`; only v1 exists, and DER omits it as the DEFAULT.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Enumerated)]
#[asn1(type = "INTEGER")]
#[repr(u8)]
pub(crate) enum Version {
    #[default]
    V1 = 0,
}

/// An `ENUMERATED` whose value fits a byte, kept as the raw number so that codes this module
/// does not name (e.g. CRLReason certificateHold) still decode and can be reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EnumeratedCode(pub(crate) u8);

impl FixedTag for EnumeratedCode {
    const TAG: Tag = Tag::Enumerated;
}

impl<'a> DecodeValue<'a> for EnumeratedCode {
    type Error = der::Error;

    fn decode_value<R: Reader<'a>>(reader: &mut R, header: Header) -> der::Result<Self> {
        // ENUMERATED shares INTEGER's content encoding (X.690 §8.4).
        u8::decode_value(reader, header).map(Self)
    }
}

impl EncodeValue for EnumeratedCode {
    fn value_len(&self) -> der::Result<Length> {
        self.0.value_len()
    }

    fn encode_value(&self, writer: &mut impl Writer) -> der::Result<()> {
        self.0.encode_value(writer)
    }
}

/// `CertID` (RFC 6960 §4.1.1).
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub(crate) struct CertIdAsn1 {
    pub(crate) hash_algorithm: AlgorithmIdentifierOwned,
    pub(crate) issuer_name_hash: OctetString,
    pub(crate) issuer_key_hash: OctetString,
    pub(crate) serial_number: Int,
}

/// `Request` (RFC 6960 §4.1.1).
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub(crate) struct RequestAsn1 {
    pub(crate) req_cert: CertIdAsn1,
    #[asn1(context_specific = "0", optional = "true")]
    pub(crate) single_request_extensions: Option<Extensions>,
}

/// `TBSRequest` (RFC 6960 §4.1.1), as this module writes it: no requestorName, since it only
/// means something in signed requests, which agentca's client never sends.
///
/// Untrusted requests are not decoded through this derive but by
/// `request::decode_request`, which bounds the list and reports each problem precisely.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub(crate) struct TbsRequestAsn1 {
    #[asn1(context_specific = "0", default = "Default::default")]
    pub(crate) version: Version,
    pub(crate) request_list: Vec<RequestAsn1>,
    #[asn1(context_specific = "2", optional = "true")]
    pub(crate) request_extensions: Option<Extensions>,
}

/// `OCSPRequest` (RFC 6960 §4.1.1), unsigned.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub(crate) struct OcspRequestAsn1 {
    pub(crate) tbs_request: TbsRequestAsn1,
}

/// `OCSPResponse` (RFC 6960 §4.2.1).
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub(crate) struct OcspResponseAsn1 {
    pub(crate) response_status: EnumeratedCode,
    #[asn1(context_specific = "0", optional = "true")]
    pub(crate) response_bytes: Option<ResponseBytesAsn1>,
}

/// `ResponseBytes` (RFC 6960 §4.2.1).
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub(crate) struct ResponseBytesAsn1 {
    pub(crate) response_type: ObjectIdentifier,
    pub(crate) response: OctetString,
}

/// `BasicOCSPResponse` (RFC 6960 §4.2.1).
///
/// `tbsResponseData` stays an opaque TLV: it is what the signature covers, so the signer
/// signs exactly these bytes and a verifier checks exactly the bytes that were received.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub(crate) struct BasicOcspResponseAsn1 {
    pub(crate) tbs_response_data: Any,
    pub(crate) signature_algorithm: AlgorithmIdentifierOwned,
    pub(crate) signature: BitString,
    /// Certificates are carried as opaque TLVs: the responder only forwards its own, and a
    /// verifier parses them with the certificate parser it trusts.
    #[asn1(context_specific = "0", optional = "true")]
    pub(crate) certs: Option<Vec<Any>>,
}

/// `ResponseData` (RFC 6960 §4.2.1).
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub(crate) struct ResponseDataAsn1 {
    #[asn1(context_specific = "0", default = "Default::default")]
    pub(crate) version: Version,
    pub(crate) responder_id: ResponderIdAsn1,
    pub(crate) produced_at: GeneralizedTime,
    pub(crate) responses: Vec<SingleResponseAsn1>,
    #[asn1(context_specific = "1", optional = "true")]
    pub(crate) response_extensions: Option<Extensions>,
}

/// `ResponderID` (RFC 6960 §4.2.1); both alternatives are explicitly tagged.
#[derive(Clone, Debug, PartialEq, Eq, Choice)]
pub(crate) enum ResponderIdAsn1 {
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", constructed = "true")]
    ByName(Name),
    /// `KeyHash`: SHA-1 of the responder's subjectPublicKey bits (RFC 6960 §4.2.2.3).
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", constructed = "true")]
    ByKey(OctetString),
}

/// `SingleResponse` (RFC 6960 §4.2.1).
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub(crate) struct SingleResponseAsn1 {
    pub(crate) cert_id: CertIdAsn1,
    pub(crate) cert_status: CertStatusAsn1,
    pub(crate) this_update: GeneralizedTime,
    #[asn1(context_specific = "0", optional = "true")]
    pub(crate) next_update: Option<GeneralizedTime>,
    #[asn1(context_specific = "1", optional = "true")]
    pub(crate) single_extensions: Option<Extensions>,
}

/// `CertStatus` (RFC 6960 §4.2.1), the one place the module uses IMPLICIT tags.
#[derive(Clone, Debug, PartialEq, Eq, Choice)]
pub(crate) enum CertStatusAsn1 {
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT")]
    Good(Null),
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", constructed = "true")]
    Revoked(RevokedInfoAsn1),
    /// `UnknownInfo ::= NULL`.
    #[asn1(context_specific = "2", tag_mode = "IMPLICIT")]
    Unknown(Null),
}

/// `RevokedInfo` (RFC 6960 §4.2.1); the reason is a `CRLReason` (RFC 5280 §5.3.1).
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub(crate) struct RevokedInfoAsn1 {
    pub(crate) revocation_time: GeneralizedTime,
    #[asn1(context_specific = "0", optional = "true")]
    pub(crate) revocation_reason: Option<EnumeratedCode>,
}
