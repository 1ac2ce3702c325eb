//! The Tenant reconciler: a short driver over the named steps
//! (build → namespace → children → database → status).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_crds::conditions::{find_condition, types};
use ember_crds::labels::TENANT_FINALIZER;
use ember_crds::names::namespace_for;
use ember_crds::tenant::{Tenant, TenantStatus};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use tracing::{info, instrument, warn};

use super::build::{DatabaseEndpoint, Egress, TenantChildren, desired_children};
use super::status::{Observed, Outcome, next_status};
use super::{apply, database};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::tenant_namespace::belongs_to;

/// Name of this controller in metrics and logs.
pub const CONTROLLER: &str = "tenant";

/// How long a pass waits for the controller-manager to enforce the quota
/// it made (normally well under a second) before it reports
/// `QuotaPending` and lets the enforcement wake the Tenant later.
const QUOTA_WAIT: Duration = Duration::from_secs(5);
/// How long a Tenant whose quota is pending waits before looking again in
/// any case; the quota's watch event normally wakes it first.
const QUOTA_FALLBACK: Duration = Duration::from_secs(30);
/// Retry after a write lost a race (409): at once, with what is current.
const CONFLICT_RETRY: Duration = Duration::from_millis(100);
/// A Tenant that needs a change by a person is looked at again this often
/// anyway, in case the platform configuration changed.
const STALLED_RECHECK: Duration = Duration::from_secs(300);

/// Entry point called by the controller runtime.
#[instrument(skip_all, fields(tenant = %tenant.name_any()))]
pub async fn reconcile(tenant: Arc<Tenant>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile_lifecycle(tenant, &ctx).await;
    ctx.metrics.observe(CONTROLLER, started.elapsed(), result.as_ref().err().map(Error::category));
    result
}

/// The finalizer protocol: the finalizer goes on before anything is made
/// outside Kubernetes, and comes off only after the database part has been
/// cleaned up according to the deletion policy.
async fn reconcile_lifecycle(tenant: Arc<Tenant>, ctx: &Context) -> Result<Action> {
    let has_finalizer = tenant.finalizers().iter().any(|f| f == TENANT_FINALIZER);
    if tenant.meta().deletion_timestamp.is_some() {
        if has_finalizer {
            clean_up(&tenant, ctx).await?;
            let remaining = tenant.finalizers().iter().filter(|f| *f != TENANT_FINALIZER).cloned().collect();
            match set_finalizers(ctx, &tenant, remaining).await {
                // A reconcile queued from a stale cache entry: the Tenant is already gone.
                Err(Error::Kube(kube::Error::Api(status))) if status.code == 404 => {}
                other => other?,
            }
        }
        return Ok(Action::await_change());
    }
    if !has_finalizer {
        let mut finalizers = tenant.finalizers().to_vec();
        finalizers.push(TENANT_FINALIZER.to_owned());
        // Only where `config/policy/tenant-finalizer.yaml` is not installed:
        // that admission policy adds the finalizer at create. Then on in the
        // same pass: the watch ignores this change (only the generation and
        // the adoption annotation wake a Tenant), so a new Tenant is
        // converged by one pass.
        set_finalizers(ctx, &tenant, finalizers).await?;
    }
    converge(&tenant, ctx).await
}

/// Replaces the finalizer list, guarded by the resourceVersion we read so a
/// concurrent change is never overwritten.
async fn set_finalizers(ctx: &Context, tenant: &Tenant, finalizers: Vec<String>) -> Result<()> {
    let api: Api<Tenant> = Api::all(ctx.client.clone());
    let patch = serde_json::json!({
        "metadata": { "finalizers": finalizers, "resourceVersion": tenant.resource_version() }
    });
    api.patch(&tenant.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// Decides when to retry a failed reconciliation.
pub fn error_policy(tenant: Arc<Tenant>, error: &Error, ctx: Arc<Context>) -> Action {
    if error.is_transitional() {
        tracing::debug!(tenant = %tenant.name_any(), %error, "waiting");
        return Action::requeue(QUOTA_FALLBACK);
    }
    if error.is_conflict() {
        tracing::debug!(tenant = %tenant.name_any(), %error, "lost a write race; again at once");
        return Action::requeue(CONFLICT_RETRY);
    }
    warn!(tenant = %tenant.name_any(), category = error.category(), %error, "reconcile failed");
    if error.needs_user_action() {
        // A spec change triggers a new reconcile; check now and then anyway
        // in case the platform configuration changed.
        Action::requeue(STALLED_RECHECK)
    } else {
        Action::requeue(ctx.backoff(&tenant.name_any()))
    }
}

async fn converge(tenant: &Tenant, ctx: &Context) -> Result<Action> {
    let name = tenant.name_any();
    let generation = tenant.meta().generation;
    // No "reconciling" status first: a pass sets a new Tenant up in well
    // under a second, and its one status write says how it went.
    let mut observed = Observed::default();
    let result = converge_steps(tenant, ctx, &mut observed).await;
    let outcome = match &result {
        Ok(()) => Outcome::Converged,
        Err(Step::Namespace(e)) => Outcome::NamespaceFailed(e),
        Err(Step::Children(e)) => Outcome::ChildrenFailed(e),
        Err(Step::Database(e)) => Outcome::DatabaseFailed(e),
    };
    let status = next_status(tenant.status.as_ref(), generation, &outcome, &observed, &now());
    if tenant.status.as_ref() != Some(&status) {
        write_status(ctx, tenant, &status).await?;
        publish_transition(ctx, tenant, &outcome).await;
    }
    match result {
        Ok(()) => {
            ctx.reset_backoff(&name);
            Ok(Action::requeue(ctx.resync()))
        }
        Err(step) => Err(step.into_error()),
    }
}

/// A failure, tagged with the step it happened in.
enum Step {
    Namespace(Error),
    Children(Error),
    Database(Error),
}

impl Step {
    fn into_error(self) -> Error {
        match self {
            Step::Namespace(e) | Step::Children(e) | Step::Database(e) => e,
        }
    }
}

/// The namespace first; then its children and the database part side by
/// side. The database does not wait for the quota: it needs neither the
/// quota nor anything the quota covers.
async fn converge_steps(tenant: &Tenant, ctx: &Context, observed: &mut Observed) -> Result<(), Step> {
    let name = tenant.name_any();
    let placement = database::placement(tenant, ctx).map_err(Step::Database);
    let endpoint: Option<DatabaseEndpoint> = placement.as_ref().ok().and_then(database::endpoint);
    let egress = Egress { database: endpoint.as_ref(), model_stores: &ctx.config.model_stores };
    let children = desired_children(tenant, &ctx.config.platform_namespace, egress).map_err(Step::Namespace)?;

    ensure_namespace_is_ours(tenant, &children, ctx).await.map_err(Step::Namespace)?;
    apply::apply_namespace(ctx, &children).await.map_err(Step::Namespace)?;
    observed.namespace = Some(namespace_for(&name));

    let quota_was_enforced = tenant
        .status
        .as_ref()
        .is_some_and(|s| find_condition(&s.conditions, types::QUOTA_READY).is_some_and(|c| c.status == "True"));
    let kubernetes = async {
        let wait = ctx.quotas.expect(&namespace_for(&name));
        let applied_quota = apply::apply_base_children(ctx, &children).await?;
        if applied_quota.is_some() || !quota_was_enforced {
            apply::ensure_quota_enforced(&ctx.client, &children, applied_quota, wait, QUOTA_WAIT).await?;
        }
        apply::apply_role_bindings(ctx, &children).await
    };
    let database = async {
        let server = placement?;
        database::ensure(tenant, &server, ctx).await.map_err(Step::Database)
    };
    let (kubernetes, database) = tokio::join!(kubernetes, database);
    if let Ok(placed) = &database {
        observed.database = Some(placed.clone());
    }
    kubernetes.map_err(Step::Children)?;
    database.map(drop)
}

/// Refuses to touch a namespace of the tenant's name that is not ours. A
/// namespace this operator applied and nobody changed since is ours without
/// a read (its watch would have shown a deletion or an edit).
async fn ensure_namespace_is_ours(tenant: &Tenant, children: &TenantChildren, ctx: &Context) -> Result<()> {
    if crate::apply::is_unchanged_since_applied(&ctx.written, &children.namespace)? {
        return Ok(());
    }
    let namespace = namespace_for(&tenant.name_any());
    match Api::<Namespace>::all(ctx.client.clone()).get_opt(&namespace).await? {
        Some(existing) if !belongs_to(&existing, tenant) => Err(Error::NamespaceConflict { namespace }),
        _ => Ok(()),
    }
}

async fn clean_up(tenant: &Tenant, ctx: &Context) -> Result<()> {
    ctx.quotas.forget(&namespace_for(&tenant.name_any()));
    let note = database::clean_up(tenant, ctx).await?;
    info!(tenant = %tenant.name_any(), %note, "tenant deleted");
    publish(ctx, tenant, EventType::Normal, "Deleted", "Delete", note).await;
    Ok(())
}

async fn write_status(ctx: &Context, tenant: &Tenant, status: &TenantStatus) -> Result<()> {
    let api: Api<Tenant> = Api::all(ctx.client.clone());
    let patch = serde_json::json!({ "status": status });
    api.patch_status(&tenant.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// Events only on status changes: this bounds their rate by design.
async fn publish_transition(ctx: &Context, tenant: &Tenant, outcome: &Outcome<'_>) {
    match outcome {
        Outcome::Converged => {
            info!(tenant = %tenant.name_any(), generation = tenant.meta().generation, "tenant is ready");
            publish(ctx, tenant, EventType::Normal, "Reconciled", "Reconcile", "tenant is ready".into()).await
        }
        Outcome::NamespaceFailed(e) | Outcome::ChildrenFailed(e) | Outcome::DatabaseFailed(e)
            if e.is_transitional() => {}
        Outcome::NamespaceFailed(e) | Outcome::ChildrenFailed(e) | Outcome::DatabaseFailed(e) => {
            publish(ctx, tenant, EventType::Warning, e.category(), "Reconcile", e.to_string()).await
        }
    }
}

async fn publish(ctx: &Context, tenant: &Tenant, type_: EventType, reason: &str, action: &str, note: String) {
    let note = Some(crate::context::event_note(note));
    let event = Event { type_, reason: reason.into(), note, action: action.into(), secondary: None };
    if let Err(error) = ctx.recorder.publish(&event, &tenant.object_ref(&())).await {
        warn!(%error, "could not publish an Event");
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}
