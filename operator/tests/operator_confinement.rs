//! A compromised operator cannot act as cluster-admin: what its RBAC still
//! allows outside tenant objects is refused by the shipped admission policy
//! (`config/policy/operator`), and what RBAC alone can deny is denied
//! (`kubectl auth can-i` as its ServiceAccount). The allowed shapes are
//! exercised by every other operator test, which run under the same policy.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use ember_testenv::{poll, shared_control_plane};
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

/// Creates `body` as the operator; the API server's refusal, if any.
async fn create_as_operator(client: &Client, ar: &ApiResource, namespace: Option<&str>, body: Value) -> Option<String> {
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
        None => Api::all_with(client.clone(), ar),
    };
    let object: DynamicObject = serde_json::from_value(body).unwrap();
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => None,
        Err(kube::Error::Api(status)) => Some(format!("{} {}", status.code, status.message)),
        Err(other) => panic!("{other}"),
    }
}

/// Creates `body` as the operator, which must be refused with 403; the refusal.
async fn refused(client: &Client, ar: &ApiResource, namespace: Option<&str>, body: Value) -> String {
    let name = body["metadata"]["name"].as_str().unwrap().to_owned();
    match create_as_operator(client, ar, namespace, body).await {
        Some(refusal) if refusal.starts_with("403") => refusal,
        Some(other) => panic!("{name}: expected 403, got {other}"),
        None => panic!("{name}: the operator was allowed to create {}", ar.plural),
    }
}

/// A new policy reaches admission shortly after it is written: until the
/// operator is refused a Secret in kube-system, whatever it made is removed.
async fn wait_for_the_policy(admin: &Client, operator: &Client) {
    let secrets = resource("", "v1", "Secret", "secrets");
    poll::until_async("the operator policy is in force", Duration::from_secs(60), async || {
        match create_as_operator(operator, &secrets, Some("kube-system"), json!({"metadata": {"name": "probe"}})).await
        {
            Some(refusal) if refusal.starts_with("403") => Ok(Some(())),
            Some(other) => panic!("{other}"),
            None => {
                Api::<DynamicObject>::namespaced_with(admin.clone(), "kube-system", &secrets)
                    .delete("probe", &Default::default())
                    .await
                    .unwrap();
                Ok(None)
            }
        }
    })
    .await
    .unwrap();
}

fn can_i(args: &[&str]) -> bool {
    let cp = shared_control_plane().unwrap();
    let output = std::process::Command::new("kubectl")
        .args(["--kubeconfig", cp.kubeconfig().to_str().unwrap(), "auth", "can-i", "--as", OPERATOR_USER])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim() == "yes"
}

#[tokio::test]
async fn a_compromised_operator_cannot_write_outside_tenant_objects() {
    let admin = admin_client().await;
    let operator = operator_client().await;
    let secrets = resource("", "v1", "Secret", "secrets");
    let namespaces = resource("", "v1", "Namespace", "namespaces");
    let deployments = resource("apps", "v1", "Deployment", "deployments");
    let cluster_roles = resource("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles");
    let cluster_bindings = resource("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings");
    let role_bindings = resource("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings");

    // Planting a Secret (or anything) in kube-system: RBAC allows, the policy does not.
    wait_for_the_policy(&admin, &operator).await;
    let refusal = refused(&operator, &secrets, Some("kube-system"), json!({"metadata": {"name": "planted"}})).await;
    assert!(refusal.contains("only in tenant namespaces"), "{refusal}");
    let pod_spec = json!({"containers": [{"name": "x", "image": "x"}]});
    let deployment = json!({"metadata": {"name": "miner"}, "spec": {"selector": {"matchLabels": {"a": "b"}},
        "template": {"metadata": {"labels": {"a": "b"}}, "spec": pod_spec}}});
    refused(&operator, &deployments, Some("kube-system"), deployment).await;

    // A namespace that is not a restricted tenant namespace.
    refused(&operator, &namespaces, None, json!({"metadata": {"name": "not-a-tenant"}})).await;
    let lax = json!({"metadata": {"name": "tenant-lax", "labels": {"ember.dev/tenant": "lax",
        "app.kubernetes.io/managed-by": "ember-operator", "pod-security.kubernetes.io/enforce": "privileged"}}});
    refused(&operator, &namespaces, None, lax).await;
    // Nor relabel an existing one into a "tenant namespace".
    let relabel = json!({"metadata": {"labels": {"ember.dev/tenant": "system", "app.kubernetes.io/managed-by": "ember-operator"}}});
    let relabelled = Api::<DynamicObject>::all_with(operator.clone(), &namespaces)
        .patch("kube-system", &PatchParams::default(), &Patch::Merge(&relabel))
        .await;
    assert!(matches!(relabelled, Err(kube::Error::Api(ref s)) if s.code == 403), "{relabelled:?}");

    // A reader role that reads namespaces (the operator holds that right, so RBAC's escalation
    // check lets it through; the policy does not), or a binding to something else.
    let greedy = json!({"metadata": {"name": "ember-tenant-x-reader"},
        "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]}]});
    let refusal = refused(&operator, &cluster_roles, None, greedy).await;
    assert!(refusal.contains("get one Tenant"), "{refusal}");
    let wide = json!({"metadata": {"name": "ember-tenant-x-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "ember-operator"},
        "subjects": [{"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}]});
    refused(&operator, &cluster_bindings, None, wide).await;
    // It may delete ClusterRoles (its reader roles, when turned off), but no other.
    let innocent = json!({"metadata": {"name": "innocent-viewer"}, "rules": []});
    let made = Api::<DynamicObject>::all_with(admin.clone(), &cluster_roles)
        .create(&PostParams::default(), &serde_json::from_value(innocent).unwrap())
        .await;
    assert!(!matches!(made, Err(kube::Error::Api(ref s)) if s.code != 409), "{made:?}");
    let deleted = Api::<DynamicObject>::all_with(operator.clone(), &cluster_roles)
        .delete("innocent-viewer", &Default::default())
        .await;
    assert!(
        matches!(deleted, Err(kube::Error::Api(ref s)) if s.code == 403 && s.message.contains("ember-tenant-<tenant>-reader")),
        "{deleted:?}"
    );

    // In a real tenant namespace, a RoleBinding to anything but the tenant roles.
    let tenant_ns = json!({"metadata": {"name": "tenant-confined", "labels": {"ember.dev/tenant": "confined",
        "app.kubernetes.io/managed-by": "ember-operator", "pod-security.kubernetes.io/enforce": "restricted"}}});
    Api::<DynamicObject>::all_with(admin.clone(), &namespaces)
        .create(&PostParams::default(), &serde_json::from_value(tenant_ns).unwrap())
        .await
        .unwrap();
    let escalate = json!({"metadata": {"name": "sneaky"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "ember-operator"},
        "subjects": [{"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}]});
    let refusal = refused(&operator, &role_bindings, Some("tenant-confined"), escalate).await;
    assert!(refusal.contains("only the tenant roles"), "{refusal}");
    // Secrets there: only the tenant's database credentials, the shape it needs.
    let refusal =
        refused(&operator, &secrets, Some("tenant-confined"), json!({"metadata": {"name": "model-store-x"}})).await;
    assert!(refusal.contains("only the Secret ember-database"), "{refusal}");
    assert_eq!(
        create_as_operator(
            &operator,
            &secrets,
            Some("tenant-confined"),
            json!({"metadata": {"name": "ember-database"}})
        )
        .await,
        None
    );

    // What RBAC alone denies.
    for denied in [
        ["delete", "namespaces"].as_slice(),
        &["delete", "secrets", "-n", "kube-system"],
        &["bind", "clusterroles/cluster-admin"],
        &["escalate", "clusterroles"],
        &["create", "pods", "-n", "tenant-confined"],
        &["create", "pods/exec", "-n", "tenant-confined"],
        &["update", "nodes"],
        &["create", "validatingadmissionpolicybindings"],
        &["delete", "validatingadmissionpolicies"],
        // No Secret but the tenants' database credentials is readable: not the
        // tokens in kube-system, not a tenant's model-store credentials.
        &["get", "secrets", "-n", "kube-system"],
        &["list", "secrets", "--all-namespaces"],
        &["watch", "secrets", "-n", "tenant-confined"],
        &["get", "secrets/model-store-x", "-n", "tenant-confined"],
        &["patch", "secrets/model-store-x", "-n", "tenant-confined"],
    ] {
        assert!(!can_i(denied), "the operator can {denied:?}");
    }
    assert!(can_i(&["bind", "clusterroles/ember-tenant-view"]), "the check itself works");
    assert!(can_i(&["get", "secrets/ember-database", "-n", "tenant-confined"]), "the check itself works");
}
