//! The ACME rate limits of an agent's policy: new orders and failed validations, each per
//! account and per agent, over an hour.
//!
//! A request takes from both of its limits in one store call, so one that the agent's limit
//! refuses spends nothing of its account's. Failed validations are counted before the attempt
//! (so that concurrent attempts cannot all pass a limit that only one more failure would
//! reach) and given back when the attempt does not fail.

use agentca_core::policy::RateLimits;
use agentca_core::store::{RateDecision, RateLimit, Store};
use time::OffsetDateTime;

use crate::error::{AcmeError, ProblemType, Result};

/// The window of every ACME limit.
const WINDOW: time::Duration = time::Duration::hours(1);

/// One limit, and how a refusal names it.
pub(crate) struct Limit {
    limit: RateLimit,
    what: &'static str,
}

impl Limit {
    fn new(key: String, limit: u32, what: &'static str) -> Self {
        Self {
            limit: RateLimit {
                key,
                limit,
                window: WINDOW,
            },
            what,
        }
    }
}

/// New orders, per account and per agent.
pub(crate) fn new_orders(limits: &RateLimits, account_id: &str, agent_id: &str) -> [Limit; 2] {
    [
        Limit::new(
            format!("acme-orders/account/{account_id}"),
            limits.acme_orders_per_account_per_hour,
            "new orders per account per hour (rate_limits.acme_orders_per_account_per_hour)",
        ),
        Limit::new(
            format!("acme-orders/agent/{agent_id}"),
            limits.acme_orders_per_agent_per_hour,
            "new orders per agent per hour (rate_limits.acme_orders_per_agent_per_hour)",
        ),
    ]
}

/// Failed validations, per account and per agent.
pub(crate) fn failed_validations(
    limits: &RateLimits,
    account_id: &str,
    agent_id: &str,
) -> [Limit; 2] {
    [
        Limit::new(
            format!("acme-failed-validations/account/{account_id}"),
            limits.acme_failed_validations_per_account_per_hour,
            "failed validations per account per hour \
             (rate_limits.acme_failed_validations_per_account_per_hour)",
        ),
        Limit::new(
            format!("acme-failed-validations/agent/{agent_id}"),
            limits.acme_failed_validations_per_agent_per_hour,
            "failed validations per agent per hour \
             (rate_limits.acme_failed_validations_per_agent_per_hour)",
        ),
    ]
}

/// A unit of every limit, or none and `rateLimited` naming one that has none left.
pub(crate) fn take(store: &dyn Store, limits: &[Limit], now: OffsetDateTime) -> Result<()> {
    let all: Vec<RateLimit> = limits.iter().map(|l| l.limit.clone()).collect();
    let RateDecision::Limited { retry_after } = store.take_rate_limits(&all, now)? else {
        return Ok(());
    };
    // Which one: the first still without a unit (only a refusal pays for these reads).
    for limit in limits {
        let RateLimit {
            key,
            limit: n,
            window,
        } = &limit.limit;
        if let RateDecision::Limited { retry_after } =
            store.check_rate_limit(key, *n, *window, now)?
        {
            return Err(rate_limited(*n, limit.what, retry_after));
        }
    }
    let first = limits.iter().find(|l| l.limit.limit > 0);
    Err(rate_limited(
        first.map_or(0, |l| l.limit.limit),
        first.map_or("requests", |l| l.what),
        retry_after,
    ))
}

/// Gives back the units [`take`] took, for an attempt that does not count. A failure to give
/// them back only leaves them spent until the window moves on.
pub(crate) fn give_back(store: &dyn Store, limits: &[Limit], now: OffsetDateTime) {
    for limit in limits {
        let RateLimit {
            key,
            limit: n,
            window,
        } = &limit.limit;
        if let Err(e) = store.return_rate_limit(key, *n, *window, now) {
            tracing::warn!(key = %key, error = %e, "could not give back a rate limit unit");
        }
    }
}

/// `rateLimited` (RFC 8555 §6.7) with `Retry-After`.
pub(crate) fn rate_limited(limit: u32, what: &str, retry_after: time::Duration) -> AcmeError {
    let secs = retry_after.whole_seconds().max(1).unsigned_abs();
    AcmeError::new(
        ProblemType::RateLimited,
        format!("rate limit of {limit} {what} reached; retry in {secs} s"),
    )
    .with_retry_after(std::time::Duration::from_secs(secs))
}
