//! What the operator last wrote to each child object, so that a pass skips
//! applies that would change nothing, and a child's watch event wakes its
//! owner only when someone else changed the child.
//!
//! Each entry holds two fingerprints: of the body the operator sent (the
//! desired object) and of the object as the API server returned it, without
//! the parts that change by themselves (status, resourceVersion,
//! managedFields). A pass whose desired body has the recorded sent
//! fingerprint, for a child nobody changed since, has nothing to write. A
//! watch event whose live fingerprint equals the recorded one is the echo of
//! the operator's own write (or a status update nobody needs to act on) and
//! wakes nothing; any other event forgets the entry and wakes the owner, who
//! then applies again — which is how a hand edit is reverted within moments.
//!
//! Kept in memory only: after a restart (or a leader change) every child is
//! applied once more, and from then on an idle operator writes nothing.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

use kube::Resource;
use kube::runtime::watcher;
use serde::Serialize;
use serde_json::Value;

/// One child object: its kind, and a 64-bit hash of its namespace and name.
///
/// A hash instead of the two strings keeps an entry at a few dozen bytes,
/// which is most of this memory at 10,000 tenants (≈17 children each). Two
/// children of one kind colliding is about as likely as 2⁻⁶⁴ per pair, and
/// even then the only effect is one apply skipped until the next change.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChildKey {
    kind: Cow<'static, str>,
    object: u64,
}

impl ChildKey {
    pub fn of<K: Resource<DynamicType = ()>>(object: &K) -> Self {
        let mut hasher = DefaultHasher::new();
        (object.meta().namespace.as_deref(), object.meta().name.as_deref()).hash(&mut hasher);
        Self { kind: K::kind(&()), object: hasher.finish() }
    }

    /// Whether this is a child of `kind`.
    pub fn is_kind(&self, kind: &str) -> bool {
        self.kind == kind
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    sent: u64,
    live: Applied,
}

/// Where an apply stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Applied {
    /// Sent, no answer yet. The child's watch events can overtake the
    /// answer (they travel another connection and another task); the last
    /// one seen is kept (`Some(live fingerprint)`, or `Some(DELETED)`) for
    /// the answer to be checked against.
    InFlight(Option<u64>),
    /// The object as the API server returned it.
    Live(u64),
}

/// What an overtaking deletion leaves in [`Applied::InFlight`]; no live
/// fingerprint of an object that exists is likely to be this value.
const DELETED: u64 = u64::MAX;

/// The operator's memory of its own writes (see the module docs).
#[derive(Debug, Default)]
pub struct Written {
    entries: Mutex<HashMap<ChildKey, Entry>>,
}

impl Written {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<ChildKey, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True when `sent` is what was last applied to the child and nobody has
    /// changed the child since: applying it again would change nothing.
    pub fn is_current(&self, key: &ChildKey, sent: u64) -> bool {
        self.entries().get(key).is_some_and(|entry| entry.sent == sent && matches!(entry.live, Applied::Live(_)))
    }

    /// An apply of `sent` is about to go out.
    pub fn begin(&self, key: ChildKey, sent: u64) {
        self.entries().insert(key, Entry { sent, live: Applied::InFlight(None) });
    }

    /// Remembers a successful apply: what was sent and what the server made
    /// of it. False (and nothing remembered) when a watch event that
    /// overtook the answer showed the child otherwise: someone changed it
    /// right after the operator did, and that event woke nobody, so the
    /// caller must look again.
    pub fn record(&self, key: ChildKey, sent: u64, live: u64) -> bool {
        let mut entries = self.entries();
        let overtaken_by_others = matches!(
            entries.get(&key),
            Some(Entry { live: Applied::InFlight(Some(seen)), .. }) if *seen != live
        );
        if overtaken_by_others {
            entries.remove(&key);
            return false;
        }
        entries.insert(key, Entry { sent, live: Applied::Live(live) });
        true
    }

    /// A watch event showing the child as `live`: true when the owner must
    /// look again (the child changed from what the operator wrote, or the
    /// operator has no record of it). During an apply, the event is kept for
    /// [`Self::record`] to judge instead.
    pub fn observe(&self, key: &ChildKey, live: u64) -> bool {
        let mut entries = self.entries();
        match entries.get_mut(key) {
            Some(Entry { live: Applied::InFlight(seen), .. }) => {
                *seen = Some(live);
                false
            }
            Some(Entry { live: Applied::Live(known), .. }) if *known == live => false,
            Some(_) => {
                entries.remove(key);
                true
            }
            None => true,
        }
    }

    /// The child was deleted: true when the owner must look again (always,
    /// except during an apply, whose answer is then refused by [`Self::record`]).
    pub fn deleted(&self, key: &ChildKey) -> bool {
        let mut entries = self.entries();
        if let Some(Entry { live: Applied::InFlight(seen), .. }) = entries.get_mut(key) {
            *seen = Some(DELETED);
            return false;
        }
        entries.remove(key);
        true
    }

    /// The child is gone (or must be applied again whatever it looks like).
    pub fn forget(&self, key: &ChildKey) {
        self.entries().remove(key);
    }

    /// After a relist of `kind` (a watch that had to start over): forgets
    /// the children of that kind the relist did not show. They were deleted
    /// while the watch was down, so no Delete event came; remembering them
    /// would keep a recreated child from ever being applied.
    pub fn forget_unseen(&self, kind: &str, seen: &HashSet<ChildKey>) {
        self.entries().retain(|key, _| key.kind != kind || seen.contains(key));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries().len()
    }
}

/// Keeps a [`Written`] in step with the watch events of one child kind,
/// for both controllers: a change shows as [`Written::observe`], a deletion
/// as [`Written::forget`], and a relist (a watch that had to start over)
/// forgets the children it no longer shows.
#[derive(Debug)]
pub struct EventTracker<K> {
    written: Arc<Written>,
    fingerprint: fn(&K) -> u64,
    /// Keys shown by a relist in progress.
    relisted: Option<HashSet<ChildKey>>,
}

impl<K: Resource<DynamicType = ()>> EventTracker<K> {
    pub fn new(written: Arc<Written>, fingerprint: fn(&K) -> u64) -> Self {
        Self { written, fingerprint, relisted: None }
    }

    /// Records `event`; true when it should wake the child's owner (someone
    /// else changed or deleted the child).
    pub fn note(&mut self, event: &watcher::Event<K>) -> bool {
        match event {
            watcher::Event::Init => {
                self.relisted = Some(HashSet::new());
                false
            }
            watcher::Event::InitApply(child) => {
                let key = ChildKey::of(child);
                let wake = self.written.observe(&key, (self.fingerprint)(child));
                self.relisted.get_or_insert_default().insert(key);
                wake
            }
            watcher::Event::InitDone => {
                self.written.forget_unseen(&K::kind(&()), &self.relisted.take().unwrap_or_default());
                false
            }
            watcher::Event::Apply(child) => self.written.observe(&ChildKey::of(child), (self.fingerprint)(child)),
            watcher::Event::Delete(child) => self.written.deleted(&ChildKey::of(child)),
        }
    }
}

/// Fingerprint of a body to send.
pub fn sent_fingerprint(body: &Value) -> u64 {
    let mut hasher = DefaultHasher::new();
    hash_value(body, &mut hasher);
    hasher.finish()
}

/// Annotations the cluster's own controllers stamp on children: the
/// Deployment controller numbers each rollout. Not an edit of anything the
/// operator sets, so no reason to apply again (it did, once per Deployment,
/// and the second apply then made the controller's next update conflict).
const CONTROLLER_ANNOTATIONS: [&str; 1] = ["deployment.kubernetes.io/revision"];

/// Fingerprint of an object as the API server has it, leaving out what
/// changes without anyone editing the object.
pub fn live_fingerprint<K: Serialize>(object: &K) -> u64 {
    let mut value = serde_json::to_value(object).unwrap_or(Value::Null);
    if let Some(fields) = value.as_object_mut() {
        fields.remove("status");
        if let Some(Value::Object(metadata)) = fields.get_mut("metadata") {
            for volatile in ["resourceVersion", "managedFields", "generation", "creationTimestamp"] {
                metadata.remove(volatile);
            }
            if let Some(Value::Object(annotations)) = metadata.get_mut("annotations") {
                CONTROLLER_ANNOTATIONS.iter().for_each(|key| drop(annotations.remove(*key)));
                if annotations.is_empty() {
                    metadata.remove("annotations");
                }
            }
        }
    }
    sent_fingerprint(&value)
}

/// Hashes JSON with object keys in sorted order, whatever order the map keeps.
fn hash_value(value: &Value, hasher: &mut DefaultHasher) {
    match value {
        Value::Null => 0u8.hash(hasher),
        Value::Bool(b) => (1u8, b).hash(hasher),
        Value::Number(n) => (2u8, n.to_string()).hash(hasher),
        Value::String(s) => (3u8, s).hash(hasher),
        Value::Array(items) => {
            (4u8, items.len()).hash(hasher);
            items.iter().for_each(|item| hash_value(item, hasher));
        }
        Value::Object(fields) => {
            (5u8, fields.len()).hash(hasher);
            let mut keys: Vec<&String> = fields.keys().collect();
            keys.sort();
            for key in keys {
                key.hash(hasher);
                hash_value(&fields[key], hasher);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn config_map(data: &str, resource_version: &str) -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "c", "namespace": "n", "resourceVersion": resource_version},
            "data": {"k": data},
        }))
        .unwrap_or_default()
    }

    #[test]
    fn the_echo_of_our_own_write_wakes_nothing_and_a_hand_edit_does() {
        let written = Written::default();
        let ours = config_map("a", "1");
        let key = ChildKey::of(&ours);
        assert!(written.observe(&key, live_fingerprint(&ours)), "unknown children wake their owner");
        written.record(key.clone(), 7, live_fingerprint(&ours));
        assert!(written.is_current(&key, 7));
        assert!(!written.is_current(&key, 8), "a different desired body is applied");

        // The same content at a later resourceVersion (a status change, a relist).
        assert!(!written.observe(&key, live_fingerprint(&config_map("a", "2"))));
        assert!(written.is_current(&key, 7));

        assert!(written.observe(&key, live_fingerprint(&config_map("edited", "3"))));
        assert!(!written.is_current(&key, 7), "after a hand edit the next pass applies again");
    }

    #[test]
    fn our_own_echo_overtaking_the_answer_wakes_nothing_and_a_later_change_is_caught() {
        let written = Written::default();
        let ours = config_map("a", "1");
        let key = ChildKey::of(&ours);

        written.begin(key.clone(), 7);
        assert!(!written.is_current(&key, 7), "not current before the answer");
        assert!(!written.observe(&key, live_fingerprint(&ours)), "the echo before the answer");
        assert!(written.record(key.clone(), 7, live_fingerprint(&ours)));
        assert!(written.is_current(&key, 7));

        written.begin(key.clone(), 8);
        assert!(!written.observe(&key, live_fingerprint(&ours)));
        assert!(!written.observe(&key, live_fingerprint(&config_map("edited", "3"))), "kept for the answer");
        assert!(!written.record(key.clone(), 8, live_fingerprint(&ours)), "someone changed it after us");
        assert!(!written.is_current(&key, 8), "so the next pass applies again");

        written.begin(key.clone(), 9);
        assert!(!written.deleted(&key));
        assert!(!written.record(key.clone(), 9, live_fingerprint(&ours)), "deleted meanwhile");
        assert!(written.deleted(&key), "a deletion outside an apply wakes the owner");
    }

    #[test]
    fn a_relist_forgets_children_deleted_while_the_watch_was_down() {
        let written = Written::default();
        let (kept, gone) = (config_map("a", "1"), {
            let mut c = config_map("b", "1");
            c.metadata.name = Some("gone".into());
            c
        });
        written.record(ChildKey::of(&kept), 1, 1);
        written.record(ChildKey::of(&gone), 2, 2);
        written.forget_unseen("ConfigMap", &HashSet::from([ChildKey::of(&kept)]));
        assert!(written.is_current(&ChildKey::of(&kept), 1));
        assert!(!written.is_current(&ChildKey::of(&gone), 2));
        written.forget_unseen("Secret", &HashSet::new());
        assert_eq!(written.len(), 1, "other kinds are left alone");
    }

    #[test]
    fn the_tracker_wakes_on_others_changes_and_deletions_and_forgets_what_a_relist_misses() {
        let written = Arc::new(Written::default());
        let mut tracker = EventTracker::new(written.clone(), live_fingerprint::<ConfigMap>);
        let (ours, gone) = (config_map("a", "1"), {
            let mut c = config_map("b", "1");
            c.metadata.name = Some("gone".into());
            c
        });
        written.record(ChildKey::of(&ours), 1, live_fingerprint(&ours));
        written.record(ChildKey::of(&gone), 2, live_fingerprint(&gone));

        assert!(!tracker.note(&watcher::Event::Apply(config_map("a", "2"))), "our own echo");
        assert!(tracker.note(&watcher::Event::Apply(config_map("edited", "3"))));
        written.record(ChildKey::of(&ours), 1, live_fingerprint(&ours));

        // A relist that no longer shows `gone` (deleted while the watch was down).
        assert!(!tracker.note(&watcher::Event::Init));
        assert!(!tracker.note(&watcher::Event::InitApply(config_map("a", "4"))));
        assert!(!tracker.note(&watcher::Event::InitDone));
        assert!(written.is_current(&ChildKey::of(&ours), 1));
        assert!(!written.is_current(&ChildKey::of(&gone), 2));

        assert!(tracker.note(&watcher::Event::Delete(ours.clone())));
        assert!(!written.is_current(&ChildKey::of(&ours), 1));
    }

    #[test]
    fn a_rollout_number_stamped_by_the_deployment_controller_is_no_edit() {
        use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
        let meta = |version: &str, annotations: &[(&str, &str)]| ObjectMeta {
            name: Some("m".into()),
            namespace: Some("t".into()),
            resource_version: Some(version.into()),
            annotations: (!annotations.is_empty())
                .then(|| annotations.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
            ..ObjectMeta::default()
        };
        let deployment = |metadata| Deployment {
            metadata,
            spec: DeploymentSpec { replicas: Some(1), ..DeploymentSpec::default() },
            ..Deployment::default()
        };
        let ours = deployment(meta("1", &[]));
        let stamped = deployment(meta("2", &[("deployment.kubernetes.io/revision", "1")]));
        assert_eq!(live_fingerprint(&ours), live_fingerprint(&stamped));
        let edited = deployment(meta("3", &[("deployment.kubernetes.io/revision", "1"), ("someone", "else")]));
        assert_ne!(live_fingerprint(&ours), live_fingerprint(&edited), "other annotations still count");
    }

    #[test]
    fn fingerprints_ignore_key_order() {
        let a: Value = serde_json::from_str(r#"{"a": 1, "b": {"c": [1, 2], "d": null}}"#).unwrap_or_default();
        let b: Value = serde_json::from_str(r#"{"b": {"d": null, "c": [1, 2]}, "a": 1}"#).unwrap_or_default();
        assert_eq!(sent_fingerprint(&a), sent_fingerprint(&b));
        let c: Value = serde_json::from_str(r#"{"b": {"d": null, "c": [2, 1]}, "a": 1}"#).unwrap_or_default();
        assert_ne!(sent_fingerprint(&a), sent_fingerprint(&c));
    }
}
