//! The Deployment of a model's pods: one restricted ember-runtime container
//! with its probes, resources and scratch space, placed on GPU nodes when
//! the model asks for GPUs, rolled out without ever lowering capacity.

use std::collections::BTreeMap;

use ember_crds::model_deployment::{Backend, ModelDeployment};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, HTTPGetAction, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;

use super::runtime_args::{runtime_args, runtime_env};
use super::{HTTP_PORT, HTTP_PORT_NAME, Scaling, Serving, meta, model_labels, selector_labels};
use crate::config::OperatorConfig;
use crate::error::Result;

/// The one container of a model pod.
pub const CONTAINER_NAME: &str = "ember-runtime";
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
/// The startup probe allows this long for downloads, verification and warm-up
/// (10 s × 180 = 30 minutes) before liveness takes over.
const STARTUP_PERIOD_SECONDS: i32 = 10;
const STARTUP_FAILURE_THRESHOLD: i32 = 180;
/// The Deployment reports `ProgressDeadlineExceeded` (and the model turns
/// `Stalled`) only after a pod had its whole startup budget plus scheduling
/// and pull time; the default 10 minutes would call a long download stuck.
pub const PROGRESS_DEADLINE_SECONDS: i32 = STARTUP_PERIOD_SECONDS * STARTUP_FAILURE_THRESHOLD + 300;

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

pub(super) fn deployment(
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
                metadata: Some(ObjectMeta { labels: Some(model_labels(md, &serving.tenant)), ..Default::default() }),
                spec: Some(pod_spec(md, serving, config)?),
            },
            ..Default::default()
        },
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::fixtures::{children, flag, md, pod, serving};
    use super::*;

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
    fn no_workload_service_account_means_the_default_one() {
        let without = Serving { service_account: None, ..serving() };
        assert_eq!(pod(&children(&md(serde_json::json!({})), &without)).service_account_name, None);
    }
}
