//! `config/default` — what `kubectl apply -k` and GitOps tools install —
//! applies to a real API server, passes Pod Security `restricted` admission
//! in ember-system, and its Deployments become Available (on kwok nodes).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use ember_crds::labels::TENANT_FINALIZER;
use ember_crds::tenant::Tenant;
use ember_testenv::{poll, shared_control_plane};
use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde::Deserialize;
use serde_json::json;

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

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "ember-system");
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
    a_new_tenant_carries_the_cleanup_finalizer_from_its_create(&client).await;
}

/// `config/policy/tenant-finalizer.yaml`: the API server's answer to a
/// Tenant's create already holds the operator's cleanup finalizer, so the
/// operator has no finalizer write to make (no operator process runs here:
/// the Deployment's pods are on kwok nodes).
async fn a_new_tenant_carries_the_cleanup_finalizer_from_its_create(client: &kube::Client) {
    let tenants: Api<Tenant> = Api::all(client.clone());
    let tenant: Tenant = serde_json::from_value(json!({
        "apiVersion": "ember.dev/v1alpha1", "kind": "Tenant",
        "metadata": {"name": "finalized-at-birth", "finalizers": ["example.com/keep"]},
        "spec": {"owners": [{"kind": "User", "name": "alice"}]},
    }))
    .unwrap();
    let created = tenants.create(&PostParams::default(), &tenant).await.unwrap();
    assert_eq!(created.finalizers(), ["example.com/keep", TENANT_FINALIZER], "the user's own finalizer is kept");
    // Released by hand, as no operator runs to clean up.
    let release = json!({"metadata": {"finalizers": null}});
    tenants.patch("finalized-at-birth", &PatchParams::default(), &Patch::Merge(&release)).await.unwrap();
    tenants.delete("finalized-at-birth", &DeleteParams::default()).await.unwrap();
}

/// Every right the operator's ClusterRole grants, one `group/resource verb [names]` line each.
fn granted_rights() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/rbac/operator-clusterrole.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let mut rights = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let object = serde_yaml::Value::deserialize(document).unwrap();
        if object["kind"] != "ClusterRole" && object["kind"] != "Role" {
            continue;
        }
        let strings = |v: &serde_yaml::Value| -> Vec<String> {
            v.as_sequence().map(|s| s.iter().map(|x| x.as_str().unwrap().to_owned()).collect()).unwrap_or_default()
        };
        for rule in object["rules"].as_sequence().unwrap() {
            let names = strings(&rule["resourceNames"]);
            let names = if names.is_empty() { String::new() } else { format!(" {names:?}") };
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    for verb in strings(&rule["verbs"]) {
                        rights.push(format!("{group}/{resource} {verb}{names}"));
                    }
                }
            }
        }
    }
    rights.sort();
    rights
}

/// The operator's RBAC is a reviewed list: growing it must change this test.
#[test]
fn operator_rbac_is_exactly_the_reviewed_list() {
    let rights = granted_rights();
    for right in &rights {
        assert!(!right.contains('*'), "wildcard in the operator's RBAC: {right}");
        assert!(!right.contains(" impersonate"), "the operator must not impersonate: {right}");
        if right.contains(" bind") || right.contains(" escalate") {
            assert!(right.contains(" ["), "{right} must name the exact roles it may bind");
        }
    }
    let mut expected = Vec::new();
    let mut grant = |group: &str, resources: &[&str], verbs: &[&str], names: &str| {
        for resource in resources {
            for verb in verbs {
                expected.push(format!("{group}/{resource} {verb}{names}"));
            }
        }
    };
    let manage = &["get", "list", "watch", "create", "patch"];
    grant("ember.dev", &["tenants", "modeldeployments"], &["get", "list", "watch", "patch"], "");
    grant("ember.dev", &["tenants/status", "modeldeployments/status"], &["get", "patch"], "");
    grant("ember.dev", &["tenants/finalizers", "modeldeployments/finalizers"], &["update"], "");
    grant("", &["namespaces", "resourcequotas", "limitranges", "serviceaccounts"], manage, "");
    // Secrets: the tenants' database credentials by name; create (which takes
    // no name) is confined by the admission policy; get in the platform
    // namespace for the database servers' admin Secrets.
    grant("", &["secrets"], &["get", "list", "watch", "patch"], r#" ["ember-database"]"#);
    grant("", &["secrets"], &["create", "get"], "");
    grant("networking.k8s.io", &["networkpolicies"], &["get", "list", "watch", "create", "patch", "delete"], "");
    grant("rbac.authorization.k8s.io", &["rolebindings", "clusterroles", "clusterrolebindings"], manage, "");
    // The per-tenant reader roles when `tenantReaderRoles` is off; the admission
    // policy confines the delete to those.
    grant("rbac.authorization.k8s.io", &["clusterroles", "clusterrolebindings"], &["delete"], "");
    grant(
        "rbac.authorization.k8s.io",
        &["clusterroles"],
        &["bind"],
        r#" ["ember-tenant-admin", "ember-tenant-edit", "ember-tenant-view"]"#,
    );
    grant("events.k8s.io", &["events"], &["create", "patch"], "");
    // ModelDeployment children: cached by list/watch, written by server-side apply.
    grant("apps", &["deployments"], &["list", "watch", "create", "patch"], "");
    grant("", &["services"], &["list", "watch", "create", "patch"], "");
    let apply_or_remove = &["list", "watch", "create", "patch", "delete"];
    grant("autoscaling", &["horizontalpodautoscalers"], apply_or_remove, "");
    grant("policy", &["poddisruptionbudgets"], apply_or_remove, "");
    // Model pods: read-only, for the Ready reason of failing models.
    grant("", &["pods"], &["list", "watch"], "");
    grant("coordination.k8s.io", &["leases"], &["get", "create", "update"], "");
    expected.sort();
    assert_eq!(rights, expected, "the operator's RBAC changed; review it and update this list");
}
