//! Waiting, inside a Tenant's pass, for the controller-manager to enforce
//! the tenant's quota — the gate before the owners' RoleBindings.
//!
//! A new quota is enforced once the controller-manager's quota controller
//! has written its first usage, normally a fraction of a second after the
//! quota is made. Waiting for that inside the pass that made the quota lets
//! one pass set a Tenant up completely: no intermediate "quota pending"
//! status, no second pass. The wait is woken by the quota's watch event
//! ([`QuotaGate::observe`]), never by polling.
//!
//! A pass waits at most a bounded time; after that it gives up (the Tenant
//! shows `QuotaPending`), and the quota's enforcement, whenever it comes,
//! wakes the Tenant for another pass.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ResourceQuota;
use kube::ResourceExt;
use tokio::sync::Notify;

use super::apply::is_enforced;
use crate::tenant_namespace::child_names;

/// Where a tenant namespace's quota gate stands.
#[derive(Debug)]
enum Gate {
    /// A pass is waiting for enforcement right now.
    Waiting(Arc<Notify>),
    /// A pass gave up waiting: enforcement must wake the Tenant.
    GaveUp,
}

/// The quota gates of all tenant namespaces currently waiting on one.
#[derive(Debug, Default)]
pub struct QuotaGate {
    gates: Mutex<HashMap<String, Gate>>,
}

impl QuotaGate {
    fn gates(&self) -> std::sync::MutexGuard<'_, HashMap<String, Gate>> {
        self.gates.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a wait for `namespace`'s quota, before the pass applies or
    /// reads it, so an enforcement seen in between is not missed.
    pub fn expect(self: &Arc<Self>, namespace: &str) -> QuotaWait {
        let notify = Arc::new(Notify::new());
        self.gates().insert(namespace.to_owned(), Gate::Waiting(notify.clone()));
        QuotaWait { gate: self.clone(), namespace: namespace.to_owned(), notify, settled: false }
    }

    /// A watch event of a quota. True when it should wake its Tenant: the
    /// quota is now enforced and the Tenant's last pass gave up waiting.
    pub fn observe(&self, quota: &ResourceQuota) -> bool {
        if quota.name_any() != child_names::QUOTA || !is_enforced(quota) {
            return false;
        }
        let Some(namespace) = quota.namespace() else { return false };
        match self.gates().remove(&namespace) {
            Some(Gate::Waiting(notify)) => {
                // Stores a permit if the pass is not awaiting yet.
                notify.notify_one();
                false
            }
            Some(Gate::GaveUp) => true,
            None => false,
        }
    }

    /// Forgets a namespace (its Tenant is gone).
    pub fn forget(&self, namespace: &str) {
        self.gates().remove(namespace);
    }
}

/// One pass's wait for its quota (see [`QuotaGate::expect`]).
#[derive(Debug)]
pub struct QuotaWait {
    gate: Arc<QuotaGate>,
    namespace: String,
    notify: Arc<Notify>,
    settled: bool,
}

impl QuotaWait {
    /// Waits up to `limit` for the quota's enforcement to be observed. On
    /// false the gate stays marked, so the enforcement wakes the Tenant.
    pub async fn enforced_within(mut self, limit: Duration) -> bool {
        let woken = tokio::time::timeout(limit, self.notify.notified()).await.is_ok();
        self.settled = true;
        if woken {
            return true;
        }
        let mut gates = self.gate.gates();
        match gates.get(&self.namespace) {
            // Still ours: nothing came. Leave the mark for the watch.
            Some(Gate::Waiting(notify)) if Arc::ptr_eq(notify, &self.notify) => {
                gates.insert(self.namespace.clone(), Gate::GaveUp);
                false
            }
            // `observe` took it between the timeout and the lock: it came.
            None => true,
            // A newer pass of the same Tenant opened its own wait.
            Some(_) => false,
        }
    }
}

impl Drop for QuotaWait {
    /// A pass that did not need to wait (or failed before) takes its wait back.
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut gates = self.gate.gates();
        if matches!(gates.get(&self.namespace), Some(Gate::Waiting(n)) if Arc::ptr_eq(n, &self.notify)) {
            gates.remove(&self.namespace);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn quota(namespace: &str, enforced: bool) -> ResourceQuota {
        let used = if enforced { serde_json::json!({"pods": "0"}) } else { serde_json::json!({}) };
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": child_names::QUOTA, "namespace": namespace},
            "spec": {"hard": {"pods": "10"}},
            "status": {"hard": {"pods": "10"}, "used": used},
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn enforcement_seen_before_the_wait_starts_is_not_lost() {
        let gate = Arc::new(QuotaGate::default());
        let wait = gate.expect("tenant-a");
        assert!(!gate.observe(&quota("tenant-a", false)));
        assert!(!gate.observe(&quota("tenant-a", true)), "a waiting pass needs no wake-up");
        assert!(wait.enforced_within(Duration::from_secs(5)).await);
        assert!(!gate.observe(&quota("tenant-a", true)), "nothing is left waiting");
    }

    #[tokio::test]
    async fn a_pass_that_gave_up_is_woken_by_the_later_enforcement() {
        let gate = Arc::new(QuotaGate::default());
        assert!(!gate.expect("tenant-a").enforced_within(Duration::from_millis(10)).await);
        assert!(!gate.observe(&quota("tenant-a", false)));
        assert!(!gate.observe(&quota("tenant-b", true)), "another namespace");
        assert!(gate.observe(&quota("tenant-a", true)));
        assert!(!gate.observe(&quota("tenant-a", true)), "woken once");
    }

    #[tokio::test]
    async fn a_pass_that_did_not_wait_leaves_nothing_behind() {
        let gate = Arc::new(QuotaGate::default());
        drop(gate.expect("tenant-a"));
        assert!(gate.gates().is_empty());
        assert!(!gate.observe(&quota("tenant-a", true)));
    }

    #[tokio::test]
    async fn a_waiting_pass_is_woken_while_it_waits() {
        let gate = Arc::new(QuotaGate::default());
        let wait = gate.expect("tenant-a");
        let waiting = tokio::spawn(wait.enforced_within(Duration::from_secs(30)));
        tokio::task::yield_now().await;
        assert!(!gate.observe(&quota("tenant-a", true)));
        assert!(waiting.await.unwrap());
    }
}
