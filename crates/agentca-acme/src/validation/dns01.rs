//! dns-01 (RFC 8555 §8.4): the key authorization's digest in a TXT record at
//! `_acme-challenge.<name>`.

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::error::ValidationFailure;
use super::record::ValidationRecord;
use super::resolve::LookupFailure;
use super::{Inner, Target};

/// Why a dns-01 check failed. TXT values are attacker-chosen, so only their number is told.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Dns01Error {
    /// The query failed (NXDOMAIN, SERVFAIL, timeout).
    #[error("DNS problem: {reason} looking up TXT for {name}")]
    Lookup { name: String, reason: String },
    /// The name exists but holds no TXT record.
    #[error("DNS problem: no TXT record found at {name}")]
    NoRecords { name: String },
    /// TXT records exist, none with the expected digest.
    #[error("{count} TXT record(s) found at {name}, none matching the key authorization")]
    Mismatch { name: String, count: usize },
}

/// The TXT value a client must publish: base64url(SHA-256(key authorization)), unpadded.
pub(crate) fn txt_value(key_authorization: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(
        &digest::SHA256,
        key_authorization.as_bytes(),
    ))
}

pub(super) async fn validate(
    inner: &Inner,
    target: &Target,
    key_authorization: &str,
    record: &mut ValidationRecord,
) -> Result<(), ValidationFailure> {
    let Target::Dns(name) = target else {
        // `ChallengeType::supports` keeps IP identifiers away from dns-01.
        return Err(ValidationFailure::new(
            super::ProblemKind::ServerInternal,
            "dns-01 needs a DNS identifier",
        ));
    };
    // A wildcard's authorization is proven at the base name's zone (RFC 8555 §8.4).
    let base = name.strip_prefix("*.").unwrap_or(name);
    let owner = format!("_acme-challenge.{base}");
    record.hostname = owner.clone();
    let expected = txt_value(key_authorization);
    let values = inner
        .resolver
        .txt(&owner)
        .await
        .map_err(|failure| match failure {
            LookupFailure::NoRecords => Dns01Error::NoRecords {
                name: owner.clone(),
            },
            LookupFailure::Failed(reason) => Dns01Error::Lookup {
                name: owner.clone(),
                reason,
            },
        })?;
    if values.is_empty() {
        return Err(Dns01Error::NoRecords { name: owner }.into());
    }
    if values.iter().any(|value| value == expected.as_bytes()) {
        Ok(())
    } else {
        Err(Dns01Error::Mismatch {
            name: owner,
            count: values.len(),
        }
        .into())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use agentca_testkit::dns::FakeDns;

    use super::super::testutil::{KEY_AUTH, TOKEN, validator};
    use super::super::{ChallengeType, Target, ValidationFailure, ValidationRecord};
    use super::txt_value;

    async fn dns01(dns: &FakeDns, name: &str) -> Result<ValidationRecord, ValidationFailure> {
        let v = validator(&[], 80, 443, Some(dns), Duration::from_secs(2));
        let result = v
            .validate(
                ChallengeType::Dns01,
                &Target::Dns(name.into()),
                TOKEN,
                KEY_AUTH,
            )
            .await;
        assert_eq!(v.target_connections_attempted(), 0);
        result
    }

    #[test]
    fn the_txt_value_is_the_unpadded_base64url_digest() {
        // RFC 8555 §8.4's construction, checked against a digest computed independently.
        assert_eq!(txt_value(""), "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU");
        assert_eq!(txt_value(KEY_AUTH).len(), 43);
    }

    #[tokio::test]
    async fn a_matching_txt_record_among_others_validates() {
        let dns = FakeDns::start();
        dns.set_txt(
            "_acme-challenge.zone.test",
            vec!["unrelated".into(), txt_value(KEY_AUTH)],
        );
        let record = dns01(&dns, "zone.test").await.unwrap();
        assert_eq!(record.hostname, "_acme-challenge.zone.test");
        assert_eq!(
            serde_json::to_value(&record).unwrap(),
            serde_json::json!({"hostname": "_acme-challenge.zone.test"})
        );
    }

    #[tokio::test]
    async fn a_wildcard_is_validated_at_its_base_name() {
        let dns = FakeDns::start();
        dns.set_txt("_acme-challenge.zone.test", vec![txt_value(KEY_AUTH)]);
        dns01(&dns, "*.zone.test").await.unwrap();
        assert_eq!(dns.queries("_acme-challenge.zone.test", "TXT"), 1);
    }

    #[tokio::test]
    async fn a_txt_value_split_into_character_strings_is_joined() {
        let dns = FakeDns::start();
        // Longer than one character-string: the fake server splits it at 255 bytes.
        let long = format!("{}{}", "x".repeat(250), txt_value(KEY_AUTH));
        dns.set_txt("_acme-challenge.zone.test", vec![long]);
        let err = dns01(&dns, "zone.test").await.unwrap_err();
        assert_eq!(err.problem_type(), "incorrectResponse");
    }

    #[tokio::test]
    async fn mismatching_records_are_counted_not_shown() {
        let dns = FakeDns::start();
        dns.set_txt(
            "_acme-challenge.zone.test",
            vec!["SECRET-ONE".into(), "SECRET-TWO".into(), txt_value("other")],
        );
        let err = dns01(&dns, "zone.test").await.unwrap_err();
        assert_eq!(err.problem_type(), "incorrectResponse");
        assert!(err.detail().contains("3 TXT record"), "{err}");
        assert!(!err.detail().contains("SECRET"), "{err}");
        assert!(!err.detail().contains(&txt_value("other")), "{err}");
    }

    #[tokio::test]
    async fn nxdomain_and_no_records_are_dns_problems() {
        let dns = FakeDns::start();
        let err = dns01(&dns, "missing.test").await.unwrap_err();
        assert_eq!(err.problem_type(), "dns");
        assert!(err.detail().contains("NXDOMAIN"), "{err}");
        assert!(
            err.detail().contains("_acme-challenge.missing.test"),
            "{err}"
        );

        dns.set_a(
            "_acme-challenge.empty.test",
            vec!["127.0.0.1".parse().unwrap()],
        );
        let err = dns01(&dns, "empty.test").await.unwrap_err();
        assert_eq!(err.problem_type(), "dns");
        assert!(err.detail().contains("no TXT record"), "{err}");
    }

    #[tokio::test]
    async fn an_unreachable_resolver_is_a_dns_problem_in_bounded_time() {
        // A UDP port on loopback that nothing answers.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let v = super::super::Validator::new(super::super::ValidationConfig {
            nameservers: vec![silent.local_addr().unwrap()],
            timeout: Duration::from_millis(500),
            ..Default::default()
        })
        .unwrap();
        let start = std::time::Instant::now();
        let err = v
            .validate(
                ChallengeType::Dns01,
                &Target::Dns("zone.test".into()),
                TOKEN,
                KEY_AUTH,
            )
            .await
            .unwrap_err();
        assert!(matches!(err.problem_type(), "dns" | "connection"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
