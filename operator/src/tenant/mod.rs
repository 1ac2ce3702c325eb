//! The Tenant controller: watches Tenants and everything they own, and runs
//! [`reconcile::reconcile`] for each change.

pub mod apply;
pub mod build;
pub mod database;
pub mod legacy;
pub mod quota_gate;
pub mod reconcile;
pub mod status;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use ember_crds::labels;
use ember_crds::names::DATABASE_SECRET_NAME;
use ember_crds::tenant::Tenant;
use futures::{Stream, StreamExt, TryStreamExt, future};
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, Secret, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{ObjectRef, ReflectHandle};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::Context;
use crate::present::{PresenceTracker, Present};
use crate::tenant_watch;
use crate::written::{EventTracker, Written, live_fingerprint};
use quota_gate::QuotaGate;

/// Runs the Tenant controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    tenants: ReflectHandle<Tenant>,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    // Only our own children are cached: a large cluster's RoleBindings or
    // Secrets would otherwise fill the operator's memory.
    let ours =
        watcher::Config::default().labels(&format!("{}={}", labels::APP_MANAGED_BY, labels::MANAGED_BY_OPERATOR));
    // Children wake their Tenant only when someone else changed them: the
    // echoes of the operator's own applies, and status updates (the
    // quota's usage), are filtered out by `changed_by_others`.
    // Namespaced children are mapped to their Tenant by hand: `owns` would
    // key the request with the child's namespace, which for a cluster-scoped
    // owner is a different scheduling key than the Tenant's own, and the
    // controller would then run two reconciles of one Tenant at once (seen:
    // a converge re-creating a schema the cleanup had just dropped).
    let written = ctx.written.clone();
    let w = &written;
    let store = tenants.reader();
    Controller::for_shared_stream(tenant_watch::changes(tenants, tenant_change), store)
        .watches_stream(changed_by_others::<Namespace>(&client, ours.clone(), w), owning_tenant)
        .watches_stream(quota_changes(&client, ours.clone(), w, &ctx.quotas), owning_tenant)
        .watches_stream(changed_by_others(&client, ours.clone(), w), owning_tenant::<LimitRange>)
        .watches_stream(policy_changes(&client, ours.clone(), w, &ctx.legacy_policies), owning_tenant)
        .watches_stream(changed_by_others(&client, ours.clone(), w), owning_tenant::<ServiceAccount>)
        .watches_stream(tracked_changes(&client, ours.clone(), w, &ctx.present), owning_tenant::<RoleBinding>)
        // By name too: the operator may read no other Secret (its RBAC names
        // this one), so a cluster-wide watch must ask for exactly it.
        .watches_stream(
            changed_by_others(&client, ours.clone().fields(&format!("metadata.name={DATABASE_SECRET_NAME}")), w),
            owning_tenant::<Secret>,
        )
        .watches_stream(tracked_changes::<ClusterRole>(&client, ours.clone(), w, &ctx.present), owning_tenant)
        .watches_stream(tracked_changes::<ClusterRoleBinding>(&client, ours, w, &ctx.present), owning_tenant)
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

/// What, of a Tenant, calls for a pass: its spec (the generation, which
/// deletion bumps too) and the platform admin's adoption annotation. Status
/// writes and the finalizer — the operator's own — do not.
fn tenant_change(tenant: &Tenant) -> u64 {
    let mut hasher = DefaultHasher::new();
    tenant.meta().generation.hash(&mut hasher);
    tenant.meta().deletion_timestamp.is_some().hash(&mut hasher);
    tenant.annotations().get(labels::ADOPT_DATABASE).hash(&mut hasher);
    hasher.finish()
}

/// Watch events of one child kind that someone other than the operator
/// caused ([`EventTracker`]); deletions always.
fn changed_by_others<K>(
    client: &kube::Client,
    config: watcher::Config,
    written: &Arc<Written>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug + Send + 'static,
{
    changed_by_others_or(client, config, written, |_| false)
}

/// [`changed_by_others`], plus the events `also_wakes` picks out. Both see
/// every event, so each keeps its own memory in step.
fn changed_by_others_or<K>(
    client: &kube::Client,
    config: watcher::Config,
    written: &Arc<Written>,
    mut also_wakes: impl FnMut(&watcher::Event<K>) -> bool + Send + 'static,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug + Send + 'static,
{
    let mut tracker = EventTracker::new(written.clone(), live_fingerprint);
    watcher(Api::<K>::all(client.clone()), config).default_backoff().try_filter_map(move |event| {
        let wake = tracker.note(&event) | also_wakes(&event);
        let child = match event {
            watcher::Event::Apply(child) | watcher::Event::InitApply(child) | watcher::Event::Delete(child) => {
                wake.then_some(child)
            }
            watcher::Event::Init | watcher::Event::InitDone => None,
        };
        future::ready(Ok(child))
    })
}

/// Quota events that wake a Tenant: changes by others, as for every child,
/// and the enforcement of a quota whose Tenant gave up waiting for it
/// ([`QuotaGate`]). A pass waiting for enforcement right now is woken
/// through the gate instead.
fn quota_changes(
    client: &kube::Client,
    config: watcher::Config,
    written: &Arc<Written>,
    gate: &Arc<QuotaGate>,
) -> impl Stream<Item = Result<ResourceQuota, watcher::Error>> + Send + 'static {
    let gate = gate.clone();
    changed_by_others_or(
        client,
        config,
        written,
        move |event| matches!(event, watcher::Event::Apply(quota) | watcher::Event::InitApply(quota) if gate.observe(quota)),
    )
}

/// NetworkPolicy events that wake a Tenant: changes by others, and
/// policies of an earlier version still to be removed ([`legacy`]).
fn policy_changes(
    client: &kube::Client,
    config: watcher::Config,
    written: &Arc<Written>,
    legacy: &Arc<legacy::LegacyPolicies>,
) -> impl Stream<Item = Result<NetworkPolicy, watcher::Error>> + Send + 'static {
    let legacy = legacy.clone();
    changed_by_others_or(client, config, written, move |event| match event {
        watcher::Event::Apply(policy) | watcher::Event::InitApply(policy) => legacy.observe(policy, false),
        watcher::Event::Delete(policy) => legacy.observe(policy, true),
        watcher::Event::Init | watcher::Event::InitDone => false,
    })
}

/// Events of the kinds a pass needs to know the existence of (bindings it
/// would leave empty, reader roles it would delete) that wake a Tenant:
/// changes by others, as for every child; each also keeps [`Present`] in step.
fn tracked_changes<K>(
    client: &kube::Client,
    config: watcher::Config,
    written: &Arc<Written>,
    present: &Arc<Present>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug + Send + 'static,
{
    let mut tracker = PresenceTracker::new(present.clone());
    changed_by_others_or(client, config, written, move |event| {
        tracker.note(event);
        false
    })
}

/// The Tenant that controls a child, as a cluster-scoped reference.
fn owning_tenant<K: Resource>(child: K) -> Option<ObjectRef<Tenant>> {
    child
        .meta()
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == "Tenant" && o.api_version == Tenant::api_version(&()))
        .map(|o| ObjectRef::new(&o.name))
}
