//! Accounts (RFC 8555 §7.3): creation with external account binding, lookup, contact update,
//! deactivation and key rollover. An account is bound to the agent its EAB credential names,
//! for good: it can only ever obtain certificates for that agent.

use agentca_core::store::{AcmeAccount, AcmeAccountStatus, StoreError, TokenKind};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use crate::error::{AcmeError, ProblemType, Result};
use crate::jose::{Jwk, Jws, KeyRef, verify_eab};
use crate::reply::Reply;
use crate::service::{AcmeService, Authenticated, Links, Signer, random_id};

/// At most this many contacts per account, each at most this long.
const MAX_CONTACTS: usize = 4;
const MAX_CONTACT_LEN: usize = 254;

impl AcmeService {
    /// POST newAccount (§7.3, §7.3.4).
    pub(crate) fn new_account(&self, links: &Links, req: &Authenticated) -> Result<Reply> {
        let Signer::Key(jwk) = &req.signer else {
            return Err(AcmeError::malformed("newAccount is signed with a jwk"));
        };
        let payload = req.json()?;
        let thumbprint = jwk.thumbprint();
        if let Some(existing) = self.store().acme_account_by_thumbprint(&thumbprint)? {
            // §7.3.1: the key already has an account; say which, create nothing.
            if existing.status != AcmeAccountStatus::Valid {
                return Err(
                    AcmeError::unauthorized("the account of this key is deactivated")
                        .with_status(401),
                );
            }
            return Ok(Reply::ok(account_json(links, &existing))
                .with_location(links.account(&existing.id)));
        }
        if bool_member(&payload, "onlyReturnExisting")? {
            return Err(AcmeError::new(
                ProblemType::AccountDoesNotExist,
                "no account exists with this key",
            ));
        }
        let contact = parse_contacts(payload.get("contact"))?;
        let Some(eab) = payload.get("externalAccountBinding") else {
            return Err(AcmeError::new(
                ProblemType::ExternalAccountRequired,
                "this CA requires external account binding: ask the operator for a key id and HMAC key (agentca token create --for acme)",
            ));
        };
        let now = Self::now();
        let mut bound_agent = None;
        let kid = verify_eab(jwk, eab, &links.at("new-account"), |kid| {
            let record = self.store().token(kid).ok().flatten()?;
            if record.kind != TokenKind::Acme
                || record.consumed_at.is_some()
                || record.expires_at <= now
            {
                return None;
            }
            let key: Zeroizing<Vec<u8>> = self.sealer.open(&record).ok()?;
            bound_agent = Some(record.agent_id.clone());
            Some(key)
        })?;
        let agent_id = bound_agent.ok_or_else(|| AcmeError::internal("EAB agent missing"))?;
        let agent = self
            .store()
            .agent(&agent_id)?
            .ok_or_else(|| AcmeError::unauthorized(format!("agent {agent_id} no longer exists")))?;
        if agent.disabled {
            return Err(AcmeError::unauthorized(format!(
                "agent {agent_id} is disabled"
            )));
        }
        self.authority
            .policy_of(&agent)?
            .check_method(agentca_core::store::EnrollmentMethod::Acme)?;

        let account = AcmeAccount {
            id: random_id()?,
            jwk: jwk.canonical_json(),
            thumbprint,
            agent_id,
            eab_kid: kid.clone(),
            contact,
            status: AcmeAccountStatus::Valid,
            created_at: now,
        };
        match self.store().create_acme_account(&account, &kid, now) {
            Ok(()) => {}
            Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound { .. }) => {
                return Err(AcmeError::unauthorized(
                    "external account binding rejected: the key id was already used",
                ));
            }
            Err(StoreError::AlreadyExists { .. }) => {
                // A concurrent newAccount with the same key won; answer as if it came first.
                if let Some(existing) = self
                    .store()
                    .acme_account_by_thumbprint(&account.thumbprint)?
                {
                    return Ok(Reply::ok(account_json(links, &existing))
                        .with_location(links.account(&existing.id)));
                }
                return Err(AcmeError::internal("account creation raced"));
            }
            Err(e) => return Err(e.into()),
        }
        // The EAB key is spent only once this is durable.
        self.store().commit()?;
        self.authority.audit().append_durable(
            "acme.account.created",
            json!({
                "account": account.id,
                "agent": account.agent_id,
                "eab_kid": account.eab_kid,
                "key_thumbprint": account.thumbprint,
            }),
        )?;
        Ok(Reply::json(201, account_json(links, &account))
            .with_location(links.account(&account.id)))
    }

    /// POST to an account URL (§7.3.2 update, §7.3.6 deactivation, POST-as-GET).
    pub(crate) fn account_request(
        &self,
        links: &Links,
        id: &str,
        req: &Authenticated,
    ) -> Result<Reply> {
        let account = req.account()?;
        if account.id != id {
            return Err(AcmeError::unauthorized(
                "an account can only read or change itself",
            ));
        }
        if req.is_post_as_get() {
            return Ok(Reply::ok(account_json(links, account)).with_location(links.account(id)));
        }
        let payload = req.json()?;
        let mut updated = account.clone();
        if let Some(contact) = payload.get("contact") {
            updated.contact = parse_contacts(Some(contact))?;
        }
        match payload.get("status") {
            None => {}
            Some(Value::String(s)) if s == "deactivated" => {
                updated.status = AcmeAccountStatus::Deactivated;
            }
            Some(Value::String(s)) if s == "valid" => {}
            Some(_) => {
                return Err(AcmeError::malformed(
                    "an account's status can only be set to deactivated",
                ));
            }
        }
        if updated != *account {
            self.store()
                .update_acme_account(&updated)
                .map_err(|e| match e {
                    StoreError::Conflict { .. } => AcmeError::unauthorized(
                        "the account changed meanwhile (a new key, or deactivated); fetch it again",
                    ),
                    e => e.into(),
                })?;
            self.store().commit()?;
            if updated.status != account.status {
                self.authority.audit().append_durable(
                    "acme.account.deactivated",
                    json!({"account": updated.id, "agent": updated.agent_id}),
                )?;
            }
        }
        Ok(Reply::ok(account_json(links, &updated)).with_location(links.account(id)))
    }

    /// POST keyChange (§7.3.5): the payload is a JWS by the new key over
    /// `{account, oldKey}`.
    pub(crate) fn key_change(&self, links: &Links, req: &Authenticated) -> Result<Reply> {
        let Signer::Account(account, old_jwk) = &req.signer else {
            return Err(AcmeError::malformed("keyChange is signed by the account"));
        };
        let inner = Jws::parse(&req.payload)?;
        let header = inner.protected_header();
        let KeyRef::Jwk(new_jwk) = header.key() else {
            return Err(AcmeError::malformed(
                "the inner JWS of keyChange must carry the new key as jwk",
            ));
        };
        if header.nonce().is_some() {
            return Err(AcmeError::malformed(
                "the inner JWS of keyChange must not have a nonce",
            ));
        }
        let url = links.at("key-change");
        if header.url() != url {
            return Err(AcmeError::malformed(
                "the inner JWS url must equal the outer one",
            ));
        }
        inner.verify(new_jwk)?;
        let Value::Object(payload) = inner.payload_json()? else {
            return Err(AcmeError::malformed(
                "the keyChange payload must be an object",
            ));
        };
        match payload.get("account") {
            Some(Value::String(a)) if *a == links.account(&account.id) => {}
            _ => {
                return Err(AcmeError::malformed(
                    "keyChange account does not name the signing account",
                ));
            }
        }
        let old_key = payload
            .get("oldKey")
            .ok_or_else(|| AcmeError::malformed("keyChange lacks oldKey"))?;
        let old_key = Jwk::from_json(old_key)
            .map_err(|_| AcmeError::malformed("keyChange oldKey is not a valid JWK"))?;
        if old_key != *old_jwk {
            return Err(AcmeError::malformed(
                "keyChange oldKey is not the account's current key",
            ));
        }
        let new_thumbprint = new_jwk.thumbprint();
        if let Some(other) = self.store().acme_account_by_thumbprint(&new_thumbprint)? {
            let mut e = AcmeError::malformed("the new key is already in use by an account")
                .with_status(409);
            e.location = Some(links.account(&other.id));
            return Err(e);
        }
        let updated = self
            .store()
            .change_acme_account_key(
                &account.id,
                &account.thumbprint,
                &new_jwk.canonical_json(),
                &new_thumbprint,
            )
            .map_err(|e| match e {
                StoreError::AlreadyExists { .. } => {
                    AcmeError::malformed("the new key is already in use by an account")
                        .with_status(409)
                }
                StoreError::Conflict { .. } => {
                    AcmeError::malformed("the account key changed meanwhile")
                }
                e => e.into(),
            })?;
        self.store().commit()?;
        self.authority.audit().append_durable(
            "acme.account.key-changed",
            json!({
                "account": updated.id,
                "agent": updated.agent_id,
                "old_thumbprint": account.thumbprint,
                "new_thumbprint": updated.thumbprint,
            }),
        )?;
        Ok(Reply::ok(account_json(links, &updated)).with_location(links.account(&updated.id)))
    }
}

/// The account object (§7.1.2).
pub(crate) fn account_json(links: &Links, account: &AcmeAccount) -> Value {
    json!({
        "status": match account.status {
            AcmeAccountStatus::Valid => "valid",
            _ => "deactivated",
        },
        "contact": account.contact,
        "orders": links.orders(&account.id),
    })
}

fn bool_member(payload: &Map<String, Value>, name: &str) -> Result<bool> {
    match payload.get(name) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(AcmeError::malformed(format!("{name} must be a boolean"))),
    }
}

/// Contacts (§7.3): `mailto:` URLs with one plain address each, few and short (ACME-A10).
fn parse_contacts(value: Option<&Value>) -> Result<Vec<String>> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let Value::Array(items) = value else {
        return Err(AcmeError::malformed("contact must be an array of URLs"));
    };
    if items.len() > MAX_CONTACTS {
        return Err(AcmeError::new(
            ProblemType::InvalidContact,
            format!("at most {MAX_CONTACTS} contacts"),
        ));
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::String(url) = item else {
            return Err(AcmeError::malformed("each contact must be a string"));
        };
        let invalid = |why: &str| AcmeError::new(ProblemType::InvalidContact, why.to_owned());
        if url.is_empty() || url.len() > MAX_CONTACT_LEN || !url.is_ascii() {
            return Err(invalid(
                "a contact is a non-empty ASCII URL of at most 254 characters",
            ));
        }
        let Some(address) = url.strip_prefix("mailto:") else {
            return Err(AcmeError::new(
                ProblemType::UnsupportedContact,
                "only mailto: contacts are supported",
            ));
        };
        let plain = address
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@.-_+".contains(&b));
        let (local, domain) = address.split_once('@').unwrap_or(("", ""));
        if !plain
            || local.is_empty()
            || domain.is_empty()
            || domain.contains('@')
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
        {
            return Err(invalid(
                "a mailto: contact holds exactly one plain email address, without hfields",
            ));
        }
        out.push(url.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acme_a10_contacts() {
        let ok = json!(["mailto:ops@example.org", "mailto:a.b+c@mail.example.org"]);
        assert_eq!(parse_contacts(Some(&ok)).unwrap().len(), 2);
        for (bad, kind) in [
            (json!("mailto:a@example.org"), ProblemType::Malformed),
            (json!([1]), ProblemType::Malformed),
            (json!([""]), ProblemType::InvalidContact),
            (json!(["tel:+1555"]), ProblemType::UnsupportedContact),
            (json!(["mailto:"]), ProblemType::InvalidContact),
            (
                json!(["mailto:a@b@example.org"]),
                ProblemType::InvalidContact,
            ),
            (
                json!(["mailto:a@example.org?subject=x"]),
                ProblemType::InvalidContact,
            ),
            (
                json!(["mailto:a@example.org,b@example.org"]),
                ProblemType::InvalidContact,
            ),
            (json!(["mailto:ü@example.org"]), ProblemType::InvalidContact),
            (json!(["mailto:a@localhost"]), ProblemType::InvalidContact),
            (
                json!([format!("mailto:{}@example.org", "a".repeat(250))]),
                ProblemType::InvalidContact,
            ),
            (
                json!([
                    "mailto:a@x.org",
                    "mailto:b@x.org",
                    "mailto:c@x.org",
                    "mailto:d@x.org",
                    "mailto:e@x.org"
                ]),
                ProblemType::InvalidContact,
            ),
        ] {
            let e = parse_contacts(Some(&bad)).unwrap_err();
            assert_eq!(e.kind, kind, "{bad}");
        }
    }
}
