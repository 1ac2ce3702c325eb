//! The Tenant controller: watches Tenants and everything they own, and runs
//! [`reconcile::reconcile`] for each change.

pub mod apply;
pub mod build;
pub mod database;
pub mod reconcile;
pub mod status;

use std::sync::Arc;

use ember_crds::labels;
use ember_crds::names::DATABASE_SECRET_NAME;
use ember_crds::tenant::Tenant;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, Secret, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Resource};

use crate::context::Context;

/// Runs the Tenant controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    // Only our own children are cached: a large cluster's RoleBindings or
    // Secrets would otherwise fill the operator's memory.
    let ours =
        watcher::Config::default().labels(&format!("{}={}", labels::APP_MANAGED_BY, labels::MANAGED_BY_OPERATOR));
    // Namespaced children are mapped to their Tenant by hand: `owns` would
    // key the request with the child's namespace, which for a cluster-scoped
    // owner is a different scheduling key than the Tenant's own, and the
    // controller would then run two reconciles of one Tenant at once (seen:
    // a converge re-creating a schema the cleanup had just dropped).
    Controller::new(Api::<Tenant>::all(client.clone()), watcher::Config::default())
        .owns(Api::<Namespace>::all(client.clone()), ours.clone())
        .watches(Api::<ResourceQuota>::all(client.clone()), ours.clone(), owning_tenant)
        .watches(Api::<LimitRange>::all(client.clone()), ours.clone(), owning_tenant)
        .watches(Api::<NetworkPolicy>::all(client.clone()), ours.clone(), owning_tenant)
        .watches(Api::<ServiceAccount>::all(client.clone()), ours.clone(), owning_tenant)
        .watches(Api::<RoleBinding>::all(client.clone()), ours.clone(), owning_tenant)
        // By name too: the operator may read no other Secret (its RBAC names
        // this one), so a cluster-wide watch must ask for exactly it.
        .watches(
            Api::<Secret>::all(client.clone()),
            ours.clone().fields(&format!("metadata.name={DATABASE_SECRET_NAME}")),
            owning_tenant,
        )
        .owns(Api::<ClusterRole>::all(client.clone()), ours.clone())
        .owns(Api::<ClusterRoleBinding>::all(client.clone()), ours)
        .with_config(controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "tenant reconcile finished with an error");
            }
        })
        .await;
}

/// The Tenant that controls a namespaced child, as a cluster-scoped reference.
fn owning_tenant<K: Resource>(child: K) -> Option<ObjectRef<Tenant>> {
    child
        .meta()
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == "Tenant" && o.api_version == Tenant::api_version(&()))
        .map(|o| ObjectRef::new(&o.name))
}
