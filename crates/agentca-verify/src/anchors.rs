//! Trust anchors: the CA certificates a relying party trusts, usually agentca's `root.pem`.

use rustls::DistinguishedName;
use rustls_pki_types::{CertificateDer, TrustAnchor};

use crate::error::Error;

/// The certificates a verifier trusts, kept as DER next to webpki's view of them: the DER is
/// needed when an anchor issued a leaf directly (its hashes name it in OCSP requests).
#[derive(Clone, Debug)]
pub struct TrustAnchors {
    certs: Vec<CertificateDer<'static>>,
    anchors: Vec<TrustAnchor<'static>>,
}

impl TrustAnchors {
    /// Reads every `CERTIFICATE` block of a PEM text, or one DER certificate.
    pub fn from_pem_or_der(bytes: &[u8]) -> Result<Self, Error> {
        Self::from_der(read_certificates(bytes).map_err(Error::InvalidTrustAnchor)?)
    }

    /// Trusts these DER certificates.
    pub fn from_der(
        certs: impl IntoIterator<Item = CertificateDer<'static>>,
    ) -> Result<Self, Error> {
        let certs: Vec<_> = certs.into_iter().collect();
        if certs.is_empty() {
            return Err(Error::NoTrustAnchors);
        }
        let anchors = certs
            .iter()
            .map(|c| {
                webpki::anchor_from_trusted_cert(c)
                    .map(|a| a.to_owned())
                    .map_err(|e| Error::InvalidTrustAnchor(format!("{e:?}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { certs, anchors })
    }

    /// How many anchors there are.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// Always false: there is at least one anchor.
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    pub(crate) fn webpki(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }

    /// The DER certificate of an anchor webpki chose.
    pub(crate) fn cert_of(&self, anchor: &TrustAnchor<'_>) -> Option<&CertificateDer<'static>> {
        self.anchors
            .iter()
            .position(|a| {
                a.subject == anchor.subject
                    && a.subject_public_key_info == anchor.subject_public_key_info
            })
            .map(|i| &self.certs[i])
    }

    /// The anchors' subjects, as a TLS server hints them to clients.
    pub(crate) fn subjects(&self) -> Vec<DistinguishedName> {
        self.anchors
            .iter()
            .map(|a| DistinguishedName::in_sequence(&a.subject))
            .collect()
    }
}

/// The DER certificates of a PEM text (every `CERTIFICATE` block, in order), or `bytes` itself
/// when it is not PEM.
pub fn read_certificates(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    if !looks_like_pem(bytes) {
        if bytes.is_empty() {
            return Err("empty input".into());
        }
        return Ok(vec![CertificateDer::from(bytes.to_vec())]);
    }
    let blocks = pem::parse_many(bytes).map_err(|e| format!("bad PEM: {e}"))?;
    let certs: Vec<_> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| CertificateDer::from(b.into_contents()))
        .collect();
    if certs.is_empty() {
        return Err("no CERTIFICATE in the PEM text".into());
    }
    Ok(certs)
}

pub(crate) fn looks_like_pem(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .is_some_and(|i| bytes[i..].starts_with(b"-----BEGIN"))
}
