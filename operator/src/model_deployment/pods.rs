//! Why a model's pods are not serving, read from their container states.
//! Pure.
//!
//! The Deployment only says "not ready yet" until its progress deadline
//! (beyond the startup budget, so many minutes). The pods know at once: a
//! container that exited with ember-runtime's termination message
//! (`ChecksumMismatch: ...`, `ModelStoreUnreachable: ...`), one the kernel
//! OOM-killed, an image that cannot be found; the scheduler knows when no
//! node has room. That becomes the `Ready` condition's reason within a
//! status round trip.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus};

/// Container waiting reasons that mean "this will not start by itself soon".
const STUCK_WAITING_REASONS: [&str; 6] = [
    "CrashLoopBackOff",
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "InvalidImageName",
];

/// Termination reasons ember-runtime writes that no retry can fix.
const PERMANENT_RUNTIME_REASONS: [&str; 3] = ["ChecksumMismatch", "InvalidModelFile", "InvalidConfiguration"];

/// A reason the model's pods are failing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFailure {
    /// Condition reason: ember-runtime's own (`ChecksumMismatch`, ...),
    /// `OOMKilled`, or the kubelet's (`ImagePullBackOff`, `CrashLoopBackOff`).
    pub reason: String,
    /// For people: which pod, and what the container said.
    pub message: String,
    /// Whether only a change of the spec (or the store's content) helps.
    pub needs_user_action: bool,
}

/// The first failure among `pods` (in name order, so the answer is stable),
/// ignoring pods on their way out.
pub fn failure_of(pods: &[Pod]) -> Option<PodFailure> {
    let mut live: Vec<&Pod> = pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
    live.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    live.into_iter().find_map(|pod| {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let status = pod.status.as_ref()?;
        if let Some(unschedulable) = unschedulable(name, status) {
            return Some(unschedulable);
        }
        status.container_statuses.as_ref()?.iter().find_map(|status| container_failure(name, status))
    })
}

/// The scheduler found no node with room (CPU, memory, GPUs) for the pod.
/// Capacity may come (autoscaler, other pods leaving), so it is not stalled.
fn unschedulable(pod: &str, status: &PodStatus) -> Option<PodFailure> {
    let condition =
        status.conditions.as_ref()?.iter().find(|c| {
            c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable")
        })?;
    Some(PodFailure {
        reason: "Unschedulable".into(),
        message: format!("pod {pod} cannot be scheduled: {}", condition.message.as_deref().unwrap_or_default()),
        needs_user_action: false,
    })
}

fn container_failure(pod: &str, status: &ContainerStatus) -> Option<PodFailure> {
    if status.ready {
        return None;
    }
    let state = status.state.as_ref()?;
    let last = status.last_state.as_ref().and_then(|s| s.terminated.as_ref());
    let terminated = state.terminated.as_ref().or(last);
    let waiting = state.waiting.as_ref().and_then(|w| w.reason.as_deref());
    let stuck = waiting.is_some_and(|r| STUCK_WAITING_REASONS.contains(&r));
    if state.terminated.is_none() && !stuck {
        // Running (maybe restarted earlier and recovering) or starting.
        return None;
    }
    // The exit tells more than "CrashLoopBackOff": prefer it.
    if let Some(exit) = terminated.filter(|t| t.exit_code != 0) {
        let said = exit.message.as_deref().map(str::trim).unwrap_or_default();
        let runtime_reason = said.split_once(": ").map(|(head, _)| head).filter(|head| is_reason(head));
        let reason = match (exit.reason.as_deref(), runtime_reason) {
            (Some("OOMKilled"), _) => "OOMKilled".to_owned(),
            (_, Some(own)) => own.to_owned(),
            (_, None) => waiting.unwrap_or("ContainerFailed").to_owned(),
        };
        let detail = if said.is_empty() { format!("exit code {}", exit.exit_code) } else { last_line(said) };
        let needs_user_action = reason == "OOMKilled" || PERMANENT_RUNTIME_REASONS.contains(&reason.as_str());
        return Some(PodFailure {
            message: format!("pod {pod}: container {} failed ({reason}): {detail}", status.name),
            reason,
            needs_user_action,
        });
    }
    let reason = waiting?.to_owned();
    let detail = state.waiting.as_ref().and_then(|w| w.message.clone()).unwrap_or_default();
    Some(PodFailure {
        message: format!("pod {pod}: container {} is waiting ({reason}): {detail}", status.name),
        needs_user_action: reason.contains("Image") || reason.starts_with("Create"),
        reason,
    })
}

/// A condition reason is CamelCase letters only; anything else in a
/// termination message (a log tail, a panic) is not one.
fn is_reason(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text.starts_with(|c: char| c.is_ascii_uppercase())
        && text.chars().all(|c| c.is_ascii_alphanumeric())
}

/// Termination messages may be a log tail (FallbackToLogsOnError); the last
/// line is the one that says why.
fn last_line(text: &str) -> String {
    let line = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(text).trim();
    line.chars().take(512).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pod(name: &str, status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "status": {"containerStatuses": [status]}
        }))
        .unwrap()
    }

    fn container(state: serde_json::Value, last: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "name": "ember-runtime", "image": "i", "imageID": "", "ready": false, "restartCount": 1,
            "state": state, "lastState": last
        })
    }

    #[test]
    fn the_runtime_s_own_reason_wins() {
        let p = pod(
            "m-1",
            container(
                serde_json::json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}}),
                serde_json::json!({"terminated": {"exitCode": 1, "reason": "Error",
                    "message": "ChecksumMismatch: sha256 mismatch for http://s/model.safetensors: expected aa, got bb"}}),
            ),
        );
        let failure = failure_of(&[p]).unwrap();
        assert_eq!(failure.reason, "ChecksumMismatch");
        assert!(failure.message.contains("expected aa, got bb"), "{}", failure.message);
        assert!(failure.needs_user_action);
    }

    #[test]
    fn oom_kills_are_named() {
        let p = pod(
            "m-1",
            container(
                serde_json::json!({"terminated": {"exitCode": 137, "reason": "OOMKilled"}}),
                serde_json::json!({}),
            ),
        );
        let failure = failure_of(&[p]).unwrap();
        assert_eq!(failure.reason, "OOMKilled");
        assert!(failure.message.contains("exit code 137"));
        assert!(failure.needs_user_action);
    }

    #[test]
    fn an_unreachable_store_may_recover_and_log_tails_are_not_reasons() {
        let store = pod(
            "m-1",
            container(
                serde_json::json!({"waiting": {"reason": "CrashLoopBackOff"}}),
                serde_json::json!({"terminated": {"exitCode": 1, "message": "ModelStoreUnreachable: fetching http://s/m: connection refused"}}),
            ),
        );
        let failure = failure_of(&[store]).unwrap();
        assert_eq!(failure.reason, "ModelStoreUnreachable");
        assert!(!failure.needs_user_action);

        let panic = pod(
            "m-1",
            container(
                serde_json::json!({"waiting": {"reason": "CrashLoopBackOff"}}),
                serde_json::json!({"terminated": {"exitCode": 101, "message": "thread 'main' panicked at x: boom\n"}}),
            ),
        );
        assert_eq!(failure_of(&[panic]).unwrap().reason, "CrashLoopBackOff");
    }

    #[test]
    fn pods_without_room_are_unschedulable() {
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "m-1"},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable", "message": "0/2 nodes are available: 1 Insufficient cpu."}]}
        }))
        .unwrap();
        let failure = failure_of(&[p]).unwrap();
        assert_eq!(failure.reason, "Unschedulable");
        assert!(failure.message.contains("Insufficient cpu"), "{}", failure.message);
        assert!(!failure.needs_user_action);
    }

    #[test]
    fn missing_images_are_reported() {
        let p = pod(
            "m-1",
            container(
                serde_json::json!({"waiting": {"reason": "ErrImageNeverPull", "message": "no image"}}),
                serde_json::json!({}),
            ),
        );
        let failure = failure_of(&[p]).unwrap();
        assert_eq!(failure.reason, "ErrImageNeverPull");
        assert!(failure.needs_user_action);
    }

    #[test]
    fn starting_running_and_recovered_pods_are_not_failures() {
        let starting =
            container(serde_json::json!({"waiting": {"reason": "ContainerCreating"}}), serde_json::json!({}));
        let running = container(serde_json::json!({"running": {}}), serde_json::json!({}));
        // Restarted after a kill, now running again: the old exit is history.
        let recovered = container(
            serde_json::json!({"running": {}}),
            serde_json::json!({"terminated": {"exitCode": 137, "reason": "Error"}}),
        );
        let pods: Vec<_> =
            [starting, running, recovered].into_iter().enumerate().map(|(i, c)| pod(&format!("p{i}"), c)).collect();
        assert_eq!(failure_of(&pods), None);
        let mut ready = container(serde_json::json!({"terminated": {"exitCode": 1}}), serde_json::json!({}));
        ready["ready"] = true.into();
        assert_eq!(failure_of(&[pod("r", ready)]), None);
    }
}
