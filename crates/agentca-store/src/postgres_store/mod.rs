//! The PostgreSQL backend, for several CA nodes on one database.
//!
//! Every check-then-write is one SQL statement with a uniqueness or status condition
//! (`INSERT … ON CONFLICT DO NOTHING`, `UPDATE … WHERE status = $expected`), or a transaction
//! that locks the row it reads (`SELECT … FOR UPDATE`). Both give one winner among racing
//! nodes, not only among threads of one process. Sessions run at READ COMMITTED, which these
//! patterns are written for: a statement that waited for a row lock sees the winner's row.
//!
//! Durability: every write is its own synchronous commit, so it is durable (and visible to the
//! other nodes) when the call returns, and [`Store::commit`] has nothing left to do.
//! `docs/decisions.md` records why this beats batching asynchronous commits behind one flush.
//!
//! Connections run on threads of their own ([`pool`]), so the store may be called from async
//! code. Errors name the database as `user@host:port/dbname`, never with its password.

mod acme;
mod backup;
mod batch;
mod pool;
mod schema;
mod tls;

#[cfg(test)]
mod tests;

use std::time::Duration;

use postgres::types::FromSql;
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use self::batch::Batcher;
use self::pool::{Connection, Pool, Tx};
use crate::{
    AccountRedemption, AcmeAccount, AcmeAuthorization, AcmeAuthorizationStatus, AcmeOrder,
    AcmeOrderStatus, AgentRecord, CertificateFilter, CertificateRecord, CrlState, IssuanceFacts,
    IssuanceFeed, IssuanceIntent, IssuedEntry, OrderClaim, RateDecision, RateLimit, RequestSubject,
    Result, Revocation, RevocationFeed, RevokedEntry, ScepTransaction, Serial, SerialEntry,
    SharedCrl, Store, StoreError, SubjectRecord, TokenRecord,
};

/// How the store connects.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// Connections (and threads) per store: the number of store calls that can be in flight at
    /// once in this process.
    pub connections: usize,
    /// How long to wait for the server when the URL sets no `connect_timeout`.
    pub connect_timeout: Duration,
    /// How long sent data may stay unacknowledged before the connection counts as lost, when
    /// the URL sets no `tcp_user_timeout` (Linux).
    pub tcp_user_timeout: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            connections: 8,
            connect_timeout: Duration::from_secs(10),
            tcp_user_timeout: Duration::from_secs(30),
        }
    }
}

/// A [`Store`] on a PostgreSQL database, shareable by several agentca processes.
pub struct PostgresStore {
    pool: Pool,
    /// Nonce redemptions waiting to share a statement.
    redemptions: Batcher<Redemption, Redeemed>,
}

/// A nonce to spend, and the account whose record the request needs, if any, with the
/// subject's kind (`agent`, `order` or `authz`) and id.
struct Redemption {
    nonce: [u8; 16],
    expires: i64,
    account: Option<String>,
    subject: Option<(&'static str, String)>,
}

/// A redemption's answer: whether the nonce was fresh, the bodies of the account and of the
/// subject.
type Redeemed = (bool, Option<String>, Option<String>);

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("database", &self.pool.target())
            .finish()
    }
}

impl PostgresStore {
    /// Whether `location` names a PostgreSQL database rather than a directory.
    pub fn is_url(location: &str) -> bool {
        location.starts_with("postgres://") || location.starts_with("postgresql://")
    }

    /// Connects to `url` (`postgres://user:password@host:port/dbname?…`, libpq syntax) with
    /// the default options and brings its schema up to date.
    pub fn open(url: &str) -> Result<Self> {
        Self::open_with(url, &PostgresOptions::default())
    }

    /// Connects with `options` and brings the schema up to date; fails if the database is
    /// unreachable or was migrated by a newer agentca.
    pub fn open_with(url: &str, options: &PostgresOptions) -> Result<Self> {
        let (mut config, tls) = tls::parse_url(url)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }
        // Without it, a write to a server that vanished without a reset (a partition, a dead
        // host) blocks until the kernel gives up, many minutes later, and the calls queued
        // behind it with it.
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(options.tcp_user_timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name("agentca");
        }
        let target = describe_target(&config);
        let pool = Pool::start_with_tls(config, &tls, target, options.connections)?;
        pool.run(|conn| schema::migrate(conn).map(drop))?;
        Ok(Self {
            pool,
            redemptions: Batcher::new(),
        })
    }

    /// A URL's database as `user@host:port/dbname`, without its password, for messages.
    pub fn describe_url(url: &str) -> String {
        match tls::parse_url(url) {
            Ok((config, _)) => describe_target(&config),
            Err(_) => "(an invalid PostgreSQL URL)".to_owned(),
        }
    }

    /// Binds the database to the CA whose root certificate has this SHA-256 (hex): the first
    /// claim stands, a later one for the same root is a no-op, one for another root is
    /// [`StoreError::Conflict`].
    pub fn claim_for_ca(&self, root_sha256: &str) -> Result<()> {
        let root = root_sha256.to_owned();
        let owner = self.pool.run(move |c| {
            c.execute(
                "INSERT INTO ca_identity (id, root_sha256) VALUES (1, $1) ON CONFLICT DO NOTHING",
                &[&root],
            )?;
            let rows = c.query("SELECT root_sha256 FROM ca_identity WHERE id = 1", &[])?;
            match rows.first() {
                Some(row) => column::<String>(row, 0, "ca_identity"),
                None => Err(StoreError::Corrupt {
                    key: "ca_identity".into(),
                    reason: "claimed but not stored".into(),
                }),
            }
        })?;
        if owner != root_sha256 {
            return Err(StoreError::Conflict {
                what: format!(
                    "the database at {} serves another CA (root certificate SHA-256 {owner})",
                    self.target()
                ),
            });
        }
        Ok(())
    }

    /// The SHA-256 (hex) of the root certificate of the CA the database serves, once claimed.
    pub fn ca_identity(&self) -> Result<Option<String>> {
        self.pool.run(|c| {
            let rows = c.query("SELECT root_sha256 FROM ca_identity WHERE id = 1", &[])?;
            rows.first()
                .map(|row| column::<String>(row, 0, "ca_identity"))
                .transpose()
        })
    }

    /// The database, described without secrets (`user@host:port/dbname`).
    pub fn target(&self) -> &str {
        self.pool.target()
    }
}

/// Settings every session gets, checked or set when it connects.
fn setup_session(client: &mut postgres::Client, target: &str) -> Result<()> {
    let row = client
        .query_one(
            "SELECT current_setting('server_encoding'), current_setting('synchronous_commit')",
            &[],
        )
        .map_err(|e| db_error(target, &e))?;
    let encoding: String = column(&row, 0, "server_encoding")?;
    let synchronous: String = column(&row, 1, "synchronous_commit")?;
    if encoding != "UTF8" {
        return Err(StoreError::Backend(format!(
            "the database at {target} uses encoding {encoding}; agentca needs UTF8 \
             (CREATE DATABASE … ENCODING 'UTF8')"
        )));
    }
    // The check-then-write patterns are written for READ COMMITTED; a stricter default would
    // turn races into serialization errors. A server that commits asynchronously by default
    // would acknowledge writes that are not durable; `local`, `on` and the remote levels are
    // kept as the operator chose them.
    let mut setup = String::from("SET default_transaction_isolation = 'read committed';");
    if synchronous == "off" {
        setup.push_str("SET synchronous_commit = on;");
    }
    client
        .batch_execute(&setup)
        .map_err(|e| db_error(target, &e))
}

/// `user@host:port/dbname`: enough to find the database, nothing secret.
fn describe_target(config: &postgres::Config) -> String {
    let user = config.get_user().unwrap_or("");
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let name = match host {
                postgres::config::Host::Tcp(name) => name.clone(),
                postgres::config::Host::Unix(path) => path.display().to_string(),
            };
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            format!("{name}:{port}")
        })
        .collect();
    let hosts = if hosts.is_empty() {
        "localhost:5432".to_owned()
    } else {
        hosts.join(",")
    };
    let db = config.get_dbname().unwrap_or(user);
    if user.is_empty() {
        format!("{hosts}/{db}")
    } else {
        format!("{user}@{hosts}/{db}")
    }
}

pub(crate) fn db_error(target: &str, e: &postgres::Error) -> StoreError {
    pool::note_error(e);
    StoreError::Backend(format!("PostgreSQL at {target}: {}", pool::describe(e)))
}

/// One column of a row, as a store error (not a panic) if it has an unexpected type.
pub(crate) fn column<'a, T: FromSql<'a>>(
    row: &'a postgres::Row,
    index: usize,
    what: &str,
) -> Result<T> {
    row.try_get(index).map_err(|e| StoreError::Corrupt {
        key: what.to_owned(),
        reason: e.to_string(),
    })
}

pub(crate) fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Backend(format!("encode record: {e}")))
}

pub(crate) fn from_json<T: DeserializeOwned>(key: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

/// The record in column `index` of the single row a query returned, if any.
fn record<T: DeserializeOwned>(
    rows: &[postgres::Row],
    index: usize,
    key: &str,
) -> Result<Option<T>> {
    match rows.first() {
        Some(row) => Ok(Some(from_json(key, &column::<String>(row, index, key)?)?)),
        None => Ok(None),
    }
}

/// Unix seconds as stored in index columns.
fn unix(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

/// Fills a reserved serial with its certificate ($1 the serial, then
/// [`CertificateColumns::params`]): only a reservation without a certificate moves to issued,
/// so racing recorders of one serial cannot both succeed. The database stamps when, for
/// [`Store::issued_since`].
macro_rules! fill_serial {
    () => {
        "UPDATE serials SET entry = $2, der = $3, agent_id = $4, key_sha256 = $5, not_after = $6,
             certificate_recorded_us = (extract(epoch FROM clock_timestamp()) * 1000000)::bigint
         WHERE serial = $1 AND der IS NULL"
    };
}

/// The columns of [`Store::issuance_facts`] ($1 the agent, $2 the key's SHA-256, $3 the
/// account thumbprint or NULL), read by [`issuance_facts_of`].
macro_rules! issuance_facts {
    () => {
        "(SELECT body FROM agents WHERE id = $1),
         EXISTS (SELECT 1 FROM blocked_keys WHERE key_sha256 = $2),
         $3::text IS NOT NULL AND EXISTS (SELECT 1 FROM acme_accounts WHERE thumbprint = $3)"
    };
}

/// The facts `issuance_facts!` selected, from column `first` of `row` on.
fn issuance_facts_of(row: &postgres::Row, first: usize, agent_id: &str) -> Result<IssuanceFacts> {
    let agent = column::<Option<String>>(row, first, agent_id)?
        .map(|body| from_json("agent", &body))
        .transpose()?;
    Ok(IssuanceFacts {
        agent,
        key_blocked: column(row, first + 1, "blocked key")?,
        account_key: column(row, first + 2, "account key")?,
    })
}

/// Whether `serial` is reserved, given the rows `stored` by `fill_serial!`; read only when
/// none was.
fn reserved(c: &mut Connection, stored: u64, serial: &&[u8]) -> Result<bool> {
    Ok(stored == 1 || exists(c, "SELECT 1 FROM serials WHERE serial = $1", serial)?)
}

/// The database's clock (not this node's: nodes' clocks may disagree, and the feeds' stamps
/// are the database's too).
fn database_clock(c: &mut Connection) -> Result<OffsetDateTime> {
    let rows = c.query(
        "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint",
        &[],
    )?;
    from_unix_micros(column::<i64>(only_row(&rows)?, 0, "clock")?)
}

/// The one row of a statement that always returns one.
fn only_row(rows: &[postgres::Row]) -> Result<&postgres::Row> {
    rows.first()
        .ok_or_else(|| StoreError::Backend("a one-row statement returned none".into()))
}

/// A reservation's columns in `serials` ($1 to $5 of its insert), owned, for a job on a pool
/// thread.
struct ReservationColumns {
    serial: Vec<u8>,
    agent: String,
    key: String,
    not_after: i64,
    entry: String,
}

impl ReservationColumns {
    fn of(intent: &IssuanceIntent) -> Result<Self> {
        Ok(Self {
            serial: intent.serial.as_bytes().to_vec(),
            agent: intent.agent_id.clone(),
            key: intent.key_sha256.clone(),
            not_after: unix(intent.not_after),
            entry: to_json(&SerialEntry::Reserved(intent.clone()))?,
        })
    }

    fn params(&self) -> [&(dyn postgres::types::ToSql + Sync); 5] {
        [
            &self.serial,
            &self.agent,
            &self.key,
            &self.not_after,
            &self.entry,
        ]
    }
}

/// A certificate's columns in `serials`, owned, for a job on a pool thread.
struct CertificateColumns {
    entry: String,
    der: Vec<u8>,
    agent: String,
    key: String,
    not_after: i64,
}

impl CertificateColumns {
    /// The parameters of `fill_serial!`, the serial first.
    fn params<'a>(&'a self, serial: &'a &'a [u8]) -> [&'a (dyn postgres::types::ToSql + Sync); 6] {
        [
            serial,
            &self.entry,
            &self.der,
            &self.agent,
            &self.key,
            &self.not_after,
        ]
    }

    fn of(record: &CertificateRecord) -> Result<Self> {
        Ok(Self {
            entry: to_json(&SerialEntry::Issued(record.clone()))?,
            der: record.der.clone(),
            agent: record.intent.agent_id.clone(),
            key: record.intent.key_sha256.clone(),
            not_after: unix(record.intent.not_after),
        })
    }
}

/// What recording a certificate came to: `stored` rows changed, and whether the serial was
/// `reserved` at all.
fn certificate_outcome(serial: &Serial, stored: u64, reserved: bool) -> Result<()> {
    match (stored, reserved) {
        (1, _) => Ok(()),
        (_, true) => Err(StoreError::Conflict {
            what: format!("serial {serial} already has a certificate"),
        }),
        (_, false) => Err(StoreError::NotFound {
            what: format!("reservation for serial {serial}"),
        }),
    }
}

impl PostgresStore {
    /// Spends a nonce, in one statement with the redemptions of other requests that arrive
    /// meanwhile (see [`batch`]); answers whether it was fresh, and the bodies of the account
    /// and the subject.
    fn redeem(&self, redemption: Redemption) -> Result<Redeemed> {
        self.redemptions.submit(redemption, |batch| {
            self.pool.run(move |c| redeem_batch(c, &batch))
        })
    }
}

/// One statement for a batch of redemptions: the inserts in a CTE (only the first insert of a
/// nonce wins, on any node), the accounts and subjects beside them, one row per redemption in
/// order. A subject is read only by the branch of its kind.
fn redeem_batch(c: &mut Connection, batch: &[Redemption]) -> Result<Vec<Redeemed>> {
    // The same nonce twice in one batch: only its first use may be fresh.
    let mut seen = std::collections::HashSet::with_capacity(batch.len());
    let first: Vec<bool> = batch.iter().map(|r| seen.insert(r.nonce)).collect();
    let nonces: Vec<&[u8]> = batch.iter().map(|r| r.nonce.as_slice()).collect();
    let expires: Vec<i64> = batch.iter().map(|r| r.expires).collect();
    let accounts: Vec<Option<&str>> = batch.iter().map(|r| r.account.as_deref()).collect();
    let kinds: Vec<Option<&str>> = batch
        .iter()
        .map(|r| r.subject.as_ref().map(|s| s.0))
        .collect();
    let subjects: Vec<Option<&str>> = batch
        .iter()
        .map(|r| r.subject.as_ref().map(|s| s.1.as_str()))
        .collect();
    let rows = c.query(
        "WITH input AS (
             SELECT * FROM unnest($1::bytea[], $2::int8[], $3::text[], $4::text[], $5::text[])
                 WITH ORDINALITY AS i(nonce, expires, account, kind, subject, n)
         ), used AS (
             INSERT INTO acme_nonces (nonce, expires)
             SELECT DISTINCT ON (nonce) nonce, expires FROM input
             ON CONFLICT DO NOTHING RETURNING nonce
         )
         SELECT i.n, u.nonce IS NOT NULL, a.body,
             CASE i.kind
                 WHEN 'agent' THEN
                     (SELECT body FROM agents WHERE id = a.agent_id)
                 WHEN 'order' THEN
                     (SELECT body FROM acme_orders WHERE id = i.subject)
                 WHEN 'authz' THEN
                     (SELECT body FROM acme_authorizations WHERE id = i.subject)
             END
         FROM input i
         LEFT JOIN used u ON u.nonce = i.nonce
         LEFT JOIN acme_accounts a ON a.id = i.account
         ORDER BY i.n",
        &[&nonces, &expires, &accounts, &kinds, &subjects],
    )?;
    if rows.len() != batch.len() {
        return Err(StoreError::Backend(format!(
            "{} nonces redeemed, {} rows returned",
            batch.len(),
            rows.len()
        )));
    }
    rows.iter()
        .zip(first)
        .map(|(row, first)| {
            let inserted = column::<bool>(row, 1, "nonce")?;
            let account = column::<Option<String>>(row, 2, "account")?;
            let subject = column::<Option<String>>(row, 3, "subject")?;
            Ok((first && inserted, account, subject))
        })
        .collect()
}

/// A CRL number as the `bigint` column holds it (agentca's numbers stay far below 2^63).
fn crl_number_column(number: u64) -> Result<i64> {
    i64::try_from(number)
        .map_err(|_| StoreError::Backend(format!("CRL number {number} does not fit the database")))
}

/// Microseconds since the Unix epoch, as revocations are stamped.
fn unix_micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MIN)
}

fn from_unix_micros(micros: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).map_err(|e| {
        StoreError::Corrupt {
            key: "clock".into(),
            reason: e.to_string(),
        }
    })
}

/// A stored serial entry, with its DER once issued.
fn serial_entry(row: &postgres::Row) -> Result<SerialEntry> {
    let key = "serial entry";
    let mut entry: SerialEntry = from_json(key, &column::<String>(row, 0, key)?)?;
    if let SerialEntry::Issued(record) = &mut entry {
        record.der =
            column::<Option<Vec<u8>>>(row, 1, key)?.ok_or_else(|| StoreError::Corrupt {
                key: record.intent.serial.to_hex(),
                reason: "certificate recorded without its DER".into(),
            })?;
    }
    Ok(entry)
}

/// A revoked certificate's CRL entry from the `entry` column alone: CRLs and the revocation
/// feed need no DER, and a hundred thousand revoked certificates' DER would be ~80 MB.
fn revoked_entry(row: &postgres::Row, why: &str) -> Result<RevokedEntry> {
    let key = "serial entry";
    let entry: SerialEntry = from_json(key, &column::<String>(row, 0, key)?)?;
    let SerialEntry::Issued(record) = entry else {
        return Err(StoreError::Corrupt {
            key: key.into(),
            reason: format!("{why} but recorded as reserved"),
        });
    };
    let Some(revocation) = record.revocation else {
        return Err(StoreError::Corrupt {
            key: record.intent.serial.to_hex(),
            reason: format!("{why} without a revocation"),
        });
    };
    Ok(RevokedEntry {
        serial: record.intent.serial,
        revocation,
        not_after: record.intent.not_after,
    })
}

pub(super) fn issued(row: &postgres::Row) -> Result<CertificateRecord> {
    match serial_entry(row)? {
        SerialEntry::Issued(record) => Ok(record),
        SerialEntry::Reserved(intent) => Err(StoreError::Corrupt {
            key: intent.serial.to_hex(),
            reason: "has DER but is recorded as reserved".into(),
        }),
    }
}

/// Inside a transaction: marks token `id` used at `at`, refusing an unknown or used one.
/// Shared by `consume_token` and ACME account creation.
fn use_token(tx: &mut Tx<'_, '_>, id: &str, at: OffsetDateTime) -> Result<TokenRecord> {
    let rows = tx.query("SELECT body FROM tokens WHERE id = $1 FOR UPDATE", &[&id])?;
    let Some(mut token) = record::<TokenRecord>(&rows, 0, id)? else {
        return Err(StoreError::NotFound {
            what: format!("token {id}"),
        });
    };
    if token.consumed_at.is_some() {
        return Err(StoreError::Conflict {
            what: format!("token {id} was already used"),
        });
    }
    token.consumed_at = Some(at);
    let body = to_json(&token)?;
    tx.execute("UPDATE tokens SET body = $2 WHERE id = $1", &[&id, &body])?;
    Ok(token)
}

fn exists(
    conn: &mut Connection,
    sql: &'static str,
    key: &(dyn postgres::types::ToSql + Sync),
) -> Result<bool> {
    Ok(!conn.query(sql, &[key])?.is_empty())
}

impl Store for PostgresStore {
    fn insert_agent(&self, agent: &AgentRecord) -> Result<()> {
        let id = agent.id.clone();
        let body = to_json(agent)?;
        let inserted = self.pool.run(move |c| {
            c.execute(
                "INSERT INTO agents (id, body) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&id, &body],
            )
        })?;
        if inserted == 0 {
            return Err(StoreError::AlreadyExists {
                what: format!("agent {}", agent.id),
            });
        }
        Ok(())
    }

    fn update_agent(&self, agent: &AgentRecord, expected: &AgentRecord) -> Result<()> {
        let id = agent.id.clone();
        let body = to_json(agent)?;
        let expected = expected.clone();
        self.pool.run(move |c| {
            c.transaction(|tx| {
                let rows = tx.query("SELECT body FROM agents WHERE id = $1 FOR UPDATE", &[&id])?;
                let stored: AgentRecord =
                    record(&rows, 0, &id)?.ok_or_else(|| StoreError::NotFound {
                        what: format!("agent {id}"),
                    })?;
                if stored != expected {
                    return Err(StoreError::Conflict {
                        what: format!("agent {id} changed since it was read"),
                    });
                }
                tx.execute("UPDATE agents SET body = $2 WHERE id = $1", &[&id, &body])?;
                Ok(())
            })
        })
    }

    fn agent(&self, id: &str) -> Result<Option<AgentRecord>> {
        let id = id.to_owned();
        self.pool.run(move |c| {
            let rows = c.query("SELECT body FROM agents WHERE id = $1", &[&id])?;
            record(&rows, 0, &id)
        })
    }

    fn agents(&self) -> Result<Vec<AgentRecord>> {
        self.pool.run(|c| {
            c.query("SELECT body FROM agents ORDER BY id", &[])?
                .iter()
                .map(|row| from_json("agent", &column::<String>(row, 0, "agent")?))
                .collect()
        })
    }

    fn reserve_serial(&self, intent: &IssuanceIntent) -> Result<()> {
        let serial = intent.serial;
        let columns = ReservationColumns::of(intent)?;
        let inserted = self.pool.run(move |c| {
            c.execute(
                "INSERT INTO serials (serial, agent_id, key_sha256, not_after, entry)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &columns.params(),
            )
        })?;
        if inserted == 0 {
            return Err(StoreError::AlreadyExists {
                what: format!("serial {serial}"),
            });
        }
        Ok(())
    }

    fn release_serial(&self, serial: &Serial) -> Result<bool> {
        let serial = *serial;
        let deleted = self.pool.run(move |c| {
            c.execute(
                "DELETE FROM serials WHERE serial = $1 AND der IS NULL",
                &[&serial.as_bytes().as_slice()],
            )
        })?;
        Ok(deleted == 1)
    }

    fn record_certificate(&self, record: &CertificateRecord) -> Result<()> {
        let serial = record.intent.serial;
        let columns = CertificateColumns::of(record)?;
        let (stored, reserved) = self.pool.run(move |c| {
            let bytes = serial.as_bytes().as_slice();
            // Only a reservation without a certificate moves to issued: racing recorders of
            // one serial cannot both succeed.
            let stored = c.execute(fill_serial!(), &columns.params(&bytes))?;
            Ok((stored, reserved(c, stored, &bytes)?))
        })?;
        certificate_outcome(&serial, stored, reserved)
    }

    fn record_certificate_of_order(
        &self,
        record: &CertificateRecord,
        order: &AcmeOrder,
        expected: AcmeOrderStatus,
    ) -> Result<Result<()>> {
        let serial = record.intent.serial;
        let columns = CertificateColumns::of(record)?;
        let order_columns = acme::OrderColumns::of(order, expected)?;
        let (stored, reserved, updated, found) = self.pool.run(move |c| {
            let bytes = serial.as_bytes().as_slice();
            let mut params = columns.params(&bytes).to_vec();
            params.extend(order_columns.params());
            // The order moves only with its certificate: a statement's parts see one snapshot,
            // and the order's part waits for the certificate's row.
            let rows = c.query(
                concat!(
                    "WITH certificate AS (",
                    fill_serial!(),
                    " RETURNING 1), completed AS (
                         UPDATE acme_orders SET status = $9, certificate = $10, body = $11
                         WHERE id = $7 AND status = $8 AND EXISTS (SELECT 1 FROM certificate)
                         RETURNING 1
                     )
                     SELECT (SELECT count(*) FROM certificate), (SELECT count(*) FROM completed)"
                ),
                &params,
            )?;
            let row = only_row(&rows)?;
            let stored = u64::try_from(column::<i64>(row, 0, "certificate")?).unwrap_or(0);
            let updated = u64::try_from(column::<i64>(row, 1, "order")?).unwrap_or(0);
            // Whether the order exists matters only when the certificate went in and the
            // order did not move.
            let found = stored != 1 || updated == 1 || acme::order_exists(c, &order_columns.id)?;
            Ok((stored, reserved(c, stored, &bytes)?, updated, found))
        })?;
        certificate_outcome(&serial, stored, reserved)?;
        Ok(acme::order_outcome(order, expected, updated, found))
    }

    fn serial(&self, serial: &Serial) -> Result<Option<SerialEntry>> {
        let serial = *serial;
        self.pool.run(move |c| {
            let rows = c.query(
                "SELECT entry, der FROM serials WHERE serial = $1",
                &[&serial.as_bytes().as_slice()],
            )?;
            rows.first().map(serial_entry).transpose()
        })
    }

    fn certificates(&self, filter: &CertificateFilter) -> Result<Vec<CertificateRecord>> {
        let agent = filter.agent_id.clone();
        self.pool.run(move |c| {
            let rows = match &agent {
                Some(agent) => c.query(
                    "SELECT entry, der FROM serials WHERE der IS NOT NULL AND agent_id = $1
                     ORDER BY serial",
                    &[agent],
                )?,
                None => c.query(
                    "SELECT entry, der FROM serials WHERE der IS NOT NULL ORDER BY serial",
                    &[],
                )?,
            };
            rows.iter().map(issued).collect()
        })
    }

    fn certificates_with_key(&self, key_sha256: &str) -> Result<Vec<CertificateRecord>> {
        let key = key_sha256.to_owned();
        self.pool.run(move |c| {
            c.query(
                "SELECT entry, der FROM serials WHERE der IS NOT NULL AND key_sha256 = $1
                 ORDER BY serial",
                &[&key],
            )?
            .iter()
            .map(issued)
            .collect()
        })
    }

    fn orphaned_intents(&self) -> Result<Vec<IssuanceIntent>> {
        self.pool.run(|c| {
            c.query(
                "SELECT entry, der FROM serials WHERE der IS NULL ORDER BY serial",
                &[],
            )?
            .iter()
            .map(|row| match serial_entry(row)? {
                SerialEntry::Reserved(intent) => Ok(intent),
                SerialEntry::Issued(record) => Err(StoreError::Corrupt {
                    key: record.intent.serial.to_hex(),
                    reason: "recorded as issued without its DER".into(),
                }),
            })
            .collect()
        })
    }

    fn serial_count(&self) -> Result<u64> {
        self.pool.run(|c| {
            let rows = c.query("SELECT count(*) FROM serials", &[])?;
            let count = match rows.first() {
                Some(row) => column::<i64>(row, 0, "serial count")?,
                None => 0,
            };
            u64::try_from(count).map_err(|e| StoreError::Backend(format!("serial count: {e}")))
        })
    }

    fn revoke(&self, serial: &Serial, revocation: Revocation) -> Result<CertificateRecord> {
        let serial = *serial;
        self.pool.run(move |c| {
            c.transaction(|tx| {
                let bytes = serial.as_bytes().as_slice();
                let rows = tx.query(
                    "SELECT entry, der FROM serials WHERE serial = $1 FOR UPDATE",
                    &[&bytes],
                )?;
                let Some(row) = rows.first() else {
                    return Err(StoreError::NotFound {
                        what: format!("certificate {serial}"),
                    });
                };
                let mut record = match serial_entry(row)? {
                    SerialEntry::Issued(record) => record,
                    // Signed-but-unrecorded certificates are revoked through reconciliation,
                    // which first re-creates their record from the audit log.
                    SerialEntry::Reserved(_) => {
                        return Err(StoreError::NotFound {
                            what: format!("certificate {serial} (serial reserved, never stored)"),
                        });
                    }
                };
                if record.revocation.is_some() {
                    return Err(StoreError::Conflict {
                        what: format!("certificate {serial} is already revoked"),
                    });
                }
                record.revocation = Some(revocation);
                let entry = to_json(&SerialEntry::Issued(record.clone()))?;
                tx.execute(
                    "UPDATE serials SET entry = $2, revoked = true,
                         revocation_recorded_us = (extract(epoch FROM clock_timestamp())
                             * 1000000)::bigint
                     WHERE serial = $1",
                    &[&bytes, &entry],
                )?;
                Ok(record)
            })
        })
    }

    fn revoked(&self, expiring_after: OffsetDateTime) -> Result<Vec<RevokedEntry>> {
        // The column holds whole seconds rounded down, so the scan may return a few entries
        // that expire just before `expiring_after`; the exact time in the record decides.
        let floor = unix(expiring_after);
        self.pool.run(move |c| {
            let mut out = Vec::new();
            for row in c.query(
                "SELECT entry FROM serials WHERE revoked AND not_after >= $1 ORDER BY serial",
                &[&floor],
            )? {
                let entry = revoked_entry(&row, "flagged revoked")?;
                if entry.not_after >= expiring_after {
                    out.push(entry);
                }
            }
            Ok(out)
        })
    }

    fn block_key(&self, key_sha256: &[u8; 32]) -> Result<()> {
        let key = *key_sha256;
        self.pool.run(move |c| {
            c.execute(
                "INSERT INTO blocked_keys (key_sha256) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&key.as_slice()],
            )
            .map(drop)
        })
    }

    fn issuance_facts(
        &self,
        agent_id: &str,
        key_sha256: &[u8; 32],
        account_thumbprint: Option<&str>,
    ) -> Result<IssuanceFacts> {
        let agent_id = agent_id.to_owned();
        let key = *key_sha256;
        let thumbprint = account_thumbprint.map(str::to_owned);
        self.pool.run(move |c| {
            let rows = c.query(
                concat!("SELECT ", issuance_facts!()),
                &[&agent_id, &key.as_slice(), &thumbprint],
            )?;
            issuance_facts_of(only_row(&rows)?, 0, &agent_id)
        })
    }

    fn is_key_blocked(&self, key_sha256: &[u8; 32]) -> Result<bool> {
        let key = *key_sha256;
        self.pool.run(move |c| {
            exists(
                c,
                "SELECT 1 FROM blocked_keys WHERE key_sha256 = $1",
                &key.as_slice(),
            )
        })
    }

    fn insert_token(&self, token: &TokenRecord) -> Result<()> {
        let id = token.id.clone();
        let body = to_json(token)?;
        let inserted = self.pool.run(move |c| {
            c.execute(
                "INSERT INTO tokens (id, body) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&id, &body],
            )
        })?;
        if inserted == 0 {
            return Err(StoreError::AlreadyExists {
                what: format!("token {}", token.id),
            });
        }
        Ok(())
    }

    fn token(&self, id: &str) -> Result<Option<TokenRecord>> {
        let id = id.to_owned();
        self.pool.run(move |c| {
            let rows = c.query("SELECT body FROM tokens WHERE id = $1", &[&id])?;
            record(&rows, 0, &id)
        })
    }

    fn consume_token(&self, id: &str, at: OffsetDateTime) -> Result<TokenRecord> {
        let id = id.to_owned();
        self.pool
            .run(move |c| c.transaction(|tx| use_token(tx, &id, at)))
    }

    fn restore_token(&self, id: &str, consumed_at: OffsetDateTime) -> Result<bool> {
        let id = id.to_owned();
        self.pool.run(move |c| {
            c.transaction(|tx| {
                let rows = tx.query("SELECT body FROM tokens WHERE id = $1 FOR UPDATE", &[&id])?;
                let Some(mut token) = record::<TokenRecord>(&rows, 0, &id)? else {
                    return Ok(false);
                };
                if !token
                    .consumed_at
                    .is_some_and(|t| crate::same_second(t, consumed_at))
                {
                    return Ok(false);
                }
                token.consumed_at = None;
                let body = to_json(&token)?;
                tx.execute("UPDATE tokens SET body = $2 WHERE id = $1", &[&id, &body])?;
                Ok(true)
            })
        })
    }

    fn next_crl_number(&self, now: OffsetDateTime) -> Result<CrlState> {
        self.pool.run(move |c| {
            c.transaction(|tx| {
                let rows = tx.query("SELECT body FROM crl_state WHERE id = 1 FOR UPDATE", &[])?;
                let Some(row) = rows.first() else {
                    return Err(StoreError::Corrupt {
                        key: "crl_state".into(),
                        reason: "the CRL state row is missing".into(),
                    });
                };
                let previous = match column::<Option<String>>(row, 0, "crl_state")? {
                    Some(body) => Some(from_json::<CrlState>("crl_state", &body)?),
                    None => None,
                };
                let next = match previous {
                    Some(p) => CrlState {
                        number: p.number.checked_add(1).ok_or_else(|| StoreError::Corrupt {
                            key: "crl_state".into(),
                            reason: "the CRL number is exhausted".into(),
                        })?,
                        this_update: now.max(p.this_update),
                    },
                    None => CrlState {
                        number: 1,
                        this_update: now,
                    },
                };
                let body = to_json(&next)?;
                tx.execute("UPDATE crl_state SET body = $1 WHERE id = 1", &[&body])?;
                Ok(next)
            })
        })
    }

    fn crl_state(&self) -> Result<Option<CrlState>> {
        self.pool.run(|c| {
            let rows = c.query("SELECT body FROM crl_state WHERE id = 1", &[])?;
            match rows.first() {
                Some(row) => match column::<Option<String>>(row, 0, "crl_state")? {
                    Some(body) => Ok(Some(from_json("crl_state", &body)?)),
                    None => Ok(None),
                },
                None => Ok(None),
            }
        })
    }

    fn create_acme_account(
        &self,
        account: &AcmeAccount,
        token_id: &str,
        at: OffsetDateTime,
    ) -> Result<()> {
        acme::create_account(&self.pool, account, token_id, at)
    }

    fn acme_account(&self, id: &str) -> Result<Option<AcmeAccount>> {
        acme::account(&self.pool, id)
    }

    fn acme_account_by_thumbprint(&self, thumbprint: &str) -> Result<Option<AcmeAccount>> {
        acme::account_by_thumbprint(&self.pool, thumbprint)
    }

    fn update_acme_account(&self, account: &AcmeAccount) -> Result<()> {
        acme::update_account(&self.pool, account)
    }

    fn change_acme_account_key(
        &self,
        id: &str,
        old_thumbprint: &str,
        new_jwk: &str,
        new_thumbprint: &str,
    ) -> Result<AcmeAccount> {
        acme::change_account_key(&self.pool, id, old_thumbprint, new_jwk, new_thumbprint)
    }

    fn insert_acme_order(
        &self,
        order: &AcmeOrder,
        authorizations: &[AcmeAuthorization],
        now: OffsetDateTime,
    ) -> Result<()> {
        acme::insert_order(&self.pool, order, authorizations, now)
    }

    fn acme_order(&self, id: &str) -> Result<Option<AcmeOrder>> {
        acme::order(&self.pool, id)
    }

    fn acme_orders_of_account(&self, account_id: &str) -> Result<Vec<String>> {
        acme::orders_of_account(&self.pool, account_id)
    }

    fn update_acme_order(&self, order: &AcmeOrder, expected: AcmeOrderStatus) -> Result<()> {
        acme::update_order(&self.pool, order, expected)
    }

    fn claim_acme_order_for_issuance(
        &self,
        order: &AcmeOrder,
        expected: AcmeOrderStatus,
        agent_id: &str,
        key_sha256: &[u8; 32],
        account_thumbprint: Option<&str>,
        reservation: Option<&IssuanceIntent>,
    ) -> Result<OrderClaim> {
        let columns = acme::OrderColumns::of(order, expected)?;
        let reservation = reservation.map(ReservationColumns::of).transpose()?;
        let agent_id = agent_id.to_owned();
        let key = *key_sha256;
        let thumbprint = account_thumbprint.map(str::to_owned);
        let (updated, found, reserved, facts) = self.pool.run(move |c| {
            let key = key.as_slice();
            let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> =
                vec![&agent_id, &key, &thumbprint];
            params.extend(columns.params());
            // The facts are read whether or not the order moves; they are returned only if it
            // did. The serial is reserved only with the order's move: a claim that loses
            // leaves nothing behind.
            let rows = match &reservation {
                None => c.query(
                    concat!(
                        "WITH claimed AS (
                             UPDATE acme_orders SET status = $6, certificate = $7, body = $8
                             WHERE id = $4 AND status = $5
                             RETURNING 1
                         )
                         SELECT (SELECT count(*) FROM claimed), 0::bigint, ",
                        issuance_facts!()
                    ),
                    &params,
                )?,
                Some(reservation) => {
                    params.extend(reservation.params());
                    c.query(
                        concat!(
                            "WITH claimed AS (
                                 UPDATE acme_orders SET status = $6, certificate = $7, body = $8
                                 WHERE id = $4 AND status = $5
                                 RETURNING 1
                             ), reserved AS (
                                 INSERT INTO serials (serial, agent_id, key_sha256, not_after, entry)
                                 SELECT $9, $10, $11, $12, $13 WHERE EXISTS (SELECT 1 FROM claimed)
                                 ON CONFLICT DO NOTHING
                                 RETURNING 1
                             )
                             SELECT (SELECT count(*) FROM claimed), (SELECT count(*) FROM reserved), ",
                            issuance_facts!()
                        ),
                        &params,
                    )?
                }
            };
            let row = only_row(&rows)?;
            let updated = u64::try_from(column::<i64>(row, 0, "order")?).unwrap_or(0);
            let reserved = column::<i64>(row, 1, "reservation")? == 1;
            let found = updated == 1 || acme::order_exists(c, &columns.id)?;
            Ok((updated, found, reserved, issuance_facts_of(row, 2, &agent_id)?))
        })?;
        acme::order_outcome(order, expected, updated, found)?;
        Ok(OrderClaim { facts, reserved })
    }

    fn acme_order_of_certificate(&self, serial: &Serial) -> Result<Option<AcmeOrder>> {
        acme::order_of_certificate(&self.pool, serial)
    }

    fn acme_certificate(&self, serial: &Serial) -> Result<Option<(AcmeOrder, CertificateRecord)>> {
        acme::certificate(&self.pool, serial)
    }

    fn purge_acme_orders(
        &self,
        created_before: OffsetDateTime,
        expired_before: OffsetDateTime,
        limit: usize,
    ) -> Result<u64> {
        acme::purge_orders(&self.pool, created_before, expired_before, limit)
    }

    fn acme_replacement(&self, cert_id: &str) -> Result<Option<AcmeOrder>> {
        acme::replacement(&self.pool, cert_id)
    }

    fn acme_authorization(&self, id: &str) -> Result<Option<AcmeAuthorization>> {
        acme::authorization(&self.pool, id)
    }

    fn update_acme_authorization(
        &self,
        authorization: &AcmeAuthorization,
        expected: AcmeAuthorizationStatus,
    ) -> Result<()> {
        acme::update_authorization(&self.pool, authorization, expected)
    }

    fn take_rate_limit(
        &self,
        key: &str,
        limit: u32,
        window: time::Duration,
        now: OffsetDateTime,
    ) -> Result<RateDecision> {
        acme::take_rate_limit(&self.pool, key, limit, window, now)
    }

    fn check_rate_limit(
        &self,
        key: &str,
        limit: u32,
        window: time::Duration,
        now: OffsetDateTime,
    ) -> Result<RateDecision> {
        acme::check_rate_limit(&self.pool, key, limit, window, now)
    }

    fn take_rate_limits(&self, limits: &[RateLimit], now: OffsetDateTime) -> Result<RateDecision> {
        acme::take_rate_limits(&self.pool, limits, now)
    }

    fn return_rate_limit(
        &self,
        key: &str,
        limit: u32,
        window: time::Duration,
        now: OffsetDateTime,
    ) -> Result<()> {
        acme::return_rate_limit(&self.pool, key, limit, window, now)
    }

    fn record_scep_transaction(&self, transaction: &ScepTransaction) -> Result<()> {
        let key = transaction.request_key.clone().into_bytes();
        let body = to_json(transaction)?;
        let created = unix(transaction.created_at);
        let inserted = self.pool.run(move |c| {
            c.execute(
                "INSERT INTO scep_transactions (request_key, created, body)
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&key, &created, &body],
            )
        })?;
        if inserted == 0 {
            return Err(StoreError::AlreadyExists {
                what: format!("SCEP transaction {}", transaction.transaction_id),
            });
        }
        Ok(())
    }

    fn scep_transaction(&self, request_key: &str) -> Result<Option<ScepTransaction>> {
        let key = request_key.as_bytes().to_vec();
        let name = request_key.to_owned();
        self.pool.run(move |c| {
            let rows = c.query(
                "SELECT body FROM scep_transactions WHERE request_key = $1",
                &[&key],
            )?;
            record(&rows, 0, &name)
        })
    }

    fn purge_certificates(
        &self,
        expired_before: OffsetDateTime,
        revoked_expired_before: OffsetDateTime,
        limit: usize,
    ) -> Result<u64> {
        // The column holds notAfter rounded down to the second: `not_after < floor(t)` holds
        // only for certificates that expired before `t`.
        let before = unix(expired_before);
        let revoked_before = unix(revoked_expired_before);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.pool.run(move |c| {
            // The conditions again on the outer statement: a revocation committed while the
            // inner scan ran is seen there, and the row stays. Rows another node is deleting
            // are skipped, not waited for.
            c.execute(
                "DELETE FROM serials WHERE serial IN (
                     SELECT serial FROM serials
                     WHERE der IS NOT NULL AND not_after < $1
                       AND (NOT revoked OR not_after < $2)
                     ORDER BY not_after LIMIT $3 FOR UPDATE SKIP LOCKED)
                 AND der IS NOT NULL AND not_after < $1 AND (NOT revoked OR not_after < $2)",
                &[&before, &revoked_before, &limit],
            )
        })
    }

    fn purge_scep_transactions(&self, created_before: OffsetDateTime, limit: usize) -> Result<u64> {
        let before = unix(created_before);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.pool.run(move |c| {
            // Rows another node is deleting are skipped, not waited for.
            c.execute(
                "DELETE FROM scep_transactions WHERE request_key IN (
                     SELECT request_key FROM scep_transactions WHERE created < $1
                     ORDER BY created LIMIT $2 FOR UPDATE SKIP LOCKED)",
                &[&before, &limit],
            )
        })
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn revocations_since(&self, since: OffsetDateTime) -> Result<RevocationFeed> {
        // The database's clock, not this node's: nodes' clocks may disagree, and the stamp
        // is the database's too.
        let since = unix_micros(since);
        self.pool.run(move |c| {
            let as_of = database_clock(c)?;
            let mut entries = Vec::new();
            for row in c.query(
                "SELECT entry FROM serials WHERE revocation_recorded_us >= $1",
                &[&since],
            )? {
                entries.push(revoked_entry(&row, "stamped revoked")?);
            }
            Ok(RevocationFeed { entries, as_of })
        })
    }

    fn issued_since(&self, since: OffsetDateTime) -> Result<IssuanceFeed> {
        let since = unix_micros(since);
        self.pool.run(move |c| {
            let as_of = database_clock(c)?;
            // The index columns alone: the record's JSON is not needed to sign `good`.
            let mut entries = Vec::new();
            for row in c.query(
                "SELECT serial, not_after FROM serials
                 WHERE certificate_recorded_us >= $1 AND NOT revoked",
                &[&since],
            )? {
                let bytes = column::<Vec<u8>>(&row, 0, "serial")?;
                let serial = <[u8; Serial::LEN]>::try_from(bytes.as_slice())
                    .ok()
                    .and_then(Serial::from_bytes)
                    .ok_or_else(|| StoreError::Corrupt {
                        key: hex::encode(&bytes),
                        reason: "not a serial".into(),
                    })?;
                let not_after = OffsetDateTime::from_unix_timestamp(column(&row, 1, "not_after")?)
                    .map_err(|e| StoreError::Corrupt {
                        key: serial.to_hex(),
                        reason: format!("not_after column: {e}"),
                    })?;
                entries.push(IssuedEntry { serial, not_after });
            }
            Ok(IssuanceFeed { entries, as_of })
        })
    }

    fn share_crl(&self, crl: &SharedCrl) -> Result<bool> {
        let number = crl_number_column(crl.number)?;
        let this_update = unix(crl.this_update);
        let der = crl.der.clone();
        self.pool.run(move |c| {
            // One statement, so two nodes sharing at once cannot both win.
            let kept = c.execute(
                "INSERT INTO shared_crl (id, number, this_update, der) VALUES (1, $1, $2, $3)
                 ON CONFLICT (id) DO UPDATE
                 SET number = EXCLUDED.number, this_update = EXCLUDED.this_update,
                     der = EXCLUDED.der
                 WHERE shared_crl.number < EXCLUDED.number",
                &[&number, &this_update, &der],
            )?;
            Ok(kept == 1)
        })
    }

    fn shared_crl(&self, above: u64) -> Result<Option<SharedCrl>> {
        // Nothing the column holds is above its own maximum.
        let above = i64::try_from(above).unwrap_or(i64::MAX);
        self.pool.run(move |c| {
            let rows = c.query(
                "SELECT number, this_update, der FROM shared_crl WHERE id = 1 AND number > $1",
                &[&above],
            )?;
            let Some(row) = rows.first() else {
                return Ok(None);
            };
            let corrupt = |reason: String| StoreError::Corrupt {
                key: "shared_crl".into(),
                reason,
            };
            let number = u64::try_from(column::<i64>(row, 0, "shared_crl")?)
                .map_err(|e| corrupt(format!("number: {e}")))?;
            let this_update = OffsetDateTime::from_unix_timestamp(column(row, 1, "shared_crl")?)
                .map_err(|e| corrupt(format!("this_update: {e}")))?;
            Ok(Some(SharedCrl {
                number,
                this_update,
                der: column(row, 2, "shared_crl")?,
            }))
        })
    }

    fn redeem_nonce(&self, nonce: &[u8; 16], expires_at: OffsetDateTime) -> Result<bool> {
        let redemption = Redemption {
            nonce: *nonce,
            expires: unix(expires_at),
            account: None,
            subject: None,
        };
        Ok(self.redeem(redemption)?.0)
    }

    fn redeem_nonce_and_get_account(
        &self,
        nonce: &[u8; 16],
        expires_at: OffsetDateTime,
        account_id: &str,
        subject: Option<RequestSubject<'_>>,
    ) -> Result<AccountRedemption> {
        let redemption = Redemption {
            nonce: *nonce,
            expires: unix(expires_at),
            account: Some(account_id.to_owned()),
            subject: subject.map(|subject| match subject {
                RequestSubject::AccountAgent => ("agent", String::new()),
                RequestSubject::Order(id) => ("order", id.to_owned()),
                RequestSubject::Authorization(id) => ("authz", id.to_owned()),
            }),
        };
        let (fresh, account, body) = self.redeem(redemption)?;
        let account = account
            .map(|body| from_json::<AcmeAccount>(account_id, &body))
            .transpose()?;
        let subject = match subject {
            None => None,
            Some(RequestSubject::AccountAgent) => Some(SubjectRecord::Agent(
                body.map(|b| from_json("agent", &b)).transpose()?,
            )),
            Some(RequestSubject::Order(id)) => Some(SubjectRecord::Order(
                body.map(|b| from_json(id, &b)).transpose()?,
            )),
            Some(RequestSubject::Authorization(id)) => Some(SubjectRecord::Authorization(
                body.map(|b| from_json(id, &b)).transpose()?,
            )),
        };
        Ok(AccountRedemption {
            fresh,
            account,
            subject,
        })
    }

    fn purge_nonces(&self, now: OffsetDateTime) -> Result<u64> {
        let now = unix(now);
        self.pool
            .run(move |c| c.execute("DELETE FROM acme_nonces WHERE expires < $1", &[&now]))
    }

    /// Every write was a synchronous commit, durable before it returned.
    fn commit(&self) -> Result<()> {
        Ok(())
    }
}
