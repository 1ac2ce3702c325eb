//! The ModelDeployment controller against a real control plane (kwok makes
//! scheduled pods Running/Ready), with the Tenant controller beside it and
//! exactly the operator's ClusterRole.
//!
//! One test function walks through the scenarios: the controllers watch the
//! whole shared cluster, so scenarios run one after another against one
//! operator instead of racing several.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ember_crds::model_deployment::ModelDeployment;
use ember_crds::tenant::Tenant;
use ember_testenv::{GPU_NODE, Postgres, poll};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const TENANT: &str = "models";
const NAMESPACE: &str = "tenant-models";
const SHA_MODEL: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";
const SHA_CONFIG: &str = "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41";
const SHA_TOKENIZER: &str = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037";

fn minilm(namespace: &str, name: &str, replicas: (i32, i32)) -> ModelDeployment {
    serde_json::from_value(json!({
        "apiVersion": "ember.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {
                "architecture": "bert", "task": "embedding",
                "source": {"uri": "https://models.example/minilm/model.safetensors", "sha256": SHA_MODEL},
                "config": {"uri": "https://models.example/minilm/config.json", "sha256": SHA_CONFIG},
                "tokenizer": {"uri": "https://models.example/minilm/tokenizer.json", "sha256": SHA_TOKENIZER},
            },
            "resources": {"cpu": "500m", "memory": "512Mi"},
            "replicas": {"min": replicas.0, "max": replicas.1},
            "batching": {"maxBatchSize": 32, "maxDelayMs": 5},
        },
    }))
    .unwrap()
}

/// Waits until `get` returns an object that passes `check`.
async fn wait_for<K>(api: &Api<K>, name: &str, what: &str, check: impl Fn(&K) -> bool) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    wait_until(api, name, what, TIMEOUT, check, |object: K| object).await
}

fn args(deployment: &Deployment) -> Vec<String> {
    deployment.spec.template.spec.as_ref().unwrap().containers[0].args.clone().unwrap()
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == &format!("--{name}")).map(|i| args[i + 1].clone())
}

/// Whether the operator's field manager owns `spec.replicas` of `deployment`.
fn operator_owns_replicas(deployment: &Deployment) -> bool {
    deployment.managed_fields().iter().any(|entry| {
        entry.manager.as_deref() == Some("ember-operator")
            && entry.fields_v1.as_ref().is_some_and(|f| f.0.pointer("/f:spec/f:replicas").is_some())
    })
}

fn controlled_by(object: &impl kube::Resource, md: &ModelDeployment) -> bool {
    object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.kind == "ModelDeployment" && Some(&o.uid) == md.metadata.uid.as_ref())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_deployment_lifecycle() {
    let admin = admin_client().await;
    let pg = tokio::task::spawn_blocking(|| Postgres::start().unwrap()).await.unwrap();
    let server = database_server(&admin, "pg-models", &pg).await;
    let operator = RunningOperator::start(vec![server.clone()]).await;

    let tenant: Tenant = serde_json::from_value(json!({
        "apiVersion": "ember.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": TENANT},
        "spec": {"quota": {"cpu": "16", "memory": "32Gi", "gpus": 1, "pods": 30, "modelDeployments": 10}},
    }))
    .unwrap();
    Api::<Tenant>::all(admin.clone()).create(&PostParams::default(), &tenant).await.unwrap();
    wait_for_tenant(&admin, TENANT, "tenant Ready", is_ready).await;

    let mds: Api<ModelDeployment> = Api::namespaced(admin.clone(), NAMESPACE);
    serves_a_model_and_follows_spec_changes(&admin, &mds).await;
    replica_range_hands_replicas_to_an_autoscaler(&admin, &mds).await;
    gpu_models_land_on_gpu_nodes(&admin, &mds).await;
    suspended_tenant_scales_to_zero_and_back(&admin, &mds).await;
    refuses_namespaces_that_are_not_a_tenants(&admin).await;
    deletion_collects_every_child(&admin, &mds).await;
    operator.stop().await;

    // A model written for a newer release is in place when an operator
    // starts: its first list of ModelDeployments includes it.
    ember_testenv::create_model_of_unknown_architecture(&admin, NAMESPACE, "future", "llama").await.unwrap();
    let operator = RunningOperator::start(vec![server]).await;
    a_model_this_version_cannot_read_stops_no_other(&admin, &mds).await;
    operator.stop().await;
}

async fn serves_a_model_and_follows_spec_changes(admin: &Client, mds: &Api<ModelDeployment>) {
    mds.create(&PostParams::default(), &minilm(NAMESPACE, "minilm", (2, 2))).await.unwrap();
    let md = wait_for_md(mds, "minilm", "minilm Ready", md_ready).await;
    let status = md.status.clone().unwrap();
    assert_eq!(status.ready_replicas, Some(2), "{status:#?}");
    assert_eq!(status.replicas, Some(2));
    assert_eq!(status.endpoint.as_deref(), Some("http://minilm.tenant-models.svc:8080"));
    assert!(md_condition(&md, "Stalled", "False", None));
    assert!(md_condition(&md, "Reconciling", "False", None));

    let deployment = Api::<Deployment>::namespaced(admin.clone(), NAMESPACE).get("minilm").await.unwrap();
    assert!(controlled_by(&deployment, &md));
    assert_eq!(deployment.spec.replicas, Some(2));
    assert_eq!(deployment.labels()["ember.dev/tenant"], TENANT);
    assert_eq!(deployment.labels()["ember.dev/model-deployment"], "minilm");
    let pod_spec = deployment.spec.template.spec.clone().unwrap();
    assert_eq!(pod_spec.service_account_name.as_deref(), Some("ember-workload"));
    assert_eq!(pod_spec.automount_service_account_token, Some(false));
    assert_eq!(flag(&args(&deployment), "model-sha256").as_deref(), Some(SHA_MODEL));

    let service = Api::<Service>::namespaced(admin.clone(), NAMESPACE).get("minilm").await.unwrap();
    assert!(controlled_by(&service, &md));
    let ports = service.spec.clone().unwrap().ports.unwrap();
    assert_eq!((ports[0].name.as_deref(), ports[0].port), (Some("http"), 8080));
    let pdb = Api::<PodDisruptionBudget>::namespaced(admin.clone(), NAMESPACE).get("minilm").await.unwrap();
    assert!(controlled_by(&pdb, &md));
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(admin.clone(), NAMESPACE);
    assert!(hpas.get_opt("minilm").await.unwrap().is_none(), "min == max needs no autoscaler");

    // The pods passed the namespace's restricted Pod Security admission and kwok made them ready.
    let pods = Api::<Pod>::namespaced(admin.clone(), NAMESPACE)
        .list(&ListParams::default().labels("ember.dev/model-deployment=minilm"))
        .await
        .unwrap();
    assert_eq!(pods.items.len(), 2);

    // A batching change rolls the Deployment and the status follows the new generation.
    let before = md.metadata.generation.unwrap();
    mds.patch("minilm", &PatchParams::default(), &Patch::Merge(json!({"spec": {"batching": {"maxBatchSize": 8}}})))
        .await
        .unwrap();
    let md = wait_for_md(mds, "minilm", "minilm Ready after the batching change", |m| {
        md_ready(m) && m.metadata.generation > Some(before)
    })
    .await;
    assert_eq!(md.status.unwrap().observed_generation, md.metadata.generation);
    let deployment = Api::<Deployment>::namespaced(admin.clone(), NAMESPACE).get("minilm").await.unwrap();
    assert_eq!(flag(&args(&deployment), "max-batch-size").as_deref(), Some("8"));
    // Created, then changed once: the reconciles that followed every status
    // change of the rollout applied an identical spec (no hot loop).
    assert_eq!(deployment.metadata.generation, Some(2), "the operator rewrote the Deployment's spec");

    // Hand edits of a child are reverted.
    let deployments = Api::<Deployment>::namespaced(admin.clone(), NAMESPACE);
    deployments
        .patch(
            "minilm",
            &PatchParams::apply("someone").force(),
            &Patch::Apply(json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "minilm"}, "spec": {"replicas": 5}
            })),
        )
        .await
        .unwrap();
    wait_for(&deployments, "minilm", "hand-edited replicas reverted", |d| d.spec.replicas == Some(2)).await;
}

async fn replica_range_hands_replicas_to_an_autoscaler(admin: &Client, mds: &Api<ModelDeployment>) {
    mds.patch("minilm", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": {"min": 1, "max": 3}}})))
        .await
        .unwrap();
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(admin.clone(), NAMESPACE);
    let hpa = wait_for(&hpas, "minilm", "autoscaler created", |_| true).await;
    assert_eq!((hpa.spec.min_replicas, hpa.spec.max_replicas), (Some(1), 3));
    assert_eq!(hpa.spec.scale_target_ref.name, "minilm");
    let deployments = Api::<Deployment>::namespaced(admin.clone(), NAMESPACE);
    let deployment =
        wait_for(&deployments, "minilm", "operator gives up spec.replicas", |d| !operator_owns_replicas(d)).await;
    assert!(deployment.spec.replicas.is_some(), "the API server defaults it; the autoscaler owns it now");
    wait_for_md(mds, "minilm", "autoscaled minilm Ready", md_ready).await;

    // Back to a fixed count: the autoscaler and the budget (max 1) go away.
    mds.patch("minilm", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": {"min": 1, "max": 1}}})))
        .await
        .unwrap();
    wait_gone(&hpas, "minilm", "autoscaler removed").await;
    wait_gone(&Api::<PodDisruptionBudget>::namespaced(admin.clone(), NAMESPACE), "minilm", "budget removed").await;
    let deployment = wait_for(&deployments, "minilm", "fixed single replica", |d| d.spec.replicas == Some(1)).await;
    assert!(operator_owns_replicas(&deployment));
    wait_for_md(mds, "minilm", "single-replica minilm Ready", |m| {
        md_ready(m) && m.status.as_ref().unwrap().ready_replicas == Some(1)
    })
    .await;
}

async fn gpu_models_land_on_gpu_nodes(admin: &Client, mds: &Api<ModelDeployment>) {
    let gpu: ModelDeployment = serde_json::from_value(json!({
        "apiVersion": "ember.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": "gpu-mlp", "namespace": NAMESPACE},
        "spec": {
            "model": {
                "architecture": "mlp", "task": "classification",
                "source": {"uri": "https://models.example/mlp/model.safetensors", "sha256": SHA_MODEL},
                "config": {"uri": "https://models.example/mlp/config.json", "sha256": SHA_CONFIG},
            },
            "backend": "wgpu",
            "resources": {"cpu": "500m", "memory": "512Mi", "gpus": 1},
        },
    }))
    .unwrap();
    mds.create(&PostParams::default(), &gpu).await.unwrap();
    wait_for_md(mds, "gpu-mlp", "gpu-mlp Ready", md_ready).await;
    let pods = Api::<Pod>::namespaced(admin.clone(), NAMESPACE)
        .list(&ListParams::default().labels("ember.dev/model-deployment=gpu-mlp"))
        .await
        .unwrap();
    assert_eq!(pods.items.len(), 1);
    let spec = pods.items[0].spec.clone().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some(GPU_NODE));
    let limits = spec.containers[0].resources.clone().unwrap().limits.unwrap();
    assert_eq!(limits["nvidia.com/gpu"].0, "1");
    // The tenant's GPU quota is 1; give it back.
    mds.delete("gpu-mlp", &DeleteParams::default()).await.unwrap();
    wait_gone(mds, "gpu-mlp", "gpu-mlp deleted").await;
}

async fn suspended_tenant_scales_to_zero_and_back(admin: &Client, mds: &Api<ModelDeployment>) {
    let tenants: Api<Tenant> = Api::all(admin.clone());
    let deployments = Api::<Deployment>::namespaced(admin.clone(), NAMESPACE);
    // An autoscaled model, so resuming must bring the autoscaler back too.
    mds.patch("minilm", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": {"min": 2, "max": 3}}})))
        .await
        .unwrap();
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(admin.clone(), NAMESPACE);
    wait_for(&hpas, "minilm", "autoscaler before suspension", |_| true).await;

    tenants.patch(TENANT, &PatchParams::default(), &Patch::Merge(json!({"spec": {"suspended": true}}))).await.unwrap();
    wait_for(&deployments, "minilm", "scaled to zero", |d| d.spec.replicas == Some(0)).await;
    wait_gone(&hpas, "minilm", "no autoscaler while suspended").await;
    let md = wait_for_md(mds, "minilm", "minilm Suspended", |m| {
        md_condition(m, "Ready", "False", Some("Suspended")) && m.status.as_ref().unwrap().ready_replicas == Some(0)
    })
    .await;
    assert!(md_condition(&md, "Stalled", "False", None));

    tenants.patch(TENANT, &PatchParams::default(), &Patch::Merge(json!({"spec": {"suspended": false}}))).await.unwrap();
    wait_for(&hpas, "minilm", "autoscaler back", |_| true).await;
    wait_for_md(mds, "minilm", "minilm Ready after resume", |m| {
        md_ready(m) && m.status.as_ref().unwrap().ready_replicas >= Some(2)
    })
    .await;
}

async fn refuses_namespaces_that_are_not_a_tenants(admin: &Client) {
    let namespace = "not-a-tenant";
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap();
    Api::<Namespace>::all(admin.clone()).create(&PostParams::default(), &ns).await.unwrap();
    let mds: Api<ModelDeployment> = Api::namespaced(admin.clone(), namespace);
    mds.create(&PostParams::default(), &minilm(namespace, "stray", (1, 1))).await.unwrap();
    let md =
        wait_for_md(&mds, "stray", "stray refused", |m| md_condition(m, "Ready", "False", Some("NotATenantNamespace")))
            .await;
    assert!(md_condition(&md, "Stalled", "True", Some("NotATenantNamespace")));
    assert_eq!(md.status.unwrap().endpoint, None);
    // The decision is recorded before anything would be applied, so nothing exists now.
    assert!(Api::<Deployment>::namespaced(admin.clone(), namespace).get_opt("stray").await.unwrap().is_none());
    assert!(Api::<Service>::namespaced(admin.clone(), namespace).get_opt("stray").await.unwrap().is_none());
    let events = Api::<Event>::namespaced(admin.clone(), namespace);
    poll::until_async("Warning event for stray", TIMEOUT, async || {
        let list = events.list(&ListParams::default()).await.map_err(|e| ember_testenv::Error::Kube(e.to_string()))?;
        Ok(list
            .items
            .iter()
            .any(|e| {
                e.type_.as_deref() == Some("Warning")
                    && e.reason.as_deref() == Some("NotATenantNamespace")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("stray")
            })
            .then_some(()))
    })
    .await
    .unwrap();
    mds.delete("stray", &DeleteParams::default()).await.unwrap();
}

async fn deletion_collects_every_child(admin: &Client, mds: &Api<ModelDeployment>) {
    mds.delete("minilm", &DeleteParams::default()).await.unwrap();
    wait_gone(mds, "minilm", "minilm deleted").await;
    wait_gone(&Api::<Deployment>::namespaced(admin.clone(), NAMESPACE), "minilm", "deployment collected").await;
    wait_gone(&Api::<Service>::namespaced(admin.clone(), NAMESPACE), "minilm", "service collected").await;
    wait_gone(&Api::<PodDisruptionBudget>::namespaced(admin.clone(), NAMESPACE), "minilm", "budget collected").await;
    wait_gone(&Api::<HorizontalPodAutoscaler>::namespaced(admin.clone(), NAMESPACE), "minilm", "autoscaler collected")
        .await;
}

/// A ModelDeployment written for a newer release (an architecture this
/// operator does not know, "future") is left alone; every other model still
/// converges. A plain watch would fail its every list on that one object,
/// and the controller would never start.
async fn a_model_this_version_cannot_read_stops_no_other(admin: &Client, mds: &Api<ModelDeployment>) {
    mds.create(&PostParams::default(), &minilm(NAMESPACE, "after", (1, 1))).await.unwrap();
    wait_for_md(mds, "after", "a model created after the unreadable one Ready", md_ready).await;
    let deployments = Api::<Deployment>::namespaced(admin.clone(), NAMESPACE);
    assert!(deployments.get_opt("future").await.unwrap().is_none(), "the unreadable model was acted on");

    // Its deletion is seen too: the namespace's models are all collectable.
    let raw = ember_testenv::raw_model_deployments(admin, NAMESPACE);
    raw.delete("future", &DeleteParams::default()).await.unwrap();
    mds.delete("after", &DeleteParams::default()).await.unwrap();
    wait_gone(mds, "after", "after deleted").await;
    wait_gone(&raw, "future", "future deleted").await;
}
