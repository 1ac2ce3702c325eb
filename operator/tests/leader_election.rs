//! Two real `ember-operator` processes share one Lease: only the leader
//! reconciles, and killing it hands leadership (and the work) to the other.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use ember_crds::tenant::Tenant;
use ember_testenv::{free_port, poll, shared_control_plane};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};

struct Replica {
    child: Child,
    health_port: u16,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_replica(identity: &str, kubeconfig: &std::path::Path, lease: &str) -> Replica {
    let health_port = free_port().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ember-operator"))
        .env("KUBECONFIG", kubeconfig)
        .args(["--identity", identity, "--lease-name", lease, "--lease-seconds", "3", "--log-format", "text"])
        .arg("--health-addr")
        .arg(format!("127.0.0.1:{health_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Replica { child, health_port }
}

async fn metrics(replica: &Replica) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", replica.health_port)).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").await.unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    body
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
    let cp = shared_control_plane().unwrap();
    // The replicas run with exactly the operator's RBAC.
    let text = std::fs::read_to_string(cp.kubeconfig()).unwrap();
    let impersonating = text.replace("    client-key:", &format!("    as: {OPERATOR_USER}\n    client-key:"));
    let kubeconfig = std::env::temp_dir().join(format!("ember-operator-{}.kubeconfig", std::process::id()));
    std::fs::write(&kubeconfig, impersonating).unwrap();
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
    assert!(reconciles(&leader) > 0);
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
    assert!(reconciles(&metrics(&second).await) > 0);
    let _ = std::fs::remove_file(&kubeconfig);
}
