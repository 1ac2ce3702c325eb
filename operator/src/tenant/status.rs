//! Tenant status from the outcome of one reconciliation. Pure.
//!
//! The conditions follow kstatus: `Ready` summarises `NamespaceReady`,
//! `QuotaReady` and `DatabaseReady`; `Reconciling` is true while work is
//! under way or being retried; `Stalled` is true when only a change by the
//! user (or the platform team) can help.

use ember_crds::conditions::{ConditionUpdate, Status, set_condition, types};
use ember_crds::tenant::{TenantDatabaseStatus, TenantStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::error::Error;

/// Which step a reconciliation reached.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// The namespace could not be made ours.
    NamespaceFailed(&'a Error),
    /// The namespace is ours, but quota, policies or RBAC failed.
    ChildrenFailed(&'a Error),
    /// Kubernetes objects are in place; the database part failed.
    DatabaseFailed(&'a Error),
    /// Everything converged.
    Converged,
}

/// What the reconciliation learnt beyond the outcome.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    pub namespace: Option<String>,
    pub database: Option<TenantDatabaseStatus>,
}

fn failure(type_: &'static str, error: &Error) -> ConditionUpdate {
    ConditionUpdate::new(type_, Status::False, error.category(), error.to_string())
}

fn ok(type_: &'static str, reason: &str, message: &str) -> ConditionUpdate {
    ConditionUpdate::new(type_, Status::True, reason, message)
}

fn unknown(type_: &'static str, reason: &str, message: &str) -> ConditionUpdate {
    ConditionUpdate::new(type_, Status::Unknown, reason, message)
}

/// The status to write: `previous` updated with this outcome. Returns the new
/// status; comparing it with `previous` tells whether a write is needed.
pub fn next_status(
    previous: Option<&TenantStatus>,
    generation: Option<i64>,
    outcome: &Outcome<'_>,
    observed: &Observed,
    now: &Time,
) -> TenantStatus {
    let mut status = previous.cloned().unwrap_or_default();
    status.observed_generation = generation;
    if observed.namespace.is_some() {
        status.namespace.clone_from(&observed.namespace);
    }
    if observed.database.is_some() {
        status.database.clone_from(&observed.database);
    }

    let namespace_ok =
        ok(types::NAMESPACE_READY, "NamespaceReady", "namespace, network policies and RBAC are in place");
    let quota_ok = ok(types::QUOTA_READY, "QuotaApplied", "resource quota and limit range are in place");
    let database_ok =
        ok(types::DATABASE_READY, "SchemaReady", "database role, schema and credentials Secret are in place");
    let (updates, error): (Vec<ConditionUpdate>, Option<&Error>) = match outcome {
        Outcome::NamespaceFailed(e) => (
            vec![
                failure(types::NAMESPACE_READY, e),
                unknown(types::QUOTA_READY, "WaitingForNamespace", "waiting for the namespace"),
                unknown(types::DATABASE_READY, "WaitingForNamespace", "waiting for the namespace"),
            ],
            Some(e),
        ),
        Outcome::ChildrenFailed(e) => (
            vec![
                namespace_ok,
                failure(types::QUOTA_READY, e),
                unknown(types::DATABASE_READY, "WaitingForQuota", "waiting for quota and policies"),
            ],
            Some(e),
        ),
        Outcome::DatabaseFailed(e) => (vec![namespace_ok, quota_ok, failure(types::DATABASE_READY, e)], Some(e)),
        Outcome::Converged => (vec![namespace_ok, quota_ok, database_ok], None),
    };
    for update in updates {
        set_condition(&mut status.conditions, update, generation, now);
    }
    let summary = match error {
        None => vec![
            ok(types::READY, "Reconciled", "all parts of the tenant are in place"),
            ConditionUpdate::new(types::RECONCILING, Status::False, "Reconciled", ""),
            ConditionUpdate::new(types::STALLED, Status::False, "Reconciled", ""),
        ],
        Some(e) if e.needs_user_action() => vec![
            failure(types::READY, e),
            ConditionUpdate::new(types::RECONCILING, Status::False, e.category(), "waiting for a change"),
            failure(types::STALLED, e).with_status(Status::True),
        ],
        Some(e) => vec![
            failure(types::READY, e),
            ConditionUpdate::new(types::RECONCILING, Status::True, e.category(), format!("retrying: {e}")),
            ConditionUpdate::new(types::STALLED, Status::False, "Retrying", ""),
        ],
    };
    for update in summary {
        set_condition(&mut status.conditions, update, generation, now);
    }
    status
}

/// The status on first sight, before any work: `Ready=Unknown`, `Reconciling=True`.
pub fn initial_status(generation: Option<i64>, now: &Time) -> TenantStatus {
    let mut status = TenantStatus { observed_generation: generation, ..Default::default() };
    for update in [
        unknown(types::READY, "Reconciling", "the operator is setting the tenant up"),
        ConditionUpdate::new(types::RECONCILING, Status::True, "Reconciling", "the operator is setting the tenant up"),
        ConditionUpdate::new(types::STALLED, Status::False, "Reconciling", ""),
    ] {
        set_condition(&mut status.conditions, update, generation, now);
    }
    status
}

trait WithStatus {
    fn with_status(self, status: Status) -> Self;
}

impl WithStatus for ConditionUpdate {
    fn with_status(mut self, status: Status) -> Self {
        self.status = status;
        self
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ember_crds::conditions::find_condition;

    fn at(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())
    }

    fn condition(status: &TenantStatus, type_: &str) -> (String, String) {
        let c = find_condition(&status.conditions, type_).unwrap();
        (c.status.clone(), c.reason.clone())
    }

    #[test]
    fn converged_is_ready_and_not_reconciling() {
        let s = next_status(None, Some(3), &Outcome::Converged, &Observed::default(), &at(1));
        assert_eq!(condition(&s, "Ready").0, "True");
        assert_eq!(condition(&s, "Reconciling").0, "False");
        assert_eq!(condition(&s, "Stalled").0, "False");
        assert_eq!(s.observed_generation, Some(3));
        assert!(s.conditions.iter().all(|c| c.observed_generation == Some(3)));
    }

    #[test]
    fn user_errors_stall() {
        let e = Error::NamespaceConflict { namespace: "tenant-acme".into() };
        let s = next_status(None, Some(1), &Outcome::NamespaceFailed(&e), &Observed::default(), &at(1));
        assert_eq!(condition(&s, "Ready"), ("False".into(), "NamespaceConflict".into()));
        assert_eq!(condition(&s, "Stalled"), ("True".into(), "NamespaceConflict".into()));
        assert_eq!(condition(&s, "NamespaceReady").0, "False");
    }

    #[test]
    fn transient_errors_keep_reconciling() {
        let e = Error::Config("x".into());
        assert!(e.needs_user_action());
        let e = Error::Finalizer("boom".into());
        let s = next_status(None, Some(1), &Outcome::DatabaseFailed(&e), &Observed::default(), &at(1));
        assert_eq!(condition(&s, "Reconciling").0, "True");
        assert_eq!(condition(&s, "Stalled").0, "False");
        assert_eq!(condition(&s, "NamespaceReady").0, "True");
        assert_eq!(condition(&s, "DatabaseReady").0, "False");
    }

    #[test]
    fn repeating_a_reconcile_changes_nothing() {
        let first = next_status(None, Some(1), &Outcome::Converged, &Observed::default(), &at(1));
        let again = next_status(Some(&first), Some(1), &Outcome::Converged, &Observed::default(), &at(99));
        assert_eq!(first, again, "an idle tenant's status must not change");
    }
}
