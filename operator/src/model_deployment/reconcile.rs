//! The ModelDeployment reconciler: a short driver over the named steps
//! (tenancy → build → apply → status).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_crds::conditions::{find_condition, types};
use ember_crds::model_deployment::{ModelDeployment, ModelDeploymentStatus};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use tracing::{info, instrument, warn};

use super::build::{Serving, desired_children, endpoint, selector_labels};
use super::pods::{PodFailure, failure_of};
use super::status::{Outcome, Rollout, next_status, rollout};
use super::{ModelContext, apply, tenancy};
use crate::context::Context;
use crate::error::{Error, Result};

/// Name of this controller in metrics and logs.
pub const CONTROLLER: &str = "model-deployment";

/// A ModelDeployment that needs a change by a person is looked at again
/// this often anyway (the fix may be elsewhere, e.g. its Tenant appearing).
const STALLED_RECHECK: Duration = Duration::from_secs(300);

/// Entry point called by the controller runtime.
#[instrument(skip_all, fields(
    namespace = %md.namespace().unwrap_or_default(),
    model_deployment = %md.name_any(),
    tenant = tracing::field::Empty,
))]
pub async fn reconcile(md: Arc<ModelDeployment>, ctx: Arc<ModelContext>) -> Result<Action> {
    let started = Instant::now();
    let result = converge(&md, &ctx).await;
    ctx.metrics.observe(CONTROLLER, started.elapsed(), result.as_ref().err().map(Error::category));
    result
}

/// Retry key of a ModelDeployment; tenant names never contain `/`, so it
/// cannot collide with the Tenant controller's keys in the shared counters.
fn backoff_key(md: &ModelDeployment) -> String {
    format!("{}/{}", md.namespace().unwrap_or_default(), md.name_any())
}

/// Decides when to retry a failed reconciliation: a spec the user must fix
/// waits for a change (with a slow recheck, since the fix may be elsewhere,
/// e.g. the Tenant being created); anything else backs off exponentially.
pub fn error_policy(md: Arc<ModelDeployment>, error: &Error, ctx: Arc<ModelContext>) -> Action {
    warn!(
        namespace = %md.namespace().unwrap_or_default(),
        model_deployment = %md.name_any(),
        category = error.category(),
        %error,
        "reconcile failed"
    );
    if error.needs_user_action() {
        Action::requeue(STALLED_RECHECK)
    } else if error.is_conflict() {
        Action::requeue(Duration::from_millis(100))
    } else {
        Action::requeue(ctx.backoff(&backoff_key(md.as_ref())))
    }
}

async fn converge(md: &ModelDeployment, ctx: &ModelContext) -> Result<Action> {
    // Children carry owner references; garbage collection removes them.
    if md.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let generation = md.meta().generation;

    let result = converge_steps(md, ctx).await;
    let outcome = match &result {
        Ok((serving, deployment, _)) if serving.suspended => Outcome::Suspended { tenant: &serving.tenant, deployment },
        Ok((_, deployment, failure)) => Outcome::Applied { deployment, failure: failure.as_ref() },
        Err(e) => Outcome::Failed(e),
    };
    let status = next_status(md.status.as_ref(), generation, &endpoint(md), &outcome, &now());
    if md.status.as_ref() != Some(&status) {
        write_status(ctx, md, &status).await?;
        let failed = matches!(outcome, Outcome::Failed(_));
        publish_transition(ctx, md, md.status.as_ref(), &status, failed).await;
    }
    match result {
        Ok(_) => {
            ctx.reset_backoff(&backoff_key(md));
            // The Deployment watch brings the next change of a rollout; the
            // resync only catches what a missed watch event would hide.
            Ok(Action::requeue(ctx.resync()))
        }
        Err(error) => Err(error),
    }
}

async fn converge_steps(md: &ModelDeployment, ctx: &ModelContext) -> Result<(Serving, Deployment, Option<PodFailure>)> {
    let serving = tenancy::resolve(md, ctx).await?;
    tracing::Span::current().record("tenant", serving.tenant.as_str());
    let children = desired_children(md, &serving, &ctx.config)?;
    let deployment = apply::apply_children(ctx, &children).await?;
    let failure = match rollout(&deployment) {
        Rollout::Complete { .. } => None,
        _ => failure_of(&model_pods(ctx, md)),
    };
    Ok((serving, deployment, failure))
}

/// The model's pods from the pod cache, read only while its rollout is
/// incomplete: then they tell why (see [`super::pods`]).
fn model_pods(ctx: &ModelContext, md: &ModelDeployment) -> Vec<Pod> {
    let namespace = md.namespace();
    let selector = selector_labels(md);
    ctx.pods
        .state()
        .iter()
        .filter(|pod| pod.namespace() == namespace)
        .filter(|pod| selector.iter().all(|(key, value)| pod.labels().get(key) == Some(value)))
        .map(|pod| pod.as_ref().clone())
        .collect()
}

async fn write_status(ctx: &Context, md: &ModelDeployment, status: &ModelDeploymentStatus) -> Result<()> {
    let api: Api<ModelDeployment> = Api::namespaced(ctx.client.clone(), &md.namespace().unwrap_or_default());
    let patch = serde_json::json!({ "status": status });
    api.patch_status(&md.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// Events only when `Ready` changes status or reason: this bounds their
/// rate by design (a rollout's ready count moving is not an Event).
async fn publish_transition(
    ctx: &Context,
    md: &ModelDeployment,
    previous: Option<&ModelDeploymentStatus>,
    next: &ModelDeploymentStatus,
    failed: bool,
) {
    let ready = |s: Option<&ModelDeploymentStatus>| {
        s.and_then(|s| find_condition(&s.conditions, types::READY)).map(|c| (c.status.clone(), c.reason.clone()))
    };
    let (Some((status, reason)), before) = (ready(Some(next)), ready(previous)) else { return };
    if before.as_ref() == Some(&(status.clone(), reason.clone())) {
        return;
    }
    let message = find_condition(&next.conditions, types::READY).map(|c| c.message.clone()).unwrap_or_default();
    let stalled = find_condition(&next.conditions, types::STALLED).is_some_and(|c| c.status == "True");
    let type_ = if stalled || failed { EventType::Warning } else { EventType::Normal };
    if status == "True" {
        info!(namespace = %md.namespace().unwrap_or_default(), model_deployment = %md.name_any(), "model deployment is ready");
    }
    let note = Some(crate::context::event_note(message));
    let event = Event { type_, reason, note, action: "Reconcile".into(), secondary: None };
    if let Err(error) = ctx.recorder.publish(&event, &md.object_ref(&())).await {
        warn!(%error, "could not publish an Event");
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}
