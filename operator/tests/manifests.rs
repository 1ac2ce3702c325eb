//! `config/default` — what `kubectl apply -k` and GitOps tools install —
//! applies to a real API server, passes Pod Security `restricted` admission
//! in ember-system, and its Deployments become Available (on kwok nodes).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use ember_testenv::{poll, shared_control_plane};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;

#[tokio::test]
async fn config_default_installs_and_its_deployments_become_available() {
    let cp = shared_control_plane().unwrap();
    let client = cp.client().await.unwrap();
    let default = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/default");
    let apply = || {
        std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(cp.kubeconfig())
            .args(["apply", "--server-side", "-k"])
            .arg(&default)
            .output()
            .unwrap()
    };
    // CRDs and namespace first time round; a second apply is a no-op that must also succeed.
    let first = apply();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert!(
        String::from_utf8_lossy(&first.stderr).is_empty(),
        "warnings (e.g. Pod Security): {}",
        String::from_utf8_lossy(&first.stderr)
    );
    let second = apply();
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));

    let deployments: Api<Deployment> = Api::namespaced(client, "ember-system");
    for name in ["ember-operator", "ember-api"] {
        poll::until_async(&format!("{name} Available"), Duration::from_secs(90), async || {
            let d = deployments.get(name).await.map_err(|e| ember_testenv::Error::Kube(e.to_string()))?;
            let available = d
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True"));
            Ok(available.then_some(()))
        })
        .await
        .unwrap();
    }
}
