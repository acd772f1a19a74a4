//! TLS to the database: libpq's `sslmode`, `sslrootcert`, `sslcert` and `sslkey` URL options, on
//! rustls with the aws-lc-rs provider.
//!
//! The `postgres` crate's URL parser knows only `sslmode=disable|prefer|require` and none of the
//! file options, so they are taken out of the URL here first; what it is handed asks for TLS
//! (`require`) whenever certificates are to be checked, and the checking is this module's
//! verifier. The semantics are libpq's:
//!
//! - `disable`: plain TCP.
//! - `prefer` (the default): TLS if the server offers it, plain otherwise.
//! - `require`: TLS or nothing.
//! - `verify-ca`: TLS with a certificate chaining to a root from `sslrootcert`.
//! - `verify-full`: that, and the certificate names the host of the URL.
//!
//! As in libpq, `prefer` and `require` check the chain (not the name) when `sslrootcert` is
//! given, and check nothing otherwise: the session is encrypted but a machine in the middle
//! is not detected. Unlike libpq, nothing is read from `~/.postgresql/`: every file is named in
//! the URL, so what a node trusts does not depend on the home directory of the user running it.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{Result, StoreError};

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self> {
        Ok(match value {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            // `allow` (plain first, TLS if the server insists) is libpq's too, but it never
            // protects anything that `prefer` does not, so it is not offered.
            other => {
                return Err(StoreError::Backend(format!(
                    "invalid PostgreSQL URL: sslmode={other} (expected disable, prefer, require, \
                     verify-ca or verify-full)"
                )));
            }
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// The TLS options of a URL, before any file is read.
#[derive(Debug, Clone)]
pub(crate) struct TlsOptions {
    mode: SslMode,
    root_cert: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
}

impl Default for TlsOptions {
    /// libpq's default: `prefer`, no files.
    fn default() -> Self {
        Self {
            mode: SslMode::Prefer,
            root_cert: None,
            client_cert: None,
            client_key: None,
        }
    }
}

/// Splits the TLS options off `url` and parses the rest. Reads no file, so it also serves to
/// describe a URL.
pub(crate) fn parse_url(url: &str) -> Result<(postgres::Config, TlsOptions)> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut options = TlsOptions::default();
    let mut kept = Vec::new();
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        if pair.is_empty() {
            continue;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match key {
            "sslmode" => {
                options.mode = SslMode::parse(&percent_decode(value, key)?)?;
                continue;
            }
            "sslrootcert" => &mut options.root_cert,
            "sslcert" => &mut options.client_cert,
            "sslkey" => &mut options.client_key,
            _ => {
                kept.push(pair);
                continue;
            }
        };
        *slot = Some(PathBuf::from(percent_decode(value, key)?));
    }
    if options.root_cert.as_deref() == Some(Path::new("system")) {
        // libpq 16 reads `system` as "the operating system's roots"; agentca trusts only the
        // roots it is given, so that a public CA cannot vouch for the database.
        return Err(StoreError::Backend(
            "invalid PostgreSQL URL: sslrootcert=system is not supported; name a PEM file of \
             the roots that issue the server's certificate"
                .into(),
        ));
    }
    // The postgres crate checks nothing itself: it is only told whether TLS is optional.
    kept.push(match options.mode {
        SslMode::Disable => "sslmode=disable",
        SslMode::Prefer => "sslmode=prefer",
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => "sslmode=require",
    });
    let rebuilt = format!("{base}?{}", kept.join("&"));
    let config = rebuilt.parse().map_err(|e: postgres::Error| {
        // The text is not repeated: it may hold a password.
        StoreError::Backend(format!(
            "invalid PostgreSQL URL (not shown, it may contain a password): {}",
            super::pool::describe(&e)
        ))
    })?;
    Ok((config, options))
}

/// `%XX` escapes of a URL query value.
fn percent_decode(value: &str, key: &str) -> Result<String> {
    let invalid = || StoreError::Backend(format!("invalid PostgreSQL URL: bad escape in {key}"));
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(invalid)?;
            let hex = std::str::from_utf8(hex).map_err(|_| invalid())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| invalid())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid())
}

impl TlsOptions {
    /// Reads the named files and builds the connector; errors name `target` and the file.
    pub(crate) fn connector(&self, target: &str) -> Result<RustlsConnect> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let roots = match &self.root_cert {
            Some(path) => Some(read_roots(path, target)?),
            None if matches!(self.mode, SslMode::VerifyCa | SslMode::VerifyFull) => {
                return Err(StoreError::Backend(format!(
                    "PostgreSQL at {target}: sslmode={} needs sslrootcert=FILE, the PEM roots \
                     that issue the server's certificate",
                    self.mode.as_str()
                )));
            }
            None => None,
        };
        // With roots every mode checks the chain (libpq's rule); only verify-full the name.
        let verifier: Arc<dyn ServerCertVerifier> = match roots {
            None => Arc::new(Unverified(Arc::clone(&provider))),
            Some(roots) => {
                let webpki = WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                )
                .build()
                .map_err(|e| {
                    StoreError::Backend(format!("PostgreSQL at {target}: sslrootcert: {e}"))
                })?;
                Arc::new(Verifier {
                    webpki,
                    check_name: self.mode == SslMode::VerifyFull,
                })
            }
        };
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::Backend(format!("TLS to PostgreSQL at {target}: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match (&self.client_cert, &self.client_key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert, "sslcert", target)?;
                let key = read_key(key, target)?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    StoreError::Backend(format!(
                        "PostgreSQL at {target}: sslcert and sslkey do not go together: {e}"
                    ))
                })?
            }
            _ => {
                return Err(StoreError::Backend(format!(
                    "PostgreSQL at {target}: sslcert and sslkey must be given together"
                )));
            }
        };
        // PostgreSQL 17 insists on this ALPN name when the URL asks for
        // `sslnegotiation=direct`; older servers ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(RustlsConnect {
            config: Arc::new(config),
            mode: self.mode,
            root_cert: self.root_cert.clone(),
        })
    }
}

fn read_certs(path: &Path, option: &str, target: &str) -> Result<Vec<CertificateDer<'static>>> {
    let unreadable = |e: &dyn std::fmt::Display| {
        StoreError::Backend(format!(
            "PostgreSQL at {target}: cannot read {option} {}: {e}",
            path.display()
        ))
    };
    let pem = std::fs::read(path).map_err(|e| unreadable(&e))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| unreadable(&e))?;
    if certs.is_empty() {
        return Err(unreadable(&"no PEM certificate in it"));
    }
    Ok(certs)
}

fn read_roots(path: &Path, target: &str) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path, "sslrootcert", target)? {
        roots.add(cert).map_err(|e| {
            StoreError::Backend(format!(
                "PostgreSQL at {target}: sslrootcert {}: {e}",
                path.display()
            ))
        })?;
    }
    Ok(roots)
}

fn read_key(path: &Path, target: &str) -> Result<PrivateKeyDer<'static>> {
    // The key's bytes never reach a message: only the path and the parser's verdict do.
    let pem = std::fs::read(path).map_err(|e| {
        StoreError::Backend(format!(
            "PostgreSQL at {target}: cannot read sslkey {}: {e}",
            path.display()
        ))
    })?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        let e = match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no PEM private key in it (PKCS#8, PKCS#1 or SEC1, unencrypted)".to_owned()
            }
            other => other.to_string(),
        };
        StoreError::Backend(format!(
            "PostgreSQL at {target}: sslkey {}: {e}",
            path.display()
        ))
    })
}

/// Checks the chain against the given roots and, for `verify-full`, the host name.
#[derive(Debug)]
struct Verifier {
    webpki: Arc<WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            // The name is checked only once the chain is good, so this error means the chain
            // was accepted: all that `verify-ca` asks.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// `prefer` and `require` without roots: any certificate is accepted (libpq's behaviour), but
/// the handshake must still be signed by the key it carries, as TLS requires.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The connector handed to the `postgres` crate: one per store, cloned per connection.
#[derive(Clone)]
pub(crate) struct RustlsConnect {
    config: Arc<ClientConfig>,
    mode: SslMode,
    root_cert: Option<PathBuf>,
}

impl RustlsConnect {
    /// What the handshake was held to, for the message of a failed one.
    fn describe_check(&self) -> String {
        let mut check = format!("sslmode={}", self.mode.as_str());
        if let Some(root) = &self.root_cert {
            check.push_str(&format!(", sslrootcert {}", root.display()));
        }
        // libpq retries without TLS here; agentca reports a server whose TLS fails instead of
        // hiding it, and says how to go without.
        if self.mode == SslMode::Prefer {
            check.push_str(
                ", which does not fall back to plain TCP after a failed handshake: \
                 sslmode=disable goes without TLS",
            );
        }
        check
    }
}

impl<S> MakeTlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsHandshake;
    type Error = std::io::Error;

    fn make_tls_connect(&mut self, host: &str) -> std::io::Result<RustlsHandshake> {
        // A unix socket has no host name (`""`); the server refuses TLS there before a
        // handshake is tried, so a bad name is reported only when one is.
        let name = ServerName::try_from(host.to_owned()).ok();
        Ok(RustlsHandshake {
            connector: tokio_rustls::TlsConnector::from(Arc::clone(&self.config)),
            name,
            host: host.to_owned(),
            check: self.describe_check(),
        })
    }
}

/// One handshake to come.
pub(crate) struct RustlsHandshake {
    connector: tokio_rustls::TlsConnector,
    name: Option<ServerName<'static>>,
    host: String,
    check: String,
}

impl<S> TlsConnect<S> for RustlsHandshake
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let Some(name) = self.name else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{:?} is not a host name TLS can check", self.host),
                ));
            };
            match self.connector.connect(name, stream).await {
                Ok(stream) => Ok(RustlsStream(Box::new(stream))),
                Err(e) => Err(std::io::Error::new(
                    e.kind(),
                    explain_handshake_error(&e, &self.check),
                )),
            }
        })
    }
}

/// A handshake error in words an operator can act on.
fn explain_handshake_error(e: &std::io::Error, check: &str) -> String {
    let rustls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidCertificate(CertificateError::NotValidForName))
        | Some(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            ..
        })) => format!("the server's certificate does not name the host of the URL ({check}): {e}"),
        Some(rustls::Error::InvalidCertificate(_)) => {
            format!("the server's certificate is not trusted ({check}): {e}")
        }
        _ => format!("TLS handshake failed ({check}): {e}"),
    }
}

/// An established TLS session.
pub(crate) struct RustlsStream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S> postgres::tls::TlsStream for RustlsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn channel_binding(&self) -> ChannelBinding {
        let (_, session) = self.0.get_ref();
        session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|cert| tls_server_end_point(cert))
            .map_or_else(ChannelBinding::none, ChannelBinding::tls_server_end_point)
    }
}

/// RFC 5929's `tls-server-end-point`: the certificate hashed with its signature's hash (SHA-256
/// for MD5 and SHA-1). With it, SCRAM authentication (`SCRAM-SHA-256-PLUS`) fails if someone in
/// the middle terminated TLS, even when the certificate itself was not checked. `None` for a
/// signature without a single hash (Ed25519): the session then goes without binding.
fn tls_server_end_point(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    use aws_lc_rs::digest;
    use x509_parser::oid_registry as oids;

    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let oid = &parsed.signature_algorithm.algorithm;
    let algorithm =
        if *oid == oids::OID_PKCS1_SHA384WITHRSA || *oid == oids::OID_SIG_ECDSA_WITH_SHA384 {
            &digest::SHA384
        } else if *oid == oids::OID_PKCS1_SHA512WITHRSA || *oid == oids::OID_SIG_ECDSA_WITH_SHA512 {
            &digest::SHA512
        } else if *oid == oids::OID_PKCS1_SHA256WITHRSA
            || *oid == oids::OID_SIG_ECDSA_WITH_SHA256
            || *oid == oids::OID_PKCS1_SHA1WITHRSA
            || *oid == oids::OID_PKCS1_MD5WITHRSAENC
        {
            &digest::SHA256
        } else {
            return None;
        };
    Some(digest::digest(algorithm, cert.as_ref()).as_ref().to_vec())
}

impl<S> AsyncRead for RustlsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S> AsyncWrite for RustlsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::OnceLock;

    use agentca_testkit::postgres::{PgCluster, TlsAccess, shared};

    use super::super::{PostgresOptions, PostgresStore, column};
    use super::*;

    const PASSWORD: &str = "pw-not-for-logs";

    fn options() -> PostgresOptions {
        PostgresOptions {
            connections: 2,
            ..PostgresOptions::default()
        }
    }

    /// A cluster with TLS on and plain TCP still accepted, shared by this module's tests.
    fn tls_cluster() -> Option<&'static PgCluster> {
        static CLUSTER: OnceLock<Option<PgCluster>> = OnceLock::new();
        CLUSTER
            .get_or_init(|| PgCluster::start_tls(&[("fsync", "off")], TlsAccess::Optional).unwrap())
            .as_ref()
    }

    /// A fresh database's URL on `cluster`, with a password (trust authentication ignores it)
    /// that must never be printed, and `query` appended.
    fn url(cluster: &PgCluster, query: &str) -> String {
        let url = cluster.fresh_database();
        let url = url.replacen("postgres@", &format!("postgres:{PASSWORD}@"), 1);
        format!("{url}?{query}")
    }

    fn root(cluster: &PgCluster) -> String {
        cluster.tls().unwrap().root.display().to_string()
    }

    /// Whether the store's session runs over TLS, as the server sees it.
    fn encrypted(store: &PostgresStore) -> bool {
        store
            .pool
            .run(|c| {
                let rows = c.query(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    &[],
                )?;
                column::<bool>(&rows[0], 0, "pg_stat_ssl")
            })
            .unwrap()
    }

    fn open_error(url: &str) -> String {
        let err = PostgresStore::open_with(url, &options())
            .unwrap_err()
            .to_string();
        assert!(!err.contains(PASSWORD), "the password leaked: {err}");
        // Shown with --nocapture: the messages are part of what is tested.
        eprintln!("{err}");
        err
    }

    #[test]
    fn postgres_tls_options_are_taken_out_of_the_url() {
        let (config, tls) = parse_url(&format!(
            "postgres://u:{PASSWORD}@db.example:5433/ca?application_name=x&sslmode=verify-full\
             &sslrootcert=%2Fetc%2Fagentca%2Fdb%20roots.pem"
        ))
        .unwrap();
        assert_eq!(config.get_ssl_mode(), postgres::config::SslMode::Require);
        assert_eq!(config.get_application_name(), Some("x"));
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(
            tls.root_cert.as_deref(),
            Some(Path::new("/etc/agentca/db roots.pem"))
        );
        let (config, tls) = parse_url("postgres://u@h/d").unwrap();
        assert_eq!(config.get_ssl_mode(), postgres::config::SslMode::Prefer);
        assert_eq!(tls.mode, SslMode::Prefer);
        let (config, _) = parse_url("postgres://u@h/d?sslmode=disable").unwrap();
        assert_eq!(config.get_ssl_mode(), postgres::config::SslMode::Disable);

        assert_eq!(
            PostgresStore::describe_url(&format!(
                "postgres://u:{PASSWORD}@db.example:5433/ca?sslmode=verify-ca&sslrootcert=r.pem"
            )),
            "u@db.example:5433/ca"
        );
        for (query, expected) in [
            ("sslmode=verify", "sslmode=verify "),
            ("sslrootcert=system", "sslrootcert=system is not supported"),
            ("sslrootcert=%zz", "bad escape in sslrootcert"),
        ] {
            let err = open_error(&format!("postgres://u:{PASSWORD}@h/d?{query}"));
            assert!(err.contains(expected), "{query}: {err}");
        }
        // Checked before any connection is tried.
        let err = open_error(&format!(
            "postgres://u:{PASSWORD}@db.example:5433/ca?sslmode=verify-full"
        ));
        assert!(err.contains("needs sslrootcert"), "{err}");
        assert!(err.contains("u@db.example:5433/ca"), "{err}");
        let err = open_error(&format!(
            "postgres://u:{PASSWORD}@db.example:5433/ca?sslmode=verify-ca&sslrootcert=/nonexistent.pem"
        ));
        assert!(
            err.contains("cannot read sslrootcert /nonexistent.pem"),
            "{err}"
        );
        let err = open_error(&format!(
            "postgres://u:{PASSWORD}@db.example:5433/ca?sslmode=require&sslcert=/c.pem"
        ));
        assert!(
            err.contains("sslcert and sslkey must be given together"),
            "{err}"
        );
    }

    #[test]
    fn postgres_verify_full_with_the_right_root_serves_the_store() {
        let Some(cluster) = tls_cluster() else { return };
        let url = url(
            cluster,
            &format!("sslmode=verify-full&sslrootcert={}", root(cluster)),
        );
        let store = PostgresStore::open_with(&url, &options()).unwrap();
        assert!(encrypted(&store));
        crate::battery::agents(&store);
        crate::battery::serial_reservation_is_insert_if_absent(&store);
    }

    #[test]
    fn postgres_verify_full_refuses_a_server_of_another_ca() {
        let Some(cluster) = tls_cluster() else { return };
        let other = cluster.tls().unwrap().other_root.display().to_string();
        let url = url(cluster, &format!("sslmode=verify-full&sslrootcert={other}"));
        let err = open_error(&url);
        let target = PostgresStore::describe_url(&url);
        assert!(err.contains(&target), "{err}");
        assert!(err.contains("certificate is not trusted"), "{err}");
        assert!(err.contains("UnknownIssuer"), "{err}");
        // verify-ca checks the chain as well.
        let url = url_with(&url, "verify-full", "verify-ca");
        assert!(open_error(&url).contains("certificate is not trusted"));
    }

    fn url_with(url: &str, from: &str, to: &str) -> String {
        url.replacen(&format!("sslmode={from}"), &format!("sslmode={to}"), 1)
    }

    #[test]
    fn postgres_verify_full_checks_the_host_name_and_verify_ca_does_not() {
        let Some(cluster) = tls_cluster() else { return };
        // The server's certificate names 127.0.0.1 and localhost, not this host.
        let url = url(
            cluster,
            &format!(
                "hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={}",
                root(cluster)
            ),
        )
        .replacen("@127.0.0.1:", "@db.invalid:", 1);
        let err = open_error(&url);
        assert!(err.contains("does not name the host"), "{err}");
        assert!(err.contains("db.invalid:"), "{err}");
        let store =
            PostgresStore::open_with(&url_with(&url, "verify-full", "verify-ca"), &options())
                .unwrap();
        assert!(encrypted(&store));
    }

    #[test]
    fn postgres_require_encrypts_without_checking_and_needs_tls() {
        let Some(cluster) = tls_cluster() else { return };
        let store = PostgresStore::open_with(&url(cluster, "sslmode=require"), &options()).unwrap();
        assert!(encrypted(&store));
        // As in libpq, a root file makes `require` check the chain.
        let other = cluster.tls().unwrap().other_root.display().to_string();
        let err = open_error(&url(
            cluster,
            &format!("sslmode=require&sslrootcert={other}"),
        ));
        assert!(err.contains("certificate is not trusted"), "{err}");
        let err = open_error(&url(
            cluster,
            &format!("sslmode=prefer&sslrootcert={other}"),
        ));
        assert!(err.contains("certificate is not trusted"), "{err}");
        assert!(err.contains("does not fall back"), "{err}");
        // A server without TLS is refused.
        let Some(plain) = shared() else { return };
        let err = open_error(&url(plain, "sslmode=require"));
        assert!(err.contains("server does not support TLS"), "{err}");
    }

    #[test]
    fn postgres_a_unix_socket_has_no_tls() {
        let Some(cluster) = tls_cluster() else { return };
        // PostgreSQL offers no TLS on its unix socket even with `ssl = on`: `prefer` goes
        // plain there, `require` is refused rather than quietly ignored as libpq does.
        let tcp = cluster.fresh_database();
        let name = tcp.rsplit('/').next().unwrap();
        let socket = format!(
            "postgres://postgres:{PASSWORD}@/{name}?host={}&port={}",
            cluster.socket_dir().display(),
            cluster.port()
        );
        let store =
            PostgresStore::open_with(&format!("{socket}&sslmode=prefer"), &options()).unwrap();
        assert!(!encrypted(&store));
        let err = open_error(&format!("{socket}&sslmode=require"));
        assert!(err.contains("server does not support TLS"), "{err}");
    }

    #[test]
    fn postgres_prefer_takes_tls_when_offered_and_plain_otherwise() {
        let Some(cluster) = tls_cluster() else { return };
        let store = PostgresStore::open_with(&url(cluster, "sslmode=prefer"), &options()).unwrap();
        assert!(encrypted(&store));
        let Some(plain) = shared() else { return };
        let store = PostgresStore::open_with(&url(plain, "sslmode=prefer"), &options()).unwrap();
        assert!(!encrypted(&store));
        crate::battery::agents(&store);
    }

    #[test]
    fn postgres_a_server_requiring_tls_and_a_password() {
        let Some(cluster) = PgCluster::start_tls(
            &[("fsync", "off")],
            TlsAccess::Password(PASSWORD.to_owned()),
        )
        .unwrap() else {
            return;
        };
        let url = url(&cluster, "sslmode=disable");
        let err = open_error(&url);
        assert!(err.contains(&PostgresStore::describe_url(&url)), "{err}");
        assert!(err.contains("no pg_hba.conf entry"), "{err}");
        assert!(err.contains("no encryption"), "{err}");

        // SCRAM with channel binding: the server checks the hash of its certificate that the
        // client computed, so an unverified session is still bound to it.
        let verified = format!(
            "{}&sslrootcert={}&channel_binding=require",
            url_with(&url, "disable", "verify-full"),
            root(&cluster)
        );
        let store = PostgresStore::open_with(&verified, &options()).unwrap();
        assert!(encrypted(&store));
        crate::battery::agents(&store);
        let unverified = format!(
            "{}&channel_binding=require",
            url_with(&url, "disable", "require")
        );
        assert!(encrypted(
            &PostgresStore::open_with(&unverified, &options()).unwrap()
        ));

        let wrong = verified.replacen(PASSWORD, "not-the-password", 1);
        let err = PostgresStore::open_with(&wrong, &options())
            .unwrap_err()
            .to_string();
        assert!(err.contains("password authentication failed"), "{err}");
        assert!(!err.contains("not-the-password"), "{err}");
    }

    #[test]
    fn postgres_a_client_certificate_authenticates() {
        let Some(cluster) =
            PgCluster::start_tls(&[("fsync", "off")], TlsAccess::ClientCertificate).unwrap()
        else {
            return;
        };
        let files = cluster.tls().unwrap();
        let url = url(
            &cluster,
            &format!("sslmode=verify-full&sslrootcert={}", root(&cluster)),
        );
        let err = open_error(&url);
        assert!(err.contains("requires a valid client certificate"), "{err}");
        let with_cert = format!(
            "{url}&sslcert={}&sslkey={}",
            files.client_cert.display(),
            files.client_key.display()
        );
        let store = PostgresStore::open_with(&with_cert, &options()).unwrap();
        assert!(encrypted(&store));
        // A file without a key.
        let keyless = format!(
            "{url}&sslcert={}&sslkey={}",
            files.client_cert.display(),
            files.root.display()
        );
        let err = open_error(&keyless);
        assert!(err.contains("no PEM private key"), "{err}");
    }
}
