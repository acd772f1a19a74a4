//! Which threads may wait on a remote store themselves.
//!
//! The PostgreSQL client drives its socket with a runtime of its own on the calling thread,
//! and tokio forbids that on a thread that runs async tasks (it panics). Threads outside any
//! runtime may do it, and so may the runtime's blocking threads (`spawn_blocking`); but from
//! inside the runtime those two kinds of thread look alike, so a blocking section says so with
//! [`blocking_section`]. Store calls anywhere else are handed to the store's own threads,
//! which is always correct, only slower.

use std::cell::Cell;

thread_local! {
    static IN_BLOCKING_SECTION: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with this thread marked as one that may block on the store itself. Call it only on
/// a thread that drives no async tasks: inside `tokio::task::spawn_blocking`, or on a plain
/// thread.
pub fn blocking_section<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            IN_BLOCKING_SECTION.with(|flag| flag.set(self.0));
        }
    }
    let _restore = Restore(IN_BLOCKING_SECTION.with(|flag| flag.replace(true)));
    f()
}

/// Whether a store call may run on this thread.
pub(crate) fn may_block_here() -> bool {
    IN_BLOCKING_SECTION.with(Cell::get) || tokio::runtime::Handle::try_current().is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_threads_may_block_and_runtime_threads_only_in_a_section() {
        assert!(may_block_here());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            assert!(!may_block_here());
            assert!(blocking_section(may_block_here));
            assert!(!may_block_here(), "the mark ends with the section");
        });
        runtime.block_on(async {
            let inner = blocking_section(|| blocking_section(may_block_here) && may_block_here());
            assert!(inner, "a nested section keeps the outer mark");
            assert!(!may_block_here());
        });
    }
}
