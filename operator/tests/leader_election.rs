//! Two real `ember-operator` processes share one Lease: only the leader
//! reconciles, and killing it hands leadership (and the work) to the other.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use ember_crds::tenant::Tenant;
use ember_testenv::poll;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};

fn start_replica(identity: &str, kubeconfig: &std::path::Path, lease: &str) -> OperatorProcess {
    OperatorProcess::start(
        kubeconfig,
        identity,
        &["--lease-name", lease, "--lease-seconds", "3", "--log-format", "text"],
    )
}

async fn metrics(replica: &OperatorProcess) -> String {
    replica.get("/metrics").await.expect("health server answers")
}

fn reconciles(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("ember_operator_reconciles_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

async fn holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases.get_opt(name).await.ok().flatten().and_then(|l| l.spec?.holder_identity)
}

async fn wait_reconciled(admin: &kube::Client, name: &str) {
    wait_for_tenant(admin, name, "tenant status written by the leader", |t: &Tenant| {
        t.status.as_ref().is_some_and(|s| s.observed_generation == t.metadata.generation && !s.conditions.is_empty())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_reconciles_and_killing_it_hands_over() {
    let admin = admin_client().await;
    // The replicas run with exactly the operator's RBAC.
    let kubeconfig = operator_kubeconfig("election");
    let lease = "ember-operator-election-test";
    let leases: Api<Lease> = Api::namespaced(admin.clone(), PLATFORM_NAMESPACE);

    let first = start_replica("replica-a", &kubeconfig, lease);
    poll::until_async("replica-a leads", TIMEOUT, async || {
        Ok((holder(&leases, lease).await.as_deref() == Some("replica-a")).then_some(()))
    })
    .await
    .unwrap();
    let second = start_replica("replica-b", &kubeconfig, lease);

    let tenants: Api<Tenant> = Api::all(admin.clone());
    let spec = serde_json::json!({"apiVersion": "ember.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": "led-by-a"}, "spec": {}});
    tenants.create(&PostParams::default(), &serde_json::from_value(spec).unwrap()).await.unwrap();
    wait_reconciled(&admin, "led-by-a").await;

    // The standby is up (its health server answers) but has not reconciled anything.
    let standby = metrics(&second).await;
    assert!(standby.contains("ember_operator_leader 0"), "{standby}");
    assert_eq!(reconciles(&standby), 0, "a standby replica reconciled: {standby}");
    let leader = metrics(&first).await;
    assert!(leader.contains("ember_operator_leader 1"), "{leader}");
    // A pass counts once it ends; the status shows while it still runs.
    let leader_reconciled = async || Ok((reconciles(&metrics(&first).await) > 0).then_some(()));
    poll::until_async("the leader counts its pass", TIMEOUT, leader_reconciled).await.unwrap();
    assert_eq!(holder(&leases, lease).await.as_deref(), Some("replica-a"));

    // Kill the leader without a chance to release the Lease.
    drop(first);
    poll::until_async("replica-b takes over", Duration::from_secs(30), async || {
        Ok((holder(&leases, lease).await.as_deref() == Some("replica-b")).then_some(()))
    })
    .await
    .unwrap();
    let spec = serde_json::json!({"apiVersion": "ember.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": "led-by-b"}, "spec": {}});
    tenants.create(&PostParams::default(), &serde_json::from_value(spec).unwrap()).await.unwrap();
    wait_reconciled(&admin, "led-by-b").await;
    let new_leader_reconciled = async || Ok((reconciles(&metrics(&second).await) > 0).then_some(()));
    poll::until_async("the new leader counts its pass", TIMEOUT, new_leader_reconciled).await.unwrap();
    let _ = std::fs::remove_file(&kubeconfig);
}
