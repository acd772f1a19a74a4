//! Which certificates have been replaced: what a mass revocation waits for, so that it revokes
//! only certificates whose holders already run on a successor (BR §4.9.1.1 deadlines with
//! ARI-driven renewal, as in the Let's Encrypt 2020 CAA incident, where revoking first would have
//! taken three million sites down).
//!
//! A certificate counts as replaced by a later one of the same agent that is valid now and
//! names at least the same identities. For a revocation that blocks the key
//! (keyCompromise), a successor only counts with another key: revoking the old certificate
//! would revoke a successor with the same key too. Issuance times are whole seconds, so
//! certificates issued in the same second are not told apart and do not replace one another.

use std::collections::BTreeSet;

use time::OffsetDateTime;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::store::{CertificateRecord, RevocationReason};

/// What a certificate names: its SANs as `type:value` text.
fn names(der: &[u8]) -> Option<BTreeSet<String>> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let mut names = BTreeSet::new();
    for ext in cert.tbs_certificate.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for name in &san.general_names {
                names.insert(match name {
                    GeneralName::URI(u) => format!("uri:{u}"),
                    GeneralName::DNSName(d) => format!("dns:{}", d.to_ascii_lowercase()),
                    GeneralName::IPAddress(b) => format!("ip:{}", hex::encode(b)),
                    other => format!("other:{other:?}"),
                });
            }
        }
    }
    Some(names)
}

fn valid_at(c: &CertificateRecord, now: OffsetDateTime) -> bool {
    c.revocation.is_none() && c.intent.not_after > now
}

/// A certificate and what it names.
struct Named<'a> {
    record: &'a CertificateRecord,
    names: BTreeSet<String>,
}

/// The valid certificates of one agent, read once, to tell which of them have successors.
pub struct Successions<'a> {
    valid: Vec<Named<'a>>,
}

impl<'a> Successions<'a> {
    /// From every certificate of one agent; those revoked or expired at `now` are left out.
    /// A certificate whose DER cannot be read is left out too: it can neither be shown to be
    /// replaced nor vouch for another.
    pub fn new(certificates: &'a [CertificateRecord], now: OffsetDateTime) -> Self {
        let valid = certificates
            .iter()
            .filter(|c| valid_at(c, now))
            .filter_map(|record| names(&record.der).map(|names| Named { record, names }))
            .collect();
        Self { valid }
    }

    /// The valid certificates, oldest first.
    pub fn valid(&self) -> impl Iterator<Item = &'a CertificateRecord> + '_ {
        let mut all: Vec<&'a CertificateRecord> = self.valid.iter().map(|n| n.record).collect();
        all.sort_by_key(|c| (c.issued_at, c.intent.serial));
        all.into_iter()
    }

    /// The newest certificate that replaces `old` for a revocation with `reason`, if any: one
    /// issued after it, valid, naming everything `old` names, and, when `reason` blocks the
    /// key, certifying another key.
    pub fn successor(
        &self,
        old: &CertificateRecord,
        reason: RevocationReason,
    ) -> Option<&'a CertificateRecord> {
        let old = self
            .valid
            .iter()
            .find(|n| n.record.intent.serial == old.intent.serial)?;
        self.valid
            .iter()
            .filter(|n| n.record.issued_at > old.record.issued_at)
            .filter(|n| n.names.is_superset(&old.names))
            .filter(|n| {
                reason != RevocationReason::KeyCompromise
                    || n.record.intent.key_sha256 != old.record.intent.key_sha256
            })
            .max_by_key(|n| (n.record.issued_at, n.record.intent.serial))
            .map(|n| n.record)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use time::Duration;

    use super::*;
    use crate::store::{EnrollmentMethod, IssuanceIntent, Revocation, Serial};

    const AGENT: &str = "spiffe://example.org/agent/a";

    fn leaf(dns: &[&str], key: &rcgen::KeyPair) -> Vec<u8> {
        let mut params =
            rcgen::CertificateParams::new(dns.iter().map(|d| (*d).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.subject_alt_names.push(rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from(AGENT).unwrap(),
        ));
        params.self_signed(key).unwrap().der().to_vec()
    }

    fn record(n: u8, issued: i64, dns: &[&str], key: &rcgen::KeyPair) -> CertificateRecord {
        let t = OffsetDateTime::from_unix_timestamp(1_800_000_000 + issued).unwrap();
        CertificateRecord {
            intent: IssuanceIntent {
                serial: Serial::from_bytes([n; 16]).unwrap(),
                agent_id: AGENT.into(),
                method: EnrollmentMethod::Acme,
                not_before: t,
                not_after: t + Duration::hours(24),
                key_sha256: hex::encode(key.public_key_raw()),
                reserved_at: t,
            },
            der: leaf(dns, key),
            issued_at: t,
            revocation: None,
        }
    }

    fn key() -> rcgen::KeyPair {
        rcgen::KeyPair::generate().unwrap()
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + 3600).unwrap()
    }

    #[test]
    fn a_later_certificate_naming_at_least_the_same_replaces_an_earlier_one() {
        let (k1, k2) = (key(), key());
        let certs = [
            record(1, 0, &["a.example.org"], &k1),
            record(2, 60, &["a.example.org", "b.example.org"], &k2),
        ];
        let s = Successions::new(&certs, now());
        let by = s.successor(&certs[0], RevocationReason::Superseded);
        assert_eq!(by.map(|c| c.intent.serial), Some(certs[1].intent.serial));
        // The newest has no successor; nor does the old one for a name the new one lacks.
        assert!(
            s.successor(&certs[1], RevocationReason::Superseded)
                .is_none()
        );
    }

    #[test]
    fn a_certificate_for_other_names_is_no_replacement() {
        let certs = [
            record(1, 0, &["a.example.org"], &key()),
            record(2, 60, &["b.example.org"], &key()),
        ];
        let s = Successions::new(&certs, now());
        assert!(
            s.successor(&certs[0], RevocationReason::Superseded)
                .is_none()
        );
    }

    #[test]
    fn revoked_expired_or_older_certificates_replace_nothing() {
        let mut certs = [
            record(1, 0, &[], &key()),
            record(2, -60, &[], &key()),
            record(3, 60, &[], &key()),
            record(4, 120, &[], &key()),
        ];
        certs[2].revocation = Some(Revocation {
            revoked_at: now(),
            reason: RevocationReason::Superseded,
        });
        certs[3].intent.not_after = now();
        let s = Successions::new(&certs, now());
        assert!(
            s.successor(&certs[0], RevocationReason::Superseded)
                .is_none()
        );
        assert_eq!(
            s.valid().map(|c| c.intent.serial).collect::<Vec<_>>(),
            [certs[1].intent.serial, certs[0].intent.serial]
        );
    }

    #[test]
    fn for_key_compromise_a_successor_with_the_same_key_does_not_count() {
        let k = key();
        let certs = [record(1, 0, &[], &k), record(2, 60, &[], &k)];
        let s = Successions::new(&certs, now());
        assert!(
            s.successor(&certs[0], RevocationReason::KeyCompromise)
                .is_none()
        );
        assert!(
            s.successor(&certs[0], RevocationReason::Superseded)
                .is_some()
        );
    }
}
