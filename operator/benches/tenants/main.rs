//! Tenant benchmark (not a test): creates N Tenants, with the database part
//! on, against the local control plane and a real PostgreSQL, with the real
//! `ember-operator` binary, and prints one table row per N: time until all
//! are Ready, p50/p99 create→Ready latency, reconciles/s, operator peak RSS,
//! and the comparable baseline of the same API server in the same run: the
//! same manifests per tenant (the operator's own builder, plus the
//! credentials Secret) server-side applied as the operator's ServiceAccount,
//! namespace first and the rest at once, at several concurrencies (the best
//! is reported). The baselines run before the operator's round, and each
//! deletes all it made (and waits until the namespaces are gone), so every
//! measurement starts with the same objects in place (the API server's
//! authorizer scans all ClusterRoleBindings per request, the
//! controller-manager resyncs every quota: left in place, a baseline's
//! objects slowed each later measurement). For the last round it also
//! prints where the CPU time went (seconds per process kind, the operator's
//! round beside the best baseline), since the control plane, PostgreSQL and
//! the operator share the machine's cores, and what the API server served in
//! each (requests by verb and resource, watch events: [`served`]).
//!
//! Then, with all those Tenants in place:
//! - latency: one new Tenant every 2 s, create→Ready for each;
//! - idle: `EMBER_BENCH_IDLE_SECONDS` (default 600) without changes, with
//!   the operator resyncing every `EMBER_BENCH_RESYNC_SECONDS` (default 120,
//!   so every Tenant is checked several times in the window): the operator's
//!   writes to the API server (its audit log, by acting user), PostgreSQL
//!   write transactions (the next transaction id), and the passes it made;
//!   then one hand-edited quota, timed until the operator has restored it;
//! - scale (only when `EMBER_BENCH_SCALE_TENANTS` is set, e.g. 10000): more
//!   Tenants until that many exist, all Ready, and the operator's peak RSS;
//! - ModelDeployments ([`model_deployments`]): 2,000 by default
//!   (`EMBER_BENCH_MODEL_DEPLOYMENTS`, 0 skips them) across Tenants, until
//!   all are Ready, beside the same children applied directly.
//!
//! `cargo bench --workspace --bench tenants -- 100 1000` (the operator runs
//! with `--concurrency 16`; `EMBER_BENCH_OPERATOR_CONCURRENCY` changes it;
//! `EMBER_BENCH_TENANT_READER_ROLES=1` turns on the operator's per-tenant
//! reader ClusterRole and binding, in the baseline too)
//!
//! Where the API server's CPU goes: with `EMBER_CP_PROFILING=1
//! EMBER_BENCH_PROFILE_DIR=dir`, the last round also writes CPU profiles of
//! the API server (`go tool pprof -top dir/…`), 20 s from inside the
//! operator's round and 15 s from inside each baseline.
#![allow(clippy::unwrap_used)]

mod counters;
mod cpu;
mod model_deployments;
mod served;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use counters::{Counters, Order, Table};
use cpu::cpu_seconds_by_process;
use ember_crds::conditions::is_ready_at;
use ember_crds::tenant::Tenant;
use ember_operator::apply::{apply_cluster, apply_namespaced};
use ember_operator::tenant::build::rbac::binds_anybody;
use ember_operator::tenant::build::{DatabaseEndpoint, Egress, TenantChildren, desired_children};
use ember_testenv::{ControlPlane, Postgres, free_port, install_crds};
use futures::future::try_join_all;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ResourceQuota;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Config;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde::de::DeserializeOwned;
use served::api_server_counters;
use tokio::sync::Mutex;

/// The identity the operator acts as.
const OPERATOR_USER: &str = "system:serviceaccount:ember-system:ember-operator";
/// Writers creating Tenants.
const CONCURRENCY: usize = 16;
/// Tenants applied at once by the baseline; the best is reported.
const BASELINE_CONCURRENCY: [usize; 3] = [16, 32, 64];
/// New Tenants in the latency round.
const LATENCY_SAMPLES: usize = 30;

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
    // As installed in production (`config/policy`): Tenants carry the
    // cleanup finalizer from their create, so the operator does not write it.
    kubectl(&[
        "apply",
        "--server-side",
        "-f",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../config/policy/tenant-finalizer.yaml"),
    ]);
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
    let resync = env_or("EMBER_BENCH_RESYNC_SECONDS", 120);
    std::fs::write(
        &config,
        format!(
            "resyncSeconds: {resync}\ntenantReaderRoles: {}\ndatabaseServers:\n- {{name: pg, host: 127.0.0.1, port: {}, database: postgres, adminSecret: pg-admin, networkCidr: 127.0.0.1/32}}\n",
            reader_roles(),
            pg.port()
        ),
    )
    .unwrap();
    let kubeconfig = dir.path().join("operator.kubeconfig");
    let text = std::fs::read_to_string(cp.kubeconfig()).unwrap();
    std::fs::write(&kubeconfig, text.replace("    client-key:", &format!("    as: {OPERATOR_USER}\n    client-key:")))
        .unwrap();
    let health = free_port().unwrap();
    // `EMBER_BENCH_OPERATOR_CONCURRENCY` tries another `--concurrency`.
    let operator_concurrency = std::env::var("EMBER_BENCH_OPERATOR_CONCURRENCY").unwrap_or_else(|_| "16".into());
    let mut operator = std::process::Command::new(env!("CARGO_BIN_EXE_ember-operator"))
        .env("KUBECONFIG", &kubeconfig)
        .args(["--config", config.to_str().unwrap(), "--concurrency", &operator_concurrency, "--log-format", "text"])
        .arg("--health-addr")
        .arg(format!("127.0.0.1:{health}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    let as_operator = {
        let kubeconfig = Kubeconfig::read_from(&kubeconfig).unwrap();
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
        Client::try_from(config).unwrap()
    };

    println!(
        "| tenants | all Ready (s) | p50 create→Ready (s) | p99 create→Ready (s) | reconciles/s | operator peak RSS (MiB) | baseline: same manifests applied as the operator, best of concurrency {BASELINE_CONCURRENCY:?} (s) | operator throughput / baseline |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut cpu_of_last_round = None;
    let profile_dir = std::env::var_os("EMBER_BENCH_PROFILE_DIR").map(std::path::PathBuf::from);
    assert!(
        profile_dir.is_none() || std::env::var_os(ember_testenv::PROFILING_ENV).is_some(),
        "EMBER_BENCH_PROFILE_DIR needs {}=1 (the API server's profiling endpoint)",
        ember_testenv::PROFILING_ENV
    );
    for (round, n) in sizes.iter().copied().enumerate() {
        let profile = |name: String, seconds: u64| {
            let dir = profile_dir.as_ref().filter(|_| round + 1 == sizes.len());
            dir.map(|dir| tokio::spawn(profile_apiserver(cp.kubeconfig().to_owned(), dir.join(name), seconds)))
        };
        // The baselines first, each removing all it made before the next
        // measurement: the API server scans every ClusterRoleBinding on every
        // request it authorizes, and the controller-manager resyncs every
        // quota, so the operator's round and each baseline must start with the
        // same objects in place (the earlier rounds' Tenants) and add N each.
        let mut best = (Duration::MAX, 0, Counters::default(), Counters::default());
        for concurrency in BASELINE_CONCURRENCY {
            let prefix = format!("raw{round}c{concurrency}");
            let cpu_before = cpu_seconds_by_process();
            let served_before = api_server_counters(&admin).await;
            let profiling = profile(format!("apiserver-baseline-{n}-c{concurrency}.pprof"), 15);
            let took = baseline(&as_operator, &prefix, n, concurrency).await;
            if took < best.0 {
                let served = api_server_counters(&admin).await.since(&served_before);
                best = (took, concurrency, cpu_seconds_by_process().since(&cpu_before), served);
            }
            finish_profile(profiling).await;
            remove_baseline(&admin, &prefix, n).await;
        }
        let before = reconciles_total(health).await;
        let writes_before = cp.audited_writes().len();
        let cpu_before = cpu_seconds_by_process();
        let served_before = api_server_counters(&admin).await;
        let profiling = profile(format!("apiserver-operator-{n}.pprof"), 20);
        let (all_ready, mut latencies) = create_tenants(&admin, &format!("b{round}"), n, &tenant_spec()).await;
        let operator_cpu = cpu_seconds_by_process().since(&cpu_before);
        let operator_served = api_server_counters(&admin).await.since(&served_before);
        finish_profile(profiling).await;
        let reconciles = reconciles_total(health).await - before;
        let writes = writes_by_request(&cp.audited_writes()[writes_before..]);
        println!(
            "| {n} | {:.1} | {:.2} | {:.2} | {:.0} | {:.0} | {:.1} (at {}) | {:.2} |",
            all_ready.as_secs_f64(),
            percentile(&mut latencies, 0.50).as_secs_f64(),
            percentile(&mut latencies, 0.99).as_secs_f64(),
            reconciles / all_ready.as_secs_f64(),
            peak_rss_mib(operator.id()),
            best.0.as_secs_f64(),
            best.1,
            best.0.as_secs_f64() / all_ready.as_secs_f64(),
        );
        cpu_of_last_round = Some((n, operator_cpu, best.2, writes, operator_served, best.3));
    }
    if let Some((n, operator_cpu, baseline_cpu, writes, operator_served, baseline_served)) = cpu_of_last_round {
        print_cpu_table(n, &operator_cpu, &baseline_cpu);
        print_writes_table(n, "Tenant", &writes);
        served::print_table(n, &operator_served, &baseline_served);
    }

    let mut in_place: usize = sizes.iter().sum();
    let mut latencies = one_every_two_seconds(&admin, LATENCY_SAMPLES).await;
    in_place += LATENCY_SAMPLES;
    println!();
    println!(
        "| Tenants in place | new Tenants, one every 2 s | p50 create→Ready (s) | p99 create→Ready (s) | max (s) |"
    );
    println!("|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {LATENCY_SAMPLES} | {:.2} | {:.2} | {:.2} |",
        in_place - LATENCY_SAMPLES,
        percentile(&mut latencies, 0.50).as_secs_f64(),
        percentile(&mut latencies, 0.99).as_secs_f64(),
        percentile(&mut latencies, 1.0).as_secs_f64(),
    );

    let idle = Duration::from_secs(env_or("EMBER_BENCH_IDLE_SECONDS", 600));
    if !idle.is_zero() {
        // Autovacuum's ANALYZE of the catalogs the burst filled would take
        // transaction ids of its own; the window counts the operator's.
        set_autovacuum(&pg, false).await;
        let passes_before = reconciles_total(health).await;
        let writes_before = cp.audited_writes().len();
        let xid_before = next_transaction_id(&pg).await;
        tokio::time::sleep(idle).await; // the measurement window itself, not a synchronisation
        let passes = reconciles_total(health).await - passes_before;
        let window = cp.audited_writes().split_off(writes_before);
        let operator = window.iter().filter(|w| w.acting_user() == OPERATOR_USER);
        let (leases, writes): (Vec<_>, Vec<_>) = operator.partition(|w| w.resource == "leases");
        let transactions = next_transaction_id(&pg).await - xid_before;
        set_autovacuum(&pg, true).await;
        let healed = restore_of_a_hand_edited_quota(&admin, "b0-0").await;
        println!();
        println!(
            "| Tenants in place | idle window (s) | operator resync (s) | passes in the window | operator writes to the API server (besides its leader Lease) | leader Lease renewals | PostgreSQL write transactions | hand-edited quota restored after (s) |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
        println!(
            "| {in_place} | {} | {resync} | {passes:.0} | {} | {} | {transactions} | {:.2} |",
            idle.as_secs(),
            writes.len(),
            leases.len(),
            healed.as_secs_f64()
        );
        for write in writes.iter().take(10) {
            println!("  - {} {} {}/{} -> {}", write.verb, write.resource, write.namespace, write.name, write.code);
        }
    }

    let scale = env_or("EMBER_BENCH_SCALE_TENANTS", 0) as usize;
    if scale > in_place {
        let (all_ready, mut latencies) = create_tenants(&admin, "s", scale - in_place, &tenant_spec()).await;
        println!();
        println!(
            "| Tenants at the end | new in this round | all Ready (s) | p50 create→Ready (s) | p99 create→Ready (s) | operator peak RSS (MiB) | operator RSS at the end (MiB) |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|");
        println!(
            "| {scale} | {} | {:.1} | {:.2} | {:.2} | {:.0} | {:.0} |",
            scale - in_place,
            all_ready.as_secs_f64(),
            percentile(&mut latencies, 0.50).as_secs_f64(),
            percentile(&mut latencies, 0.99).as_secs_f64(),
            peak_rss_mib(operator.id()),
            rss_mib(operator.id()),
        );
    }

    let models = env_or("EMBER_BENCH_MODEL_DEPLOYMENTS", 2000) as usize;
    if models > 0 {
        model_deployments::round(&cp, &admin, &as_operator, health, operator.id(), models).await;
    }
    let _ = operator.kill();
    let _ = operator.wait();
}

/// Writes a CPU profile of the API server to `path`: `seconds` long,
/// starting a few seconds in, so that it samples the round's steady state.
async fn profile_apiserver(kubeconfig: std::path::PathBuf, path: std::path::PathBuf, seconds: u64) {
    tokio::time::sleep(Duration::from_secs(3)).await; // skips the round's ramp-up; not a synchronisation
    let url = format!("/debug/pprof/profile?seconds={seconds}");
    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["get", "--raw", &url])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "profiling the API server: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(&path, out.stdout).unwrap();
    eprintln!("API server profile: {}", path.display());
}

/// Waits for a profile the round started, if any (a round shorter than the
/// profile still gets all of itself sampled, plus idle time).
async fn finish_profile(profiling: Option<tokio::task::JoinHandle<()>>) {
    if let Some(task) = profiling {
        task.await.unwrap();
    }
}

/// Whether the operator (and so the baseline) makes the per-tenant reader
/// ClusterRole and binding (`tenantReaderRoles`, off by default).
fn reader_roles() -> bool {
    env_or("EMBER_BENCH_TENANT_READER_ROLES", 0) == 1
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn set_autovacuum(pg: &Postgres, on: bool) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&pg.url()).await.unwrap();
    let setting = if on { "on" } else { "off" };
    sqlx::raw_sql(&format!("ALTER SYSTEM SET autovacuum = {setting}")).execute(&mut conn).await.unwrap();
    sqlx::raw_sql("SELECT pg_reload_conf()").execute(&mut conn).await.unwrap();
}

/// The transaction id the next write transaction would get; reading it
/// consumes none.
async fn next_transaction_id(pg: &Postgres) -> i64 {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&pg.url()).await.unwrap();
    sqlx::query_scalar("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// Edits tenant `tenant`'s quota by hand (as another field manager) and
/// returns how long until the operator has put the limit back.
async fn restore_of_a_hand_edited_quota(client: &Client, tenant: &str) -> Duration {
    let api: Api<ResourceQuota> = Api::namespaced(client.clone(), &ember_crds::names::namespace_for(tenant));
    let name = ember_operator::tenant_namespace::child_names::QUOTA;
    let original = api.get(name).await.unwrap();
    let pods = |q: &ResourceQuota| q.spec.as_ref()?.hard.as_ref()?.get("pods").cloned();
    let edit = serde_json::json!({"spec": {"hard": {"pods": "12345"}}});
    let started = Instant::now();
    api.patch(name, &PatchParams::default(), &Patch::Merge(&edit)).await.unwrap();
    loop {
        let now = api.get(name).await.unwrap();
        if pods(&now) == pods(&original) {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(120), "the hand-edited quota was not restored");
        tokio::time::sleep(Duration::from_millis(20)).await; // polling interval
    }
}

/// Creates `n` tenants with `CONCURRENCY` writers; returns the time until all
/// are Ready and each tenant's create→Ready latency (seen through a watch).
async fn create_tenants(
    client: &Client,
    prefix: &str,
    n: usize,
    spec: &serde_json::Value,
) -> (Duration, Vec<Duration>) {
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let api: Api<Tenant> = Api::all(client.clone());
    let watch = watch_ready(&api, &created, prefix, n, tenant_is_ready).await;
    let started = Instant::now();
    futures::stream::iter(0..n)
        .for_each_concurrent(CONCURRENCY, |i| create_tenant(&api, &created, format!("{prefix}-{i}"), spec))
        .await;
    let latencies = tokio::time::timeout(Duration::from_secs(3600), watch).await.unwrap().unwrap();
    (started.elapsed(), latencies)
}

async fn create_tenant(
    api: &Api<Tenant>,
    created: &Mutex<HashMap<String, Instant>>,
    name: String,
    spec: &serde_json::Value,
) {
    let tenant: Tenant = serde_json::from_value(serde_json::json!({
        "apiVersion": "ember.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": name}, "spec": spec
    }))
    .unwrap();
    created.lock().await.insert(name, Instant::now());
    api.create(&PostParams::default(), &tenant).await.unwrap();
}

/// Whether a Tenant is Ready for its current generation.
fn tenant_is_ready(tenant: &Tenant) -> bool {
    tenant.status.as_ref().is_some_and(|s| is_ready_at(&s.conditions, tenant.metadata.generation))
}

/// Watches objects named `<prefix>-*` until `n` are `ready`; yields each
/// one's time from creation (as `created` records it) to ready. Returns once
/// the watch's initial list is done, so no object created afterwards is
/// first seen late. Names must be unique across namespaces.
async fn watch_ready<K>(
    api: &Api<K>,
    created: &Arc<Mutex<HashMap<String, Instant>>>,
    prefix: &str,
    n: usize,
    ready: fn(&K) -> bool,
) -> tokio::task::JoinHandle<Vec<Duration>>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let (api, created, prefix) = (api.clone(), created.clone(), format!("{prefix}-"));
    let (listed, listed_rx) = tokio::sync::oneshot::channel();
    let watch = tokio::spawn(async move {
        let mut listed = Some(listed);
        let mut latencies = HashMap::new();
        let mut events = watcher(api, watcher::Config::default()).boxed();
        while let Some(event) = events.try_next().await.unwrap() {
            let object = match event {
                watcher::Event::InitDone => {
                    listed.take().map(|l| l.send(()));
                    continue;
                }
                watcher::Event::Apply(o) | watcher::Event::InitApply(o) => o,
                watcher::Event::Init | watcher::Event::Delete(_) => continue,
            };
            let name = object.name_any();
            if !name.starts_with(&prefix) || latencies.contains_key(&name) {
                continue;
            }
            if let (true, Some(at)) = (ready(&object), created.lock().await.get(&name).copied()) {
                latencies.insert(name, at.elapsed());
                if latencies.len() == n {
                    return latencies.into_values().collect::<Vec<_>>();
                }
            }
        }
        Vec::new()
    });
    listed_rx.await.unwrap();
    watch
}

/// With everything in place, `samples` new Tenants, one every 2 s; each one's
/// create→Ready.
async fn one_every_two_seconds(client: &Client, samples: usize) -> Vec<Duration> {
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let api: Api<Tenant> = Api::all(client.clone());
    let watch = watch_ready(&api, &created, "late", samples, tenant_is_ready).await;
    let mut ticks = tokio::time::interval(Duration::from_secs(2));
    for i in 0..samples {
        ticks.tick().await;
        let (api, created) = (api.clone(), created.clone());
        tokio::spawn(async move { create_tenant(&api, &created, format!("late-{i}"), &tenant_spec()).await });
    }
    tokio::time::timeout(Duration::from_secs(600), watch).await.unwrap().unwrap()
}

/// The comparable baseline: for `n` made-up tenants, the children the
/// operator's own builder makes (without owner references: there is no
/// Tenant object to own them) and a credentials Secret, server-side applied
/// as the operator's ServiceAccount — the namespace, then everything else at
/// once — `concurrency` tenants at a time. No Tenant, no status, no database.
async fn baseline(client: &Client, prefix: &str, n: usize, concurrency: usize) -> Duration {
    let started = Instant::now();
    futures::stream::iter(0..n)
        .for_each_concurrent(concurrency, |i| {
            let client = client.clone();
            async move {
                let children = children_of(&format!("{prefix}-{i}"));
                apply_cluster(&client, &children.namespace).await.unwrap();
                let secret: Secret = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": "ember-database", "namespace": children.namespace.metadata.name,
                                 "labels": children.namespace.metadata.labels},
                    "stringData": {"password": "p", "url": "postgres://u:p@h:5432/d"},
                }))
                .unwrap();
                // Like the operator, no binding without subjects.
                let needed = children.role_bindings.iter().filter(|b| binds_anybody(&b.subjects));
                let bindings = try_join_all(needed.map(|b| apply_namespaced(&client, b)));
                tokio::try_join!(
                    apply_namespaced(&client, &children.quota),
                    apply_namespaced(&client, &children.limit_range),
                    apply_namespaced(&client, &children.network_policy),
                    apply_namespaced(&client, &children.service_account),
                    bindings,
                    // The binding's escalation check needs the role to exist.
                    async {
                        if !reader_roles() || !binds_anybody(&children.reader_binding.subjects) {
                            return Ok(None);
                        }
                        apply_cluster(&client, &children.reader_role).await?;
                        apply_cluster(&client, &children.reader_binding).await.map(Some)
                    },
                    apply_namespaced(&client, &secret),
                )
                .unwrap();
            }
        })
        .await;
    started.elapsed()
}

/// Deletes everything [`baseline`] made under `prefix` and waits until it
/// is gone (the namespaces, emptied by the controller-manager, last), so
/// the next measurement starts where this one did.
async fn remove_baseline(client: &Client, prefix: &str, n: usize) {
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    futures::stream::iter(0..n)
        .for_each_concurrent(32, |i| {
            let (roles, bindings, namespaces) = (&roles, &bindings, &namespaces);
            async move {
                let children = children_of(&format!("{prefix}-{i}"));
                let removed = [
                    bindings.delete(&children.reader_binding.name_any(), &Default::default()).await.map(|_| ()),
                    roles.delete(&children.reader_role.name_any(), &Default::default()).await.map(|_| ()),
                    namespaces.delete(&children.namespace.name_any(), &Default::default()).await.map(|_| ()),
                ];
                for result in removed {
                    match result {
                        Ok(()) => {}
                        Err(kube::Error::Api(status)) if status.code == 404 => {}
                        Err(e) => panic!("removing {prefix}-{i}: {e}"),
                    }
                }
            }
        })
        .await;
    // Every baseline tenant is `{prefix}-{i}`, so its namespace starts so.
    let ours = ember_crds::names::namespace_for(&format!("{prefix}-"));
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let left = namespaces.list_metadata(&Default::default()).await.unwrap();
        let left = left.items.iter().filter(|ns| ns.name_any().starts_with(&ours)).count();
        if left == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{left} of the baseline's namespaces {ours}* still there after 15 min");
        tokio::time::sleep(Duration::from_secs(2)).await; // polling interval
    }
}

/// Every bench tenant's spec: one owner, as a real tenant has (the owners'
/// RoleBinding is made, and the reader ClusterRole and binding with
/// [`reader_roles`]), no
/// members (their bindings would be empty, so neither the operator nor the
/// baseline makes them), defaults for the rest.
fn tenant_spec() -> serde_json::Value {
    serde_json::json!({"owners": [{"kind": "User", "name": "owner@bench.example"}]})
}

/// What the operator writes for a tenant `name` with [`tenant_spec`].
fn children_of(name: &str) -> TenantChildren {
    let mut tenant: Tenant = serde_json::from_value(serde_json::json!({
        "apiVersion": "ember.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": name, "uid": name}, "spec": tenant_spec()
    }))
    .unwrap();
    tenant.metadata.uid = Some(name.to_owned());
    let endpoint = DatabaseEndpoint { cidr: "127.0.0.1/32".into(), port: 5432 };
    let egress = Egress { database: Some(&endpoint), model_stores: &[] };
    let mut children = desired_children(&tenant, "ember-system", egress).unwrap();
    children.namespace.metadata.owner_references = None;
    children.quota.metadata.owner_references = None;
    children.limit_range.metadata.owner_references = None;
    children.service_account.metadata.owner_references = None;
    children.reader_role.metadata.owner_references = None;
    children.reader_binding.metadata.owner_references = None;
    children.network_policy.metadata.owner_references = None;
    for binding in &mut children.role_bindings {
        binding.metadata.owner_references = None;
    }
    children
}

/// The `p` quantile (0–1) of `values`.
fn percentile(values: &mut [Duration], p: f64) -> Duration {
    values.sort();
    values[((values.len() as f64 * p).ceil() as usize).clamp(1, values.len()) - 1]
}

async fn reconciles_total(port: u16) -> f64 {
    reconciles_of(port, "").await
}

/// Passes started so far by the controller named `controller`, or by both
/// when it is empty.
async fn reconciles_of(port: u16, controller: &str) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let label = format!("controller=\"{controller}\"");
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return 0.0 };
    let _ = stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").await;
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body).await;
    body.lines()
        .filter(|l| l.starts_with("ember_operator_reconciles_total") && (controller.is_empty() || l.contains(&label)))
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

/// Resident set size now (VmRSS), in MiB.
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Write requests per (who, verb, resource), from the API server's audit log.
fn writes_by_request(writes: &[ember_testenv::AuditedWrite]) -> Vec<(String, usize)> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for write in writes {
        let who = match write.acting_user() {
            OPERATOR_USER => "operator",
            user if user.starts_with("system:serviceaccount:kube-system:") || user.starts_with("system:kube-") => {
                "controller-manager"
            }
            // The test control plane's controller-manager shares the admin identity.
            "admin" => "admin (benchmark, controller-manager)",
            _ => "other",
        };
        let code = if write.code < 300 { "ok".to_owned() } else { write.code.to_string() };
        *counts.entry(format!("{who} | {} {} | {code}", write.verb, write.resource)).or_default() += 1;
    }
    let mut counts: Vec<(String, usize)> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    counts
}

/// The writes of the operator's round, per `object` it was about.
fn print_writes_table(n: usize, object: &str, writes: &[(String, usize)]) {
    println!();
    println!("| writes in the operator's round, N = {n} | request | outcome | count | per {object} |");
    println!("|---|---|---|---:|---:|");
    for (what, count) in writes {
        println!("| {what} | {count} | {:.2} |", *count as f64 / n as f64);
    }
}

/// Where the CPU went in the operator's round and in the best baseline.
fn print_cpu_table(n: usize, operator: &Counters, baseline: &Counters) {
    let heading = format!("CPU seconds, N = {n}");
    Table { heading: &heading, per: 1.0, decimals: 1, order: Order::OperatorRound, with_total: true }
        .print(operator, baseline);
}
