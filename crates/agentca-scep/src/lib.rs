//! The SCEP (RFC 8894) message layer of agentca: everything between the bytes of a
//! `PKIOperation` request and the bytes of the CertRep that answers it, without HTTP.
//!
//! Server side, in the order a request goes through it:
//!
//! 1. [`UnverifiedMessage::parse`] decodes the pkiMessage — BER accepted, with a hard size cap
//!    ([`MAX_MESSAGE_LEN`]) and a nesting bound — and extracts the SCEP attributes
//!    (messageType as the allow-list [`MessageType`], transactionID, senderNonce);
//! 2. [`UnverifiedMessage::verify`] checks the one signer: certificate, messageDigest,
//!    signature ([`PkiMessage`]);
//! 3. the dispatcher matches [`PkiMessage::message_type`], refusing by default;
//! 4. [`PkiMessage::decrypt`] opens the envelope with the RA key ([`RaIdentity`]), every
//!    failure being the one [`ScepError::Decryption`] (no padding oracle);
//! 5. [`CertRep::encode`] signs the answer: SUCCESS with the certificate enveloped to the
//!    requester, FAILURE with a [`FailInfo`] (from [`ScepError::fail_info`]), or PENDING.
//!
//! [`server`] is the front end built on these steps: the `/scep` routes, challenge and
//! renewal authentication, and issuance through the core's authority.
//!
//! Also: certs-only replies for GetCACert and GetCRL ([`get_ca_cert_response`],
//! [`crl_only`]), the GetCACaps text ([`ca_caps_text`], [`implemented_capabilities`]) and the
//! `message=` GET parameter ([`decode_message_param`]). The [`client`] module builds requests
//! — correct ones, and deliberately broken ones for tests — and checks replies.
//!
//! Modern algorithms only by default (SHA-256/384/512, AES-CBC, RSA ≥ 2048, ECDSA signers);
//! [`ScepOptions::legacy`] admits SHA-1, DES and 3DES for old clients.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod alg;
mod attr;
mod ber;
mod caps;
mod cert;
mod certrep;
mod certs;
pub mod client;
mod der;
mod envelope;
mod error;
mod key;
mod message;
mod oid;
mod param;
pub mod server;
mod signed;

#[cfg(test)]
mod tests;

pub use alg::{ContentCipher, DigestAlgorithm, ScepOptions};
pub use attr::{FailInfo, MessageType, Nonce, PkiStatus, TransactionId};
pub use caps::{Capability, ca_caps_text, implemented_capabilities};
pub use certrep::{CertRep, CertRepStatus};
pub use certs::{CertsOnly, certs_only, crl_only, get_ca_cert_response, parse_certs_only};
pub use error::{ScepAttribute, ScepError};
pub use key::RaIdentity;
pub use message::{DecryptedRequest, PkiMessage, ReplyTo, UnverifiedMessage, decode_pki_message};
pub use param::{MAX_MESSAGE_PARAM_LEN, decode_message_param};
pub use signed::MAX_MESSAGE_LEN;

/// Entry points for the fuzz targets in `fuzz/` only (compiled with `--cfg fuzzing`): the
/// envelope decoder, which an attacker reaches by signing a request with a key of their own.
#[cfg(fuzzing)]
pub mod fuzzing {
    use crate::{RaIdentity, ScepOptions};

    /// Opens `envelope` (an EnvelopedData ContentInfo) with the RA's key, as the server opens
    /// a verified request's; returns the content.
    pub fn open_envelope(
        envelope: &[u8],
        ra: &RaIdentity,
        options: &ScepOptions,
    ) -> crate::error::Result<Vec<u8>> {
        let opened = crate::envelope::open(envelope, &ra.cert, ra.decrypting()?, options)?;
        Ok(opened.content)
    }

    /// The envelope (eContent) of a pkiMessage whose signature verifies, for seeds.
    pub fn envelope_of(message: &[u8], options: &ScepOptions) -> Option<Vec<u8>> {
        crate::UnverifiedMessage::parse(message)
            .ok()?
            .verify(options)
            .ok()?
            .envelope
    }
}
