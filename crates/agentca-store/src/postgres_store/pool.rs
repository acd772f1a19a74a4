//! Connections, and the threads that may use them.
//!
//! The sync `postgres` client runs a small tokio runtime inside every call, which tokio forbids
//! on a thread that drives async tasks, and agentca's protocol handlers may call the store
//! inline on tokio worker threads. So a call runs on the calling thread only where
//! [`crate::blocking`] says that is allowed (threads outside any runtime, and blocking threads
//! that say so); any other call is handed to one of the pool's own threads, and the caller
//! blocks on a plain channel for the answer, as it would on a disk write. Either way it takes
//! one of a fixed set of sessions, so the database sees at most that many connections. Running
//! inline spares each statement two thread hand-offs, which were most of what a store call
//! cost the node.
//!
//! A lost connection fails the job that found it (the statement may or may not have run, so it
//! is not retried) and is reopened for the next job. Other connections opened before the loss
//! are checked before their next job, so a database restart costs one failed call, not one per
//! connection.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use postgres::{Client, Statement};

use super::db_error;
use super::tls::{RustlsConnect, TlsOptions};
use crate::{Result, StoreError};

/// How long a connection may take to answer a liveness check after another one was lost.
const VALIDATE_TIMEOUT: Duration = Duration::from_secs(5);

type Job = Box<dyn FnOnce(&Shared) + Send>;

/// What every connection shares.
struct Shared {
    config: postgres::Config,
    /// TLS as the URL's `ssl…` options ask (read once, at start).
    tls: RustlsConnect,
    /// Printable description of the database, without secrets.
    target: String,
    /// Bumped whenever a connection is found lost.
    losses: AtomicU64,
    /// The sessions no call is using.
    idle: Mutex<Vec<Connection>>,
    /// Signalled when a session goes back to `idle`.
    returned: Condvar,
}

impl Shared {
    /// Runs `f` on this thread with an idle session, waiting for one if all are in use.
    fn with_session<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let mut conn = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                if let Some(conn) = idle.pop() {
                    break conn;
                }
                idle = self
                    .returned
                    .wait(idle)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        LOST.with(|lost| lost.set(false));
        let result =
            std::panic::catch_unwind(AssertUnwindSafe(|| f(&mut conn))).unwrap_or_else(|_| {
                conn.reset();
                Err(StoreError::Backend("a database job panicked".into()))
            });
        // Before answering: the caller's next call must already see the loss.
        conn.check_after_job();
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
        self.returned.notify_one();
        result
    }
}

/// A fixed set of connection threads fed by one queue.
pub(crate) struct Pool {
    queue: Mutex<Option<Sender<Job>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    shared: Arc<Shared>,
}

impl Pool {
    /// Starts `size` connection threads with libpq's default TLS (`prefer`, nothing checked);
    /// they connect on their first job.
    #[cfg(test)]
    pub(crate) fn start(config: postgres::Config, target: String, size: usize) -> Result<Self> {
        Self::start_with_tls(config, &TlsOptions::default(), target, size)
    }

    /// Starts `size` connection threads; they connect on their first job. The TLS files are
    /// read here, so a missing one fails the start rather than every connection.
    pub(crate) fn start_with_tls(
        config: postgres::Config,
        tls: &TlsOptions,
        target: String,
        size: usize,
    ) -> Result<Self> {
        let tls = tls.connector(&target)?;
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let shared = Arc::new(Shared {
            config,
            tls,
            target,
            losses: AtomicU64::new(0),
            idle: Mutex::new(Vec::with_capacity(size.max(1))),
            returned: Condvar::new(),
        });
        {
            let mut idle = shared.idle.lock().unwrap_or_else(PoisonError::into_inner);
            for _ in 0..size.max(1) {
                idle.push(Connection {
                    shared: Arc::clone(&shared),
                    client: None,
                    statements: HashMap::new(),
                    seen_losses: 0,
                });
            }
        }
        let mut workers = Vec::with_capacity(size);
        for i in 0..size.max(1) {
            let rx = Arc::clone(&rx);
            let shared = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name(format!("agentca-pg-{i}"))
                .spawn(move || work(&rx, shared))
                .map_err(|e| StoreError::Backend(format!("start a database thread: {e}")))?;
            workers.push(handle);
        }
        Ok(Self {
            queue: Mutex::new(Some(tx)),
            workers: Mutex::new(workers),
            shared,
        })
    }

    /// The database, described without secrets.
    pub(crate) fn target(&self) -> &str {
        &self.shared.target
    }

    /// Runs `f` on one of the sessions and waits for its result: on this thread where that is
    /// allowed, else on one of the pool's threads.
    pub(crate) fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        if crate::blocking::may_block_here() {
            return self.shared.with_session(f);
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let job: Job = Box::new(move |shared: &Shared| {
            let result = shared.with_session(f);
            // The caller may have given up waiting only by panicking; nothing to tell then.
            let _ = tx.send(result);
        });
        {
            let queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(queue) = queue.as_ref() else {
                return Err(StoreError::Backend("the store is closed".into()));
            };
            queue
                .send(job)
                .map_err(|_| StoreError::Backend("the database threads have stopped".into()))?;
        }
        rx.recv()
            .map_err(|_| StoreError::Backend("a database thread stopped mid-call".into()))?
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Each session holds the shared state: dropping them ends that cycle. Closing a
        // session blocks on its socket, which a runtime thread may not do, so the pool's own
        // threads close them, as their last jobs.
        let sessions = std::mem::take(
            &mut *self
                .shared
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        for session in sessions {
            if let Some(queue) = queue.as_ref() {
                let _ = queue.send(Box::new(move |_: &Shared| drop(session)));
            }
        }
        // Closing the queue ends every worker after the jobs already queued.
        queue.take();
        drop(queue);
        let workers =
            std::mem::take(&mut *self.workers.lock().unwrap_or_else(PoisonError::into_inner));
        for worker in workers {
            let _ = worker.join();
        }
    }
}

fn work(rx: &Mutex<Receiver<Job>>, shared: Arc<Shared>) {
    loop {
        let job = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = job else {
            return;
        };
        job(&shared);
    }
}

thread_local! {
    /// Set on a connection thread when an error says its session is gone (or may be); the
    /// thread drops the session after the job.
    static LOST: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Notes on this thread whether `e` means the session is unusable: the socket closed, an I/O
/// or protocol error (no SQLSTATE), a connection exception (class 08) or an operator
/// intervention such as a server shutdown (class 57P).
pub(crate) fn note_error(e: &postgres::Error) {
    let lost = e.is_closed()
        || match e.code() {
            None => true,
            Some(code) => code.code().starts_with("08") || code.code().starts_with("57P"),
        };
    if lost {
        LOST.with(|l| l.set(true));
    }
}

/// One database session, opened on first use and reopened after a loss.
pub(crate) struct Connection {
    shared: Arc<Shared>,
    client: Option<Client>,
    /// Prepared statements of this session, by their SQL text.
    statements: HashMap<&'static str, Statement>,
    /// The loss count when this session was opened or last checked.
    seen_losses: u64,
}

impl Connection {
    /// The session's client, connecting first if needed.
    pub(crate) fn client(&mut self) -> Result<&mut Client> {
        let losses = self.shared.losses.load(Ordering::SeqCst);
        if losses != self.seen_losses {
            // Another session was lost: this one may have gone with it.
            if let Some(client) = &mut self.client
                && client.is_valid(VALIDATE_TIMEOUT).is_err()
            {
                self.reset();
            }
            self.seen_losses = losses;
        }
        if self.client.is_none() {
            let mut client = self
                .shared
                .config
                .connect(self.shared.tls.clone())
                .map_err(|e| {
                    // The server is unreachable: sessions opened earlier are suspect too.
                    self.seen_losses = self.shared.losses.fetch_add(1, Ordering::SeqCst) + 1;
                    StoreError::Backend(format!(
                        "cannot connect to PostgreSQL at {}: {}",
                        self.shared.target,
                        describe(&e)
                    ))
                })?;
            super::setup_session(&mut client, &self.shared.target)?;
            self.statements.clear();
            self.client = Some(client);
        }
        self.client
            .as_mut()
            .ok_or_else(|| StoreError::Backend("no database session".into()))
    }

    /// Runs `f` in a transaction, committing when it returns `Ok` and rolling back otherwise.
    pub(crate) fn transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Tx<'_, '_>) -> Result<T>,
    ) -> Result<T> {
        let target = self.shared.target.clone();
        self.client()?;
        let (Some(client), statements) = (self.client.as_mut(), &mut self.statements) else {
            return Err(StoreError::Backend("no database session".into()));
        };
        let tx = client.transaction().map_err(|e| db_error(&target, &e))?;
        let mut tx = Tx {
            tx,
            statements,
            target: &target,
        };
        let value = f(&mut tx)?;
        tx.tx.commit().map_err(|e| db_error(&target, &e))?;
        Ok(value)
    }

    /// Runs one statement outside an explicit transaction; returns the rows it changed.
    pub(crate) fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<u64> {
        self.transaction_free(
            |client, statement, target| {
                client
                    .execute(statement, params)
                    .map_err(|e| db_error(target, &e))
            },
            sql,
        )
    }

    /// Runs one statement outside an explicit transaction that a uniqueness constraint may
    /// refuse, answering that refusal with `taken()`.
    pub(crate) fn execute_unique(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
        taken: impl FnOnce() -> StoreError,
    ) -> Result<u64> {
        self.transaction_free(
            |client, statement, target| {
                client
                    .execute(statement, params)
                    .map_err(|e| unique_or(target, &e, taken))
            },
            sql,
        )
    }

    /// Runs one query outside an explicit transaction.
    pub(crate) fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<postgres::Row>> {
        self.transaction_free(
            |client, statement, target| {
                client
                    .query(statement, params)
                    .map_err(|e| db_error(target, &e))
            },
            sql,
        )
    }

    fn transaction_free<T>(
        &mut self,
        f: impl FnOnce(&mut Client, &Statement, &str) -> Result<T>,
        sql: &'static str,
    ) -> Result<T> {
        let target = self.shared.target.clone();
        self.client()?;
        let (Some(client), statements) = (self.client.as_mut(), &mut self.statements) else {
            return Err(StoreError::Backend("no database session".into()));
        };
        let statement = prepare(client, statements, sql, &target)?;
        f(client, &statement, &target)
    }

    /// Drops the session if the job found it lost, and tells the other sessions to check
    /// theirs.
    fn check_after_job(&mut self) {
        let suspect = LOST.with(|lost| lost.replace(false));
        if suspect || self.client.as_ref().is_some_and(Client::is_closed) {
            let losses = self.shared.losses.fetch_add(1, Ordering::SeqCst) + 1;
            self.seen_losses = losses;
            self.reset();
        }
    }

    fn reset(&mut self) {
        self.client = None;
        self.statements.clear();
    }
}

/// A transaction with the session's statement cache.
pub(crate) struct Tx<'c, 's> {
    tx: postgres::Transaction<'c>,
    statements: &'s mut HashMap<&'static str, Statement>,
    target: &'s str,
}

impl Tx<'_, '_> {
    /// Runs one statement; returns the rows it changed.
    pub(crate) fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<u64> {
        let statement = prepare(&mut self.tx, self.statements, sql, self.target)?;
        self.tx
            .execute(&statement, params)
            .map_err(|e| db_error(self.target, &e))
    }

    /// Runs one statement that a uniqueness constraint may refuse, answering that refusal
    /// with `taken()` (a racing writer got there first).
    pub(crate) fn execute_unique(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
        taken: impl FnOnce() -> StoreError,
    ) -> Result<u64> {
        let statement = prepare(&mut self.tx, self.statements, sql, self.target)?;
        self.tx
            .execute(&statement, params)
            .map_err(|e| unique_or(self.target, &e, taken))
    }

    /// Runs one query.
    pub(crate) fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<postgres::Row>> {
        let statement = prepare(&mut self.tx, self.statements, sql, self.target)?;
        self.tx
            .query(&statement, params)
            .map_err(|e| db_error(self.target, &e))
    }

    /// Runs one query that returns at most one row.
    pub(crate) fn query_opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Option<postgres::Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// Runs statements that take no parameters (schema changes).
    pub(crate) fn batch_execute(&mut self, sql: &str) -> Result<()> {
        self.tx
            .batch_execute(sql)
            .map_err(|e| db_error(self.target, &e))
    }

    /// The database, described without secrets.
    pub(crate) fn target(&self) -> &str {
        self.target
    }
}

/// `taken()` for a unique violation (a racing writer got there first), else the database error.
fn unique_or(target: &str, e: &postgres::Error, taken: impl FnOnce() -> StoreError) -> StoreError {
    if e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION) {
        taken()
    } else {
        db_error(target, e)
    }
}

fn prepare(
    client: &mut impl postgres::GenericClient,
    statements: &mut HashMap<&'static str, Statement>,
    sql: &'static str,
    target: &str,
) -> Result<Statement> {
    if let Some(statement) = statements.get(sql) {
        return Ok(statement.clone());
    }
    let statement = client.prepare(sql).map_err(|e| db_error(target, &e))?;
    statements.insert(sql, statement.clone());
    Ok(statement)
}

/// The error with its cause chain (the top-level text alone is often just "db error").
pub(crate) fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
