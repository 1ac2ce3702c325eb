//! Small ModelDeployments and helpers the builder tests share.

#![allow(clippy::unwrap_used)]

use ember_crds::model_deployment::ModelDeployment;
use k8s_openapi::api::core::v1::PodSpec;

use super::{ModelChildren, Serving, desired_children};
use crate::config::OperatorConfig;

pub(super) const SHA_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
pub(super) const SHA_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
pub(super) const SHA_C: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

pub(super) fn md(extra: serde_json::Value) -> ModelDeployment {
    let mut spec = serde_json::json!({
        "model": {
            "architecture": "bert", "task": "embedding",
            "source": {"uri": "https://m.example/minilm/model.safetensors", "sha256": SHA_A},
            "config": {"uri": "https://m.example/minilm/config.json", "sha256": SHA_B},
            "tokenizer": {"uri": "https://m.example/minilm/tokenizer.json", "sha256": SHA_C},
        },
        "resources": {"cpu": "2", "memory": "2Gi"},
        "batching": {"maxBatchSize": 16, "maxDelayMs": 3},
    });
    json_merge(&mut spec, extra);
    let mut md: ModelDeployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "ember.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": "minilm", "namespace": "tenant-acme", "uid": "md-uid",
                     "labels": {"argocd.argoproj.io/instance": "apps"}},
        "spec": spec,
    }))
    .unwrap();
    md.metadata.uid = Some("md-uid".into());
    md
}

fn json_merge(base: &mut serde_json::Value, patch: serde_json::Value) {
    match (base, patch) {
        (serde_json::Value::Object(base), serde_json::Value::Object(patch)) => {
            for (k, v) in patch {
                json_merge(base.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (base, patch) => *base = patch,
    }
}

pub(super) fn serving() -> Serving {
    Serving { tenant: "acme".into(), suspended: false, service_account: Some("ember-workload".into()) }
}

pub(super) fn children(md: &ModelDeployment, serving: &Serving) -> ModelChildren {
    desired_children(md, serving, &OperatorConfig::default()).unwrap()
}

pub(super) fn pod(children: &ModelChildren) -> PodSpec {
    children.deployment.spec.clone().template.spec.unwrap()
}

pub(super) fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == &format!("--{name}")).map(|i| args[i + 1].clone())
}
