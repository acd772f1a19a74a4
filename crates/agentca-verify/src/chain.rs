//! The certificate checks that need no network: a path to a trust anchor (rustls-webpki), the
//! validity window, the leaf profile (not a CA, exactly one URI SAN that is a canonical SPIFFE
//! ID) and the identity policy — plus, when a CRL is at hand, the CRL lookup, which webpki does
//! while it builds the path.

use std::fmt;

use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm};
use time::OffsetDateTime;
use webpki::{
    CertRevocationList, EndEntityCert, ExpirationPolicy, KeyUsage, RevocationCheckDepth,
    RevocationOptionsBuilder, UnknownStatusPolicy,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::OID_PKIX_ACCESS_DESCRIPTOR_OCSP;
use x509_parser::prelude::FromDer;

use crate::anchors::TrustAnchors;
use crate::clock::{offset_date_time, unix_time};
use crate::error::Error;
use crate::paths::{PathCache, Window};
use crate::pattern::IdPattern;
use crate::revocation::RevocationSource;
use crate::spiffe::{self, SpiffeId};

/// What the peer's certificate must be good for (its extended key usage, if it has one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Usage {
    /// TLS client authentication (`id-kp-clientAuth`): a service checking an agent calling it.
    ClientAuth,
    /// TLS server authentication (`id-kp-serverAuth`): an agent checking the service it calls.
    ServerAuth,
}

impl Usage {
    fn webpki(self) -> KeyUsage {
        match self {
            Self::ClientAuth => KeyUsage::client_auth(),
            Self::ServerAuth => KeyUsage::server_auth(),
        }
    }
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ClientAuth => "TLS client authentication",
            Self::ServerAuth => "TLS server authentication",
        })
    }
}

/// Which agents are accepted.
#[derive(Clone, Debug)]
pub(crate) enum IdPolicy {
    /// Any well-formed SPIFFE ID under the trust anchors.
    Any,
    /// IDs matching at least one of these.
    OneOf(Vec<IdPattern>),
}

impl IdPolicy {
    fn check(&self, id: SpiffeId) -> Result<SpiffeId, Error> {
        match self {
            Self::Any => Ok(id),
            Self::OneOf(patterns) if patterns.iter().any(|p| p.matches(&id)) => Ok(id),
            Self::OneOf(patterns) => Err(Error::IdentityMismatch {
                id,
                expected: patterns
                    .iter()
                    .map(IdPattern::as_str)
                    .collect::<Vec<_>>()
                    .join(" or "),
            }),
        }
    }
}

/// A leaf that passed every offline check.
#[derive(Clone, Debug)]
pub(crate) struct Checked {
    pub(crate) id: SpiffeId,
    /// INTEGER content bytes, as in the certificate.
    pub(crate) serial: Vec<u8>,
    pub(crate) not_before: OffsetDateTime,
    pub(crate) not_after: OffsetDateTime,
    /// The certificate that signed the leaf: the first intermediate of the path, or the anchor.
    pub(crate) issuer: CertificateDer<'static>,
    /// The leaf's AIA OCSP responder URLs.
    pub(crate) ocsp_urls: Vec<String>,
}

/// Everything the offline checks need.
pub(crate) struct ChainPolicy<'a> {
    pub(crate) anchors: &'a TrustAnchors,
    pub(crate) algs: &'a [&'a dyn SignatureVerificationAlgorithm],
    pub(crate) ids: &'a IdPolicy,
    /// Paths verified before, used for checks without a CRL.
    pub(crate) paths: &'a PathCache,
}

impl ChainPolicy<'_> {
    /// Runs the checks in order: the leaf parses and is not a CA; a path to an anchor exists
    /// for `usage` at `now` (and, with `crl`, the CRL does not list the leaf); the leaf has
    /// exactly one URI SAN, a canonical SPIFFE ID the identity policy accepts. Without a CRL,
    /// a path verified before and still valid passes at once (see [`crate::paths`]).
    pub(crate) fn check(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: OffsetDateTime,
        usage: Usage,
        crl: Option<&CertRevocationList<'_>>,
    ) -> Result<Checked, Error> {
        if crl.is_some() || !self.paths.enabled() {
            return self
                .verify(leaf, intermediates, now, usage, crl)
                .map(|(c, _)| c);
        }
        let key = PathCache::key(usage, leaf, intermediates);
        if let Some(checked) = self.paths.lookup(&key, now) {
            return Ok(checked);
        }
        let (checked, window) = self.verify(leaf, intermediates, now, usage, None)?;
        self.paths.insert(key, checked.clone(), window, now);
        Ok(checked)
    }

    /// [`ChainPolicy::check`] in full, and when every certificate of the path found is valid.
    fn verify(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: OffsetDateTime,
        usage: Usage,
        crl: Option<&CertRevocationList<'_>>,
    ) -> Result<(Checked, Window), Error> {
        let (rest, cert) = X509Certificate::from_der(leaf)
            .map_err(|e| Error::MalformedCertificate(e.to_string()))?;
        if !rest.is_empty() {
            return Err(Error::MalformedCertificate(
                "trailing bytes after the certificate".into(),
            ));
        }
        let bad = |e: x509_parser::error::X509Error| Error::MalformedCertificate(e.to_string());
        if cert
            .basic_constraints()
            .map_err(bad)?
            .is_some_and(|bc| bc.value.ca)
        {
            return Err(Error::CaCertificate);
        }
        if cert
            .key_usage()
            .map_err(bad)?
            .is_some_and(|ku| !ku.value.digital_signature())
        {
            return Err(Error::WrongUsage(usage));
        }

        let ee = EndEntityCert::try_from(leaf)
            .map_err(|e| Error::MalformedCertificate(format!("{e:?}")))?;
        let crls;
        let revocation = match crl {
            Some(crl) => {
                crls = [crl];
                Some(
                    RevocationOptionsBuilder::new(&crls)
                        .map_err(|_| Error::InvalidCrl("no CRL".into()))?
                        .with_depth(RevocationCheckDepth::EndEntity)
                        .with_status_policy(UnknownStatusPolicy::Deny)
                        .with_expiration_policy(ExpirationPolicy::Enforce)
                        .build(),
                )
            }
            None => None,
        };
        let path = ee
            .verify_for_usage(
                self.algs,
                self.anchors.webpki(),
                intermediates,
                unix_time(now),
                usage.webpki(),
                revocation,
                None,
            )
            .map_err(|e| map_webpki(e, usage, now, crl, cert.raw_serial()))?;
        let issuer = match path.intermediate_certificates().next() {
            Some(issuer) => issuer.der().into_owned(),
            None => self
                .anchors
                .cert_of(path.anchor())
                .ok_or_else(|| Error::Untrusted("path ends at an unknown anchor".into()))?
                .clone(),
        };

        let id = self.ids.check(spiffe_id(&cert)?)?;
        let validity = cert.validity();
        let mut window = Window {
            from: validity.not_before.to_datetime(),
            until: validity.not_after.to_datetime(),
        };
        for intermediate in path.intermediate_certificates() {
            let der = intermediate.der();
            let (_, ca) = X509Certificate::from_der(&der)
                .map_err(|e| Error::MalformedCertificate(format!("intermediate: {e}")))?;
            window.from = window.from.max(ca.validity().not_before.to_datetime());
            window.until = window.until.min(ca.validity().not_after.to_datetime());
        }
        let checked = Checked {
            id,
            serial: cert.raw_serial().to_vec(),
            not_before: validity.not_before.to_datetime(),
            not_after: validity.not_after.to_datetime(),
            issuer,
            ocsp_urls: ocsp_urls(&cert),
        };
        Ok((checked, window))
    }
}

/// The one URI SAN, parsed as a SPIFFE ID.
fn spiffe_id(cert: &X509Certificate<'_>) -> Result<SpiffeId, Error> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| Error::MalformedCertificate(e.to_string()))?;
    let uris: Vec<&str> = san
        .iter()
        .flat_map(|san| san.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [] => Err(Error::NoUriSan),
        [uri] => SpiffeId::parse(uri).map_err(|reason| Error::NotSpiffeId {
            uri: spiffe::shorten(uri),
            reason,
        }),
        more => Err(Error::MultipleUriSans(more.len())),
    }
}

fn ocsp_urls(cert: &X509Certificate<'_>) -> Vec<String> {
    let mut urls = Vec::new();
    for ext in cert.iter_extensions() {
        if let ParsedExtension::AuthorityInfoAccess(aia) = ext.parsed_extension() {
            for desc in &aia.accessdescs {
                if desc.access_method == OID_PKIX_ACCESS_DESCRIPTOR_OCSP
                    && let GeneralName::URI(uri) = desc.access_location
                {
                    urls.push(uri.to_owned());
                }
            }
        }
    }
    urls
}

/// webpki's verdict in this crate's terms.
fn map_webpki(
    e: webpki::Error,
    usage: Usage,
    now: OffsetDateTime,
    crl: Option<&CertRevocationList<'_>>,
    serial: &[u8],
) -> Error {
    use webpki::Error as W;
    match e {
        W::CertExpired { not_after, .. } => Error::Expired {
            not_after: offset_date_time(not_after),
            now,
        },
        W::CertNotValidYet { not_before, .. } => Error::NotYetValid {
            not_before: offset_date_time(not_before),
            now,
        },
        W::CaUsedAsEndEntity => Error::CaCertificate,
        #[allow(deprecated)]
        W::RequiredEkuNotFound | W::RequiredEkuNotFoundContext(_) => Error::WrongUsage(usage),
        W::UnknownIssuer => Error::Untrusted("no path to a trust anchor (unknown issuer)".into()),
        W::InvalidSignatureForPublicKey => {
            Error::Untrusted("a signature in the chain does not verify".into())
        }
        W::CertRevoked => {
            let entry = crl.and_then(|crl| crl.find_serial(serial).ok().flatten());
            Error::Revoked {
                serial: hex::encode(serial),
                revoked_at: entry.as_ref().map(|e| offset_date_time(e.revocation_date)),
                reason: entry.and_then(|e| e.reason_code).map(Into::into),
                by: RevocationSource::Crl,
            }
        }
        W::CrlExpired { next_update, .. } => Error::CrlStale {
            next_update: offset_date_time(next_update),
            now,
        },
        W::InvalidCrlSignatureForPublicKey => Error::CrlBadSignature,
        W::UnknownRevocationStatus => Error::CrlNotAuthoritative(
            "it is not from the certificate's issuer, or its scope excludes the certificate".into(),
        ),
        W::IssuerNotCrlSigner => {
            Error::CrlNotAuthoritative("the issuer's key usage does not allow signing CRLs".into())
        }
        #[allow(deprecated)]
        W::UnsupportedCrlSignatureAlgorithm
        | W::UnsupportedCrlSignatureAlgorithmContext(_)
        | W::UnsupportedCrlSignatureAlgorithmForPublicKey
        | W::UnsupportedCrlSignatureAlgorithmForPublicKeyContext(_) => {
            Error::CrlMalformed("unsupported CRL signature algorithm".into())
        }
        other => Error::Untrusted(format!("{other:?}")),
    }
}
