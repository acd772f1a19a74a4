//! A process's CPU time and resident memory, read from Linux's `/proc`.
//!
//! CPU time is `utime + stime` of `/proc/PID/stat` (all threads of the process, in clock
//! ticks); memory is `VmRSS` of `/proc/PID/status`. Reading them costs the observed process
//! nothing, which is why the server's share is measured this way rather than asked of it.

use std::time::Duration;

use crate::error::BenchError;

/// One observation of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessSample {
    /// User plus system CPU time consumed so far.
    pub cpu: Duration,
    /// Resident set size in bytes.
    pub rss: u64,
}

/// Reads `/proc/PID/stat` and `/proc/PID/status`.
pub fn sample(pid: u32) -> Result<ProcessSample, BenchError> {
    let read = |file: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{file}")).map_err(|e| BenchError::Server {
            pid,
            reason: format!("read /proc/{pid}/{file}: {e}"),
        })
    };
    let unreadable = |what: &str| BenchError::Server {
        pid,
        reason: format!("cannot read the {what} from /proc/{pid}"),
    };
    let cpu =
        cpu_time(&read("stat")?, clock_ticks_per_second()).ok_or_else(|| unreadable("CPU time"))?;
    let rss = resident_bytes(&read("status")?).ok_or_else(|| unreadable("resident memory"))?;
    Ok(ProcessSample { cpu, rss })
}

/// The calling process's own CPU time (the load generator's share).
pub(crate) fn own_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    cpu_time(&stat, clock_ticks_per_second())
}

fn clock_ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second()
}

/// `utime + stime` from the text of `/proc/PID/stat`.
///
/// The second field (the command name) is in parentheses and may itself contain spaces and
/// parentheses, so fields are counted from the last `)`: after it come field 3 (`state`),
/// and `utime`, `stime` are fields 14 and 15 (proc(5)).
fn cpu_time(stat: &str, ticks_per_second: u64) -> Option<Duration> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_ascii_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    if ticks_per_second == 0 {
        return None;
    }
    let ticks = utime.checked_add(stime)?;
    let nanos = u128::from(ticks) * 1_000_000_000 / u128::from(ticks_per_second);
    Some(Duration::from_nanos(u64::try_from(nanos).ok()?))
}

/// `VmRSS` in bytes from the text of `/proc/PID/status` (given there in kB, which proc(5)
/// means as KiB).
fn resident_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_ascii_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => kib.checked_mul(1024),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_counts_from_the_last_parenthesis() {
        // A command name with a space and a parenthesis; utime 250, stime 50 ticks.
        let stat = "4242 (my (odd) srv) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 \
                    9 0 12345 123456789 2000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1";
        assert_eq!(cpu_time(stat, 100), Some(Duration::from_secs(3)));
        assert_eq!(cpu_time(stat, 0), None);
        assert_eq!(cpu_time("4242 (truncated) S 1 2", 100), None);
        assert_eq!(cpu_time("no parenthesis", 100), None);
    }

    #[test]
    fn resident_memory_in_bytes() {
        let status = "Name:\tsrv\nVmPeak:\t  99999 kB\nVmRSS:\t   2048 kB\nThreads:\t9\n";
        assert_eq!(resident_bytes(status), Some(2 * 1024 * 1024));
        assert_eq!(resident_bytes("Name:\tkthreadd\n"), None);
        assert_eq!(resident_bytes("VmRSS:\t12 MB\n"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let me = sample(std::process::id()).unwrap();
        assert!(me.rss > 0);
        assert!(own_cpu().is_some());
        assert!(matches!(sample(u32::MAX), Err(BenchError::Server { .. })));
    }
}
