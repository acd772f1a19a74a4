//! Restricting the generator to some CPUs once its preparation is done, as `taskset -c` would
//! from the start: the keys are made on every CPU, the load is sent from the ones given, and
//! the server keeps the others to itself.

use rustix::thread::{CpuSet, sched_setaffinity};

use crate::error::BenchError;

/// Restricts the calling thread, and every thread it starts from now on (they inherit it),
/// to `cpus`.
pub(crate) fn pin_to(cpus: &[usize]) -> Result<(), BenchError> {
    let mut set = CpuSet::new();
    for &cpu in cpus {
        if cpu >= CpuSet::MAX_CPU {
            return Err(BenchError::Options(format!("CPU {cpu} does not exist")));
        }
        set.set(cpu);
    }
    sched_setaffinity(None, &set).map_err(|e| BenchError::Io {
        context: format!("run on CPUs {cpus:?}"),
        source: e.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_can_be_pinned_to_a_cpu_it_may_use() {
        let allowed = rustix::thread::sched_getaffinity(None).unwrap_or_else(|_| CpuSet::new());
        let Some(cpu) = (0..CpuSet::MAX_CPU).find(|&c| allowed.is_set(c)) else {
            return;
        };
        // In a thread of its own, so that the test harness keeps its CPUs.
        let pinned = std::thread::spawn(move || {
            pin_to(&[cpu]).map(|()| std::thread::available_parallelism().map_or(0, usize::from))
        })
        .join();
        assert!(matches!(pinned, Ok(Ok(1))), "{pinned:?}");
        assert!(pin_to(&[CpuSet::MAX_CPU]).is_err());
    }
}
