//! Shared set-up for the operator's integration tests: the real control
//! plane with CRDs and RBAC installed, a PostgreSQL server registered as a
//! database server, and the Tenant controller running in-process with
//! exactly the operator's ClusterRole (through impersonation of its
//! ServiceAccount), so a missing permission fails the tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ember_crds::conditions::find_condition;
use ember_crds::tenant::Tenant;
use ember_operator::config::{DatabaseServerConfig, OperatorConfig};
use ember_operator::context::Context;
use ember_operator::metrics::Metrics;
use ember_testenv::{Postgres, install_crds, poll, shared_control_plane};
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
    let cp = shared_control_plane().unwrap();
    let client = cp.client().await.unwrap();
    install_crds(&client, &ember_crds::crd_yaml::all_crds()).await.unwrap();
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": PLATFORM_NAMESPACE}})).unwrap();
    match Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => panic!("{e}"),
    }
    let rbac = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/rbac");
    let output = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(cp.kubeconfig())
        .args(["apply", "--server-side", "--force-conflicts", "-k"])
        .arg(&rbac)
        .output()
        .unwrap();
    assert!(output.status.success(), "applying config/rbac: {}", String::from_utf8_lossy(&output.stderr));
    client
}

/// A client that acts as the operator's ServiceAccount.
pub async fn operator_client() -> Client {
    let cp = shared_control_plane().unwrap();
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

/// The Tenant controller, running until dropped.
pub struct RunningOperator {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningOperator {
    pub async fn start(servers: Vec<DatabaseServerConfig>) -> Self {
        let config = OperatorConfig { platform_namespace: PLATFORM_NAMESPACE.into(), database_servers: servers };
        let ctx = Arc::new(Context::new(operator_client().await, config, Metrics::default()));
        let (stop, mut stop_rx) = watch::channel(false);
        let shutdown = async move {
            while !*stop_rx.borrow() {
                if stop_rx.changed().await.is_err() {
                    return;
                }
            }
        };
        let task = tokio::spawn(ember_operator::tenant::run(ctx, 4, shutdown));
        Self { stop, task: Some(task) }
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
    let api: Api<Tenant> = Api::all(client.clone());
    let result = poll::until_async(what, TIMEOUT, async || {
        let tenant = api.get_opt(name).await.map_err(|e| ember_testenv::Error::Kube(e.to_string()))?;
        Ok(tenant.filter(|t| check(t)))
    })
    .await;
    match result {
        Ok(tenant) => tenant,
        Err(e) => {
            let current = api.get_opt(name).await.ok().flatten().and_then(|t| t.status);
            panic!("{e}; tenant {name} status: {current:#?}")
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
