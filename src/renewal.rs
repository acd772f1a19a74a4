//! The mass-renewal drill (BR §4.9.1.1 deadlines, BR §5.7.1.2 mass-revocation plans): ask a
//! cohort of agents to renew now, then revoke what they replaced and only that.
//!
//! `cert renew-early` records the request on each agent; the ACME `renewalInfo` of every
//! certificate issued to them before it then offers a window that is already open, which
//! renewal clients (`agentca renew --daemon`, certbot, lego with ARI) act on at their next
//! poll. `revoke --replaced` revokes certificates that have a successor
//! ([`agentca_core::replacement`]) and lists those of the cohort that are still waiting for
//! one.

use std::collections::BTreeMap;

use agentca_core::ca::Ca;
use agentca_core::policy::{format_duration, parse_duration};
use agentca_core::replacement::Successions;
use agentca_core::store::{
    AgentRecord, CertificateFilter, CertificateRecord, EarlyRenewal, EnrollmentMethod,
    RevocationReason, change_agent,
};
use agentca_core::{Error, Result};
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

use crate::operations::{Backend, Reply, RevokeMode, cert_json, policy_name, reply, rfc3339};

/// The longest span an early renewal may be spread over.
const LONGEST_SPAN: Duration = Duration::days(7);

/// Which agents an operation is about.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Cohort {
    /// These agents.
    Agents(Vec<String>),
    /// The agents whose effective policy has this name.
    Policy(String),
    /// Every agent.
    All,
}

impl Cohort {
    /// The agents selected, all of which exist (an unknown one named explicitly is an error
    /// before anything changes), ordered by ID.
    fn agents(&self, ca: &Ca) -> Result<Vec<AgentRecord>> {
        let store = ca.store();
        match self {
            Self::Agents(ids) => {
                let mut agents = Vec::with_capacity(ids.len());
                for id in ids {
                    agents.push(
                        store
                            .agent(id)?
                            .ok_or_else(|| Error::UnknownAgent(id.clone()))?,
                    );
                }
                agents.sort_by(|a, b| a.id.cmp(&b.id));
                agents.dedup_by(|a, b| a.id == b.id);
                Ok(agents)
            }
            Self::Policy(name) => {
                if ca.policies().get(name).is_none() {
                    return Err(Error::InvalidArgument(format!(
                        "--policy {name:?}: no such policy"
                    )));
                }
                Ok(store
                    .agents()?
                    .into_iter()
                    .filter(|a| policy_name(ca, a) == *name)
                    .collect())
            }
            Self::All => Ok(store.agents()?),
        }
    }
}

/// The certificates of the selected agents, by agent. One listing of every certificate when
/// the cohort is large, one per agent when it names a few.
fn certificates_by_agent(
    ca: &Ca,
    cohort: &Cohort,
    agents: &[AgentRecord],
) -> Result<BTreeMap<String, Vec<CertificateRecord>>> {
    let store = ca.store();
    let mut by_agent: BTreeMap<String, Vec<CertificateRecord>> =
        agents.iter().map(|a| (a.id.clone(), Vec::new())).collect();
    match cohort {
        Cohort::Agents(_) => {
            for a in agents {
                let certs = store.certificates(&CertificateFilter {
                    agent_id: Some(a.id.clone()),
                })?;
                by_agent.insert(a.id.clone(), certs);
            }
        }
        Cohort::Policy(_) | Cohort::All => {
            for c in store.certificates(&CertificateFilter { agent_id: None })? {
                if let Some(list) = by_agent.get_mut(&c.intent.agent_id) {
                    list.push(c);
                }
            }
        }
    }
    Ok(by_agent)
}

/// `cert renew-early`: records on every selected agent that the certificates it holds now are
/// to be renewed within `within`.
pub(crate) fn renew_early(ca: &Ca, cohort: &Cohort, within: &str) -> Result<Reply> {
    let span =
        parse_duration(within).map_err(|e| Error::InvalidArgument(format!("--within: {e}")))?;
    if span < Duration::seconds(1) || span > LONGEST_SPAN {
        return Err(Error::InvalidArgument(format!(
            "--within {within}: between 1s and {}",
            format_duration(LONGEST_SPAN)
        )));
    }
    let request = EarlyRenewal {
        advised_at: OffsetDateTime::now_utc(),
        within_seconds: u32::try_from(span.whole_seconds()).unwrap_or(u32::MAX),
    };
    let agents = cohort.agents(ca)?;
    let store = ca.store();
    let mut advised = Vec::new();
    let mut skipped = Vec::new();
    for agent in &agents {
        if agent.disabled {
            // Nothing can be issued to it, so asking it to renew would only make it fail.
            skipped.push(agent.id.clone());
            continue;
        }
        if change_agent(store.as_ref(), &agent.id, |a| {
            a.early_renewal = Some(request)
        })?
        .is_some()
        {
            ca.audit().append(
                "agent.renewal-advised",
                json!({
                    "agent": agent.id,
                    "advised_at": rfc3339(request.advised_at),
                    "within": format_duration(span),
                }),
            )?;
            advised.push(agent.id.clone());
        }
    }
    store.commit()?;
    ca.audit().sync()?;

    let now = OffsetDateTime::now_utc();
    let certs = certificates_by_agent(ca, cohort, &agents)?;
    let mut to_replace = Vec::new();
    for id in &advised {
        for c in certs.get(id).into_iter().flatten() {
            if c.revocation.is_none() && c.intent.not_after > now && request.applies_to(c) {
                to_replace.push(c);
            }
        }
    }
    let without_ari = to_replace
        .iter()
        .filter(|c| c.intent.method != EnrollmentMethod::Acme)
        .count();
    let mut text = format!(
        "asked {} agent(s) to renew within {} of {}: {} valid certificate(s) to replace",
        advised.len(),
        format_duration(span),
        rfc3339(request.advised_at),
        to_replace.len()
    );
    if without_ari > 0 {
        text.push_str(&format!(
            "\n{without_ari} of them were not issued over ACME: their holders get no renewal \
             information and renew on their own schedule"
        ));
    }
    if !skipped.is_empty() {
        text.push_str(&format!(
            "\nskipped {} disabled agent(s): {}",
            skipped.len(),
            skipped.join(" ")
        ));
    }
    text.push_str(
        "\nclients learn of it at their next renewalInfo poll (its Retry-After); then run \
         agentca revoke --replaced",
    );
    Ok(reply(
        text,
        json!({
            "advised_at": rfc3339(request.advised_at),
            "within": format_duration(span),
            "agents": advised,
            "skipped_disabled": skipped,
            "to_replace": to_replace.iter().map(|c| c.intent.serial.to_hex()).collect::<Vec<_>>(),
            "not_acme": without_ari,
        }),
    ))
}

/// `revoke --replaced`: revokes the valid certificates of `agent` (or of every agent) that a
/// later one replaces, and lists those an early-renewal request covers that are still
/// waiting for their replacement.
pub(crate) fn revoke_replaced(
    backend: &dyn Backend,
    mode: RevokeMode,
    agent: Option<String>,
    reason: RevocationReason,
) -> Result<Reply> {
    let ca = backend.ca();
    let cohort = match agent {
        Some(id) => Cohort::Agents(vec![id]),
        None => Cohort::All,
    };
    let agents = cohort.agents(ca)?;
    let certs = certificates_by_agent(ca, &cohort, &agents)?;
    let now = OffsetDateTime::now_utc();
    let mut revoked: Vec<CertificateRecord> = Vec::new();
    let mut pairs: Vec<Value> = Vec::new();
    let mut waiting: Vec<&CertificateRecord> = Vec::new();
    let mut failure = None;
    'agents: for a in &agents {
        let Some(list) = certs.get(&a.id) else {
            continue;
        };
        let successions = Successions::new(list, now);
        // Decided on one reading, before anything is revoked, so that revoking an old
        // certificate cannot change what counts as the successor of another.
        let plan: Vec<(&CertificateRecord, Option<&CertificateRecord>)> = successions
            .valid()
            .map(|c| (c, successions.successor(c, reason)))
            .collect();
        for (old, successor) in plan {
            let Some(successor) = successor else {
                if a.early_renewal.is_some_and(|e| e.applies_to(old)) {
                    waiting.push(old);
                }
                continue;
            };
            match mode.revoke(backend, &old.intent.serial, reason) {
                Ok(all) => {
                    pairs.push(json!({
                        "serial": old.intent.serial.to_hex(),
                        "agent": old.intent.agent_id,
                        "replaced_by": successor.intent.serial.to_hex(),
                    }));
                    revoked.extend(all);
                }
                // Revoked concurrently by someone else: the goal is reached.
                Err(Error::AlreadyRevoked(_)) => {}
                Err(e) => {
                    failure = Some(e);
                    break 'agents;
                }
            }
        }
    }
    // Whatever was revoked is published before the reply, even when a later one failed.
    mode.published(backend, &revoked);
    if let Some(e) = failure {
        return Err(e);
    }
    let mut text = format!(
        "{} {} replaced certificate(s), reason {reason}",
        mode.verb(),
        pairs.len()
    );
    for p in &pairs {
        text.push_str(&format!(
            "\n  {} ({}) replaced by {}",
            p["serial"].as_str().unwrap_or_default(),
            p["agent"].as_str().unwrap_or_default(),
            p["replaced_by"].as_str().unwrap_or_default()
        ));
    }
    if !waiting.is_empty() {
        text.push_str(&format!(
            "\n{} certificate(s) asked to renew early have no replacement yet:",
            waiting.len()
        ));
        for c in &waiting {
            text.push_str(&format!(
                "\n  {} ({}) valid until {}",
                c.intent.serial,
                c.intent.agent_id,
                rfc3339(c.intent.not_after)
            ));
        }
    }
    Ok(mode.reply(
        text,
        json!({
            "reason": reason.name(),
            mode.key(): pairs,
            format!("{}_certificates", mode.key()): revoked.iter().map(|r| cert_json(r, false)).collect::<Vec<_>>(),
            "awaiting_replacement": waiting.iter().map(|c| cert_json(c, false)).collect::<Vec<_>>(),
        }),
    ))
}
