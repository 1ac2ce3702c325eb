//! The ModelDeployment round of the tenants benchmark: `n` ModelDeployments
//! (`EMBER_BENCH_MODEL_DEPLOYMENTS`, default 2,000; 0 skips the round)
//! across `n / PER_TENANT` Tenants, each with one replica on kwok nodes, and
//! the time until every one reports `Ready` — beside the comparable baseline
//! of the same run: the children the operator's own builder makes for them
//! (Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget)
//! server-side applied as the operator's ServiceAccount into the same
//! namespaces, timed until every Deployment has rolled out, at several
//! concurrencies (the best is reported). Both wait on the same
//! controller-manager, scheduler and kwok, so the ratio is what the
//! operator adds to them. Like the Tenant rounds, it also prints where the
//! CPU went and every write of the operator's round.
//!
//! Every round starts from the same cluster: the previous round's objects
//! are deleted, and their pods gone, first. Setting up (Tenants, nodes,
//! Service addresses) is not timed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_crds::conditions::is_ready_at;
use ember_crds::model_deployment::ModelDeployment;
use ember_operator::apply::apply_namespaced;
use ember_operator::config::OperatorConfig;
use ember_operator::model_deployment::build::{APP_NAME_RUNTIME, ModelChildren, Serving, desired_children};
use ember_operator::model_deployment::status::{Rollout, rollout};
use ember_operator::tenant_namespace::child_names::WORKLOAD_SERVICE_ACCOUNT;
use ember_testenv::ControlPlane;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::ServiceCIDR;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::Mutex;

use super::counters::Counters;
use super::cpu::cpu_seconds_by_process;
use super::{
    BASELINE_CONCURRENCY, CONCURRENCY, create_tenants, percentile, print_cpu_table, print_writes_table, reconciles_of,
    rss_mib, watch_ready, writes_by_request,
};

/// ModelDeployments per Tenant (the Tenants' quota allows that many).
const PER_TENANT: usize = 20;
/// Pods per added kwok node (the nodes hold 110, the scheduler spreads them).
const PODS_PER_NODE: usize = 100;
/// The local control plane's Service range holds 254 addresses; this one is
/// added (a ServiceCIDR object) so every model can have its Service.
const EXTRA_SERVICE_RANGE: &str = "10.96.0.0/16";

/// Runs the round and prints its table.
pub async fn round(cp: &ControlPlane, admin: &Client, as_operator: &Client, health: u16, operator_pid: u32, n: usize) {
    let tenants = n.div_ceil(PER_TENANT);
    make_room(cp, admin, n).await;
    let quota = serde_json::json!({"quota": {"modelDeployments": PER_TENANT, "pods": PER_TENANT * 2}});
    create_tenants(admin, "md", tenants, &quota).await;
    let models: Vec<ModelDeployment> = (0..n).map(|i| model(i, tenants)).collect();

    let passes_before = reconciles_of(health, "model-deployment").await;
    let writes_before = cp.audited_writes().len();
    let cpu_before = cpu_seconds_by_process();
    let (all_ready, mut latencies) = create_models(admin, &models).await;
    let operator_cpu = cpu_seconds_by_process().since(&cpu_before);
    let writes = writes_by_request(&cp.audited_writes()[writes_before..]);
    let passes = reconciles_of(health, "model-deployment").await - passes_before;
    let rss = rss_mib(operator_pid);
    delete_models(admin, &models).await;

    let mut best = (Duration::MAX, 0, Counters::default());
    for concurrency in BASELINE_CONCURRENCY {
        let cpu_before = cpu_seconds_by_process();
        let took = baseline(admin, as_operator, &models, concurrency).await;
        if took < best.0 {
            best = (took, concurrency, cpu_seconds_by_process().since(&cpu_before));
        }
        delete_children(admin, &models).await;
    }

    println!();
    println!(
        "| ModelDeployments | Tenants | all Ready (s) | p50 create→Ready (s) | p99 create→Ready (s) | passes per ModelDeployment | operator RSS, all in place (MiB) | baseline: same children applied as the operator until rolled out, best of concurrency {BASELINE_CONCURRENCY:?} (s) | operator throughput / baseline |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {n} | {tenants} | {:.1} | {:.2} | {:.2} | {:.2} | {rss:.0} | {:.1} (at {}) | {:.2} |",
        all_ready.as_secs_f64(),
        percentile(&mut latencies, 0.50).as_secs_f64(),
        percentile(&mut latencies, 0.99).as_secs_f64(),
        passes / n as f64,
        best.0.as_secs_f64(),
        best.1,
        best.0.as_secs_f64() / all_ready.as_secs_f64(),
    );
    print_cpu_table(n, &operator_cpu, &best.2);
    print_writes_table(n, "ModelDeployment", &writes);
}

/// Room for `n` model pods and their Services: kwok nodes, and Service
/// addresses beyond the control plane's small range.
async fn make_room(cp: &ControlPlane, admin: &Client, n: usize) {
    let nodes: Vec<String> = (0..n.div_ceil(PODS_PER_NODE)).map(|i| format!("kwok-bench-{i}")).collect();
    cp.add_kwok_cpu_nodes(&nodes).await.unwrap();
    let range: ServiceCIDR = serde_json::from_value(serde_json::json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
        "metadata": {"name": "bench-models"}, "spec": {"cidrs": [EXTRA_SERVICE_RANGE]},
    }))
    .unwrap();
    let api: Api<ServiceCIDR> = Api::all(admin.clone());
    api.create(&PostParams::default(), &range).await.unwrap();
    // Addresses come from the range only once the API server calls it Ready.
    let ready = |r: &ServiceCIDR| {
        r.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    until("the extra Service range is Ready", async || ready(&api.get("bench-models").await.unwrap())).await;
}

/// ModelDeployment `m-<i>`, spread over the `tenants` Tenants `md-*` so
/// that concurrent writers hit different namespaces. A replica range gives
/// it all four children; the autoscaler finds no metrics on kwok and keeps
/// the one replica.
fn model(i: usize, tenants: usize) -> ModelDeployment {
    let digest = "0".repeat(64);
    serde_json::from_value(serde_json::json!({
        "apiVersion": "ember.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": format!("m-{i}"), "namespace": format!("tenant-md-{}", i % tenants)},
        "spec": {
            "model": {
                "architecture": "mlp", "task": "regression",
                "source": {"uri": "http://models.invalid/m.safetensors", "sha256": digest},
                "config": {"uri": "http://models.invalid/config.json", "sha256": digest},
            },
            "resources": {"cpu": "10m", "memory": "32Mi"},
            "replicas": {"min": 1, "max": 2},
        },
    }))
    .unwrap()
}

fn model_is_ready(md: &ModelDeployment) -> bool {
    md.status.as_ref().is_some_and(|s| is_ready_at(&s.conditions, md.metadata.generation))
}

/// Creates `models` with `CONCURRENCY` writers; the time until all are
/// Ready and each one's create→Ready.
async fn create_models(client: &Client, models: &[ModelDeployment]) -> (Duration, Vec<Duration>) {
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let all: Api<ModelDeployment> = Api::all(client.clone());
    let watch = watch_ready(&all, &created, "m", models.len(), model_is_ready).await;
    let started = Instant::now();
    futures::stream::iter(models)
        .for_each_concurrent(CONCURRENCY, |md| {
            let (client, created) = (client.clone(), created.clone());
            async move {
                let api: Api<ModelDeployment> = Api::namespaced(client, &md.namespace().unwrap());
                created.lock().await.insert(md.name_any(), Instant::now());
                api.create(&PostParams::default(), md).await.unwrap();
            }
        })
        .await;
    let latencies = tokio::time::timeout(Duration::from_secs(3600), watch).await.unwrap().unwrap();
    (started.elapsed(), latencies)
}

/// What the operator writes for `md` in a set-up Tenant, without the owner
/// reference (there is no ModelDeployment to own them).
fn children_of(md: &ModelDeployment) -> ModelChildren {
    let mut md = md.clone();
    md.metadata.uid = Some(md.name_any());
    let tenant = md.namespace().unwrap().trim_start_matches("tenant-").to_owned();
    let serving = Serving { tenant, suspended: false, service_account: Some(WORKLOAD_SERVICE_ACCOUNT.to_owned()) };
    let mut children = desired_children(&md, &serving, &OperatorConfig::default()).unwrap();
    children.deployment.metadata.owner_references = None;
    children.service.metadata.owner_references = None;
    if let Some(hpa) = &mut children.autoscaler {
        hpa.metadata.owner_references = None;
    }
    if let Some(pdb) = &mut children.disruption_budget {
        pdb.metadata.owner_references = None;
    }
    children
}

fn deployment_is_rolled_out(deployment: &Deployment) -> bool {
    matches!(rollout(deployment), Rollout::Complete { .. })
}

/// The baseline: every model's children applied as the operator, all four
/// at once, `concurrency` models at a time; the time until every
/// Deployment has rolled out.
async fn baseline(admin: &Client, as_operator: &Client, models: &[ModelDeployment], concurrency: usize) -> Duration {
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let all: Api<Deployment> = Api::all(admin.clone());
    let watch = watch_ready(&all, &created, "m", models.len(), deployment_is_rolled_out).await;
    let started = Instant::now();
    futures::stream::iter(models)
        .for_each_concurrent(concurrency, |md| {
            let (client, created) = (as_operator.clone(), created.clone());
            async move {
                let children = children_of(md);
                created.lock().await.insert(md.name_any(), Instant::now());
                let optional = async {
                    if let Some(hpa) = &children.autoscaler {
                        apply_namespaced(&client, hpa).await?;
                    }
                    if let Some(pdb) = &children.disruption_budget {
                        apply_namespaced(&client, pdb).await?;
                    }
                    Ok(())
                };
                tokio::try_join!(
                    apply_namespaced(&client, &children.deployment),
                    apply_namespaced(&client, &children.service),
                    optional,
                )
                .unwrap();
            }
        })
        .await;
    tokio::time::timeout(Duration::from_secs(3600), watch).await.unwrap().unwrap();
    started.elapsed()
}

/// The namespaces `models` live in.
fn namespaces(models: &[ModelDeployment]) -> Vec<String> {
    let mut namespaces: Vec<String> = models.iter().filter_map(|md| md.namespace()).collect();
    namespaces.sort();
    namespaces.dedup();
    namespaces
}

/// Objects of the model runtime, the label every child and pod carries.
fn runtime_objects() -> ListParams {
    ListParams::default().labels(&format!("{}={APP_NAME_RUNTIME}", ember_crds::labels::APP_NAME))
}

/// Deletes the ModelDeployments; garbage collection takes their children.
async fn delete_models(client: &Client, models: &[ModelDeployment]) {
    for namespace in namespaces(models) {
        let api: Api<ModelDeployment> = Api::namespaced(client.clone(), &namespace);
        api.delete_collection(&DeleteParams::default(), &ListParams::default()).await.unwrap();
    }
    until_no_runtime_objects(client).await;
}

/// Deletes what the baseline applied.
async fn delete_children(client: &Client, models: &[ModelDeployment]) {
    let params = DeleteParams::background();
    for namespace in namespaces(models) {
        let ns = namespace.as_str();
        Api::<Deployment>::namespaced(client.clone(), ns).delete_collection(&params, &runtime_objects()).await.unwrap();
        Api::<Service>::namespaced(client.clone(), ns).delete_collection(&params, &runtime_objects()).await.unwrap();
        Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), ns)
            .delete_collection(&params, &runtime_objects())
            .await
            .unwrap();
        Api::<PodDisruptionBudget>::namespaced(client.clone(), ns)
            .delete_collection(&params, &runtime_objects())
            .await
            .unwrap();
    }
    until_no_runtime_objects(client).await;
}

/// Waits until no child or pod of a model is left, so the next round starts
/// from the same cluster.
async fn until_no_runtime_objects(client: &Client) {
    let one = runtime_objects().limit(1);
    until("the previous round's objects are gone", async || {
        Api::<Deployment>::all(client.clone()).list_metadata(&one).await.unwrap().items.is_empty()
            && Api::<Service>::all(client.clone()).list_metadata(&one).await.unwrap().items.is_empty()
            && Api::<HorizontalPodAutoscaler>::all(client.clone()).list_metadata(&one).await.unwrap().items.is_empty()
            && Api::<PodDisruptionBudget>::all(client.clone()).list_metadata(&one).await.unwrap().items.is_empty()
            && Api::<Pod>::all(client.clone()).list_metadata(&one).await.unwrap().items.is_empty()
    })
    .await;
}

/// Checks `done` every second until it holds (at most 30 minutes): set-up
/// and clean-up between rounds, outside every measurement.
async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < Duration::from_secs(1800), "{what}: not after 30 minutes");
        tokio::time::sleep(Duration::from_secs(1)).await; // polling interval
    }
}
