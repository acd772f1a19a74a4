//! What the validator did, for the challenge object's `validationRecord` (RFC 8555 §8.3 and
//! §8.4 leave its contents to the server; these are the members ACME clients know).

use std::net::IpAddr;

use serde::Serialize;

/// One validation attempt's facts: where it looked and which address it reached.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidationRecord {
    /// The URL fetched (http-01 only; after redirects, the last one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The name or address the identifier resolved from (for dns-01, the TXT owner name).
    pub hostname: String,
    /// The port connected to, as a string, as clients display it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// Every address the lookup returned, allowed or not.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub addresses_resolved: Vec<IpAddr>,
    /// The one address a connection was made to, taken from `addresses_resolved`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_used: Option<IpAddr>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn serializes_in_camel_case_and_omits_empty_members() {
        let record = ValidationRecord {
            url: Some("http://a.test/.well-known/acme-challenge/t".into()),
            hostname: "a.test".into(),
            port: Some("80".into()),
            addresses_resolved: vec!["127.0.0.1".parse().unwrap()],
            address_used: Some("127.0.0.1".parse().unwrap()),
        };
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "url": "http://a.test/.well-known/acme-challenge/t",
                "hostname": "a.test",
                "port": "80",
                "addressesResolved": ["127.0.0.1"],
                "addressUsed": "127.0.0.1",
            })
        );
        let bare = ValidationRecord {
            hostname: "_acme-challenge.a.test".into(),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&bare).unwrap(),
            serde_json::json!({"hostname": "_acme-challenge.a.test"})
        );
    }
}
