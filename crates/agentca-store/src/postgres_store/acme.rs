//! The ACME records on PostgreSQL. Uniqueness (one account per key, one claim per replaced
//! certificate) lives in constraints, and every state transition is a compare-and-set on the
//! status column, so the checks hold across nodes.

use time::OffsetDateTime;

use super::pool::{Connection, Pool, Tx};
use super::{column, exists, from_json, issued, record, to_json, unix, use_token};
use crate::rate::{Gcra, decode_tat, limited};
use crate::{
    AcmeAccount, AcmeAccountStatus, AcmeAuthorization, AcmeAuthorizationStatus, AcmeOrder,
    AcmeOrderStatus, CertificateRecord, RateDecision, RateLimit, Result, Serial, StoreError,
};

pub(super) fn create_account(
    pool: &Pool,
    account: &AcmeAccount,
    token_id: &str,
    at: OffsetDateTime,
) -> Result<()> {
    let account = account.clone();
    let token_id = token_id.to_owned();
    let body = to_json(&account)?;
    pool.run(move |c| {
        c.transaction(|tx| {
            // The token row stays locked until commit: racing creations with one token queue
            // here and all but the first find it used.
            use_token(tx, &token_id, at)?;
            let key_taken = || StoreError::AlreadyExists {
                what: "an account with this key".into(),
            };
            if !tx
                .query(
                    "SELECT 1 FROM acme_accounts WHERE thumbprint = $1",
                    &[&account.thumbprint],
                )?
                .is_empty()
            {
                return Err(key_taken());
            }
            if !tx
                .query("SELECT 1 FROM acme_accounts WHERE id = $1", &[&account.id])?
                .is_empty()
            {
                return Err(StoreError::AlreadyExists {
                    what: format!("account {}", account.id),
                });
            }
            // A concurrent creation with another token and the same key may still win the
            // unique index between the check and here.
            tx.execute_unique(
                "INSERT INTO acme_accounts (id, thumbprint, body) VALUES ($1, $2, $3)",
                &[&account.id, &account.thumbprint, &body],
                || StoreError::AlreadyExists {
                    what: "an account with this key or id".into(),
                },
            )?;
            Ok(())
        })
    })
}

pub(super) fn account(pool: &Pool, id: &str) -> Result<Option<AcmeAccount>> {
    let id = id.to_owned();
    pool.run(move |c| {
        let rows = c.query("SELECT body FROM acme_accounts WHERE id = $1", &[&id])?;
        record(&rows, 0, &id)
    })
}

pub(super) fn account_by_thumbprint(pool: &Pool, thumbprint: &str) -> Result<Option<AcmeAccount>> {
    let thumbprint = thumbprint.to_owned();
    pool.run(move |c| {
        let rows = c.query(
            "SELECT body FROM acme_accounts WHERE thumbprint = $1",
            &[&thumbprint],
        )?;
        record(&rows, 0, &thumbprint)
    })
}

pub(super) fn update_account(pool: &Pool, account: &AcmeAccount) -> Result<()> {
    let id = account.id.clone();
    let thumbprint = account.thumbprint.clone();
    let body = to_json(account)?;
    let (updated, found) = pool.run(move |c| {
        let updated = c.execute(
            // Deactivation is final: a record read before it cannot overwrite it.
            "UPDATE acme_accounts SET body = $3
             WHERE id = $1 AND thumbprint = $2 AND body::json ->> 'status' = 'valid'",
            &[&id, &thumbprint, &body],
        )?;
        let found = updated == 1 || exists(c, "SELECT 1 FROM acme_accounts WHERE id = $1", &id)?;
        Ok((updated, found))
    })?;
    match (updated, found) {
        (1, _) => Ok(()),
        (_, true) => Err(StoreError::Conflict {
            what: format!(
                "account {} changed its key meanwhile, or is deactivated",
                account.id
            ),
        }),
        (_, false) => Err(not_found("account", &account.id)),
    }
}

pub(super) fn change_account_key(
    pool: &Pool,
    id: &str,
    old_thumbprint: &str,
    new_jwk: &str,
    new_thumbprint: &str,
) -> Result<AcmeAccount> {
    let id = id.to_owned();
    let old_thumbprint = old_thumbprint.to_owned();
    let new_jwk = new_jwk.to_owned();
    let new_thumbprint = new_thumbprint.to_owned();
    pool.run(move |c| {
        c.transaction(|tx| {
            let rows = tx.query(
                "SELECT body FROM acme_accounts WHERE id = $1 FOR UPDATE",
                &[&id],
            )?;
            let Some(mut account) = record::<AcmeAccount>(&rows, 0, &id)? else {
                return Err(not_found("account", &id));
            };
            if account.thumbprint != old_thumbprint || account.status != AcmeAccountStatus::Valid {
                return Err(StoreError::Conflict {
                    what: format!("account {id} no longer has the old key, or is not valid"),
                });
            }
            let taken = || StoreError::AlreadyExists {
                what: "an account with the new key".into(),
            };
            if !tx
                .query(
                    "SELECT 1 FROM acme_accounts WHERE thumbprint = $1",
                    &[&new_thumbprint],
                )?
                .is_empty()
            {
                return Err(taken());
            }
            account.jwk = new_jwk;
            account.thumbprint = new_thumbprint;
            let body = to_json(&account)?;
            tx.execute_unique(
                "UPDATE acme_accounts SET thumbprint = $2, body = $3 WHERE id = $1",
                &[&id, &account.thumbprint, &body],
                taken,
            )?;
            Ok(account)
        })
    })
}

pub(super) fn insert_order(
    pool: &Pool,
    order: &AcmeOrder,
    authorizations: &[AcmeAuthorization],
    now: OffsetDateTime,
) -> Result<()> {
    let order = order.clone();
    let body = to_json(&order)?;
    let status = status_name(&order.status)?;
    let mut authz_ids = Vec::with_capacity(authorizations.len());
    let mut authz_statuses = Vec::with_capacity(authorizations.len());
    let mut authz_bodies = Vec::with_capacity(authorizations.len());
    for a in authorizations {
        authz_ids.push(a.id.clone());
        authz_statuses.push(status_name(&a.status)?);
        authz_bodies.push(to_json(a)?);
    }
    let created = unix(order.created_at);
    let expires = unix(order.expires);
    let certificate = order.certificate.map(|s| s.as_bytes().to_vec());
    pool.run(move |c| {
        let taken = || StoreError::AlreadyExists {
            what: format!("order {} or one of its authorizations", order.id),
        };
        // The order and its authorizations in one statement, so one round trip: the
        // data-modifying WITH runs to completion with the insert, and a taken id (a unique
        // violation) aborts both.
        const INSERT: &str = "WITH authorizations AS (
                 INSERT INTO acme_authorizations (id, status, body)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
             )
             INSERT INTO acme_orders
                 (id, account_id, created, expires, status, certificate, body)
             VALUES ($4, $5, $6, $7, $8, $9, $10)";
        let params: [&(dyn postgres::types::ToSql + Sync); 10] = [
            &authz_ids,
            &authz_statuses,
            &authz_bodies,
            &order.id,
            &order.account_id,
            &created,
            &expires,
            &status,
            &certificate,
            &body,
        ];
        let Some(cert_id) = &order.replaces else {
            c.execute_unique(INSERT, &params, taken)?;
            return Ok(());
        };
        // A replacement also claims the certificate it replaces, which needs the claim row
        // locked while its claimant is judged: a transaction.
        c.transaction(|tx| {
            tx.execute_unique(INSERT, &params, taken)?;
            claim_replacement(tx, cert_id, &order.id, now)
        })
    })
}

/// Points `cert_id` at `order_id` unless a live order (neither invalid nor expired unfinished
/// at `now`) holds it. The claim row is locked while its claimant is judged; a first claim
/// racing another first claim loses on the primary key and looks again.
fn claim_replacement(
    tx: &mut Tx<'_, '_>,
    cert_id: &str,
    order_id: &str,
    now: OffsetDateTime,
) -> Result<()> {
    let key = cert_id.as_bytes();
    loop {
        let rows = tx.query(
            "SELECT order_id FROM acme_replacements WHERE cert_id = $1 FOR UPDATE",
            &[&key],
        )?;
        if let Some(row) = rows.first() {
            let claimant: String = column(row, 0, "acme_replacements")?;
            let other_rows =
                tx.query("SELECT body FROM acme_orders WHERE id = $1", &[&claimant])?;
            if let Some(other) = record::<AcmeOrder>(&other_rows, 0, &claimant)? {
                let abandoned = other.status == AcmeOrderStatus::Invalid
                    || (other.status != AcmeOrderStatus::Valid && other.expires <= now);
                if !abandoned {
                    return Err(StoreError::Conflict {
                        what: format!(
                            "certificate {cert_id} is already replaced by order {claimant}"
                        ),
                    });
                }
            }
            tx.execute(
                "UPDATE acme_replacements SET order_id = $2 WHERE cert_id = $1",
                &[&key, &order_id],
            )?;
            return Ok(());
        }
        let inserted = tx.execute(
            "INSERT INTO acme_replacements (cert_id, order_id) VALUES ($1, $2)
             ON CONFLICT DO NOTHING",
            &[&key, &order_id],
        )?;
        if inserted == 1 {
            return Ok(());
        }
    }
}

pub(super) fn order(pool: &Pool, id: &str) -> Result<Option<AcmeOrder>> {
    let id = id.to_owned();
    pool.run(move |c| {
        let rows = c.query("SELECT body FROM acme_orders WHERE id = $1", &[&id])?;
        record(&rows, 0, &id)
    })
}

pub(super) fn orders_of_account(pool: &Pool, account_id: &str) -> Result<Vec<String>> {
    let account_id = account_id.to_owned();
    pool.run(move |c| {
        c.query(
            "SELECT id FROM acme_orders WHERE account_id = $1 ORDER BY created, id",
            &[&account_id],
        )?
        .iter()
        .map(|row| column::<String>(row, 0, "acme_orders"))
        .collect()
    })
}

pub(super) fn update_order(
    pool: &Pool,
    order: &AcmeOrder,
    expected: AcmeOrderStatus,
) -> Result<()> {
    let columns = OrderColumns::of(order, expected)?;
    let (updated, found) = pool.run(move |c| {
        let updated = c.execute(
            "UPDATE acme_orders SET status = $3, certificate = $4, body = $5
             WHERE id = $1 AND status = $2",
            &columns.params(),
        )?;
        let found = updated == 1 || order_exists(c, &columns.id)?;
        Ok((updated, found))
    })?;
    order_outcome(order, expected, updated, found)
}

/// An order's columns for a compare-and-set update, owned, for a job on a pool thread.
pub(super) struct OrderColumns {
    pub(super) id: String,
    pub(super) expected: String,
    pub(super) status: String,
    pub(super) certificate: Option<Vec<u8>>,
    pub(super) body: String,
}

impl OrderColumns {
    /// Id, expected status, then the new status, certificate and body.
    pub(super) fn params(&self) -> [&(dyn postgres::types::ToSql + Sync); 5] {
        [
            &self.id,
            &self.expected,
            &self.status,
            &self.certificate,
            &self.body,
        ]
    }

    pub(super) fn of(order: &AcmeOrder, expected: AcmeOrderStatus) -> Result<Self> {
        Ok(Self {
            id: order.id.clone(),
            expected: status_name(&expected)?,
            status: status_name(&order.status)?,
            certificate: order.certificate.map(|s| s.as_bytes().to_vec()),
            body: to_json(order)?,
        })
    }
}

/// Whether an order `id` is stored.
pub(super) fn order_exists(c: &mut Connection, id: &str) -> Result<bool> {
    exists(c, "SELECT 1 FROM acme_orders WHERE id = $1", &id)
}

/// What a compare-and-set update of `order` came to: `updated` rows changed, and whether the
/// order was `found` at all.
pub(super) fn order_outcome(
    order: &AcmeOrder,
    expected: AcmeOrderStatus,
    updated: u64,
    found: bool,
) -> Result<()> {
    match (updated, found) {
        (1, _) => Ok(()),
        (_, true) => Err(StoreError::Conflict {
            what: format!("order {} is no longer {expected:?}", order.id),
        }),
        (_, false) => Err(not_found("order", &order.id)),
    }
}

pub(super) fn order_of_certificate(pool: &Pool, serial: &Serial) -> Result<Option<AcmeOrder>> {
    let serial = *serial;
    pool.run(move |c| {
        let rows = c.query(
            "SELECT body FROM acme_orders WHERE certificate = $1 ORDER BY id LIMIT 1",
            &[&serial.as_bytes().as_slice()],
        )?;
        record(&rows, 0, &serial.to_hex())
    })
}

pub(super) fn certificate(
    pool: &Pool,
    serial: &Serial,
) -> Result<Option<(AcmeOrder, CertificateRecord)>> {
    let key = serial.as_bytes().to_vec();
    pool.run(move |c| {
        // Columns in the order `issued` reads them (entry, der), then the order.
        let rows = c.query(
            "SELECT s.entry, s.der, o.body FROM acme_orders o
             JOIN serials s ON s.serial = o.certificate
             WHERE o.certificate = $1 AND s.der IS NOT NULL
             ORDER BY o.id LIMIT 1",
            &[&key],
        )?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let order = from_json("order", &column::<String>(row, 2, "order")?)?;
        Ok(Some((order, issued(row)?)))
    })
}

pub(super) fn purge_orders(
    pool: &Pool,
    created_before: OffsetDateTime,
    expired_before: OffsetDateTime,
    limit: usize,
) -> Result<u64> {
    let created = unix(created_before);
    let expired = unix(expired_before);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    pool.run(move |c| {
        c.transaction(|tx| {
            // Rows another node is purging are skipped, not waited for. Orders stored before
            // migration 3 have no `expires` column; their creation time alone decides.
            let rows = tx.query(
                "SELECT id, body FROM acme_orders
                 WHERE created < $1 AND (expires IS NULL OR expires < $2)
                 ORDER BY created LIMIT $3 FOR UPDATE SKIP LOCKED",
                &[&created, &expired, &limit],
            )?;
            let mut ids = Vec::with_capacity(rows.len());
            let mut authorizations = Vec::new();
            for row in &rows {
                let id: String = column(row, 0, "order id")?;
                let order: AcmeOrder = from_json(&id, &column::<String>(row, 1, "order")?)?;
                authorizations.extend(order.authorizations);
                ids.push(id);
            }
            if ids.is_empty() {
                return Ok(0);
            }
            tx.execute(
                "DELETE FROM acme_authorizations WHERE id = ANY($1)",
                &[&authorizations],
            )?;
            tx.execute(
                "DELETE FROM acme_replacements WHERE order_id = ANY($1)",
                &[&ids],
            )?;
            tx.execute("DELETE FROM acme_orders WHERE id = ANY($1)", &[&ids])
        })
    })
}

pub(super) fn replacement(pool: &Pool, cert_id: &str) -> Result<Option<AcmeOrder>> {
    let key = cert_id.as_bytes().to_vec();
    let name = cert_id.to_owned();
    pool.run(move |c| {
        let rows = c.query(
            "SELECT o.body FROM acme_replacements r JOIN acme_orders o ON o.id = r.order_id
             WHERE r.cert_id = $1",
            &[&key],
        )?;
        record(&rows, 0, &name)
    })
}

pub(super) fn authorization(pool: &Pool, id: &str) -> Result<Option<AcmeAuthorization>> {
    let id = id.to_owned();
    pool.run(move |c| {
        let rows = c.query("SELECT body FROM acme_authorizations WHERE id = $1", &[&id])?;
        record(&rows, 0, &id)
    })
}

pub(super) fn update_authorization(
    pool: &Pool,
    authorization: &AcmeAuthorization,
    expected: AcmeAuthorizationStatus,
) -> Result<()> {
    let id = authorization.id.clone();
    let status = status_name(&authorization.status)?;
    let expected_name = status_name(&expected)?;
    let body = to_json(authorization)?;
    let (updated, found) = pool.run(move |c| {
        let updated = c.execute(
            "UPDATE acme_authorizations SET status = $3, body = $4 WHERE id = $1 AND status = $2",
            &[&id, &expected_name, &status, &body],
        )?;
        let found =
            updated == 1 || exists(c, "SELECT 1 FROM acme_authorizations WHERE id = $1", &id)?;
        Ok((updated, found))
    })?;
    match (updated, found) {
        (1, _) => Ok(()),
        (_, true) => Err(StoreError::Conflict {
            what: format!(
                "authorization {} is no longer {expected:?}",
                authorization.id
            ),
        }),
        (_, false) => Err(not_found("authorization", &authorization.id)),
    }
}

pub(super) fn take_rate_limit(
    pool: &Pool,
    key: &str,
    limit: u32,
    window: time::Duration,
    now: OffsetDateTime,
) -> Result<RateDecision> {
    take_rate_limits(
        pool,
        &[RateLimit {
            key: key.to_owned(),
            limit,
            window,
        }],
        now,
    )
}

/// What a transaction of [`take_rate_limits`] fails with when another node created one of its
/// keys meanwhile: it is rolled back and run again.
const KEY_RACED: &str = "a rate limit key created by another call";

pub(super) fn take_rate_limits(
    pool: &Pool,
    limits: &[RateLimit],
    now: OffsetDateTime,
) -> Result<RateDecision> {
    let mut active: Vec<(String, Gcra)> = limits
        .iter()
        .filter(|l| l.limit > 0)
        .map(|l| (l.key.clone(), Gcra::new(l.limit, l.window)))
        .collect();
    if active.is_empty() {
        return Ok(RateDecision::Allowed);
    }
    // Rows are locked in key order, so calls over the same keys cannot deadlock.
    active.sort_by(|a, b| a.0.cmp(&b.0));
    let now_ns = now.unix_timestamp_nanos();
    pool.run(move |c| {
        loop {
            let decided = c.transaction(|tx| {
                let mut writes = Vec::with_capacity(active.len());
                for (key, gcra) in &active {
                    let rows = tx.query(
                        "SELECT tat FROM rate_limits WHERE key = $1 FOR UPDATE",
                        &[&key.as_bytes()],
                    )?;
                    let stored = match rows.first() {
                        Some(row) => Some(column::<Vec<u8>>(row, 0, key)?),
                        None => None,
                    };
                    let tat = decode_tat(key, stored.as_deref(), now_ns)?;
                    match gcra.take(tat, now_ns) {
                        Ok(next) => writes.push((key, stored.is_some(), next.to_be_bytes())),
                        // Nothing written yet: the locks go with the empty transaction.
                        Err(wait_ns) => return Ok(limited(wait_ns)),
                    }
                }
                for (key, stored, next) in &writes {
                    let next = next.as_slice();
                    if *stored {
                        tx.execute(
                            "UPDATE rate_limits SET tat = $2 WHERE key = $1",
                            &[&key.as_bytes(), &next],
                        )?;
                    } else if tx.execute(
                        "INSERT INTO rate_limits (key, tat) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                        &[&key.as_bytes(), &next],
                    )? == 0
                    {
                        // A key's first unit, which another node took meanwhile.
                        return Err(StoreError::Conflict {
                            what: KEY_RACED.into(),
                        });
                    }
                }
                Ok(RateDecision::Allowed)
            });
            match decided {
                Err(StoreError::Conflict { what }) if what == KEY_RACED => continue,
                decided => return decided,
            }
        }
    })
}

pub(super) fn return_rate_limit(
    pool: &Pool,
    key: &str,
    limit: u32,
    window: time::Duration,
    now: OffsetDateTime,
) -> Result<()> {
    if limit == 0 {
        return Ok(());
    }
    let key = key.to_owned();
    let gcra = Gcra::new(limit, window);
    let now_ns = now.unix_timestamp_nanos();
    pool.run(move |c| {
        c.transaction(|tx| {
            let rows = tx.query(
                "SELECT tat FROM rate_limits WHERE key = $1 FOR UPDATE",
                &[&key.as_bytes()],
            )?;
            let Some(row) = rows.first() else {
                return Ok(());
            };
            let stored = column::<Vec<u8>>(row, 0, &key)?;
            let tat = decode_tat(&key, Some(&stored), now_ns)?;
            let back = gcra.give_back(tat, now_ns).to_be_bytes();
            tx.execute(
                "UPDATE rate_limits SET tat = $2 WHERE key = $1",
                &[&key.as_bytes(), &back.as_slice()],
            )?;
            Ok(())
        })
    })
}

pub(super) fn check_rate_limit(
    pool: &Pool,
    key: &str,
    limit: u32,
    window: time::Duration,
    now: OffsetDateTime,
) -> Result<RateDecision> {
    if limit == 0 {
        return Ok(RateDecision::Allowed);
    }
    let key = key.to_owned();
    let now_ns = now.unix_timestamp_nanos();
    let stored = pool.run(move |c| {
        let rows = c.query(
            "SELECT tat FROM rate_limits WHERE key = $1",
            &[&key.as_bytes()],
        )?;
        match rows.first() {
            Some(row) => Ok((key.clone(), Some(column::<Vec<u8>>(row, 0, &key)?))),
            None => Ok((key, None)),
        }
    })?;
    let (key, stored) = stored;
    let tat = decode_tat(&key, stored.as_deref(), now_ns)?;
    Ok(match Gcra::new(limit, window).take(tat, now_ns) {
        Ok(_) => RateDecision::Allowed,
        Err(wait_ns) => limited(wait_ns),
    })
}

/// A status as its serde name (`"ready"`), the form the status columns hold.
fn status_name<T: serde::Serialize>(status: &T) -> Result<String> {
    match serde_json::to_value(status) {
        Ok(serde_json::Value::String(name)) => Ok(name),
        Ok(other) => Err(StoreError::Backend(format!("status encodes as {other}"))),
        Err(e) => Err(StoreError::Backend(format!("encode status: {e}"))),
    }
}

fn not_found(what: &str, id: &str) -> StoreError {
    StoreError::NotFound {
        what: format!("{what} {id}"),
    }
}
