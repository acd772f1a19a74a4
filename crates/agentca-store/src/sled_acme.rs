//! The ACME records on sled: one tree per record kind plus the indexes that make the
//! check-then-write steps atomic (key → account, account → orders, certificate → order,
//! replaced certificate → order).

use sled::Transactional;
use time::OffsetDateTime;

use crate::rate::{Gcra, decode_tat, limited};
use crate::sled_store::{abort, backend, decode, encode, flatten, use_token};
use crate::{
    AcmeAccount, AcmeAccountStatus, AcmeAuthorization, AcmeAuthorizationStatus, AcmeOrder,
    AcmeOrderStatus, RateDecision, RateLimit, Result, Serial, StoreError,
};

/// The trees, opened with the store.
pub(crate) struct AcmeTrees {
    accounts: sled::Tree,
    account_keys: sled::Tree,
    orders: sled::Tree,
    orders_by_account: sled::Tree,
    authorizations: sled::Tree,
    certificate_orders: sled::Tree,
    replaced: sled::Tree,
    rate: sled::Tree,
    /// Held by every change of a rate limit's state (see `take_rate_limits`).
    rate_changes: std::sync::Mutex<()>,
}

impl AcmeTrees {
    pub(crate) fn open(db: &sled::Db) -> Result<Self> {
        let tree = |name: &str| db.open_tree(name).map_err(backend);
        Ok(Self {
            accounts: tree("acme_accounts")?,
            account_keys: tree("acme_account_keys")?,
            orders: tree("acme_orders")?,
            orders_by_account: tree("acme_orders_by_account")?,
            authorizations: tree("acme_authorizations")?,
            certificate_orders: tree("acme_certificate_orders")?,
            replaced: tree("acme_replaced")?,
            rate: tree("rate_limits")?,
            rate_changes: std::sync::Mutex::new(()),
        })
    }

    pub(crate) fn create_account(
        &self,
        tokens: &sled::Tree,
        account: &AcmeAccount,
        token_id: &str,
        at: OffsetDateTime,
    ) -> Result<()> {
        let value = encode(account)?;
        let result = (tokens, &self.accounts, &self.account_keys).transaction(|(t, a, k)| {
            use_token(t, token_id, at)?;
            if k.get(account.thumbprint.as_bytes())?.is_some() {
                return abort(StoreError::AlreadyExists {
                    what: "an account with this key".into(),
                });
            }
            if a.get(account.id.as_bytes())?.is_some() {
                return abort(StoreError::AlreadyExists {
                    what: format!("account {}", account.id),
                });
            }
            a.insert(account.id.as_bytes(), value.as_slice())?;
            k.insert(account.thumbprint.as_bytes(), account.id.as_bytes())?;
            Ok(())
        });
        flatten(result)
    }

    pub(crate) fn account(&self, id: &str) -> Result<Option<AcmeAccount>> {
        get(&self.accounts, id)
    }

    pub(crate) fn account_by_thumbprint(&self, thumbprint: &str) -> Result<Option<AcmeAccount>> {
        let Some(id) = self
            .account_keys
            .get(thumbprint.as_bytes())
            .map_err(backend)?
        else {
            return Ok(None);
        };
        let id = String::from_utf8_lossy(&id).into_owned();
        self.account(&id)
    }

    pub(crate) fn update_account(&self, account: &AcmeAccount) -> Result<()> {
        let value = encode(account)?;
        cas_update::<AcmeAccount>(&self.accounts, &account.id, "account", &value, |stored| {
            if stored.thumbprint != account.thumbprint {
                return Err(StoreError::Conflict {
                    what: format!("account {} changed its key meanwhile", account.id),
                });
            }
            if stored.status != AcmeAccountStatus::Valid {
                return Err(StoreError::Conflict {
                    what: format!("account {} is deactivated", account.id),
                });
            }
            Ok(())
        })
    }
    pub(crate) fn change_account_key(
        &self,
        id: &str,
        old_thumbprint: &str,
        new_jwk: &str,
        new_thumbprint: &str,
    ) -> Result<AcmeAccount> {
        let result = (&self.accounts, &self.account_keys).transaction(|(a, k)| {
            let Some(raw) = a.get(id.as_bytes())? else {
                return abort(not_found("account", id));
            };
            let mut account: AcmeAccount = match decode(id, &raw) {
                Ok(account) => account,
                Err(e) => return abort(e),
            };
            if account.thumbprint != old_thumbprint || account.status != AcmeAccountStatus::Valid {
                return abort(StoreError::Conflict {
                    what: format!("account {id} no longer has the old key, or is not valid"),
                });
            }
            if k.get(new_thumbprint.as_bytes())?.is_some() {
                return abort(StoreError::AlreadyExists {
                    what: "an account with the new key".into(),
                });
            }
            account.jwk = new_jwk.to_owned();
            account.thumbprint = new_thumbprint.to_owned();
            let value = match encode(&account) {
                Ok(v) => v,
                Err(e) => return abort(e),
            };
            k.remove(old_thumbprint.as_bytes())?;
            k.insert(new_thumbprint.as_bytes(), id.as_bytes())?;
            a.insert(id.as_bytes(), value.as_slice())?;
            Ok(account)
        });
        flatten(result)
    }

    /// Without a transaction (see [`cas_update`]): authorizations, then the order, each
    /// insert-if-absent; then the replacement claim by compare-and-swap, undone with the order if
    /// another live order holds it; the account index last. A crash in between leaves only
    /// records nothing points to yet.
    pub(crate) fn insert_order(
        &self,
        order: &AcmeOrder,
        authorizations: &[AcmeAuthorization],
        now: OffsetDateTime,
    ) -> Result<()> {
        let order_value = encode(order)?;
        // Each insert only succeeds on an absent key, so undoing a refused order removes
        // exactly what this call wrote.
        let undo = |authorizations: &[AcmeAuthorization], order: Option<&str>| -> Result<()> {
            if let Some(id) = order {
                self.orders.remove(id.as_bytes()).map_err(backend)?;
            }
            for authz in authorizations {
                self.authorizations
                    .remove(authz.id.as_bytes())
                    .map_err(backend)?;
            }
            Ok(())
        };
        for (i, authz) in authorizations.iter().enumerate() {
            let inserted = encode(authz).and_then(|value| {
                insert_new(&self.authorizations, &authz.id, &value, "authorization")
            });
            if let Err(e) = inserted {
                undo(&authorizations[..i], None)?;
                return Err(e);
            }
        }
        if let Err(e) = insert_new(&self.orders, &order.id, &order_value, "order") {
            undo(authorizations, None)?;
            return Err(e);
        }
        if let Some(cert_id) = &order.replaces
            && let Err(e) = self.claim_replacement(cert_id, &order.id, now)
        {
            undo(authorizations, Some(&order.id))?;
            return Err(e);
        }
        let index_key = account_order_key(&order.account_id, order.created_at, &order.id);
        self.orders_by_account
            .insert(index_key, order.id.as_bytes())
            .map_err(backend)?;
        Ok(())
    }

    /// Points `cert_id` at `order_id`, unless a live order (neither invalid nor expired
    /// unfinished at `now`) already holds it.
    fn claim_replacement(&self, cert_id: &str, order_id: &str, now: OffsetDateTime) -> Result<()> {
        loop {
            let current = self.replaced.get(cert_id.as_bytes()).map_err(backend)?;
            if let Some(claimant) = &current {
                let claimant = String::from_utf8_lossy(claimant).into_owned();
                if let Some(other) = self.order(&claimant)? {
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
            }
            let swapped = self
                .replaced
                .compare_and_swap(cert_id.as_bytes(), current, Some(order_id.as_bytes()))
                .map_err(backend)?;
            if swapped.is_ok() {
                return Ok(());
            }
        }
    }

    pub(crate) fn order(&self, id: &str) -> Result<Option<AcmeOrder>> {
        get(&self.orders, id)
    }

    pub(crate) fn orders_of_account(&self, account_id: &str) -> Result<Vec<String>> {
        let mut prefix = account_id.as_bytes().to_vec();
        prefix.push(0);
        self.orders_by_account
            .scan_prefix(&prefix)
            .map(|kv| {
                let (_, v) = kv.map_err(backend)?;
                Ok(String::from_utf8_lossy(&v).into_owned())
            })
            .collect()
    }

    pub(crate) fn update_order(&self, order: &AcmeOrder, expected: AcmeOrderStatus) -> Result<()> {
        let value = encode(order)?;
        // The index first: a reader trusts it only if the order it names carries the serial,
        // so an entry left by a failed update misleads nobody, while the order never names a
        // certificate its index lacks.
        if let Some(serial) = order.certificate {
            self.certificate_orders
                .insert(serial.as_bytes(), order.id.as_bytes())
                .map_err(backend)?;
        }
        cas_update::<AcmeOrder>(&self.orders, &order.id, "order", &value, |stored| {
            if stored.status != expected {
                return Err(StoreError::Conflict {
                    what: format!("order {} is no longer {expected:?}", order.id),
                });
            }
            Ok(())
        })
    }
    pub(crate) fn order_of_certificate(&self, serial: &Serial) -> Result<Option<AcmeOrder>> {
        let Some(id) = self
            .certificate_orders
            .get(serial.as_bytes())
            .map_err(backend)?
        else {
            return Ok(None);
        };
        // Written before the order (see `update_order`): it counts only if the order agrees.
        Ok(self
            .order(&String::from_utf8_lossy(&id))?
            .filter(|order| order.certificate == Some(*serial)))
    }

    pub(crate) fn replacement(&self, cert_id: &str) -> Result<Option<AcmeOrder>> {
        let Some(id) = self.replaced.get(cert_id.as_bytes()).map_err(backend)? else {
            return Ok(None);
        };
        self.order(&String::from_utf8_lossy(&id))
    }

    /// Walks the account index (its keys carry the creation time, so old entries are found
    /// without reading their orders, though every key is visited) and forgets each old,
    /// expired order: what hangs off it first, the order next (only as it was read), its index
    /// entry last, so that an interrupted pass leaves the entry that lets the next one finish.
    pub(crate) fn purge_orders(
        &self,
        created_before: OffsetDateTime,
        expired_before: OffsetDateTime,
        limit: usize,
    ) -> Result<u64> {
        let mut purged = 0;
        for kv in self.orders_by_account.iter() {
            if purged as usize >= limit {
                break;
            }
            let (key, id) = kv.map_err(backend)?;
            let Some(created) = created_of_index_key(&key) else {
                return Err(StoreError::Corrupt {
                    key: hex::encode(&key),
                    reason: "an order index entry without a creation time".into(),
                });
            };
            if created >= created_before.unix_timestamp() {
                continue;
            }
            let id = String::from_utf8_lossy(&id).into_owned();
            if let Some(raw) = self.orders.get(id.as_bytes()).map_err(backend)? {
                let order: AcmeOrder = decode(&id, &raw)?;
                if order.expires >= expired_before {
                    continue;
                }
                for authz in &order.authorizations {
                    self.authorizations
                        .remove(authz.as_bytes())
                        .map_err(backend)?;
                }
                // Index entries only while they still name this order (see `update_order`;
                // a newer order may hold the claim).
                if let Some(serial) = order.certificate {
                    remove_if_naming(&self.certificate_orders, serial.as_bytes(), &id)?;
                }
                if let Some(cert_id) = &order.replaces {
                    remove_if_naming(&self.replaced, cert_id.as_bytes(), &id)?;
                }
                let removed = self
                    .orders
                    .compare_and_swap(id.as_bytes(), Some(raw), None::<&[u8]>)
                    .map_err(backend)?;
                if removed.is_err() {
                    // Changed since it was read: left for the next pass to judge again.
                    continue;
                }
            }
            self.orders_by_account.remove(&key).map_err(backend)?;
            purged += 1;
        }
        Ok(purged)
    }

    pub(crate) fn authorization(&self, id: &str) -> Result<Option<AcmeAuthorization>> {
        get(&self.authorizations, id)
    }

    pub(crate) fn update_authorization(
        &self,
        authorization: &AcmeAuthorization,
        expected: AcmeAuthorizationStatus,
    ) -> Result<()> {
        let value = encode(authorization)?;
        let id = authorization.id.as_str();
        cas_update::<AcmeAuthorization>(
            &self.authorizations,
            id,
            "authorization",
            &value,
            |stored| {
                if stored.status != expected {
                    return Err(StoreError::Conflict {
                        what: format!("authorization {id} is no longer {expected:?}"),
                    });
                }
                Ok(())
            },
        )
    }
    pub(crate) fn take_rate_limit(
        &self,
        key: &str,
        limit: u32,
        window: time::Duration,
        now: OffsetDateTime,
    ) -> Result<RateDecision> {
        self.take_rate_limits(
            &[RateLimit {
                key: key.to_owned(),
                limit,
                window,
            }],
            now,
        )
    }
}

impl AcmeTrees {
    pub(crate) fn take_rate_limits(
        &self,
        limits: &[RateLimit],
        now: OffsetDateTime,
    ) -> Result<RateDecision> {
        let now_ns = now.unix_timestamp_nanos();
        // One process opens the store, and every change of a limit's state runs under this
        // lock: the units are taken from all the keys or, when one refuses, from none.
        let _changing = self
            .rate_changes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = Vec::with_capacity(limits.len());
        for limit in limits.iter().filter(|l| l.limit > 0) {
            let stored = self.rate.get(limit.key.as_bytes()).map_err(backend)?;
            let tat = decode_tat(&limit.key, stored.as_deref(), now_ns)?;
            match Gcra::new(limit.limit, limit.window).take(tat, now_ns) {
                Ok(tat) => next.push((limit.key.as_bytes(), tat)),
                Err(wait_ns) => return Ok(limited(wait_ns)),
            }
        }
        for (key, tat) in next {
            self.rate
                .insert(key, &tat.to_be_bytes()[..])
                .map_err(backend)?;
        }
        Ok(RateDecision::Allowed)
    }

    pub(crate) fn return_rate_limit(
        &self,
        key: &str,
        limit: u32,
        window: time::Duration,
        now: OffsetDateTime,
    ) -> Result<()> {
        if limit == 0 {
            return Ok(());
        }
        let now_ns = now.unix_timestamp_nanos();
        let _changing = self
            .rate_changes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(stored) = self.rate.get(key.as_bytes()).map_err(backend)? else {
            return Ok(());
        };
        let tat = decode_tat(key, Some(&stored), now_ns)?;
        let back = Gcra::new(limit, window).give_back(tat, now_ns);
        self.rate
            .insert(key.as_bytes(), &back.to_be_bytes()[..])
            .map_err(backend)?;
        Ok(())
    }

    pub(crate) fn check_rate_limit(
        &self,
        key: &str,
        limit: u32,
        window: time::Duration,
        now: OffsetDateTime,
    ) -> Result<RateDecision> {
        if limit == 0 {
            return Ok(RateDecision::Allowed);
        }
        let now_ns = now.unix_timestamp_nanos();
        let stored = self.rate.get(key.as_bytes()).map_err(backend)?;
        let tat = decode_tat(key, stored.as_deref(), now_ns)?;
        Ok(match Gcra::new(limit, window).take(tat, now_ns) {
            Ok(_) => RateDecision::Allowed,
            Err(wait_ns) => limited(wait_ns),
        })
    }
}

/// `account \0 created (i64 BE seconds) order-id`: an account's orders, oldest first.
pub(crate) fn account_order_key(
    account_id: &str,
    created: OffsetDateTime,
    order_id: &str,
) -> Vec<u8> {
    let mut key = Vec::with_capacity(account_id.len() + 9 + order_id.len());
    key.extend_from_slice(account_id.as_bytes());
    key.push(0);
    // Order by creation; offset so that negative timestamps still sort (they never occur).
    key.extend_from_slice(&(created.unix_timestamp() as u64 ^ (1 << 63)).to_be_bytes());
    key.extend_from_slice(order_id.as_bytes());
    key
}

/// Removes `key` from an index `tree` if it still points at order `id`.
fn remove_if_naming(tree: &sled::Tree, key: &[u8], id: &str) -> Result<()> {
    // A swap that finds another value is the answer, not a failure: the entry moved on.
    let _ = tree
        .compare_and_swap(key, Some(id.as_bytes()), None::<&[u8]>)
        .map_err(backend)?;
    Ok(())
}

/// The creation time (Unix seconds) an [`account_order_key`] carries.
fn created_of_index_key(key: &[u8]) -> Option<i64> {
    let at = key.iter().position(|&b| b == 0)?;
    let stamp: [u8; 8] = key.get(at + 1..at + 9)?.try_into().ok()?;
    Some((u64::from_be_bytes(stamp) ^ (1 << 63)) as i64)
}

/// Replaces the record under `id` with `new` if `check` accepts the stored one: a
/// compare-and-swap on the exact bytes checked, retried when another writer came between.
///
/// sled writes every transaction to its log at once (a `pwrite` and a `sync_file_range` each,
/// and a burst of thread wake-ups); a compare-and-swap is a memory operation made durable by the
/// next commit, which is why single-record updates on the ACME hot path use this.
fn cas_update<T: serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    id: &str,
    what: &str,
    new: &[u8],
    check: impl Fn(&T) -> Result<()>,
) -> Result<()> {
    loop {
        let Some(current) = tree.get(id.as_bytes()).map_err(backend)? else {
            return Err(not_found(what, id));
        };
        check(&decode::<T>(id, &current)?)?;
        let swapped = tree
            .compare_and_swap(id.as_bytes(), Some(&current), Some(new))
            .map_err(backend)?;
        if swapped.is_ok() {
            return Ok(());
        }
    }
}

/// Inserts `value` under `id` only if nothing is stored there.
fn insert_new(tree: &sled::Tree, id: &str, value: &[u8], what: &str) -> Result<()> {
    match tree
        .compare_and_swap(id.as_bytes(), None::<&[u8]>, Some(value))
        .map_err(backend)?
    {
        Ok(()) => Ok(()),
        Err(_) => Err(StoreError::AlreadyExists {
            what: format!("{what} {id}"),
        }),
    }
}

fn get<T: serde::de::DeserializeOwned>(tree: &sled::Tree, id: &str) -> Result<Option<T>> {
    tree.get(id.as_bytes())
        .map_err(backend)?
        .map(|v| decode(id, &v))
        .transpose()
}

fn not_found(what: &str, id: &str) -> StoreError {
    StoreError::NotFound {
        what: format!("{what} {id}"),
    }
}

#[cfg(test)]
mod tests {
    use time::Duration;

    use super::*;
    use crate::battery::serial;

    #[test]
    fn a_forgotten_order_leaves_no_index_entry_or_claim() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let trees = AcmeTrees::open(&db).unwrap();
        let now = OffsetDateTime::from_unix_timestamp(OffsetDateTime::now_utc().unix_timestamp())
            .unwrap();
        let created = now - Duration::days(2);
        let order = AcmeOrder {
            id: "old".into(),
            account_id: "acct".into(),
            agent_id: "spiffe://example.org/agent/a".into(),
            status: AcmeOrderStatus::Ready,
            identifiers: vec![],
            authorizations: vec![],
            expires: created + Duration::hours(8),
            created_at: created,
            certificate: None,
            replaces: Some("cert.X".into()),
            error: None,
            processing_since: None,
            preauthorized: Vec::new(),
        };
        trees.insert_order(&order, &[], now).unwrap();
        let mut valid = order.clone();
        valid.status = AcmeOrderStatus::Valid;
        valid.certificate = Some(serial(5));
        trees.update_order(&valid, AcmeOrderStatus::Ready).unwrap();
        assert!(trees.replaced.get(b"cert.X").unwrap().is_some());
        assert!(
            trees
                .certificate_orders
                .get(serial(5).as_bytes())
                .unwrap()
                .is_some()
        );

        // Not yet expired by the second bound: kept whole.
        let cutoff = now - Duration::days(1);
        assert_eq!(trees.purge_orders(cutoff, created, 10).unwrap(), 0);
        assert!(trees.order("old").unwrap().is_some());

        assert_eq!(trees.purge_orders(cutoff, cutoff, 10).unwrap(), 1);
        assert!(trees.order("old").unwrap().is_none());
        assert!(trees.replaced.get(b"cert.X").unwrap().is_none());
        assert!(
            trees
                .certificate_orders
                .get(serial(5).as_bytes())
                .unwrap()
                .is_none()
        );
        assert_eq!(trees.orders_by_account.len(), 0);
    }
}
