//! A real Kubernetes node beside the kwok ones: containerd 2.x with runc and
//! the CNI bridge, the kubelet, kube-proxy and CoreDNS, all from
//! `hack/build-node.sh`. Pods scheduled here really run their images, get
//! addresses on a local bridge, resolve `*.svc` names and reach Services
//! through kube-proxy — the parts kwok only pretends.
//!
//! The node is machine-wide (a bridge, iptables rules, cgroups, mounts), so
//! one runs at a time ([`NodeLock`]) and [`RealNode::start`] first clears
//! whatever a crashed earlier run left behind. Images come in as OCI
//! archives ([`RealNode::import_image`]); nothing is ever pulled.

pub mod config;
mod network;
mod reaper;

pub(crate) use reaper::recorded_root;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::Api;

use config::NodeLayout;
pub use config::{BRIDGE, CLUSTER_DOMAIN, GATEWAY, NODE_NAME, PAUSE_IMAGE, POD_SUBNET, SERVICE_SUBNET};

use crate::process::Supervised;
use crate::{Error, control_plane::free_port, poll};

const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Holds the machine-wide lock for as long as a real node runs.
#[derive(Debug)]
pub struct NodeLock {
    _file: nix::fcntl::Flock<std::fs::File>,
}

impl NodeLock {
    /// Takes the lock or fails at once, naming the reason: two real nodes
    /// would fight over the bridge, iptables and cgroups.
    pub fn acquire() -> Result<Self, Error> {
        let path = std::env::temp_dir().join("ember-real-node.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| Error::Io { context: format!("opening {}", path.display()), source })?;
        let file = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
            Error::Node(format!(
                "another real node runs on this machine ({} is locked: {errno}); stop it (e.g. the dev environment) first",
                path.display()
            ))
        })?;
        Ok(Self { _file: file })
    }
}

/// A running real node. Dropping it stops its pods and components and
/// removes what it added to the machine.
#[derive(Debug)]
pub struct RealNode {
    layout: NodeLayout,
    // Stopped in reverse start order by `Drop` (kubelet first).
    processes: Vec<Supervised>,
    _lock: NodeLock,
}

impl RealNode {
    /// Prepares the machine for a node before the API server starts (it
    /// listens on the bridge's gateway so that pods reach it): takes the
    /// lock, clears a crashed run's leftovers and creates the bridge.
    pub fn prepare() -> Result<NodeLock, Error> {
        check_root()?;
        let lock = NodeLock::acquire()?;
        let bin = binaries_dir()?;
        reaper::clear_leftovers(&bin);
        network::set_up()?;
        Ok(lock)
    }

    /// Starts containerd (with the pause image), CoreDNS, kube-proxy and the
    /// kubelet under `root`, and waits until the node is Ready.
    pub async fn start(
        lock: NodeLock,
        root: &Path,
        kubeconfig: &Path,
        ca_cert: &Path,
        client: &kube::Client,
    ) -> Result<Self, Error> {
        let bin = binaries_dir()?;
        let layout = NodeLayout {
            bin: bin.clone(),
            root: root.to_owned(),
            ca_cert: ca_cert.to_owned(),
            kubeconfig: kubeconfig.to_owned(),
            kubelet_port: free_port()?,
            kubelet_healthz_port: free_port()?,
            proxy_healthz_port: free_port()?,
            proxy_metrics_port: free_port()?,
            dns_health_port: free_port()?,
        };
        reaper::record_root(root)?;
        write(&layout.containerd_config(), &config::containerd_toml(&layout))?;
        write(&layout.cni_conf_dir().join("10-ember.conflist"), &config::cni_conflist())?;
        write(&layout.kubelet_config(), &config::kubelet_yaml(&layout))?;
        write(&layout.kube_proxy_config(), &config::kube_proxy_yaml(&layout))?;
        write(&layout.corefile(), &config::corefile(&layout))?;
        let log = |name: &str| root.join(format!("{name}.log"));
        let mut node = Self { layout: layout.clone(), processes: Vec::new(), _lock: lock };

        // containerd finds containerd-shim-runc-v2 on its PATH.
        let mut containerd = Command::new(bin.join("containerd"));
        containerd.arg("--config").arg(layout.containerd_config()).env("PATH", path_with(&bin));
        node.processes.push(Supervised::spawn("containerd", containerd, &log("containerd"))?);
        poll::until_async("containerd socket", START_TIMEOUT, async || {
            node.processes[0].ensure_running()?;
            Ok(node.ctr(&["version"]).is_ok().then_some(()))
        })
        .await?;
        node.import_image(&pause_archive(&bin, root)?)?;

        let mut coredns = Command::new(bin.join("coredns"));
        coredns.arg("-conf").arg(layout.corefile());
        node.processes.push(Supervised::spawn("coredns", coredns, &log("coredns"))?);

        let mut proxy = Command::new(bin.join("kube-proxy"));
        proxy.arg(format!("--config={}", layout.kube_proxy_config().display()));
        node.processes.push(Supervised::spawn("kube-proxy", proxy, &log("kube-proxy"))?);

        let mut kubelet = Command::new(bin.join("kubelet"));
        kubelet
            .arg(format!("--config={}", layout.kubelet_config().display()))
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--root-dir={}", layout.kubelet_root().display()))
            .arg(format!("--cert-dir={}", root.join("kubelet/pki").display()))
            .arg(format!("--hostname-override={NODE_NAME}"))
            .arg(format!("--node-ip={GATEWAY}"))
            .arg("--node-labels=ember.dev/node=real")
            .arg("--v=1")
            .env("PATH", path_with(&bin));
        node.processes.push(Supervised::spawn("kubelet", kubelet, &log("kubelet"))?);

        let nodes: Api<Node> = Api::all(client.clone());
        poll::until_async("the real node Ready", START_TIMEOUT, async || {
            for process in &mut node.processes {
                process.ensure_running()?;
            }
            let ready = nodes.get_opt(NODE_NAME).await.map_err(|e| Error::Kube(e.to_string()))?.is_some_and(|n| {
                n.status
                    .and_then(|s| s.conditions)
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            });
            Ok(ready.then_some(()))
        })
        .await?;
        poll::until_async("CoreDNS ready", START_TIMEOUT, async || {
            node.processes[1].ensure_running()?;
            Ok(crate::control_plane::http_get_ok(layout.dns_health_port, "/health").await.then_some(()))
        })
        .await?;
        Ok(node)
    }

    /// Loads an OCI image archive into the node's containerd, where the
    /// kubelet finds it without pulling.
    pub fn import_image(&self, archive: &Path) -> Result<(), Error> {
        let archive = archive.to_string_lossy();
        self.ctr(&["images", "import", "--platform", "linux/amd64", &archive]).map(|_| ())
    }

    /// Runs `ctr` against this node's containerd in the Kubernetes namespace.
    pub fn ctr(&self, args: &[&str]) -> Result<String, Error> {
        let socket = self.layout.containerd_socket();
        let socket = socket.to_string_lossy();
        let all = [&["--address", socket.as_ref(), "--namespace", "k8s.io"], args].concat();
        output(&self.layout.bin.join("ctr").to_string_lossy(), &all)
    }

    /// Log of a node component (`kubelet`, `containerd`, ...), for diagnostics.
    pub fn log_of(&self, component: &str) -> String {
        crate::process::tail_of_file(&self.layout.root.join(format!("{component}.log")), 16 * 1024)
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        while let Some(mut process) = self.processes.pop() {
            process.terminate(Duration::from_secs(5));
        }
        reaper::clear_leftovers(&self.layout.bin);
    }
}

/// Runs a command, failing with its stderr.
fn run(program: &str, args: &[&str]) -> Result<(), Error> {
    output(program, args).map(|_| ())
}

/// Runs a command; its stdout, or an error with its stderr.
fn output(program: &str, args: &[&str]) -> Result<String, Error> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| Error::Spawn { name: program.to_owned(), source })?;
    if !out.status.success() {
        return Err(Error::Node(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn check_root() -> Result<(), Error> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(Error::Node(
            "a real node needs root (containerd, the kubelet and kube-proxy manage cgroups, mounts and iptables)"
                .into(),
        ))
    }
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    write_bytes(path, text.as_bytes())
}

fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|source| Error::Io { context: format!("creating {}", parent.display()), source })?;
    }
    std::fs::write(path, bytes).map_err(|source| Error::Io { context: format!("writing {}", path.display()), source })
}

fn path_with(bin: &Path) -> String {
    let system = std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    format!("{}:{system}", bin.display())
}

/// The pod sandbox image, from the statically linked `pause` binary that
/// `hack/build-node.sh` compiled.
fn pause_archive(bin: &Path, root: &Path) -> Result<PathBuf, Error> {
    let fail = |e: ember_images::Error| Error::Node(format!("building the pause image: {e}"));
    let spec = ember_images::ImageSpec {
        reference: ember_images::ImageReference::parse(PAUSE_IMAGE).map_err(fail)?,
        version: config::PAUSE_VERSION.into(),
        revision: config::PAUSE_VERSION.into(),
        source: "https://github.com/kubernetes/kubernetes/tree/master/build/pause".into(),
        licenses: "Apache-2.0".into(),
        source_date_epoch: 0,
        platform: ember_images::oci::Platform::host().map_err(fail)?,
    };
    let inputs = ember_images::RootfsInputs {
        binary: bin.join("pause"),
        ca_certificates: ember_images::rootfs::CA_CERTIFICATES.into(),
    };
    let image = ember_images::build_image(&spec, &inputs).map_err(fail)?;
    let archive = root.join("pause.oci.tar");
    write_bytes(&archive, &image.archive)?;
    Ok(archive)
}

/// Directory with the node binaries: `$EMBER_NODE_BIN`, or whatever
/// `hack/build-node.sh` prints (it builds only what is missing).
pub fn binaries_dir() -> Result<PathBuf, Error> {
    crate::control_plane::script_output_dir("EMBER_NODE_BIN", "../build-node.sh")
}
