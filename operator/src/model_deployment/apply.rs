//! Server-side apply of a ModelDeployment's children (the same field manager
//! and `force` as the Tenant controller, so hand edits are reverted), and
//! removal of an autoscaler or disruption budget the spec no longer wants.
//! Children applied before and unchanged since are not sent again, and a
//! child the controller's cache does not hold is not deleted.

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DeleteParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::ModelContext;
use super::build::ModelChildren;
use crate::apply::{apply_namespaced_remembered, delete_if_present};
use crate::error::Result;
use crate::written::ChildKey;

/// Applies every child; returns the Deployment as the API server has it
/// (from the cache when nothing was sent), whose status the
/// ModelDeployment's status is computed from.
pub async fn apply_children(ctx: &ModelContext, children: &ModelChildren) -> Result<Deployment> {
    let (client, written) = (&ctx.client, ctx.written.as_ref());
    let namespace = children.deployment.namespace().unwrap_or_default();
    let name = children.deployment.name_any();
    let (_, applied, ..) = tokio::try_join!(
        apply_namespaced_remembered(client, written, &children.service),
        apply_namespaced_remembered(client, written, &children.deployment),
        async {
            match &children.autoscaler {
                Some(autoscaler) => apply_namespaced_remembered(client, written, autoscaler).await.map(drop),
                None => delete_if_cached(client, &ctx.autoscalers, &namespace, &name).await,
            }
        },
        async {
            match &children.disruption_budget {
                Some(budget) => apply_namespaced_remembered(client, written, budget).await.map(drop),
                None => delete_if_cached(client, &ctx.budgets, &namespace, &name).await,
            }
        },
    )?;
    let cached = || ctx.deployments.get(&ObjectRef::from_obj(&children.deployment)).map(|d| d.as_ref().clone());
    match applied.or_else(cached) {
        Some(deployment) => Ok(deployment),
        // Applied before, but not in the cache yet (or any more): read it.
        None => {
            written.forget(&ChildKey::of(&children.deployment));
            let api: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
            Ok(api.get(&name).await?)
        }
    }
}

/// Deletes `name` if the cache holds it. Tenant users cannot create
/// autoscalers or budgets (their roles only read them), so an object of
/// this name in a tenant namespace is one this controller made; the cache
/// holds exactly those (labelled by the operator).
async fn delete_if_cached<K>(client: &Client, cache: &Store<K>, namespace: &str, name: &str) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    if cache.get(&ObjectRef::new(name).within(namespace)).is_none() {
        return Ok(());
    }
    delete_if_present(&Api::<K>::namespaced(client.clone(), namespace), name, &DeleteParams::background()).await?;
    Ok(())
}
