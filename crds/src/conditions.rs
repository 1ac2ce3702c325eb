//! Status conditions in the shape kstatus, Argo CD and Flux understand.
//!
//! `Ready` is the summary every tool waits on (`kubectl wait
//! --for=condition=Ready`); `Reconciling` means work is under way and
//! `Stalled` means the user must change something. Conditions are updated
//! through [`set_condition`], which keeps `lastTransitionTime` unchanged
//! unless the status flips, so an idle object's status (and resourceVersion)
//! stays put.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types shared by both resources.
pub mod types {
    pub const READY: &str = "Ready";
    pub const RECONCILING: &str = "Reconciling";
    pub const STALLED: &str = "Stalled";
    pub const NAMESPACE_READY: &str = "NamespaceReady";
    pub const DATABASE_READY: &str = "DatabaseReady";
    pub const QUOTA_READY: &str = "QuotaReady";
    pub const PROGRESSING: &str = "Progressing";
}

/// Condition status values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

impl From<bool> for Status {
    fn from(value: bool) -> Self {
        if value { Status::True } else { Status::False }
    }
}

/// What a reconciler wants a condition to say. The transition time is filled
/// in by [`set_condition`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionUpdate {
    pub type_: &'static str,
    pub status: Status,
    /// CamelCase, bounded set per controller.
    pub reason: String,
    pub message: String,
}

impl ConditionUpdate {
    pub fn new(type_: &'static str, status: Status, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self { type_, status, reason: reason.into(), message: message.into() }
    }
}

/// Inserts or updates one condition. `lastTransitionTime` only moves when the
/// status changes; reason, message and `observedGeneration` always follow the
/// update. Returns whether anything changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    update: ConditionUpdate,
    generation: Option<i64>,
    now: &Time,
) -> bool {
    let status = update.status.as_str();
    match conditions.iter_mut().find(|c| c.type_ == update.type_) {
        Some(existing) => {
            let before = existing.clone();
            if existing.status != status {
                existing.status = status.to_owned();
                existing.last_transition_time = now.clone();
            }
            existing.reason = update.reason;
            existing.message = update.message;
            existing.observed_generation = generation;
            *existing != before
        }
        None => {
            conditions.push(Condition {
                type_: update.type_.to_owned(),
                status: status.to_owned(),
                reason: update.reason,
                message: update.message,
                observed_generation: generation,
                last_transition_time: now.clone(),
            });
            true
        }
    }
}

/// Looks a condition up by type.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the `Ready` condition is `True` and was computed for `generation`.
pub fn is_ready_at(conditions: &[Condition], generation: Option<i64>) -> bool {
    find_condition(conditions, types::READY)
        .is_some_and(|c| c.status == Status::True.as_str() && c.observed_generation == generation)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).expect("valid timestamp"))
    }

    fn ready(status: Status, reason: &str) -> ConditionUpdate {
        ConditionUpdate::new(types::READY, status, reason, "message")
    }

    #[test]
    fn first_sight_adds_the_condition() {
        let mut conditions = Vec::new();
        assert!(set_condition(&mut conditions, ready(Status::Unknown, "Pending"), Some(1), &at(10)));
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].status, "Unknown");
        assert_eq!(conditions[0].observed_generation, Some(1));
    }

    #[test]
    fn same_status_keeps_transition_time_and_reports_no_change() {
        let mut conditions = Vec::new();
        set_condition(&mut conditions, ready(Status::True, "Reconciled"), Some(1), &at(10));
        assert!(!set_condition(&mut conditions, ready(Status::True, "Reconciled"), Some(1), &at(20)));
        assert_eq!(conditions[0].last_transition_time, at(10));
    }

    #[test]
    fn new_reason_or_generation_without_flip_keeps_transition_time() {
        let mut conditions = Vec::new();
        set_condition(&mut conditions, ready(Status::False, "A"), Some(1), &at(10));
        assert!(set_condition(&mut conditions, ready(Status::False, "B"), Some(2), &at(20)));
        assert_eq!(conditions[0].last_transition_time, at(10));
        assert_eq!(conditions[0].reason, "B");
        assert_eq!(conditions[0].observed_generation, Some(2));
    }

    #[test]
    fn status_flip_moves_transition_time() {
        let mut conditions = Vec::new();
        set_condition(&mut conditions, ready(Status::False, "Waiting"), Some(1), &at(10));
        set_condition(&mut conditions, ready(Status::True, "Reconciled"), Some(1), &at(20));
        assert_eq!(conditions[0].last_transition_time, at(20));
        assert!(is_ready_at(&conditions, Some(1)));
        assert!(!is_ready_at(&conditions, Some(2)), "stale generation is not ready");
    }
}
