//! Sizes the compute thread pools from the container's CPU quota.
//!
//! A pod limited to 2 CPUs on a 64-core node must not start 64 rayon workers:
//! they would fight over the quota and be throttled (the classic
//! oversubscription failure). The cgroup v2 `cpu.max` file (or v1's
//! `cpu.cfs_quota_us`/`cpu.cfs_period_us`) tells the real budget.

use std::path::Path;

/// CPUs this process may use: the cgroup quota rounded up, capped by the
/// CPUs the scheduler lets us run on, at least 1.
pub fn cpu_budget() -> usize {
    let visible = std::thread::available_parallelism().map_or(1, |n| n.get());
    let quota = cgroup_v2_quota(Path::new("/sys/fs/cgroup/cpu.max"))
        .or_else(|| cgroup_v1_quota(Path::new("/sys/fs/cgroup/cpu")));
    quota.map_or(visible, |q| q.min(visible)).max(1)
}

/// Parses cgroup v2 `cpu.max` ("max 100000" or "200000 100000").
fn cgroup_v2_quota(file: &Path) -> Option<usize> {
    parse_cpu_max(&std::fs::read_to_string(file).ok()?)
}

fn parse_cpu_max(text: &str) -> Option<usize> {
    let mut fields = text.split_whitespace();
    let quota = fields.next()?;
    let period: f64 = fields.next()?.parse().ok()?;
    if quota == "max" {
        return None;
    }
    cpus_from(quota.parse().ok()?, period)
}

fn cgroup_v1_quota(dir: &Path) -> Option<usize> {
    let read = |name: &str| -> Option<f64> { std::fs::read_to_string(dir.join(name)).ok()?.trim().parse().ok() };
    let quota = read("cpu.cfs_quota_us")?;
    if quota <= 0.0 {
        return None;
    }
    cpus_from(quota, read("cpu.cfs_period_us")?)
}

fn cpus_from(quota: f64, period: f64) -> Option<usize> {
    if period <= 0.0 || quota <= 0.0 {
        return None;
    }
    // A quota of 1.5 CPUs still gets work done on a second thread.
    Some(((quota / period).ceil() as usize).max(1))
}

/// Configures rayon's global pool (used by Burn Flex and by `tokenizers`)
/// with `threads` workers. Must run before the first tensor operation; a pool
/// that already exists (tests start several servers in one process) is kept.
pub fn configure_compute_pool(threads: usize) {
    let built = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("ember-compute-{i}"))
        .build_global();
    match built {
        Ok(()) => tracing::info!(threads, "compute thread pool sized"),
        Err(error) => tracing::debug!(%error, "compute thread pool already configured"),
    }
}

/// Runs `work` on a worker of the compute pool and waits for it.
///
/// A thread outside the pool (the inference thread, a benchmark's main
/// thread) that starts a parallel step hands it to the pool and sleeps until
/// it is done; the encoder has ~40 such steps per batch (products, attention,
/// GELU), and at batch 1 those hand-offs were ~15 % of a profile (futex and
/// `sched_yield`). Started on a worker, the steps split work with the other
/// workers directly, and there is one hand-off per batch.
pub fn on_compute_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| work())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_with_quota_rounds_up() {
        assert_eq!(parse_cpu_max("150000 100000\n"), Some(2));
        assert_eq!(parse_cpu_max("200000 100000"), Some(2));
        assert_eq!(parse_cpu_max("50000 100000"), Some(1));
    }

    #[test]
    fn cpu_max_unlimited_or_garbage_is_no_quota() {
        assert_eq!(parse_cpu_max("max 100000"), None);
        assert_eq!(parse_cpu_max(""), None);
        assert_eq!(parse_cpu_max("abc def"), None);
    }

    #[test]
    fn work_runs_on_a_pool_worker_and_returns_its_result() {
        assert_eq!(rayon::current_thread_index(), None, "the test thread is outside the pool");
        let (worker, sum) = on_compute_pool(|| (rayon::current_thread_index(), (1..=10).sum::<i32>()));
        assert!(worker.is_some(), "work ran outside the pool");
        assert_eq!(sum, 55);
    }

    #[test]
    fn budget_is_at_least_one() {
        assert!(cpu_budget() >= 1);
    }
}
