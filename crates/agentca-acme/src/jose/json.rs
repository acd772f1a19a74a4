//! JSON parsing that refuses duplicate member names.
//!
//! `serde_json` keeps the last of two equal keys without a word. RFC 7515 §4 allows that, but
//! only if every party does the same; a proxy, a client library or a later stage of our own
//! code that keeps the first instead would see a different request from the one whose
//! signature we checked. Refusing duplicates at any depth removes the question.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::JoseError;

/// Parses `input` as one JSON value, refusing duplicate member names at any depth and any
/// trailing bytes other than whitespace.
///
/// Use it for every JSON document whose meaning depends on a signature: the JWS body, its
/// protected header and its payload.
pub fn parse_json(input: &[u8]) -> Result<Value, JoseError> {
    let mut de = serde_json::Deserializer::from_slice(input);
    // serde_json's recursion limit (128) bounds the stack; that limit stays on.
    let value = Unique::deserialize(&mut de).map_err(|e| {
        if e.to_string().starts_with(DUPLICATE) {
            JoseError::DuplicateMember
        } else {
            JoseError::Malformed("invalid JSON")
        }
    })?;
    de.end()
        .map_err(|_| JoseError::Malformed("trailing data after JSON"))?;
    Ok(value.0)
}

const DUPLICATE: &str = "duplicate member";

struct Unique(Value);

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueVisitor).map(Unique)
    }
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Unique(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(DUPLICATE));
            }
            let Unique(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_json() {
        let v = parse_json(br#" {"a":[1,-2,3.5,true,null,"x"],"b":{"c":"d"}} "#).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a":[1,-2,3.5,true,null,"x"],"b":{"c":"d"}})
        );
    }

    #[test]
    fn refusals() {
        let cases: &[(&[u8], JoseError)] = &[
            (
                br#"{"alg":"ES256","alg":"none"}"#,
                JoseError::DuplicateMember,
            ),
            (br#"{"a":{"x":1,"x":1}}"#, JoseError::DuplicateMember),
            (br#"[{"x":1,"x":2}]"#, JoseError::DuplicateMember),
            // Escapes decode to the same name, so they are duplicates too.
            (br#"{"url":"a","u\u0072l":"b"}"#, JoseError::DuplicateMember),
            (
                br#"{"a":1}x"#,
                JoseError::Malformed("trailing data after JSON"),
            ),
            (
                br#"{"a":1}{"a":2}"#,
                JoseError::Malformed("trailing data after JSON"),
            ),
            (br#"{"a":1"#, JoseError::Malformed("invalid JSON")),
            (b"", JoseError::Malformed("invalid JSON")),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_json(input).as_ref(),
                Err(want),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = "[".repeat(100_000);
        assert!(parse_json(deep.as_bytes()).is_err());
    }
}
