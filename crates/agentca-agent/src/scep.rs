//! A SCEP (RFC 8894) client for agents, on `agentca_scep::client`: PKCSReq with a one-time
//! challenge for the first certificate, RenewalReq signed by the current one afterwards.
//!
//! SCEP runs over plain HTTP, so nothing about the server is taken on trust: the RA
//! certificate from GetCACert must chain to the CA root the agent was given, and every
//! CertRep must be signed by that RA certificate.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hyper::Method;
use x509_parser::prelude::{FromDer, X509Certificate};

use agentca_scep::client::{CertRepOutcome, RequestBuilder, SignerKey};
use agentca_scep::{ScepOptions, parse_certs_only};

use crate::error::{AgentError, Result};
use crate::http::HttpClient;

/// A SCEP server whose RA certificate chains to the trusted root.
#[derive(Debug)]
pub struct ScepServer {
    http: HttpClient,
    url: String,
    /// The RA certificate (DER): requests are encrypted to it, replies signed by it.
    ra: Vec<u8>,
    /// The CA certificates of GetCACert (DER), issuing CA first when the server says so.
    ca_certificates: Vec<Vec<u8>>,
    /// Whether the server takes PKIOperation by POST.
    post: bool,
}

impl ScepServer {
    /// Asks `url` for its capabilities and certificates, and checks the RA certificate
    /// against `trusted_roots_pem`.
    pub async fn connect(http: HttpClient, url: &str, trusted_roots_pem: &[u8]) -> Result<Self> {
        let caps = http
            .send(
                Method::GET,
                &format!("{url}?operation=GetCACaps"),
                None,
                Vec::new(),
            )
            .await?;
        let caps = String::from_utf8_lossy(&caps.body).to_ascii_uppercase();
        let post = caps.lines().any(|l| l.trim() == "POSTPKIOPERATION");
        let answer = http
            .send(
                Method::GET,
                &format!("{url}?operation=GetCACert"),
                None,
                Vec::new(),
            )
            .await?;
        if !answer.status.is_success() {
            return Err(AgentError::Protocol(format!(
                "GetCACert: HTTP {}",
                answer.status
            )));
        }
        let certificates = parse_certs_only(&answer.body)
            .map_err(|e| AgentError::Protocol(format!("GetCACert: {e}")))?
            .certificates;
        let ra_index = certificates
            .iter()
            .position(|der| is_encryption_rsa(der))
            .ok_or_else(|| {
                AgentError::Protocol("GetCACert has no RSA certificate for encryption".into())
            })?;
        let ra = certificates[ra_index].clone();
        let ca_certificates: Vec<Vec<u8>> = certificates
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != ra_index)
            .map(|(_, c)| c.clone())
            .collect();
        let roots = pem_certificates(trusted_roots_pem)?;
        chains_to(&ra, &ca_certificates, &roots)?;
        Ok(Self {
            http,
            url: url.to_owned(),
            ra,
            ca_certificates,
            post,
        })
    }

    /// Sends a PKCSReq (`renewal` false; `signer_cert` is a transient self-signed certificate
    /// for `key`) or a RenewalReq (`signer_cert` is the current certificate) for `csr`, and
    /// returns the issued certificate (DER).
    pub async fn request(
        &self,
        key: &SignerKey,
        signer_cert: &[u8],
        csr: &[u8],
        renewal: bool,
    ) -> Result<Vec<u8>> {
        let builder = if renewal {
            RequestBuilder::renewal_req(csr, key, signer_cert, &self.ra)
        } else {
            RequestBuilder::pkcs_req(csr, key, signer_cert, &self.ra)
        };
        let request = builder
            .build()
            .map_err(|e| AgentError::Credentials(format!("SCEP request: {e}")))?;
        let answer = if self.post {
            self.http
                .send(
                    Method::POST,
                    &format!("{}?operation=PKIOperation", self.url),
                    Some("application/x-pki-message"),
                    request.der().to_vec(),
                )
                .await?
        } else {
            let message = percent_encode(&STANDARD.encode(request.der()));
            self.http
                .send(
                    Method::GET,
                    &format!("{}?operation=PKIOperation&message={message}", self.url),
                    None,
                    Vec::new(),
                )
                .await?
        };
        if !answer.status.is_success() {
            return Err(AgentError::Refused {
                kind: format!("http {}", answer.status.as_u16()),
                detail: String::from_utf8_lossy(&answer.body)
                    .chars()
                    .take(200)
                    .collect(),
                retry_after: None,
            });
        }
        match request
            .parse_reply(&answer.body, &[&self.ra], key, &ScepOptions::STRICT)
            .map_err(|e| AgentError::Protocol(format!("CertRep: {e}")))?
        {
            CertRepOutcome::Success { certificates } => certificates
                .into_iter()
                .next()
                .ok_or_else(|| AgentError::Protocol("a SUCCESS without a certificate".into())),
            CertRepOutcome::Failure(fail_info) => Err(AgentError::Refused {
                kind: format!("scep:{fail_info:?}"),
                detail: format!("the CA answered FAILURE ({fail_info:?})"),
                retry_after: None,
            }),
            CertRepOutcome::Pending => Err(AgentError::Unavailable(
                "the CA answered PENDING; agentca never does, so this is another server".into(),
            )),
            CertRepOutcome::Crls(_) => Err(AgentError::Protocol(
                "the CA answered an enrollment with a CRL".into(),
            )),
        }
    }

    /// The CA certificates (DER) from GetCACert, without the RA certificate: the chain that
    /// goes with an issued certificate is taken from these.
    pub fn ca_certificates(&self) -> &[Vec<u8>] {
        &self.ca_certificates
    }
}

/// An RSA certificate whose key may encrypt (keyEncipherment, or no keyUsage at all).
fn is_encryption_rsa(der: &[u8]) -> bool {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return false;
    };
    let rsa = cert.public_key().algorithm.algorithm.to_id_string() == "1.2.840.113549.1.1.1";
    let encipher = match cert.key_usage() {
        Ok(Some(ku)) => ku.value.key_encipherment(),
        Ok(None) => true,
        Err(_) => false,
    };
    rsa && encipher && !cert.is_ca()
}

fn pem_certificates(pem_text: &[u8]) -> Result<Vec<Vec<u8>>> {
    let blocks = pem::parse_many(pem_text)
        .map_err(|e| AgentError::Credentials(format!("CA certificates: {e}")))?;
    let certs: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect();
    if certs.is_empty() {
        return Err(AgentError::Credentials("no CA certificate given".into()));
    }
    Ok(certs)
}

/// `leaf` is signed by a certificate of `intermediates` or `roots`, and so on up to one of
/// `roots` (at most four links; GetCACert answers are short).
pub(crate) fn chains_to(leaf: &[u8], intermediates: &[Vec<u8>], roots: &[Vec<u8>]) -> Result<()> {
    let mut current = leaf.to_vec();
    for _ in 0..4 {
        let (_, cert) = X509Certificate::from_der(&current)
            .map_err(|e| AgentError::Protocol(format!("certificate: {e}")))?;
        for root in roots {
            if signed_by(&cert, root) {
                return Ok(());
            }
        }
        let next = intermediates.iter().find(|candidate| {
            candidate.as_slice() != current.as_slice() && signed_by(&cert, candidate)
        });
        match next {
            Some(issuer) => current = issuer.clone(),
            None => break,
        }
    }
    Err(AgentError::Credentials(
        "the SCEP RA certificate does not chain to the trusted CA root".into(),
    ))
}

fn signed_by(cert: &X509Certificate<'_>, issuer_der: &[u8]) -> bool {
    let Ok((_, issuer)) = X509Certificate::from_der(issuer_der) else {
        return false;
    };
    cert.issuer() == issuer.subject() && cert.verify_signature(Some(issuer.public_key())).is_ok()
}

/// Percent-encodes base64 for a query string (`+`, `/` and `=` are not safe there).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        match c {
            '+' => out.push_str("%2B"),
            '/' => out.push_str("%2F"),
            '=' => out.push_str("%3D"),
            c => out.push(c),
        }
    }
    out
}
