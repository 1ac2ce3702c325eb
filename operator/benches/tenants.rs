//! Tenant throughput benchmark (not a test): creates N Tenants, with the
//! database part on, against the local control plane and a real PostgreSQL,
//! with the real `ember-operator` binary, and prints one table row per N:
//! time until all are Ready, p50/p99 create→Ready latency, reconciles/s,
//! operator peak RSS, and the raw baseline of the same API server — a plain
//! client creating the same number of objects (16 per tenant: what the
//! operator writes) without any operator.
//!
//! `cargo bench -p ember-operator --bench tenants -- 10 100 1000`
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_crds::conditions::is_ready_at;
use ember_crds::tenant::Tenant;
use ember_testenv::{ControlPlane, Postgres, free_port, install_crds};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::Mutex;

/// Objects the operator writes per tenant (namespace, quota, limit range,
/// 6 network policies, service account, 3 role bindings, cluster role,
/// cluster role binding, secret).
const OBJECTS_PER_TENANT: usize = 16;
const CONCURRENCY: usize = 16;

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![10, 100] } else { sizes };

    let cp = ControlPlane::start().await.unwrap();
    let admin = cp.client().await.unwrap();
    let pg = tokio::task::spawn_blocking(|| Postgres::start().unwrap()).await.unwrap();
    install_crds(&admin, &ember_crds::crd_yaml::all_crds()).await.unwrap();
    let kubectl = |args: &[&str]| {
        let out =
            std::process::Command::new("kubectl").arg("--kubeconfig").arg(cp.kubeconfig()).args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    kubectl(&["create", "namespace", "ember-system"]);
    kubectl(&["apply", "--server-side", "-k", concat!(env!("CARGO_MANIFEST_DIR"), "/../config/rbac")]);
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pg-admin", "namespace": "ember-system"},
        "stringData": {"username": "postgres", "password": pg.password()}
    }))
    .unwrap();
    Api::<Secret>::namespaced(admin.clone(), "ember-system")
        .patch("pg-admin", &PatchParams::apply("bench").force(), &Patch::Apply(&secret))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("operator.yaml");
    std::fs::write(
        &config,
        format!(
            "databaseServers:\n- {{name: pg, host: 127.0.0.1, port: {}, database: postgres, adminSecret: pg-admin, networkCidr: 127.0.0.1/32}}\n",
            pg.port()
        ),
    )
    .unwrap();
    let kubeconfig = dir.path().join("operator.kubeconfig");
    let text = std::fs::read_to_string(cp.kubeconfig()).unwrap();
    std::fs::write(
        &kubeconfig,
        text.replace("    client-key:", "    as: system:serviceaccount:ember-system:ember-operator\n    client-key:"),
    )
    .unwrap();
    let health = free_port().unwrap();
    let mut operator = std::process::Command::new(env!("CARGO_BIN_EXE_ember-operator"))
        .env("KUBECONFIG", &kubeconfig)
        .args(["--config", config.to_str().unwrap(), "--concurrency", "16", "--log-format", "text"])
        .arg("--health-addr")
        .arg(format!("127.0.0.1:{health}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    println!(
        "| tenants | all Ready (s) | p50 create→Ready (s) | p99 create→Ready (s) | reconciles/s | operator peak RSS (MiB) | baseline: plain client, {OBJECTS_PER_TENANT}×N objects (s) | operator / baseline |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (round, n) in sizes.iter().copied().enumerate() {
        let before = reconciles_total(health).await;
        let (all_ready, mut latencies) = create_tenants(&admin, &format!("b{round}"), n).await;
        let reconciles = reconciles_total(health).await - before;
        latencies.sort();
        let pct = |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1];
        let baseline = baseline(&admin, &format!("raw{round}"), n).await;
        println!(
            "| {n} | {:.1} | {:.2} | {:.2} | {:.0} | {:.0} | {:.1} | {:.2} |",
            all_ready.as_secs_f64(),
            pct(0.50).as_secs_f64(),
            pct(0.99).as_secs_f64(),
            reconciles / all_ready.as_secs_f64(),
            peak_rss_mib(operator.id()),
            baseline.as_secs_f64(),
            all_ready.as_secs_f64() / baseline.as_secs_f64(),
        );
    }
    let _ = operator.kill();
    let _ = operator.wait();
}

/// Creates `n` tenants with `CONCURRENCY` writers; returns the time until all
/// are Ready and each tenant's create→Ready latency (seen through a watch).
async fn create_tenants(client: &Client, prefix: &str, n: usize) -> (Duration, Vec<Duration>) {
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let api: Api<Tenant> = Api::all(client.clone());
    let watch_api = api.clone();
    let watch_created = created.clone();
    let prefix_owned = format!("{prefix}-");
    let watch = tokio::spawn(async move {
        let mut latencies = HashMap::new();
        let mut stream = watcher(watch_api, watcher::Config::default()).applied_objects().boxed();
        while let Some(tenant) = stream.try_next().await.unwrap() {
            let name = tenant.name_any();
            if !name.starts_with(&prefix_owned) || latencies.contains_key(&name) {
                continue;
            }
            let ready = tenant.status.as_ref().is_some_and(|s| is_ready_at(&s.conditions, tenant.metadata.generation));
            if let (true, Some(at)) = (ready, watch_created.lock().await.get(&name).copied()) {
                latencies.insert(name, at.elapsed());
                if latencies.len() == n {
                    return latencies.into_values().collect::<Vec<_>>();
                }
            }
        }
        Vec::new()
    });
    let started = Instant::now();
    futures::stream::iter(0..n)
        .for_each_concurrent(CONCURRENCY, |i| {
            let (api, created) = (api.clone(), created.clone());
            let name = format!("{prefix}-{i}");
            async move {
                let tenant: Tenant = serde_json::from_value(serde_json::json!({
                    "apiVersion": "ember.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": name}, "spec": {}
                }))
                .unwrap();
                created.lock().await.insert(name, Instant::now());
                api.create(&PostParams::default(), &tenant).await.unwrap();
            }
        })
        .await;
    let latencies = tokio::time::timeout(Duration::from_secs(3600), watch).await.unwrap().unwrap();
    (started.elapsed(), latencies)
}

/// A plain client writing the same number of objects: `n` namespaces with
/// `OBJECTS_PER_TENANT - 1` ConfigMaps each.
async fn baseline(client: &Client, prefix: &str, n: usize) -> Duration {
    let started = Instant::now();
    futures::stream::iter(0..n)
        .for_each_concurrent(CONCURRENCY, |i| {
            let client = client.clone();
            let ns_name = format!("{prefix}-{i}");
            async move {
                let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": ns_name}})).unwrap();
                Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
                let maps: Api<ConfigMap> = Api::namespaced(client, &ns_name);
                for j in 0..OBJECTS_PER_TENANT - 1 {
                    let cm: ConfigMap = serde_json::from_value(
                        serde_json::json!({"metadata": {"name": format!("o{j}")}, "data": {"k": "v"}}),
                    )
                    .unwrap();
                    maps.create(&PostParams::default(), &cm).await.unwrap();
                }
            }
        })
        .await;
    started.elapsed()
}

async fn reconciles_total(port: u16) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return 0.0 };
    let _ = stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").await;
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body).await;
    body.lines()
        .filter(|l| l.starts_with("ember_operator_reconciles_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Peak resident set size (VmHWM) of a process, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}
