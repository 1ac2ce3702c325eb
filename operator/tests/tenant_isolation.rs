//! What tenant users and tenant workloads may do, asked of the real API
//! server: `kubectl auth can-i` (SelfSubjectAccessReviews as the user) plus
//! real requests, so both the RBAC the operator writes and the admission
//! rules (Pod Security `restricted`, the quota on exposed Services) are
//! proven, not assumed.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ember_crds::tenant::Tenant;
use ember_testenv::Postgres;
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;

const ALICE: &str = "alice@a.example";
const BOB: &str = "bob@b.example";
const VIEWERS: &str = "iso-a-viewers";

/// `kubectl auth can-i VERB RESOURCE[/NAME] [-n NAMESPACE]` as the client's user.
async fn can_i(client: &Client, verb: &str, resource: &str, namespace: Option<&str>, name: Option<&str>) -> bool {
    let (resource, subresource) = resource.split_once('/').map_or((resource, None), |(r, s)| (r, Some(s)));
    let (group, resource) = resource.split_once('.').map_or(("", resource), |(r, g)| (g, r));
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                subresource: subresource.map(Into::into),
                namespace: namespace.map(Into::into),
                name: name.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    api.create(&PostParams::default(), &review).await.unwrap().status.unwrap().allowed
}

/// Asserts each `(verb, resource, namespace, name)` is allowed (or denied) for `who`.
async fn assert_access(who: &str, client: &Client, allowed: bool, cases: &[(&str, &str, Option<&str>, Option<&str>)]) {
    let mut wrong = Vec::new();
    for (verb, resource, namespace, name) in cases {
        if can_i(client, verb, resource, *namespace, *name).await != allowed {
            wrong.push(format!("{verb} {resource} {name:?} in {namespace:?}"));
        }
    }
    let expected = if allowed { "allowed" } else { "denied" };
    assert!(wrong.is_empty(), "{who} should be {expected}: {wrong:#?}");
}

fn forbidden<T: std::fmt::Debug>(result: kube::Result<T>) -> bool {
    matches!(result, Err(kube::Error::Api(ref status)) if status.code == 403)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated_from_each_other_and_from_the_platform() {
    let admin = admin_client().await;
    let pg = tokio::task::spawn_blocking(|| Postgres::start().unwrap()).await.unwrap();
    let server = database_server(&admin, "pg-iso", &pg).await;
    let operator = RunningOperator::start(vec![server]).await;
    let tenants: Api<Tenant> = Api::all(admin.clone());
    for (name, spec) in [
        (
            "iso-a",
            json!({"owners": [{"kind": "User", "name": ALICE}], "members": [{"kind": "Group", "name": VIEWERS, "role": "view"}]}),
        ),
        ("iso-b", json!({"owners": [{"kind": "User", "name": BOB}]})),
    ] {
        let tenant =
            json!({"apiVersion": "ember.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": name}, "spec": spec});
        tenants.create(&PostParams::default(), &serde_json::from_value(tenant).unwrap()).await.unwrap();
    }
    for name in ["iso-a", "iso-b"] {
        wait_for_tenant(&admin, name, &format!("{name} Ready"), is_ready).await;
    }
    let (a, b) = (Some("tenant-iso-a"), Some("tenant-iso-b"));
    let alice = client_as(ALICE, &[]).await;

    // Owners work in their own namespace and read their own Tenant.
    assert_access(
        "alice (owner of iso-a)",
        &alice,
        true,
        &[
            ("create", "modeldeployments.ember.dev", a, None),
            ("delete", "modeldeployments.ember.dev", a, None),
            ("get", "secrets", a, Some("ember-database")),
            ("create", "secrets", a, None),
            ("list", "pods", a, None),
            ("get", "pods/log", a, None),
        ],
    )
    .await;

    // Nothing of the other tenant, nothing cluster-wide, nothing the operator owns.
    assert_access(
        "alice (owner of iso-a)",
        &alice,
        false,
        &[
            // the other tenant
            ("get", "secrets", b, Some("ember-database")),
            ("list", "secrets", b, None),
            ("create", "secrets", b, None),
            ("watch", "modeldeployments.ember.dev", b, None),
            ("list", "pods", b, None),
            ("create", "modeldeployments.ember.dev", b, None),
            ("get", "tenants.ember.dev", None, Some("iso-b")),
            // nor, by default, the own Tenant: no ClusterRoleBinding per tenant
            // (`tenantReaderRoles`, see `tenant_lifecycle.rs`); ember-api serves it
            ("get", "tenants.ember.dev", None, Some("iso-a")),
            ("list", "tenants.ember.dev", None, None),
            // the cluster
            ("list", "nodes", None, None),
            ("list", "namespaces", None, None),
            ("list", "clusterroles.rbac.authorization.k8s.io", None, None),
            ("create", "customresourcedefinitions.apiextensions.k8s.io", None, None),
            ("create", "tenants.ember.dev", None, None),
            // what the operator owns in her own namespace
            ("update", "resourcequotas", a, Some("ember-quota")),
            ("delete", "limitranges", a, Some("ember-defaults")),
            ("patch", "networkpolicies.networking.k8s.io", a, Some("ember-network")),
            ("delete", "networkpolicies.networking.k8s.io", a, None),
            ("create", "rolebindings.rbac.authorization.k8s.io", a, None),
            ("patch", "rolebindings.rbac.authorization.k8s.io", a, Some("ember-owners")),
            ("bind", "clusterroles.rbac.authorization.k8s.io", None, Some("cluster-admin")),
            ("escalate", "roles.rbac.authorization.k8s.io", a, None),
            ("patch", "namespaces", None, Some("tenant-iso-a")),
            ("update", "modeldeployments.ember.dev/status", a, None),
            ("create", "pods", a, None),
            ("create", "serviceaccounts/token", a, Some("ember-workload")),
        ],
    )
    .await;

    // Real requests fail the same way: the other tenant's credentials stay out of reach,
    // and a RoleBinding to cluster-admin cannot be made.
    let foreign_secrets: Api<Secret> = Api::namespaced(alice.clone(), "tenant-iso-b");
    assert!(forbidden(foreign_secrets.get("ember-database").await), "alice read iso-b's database Secret");
    assert!(forbidden(foreign_secrets.list(&Default::default()).await));
    let escalation = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "root", "namespace": "tenant-iso-a"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": ALICE}],
    });
    let bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> = Api::namespaced(alice.clone(), "tenant-iso-a");
    assert!(forbidden(bindings.create(&PostParams::default(), &serde_json::from_value(escalation).unwrap()).await));

    // Members with `view` read but do not write, and never see credentials.
    let carol = client_as("carol@a.example", &[VIEWERS]).await;
    assert_access("carol (viewer of iso-a)", &carol, true, &[("list", "modeldeployments.ember.dev", a, None)]).await;
    assert_access(
        "carol (viewer of iso-a)",
        &carol,
        false,
        &[
            ("create", "modeldeployments.ember.dev", a, None),
            ("get", "secrets", a, Some("ember-database")),
            ("list", "modeldeployments.ember.dev", b, None),
            ("get", "tenants.ember.dev", None, Some("iso-a")),
        ],
    )
    .await;

    // Nothing cluster-scoped per tenant by default: no ClusterRole or
    // ClusterRoleBinding for RBAC to scan on every request of the cluster.
    let ours = kube::api::ListParams::default().labels("app.kubernetes.io/managed-by=ember-operator");
    let cluster_bindings = Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(admin.clone());
    let cluster_roles = Api::<k8s_openapi::api::rbac::v1::ClusterRole>::all(admin.clone());
    let ours_of_this_test = |names: Vec<Option<String>>| -> Vec<String> {
        names.into_iter().flatten().filter(|name| name.contains("iso-")).collect()
    };
    let bindings = cluster_bindings.list_metadata(&ours).await.unwrap().items.into_iter().map(|o| o.metadata.name);
    assert_eq!(ours_of_this_test(bindings.collect()), Vec::<String>::new(), "ClusterRoleBindings per tenant");
    let roles = cluster_roles.list_metadata(&ours).await.unwrap().items.into_iter().map(|o| o.metadata.name);
    assert_eq!(ours_of_this_test(roles.collect()), Vec::<String>::new(), "ClusterRoles per tenant");

    // Bob (owner of iso-b) sees nothing of iso-a.
    let bob = client_as(BOB, &[]).await;
    assert_access(
        "bob (owner of iso-b)",
        &bob,
        false,
        &[
            ("get", "secrets", a, Some("ember-database")),
            ("list", "modeldeployments.ember.dev", a, None),
            ("get", "tenants.ember.dev", None, Some("iso-a")),
        ],
    )
    .await;

    // The workload ServiceAccount holds no rights at all, even in its own namespace.
    let workload = client_as(
        "system:serviceaccount:tenant-iso-a:ember-workload",
        &["system:serviceaccounts", "system:serviceaccounts:tenant-iso-a", "system:authenticated"],
    )
    .await;
    assert_access(
        "the workload ServiceAccount",
        &workload,
        false,
        &[
            ("list", "pods", a, None),
            ("get", "secrets", a, Some("ember-database")),
            ("list", "modeldeployments.ember.dev", a, None),
            ("list", "configmaps", a, None),
        ],
    )
    .await;

    // Admission, even for a cluster admin: Pod Security `restricted` and no exposed Services.
    pods_must_be_restricted(&admin).await;
    let services: Api<Service> = Api::namespaced(admin.clone(), "tenant-iso-a");
    for exposed in ["NodePort", "LoadBalancer"] {
        let service = json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": exposed.to_lowercase()},
            "spec": {"type": exposed, "ports": [{"port": 80}], "selector": {"app": "x"}},
        });
        let result = services.create(&PostParams::default(), &serde_json::from_value(service).unwrap()).await;
        assert!(forbidden(result), "a {exposed} Service was accepted in a tenant namespace");
    }

    operator.stop().await;
}

/// A restricted-compliant pod is admitted; each way of breaking `restricted` is refused.
async fn pods_must_be_restricted(admin: &Client) {
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "tenant-iso-a");
    let dry_run = PostParams { dry_run: true, ..Default::default() };
    let pod = |name: &str, pod_spec_extra: serde_json::Value, container_extra: serde_json::Value| -> Pod {
        let mut container = json!({
            "name": "c", "image": "ember-runtime:test",
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}},
            "securityContext": {
                "allowPrivilegeEscalation": false, "runAsNonRoot": true,
                "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
            },
        });
        merge(&mut container, container_extra);
        let mut spec = json!({"containers": [container]});
        merge(&mut spec, pod_spec_extra);
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}))
            .unwrap()
    };
    pods.create(&dry_run, &pod("compliant", json!({}), json!({}))).await.expect("a restricted pod is admitted");
    // A pod that states no resources gets the LimitRange's defaults and fits the quota.
    let defaulted = pods
        .create(&dry_run, &pod("no-resources", json!({}), json!({"resources": null})))
        .await
        .expect("a pod without requests is admitted");
    let resources = defaulted.spec.unwrap().containers[0].resources.clone().unwrap();
    for (what, values) in [("requests", resources.requests), ("limits", resources.limits)] {
        let values = values.unwrap_or_default();
        assert!(values.contains_key("cpu") && values.contains_key("memory"), "no default {what}: {values:?}");
    }
    let violations = [
        ("privileged", json!({}), json!({"securityContext": {"privileged": true, "allowPrivilegeEscalation": true}})),
        ("host-network", json!({"hostNetwork": true}), json!({})),
        ("host-path", json!({"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}), json!({})),
        ("added-capability", json!({}), json!({"securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}})),
        ("escalation", json!({}), json!({"securityContext": {"allowPrivilegeEscalation": true}})),
        ("root", json!({}), json!({"securityContext": {"runAsNonRoot": false, "runAsUser": 0}})),
        ("no-seccomp", json!({}), json!({"securityContext": {"seccompProfile": null}})),
    ];
    for (name, spec_extra, container_extra) in violations {
        let result = pods.create(&dry_run, &pod(name, spec_extra, container_extra)).await;
        match result {
            Err(kube::Error::Api(status)) if status.code == 403 && status.message.contains("PodSecurity") => {}
            other => panic!("pod {name} breaking `restricted` was not refused by Pod Security: {other:?}"),
        }
    }
}

/// JSON merge: `extra`'s fields replace `base`'s, objects merge recursively, null removes.
fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    match (base, extra) {
        (serde_json::Value::Object(base), serde_json::Value::Object(extra)) => {
            for (key, value) in extra {
                if value.is_null() {
                    base.remove(&key);
                } else {
                    merge(base.entry(key).or_insert(serde_json::Value::Null), value);
                }
            }
        }
        (base, extra) => *base = extra,
    }
}
