//! The JOSE a client needs: ES256 account keys, flattened JWS requests (RFC 8555 §6.2) and the
//! external account binding (§7.3.4). Only signing: the server's answers are not signed.

use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use crate::error::BenchError;

pub(crate) fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// Base64url with or without padding: operators paste keys from tools that differ on it.
pub(crate) fn b64_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

/// An account's P-256 key and its public JWK.
pub(crate) struct AccountKey {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
    /// `{"crv","kty","x","y"}`: serde_json's map is ordered, so this is also the RFC 7638
    /// member order, and the EAB payload is byte for byte the `jwk` of the outer header.
    jwk: Value,
}

/// How a request names its account key: the key itself (newAccount) or the account URL.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Signer<'a> {
    Jwk,
    Kid(&'a str),
}

impl AccountKey {
    pub(crate) fn generate() -> Result<Self, BenchError> {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|e| BenchError::Crypto(format!("generate an account key: {e}")))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .map_err(|e| BenchError::Crypto(format!("load an account key: {e}")))?;
        // An uncompressed point: 0x04, then x and y of 32 bytes each.
        let point = pair.public_key().as_ref();
        if point.len() != 65 || point[0] != 4 {
            return Err(BenchError::Crypto(
                "unexpected P-256 public key encoding".into(),
            ));
        }
        let jwk = json!({
            "crv": "P-256",
            "kty": "EC",
            "x": b64(&point[1..33]),
            "y": b64(&point[33..]),
        });
        Ok(Self {
            pair,
            rng: SystemRandom::new(),
            jwk,
        })
    }

    pub(crate) fn jwk(&self) -> &Value {
        &self.jwk
    }

    #[cfg(test)]
    pub(crate) fn public_point(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// A flattened JWS (§6.2): protected header with `alg`, `nonce`, `url` and `jwk` or
    /// `kid`; `payload` `None` is POST-as-GET (an empty payload, §6.3).
    pub(crate) fn sign(
        &self,
        signer: Signer<'_>,
        nonce: &str,
        url: &str,
        payload: Option<&Value>,
    ) -> Result<Vec<u8>, BenchError> {
        let mut header = Map::new();
        header.insert("alg".into(), "ES256".into());
        match signer {
            Signer::Jwk => header.insert("jwk".into(), self.jwk.clone()),
            Signer::Kid(kid) => header.insert("kid".into(), kid.into()),
        };
        header.insert("nonce".into(), nonce.into());
        header.insert("url".into(), url.into());
        let protected = b64(Value::Object(header).to_string().as_bytes());
        let payload = payload.map_or_else(String::new, |p| b64(p.to_string().as_bytes()));
        let signing_input = format!("{protected}.{payload}");
        let signature = self
            .pair
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|e| BenchError::Crypto(format!("sign a request: {e}")))?;
        let body = json!({
            "protected": protected,
            "payload": payload,
            "signature": b64(signature.as_ref()),
        });
        Ok(body.to_string().into_bytes())
    }
}

/// The `externalAccountBinding` of a newAccount payload: an HS256 JWS by the operator's key
/// `kid` over the account's JWK, for the newAccount URL, without a nonce (§7.3.4).
pub(crate) fn eab_binding(kid: &str, hmac_key: &[u8], url: &str, jwk: &Value) -> Value {
    let protected = b64(json!({ "alg": "HS256", "kid": kid, "url": url })
        .to_string()
        .as_bytes());
    let payload = b64(jwk.to_string().as_bytes());
    let key = hmac::Key::new(hmac::HMAC_SHA256, hmac_key);
    let tag = hmac::sign(&key, format!("{protected}.{payload}").as_bytes());
    json!({
        "protected": protected,
        "payload": payload,
        "signature": b64(tag.as_ref()),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

    use super::*;

    fn decode_json(text: &Value) -> Value {
        serde_json::from_slice(&b64_decode(text.as_str().unwrap()).unwrap()).unwrap()
    }

    #[test]
    fn a_signed_request_verifies_and_names_its_key() {
        let key = AccountKey::generate().unwrap();
        let payload = json!({ "termsOfServiceAgreed": true });
        let body = key
            .sign(
                Signer::Jwk,
                "nonce-1",
                "https://ca/new-acct",
                Some(&payload),
            )
            .unwrap();
        let jws: Value = serde_json::from_slice(&body).unwrap();
        let header = decode_json(&jws["protected"]);
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["nonce"], "nonce-1");
        assert_eq!(header["url"], "https://ca/new-acct");
        assert_eq!(header["jwk"], *key.jwk());
        assert!(header.get("kid").is_none());
        assert_eq!(decode_json(&jws["payload"]), payload);

        let input = format!(
            "{}.{}",
            jws["protected"].as_str().unwrap(),
            jws["payload"].as_str().unwrap()
        );
        let signature = b64_decode(jws["signature"].as_str().unwrap()).unwrap();
        assert_eq!(signature.len(), 64, "ES256 is r || s, 32 bytes each");
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key.public_point())
            .verify(input.as_bytes(), &signature)
            .unwrap();
        let mut tampered = signature.clone();
        tampered[10] ^= 1;
        assert!(
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key.public_point())
                .verify(input.as_bytes(), &tampered)
                .is_err()
        );

        // The JWK's coordinates are the public point.
        let mut point = vec![4u8];
        point.extend(b64_decode(key.jwk()["x"].as_str().unwrap()).unwrap());
        point.extend(b64_decode(key.jwk()["y"].as_str().unwrap()).unwrap());
        assert_eq!(point, key.public_point());
    }

    #[test]
    fn post_as_get_has_an_empty_payload_and_a_kid() {
        let key = AccountKey::generate().unwrap();
        let body = key
            .sign(
                Signer::Kid("https://ca/acct/7"),
                "n",
                "https://ca/order/1",
                None,
            )
            .unwrap();
        let jws: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(jws["payload"], "");
        let header = decode_json(&jws["protected"]);
        assert_eq!(header["kid"], "https://ca/acct/7");
        assert!(header.get("jwk").is_none());
        let input = format!("{}.", jws["protected"].as_str().unwrap());
        let signature = b64_decode(jws["signature"].as_str().unwrap()).unwrap();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key.public_point())
            .verify(input.as_bytes(), &signature)
            .unwrap();
    }

    #[test]
    fn the_eab_mac_covers_the_account_key() {
        let key = AccountKey::generate().unwrap();
        let hmac_key =
            b64_decode("zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W").unwrap();
        let eab = eab_binding("kid-1", &hmac_key, "https://ca/new-acct", key.jwk());
        let header = decode_json(&eab["protected"]);
        assert_eq!(
            header,
            json!({ "alg": "HS256", "kid": "kid-1", "url": "https://ca/new-acct" })
        );
        assert_eq!(decode_json(&eab["payload"]), *key.jwk());

        let input = format!(
            "{}.{}",
            eab["protected"].as_str().unwrap(),
            eab["payload"].as_str().unwrap()
        );
        let mac = b64_decode(eab["signature"].as_str().unwrap()).unwrap();
        let verifier = hmac::Key::new(hmac::HMAC_SHA256, &hmac_key);
        hmac::verify(&verifier, input.as_bytes(), &mac).unwrap();
        let other = hmac::Key::new(hmac::HMAC_SHA256, b"another key");
        assert!(hmac::verify(&other, input.as_bytes(), &mac).is_err());
    }

    #[test]
    fn base64url_padding_is_optional() {
        assert_eq!(b64_decode("AQI").unwrap(), [1, 2]);
        assert_eq!(b64_decode("AQI=").unwrap(), [1, 2]);
        assert_eq!(b64(&[0xfb, 0xff]), "-_8");
        assert!(b64_decode("not base64!").is_none());
    }
}
