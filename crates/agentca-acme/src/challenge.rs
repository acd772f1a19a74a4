//! Responding to a challenge (RFC 8555 §7.5.1): the POST starts one validation in the
//! background and answers at once with the challenge `processing`; the result lands on the
//! authorization with compare-and-set, and failures count against the rate limits.

use std::sync::Arc;

use agentca_core::store::{
    AcmeAuthorization, AcmeAuthorizationStatus, AcmeChallengeStatus, StoreError, blocking_section,
};

use crate::error::{AcmeError, ProblemType, Result};
use crate::identifier::Identifier;
use crate::limits;
use crate::order::challenge_json;
use crate::reply::Reply;
use crate::service::{AcmeService, Authenticated, Links};
use crate::validation::{ChallengeType, Target};

impl AcmeService {
    /// POST to a challenge URL: `{}` starts validation, POST-as-GET reads it.
    pub(crate) fn challenge_request(
        self: &Arc<Self>,
        links: &Links,
        authz_id: &str,
        kind: &str,
        req: &Authenticated,
    ) -> Result<Reply> {
        let account = req.account()?;
        let authz = match self.current_authorization(authz_id, None)? {
            Some(a) if a.account_id == account.id => a,
            _ => return Err(AcmeError::not_found("challenge")),
        };
        let Some(index) = authz.challenges.iter().position(|c| c.kind == kind) else {
            return Err(AcmeError::not_found("challenge"));
        };
        let reply = |authz: &AcmeAuthorization| {
            Reply::ok(challenge_json(links, &authz.id, &authz.challenges[index]))
                .with_link(&links.authz(&authz.id), "up")
        };
        if req.is_post_as_get() {
            return Ok(reply(&authz));
        }
        // §7.5.1: the client posts an empty JSON object; nothing else means anything.
        req.json()?;
        // A challenge left `processing` by a validation that no longer runs (a restart) may be
        // retried; one that is running here is not started twice.
        let in_flight = self
            .validating
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&authz.id);
        let startable = match authz.challenges[index].status {
            AcmeChallengeStatus::Pending => true,
            AcmeChallengeStatus::Processing => !in_flight,
            _ => false,
        };
        if authz.status != AcmeAuthorizationStatus::Pending || !startable {
            return Ok(reply(&authz));
        }
        let agent = self
            .store()
            .agent(&account.agent_id)?
            .ok_or_else(|| AcmeError::unauthorized("the account's agent no longer exists"))?;
        let challenge_type = match kind {
            "http-01" => ChallengeType::Http01,
            "dns-01" => ChallengeType::Dns01,
            "tls-alpn-01" => ChallengeType::TlsAlpn01,
            _ => return Err(AcmeError::not_found("challenge")),
        };
        let target = match Identifier::from_record(&authz.identifier) {
            Some(Identifier::Dns(name)) => Target::Dns(name),
            Some(Identifier::Ip(ip)) => Target::Ip(ip),
            _ => return Err(AcmeError::malformed("this identifier has no challenges")),
        };
        // The failure this attempt may be is counted now, before it starts, and given back
        // unless it is one: concurrent attempts cannot all pass a limit one failure from full.
        let policy_limits = self.authority.policy_of(&agent)?.rate_limits();
        let failures = limits::failed_validations(&policy_limits, &account.id, &agent.id);
        let now = Self::now();
        limits::take(self.store(), &failures, now)?;

        let mut processing = authz.clone();
        processing.challenges[index].status = AcmeChallengeStatus::Processing;
        match self
            .store()
            .update_acme_authorization(&processing, AcmeAuthorizationStatus::Pending)
        {
            Ok(()) => {}
            Err(StoreError::Conflict { .. }) => {
                limits::give_back(self.store(), &failures, now);
                let current = self
                    .store()
                    .acme_authorization(authz_id)?
                    .ok_or_else(|| AcmeError::not_found("challenge"))?;
                return Ok(reply(&current));
            }
            Err(e) => {
                limits::give_back(self.store(), &failures, now);
                return Err(e.into());
            }
        }
        let first = self
            .validating
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(authz.id.clone());
        if !first {
            limits::give_back(self.store(), &failures, now);
        } else {
            let token = authz.challenges[index].token.clone();
            let key_authorization = format!("{token}.{}", account.thumbprint);
            let service = self.clone();
            let authz_id = authz.id.clone();
            self.runtime.spawn(async move {
                let outcome = service
                    .validator
                    .validate(challenge_type, &target, &token, &key_authorization)
                    .await;
                let finisher = service.clone();
                let done = tokio::task::spawn_blocking(move || {
                    blocking_section(|| {
                        finisher.finish_validation(&authz_id, index, outcome, &failures)
                    })
                })
                .await;
                match done {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "recording a validation failed"),
                    Err(e) => tracing::error!(error = %e, "a validation task failed"),
                }
            });
        }
        // §8.2: tell the client when to look again; validations take about a second.
        Ok(reply(&processing).with_retry_after(std::time::Duration::from_secs(1)))
    }

    fn finish_validation(
        &self,
        authz_id: &str,
        index: usize,
        outcome: std::result::Result<
            crate::validation::ValidationRecord,
            crate::validation::ValidationFailure,
        >,
        failures: &[limits::Limit],
    ) -> Result<()> {
        // A failure keeps the units taken when the attempt started. A success gives them back
        // before it is recorded, so a client that sees the result can count on them.
        if outcome.is_ok() {
            limits::give_back(self.store(), failures, Self::now());
        }
        let result = self.record_validation(authz_id, index, &outcome);
        self.validating
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(authz_id);
        result
    }

    fn record_validation(
        &self,
        authz_id: &str,
        index: usize,
        outcome: &std::result::Result<
            crate::validation::ValidationRecord,
            crate::validation::ValidationFailure,
        >,
    ) -> Result<()> {
        for _ in 0..4 {
            let Some(authz) = self.store().acme_authorization(authz_id)? else {
                return Ok(());
            };
            if authz.status != AcmeAuthorizationStatus::Pending {
                return Ok(());
            }
            let mut updated = authz.clone();
            let Some(challenge) = updated.challenges.get_mut(index) else {
                return Ok(());
            };
            match outcome {
                Ok(record) => {
                    challenge.status = AcmeChallengeStatus::Valid;
                    challenge.validated = Some(Self::now());
                    challenge.validation_record = Some(serde_json::json!([record]).to_string());
                    updated.status = AcmeAuthorizationStatus::Valid;
                }
                Err(failure) => {
                    challenge.status = AcmeChallengeStatus::Invalid;
                    let problem = AcmeError::new(
                        ProblemType::from_name(failure.problem_type()),
                        failure.detail().to_owned(),
                    );
                    challenge.error = Some(problem.to_problem().to_string());
                    if let Some(record) = failure.record() {
                        challenge.validation_record = Some(serde_json::json!([record]).to_string());
                    }
                    // §7.1.6: one failed challenge makes the authorization invalid.
                    updated.status = AcmeAuthorizationStatus::Invalid;
                }
            }
            match self
                .store()
                .update_acme_authorization(&updated, AcmeAuthorizationStatus::Pending)
            {
                Ok(()) => return Ok(()),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}
