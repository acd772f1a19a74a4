//! The schema, as a forward-only list of numbered migrations.
//!
//! Every node runs [`migrate`] when it opens the store. Each step runs in its own transaction
//! that first takes a transaction-scoped advisory lock, so nodes starting together apply each
//! step once, in order, and a step either lands whole or not at all (PostgreSQL's DDL is
//! transactional). The version reached is recorded in `schema_version`. A database already at a
//! version this binary does not know was migrated by a newer agentca; running against it could
//! break invariants the newer schema enforces, so opening it fails.
//!
//! Rules for new steps: append, never edit or reorder a released one; a step must leave the data
//! usable by the binary that wrote it only if that binary refuses to run anyway, which it does
//! (it sees a newer version).
//!
//! Layout choices: records are stored as their JSON (`text`, not `jsonb`: `jsonb` rejects the
//! `\u0000` escape that client-supplied strings may carry) beside the few columns that indexes,
//! uniqueness and compare-and-set need. Client-chosen keys (SCEP transactionIDs, ARI
//! certificate ids, rate-limit keys) are `bytea`, which holds any bytes. Text keys use the "C"
//! collation so listings are in byte order, as in the sled backend.

use super::pool::Tx;
use crate::{Result, StoreError};

/// Key of the advisory lock that serializes migrations ("agentca" in ASCII).
const MIGRATION_LOCK: i64 = 0x0061_6765_6e74_6361;

/// One schema step.
pub(crate) struct Migration {
    /// Its number: the first is 1, each next one is one more.
    pub(crate) version: i32,
    /// What it does, for the version table and for people reading it.
    pub(crate) description: &'static str,
    /// The statements.
    pub(crate) sql: &'static str,
}

/// Every step, oldest first.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "initial schema",
        sql: r#"
CREATE TABLE agents (
    id text COLLATE "C" PRIMARY KEY,
    body text NOT NULL
);

-- A serial's row exists from its reservation on; der is set when the certificate is stored.
CREATE TABLE serials (
    serial bytea PRIMARY KEY,
    agent_id text COLLATE "C" NOT NULL,
    key_sha256 text COLLATE "C" NOT NULL,
    -- notAfter in Unix seconds (rounded down), for the CRL's range scan.
    not_after bigint NOT NULL,
    revoked boolean NOT NULL DEFAULT false,
    entry text NOT NULL,
    der bytea
);
CREATE INDEX serials_issued_by_agent ON serials (agent_id, serial) WHERE der IS NOT NULL;
CREATE INDEX serials_issued_by_key ON serials (key_sha256, serial) WHERE der IS NOT NULL;
CREATE INDEX serials_reserved ON serials (serial) WHERE der IS NULL;
CREATE INDEX serials_revoked ON serials (not_after) WHERE revoked;

CREATE TABLE blocked_keys (
    key_sha256 bytea PRIMARY KEY
);

CREATE TABLE tokens (
    id text COLLATE "C" PRIMARY KEY,
    body text NOT NULL
);

-- One row, present from the start so that allocating a number always has a row to lock.
CREATE TABLE crl_state (
    id smallint PRIMARY KEY CHECK (id = 1),
    body text
);
INSERT INTO crl_state (id, body) VALUES (1, NULL);

CREATE TABLE scep_transactions (
    request_key bytea PRIMARY KEY,
    body text NOT NULL
);

CREATE TABLE acme_accounts (
    id text COLLATE "C" PRIMARY KEY,
    thumbprint text COLLATE "C" NOT NULL UNIQUE,
    body text NOT NULL
);

CREATE TABLE acme_orders (
    id text COLLATE "C" PRIMARY KEY,
    account_id text COLLATE "C" NOT NULL,
    -- created_at in Unix seconds: an account's orders are listed oldest first.
    created bigint NOT NULL,
    status text NOT NULL,
    certificate bytea,
    body text NOT NULL
);
CREATE INDEX acme_orders_by_account ON acme_orders (account_id, created, id);
CREATE INDEX acme_orders_by_certificate ON acme_orders (certificate)
    WHERE certificate IS NOT NULL;

CREATE TABLE acme_authorizations (
    id text COLLATE "C" PRIMARY KEY,
    status text NOT NULL,
    body text NOT NULL
);

-- RFC 9773 replacement claims: ARI certificate id -> the order that claims it.
CREATE TABLE acme_replacements (
    cert_id bytea PRIMARY KEY,
    order_id text COLLATE "C" NOT NULL
);

-- Which CA the database serves (the SHA-256 of its root certificate, hex), so that a node
-- given another CA's database refuses it instead of issuing over its serials and CRL numbers.
CREATE TABLE ca_identity (
    id smallint PRIMARY KEY CHECK (id = 1),
    root_sha256 text NOT NULL
);

-- GCRA state: the theoretical arrival time, 16 bytes big-endian nanoseconds.
CREATE TABLE rate_limits (
    key bytea PRIMARY KEY,
    tat bytea NOT NULL
);
"#,
    },
    Migration {
        version: 2,
        description: "what nodes learn from each other: revocation stamps, used ACME nonces",
        sql: r#"
-- When the database recorded a revocation (its clock, microseconds since the Unix epoch), so
-- that every node can ask for the revocations made since it last looked. Revocations made
-- before this step keep NULL: they are older than any node now running.
ALTER TABLE serials ADD COLUMN revocation_recorded_us bigint;
CREATE INDEX serials_revocation_recorded ON serials (revocation_recorded_us)
    WHERE revocation_recorded_us IS NOT NULL;

-- ACME nonces any node has accepted; a nonce is single-use across all nodes. Rows go once the
-- nonce has expired (Unix seconds), when its age alone refuses it.
CREATE TABLE acme_nonces (
    nonce bytea PRIMARY KEY,
    expires bigint NOT NULL
);
CREATE INDEX acme_nonces_by_expiry ON acme_nonces (expires);
"#,
    },
    Migration {
        version: 3,
        description: "old ACME orders and SCEP transactions can be forgotten: both by age",
        sql: r#"
-- expires_at in Unix seconds; NULL for orders stored before this step.
ALTER TABLE acme_orders ADD COLUMN expires bigint;
CREATE INDEX acme_orders_by_created ON acme_orders (created);
CREATE INDEX acme_replacements_by_order ON acme_replacements (order_id);

-- created_at in Unix seconds; transactions recorded before this step count from it.
ALTER TABLE scep_transactions ADD COLUMN created bigint;
UPDATE scep_transactions SET created = extract(epoch FROM now())::bigint;
ALTER TABLE scep_transactions ALTER COLUMN created SET NOT NULL;
CREATE INDEX scep_transactions_by_created ON scep_transactions (created);
"#,
    },
    Migration {
        version: 4,
        description: "expired certificates can be forgotten: certificates by notAfter",
        sql: r#"
CREATE INDEX serials_issued_by_expiry ON serials (not_after) WHERE der IS NOT NULL;
"#,
    },
    Migration {
        version: 5,
        description: "an ACME account's agent as a column, read with the account",
        sql: r#"
-- Kept by the database itself from the record, so no writer can let the two differ, and a
-- record that is not JSON cannot be stored at all (it would stop this step, not a request).
ALTER TABLE acme_accounts ADD COLUMN agent_id text COLLATE "C"
    GENERATED ALWAYS AS (body::json ->> 'agent_id') STORED;
"#,
    },
    Migration {
        version: 6,
        description: "what nodes learn from each other: certificate stamps",
        sql: r#"
-- When the database stored a certificate (its clock, microseconds since the Unix epoch), so
-- that every node can pre-sign OCSP answers for what the others issued since it last looked.
-- Certificates stored before this step keep NULL: every node now running read them at start.
ALTER TABLE serials ADD COLUMN certificate_recorded_us bigint;
CREATE INDEX serials_certificate_recorded ON serials (certificate_recorded_us)
    WHERE certificate_recorded_us IS NOT NULL;
"#,
    },
    Migration {
        version: 7,
        description: "one CRL for every node: the highest-numbered CRL any node signed",
        sql: r#"
CREATE TABLE shared_crl (
    id smallint PRIMARY KEY CHECK (id = 1),
    number bigint NOT NULL,
    this_update bigint NOT NULL,
    der bytea NOT NULL
);
"#,
    },
];

/// The newest version this binary knows.
#[cfg(test)]
pub(crate) fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Brings the database to [`latest`], one locked transaction per step.
pub(crate) fn migrate(conn: &mut super::pool::Connection) -> Result<i32> {
    migrate_with(conn, MIGRATIONS)
}

pub(crate) fn migrate_with(
    conn: &mut super::pool::Connection,
    migrations: &[Migration],
) -> Result<i32> {
    let known = migrations.last().map_or(0, |m| m.version);
    loop {
        let reached = conn.transaction(|tx| {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_version (
                     version integer PRIMARY KEY,
                     description text NOT NULL,
                     applied_at timestamptz NOT NULL DEFAULT now()
                 )",
            )?;
            let current = current_version(tx)?;
            if current > known {
                return Err(StoreError::Backend(format!(
                    "the database at {} has schema version {current}, newer than the {known} \
                     this agentca knows: it was upgraded by a newer agentca; run that version \
                     (schema changes are forward-only)",
                    tx.target()
                )));
            }
            let Some(next) = migrations.iter().find(|m| m.version == current + 1) else {
                return Ok(None);
            };
            tx.batch_execute(next.sql)?;
            tx.execute(
                "INSERT INTO schema_version (version, description) VALUES ($1, $2)",
                &[&next.version, &next.description],
            )?;
            Ok(Some(next.version))
        })?;
        match reached {
            Some(_) => continue,
            None => return Ok(known),
        }
    }
}

fn current_version(tx: &mut Tx<'_, '_>) -> Result<i32> {
    let row = tx.query_opt("SELECT max(version) FROM schema_version", &[])?;
    Ok(match row {
        Some(row) => super::column::<Option<i32>>(&row, 0, "schema_version")?.unwrap_or(0),
        None => 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_up_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                usize::try_from(m.version).unwrap(),
                i + 1,
                "{}",
                m.description
            );
        }
        assert_eq!(latest(), i32::try_from(MIGRATIONS.len()).unwrap());
    }
}
