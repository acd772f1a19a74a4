//! The flattened JWS JSON serialization (RFC 7515 §7.2.2), the only one ACME allows
//! (RFC 8555 §6.2).

use serde_json::{Map, Value};

use super::{JoseError, Jwk, ProtectedHeader, b64, parse_json};

/// The largest request body accepted. ACME requests are small; the biggest is a finalize
/// carrying a CSR with an 8192-bit RSA key, a few kilobytes.
pub const MAX_JWS_BODY: usize = 64 * 1024;

/// A parsed, not yet verified, ACME request JWS.
///
/// Getting one means the body was well formed; it says nothing about who signed it until
/// [`Jws::verify`] succeeds.
#[derive(Debug, Clone)]
pub struct Jws {
    header: ProtectedHeader,
    signing_input: Vec<u8>,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

impl Jws {
    /// Parses a request body.
    ///
    /// Refused: a body over [`MAX_JWS_BODY`]; anything but one JSON object with exactly the
    /// members `protected`, `payload` and `signature` (so no unprotected `header`, no
    /// `signatures` array, nothing unknown); an empty `protected` or `signature`; base64 that
    /// is padded or otherwise non-canonical; duplicate member names in the body or the
    /// protected header; and any header [`ProtectedHeader`] refuses.
    pub fn parse(body: &[u8]) -> Result<Self, JoseError> {
        if body.len() > MAX_JWS_BODY {
            return Err(JoseError::BodyTooLarge {
                limit: MAX_JWS_BODY,
            });
        }
        let value = parse_json(body)?;
        let parts = Flattened::from_json(&value)?;
        let header = ProtectedHeader::from_json(&parse_json(&parts.protected_bytes()?)?)?;
        Ok(Self {
            header,
            signing_input: parts.signing_input(),
            payload: b64::decode(parts.payload, "payload")?,
            signature: parts.signature_bytes()?,
        })
    }

    /// The protected header, for the caller's `url`, `nonce` and key-type checks.
    pub fn protected_header(&self) -> &ProtectedHeader {
        &self.header
    }

    /// The decoded payload; empty for POST-as-GET (RFC 8555 §6.3).
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The payload parsed as JSON, refusing duplicate member names. Only meaningful after
    /// [`Jws::verify`].
    pub fn payload_json(&self) -> Result<Value, JoseError> {
        parse_json(&self.payload)
    }

    /// Verifies the signature with `key`: the embedded `jwk` for newAccount and revocation by
    /// certificate key, otherwise the key of the account named by `kid`. The header's `alg`
    /// must be the one algorithm `key` uses.
    pub fn verify(&self, key: &Jwk) -> Result<(), JoseError> {
        key.verify(self.header.alg(), &self.signing_input, &self.signature)
    }
}

/// The three members of a flattened JWS, still encoded. Shared with the external account
/// binding, which nests one inside the newAccount payload.
pub(crate) struct Flattened<'a> {
    pub(crate) protected: &'a str,
    pub(crate) payload: &'a str,
    pub(crate) signature: &'a str,
}

impl<'a> Flattened<'a> {
    pub(crate) fn from_json(value: &'a Value) -> Result<Self, JoseError> {
        let obj = value
            .as_object()
            .ok_or(JoseError::Malformed("JWS is not a JSON object"))?;
        if obj.contains_key("header") {
            return Err(JoseError::Malformed("unprotected header is not allowed"));
        }
        if obj.contains_key("signatures") {
            return Err(JoseError::Malformed(
                "only the flattened JSON serialization with one signature is allowed",
            ));
        }
        if obj
            .keys()
            .any(|k| !matches!(k.as_str(), "protected" | "payload" | "signature"))
        {
            return Err(JoseError::Malformed("JWS has an unexpected member"));
        }
        let parts = Self {
            protected: member(obj, "protected")?,
            payload: member(obj, "payload")?,
            signature: member(obj, "signature")?,
        };
        if parts.protected.is_empty() {
            return Err(JoseError::Malformed("protected header is empty"));
        }
        if parts.signature.is_empty() {
            return Err(JoseError::Malformed("signature is empty"));
        }
        Ok(parts)
    }

    pub(crate) fn protected_bytes(&self) -> Result<Vec<u8>, JoseError> {
        b64::decode(self.protected, "protected")
    }

    pub(crate) fn signature_bytes(&self) -> Result<Vec<u8>, JoseError> {
        b64::decode(self.signature, "signature")
    }

    /// RFC 7515 §5.1 step 5: the signature covers the encoded forms, not the decoded ones.
    pub(crate) fn signing_input(&self) -> Vec<u8> {
        let mut input = Vec::with_capacity(self.protected.len() + 1 + self.payload.len());
        input.extend_from_slice(self.protected.as_bytes());
        input.push(b'.');
        input.extend_from_slice(self.payload.as_bytes());
        input
    }
}

fn member<'a>(obj: &'a Map<String, Value>, name: &'static str) -> Result<&'a str, JoseError> {
    match obj.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(JoseError::Malformed("JWS member is not a string")),
        None => Err(JoseError::Malformed(
            "JWS lacks protected, payload or signature",
        )),
    }
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::hmac;
    use serde_json::json;

    use super::*;
    use crate::jose::testutil::{TestKey, URL, body, sign_parts, signed};
    use crate::jose::{Algorithm, KeyRef};

    const PAYLOAD: &[u8] = br#"{"identifiers":[{"type":"dns","value":"a.example"}]}"#;

    #[test]
    fn valid_requests_verify_for_every_algorithm() {
        for alg in Algorithm::ALL {
            let key = TestKey::new(alg);
            for payload in [PAYLOAD, b""] {
                let jws = Jws::parse(&signed(&key.jwk_header(), payload, &key)).unwrap();
                let header = jws.protected_header();
                assert_eq!(header.alg(), alg);
                assert_eq!(header.url(), URL);
                assert_eq!(header.nonce(), Some("bm9uY2U"));
                let KeyRef::Jwk(jwk) = header.key() else {
                    panic!("expected jwk");
                };
                assert_eq!(jwk, &key.jwk());
                assert_eq!(jws.payload(), payload);
                assert_eq!(jws.verify(jwk), Ok(()), "{alg:?}");
            }
        }
    }

    #[test]
    fn kid_requests_verify_with_the_account_key() {
        let key = TestKey::new(Algorithm::Es384);
        let header = json!({"alg": "ES384", "kid": "https://ca.example/acme/acct/1",
                            "nonce": "n", "url": URL});
        let jws = Jws::parse(&signed(&header, PAYLOAD, &key)).unwrap();
        assert_eq!(
            jws.protected_header().key(),
            &KeyRef::Kid("https://ca.example/acme/acct/1".into())
        );
        assert_eq!(jws.verify(&key.jwk()), Ok(()));
        assert_eq!(
            jws.payload_json().unwrap(),
            serde_json::from_slice::<Value>(PAYLOAD).unwrap()
        );
        // Another account's key, of the same type, does not verify it.
        let other = TestKey::new(Algorithm::Es384);
        assert_eq!(jws.verify(&other.jwk()), Err(JoseError::BadSignature));
        // Nor does a key of another type (ACME-J3 on the kid path).
        let rsa = TestKey::new(Algorithm::Rs256);
        assert_eq!(
            jws.verify(&rsa.jwk()).unwrap_err().problem_type(),
            "badSignatureAlgorithm"
        );
    }

    #[test]
    fn missing_nonce_is_left_to_the_caller() {
        let key = TestKey::new(Algorithm::Es256);
        let mut header = key.jwk_header();
        header.as_object_mut().unwrap().remove("nonce");
        let jws = Jws::parse(&signed(&header, PAYLOAD, &key)).unwrap();
        assert_eq!(jws.protected_header().nonce(), None);
    }

    fn tamper(f: impl FnOnce(&mut Value)) -> Vec<u8> {
        let key = TestKey::new(Algorithm::Es256);
        let mut v: Value =
            serde_json::from_slice(&signed(&key.jwk_header(), PAYLOAD, &key)).unwrap();
        f(&mut v);
        v.to_string().into_bytes()
    }

    /// A body whose protected header is `protected` verbatim, validly signed by `key`.
    fn raw(protected: &str, key: &TestKey) -> Vec<u8> {
        body(&sign_parts(protected, PAYLOAD, key))
    }

    fn header_with(key: &TestKey, f: impl FnOnce(&mut Map<String, Value>)) -> Vec<u8> {
        let mut header = key.jwk_header();
        f(header.as_object_mut().unwrap());
        signed(&header, PAYLOAD, key)
    }

    /// ACME-J1, J2, J3, J4, J5, J6, J7, J11: each request is refused at parse time with the
    /// problem type the security test plan calls for.
    #[test]
    fn hostile_requests_are_refused() {
        let ec = TestKey::new(Algorithm::Es256);
        let p384 = TestKey::new(Algorithm::Es384);
        let rsa = TestKey::new(Algorithm::Rs256);
        let jwk = ec.jwk_json();
        let jwk_s = jwk.to_string();

        // HS256 keyed with the account's public JWK bytes: the classic confusion attack.
        let hs256 = {
            let p = b64::encode(
                json!({"alg": "HS256", "kid": "https://ca.example/acme/acct/1", "nonce": "n", "url": URL})
                    .to_string()
                    .as_bytes(),
            );
            let pl = b64::encode(PAYLOAD);
            let k = hmac::Key::new(hmac::HMAC_SHA256, jwk_s.as_bytes());
            let tag = hmac::sign(&k, format!("{p}.{pl}").as_bytes());
            body(&[p, pl, b64::encode(tag.as_ref())])
        };
        let none = {
            let [p, pl, _] = sign_parts(
                &json!({"alg": "none", "jwk": jwk, "nonce": "n", "url": URL}).to_string(),
                PAYLOAD,
                &ec,
            );
            body(&[p, pl, "AA".into()])
        };
        let mut big = b"{\"protected\":\"".to_vec();
        big.resize(MAX_JWS_BODY + 1, b'A');

        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("alg none", none, "badSignatureAlgorithm"),
            ("HS256 outer", hs256, "badSignatureAlgorithm"),
            (
                "unknown alg",
                header_with(&ec, |h| {
                    h.insert("alg".into(), json!("PS256"));
                }),
                "badSignatureAlgorithm",
            ),
            (
                "ES256 header, P-384 jwk",
                header_with(&p384, |h| {
                    h.insert("alg".into(), json!("ES256"));
                }),
                "badSignatureAlgorithm",
            ),
            (
                "RS256 header, EC jwk",
                header_with(&ec, |h| {
                    h.insert("alg".into(), json!("RS256"));
                }),
                "badSignatureAlgorithm",
            ),
            (
                "ES256 header, RSA jwk",
                header_with(&rsa, |h| {
                    h.insert("alg".into(), json!("ES256"));
                }),
                "badSignatureAlgorithm",
            ),
            (
                "RSA-1024 jwk",
                header_with(&rsa, |h| {
                    h["jwk"]["n"] = json!(b64::encode(&[0xc5; 128]));
                }),
                "badPublicKey",
            ),
            (
                "private key in jwk",
                header_with(&ec, |h| {
                    h["jwk"]["d"] = json!(b64::encode(&[7; 32]));
                }),
                "badPublicKey",
            ),
            (
                "off-curve jwk",
                header_with(&ec, |h| {
                    h["jwk"]["y"] = json!(b64::encode(&[1; 32]));
                }),
                "badPublicKey",
            ),
            (
                "jwk and kid",
                header_with(&ec, |h| {
                    h.insert("kid".into(), json!("https://ca.example/acme/acct/1"));
                }),
                "malformed",
            ),
            (
                "neither jwk nor kid",
                header_with(&ec, |h| {
                    h.remove("jwk");
                }),
                "malformed",
            ),
            (
                "empty kid",
                header_with(&ec, |h| {
                    h.remove("jwk");
                    h.insert("kid".into(), json!(""));
                }),
                "malformed",
            ),
            (
                "no url",
                header_with(&ec, |h| {
                    h.remove("url");
                }),
                "malformed",
            ),
            (
                "url not a string",
                header_with(&ec, |h| {
                    h.insert("url".into(), json!([URL]));
                }),
                "malformed",
            ),
            (
                "no alg",
                header_with(&ec, |h| {
                    h.remove("alg");
                }),
                "malformed",
            ),
            (
                "b64 false",
                header_with(&ec, |h| {
                    h.insert("b64".into(), json!(false));
                }),
                "malformed",
            ),
            (
                "crit",
                header_with(&ec, |h| {
                    h.insert("crit".into(), json!(["exp"]));
                }),
                "malformed",
            ),
            (
                "x5c",
                header_with(&ec, |h| {
                    h.insert("x5c".into(), json!(["AAAA"]));
                }),
                "malformed",
            ),
            (
                "duplicate alg in protected header",
                raw(
                    &format!(
                        r#"{{"alg":"ES256","alg":"none","jwk":{jwk_s},"nonce":"n","url":"{URL}"}}"#
                    ),
                    &ec,
                ),
                "malformed",
            ),
            (
                "duplicate url in protected header",
                raw(
                    &format!(
                        r#"{{"alg":"ES256","jwk":{jwk_s},"nonce":"n","url":"{URL}","url":"https://x/"}}"#
                    ),
                    &ec,
                ),
                "malformed",
            ),
            (
                "duplicate member inside jwk",
                raw(
                    &format!(
                        r#"{{"alg":"ES256","jwk":{{"kty":"EC","kty":"EC","crv":"P-256","x":{},"y":{}}},"url":"{URL}"}}"#,
                        jwk["x"], jwk["y"]
                    ),
                    &ec,
                ),
                "malformed",
            ),
            (
                "protected header not JSON",
                raw("not json", &ec),
                "malformed",
            ),
            ("protected header an array", raw("[]", &ec), "malformed"),
            (
                "protected header with trailing data",
                raw(&format!("{} x", ec.jwk_header()), &ec),
                "malformed",
            ),
            (
                "unprotected header",
                tamper(|v| v["header"] = json!({"kid": "https://ca.example/acme/acct/2"})),
                "malformed",
            ),
            (
                "general serialization",
                tamper(|v| {
                    let sig = v["signature"].clone();
                    let p = v["protected"].clone();
                    *v = json!({"payload": v["payload"].clone(),
                                "signatures": [{"protected": p, "signature": sig}]});
                }),
                "malformed",
            ),
            (
                "two signatures",
                tamper(|v| {
                    let one = json!({"protected": v["protected"].clone(), "signature": v["signature"].clone()});
                    v["signatures"] = json!([one.clone(), one]);
                }),
                "malformed",
            ),
            (
                "empty signature",
                tamper(|v| v["signature"] = json!("")),
                "malformed",
            ),
            (
                "empty protected",
                tamper(|v| v["protected"] = json!("")),
                "malformed",
            ),
            (
                "detached payload",
                tamper(|v| {
                    v.as_object_mut().unwrap().remove("payload");
                }),
                "malformed",
            ),
            (
                "unknown member",
                tamper(|v| v["extra"] = json!(1)),
                "malformed",
            ),
            (
                "signature not a string",
                tamper(|v| v["signature"] = json!(5)),
                "malformed",
            ),
            (
                "padded protected",
                tamper(|v| {
                    v["protected"] = json!(format!("{}=", v["protected"].as_str().unwrap()))
                }),
                "malformed",
            ),
            (
                "padded signature",
                tamper(|v| {
                    v["signature"] = json!(format!("{}==", v["signature"].as_str().unwrap()))
                }),
                "malformed",
            ),
            (
                "standard-alphabet signature",
                tamper(|v| {
                    let s = v["signature"]
                        .as_str()
                        .unwrap()
                        .replace('-', "+")
                        .replace('_', "/");
                    v["signature"] = json!(format!("{s}+/"));
                }),
                "malformed",
            ),
            (
                "payload with a space",
                tamper(|v| v["payload"] = json!(format!("{} ", v["payload"].as_str().unwrap()))),
                "malformed",
            ),
            (
                "trailing garbage after the body",
                {
                    let mut b = signed(&ec.jwk_header(), PAYLOAD, &ec);
                    b.extend_from_slice(b"garbage");
                    b
                },
                "malformed",
            ),
            (
                "duplicate signature member in the body",
                {
                    let [p, pl, s] = sign_parts(&ec.jwk_header().to_string(), PAYLOAD, &ec);
                    format!(r#"{{"protected":"{p}","payload":"{pl}","signature":"{s}","signature":"AA"}}"#)
                        .into_bytes()
                },
                "malformed",
            ),
            ("body not an object", b"[]".to_vec(), "malformed"),
            ("empty body", Vec::new(), "malformed"),
            ("oversize body", big, "malformed"),
        ];
        for (name, body, problem) in cases {
            match Jws::parse(&body) {
                Ok(_) => panic!("{name}: accepted"),
                Err(e) => assert_eq!(e.problem_type(), problem, "{name}: {e}"),
            }
        }
    }

    #[test]
    fn oversize_body_is_reported_as_such() {
        let body = vec![b' '; MAX_JWS_BODY + 1];
        assert_eq!(
            Jws::parse(&body).unwrap_err(),
            JoseError::BodyTooLarge {
                limit: MAX_JWS_BODY
            }
        );
    }

    #[test]
    fn signature_over_something_else_is_refused() {
        for alg in Algorithm::ALL {
            let key = TestKey::new(alg);
            let [p, _, sig] = sign_parts(&key.jwk_header().to_string(), PAYLOAD, &key);
            let other = b64::encode(br#"{"identifiers":[{"type":"dns","value":"b.example"}]}"#);
            let jws = Jws::parse(&body(&[p.clone(), other, sig.clone()])).unwrap();
            assert_eq!(
                jws.verify(&key.jwk()),
                Err(JoseError::BadSignature),
                "{alg:?}"
            );

            // A different header (here a different url) under the old signature.
            let mut header = key.jwk_header();
            header["url"] = json!("https://ca.example/acme/revoke-cert");
            let p2 = b64::encode(header.to_string().as_bytes());
            let jws = Jws::parse(&body(&[p2, b64::encode(PAYLOAD), sig.clone()])).unwrap();
            assert_eq!(
                jws.verify(&key.jwk()),
                Err(JoseError::BadSignature),
                "{alg:?}"
            );

            // A truncated signature.
            let mut short = b64::decode(&sig, "s").unwrap();
            short.pop();
            let jws = Jws::parse(&body(&[p, b64::encode(PAYLOAD), b64::encode(&short)])).unwrap();
            assert_eq!(
                jws.verify(&key.jwk()),
                Err(JoseError::BadSignature),
                "{alg:?}"
            );
        }
    }

    #[test]
    fn unknown_informational_members_are_ignored() {
        let key = TestKey::new(Algorithm::EdDsa);
        let body = header_with(&key, |h| {
            h.insert("typ".into(), json!("JOSE+JSON"));
        });
        let jws = Jws::parse(&body).unwrap();
        let KeyRef::Jwk(jwk) = jws.protected_header().key() else {
            panic!("expected jwk");
        };
        assert_eq!(jws.verify(jwk), Ok(()));
    }
}
