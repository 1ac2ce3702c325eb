//! ModelDeployment status from the outcome of one reconciliation. Pure.
//!
//! kstatus conventions: `Ready` is the summary (`kubectl wait
//! --for=condition=Ready`); `Reconciling` is true while a rollout or a retry
//! is under way; `Stalled` is true when only a change by the user can help
//! (not a tenant namespace, invalid spec, rollout past its deadline).
//! `Progressing` mirrors the rollout for people reading `kubectl describe`.

use ember_crds::conditions::{ConditionUpdate, Status, set_condition, types};
use ember_crds::model_deployment::ModelDeploymentStatus;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::pods::PodFailure;
use crate::error::Error;

/// Condition reasons of this controller (a bounded set).
pub mod reasons {
    pub const AVAILABLE: &str = "Available";
    pub const ROLLING_OUT: &str = "RollingOut";
    pub const ROLLOUT_COMPLETE: &str = "RolloutComplete";
    pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
    pub const SUSPENDED: &str = "Suspended";
}

/// Which step a reconciliation reached.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// Validation or applying failed.
    Failed(&'a Error),
    /// Children applied; the tenant is suspended, so the model runs no pods.
    Suspended { tenant: &'a str, deployment: &'a Deployment },
    /// Children applied; the Deployment as the API server has it, and why
    /// its pods fail, if they do.
    Applied { deployment: &'a Deployment, failure: Option<&'a PodFailure> },
}

/// Where the Deployment's rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    /// Every desired replica runs the current template and is ready.
    Complete { ready: i32 },
    /// Still working: new pods starting, old ones not yet gone, or the
    /// Deployment controller has not seen the latest spec.
    InProgress { ready: i32, desired: i32 },
    /// The Deployment controller gave up (`ProgressDeadlineExceeded`).
    DeadlineExceeded { message: String },
}

/// Reads the rollout state off a Deployment (the kstatus rules for Deployments).
pub fn rollout(deployment: &Deployment) -> Rollout {
    let desired = deployment.spec.replicas.unwrap_or(1);
    let Some(status) = deployment.status.as_ref() else {
        return Rollout::InProgress { ready: 0, desired };
    };
    let ready = status.ready_replicas.unwrap_or(0);
    let stuck = status.conditions.iter().flatten().find(|c| {
        c.type_.as_deref() == Some("Progressing")
            && c.status.as_deref() == Some("False")
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if let Some(condition) = stuck {
        return Rollout::DeadlineExceeded { message: condition.message.clone().unwrap_or_default() };
    }
    let observed = status.observed_generation.is_some_and(|g| Some(g) >= deployment.metadata.generation);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    if observed && updated >= desired && ready >= desired && total <= updated {
        Rollout::Complete { ready }
    } else {
        Rollout::InProgress { ready, desired }
    }
}

fn set(type_: &'static str, status: Status, reason: &str, message: impl Into<String>) -> ConditionUpdate {
    ConditionUpdate::new(type_, status, reason, message)
}

/// The status to write: `previous` updated with this outcome. Comparing the
/// result with `previous` tells whether a write is needed.
pub fn next_status(
    previous: Option<&ModelDeploymentStatus>,
    generation: Option<i64>,
    endpoint: &str,
    outcome: &Outcome<'_>,
    now: &Time,
) -> ModelDeploymentStatus {
    let mut status = previous.cloned().unwrap_or_default();
    status.observed_generation = generation;
    let updates = match outcome {
        Outcome::Failed(e) => {
            if matches!(e, Error::NotATenantNamespace { .. }) {
                // Nothing is served here: no address, no replicas.
                status.endpoint = None;
                status.replicas = None;
                status.ready_replicas = None;
            }
            failure_conditions(e)
        }
        Outcome::Suspended { tenant, deployment } => {
            observe_replicas(&mut status, deployment, endpoint);
            let message = format!("tenant {tenant} is suspended; the model is scaled to zero");
            vec![
                set(types::READY, Status::False, reasons::SUSPENDED, &message),
                set(types::RECONCILING, Status::False, reasons::SUSPENDED, ""),
                set(types::PROGRESSING, Status::False, reasons::SUSPENDED, &message),
                set(types::STALLED, Status::False, reasons::SUSPENDED, ""),
            ]
        }
        Outcome::Applied { deployment, failure } => {
            observe_replicas(&mut status, deployment, endpoint);
            match (rollout(deployment), failure) {
                (Rollout::Complete { .. } | Rollout::DeadlineExceeded { .. }, _) | (_, None) => {
                    rollout_conditions(&rollout(deployment))
                }
                (Rollout::InProgress { .. }, Some(failure)) => pod_failure_conditions(failure),
            }
        }
    };
    for update in updates {
        set_condition(&mut status.conditions, update, generation, now);
    }
    status
}

fn observe_replicas(status: &mut ModelDeploymentStatus, deployment: &Deployment, endpoint: &str) {
    let observed = deployment.status.as_ref();
    status.replicas = Some(observed.and_then(|s| s.replicas).unwrap_or(0));
    status.ready_replicas = Some(observed.and_then(|s| s.ready_replicas).unwrap_or(0));
    status.endpoint = Some(endpoint.to_owned());
}

fn failure_conditions(e: &Error) -> Vec<ConditionUpdate> {
    let message = e.to_string();
    if e.needs_user_action() {
        vec![
            set(types::READY, Status::False, e.category(), &message),
            set(types::RECONCILING, Status::False, e.category(), "waiting for a change"),
            set(types::PROGRESSING, Status::False, e.category(), &message),
            set(types::STALLED, Status::True, e.category(), &message),
        ]
    } else {
        vec![
            set(types::READY, Status::False, e.category(), &message),
            set(types::RECONCILING, Status::True, e.category(), format!("retrying: {message}")),
            set(types::STALLED, Status::False, "Retrying", ""),
        ]
    }
}

/// Pods that fail say why before the rollout deadline does. What only a
/// spec change can fix stalls; what may pass (an unreachable store, a crash)
/// keeps reconciling while the kubelet retries.
fn pod_failure_conditions(failure: &PodFailure) -> Vec<ConditionUpdate> {
    let reason = failure.reason.as_str();
    let message = failure.message.as_str();
    let stalled = if failure.needs_user_action { Status::True } else { Status::False };
    let reconciling = if failure.needs_user_action { Status::False } else { Status::True };
    vec![
        set(types::READY, Status::False, reason, message),
        set(types::RECONCILING, reconciling, reason, message),
        set(types::PROGRESSING, Status::False, reason, message),
        set(types::STALLED, stalled, reason, message),
    ]
}

fn rollout_conditions(rollout: &Rollout) -> Vec<ConditionUpdate> {
    match rollout {
        Rollout::Complete { ready } => vec![
            set(types::READY, Status::True, reasons::AVAILABLE, format!("{ready} replicas ready")),
            set(types::RECONCILING, Status::False, reasons::ROLLOUT_COMPLETE, ""),
            set(types::PROGRESSING, Status::False, reasons::ROLLOUT_COMPLETE, "every replica runs the current spec"),
            set(types::STALLED, Status::False, reasons::ROLLOUT_COMPLETE, ""),
        ],
        Rollout::InProgress { ready, desired } => {
            let message = format!("{ready} of {desired} replicas ready on the current spec");
            vec![
                set(types::READY, Status::False, reasons::ROLLING_OUT, &message),
                set(types::RECONCILING, Status::True, reasons::ROLLING_OUT, &message),
                set(types::PROGRESSING, Status::True, reasons::ROLLING_OUT, &message),
                set(types::STALLED, Status::False, reasons::ROLLING_OUT, ""),
            ]
        }
        Rollout::DeadlineExceeded { message } => vec![
            set(types::READY, Status::False, reasons::PROGRESS_DEADLINE_EXCEEDED, message),
            set(types::RECONCILING, Status::False, reasons::PROGRESS_DEADLINE_EXCEEDED, ""),
            set(types::PROGRESSING, Status::False, reasons::PROGRESS_DEADLINE_EXCEEDED, message),
            set(types::STALLED, Status::True, reasons::PROGRESS_DEADLINE_EXCEEDED, message),
        ],
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ember_crds::conditions::find_condition;
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentSpec, DeploymentStatus};

    fn at(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())
    }

    fn deployment(generation: i64, observed: i64, desired: i32, updated: i32, ready: i32, total: i32) -> Deployment {
        let mut d = Deployment {
            spec: DeploymentSpec { replicas: Some(desired), ..Default::default() },
            status: Some(DeploymentStatus {
                observed_generation: Some(observed),
                replicas: Some(total),
                updated_replicas: Some(updated),
                ready_replicas: Some(ready),
                ..Default::default()
            }),
            ..Default::default()
        };
        d.metadata.generation = Some(generation);
        d
    }

    fn condition(status: &ModelDeploymentStatus, type_: &str) -> (String, String) {
        let c = find_condition(&status.conditions, type_).unwrap();
        (c.status.clone(), c.reason.clone())
    }

    const URL: &str = "http://m.tenant-a.svc:8080";

    #[test]
    fn ready_when_every_desired_replica_is_updated_and_ready() {
        let d = deployment(2, 2, 2, 2, 2, 2);
        let s = next_status(None, Some(5), URL, &Outcome::Applied { deployment: &d, failure: None }, &at(1));
        assert_eq!(condition(&s, "Ready"), ("True".into(), "Available".into()));
        assert_eq!(condition(&s, "Reconciling").0, "False");
        assert_eq!(condition(&s, "Stalled").0, "False");
        assert_eq!((s.replicas, s.ready_replicas), (Some(2), Some(2)));
        assert_eq!(s.endpoint.as_deref(), Some(URL));
        assert_eq!(s.observed_generation, Some(5));
        assert!(s.conditions.iter().all(|c| c.observed_generation == Some(5)));
    }

    #[test]
    fn not_ready_while_rolling_out() {
        for (what, d) in [
            ("spec not yet observed", deployment(3, 2, 2, 2, 2, 2)),
            ("new pods not ready", deployment(2, 2, 2, 2, 1, 2)),
            ("old pods still there", deployment(2, 2, 2, 2, 2, 3)),
            ("not all updated", deployment(2, 2, 2, 1, 2, 2)),
        ] {
            let s = next_status(None, Some(1), URL, &Outcome::Applied { deployment: &d, failure: None }, &at(1));
            assert_eq!(condition(&s, "Ready"), ("False".into(), "RollingOut".into()), "{what}");
            assert_eq!(condition(&s, "Reconciling").0, "True", "{what}");
            assert_eq!(condition(&s, "Progressing").0, "True", "{what}");
        }
        let fresh = Deployment::default();
        assert_eq!(rollout(&fresh), Rollout::InProgress { ready: 0, desired: 1 });
    }

    #[test]
    fn deadline_exceeded_stalls() {
        let mut d = deployment(2, 2, 2, 1, 1, 2);
        d.status.as_mut().unwrap().conditions = Some(vec![DeploymentCondition {
            type_: Some("Progressing".into()),
            status: Some("False".into()),
            reason: Some("ProgressDeadlineExceeded".into()),
            message: Some("ReplicaSet m-1 has timed out progressing.".into()),
            ..Default::default()
        }]);
        let s = next_status(None, Some(1), URL, &Outcome::Applied { deployment: &d, failure: None }, &at(1));
        assert_eq!(condition(&s, "Stalled"), ("True".into(), "ProgressDeadlineExceeded".into()));
        assert_eq!(condition(&s, "Ready").0, "False");
    }

    #[test]
    fn not_a_tenant_namespace_stalls_and_serves_nothing() {
        let e = Error::NotATenantNamespace { namespace: "default".into() };
        let s = next_status(None, Some(1), URL, &Outcome::Failed(&e), &at(1));
        assert_eq!(condition(&s, "Ready"), ("False".into(), "NotATenantNamespace".into()));
        assert_eq!(condition(&s, "Stalled"), ("True".into(), "NotATenantNamespace".into()));
        assert_eq!(condition(&s, "Reconciling").0, "False");
        assert_eq!(s.endpoint, None);
    }

    #[test]
    fn api_errors_keep_reconciling() {
        let e = Error::Kube(kube::Error::Api(Box::new(
            kube::core::Status::failure("down", "ServiceUnavailable").with_code(503),
        )));
        let s = next_status(None, Some(1), URL, &Outcome::Failed(&e), &at(1));
        assert_eq!(condition(&s, "Reconciling").0, "True");
        assert_eq!(condition(&s, "Stalled").0, "False");
    }

    #[test]
    fn suspension_is_not_ready_but_not_stalled() {
        let d = deployment(2, 2, 0, 0, 0, 0);
        let s = next_status(None, Some(1), URL, &Outcome::Suspended { tenant: "a", deployment: &d }, &at(1));
        assert_eq!(condition(&s, "Ready"), ("False".into(), "Suspended".into()));
        assert_eq!(condition(&s, "Stalled").0, "False");
        assert_eq!(condition(&s, "Reconciling").0, "False");
    }

    #[test]
    fn repeating_a_reconcile_changes_nothing() {
        let d = deployment(2, 2, 2, 2, 2, 2);
        let first = next_status(None, Some(1), URL, &Outcome::Applied { deployment: &d, failure: None }, &at(1));
        let again =
            next_status(Some(&first), Some(1), URL, &Outcome::Applied { deployment: &d, failure: None }, &at(99));
        assert_eq!(first, again, "an idle model's status must not change");
    }

    #[test]
    fn failing_pods_name_the_reason_before_the_deadline() {
        let d = deployment(2, 2, 1, 1, 0, 1);
        let checksum =
            PodFailure { reason: "ChecksumMismatch".into(), message: "pod m-1: ...".into(), needs_user_action: true };
        let s = next_status(None, Some(1), URL, &Outcome::Applied { deployment: &d, failure: Some(&checksum) }, &at(1));
        assert_eq!(condition(&s, "Ready"), ("False".into(), "ChecksumMismatch".into()));
        assert_eq!(condition(&s, "Stalled"), ("True".into(), "ChecksumMismatch".into()));
        assert_eq!(condition(&s, "Reconciling").0, "False");

        let store =
            PodFailure { reason: "ModelStoreUnreachable".into(), message: "m".into(), needs_user_action: false };
        let s = next_status(None, Some(1), URL, &Outcome::Applied { deployment: &d, failure: Some(&store) }, &at(1));
        assert_eq!(condition(&s, "Ready"), ("False".into(), "ModelStoreUnreachable".into()));
        assert_eq!(condition(&s, "Stalled").0, "False");
        assert_eq!(condition(&s, "Reconciling").0, "True");

        // Every replica ready: an old crash of one of them is history.
        let done = deployment(2, 2, 1, 1, 1, 1);
        let s = next_status(None, Some(1), URL, &Outcome::Applied { deployment: &done, failure: Some(&store) }, &at(1));
        assert_eq!(condition(&s, "Ready"), ("True".into(), "Available".into()));
    }

    #[test]
    fn the_first_pass_writes_every_condition_at_once() {
        // No separate "first sight" status: the first pass's outcome is the
        // first status written, with all four conditions.
        let d = deployment(1, 1, 1, 0, 0, 0);
        let outcome = Outcome::Applied { deployment: &d, failure: None };
        let s = next_status(None, Some(1), URL, &outcome, &at(1));
        assert_eq!(condition(&s, "Ready"), ("False".into(), reasons::ROLLING_OUT.into()));
        assert_eq!(condition(&s, "Reconciling").0, "True");
        assert_eq!(condition(&s, "Progressing").0, "True");
        assert_eq!(condition(&s, "Stalled").0, "False");
        assert_eq!(s.observed_generation, Some(1));
    }
}
