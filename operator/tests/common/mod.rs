//! Shared set-up for the operator's integration tests: the real control
//! plane with CRDs and RBAC installed, a PostgreSQL server registered as a
//! database server, and the controllers running in-process with
//! exactly the operator's ClusterRole (through impersonation of its
//! ServiceAccount) and under the admission policy that confines its
//! writes, so a missing permission or a write outside it fails the tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ember_crds::conditions::find_condition;
use ember_crds::model_deployment::ModelDeployment;
use ember_crds::tenant::Tenant;
use ember_operator::config::{DatabaseServerConfig, OperatorConfig};
use ember_operator::context::Context;
use ember_operator::metrics::Metrics;
use ember_testenv::{ControlPlane, Postgres, install_crds, poll, shared_control_plane};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::sync::watch;

pub const PLATFORM_NAMESPACE: &str = "ember-system";
pub const OPERATOR_USER: &str = "system:serviceaccount:ember-system:ember-operator";
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// An admin client with CRDs, RBAC and the platform namespace in place.
pub async fn admin_client() -> Client {
    admin_client_of(shared_control_plane().unwrap()).await
}

/// [`admin_client`] for a control plane of the test's own.
pub async fn admin_client_of(cp: &ControlPlane) -> Client {
    let client = cp.client().await.unwrap();
    install_crds(&client, &ember_crds::crd_yaml::all_crds()).await.unwrap();
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": PLATFORM_NAMESPACE}})).unwrap();
    match Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => panic!("{e}"),
    }
    cp.apply_kustomization(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/rbac")).unwrap();
    // The operator's controllers run under the policy that confines its writes.
    cp.apply_kustomization(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/policy/operator")).unwrap();
    client
}

/// A client that acts as the operator's ServiceAccount.
pub async fn operator_client() -> Client {
    operator_client_of(shared_control_plane().unwrap()).await
}

/// [`operator_client`] for a control plane of the test's own.
pub async fn operator_client_of(cp: &ControlPlane) -> Client {
    let kubeconfig = Kubeconfig::read_from(cp.kubeconfig()).unwrap();
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    config.auth_info.impersonate = Some(OPERATOR_USER.into());
    Client::try_from(config).unwrap()
}

/// Registers `postgres` as database server `name` (admin Secret in the platform namespace).
pub async fn database_server(admin: &Client, name: &str, postgres: &Postgres) -> DatabaseServerConfig {
    let secret_name = format!("{name}-admin");
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": secret_name, "namespace": PLATFORM_NAMESPACE},
        "stringData": {"username": ember_testenv::SUPERUSER, "password": postgres.password()}
    }))
    .unwrap();
    Api::<Secret>::namespaced(admin.clone(), PLATFORM_NAMESPACE)
        .patch(&secret_name, &PatchParams::apply("ember-tests").force(), &Patch::Apply(&secret))
        .await
        .unwrap();
    DatabaseServerConfig {
        name: name.into(),
        host: "127.0.0.1".into(),
        port: postgres.port(),
        database: "postgres".into(),
        admin_secret: secret_name,
        network_cidr: Some("127.0.0.1/32".into()),
    }
}

/// The tests' operator configuration: the platform namespace and `servers`,
/// defaults for the rest.
pub fn config_with(servers: Vec<DatabaseServerConfig>) -> OperatorConfig {
    OperatorConfig { platform_namespace: PLATFORM_NAMESPACE.into(), database_servers: servers, ..Default::default() }
}

/// The operator's controllers (Tenant and ModelDeployment), running until dropped.
pub struct RunningOperator {
    /// The controllers' metrics (reconciles, failures).
    pub metrics: Metrics,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningOperator {
    pub async fn start(servers: Vec<DatabaseServerConfig>) -> Self {
        Self::start_with(operator_client().await, config_with(servers))
    }

    /// The controllers with `config`, acting through `client`.
    pub fn start_with(client: Client, config: OperatorConfig) -> Self {
        let metrics = Metrics::default();
        let ctx = Arc::new(Context::new(client, config, metrics.clone()));
        let (stop, mut stop_rx) = watch::channel(false);
        let shutdown = async move {
            while !*stop_rx.borrow() {
                if stop_rx.changed().await.is_err() {
                    return;
                }
            }
        };
        let task = tokio::spawn(ember_operator::controllers::run(ctx, 4, shutdown));
        Self { metrics, stop, task: Some(task) }
    }

    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
        }
    }
}

impl Drop for RunningOperator {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Waits until `check` holds for the Tenant; returns it.
pub async fn wait_for_tenant(client: &Client, name: &str, what: &str, check: impl Fn(&Tenant) -> bool) -> Tenant {
    wait_until(&Api::all(client.clone()), name, what, TIMEOUT, check, |t: Tenant| t.status).await
}

/// Waits until `api` has `name` and it passes `check`; returns it. On
/// timeout, panics with what `report` picks from the object as it is then
/// (its status, say: the part that tells why).
pub async fn wait_until<K, R>(
    api: &Api<K>,
    name: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&K) -> bool,
    report: impl Fn(K) -> R,
) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    R: std::fmt::Debug,
{
    let result = poll::until_async(what, timeout, async || {
        let object = api.get_opt(name).await.map_err(|e| ember_testenv::Error::Kube(e.to_string()))?;
        Ok(object.filter(|o| check(o)))
    })
    .await;
    match result {
        Ok(object) => object,
        Err(e) => {
            let current = api.get_opt(name).await.ok().flatten().map(report);
            panic!("{e}; {name} is now: {current:#?}")
        }
    }
}

/// `type=status` with `reason` (if given), computed for the current generation.
pub fn has_condition(tenant: &Tenant, type_: &str, status: &str, reason: Option<&str>) -> bool {
    let Some(s) = tenant.status.as_ref() else { return false };
    s.observed_generation == tenant.metadata.generation
        && find_condition(&s.conditions, type_).is_some_and(|c| {
            c.status == status
                && c.observed_generation == tenant.metadata.generation
                && reason.is_none_or(|r| c.reason == r)
        })
}

pub fn is_ready(tenant: &Tenant) -> bool {
    has_condition(tenant, "Ready", "True", None)
}

/// A kubeconfig for the shared control plane that acts as the operator's
/// ServiceAccount, for operator processes; `tag` keeps test files apart.
pub fn operator_kubeconfig(tag: &str) -> PathBuf {
    let cp = shared_control_plane().unwrap();
    let text = std::fs::read_to_string(cp.kubeconfig()).unwrap();
    let impersonating = text.replace("    client-key:", &format!("    as: {OPERATOR_USER}\n    client-key:"));
    assert_ne!(text, impersonating, "kubeconfig layout changed: no client-key line to add `as:` to");
    let path = std::env::temp_dir().join(format!("ember-operator-{tag}-{}.kubeconfig", std::process::id()));
    std::fs::write(&path, impersonating).unwrap();
    path
}

/// Writes the operator's configuration file (JSON is valid YAML).
pub fn operator_config_file(servers: &[DatabaseServerConfig], tag: &str) -> PathBuf {
    let servers: Vec<_> = servers
        .iter()
        .map(|s| {
            serde_json::json!({
                "name": s.name, "host": s.host, "port": s.port, "database": s.database,
                "adminSecret": s.admin_secret, "networkCidr": s.network_cidr,
            })
        })
        .collect();
    let config = serde_json::json!({"platformNamespace": PLATFORM_NAMESPACE, "databaseServers": servers});
    let path = std::env::temp_dir().join(format!("ember-operator-{tag}-{}.yaml", std::process::id()));
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

/// A real `ember-operator` process with its stdout (the logs) kept in a file.
pub struct OperatorProcess {
    child: Child,
    pub health_port: u16,
    pub log: PathBuf,
}

impl OperatorProcess {
    /// Starts the binary with `args` after the kubeconfig; logs go to a temporary file.
    pub fn start(kubeconfig: &Path, identity: &str, args: &[&str]) -> Self {
        let health_port = ember_testenv::free_port().unwrap();
        let log = std::env::temp_dir().join(format!("ember-operator-{identity}-{}.log", std::process::id()));
        let child = Command::new(env!("CARGO_BIN_EXE_ember-operator"))
            .env("KUBECONFIG", kubeconfig)
            .env_remove("RUST_LOG")
            .args(["--identity", identity])
            .arg("--health-addr")
            .arg(format!("127.0.0.1:{health_port}"))
            .args(args)
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Self { child, health_port, log }
    }

    /// SIGKILL: no chance to finish anything or release the Lease.
    pub fn kill(mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log.clone()
    }

    /// SIGTERM, then waits (bounded) for the exit; returns whether it exited successfully.
    pub fn terminate(mut self, deadline: Duration) -> bool {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "could not send SIGTERM to {pid}");
        let exited = poll::until("operator exits after SIGTERM", deadline, || Ok(self.child.try_wait().unwrap()));
        exited.is_ok_and(|status| status.success())
    }

    /// GET `path` on the health server; the body, or None while it does not answer.
    pub async fn get(&self, path: &str) -> Option<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.health_port)).await.ok()?;
        stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await.ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await.ok()?;
        Some(body)
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client that acts as `user` in `groups` (what `kubectl --as --as-group` does).
pub async fn client_as(user: &str, groups: &[&str]) -> Client {
    let cp = shared_control_plane().unwrap();
    let kubeconfig = Kubeconfig::read_from(cp.kubeconfig()).unwrap();
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    config.auth_info.impersonate = Some(user.into());
    config.auth_info.impersonate_groups = (!groups.is_empty()).then(|| groups.iter().map(|g| g.to_string()).collect());
    Client::try_from(config).unwrap()
}

/// Waits until `api` no longer has `name`.
pub async fn wait_gone<K>(api: &Api<K>, name: &str, what: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    poll::until_async(what, TIMEOUT, async || {
        Ok(api.get_opt(name).await.map_err(|e| ember_testenv::Error::Kube(e.to_string()))?.is_none().then_some(()))
    })
    .await
    .unwrap();
}

/// Waits until `check` holds for the ModelDeployment; returns it.
pub async fn wait_for_md(
    api: &Api<ModelDeployment>,
    name: &str,
    what: &str,
    check: impl Fn(&ModelDeployment) -> bool,
) -> ModelDeployment {
    wait_for_md_within(api, name, what, TIMEOUT, check).await
}

/// [`wait_for_md`] with a deadline of the caller's.
pub async fn wait_for_md_within(
    api: &Api<ModelDeployment>,
    name: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&ModelDeployment) -> bool,
) -> ModelDeployment {
    wait_until(api, name, what, timeout, check, |m: ModelDeployment| m.status).await
}

/// `type=status` (with `reason` if given), computed for the current generation.
pub fn md_condition(md: &ModelDeployment, type_: &str, status: &str, reason: Option<&str>) -> bool {
    let Some(s) = md.status.as_ref() else { return false };
    s.observed_generation == md.metadata.generation
        && find_condition(&s.conditions, type_).is_some_and(|c| {
            c.status == status
                && c.observed_generation == md.metadata.generation
                && reason.is_none_or(|r| c.reason == r)
        })
}

pub fn md_ready(md: &ModelDeployment) -> bool {
    md_condition(md, "Ready", "True", None)
}
