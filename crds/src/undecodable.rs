//! Watches that survive objects this binary cannot decode.
//!
//! A plain `watcher::<Tenant>` fails its whole stream when one object does
//! not deserialize — say a ModelDeployment naming an architecture added to
//! the CRD by a newer release, applied while an older operator still runs.
//! The watcher then relists, meets the same object, and fails again: every
//! other tenant's changes wait behind that one object until it is fixed.
//! Watching `DeserializeGuard<K>` instead lets the list and each event
//! succeed; [`understood`] turns that stream back into one of `K`, leaving
//! out what it cannot read (with a warning naming the object) so the rest
//! keeps flowing.

use std::fmt::Debug;
use std::hash::Hash;

use futures::{Stream, StreamExt, future};
use kube::Resource;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::{self, Event};

/// The events of a `DeserializeGuard<K>` watch as events of `K`.
///
/// An object that cannot be decoded is left out of `Apply`/`InitApply`:
/// whoever caches `K` keeps the last copy it understood, if any, and a
/// relist forgets it. Its deletion still reaches the cache: `known` (the
/// store fed by the returned stream) supplies that last understood copy, so
/// a deleted object does not linger there.
pub fn understood<K, S>(events: S, known: Store<K>) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send
where
    K: Resource + Clone + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
    S: Stream<Item = Result<Event<DeserializeGuard<K>>, watcher::Error>> + Send,
{
    events.filter_map(move |event| {
        future::ready(match event {
            Ok(event) => understand(event, &known).map(Ok),
            Err(error) => Some(Err(error)),
        })
    })
}

/// One event of [`understood`]: `None` for an object that cannot be read
/// and is not known.
fn understand<K>(event: Event<DeserializeGuard<K>>, known: &Store<K>) -> Option<Event<K>>
where
    K: Resource + Clone + Debug,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    match event {
        Event::Init => Some(Event::Init),
        Event::InitDone => Some(Event::InitDone),
        Event::InitApply(DeserializeGuard(object)) => readable(object).map(Event::InitApply),
        Event::Apply(DeserializeGuard(object)) => readable(object).map(Event::Apply),
        Event::Delete(DeserializeGuard(Ok(object))) => Some(Event::Delete(object)),
        Event::Delete(DeserializeGuard(Err(invalid))) => {
            let name = invalid.metadata.name.clone().unwrap_or_default();
            let mut key = ObjectRef::<K>::new(&name);
            if let Some(namespace) = &invalid.metadata.namespace {
                key = key.within(namespace);
            }
            known.get(&key).map(|last| Event::Delete((*last).clone()))
        }
    }
}

fn readable<K: Resource>(object: Result<K, kube::core::error_boundary::InvalidObject>) -> Option<K>
where
    K::DynamicType: Default,
{
    object
        .map_err(|invalid| {
            let meta = &invalid.metadata;
            tracing::warn!(
                kind = %K::kind(&Default::default()),
                namespace = meta.namespace.as_deref().unwrap_or_default(),
                name = meta.name.as_deref().unwrap_or_default(),
                resource_version = meta.resource_version.as_deref().unwrap_or_default(),
                error = %invalid.error,
                "object left out: this version cannot decode it; the rest are watched as usual"
            );
        })
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model_deployment::ModelDeployment;
    use kube::runtime::reflector;
    use serde_json::json;

    /// The shipped example, renamed, with `architecture` as given.
    fn guarded(architecture: &str, name: &str) -> DeserializeGuard<ModelDeployment> {
        let mut object: serde_json::Value =
            serde_yaml::from_str(include_str!("../../examples/modeldeployment-minilm.yaml"))
                .unwrap_or_else(|e| panic!("{e}"));
        object["metadata"]["name"] = json!(name);
        object["metadata"]["resourceVersion"] = json!("7");
        object["spec"]["model"]["architecture"] = json!(architecture);
        serde_json::from_value(object).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn undecodable_objects_are_left_out_and_the_rest_flows() {
        let readable = guarded("bert", "scorer");
        assert!(readable.0.is_ok(), "the fixture must decode: {:?}", readable.0.err());
        let future = guarded("llama", "future");
        assert!(future.0.is_err(), "an unknown architecture must not decode");

        let (store, mut writer) = reflector::store::<ModelDeployment>();
        let mut feed = |event: Event<DeserializeGuard<ModelDeployment>>| {
            let out = understand(event, &store);
            if let Some(out) = &out {
                writer.apply_watcher_event(out);
            }
            out
        };
        assert!(matches!(feed(Event::Init), Some(Event::Init)));
        assert!(feed(Event::InitApply(future.clone())).is_none());
        assert!(matches!(feed(Event::InitApply(readable.clone())), Some(Event::InitApply(_))));
        assert!(matches!(feed(Event::InitDone), Some(Event::InitDone)));
        let names = |s: &Store<ModelDeployment>| {
            let mut n: Vec<_> = s.state().iter().filter_map(|m| m.metadata.name.clone()).collect();
            n.sort();
            n
        };
        assert_eq!(names(&store), ["scorer"]);

        // A known object that a newer writer made unreadable keeps its last
        // understood copy; its deletion removes that copy.
        assert!(feed(Event::Apply(guarded("llama", "scorer"))).is_none());
        assert_eq!(names(&store), ["scorer"]);
        assert!(matches!(feed(Event::Delete(guarded("llama", "scorer"))), Some(Event::Delete(_))));
        assert!(names(&store).is_empty());
        // The deletion of an object never understood is nothing to anyone.
        assert!(feed(Event::Delete(future)).is_none());
    }
}
