//! [`Backup`] for PostgreSQL: the export reads in one REPEATABLE READ, READ ONLY transaction
//! (one snapshot of the database while other nodes keep writing), the import writes in one
//! transaction that first locks the tables and checks they are empty, so a failed or refused
//! import leaves the database as it was.
//!
//! Both run on a pool connection's thread; records cross to the caller's thread through a
//! bounded channel, so neither side holds the whole store in memory.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use super::pool::Tx;
use super::{PostgresStore, column, from_json, issued, serial_entry, to_json, unix};
use crate::backup::{Backup, BackupRecord, RecordCounts, blocked_key_bytes, certificate_with_der};
use crate::{Result, Serial, SerialEntry, StoreError};

/// Records in flight between the connection thread and the caller.
const CHANNEL: usize = 256;
/// Serials read per query: the DER makes these rows the big ones.
const PAGE: i64 = 500;

/// What the caller sends to the loading transaction.
enum Load {
    Record(Box<BackupRecord>),
    /// Every record was sent: commit. A channel closed without it rolls back.
    Done,
}

impl Backup for PostgresStore {
    fn export(&self, visit: &mut dyn FnMut(BackupRecord) -> Result<()>) -> Result<()> {
        let (sender, receiver) = sync_channel::<BackupRecord>(CHANNEL);
        std::thread::scope(|scope| {
            let reader = scope.spawn(move || {
                self.pool.run(move |c| {
                    c.transaction(|tx| {
                        tx.batch_execute(
                            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
                        )?;
                        export_all(tx, &sender)
                    })
                })
            });
            let mut failed = None;
            for record in receiver.iter() {
                if let Err(e) = visit(record) {
                    failed = Some(e);
                    break;
                }
            }
            // Stops the reader at its next record if `visit` failed.
            drop(receiver);
            let read = reader
                .join()
                .map_err(|_| StoreError::Backend("the export thread panicked".into()))?;
            match failed {
                Some(e) => Err(e),
                None => read,
            }
        })
    }

    fn is_empty(&self) -> Result<bool> {
        self.pool.run(|c| {
            let rows = c.query(EMPTY, &[])?;
            match rows.first() {
                Some(row) => Ok(!column::<bool>(row, 0, "emptiness check")?),
                None => Ok(false),
            }
        })
    }

    fn import(&self, records: &mut dyn Iterator<Item = BackupRecord>) -> Result<RecordCounts> {
        let (sender, receiver) = sync_channel::<Load>(CHANNEL);
        let target = self.target().to_owned();
        std::thread::scope(|scope| {
            let writer = scope.spawn(move || {
                self.pool
                    .run(move |c| c.transaction(|tx| load_all(tx, &receiver, &target)))
            });
            for record in records {
                // A refused send means the transaction already failed; its error says why.
                if sender.send(Load::Record(Box::new(record))).is_err() {
                    break;
                }
            }
            let _ = sender.send(Load::Done);
            drop(sender);
            writer
                .join()
                .map_err(|_| StoreError::Backend("the import thread panicked".into()))?
        })
    }
}

/// True when any table (rate limits aside) holds a record.
const EMPTY: &str = "SELECT EXISTS (SELECT 1 FROM agents) OR EXISTS (SELECT 1 FROM serials)
    OR EXISTS (SELECT 1 FROM blocked_keys) OR EXISTS (SELECT 1 FROM tokens)
    OR EXISTS (SELECT 1 FROM scep_transactions) OR EXISTS (SELECT 1 FROM acme_accounts)
    OR EXISTS (SELECT 1 FROM acme_orders) OR EXISTS (SELECT 1 FROM acme_authorizations)
    OR EXISTS (SELECT 1 FROM acme_replacements)
    OR EXISTS (SELECT 1 FROM crl_state WHERE body IS NOT NULL)";

fn send(sender: &SyncSender<BackupRecord>, record: BackupRecord) -> Result<()> {
    sender
        .send(record)
        .map_err(|_| StoreError::Backend("the export was stopped".into()))
}

/// Every row of a one-column `body` query, decoded and sent.
fn bodies<T: serde::de::DeserializeOwned>(
    tx: &mut Tx<'_, '_>,
    sql: &'static str,
    what: &str,
    sender: &SyncSender<BackupRecord>,
    wrap: fn(T) -> BackupRecord,
) -> Result<()> {
    for row in tx.query(sql, &[])? {
        let body = column::<String>(&row, 0, what)?;
        send(sender, wrap(from_json(what, &body)?))?;
    }
    Ok(())
}

fn export_all(tx: &mut Tx<'_, '_>, sender: &SyncSender<BackupRecord>) -> Result<()> {
    bodies(
        tx,
        "SELECT body FROM agents ORDER BY id",
        "agent",
        sender,
        BackupRecord::Agent,
    )?;
    export_serials(tx, sender)?;
    for row in tx.query(
        "SELECT key_sha256 FROM blocked_keys ORDER BY key_sha256",
        &[],
    )? {
        let key = column::<Vec<u8>>(&row, 0, "blocked key")?;
        let key: [u8; 32] = key.as_slice().try_into().map_err(|_| StoreError::Corrupt {
            key: hex::encode(&key),
            reason: "a blocked key is 32 bytes".into(),
        })?;
        send(sender, BackupRecord::blocked_key(&key))?;
    }
    bodies(
        tx,
        "SELECT body FROM tokens ORDER BY id",
        "token",
        sender,
        BackupRecord::Token,
    )?;
    bodies(
        tx,
        "SELECT body FROM scep_transactions ORDER BY request_key",
        "SCEP transaction",
        sender,
        BackupRecord::ScepTransaction,
    )?;
    bodies(
        tx,
        "SELECT body FROM acme_accounts ORDER BY id",
        "ACME account",
        sender,
        BackupRecord::AcmeAccount,
    )?;
    bodies(
        tx,
        "SELECT body FROM acme_authorizations ORDER BY id",
        "ACME authorization",
        sender,
        BackupRecord::AcmeAuthorization,
    )?;
    bodies(
        tx,
        "SELECT body FROM acme_orders ORDER BY id",
        "ACME order",
        sender,
        BackupRecord::AcmeOrder,
    )?;
    for row in tx.query(
        "SELECT cert_id, order_id FROM acme_replacements ORDER BY cert_id",
        &[],
    )? {
        let cert_id = column::<Vec<u8>>(&row, 0, "acme_replacements")?;
        let cert_id = String::from_utf8(cert_id).map_err(|e| StoreError::Corrupt {
            key: "acme_replacements".into(),
            reason: format!("an ARI certificate id is not UTF-8: {e}"),
        })?;
        let order_id = column::<String>(&row, 1, "acme_replacements")?;
        send(sender, BackupRecord::AcmeReplacement { cert_id, order_id })?;
    }
    let rows = tx.query("SELECT body FROM crl_state WHERE id = 1", &[])?;
    if let Some(row) = rows.first()
        && let Some(body) = column::<Option<String>>(row, 0, "crl_state")?
    {
        send(
            sender,
            BackupRecord::CrlState(from_json("crl_state", &body)?),
        )?;
    }
    Ok(())
}

/// Reservations, then certificates, a page at a time in serial order.
fn export_serials(tx: &mut Tx<'_, '_>, sender: &SyncSender<BackupRecord>) -> Result<()> {
    let mut after: Vec<u8> = Vec::new();
    loop {
        let rows = tx.query(
            "SELECT entry, der FROM serials WHERE der IS NULL AND serial > $1
             ORDER BY serial LIMIT $2",
            &[&after, &PAGE],
        )?;
        let Some(last) = rows.last() else { break };
        after = serial_of(&serial_entry(last)?).as_bytes().to_vec();
        for row in &rows {
            match serial_entry(row)? {
                SerialEntry::Reserved(intent) => send(sender, BackupRecord::Reservation(intent))?,
                SerialEntry::Issued(record) => {
                    return Err(StoreError::Corrupt {
                        key: record.intent.serial.to_hex(),
                        reason: "recorded as issued without its DER".into(),
                    });
                }
            }
        }
    }
    let mut after: Vec<u8> = Vec::new();
    loop {
        let rows = tx.query(
            "SELECT entry, der FROM serials WHERE der IS NOT NULL AND serial > $1
             ORDER BY serial LIMIT $2",
            &[&after, &PAGE],
        )?;
        let Some(last) = rows.last() else { break };
        after = issued(last)?.intent.serial.as_bytes().to_vec();
        for row in &rows {
            send(sender, BackupRecord::certificate(issued(row)?))?;
        }
    }
    Ok(())
}

fn serial_of(entry: &SerialEntry) -> Serial {
    match entry {
        SerialEntry::Reserved(intent) => intent.serial,
        SerialEntry::Issued(record) => record.intent.serial,
    }
}

fn load_all(tx: &mut Tx<'_, '_>, receiver: &Receiver<Load>, target: &str) -> Result<RecordCounts> {
    // No node may write between the emptiness check and the commit.
    tx.batch_execute(
        "LOCK TABLE agents, serials, blocked_keys, tokens, crl_state, scep_transactions,
             acme_accounts, acme_orders, acme_authorizations, acme_replacements
         IN EXCLUSIVE MODE",
    )?;
    let rows = tx.query(EMPTY, &[])?;
    let taken = match rows.first() {
        Some(row) => column::<bool>(row, 0, "emptiness check")?,
        None => true,
    };
    if taken {
        return Err(crate::backup::not_empty(&format!(
            "the database at {target}"
        )));
    }
    let mut counts = RecordCounts::default();
    loop {
        match receiver.recv() {
            Ok(Load::Record(record)) => {
                counts.add(&record);
                load(tx, &record)?;
            }
            Ok(Load::Done) => return Ok(counts),
            Err(_) => {
                return Err(StoreError::Backend(
                    "the import stopped before its last record".into(),
                ));
            }
        }
    }
}

fn twice(what: String) -> impl FnOnce() -> StoreError {
    move || StoreError::Conflict {
        what: format!("the backup holds {what} twice"),
    }
}

fn load(tx: &mut Tx<'_, '_>, record: &BackupRecord) -> Result<()> {
    match record {
        BackupRecord::Agent(agent) => {
            tx.execute_unique(
                "INSERT INTO agents (id, body) VALUES ($1, $2)",
                &[&agent.id, &to_json(agent)?],
                twice(format!("agent {}", agent.id)),
            )?;
        }
        BackupRecord::Reservation(intent) => {
            tx.execute_unique(
                "INSERT INTO serials (serial, agent_id, key_sha256, not_after, entry)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &intent.serial.as_bytes().as_slice(),
                    &intent.agent_id,
                    &intent.key_sha256,
                    &unix(intent.not_after),
                    &to_json(&SerialEntry::Reserved(intent.clone()))?,
                ],
                twice(format!("serial {}", intent.serial)),
            )?;
        }
        BackupRecord::Certificate { certificate, der } => {
            let record = certificate_with_der(certificate, der)?;
            let serial = record.intent.serial;
            tx.execute_unique(
                "INSERT INTO serials (serial, agent_id, key_sha256, not_after, revoked, entry, der)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &serial.as_bytes().as_slice(),
                    &record.intent.agent_id,
                    &record.intent.key_sha256,
                    &unix(record.intent.not_after),
                    &record.revocation.is_some(),
                    &to_json(&SerialEntry::Issued(record.clone()))?,
                    &record.der,
                ],
                twice(format!("serial {serial}")),
            )?;
        }
        BackupRecord::BlockedKey { key_sha256 } => {
            let key = blocked_key_bytes(key_sha256)?;
            tx.execute(
                "INSERT INTO blocked_keys (key_sha256) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&key.as_slice()],
            )?;
        }
        BackupRecord::Token(token) => {
            tx.execute_unique(
                "INSERT INTO tokens (id, body) VALUES ($1, $2)",
                &[&token.id, &to_json(token)?],
                twice(format!("token {}", token.id)),
            )?;
        }
        BackupRecord::ScepTransaction(t) => {
            tx.execute_unique(
                "INSERT INTO scep_transactions (request_key, created, body) VALUES ($1, $2, $3)",
                &[&t.request_key.as_bytes(), &unix(t.created_at), &to_json(t)?],
                twice(format!("SCEP transaction {}", t.transaction_id)),
            )?;
        }
        BackupRecord::AcmeAccount(account) => {
            tx.execute_unique(
                "INSERT INTO acme_accounts (id, thumbprint, body) VALUES ($1, $2, $3)",
                &[&account.id, &account.thumbprint, &to_json(account)?],
                twice(format!("ACME account {} or its key", account.id)),
            )?;
        }
        BackupRecord::AcmeAuthorization(authz) => {
            tx.execute_unique(
                "INSERT INTO acme_authorizations (id, status, body) VALUES ($1, $2, $3)",
                &[&authz.id, &status_name(&authz.status)?, &to_json(authz)?],
                twice(format!("ACME authorization {}", authz.id)),
            )?;
        }
        BackupRecord::AcmeOrder(order) => {
            tx.execute_unique(
                "INSERT INTO acme_orders
                     (id, account_id, created, expires, status, certificate, body)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &order.id,
                    &order.account_id,
                    &unix(order.created_at),
                    &unix(order.expires),
                    &status_name(&order.status)?,
                    &order.certificate.map(|s| s.as_bytes().to_vec()),
                    &to_json(order)?,
                ],
                twice(format!("ACME order {}", order.id)),
            )?;
        }
        BackupRecord::AcmeReplacement { cert_id, order_id } => {
            tx.execute_unique(
                "INSERT INTO acme_replacements (cert_id, order_id) VALUES ($1, $2)",
                &[&cert_id.as_bytes(), order_id],
                twice(format!("the replacement claim on {cert_id}")),
            )?;
        }
        BackupRecord::CrlState(state) => {
            let set = tx.execute(
                "UPDATE crl_state SET body = $1 WHERE id = 1 AND body IS NULL",
                &[&to_json(state)?],
            )?;
            if set != 1 {
                return Err(twice("the CRL state".into())());
            }
        }
    }
    Ok(())
}

/// A status as its serde name, the form the status columns hold (as the ACME module writes
/// them).
fn status_name<T: serde::Serialize>(status: &T) -> Result<String> {
    match serde_json::to_value(status) {
        Ok(serde_json::Value::String(name)) => Ok(name),
        Ok(other) => Err(StoreError::Backend(format!("status encodes as {other}"))),
        Err(e) => Err(StoreError::Backend(format!("encode status: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use agentca_testkit::postgres::shared;

    use crate::battery::backup;
    use crate::{Backup, PostgresOptions, PostgresStore, SledStore};

    fn fresh() -> Option<PostgresStore> {
        let url = shared()?.fresh_database();
        let options = PostgresOptions {
            connections: 2,
            ..PostgresOptions::default()
        };
        Some(PostgresStore::open_with(&url, &options).unwrap())
    }

    #[test]
    fn round_trip_sled_to_postgres() {
        let Some(target) = fresh() else { return };
        let dir = tempfile::tempdir().unwrap();
        backup::round_trip(&SledStore::open(dir.path()).unwrap(), &target);
    }

    #[test]
    fn round_trip_postgres_to_sled() {
        let Some(source) = fresh() else { return };
        let dir = tempfile::tempdir().unwrap();
        backup::round_trip(&source, &SledStore::open(dir.path()).unwrap());
    }

    #[test]
    fn round_trip_postgres_to_postgres() {
        let (Some(source), Some(target)) = (fresh(), fresh()) else {
            return;
        };
        backup::round_trip(&source, &target);
    }

    #[test]
    fn a_refused_import_leaves_the_database_empty() {
        let Some(target) = fresh() else { return };
        backup::duplicates_are_refused(&target);
        assert!(target.is_empty().unwrap());
    }
}

#[cfg(test)]
mod snapshot_tests {
    #![allow(clippy::unwrap_used)]

    use agentca_testkit::postgres::shared;
    use time::OffsetDateTime;

    use crate::{
        AgentRecord, Backup, BackupRecord, PostgresOptions, PostgresStore, Store, TokenKind,
        TokenRecord,
    };

    /// A write that commits while the export runs is not in it: the export reads one snapshot.
    #[test]
    fn an_export_is_one_snapshot_while_other_writers_commit() {
        let Some(cluster) = shared() else { return };
        let options = PostgresOptions {
            connections: 2,
            ..PostgresOptions::default()
        };
        let store = PostgresStore::open_with(&cluster.fresh_database(), &options).unwrap();
        let now = OffsetDateTime::now_utc();
        // More agents than the channel holds, so the export is still sending agents (and has
        // not read the tokens yet) when the first one reaches the callback.
        for i in 0..(super::CHANNEL + 50) {
            store
                .insert_agent(&AgentRecord {
                    id: format!("spiffe://example.org/agent/{i:04}"),
                    owner: None,
                    policy: None,
                    dns: vec![],
                    disabled: false,
                    created_at: now,
                    early_renewal: None,
                })
                .unwrap();
        }
        let late = TokenRecord {
            id: "late".into(),
            kind: TokenKind::Scep,
            agent_id: "spiffe://example.org/agent/0000".into(),
            verifier: "00".into(),
            expires_at: now + time::Duration::hours(1),
            created_at: now,
            consumed_at: None,
        };
        let mut exported = Vec::new();
        store
            .export(&mut |record| {
                if exported.is_empty() {
                    store.insert_token(&late).unwrap();
                }
                exported.push(record);
                Ok(())
            })
            .unwrap();
        assert_eq!(exported.len(), super::CHANNEL + 50);
        assert!(
            !exported.iter().any(|r| matches!(r, BackupRecord::Token(_))),
            "a token committed during the export is in it"
        );
        assert!(store.token("late").unwrap().is_some());
    }
}
