//! The protected header of an ACME request JWS (RFC 8555 §6.2).

use serde_json::{Map, Value};

use super::{Algorithm, JoseError, Jwk};

/// Header parameters that would change how the signature or payload is interpreted, or point
/// to keys elsewhere. ACME uses none of them; honouring any would open a second path to a key.
const REFUSED_MEMBERS: [(&str, &str); 7] = [
    ("crit", "crit header parameter is not supported"),
    ("b64", "unencoded payloads (b64) are not allowed"),
    ("jku", "jku header parameter is not allowed"),
    ("x5u", "x5u header parameter is not allowed"),
    ("x5c", "x5c header parameter is not allowed"),
    ("x5t", "x5t header parameter is not allowed"),
    ("x5t#S256", "x5t#S256 header parameter is not allowed"),
];

/// How the request names the key that signed it: exactly one of these (RFC 8555 §6.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    /// The key itself, for newAccount and revocation by certificate key.
    Jwk(Jwk),
    /// An account URL, for every other request.
    Kid(String),
}

/// A parsed, well-formed protected header.
///
/// Parsing checks shape only; the caller still compares [`ProtectedHeader::url`] with the
/// request URL (`unauthorized` on mismatch), redeems [`ProtectedHeader::nonce`] (`badNonce`,
/// also when it is absent), and checks that the [`KeyRef`] variant suits the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedHeader {
    alg: Algorithm,
    key: KeyRef,
    nonce: Option<String>,
    url: String,
}

impl ProtectedHeader {
    /// Parses a decoded protected header.
    ///
    /// Unknown members other than those refused above are ignored (RFC 7515 §4); `typ` and
    /// `cty` carry no meaning for ACME.
    pub(crate) fn from_json(value: &Value) -> Result<Self, JoseError> {
        let obj = value.as_object().ok_or(JoseError::Malformed(
            "protected header is not a JSON object",
        ))?;
        for (name, why) in REFUSED_MEMBERS {
            if obj.contains_key(name) {
                return Err(JoseError::Malformed(why));
            }
        }
        let alg = match obj.get("alg") {
            Some(Value::String(s)) => Algorithm::from_name(s)?,
            Some(_) => return Err(JoseError::Malformed("alg is not a string")),
            None => return Err(JoseError::Malformed("protected header lacks alg")),
        };
        let key = match (obj.get("jwk"), obj.get("kid")) {
            (Some(jwk), None) => {
                let jwk = Jwk::from_json(jwk)?;
                if jwk.algorithm() != alg {
                    return Err(JoseError::AlgorithmKeyMismatch {
                        alg: alg.name(),
                        key: "embedded",
                    });
                }
                KeyRef::Jwk(jwk)
            }
            (None, Some(Value::String(kid))) if !kid.is_empty() => KeyRef::Kid(kid.clone()),
            (None, Some(_)) => return Err(JoseError::Malformed("kid is not a non-empty string")),
            (Some(_), Some(_)) => return Err(JoseError::Malformed("both jwk and kid are present")),
            (None, None) => return Err(JoseError::Malformed("neither jwk nor kid is present")),
        };
        let url = optional_str(obj, "url")?
            .ok_or(JoseError::Malformed("protected header lacks url"))?
            .to_owned();
        let nonce = optional_str(obj, "nonce")?.map(str::to_owned);
        Ok(Self {
            alg,
            key,
            nonce,
            url,
        })
    }

    /// The signature algorithm.
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// The embedded key or the account URL.
    pub fn key(&self) -> &KeyRef {
        &self.key
    }

    /// The anti-replay nonce, if present; the caller must redeem it.
    pub fn nonce(&self) -> Option<&str> {
        self.nonce.as_deref()
    }

    /// The URL the client meant to send this request to; the caller must compare it with the
    /// actual request URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

pub(crate) fn optional_str<'a>(
    obj: &'a Map<String, Value>,
    name: &'static str,
) -> Result<Option<&'a str>, JoseError> {
    match obj.get(name) {
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(JoseError::Malformed("header member is not a string")),
        None => Ok(None),
    }
}
