//! Watch caches of Tenants and ModelDeployments: reads are answered from
//! memory (no API-server round trip per GET), writes go to the API server.
//!
//! The watches reconnect with backoff on their own, so an API-server outage
//! only makes reads stale and writes fail with 503 until it is back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;

use ember_crds::model_deployment::ModelDeployment;
use ember_crds::tenant::Tenant;
use ember_crds::undecodable::understood;
use futures::StreamExt;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

#[derive(Clone, Debug)]
pub struct Caches {
    tenants: Store<Tenant>,
    deployments: Store<ModelDeployment>,
    synced: Arc<AtomicBool>,
    /// Deployment lists as answered, per namespace (see [`ListBodies`]).
    lists: Arc<ListBodies>,
}

impl Caches {
    /// Starts both watches on the current tokio runtime.
    pub fn start(client: Client) -> Self {
        let (tenants, tenant_writer) = reflector::store();
        let (deployments, deployment_writer) = reflector::store();
        // An object this version cannot decode is left out of the cache
        // rather than stopping the watch (see `ember_crds::undecodable`).
        let tenant_watch = watcher(Api::<DeserializeGuard<Tenant>>::all(client.clone()), Default::default());
        let tenant_events = reflector(tenant_writer, understood(tenant_watch, tenants.clone()));
        let deployment_watch = watcher(Api::<DeserializeGuard<ModelDeployment>>::all(client), Default::default());
        let deployment_events = reflector(deployment_writer, understood(deployment_watch, deployments.clone()));
        let lists = Arc::new(ListBodies::default());
        tokio::spawn(drain("tenants", tenant_events.default_backoff(), |_| {}));
        let stale = lists.clone();
        // The reflector has applied each event to the store before it
        // reaches here, so a list built after this invalidation sees it.
        tokio::spawn(drain("modeldeployments", deployment_events.default_backoff(), move |event| match event {
            watcher::Event::Apply(md) | watcher::Event::Delete(md) => {
                stale.invalidate(md.metadata.namespace.as_deref().unwrap_or_default())
            }
            watcher::Event::Init | watcher::Event::InitApply(_) | watcher::Event::InitDone => stale.invalidate_all(),
        }));

        let synced = Arc::new(AtomicBool::new(false));
        let (t, d, flag) = (tenants.clone(), deployments.clone(), synced.clone());
        tokio::spawn(async move {
            if t.wait_until_ready().await.is_ok() && d.wait_until_ready().await.is_ok() {
                flag.store(true, Ordering::Release);
                tracing::info!("watch caches synced");
            }
        });
        Self { tenants, deployments, synced, lists }
    }

    /// True once both caches hold a full list (drives `/readyz`).
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub fn tenant(&self, name: &str) -> Option<Arc<Tenant>> {
        self.tenants.get(&ObjectRef::new(name))
    }

    pub fn tenants(&self) -> Vec<Arc<Tenant>> {
        self.tenants.state()
    }

    pub fn deployment(&self, namespace: &str, name: &str) -> Option<Arc<ModelDeployment>> {
        self.deployments.get(&ObjectRef::new(name).within(namespace))
    }

    /// The answer to a deployment list of `namespace` (of `tenant`): built
    /// by `render` from the cache on the first request after a change to
    /// the namespace's deployments, then served as is.
    pub fn deployment_list(
        &self,
        tenant: &str,
        namespace: &str,
        render: impl FnOnce(&[Arc<ModelDeployment>]) -> Bytes,
    ) -> Bytes {
        let key = (tenant.to_owned(), namespace.to_owned());
        if let Some(body) = self.lists.get(&key) {
            return body;
        }
        let version = self.lists.version(namespace);
        let body = render(&self.deployments_in(namespace));
        self.lists.put(key, version, body.clone());
        body
    }

    pub fn deployments_in(&self, namespace: &str) -> Vec<Arc<ModelDeployment>> {
        let mut found = self.deployments.state_filter(|md| md.metadata.namespace.as_deref() == Some(namespace));
        found.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        found
    }
}

/// Keeps a watch running, showing each event to `seen`; errors are logged
/// and retried by the backoff.
async fn drain<S, T>(what: &'static str, stream: S, seen: impl Fn(&T))
where
    S: futures::Stream<Item = Result<T, watcher::Error>> + Send + 'static,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => seen(&event),
            Err(error) => tracing::warn!(%error, watch = what, "watch failed; retrying"),
        }
    }
}

/// Serialised deployment lists by (tenant, namespace): the list route's
/// answer costs a map lookup instead of a scan of every cached deployment,
/// a copy and a serialisation per request.
///
/// Each namespace has a version that every change to one of its
/// deployments raises (and a relist raises all of them); a list is kept
/// only when the version it was built at is still current, so a list built
/// from the store just before a change can never outlive that change.
#[derive(Debug, Default)]
struct ListBodies {
    state: Mutex<ListState>,
}

#[derive(Debug, Default)]
struct ListState {
    /// Raised by every relist; part of every version.
    epoch: u64,
    versions: HashMap<String, u64>,
    bodies: HashMap<(String, String), Bytes>,
}

impl ListBodies {
    fn lock(&self) -> std::sync::MutexGuard<'_, ListState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, key: &(String, String)) -> Option<Bytes> {
        self.lock().bodies.get(key).cloned()
    }

    fn version(&self, namespace: &str) -> (u64, u64) {
        let state = self.lock();
        (state.epoch, state.versions.get(namespace).copied().unwrap_or_default())
    }

    fn put(&self, key: (String, String), built_at: (u64, u64), body: Bytes) {
        let mut state = self.lock();
        let current = (state.epoch, state.versions.get(&key.1).copied().unwrap_or_default());
        if current == built_at {
            state.bodies.insert(key, body);
        }
    }

    fn invalidate(&self, namespace: &str) {
        let mut state = self.lock();
        *state.versions.entry(namespace.to_owned()).or_default() += 1;
        state.bodies.retain(|(_, ns), _| ns != namespace);
    }

    fn invalidate_all(&self) {
        let mut state = self.lock();
        state.epoch += 1;
        state.bodies.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(namespace: &str) -> (String, String) {
        ("acme".to_owned(), namespace.to_owned())
    }

    #[test]
    fn a_list_built_before_a_change_is_not_kept() {
        let lists = ListBodies::default();
        let before = lists.version("tenant-acme");
        lists.invalidate("tenant-acme"); // a change lands while the list is built
        lists.put(key("tenant-acme"), before, Bytes::from_static(b"[old]"));
        assert_eq!(lists.get(&key("tenant-acme")), None);

        let now = lists.version("tenant-acme");
        lists.put(key("tenant-acme"), now, Bytes::from_static(b"[new]"));
        assert_eq!(lists.get(&key("tenant-acme")), Some(Bytes::from_static(b"[new]")));
        lists.invalidate("tenant-other");
        assert!(lists.get(&key("tenant-acme")).is_some(), "other namespaces' changes leave it");
        lists.invalidate("tenant-acme");
        assert_eq!(lists.get(&key("tenant-acme")), None);
    }

    #[test]
    fn a_relist_drops_every_list() {
        let lists = ListBodies::default();
        let before = lists.version("tenant-acme");
        lists.put(key("tenant-acme"), before, Bytes::from_static(b"[]"));
        lists.invalidate_all();
        assert_eq!(lists.get(&key("tenant-acme")), None);
        lists.put(key("tenant-acme"), before, Bytes::from_static(b"[]"));
        assert_eq!(lists.get(&key("tenant-acme")), None, "built before the relist");
    }
}
