//! Group commit: many writers, one flush.
//!
//! A writer makes its change visible (in memory or in the OS page cache), then calls
//! [`GroupCommit::commit`]. The first waiter becomes the leader and runs the flush for everyone
//! who wrote before the flush started; the others wait for that flush or the next one. So with N
//! concurrent writers the cost is about one flush per batch instead of one per write, and no
//! writer returns before a flush that began after its write has finished.

use std::sync::{Condvar, Mutex, MutexGuard};

/// Coordinates flushes among concurrent writers.
#[derive(Debug, Default)]
pub struct GroupCommit {
    state: Mutex<State>,
    flushed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Incremented by every writer before it waits; the ticket it gets back.
    written: u64,
    /// Every ticket up to this one is durable.
    durable: u64,
    /// A leader is flushing right now.
    flushing: bool,
    /// Set when the last flush failed: every ticket it covered gets the error.
    failed_up_to: u64,
}

impl GroupCommit {
    /// A new coordinator with nothing written.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns once everything the calling thread wrote before this call has been made durable
    /// by `flush`, or with the error of the flush that covered it.
    ///
    /// `flush` must make durable every write that is visible when it starts.
    pub fn commit<E>(&self, flush: impl Fn() -> Result<(), E>) -> Result<(), E>
    where
        E: From<FlushFailed>,
    {
        let mut state = self.lock();
        state.written += 1;
        let ticket = state.written;
        loop {
            if state.durable >= ticket {
                return Ok(());
            }
            if state.failed_up_to >= ticket {
                return Err(FlushFailed.into());
            }
            if state.flushing {
                state = self
                    .flushed
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                continue;
            }
            // Become the leader: everything written up to now is covered by this flush.
            state.flushing = true;
            let covered = state.written;
            drop(state);
            let result = flush();
            state = self.lock();
            state.flushing = false;
            match result {
                Ok(()) => state.durable = state.durable.max(covered),
                Err(_) => state.failed_up_to = state.failed_up_to.max(covered),
            }
            self.flushed.notify_all();
            result?;
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State inconsistent (plain integers).
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The flush that covered this write failed; the write may or may not be durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the flush covering this write failed")]
pub struct FlushFailed;

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[test]
    fn concurrent_writers_share_flushes() {
        let gc = Arc::new(GroupCommit::new());
        let flushes = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..32)
            .map(|_| {
                let gc = gc.clone();
                let flushes = flushes.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        gc.commit(|| {
                            flushes.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(1));
                            Ok::<(), FlushFailed>(())
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let n = flushes.load(Ordering::SeqCst);
        assert!(n < 32 * 50, "every write flushed on its own ({n} flushes)");
    }

    #[test]
    fn a_write_made_during_a_flush_waits_for_the_next_one() {
        let gc = GroupCommit::new();
        let writes_seen = AtomicU64::new(0);
        gc.commit(|| {
            writes_seen.store(1, Ordering::SeqCst);
            Ok::<(), FlushFailed>(())
        })
        .unwrap();
        // A later commit must run its own flush.
        let ran = std::sync::atomic::AtomicBool::new(false);
        gc.commit(|| {
            ran.store(true, Ordering::SeqCst);
            Ok::<(), FlushFailed>(())
        })
        .unwrap();
        assert!(ran.load(Ordering::SeqCst));
    }

    #[test]
    fn failed_flush_fails_its_writers() {
        let gc = GroupCommit::new();
        let r = gc.commit(|| Err(FlushFailed));
        assert_eq!(r, Err(FlushFailed));
        // The next commit gets a fresh flush and succeeds.
        assert_eq!(gc.commit(|| Ok::<(), FlushFailed>(())), Ok(()));
    }
}
