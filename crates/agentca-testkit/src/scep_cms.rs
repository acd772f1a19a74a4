//! A SCEP client for tests (RFC 8894) built on RustCrypto's `cms`, not on the server's own CMS
//! code: it encodes PKCSReq messages and reads CertReps with another implementation of RFC 5652,
//! so that a server test does not only prove that the codec agrees with itself.
//!
//! Only what the tests need: RSA requesters, SHA-256, AES-128-CBC, and CertReps signed by an
//! RSA RA certificate.

// A test helper: a malformed input or reply is a failed test, reported where it happened.
#![allow(clippy::expect_used, clippy::panic)]

use cms::builder::{
    ContentEncryptionAlgorithm, EnvelopedDataBuilder, KeyEncryptionInfo,
    KeyTransRecipientInfoBuilder, SignedDataBuilder, SignerInfoBuilder,
};
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::ContentInfo;
use cms::enveloped_data::{EnvelopedData, RecipientIdentifier, RecipientInfo};
use cms::signed_data::{EncapsulatedContentInfo, SignedData, SignerIdentifier};
use const_oid::ObjectIdentifier;
use const_oid::db::{rfc5911, rfc5912};
use der::asn1::{OctetString, PrintableString, SetOfVec};
use der::{Any, Decode, Encode, Tag};
use rand_core::UnwrapErr;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::signature::Verifier;
use sha2_011::{Digest, Sha256};
use x509_cert::Certificate;
use x509_cert::attr::Attribute;
use x509_cert::spki::AlgorithmIdentifierOwned;

/// SCEP's attributes (RFC 8894 §3.2.1).
const MESSAGE_TYPE: &str = "2.16.840.1.113733.1.9.2";
const PKI_STATUS: &str = "2.16.840.1.113733.1.9.3";
const FAIL_INFO: &str = "2.16.840.1.113733.1.9.4";
const SENDER_NONCE: &str = "2.16.840.1.113733.1.9.5";
const RECIPIENT_NONCE: &str = "2.16.840.1.113733.1.9.6";
const TRANSACTION_ID: &str = "2.16.840.1.113733.1.9.7";
/// `messageDigest` (RFC 5652 §11.2).
const MESSAGE_DIGEST: ObjectIdentifier = rfc5911::ID_MESSAGE_DIGEST;

/// A request as sent, and what its reply must echo.
pub struct CmsRequest {
    /// The pkiMessage, DER.
    pub der: Vec<u8>,
    /// Its transactionID.
    pub transaction_id: String,
    /// Its senderNonce, which the reply's recipientNonce must repeat.
    pub sender_nonce: [u8; 16],
}

/// What a CertRep said.
#[derive(Debug, PartialEq, Eq)]
pub enum CmsReply {
    /// SUCCESS, with the certificates of the degenerate PKCS#7 (DER), issued one first.
    Success(Vec<Vec<u8>>),
    /// FAILURE with its failInfo number (RFC 8894 §3.2.1.4.2).
    Failure(u8),
    /// PENDING.
    Pending,
}

fn attribute(oid: &str, value: Any) -> Attribute {
    let mut values = SetOfVec::new();
    values
        .insert(value)
        .unwrap_or_else(|e| panic!("attribute {oid}: {e}"));
    Attribute {
        oid: oid.parse().unwrap_or_else(|e| panic!("OID {oid}: {e}")),
        values,
    }
}

fn printable(text: &str) -> Any {
    Any::encode_from(&PrintableString::new(text).expect("a printable string"))
        .expect("a printable attribute")
}

fn issuer_and_serial(cert: &Certificate) -> IssuerAndSerialNumber {
    IssuerAndSerialNumber {
        issuer: cert.tbs_certificate().issuer().clone(),
        serial_number: cert.tbs_certificate().serial_number().clone(),
    }
}

/// A pkiMessage of `message_type` (`"19"` is PKCSReq, `"17"` RenewalReq) carrying `csr`, enveloped
/// to `ra_cert` with AES-128-CBC and signed by `signer_key` (PKCS#8 RSA) under `signer_cert`.
pub fn request(
    message_type: &str,
    csr: &[u8],
    signer_cert: &[u8],
    signer_key: &[u8],
    ra_cert: &[u8],
) -> CmsRequest {
    let mut rng = UnwrapErr(getrandom::SysRng);
    let ra = Certificate::from_der(ra_cert).expect("the RA certificate");
    let ra_key = rsa::PublicKey::from_public_key_der(
        &ra.tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .expect("the RA key"),
    )
    .expect("an RSA RA key");
    let mut envelope =
        EnvelopedDataBuilder::new(None, csr, ContentEncryptionAlgorithm::Aes128Cbc, None)
            .expect("an envelope");
    envelope
        .add_recipient_info(
            KeyTransRecipientInfoBuilder::new(
                RecipientIdentifier::IssuerAndSerialNumber(issuer_and_serial(&ra)),
                KeyEncryptionInfo::Rsa(ra_key),
            )
            .expect("a recipient"),
        )
        .expect("the RA as recipient");
    let enveloped = envelope.build_with_rng(&mut rng).expect("the envelope");
    let enveloped = ContentInfo {
        content_type: rfc5911::ID_ENVELOPED_DATA,
        content: Any::encode_from(&enveloped).expect("the envelope's encoding"),
    }
    .to_der()
    .expect("the envelope's encoding");

    let mut sender_nonce = [0u8; 16];
    getrandom::fill(&mut sender_nonce).expect("random bytes");
    let transaction_id = hex_of(&Sha256::digest(csr)[..16]);
    let signer = Certificate::from_der(signer_cert).expect("the signer certificate");
    let content = EncapsulatedContentInfo {
        econtent_type: rfc5911::ID_DATA,
        econtent: Some(Any::new(Tag::OctetString, enveloped).expect("the content")),
    };
    let sha256 = AlgorithmIdentifierOwned {
        oid: rfc5912::ID_SHA_256,
        parameters: None,
    };
    let mut info = SignerInfoBuilder::new(
        SignerIdentifier::IssuerAndSerialNumber(issuer_and_serial(&signer)),
        sha256.clone(),
        &content,
        None,
    )
    .expect("a signer info");
    for (oid, value) in [
        (MESSAGE_TYPE, printable(message_type)),
        (TRANSACTION_ID, printable(&transaction_id)),
        (
            SENDER_NONCE,
            Any::encode_from(&OctetString::new(sender_nonce).expect("the nonce"))
                .expect("the nonce"),
        ),
    ] {
        info.add_signed_attribute(attribute(oid, value))
            .expect("a signed attribute");
    }
    let key = rsa::pkcs1v15::SigningKey::<Sha256>::new(
        rsa::PrivateKey::from_pkcs8_der(signer_key).expect("an RSA signer key"),
    );
    let der = SignedDataBuilder::new(&content)
        .add_digest_algorithm(sha256)
        .expect("the digest algorithm")
        .add_certificate(CertificateChoices::Certificate(signer))
        .expect("the signer certificate")
        .add_signer_info::<_, rsa::pkcs1v15::Signature>(info, &key)
        .expect("the signature")
        .build()
        .expect("the signed data")
        .to_der()
        .expect("the pkiMessage");
    CmsRequest {
        der,
        transaction_id,
        sender_nonce,
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The one value of attribute `oid`, if present.
fn value_of<'a>(attributes: &'a SetOfVec<Attribute>, oid: &str) -> Option<&'a Any> {
    let oid: ObjectIdentifier = oid.parse().ok()?;
    let attribute = attributes.iter().find(|a| a.oid == oid)?;
    assert_eq!(
        attribute.values.len(),
        1,
        "attribute {oid} has several values"
    );
    attribute.values.iter().next()
}

fn text_of(value: &Any) -> String {
    value
        .decode_as::<PrintableString>()
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|e| panic!("not a PrintableString: {e}"))
}

/// Reads a CertRep for `request`: checks its RA signature (RSA PKCS#1 v1.5, SHA-256, over the
/// signed attributes, whose messageDigest must be that of the content), that it answers this
/// request (transactionID and recipientNonce), and decrypts a SUCCESS with `requester_key`
/// (PKCS#8 RSA). Panics on anything else: the tests expect well-formed replies.
pub fn read_reply(
    der: &[u8],
    request: &CmsRequest,
    ra_cert: &[u8],
    requester_key: &[u8],
) -> CmsReply {
    let outer = ContentInfo::from_der(der).expect("a CertRep ContentInfo");
    assert_eq!(outer.content_type, rfc5911::ID_SIGNED_DATA);
    let signed: SignedData = outer.content.decode_as().expect("a SignedData");
    assert_eq!(signed.signer_infos.0.len(), 1, "one signer");
    let signer = signed.signer_infos.0.iter().next().expect("a signer info");
    let attributes = signer.signed_attrs.as_ref().expect("signed attributes");

    let ra = Certificate::from_der(ra_cert).expect("the RA certificate");
    let ra_key = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(
        rsa::PublicKey::from_public_key_der(
            &ra.tbs_certificate()
                .subject_public_key_info()
                .to_der()
                .expect("the RA key"),
        )
        .expect("an RSA RA key"),
    );
    let signature =
        rsa::pkcs1v15::Signature::try_from(signer.signature.as_bytes()).expect("an RSA signature");
    ra_key
        .verify(
            &attributes.to_der().expect("the signed attributes"),
            &signature,
        )
        .expect("the CertRep is signed by the RA");
    let content = signed
        .encap_content_info
        .econtent
        .as_ref()
        .map(|c| c.value().to_vec())
        .unwrap_or_default();
    let digest = value_of(attributes, &MESSAGE_DIGEST.to_string())
        .expect("a messageDigest")
        .decode_as::<OctetString>()
        .expect("an OCTET STRING digest");
    assert_eq!(
        digest.as_bytes(),
        Sha256::digest(&content).as_slice(),
        "messageDigest"
    );

    assert_eq!(
        text_of(value_of(attributes, MESSAGE_TYPE).expect("a messageType")),
        "3",
        "a CertRep"
    );
    assert_eq!(
        text_of(value_of(attributes, TRANSACTION_ID).expect("a transactionID")),
        request.transaction_id
    );
    let recipient_nonce = value_of(attributes, RECIPIENT_NONCE)
        .expect("a recipientNonce")
        .decode_as::<OctetString>()
        .expect("an OCTET STRING nonce");
    assert_eq!(
        recipient_nonce.as_bytes(),
        request.sender_nonce,
        "recipientNonce"
    );

    match text_of(value_of(attributes, PKI_STATUS).expect("a pkiStatus")).as_str() {
        "0" => CmsReply::Success(certificates_in(&decrypt(&content, requester_key))),
        "2" => CmsReply::Failure(
            text_of(value_of(attributes, FAIL_INFO).expect("a failInfo"))
                .parse()
                .expect("a failInfo number"),
        ),
        "3" => CmsReply::Pending,
        other => panic!("pkiStatus {other}"),
    }
}

/// The content of an EnvelopedData ContentInfo, with the one key-transport recipient's key.
fn decrypt(enveloped: &[u8], key: &[u8]) -> Vec<u8> {
    use cbc::cipher::block_padding::Pkcs7;
    use cbc::cipher::{BlockModeDecrypt, KeyIvInit};
    let info = ContentInfo::from_der(enveloped).expect("an EnvelopedData ContentInfo");
    assert_eq!(info.content_type, rfc5911::ID_ENVELOPED_DATA);
    let data: EnvelopedData = info.content.decode_as().expect("an EnvelopedData");
    let Some(RecipientInfo::Ktri(recipient)) = data.recip_infos.0.iter().next() else {
        panic!("no key-transport recipient");
    };
    let private = rsa::PrivateKey::from_pkcs8_der(key).expect("the requester's RSA key");
    let cek = private
        .decrypt(rsa::Pkcs1v15Encrypt, recipient.enc_key.as_bytes())
        .expect("the content key");
    let algorithm = &data.encrypted_content.content_enc_alg;
    let iv = algorithm
        .parameters
        .as_ref()
        .expect("an IV")
        .decode_as::<OctetString>()
        .expect("an OCTET STRING IV");
    let mut body = data
        .encrypted_content
        .encrypted_content
        .as_ref()
        .expect("encrypted content")
        .as_bytes()
        .to_vec();
    match algorithm.oid {
        rfc5911::ID_AES_128_CBC => {
            cbc::Decryptor::<aes::Aes128>::new_from_slices(&cek, iv.as_bytes())
                .expect("an AES-128 key")
                .decrypt_padded::<Pkcs7>(&mut body)
                .expect("the content")
                .to_vec()
        }
        rfc5911::ID_AES_256_CBC => {
            cbc::Decryptor::<aes::Aes256>::new_from_slices(&cek, iv.as_bytes())
                .expect("an AES-256 key")
                .decrypt_padded::<Pkcs7>(&mut body)
                .expect("the content")
                .to_vec()
        }
        other => panic!("content encryption {other}"),
    }
}

/// The certificates of a degenerate SignedData (a certs-only PKCS#7).
fn certificates_in(degenerate: &[u8]) -> Vec<Vec<u8>> {
    let info = ContentInfo::from_der(degenerate).expect("a certs-only ContentInfo");
    let signed: SignedData = info.content.decode_as().expect("a certs-only SignedData");
    signed
        .certificates
        .map(|set| {
            set.0
                .iter()
                .filter_map(|c| match c {
                    CertificateChoices::Certificate(cert) => cert.to_der().ok(),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}
