//! CPU seconds (user + system) used so far, per kind of process, by this
//! benchmark and everything it started (the control plane, PostgreSQL and
//! its backends, the operator): they share the machine's cores, so a round's
//! time is where their CPU went.

use std::collections::HashMap;

use crate::counters::Counters;

/// The kernel reports CPU times in USER_HZ ticks, 100 per second on Linux.
const TICKS_PER_SECOND: f64 = 100.0;

/// Seconds by process kind (its command name; `benchmark client` for this
/// process), from `/proc`: a process's own times plus those of its children
/// it has already reaped, so PostgreSQL backends that came and went still
/// count.
pub fn cpu_seconds_by_process() -> Counters {
    let me = std::process::id();
    let mut stats = HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // `pid (comm) state ppid ...`: the command may hold spaces, so split after its `)`.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let comm = stat[open + 1..close].to_owned();
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        let number = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
        // After the command: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
        let ticks = number(11) + number(12) + number(13) + number(14);
        stats.insert(pid, (number(1) as u32, comm, ticks));
    }
    let descends_from_me = |mut pid: u32| {
        for _ in 0..64 {
            if pid == me {
                return true;
            }
            match stats.get(&pid) {
                Some((parent, _, _)) if *parent != 0 => pid = *parent,
                _ => return false,
            }
        }
        false
    };
    stats
        .iter()
        .filter(|(pid, _)| descends_from_me(**pid))
        .map(|(pid, (_, comm, ticks))| {
            let kind = if *pid == me { "benchmark client".to_owned() } else { comm.clone() };
            (kind, ticks / TICKS_PER_SECOND)
        })
        .collect()
}
