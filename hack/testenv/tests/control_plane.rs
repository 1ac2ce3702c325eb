//! The local control plane behaves like a cluster: Deployments become
//! Available (controller-manager + scheduler + kwok) and deleted namespaces
//! go away (namespace controller).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ember_testenv::{poll, shared_control_plane};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};

const TIMEOUT: Duration = Duration::from_secs(90);

fn namespace(name: &str) -> Namespace {
    serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap()
}

#[tokio::test]
async fn deployment_becomes_available_on_kwok_nodes() {
    let client = shared_control_plane().unwrap().client().await.unwrap();
    let ns = "testenv-deploy";
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace(ns)).await.unwrap();
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "example.invalid/web:1", "resources": {"requests": {"cpu": "100m"}}}]}
            }
        }
    }))
    .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    deployments.create(&PostParams::default(), &deployment).await.unwrap();

    let available = poll::until_async("deployment web Available", TIMEOUT, async || {
        let d = deployments.get("web").await.map_err(|e| ember_testenv::Error::Kube(e.to_string()))?;
        let status = d.status.unwrap_or_default();
        let is_available = status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True"));
        Ok((is_available && status.available_replicas == Some(2)).then_some(()))
    })
    .await;
    assert!(available.is_ok(), "{available:?}");

    // The pods were bound by the scheduler to simulated nodes.
    let pods = Api::<Pod>::namespaced(client.clone(), ns).list(&ListParams::default().labels("app=web")).await.unwrap();
    assert_eq!(pods.items.len(), 2);
    let nodes: Vec<String> = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    for pod in &pods.items {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap();
        assert!(nodes.contains(&node), "pod bound to unknown node {node}");
        assert_eq!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Running"));
    }
}

#[tokio::test]
async fn deleting_a_namespace_with_pods_finishes() {
    let client = shared_control_plane().unwrap().client().await.unwrap();
    let ns = "testenv-delete";
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces.create(&PostParams::default(), &namespace(ns)).await.unwrap();
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "lonely"},
        "spec": {"containers": [{"name": "c", "image": "example.invalid/c:1"}]}
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), ns).create(&PostParams::default(), &pod).await.unwrap();

    namespaces.delete(ns, &DeleteParams::default()).await.unwrap();
    let gone = poll::until_async("namespace deleted", TIMEOUT, async || {
        let current = namespaces.get_opt(ns).await.map_err(|e| ember_testenv::Error::Kube(e.to_string()))?;
        Ok(current.is_none().then_some(()))
    })
    .await;
    assert!(gone.is_ok(), "{gone:?}");
}

#[tokio::test]
async fn gpu_node_advertises_gpus() {
    let client = shared_control_plane().unwrap().client().await.unwrap();
    let node = Api::<Node>::all(client).get(ember_testenv::GPU_NODE).await.unwrap();
    let allocatable = node.status.unwrap().allocatable.unwrap();
    assert_eq!(allocatable.get("nvidia.com/gpu").map(|q| q.0.as_str()), Some("8"));
}
