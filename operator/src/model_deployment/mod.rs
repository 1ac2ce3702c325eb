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
//! The model's pods are watched and cached too (only those the operator
//! labelled, and only their status), so a crash, an OOM kill or a failed
//! checksum shows in `Ready` within a kubelet status update instead of at
//! the rollout deadline, without a pass listing pods from the API server.
//!
//! A ModelDeployment's own status writes wake nothing: its watch passes on
//! only changes of generation (the spec) and deletion, so the status a pass
//! writes does not start another pass.
//!
//! Tenants are watched, not polled (the one watch both controllers share,
//! [`crate::tenant_watch`]): a Tenant event that matters to serving
//! (created, suspended, resumed, deleted, set up) is mapped to the
//! ModelDeployments in its namespace, read from this controller's own
//! cache, so suspension takes effect within a watch round trip and a
//! ModelDeployment applied before its Tenant is served as soon as the Tenant
//! is ready for it. The mapping scans the cached ModelDeployments (O(n) per
//! such event); those events are rare, so this is cheaper than an index.
//!
//! Passes read from caches (the Tenant, the Deployment, autoscalers and
//! budgets) and skip children applied before and unchanged since
//! ([`crate::written`]), so a converged ModelDeployment's resync writes
//! nothing.

pub mod apply;
pub mod build;
pub mod pods;
pub mod reconcile;
pub mod status;
pub mod tenancy;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use ember_crds::conditions::{find_condition, types};
use ember_crds::labels;
use ember_crds::model_deployment::ModelDeployment;
use ember_crds::names::namespace_for;
use ember_crds::tenant::Tenant;
use ember_crds::undecodable::understood;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{self, ObjectRef, ReflectHandle, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cache::slim;
use crate::context::Context;
use crate::tenant_watch;
use crate::written::{EventTracker, Written, live_fingerprint};

/// The shared context plus this controller's caches, which spare a pass
/// the live reads it would otherwise make (the Tenant, the Deployment's
/// status, whether an autoscaler or budget exists).
pub struct ModelContext {
    pub shared: Arc<Context>,
    pub tenants: Store<Tenant>,
    pub deployments: Store<Deployment>,
    pub autoscalers: Store<HorizontalPodAutoscaler>,
    pub budgets: Store<PodDisruptionBudget>,
    /// The model pods' status (see [`slim_pod`]).
    pub pods: Store<Pod>,
}

impl std::fmt::Debug for ModelContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelContext").field("shared", &self.shared).finish_non_exhaustive()
    }
}

impl Deref for ModelContext {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.shared
    }
}

/// Runs the ModelDeployment controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    tenant_subscription: ReflectHandle<Tenant>,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    // Only our own children are cached, not every Deployment in the cluster.
    let ours =
        watcher::Config::default().labels(&format!("{}={}", labels::APP_MANAGED_BY, labels::MANAGED_BY_OPERATOR));
    let (cache, cache_writer) = reflector::store();
    let model_deployments = reflector::reflector(
        cache_writer,
        // One ModelDeployment this version cannot decode (a newer release's
        // architecture, say) must not stop every other tenant's models.
        understood(
            watcher(Api::<DeserializeGuard<ModelDeployment>>::all(client.clone()), watcher::Config::default()),
            cache.clone(),
        )
        .modify(slim),
    )
    .default_backoff()
    .applied_objects()
    .predicate_filter(spec_change, Default::default());
    let controller = Controller::for_stream(model_deployments, cache.clone());
    let written = &ctx.written;
    let (deployments, deployment_events) = cached::<Deployment>(&client, ours.clone(), written);
    let (_, service_events) = cached::<Service>(&client, ours.clone(), written);
    let (autoscalers, autoscaler_events) = cached::<HorizontalPodAutoscaler>(&client, ours.clone(), written);
    let (budgets, budget_events) = cached::<PodDisruptionBudget>(&client, ours.clone(), written);
    // Of a Tenant, only what serving depends on wakes its ModelDeployments:
    // not the Tenant controller's every status write.
    let tenants = tenant_subscription.reader();
    let tenant_events = tenant_watch::changes(tenant_subscription, serving_change);
    let (pods, pod_writer) = reflector::store();
    let pod_events = reflector::reflector(pod_writer, watcher(Api::<Pod>::all(client), ours).modify(slim_pod))
        .default_backoff()
        .touched_objects();
    let context = Arc::new(ModelContext { shared: ctx, tenants, deployments, autoscalers, budgets, pods });
    controller
        .owns_stream(deployment_events)
        .owns_stream(service_events)
        .owns_stream(autoscaler_events)
        .owns_stream(budget_events)
        // Pod states tell why a model does not come up (see `pods`).
        .watches_stream(pod_events, |pod| model_deployment_of(&pod))
        .watches_shared_stream(tenant_events, move |tenant| model_deployments_of(&cache, &tenant))
        .with_config(controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, reconcile::error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "model deployment reconcile finished with an error");
            }
        })
        .await;
}

/// A cache of our children of one kind, and the stream of their changes
/// (deletions included, so a deleted child is made again). Every event also
/// goes through an [`EventTracker`], so a child someone else changed is
/// applied again by the pass it wakes.
fn cached<K>(
    client: &kube::Client,
    config: watcher::Config,
    written: &Arc<Written>,
) -> (Store<K>, impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug + Send + Sync + 'static,
{
    let mut tracker = EventTracker::new(written.clone(), live_fingerprint);
    let (store, writer) = reflector::store();
    let events = reflector::reflector(writer, watcher(Api::<K>::all(client.clone()), config).modify(slim))
        .default_backoff()
        .inspect_ok(move |event| {
            tracker.note(event);
        })
        .touched_objects();
    (store, events)
}

/// What of a ModelDeployment starts a pass: its spec (generation) and its
/// deletion; not status writes, which are this controller's own.
fn spec_change(md: &ModelDeployment) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    md.meta().generation.hash(&mut hasher);
    md.meta().deletion_timestamp.is_some().hash(&mut hasher);
    Some(hasher.finish())
}

/// A model pod as the pod cache keeps it: what [`pods::failure_of`] reads
/// (name, labels, deletion, status); the spec is dropped, being most of a
/// pod's size and never read here.
fn slim_pod(pod: &mut Pod) {
    slim(pod);
    pod.spec = None;
}

/// What, of a Tenant, its ModelDeployments depend on: that it exists (its
/// UID), is being deleted, is suspended, and is set up (its namespace and
/// quota in place).
fn serving_change(tenant: &Tenant) -> u64 {
    let mut hasher = DefaultHasher::new();
    tenant.spec.suspended.hash(&mut hasher);
    tenant.meta().deletion_timestamp.is_some().hash(&mut hasher);
    let status = tenant.status.as_ref();
    status.and_then(|s| s.namespace.as_deref()).hash(&mut hasher);
    status.and_then(|s| find_condition(&s.conditions, types::QUOTA_READY)).map(|c| c.status.as_str()).hash(&mut hasher);
    hasher.finish()
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
