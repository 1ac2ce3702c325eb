//! Objects earlier versions of the operator made that this one replaced,
//! removed where found.
//!
//! Earlier versions gave each tenant namespace seven NetworkPolicies, one
//! per purpose; now one policy ([`child_names::NETWORK_POLICY`]) holds all
//! their rules. Left in place, an old allow policy would keep allowing what
//! the Tenant's spec no longer lists, so each is deleted — but only once
//! the new policy is in its namespace, so the namespace is never without a
//! policy in between.
//!
//! They are found by the NetworkPolicy watch the Tenant controller has
//! anyway ([`LegacyPolicies::observe`]): no extra list, and none at all
//! once they are gone.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams};
use kube::{Client, ResourceExt};

use crate::apply::delete_if_present;
use crate::error::Result;
use crate::tenant_namespace::child_names;

/// Legacy policies seen by the watch and not yet deleted, per namespace.
#[derive(Debug, Default)]
pub struct LegacyPolicies {
    found: Mutex<HashMap<String, BTreeSet<String>>>,
}

impl LegacyPolicies {
    fn found(&self) -> std::sync::MutexGuard<'_, HashMap<String, BTreeSet<String>>> {
        self.found.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A NetworkPolicy watch event (`deleted` for a Delete). True when it
    /// is a legacy policy still present: its Tenant should look again.
    pub fn observe(&self, policy: &NetworkPolicy, deleted: bool) -> bool {
        let (Some(namespace), name) = (policy.namespace(), policy.name_any()) else { return false };
        if !child_names::LEGACY_POLICIES.contains(&name.as_str()) {
            return false;
        }
        let mut found = self.found();
        if deleted {
            if let Some(names) = found.get_mut(&namespace) {
                names.remove(&name);
                if names.is_empty() {
                    found.remove(&namespace);
                }
            }
            return false;
        }
        found.entry(namespace).or_default().insert(name);
        true
    }

    /// Deletes the legacy policies known in `namespace`. Call only once the
    /// replacing policy is in place there.
    pub async fn remove(&self, client: &Client, namespace: &str) -> Result<()> {
        let Some(names) = self.found().remove(namespace) else { return Ok(()) };
        let api: Api<NetworkPolicy> = Api::namespaced(client.clone(), namespace);
        for name in &names {
            match delete_if_present(&api, name, &DeleteParams::default()).await {
                Ok(true) => tracing::info!(%namespace, policy = %name, "removed a NetworkPolicy of an earlier version"),
                Ok(false) => {}
                Err(error) => {
                    // Kept for the next pass.
                    self.found().entry(namespace.to_owned()).or_default().extend(names.iter().cloned());
                    return Err(error);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(namespace: &str, name: &str) -> NetworkPolicy {
        let mut policy = NetworkPolicy::default();
        policy.metadata.namespace = Some(namespace.into());
        policy.metadata.name = Some(name.into());
        policy
    }

    #[test]
    fn only_legacy_policies_are_remembered_and_deleted_ones_forgotten() {
        let legacy = LegacyPolicies::default();
        assert!(!legacy.observe(&policy("tenant-a", child_names::NETWORK_POLICY), false));
        assert!(!legacy.observe(&policy("tenant-a", "someone-elses"), false));
        assert!(legacy.observe(&policy("tenant-a", "ember-default-deny"), false));
        assert!(legacy.observe(&policy("tenant-a", "ember-allow-dns"), false));
        assert!(!legacy.observe(&policy("tenant-a", "ember-allow-dns"), true));
        assert_eq!(legacy.found().get("tenant-a").map(|n| n.len()), Some(1));
        assert!(!legacy.observe(&policy("tenant-a", "ember-default-deny"), true));
        assert!(legacy.found().is_empty());
    }
}
