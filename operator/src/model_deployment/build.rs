//! Desired Kubernetes objects of a ModelDeployment, computed from its spec,
//! the tenant it serves in and the operator's configuration.
//!
//! Pure: no client, no clock; unit-tested below. `apply` sends the result
//! with server-side apply. Children carry our own labels (never copies of
//! the ModelDeployment's) and a controller owner reference to it, so
//! garbage collection removes them with it. All four children share the
//! ModelDeployment's name, which the CRD limits to 50 characters.

use std::collections::BTreeMap;

use ember_crds::labels;
use ember_crds::model_deployment::{Architecture, ArtifactRef, Backend, ModelDeployment, Task};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget,
    ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretKeySelector,
    SecurityContext, Service, ServicePort, ServiceSpec, Toleration, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::config::OperatorConfig;
use crate::error::{Error, Result};

/// Port ember-runtime serves its API, probes and metrics on (`--port`).
pub const HTTP_PORT: i32 = 8080;
/// Name of that port on the container and the Service.
pub const HTTP_PORT_NAME: &str = "http";
/// The one container of a model pod.
pub const CONTAINER_NAME: &str = "ember-runtime";
/// `app.kubernetes.io/name` and `component` of model pods and their objects.
pub const APP_NAME_RUNTIME: &str = "ember-runtime";
pub const COMPONENT_MODEL_SERVER: &str = "model-server";
/// The root filesystem is read-only; `/tmp` is an emptyDir that holds the
/// runtime's download cache (and anything else it writes).
pub const SCRATCH_VOLUME: &str = "scratch";
pub const SCRATCH_MOUNT: &str = "/tmp";
pub const MODEL_CACHE_DIR: &str = "/tmp/ember-models";
/// Unprivileged user of the runtime image (distroless `nonroot`).
pub const RUNTIME_USER: i64 = 65532;
/// Extended resource, node label and taint of GPU nodes (NVIDIA device plugin / GPU operator).
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
pub const GPU_NODE_LABEL: &str = "nvidia.com/gpu.present";
pub const GPU_TAINT_KEY: &str = "nvidia.com/gpu";
/// Average CPU utilisation the HorizontalPodAutoscaler aims for.
pub const CPU_TARGET_UTILIZATION: i32 = 70;
/// The startup probe allows this long for downloads, verification and warm-up
/// (10 s × 180 = 30 minutes) before liveness takes over.
const STARTUP_PERIOD_SECONDS: i32 = 10;
const STARTUP_FAILURE_THRESHOLD: i32 = 180;
/// The Deployment reports `ProgressDeadlineExceeded` (and the model turns
/// `Stalled`) only after a pod had its whole startup budget plus scheduling
/// and pull time; the default 10 minutes would call a long download stuck.
pub const PROGRESS_DEADLINE_SECONDS: i32 = STARTUP_PERIOD_SECONDS * STARTUP_FAILURE_THRESHOLD + 300;

/// What the ModelDeployment's tenant contributes to its children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serving {
    /// Name of the Tenant whose namespace the ModelDeployment lives in.
    pub tenant: String,
    /// `Tenant.spec.suspended`: everything scales to zero.
    pub suspended: bool,
    /// The tenant's workload ServiceAccount, when it exists.
    pub service_account: Option<String>,
}

/// How many pods the Deployment runs and who decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scaling {
    /// `replicas.min == replicas.max`: the Deployment says how many.
    Fixed(i32),
    /// `replicas.min < replicas.max`: a HorizontalPodAutoscaler decides, and
    /// the Deployment leaves `replicas` alone so server-side apply never
    /// fights the autoscaler over it.
    Autoscaled { min: i32, max: i32 },
    /// The tenant is suspended: zero replicas, no autoscaler.
    Suspended,
}

impl Scaling {
    pub fn of(md: &ModelDeployment, serving: &Serving) -> Self {
        let bounds = &md.spec.replicas;
        if serving.suspended {
            Scaling::Suspended
        } else if bounds.min < bounds.max {
            Scaling::Autoscaled { min: bounds.min, max: bounds.max }
        } else {
            Scaling::Fixed(bounds.min)
        }
    }
}

/// Everything the operator keeps in sync for one ModelDeployment. `None`
/// means "must not exist": apply deletes a stale one.
#[derive(Debug, Clone)]
pub struct ModelChildren {
    pub deployment: Deployment,
    pub service: Service,
    pub autoscaler: Option<HorizontalPodAutoscaler>,
    pub disruption_budget: Option<PodDisruptionBudget>,
}

/// Name of every child of `md`.
pub fn child_name(md: &ModelDeployment) -> String {
    md.name_any()
}

/// In-cluster URL of the model's Service.
pub fn endpoint(md: &ModelDeployment) -> String {
    format!("http://{}.{}.svc:{HTTP_PORT}", child_name(md), md.namespace().unwrap_or_default())
}

/// Labels that select the model's pods. Part of the Deployment's immutable
/// selector, so they must never change for an existing ModelDeployment.
pub fn selector_labels(md: &ModelDeployment) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::APP_NAME.to_owned(), APP_NAME_RUNTIME.to_owned()),
        (labels::MODEL_DEPLOYMENT.to_owned(), md.name_any()),
    ])
}

/// Labels on every child of `md` and on its pods.
pub fn child_labels(md: &ModelDeployment, tenant: &str) -> BTreeMap<String, String> {
    let mut result = selector_labels(md);
    result.extend([
        (labels::APP_INSTANCE.to_owned(), md.name_any()),
        (labels::APP_COMPONENT.to_owned(), COMPONENT_MODEL_SERVER.to_owned()),
        (labels::APP_PART_OF.to_owned(), labels::PART_OF_EMBER.to_owned()),
        (labels::APP_MANAGED_BY.to_owned(), labels::MANAGED_BY_OPERATOR.to_owned()),
        (labels::TENANT.to_owned(), tenant.to_owned()),
    ]);
    result
}

fn meta(md: &ModelDeployment, serving: &Serving, owner: &OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(child_name(md)),
        namespace: md.namespace(),
        labels: Some(child_labels(md, &serving.tenant)),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    }
}

/// Computes all children of `md`.
pub fn desired_children(md: &ModelDeployment, serving: &Serving, config: &OperatorConfig) -> Result<ModelChildren> {
    let owner = md.controller_owner_ref(&()).ok_or(Error::MissingField("metadata.uid"))?;
    let scaling = Scaling::of(md, serving);
    Ok(ModelChildren {
        deployment: deployment(md, serving, config, scaling, &owner)?,
        service: service(md, serving, &owner),
        autoscaler: match scaling {
            Scaling::Autoscaled { min, max } => Some(autoscaler(md, serving, min, max, &owner)),
            Scaling::Fixed(_) | Scaling::Suspended => None,
        },
        // A budget only helps when a second replica can carry the traffic.
        disruption_budget: (md.spec.replicas.max >= 2).then(|| disruption_budget(md, serving, &owner)),
    })
}

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

/// Requests equal limits: the pod is Guaranteed QoS and the quota counts
/// exactly what it may use.
fn resources(md: &ModelDeployment) -> ResourceRequirements {
    let r = &md.spec.resources;
    let mut amounts = BTreeMap::from([("cpu".to_owned(), r.cpu.clone()), ("memory".to_owned(), r.memory.clone())]);
    if r.gpus > 0 {
        amounts.insert(GPU_RESOURCE.to_owned(), Quantity(r.gpus.to_string()));
    }
    ResourceRequirements { requests: Some(amounts.clone()), limits: Some(amounts), ..Default::default() }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(HTTP_PORT_NAME.into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }
}

fn container(md: &ModelDeployment, config: &OperatorConfig) -> Result<Container> {
    let image = match md.spec.backend {
        Backend::Cpu => &config.runtime_image,
        Backend::Wgpu => &config.runtime_wgpu_image,
    };
    Ok(Container {
        name: CONTAINER_NAME.into(),
        image: Some(image.clone()),
        args: Some(runtime_args(md)?),
        env: Some(runtime_env(md)).filter(|env| !env.is_empty()),
        ports: Some(vec![ContainerPort {
            name: Some(HTTP_PORT_NAME.into()),
            container_port: HTTP_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        resources: Some(resources(md)),
        // /healthz answers only once the files are fetched and verified, so the
        // startup probe covers the download; then liveness and readiness apply.
        startup_probe: Some(http_probe("/healthz", STARTUP_PERIOD_SECONDS, STARTUP_FAILURE_THRESHOLD)),
        liveness_probe: Some(http_probe("/healthz", 10, 3)),
        readiness_probe: Some(http_probe("/readyz", 5, 3)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
            seccomp_profile: Some(runtime_default_seccomp()),
            ..Default::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: SCRATCH_VOLUME.into(),
            mount_path: SCRATCH_MOUNT.into(),
            ..Default::default()
        }]),
        // A bad digest or file ends the process with a message on stderr; show it in the pod status.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    })
}

fn pod_spec(md: &ModelDeployment, serving: &Serving, config: &OperatorConfig) -> Result<PodSpec> {
    let gpus = md.spec.resources.gpus > 0;
    Ok(PodSpec {
        containers: vec![container(md, config)?],
        service_account_name: serving.service_account.clone(),
        // Model pods never talk to the Kubernetes API.
        automount_service_account_token: Some(false),
        // One env var per Service in the namespace is noise and slows start-up in big tenants.
        enable_service_links: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUNTIME_USER),
            run_as_group: Some(RUNTIME_USER),
            // The emptyDir must be writable by the unprivileged user.
            fs_group: Some(RUNTIME_USER),
            seccomp_profile: Some(runtime_default_seccomp()),
            ..Default::default()
        }),
        volumes: Some(vec![Volume {
            name: SCRATCH_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        }]),
        node_selector: gpus.then(|| BTreeMap::from([(GPU_NODE_LABEL.to_owned(), "true".to_owned())])),
        tolerations: gpus.then(|| {
            vec![Toleration {
                key: Some(GPU_TAINT_KEY.into()),
                operator: Some("Exists".into()),
                effect: Some("NoSchedule".into()),
                ..Default::default()
            }]
        }),
        ..Default::default()
    })
}

fn deployment(
    md: &ModelDeployment,
    serving: &Serving,
    config: &OperatorConfig,
    scaling: Scaling,
    owner: &OwnerReference,
) -> Result<Deployment> {
    let replicas = match scaling {
        Scaling::Fixed(n) => Some(n),
        Scaling::Suspended => Some(0),
        Scaling::Autoscaled { .. } => None,
    };
    Ok(Deployment {
        metadata: meta(md, serving, owner),
        spec: DeploymentSpec {
            replicas,
            progress_deadline_seconds: Some(PROGRESS_DEADLINE_SECONDS),
            selector: LabelSelector { match_labels: Some(selector_labels(md)), ..Default::default() },
            // A new pod must be ready (model loaded) before an old one goes:
            // a rollout never lowers serving capacity.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(child_labels(md, &serving.tenant)), ..Default::default() }),
                spec: Some(pod_spec(md, serving, config)?),
            },
            ..Default::default()
        },
        ..Default::default()
    })
}

fn service(md: &ModelDeployment, serving: &Serving, owner: &OwnerReference) -> Service {
    Service {
        metadata: meta(md, serving, owner),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(md)),
            ports: Some(vec![ServicePort {
                name: Some(HTTP_PORT_NAME.into()),
                port: HTTP_PORT,
                target_port: Some(IntOrString::String(HTTP_PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn autoscaler(
    md: &ModelDeployment,
    serving: &Serving,
    min: i32,
    max: i32,
    owner: &OwnerReference,
) -> HorizontalPodAutoscaler {
    HorizontalPodAutoscaler {
        metadata: meta(md, serving, owner),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: child_name(md),
            },
            min_replicas: Some(min),
            max_replicas: max,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(CPU_TARGET_UTILIZATION),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            }]),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn disruption_budget(md: &ModelDeployment, serving: &Serving, owner: &OwnerReference) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(md, serving, owner),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector { match_labels: Some(selector_labels(md)), ..Default::default() }),
            // A pod that never turns ready (bad model file) must not block node drains.
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SHA_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const SHA_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const SHA_C: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

    fn md(extra: serde_json::Value) -> ModelDeployment {
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

    fn serving() -> Serving {
        Serving { tenant: "acme".into(), suspended: false, service_account: Some("ember-workload".into()) }
    }

    fn children(md: &ModelDeployment, serving: &Serving) -> ModelChildren {
        desired_children(md, serving, &OperatorConfig::default()).unwrap()
    }

    fn pod(children: &ModelChildren) -> PodSpec {
        children.deployment.spec.clone().template.spec.unwrap()
    }

    fn flag(args: &[String], name: &str) -> Option<String> {
        args.iter().position(|a| a == &format!("--{name}")).map(|i| args[i + 1].clone())
    }

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

    #[test]
    fn pods_meet_the_restricted_pod_security_standard() {
        let pod = pod(&children(&md(serde_json::json!({})), &serving()));
        let security = pod.security_context.unwrap();
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(security.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let container = &pod.containers[0];
        let c = container.security_context.clone().unwrap();
        assert_eq!(c.allow_privilege_escalation, Some(false));
        assert_eq!(c.read_only_root_filesystem, Some(true));
        assert_eq!(c.capabilities.unwrap().drop.unwrap(), vec!["ALL"]);
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.service_account_name.as_deref(), Some("ember-workload"));
        // The cache directory is on a writable emptyDir.
        let mount = &container.volume_mounts.as_ref().unwrap()[0];
        assert!(MODEL_CACHE_DIR.starts_with(&mount.mount_path));
        let volume = pod.volumes.unwrap().into_iter().find(|v| v.name == mount.name).unwrap();
        assert!(volume.empty_dir.is_some());
    }

    #[test]
    fn probes_and_resources() {
        let pod = pod(&children(&md(serde_json::json!({})), &serving()));
        let c = &pod.containers[0];
        let path = |p: &Option<Probe>| p.clone().unwrap().http_get.unwrap().path.unwrap();
        assert_eq!(path(&c.readiness_probe), "/readyz");
        assert_eq!(path(&c.liveness_probe), "/healthz");
        let startup = c.startup_probe.clone().unwrap();
        let budget = startup.period_seconds.unwrap() * startup.failure_threshold.unwrap();
        assert!(budget >= 600, "startup probe allows only {budget}s for downloads");
        let deadline = children(&md(serde_json::json!({})), &serving()).deployment.spec.progress_deadline_seconds;
        assert!(deadline > Some(budget), "a download within the startup budget must not stall the rollout");
        let resources = c.resources.clone().unwrap();
        assert_eq!(resources.requests, resources.limits);
        let limits = resources.limits.unwrap();
        assert_eq!((limits["cpu"].0.as_str(), limits["memory"].0.as_str()), ("2", "2Gi"));
        assert!(!limits.contains_key(GPU_RESOURCE));
        assert_eq!(c.image.as_deref(), Some(OperatorConfig::default().runtime_image.as_str()));
        assert!(pod.node_selector.is_none() && pod.tolerations.is_none());
    }

    #[test]
    fn gpu_models_request_gpus_and_go_to_gpu_nodes() {
        let gpu = md(serde_json::json!({"backend": "wgpu", "resources": {"gpus": 2}}));
        let pod = pod(&children(&gpu, &serving()));
        let limits = pod.containers[0].resources.clone().unwrap().limits.unwrap();
        assert_eq!(limits[GPU_RESOURCE].0, "2");
        assert_eq!(pod.node_selector.unwrap()[GPU_NODE_LABEL], "true");
        let toleration = &pod.tolerations.unwrap()[0];
        assert_eq!(toleration.key.as_deref(), Some(GPU_TAINT_KEY));
        assert_eq!(toleration.effect.as_deref(), Some("NoSchedule"));
        assert_eq!(pod.containers[0].image.as_deref(), Some(OperatorConfig::default().runtime_wgpu_image.as_str()));
        assert_eq!(flag(pod.containers[0].args.as_ref().unwrap(), "backend").as_deref(), Some("wgpu"));
    }

    #[test]
    fn fixed_replicas_set_the_deployment_and_have_no_autoscaler() {
        let fixed = md(serde_json::json!({"replicas": {"min": 3, "max": 3}}));
        let c = children(&fixed, &serving());
        assert_eq!(c.deployment.spec.replicas, Some(3));
        assert!(c.autoscaler.is_none());
        assert!(c.disruption_budget.is_some());
    }

    #[test]
    fn replica_range_hands_replicas_to_the_autoscaler() {
        let ranged = md(serde_json::json!({"replicas": {"min": 1, "max": 4}}));
        let c = children(&ranged, &serving());
        assert_eq!(c.deployment.spec.replicas, None, "the autoscaler owns replicas");
        let hpa = c.autoscaler.unwrap().spec;
        assert_eq!((hpa.min_replicas, hpa.max_replicas), (Some(1), 4));
        assert_eq!(hpa.scale_target_ref.kind, "Deployment");
        assert_eq!(hpa.scale_target_ref.name, "minilm");
        let metric = &hpa.metrics.unwrap()[0];
        assert_eq!(metric.resource.as_ref().unwrap().name, "cpu");
        assert_eq!(metric.resource.as_ref().unwrap().target.average_utilization, Some(CPU_TARGET_UTILIZATION));
        let pdb = c.disruption_budget.unwrap().spec.unwrap();
        assert_eq!(pdb.max_unavailable, Some(IntOrString::Int(1)));
    }

    #[test]
    fn single_replica_has_no_disruption_budget() {
        let c = children(&md(serde_json::json!({"replicas": {"min": 1, "max": 1}})), &serving());
        assert!(c.disruption_budget.is_none(), "a budget would block every drain");
        assert_eq!(c.deployment.spec.replicas, Some(1));
    }

    #[test]
    fn suspended_tenants_scale_to_zero_without_autoscaler() {
        let suspended = Serving { suspended: true, ..serving() };
        let c = children(&md(serde_json::json!({"replicas": {"min": 2, "max": 5}})), &suspended);
        assert_eq!(c.deployment.spec.replicas, Some(0));
        assert!(c.autoscaler.is_none());
    }

    #[test]
    fn labels_selectors_and_owner() {
        let md = md(serde_json::json!({}));
        let c = children(&md, &serving());
        let labels = c.deployment.metadata.labels.clone().unwrap();
        assert_eq!(labels["app.kubernetes.io/name"], "ember-runtime");
        assert_eq!(labels["app.kubernetes.io/instance"], "minilm");
        assert_eq!(labels["app.kubernetes.io/component"], "model-server");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "ember-operator");
        assert_eq!(labels["ember.dev/tenant"], "acme");
        assert_eq!(labels["ember.dev/model-deployment"], "minilm");
        assert!(!labels.contains_key("argocd.argoproj.io/instance"), "parent labels are never copied");
        let spec = c.deployment.spec.clone();
        let selector = spec.selector.match_labels.unwrap();
        let pod_labels = spec.template.metadata.unwrap().labels.unwrap();
        assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
        assert_eq!(c.service.spec.clone().unwrap().selector.unwrap(), selector);
        let port = &c.service.spec.unwrap().ports.unwrap()[0];
        assert_eq!((port.name.as_deref(), port.port), (Some("http"), 8080));
        let owner = &c.deployment.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("ModelDeployment", "md-uid", Some(true))
        );
        assert_eq!(endpoint(&md), "http://minilm.tenant-acme.svc:8080");
    }

    #[test]
    fn no_workload_service_account_means_the_default_one() {
        let without = Serving { service_account: None, ..serving() };
        assert_eq!(pod(&children(&md(serde_json::json!({})), &without)).service_account_name, None);
    }
}
