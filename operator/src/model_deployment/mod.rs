//! The ModelDeployment controller: watches ModelDeployments, the children
//! it makes for them (Deployment, Service, HorizontalPodAutoscaler,
//! PodDisruptionBudget) and Tenants, and runs [`reconcile::reconcile`].
//!
//! Steps, one module each: [`tenancy`] (is this a tenant namespace, is the
//! tenant suspended) → [`build`] (pure: desired children) → [`apply`]
//! (server-side apply, stale autoscaler/budget removed) → [`status`] (pure:
//! conditions from the Deployment's rollout and, while it is incomplete,
//! from the pods' container states through [`pods`]).
//!
//! The model's pods are watched too (only those the operator labelled), so
//! a crash, an OOM kill or a failed checksum shows in `Ready` within a
//! kubelet status update instead of at the rollout deadline.
//!
//! Tenants are watched, not polled: a Tenant event (created, suspended,
//! resumed, deleted) is mapped to the ModelDeployments in its namespace,
//! read from this controller's own cache, so suspension takes effect within
//! a watch round trip and a ModelDeployment applied before its Tenant is
//! served as soon as the Tenant appears. The mapping scans the cached
//! ModelDeployments (O(n) per Tenant event); Tenant events are rare (spec
//! changes and status transitions only), so this is cheaper than an index.

pub mod apply;
pub mod build;
pub mod pods;
pub mod reconcile;
pub mod status;
pub mod tenancy;

use std::sync::Arc;

use ember_crds::labels;
use ember_crds::model_deployment::ModelDeployment;
use ember_crds::names::namespace_for;
use ember_crds::tenant::Tenant;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use crate::context::Context;

/// Runs the ModelDeployment controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    // Only our own children are cached, not every Deployment in the cluster.
    let ours =
        watcher::Config::default().labels(&format!("{}={}", labels::APP_MANAGED_BY, labels::MANAGED_BY_OPERATOR));
    let controller = Controller::new(Api::<ModelDeployment>::all(client.clone()), watcher::Config::default());
    let cache = controller.store();
    controller
        .owns(Api::<Deployment>::all(client.clone()), ours.clone())
        .owns(Api::<Service>::all(client.clone()), ours.clone())
        .owns(Api::<HorizontalPodAutoscaler>::all(client.clone()), ours.clone())
        .owns(Api::<PodDisruptionBudget>::all(client.clone()), ours.clone())
        // Pod states tell why a model does not come up (see `pods`).
        .watches(Api::<Pod>::all(client.clone()), ours, |pod| model_deployment_of(&pod))
        .watches(Api::<Tenant>::all(client), watcher::Config::default(), move |tenant| {
            model_deployments_of(&cache, &tenant)
        })
        .with_config(controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "model deployment reconcile finished with an error");
            }
        })
        .await;
}

/// The ModelDeployment a model pod belongs to, from its labels.
fn model_deployment_of(pod: &Pod) -> Option<ObjectRef<ModelDeployment>> {
    let name = pod.labels().get(labels::MODEL_DEPLOYMENT)?;
    Some(ObjectRef::new(name).within(&pod.namespace()?))
}

/// The cached ModelDeployments in `tenant`'s namespace.
fn model_deployments_of(cache: &Store<ModelDeployment>, tenant: &Tenant) -> Vec<ObjectRef<ModelDeployment>> {
    let namespace = namespace_for(&tenant.name_any());
    cache
        .state()
        .iter()
        .filter(|md| md.namespace().as_deref() == Some(namespace.as_str()))
        .map(|md| ObjectRef::from_obj(md.as_ref()))
        .collect()
}
