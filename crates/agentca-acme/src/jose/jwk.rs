//! Public keys in JWK form (RFC 7517, RFC 7518 §6, RFC 8037 §2), validated once when parsed.
//!
//! A [`Jwk`] can only be built from a key that aws-lc-rs accepted: an EC point that lies on its
//! curve, an RSA modulus of 2048–8192 bits, a 32-byte Ed25519 key. Everything later (signature
//! checks, thumbprints, equality) can then rely on that.

use aws_lc_rs::digest;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED, ED25519, ParsedPublicKey,
    RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents,
};
use serde_json::{Map, Value};

use super::{Algorithm, JoseError, b64};

/// Member names that only a private key has (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037 §2).
/// A client that sends one has leaked its key to us, or is probing how we parse.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

const RSA_MIN_BITS: usize = 2048;
const RSA_MAX_BITS: usize = 8192;

/// A named elliptic curve for ECDSA keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EcCurve {
    /// NIST P-256 (`crv` `P-256`).
    P256,
    /// NIST P-384 (`crv` `P-384`).
    P384,
}

impl EcCurve {
    fn name(self) -> &'static str {
        match self {
            Self::P256 => "P-256",
            Self::P384 => "P-384",
        }
    }

    fn coordinate_len(self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
        }
    }
}

/// The public parameters of a key, as raw big-endian bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwkParams {
    /// An ECDSA key (`kty` `EC`).
    Ec {
        /// The curve.
        crv: EcCurve,
        /// The x coordinate, exactly the curve's coordinate length.
        x: Vec<u8>,
        /// The y coordinate, exactly the curve's coordinate length.
        y: Vec<u8>,
    },
    /// An RSA key (`kty` `RSA`).
    Rsa {
        /// The modulus, without leading zero bytes.
        n: Vec<u8>,
        /// The public exponent, without leading zero bytes.
        e: Vec<u8>,
    },
    /// An Ed25519 key (`kty` `OKP`, `crv` `Ed25519`).
    Ed25519 {
        /// The 32-byte public key.
        x: Vec<u8>,
    },
}

/// A validated public key from a JWK.
#[derive(Debug, Clone)]
pub struct Jwk {
    params: JwkParams,
    key: ParsedPublicKey,
}

impl PartialEq for Jwk {
    fn eq(&self, other: &Self) -> bool {
        // The parsed key is a function of the parameters.
        self.params == other.params
    }
}

impl Eq for Jwk {}

impl Jwk {
    /// Parses and validates a JWK object.
    ///
    /// Refused with `badPublicKey`: an unsupported `kty` or `crv`, wrong coordinate lengths, a
    /// point off the curve, an RSA modulus outside 2048–8192 bits or with leading zeros, an
    /// even or tiny exponent, and any private key member. A JWK `alg` member that is not the
    /// one algorithm this key can use is refused with `badSignatureAlgorithm`. Other optional
    /// members (`kid`, `use`, `key_ops`, …) are ignored, as RFC 7517 §4 asks.
    pub fn from_json(value: &Value) -> Result<Self, JoseError> {
        let obj = value
            .as_object()
            .ok_or(JoseError::BadPublicKey("JWK is not a JSON object"))?;
        if PRIVATE_MEMBERS.iter().any(|m| obj.contains_key(*m)) {
            return Err(JoseError::BadPublicKey("JWK contains private key material"));
        }
        let jwk = match required_str(obj, "kty")? {
            "EC" => Self::ec(obj)?,
            "RSA" => Self::rsa(obj)?,
            "OKP" => Self::okp(obj)?,
            _ => return Err(JoseError::BadPublicKey("unsupported kty")),
        };
        if let Some(alg) = obj.get("alg") {
            let alg = alg
                .as_str()
                .ok_or(JoseError::BadPublicKey("JWK alg is not a string"))?;
            if alg != jwk.algorithm().name() {
                return Err(JoseError::JwkAlgMismatch);
            }
        }
        if obj.get("use").is_some_and(|u| u.as_str() != Some("sig")) {
            return Err(JoseError::BadPublicKey("JWK use is not \"sig\""));
        }
        Ok(jwk)
    }

    fn ec(obj: &Map<String, Value>) -> Result<Self, JoseError> {
        let crv = match required_str(obj, "crv")? {
            "P-256" => EcCurve::P256,
            "P-384" => EcCurve::P384,
            _ => return Err(JoseError::BadPublicKey("unsupported EC curve")),
        };
        let x = required_b64(obj, "x")?;
        let y = required_b64(obj, "y")?;
        if x.len() != crv.coordinate_len() || y.len() != crv.coordinate_len() {
            return Err(JoseError::BadPublicKey(
                "EC coordinate has the wrong length",
            ));
        }
        let alg = match crv {
            EcCurve::P256 => &ECDSA_P256_SHA256_FIXED,
            EcCurve::P384 => &ECDSA_P384_SHA384_FIXED,
        };
        // SEC 1 §2.3.3 uncompressed point; parsing it checks that it is on the curve.
        let mut point = Vec::with_capacity(1 + x.len() + y.len());
        point.push(0x04);
        point.extend_from_slice(&x);
        point.extend_from_slice(&y);
        let key = ParsedPublicKey::new(alg, &point)
            .map_err(|_| JoseError::BadPublicKey("EC point is not on the curve"))?;
        Ok(Self {
            params: JwkParams::Ec { crv, x, y },
            key,
        })
    }

    fn rsa(obj: &Map<String, Value>) -> Result<Self, JoseError> {
        let n = required_b64(obj, "n")?;
        let e = required_b64(obj, "e")?;
        // RFC 7518 §6.3.1: both are minimal big-endian encodings. Requiring that keeps one
        // spelling per key, so thumbprints and key equality cannot be dodged.
        let (Some(&n0), Some(&e0)) = (n.first(), e.first()) else {
            return Err(JoseError::BadPublicKey("RSA n or e is empty"));
        };
        if n0 == 0 || e0 == 0 {
            return Err(JoseError::BadPublicKey("RSA n or e has leading zeros"));
        }
        let bits = n.len() * 8 - n0.leading_zeros() as usize;
        if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
            return Err(JoseError::BadPublicKey(
                "RSA modulus must be 2048 to 8192 bits",
            ));
        }
        // An exponent of 1 makes "signing" the identity; an even one is not an RSA key. Real
        // keys use 65537; 32 bits is a generous cap.
        let e_last = e.last().copied().unwrap_or(0);
        if e.len() > 4 || e_last & 1 == 0 || (e.len() == 1 && e0 < 3) {
            return Err(JoseError::BadPublicKey("RSA exponent is not acceptable"));
        }
        let key = RsaPublicKeyComponents { n: &n, e: &e }
            .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
            .map_err(|_| JoseError::BadPublicKey("RSA key is invalid"))?;
        Ok(Self {
            params: JwkParams::Rsa { n, e },
            key,
        })
    }

    fn okp(obj: &Map<String, Value>) -> Result<Self, JoseError> {
        if required_str(obj, "crv")? != "Ed25519" {
            return Err(JoseError::BadPublicKey("unsupported OKP curve"));
        }
        let x = required_b64(obj, "x")?;
        if x.len() != 32 {
            return Err(JoseError::BadPublicKey("Ed25519 key has the wrong length"));
        }
        let key = ParsedPublicKey::new(&ED25519, &x)
            .map_err(|_| JoseError::BadPublicKey("Ed25519 key is invalid"))?;
        Ok(Self {
            params: JwkParams::Ed25519 { x },
            key,
        })
    }

    /// The key's public parameters.
    pub fn params(&self) -> &JwkParams {
        &self.params
    }

    /// The one algorithm this key may sign with: the key type and curve fix it, so a header
    /// cannot pick a weaker or different one.
    pub fn algorithm(&self) -> Algorithm {
        match &self.params {
            JwkParams::Ec {
                crv: EcCurve::P256, ..
            } => Algorithm::Es256,
            JwkParams::Ec {
                crv: EcCurve::P384, ..
            } => Algorithm::Es384,
            JwkParams::Rsa { .. } => Algorithm::Rs256,
            JwkParams::Ed25519 { .. } => Algorithm::EdDsa,
        }
    }

    fn kind(&self) -> &'static str {
        match &self.params {
            JwkParams::Ec {
                crv: EcCurve::P256, ..
            } => "P-256",
            JwkParams::Ec {
                crv: EcCurve::P384, ..
            } => "P-384",
            JwkParams::Rsa { .. } => "RSA",
            JwkParams::Ed25519 { .. } => "Ed25519",
        }
    }

    /// The RFC 7638 §3 canonical form: the required members only, in lexicographic order,
    /// without whitespace. Two keys are the same key exactly when these are equal.
    pub fn canonical_json(&self) -> String {
        // Base64url needs no JSON escaping and the other values are fixed ASCII, so plain
        // formatting yields the canonical form.
        match &self.params {
            JwkParams::Ec { crv, x, y } => format!(
                r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
                crv.name(),
                b64::encode(x),
                b64::encode(y)
            ),
            JwkParams::Rsa { n, e } => format!(
                r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                b64::encode(e),
                b64::encode(n)
            ),
            JwkParams::Ed25519 { x } => {
                format!(
                    r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                    b64::encode(x)
                )
            }
        }
    }

    /// The RFC 7638 thumbprint with SHA-256, base64url-encoded (as used in key authorizations,
    /// RFC 8555 §8.1).
    pub fn thumbprint(&self) -> String {
        b64::encode(digest::digest(&digest::SHA256, self.canonical_json().as_bytes()).as_ref())
    }

    /// Verifies `signature` over `signing_input` with algorithm `alg`, which must be the one
    /// this key uses ([`Jwk::algorithm`]).
    pub fn verify(
        &self,
        alg: Algorithm,
        signing_input: &[u8],
        signature: &[u8],
    ) -> Result<(), JoseError> {
        if alg != self.algorithm() {
            return Err(JoseError::AlgorithmKeyMismatch {
                alg: alg.name(),
                key: self.kind(),
            });
        }
        self.key
            .verify_sig(signing_input, signature)
            .map_err(|_| JoseError::BadSignature)
    }
}

fn required_str<'a>(obj: &'a Map<String, Value>, name: &'static str) -> Result<&'a str, JoseError> {
    match obj.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(JoseError::BadPublicKey("JWK member is not a string")),
        None => Err(JoseError::BadPublicKey("JWK lacks a required member")),
    }
}

fn required_b64(obj: &Map<String, Value>, name: &'static str) -> Result<Vec<u8>, JoseError> {
    b64::decode(required_str(obj, name)?, name)
        .map_err(|_| JoseError::BadPublicKey("JWK member is not unpadded base64url"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::jose::testutil::TestKey;

    /// RFC 7638 §3.1: the example RSA key and its SHA-256 thumbprint.
    #[test]
    fn rfc7638_example_thumbprint() {
        let jwk = Jwk::from_json(&json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        }))
        .unwrap();
        assert_eq!(
            jwk.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn generated_keys_parse_and_round_trip() {
        for alg in Algorithm::ALL {
            let key = TestKey::new(alg);
            let jwk = key.jwk();
            assert_eq!(jwk.algorithm(), alg);
            let again: Value = serde_json::from_str(&jwk.canonical_json()).unwrap();
            assert_eq!(Jwk::from_json(&again).unwrap(), jwk, "{alg:?}");
            assert_eq!(jwk.thumbprint().len(), 43);
            // Member order and optional members do not change the thumbprint.
            let mut with_extras = key.jwk_json();
            with_extras["kid"] = json!("k1");
            with_extras["alg"] = json!(alg.name());
            with_extras["use"] = json!("sig");
            assert_eq!(
                Jwk::from_json(&with_extras).unwrap().thumbprint(),
                jwk.thumbprint()
            );
        }
    }

    #[test]
    fn canonical_forms() {
        let ec = Jwk::from_json(&TestKey::new(Algorithm::Es256).jwk_json()).unwrap();
        assert!(
            ec.canonical_json()
                .starts_with(r#"{"crv":"P-256","kty":"EC","x":""#)
        );
        let ed = Jwk::from_json(&TestKey::new(Algorithm::EdDsa).jwk_json()).unwrap();
        assert!(
            ed.canonical_json()
                .starts_with(r#"{"crv":"Ed25519","kty":"OKP","x":""#)
        );
        let rsa = Jwk::from_json(&TestKey::new(Algorithm::Rs256).jwk_json()).unwrap();
        assert!(
            rsa.canonical_json()
                .starts_with(r#"{"e":"AQAB","kty":"RSA","n":""#)
        );
    }

    fn with(mut base: Value, member: &str, v: Value) -> Value {
        base[member] = v;
        base
    }

    fn without(mut base: Value, member: &str) -> Value {
        base.as_object_mut().unwrap().remove(member);
        base
    }

    /// A big-endian number of `bits` bits, odd, to stand in for a modulus of that size.
    fn modulus(bits: usize) -> String {
        let mut n = vec![0x5a; bits.div_ceil(8)];
        n[0] = 0x80 >> ((8 - bits % 8) % 8);
        if let Some(last) = n.last_mut() {
            *last |= 1;
        }
        b64::encode(&n)
    }

    #[test]
    fn bad_public_keys() {
        let p256 = TestKey::new(Algorithm::Es256).jwk_json();
        let p384 = TestKey::new(Algorithm::Es384).jwk_json();
        let rsa = TestKey::new(Algorithm::Rs256).jwk_json();
        let ed = TestKey::new(Algorithm::EdDsa).jwk_json();

        // Flip one bit of y: the point leaves the curve but keeps its length.
        let mut y = b64::decode(p256["y"].as_str().unwrap(), "y").unwrap();
        y[31] ^= 1;
        let off_curve = with(p256.clone(), "y", json!(b64::encode(&y)));
        let zero_point = with(
            with(p256.clone(), "x", json!(b64::encode(&[0; 32]))),
            "y",
            json!(b64::encode(&[0; 32])),
        );
        let p384_coords_as_p256 = with(p384.clone(), "crv", json!("P-256"));
        let short_x = with(p256.clone(), "x", json!(b64::encode(&[1; 31])));
        let padded_x = with(
            p256.clone(),
            "x",
            json!(format!("{}=", p256["x"].as_str().unwrap())),
        );

        let cases: Vec<(&str, Value)> = vec![
            ("not an object", json!("RSA")),
            ("no kty", without(p256.clone(), "kty")),
            ("kty oct", json!({"kty": "oct", "k": "AAAA"})),
            ("kty not a string", with(p256.clone(), "kty", json!(1))),
            ("kty lower case", with(p256.clone(), "kty", json!("ec"))),
            ("off-curve point", off_curve),
            ("zero point", zero_point),
            ("P-384 coordinates on P-256", p384_coords_as_p256),
            ("short x", short_x),
            ("padded x", padded_x),
            ("missing y", without(p256.clone(), "y")),
            ("crv P-521", with(p384.clone(), "crv", json!("P-521"))),
            (
                "crv secp256k1",
                with(p256.clone(), "crv", json!("secp256k1")),
            ),
            ("crv X25519", with(ed.clone(), "crv", json!("X25519"))),
            ("crv Ed448", with(ed.clone(), "crv", json!("Ed448"))),
            (
                "Ed25519 31 bytes",
                with(ed.clone(), "x", json!(b64::encode(&[9; 31]))),
            ),
            ("EC private d", with(p256.clone(), "d", json!("AAAA"))),
            ("OKP private d", with(ed.clone(), "d", json!("AAAA"))),
            ("RSA private d", with(rsa.clone(), "d", json!("AAAA"))),
            ("RSA private p", with(rsa.clone(), "p", json!("AAAA"))),
            ("RSA private qi", with(rsa.clone(), "qi", json!("AAAA"))),
            ("RSA 512", with(rsa.clone(), "n", json!(modulus(512)))),
            ("RSA 1024", with(rsa.clone(), "n", json!(modulus(1024)))),
            ("RSA 2047", with(rsa.clone(), "n", json!(modulus(2047)))),
            ("RSA 8193", with(rsa.clone(), "n", json!(modulus(8193)))),
            ("RSA e=1", with(rsa.clone(), "e", json!(b64::encode(&[1])))),
            (
                "RSA e=3 with leading zero",
                with(rsa.clone(), "e", json!(b64::encode(&[0, 3]))),
            ),
            (
                "RSA even e",
                with(rsa.clone(), "e", json!(b64::encode(&[1, 0, 0]))),
            ),
            ("RSA empty e", with(rsa.clone(), "e", json!(""))),
            (
                "RSA huge e",
                with(rsa.clone(), "e", json!(b64::encode(&[1; 9]))),
            ),
            (
                "RSA n with leading zero",
                with(
                    rsa.clone(),
                    "n",
                    json!(b64::encode(
                        &[
                            &[0u8][..],
                            &b64::decode(rsa["n"].as_str().unwrap(), "n").unwrap()
                        ]
                        .concat()
                    )),
                ),
            ),
            ("use enc", with(rsa.clone(), "use", json!("enc"))),
        ];
        for (name, jwk) in cases {
            let err = Jwk::from_json(&jwk).unwrap_err();
            assert_eq!(err.problem_type(), "badPublicKey", "{name}: {err}");
        }
    }

    #[test]
    fn jwk_alg_member_must_agree_with_the_key() {
        let cases = [
            (Algorithm::Es256, "ES384"),
            (Algorithm::Es384, "ES256"),
            (Algorithm::Rs256, "PS256"),
            (Algorithm::Rs256, "ES256"),
            (Algorithm::EdDsa, "ES256"),
            (Algorithm::Es256, "none"),
        ];
        for (key_alg, member) in cases {
            let jwk = with(TestKey::new(key_alg).jwk_json(), "alg", json!(member));
            let err = Jwk::from_json(&jwk).unwrap_err();
            assert_eq!(
                err.problem_type(),
                "badSignatureAlgorithm",
                "{key_alg:?}/{member}"
            );
        }
    }

    /// ACME-J3: every (key, algorithm) pair but the right one is refused before any
    /// signature check, even when the signature itself is valid for the key.
    #[test]
    fn algorithm_must_match_key() {
        for key_alg in Algorithm::ALL {
            let key = TestKey::new(key_alg);
            let jwk = key.jwk();
            let sig = key.sign(b"msg");
            assert_eq!(jwk.verify(key_alg, b"msg", &sig), Ok(()));
            assert_eq!(
                jwk.verify(key_alg, b"msh", &sig),
                Err(JoseError::BadSignature)
            );
            for alg in Algorithm::ALL.into_iter().filter(|a| *a != key_alg) {
                let err = jwk.verify(alg, b"msg", &sig).unwrap_err();
                assert!(
                    matches!(err, JoseError::AlgorithmKeyMismatch { .. }),
                    "{alg:?} with {key_alg:?}: {err}"
                );
                assert_eq!(err.problem_type(), "badSignatureAlgorithm");
            }
        }
    }

    #[test]
    fn equality_is_by_key() {
        let a = TestKey::new(Algorithm::Es256);
        let b = TestKey::new(Algorithm::Es256);
        assert_eq!(a.jwk(), a.jwk());
        assert_ne!(a.jwk(), b.jwk());
    }
}
