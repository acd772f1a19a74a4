//! A lean ACME client: one account, one connection, the nonce of the last answer.
//!
//! It does only what an order needs, in the order RFC 8555 §7.1 describes, and treats every
//! answer as untrusted input: whatever the server sends becomes a [`Failure`], never a panic.

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use super::jose::{AccountKey, Signer, eab_binding};
use super::options::EabCredential;
use crate::failure::Failure;
use crate::http::{Http, Response};

const JOSE: &str = "application/jose+json";

/// The directory's URLs (§7.1.1).
#[derive(Clone, Debug)]
pub(crate) struct Directory {
    pub(crate) new_nonce: String,
    pub(crate) new_account: String,
    pub(crate) new_order: String,
}

impl Directory {
    pub(crate) async fn fetch(http: &mut Http, url: &str) -> Result<Self, Failure> {
        let response = http.send(Method::GET, url, None, Vec::new()).await?;
        if response.status != StatusCode::OK {
            return Err(Failure::from_response(&response));
        }
        let doc = json_body(&response)?;
        let field = |name: &str| {
            doc.get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| Failure::invalid(format!("the directory has no {name}")))
        };
        Ok(Self {
            new_nonce: field("newNonce")?,
            new_account: field("newAccount")?,
            new_order: field("newOrder")?,
        })
    }
}

/// One worker's view of the server.
pub(crate) struct Client {
    pub(crate) http: Http,
    key: AccountKey,
    /// The account URL, once newAccount has answered.
    kid: Option<String>,
    nonce: Option<String>,
    /// `badNonce` answers retried (and so not counted as errors).
    pub(crate) bad_nonce_retries: u64,
}

impl Client {
    pub(crate) fn new(http: Http, key: AccountKey) -> Self {
        Self {
            http,
            key,
            kid: None,
            nonce: None,
            bad_nonce_retries: 0,
        }
    }

    /// A fresh nonce from `HEAD newNonce` (§7.2), used only when no answer left one.
    async fn new_nonce(&mut self, directory: &Directory) -> Result<String, Failure> {
        let response = self
            .http
            .send(Method::HEAD, &directory.new_nonce, None, Vec::new())
            .await?;
        if !response.status.is_success() {
            return Err(Failure::from_response(&response));
        }
        replay_nonce(&response)
            .ok_or_else(|| Failure::invalid("newNonce gave no Replay-Nonce".into()))
    }

    /// A signed POST (§6.2), retried once with the nonce of a `badNonce` answer (§6.5).
    pub(crate) async fn post(
        &mut self,
        directory: &Directory,
        url: &str,
        payload: Option<&Value>,
    ) -> Result<Response, Failure> {
        for attempt in 0..2 {
            let nonce = match self.nonce.take() {
                Some(nonce) => nonce,
                None => self.new_nonce(directory).await?,
            };
            let signer = match &self.kid {
                Some(kid) => Signer::Kid(kid),
                None => Signer::Jwk,
            };
            let body = self
                .key
                .sign(signer, &nonce, url, payload)
                .map_err(|e| Failure::invalid(e.to_string()))?;
            let response = self.http.send(Method::POST, url, Some(JOSE), body).await?;
            self.nonce = replay_nonce(&response);
            if response.status.is_success() {
                return Ok(response);
            }
            let failure = Failure::from_response(&response);
            if attempt == 0 && failure.is_bad_nonce() {
                self.bad_nonce_retries += 1;
                continue;
            }
            return Err(failure);
        }
        Err(Failure::invalid("unreachable: two attempts".into()))
    }

    /// newAccount (§7.3), with the binding when the server needs one; sets the account URL.
    pub(crate) async fn create_account(
        &mut self,
        directory: &Directory,
        eab: Option<&EabCredential>,
    ) -> Result<(), Failure> {
        let mut payload = json!({ "termsOfServiceAgreed": true });
        if let Some(eab) = eab {
            payload["externalAccountBinding"] = eab_binding(
                &eab.kid,
                &eab.hmac_key,
                &directory.new_account,
                self.key.jwk(),
            );
        }
        let response = self
            .post(directory, &directory.new_account, Some(&payload))
            .await?;
        let kid = location(&response)?;
        let doc = json_body(&response)?;
        match doc.get("status").and_then(Value::as_str) {
            Some("valid") | None => {}
            Some(other) => {
                return Err(Failure::state(
                    "account not valid",
                    format!("the new account's status is {other:?}"),
                ));
            }
        }
        self.kid = Some(kid);
        Ok(())
    }

    /// POST-as-GET (§6.3) of an object, parsed as JSON.
    pub(crate) async fn fetch(
        &mut self,
        directory: &Directory,
        url: &str,
    ) -> Result<(Value, Response), Failure> {
        let response = self.post(directory, url, None).await?;
        Ok((json_body(&response)?, response))
    }
}

pub(crate) fn replay_nonce(response: &Response) -> Option<String> {
    response
        .header("replay-nonce")
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
}

pub(crate) fn location(response: &Response) -> Result<String, Failure> {
    response
        .header("location")
        .map(str::to_owned)
        .ok_or_else(|| Failure::invalid("no Location header".into()))
}

pub(crate) fn json_body(response: &Response) -> Result<Value, Failure> {
    serde_json::from_slice(&response.body)
        .map_err(|e| Failure::invalid(format!("a body that is not JSON: {e}")))
}
