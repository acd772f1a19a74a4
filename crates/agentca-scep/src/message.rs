//! The server's view of a request: a pkiMessage is parsed ([`UnverifiedMessage`]), its
//! signer verified ([`PkiMessage`]), and only then its envelope decrypted
//! ([`DecryptedRequest`]). Each step is a type, so nothing can decrypt an unverified message.

use crate::alg::{ContentCipher, DigestAlgorithm, ScepOptions};
use crate::attr::{MessageType, Nonce, SignedAttributes, TransactionId};
use crate::cert::CertInfo;
use crate::envelope;
use crate::error::{Result, ScepError};
use crate::key::RaIdentity;
use crate::oid;
use crate::signed::SignedData;

/// A pkiMessage whose structure and SCEP attributes were decoded, but whose signature was not
/// checked yet. Its values are what the sender claims; they are good for addressing a FAILURE
/// reply ([`UnverifiedMessage::reply_to`]) and for nothing else.
#[derive(Debug)]
pub struct UnverifiedMessage {
    signed: SignedData,
    message_type: MessageType,
    transaction_id: TransactionId,
    sender_nonce: Nonce,
}

impl UnverifiedMessage {
    /// Decodes a `PKIOperation` body (DER or BER, at most [`crate::MAX_MESSAGE_LEN`] bytes).
    ///
    /// Fails when the input is not a SignedData with exactly one SignerInfo carrying signed
    /// attributes, or when messageType, transactionID or senderNonce (16 bytes) is missing or
    /// malformed. An unknown messageType number is not an error here: it decodes to
    /// [`MessageType::Unsupported`] so that the dispatcher can answer it.
    pub fn parse(input: &[u8]) -> Result<Self> {
        let signed = SignedData::decode(input)?;
        let [signer] = signed.signers.as_slice() else {
            return Err(ScepError::SignerCount(signed.signers.len()));
        };
        let attrs_content = signer
            .signed_attrs
            .as_deref()
            .ok_or(ScepError::Malformed("SignerInfo without signed attributes"))?;
        let attrs = SignedAttributes::parse(attrs_content)?;
        let message_type = attrs.message_type()?;
        let transaction_id = attrs.transaction_id()?;
        let sender_nonce = attrs.sender_nonce()?;
        Ok(Self {
            signed,
            message_type,
            transaction_id,
            sender_nonce,
        })
    }

    /// The claimed messageType.
    pub fn message_type(&self) -> MessageType {
        self.message_type
    }

    /// The claimed transactionID.
    pub fn transaction_id(&self) -> &TransactionId {
        &self.transaction_id
    }

    /// The claimed senderNonce.
    pub fn sender_nonce(&self) -> Nonce {
        self.sender_nonce
    }

    /// Where a FAILURE reply to this message goes (no requester certificate: a FAILURE is
    /// not encrypted).
    pub fn reply_to(&self) -> ReplyTo {
        ReplyTo {
            transaction_id: self.transaction_id.clone(),
            recipient_nonce: self.sender_nonce,
            digest: DigestAlgorithm::Sha256,
            requester: None,
        }
    }

    /// Verifies the signer: the signer's certificate must be in the message, the content must
    /// match messageDigest, and the signature over the signed attributes must verify with the
    /// certificate's key (RSA PKCS#1 v1.5 with SHA-256/384/512, ECDSA P-256/P-384; SHA-1 and
    /// 1024-bit RSA only with [`ScepOptions::legacy`]). Who the signer is — a transient
    /// self-signed certificate for PKCSReq, the current certificate for RenewalReq — is for the
    /// caller to judge from [`PkiMessage::signer_certificate`].
    pub fn verify(&self, options: &ScepOptions) -> Result<PkiMessage> {
        let verified = self.signed.verify(&[], options)?;
        if !oid::is(&self.signed.econtent_type, &oid::DATA) {
            return Err(ScepError::UnexpectedContentType {
                expected: "data",
                found: oid::display(&self.signed.econtent_type),
            });
        }
        Ok(PkiMessage {
            message_type: self.message_type,
            transaction_id: self.transaction_id.clone(),
            sender_nonce: self.sender_nonce,
            digest: verified.digest,
            envelope: self.signed.econtent.clone(),
            signer: verified.signer,
        })
    }
}

/// Parses and verifies in one step; see [`UnverifiedMessage::parse`] and
/// [`UnverifiedMessage::verify`].
pub fn decode_pki_message(input: &[u8], options: &ScepOptions) -> Result<PkiMessage> {
    UnverifiedMessage::parse(input)?.verify(options)
}

/// A pkiMessage whose signature verified.
#[derive(Debug, Clone)]
pub struct PkiMessage {
    message_type: MessageType,
    transaction_id: TransactionId,
    sender_nonce: Nonce,
    digest: DigestAlgorithm,
    pub(crate) envelope: Option<Vec<u8>>,
    signer: CertInfo,
}

impl PkiMessage {
    /// The messageType; match it against an allow-list whose default arm refuses.
    pub fn message_type(&self) -> MessageType {
        self.message_type
    }

    /// The transactionID.
    pub fn transaction_id(&self) -> &TransactionId {
        &self.transaction_id
    }

    /// The senderNonce, which the reply echoes as recipientNonce.
    pub fn sender_nonce(&self) -> Nonce {
        self.sender_nonce
    }

    /// The signer's certificate (DER), as found in the message.
    pub fn signer_certificate(&self) -> &[u8] {
        &self.signer.der
    }

    /// The digest algorithm the signer used.
    pub fn digest_algorithm(&self) -> DigestAlgorithm {
        self.digest
    }

    /// Whether a SUCCESS reply can be encrypted to the signer: SCEP envelopes use RSA key
    /// transport, so a signer with another kind of key could not read its certificate. A
    /// server checks this before it issues anything.
    pub fn signer_can_receive_envelope(&self) -> bool {
        matches!(self.signer.key, crate::cert::PublicKey::Rsa(_))
    }

    /// Where the reply goes: the signer's certificate is the recipient of a SUCCESS envelope.
    pub fn reply_to(&self) -> ReplyTo {
        ReplyTo {
            transaction_id: self.transaction_id.clone(),
            recipient_nonce: self.sender_nonce,
            digest: self.digest,
            requester: Some(self.signer.clone()),
        }
    }

    /// Decrypts the pkcsPKIEnvelope with the RA's key. For PKCSReq and RenewalReq the content
    /// is the PKCS #10 request; only its framing (one DER SEQUENCE) is checked here.
    ///
    /// Every failure to decrypt is [`ScepError::Decryption`], with no detail; an envelope
    /// algorithm we do not accept is [`ScepError::UnsupportedAlgorithm`] (DES and 3DES need
    /// [`ScepOptions::legacy`]).
    pub fn decrypt(&self, ra: &RaIdentity, options: &ScepOptions) -> Result<DecryptedRequest> {
        let envelope = self
            .envelope
            .as_deref()
            .ok_or(ScepError::Malformed("pkiMessage without content"))?;
        let opened = envelope::open(envelope, &ra.cert, ra.decrypting()?, options)?;
        Ok(DecryptedRequest {
            csr: opened.content,
            cipher: opened.cipher,
        })
    }
}

/// The content of a request's envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecryptedRequest {
    /// The PKCS #10 certification request (DER), unverified.
    pub csr: Vec<u8>,
    /// The content-encryption algorithm the requester used; the SUCCESS reply reuses it.
    pub cipher: ContentCipher,
}

/// What a CertRep needs from the request it answers.
#[derive(Debug, Clone)]
pub struct ReplyTo {
    pub(crate) transaction_id: TransactionId,
    pub(crate) recipient_nonce: Nonce,
    pub(crate) digest: DigestAlgorithm,
    pub(crate) requester: Option<CertInfo>,
}

impl ReplyTo {
    /// A reply address from bare values, for a FAILURE to a message that could not be
    /// parsed far enough to give one.
    pub fn new(transaction_id: TransactionId, recipient_nonce: Nonce) -> Self {
        Self {
            transaction_id,
            recipient_nonce,
            digest: DigestAlgorithm::Sha256,
            requester: None,
        }
    }

    /// The transactionID the reply echoes.
    pub fn transaction_id(&self) -> &TransactionId {
        &self.transaction_id
    }

    /// The recipientNonce the reply carries (the request's senderNonce).
    pub fn recipient_nonce(&self) -> Nonce {
        self.recipient_nonce
    }
}
