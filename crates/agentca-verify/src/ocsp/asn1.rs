//! The parts of the RFC 6960 ASN.1 module (Appendix B.1, `EXPLICIT TAGS`) an OCSP client
//! needs: an unsigned request with one `CertID`, and the basic response.
//!
//! These are wire types only; `super` turns them into checked answers. Signed fields
//! (`tbsResponseData`, the signature algorithm) stay opaque TLVs so that the signature is
//! checked over exactly the bytes received.

use der::asn1::{Any, BitString, GeneralizedTime, Int, Null, ObjectIdentifier, OctetString};
use der::{
    Choice, DecodeValue, EncodeValue, Enumerated, FixedTag, Header, Length, Reader, Sequence, Tag,
    Writer,
};
use x509_cert::ext::Extensions;
use x509_cert::spki::AlgorithmIdentifierOwned;

/// id-pkix-ocsp-basic (RFC 6960 §4.2.1).
pub(crate) const ID_PKIX_OCSP_BASIC: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.1");
/// id-sha1, as a `CertID` hash only.
pub(crate) const ID_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
/// id-sha256.
pub(crate) const ID_SHA256: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
/// id-kp-OCSPSigning (RFC 5280 §4.2.1.12), 1.3.6.1.5.5.7.3.9, as DER content bytes.
pub(crate) const ID_KP_OCSP_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x09];

/// `CertID`.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub(crate) struct CertId {
    pub(crate) hash_algorithm: AlgorithmIdentifierOwned,
    pub(crate) issuer_name_hash: OctetString,
    pub(crate) issuer_key_hash: OctetString,
    pub(crate) serial_number: Int,
}

/// `Request`, without singleRequestExtensions (never sent).
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub(crate) struct Request {
    pub(crate) req_cert: CertId,
}

/// `TBSRequest`: version v1 (omitted as the DEFAULT), no requestorName, no extensions.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub(crate) struct TbsRequest {
    pub(crate) request_list: Vec<Request>,
}

/// `OCSPRequest`, unsigned.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub(crate) struct OcspRequest {
    pub(crate) tbs_request: TbsRequest,
}

/// `OCSPResponseStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enumerated)]
#[repr(u8)]
pub(crate) enum ResponseStatus {
    Successful = 0,
    MalformedRequest = 1,
    InternalError = 2,
    TryLater = 3,
    SigRequired = 5,
    Unauthorized = 6,
}

/// `OCSPResponse`.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub(crate) struct OcspResponse {
    pub(crate) response_status: ResponseStatus,
    #[asn1(context_specific = "0", optional = "true")]
    pub(crate) response_bytes: Option<ResponseBytes>,
}

/// `ResponseBytes`.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub(crate) struct ResponseBytes {
    pub(crate) response_type: ObjectIdentifier,
    pub(crate) response: OctetString,
}

/// `BasicOCSPResponse`.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub(crate) struct BasicResponse {
    /// `ResponseData`, kept as received: the signature covers these bytes.
    pub(crate) tbs_response_data: Any,
    /// The `AlgorithmIdentifier`, kept as received to compare with webpki's algorithm ids.
    pub(crate) signature_algorithm: Any,
    pub(crate) signature: BitString,
    #[asn1(context_specific = "0", optional = "true")]
    pub(crate) certs: Option<Vec<Any>>,
}

/// `Version ::= INTEGER { v1(0) }`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Enumerated)]
#[asn1(type = "INTEGER")]
#[repr(u8)]
pub(crate) enum Version {
    #[default]
    V1 = 0,
}

/// `ResponseData`.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub(crate) struct ResponseData {
    #[asn1(context_specific = "0", default = "Default::default")]
    pub(crate) version: Version,
    pub(crate) responder_id: ResponderId,
    pub(crate) produced_at: GeneralizedTime,
    pub(crate) responses: Vec<SingleResponse>,
    #[asn1(context_specific = "1", optional = "true")]
    pub(crate) response_extensions: Option<Extensions>,
}

/// `ResponderID`; the name is kept as its DER TLV, to compare with certificate subjects.
#[derive(Clone, Debug, PartialEq, Eq, Choice)]
pub(crate) enum ResponderId {
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", constructed = "true")]
    ByName(Any),
    /// SHA-1 of the responder's subjectPublicKey bits.
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", constructed = "true")]
    ByKey(OctetString),
}

/// `SingleResponse`.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub(crate) struct SingleResponse {
    pub(crate) cert_id: CertId,
    pub(crate) cert_status: CertStatus,
    pub(crate) this_update: GeneralizedTime,
    #[asn1(context_specific = "0", optional = "true")]
    pub(crate) next_update: Option<GeneralizedTime>,
    #[asn1(context_specific = "1", optional = "true")]
    pub(crate) single_extensions: Option<Extensions>,
}

/// `CertStatus`, the one IMPLICIT corner of the module.
#[derive(Clone, Debug, PartialEq, Eq, Choice)]
pub(crate) enum CertStatus {
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT")]
    Good(Null),
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", constructed = "true")]
    Revoked(RevokedInfo),
    #[asn1(context_specific = "2", tag_mode = "IMPLICIT")]
    Unknown(Null),
}

/// `RevokedInfo`.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub(crate) struct RevokedInfo {
    pub(crate) revocation_time: GeneralizedTime,
    #[asn1(context_specific = "0", optional = "true")]
    pub(crate) revocation_reason: Option<ReasonCode>,
}

/// A `CRLReason` ENUMERATED kept as its number, so an unknown code decodes and is reported
/// as "no reason" rather than failing the whole answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReasonCode(pub(crate) u8);

impl FixedTag for ReasonCode {
    const TAG: Tag = Tag::Enumerated;
}

impl<'a> DecodeValue<'a> for ReasonCode {
    type Error = der::Error;

    fn decode_value<R: Reader<'a>>(reader: &mut R, header: Header) -> der::Result<Self> {
        // ENUMERATED is encoded like INTEGER (X.690 §8.4).
        u8::decode_value(reader, header).map(Self)
    }
}

impl EncodeValue for ReasonCode {
    fn value_len(&self) -> der::Result<Length> {
        self.0.value_len()
    }

    fn encode_value(&self, writer: &mut impl Writer) -> der::Result<()> {
        self.0.encode_value(writer)
    }
}
