//! The RFC 7638 thumbprint of a key given as an X.509 SubjectPublicKeyInfo, so a CSR's or a
//! certificate's key can be compared with account keys (RFC 8555 §11.1: a certificate key must
//! differ from every account key; §7.6: revocation signed by the certificate's key).

use serde_json::json;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::{Jwk, b64, parse_json};

const EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const ED25519: &str = "1.3.101.112";
const P256: &str = "1.2.840.10045.3.1.7";
const P384: &str = "1.3.132.0.34";

/// The thumbprint of the JWK equivalent to `spki_der`, or `None` when the key is of a kind no
/// account can have (then it equals no account key).
pub fn spki_thumbprint(spki_der: &[u8]) -> Option<String> {
    let (_, spki) = SubjectPublicKeyInfo::from_der(spki_der).ok()?;
    let alg = spki.algorithm.algorithm.to_id_string();
    let key_bytes = spki.subject_public_key.data.as_ref();
    let jwk = match alg.as_str() {
        EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())?;
            let (crv, len) = match curve.as_str() {
                P256 => ("P-256", 32),
                P384 => ("P-384", 48),
                _ => return None,
            };
            if key_bytes.len() != 1 + 2 * len || key_bytes[0] != 4 {
                return None;
            }
            json!({"kty": "EC", "crv": crv,
                   "x": b64::encode(&key_bytes[1..=len]), "y": b64::encode(&key_bytes[1 + len..])})
        }
        RSA_ENCRYPTION => match spki.parsed().ok()? {
            PublicKey::RSA(rsa) => json!({"kty": "RSA",
                "n": b64::encode(strip_zeros(rsa.modulus)), "e": b64::encode(strip_zeros(rsa.exponent))}),
            _ => return None,
        },
        ED25519 => json!({"kty": "OKP", "crv": "Ed25519", "x": b64::encode(key_bytes)}),
        _ => return None,
    };
    // Through the JWK parser, so the comparison uses exactly the account keys' canonical form.
    let jwk = Jwk::from_json(&parse_json(jwk.to_string().as_bytes()).ok()?).ok()?;
    Some(jwk.thumbprint())
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use rcgen::PublicKeyData;

    fn thumbprint_of(jwk: serde_json::Value) -> String {
        Jwk::from_json(&jwk).unwrap().thumbprint()
    }

    #[test]
    fn matches_the_jwk_thumbprint_of_the_same_key() {
        for (alg, crv, len) in [
            (&rcgen::PKCS_ECDSA_P256_SHA256, "P-256", 32),
            (&rcgen::PKCS_ECDSA_P384_SHA384, "P-384", 48),
        ] {
            let key = rcgen::KeyPair::generate_for(alg).unwrap();
            let raw = key.public_key_raw();
            let jwk = json!({"kty": "EC", "crv": crv, "x": b64::encode(&raw[1..=len]),
                             "y": b64::encode(&raw[1 + len..])});
            assert_eq!(
                spki_thumbprint(&key.subject_public_key_info()).unwrap(),
                thumbprint_of(jwk)
            );
        }
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64::encode(ed.public_key_raw())});
        assert_eq!(
            spki_thumbprint(&ed.subject_public_key_info()).unwrap(),
            thumbprint_of(jwk)
        );
    }

    #[test]
    fn garbage_is_no_key() {
        assert_eq!(spki_thumbprint(b"\x30\x03\x02\x01\x00"), None);
        assert_eq!(spki_thumbprint(&[]), None);
    }
}
