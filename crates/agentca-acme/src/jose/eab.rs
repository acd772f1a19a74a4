//! External account binding: the newAccount payload's `externalAccountBinding`, a JWS MACed
//! with a key the operator issued, over the account's public key (RFC 8555 §7.3.4).

use aws_lc_rs::hmac;
use serde_json::Value;

use super::header::optional_str;
use super::jws::Flattened;
use super::{JoseError, Jwk, MacAlgorithm, parse_json};

/// Verifies an external account binding and returns its key identifier.
///
/// `outer_jwk` is the (already verified) `jwk` of the newAccount request, `eab` the
/// `externalAccountBinding` member of its payload, `new_account_url` the URL the request was
/// posted to, and `lookup` maps a key identifier to its HMAC key (`None` when unknown, used or
/// expired). The caller consumes the key identifier only after this succeeds and the account
/// is created.
///
/// The rules of §7.3.4: the inner JWS is flattened with one MAC (HS256, HS384 or HS512), its
/// header has `kid` and a `url` equal to the newAccount URL and no `nonce`, the MAC verifies
/// (compared in constant time), and its payload is the same public key as `outer_jwk`.
/// Structural faults are `malformed`; a binding that does not authorize this key is
/// `unauthorized`.
pub fn verify_eab<K: AsRef<[u8]>>(
    outer_jwk: &Jwk,
    eab: &Value,
    new_account_url: &str,
    lookup: impl FnOnce(&str) -> Option<K>,
) -> Result<String, JoseError> {
    let parts = Flattened::from_json(eab)?;
    let header = parse_json(&parts.protected_bytes()?)?;
    let header = header.as_object().ok_or(JoseError::EabMalformed(
        "protected header is not a JSON object",
    ))?;
    for refused in ["crit", "b64", "jwk", "jku", "x5u", "x5c"] {
        if header.contains_key(refused) {
            return Err(JoseError::EabMalformed(
                "protected header has a parameter that is not allowed",
            ));
        }
    }
    if header.contains_key("nonce") {
        return Err(JoseError::EabMalformed(
            "protected header must not contain a nonce",
        ));
    }
    let mac = match optional_str(header, "alg")? {
        Some(alg) => MacAlgorithm::from_name(alg)?,
        None => return Err(JoseError::EabMalformed("protected header lacks alg")),
    };
    let kid = match optional_str(header, "kid")? {
        Some(kid) if !kid.is_empty() => kid,
        _ => return Err(JoseError::EabMalformed("protected header lacks kid")),
    };
    match optional_str(header, "url")? {
        Some(url) if url == new_account_url => {}
        Some(_) => {
            return Err(JoseError::EabUnauthorized(
                "url does not match the newAccount URL",
            ));
        }
        None => return Err(JoseError::EabMalformed("protected header lacks url")),
    }
    let signature = parts.signature_bytes()?;

    let secret = lookup(kid).ok_or(JoseError::EabUnauthorized("unknown key identifier"))?;
    if secret.as_ref().is_empty() {
        return Err(JoseError::EabUnauthorized("unknown key identifier"));
    }
    let key = hmac::Key::new(mac.hmac(), secret.as_ref());
    // hmac::verify compares in constant time and refuses a tag of the wrong length.
    hmac::verify(&key, &parts.signing_input(), &signature)
        .map_err(|_| JoseError::EabUnauthorized("MAC does not verify"))?;

    let payload = super::b64::decode(parts.payload, "payload")?;
    let bound = Jwk::from_json(&parse_json(&payload)?)
        .map_err(|_| JoseError::EabMalformed("payload is not a valid public JWK"))?;
    if &bound != outer_jwk {
        return Err(JoseError::EabUnauthorized(
            "binding is for a different account key",
        ));
    }
    Ok(kid.to_owned())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::jose::Algorithm;
    use crate::jose::b64;
    use crate::jose::testutil::TestKey;

    const NEW_ACCOUNT: &str = "https://ca.example/acme/new-account";
    const KID: &str = "eab-key-1";
    const HMAC_KEY: [u8; 32] = [0x42; 32];

    fn mac(alg: hmac::Algorithm, key: &[u8], protected: &str, payload: &str) -> String {
        let k = hmac::Key::new(alg, key);
        b64::encode(hmac::sign(&k, format!("{protected}.{payload}").as_bytes()).as_ref())
    }

    /// A binding built like a client would, with `header` and `payload` as given.
    fn binding(header: &Value, payload: &Value, alg: hmac::Algorithm) -> Value {
        let p = b64::encode(header.to_string().as_bytes());
        let pl = b64::encode(payload.to_string().as_bytes());
        let sig = mac(alg, &HMAC_KEY, &p, &pl);
        json!({"protected": p, "payload": pl, "signature": sig})
    }

    fn header() -> Value {
        json!({"alg": "HS256", "kid": KID, "url": NEW_ACCOUNT})
    }

    fn lookup(kid: &str) -> Option<Vec<u8>> {
        (kid == KID).then(|| HMAC_KEY.to_vec())
    }

    #[test]
    fn valid_bindings_verify() {
        for (name, alg) in [
            ("HS256", hmac::HMAC_SHA256),
            ("HS384", hmac::HMAC_SHA384),
            ("HS512", hmac::HMAC_SHA512),
        ] {
            for key_alg in Algorithm::ALL {
                let account = TestKey::new(key_alg);
                let mut h = header();
                h["alg"] = json!(name);
                // The payload is the client's own JWK text: member order and optional
                // members may differ from our canonical form.
                let mut payload = account.jwk_json();
                payload["kid"] = json!("client-label");
                let eab = binding(&h, &payload, alg);
                assert_eq!(
                    verify_eab(&account.jwk(), &eab, NEW_ACCOUNT, lookup),
                    Ok(KID.to_owned()),
                    "{name} {key_alg:?}"
                );
            }
        }
    }

    /// ACME-A3, ACME-A4: each defective binding is refused.
    #[test]
    fn defective_bindings_are_refused() {
        let account = TestKey::new(Algorithm::Es256);
        let other = TestKey::new(Algorithm::Es256);
        let jwk = account.jwk_json();
        let with_header = |f: &dyn Fn(&mut Value)| {
            let mut h = header();
            f(&mut h);
            binding(&h, &jwk, hmac::HMAC_SHA256)
        };
        let resign = |v: &mut Value, key: &[u8]| {
            let sig = mac(
                hmac::HMAC_SHA256,
                key,
                v["protected"].as_str().unwrap(),
                v["payload"].as_str().unwrap(),
            );
            v["signature"] = json!(sig);
        };
        let valid = binding(&header(), &jwk, hmac::HMAC_SHA256);
        let tampered = |f: &dyn Fn(&mut Value)| {
            let mut v = valid.clone();
            f(&mut v);
            v
        };
        let truncated = tampered(&|v| {
            let mut tag = b64::decode(v["signature"].as_str().unwrap(), "s").unwrap();
            tag.truncate(16);
            v["signature"] = json!(b64::encode(&tag));
        });
        let hs384_length_tag = tampered(&|v| {
            // A 48-byte tag on an HS256 binding.
            let mut tag = b64::decode(v["signature"].as_str().unwrap(), "s").unwrap();
            tag.extend_from_slice(&[0; 16]);
            v["signature"] = json!(b64::encode(&tag));
        });

        let cases: Vec<(&str, Value, &str)> = vec![
            (
                "unknown kid",
                with_header(&|h| h["kid"] = json!("eab-key-2")),
                "unauthorized",
            ),
            (
                "empty kid",
                with_header(&|h| h["kid"] = json!("")),
                "malformed",
            ),
            (
                "no kid",
                with_header(&|h| {
                    h.as_object_mut().unwrap().remove("kid");
                }),
                "malformed",
            ),
            (
                "wrong url",
                with_header(&|h| h["url"] = json!("https://ca.example/acme/new-order")),
                "unauthorized",
            ),
            (
                "no url",
                with_header(&|h| {
                    h.as_object_mut().unwrap().remove("url");
                }),
                "malformed",
            ),
            (
                "nonce present",
                with_header(&|h| h["nonce"] = json!("bm9uY2U")),
                "malformed",
            ),
            (
                "jwk in header",
                with_header(&|h| h["jwk"] = jwk.clone()),
                "malformed",
            ),
            (
                "alg ES256",
                with_header(&|h| h["alg"] = json!("ES256")),
                "malformed",
            ),
            (
                "alg none",
                with_header(&|h| h["alg"] = json!("none")),
                "malformed",
            ),
            (
                "payload is another key",
                binding(&header(), &other.jwk_json(), hmac::HMAC_SHA256),
                "unauthorized",
            ),
            (
                "payload has private material",
                binding(
                    &header(),
                    &json!({"kty": "EC", "crv": "P-256", "x": jwk["x"], "y": jwk["y"], "d": "AAAA"}),
                    hmac::HMAC_SHA256,
                ),
                "malformed",
            ),
            (
                "payload not a JWK",
                binding(&header(), &json!({"a": 1}), hmac::HMAC_SHA256),
                "malformed",
            ),
            (
                "bad MAC",
                tampered(&|v| resign(v, &[0x43; 32])),
                "unauthorized",
            ),
            ("MAC truncated", truncated, "unauthorized"),
            ("MAC of the wrong length", hs384_length_tag, "unauthorized"),
            (
                "MAC empty",
                tampered(&|v| v["signature"] = json!("")),
                "malformed",
            ),
            (
                "MAC made with HS512 under an HS256 header",
                tampered(&|v| {
                    let sig = mac(
                        hmac::HMAC_SHA512,
                        &HMAC_KEY,
                        v["protected"].as_str().unwrap(),
                        v["payload"].as_str().unwrap(),
                    );
                    v["signature"] = json!(sig);
                }),
                "unauthorized",
            ),
            (
                "unprotected header",
                tampered(&|v| v["header"] = json!({"kid": KID})),
                "malformed",
            ),
            (
                "padded MAC",
                tampered(&|v| {
                    v["signature"] = json!(format!("{}=", v["signature"].as_str().unwrap()))
                }),
                "malformed",
            ),
            ("not an object", json!("eab"), "malformed"),
        ];
        for (name, eab, problem) in cases {
            match verify_eab(&account.jwk(), &eab, NEW_ACCOUNT, lookup) {
                Ok(_) => panic!("{name}: accepted"),
                Err(e) => assert_eq!(e.problem_type(), problem, "{name}: {e}"),
            }
        }
    }

    #[test]
    fn payload_for_another_key_type_is_refused() {
        // The binding names an RSA key; the account signs with EC.
        let account = TestKey::new(Algorithm::Es256);
        let rsa = TestKey::new(Algorithm::Rs256);
        let eab = binding(&header(), &rsa.jwk_json(), hmac::HMAC_SHA256);
        assert_eq!(
            verify_eab(&account.jwk(), &eab, NEW_ACCOUNT, lookup),
            Err(JoseError::EabUnauthorized(
                "binding is for a different account key"
            ))
        );
    }

    #[test]
    fn duplicate_members_in_the_header_are_refused() {
        let account = TestKey::new(Algorithm::Es256);
        let protected =
            format!(r#"{{"alg":"HS256","kid":"{KID}","url":"https://x/","url":"{NEW_ACCOUNT}"}}"#);
        let p = b64::encode(protected.as_bytes());
        let pl = b64::encode(account.jwk_json().to_string().as_bytes());
        let sig = mac(hmac::HMAC_SHA256, &HMAC_KEY, &p, &pl);
        let eab = json!({"protected": p, "payload": pl, "signature": sig});
        assert_eq!(
            verify_eab(&account.jwk(), &eab, NEW_ACCOUNT, lookup),
            Err(JoseError::DuplicateMember)
        );
    }

    #[test]
    fn empty_stored_key_never_verifies() {
        let account = TestKey::new(Algorithm::Es256);
        let p = b64::encode(header().to_string().as_bytes());
        let pl = b64::encode(account.jwk_json().to_string().as_bytes());
        let sig = mac(hmac::HMAC_SHA256, b"", &p, &pl);
        let eab = json!({"protected": p, "payload": pl, "signature": sig});
        let empty = |_: &str| Some(Vec::<u8>::new());
        assert_eq!(
            verify_eab(&account.jwk(), &eab, NEW_ACCOUNT, empty)
                .unwrap_err()
                .problem_type(),
            "unauthorized"
        );
    }
}
