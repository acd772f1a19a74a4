//! The HTTPS listener's TLS: rustls with a certificate the CA issues to itself at start and
//! again when half of its lifetime has passed.
//!
//! The key lives only in memory and is new for every certificate; clients trust the CA's
//! `root.pem`. The certificate resolver is swapped atomically, so a re-issue needs no restart
//! and open connections keep the certificate they negotiated.

use std::sync::{Arc, RwLock};

use agentca_core::issuer::Authority;
use agentca_core::store::CertificateRecord;
use rcgen::KeyPair;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use crate::certs::{self, TlsName};
use crate::error::ServerError;

/// The certificate the HTTPS listener presents, replaceable while serving.
pub(crate) struct TlsIdentity {
    names: Vec<TlsName>,
    current: RwLock<Current>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

#[derive(Clone)]
struct Current {
    key: Arc<CertifiedKey>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// Issues the first certificate for `names`. Returns the issued record too, so its OCSP
    /// responses can be pre-signed like any other certificate's.
    pub(crate) fn issue(
        authority: &Authority,
        names: Vec<TlsName>,
    ) -> Result<(Self, CertificateRecord), ServerError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let (current, record) = issue_current(authority, &names, &provider)?;
        Ok((
            Self {
                names,
                current: RwLock::new(current),
                provider,
            },
            record,
        ))
    }

    /// Replaces the certificate if less than half of its lifetime is left; returns the new
    /// record when it did.
    pub(crate) fn renew_if_due(
        &self,
        authority: &Authority,
        now: OffsetDateTime,
    ) -> Result<Option<CertificateRecord>, ServerError> {
        let (not_before, not_after) = {
            let current = self.read();
            (current.not_before, current.not_after)
        };
        if !certs::nearly_expired(not_before, not_after, now, 2) {
            return Ok(None);
        }
        let (current, record) = issue_current(authority, &self.names, &self.provider)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = current;
        Ok(Some(record))
    }

    /// When the current certificate expires.
    pub(crate) fn not_after(&self) -> OffsetDateTime {
        self.read().not_after
    }

    fn read(&self) -> Current {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The rustls configuration presenting this identity (HTTP/1.1 only).
    pub(crate) fn server_config(
        self: &Arc<Self>,
    ) -> Result<Arc<rustls::ServerConfig>, ServerError> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ServerError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn issue_current(
    authority: &Authority,
    names: &[TlsName],
    provider: &rustls::crypto::CryptoProvider,
) -> Result<(Current, CertificateRecord), ServerError> {
    // P-256 whatever the CA's key type: every TLS client supports it.
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| ServerError::Tls(format!("generate TLS key: {e}")))?;
    let record = certs::issue_tls_server(authority, &key, names)?;
    let chain = vec![
        CertificateDer::from(record.der.clone()),
        CertificateDer::from(authority.ca().cert_der().to_vec()),
    ];
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let certified = CertifiedKey::from_der(chain, key_der, provider)
        .map_err(|e| ServerError::Tls(format!("TLS certificate and key: {e}")))?;
    Ok((
        Current {
            key: Arc::new(certified),
            not_before: record.intent.not_before,
            not_after: record.intent.not_after,
        },
        record,
    ))
}

#[derive(Debug)]
struct Resolver(Arc<TlsIdentity>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().key)
    }
}
