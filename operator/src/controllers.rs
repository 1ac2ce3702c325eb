//! Runs every controller of the operator side by side with one shutdown
//! signal: what the leader does, and what the integration tests start.

use std::sync::Arc;

use futures::FutureExt;

use crate::context::Context;
use crate::tenant_watch::TenantWatch;
use crate::{model_deployment, tenant};

/// Runs the Tenant and ModelDeployment controllers until `shutdown`
/// resolves; both drain their in-flight reconciles before this returns.
pub async fn run(
    ctx: Arc<Context>,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    // Each controller needs its own shutdown future; `shared` hands both the same signal.
    let shutdown = shutdown.boxed().shared();
    // One Tenant watch for both; each subscribes before it starts.
    let tenants = TenantWatch::new();
    let (for_tenants, for_models) = (tenants.subscribe(), tenants.subscribe());
    tokio::join!(
        tenants.run(ctx.client.clone(), shutdown.clone()),
        tenant::run(ctx.clone(), for_tenants, concurrency, shutdown.clone()),
        model_deployment::run(ctx, for_models, concurrency, shutdown),
    );
}
