//! An ACME (RFC 8555) client for agents: an ES256 account bound by External Account Binding,
//! orders for the agent identity (agentca's `uri` identifier) and names registered for it,
//! ARI (RFC 9773) renewal windows and `replaces`.
//!
//! Agents serve no challenges: the identity and registered names are pre-authorized, so an
//! authorization that is still pending is reported, not answered. Every request uses the
//! nonce of the previous answer; a `badNonce` answer is retried with the nonce it carries
//! (RFC 8555 §6.5), a few times.

use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::error::{AgentError, Result};
use crate::http::{HttpClient, Response};
use crate::schedule::RenewalWindow;

const JOSE: &str = "application/jose+json";
/// How many `badNonce` answers in a row one request survives.
const NONCE_RETRIES: usize = 5;
/// How many times an order or authorization is polled before giving up.
const MAX_POLLS: usize = 30;

/// What a renewal needs to find the account again (kept, mode 0600, in the state directory).
#[derive(Clone, Serialize, Deserialize)]
pub struct AccountRecord {
    /// The directory URL.
    pub directory: String,
    /// The account URL (the JWS `kid`).
    pub url: String,
    /// The ES256 account key, PKCS#8 DER, base64url.
    pub key_pkcs8: String,
}

impl std::fmt::Debug for AccountRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountRecord")
            .field("directory", &self.directory)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// An External Account Binding credential: the key id and the HMAC key as printed by
/// `agentca token create --for acme`.
#[derive(Clone)]
pub struct Eab {
    /// The key id.
    pub kid: String,
    /// The HMAC key, base64url.
    pub hmac_b64: String,
}

impl std::fmt::Debug for Eab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Eab")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// An identifier to order (RFC 8555 §9.7.7; `uri` is agentca's for the agent ID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identifier {
    /// `uri`, `dns` or `ip`.
    pub kind: &'static str,
    /// The value.
    pub value: String,
}

impl Identifier {
    /// The agent identity itself.
    pub fn agent(id: &str) -> Self {
        Self {
            kind: "uri",
            value: id.to_owned(),
        }
    }

    /// A DNS name registered for the agent.
    pub fn dns(name: &str) -> Self {
        Self {
            kind: "dns",
            value: name.to_owned(),
        }
    }
}

/// A client bound to one account.
pub struct AcmeClient {
    http: HttpClient,
    directory: Directory,
    key: EcdsaKeyPair,
    account_url: Option<String>,
    nonce: Option<String>,
    /// The `Retry-After` of the last answer, for polling.
    last_retry_after: Option<Duration>,
}

impl std::fmt::Debug for AcmeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeClient")
            .field("account", &self.account_url)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
struct Directory {
    url: String,
    new_nonce: String,
    new_account: String,
    new_order: String,
    renewal_info: Option<String>,
}

impl AcmeClient {
    /// Creates an account with `eab` at `directory` and returns the client and the record to
    /// keep for renewals.
    pub async fn register(
        http: HttpClient,
        directory: &str,
        eab: &Eab,
    ) -> Result<(Self, AccountRecord)> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| AgentError::Credentials("generating the account key failed".into()))?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .map_err(|_| AgentError::Credentials("the new account key does not load".into()))?;
        let directory = Directory::fetch(&http, directory).await?;
        let mut client = Self {
            http,
            directory,
            key,
            account_url: None,
            nonce: None,
            last_retry_after: None,
        };
        let hmac = URL_SAFE_NO_PAD
            .decode(eab.hmac_b64.trim_end_matches('='))
            .map_err(|_| AgentError::Credentials("the EAB HMAC key is not base64url".into()))?;
        let url = client.directory.new_account.clone();
        let binding = eab_binding(&eab.kid, &hmac, &url, &client.jwk());
        let response = client
            .post(
                &url,
                Some(json!({
                    "termsOfServiceAgreed": true,
                    "externalAccountBinding": binding,
                })),
            )
            .await?;
        let account_url = location(&response)?;
        client.account_url = Some(account_url.clone());
        let record = AccountRecord {
            directory: client.directory.url.clone(),
            url: account_url,
            key_pkcs8: URL_SAFE_NO_PAD.encode(pkcs8.as_ref()),
        };
        Ok((client, record))
    }

    /// The client of an account created before.
    pub async fn resume(http: HttpClient, record: &AccountRecord) -> Result<Self> {
        let pkcs8 = URL_SAFE_NO_PAD
            .decode(&record.key_pkcs8)
            .map_err(|_| AgentError::Credentials("the account key is not base64url".into()))?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8)
            .map_err(|_| AgentError::Credentials("the account key does not load".into()))?;
        let directory = Directory::fetch(&http, &record.directory).await?;
        Ok(Self {
            http,
            directory,
            key,
            account_url: Some(record.url.clone()),
            nonce: None,
            last_retry_after: None,
        })
    }

    /// Orders `identifiers`, finalizes with `csr_der` once the order is ready, and returns the
    /// PEM chain. `replaces` is the ARI CertID of the certificate this one replaces.
    pub async fn obtain(
        &mut self,
        identifiers: &[Identifier],
        csr_der: &[u8],
        replaces: Option<&str>,
    ) -> Result<String> {
        let payload = json!({
            "identifiers": identifiers
                .iter()
                .map(|i| json!({"type": i.kind, "value": i.value}))
                .collect::<Vec<_>>(),
        });
        let url = self.directory.new_order.clone();
        let response = match replaces {
            Some(id) => {
                let mut replacing = payload.clone();
                replacing["replaces"] = json!(id);
                match self.post(&url, Some(replacing)).await {
                    // An earlier attempt (say, killed before it finalized) still holds the
                    // claim (RFC 9773 §5): order without it; the certificate is replaced all
                    // the same.
                    Err(AgentError::Refused { kind, .. }) if kind.ends_with(":alreadyReplaced") => {
                        self.post(&url, Some(payload)).await?
                    }
                    other => other?,
                }
            }
            None => self.post(&url, Some(payload)).await?,
        };
        let order_url = location(&response)?;
        let mut order = json_body(&response)?;
        for authz in string_list(&order, "authorizations")? {
            let authz = self.post(&authz, None).await.and_then(|r| json_body(&r))?;
            match authz["status"].as_str() {
                Some("valid") => {}
                Some("pending") => {
                    return Err(AgentError::Refused {
                        kind: "authorizationPending".into(),
                        detail: format!(
                            "{} needs a challenge; agents order their own identity, or names \
                             registered with `agentca agent add --dns`",
                            authz["identifier"]["value"]
                        ),
                        retry_after: None,
                    });
                }
                other => {
                    return Err(AgentError::Protocol(format!("authorization is {other:?}")));
                }
            }
        }
        for _ in 0..MAX_POLLS {
            match order["status"].as_str() {
                Some("ready") => {
                    let finalize = order["finalize"]
                        .as_str()
                        .ok_or_else(|| AgentError::Protocol("order without finalize".into()))?
                        .to_owned();
                    let answer = self
                        .post(
                            &finalize,
                            Some(json!({"csr": URL_SAFE_NO_PAD.encode(csr_der)})),
                        )
                        .await;
                    order = match answer {
                        Ok(r) => json_body(&r)?,
                        // CLI-4: the order was not ready after all; look again.
                        Err(AgentError::Refused { kind, .. })
                            if kind.ends_with(":orderNotReady") =>
                        {
                            self.post(&order_url, None)
                                .await
                                .and_then(|r| json_body(&r))?
                        }
                        Err(e) => return Err(e),
                    };
                }
                Some("valid") => {
                    let cert_url = order["certificate"]
                        .as_str()
                        .ok_or_else(|| {
                            AgentError::Protocol("valid order without certificate".into())
                        })?
                        .to_owned();
                    let chain = self.post(&cert_url, None).await?;
                    return String::from_utf8(chain.body.to_vec())
                        .map_err(|_| AgentError::Protocol("the chain is not PEM text".into()));
                }
                Some("pending" | "processing") => {
                    let wait = self.last_retry_after.unwrap_or(Duration::from_secs(1));
                    tokio::time::sleep(wait.min(Duration::from_secs(10))).await;
                    order = self
                        .post(&order_url, None)
                        .await
                        .and_then(|r| json_body(&r))?;
                }
                other => {
                    return Err(AgentError::Refused {
                        kind: "orderInvalid".into(),
                        detail: format!("the order is {other:?}: {}", order["error"]),
                        retry_after: None,
                    });
                }
            }
        }
        Err(AgentError::Unavailable("the order did not complete".into()))
    }

    /// The server's renewal window for `cert_der` (RFC 9773 §4.2) and how long the answer
    /// holds (its Retry-After); `None` when the server offers no ARI.
    pub async fn renewal_window(
        &self,
        cert_der: &[u8],
    ) -> Result<Option<(RenewalWindow, Option<Duration>)>> {
        let Some(base) = &self.directory.renewal_info else {
            return Ok(None);
        };
        let url = format!("{}/{}", base.trim_end_matches('/'), ari_cert_id(cert_der)?);
        let response = self.http.send(Method::GET, &url, None, Vec::new()).await?;
        if !response.status.is_success() {
            return Err(refusal(&response));
        }
        let body = json_body(&response)?;
        let at = |name: &str| {
            body["suggestedWindow"][name]
                .as_str()
                .and_then(|s| {
                    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
                })
                .ok_or_else(|| AgentError::Protocol(format!("renewalInfo without {name}")))
        };
        let window = RenewalWindow {
            start: at("start")?,
            end: at("end")?,
        };
        Ok(Some((window, header_retry_after(&response))))
    }

    fn jwk(&self) -> Value {
        let point = self.key.public_key().as_ref();
        // Uncompressed SEC1: 0x04 || X || Y.
        let x = point.get(1..33).unwrap_or_default();
        let y = point.get(33..65).unwrap_or_default();
        json!({"crv": "P-256", "kty": "EC", "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)})
    }

    /// A signed POST (`payload` `None` is POST-as-GET), retried on `badNonce`.
    async fn post(&mut self, url: &str, payload: Option<Value>) -> Result<Response> {
        let payload = payload.map(|p| p.to_string()).unwrap_or_default();
        let mut last = None;
        for _ in 0..NONCE_RETRIES {
            let nonce = match self.nonce.take() {
                Some(n) => n,
                None => self.fresh_nonce().await?,
            };
            let body = self.sign(url, &nonce, &payload)?;
            let response = self.http.send(Method::POST, url, Some(JOSE), body).await?;
            self.nonce = response.header("replay-nonce").map(str::to_owned);
            self.last_retry_after = header_retry_after(&response);
            if response.status.is_success() {
                return Ok(response);
            }
            let refused = refusal(&response);
            match &refused {
                AgentError::Refused { kind, .. } if kind.ends_with(":badNonce") => {
                    last = Some(refused);
                }
                _ => return Err(refused),
            }
        }
        Err(last.unwrap_or_else(|| AgentError::Protocol("no nonce was accepted".into())))
    }

    async fn fresh_nonce(&self) -> Result<String> {
        let response = self
            .http
            .send(Method::HEAD, &self.directory.new_nonce, None, Vec::new())
            .await?;
        response
            .header("replay-nonce")
            .map(str::to_owned)
            .ok_or_else(|| AgentError::Protocol("newNonce gave no Replay-Nonce".into()))
    }

    fn sign(&self, url: &str, nonce: &str, payload: &str) -> Result<Vec<u8>> {
        let mut protected = json!({"alg": "ES256", "nonce": nonce, "url": url});
        match &self.account_url {
            Some(kid) => protected["kid"] = json!(kid),
            None => protected["jwk"] = self.jwk(),
        }
        let protected = URL_SAFE_NO_PAD.encode(protected.to_string());
        let payload = URL_SAFE_NO_PAD.encode(payload);
        let signature = self
            .key
            .sign(
                &SystemRandom::new(),
                format!("{protected}.{payload}").as_bytes(),
            )
            .map_err(|_| AgentError::Credentials("signing with the account key failed".into()))?;
        let jws = json!({
            "protected": protected,
            "payload": payload,
            "signature": URL_SAFE_NO_PAD.encode(signature.as_ref()),
        });
        Ok(jws.to_string().into_bytes())
    }
}

impl Directory {
    async fn fetch(http: &HttpClient, url: &str) -> Result<Self> {
        let response = http.send(Method::GET, url, None, Vec::new()).await?;
        if response.status != StatusCode::OK {
            return Err(refusal(&response));
        }
        let body = json_body(&response)?;
        let field = |name: &str| {
            body[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| AgentError::Protocol(format!("the directory has no {name}")))
        };
        Ok(Self {
            url: url.to_owned(),
            new_nonce: field("newNonce")?,
            new_account: field("newAccount")?,
            new_order: field("newOrder")?,
            renewal_info: body["renewalInfo"].as_str().map(str::to_owned),
        })
    }
}

/// The EAB JWS (RFC 8555 §7.3.4): HS256 over the account key, with the newAccount URL.
fn eab_binding(kid: &str, hmac_key: &[u8], url: &str, jwk: &Value) -> Value {
    let protected =
        URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "kid": kid, "url": url}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(jwk.to_string());
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, hmac_key);
    let tag = aws_lc_rs::hmac::sign(&key, format!("{protected}.{payload}").as_bytes());
    json!({"protected": protected, "payload": payload, "signature": URL_SAFE_NO_PAD.encode(tag.as_ref())})
}

/// The ARI CertID (RFC 9773 §4.1): base64url(AKI keyIdentifier) "." base64url(serial DER).
pub fn ari_cert_id(cert_der: &[u8]) -> Result<String> {
    use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};
    let (_, cert) = X509Certificate::from_der(cert_der)
        .map_err(|e| AgentError::Credentials(format!("certificate: {e}")))?;
    let aki = cert
        .extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref(),
            _ => None,
        })
        .ok_or_else(|| AgentError::Credentials("the certificate has no authority key id".into()))?;
    Ok(format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(aki.0),
        URL_SAFE_NO_PAD.encode(cert.raw_serial())
    ))
}

fn refusal(response: &Response) -> AgentError {
    let problem: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    AgentError::Refused {
        kind: problem["type"].as_str().map_or_else(
            || format!("http {}", response.status.as_u16()),
            str::to_owned,
        ),
        detail: problem["detail"]
            .as_str()
            .map_or_else(|| format!("HTTP {}", response.status), str::to_owned),
        retry_after: header_retry_after(response),
    }
}

fn header_retry_after(response: &Response) -> Option<Duration> {
    response
        .header("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

fn location(response: &Response) -> Result<String> {
    response
        .header("location")
        .map(str::to_owned)
        .ok_or_else(|| AgentError::Protocol("the answer has no Location".into()))
}

fn json_body(response: &Response) -> Result<Value> {
    serde_json::from_slice(&response.body)
        .map_err(|e| AgentError::Protocol(format!("the answer is not JSON: {e}")))
}

fn string_list(value: &Value, name: &str) -> Result<Vec<String>> {
    value[name]
        .as_array()
        .ok_or_else(|| AgentError::Protocol(format!("no {name}")))?
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| AgentError::Protocol(format!("{name} holds a non-string")))
        })
        .collect()
}
