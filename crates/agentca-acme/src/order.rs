//! Orders and authorizations (RFC 8555 §7.4, §7.5): creation with pre-authorization, lazy
//! state updates, finalize (exactly one certificate per order), and certificate download.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use agentca_core::csr::CertificateRequest;
use agentca_core::issuer::{IssueRequest, StagedIssuance};
use agentca_core::store::{
    AcmeAccount, AcmeAuthorization, AcmeAuthorizationStatus, AcmeChallenge, AcmeChallengeStatus,
    AcmeOrder, AcmeOrderStatus, CertificateRecord, EnrollmentMethod, Serial, StoreError,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::ari::CertId;
use crate::error::{AcmeError, ProblemType, Result};
use crate::identifier::{Identifier, parse_identifiers};
use crate::jose::spki_thumbprint;
use crate::limits;
use crate::reply::{Body, Reply};
use crate::service::{AcmeService, Authenticated, Links, random_id, rfc3339};

/// How long a client is asked to wait before polling a processing order again.
const PROCESSING_RETRY: Duration = Duration::from_secs(1);

/// How long an order may stay `processing` before it counts as abandoned. A finalize takes
/// milliseconds; this only has to outlast a very slow disk.
const STALE_PROCESSING: time::Duration = time::Duration::minutes(2);

/// What [`AcmeService::finalize`] leaves to do.
pub(crate) enum Finalized {
    /// The answer is ready (a retried or lost race, or an order not ready).
    Answered(Reply),
    /// A certificate is staged; answer after
    /// [`agentca_core::issuer::Authority::commit_staged`] reports.
    Issuing(Box<(StagedIssuance, PendingFinalize)>),
}

/// A finalize waiting for its certificate to become durable.
pub(crate) struct PendingFinalize {
    /// The order as it was, ready, before this finalize took it.
    ready: AcmeOrder,
    /// The order as stored, valid with the certificate; `None` if that update failed.
    committed: Option<AcmeOrder>,
}

impl AcmeService {
    /// POST newOrder (§7.4).
    pub(crate) fn new_order(&self, links: &Links, req: &Authenticated) -> Result<Reply> {
        let account = req.account()?;
        let payload = req.json()?;
        for refused in ["notBefore", "notAfter"] {
            if payload.contains_key(refused) {
                return Err(AcmeError::malformed(format!(
                    "{refused} is not supported: the agent's policy sets the certificate lifetime"
                )));
            }
        }
        let identifiers = parse_identifiers(payload.get("identifiers"), &account.agent_id)?;
        let agent = match req.agent_read() {
            Some(agent) => agent,
            None => self.store().agent(&account.agent_id)?,
        }
        .ok_or_else(|| AcmeError::unauthorized("the account's agent no longer exists"))?;
        if agent.disabled {
            return Err(AcmeError::unauthorized(format!(
                "agent {} is disabled",
                agent.id
            )));
        }
        let policy = self.authority.policy_of(&agent)?;
        policy.check_method(EnrollmentMethod::Acme)?;
        let now = Self::now();
        let replaces = match payload.get("replaces") {
            None => None,
            Some(Value::String(id)) => Some(self.check_replaces(account, id, &identifiers)?),
            Some(_) => return Err(AcmeError::malformed("replaces must be a string")),
        };
        // An IP literal that validation may not connect to is refused now, before any socket
        // (ACME-O6), unless the policy pre-authorizes it (then nothing connects at all).
        // The policy is asked once per distinct identifier (ACME-O1).
        let preauthorized = identifiers
            .iter()
            .map(|identifier| match identifier {
                Identifier::Uri(_) => Ok(true),
                Identifier::Dns(name) => self.authority.dns_preauthorized(&agent, name),
                Identifier::Ip(ip) => self.authority.ip_preauthorized(&agent, *ip),
            })
            .collect::<agentca_core::Result<Vec<bool>>>()?;
        let addresses = crate::validation::AddressPolicy::new(self.config.validation.allow.clone());
        let mut refused = Vec::new();
        for (identifier, preauthorized) in identifiers.iter().zip(&preauthorized) {
            if let Identifier::Ip(ip) = identifier
                && !preauthorized
                && let Err(why) = addresses.check(*ip)
            {
                refused.push(crate::error::Subproblem {
                    kind: crate::error::problem_urn(ProblemType::RejectedIdentifier),
                    detail: why.to_string(),
                    identifier: identifier.to_json(),
                });
            }
        }
        if !refused.is_empty() {
            return Err(AcmeError::new(
                ProblemType::RejectedIdentifier,
                "validation may not connect to these addresses",
            )
            .with_subproblems(refused));
        }
        // Last of the checks, so that a refused request spends nothing; the store call that
        // makes the order gives the units back if it refuses.
        let order_limits = limits::new_orders(&policy.rate_limits(), &account.id, &agent.id);
        limits::take(self.store(), &order_limits, now)?;

        let expires = now + self.config.order_lifetime;
        let order_id = random_id()?;
        let mut authorizations = Vec::with_capacity(identifiers.len());
        for (identifier, &preauthorized) in identifiers.iter().zip(&preauthorized) {
            authorizations.push(AcmeAuthorization {
                id: random_id()?,
                account_id: account.id.clone(),
                identifier: identifier.to_record(),
                status: if preauthorized {
                    AcmeAuthorizationStatus::Valid
                } else {
                    AcmeAuthorizationStatus::Pending
                },
                expires,
                challenges: if preauthorized {
                    Vec::new()
                } else {
                    challenges_for(identifier)?
                },
                order_id: Some(order_id.clone()),
            });
        }
        let ready = authorizations
            .iter()
            .all(|a| a.status == AcmeAuthorizationStatus::Valid);
        let order = AcmeOrder {
            id: order_id,
            account_id: account.id.clone(),
            agent_id: agent.id.clone(),
            status: if ready {
                AcmeOrderStatus::Ready
            } else {
                AcmeOrderStatus::Pending
            },
            identifiers: identifiers.iter().map(Identifier::to_record).collect(),
            authorizations: authorizations.iter().map(|a| a.id.clone()).collect(),
            expires,
            created_at: now,
            certificate: None,
            replaces,
            error: None,
            processing_since: None,
            preauthorized: identifiers
                .iter()
                .zip(&preauthorized)
                .filter(|(identifier, pre)| **pre && !matches!(identifier, Identifier::Uri(_)))
                .map(|(identifier, _)| identifier.to_record())
                .collect(),
        };
        if let Err(e) = self.store().insert_acme_order(&order, &authorizations, now) {
            limits::give_back(self.store(), &order_limits, now);
            return Err(match e {
                StoreError::Conflict { .. } => AcmeError::new(
                    ProblemType::AlreadyReplaced,
                    "the certificate named in replaces is already being replaced by another order",
                ),
                e => e.into(),
            });
        }
        Ok(Reply::json(201, order_json(links, &order)).with_location(links.order(&order.id)))
    }

    /// RFC 9773 §5: the certificate must be ours, issued to this account's agent, share an
    /// identifier with the new order, and not be replaced already.
    fn check_replaces(
        &self,
        account: &AcmeAccount,
        cert_id: &str,
        identifiers: &[Identifier],
    ) -> Result<String> {
        let id = CertId::parse(cert_id)?;
        if id.key_identifier != self.authority.ca().key_identifier() {
            return Err(AcmeError::malformed(
                "replaces names a certificate of another CA",
            ));
        }
        let record = id
            .serial
            .map(|s| self.store().serial(&s))
            .transpose()?
            .flatten();
        let Some(agentca_core::store::SerialEntry::Issued(record)) = record else {
            return Err(
                AcmeError::malformed("replaces names an unknown certificate").with_status(404),
            );
        };
        if record.intent.agent_id != account.agent_id {
            return Err(AcmeError::unauthorized(
                "replaces names a certificate of another agent",
            ));
        }
        let names = certificate_identifiers(&record.der, &record.intent.agent_id);
        if !identifiers.iter().any(|i| names.contains(i)) {
            return Err(AcmeError::malformed(
                "the order shares no identifier with the certificate it replaces",
            ));
        }
        if let Some(other) = self.store().acme_replacement(cert_id)? {
            // An order's stored status moves only when it is read: the claimant is brought up
            // to date first, so that one whose authorization failed, never polled again by a
            // client that gave up, stops blocking the replacement (RFC 9773 §5).
            let other = match other.status {
                AcmeOrderStatus::Pending | AcmeOrderStatus::Ready => self.refresh_order(other)?,
                _ => other,
            };
            if other.status == AcmeOrderStatus::Valid {
                return Err(AcmeError::new(
                    ProblemType::AlreadyReplaced,
                    "the certificate was already replaced",
                ));
            }
        }
        Ok(cert_id.to_owned())
    }

    /// POST to an order URL (POST-as-GET).
    pub(crate) fn order_request(
        &self,
        links: &Links,
        id: &str,
        req: &Authenticated,
    ) -> Result<Reply> {
        req.expect_post_as_get()?;
        let order = self.owned_order(req, id)?;
        let order = self.refresh_order(order)?;
        let mut reply = Reply::ok(order_json(links, &order)).with_location(links.order(id));
        if order.status == AcmeOrderStatus::Processing {
            reply = reply.with_retry_after(PROCESSING_RETRY);
        }
        Ok(reply)
    }

    /// POST to an account's orders URL (§7.1.2.1): its orders that are still usable.
    pub(crate) fn orders_list(
        &self,
        links: &Links,
        account_id: &str,
        req: &Authenticated,
    ) -> Result<Reply> {
        req.expect_post_as_get()?;
        let account = req.account()?;
        if account.id != account_id {
            return Err(AcmeError::unauthorized(
                "an account can only list its own orders",
            ));
        }
        let now = Self::now();
        let mut urls = Vec::new();
        for id in self
            .store()
            .acme_orders_of_account(account_id)?
            .iter()
            .rev()
        {
            if let Some(order) = self.store().acme_order(id)?
                && order.expires > now
                && matches!(
                    order.status,
                    AcmeOrderStatus::Pending | AcmeOrderStatus::Ready | AcmeOrderStatus::Processing
                )
            {
                urls.push(links.order(id));
                if urls.len() == 1000 {
                    break;
                }
            }
        }
        Ok(Reply::ok(json!({ "orders": urls })))
    }

    /// The order `id` of the request's URL, if it is the requesting account's.
    pub(crate) fn owned_order(&self, req: &Authenticated, id: &str) -> Result<AcmeOrder> {
        let account = req.account()?;
        let order = match req.order_read() {
            Some(order) => order,
            None => self.store().acme_order(id)?,
        };
        match order {
            Some(order) if order.account_id == account.id => Ok(order),
            _ => Err(AcmeError::not_found("order")),
        }
    }

    /// Brings a stored order up to date: expired, failed, or ready once every authorization
    /// is valid. Persisted with compare-and-set, so concurrent readers agree.
    pub(crate) fn refresh_order(&self, order: AcmeOrder) -> Result<AcmeOrder> {
        self.move_order(order, |order| {
            let now = Self::now();
            Ok(match order.status {
                // Its finalize is gone: a crash after a flush that caught `processing` and
                // before the certificate's. Nothing was issued for it (the certificate and the
                // order's `valid` are made durable together), so it may be finalized again.
                AcmeOrderStatus::Processing
                    if order
                        .processing_since
                        .is_some_and(|since| since + STALE_PROCESSING <= now) =>
                {
                    Some((AcmeOrderStatus::Ready, None))
                }
                AcmeOrderStatus::Pending | AcmeOrderStatus::Ready if order.expires <= now => {
                    Some((
                        AcmeOrderStatus::Invalid,
                        Some("the order expired".to_owned()),
                    ))
                }
                AcmeOrderStatus::Pending => {
                    let mut all_valid = true;
                    let mut failed = None;
                    for id in &order.authorizations {
                        let authz = self.current_authorization(id, None)?;
                        match authz.map(|a| a.status) {
                            Some(AcmeAuthorizationStatus::Valid) => {}
                            Some(AcmeAuthorizationStatus::Pending) => all_valid = false,
                            _ => {
                                failed = Some(format!("authorization {id} is not valid"));
                                break;
                            }
                        }
                    }
                    match failed {
                        Some(why) => Some((AcmeOrderStatus::Invalid, Some(why))),
                        None if all_valid => Some((AcmeOrderStatus::Ready, None)),
                        None => None,
                    }
                }
                _ => None,
            })
        })
    }

    /// Moves an order to the state `next` names for it (a status, and why for an invalid
    /// one), by compare-and-set: on a conflict the stored order is read again and `next` asked
    /// again, a few times. Returns the order as it then stands.
    fn move_order(
        &self,
        mut order: AcmeOrder,
        next: impl Fn(&AcmeOrder) -> Result<Option<(AcmeOrderStatus, Option<String>)>>,
    ) -> Result<AcmeOrder> {
        for _ in 0..4 {
            let Some((status, why)) = next(&order)? else {
                return Ok(order);
            };
            let mut updated = order.clone();
            updated.status = status;
            if status != AcmeOrderStatus::Processing {
                updated.processing_since = None;
            }
            if let Some(why) = why {
                updated.error = Some(AcmeError::unauthorized(why).to_problem().to_string());
            }
            match self.store().update_acme_order(&updated, order.status) {
                Ok(()) => return Ok(updated),
                Err(StoreError::Conflict { .. }) => {
                    order = self
                        .store()
                        .acme_order(&order.id)?
                        .ok_or_else(|| AcmeError::not_found("order"))?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(order)
    }

    /// An authorization with expiry applied (persisted).
    /// `read` is the authorization as the request's store call read it, if it did.
    pub(crate) fn current_authorization(
        &self,
        id: &str,
        read: Option<Option<AcmeAuthorization>>,
    ) -> Result<Option<AcmeAuthorization>> {
        let read = match read {
            Some(read) => read,
            None => self.store().acme_authorization(id)?,
        };
        let Some(authz) = read else {
            return Ok(None);
        };
        if authz.status == AcmeAuthorizationStatus::Pending && authz.expires <= Self::now() {
            let mut expired = authz.clone();
            expired.status = AcmeAuthorizationStatus::Expired;
            match self
                .store()
                .update_acme_authorization(&expired, AcmeAuthorizationStatus::Pending)
            {
                Ok(()) => return Ok(Some(expired)),
                Err(StoreError::Conflict { .. }) => {
                    return self.store().acme_authorization(id).map_err(Into::into);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Some(authz))
    }

    /// POST to an authorization URL: POST-as-GET, or `{"status":"deactivated"}` (§7.5.2).
    pub(crate) fn authz_request(
        &self,
        links: &Links,
        id: &str,
        req: &Authenticated,
    ) -> Result<Reply> {
        let account = req.account()?;
        let authz = match self.current_authorization(id, req.authorization_read())? {
            Some(a) if a.account_id == account.id => a,
            _ => return Err(AcmeError::not_found("authorization")),
        };
        if req.is_post_as_get() {
            return Ok(Reply::ok(authz_json(links, &authz)));
        }
        let payload = req.json()?;
        match payload.get("status") {
            Some(Value::String(s)) if s == "deactivated" => {}
            _ => {
                return Err(AcmeError::malformed(
                    "an authorization can only be deactivated",
                ));
            }
        }
        if !matches!(
            authz.status,
            AcmeAuthorizationStatus::Pending | AcmeAuthorizationStatus::Valid
        ) {
            return Err(AcmeError::malformed(
                "only a pending or valid authorization can be deactivated",
            ));
        }
        // The order goes first: once the client is told the authority is given up, no
        // finalize may still use it (§7.5.2), and a crash between the two writes leaves a
        // dead order, not a usable one.
        self.give_up_order_of(&authz)?;
        let mut updated = authz.clone();
        updated.status = AcmeAuthorizationStatus::Deactivated;
        self.store()
            .update_acme_authorization(&updated, authz.status)
            .map_err(|e| match e {
                StoreError::Conflict { .. } => {
                    AcmeError::malformed("the authorization changed meanwhile; fetch it again")
                }
                e => e.into(),
            })?;
        Ok(Reply::ok(authz_json(links, &updated)))
    }

    /// Moves the order an authorization belongs to from pending or ready to invalid (RFC 8555
    /// §7.1.6: an authorization that is no longer valid fails its order). An order already
    /// finalized is left as it is: its certificate was issued while the authority held.
    fn give_up_order_of(&self, authz: &AcmeAuthorization) -> Result<()> {
        let Some(order) = self.order_of_authorization(authz)? else {
            return Ok(());
        };
        let open = |order: &AcmeOrder| {
            matches!(
                order.status,
                AcmeOrderStatus::Pending | AcmeOrderStatus::Ready
            )
        };
        let why = format!("authorization {} was deactivated", authz.id);
        let order = self.move_order(order, |order| {
            Ok(open(order).then(|| (AcmeOrderStatus::Invalid, Some(why.clone()))))
        })?;
        if open(&order) {
            return Err(AcmeError::malformed(
                "the authorization's order kept changing; try again",
            ));
        }
        Ok(())
    }

    /// The order an authorization was made for. Records stored before authorizations named
    /// their order are found among the account's orders, newest first.
    fn order_of_authorization(&self, authz: &AcmeAuthorization) -> Result<Option<AcmeOrder>> {
        let holds = |order: &AcmeOrder| {
            order.account_id == authz.account_id && order.authorizations.contains(&authz.id)
        };
        if let Some(id) = &authz.order_id {
            return Ok(self.store().acme_order(id)?.filter(holds));
        }
        for id in self
            .store()
            .acme_orders_of_account(&authz.account_id)?
            .iter()
            .rev()
        {
            if let Some(order) = self.store().acme_order(id)?.filter(holds) {
                return Ok(Some(order));
            }
        }
        Ok(None)
    }

    /// POST finalize (§7.4): checks the CSR against the order, then issues exactly once.
    /// Finalize (§7.4): the checks, then the one finalize that moves the order from ready to
    /// processing stages the issuance; the caller waits for it with
    /// [`AcmeService::finalize_committed`].
    pub(crate) fn finalize(
        &self,
        links: &Links,
        id: &str,
        req: &Authenticated,
    ) -> Result<Finalized> {
        let order = self.refresh_order(self.owned_order(req, id)?)?;
        match order.status {
            AcmeOrderStatus::Ready => {}
            // A retry of a finalize that already won (ACME-O4) gets the same order back.
            AcmeOrderStatus::Valid | AcmeOrderStatus::Processing => {
                return Ok(Finalized::Answered(self.order_reply(links, &order)));
            }
            AcmeOrderStatus::Pending => {
                return Err(AcmeError::new(
                    ProblemType::OrderNotReady,
                    "the order's authorizations are not all valid yet",
                ));
            }
            _ => {
                return Err(AcmeError::new(
                    ProblemType::OrderNotReady,
                    "the order is invalid; create a new one",
                ));
            }
        }
        let payload = req.json()?;
        let Some(Value::String(csr_b64)) = payload.get("csr") else {
            return Err(AcmeError::malformed("finalize needs csr (base64url DER)"));
        };
        let der = URL_SAFE_NO_PAD
            .decode(csr_b64)
            .map_err(|_| AcmeError::new(ProblemType::BadCsr, "csr is not unpadded base64url"))?;
        let csr = CertificateRequest::from_der(&der)
            .map_err(|e| AcmeError::new(ProblemType::BadCsr, e.to_string()))?;
        let identifiers: Vec<Identifier> = order
            .identifiers
            .iter()
            .filter_map(Identifier::from_record)
            .collect();
        check_csr_names(&csr, &identifiers, &order.agent_id)?;
        // The issuer refuses a key some account uses (RFC 8555 §11.1), in the read that
        // fetches the agent.
        let csr_key_thumbprint = spki_thumbprint(csr.spki_der());

        // The one finalize that moves ready → processing issues; the others see its result.
        // The same store call reads what the issuer checks the request against, and reserves
        // the certificate's serial.
        let mut processing = order.clone();
        processing.status = AcmeOrderStatus::Processing;
        processing.processing_since = Some(Self::now());
        let reservation = self.authority.order_reservation(&order.agent_id, &csr)?;
        let claim = match self.store().claim_acme_order_for_issuance(
            &processing,
            AcmeOrderStatus::Ready,
            &order.agent_id,
            csr.key_sha256(),
            csr_key_thumbprint.as_deref(),
            Some(&reservation),
        ) {
            Ok(claim) => claim,
            Err(StoreError::Conflict { .. }) => {
                let current = self
                    .store()
                    .acme_order(id)?
                    .ok_or_else(|| AcmeError::not_found("order"))?;
                return Ok(Finalized::Answered(self.order_reply(links, &current)));
            }
            Err(e) => return Err(e.into()),
        };
        // Only what a challenge proved skips the issuer's policy check: a name that was
        // pre-authorized is checked again, so that a policy changed since the order was made
        // is the one that decides.
        let proven: Vec<&Identifier> = identifiers
            .iter()
            .filter(|i| !order.preauthorized.contains(&i.to_record()))
            .collect();
        let dns: Vec<String> = proven
            .iter()
            .filter_map(|i| i.dns())
            .map(str::to_owned)
            .collect();
        let ips: Vec<IpAddr> = proven.iter().filter_map(|i| i.ip()).collect();
        let request = IssueRequest {
            agent_id: &order.agent_id,
            csr: &csr,
            method: EnrollmentMethod::Acme,
            lifetime: None,
            validated_dns: &dns,
            validated_ips: &ips,
            csr_key_thumbprint: csr_key_thumbprint.as_deref(),
        };
        let completed = |serial| {
            let mut valid = processing.clone();
            valid.status = AcmeOrderStatus::Valid;
            valid.certificate = Some(serial);
            valid
        };
        let reserved = claim.reserved.then_some(reservation);
        let staged =
            self.authority
                .stage_issue_for_order(&request, claim.facts, reserved, |record| {
                    completed(record.intent.serial)
                });
        match staged {
            Ok(staged) => {
                let committed = staged
                    .recorded_more()
                    .then(|| completed(staged.record().intent.serial));
                Ok(Finalized::Issuing(Box::new((
                    staged,
                    PendingFinalize {
                        ready: order,
                        committed,
                    },
                ))))
            }
            Err(e) => {
                self.reopen(&order);
                Err(e.into())
            }
        }
    }

    /// The end of a finalize whose issuance was staged: `durable` is what making it durable
    /// gave.
    pub(crate) fn finalize_committed(
        &self,
        links: &Links,
        pending: PendingFinalize,
        durable: agentca_core::Result<CertificateRecord>,
    ) -> Result<Reply> {
        match (durable, pending.committed) {
            (Ok(record), Some(valid)) => {
                self.recent
                    .insert(record.intent.serial, &valid.account_id, &record.der);
                self.events.issued(&record);
                Ok(self.order_reply(links, &valid))
            }
            (Ok(_), None) => Err(AcmeError::internal("issued without recording the order")),
            (Err(e), committed) => {
                // The order update alone failed, leaving a stored, reconcilable certificate:
                // the order is ready again, so the client can finalize once more.
                if committed.is_none() {
                    self.reopen(&pending.ready);
                }
                Err(e.into())
            }
        }
    }

    /// Processing → ready again after a refusal, so the client can fix its CSR and retry.
    fn reopen(&self, ready: &AcmeOrder) {
        let _ = self
            .store()
            .update_acme_order(ready, AcmeOrderStatus::Processing);
    }

    fn order_reply(&self, links: &Links, order: &AcmeOrder) -> Reply {
        let mut reply = Reply::ok(order_json(links, order)).with_location(links.order(&order.id));
        if order.status == AcmeOrderStatus::Processing {
            reply = reply.with_retry_after(PROCESSING_RETRY);
        }
        reply
    }

    /// POST-as-GET to a certificate URL (§7.4.2): the leaf and the issuing CA, PEM, for the
    /// account whose order produced it.
    pub(crate) fn certificate_request(
        &self,
        links: &Links,
        serial: &str,
        req: &Authenticated,
    ) -> Result<Reply> {
        req.expect_post_as_get()?;
        let account = req.account()?;
        let serial: Serial = serial
            .parse()
            .map_err(|_| AcmeError::not_found("certificate"))?;
        let der = match self.recent.get(&serial, &account.id) {
            Some(der) => der,
            None => match self.store().acme_certificate(&serial)? {
                Some((order, record)) if order.account_id == account.id => record.der.into(),
                _ => return Err(AcmeError::not_found("certificate")),
            },
        };
        let chain = format!(
            "{}{}",
            pem_block(&der),
            pem_block(self.authority.ca().cert_der())
        );
        Ok(Reply {
            status: 200,
            body: Body::PemChain(chain),
            location: None,
            links: Vec::new(),
            retry_after: None,
        }
        .with_link(&links.issuer(), "up"))
    }

    /// GET the issuing CA certificate (the `up` link of every chain), DER.
    pub(crate) fn issuer_certificate(&self) -> Reply {
        Reply {
            status: 200,
            body: Body::Der(
                self.authority.ca().cert_der().to_vec(),
                "application/pkix-cert",
            ),
            location: None,
            links: Vec::new(),
            retry_after: None,
        }
    }
}

fn challenges_for(identifier: &Identifier) -> Result<Vec<AcmeChallenge>> {
    let kinds: &[&str] = match identifier {
        Identifier::Dns(_) => &["http-01", "dns-01", "tls-alpn-01"],
        Identifier::Ip(_) => &["http-01", "tls-alpn-01"],
        Identifier::Uri(_) => &[],
    };
    kinds
        .iter()
        .map(|kind| {
            Ok(AcmeChallenge {
                kind: (*kind).to_owned(),
                token: random_id()?,
                status: AcmeChallengeStatus::Pending,
                validated: None,
                error: None,
                validation_record: None,
            })
        })
        .collect()
}

/// RFC 8555 §7.4: the CSR asks for exactly the order's DNS and IP names; its URI names may only
/// be the agent (present when the order lists it); a subject CN must repeat one of the names.
fn check_csr_names(csr: &CertificateRequest, order: &[Identifier], agent_id: &str) -> Result<()> {
    let names = csr.names();
    let want_dns: BTreeSet<&str> = order.iter().filter_map(Identifier::dns).collect();
    let want_ips: BTreeSet<IpAddr> = order.iter().filter_map(Identifier::ip).collect();
    let got_dns: BTreeSet<&str> = names.dns.iter().map(String::as_str).collect();
    let got_ips: BTreeSet<IpAddr> = names.ips.iter().copied().collect();
    let bad = |why: &str| Err(AcmeError::new(ProblemType::BadCsr, why.to_owned()));
    if want_dns != got_dns {
        return bad("the CSR's DNS names are not exactly the order's dns identifiers");
    }
    if want_ips != got_ips {
        return bad("the CSR's IP addresses are not exactly the order's ip identifiers");
    }
    if names.uris.iter().any(|u| u != agent_id) {
        return bad("the CSR asks for a URI name other than the account's agent ID");
    }
    let ordered_uri = order.iter().any(|i| matches!(i, Identifier::Uri(_)));
    if ordered_uri && names.uris.is_empty() {
        return bad("the order lists the agent ID, but the CSR does not ask for it");
    }
    for cn in &names.common_names {
        let lower = cn.to_ascii_lowercase();
        let matches = want_dns.contains(lower.as_str())
            || cn.parse::<IpAddr>().is_ok_and(|ip| want_ips.contains(&ip))
            || cn == agent_id;
        if !matches {
            return bad("the CSR's subject commonName is not one of the order's identifiers");
        }
    }
    Ok(())
}

/// The identifiers a certificate of ours covers: its DNS and IP names and its agent.
fn certificate_identifiers(der: &[u8], agent_id: &str) -> Vec<Identifier> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let mut out = vec![Identifier::Uri(agent_id.to_owned())];
    if let Ok((_, cert)) = X509Certificate::from_der(der)
        && let Ok(Some(san)) = cert.subject_alternative_name()
    {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) => out.push(Identifier::Dns(n.to_ascii_lowercase())),
                GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => <[u8; 4]>::try_from(*b).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*b).ok().map(IpAddr::from),
                        _ => None,
                    };
                    out.extend(ip.map(Identifier::Ip));
                }
                _ => {}
            }
        }
    }
    out
}

fn pem_block(der: &[u8]) -> String {
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn status_name<T: serde::Serialize>(status: T) -> Value {
    serde_json::to_value(status).unwrap_or(Value::Null)
}

/// The order object (§7.1.3).
pub(crate) fn order_json(links: &Links, order: &AcmeOrder) -> Value {
    let mut doc = json!({
        "status": status_name(order.status),
        "expires": rfc3339(order.expires),
        "identifiers": order.identifiers.iter().map(|i| json!({"type": i.kind, "value": i.value})).collect::<Vec<_>>(),
        "authorizations": order.authorizations.iter().map(|a| links.authz(a)).collect::<Vec<_>>(),
        "finalize": links.finalize(&order.id),
    });
    if let Some(serial) = order.certificate {
        doc["certificate"] = json!(links.certificate(&serial.to_hex()));
    }
    if let Some(replaces) = &order.replaces {
        doc["replaces"] = json!(replaces);
    }
    if let Some(error) = &order.error {
        doc["error"] = serde_json::from_str(error).unwrap_or(Value::Null);
    }
    doc
}

/// The authorization object (§7.1.4), with its challenges.
pub(crate) fn authz_json(links: &Links, authz: &AcmeAuthorization) -> Value {
    let identifier = &authz.identifier;
    json!({
        "identifier": {"type": identifier.kind, "value": identifier.value},
        "status": status_name(authz.status),
        "expires": rfc3339(authz.expires),
        "challenges": authz.challenges.iter().map(|c| challenge_json(links, &authz.id, c)).collect::<Vec<_>>(),
    })
}

/// The challenge object (§8).
pub(crate) fn challenge_json(links: &Links, authz_id: &str, challenge: &AcmeChallenge) -> Value {
    let mut doc = json!({
        "type": challenge.kind,
        "url": links.challenge(authz_id, &challenge.kind),
        "status": status_name(challenge.status),
        "token": challenge.token,
    });
    if let Some(t) = challenge.validated {
        doc["validated"] = json!(rfc3339(t));
    }
    if let Some(e) = &challenge.error {
        doc["error"] = serde_json::from_str(e).unwrap_or(Value::Null);
    }
    if let Some(r) = &challenge.validation_record {
        doc["validationRecord"] = serde_json::from_str(r).unwrap_or(Value::Null);
    }
    doc
}
