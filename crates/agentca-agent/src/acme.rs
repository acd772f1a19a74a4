//! An ACME (RFC 8555) client for agents: an ES256 account bound by External Account Binding,
//! orders for the agent identity (agentca's `uri` identifier) and names registered for it, or
//! for DNS names only at CAs that know no `uri` identifier; ARI (RFC 9773) renewal windows and
//! `replaces`.
//!
//! At agentca the identity and registered names are pre-authorized. A pending authorization
//! is answered over http-01 from the built-in responder ([`crate::http01`]) when an address
//! for it was given, and reported otherwise. Every request uses the nonce of the previous
//! answer; a `badNonce` answer is retried with the nonce it carries (RFC 8555 §6.5).

use std::net::SocketAddr;
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::error::{AgentError, Result};
use crate::http::{HttpClient, Response};
use crate::http01::Responder;
use crate::schedule::RenewalWindow;

const JOSE: &str = "application/jose+json";
/// How many `badNonce` answers in a row one request survives: enough that a server rejecting
/// half of all good nonces (pebble's `PEBBLE_WFE_NONCEREJECT=50`, CLI-1) fails one request in
/// 65,536, still bounded so a server that rejects every nonce ends the attempt.
const NONCE_RETRIES: usize = 16;
/// How long an order or authorization is polled before the attempt is given up.
const POLL_DEADLINE: Duration = Duration::from_secs(300);
/// The longest pause between two polls, whatever `Retry-After` says: the attempt as a whole
/// is bounded by [`POLL_DEADLINE`], and the daemon's own backoff takes over after it.
const MAX_POLL_WAIT: Duration = Duration::from_secs(30);
/// How many alternate chains are looked at.
const MAX_ALTERNATES: usize = 8;

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

/// What to order and how to get it authorized and delivered.
#[derive(Debug, Clone, Default)]
pub struct OrderRequest<'a> {
    /// The identifiers ordered.
    pub identifiers: Vec<Identifier>,
    /// Ordered instead when the server refuses `identifiers` for their type (a CA other than
    /// agentca knows no `uri` identifier).
    pub fallback: Option<Vec<Identifier>>,
    /// The ARI CertID of the certificate this one replaces; sent only to servers with ARI.
    pub replaces: Option<&'a str>,
    /// Where the http-01 responder listens when an authorization needs a challenge; `None`
    /// means pending authorizations are reported, not answered.
    pub http01_listen: Option<SocketAddr>,
    /// Roots (DER) the chain should lead to, picked among the alternates the server offers.
    pub preferred_roots: &'a [Vec<u8>],
}

/// What an order delivered.
#[derive(Debug, Clone)]
pub struct Obtained {
    /// The chain, PEM, leaf first.
    pub chain_pem: String,
    /// The identifiers of the order that delivered it (the request's or its fallback).
    pub identifiers: Vec<Identifier>,
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
    clock_offset: Option<time::Duration>,
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

    /// Places an order for `request`, answers what its authorizations need, finalizes with
    /// the CSR `csr_for` makes for the identifiers ordered, and returns the chain.
    ///
    /// No state is assumed: an order may come back `ready` at once (authorizations reused),
    /// an authorization may already be valid or its challenge already processing, and an
    /// order found not ready at finalize is looked at again (CLI-2, CLI-4).
    pub async fn obtain(
        &mut self,
        request: &OrderRequest<'_>,
        csr_for: &dyn Fn(&[Identifier]) -> Result<Vec<u8>>,
    ) -> Result<Obtained> {
        let (identifiers, order_url, mut order) = self.place_order(request).await?;
        let mut responder = None;
        for authz in string_list(&order, "authorizations")? {
            self.authorize(&authz, request.http01_listen, &mut responder)
                .await?;
        }
        if !order["authorizations"].as_array().is_none_or(Vec::is_empty) {
            // The order's own status changes once its authorizations are valid.
            order = self.post_json(&order_url, None).await?;
        }
        let csr_der = csr_for(&identifiers)?;
        let deadline = Instant::now() + POLL_DEADLINE;
        loop {
            match order["status"].as_str() {
                Some("ready") => {
                    let finalize = order["finalize"]
                        .as_str()
                        .ok_or_else(|| AgentError::Protocol("order without finalize".into()))?
                        .to_owned();
                    let answer = self
                        .post(
                            &finalize,
                            Some(json!({"csr": URL_SAFE_NO_PAD.encode(&csr_der)})),
                        )
                        .await;
                    order = match answer {
                        Ok(r) => json_body(&r)?,
                        // CLI-4: the order was not ready after all; look again after a pause
                        // (a server that keeps saying so is given up at the deadline).
                        Err(AgentError::Refused { kind, .. })
                            if kind.ends_with(":orderNotReady") =>
                        {
                            if Instant::now() >= deadline {
                                return Err(AgentError::Unavailable(format!(
                                    "the order at {order_url} is still not ready after \
                                     {POLL_DEADLINE:?}"
                                )));
                            }
                            self.pause().await;
                            self.post_json(&order_url, None).await?
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
                    let chain_pem = self.download(&cert_url, request.preferred_roots).await?;
                    return Ok(Obtained {
                        chain_pem,
                        identifiers,
                    });
                }
                Some("pending" | "processing") => {
                    if Instant::now() >= deadline {
                        return Err(AgentError::Unavailable(format!(
                            "the order at {order_url} is still {} after {POLL_DEADLINE:?}",
                            order["status"]
                        )));
                    }
                    self.pause().await;
                    order = self.post_json(&order_url, None).await?;
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
    }

    /// newOrder for the request's identifiers, or its fallback when the server refuses the
    /// first set's types; `replaces` only when the server offers ARI (RFC 9773 §5), whose
    /// `alreadyReplaced` refusal means ordering without it.
    async fn place_order(
        &mut self,
        request: &OrderRequest<'_>,
    ) -> Result<(Vec<Identifier>, String, Value)> {
        let url = self.directory.new_order.clone();
        let replaces = request
            .replaces
            .filter(|_| self.directory.renewal_info.is_some());
        let mut identifiers = request.identifiers.clone();
        let mut fallback = request.fallback.clone();
        loop {
            let payload = json!({
                "identifiers": identifiers
                    .iter()
                    .map(|i| json!({"type": i.kind, "value": i.value}))
                    .collect::<Vec<_>>(),
            });
            let answer = match replaces {
                Some(id) => {
                    let mut replacing = payload.clone();
                    replacing["replaces"] = json!(id);
                    match self.post(&url, Some(replacing)).await {
                        // An earlier attempt (say, killed before it finalized) still holds
                        // the claim: order without it; the certificate is replaced all the
                        // same.
                        Err(AgentError::Refused { kind, .. })
                            if kind.ends_with(":alreadyReplaced") =>
                        {
                            self.post(&url, Some(payload)).await
                        }
                        other => other,
                    }
                }
                None => self.post(&url, Some(payload)).await,
            };
            match answer {
                Ok(response) => {
                    let order_url = location(&response)?;
                    let order = json_body(&response)?;
                    return Ok((identifiers, order_url, order));
                }
                Err(AgentError::Refused { ref kind, .. })
                    if fallback.is_some() && refuses_identifier_type(kind) =>
                {
                    identifiers = fallback.take().unwrap_or_default();
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Brings one authorization to `valid`: nothing to do when it already is (reused), the
    /// http-01 challenge answered from the responder when it is pending, then polled.
    async fn authorize(
        &mut self,
        authz_url: &str,
        listen: Option<SocketAddr>,
        responder: &mut Option<Responder>,
    ) -> Result<()> {
        let mut authz = self.post_json(authz_url, None).await?;
        let mut answered = false;
        let deadline = Instant::now() + POLL_DEADLINE;
        loop {
            match authz["status"].as_str() {
                Some("valid") => return Ok(()),
                Some("pending") if !answered => {
                    self.answer_http01(&authz, listen, responder).await?;
                    answered = true;
                }
                Some("pending") => {
                    if Instant::now() >= deadline {
                        return Err(AgentError::Unavailable(format!(
                            "the authorization at {authz_url} is still pending after \
                             {POLL_DEADLINE:?}"
                        )));
                    }
                }
                other => {
                    let errors: Vec<String> = authz["challenges"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|c| !c["error"].is_null())
                        .map(|c| format!("{}: {}", c["type"], c["error"]))
                        .collect();
                    return Err(AgentError::Refused {
                        kind: "authorizationInvalid".into(),
                        detail: format!(
                            "the authorization for {} is {other:?} ({})",
                            authz["identifier"]["value"],
                            errors.join("; ")
                        ),
                        retry_after: None,
                    });
                }
            }
            self.pause().await;
            authz = self.post_json(authz_url, None).await?;
        }
    }

    /// Serves the key authorization of the authorization's http-01 challenge and tells the
    /// server to validate, unless that was already asked for (the challenge is processing).
    async fn answer_http01(
        &mut self,
        authz: &Value,
        listen: Option<SocketAddr>,
        responder: &mut Option<Responder>,
    ) -> Result<()> {
        let name = &authz["identifier"]["value"];
        let Some(listen) = listen else {
            return Err(AgentError::Refused {
                kind: "authorizationPending".into(),
                detail: format!(
                    "{name} needs a challenge: give --http-01-listen to answer http-01, or \
                     order names the CA pre-authorizes (agentca: `agent add --dns`)"
                ),
                retry_after: None,
            });
        };
        let challenge = authz["challenges"]
            .as_array()
            .and_then(|all| all.iter().find(|c| c["type"] == "http-01"))
            .ok_or_else(|| AgentError::Refused {
                kind: "authorizationPending".into(),
                detail: format!("{name} needs a challenge and the CA offers no http-01"),
                retry_after: None,
            })?;
        let token = challenge["token"]
            .as_str()
            .filter(|t| is_token(t))
            .ok_or_else(|| AgentError::Protocol("an http-01 challenge without a token".into()))?;
        let url = challenge["url"]
            .as_str()
            .ok_or_else(|| AgentError::Protocol("a challenge without url".into()))?
            .to_owned();
        if responder.is_none() {
            *responder = Some(Responder::bind(listen).await?);
        }
        if let Some(server) = responder {
            server.add(token, &self.key_authorization(token));
        }
        if challenge["status"] == "pending" {
            self.post(&url, Some(json!({}))).await?;
        }
        Ok(())
    }

    /// The key authorization of `token` (RFC 8555 §8.1): the token, a dot, and the account
    /// key's JWK thumbprint (RFC 7638).
    fn key_authorization(&self, token: &str) -> String {
        let jwk = self.jwk();
        // RFC 7638 §3: the required members only, in lexicographic order, no whitespace.
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["x"].as_str().unwrap_or_default(),
            jwk["y"].as_str().unwrap_or_default()
        );
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
        format!("{token}.{}", URL_SAFE_NO_PAD.encode(digest.as_ref()))
    }

    /// Waits as long as the last answer's `Retry-After` asked (1 s without one), up to
    /// [`MAX_POLL_WAIT`].
    async fn pause(&self) {
        let wait = self.last_retry_after.unwrap_or(Duration::from_secs(1));
        tokio::time::sleep(wait.min(MAX_POLL_WAIT)).await;
    }

    /// The chain at `cert_url`, or the first of its alternates (`Link: rel="alternate"`,
    /// RFC 8555 §7.4.2) that leads to one of `preferred_roots`; the default chain when none
    /// does (or none is preferred).
    async fn download(&mut self, cert_url: &str, preferred_roots: &[Vec<u8>]) -> Result<String> {
        let first = self.post(cert_url, None).await?;
        let default = pem_text(&first)?;
        if preferred_roots.is_empty() || leads_to(&default, preferred_roots) {
            return Ok(default);
        }
        for alternate in alternate_links(&first, cert_url)
            .into_iter()
            .take(MAX_ALTERNATES)
        {
            let Ok(response) = self.post(&alternate, None).await else {
                continue;
            };
            if let Ok(chain) = pem_text(&response)
                && leads_to(&chain, preferred_roots)
            {
                return Ok(chain);
            }
        }
        Ok(default)
    }

    /// How far the server's clock (its `Date` when the directory was fetched) is ahead of
    /// this machine's; `None` when it sent no usable `Date`.
    pub fn server_clock_offset(&self) -> Option<time::Duration> {
        self.directory.clock_offset
    }

    async fn post_json(&mut self, url: &str, payload: Option<Value>) -> Result<Value> {
        let response = self.post(url, payload).await?;
        json_body(&response)
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
        let clock_offset = response
            .header("date")
            .and_then(parse_http_date)
            .map(|date| date - OffsetDateTime::now_utc());
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
            clock_offset,
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

/// `Retry-After` as seconds or as an HTTP date (RFC 9110 §10.2.3); a date in the past is no
/// wait.
fn header_retry_after(response: &Response) -> Option<Duration> {
    let value = response.header("retry-after")?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = parse_http_date(value)?;
    Some(Duration::try_from(at - OffsetDateTime::now_utc()).unwrap_or(Duration::ZERO))
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

/// Whether a newOrder refusal says the identifiers' type is what the server objects to:
/// RFC 8555's `unsupportedIdentifier` and `rejectedIdentifier`, and `malformed`, which is what
/// servers that check types while parsing (pebble among them) answer for a `uri` identifier.
fn refuses_identifier_type(kind: &str) -> bool {
    [
        ":unsupportedIdentifier",
        ":rejectedIdentifier",
        ":malformed",
    ]
    .iter()
    .any(|suffix| kind.ends_with(suffix))
}

/// A challenge token is base64url (RFC 8555 §8.1); anything else is not served, so a token
/// can never name another path.
fn is_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 256
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn pem_text(response: &Response) -> Result<String> {
    String::from_utf8(response.body.to_vec())
        .map_err(|_| AgentError::Protocol("the chain is not PEM text".into()))
}

/// Whether the chain's last certificate is one of `roots`, or is signed by one of them.
pub fn leads_to(chain_pem: &str, roots: &[Vec<u8>]) -> bool {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let Ok(blocks) = pem::parse_many(chain_pem) else {
        return false;
    };
    let Some(top) = blocks.iter().rev().find(|b| b.tag() == "CERTIFICATE") else {
        return false;
    };
    let Ok((_, top_cert)) = X509Certificate::from_der(top.contents()) else {
        return false;
    };
    roots.iter().any(|root| {
        if root.as_slice() == top.contents() {
            return true;
        }
        let Ok((_, root_cert)) = X509Certificate::from_der(root) else {
            return false;
        };
        top_cert.issuer() == root_cert.subject()
            && top_cert
                .verify_signature(Some(root_cert.public_key()))
                .is_ok()
    })
}

/// The targets of the answer's `Link: <…>;rel="alternate"` headers (RFC 8288), absolute or
/// resolved against the origin of `base`.
fn alternate_links(response: &Response, base: &str) -> Vec<String> {
    let origin = base
        .parse::<hyper::Uri>()
        .ok()
        .and_then(|u| Some(format!("{}://{}", u.scheme_str()?, u.authority()?)));
    let mut links = Vec::new();
    for value in response.headers.get_all("link") {
        let Ok(text) = value.to_str() else { continue };
        // One header may carry several links separated by commas; a URL holds no `>`.
        for link in text.split(',') {
            let Some((target, params)) = link
                .trim()
                .strip_prefix('<')
                .and_then(|l| l.split_once('>'))
            else {
                continue;
            };
            let alternate = params.split(';').any(|p| {
                let p = p.trim().to_ascii_lowercase();
                p == "rel=\"alternate\"" || p == "rel=alternate"
            });
            if !alternate {
                continue;
            }
            if target.starts_with("https://") || target.starts_with("http://") {
                links.push(target.to_owned());
            } else if let (Some(origin), true) = (&origin, target.starts_with('/')) {
                links.push(format!("{origin}{target}"));
            }
        }
    }
    links
}

/// An HTTP `Date` (RFC 9110 §5.6.7, IMF-fixdate: `Thu, 03 Dec 2026 07:22:27 GMT`).
pub fn parse_http_date(text: &str) -> Option<OffsetDateTime> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(text.trim(), &format)
        .ok()
        .map(time::PrimitiveDateTime::assume_utc)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn http_dates_parse_and_garbage_does_not() {
        assert_eq!(
            parse_http_date("Thu, 03 Dec 2026 07:22:27 GMT"),
            Some(time::macros::datetime!(2026-12-03 07:22:27 UTC))
        );
        assert_eq!(parse_http_date("yesterday"), None);
        assert_eq!(parse_http_date("Thu, 03 Dec 2026 07:22:27 +0100"), None);
    }

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        let with = |value: &str| {
            let mut headers = hyper::HeaderMap::new();
            headers.insert(
                "retry-after",
                hyper::header::HeaderValue::from_str(value).unwrap(),
            );
            header_retry_after(&Response {
                status: StatusCode::OK,
                headers,
                body: bytes::Bytes::new(),
            })
        };
        assert_eq!(with("7"), Some(Duration::from_secs(7)));
        assert_eq!(with("Thu, 01 Jan 2015 00:00:00 GMT"), Some(Duration::ZERO));
        let later = (OffsetDateTime::now_utc() + time::Duration::minutes(10))
            .format(time::macros::format_description!(
                "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
            ))
            .unwrap();
        let wait = with(&later).unwrap();
        assert!(
            wait > Duration::from_secs(590) && wait <= Duration::from_secs(600),
            "{wait:?}"
        );
        assert_eq!(with("soon"), None);
    }

    #[test]
    fn tokens_are_base64url_only() {
        assert!(is_token("abc-DEF_123"));
        assert!(!is_token(""));
        assert!(!is_token("../etc"));
        assert!(!is_token("a/b"));
    }

    #[test]
    fn alternate_links_are_found_among_others() {
        let mut headers = hyper::HeaderMap::new();
        headers.append(
            "link",
            hyper::header::HeaderValue::from_static(
                "<https://ca.test/dir>;rel=\"index\", <https://ca.test/cert/1/1>;rel=\"alternate\"",
            ),
        );
        headers.append(
            "link",
            hyper::header::HeaderValue::from_static("</cert/1/2>; rel=alternate"),
        );
        let response = Response {
            status: StatusCode::OK,
            headers,
            body: bytes::Bytes::new(),
        };
        assert_eq!(
            alternate_links(&response, "https://ca.test:8443/cert/1"),
            ["https://ca.test/cert/1/1", "https://ca.test:8443/cert/1/2"]
        );
    }

    #[test]
    fn identifier_type_refusals_are_recognized() {
        assert!(refuses_identifier_type(
            "urn:ietf:params:acme:error:unsupportedIdentifier"
        ));
        assert!(refuses_identifier_type(
            "urn:ietf:params:acme:error:malformed"
        ));
        assert!(!refuses_identifier_type(
            "urn:ietf:params:acme:error:badNonce"
        ));
    }

    /// What the scripted CA saw.
    #[derive(Default)]
    struct Seen {
        finalizes: usize,
        order_polls: usize,
        new_orders: Vec<String>,
        /// Whether each newOrder carried `replaces`.
        replaces: Vec<bool>,
    }

    /// A scripted ACME server over plain HTTP for what pebble never does (CLI-4): its order
    /// says `ready` at once but the first finalize is refused with `orderNotReady`, the order
    /// is `pending` when looked at again and `ready` only after that. Its first newOrder is
    /// refused with `badNonce`, carrying the nonce the retry must use; with `ari` its directory
    /// has `renewalInfo` and a newOrder with `replaces` is refused as `alreadyReplaced` (409).
    /// JWS signatures are not checked: this is about states and nonces.
    async fn scripted_ca(ari: bool) -> (String, std::sync::Arc<std::sync::Mutex<Seen>>) {
        use http_body_util::BodyExt;
        use std::sync::{Arc, Mutex};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let state = seen.clone();
        let origin = base.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (seen, base) = (state.clone(), origin.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: hyper::Request<hyper::body::Incoming>| {
                            let (seen, base) = (seen.clone(), base.clone());
                            async move {
                                let path = request.uri().path().to_owned();
                                let body = request.into_body().collect().await.unwrap().to_bytes();
                                let jws: Value =
                                    serde_json::from_slice(&body).unwrap_or(Value::Null);
                                let part = |name: &str| -> Value {
                                    jws[name]
                                        .as_str()
                                        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
                                        .and_then(|p| serde_json::from_slice(&p).ok())
                                        .unwrap_or(Value::Null)
                                };
                                let nonce = part("protected")["nonce"]
                                    .as_str()
                                    .unwrap_or_default()
                                    .to_owned();
                                let replacing = !part("payload")["replaces"].is_null();
                                let mut seen = seen.lock().unwrap();
                                let order = |status: &str| {
                                    json!({
                                        "status": status,
                                        "identifiers": [{"type": "dns", "value": "a.test"}],
                                        "authorizations": [],
                                        "finalize": format!("{base}/finalize/1"),
                                        "certificate": format!("{base}/cert/1"),
                                    })
                                };
                                let bad_nonce = json!({
                                    "type": "urn:ietf:params:acme:error:badNonce",
                                    "detail": "try again",
                                });
                                let already_replaced = json!({
                                    "type": "urn:ietf:params:acme:error:alreadyReplaced",
                                    "detail": "an earlier order holds it",
                                });
                                let not_ready = json!({
                                    "type": "urn:ietf:params:acme:error:orderNotReady",
                                    "detail": "not yet",
                                });
                                let (status, doc, nonce_out) = match path.as_str() {
                                    "/dir" => {
                                        let mut directory = json!({
                                            "newNonce": format!("{base}/nonce"),
                                            "newAccount": format!("{base}/account"),
                                            "newOrder": format!("{base}/new-order"),
                                        });
                                        if ari {
                                            directory["renewalInfo"] =
                                                json!(format!("{base}/renewal-info"));
                                        }
                                        (200, directory, "n-1")
                                    }
                                    "/nonce" => (200, Value::Null, "n-1"),
                                    "/new-order" => {
                                        seen.new_orders.push(nonce);
                                        seen.replaces.push(replacing);
                                        if seen.new_orders.len() == 1 {
                                            (400, bad_nonce, "n-from-error")
                                        } else if replacing {
                                            (409, already_replaced, "n-10")
                                        } else {
                                            (201, order("ready"), "n-2")
                                        }
                                    }
                                    "/finalize/1" => {
                                        seen.finalizes += 1;
                                        if seen.finalizes == 1 {
                                            (403, not_ready, "n-3")
                                        } else {
                                            (200, order("processing"), "n-4")
                                        }
                                    }
                                    "/order/1" => {
                                        seen.order_polls += 1;
                                        match (seen.finalizes, seen.order_polls) {
                                            (1, 1) => (200, order("pending"), "n-5"),
                                            (1, _) => (200, order("ready"), "n-6"),
                                            _ => (200, order("valid"), "n-7"),
                                        }
                                    }
                                    "/cert/1" => (200, Value::Null, "n-8"),
                                    _ => (404, Value::Null, "n-9"),
                                };
                                let text = if path == "/cert/1" {
                                    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
                                        .to_owned()
                                } else if doc.is_null() {
                                    String::new()
                                } else {
                                    doc.to_string()
                                };
                                let response = hyper::Response::builder()
                                    .status(status)
                                    .header("replay-nonce", nonce_out)
                                    .header("retry-after", "0")
                                    .header("location", format!("{base}/order/1"))
                                    .body(http_body_util::Full::new(bytes::Bytes::from(text)))
                                    .unwrap();
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (base, seen)
    }

    /// A client for an account at the scripted CA.
    async fn client_of(base: &str) -> AcmeClient {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let record = AccountRecord {
            directory: format!("{base}/dir"),
            url: format!("{base}/account/1"),
            key_pkcs8: URL_SAFE_NO_PAD.encode(pkcs8.as_ref()),
        };
        // Plain HTTP: the roots are never used, but the client wants some.
        let root = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap();
        let http = HttpClient::new(root.pem().as_bytes(), Duration::from_secs(5)).unwrap();
        AcmeClient::resume(http, &record).await.unwrap()
    }

    /// CLI-4 and CLI-1 against the scripted CA: an order that was `ready` but is refused at
    /// finalize is polled until `ready` again and finalized a second time; a `badNonce`
    /// answer is retried with the nonce it carried.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn order_not_ready_at_finalize_is_polled_then_finalized_again() {
        let (base, seen) = scripted_ca(false).await;
        let mut client = client_of(&base).await;
        // `replaces` is not sent to a server without ARI.
        let request = OrderRequest {
            identifiers: vec![Identifier::dns("a.test")],
            replaces: Some("aki.serial"),
            ..OrderRequest::default()
        };
        let obtained = client
            .obtain(&request, &|_| Ok(vec![0x30, 0x00]))
            .await
            .unwrap();
        assert!(obtained.chain_pem.contains("BEGIN CERTIFICATE"));
        let seen = seen.lock().unwrap();
        assert_eq!(seen.finalizes, 2, "finalized again after orderNotReady");
        assert!(
            seen.order_polls >= 2,
            "polled until ready: {}",
            seen.order_polls
        );
        assert_eq!(seen.new_orders.len(), 2);
        assert_eq!(
            seen.new_orders[1], "n-from-error",
            "the retry used the error's nonce"
        );
        assert_eq!(seen.replaces, [false, false]);
    }

    /// CLI-6: a replacement already claimed (`alreadyReplaced`, 409 — say, by a renewal
    /// killed before it finalized) is ordered again without `replaces`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn already_replaced_orders_again_without_replaces() {
        let (base, seen) = scripted_ca(true).await;
        let mut client = client_of(&base).await;
        let request = OrderRequest {
            identifiers: vec![Identifier::dns("a.test")],
            replaces: Some("aki.serial"),
            ..OrderRequest::default()
        };
        client
            .obtain(&request, &|_| Ok(vec![0x30, 0x00]))
            .await
            .unwrap();
        let seen = seen.lock().unwrap();
        // The badNonce retry keeps `replaces`; the 409 drops it.
        assert_eq!(seen.replaces, [true, true, false]);
    }
}
