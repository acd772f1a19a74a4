//! The CertRep (messageType 3, RFC 8894 §3.3.2): the RA-signed answer to every request.

use std::time::SystemTime;

use crate::alg::{ContentCipher, DigestAlgorithm, ScepOptions};
use crate::attr::{self, FailInfo, Nonce, PkiStatus};
use crate::envelope::{self, EnvelopeTamper};
use crate::error::{Result, ScepError};
use crate::key::RaIdentity;
use crate::message::ReplyTo;
use crate::oid;
use crate::signed::{self, SignRequest, SignTamper};

/// What a CertRep says.
#[derive(Debug, Clone, Copy)]
pub enum CertRepStatus<'a> {
    /// SUCCESS: the certificates (the issued one first, then optionally its chain, DER) in a
    /// certs-only SignedData, encrypted to the requester's signer certificate with `cipher`
    /// (the one the request used).
    Success {
        /// The request's content-encryption algorithm.
        cipher: ContentCipher,
        /// Issued certificate first (clients take the first), then any chain.
        certificates: &'a [Vec<u8>],
    },
    /// SUCCESS answering a GetCRL: the CRL (DER) in a certs-only SignedData, encrypted to the
    /// requester like a certificate.
    Crl {
        /// The request's content-encryption algorithm.
        cipher: ContentCipher,
        /// The CRL.
        crl: &'a [u8],
    },
    /// FAILURE with its reason. The reply has no content.
    Failure(FailInfo),
    /// PENDING. The reply has no content.
    Pending,
}

/// A CertRep to build.
#[derive(Debug, Clone, Copy)]
pub struct CertRep<'a> {
    /// The request it answers.
    pub reply_to: &'a ReplyTo,
    /// What it says.
    pub status: CertRepStatus<'a>,
    /// A signingTime attribute, if wanted.
    pub signing_time: Option<SystemTime>,
}

impl CertRep<'_> {
    /// Encrypts a SUCCESS reply's content to the requester.
    fn seal(&self, inner: &[u8], cipher: ContentCipher, options: &ScepOptions) -> Result<Vec<u8>> {
        if cipher.is_legacy() && !options.legacy {
            return Err(ScepError::UnsupportedAlgorithm {
                what: "content-encryption algorithm (legacy option off)",
                oid: cipher.oid().to_string(),
            });
        }
        let requester = self
            .reply_to
            .requester
            .as_ref()
            .ok_or(ScepError::InvalidInput(
                "a SUCCESS reply needs the requester's certificate (use PkiMessage::reply_to)",
            ))?;
        envelope::seal(inner, requester, cipher, &EnvelopeTamper::default())
    }

    /// Encodes and signs the CertRep with the RA key.
    ///
    /// Signed attributes: contentType, messageDigest, messageType "3", pkiStatus, failInfo
    /// (FAILURE only), transactionID and recipientNonce from the request, a fresh senderNonce,
    /// and signingTime when set. The digest is SHA-256, or SHA-1 when the request used SHA-1
    /// and [`ScepOptions::legacy`] is on. The RA certificate is the one certificate in
    /// `certificates`. FAILURE and PENDING carry no pkcsPKIEnvelope (RFC 8894 §3.3.2) but an
    /// empty id-data eContent rather than none: OpenSSL's `PKCS7_verify`, which certmonger's
    /// `scep-submit` uses, refuses a SignedData without content ("no content") and would
    /// report the CA unreachable instead of the failure. The messageDigest is that of the
    /// empty content either way (what micromdm's client checks).
    pub fn encode(&self, ra: &RaIdentity, options: &ScepOptions) -> Result<Vec<u8>> {
        self.encode_with(ra, options, EmptyContent::Encapsulated)
    }

    /// [`CertRep::encode`], with the choice for a FAILURE's or PENDING's empty content.
    pub(crate) fn encode_with(
        &self,
        ra: &RaIdentity,
        options: &ScepOptions,
        empty: EmptyContent,
    ) -> Result<Vec<u8>> {
        let digest = if self.reply_to.digest == DigestAlgorithm::Sha1 && options.legacy {
            DigestAlgorithm::Sha1
        } else {
            DigestAlgorithm::Sha256
        };
        let (status, envelope) = match self.status {
            CertRepStatus::Success {
                cipher,
                certificates,
            } => {
                if certificates.is_empty() {
                    return Err(ScepError::InvalidInput(
                        "a SUCCESS reply needs a certificate",
                    ));
                }
                let certs: Vec<&[u8]> = certificates.iter().map(Vec::as_slice).collect();
                for c in &certs {
                    signed::check_single_sequence(c, "certificate")?;
                }
                let inner = signed::encode_certs_only(&certs, &[]);
                (
                    PkiStatus::Success,
                    Some(self.seal(&inner, cipher, options)?),
                )
            }
            CertRepStatus::Crl { cipher, crl } => {
                signed::check_single_sequence(crl, "CRL")?;
                let inner = signed::encode_certs_only(&[], &[crl]);
                (
                    PkiStatus::Success,
                    Some(self.seal(&inner, cipher, options)?),
                )
            }
            CertRepStatus::Failure(_) => (PkiStatus::Failure, empty.econtent()),
            CertRepStatus::Pending => (PkiStatus::Pending, empty.econtent()),
        };

        let mut attributes = vec![
            attr::message_type_attribute(3),
            attr::pki_status_attribute(status),
            attr::printable_attribute(
                &oid::SCEP_TRANSACTION_ID,
                self.reply_to.transaction_id.as_str(),
            ),
            attr::nonce_attribute(
                &oid::SCEP_RECIPIENT_NONCE,
                self.reply_to.recipient_nonce.as_bytes(),
            ),
            attr::nonce_attribute(&oid::SCEP_SENDER_NONCE, Nonce::random()?.as_bytes()),
        ];
        if let CertRepStatus::Failure(fail_info) = self.status {
            attributes.push(attr::fail_info_attribute(fail_info));
        }
        if let Some(t) = self.signing_time {
            attributes.push(attr::signing_time_attribute(t)?);
        }
        signed::encode_signed_data(SignRequest {
            econtent: envelope.as_deref(),
            certificates: &[ra.certificate()],
            signer_cert: &ra.cert,
            signer_key: &ra.key,
            digest,
            attributes,
            tamper: SignTamper::default(),
        })
    }
}

/// How a CertRep without a certificate carries its (empty) content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EmptyContent {
    /// An empty id-data eContent: what agentca sends.
    Encapsulated,
    /// No eContent at all, as other servers send (RFC 8894 §3.3.2 read literally); for tests
    /// that the client reads both.
    #[cfg_attr(not(test), allow(dead_code))]
    Absent,
}

impl EmptyContent {
    fn econtent(self) -> Option<Vec<u8>> {
        match self {
            Self::Encapsulated => Some(Vec::new()),
            Self::Absent => None,
        }
    }
}
