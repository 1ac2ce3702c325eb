//! Clears what a real node leaves on the machine: container processes (which
//! outlive containerd: their shims re-parent to init), mounts under the
//! node's directory, the kubelet's cgroups, kube-proxy's iptables rules and
//! the bridge. Runs on teardown and, because a test process that is killed
//! never tears down, before every start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::network;
use crate::Error;

/// Where the running node's directory is recorded, so the next run can
/// unmount and delete it after a crash.
fn state_file() -> PathBuf {
    std::env::temp_dir().join("ember-real-node.root")
}

/// Remembers `root` as the directory of the node being started.
pub fn record_root(root: &Path) -> Result<(), Error> {
    std::fs::write(state_file(), root.as_os_str().as_encoded_bytes())
        .map_err(|source| Error::Io { context: "recording the node's directory".into(), source })
}

/// The directory of the last node started on this machine, unless its
/// teardown already removed it. Only the next node's start may delete it:
/// it holds mounts that must go first.
pub fn recorded_root() -> Option<PathBuf> {
    let root = std::fs::read(state_file()).ok()?;
    Some(PathBuf::from(String::from_utf8_lossy(&root).into_owned()))
}

/// Removes every trace of a node whose binaries live in `bin`. Best effort.
pub fn clear_leftovers(bin: &Path) {
    // Twice: a process may fork while we scan.
    for _ in 0..2 {
        for pid in node_processes(bin).into_iter().chain(pod_processes()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = super::run(&bin.join("kube-proxy").to_string_lossy(), &["--cleanup"]);
    if let Some(root) = recorded_root() {
        unmount_below(&root);
        let _ = std::fs::remove_dir_all(&root);
        let _ = std::fs::remove_file(state_file());
    }
    remove_pod_cgroups();
    network::tear_down();
}

/// Processes whose executable is one of the node binaries (containerd, its
/// shims, runc, the kubelet, kube-proxy, CoreDNS), except this process.
fn node_processes(bin: &Path) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe.starts_with(bin)))
        .collect()
}

/// The kubelet's pod cgroups (cgroupfs driver) in every v1 hierarchy.
fn pod_cgroup_roots() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else {
        return Vec::new();
    };
    entries.flatten().map(|e| e.path().join("kubepods")).filter(|p| p.is_dir()).collect()
}

/// Every process in a pod cgroup: the containers and their sandboxes.
fn pod_processes() -> Vec<i32> {
    let mut pids = Vec::new();
    for root in pod_cgroup_roots() {
        walk_dirs(&root, &mut |dir| {
            if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        });
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Removes the (now empty) pod cgroups, deepest first.
fn remove_pod_cgroups() {
    for root in pod_cgroup_roots() {
        let mut dirs = Vec::new();
        walk_dirs(&root, &mut |dir| dirs.push(dir.to_owned()));
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for dir in dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn walk_dirs(dir: &Path, visit: &mut dyn FnMut(&Path)) {
    visit(dir);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk_dirs(&entry.path(), visit);
            }
        }
    }
}

/// Detaches every mount at or below `root` (container root filesystems,
/// network namespaces, the kubelet's volume mounts), deepest first.
fn unmount_below(root: &Path) {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(root))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    for point in points {
        let _ = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH);
    }
}
