//! The shipped ValidatingAdmissionPolicy (`config/policy`) on a real API
//! server: a ModelDeployment is admitted only in a namespace the operator
//! made for a Tenant, and the refusal names the field and says why. (Own test
//! binary, so its control plane has the policy and no other test's.)
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use ember_crds::{ModelDeployment, Tenant};
use ember_testenv::{install_crds, poll, shared_control_plane};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::{Client, Resource};
use serde_json::{Value, json};

fn model(name: &str, namespace: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": ModelDeployment::api_version(&()), "kind": ModelDeployment::kind(&()),
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": {"architecture": "mlp", "task": "regression",
                           "config": {"uri": "https://models.example/config.json", "sha256": "f".repeat(64)}, "source": {"uri": "https://models.example/m.safetensors", "sha256": "a".repeat(64)}}}
    }))
    .unwrap()
}

async fn namespace(client: &Client, body: Value) {
    let ns: Namespace = serde_json::from_value(body).unwrap();
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
}

async fn create(client: &Client, namespace: &str, name: &str) -> Result<(), kube::Error> {
    let api = ember_testenv::raw_model_deployments(client, namespace);
    api.create(&PostParams::default(), &model(name, namespace)).await.map(|_| ())
}

/// The admission refusal of a ModelDeployment in `namespace`. Polls: a new
/// policy, and a just-created namespace, reach admission shortly after
/// they are written (until then the create succeeds or says "not found").
async fn refusal_in(client: &Client, namespace: &str) -> kube::core::Status {
    let what = format!("the policy refuses a ModelDeployment in {namespace}");
    poll::until_async(&what, Duration::from_secs(60), async || match create(client, namespace, "stray").await {
        Err(kube::Error::Api(status)) if status.code == 403 => Ok(Some(*status)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Ok(()) => {
            let api = ember_testenv::raw_model_deployments(client, namespace);
            api.delete("stray", &Default::default()).await.unwrap();
            Ok(None)
        }
        Err(other) => panic!("{other}"),
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn model_deployments_are_admitted_only_in_tenant_namespaces() {
    let cp = shared_control_plane().unwrap();
    let client = cp.client().await.unwrap();
    install_crds(&client, &ember_crds::crd_yaml::all_crds()).await.unwrap();
    cp.apply_kustomization(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/policy")).unwrap();

    // A tenant namespace as the operator makes it.
    let tenants: Api<DynamicObject> = Api::all_with(client.clone(), &ApiResource::erase::<Tenant>(&()));
    let tenant: DynamicObject = serde_json::from_value(json!({
        "apiVersion": Tenant::api_version(&()), "kind": Tenant::kind(&()), "metadata": {"name": "policy-acme"}, "spec": {}
    }))
    .unwrap();
    let uid = tenants.create(&PostParams::default(), &tenant).await.unwrap().metadata.uid.unwrap();
    namespace(
        &client,
        json!({"metadata": {"name": "tenant-policy-acme",
               "labels": {"ember.dev/tenant": "policy-acme", "app.kubernetes.io/managed-by": "ember-operator"},
               "ownerReferences": [{"apiVersion": "ember.dev/v1alpha1", "kind": "Tenant", "name": "policy-acme", "uid": uid}]}}),
    )
    .await;
    namespace(&client, json!({"metadata": {"name": "plain-policy"}})).await;
    // Half the operator's labels, or its labels on another name: not a tenant namespace.
    namespace(&client, json!({"metadata": {"name": "forged-policy", "labels": {"ember.dev/tenant": "policy-acme"}}}))
        .await;
    namespace(
        &client,
        json!({"metadata": {"name": "renamed-policy",
               "labels": {"ember.dev/tenant": "policy-acme", "app.kubernetes.io/managed-by": "ember-operator"}}}),
    )
    .await;

    for ns in ["plain-policy", "forged-policy", "renamed-policy"] {
        let refusal = refusal_in(&client, ns).await;
        assert_eq!(refusal.code, 403, "{refusal:?}");
        assert!(refusal.message.contains("metadata.namespace"), "{}", refusal.message);
        assert!(refusal.message.contains(&format!("{ns} does not belong to any Tenant")), "{}", refusal.message);
    }
    create(&client, "tenant-policy-acme", "allowed").await.unwrap();
}
