//! The ACME service: what every endpoint shares (configuration, the CA's authority, nonces,
//! the validator, URLs) and the request authentication every POST goes through (RFC 8555 §6).
//!
//! Endpoint logic lives in `account`, `order`, `challenge`, `revoke`; HTTP in `http`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use agentca_core::issuer::Authority;
use agentca_core::store::{
    AcmeAccount, AcmeAccountStatus, AcmeAuthorization, AcmeOrder, AgentRecord, CertificateRecord,
    RequestSubject, Store, SubjectRecord,
};
use agentca_core::token::TokenSealer;
use serde_json::Value;
use time::OffsetDateTime;

use crate::error::{AcmeError, Result};
use crate::jose::{Jwk, Jws, KeyRef, parse_json};
use crate::nonce::{NonceService, Redemption};
use crate::recent::RecentCertificates;
use crate::validation::{ValidationConfig, Validator};

/// Told about issuances and revocations so status publication (pre-signed OCSP, CRLs) follows
/// at once. Called from blocking threads.
pub trait IssuanceEvents: Send + Sync {
    /// A certificate was issued and is durable.
    fn issued(&self, record: &CertificateRecord);
    /// Certificates were revoked (all of them, as `Authority::revoke_all` returned them).
    fn revoked(&self, records: &[CertificateRecord]);
}

/// Settings of the ACME front end.
#[derive(Clone, Debug)]
pub struct AcmeConfig {
    /// How long a new order (and its pending authorizations) stays usable.
    pub order_lifetime: time::Duration,
    /// How challenge validation reaches targets.
    pub validation: ValidationConfig,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        Self {
            order_lifetime: time::Duration::hours(8),
            validation: ValidationConfig::default(),
        }
    }
}

/// Everything the endpoints share.
pub struct AcmeService {
    pub(crate) authority: Arc<Authority>,
    pub(crate) sealer: Arc<TokenSealer>,
    pub(crate) events: Arc<dyn IssuanceEvents>,
    pub(crate) nonces: NonceService,
    pub(crate) validator: Validator,
    pub(crate) config: AcmeConfig,
    /// Authorizations with a validation running on this node, so a client posting to a
    /// challenge twice starts one validation.
    pub(crate) validating: Mutex<HashSet<String>>,
    /// Where validations run (the server's runtime).
    pub(crate) runtime: tokio::runtime::Handle,
    /// Certificates this node just issued, for their downloads.
    pub(crate) recent: RecentCertificates,
}

impl std::fmt::Debug for AcmeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeService")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl AcmeService {
    /// Builds the service. Must be called inside a tokio runtime (validations run on it).
    pub fn new(
        authority: Arc<Authority>,
        sealer: Arc<TokenSealer>,
        events: Arc<dyn IssuanceEvents>,
        config: AcmeConfig,
    ) -> Result<Self, String> {
        let validator = Validator::new(config.validation.clone()).map_err(|e| e.to_string())?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "the ACME service needs a tokio runtime".to_owned())?;
        let nonces = if authority.store().is_shared() {
            NonceService::shared(
                sealer.acme_nonce_key().clone(),
                authority.shared_store(),
                crate::nonce::SHARED_LIFETIME,
            )
        } else {
            NonceService::default()
        };
        Ok(Self {
            authority,
            sealer,
            events,
            nonces,
            validator,
            config,
            validating: Mutex::new(HashSet::new()),
            runtime,
            recent: RecentCertificates::default(),
        })
    }

    /// The store.
    pub(crate) fn store(&self) -> &dyn Store {
        self.authority.store()
    }

    /// The challenge validator (tests read its connection counter).
    pub fn validator(&self) -> &Validator {
        &self.validator
    }

    /// The anti-replay nonces.
    pub fn nonces(&self) -> &NonceService {
        &self.nonces
    }

    /// Verifies a POST body for the resource at `url` (RFC 8555 §6.2–§6.5), in this order:
    /// well-formed JWS; `url` equal to the request URL; nonce redeemed; `jwk` or `kid` as the
    /// endpoint needs; signature valid; account (for `kid`) existing and valid.
    pub(crate) fn authenticate(
        &self,
        links: &Links,
        url: &str,
        body: &[u8],
        mode: KeyMode,
        subject: Option<RequestSubject<'_>>,
    ) -> Result<Authenticated> {
        let jws = Jws::parse(body)?;
        let header = jws.protected_header();
        if header.url() != url {
            return Err(AcmeError::unauthorized(
                "the JWS url header does not match the URL the request was sent to",
            ));
        }
        let redemption = self.nonces.check(header.nonce())?;
        match (header.key(), mode) {
            (KeyRef::Jwk(jwk), KeyMode::Jwk | KeyMode::Either) => {
                self.spend(redemption)?;
                jws.verify(jwk)?;
                let jwk = jwk.clone();
                Ok(Authenticated {
                    payload: jws.payload().to_vec(),
                    signer: Signer::Key(jwk),
                    subject: None,
                })
            }
            (KeyRef::Kid(kid), KeyMode::Kid | KeyMode::Either) => {
                let (account, subject) = self.account_for_kid(links, kid, redemption, subject)?;
                let jwk = stored_jwk(&account)?;
                jws.verify(&jwk)?;
                if account.status != AcmeAccountStatus::Valid {
                    return Err(
                        AcmeError::unauthorized("the account is deactivated").with_status(401)
                    );
                }
                Ok(Authenticated {
                    payload: jws.payload().to_vec(),
                    signer: Signer::Account(Box::new(account), jwk),
                    subject,
                })
            }
            (KeyRef::Kid(_), KeyMode::Jwk) => {
                self.spend(redemption)?;
                Err(AcmeError::malformed(
                    "this request must be signed with a jwk, not an account kid",
                ))
            }
            (KeyRef::Jwk(_), KeyMode::Kid) => {
                self.spend(redemption)?;
                Err(AcmeError::malformed(
                    "this request must name its account with kid, not carry a jwk",
                ))
            }
        }
    }

    /// Spends a checked nonce: a refusal of the nonce comes before anything else the
    /// request did wrong.
    fn spend(&self, redemption: Redemption) -> Result<()> {
        match redemption {
            Redemption::Done => Ok(()),
            Redemption::Record(pending) => Ok(self.nonces.record(&pending)?),
        }
    }

    /// The account `kid` names, spending the request's nonce first — in the same store call
    /// when the nonce is a shared one, which then also reads `subject`.
    fn account_for_kid(
        &self,
        links: &Links,
        kid: &str,
        redemption: Redemption,
        subject: Option<RequestSubject<'_>>,
    ) -> Result<(AcmeAccount, Option<SubjectRecord>)> {
        let Some(id) = kid
            .strip_prefix(&links.account_prefix())
            .filter(|id| !id.is_empty() && !id.contains('/'))
        else {
            self.spend(redemption)?;
            return Err(AcmeError::new(
                crate::error::ProblemType::AccountDoesNotExist,
                "kid is not an account URL of this server",
            )
            .with_status(400));
        };
        let (account, subject) = match redemption {
            Redemption::Done => (self.store().acme_account(id)?, None),
            Redemption::Record(pending) => {
                let read = self.store().redeem_nonce_and_get_account(
                    &pending.id,
                    pending.expires_at,
                    id,
                    subject,
                );
                let (fresh, account, subject) = match read {
                    Ok(read) => (Ok(read.fresh), read.account, read.subject),
                    Err(e) => (Err(e), None, None),
                };
                crate::nonce::fresh(fresh)?;
                (account, subject)
            }
        };
        let account = account.ok_or_else(|| {
            AcmeError::new(
                crate::error::ProblemType::AccountDoesNotExist,
                "no account with this kid",
            )
        })?;
        Ok((account, subject))
    }

    /// Seconds-precision now, as every stored time.
    pub(crate) fn now() -> OffsetDateTime {
        agentca_core::profile::whole_seconds(OffsetDateTime::now_utc())
    }
}

/// Which key reference an endpoint accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyMode {
    /// newAccount: the key itself.
    Jwk,
    /// Everything tied to an account.
    Kid,
    /// revokeCert: an account, or the certificate's own key.
    Either,
}

/// Who signed a verified request.
pub(crate) enum Signer {
    /// An existing, valid account, with its parsed key.
    Account(Box<AcmeAccount>, Jwk),
    /// A bare key (newAccount; revocation by certificate key).
    Key(Jwk),
}

/// A verified request.
pub(crate) struct Authenticated {
    pub(crate) payload: Vec<u8>,
    pub(crate) signer: Signer,
    /// The record the endpoint reads first, when the store read it with the account.
    subject: Option<SubjectRecord>,
}

impl Authenticated {
    /// The account's agent, if the store read it with the account: `Some(None)` if it is gone.
    pub(crate) fn agent_read(&self) -> Option<Option<AgentRecord>> {
        match &self.subject {
            Some(SubjectRecord::Agent(agent)) => Some(agent.clone()),
            _ => None,
        }
    }

    /// The order of the request's URL, if the store read it with the account.
    pub(crate) fn order_read(&self) -> Option<Option<AcmeOrder>> {
        match &self.subject {
            Some(SubjectRecord::Order(order)) => Some(order.clone()),
            _ => None,
        }
    }

    /// The authorization of the request's URL, if the store read it with the account.
    pub(crate) fn authorization_read(&self) -> Option<Option<AcmeAuthorization>> {
        match &self.subject {
            Some(SubjectRecord::Authorization(authz)) => Some(authz.clone()),
            _ => None,
        }
    }

    /// The account, for endpoints that accept only `kid`.
    pub(crate) fn account(&self) -> Result<&AcmeAccount> {
        match &self.signer {
            Signer::Account(account, _) => Ok(account),
            Signer::Key(_) => Err(AcmeError::malformed("this request needs an account kid")),
        }
    }

    /// POST-as-GET (RFC 8555 §6.3): an empty payload.
    pub(crate) fn is_post_as_get(&self) -> bool {
        self.payload.is_empty()
    }

    /// The payload as a JSON object (duplicate members refused).
    pub(crate) fn json(&self) -> Result<serde_json::Map<String, Value>> {
        match parse_json(&self.payload)? {
            Value::Object(map) => Ok(map),
            _ => Err(AcmeError::malformed("the payload must be a JSON object")),
        }
    }

    /// Refuses anything but POST-as-GET.
    pub(crate) fn expect_post_as_get(&self) -> Result<()> {
        if self.is_post_as_get() {
            Ok(())
        } else {
            Err(AcmeError::malformed(
                "this resource is read with POST-as-GET: the payload must be empty",
            ))
        }
    }
}

pub(crate) fn stored_jwk(account: &AcmeAccount) -> Result<Jwk> {
    let value = parse_json(account.jwk.as_bytes()).map_err(AcmeError::internal)?;
    Jwk::from_json(&value).map_err(AcmeError::internal)
}

/// The URLs of one request's view of the server: `https://HOST/acme/...`, with HOST as the
/// client addressed us, so every URL we hand out is one the client can reach and the JWS
/// `url` check compares like with like.
#[derive(Clone, Debug)]
pub struct Links {
    base: String,
}

impl Links {
    /// For requests that reached us as `host` (the Host header, already checked).
    pub fn new(host: &str) -> Self {
        Self {
            base: format!("https://{host}/acme"),
        }
    }

    /// The base: `https://HOST/acme`.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub(crate) fn directory(&self) -> String {
        format!("{}/directory", self.base)
    }
    pub(crate) fn at(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }
    pub(crate) fn account_prefix(&self) -> String {
        format!("{}/acct/", self.base)
    }
    pub(crate) fn account(&self, id: &str) -> String {
        format!("{}/acct/{id}", self.base)
    }
    pub(crate) fn orders(&self, account_id: &str) -> String {
        format!("{}/acct/{account_id}/orders", self.base)
    }
    pub(crate) fn order(&self, id: &str) -> String {
        format!("{}/order/{id}", self.base)
    }
    pub(crate) fn finalize(&self, id: &str) -> String {
        format!("{}/order/{id}/finalize", self.base)
    }
    pub(crate) fn authz(&self, id: &str) -> String {
        format!("{}/authz/{id}", self.base)
    }
    pub(crate) fn challenge(&self, authz: &str, kind: &str) -> String {
        format!("{}/chall/{authz}/{kind}", self.base)
    }
    pub(crate) fn certificate(&self, serial: &str) -> String {
        format!("{}/cert/{serial}", self.base)
    }
    pub(crate) fn issuer(&self) -> String {
        format!("{}/issuer", self.base)
    }
}

/// 128 random bits, base64url: ids and challenge tokens.
pub(crate) fn random_id() -> Result<String> {
    use base64::Engine;
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| AcmeError::internal("the RNG failed"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
