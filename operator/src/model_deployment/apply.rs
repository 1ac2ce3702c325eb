//! Server-side apply of a ModelDeployment's children (the same field manager
//! and `force` as the Tenant controller, so hand edits are reverted), and
//! removal of an autoscaler or disruption budget the spec no longer wants.

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::build::ModelChildren;
use crate::apply::apply_namespaced;
use crate::error::Result;

/// Applies every child; returns the Deployment as the API server has it,
/// whose status the ModelDeployment's status is computed from.
pub async fn apply_children(client: &Client, children: &ModelChildren) -> Result<Deployment> {
    let namespace = children.deployment.namespace().unwrap_or_default();
    let name = children.deployment.name_any();
    apply_namespaced(client, &children.service).await?;
    let deployment = apply_namespaced(client, &children.deployment).await?;
    match &children.autoscaler {
        Some(autoscaler) => drop(apply_namespaced(client, autoscaler).await?),
        None => delete_if_present::<HorizontalPodAutoscaler>(client, &namespace, &name).await?,
    }
    match &children.disruption_budget {
        Some(budget) => drop(apply_namespaced(client, budget).await?),
        None => delete_if_present::<PodDisruptionBudget>(client, &namespace, &name).await?,
    }
    Ok(deployment)
}

/// Deletes `name` if it exists. Tenant users cannot create autoscalers or
/// budgets (their roles only read them), so an object of this name in a
/// tenant namespace is one this controller made.
async fn delete_if_present<K>(client: &Client, namespace: &str, name: &str) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}
