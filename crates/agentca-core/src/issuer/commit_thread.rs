//! Making staged issuances durable off the request path, in batches.
//!
//! One thread owns the slow part of an issuance: the store commit, then the audit lines, then
//! one audit sync. Whatever is queued when it starts a batch shares those syncs, so a front end
//! that waits asynchronously keeps serving while the disk works, and under load a flush covers
//! several certificates instead of one. The order inside a batch is the one
//! [`Authority::issue_with`](super::Authority::issue_with) keeps for a single issuance: store
//! first, audit second, and nobody is told before both are durable.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::audit::AuditLog;
use crate::error::{Error, Result};
use crate::store::{Store, StoreError};

/// What the caller is told once its batch is durable (or is not).
pub(crate) type Done = Box<dyn FnOnce(Result<()>) + Send>;

/// One staged issuance waiting for durability: its audit entry and whom to tell.
pub(crate) struct Job {
    /// The [`InFlightGuard::ticket`] of the request that staged it.
    pub(crate) ticket: u64,
    pub(crate) event: &'static str,
    pub(crate) fields: Value,
    pub(crate) done: Done,
}

/// The handle to the commit thread; dropping it lets the thread finish the queue and waits
/// for it to exit, so that what it holds (the store, the audit log) is released with it.
pub(crate) struct CommitThread {
    queue: Option<Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for CommitThread {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            // A job's callback may hold the last handle to the authority, and so drop this on
            // the commit thread itself, which must not wait for itself.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

/// The requests a front end is serving ([`Authority::in_flight`](super::Authority::in_flight)):
/// how many are inside now, and how many have started so far.
#[derive(Debug, Default)]
pub struct InFlight {
    inside: AtomicUsize,
    started: AtomicU64,
}

impl InFlight {
    /// Counts one request until the guard is dropped.
    pub fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.inside.fetch_add(1, Ordering::Relaxed);
        let ticket = self.started.fetch_add(1, Ordering::Relaxed) + 1;
        InFlightGuard {
            in_flight: self.clone(),
            ticket,
        }
    }

    fn inside(&self) -> usize {
        self.inside.load(Ordering::Relaxed)
    }

    fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }
}

/// One request in flight; see [`InFlight`].
#[derive(Debug)]
pub struct InFlightGuard {
    in_flight: Arc<InFlight>,
    /// The `started` count just after this request's start.
    ticket: u64,
}

impl InFlightGuard {
    pub(crate) fn ticket(&self) -> u64 {
        self.ticket
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.in_flight.inside.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The longest a batch waits for company (PostgreSQL's `commit_delay` idea): a flush costs
/// more CPU than the rest of an issuance, so sharing it is worth a little latency, but only
/// while other requests are arriving; a lone request is flushed at once.
const GATHER_WINDOW: Duration = Duration::from_millis(4);

/// How long the batch waits at a time before it looks again for other requests.
const GATHER_SLICE: Duration = Duration::from_millis(1);

impl CommitThread {
    pub(crate) fn start(
        store: Arc<dyn Store>,
        audit: Arc<AuditLog>,
        in_flight: Arc<InFlight>,
    ) -> Result<Self> {
        let (queue, jobs) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("agentca-commit".into())
            .spawn(move || run(&jobs, store.as_ref(), &audit, &in_flight))
            .map_err(|e| Error::io("starting the commit thread", e))?;
        Ok(Self {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Queues `job`; when the thread is gone, the job is answered at once with an error.
    pub(crate) fn submit(&self, job: Job) {
        let sent = match &self.queue {
            Some(queue) => queue.send(job).map_err(|mpsc::SendError(job)| job),
            None => Err(job),
        };
        if let Err(job) = sent {
            (job.done)(Err(Error::Unreachable("the commit thread has stopped")));
        }
    }
}

fn run(jobs: &Receiver<Job>, store: &dyn Store, audit: &AuditLog, in_flight: &InFlight) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        gather(jobs, &mut batch, in_flight);
        let outcome = commit_batch(&batch, store, audit);
        for job in batch {
            (job.done)(outcome.as_ref().map(|_| ()).map_err(copy_error));
        }
    }
}

/// Adds what is queued to `batch`, then waits for more while other requests keep arriving:
/// until [`GATHER_WINDOW`] has passed, or until a [`GATHER_SLICE`] went by in which nobody
/// started a request and nobody but the batch's own requests is inside.
fn gather(jobs: &Receiver<Job>, batch: &mut Vec<Job>, in_flight: &InFlight) {
    let deadline = Instant::now() + GATHER_WINDOW;
    // Requests started after the batch's newest one may bring more issuances.
    let mut seen = batch.iter().map(|job| job.ticket).max().unwrap_or(0);
    loop {
        batch.extend(jobs.try_iter());
        let started = in_flight.started();
        let others_inside = in_flight.inside() > batch.len();
        if started <= seen && !others_inside {
            return;
        }
        seen = seen.max(started);
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return;
        };
        match jobs.recv_timeout(left.min(GATHER_SLICE)) {
            Ok(job) => batch.push(job),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Store commit, then every audit line of the batch, then one audit sync.
fn commit_batch(batch: &[Job], store: &dyn Store, audit: &AuditLog) -> Result<()> {
    store.commit()?;
    for job in batch {
        audit.append(job.event, job.fields.clone())?;
    }
    audit.sync()
}

/// Every job of a failed batch gets the failure; errors are not `Clone`, so each gets a copy
/// that keeps what callers tell apart (a store that may not be durable, an audit failure).
fn copy_error(e: &Error) -> Error {
    match e {
        Error::Store(StoreError::FlushFailed) => Error::Store(StoreError::FlushFailed),
        Error::Store(other) => Error::Store(StoreError::Backend(other.to_string())),
        other => Error::Audit(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::store::SledStore;

    fn thread() -> (tempfile::TempDir, Arc<AuditLog>, CommitThread) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.path().join("store")).unwrap());
        let audit = Arc::new(AuditLog::open(&dir.path().join("audit.log")).unwrap());
        let thread = CommitThread::start(store, audit.clone(), Arc::default()).unwrap();
        (dir, audit, thread)
    }

    #[test]
    fn every_job_is_answered_after_its_audit_line_is_written() {
        let (_dir, audit, thread) = thread();
        let (tx, rx) = mpsc::channel();
        for i in 0..50 {
            let tx = tx.clone();
            thread.submit(Job {
                ticket: 0,
                event: "cert.issued",
                fields: serde_json::json!({ "n": i }),
                done: Box::new(move |r| tx.send(r.is_ok()).unwrap()),
            });
        }
        for _ in 0..50 {
            assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap());
        }
        assert_eq!(audit.head().0, 50);
    }

    #[test]
    fn a_job_submitted_after_the_thread_stopped_gets_an_error() {
        let (_dir, _audit, thread) = thread();
        let (tx, rx) = mpsc::channel();
        let (queue, jobs) = mpsc::channel::<Job>();
        drop(jobs);
        let stopped = CommitThread {
            queue: Some(queue),
            thread: None,
        };
        stopped.submit(Job {
            ticket: 0,
            event: "cert.issued",
            fields: Value::Null,
            done: Box::new(move |r| tx.send(r.is_err()).unwrap()),
        });
        assert!(rx.recv().unwrap());
        drop(thread);
    }

    #[test]
    fn dropping_the_handle_waits_for_the_thread_and_what_it_holds() {
        let (_dir, audit, thread) = thread();
        // The thread holds a handle to the audit log (and the store) while it runs.
        assert!(Arc::strong_count(&audit) > 1);
        drop(thread);
        assert_eq!(Arc::strong_count(&audit), 1);
    }
}
