//! Many callers, one statement.
//!
//! Every ACME request spends a nonce, so nonce redemptions are the most frequent statement a
//! node sends; each costs the database a round trip and a commit. Callers that arrive while a
//! redemption is on its way join the next one: the first caller to find no statement running
//! takes everything queued and sends it as one statement, the others wait for their answers.
//! A lone caller sends at once, so nothing waits for a batch to fill; under load a batch holds
//! about as many requests as arrived during one round trip.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use crate::{Result, StoreError};

/// The most requests one statement carries; the rest wait for the next.
const MAX_BATCH: usize = 64;

/// Gathers requests `Q` into batches answered together with one `A` each.
pub(crate) struct Batcher<Q, A> {
    state: Mutex<State<Q, A>>,
    answered: Condvar,
}

struct State<Q, A> {
    queued: Vec<(u64, Q)>,
    next_ticket: u64,
    running: bool,
    answers: HashMap<u64, Result<A>>,
}

impl<Q, A> Batcher<Q, A> {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(State {
                queued: Vec::new(),
                next_ticket: 0,
                running: false,
                answers: HashMap::new(),
            }),
            answered: Condvar::new(),
        }
    }

    /// Answers `request`, in a batch with whatever else is queued. `run` gets a batch and must
    /// return one answer per request, in order; an error is every member's answer.
    pub(crate) fn submit(&self, request: Q, run: impl Fn(Vec<Q>) -> Result<Vec<A>>) -> Result<A> {
        let mut state = self.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queued.push((ticket, request));
        loop {
            if let Some(answer) = state.answers.remove(&ticket) {
                return answer;
            }
            if state.running {
                state = self
                    .answered
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // Lead: take the oldest requests (this one among them, unless 64 came first).
            state.running = true;
            let take = state.queued.len().min(MAX_BATCH);
            let batch: Vec<(u64, Q)> = state.queued.drain(..take).collect();
            drop(state);
            let (tickets, requests): (Vec<u64>, Vec<Q>) = batch.into_iter().unzip();
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(requests)))
                .unwrap_or_else(|_| {
                    Err(StoreError::Backend("a batched statement panicked".into()))
                });
            state = self.lock();
            state.running = false;
            match outcome {
                Ok(answers) if answers.len() == tickets.len() => {
                    for (ticket, answer) in tickets.into_iter().zip(answers) {
                        state.answers.insert(ticket, Ok(answer));
                    }
                }
                Ok(answers) => {
                    let e = StoreError::Backend(format!(
                        "a batch of {} got {} answers",
                        tickets.len(),
                        answers.len()
                    ));
                    for ticket in tickets {
                        state.answers.insert(ticket, Err(e.clone()));
                    }
                }
                Err(e) => {
                    for ticket in tickets {
                        state.answers.insert(ticket, Err(e.clone()));
                    }
                }
            }
            self.answered.notify_all();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<Q, A>> {
        // The state is consistent between statements: `run` is called without the lock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_lone_caller_runs_at_once_with_a_batch_of_one() {
        let batcher = Batcher::<u32, u32>::new();
        let sizes = Mutex::new(Vec::new());
        for i in 0..3 {
            let answer = batcher.submit(i, |batch| {
                sizes.lock().unwrap().push(batch.len());
                Ok(batch.iter().map(|q| q * 10).collect())
            });
            assert_eq!(answer.unwrap(), i * 10);
        }
        assert_eq!(*sizes.lock().unwrap(), vec![1, 1, 1]);
    }

    #[test]
    fn concurrent_callers_share_statements_and_each_gets_its_own_answer() {
        let batcher = Arc::new(Batcher::<u64, u64>::new());
        let statements = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..16u64)
            .map(|t| {
                let batcher = Arc::clone(&batcher);
                let statements = Arc::clone(&statements);
                std::thread::spawn(move || {
                    for i in 0..50u64 {
                        let q = t * 1000 + i;
                        let answer = batcher
                            .submit(q, |batch| {
                                assert!(batch.len() <= MAX_BATCH);
                                statements.fetch_add(1, Ordering::SeqCst);
                                std::thread::sleep(Duration::from_millis(1));
                                Ok(batch.iter().map(|q| q + 1).collect())
                            })
                            .unwrap();
                        assert_eq!(answer, q + 1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let n = statements.load(Ordering::SeqCst);
        assert!(
            n < 16 * 50,
            "every request had a statement of its own ({n})"
        );
    }

    #[test]
    fn a_failed_statement_fails_every_request_in_it_and_the_next_batch_runs() {
        let batcher = Batcher::<u32, u32>::new();
        let err = batcher
            .submit(1, |_| Err(StoreError::Backend("gone".into())))
            .unwrap_err();
        assert!(err.to_string().contains("gone"));
        let short = batcher.submit(2, |_| Ok(Vec::new())).unwrap_err();
        assert!(short.to_string().contains("answers"), "{short}");
        let panicked = batcher.submit(3, |_| panic!("boom")).unwrap_err();
        assert!(panicked.to_string().contains("panicked"));
        assert_eq!(batcher.submit(4, Ok).unwrap(), 4);
    }
}
