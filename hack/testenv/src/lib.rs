//! Real infrastructure for Ember's tests and local development.
//!
//! - [`ControlPlane`]: etcd, kube-apiserver, kube-controller-manager,
//!   kube-scheduler and kwok on loopback, built from their Go modules by
//!   `hack/build-control-plane.sh`.
//! - [`RealNode`]: a real node (containerd, runc, CNI bridge, kubelet,
//!   kube-proxy, CoreDNS) beside kwok's, started with [`Nodes::Real`].
//! - [`Postgres`]: a throwaway PostgreSQL server from the machine's binaries.
//! - [`ModelStore`]: model files over HTTP where pods can fetch them.
//! - [`Redis`]: a throwaway Redis server from the machine's `redis-server`.
//!
//! Tests share one control plane per test binary through
//! [`shared_control_plane`] and isolate themselves by namespace and name.
//! Setting `EMBER_TEST_KUBECONFIG` makes them use an existing cluster instead.

mod control_plane;
mod crds;
mod model_store;
pub mod node;
mod pki;
pub mod poll;
mod postgres;
mod process;
mod redis;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

pub use control_plane::{
    AuditedWrite, CPU_NODES, ControlPlane, GPU_NODE, Nodes, PROFILING_ENV, binaries_dir, client_for, free_port,
};
pub use crds::{create_model_of_unknown_architecture, install_crds, raw_model_deployments};
pub use model_store::ModelStore;
pub use node::RealNode;
pub use postgres::{Postgres, SUPERUSER};
pub use process::Supervised;
pub use redis::Redis;

/// Everything that can go wrong while starting or using the fixtures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("could not start {name}: {source}")]
    Spawn { name: String, source: std::io::Error },
    #[error("{name} exited unexpectedly; its log ends with:\n{log_tail}")]
    Exited { name: String, log_tail: String },
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },
    #[error("certificates: {0}")]
    Pki(String),
    #[error("control-plane binaries: {0}")]
    Binaries(String),
    #[error("kubernetes client: {0}")]
    Kube(String),
    #[error("real node: {0}")]
    Node(String),
    #[error("postgresql: {0}")]
    Postgres(String),
    #[error("redis: {0}")]
    Redis(String),
    #[error("shared control plane failed to start: {0}")]
    SharedStart(String),
}

/// The control plane shared by every test in this process, started on first
/// use (or attached through `EMBER_TEST_KUBECONFIG`). Its processes die with
/// the test process. Safe to call from any thread or tokio runtime.
pub fn shared_control_plane() -> Result<&'static ControlPlane, Error> {
    static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("EMBER_TEST_KUBECONFIG") {
                return Ok(ControlPlane::attach(PathBuf::from(path)));
            }
            // Start on a thread of its own: the caller may be inside a runtime
            // that must not be blocked on (or re-entered by) `block_on`.
            std::thread::spawn(|| {
                let runtime =
                    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
                runtime.block_on(ControlPlane::start()).map_err(|e| e.to_string())
            })
            .join()
            .unwrap_or_else(|_| Err("control plane start panicked".into()))
        })
        .as_ref()
        .map_err(|message| Error::SharedStart(message.clone()))
}

/// Directory with the OCI archives of Ember's images (`ember-runtime.oci.tar`,
/// ...): `$EMBER_IMAGES_DIR`, or what `hack/build-images.sh` prints (it runs
/// the release build first).
pub fn images_dir() -> Result<PathBuf, Error> {
    control_plane::script_output_dir("EMBER_IMAGES_DIR", "../build-images.sh")
}
