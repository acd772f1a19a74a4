//! What a test knows about a certificate before it looks at it.

use std::net::IpAddr;

use time::{Duration, OffsetDateTime};

/// The fixed backdate of `notBefore` (design §2): certificates start five minutes before they
/// are signed, to absorb clients' clock skew.
pub const BACKDATE: Duration = Duration::minutes(5);

/// The facts a leaf certificate must match, taken from the request the test made.
///
/// Build one with [`Expectation::new`] and the chained setters:
///
/// ```
/// # use agentca_testkit::Expectation;
/// # use time::{Duration, OffsetDateTime};
/// let expect = Expectation::new("spiffe://example.org/agent/alice", OffsetDateTime::now_utc())
///     .dns(["alice.example.org"])
///     .max_lifetime(Duration::hours(24))
///     .base_url("http://127.0.0.1:8080");
/// # let _ = expect;
/// ```
#[derive(Debug, Clone)]
pub struct Expectation {
    /// The agent's SPIFFE ID; the one URI SAN must equal it byte for byte.
    pub agent_id: String,
    /// The DNS SANs the certificate must carry, in any order.
    pub dns: Vec<String>,
    /// The IP SANs the certificate must carry, in any order.
    pub ips: Vec<IpAddr>,
    /// The longest lifetime policy allows, counted from the signing time.
    pub max_lifetime: Duration,
    /// The lifetime the request asked for, if it asked; the certificate must have exactly it.
    pub requested_lifetime: Option<Duration>,
    /// A time taken just before the request was sent: the signature cannot be older.
    pub signed_at: OffsetDateTime,
    /// How long after `signed_at` the signature may have been made. Generous by default
    /// (60 s) so slow machines pass, yet far below the 5 min backdate a bug would shift by.
    pub signing_window: Duration,
    /// The DER SubjectPublicKeyInfo of the CSR, if the test made one.
    pub csr_public_key_spki: Option<Vec<u8>>,
    /// The CA's `--base-url`, to check the AIA and CRL distribution point URLs exactly.
    pub base_url: Option<String>,
}

impl Expectation {
    /// The expectation for `agent_id` signed no earlier than `signed_at`, with no DNS or IP
    /// names and the design's default maximum lifetime of 24 hours.
    pub fn new(agent_id: impl Into<String>, signed_at: OffsetDateTime) -> Self {
        Self {
            agent_id: agent_id.into(),
            dns: Vec::new(),
            ips: Vec::new(),
            max_lifetime: Duration::hours(24),
            requested_lifetime: None,
            signed_at,
            signing_window: Duration::seconds(60),
            csr_public_key_spki: None,
            base_url: None,
        }
    }

    /// Sets the DNS SANs the certificate must carry.
    pub fn dns<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.dns = names.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the IP SANs the certificate must carry.
    pub fn ips(mut self, addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        self.ips = addrs.into_iter().collect();
        self
    }

    /// Sets the policy's maximum lifetime.
    pub fn max_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_lifetime = lifetime;
        self
    }

    /// Sets the lifetime the request asked for.
    pub fn requested_lifetime(mut self, lifetime: Duration) -> Self {
        self.requested_lifetime = Some(lifetime);
        self
    }

    /// Widens or narrows how long after `signed_at` the signature may have been made.
    pub fn signing_window(mut self, window: Duration) -> Self {
        self.signing_window = window;
        self
    }

    /// Sets the CSR's DER SubjectPublicKeyInfo; the certificate must carry exactly this key.
    pub fn csr_public_key_spki(mut self, spki: impl Into<Vec<u8>>) -> Self {
        self.csr_public_key_spki = Some(spki.into());
        self
    }

    /// Takes the expected public key from a DER PKCS#10 CSR; panics if it does not parse.
    pub fn csr(self, csr_der: &[u8]) -> Self {
        use x509_parser::certification_request::X509CertificationRequest;
        use x509_parser::prelude::FromDer;

        let spki = match X509CertificationRequest::from_der(csr_der) {
            Ok((_, csr)) => csr.certification_request_info.subject_pki.raw.to_vec(),
            Err(e) => panic!("Expectation::csr: the CSR does not parse: {e}"),
        };
        self.csr_public_key_spki(spki)
    }

    /// Sets the CA's base URL, to check AIA and CRL distribution point URLs exactly.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, PublicKeyData};

    use super::*;

    #[test]
    fn csr_supplies_the_public_key() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .unwrap();
        let expect =
            Expectation::new("spiffe://example.org/a", OffsetDateTime::now_utc()).csr(csr.der());
        assert_eq!(
            expect.csr_public_key_spki,
            Some(key.subject_public_key_info())
        );
    }

    #[test]
    #[should_panic(expected = "the CSR does not parse")]
    fn garbage_csr_panics() {
        let _ = Expectation::new("spiffe://example.org/a", OffsetDateTime::now_utc()).csr(b"nope");
    }
}
