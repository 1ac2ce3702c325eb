//! How a model's pods are reached and scaled: the Service in front of them,
//! the HorizontalPodAutoscaler when the spec gives a replica range, and the
//! PodDisruptionBudget when a second replica can carry the traffic.

use ember_crds::model_deployment::ModelDeployment;
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget,
    ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{HTTP_PORT, HTTP_PORT_NAME, Serving, child_name, meta, selector_labels};

/// Average CPU utilisation the HorizontalPodAutoscaler aims for.
pub const CPU_TARGET_UTILIZATION: i32 = 70;

pub(super) fn service(md: &ModelDeployment, serving: &Serving, owner: &OwnerReference) -> Service {
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

pub(super) fn autoscaler(
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

pub(super) fn disruption_budget(
    md: &ModelDeployment,
    serving: &Serving,
    owner: &OwnerReference,
) -> PodDisruptionBudget {
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
    use super::super::fixtures::{children, md, serving};
    use super::*;

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
}
