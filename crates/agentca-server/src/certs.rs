//! Certificates the service issues to itself: the HTTPS listener's certificate and rotated
//! OCSP responder certificates.
//!
//! The core's issuer only makes agent certificates (one URI SAN, names from policy). These two
//! follow the same rules — a random serial reserved in the store before the issuing key signs,
//! the certificate recorded and made durable, then a `cert.issued` audit entry — so every
//! signature of the issuing key is accounted for in the store and the audit log, and an
//! operator can list and revoke these certificates like any other.

use std::net::IpAddr;

use agentca_core::issuer::Authority;
use agentca_core::profile::{self, BACKDATE};
use agentca_core::store::{CertificateRecord, EnrollmentMethod};
use rcgen::{
    CertificateParams, CrlDistributionPoint, DistinguishedName, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use crate::error::ServerError;

/// Lifetime of the HTTPS listener's certificate; it is re-issued at half of it.
pub(crate) const TLS_LIFETIME: Duration = Duration::days(7);

/// Lifetime of a rotated responder certificate, as `init` gives the first one.
pub(crate) const RESPONDER_LIFETIME: Duration = Duration::days(90);

/// What a self-issued certificate is for; each has a fixed agent ID path in the trust domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// The HTTPS listener: DNS/IP SANs, serverAuth + clientAuth.
    TlsServer,
    /// The delegated OCSP responder (RFC 6960 §4.2.2.2).
    OcspResponder,
}

impl Role {
    fn agent_path(self) -> &'static str {
        match self {
            Self::TlsServer => "agentca/server",
            Self::OcspResponder => "agentca/ocsp-responder",
        }
    }

    fn lifetime(self) -> Duration {
        match self {
            Self::TlsServer => TLS_LIFETIME,
            Self::OcspResponder => RESPONDER_LIFETIME,
        }
    }
}

/// A name the HTTPS certificate is issued for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TlsName {
    Dns(String),
    Ip(IpAddr),
}

impl TlsName {
    /// Parses an IP address or a DNS name (letters, digits, hyphens, dots; no wildcard).
    pub(crate) fn parse(name: &str) -> Result<Self, ServerError> {
        if let Ok(ip) = name.parse::<IpAddr>() {
            return Ok(Self::Ip(ip));
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(ServerError::Config(format!(
                "TLS name {name:?} is neither an IP address nor a DNS name"
            )));
        }
        Ok(Self::Dns(name))
    }
}

/// Issues the HTTPS listener's certificate for `key` and `names`.
pub(crate) fn issue_tls_server(
    authority: &Authority,
    key: &KeyPair,
    names: &[TlsName],
) -> Result<CertificateRecord, ServerError> {
    issue(authority, Role::TlsServer, key, names)
}

/// Issues a delegated OCSP responder certificate for `key`.
pub(crate) fn issue_ocsp_responder(
    authority: &Authority,
    key: &KeyPair,
) -> Result<CertificateRecord, ServerError> {
    issue(authority, Role::OcspResponder, key, &[])
}

fn issue(
    authority: &Authority,
    role: Role,
    key: &KeyPair,
    names: &[TlsName],
) -> Result<CertificateRecord, ServerError> {
    let ca = authority.ca();
    let trust_domain = ca.trust_domain();
    let agent = format!("spiffe://{trust_domain}/{}", role.agent_path());
    let now = profile::whole_seconds(OffsetDateTime::now_utc());
    let not_before = now - BACKDATE;
    let not_after = (now + role.lifetime()).min(ca.not_after());
    if not_after <= now {
        return Err(agentca_core::Error::InvalidLifetime(
            "the issuing CA certificate has expired".into(),
        )
        .into());
    }
    let spki = key.subject_public_key_info();
    let key_sha256 = hex::encode(Sha256::digest(&spki));

    let intent = authority.reserve(
        &agent,
        EnrollmentMethod::Internal,
        &key_sha256,
        not_before,
        not_after,
        now,
    )?;

    let serial = SerialNumber::from_slice(intent.serial.as_bytes());
    let params = match role {
        Role::TlsServer => {
            let mut params = CertificateParams::default();
            params.serial_number = Some(serial);
            params.not_before = not_before;
            params.not_after = not_after;
            params.is_ca = IsCa::ExplicitNoCa;
            params.use_authority_key_identifier_extension = true;
            params.key_identifier_method =
                KeyIdMethod::PreSpecified(profile::key_identifier(&spki)?);
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            // The leaf profile: empty subject (rcgen then marks the SAN critical), the
            // service's own SPIFFE ID as the one URI SAN, then the names clients connect to.
            params.distinguished_name = DistinguishedName::new();
            let uri = agent
                .as_str()
                .try_into()
                .map_err(|_| ServerError::Config(format!("{agent} is not an IA5 string")))?;
            params.subject_alt_names.push(SanType::URI(uri));
            for name in names {
                params.subject_alt_names.push(match name {
                    TlsName::Dns(d) => SanType::DnsName(d.as_str().try_into().map_err(|_| {
                        ServerError::Config(format!("TLS name {d:?} is not an IA5 string"))
                    })?),
                    TlsName::Ip(ip) => SanType::IpAddress(*ip),
                });
            }
            if key.algorithm() == &rcgen::PKCS_RSA_SHA256 {
                params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
            }
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let urls = ca.urls();
            params.crl_distribution_points = vec![CrlDistributionPoint {
                uris: vec![urls.crl.clone()],
            }];
            params
                .custom_extensions
                .push(profile::authority_info_access(
                    Some(&urls.ocsp),
                    &urls.ca_issuers,
                ));
            params
        }
        // The same profile `init` gives it.
        Role::OcspResponder => agentca_core::ca::ocsp_responder_params(
            trust_domain,
            serial,
            not_before,
            not_after,
            key,
        )?,
    };

    authority.note_signing(&intent)?;
    let ca_key = agentca_core::signer::RcgenSigner::new(ca.signer())?;
    let issuer = Issuer::from_ca_cert_der(&ca.cert_der().into(), &ca_key)
        .map_err(|e| agentca_core::Error::Der(format!("issuing CA certificate: {e}")))?;
    let cert = params.signed_by(key, &issuer).map_err(|e| {
        ca_key
            .take_error()
            .unwrap_or_else(|| agentca_core::Error::Signing(format!("{agent} certificate: {e}")))
    })?;
    let record = CertificateRecord {
        intent,
        der: cert.der().to_vec(),
        issued_at: now,
        revocation: None,
    };
    let store = authority.store();
    store.record_certificate(&record)?;
    store.commit()?;
    let dns: Vec<&str> = names
        .iter()
        .filter_map(|n| match n {
            TlsName::Dns(d) => Some(d.as_str()),
            TlsName::Ip(_) => None,
        })
        .collect();
    let ips: Vec<String> = names
        .iter()
        .filter_map(|n| match n {
            TlsName::Ip(ip) => Some(ip.to_string()),
            TlsName::Dns(_) => None,
        })
        .collect();
    let mut line = serde_json::json!({
            "serial": record.intent.serial.to_hex(),
            "agent": agent,
            "method": record.intent.method.to_string(),
            "purpose": match role {
                Role::TlsServer => "https-listener",
                Role::OcspResponder => "ocsp-responder",
            },
            "not_before": rfc3339(not_before),
            "not_after": rfc3339(not_after),
            "key_sha256": key_sha256,
            "dns": dns,
            "ips": ips,
    });
    if let Some(fields) = line.as_object_mut() {
        for (name, value) in agentca_core::audit::issued_certificate_fields(&record.der) {
            fields.insert(name.into(), value);
        }
    }
    authority.audit().append("cert.issued", line)?;
    authority.audit().sync()?;
    Ok(record)
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// A new key of the kind the CA was created with (`config.toml` `key_type`).
pub(crate) fn generate_key(key_type: &str) -> Result<KeyPair, ServerError> {
    use agentca_core::csr::KeyKind;
    let kind: KeyKind = key_type
        .parse()
        .map_err(|e: String| ServerError::Config(format!("CA key type: {e}")))?;
    let result = match kind {
        KeyKind::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        KeyKind::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
        KeyKind::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519),
        KeyKind::Rsa { bits: 3072 } => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_3072)
        }
        KeyKind::Rsa { bits: 4096 } => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_4096)
        }
        _ => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048),
    };
    result.map_err(|e| agentca_core::Error::Signing(format!("generate {kind} key: {e}")).into())
}

/// notBefore and notAfter of a DER certificate.
pub(crate) fn validity_of(der: &[u8]) -> Result<(OffsetDateTime, OffsetDateTime), ServerError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| agentca_core::Error::Der(format!("certificate: {e}")))?;
    let validity = cert.validity();
    Ok((
        validity.not_before.to_datetime(),
        validity.not_after.to_datetime(),
    ))
}

/// Whether a certificate valid from `not_before` to `not_after` has less than
/// `1/denominator` of its lifetime left at `now`.
pub(crate) fn nearly_expired(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    now: OffsetDateTime,
    denominator: i32,
) -> bool {
    let lifetime = not_after - not_before;
    not_after - now < lifetime / denominator
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_names_parse() {
        assert_eq!(
            TlsName::parse("127.0.0.1").unwrap(),
            TlsName::Ip("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            TlsName::parse("::1").unwrap(),
            TlsName::Ip("::1".parse().unwrap())
        );
        assert_eq!(
            TlsName::parse("CA.Example.org.").unwrap(),
            TlsName::Dns("ca.example.org".into())
        );
        for bad in [
            "",
            "*.example.org",
            "a..b",
            "-a.example",
            "a b",
            "é.example",
        ] {
            assert!(TlsName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn nearly_expired_thresholds() {
        let start = OffsetDateTime::UNIX_EPOCH;
        let end = start + Duration::days(90);
        assert!(!nearly_expired(start, end, start + Duration::days(59), 3));
        assert!(nearly_expired(start, end, start + Duration::days(61), 3));
        assert!(nearly_expired(start, end, end + Duration::days(1), 3));
    }
}
