//! One watch of Tenants, shared by both controllers.
//!
//! The Tenant controller reconciles Tenants; the ModelDeployment controller
//! reads them (is the tenant suspended, is its namespace set up) and is woken
//! by the changes that matter to serving. Each used to open its own watch and
//! keep its own cache: two copies of every Tenant in memory (at 10,000
//! tenants, megabytes), and two more watch events for the API server to send
//! on every Tenant write. Here one reflector feeds one [`Store`], and each
//! controller subscribes to it, filtered by what wakes it ([`changes`]).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

use ember_crds::tenant::Tenant;
use ember_crds::undecodable::understood;
use futures::{Stream, StreamExt, future};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{self, ObjectRef, ReflectHandle, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use crate::cache::slim;

/// Events the watch may be ahead of its slowest subscriber by. When the
/// buffer is full the watch waits: a subscriber is a controller's trigger
/// stream, which only queues the Tenant, so this is a burst of thousands
/// (a relist), not steady lag.
const BUFFER: usize = 1024;

/// The shared cache and the handles subscribers are made from.
#[allow(missing_debug_implementations)] // kube's `Writer` has no Debug
pub struct TenantWatch {
    store: Store<Tenant>,
    writer: Writer<Tenant>,
}

impl TenantWatch {
    pub fn new() -> Self {
        let (store, writer) = reflector::store_shared(BUFFER);
        Self { store, writer }
    }

    /// A stream of every Tenant the watch applies, from now on; its
    /// `reader()` is the shared cache. Subscribe before [`Self::run`]
    /// starts, or the first events are missed.
    pub fn subscribe(&self) -> ReflectHandle<Tenant> {
        self.writer.subscribe().expect("the writer was made by store_shared")
    }

    /// Runs the watch until `shutdown`: decodes what it can (a Tenant this
    /// version cannot read is left out, see `ember_crds::undecodable`),
    /// strips what no controller reads, keeps the store and feeds the
    /// subscribers. When it stops, the subscribers' streams end.
    pub async fn run(self, client: Client, shutdown: impl Future<Output = ()>) {
        let events = understood(watcher(Api::<DeserializeGuard<Tenant>>::all(client), Default::default()), self.store)
            .modify(slim)
            .default_backoff()
            .reflect_shared(self.writer)
            .for_each(|event| {
                if let Err(error) = event {
                    tracing::warn!(%error, "the Tenant watch failed; retrying with backoff");
                }
                future::ready(())
            });
        futures::pin_mut!(events, shutdown);
        future::select(events, shutdown).await;
    }
}

impl Default for TenantWatch {
    fn default() -> Self {
        Self::new()
    }
}

/// The Tenants of `subscribed` whose `key` changed since the last one of the
/// same name passed (the first of each always passes, and so does a new
/// Tenant of an earlier one's name): what a controller reacts to, without the
/// writes that do not concern it. One entry per name ever seen (a name and a
/// number), as kube's own predicate filter keeps.
pub fn changes(
    subscribed: impl Stream<Item = Arc<Tenant>> + Send + 'static,
    key: fn(&Tenant) -> u64,
) -> impl Stream<Item = Arc<Tenant>> + Send + 'static {
    let last: Mutex<HashMap<ObjectRef<Tenant>, u64>> = Mutex::default();
    subscribed.filter(move |tenant| {
        let mut hasher = DefaultHasher::new();
        (key(tenant), &tenant.metadata.uid).hash(&mut hasher);
        let key = hasher.finish();
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        let changed = last.insert(ObjectRef::from_obj(tenant.as_ref()), key) != Some(key);
        future::ready(changed)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str, generation: i64) -> Arc<Tenant> {
        tenant_with_uid(name, generation, "uid-1")
    }

    fn tenant_with_uid(name: &str, generation: i64, uid: &str) -> Arc<Tenant> {
        let mut tenant = Tenant::new(name, Default::default());
        tenant.metadata.generation = Some(generation);
        tenant.metadata.uid = Some(uid.into());
        Arc::new(tenant)
    }

    #[tokio::test]
    async fn passes_the_first_of_each_tenant_and_then_only_changes_of_the_key() {
        let generation = |t: &Tenant| t.metadata.generation.unwrap_or_default() as u64;
        let events = futures::stream::iter([
            tenant("a", 1),
            tenant("b", 1),
            tenant("a", 1), // a status write: same generation
            tenant("a", 2),
            tenant("b", 1),
            tenant_with_uid("a", 2, "uid-2"), // deleted and made again, unseen in between
        ]);
        let passed: Vec<(String, i64)> = changes(events, generation)
            .map(|t| (t.metadata.name.clone().unwrap_or_default(), t.metadata.generation.unwrap_or_default()))
            .collect()
            .await;
        assert_eq!(passed, [("a".into(), 1), ("b".into(), 1), ("a".into(), 2), ("a".into(), 2)]);
    }
}
