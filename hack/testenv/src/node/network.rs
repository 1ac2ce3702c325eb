//! The host side of the real node's network: the pod bridge with its
//! gateway address, a route that keeps Service addresses on that bridge, the
//! kernel switches kube-proxy needs, and a guard that drops anything a pod
//! would forward off the machine (or the outside would forward to a pod).
//!
//! Everything here is machine-wide, which is why only one real node runs at a
//! time (see [`super::NodeLock`]) and why teardown removes exactly what setup
//! added.

use super::config::{BRIDGE, GATEWAY, POD_PREFIX, SERVICE_SUBNET};
use super::{output, run};
use crate::Error;

/// iptables chain that confines forwarding to the bridge.
const GUARD_CHAIN: &str = "EMBER-NODE-GUARD";

/// Creates the bridge with its gateway address and the guards. Idempotent.
pub fn set_up() -> Result<(), Error> {
    if !link_exists(BRIDGE) {
        run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
    }
    let address = format!("{GATEWAY}/{POD_PREFIX}");
    let shown = output("ip", &["-4", "addr", "show", "dev", BRIDGE])?;
    if !shown.contains(&address) {
        run("ip", &["addr", "add", &address, "dev", BRIDGE])?;
    }
    run("ip", &["link", "set", BRIDGE, "up"])?;
    // Host processes (tests, the dev environment) reach ClusterIPs through
    // kube-proxy's OUTPUT rules; this route makes the first lookup pick the
    // bridge, never the machine's default route.
    run("ip", &["route", "replace", SERVICE_SUBNET, "dev", BRIDGE, "src", &GATEWAY.to_string()])?;
    // Pod-to-Service traffic is DNAT-ed on the host and forwarded back onto
    // the bridge; bridged frames must pass iptables for that.
    write_sysctl("net/ipv4/ip_forward", "1")?;
    write_sysctl("net/bridge/bridge-nf-call-iptables", "1")?;

    let _ = iptables(&["-N", GUARD_CHAIN]);
    iptables(&["-F", GUARD_CHAIN])?;
    iptables(&["-A", GUARD_CHAIN, "-i", BRIDGE, "-o", BRIDGE, "-j", "RETURN"])?;
    iptables(&["-A", GUARD_CHAIN, "-i", BRIDGE, "-j", "DROP"])?;
    iptables(&["-A", GUARD_CHAIN, "-o", BRIDGE, "-j", "DROP"])?;
    if iptables(&["-C", "FORWARD", "-j", GUARD_CHAIN]).is_err() {
        iptables(&["-I", "FORWARD", "1", "-j", GUARD_CHAIN])?;
    }
    Ok(())
}

/// Removes the bridge, the route and the guard. Best effort: used on
/// teardown and to clear what a crashed run left behind.
pub fn tear_down() {
    let _ = run("ip", &["route", "del", SERVICE_SUBNET, "dev", BRIDGE]);
    if link_exists(BRIDGE) {
        let _ = run("ip", &["link", "del", BRIDGE]);
    }
    while iptables(&["-D", "FORWARD", "-j", GUARD_CHAIN]).is_ok() {}
    let _ = iptables(&["-F", GUARD_CHAIN]);
    let _ = iptables(&["-X", GUARD_CHAIN]);
}

fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

fn write_sysctl(key: &str, value: &str) -> Result<(), Error> {
    let path = std::path::Path::new("/proc/sys").join(key);
    std::fs::write(&path, value).map_err(|source| Error::Io { context: format!("writing {}", path.display()), source })
}

fn iptables(args: &[&str]) -> Result<(), Error> {
    run("iptables", &[&["-w", "5"], args].concat())
}
