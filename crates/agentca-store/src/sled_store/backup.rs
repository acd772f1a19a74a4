//! [`Backup`] for the embedded store: a walk over the trees, and a load that writes each record
//! together with the index entries the store's own writes would have made.

use sled::Tree;

use super::{
    CRL_STATE_KEY, SledStore, agent_index_key, backend, decode, encode, encode_revoked,
    key_index_key,
};
use crate::backup::{Backup, BackupRecord, RecordCounts, blocked_key_bytes, certificate_with_der};
use crate::sled_acme::account_order_key;
use crate::{
    AcmeAccount, AcmeAuthorization, AcmeOrder, AgentRecord, CrlState, Result, ScepTransaction,
    SerialEntry, Store, StoreError, TokenRecord,
};

/// The ACME trees, by the names `sled_acme` opens them under.
struct AcmeTrees {
    accounts: Tree,
    account_keys: Tree,
    orders: Tree,
    orders_by_account: Tree,
    authorizations: Tree,
    certificate_orders: Tree,
    replaced: Tree,
}

impl SledStore {
    fn acme_trees(&self) -> Result<AcmeTrees> {
        let tree = |name: &str| self.db.open_tree(name).map_err(backend);
        Ok(AcmeTrees {
            accounts: tree("acme_accounts")?,
            account_keys: tree("acme_account_keys")?,
            orders: tree("acme_orders")?,
            orders_by_account: tree("acme_orders_by_account")?,
            authorizations: tree("acme_authorizations")?,
            certificate_orders: tree("acme_certificate_orders")?,
            replaced: tree("acme_replaced")?,
        })
    }

    fn location(&self) -> String {
        format!("the store at {}", self.path.display())
    }
}

/// Every value of a tree, decoded, in key order.
fn values<T: serde::de::DeserializeOwned>(
    tree: &Tree,
    visit: &mut dyn FnMut(T) -> Result<()>,
) -> Result<()> {
    for kv in tree.iter() {
        let (k, v) = kv.map_err(backend)?;
        visit(decode(&String::from_utf8_lossy(&k), &v)?)?;
    }
    Ok(())
}

/// Inserts a record under a key no other record of the backup used.
fn insert_once(tree: &Tree, key: &[u8], value: &[u8], what: &str) -> Result<()> {
    match tree.insert(key, value).map_err(backend)? {
        None => Ok(()),
        Some(_) => Err(StoreError::Conflict {
            what: format!("the backup holds {what} twice"),
        }),
    }
}

fn text_key(key: &[u8], what: &str) -> Result<String> {
    String::from_utf8(key.to_vec()).map_err(|_| StoreError::Corrupt {
        key: hex::encode(key),
        reason: format!("{what} is not UTF-8"),
    })
}

impl Backup for SledStore {
    fn export(&self, visit: &mut dyn FnMut(BackupRecord) -> Result<()>) -> Result<()> {
        values::<AgentRecord>(&self.agents, &mut |a| visit(BackupRecord::Agent(a)))?;
        // Reservations first, then certificates: one kind after the other, as documented.
        for kv in self.serials.iter() {
            let (k, v) = kv.map_err(backend)?;
            if let SerialEntry::Reserved(intent) = decode(&hex::encode(&k), &v)? {
                visit(BackupRecord::Reservation(intent))?;
            }
        }
        for kv in self.serials.iter() {
            let (k, v) = kv.map_err(backend)?;
            if let SerialEntry::Issued(mut record) = decode(&hex::encode(&k), &v)? {
                record.der = self.der_of(&record.intent.serial)?;
                visit(BackupRecord::certificate(record))?;
            }
        }
        for kv in self.blocked_keys.iter() {
            let (k, _) = kv.map_err(backend)?;
            let key: [u8; 32] = k.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                key: hex::encode(&k),
                reason: "a blocked key is 32 bytes".into(),
            })?;
            visit(BackupRecord::blocked_key(&key))?;
        }
        values::<TokenRecord>(&self.tokens, &mut |t| visit(BackupRecord::Token(t)))?;
        values::<ScepTransaction>(&self.scep_transactions, &mut |t| {
            visit(BackupRecord::ScepTransaction(t))
        })?;
        let acme = self.acme_trees()?;
        values::<AcmeAccount>(&acme.accounts, &mut |a| visit(BackupRecord::AcmeAccount(a)))?;
        values::<AcmeAuthorization>(&acme.authorizations, &mut |a| {
            visit(BackupRecord::AcmeAuthorization(a))
        })?;
        values::<AcmeOrder>(&acme.orders, &mut |o| visit(BackupRecord::AcmeOrder(o)))?;
        for kv in acme.replaced.iter() {
            let (k, v) = kv.map_err(backend)?;
            visit(BackupRecord::AcmeReplacement {
                cert_id: text_key(&k, "an ARI certificate id")?,
                order_id: text_key(&v, "an order id")?,
            })?;
        }
        if let Some(state) = self.crl_state()? {
            visit(BackupRecord::CrlState(state))?;
        }
        Ok(())
    }

    fn is_empty(&self) -> Result<bool> {
        let acme = self.acme_trees()?;
        let trees = [
            &self.agents,
            &self.serials,
            &self.der,
            &self.by_agent,
            &self.by_key,
            &self.revoked,
            &self.expiry,
            &self.blocked_keys,
            &self.tokens,
            &self.scep_transactions,
            &acme.accounts,
            &acme.account_keys,
            &acme.orders,
            &acme.orders_by_account,
            &acme.authorizations,
            &acme.certificate_orders,
            &acme.replaced,
        ];
        // Only the CRL state counts in `meta`: other bookkeeping there is not a record.
        let crl = self.meta.contains_key(CRL_STATE_KEY).map_err(backend)?;
        Ok(!crl && trees.iter().all(|t| t.is_empty()))
    }

    fn import(&self, records: &mut dyn Iterator<Item = BackupRecord>) -> Result<RecordCounts> {
        if !Backup::is_empty(self)? {
            return Err(crate::backup::not_empty(&self.location()));
        }
        let acme = self.acme_trees()?;
        let mut counts = RecordCounts::default();
        for record in records {
            counts.add(&record);
            match &record {
                BackupRecord::Agent(agent) => {
                    insert_once(
                        &self.agents,
                        agent.id.as_bytes(),
                        &encode(agent)?,
                        &format!("agent {}", agent.id),
                    )?;
                }
                BackupRecord::Reservation(intent) => {
                    insert_once(
                        &self.serials,
                        intent.serial.as_bytes(),
                        &encode(&SerialEntry::Reserved(intent.clone()))?,
                        &format!("serial {}", intent.serial),
                    )?;
                }
                BackupRecord::Certificate { certificate, der } => {
                    let record = certificate_with_der(certificate, der)?;
                    let serial = record.intent.serial;
                    let what = format!("serial {serial}");
                    insert_once(
                        &self.serials,
                        serial.as_bytes(),
                        &encode(&SerialEntry::Issued(record.clone()))?,
                        &what,
                    )?;
                    insert_once(&self.der, serial.as_bytes(), &record.der, &what)?;
                    let agent_key = agent_index_key(&record.intent.agent_id, &serial);
                    self.by_agent.insert(agent_key, &[][..]).map_err(backend)?;
                    let key_key = key_index_key(&record.intent.key_sha256, &serial);
                    self.by_key.insert(key_key, &[][..]).map_err(backend)?;
                    self.index_expiry(&record)?;
                    if let Some(revocation) = &record.revocation {
                        self.revoked
                            .insert(
                                serial.as_bytes(),
                                &encode_revoked(revocation, record.intent.not_after)[..],
                            )
                            .map_err(backend)?;
                    }
                }
                BackupRecord::BlockedKey { key_sha256 } => {
                    let key = blocked_key_bytes(key_sha256)?;
                    self.blocked_keys.insert(key, &[][..]).map_err(backend)?;
                }
                BackupRecord::Token(token) => {
                    insert_once(
                        &self.tokens,
                        token.id.as_bytes(),
                        &encode(token)?,
                        &format!("token {}", token.id),
                    )?;
                }
                BackupRecord::ScepTransaction(t) => {
                    insert_once(
                        &self.scep_transactions,
                        t.request_key.as_bytes(),
                        &encode(t)?,
                        &format!("SCEP transaction {}", t.transaction_id),
                    )?;
                }
                BackupRecord::AcmeAccount(account) => {
                    let what = format!("ACME account {}", account.id);
                    insert_once(
                        &acme.accounts,
                        account.id.as_bytes(),
                        &encode(account)?,
                        &what,
                    )?;
                    insert_once(
                        &acme.account_keys,
                        account.thumbprint.as_bytes(),
                        account.id.as_bytes(),
                        &format!("the key of {what}"),
                    )?;
                }
                BackupRecord::AcmeAuthorization(authz) => {
                    insert_once(
                        &acme.authorizations,
                        authz.id.as_bytes(),
                        &encode(authz)?,
                        &format!("ACME authorization {}", authz.id),
                    )?;
                }
                BackupRecord::AcmeOrder(order) => {
                    insert_once(
                        &acme.orders,
                        order.id.as_bytes(),
                        &encode(order)?,
                        &format!("ACME order {}", order.id),
                    )?;
                    let index = account_order_key(&order.account_id, order.created_at, &order.id);
                    acme.orders_by_account
                        .insert(index, order.id.as_bytes())
                        .map_err(backend)?;
                    if let Some(serial) = order.certificate {
                        acme.certificate_orders
                            .insert(serial.as_bytes(), order.id.as_bytes())
                            .map_err(backend)?;
                    }
                }
                BackupRecord::AcmeReplacement { cert_id, order_id } => {
                    insert_once(
                        &acme.replaced,
                        cert_id.as_bytes(),
                        order_id.as_bytes(),
                        &format!("the replacement claim on {cert_id}"),
                    )?;
                }
                BackupRecord::CrlState(state) => {
                    insert_once(
                        &self.meta,
                        CRL_STATE_KEY,
                        &encode::<CrlState>(state)?,
                        "the CRL state",
                    )?;
                }
            }
        }
        self.commit()?;
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use crate::SledStore;
    use crate::battery::backup;

    #[test]
    fn round_trip_sled_to_sled() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let source = SledStore::open(a.path()).unwrap();
        let target = SledStore::open(b.path()).unwrap();
        backup::round_trip(&source, &target);
    }

    #[test]
    fn duplicates_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        backup::duplicates_are_refused(&SledStore::open(dir.path()).unwrap());
    }
}
