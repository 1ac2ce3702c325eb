//! Desired Kubernetes objects of a ModelDeployment, computed from its spec,
//! the tenant it serves in and the operator's configuration.
//!
//! Pure: no client, no clock; unit-tested beside each part. `apply` sends
//! the result with server-side apply. Children carry our own labels (never
//! copies of the ModelDeployment's) and a controller owner reference to it,
//! so garbage collection removes them with it. All four children share the
//! ModelDeployment's name, which the CRD limits to 50 characters.
//!
//! By concern: [`pod`] (the Deployment and its pods), [`runtime_args`] (the
//! ember-runtime command line and the variables filled from Secrets),
//! [`scaling`] (how the pods are reached and scaled: Service, autoscaler,
//! disruption budget). This module holds what they share: names, labels,
//! metadata, and [`desired_children`], which puts them together.

pub mod pod;
pub mod runtime_args;
pub mod scaling;

#[cfg(test)]
mod fixtures;

use std::collections::BTreeMap;

use ember_crds::labels;
use ember_crds::model_deployment::ModelDeployment;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::config::OperatorConfig;
use crate::error::{Error, Result};

/// Port ember-runtime serves its API, probes and metrics on (`--port`).
pub const HTTP_PORT: i32 = 8080;
/// Name of that port on the container and the Service.
pub const HTTP_PORT_NAME: &str = "http";
/// `app.kubernetes.io/name` and `component` of model pods and their objects.
pub const APP_NAME_RUNTIME: &str = "ember-runtime";
pub const COMPONENT_MODEL_SERVER: &str = "model-server";

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

/// Labels on every child of `md` and on its pods: those of every child of
/// the tenant ([`labels::child_labels`]) plus the pods' selector, the
/// instance and the component.
pub fn model_labels(md: &ModelDeployment, tenant: &str) -> BTreeMap<String, String> {
    let mut result = labels::child_labels(tenant);
    result.extend(selector_labels(md));
    result.extend([
        (labels::APP_INSTANCE.to_owned(), md.name_any()),
        (labels::APP_COMPONENT.to_owned(), COMPONENT_MODEL_SERVER.to_owned()),
    ]);
    result
}

fn meta(md: &ModelDeployment, serving: &Serving, owner: &OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(child_name(md)),
        namespace: md.namespace(),
        labels: Some(model_labels(md, &serving.tenant)),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    }
}

/// Computes all children of `md`.
pub fn desired_children(md: &ModelDeployment, serving: &Serving, config: &OperatorConfig) -> Result<ModelChildren> {
    let owner = md.controller_owner_ref(&()).ok_or(Error::MissingField("metadata.uid"))?;
    let scaling = Scaling::of(md, serving);
    Ok(ModelChildren {
        deployment: pod::deployment(md, serving, config, scaling, &owner)?,
        service: scaling::service(md, serving, &owner),
        autoscaler: match scaling {
            Scaling::Autoscaled { min, max } => Some(scaling::autoscaler(md, serving, min, max, &owner)),
            Scaling::Fixed(_) | Scaling::Suspended => None,
        },
        // A budget only helps when a second replica can carry the traffic.
        disruption_budget: (md.spec.replicas.max >= 2).then(|| scaling::disruption_budget(md, serving, &owner)),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::fixtures::{children, md, serving};
    use super::*;

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
}
