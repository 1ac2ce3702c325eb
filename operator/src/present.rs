//! Which of the operator's optional children exist, as their watches show.
//!
//! Some children grant nothing when empty: a RoleBinding or
//! ClusterRoleBinding without subjects. Those are not made for a Tenant
//! that has nobody to bind; but one made earlier, whose subjects the spec
//! has since dropped, must be emptied, or the people removed would keep
//! their access. Likewise the per-tenant reader ClusterRole and binding,
//! deleted where they exist when the configuration turns them off. The
//! watches the Tenant controller has anyway tell which exist
//! ([`PresenceTracker::note`]), so deciding costs no request.
//!
//! After a restart the set fills as the watches list; a binding listed
//! after its Tenant's first pass wakes that Tenant (the operator has no
//! record of writing it, see [`crate::written`]), and that pass empties it.

use std::collections::HashSet;
use std::marker::PhantomData;
use std::sync::Mutex;

use kube::Resource;
use kube::runtime::watcher;

use crate::written::ChildKey;

/// The children (of the kinds tracked) that exist.
#[derive(Debug, Default)]
pub struct Present {
    keys: Mutex<HashSet<ChildKey>>,
}

impl Present {
    fn keys(&self) -> std::sync::MutexGuard<'_, HashSet<ChildKey>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the watch last showed `object` as existing.
    pub fn contains<K: Resource<DynamicType = ()>>(&self, object: &K) -> bool {
        self.keys().contains(&ChildKey::of(object))
    }
}

/// Keeps a [`Present`] in step with the watch events of one kind.
#[derive(Debug)]
pub struct PresenceTracker<K> {
    present: std::sync::Arc<Present>,
    /// Keys shown by a relist in progress.
    relisted: Option<HashSet<ChildKey>>,
    kind: PhantomData<fn(K)>,
}

impl<K: Resource<DynamicType = ()>> PresenceTracker<K> {
    pub fn new(present: std::sync::Arc<Present>) -> Self {
        Self { present, relisted: None, kind: PhantomData }
    }

    /// Records `event`. A relist (a watch that started over) replaces what
    /// it does not show once it is done; until then the earlier set stands,
    /// so an object is at worst thought present a little too long (and
    /// then emptied once more), never missed.
    pub fn note(&mut self, event: &watcher::Event<K>) {
        match event {
            watcher::Event::Init => self.relisted = Some(HashSet::new()),
            watcher::Event::InitApply(object) => {
                let key = ChildKey::of(object);
                self.relisted.get_or_insert_default().insert(key.clone());
                self.present.keys().insert(key);
            }
            watcher::Event::InitDone => {
                let seen = self.relisted.take().unwrap_or_default();
                let kind = K::kind(&());
                self.present.keys().retain(|key| !key.is_kind(&kind) || seen.contains(key));
            }
            watcher::Event::Apply(object) => {
                self.present.keys().insert(ChildKey::of(object));
            }
            watcher::Event::Delete(object) => {
                self.present.keys().remove(&ChildKey::of(object));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
    use kube::api::ObjectMeta;

    use super::*;

    fn binding(name: &str) -> RoleBinding {
        RoleBinding {
            metadata: ObjectMeta { name: Some(name.into()), namespace: Some("tenant-a".into()), ..Default::default() },
            ..Default::default()
        }
    }

    #[test]
    fn follows_applies_deletions_and_relists() {
        let present = Arc::new(Present::default());
        let mut tracker = PresenceTracker::<RoleBinding>::new(present.clone());
        assert!(!present.contains(&binding("a")));
        tracker.note(&watcher::Event::Apply(binding("a")));
        tracker.note(&watcher::Event::Apply(binding("b")));
        assert!(present.contains(&binding("a")) && present.contains(&binding("b")));
        tracker.note(&watcher::Event::Delete(binding("a")));
        assert!(!present.contains(&binding("a")));

        // A relist that no longer shows b (deleted while the watch was down)
        // keeps it until the relist is done, then drops it.
        tracker.note(&watcher::Event::Init);
        tracker.note(&watcher::Event::InitApply(binding("c")));
        assert!(present.contains(&binding("b")) && present.contains(&binding("c")));
        tracker.note(&watcher::Event::InitDone);
        assert!(!present.contains(&binding("b")) && present.contains(&binding("c")));
    }

    #[test]
    fn a_relist_of_one_kind_leaves_the_other_kinds_alone() {
        let present = Arc::new(Present::default());
        let mut roles = PresenceTracker::<RoleBinding>::new(present.clone());
        let mut cluster = PresenceTracker::<ClusterRoleBinding>::new(present.clone());
        let reader = ClusterRoleBinding {
            metadata: ObjectMeta { name: Some("reader".into()), ..Default::default() },
            ..Default::default()
        };
        cluster.note(&watcher::Event::Apply(reader.clone()));
        roles.note(&watcher::Event::Init);
        roles.note(&watcher::Event::InitDone);
        assert!(present.contains(&reader));
    }
}
