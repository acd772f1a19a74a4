//! The requester's side of SCEP: building PKCSReq and RenewalReq messages and checking the
//! CertRep that answers them. Used by `agentca enroll`, by the `agentca bench scep` load
//! generator, and — through [`Tamper`] — by negative tests, which need requests that are wrong
//! in exactly one way.

use std::time::SystemTime;

use crate::alg::{ContentCipher, DigestAlgorithm, ScepOptions};
use crate::attr::{self, FailInfo, MessageType, Nonce, PkiStatus, TransactionId};
use crate::cert::CertInfo;
use crate::certs;
use crate::der::{self, Reader};
use crate::envelope::{self, EnvelopeTamper};
use crate::error::{Result, ScepAttribute, ScepError};
use crate::oid;
use crate::signed::{self, SignRequest, SignTamper, SignedData};

pub use crate::key::SignerKey;

/// A transient self-signed certificate for `key`, to sign a PKCSReq with (RFC 8894 §2.3):
/// subject and issuer `CN=<common_name>`, valid from an hour ago for seven days, a random
/// serial number. The CertRep's envelope is encrypted to this certificate's key.
pub fn transient_certificate(key: &SignerKey, common_name: &str) -> Result<Vec<u8>> {
    let pair = rcgen::KeyPair::try_from(key.pkcs8())
        .map_err(|_| ScepError::Key("key not usable for a self-signed certificate"))?;
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let now = time::OffsetDateTime::from(SystemTime::now());
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(7);
    let mut serial = [0u8; 16];
    aws_lc_rs::rand::fill(&mut serial).map_err(|_| ScepError::Crypto("random serial"))?;
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    // cA=false, and with it a subjectKeyIdentifier.
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    let cert = params
        .self_signed(&pair)
        .map_err(|_| ScepError::Crypto("self-signing the transient certificate"))?;
    Ok(cert.der().to_vec())
}

/// The PKCS#9 challengePassword attribute (RFC 2985 §5.4.1).
const CHALLENGE_PASSWORD: &[u64] = &[1, 2, 840, 113549, 1, 9, 7];

/// A PKCS#10 request for `key` built from `params`, carrying `challenge` as its
/// challengePassword when given (a PKCSReq needs one, a RenewalReq does not): a
/// PrintableString when the challenge fits one, as most SCEP clients send it, else a
/// UTF8String (RFC 2985 allows both; agentca's challenges are hex, other CAs' may not be).
pub fn csr_with_challenge(
    key: &SignerKey,
    params: &rcgen::CertificateParams,
    challenge: Option<&str>,
) -> Result<Vec<u8>> {
    let pair = rcgen::KeyPair::try_from(key.pkcs8())
        .map_err(|_| ScepError::Key("key not usable for a certificate request"))?;
    let attributes = match challenge {
        Some(challenge) => {
            let printable = challenge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b" '()+,-./:=?".contains(&b));
            let value = der::tlv(if printable { 0x13 } else { 0x0c }, challenge.as_bytes());
            vec![rcgen::Attribute {
                oid: CHALLENGE_PASSWORD,
                values: der::tlv(0x31, &value),
            }]
        }
        None => Vec::new(),
    };
    let request = params
        .serialize_request_with_attributes(&pair, attributes)
        .map_err(|_| ScepError::Crypto("signing the certificate request"))?;
    Ok(request.der().to_vec())
}

/// Deliberate defects for negative tests. The default is a correct request; each field
/// breaks one thing.
#[derive(Clone, Debug, Default)]
pub struct Tamper {
    /// Send this messageType number instead of the builder's.
    pub message_type_number: Option<u32>,
    /// Leave out messageType.
    pub omit_message_type: bool,
    /// Leave out transactionID.
    pub omit_transaction_id: bool,
    /// Leave out senderNonce.
    pub omit_sender_nonce: bool,
    /// Send these bytes as senderNonce (e.g. of the wrong length).
    pub sender_nonce_bytes: Option<Vec<u8>>,
    /// Sign a messageDigest that does not match the content.
    pub wrong_message_digest: bool,
    /// Flip a bit of the signature.
    pub corrupt_signature: bool,
    /// Leave out the contentType signed attribute.
    pub omit_content_type: bool,
    /// Send two (identical) SignerInfos.
    pub duplicate_signer_info: bool,
    /// Leave the signer's certificate out of `certificates`.
    pub omit_signer_certificate: bool,
    /// Put these certificates (DER) in `certificates` too, before the signer's.
    pub extra_certificates: Vec<Vec<u8>>,
    /// Encrypt the envelope to this certificate (DER) instead of the RA's.
    pub encrypt_to: Option<Vec<u8>>,
    /// RSA-encrypt these bytes as the content key (e.g. of the wrong length).
    pub cek_override: Option<Vec<u8>>,
    /// Flip a bit of the RSA-encrypted content key.
    pub corrupt_encrypted_key: bool,
    /// Pad the encrypted content with invalid PKCS#7 padding.
    pub bad_cbc_padding: bool,
    /// Encrypt these bytes instead of the CSR.
    pub content_override: Option<Vec<u8>>,
    /// Send the message, and the envelope inside it, as BER: indefinite lengths everywhere
    /// and OCTET STRINGs in chunks, as streaming encoders do.
    pub indefinite_ber: bool,
    /// Name the RA in the envelope by subjectKeyIdentifier (a valid variant).
    pub recipient_by_key_id: bool,
    /// Name the signer by subjectKeyIdentifier (SignerInfo version 3, a valid variant).
    pub signer_by_key_id: bool,
    /// Send the signed attributes in reverse DER order, signed as sent (a sloppy encoder).
    pub unsorted_attributes: bool,
    /// Name this digest algorithm in the SignedData and its SignerInfo (e.g. MD5's), while
    /// digesting and signing with the builder's.
    pub digest_oid: Option<const_oid::ObjectIdentifier>,
}

/// Builds a PKCSReq or RenewalReq.
#[derive(Debug, Clone)]
pub struct RequestBuilder<'a> {
    message_type: MessageType,
    csr: &'a [u8],
    signer_key: &'a SignerKey,
    signer_cert: &'a [u8],
    recipient_cert: &'a [u8],
    cipher: ContentCipher,
    digest: DigestAlgorithm,
    transaction_id: Option<TransactionId>,
    sender_nonce: Option<Nonce>,
    signing_time: Option<SystemTime>,
    tamper: Tamper,
}

impl<'a> RequestBuilder<'a> {
    /// A PKCSReq for `csr` (DER, with the challenge password in it), signed by `key` under
    /// `self_signed_cert` (see [`transient_certificate`]), encrypted to `ra_cert`.
    pub fn pkcs_req(
        csr: &'a [u8],
        key: &'a SignerKey,
        self_signed_cert: &'a [u8],
        ra_cert: &'a [u8],
    ) -> Self {
        Self::new(MessageType::PkcsReq, csr, key, self_signed_cert, ra_cert)
    }

    /// A RenewalReq for `csr`, signed by the current certificate's `key`.
    pub fn renewal_req(
        csr: &'a [u8],
        key: &'a SignerKey,
        current_cert: &'a [u8],
        ra_cert: &'a [u8],
    ) -> Self {
        Self::new(MessageType::RenewalReq, csr, key, current_cert, ra_cert)
    }

    /// A GetCRL for the certificate named by `issuer_and_serial` (the DER IssuerAndSerialNumber
    /// of RFC 5652 §10.2.4), signed by `key` under `cert`.
    pub fn get_crl(
        issuer_and_serial: &'a [u8],
        key: &'a SignerKey,
        cert: &'a [u8],
        ra_cert: &'a [u8],
    ) -> Self {
        Self::new(MessageType::GetCrl, issuer_and_serial, key, cert, ra_cert)
    }

    fn new(
        message_type: MessageType,
        csr: &'a [u8],
        signer_key: &'a SignerKey,
        signer_cert: &'a [u8],
        recipient_cert: &'a [u8],
    ) -> Self {
        Self {
            message_type,
            csr,
            signer_key,
            signer_cert,
            recipient_cert,
            cipher: ContentCipher::Aes256Cbc,
            digest: DigestAlgorithm::Sha256,
            transaction_id: None,
            sender_nonce: None,
            signing_time: None,
            tamper: Tamper::default(),
        }
    }

    /// The content-encryption algorithm (default AES-256-CBC).
    pub fn cipher(mut self, cipher: ContentCipher) -> Self {
        self.cipher = cipher;
        self
    }

    /// The digest algorithm (default SHA-256).
    pub fn digest(mut self, digest: DigestAlgorithm) -> Self {
        self.digest = digest;
        self
    }

    /// A fixed transactionID (default: random).
    pub fn transaction_id(mut self, id: TransactionId) -> Self {
        self.transaction_id = Some(id);
        self
    }

    /// A fixed senderNonce (default: random).
    pub fn sender_nonce(mut self, nonce: Nonce) -> Self {
        self.sender_nonce = Some(nonce);
        self
    }

    /// Add a signingTime attribute.
    pub fn signing_time(mut self, t: SystemTime) -> Self {
        self.signing_time = Some(t);
        self
    }

    /// Break the request deliberately (negative tests).
    pub fn tamper(mut self, tamper: Tamper) -> Self {
        self.tamper = tamper;
        self
    }

    /// Encodes and signs the request.
    pub fn build(&self) -> Result<BuiltRequest> {
        let t = &self.tamper;
        let signer = CertInfo::parse(self.signer_cert)?;
        if !self.signer_key.matches(&signer) {
            return Err(ScepError::Key(
                "the signer key does not match the signer certificate",
            ));
        }
        let recipient = CertInfo::parse(t.encrypt_to.as_deref().unwrap_or(self.recipient_cert))?;
        let transaction_id = match &self.transaction_id {
            Some(id) => id.clone(),
            None => TransactionId::random()?,
        };
        let sender_nonce = match self.sender_nonce {
            Some(n) => n,
            None => Nonce::random()?,
        };

        let content = t.content_override.as_deref().unwrap_or(self.csr);
        let envelope_tamper = EnvelopeTamper {
            cek_override: t.cek_override.clone(),
            corrupt_encrypted_key: t.corrupt_encrypted_key,
            bad_cbc_padding: t.bad_cbc_padding,
            recipient_by_key_id: t.recipient_by_key_id,
        };
        let mut sealed = envelope::seal(content, &recipient, self.cipher, &envelope_tamper)?;
        if t.indefinite_ber {
            sealed = to_indefinite_ber(&sealed)?;
        }

        let mut attributes = Vec::new();
        if !t.omit_message_type {
            let n = t.message_type_number.unwrap_or(self.message_type.number());
            attributes.push(attr::message_type_attribute(n));
        }
        if !t.omit_transaction_id {
            attributes.push(attr::printable_attribute(
                &oid::SCEP_TRANSACTION_ID,
                transaction_id.as_str(),
            ));
        }
        if !t.omit_sender_nonce {
            let bytes = t
                .sender_nonce_bytes
                .as_deref()
                .unwrap_or(sender_nonce.as_bytes());
            attributes.push(attr::nonce_attribute(&oid::SCEP_SENDER_NONCE, bytes));
        }
        if let Some(time) = self.signing_time {
            attributes.push(attr::signing_time_attribute(time)?);
        }
        let mut certificates: Vec<&[u8]> = t.extra_certificates.iter().map(Vec::as_slice).collect();
        if !t.omit_signer_certificate {
            certificates.push(self.signer_cert);
        }
        let mut der_bytes = signed::encode_signed_data(SignRequest {
            econtent: Some(&sealed),
            certificates: &certificates,
            signer_cert: &signer,
            signer_key: self.signer_key,
            digest: self.digest,
            attributes,
            tamper: SignTamper {
                wrong_message_digest: t.wrong_message_digest,
                corrupt_signature: t.corrupt_signature,
                omit_content_type: t.omit_content_type,
                duplicate_signer_info: t.duplicate_signer_info,
                signer_by_key_id: t.signer_by_key_id,
                unsorted_attributes: t.unsorted_attributes,
                digest_oid: t.digest_oid,
            },
        })?;
        if t.indefinite_ber {
            der_bytes = to_indefinite_ber(&der_bytes)?;
        }
        Ok(BuiltRequest {
            der: der_bytes,
            transaction_id,
            sender_nonce,
            signer,
        })
    }
}

/// A request ready to send, with what is needed to check its reply.
#[derive(Debug, Clone)]
pub struct BuiltRequest {
    der: Vec<u8>,
    transaction_id: TransactionId,
    sender_nonce: Nonce,
    signer: CertInfo,
}

/// What a CertRep said, once verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertRepOutcome {
    /// The certificates of the SUCCESS envelope (DER), in the order sent: the issued
    /// certificate first.
    Success {
        /// Issued certificate first, then any chain.
        certificates: Vec<Vec<u8>>,
    },
    /// SUCCESS answering a GetCRL: the CRLs (DER) sent.
    Crls(Vec<Vec<u8>>),
    /// FAILURE and its reason.
    Failure(FailInfo),
    /// PENDING.
    Pending,
}

impl BuiltRequest {
    /// The message (the PKIOperation body).
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The transactionID sent.
    pub fn transaction_id(&self) -> &TransactionId {
        &self.transaction_id
    }

    /// The senderNonce sent (the reply's recipientNonce).
    pub fn sender_nonce(&self) -> Nonce {
        self.sender_nonce
    }

    /// Verifies a CertRep answering this request and returns what it says.
    ///
    /// The CertRep must be signed by one of `trusted_signers` (the RA certificate from
    /// GetCACert, DER), carry messageType 3, this request's transactionID and, as
    /// recipientNonce, this request's senderNonce. A SUCCESS envelope is decrypted with `key`
    /// (the request's signer key) and must hold a certs-only SignedData with a certificate.
    pub fn parse_reply<C: AsRef<[u8]>>(
        &self,
        reply: &[u8],
        trusted_signers: &[C],
        key: &SignerKey,
        options: &ScepOptions,
    ) -> Result<CertRepOutcome> {
        let trusted = trusted_signers
            .iter()
            .map(|c| CertInfo::parse(c.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        let sd = SignedData::decode(reply)?;
        let verified = sd.verify(&trusted, options)?;
        if !trusted.iter().any(|c| c.der == verified.signer.der) {
            return Err(ScepError::UntrustedSigner);
        }
        let attrs = &verified.attrs;
        let message_type = attrs.message_type()?;
        if message_type != MessageType::CertRep {
            return Err(ScepError::UnexpectedMessageType(message_type.number()));
        }
        if attrs.transaction_id()? != self.transaction_id {
            return Err(ScepError::ReplyMismatch(ScepAttribute::TransactionId));
        }
        if attrs.recipient_nonce()? != self.sender_nonce {
            return Err(ScepError::ReplyMismatch(ScepAttribute::RecipientNonce));
        }
        attrs.sender_nonce()?;
        match attrs.pki_status()? {
            PkiStatus::Failure => Ok(CertRepOutcome::Failure(attrs.fail_info()?)),
            PkiStatus::Pending => Ok(CertRepOutcome::Pending),
            PkiStatus::Success => {
                let envelope = sd
                    .econtent
                    .as_deref()
                    .ok_or(ScepError::Malformed("SUCCESS without content"))?;
                let opened =
                    envelope::open(envelope, &self.signer, key.decrypting_key()?, options)?;
                let content = certs::parse_certs_only(&opened.content)?;
                if content.certificates.is_empty() {
                    if content.crls.is_empty() {
                        return Err(ScepError::Malformed("SUCCESS without a certificate"));
                    }
                    return Ok(CertRepOutcome::Crls(content.crls));
                }
                Ok(CertRepOutcome::Success {
                    certificates: content.certificates,
                })
            }
        }
    }
}

/// Re-encodes DER as BER the way streaming encoders write it: every constructed value with
/// an indefinite length, and every OCTET STRING longer than 32 bytes in chunks of 32. For
/// testing the decoder's BER path.
pub fn to_indefinite_ber(der_bytes: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(der_bytes.len() + der_bytes.len() / 8);
    let mut r = Reader::new(der_bytes);
    while !r.is_empty() {
        ber_value(r.read_any()?, &mut out, 0)?;
    }
    Ok(out)
}

fn ber_value(tlv: der::Tlv<'_>, out: &mut Vec<u8>, depth: usize) -> Result<()> {
    if depth > crate::ber::MAX_DEPTH {
        return Err(ScepError::TooDeep {
            max: crate::ber::MAX_DEPTH,
        });
    }
    if tlv.tag == der::OCTET_STRING && tlv.content.len() > 32 {
        out.extend_from_slice(&[0x24, 0x80]);
        for chunk in tlv.content.chunks(32) {
            out.extend_from_slice(&der::octet_string(chunk));
        }
        out.extend_from_slice(&[0, 0]);
    } else if tlv.tag & 0x20 != 0 {
        out.extend_from_slice(&[tlv.tag, 0x80]);
        let mut r = tlv.reader();
        while !r.is_empty() {
            ber_value(r.read_any()?, out, depth + 1)?;
        }
        out.extend_from_slice(&[0, 0]);
    } else {
        out.extend_from_slice(tlv.raw);
    }
    Ok(())
}
