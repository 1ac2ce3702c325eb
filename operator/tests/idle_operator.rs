//! An operator with nothing to do does nothing: once its Tenants and
//! ModelDeployments (on kwok nodes) are Ready it sends the API server no
//! write and PostgreSQL no write transaction, while its resync passes keep
//! checking every one of them; and a child someone edits by hand is put back
//! from its watch event, not by a resync.
//!
//! Writes are counted by the API server itself (its audit log, by acting
//! user) and by PostgreSQL (the next transaction id, which only write
//! transactions consume).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use ember_crds::model_deployment::ModelDeployment;
use ember_crds::tenant::Tenant;
use ember_operator::config::OperatorConfig;
use ember_operator::metrics::ControllerLabels;
use ember_testenv::{ControlPlane, Postgres, poll};
use k8s_openapi::api::core::v1::ResourceQuota;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use sqlx::{Connection, PgConnection};

const TENANTS: usize = 12;
/// How long the operator is watched while nothing changes.
const IDLE_WINDOW: Duration = Duration::from_secs(15);

fn tenant_names() -> Vec<String> {
    (0..TENANTS).map(|i| format!("idle-{i}")).collect()
}

fn operator_writes(cp: &ControlPlane) -> Vec<String> {
    cp.audited_writes()
        .into_iter()
        .filter(|w| w.acting_user() == OPERATOR_USER)
        .map(|w| format!("{} {} {}/{} -> {}", w.verb, w.resource, w.namespace, w.name, w.code))
        .collect()
}

/// The transaction id the next write transaction would get; reading it
/// consumes none.
async fn next_transaction_id(pg: &Postgres) -> i64 {
    let mut conn = PgConnection::connect(&pg.url()).await.unwrap();
    sqlx::query_scalar("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

fn tenant_passes(operator: &RunningOperator) -> u64 {
    operator.metrics.reconciles.get_or_create(&ControllerLabels { controller: "tenant" }).get()
}

fn model_passes(operator: &RunningOperator) -> u64 {
    operator.metrics.reconciles.get_or_create(&ControllerLabels { controller: "model-deployment" }).get()
}

/// A small tabular model; `(min, max)` replicas, an autoscaler when they differ.
fn model(name: &str, replicas: (i32, i32)) -> ModelDeployment {
    serde_json::from_value(json!({
        "apiVersion": "ember.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": "tenant-idle-0"},
        "spec": {
            "model": {
                "architecture": "mlp", "task": "regression",
                "source": {"uri": "https://models.example/tabular/model.safetensors", "sha256": "a".repeat(64)},
                "config": {"uri": "https://models.example/tabular/config.json", "sha256": "b".repeat(64)},
            },
            "resources": {"cpu": "100m", "memory": "128Mi"},
            "replicas": {"min": replicas.0, "max": replicas.1},
        },
    }))
    .unwrap()
}

/// Waits until the operator has sent no write for a few seconds: whatever
/// followed the last change (the quota's first status, Events) is done.
async fn until_quiet(cp: &ControlPlane) {
    let mut last = operator_writes(cp).len();
    poll::until_async("the operator stops writing", Duration::from_secs(60), async || {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = operator_writes(cp).len();
        let quiet = now == last;
        last = now;
        Ok(quiet.then_some(()))
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_operator_writes_nothing_and_still_heals_drift() {
    let cp = ControlPlane::start().await.unwrap();
    let admin = admin_client_of(&cp).await;
    let pg = tokio::task::spawn_blocking(|| Postgres::start().unwrap()).await.unwrap();
    let server = database_server(&admin, "pg-idle", &pg).await;
    let config = |resync_seconds| OperatorConfig {
        platform_namespace: PLATFORM_NAMESPACE.into(),
        database_servers: vec![server.clone()],
        resync_seconds,
        ..Default::default()
    };

    // An operator that would not resync for an hour: anything it does in
    // the next minutes, a watch event made it do.
    let operator = RunningOperator::start_with(operator_client_of(&cp).await, config(3600));
    let tenants: Api<Tenant> = Api::all(admin.clone());
    for name in tenant_names() {
        let tenant = serde_json::from_value(json!({
            "apiVersion": "ember.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": name},
            "spec": {"owners": [{"kind": "User", "name": format!("{name}-owner")}]},
        }))
        .unwrap();
        tenants.create(&PostParams::default(), &tenant).await.unwrap();
    }
    for name in tenant_names() {
        wait_for_tenant(&admin, &name, &format!("{name} Ready"), is_ready).await;
    }
    let mds: Api<ModelDeployment> = Api::namespaced(admin.clone(), "tenant-idle-0");
    for (name, replicas) in [("fixed", (1, 1)), ("scaled", (1, 3))] {
        mds.create(&PostParams::default(), &model(name, replicas)).await.unwrap();
    }
    for name in ["fixed", "scaled"] {
        wait_for_md(&mds, name, &format!("{name} Ready"), md_ready).await;
    }
    until_quiet(&cp).await;
    let passes_when_ready = tenant_passes(&operator);
    eprintln!("{TENANTS} Tenants Ready after {passes_when_ready} passes");

    // A hand edit is reverted from the child's watch event.
    hand_edited_quota_is_restored(&admin).await;
    until_quiet(&cp).await;
    operator.stop().await;

    // A fresh operator (nothing remembered) that resyncs every 2 s: once it
    // has looked at everything, its passes find nothing to do.
    let operator = RunningOperator::start_with(operator_client_of(&cp).await, config(2));
    poll::until_async("everything looked at twice", Duration::from_secs(60), async || {
        Ok((tenant_passes(&operator) >= 2 * TENANTS as u64 && model_passes(&operator) >= 4).then_some(()))
    })
    .await
    .unwrap();
    until_quiet(&cp).await;
    // Autovacuum's ANALYZE of the catalogs the provisioning changed takes
    // transaction ids too; only the operator's are counted here.
    let mut conn = PgConnection::connect(&pg.url()).await.unwrap();
    sqlx::raw_sql("ALTER SYSTEM SET autovacuum = off").execute(&mut conn).await.unwrap();
    sqlx::raw_sql("SELECT pg_reload_conf()").execute(&mut conn).await.unwrap();

    let (writes, transaction) = (operator_writes(&cp), next_transaction_id(&pg).await);
    let (passes, model_passes_before) = (tenant_passes(&operator), model_passes(&operator));
    tokio::time::sleep(IDLE_WINDOW).await; // an observation window, not a wait for something
    let new_writes = operator_writes(&cp).split_off(writes.len());
    let new_passes = tenant_passes(&operator) - passes;
    let new_model_passes = model_passes(&operator) - model_passes_before;
    assert!(new_passes >= 4 * TENANTS as u64, "only {new_passes} passes in {IDLE_WINDOW:?}: the window proves nothing");
    assert!(new_model_passes >= 8, "only {new_model_passes} ModelDeployment passes in {IDLE_WINDOW:?}");
    assert_eq!(new_writes, Vec::<String>::new(), "writes of an idle operator over {new_passes} passes");
    assert_eq!(next_transaction_id(&pg).await, transaction, "PostgreSQL write transactions while idle");
    eprintln!(
        "idle for {IDLE_WINDOW:?}: {new_passes} Tenant and {new_model_passes} ModelDeployment passes, 0 writes, 0 write transactions"
    );
    operator.stop().await;
}

async fn hand_edited_quota_is_restored(admin: &Client) {
    let quotas: Api<ResourceQuota> = Api::namespaced(admin.clone(), "tenant-idle-0");
    let wanted = quotas.get("ember-quota").await.unwrap().spec.unwrap().hard.unwrap();
    let edit = json!({"spec": {"hard": {"pods": "999"}}});
    quotas.patch("ember-quota", &PatchParams::default(), &Patch::Merge(&edit)).await.unwrap();
    poll::until_async("the quota restored from its watch event", Duration::from_secs(10), async || {
        let hard = quotas.get("ember-quota").await.map_err(|e| ember_testenv::Error::Kube(e.to_string()))?;
        Ok((hard.spec.unwrap().hard.unwrap() == wanted).then_some(()))
    })
    .await
    .unwrap();
}
