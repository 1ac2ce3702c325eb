//! Watch caches of Tenants and ModelDeployments: reads are answered from
//! memory (no API-server round trip per GET), writes go to the API server.
//!
//! The watches reconnect with backoff on their own, so an API-server outage
//! only makes reads stale and writes fail with 503 until it is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ember_crds::model_deployment::ModelDeployment;
use ember_crds::tenant::Tenant;
use futures::StreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

#[derive(Clone, Debug)]
pub struct Caches {
    tenants: Store<Tenant>,
    deployments: Store<ModelDeployment>,
    synced: Arc<AtomicBool>,
}

impl Caches {
    /// Starts both watches on the current tokio runtime.
    pub fn start(client: Client) -> Self {
        let (tenants, tenant_writer) = reflector::store();
        let (deployments, deployment_writer) = reflector::store();
        let tenant_events = reflector(tenant_writer, watcher(Api::<Tenant>::all(client.clone()), Default::default()));
        let deployment_events =
            reflector(deployment_writer, watcher(Api::<ModelDeployment>::all(client), Default::default()));
        tokio::spawn(drain("tenants", tenant_events.default_backoff()));
        tokio::spawn(drain("modeldeployments", deployment_events.default_backoff()));

        let synced = Arc::new(AtomicBool::new(false));
        let (t, d, flag) = (tenants.clone(), deployments.clone(), synced.clone());
        tokio::spawn(async move {
            if t.wait_until_ready().await.is_ok() && d.wait_until_ready().await.is_ok() {
                flag.store(true, Ordering::Release);
                tracing::info!("watch caches synced");
            }
        });
        Self { tenants, deployments, synced }
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

    pub fn deployments_in(&self, namespace: &str) -> Vec<Arc<ModelDeployment>> {
        let mut found = self.deployments.state_filter(|md| md.metadata.namespace.as_deref() == Some(namespace));
        found.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        found
    }
}

/// Keeps a watch running; errors are logged and retried by the backoff.
async fn drain<S, T>(what: &'static str, stream: S)
where
    S: futures::Stream<Item = Result<T, watcher::Error>> + Send + 'static,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        if let Err(error) = event {
            tracing::warn!(%error, watch = what, "watch failed; retrying");
        }
    }
}
