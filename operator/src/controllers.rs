//! Runs every controller of the operator side by side with one shutdown
//! signal: what the leader does, and what the integration tests start.

use std::sync::Arc;

use futures::FutureExt;

use crate::context::Context;
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
    tokio::join!(
        tenant::run(ctx.clone(), concurrency, shutdown.clone()),
        model_deployment::run(ctx, concurrency, shutdown),
    );
}
