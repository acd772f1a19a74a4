//! Keys and request builders shared by the tests of this module.

use std::sync::OnceLock;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
    KeyPair, RSA_PKCS1_SHA256, RsaKeyPair, RsaPublicKeyComponents,
};
use serde_json::{Value, json};

use super::{Algorithm, Jwk, b64};

pub(crate) const URL: &str = "https://ca.example/acme/new-order";

pub(crate) enum TestKey {
    Ec(EcdsaKeyPair, Algorithm),
    Rsa(&'static RsaKeyPair),
    Ed(Ed25519KeyPair),
}

fn rsa_2048() -> &'static RsaKeyPair {
    // RSA generation is slow; one key serves every test.
    static KEY: OnceLock<RsaKeyPair> = OnceLock::new();
    KEY.get_or_init(|| RsaKeyPair::generate(KeySize::Rsa2048).unwrap())
}

impl TestKey {
    pub(crate) fn new(alg: Algorithm) -> Self {
        match alg {
            Algorithm::Es256 => Self::Ec(
                EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
                alg,
            ),
            Algorithm::Es384 => Self::Ec(
                EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).unwrap(),
                alg,
            ),
            Algorithm::Rs256 => Self::Rsa(rsa_2048()),
            Algorithm::EdDsa => Self::Ed(Ed25519KeyPair::generate().unwrap()),
        }
    }

    pub(crate) fn alg(&self) -> Algorithm {
        match self {
            Self::Ec(_, alg) => *alg,
            Self::Rsa(_) => Algorithm::Rs256,
            Self::Ed(_) => Algorithm::EdDsa,
        }
    }

    pub(crate) fn jwk_json(&self) -> Value {
        match self {
            Self::Ec(k, alg) => {
                let point = k.public_key().as_ref();
                let (x, y) = point[1..].split_at((point.len() - 1) / 2);
                let crv = if *alg == Algorithm::Es256 {
                    "P-256"
                } else {
                    "P-384"
                };
                json!({"kty": "EC", "crv": crv, "x": b64::encode(x), "y": b64::encode(y)})
            }
            Self::Rsa(k) => {
                let c = RsaPublicKeyComponents::<Vec<u8>>::from(k.public_key());
                json!({"kty": "RSA", "n": b64::encode(&c.n), "e": b64::encode(&c.e)})
            }
            Self::Ed(k) => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64::encode(k.public_key().as_ref())})
            }
        }
    }

    pub(crate) fn jwk(&self) -> Jwk {
        Jwk::from_json(&self.jwk_json()).unwrap()
    }

    pub(crate) fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Self::Ec(k, _) => k.sign(&rng, msg).unwrap().as_ref().to_vec(),
            Self::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &rng, msg, &mut sig).unwrap();
                sig
            }
            Self::Ed(k) => k.sign(msg).as_ref().to_vec(),
        }
    }

    /// A header naming this key by `jwk`, with the algorithm it signs with.
    pub(crate) fn jwk_header(&self) -> Value {
        json!({"alg": self.alg().name(), "jwk": self.jwk_json(), "nonce": "bm9uY2U", "url": URL})
    }
}

/// Signs `protected` (raw JSON text, so tests can write what serde_json would not) and
/// `payload`, and returns the three encoded members.
pub(crate) fn sign_parts(protected: &str, payload: &[u8], key: &TestKey) -> [String; 3] {
    let p = b64::encode(protected.as_bytes());
    let pl = b64::encode(payload);
    let sig = key.sign(format!("{p}.{pl}").as_bytes());
    [p, pl, b64::encode(&sig)]
}

pub(crate) fn body([p, pl, sig]: &[String; 3]) -> Vec<u8> {
    json!({"protected": p, "payload": pl, "signature": sig})
        .to_string()
        .into_bytes()
}

/// A complete, validly signed request body.
pub(crate) fn signed(protected: &Value, payload: &[u8], key: &TestKey) -> Vec<u8> {
    body(&sign_parts(&protected.to_string(), payload, key))
}
