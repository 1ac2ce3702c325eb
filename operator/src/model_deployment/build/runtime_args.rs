//! The ember-runtime command line and environment of a model's container
//! (docs/runtime.md): which files to fetch and verify, how to serve them.

use ember_crds::model_deployment::{Architecture, ArtifactRef, Backend, ModelDeployment, Task};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};
use kube::ResourceExt;

use super::HTTP_PORT;
use super::pod::MODEL_CACHE_DIR;
use crate::error::Result;

fn architecture_name(architecture: Architecture) -> &'static str {
    match architecture {
        Architecture::Bert => "bert",
        Architecture::Mlp => "mlp",
    }
}

fn task_name(task: Task) -> &'static str {
    match task {
        Task::Embedding => "embedding",
        Task::Classification => "classification",
        Task::Regression => "regression",
    }
}

fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Cpu => "cpu",
        Backend::Wgpu => "wgpu",
    }
}

/// The ember-runtime command line (docs/runtime.md), flags only: a flag is
/// visible in `kubectl describe` and wins over any environment variable.
/// A file whose address is in a Secret has no `--<file>-uri` flag: the
/// runtime reads it from the variable [`runtime_env`] fills.
pub fn runtime_args(md: &ModelDeployment) -> Result<Vec<String>> {
    let spec = &md.spec;
    let mut args = Vec::new();
    let mut flag = |name: &str, value: String| {
        args.push(format!("--{name}"));
        args.push(value);
    };
    flag("model-name", md.name_any());
    // Every file with its digest: the runtime verifies each before use.
    for (file, artifact) in model_files(md) {
        if let Some(uri) = &artifact.uri {
            flag(&format!("{}-uri", file.flag), uri.clone());
        }
        flag(&format!("{}-sha256", file.flag), artifact.sha256.clone());
    }
    flag("architecture", architecture_name(spec.model.architecture).into());
    flag("task", task_name(spec.model.task).into());
    flag("backend", backend_name(spec.backend).into());
    flag("max-batch-size", spec.batching.max_batch_size.to_string());
    flag("max-delay-ms", spec.batching.max_delay_ms.to_string());
    flag("port", HTTP_PORT.to_string());
    flag("model-cache-dir", MODEL_CACHE_DIR.into());
    flag("log-format", "json".into());
    Ok(args)
}

/// One of the files the runtime loads: its flag stem and the variable that
/// may carry its address instead.
struct ModelFile {
    flag: &'static str,
    env: &'static str,
}

const WEIGHTS: ModelFile = ModelFile { flag: "model", env: "EMBER_MODEL_URI" };
const CONFIG: ModelFile = ModelFile { flag: "config", env: "EMBER_CONFIG_URI" };
const TOKENIZER: ModelFile = ModelFile { flag: "tokenizer", env: "EMBER_TOKENIZER_URI" };

fn model_files(md: &ModelDeployment) -> impl Iterator<Item = (&'static ModelFile, &ArtifactRef)> {
    let model = &md.spec.model;
    [(&WEIGHTS, Some(&model.source)), (&CONFIG, Some(&model.config)), (&TOKENIZER, model.tokenizer.as_ref())]
        .into_iter()
        .filter_map(|(file, artifact)| artifact.map(|a| (file, a)))
}

/// Addresses kept in Secrets, as variables the kubelet fills from them: the
/// operator never reads those Secrets, and the pod spec names only the key.
/// A missing Secret holds the pod in `CreateContainerConfigError`, which
/// becomes the ModelDeployment's Ready reason.
pub fn runtime_env(md: &ModelDeployment) -> Vec<EnvVar> {
    model_files(md)
        .filter_map(|(file, artifact)| {
            let reference = &artifact.uri_from.as_ref()?.secret_key_ref;
            Some(EnvVar {
                name: file.env.into(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: reference.name.clone(),
                        key: reference.key.clone(),
                        optional: Some(false),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::fixtures::{SHA_A, SHA_B, SHA_C, children, flag, md, pod, serving};
    use super::*;

    #[test]
    fn args_follow_the_runtime_command_line() {
        let args = runtime_args(&md(serde_json::json!({}))).unwrap();
        assert_eq!(flag(&args, "model-name").as_deref(), Some("minilm"));
        assert_eq!(flag(&args, "model-uri").as_deref(), Some("https://m.example/minilm/model.safetensors"));
        assert_eq!(flag(&args, "model-sha256").as_deref(), Some(SHA_A));
        assert_eq!(flag(&args, "config-uri").as_deref(), Some("https://m.example/minilm/config.json"));
        assert_eq!(flag(&args, "config-sha256").as_deref(), Some(SHA_B));
        assert_eq!(flag(&args, "tokenizer-uri").as_deref(), Some("https://m.example/minilm/tokenizer.json"));
        assert_eq!(flag(&args, "tokenizer-sha256").as_deref(), Some(SHA_C));
        assert_eq!(flag(&args, "architecture").as_deref(), Some("bert"));
        assert_eq!(flag(&args, "task").as_deref(), Some("embedding"));
        assert_eq!(flag(&args, "backend").as_deref(), Some("cpu"));
        assert_eq!(flag(&args, "max-batch-size").as_deref(), Some("16"));
        assert_eq!(flag(&args, "max-delay-ms").as_deref(), Some("3"));
        assert_eq!(flag(&args, "port").as_deref(), Some("8080"));
        assert_eq!(flag(&args, "model-cache-dir").as_deref(), Some(MODEL_CACHE_DIR));
        assert_eq!(flag(&args, "log-format").as_deref(), Some("json"));
        // Every flag is one the runtime documents, each given once.
        let flags: Vec<_> = args.iter().filter(|a| a.starts_with("--")).collect();
        let unique: std::collections::BTreeSet<_> = flags.iter().collect();
        assert_eq!(flags.len(), unique.len());
        assert_eq!(args.len(), flags.len() * 2);
    }

    #[test]
    fn every_model_file_goes_to_the_runtime_with_its_digest() {
        let args = runtime_args(&md(serde_json::json!({}))).unwrap();
        for file in ["model", "config", "tokenizer"] {
            let digest = flag(&args, &format!("{file}-sha256"));
            assert!(digest.is_some_and(|d| d.len() == 64), "{file} without a digest: {args:?}");
        }
    }

    #[test]
    fn addresses_kept_in_secrets_reach_the_runtime_only_through_the_kubelet() {
        let signed = |key: &str| serde_json::json!({"uri": null, "uriFrom": {"secretKeyRef": {"name": "model-store-minilm", "key": key}}});
        let md = md(serde_json::json!({"model": {"source": signed("weights"), "tokenizer": signed("tokenizer")}}));
        let args = runtime_args(&md).unwrap();
        assert_eq!(flag(&args, "model-uri"), None, "{args:?}");
        assert_eq!(flag(&args, "tokenizer-uri"), None, "{args:?}");
        assert_eq!(flag(&args, "config-uri").as_deref(), Some("https://m.example/minilm/config.json"));
        assert_eq!(flag(&args, "model-sha256").as_deref(), Some(SHA_A));
        assert_eq!(flag(&args, "tokenizer-sha256").as_deref(), Some(SHA_C));

        let container = pod(&children(&md, &serving())).containers.remove(0);
        let env = container.env.unwrap();
        let from_secret: Vec<_> = env
            .iter()
            .map(|var| {
                assert_eq!(var.value, None, "{var:?}");
                let reference = var.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
                (var.name.as_str(), reference.name.as_str(), reference.key.as_str(), reference.optional)
            })
            .collect();
        assert_eq!(
            from_secret,
            [
                ("EMBER_MODEL_URI", "model-store-minilm", "weights", Some(false)),
                ("EMBER_TOKENIZER_URI", "model-store-minilm", "tokenizer", Some(false)),
            ]
        );
        // Plain addresses need no variables at all.
        assert_eq!(pod(&children(&md_plain(), &serving())).containers[0].env, None);
    }

    fn md_plain() -> ModelDeployment {
        md(serde_json::json!({}))
    }
}
