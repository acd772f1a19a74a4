//! Keeps glibc's allocator from holding on to memory a long-running `serve` has freed.
//!
//! glibc serves a block of at least `mmap_threshold` bytes (128 KiB at start) with its own
//! mapping, which goes back to the system when it is freed. But each time such a mapped block is
//! freed, glibc raises the threshold to that block's size (up to 32 MiB), so later blocks of that
//! size come from the thread arenas, where the small records allocated around them keep the
//! pages from being returned. sled's log buffers are such blocks: over 10,000 ACME orders the
//! server's anonymous memory ended at 122 MiB with the moving threshold and at 65 MiB with it
//! fixed (docs/benchmarks.md, "Where the memory goes").
//!
//! Setting the threshold turns the moving one off. glibc reads `GLIBC_TUNABLES` only as a process
//! starts, and changing it from inside would take an `unsafe` call to `mallopt`, so `serve`
//! executes itself again, once, with the tunable added. The process keeps its id, arguments and
//! open standard streams. Other C libraries ignore the variable.

/// The tunable, at glibc's own initial threshold.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_TUNABLE: &str = "glibc.malloc.mmap_threshold=131072";

/// The `GLIBC_TUNABLES` value to start with, or `None` when it already sets the threshold (the
/// operator's choice, or this process after its re-execution).
#[cfg(any(test, all(target_os = "linux", target_env = "gnu")))]
fn tunables_with_threshold(current: Option<&str>, tunable: &str) -> Option<String> {
    match current {
        Some(value)
            if value
                .split(':')
                .any(|t| t.starts_with("glibc.malloc.mmap_threshold=")) =>
        {
            None
        }
        Some(value) if !value.is_empty() => Some(format!("{value}:{tunable}")),
        _ => Some(tunable.to_owned()),
    }
}

/// Re-executes this process with a fixed mmap threshold unless it has one. Returns only when no
/// re-execution was needed or it failed; a failure leaves the process as it was (it only uses
/// more memory), and the reason is returned for the log.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn fix_mmap_threshold() -> Option<String> {
    use std::os::unix::process::CommandExt;

    let current = std::env::var("GLIBC_TUNABLES").ok();
    let value = tunables_with_threshold(current.as_deref(), MMAP_THRESHOLD_TUNABLE)?;
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| "agentca".into());
    // /proc/self/exe names this very binary even if its file was replaced since it started.
    let error = std::process::Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(args)
        .env("GLIBC_TUNABLES", value)
        .exec();
    Some(format!(
        "could not fix the allocator's mmap threshold: {error}"
    ))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn fix_mmap_threshold() -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::tunables_with_threshold;

    const T: &str = "glibc.malloc.mmap_threshold=131072";

    #[test]
    fn the_threshold_is_added_once_and_an_operators_value_kept() {
        assert_eq!(tunables_with_threshold(None, T).as_deref(), Some(T));
        assert_eq!(tunables_with_threshold(Some(""), T).as_deref(), Some(T));
        assert_eq!(
            tunables_with_threshold(Some("glibc.malloc.arena_max=2"), T).as_deref(),
            Some("glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=131072")
        );
        assert_eq!(tunables_with_threshold(Some(T), T), None);
        assert_eq!(
            tunables_with_threshold(
                Some("glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=1048576"),
                T
            ),
            None
        );
        // A different tunable whose name only starts the same way does not count.
        assert_eq!(
            tunables_with_threshold(Some("glibc.malloc.mmap_threshold_x=1"), T).as_deref(),
            Some("glibc.malloc.mmap_threshold_x=1:glibc.malloc.mmap_threshold=131072")
        );
    }
}
