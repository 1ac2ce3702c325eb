//! A real Kubernetes control plane on loopback: etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and kwok with simulated nodes.
//!
//! This is envtest plus the parts envtest leaves out: the controller-manager
//! (Deployments get ReplicaSets and Pods, namespaces finish deleting, quotas
//! get status, garbage collection follows owner references), the scheduler
//! (pods get bound) and kwok (bound pods turn Running/Ready on fake nodes, two
//! CPU nodes and one GPU node advertising `nvidia.com/gpu`). The binaries come
//! from `hack/build-control-plane.sh`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::node::{GATEWAY, RealNode};
use crate::process::{Supervised, tail_of_file};
use crate::{Error, pki, poll};

/// Names of the simulated nodes.
pub const CPU_NODES: [&str; 2] = ["kwok-cpu-0", "kwok-cpu-1"];
/// The simulated GPU node: label `nvidia.com/gpu.present=true`, taint `nvidia.com/gpu=present:NoSchedule`.
pub const GPU_NODE: &str = "kwok-gpu-0";

const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Annotation that hands a node to kwok; the real node does not carry it.
const KWOK_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";
const DIR_PREFIX: &str = "ember-cp-";
const OWNER_FILE: &str = "owner.pid";

/// Which nodes a cluster gets besides the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nodes {
    /// kwok only: two CPU nodes and the GPU node. Pods turn Ready without
    /// running — for scheduling, status plumbing and scale.
    Kwok,
    /// A real node ([`RealNode`]) where CPU pods run for real, plus the
    /// kwok GPU node (no GPU here). Needs root; one per machine.
    Real,
}

/// A running control plane, or one the tests attach to through a kubeconfig.
/// Dropping it stops every process it started and removes its files.
/// The API server's audit log, in the control plane's directory.
const AUDIT_LOG: &str = "audit.log";

/// Writes only, once each (when answered), without bodies: enough to count
/// who writes what, small enough for benchmarks with thousands of objects.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: Metadata
    verbs: [create, update, patch, delete, deletecollection]
  - level: None
";

/// Set (to anything) to serve the API server's `/debug/pprof` to the admin.
pub const PROFILING_ENV: &str = "EMBER_CP_PROFILING";

/// One write request as the API server's audit log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditedWrite {
    /// Who authenticated (`admin`, a ServiceAccount, ...).
    pub user: String,
    /// Whom they acted as, when impersonating (how tests act as the operator).
    pub impersonated: String,
    pub verb: String,
    pub resource: String,
    pub namespace: String,
    pub name: String,
    pub code: u64,
}

impl AuditedWrite {
    /// The identity the request was authorised as.
    pub fn acting_user(&self) -> &str {
        if self.impersonated.is_empty() { &self.user } else { &self.impersonated }
    }
}

#[derive(Debug)]
pub struct ControlPlane {
    kubeconfig: PathBuf,
    // Declared first so the node's pods stop before the API server does.
    node: Option<RealNode>,
    // Declared before `_dir` so processes stop before their files go away.
    processes: Vec<Supervised>,
    _dir: Option<tempfile::TempDir>,
}

impl ControlPlane {
    /// Starts all components with kwok nodes only and waits until they work.
    pub async fn start() -> Result<Self, Error> {
        Self::start_with(Nodes::Kwok).await
    }

    /// Starts all components in a fresh temp dir and waits until they work.
    pub async fn start_with(nodes: Nodes) -> Result<Self, Error> {
        let bin = binaries_dir()?;
        // Before the stale dirs go: a crashed node's mounts live in one.
        let node_lock = match nodes {
            Nodes::Real => Some(RealNode::prepare()?),
            Nodes::Kwok => None,
        };
        remove_stale_dirs();
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .map_err(|source| Error::Io { context: "creating the control plane dir".into(), source })?;
        let root = dir.path().to_owned();
        std::fs::write(root.join(OWNER_FILE), std::process::id().to_string())
            .map_err(|source| Error::Io { context: "writing the owner pid".into(), source })?;
        let pki = pki::generate(&root.join("pki"))?;
        let mut processes = Vec::new();

        let etcd_port = free_port()?;
        let etcd_peer_port = free_port()?;
        let mut etcd = Command::new(bin.join("etcd"));
        etcd.args([
            "--name=node0".to_owned(),
            format!("--data-dir={}", root.join("etcd").display()),
            format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"),
            format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"),
            format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}"),
            format!("--initial-cluster=node0=http://127.0.0.1:{etcd_peer_port}"),
            "--unsafe-no-fsync=true".to_owned(),
            "--auto-compaction-retention=1".to_owned(),
            "--quota-backend-bytes=4294967296".to_owned(),
            "--log-level=warn".to_owned(),
        ]);
        processes.push(Supervised::spawn("etcd", etcd, &root.join("etcd.log"))?);
        poll::until_async("etcd /health", START_TIMEOUT, async || {
            processes[0].ensure_running()?;
            Ok(http_get_ok(etcd_port, "/health").await.then_some(()))
        })
        .await?;

        let api_port = free_port()?;
        // With a real node the API server listens on the pod bridge's
        // gateway, so pods reach it through the `kubernetes` Service like in
        // any cluster; kwok-only clusters stay on loopback.
        let api_address = match nodes {
            Nodes::Real => GATEWAY.to_string(),
            Nodes::Kwok => "127.0.0.1".to_owned(),
        };
        let audit_policy = root.join("audit-policy.yaml");
        std::fs::write(&audit_policy, AUDIT_POLICY)
            .map_err(|source| Error::Io { context: "writing the audit policy".into(), source })?;
        let mut apiserver = Command::new(bin.join("kube-apiserver"));
        apiserver.args([
            format!("--audit-policy-file={}", audit_policy.display()),
            format!("--audit-log-path={}", root.join(AUDIT_LOG).display()),
            "--audit-log-format=json".to_owned(),
            "--audit-log-maxsize=4096".to_owned(),
            format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
            format!("--bind-address={api_address}"),
            format!("--advertise-address={api_address}"),
            format!("--secure-port={api_port}"),
            format!("--cert-dir={}", root.join("apiserver-certs").display()),
            format!("--tls-cert-file={}", pki.serving_cert.display()),
            format!("--tls-private-key-file={}", pki.serving_key.display()),
            format!("--client-ca-file={}", pki.ca_cert.display()),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_owned(),
            format!("--service-account-key-file={}", pki.service_account_public_key.display()),
            format!("--service-account-signing-key-file={}", pki.service_account_key.display()),
            format!("--service-cluster-ip-range={}", crate::node::SERVICE_SUBNET),
            // The admin certificate for logs and exec on the kubelet.
            format!("--kubelet-client-certificate={}", pki.admin_cert.display()),
            format!("--kubelet-client-key={}", pki.admin_key.display()),
            "--kubelet-preferred-address-types=InternalIP".to_owned(),
            "--authorization-mode=RBAC".to_owned(),
            "--allow-privileged=true".to_owned(),
            // Off, as hardened clusters run it; a benchmark that wants to
            // see where the API server's CPU goes turns it on.
            format!("--profiling={}", std::env::var_os(PROFILING_ENV).is_some()),
            "--v=1".to_owned(),
        ]);
        if nodes == Nodes::Kwok {
            // Loopback advertise addresses are refused by the endpoint reconciler.
            apiserver.arg("--endpoint-reconciler-type=none");
        }
        processes.push(Supervised::spawn("kube-apiserver", apiserver, &root.join("kube-apiserver.log"))?);

        let kubeconfig = root.join("admin.kubeconfig");
        write_kubeconfig(&kubeconfig, &api_address, api_port, &pki)?;
        let client = client_for(&kubeconfig).await?;
        poll::until_async("kube-apiserver /readyz", START_TIMEOUT, async || {
            processes[1].ensure_running()?;
            let request = http::Request::get("/readyz").body(Vec::new()).map_err(|e| Error::Kube(e.to_string()))?;
            Ok(client.request_text(request).await.ok().filter(|body| body.trim() == "ok").map(|_| ()))
        })
        .await?;

        let always_allow = "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics";
        let mut kcm = Command::new(bin.join("kube-controller-manager"));
        kcm.args([
            format!("--kubeconfig={}", kubeconfig.display()),
            "--leader-elect=false".to_owned(),
            "--bind-address=127.0.0.1".to_owned(),
            format!("--secure-port={}", free_port()?),
            always_allow.to_owned(),
            format!("--root-ca-file={}", pki.ca_cert.display()),
            format!("--service-account-private-key-file={}", pki.service_account_key.display()),
            "--use-service-account-credentials=false".to_owned(),
            "--kube-api-qps=200".to_owned(),
            "--kube-api-burst=400".to_owned(),
            "--concurrent-namespace-syncs=10".to_owned(),
            // Quotas on freshly installed CRDs (count/modeldeployments.ember.dev)
            // get their usage only on a full resync: 5 min by default.
            "--resource-quota-sync-period=10s".to_owned(),
            "--v=1".to_owned(),
        ]);
        processes.push(Supervised::spawn("kube-controller-manager", kcm, &root.join("kube-controller-manager.log"))?);

        let mut scheduler = Command::new(bin.join("kube-scheduler"));
        scheduler.args([
            format!("--kubeconfig={}", kubeconfig.display()),
            "--leader-elect=false".to_owned(),
            "--bind-address=127.0.0.1".to_owned(),
            format!("--secure-port={}", free_port()?),
            always_allow.to_owned(),
            "--v=1".to_owned(),
        ]);
        processes.push(Supervised::spawn("kube-scheduler", scheduler, &root.join("kube-scheduler.log"))?);

        let kwok_config = root.join("kwok.yaml");
        write_kwok_config(&kwok_config, &bin.join("kwok-stages"))?;
        let mut kwok = Command::new(bin.join("kwok"));
        kwok.args([
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--config={}", kwok_config.display()),
            "--manage-all-nodes=false".to_owned(),
            format!("--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake"),
            "--cidr=10.244.0.0/16".to_owned(),
            "--node-ip=10.0.0.2".to_owned(),
        ]);
        processes.push(Supervised::spawn("kwok", kwok, &root.join("kwok.log"))?);

        let kwok_nodes = create_nodes(&client, nodes).await?;
        let node_api: Api<Node> = Api::all(client.clone());
        poll::until_async("kwok nodes Ready", START_TIMEOUT, async || {
            for p in processes.iter_mut().skip(2) {
                p.ensure_running()?;
            }
            let list = node_api.list(&Default::default()).await.map_err(|e| Error::Kube(e.to_string()))?;
            let ready = list.items.iter().filter(|n| is_kwok_node(n) && node_is_ready(n)).count();
            Ok((ready == kwok_nodes).then_some(()))
        })
        .await?;
        // The service account controller creates `default` in every namespace:
        // proof that the controller-manager runs and can write.
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        poll::until_async("controller-manager creates default/default ServiceAccount", START_TIMEOUT, async || {
            Ok(accounts.get_opt("default").await.map_err(|e| Error::Kube(e.to_string()))?.map(|_| ()))
        })
        .await?;

        let node = match node_lock {
            Some(lock) => Some(RealNode::start(lock, &root.join("node"), &kubeconfig, &pki.ca_cert, &client).await?),
            None => None,
        };
        Ok(Self { kubeconfig, node, processes, _dir: Some(dir) })
    }

    /// The real node, when the cluster has one.
    pub fn real_node(&self) -> Option<&RealNode> {
        self.node.as_ref()
    }

    /// Uses an already running cluster (e.g. the one `hack/dev.sh` started).
    pub fn attach(kubeconfig: impl Into<PathBuf>) -> Self {
        Self { kubeconfig: kubeconfig.into(), node: None, processes: Vec::new(), _dir: None }
    }

    /// Admin kubeconfig of this control plane.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A client with cluster-admin rights, bound to the caller's tokio runtime.
    pub async fn client(&self) -> Result<Client, Error> {
        client_for(&self.kubeconfig).await
    }

    /// `kubectl apply --server-side -k dir` as admin: how the tests install
    /// the shipped kustomizations (e.g. `config/rbac`) exactly as users do.
    pub fn apply_kustomization(&self, dir: &Path) -> Result<(), Error> {
        let output = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["apply", "--server-side", "--force-conflicts", "-k"])
            .arg(dir)
            .output()
            .map_err(|source| Error::Spawn { name: "kubectl".into(), source })?;
        if !output.status.success() {
            return Err(Error::Kube(format!(
                "kubectl apply -k {}: {}",
                dir.display(),
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(())
    }

    /// Every write request the API server has answered so far (create,
    /// update, patch, delete), from its audit log: who sent it, to what.
    pub fn audited_writes(&self) -> Vec<AuditedWrite> {
        let Some(dir) = &self._dir else { return Vec::new() };
        let text = std::fs::read_to_string(dir.path().join(AUDIT_LOG)).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .map(|entry| {
                let field =
                    |pointer: &str| entry.pointer(pointer).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
                AuditedWrite {
                    user: field("/user/username"),
                    impersonated: field("/impersonatedUser/username"),
                    verb: field("/verb"),
                    resource: field("/objectRef/resource"),
                    namespace: field("/objectRef/namespace"),
                    name: field("/objectRef/name"),
                    code: entry.pointer("/responseStatus/code").and_then(|v| v.as_u64()).unwrap_or_default(),
                }
            })
            .collect()
    }

    /// Log of one component (`etcd`, `kube-apiserver`, ...), for diagnostics.
    pub fn log_of(&self, component: &str) -> String {
        match &self._dir {
            Some(dir) => tail_of_file(&dir.path().join(format!("{component}.log")), 16 * 1024),
            None => String::new(),
        }
    }

    /// Adds kwok CPU nodes named `names` (like the two the cluster starts
    /// with: 32 CPUs, 256Gi, 110 pods each) and waits until kwok reports
    /// them Ready, for benchmarks that need room for more pods.
    pub async fn add_kwok_cpu_nodes(&self, names: &[String]) -> Result<(), Error> {
        let client = self.client().await?;
        let api: Api<Node> = Api::all(client);
        for name in names {
            create_node(&api, name, 0).await?;
        }
        poll::until_async("added kwok nodes Ready", START_TIMEOUT, async || {
            let list = api.list(&Default::default()).await.map_err(|e| Error::Kube(e.to_string()))?;
            let ready = list.items.iter().filter(|n| names.contains(&n.name_any()) && node_is_ready(n)).count();
            Ok((ready == names.len()).then_some(()))
        })
        .await
    }

    /// Whether every started process is still alive.
    pub fn is_healthy(&mut self) -> bool {
        self.processes.iter_mut().all(Supervised::is_running)
    }
}

/// The shared control plane of a test binary is never dropped (it lives in a
/// static), so its processes die with the test process but its temp dir
/// stays. Remove such dirs whose owning process is gone.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let owner = std::fs::read_to_string(entry.path().join(OWNER_FILE)).unwrap_or_default();
        let owner_alive = !owner.trim().is_empty() && Path::new("/proc").join(owner.trim()).exists();
        // A crashed real node's dir still has mounts (and maybe running
        // containers): only the next real node's start clears it safely.
        let holds_a_node = crate::node::recorded_root().is_some_and(|root| root.starts_with(entry.path()));
        if !owner_alive && !holds_a_node {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Builds a kube client from a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> Result<Client, Error> {
    let kc = Kubeconfig::read_from(kubeconfig).map_err(|e| Error::Kube(e.to_string()))?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Kube(e.to_string()))?;
    Client::try_from(config).map_err(|e| Error::Kube(e.to_string()))
}

/// Directory with the control-plane binaries: `$EMBER_CP_BIN`, or whatever
/// `hack/build-control-plane.sh` prints (it builds only what is missing).
pub fn binaries_dir() -> Result<PathBuf, Error> {
    script_output_dir("EMBER_CP_BIN", "../build-control-plane.sh")
}

/// `$env_var`, or the directory a build script of `hack/` prints last (the
/// scripts build only what is missing, so this is cheap when warm).
pub(crate) fn script_output_dir(env_var: &str, script: &str) -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os(env_var) {
        return Ok(PathBuf::from(dir));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
    let output = Command::new("bash")
        .arg(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|source| Error::Spawn { name: script.display().to_string(), source })?;
    if !output.status.success() {
        return Err(Error::Binaries(format!("{} failed with {}", script.display(), output.status)));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let dir = stdout.lines().last().unwrap_or_default().trim();
    if dir.is_empty() {
        return Err(Error::Binaries(format!("{} printed no directory", script.display())));
    }
    Ok(PathBuf::from(dir))
}

/// A currently free loopback port, below the kernel's ephemeral range.
///
/// A port the kernel hands out for `:0` comes from the same range as the
/// source ports of outgoing connections, so any connection opened between
/// the pick and the server's bind may take it (seen: etcd failing with
/// "address already in use"). Ports below that range are only ever taken by
/// an explicit bind. Successive calls in one process walk through the range
/// from a random start, so two components are never handed the same port.
pub fn free_port() -> Result<u16, Error> {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOWEST: u32 = 10_000;
    static START: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = ephemeral_start.saturating_sub(LOWEST);
    if span >= 1_000 {
        let start = *START.get_or_init(|| (RandomState::new().hash_one(std::process::id()) % u64::from(span)) as u32);
        for _ in 0..span.min(2_000) {
            let step = NEXT.fetch_add(1, Ordering::Relaxed);
            let port = LOWEST + (start + step) % span;
            if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
                return Ok(port as u16);
            }
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|source| Error::Io { context: "finding a free port".into(), source })?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|source| Error::Io { context: "reading a free port".into(), source })
}

/// Plain-HTTP GET on loopback; true on a 200 answer.
pub(crate) async fn http_get_ok(port: u16, path: &str) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).starts_with("HTTP/1.0 200")
        || String::from_utf8_lossy(&response).starts_with("HTTP/1.1 200")
}

fn write_kubeconfig(path: &Path, address: &str, api_port: u16, pki: &pki::Pki) -> Result<(), Error> {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: ember-local\n  cluster:\n    server: https://{address}:{api_port}\n    certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    client-certificate: {cert}\n    client-key: {key}\ncontexts:\n- name: ember-local\n  context:\n    cluster: ember-local\n    user: admin\ncurrent-context: ember-local\n",
        ca = pki.ca_cert.display(),
        cert = pki.admin_cert.display(),
        key = pki.admin_key.display(),
    );
    std::fs::write(path, text).map_err(|source| Error::Io { context: format!("writing {}", path.display()), source })
}

/// kwok's standalone binary has no built-in stages: pass the upstream ones
/// the build script copied next to the binaries.
fn write_kwok_config(path: &Path, stages_dir: &Path) -> Result<(), Error> {
    // A config file replaces kwok's built-in defaults, so the parallelism
    // options (0 otherwise, which kwok refuses) are spelled out.
    let mut text = String::from(
        "kind: KwokConfiguration\napiVersion: config.kwok.x-k8s.io/v1alpha1\noptions:\n  manageAllNodes: false\n  manageNodesWithAnnotationSelector: kwok.x-k8s.io/node=fake\n  nodeLeaseDurationSeconds: 40\n  nodeLeaseParallelism: 4\n  podPlayStageParallelism: 4\n  nodePlayStageParallelism: 4\n  podsOnNodeSyncParallelism: 1\n  enablePodsOnNodeSyncListPager: true\n  enablePodsOnNodeSyncStreamWatch: false\n",
    );
    for stage in ["node-initialize", "node-heartbeat-with-lease", "pod-ready", "pod-complete", "pod-delete"] {
        let file = stages_dir.join(format!("{stage}.yaml"));
        let body = std::fs::read_to_string(&file)
            .map_err(|source| Error::Io { context: format!("reading {}", file.display()), source })?;
        text.push_str("---\n");
        text.push_str(&body);
        if !body.ends_with('\n') {
            text.push('\n');
        }
    }
    std::fs::write(path, text).map_err(|source| Error::Io { context: format!("writing {}", path.display()), source })
}

fn fake_node(name: &str, gpus: u32) -> Result<Node, Error> {
    let mut capacity = serde_json::json!({"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "1Ti"});
    let mut labels = serde_json::json!({
        "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "type": "kwok"
    });
    let mut taints = serde_json::json!([]);
    if gpus > 0 {
        capacity["nvidia.com/gpu"] = gpus.to_string().into();
        labels["nvidia.com/gpu.present"] = "true".into();
        taints = serde_json::json!([{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]);
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {"node.alpha.kubernetes.io/ttl": "0", KWOK_NODE_ANNOTATION: "fake"}
        },
        "spec": {"taints": taints},
        "status": {
            "allocatable": capacity.clone(),
            "capacity": capacity,
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "fake", "kubeProxyVersion": "fake"},
            "phase": "Running"
        }
    }))
    .map_err(|e| Error::Kube(format!("building node {name}: {e}")))
}

/// Creates the kwok nodes `nodes` asks for (CPU nodes only without a real
/// node, so CPU pods land where they really run) and returns their number.
async fn create_nodes(client: &Client, nodes: Nodes) -> Result<usize, Error> {
    let api: Api<Node> = Api::all(client.clone());
    let cpu_nodes: &[&str] = match nodes {
        Nodes::Kwok => &CPU_NODES,
        Nodes::Real => &[],
    };
    let wanted: Vec<_> = cpu_nodes.iter().map(|n| (*n, 0)).chain([(GPU_NODE, 8)]).collect();
    let count = wanted.len();
    for (name, gpus) in wanted {
        create_node(&api, name, gpus).await?;
    }
    Ok(count)
}

/// Creates one kwok node; one that exists already is left as it is.
async fn create_node(api: &Api<Node>, name: &str, gpus: u32) -> Result<(), Error> {
    match api.create(&PostParams::default(), &fake_node(name, gpus)?).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(e) => Err(Error::Kube(format!("creating node {name}: {e}"))),
    }
}

fn is_kwok_node(node: &Node) -> bool {
    node.metadata.annotations.as_ref().is_some_and(|a| a.get(KWOK_NODE_ANNOTATION).is_some_and(|v| v == "fake"))
}

fn node_is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
