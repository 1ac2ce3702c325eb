//! Graceful shutdown: on SIGTERM (what Kubernetes sends) or Ctrl-C the
//! server stops accepting connections and lets requests in flight finish,
//! for at most a deadline below the pod's termination grace period.

use std::time::Duration;

use tokio::sync::watch;

/// How long requests in flight may take to finish after the signal; below
/// Kubernetes' default 30 s grace period, so nothing is cut by SIGKILL.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(25);

/// Whether shutdown was asked for; cheap to clone into every place that
/// waits for it.
#[derive(Debug, Clone)]
pub struct Shutdown {
    requested: watch::Receiver<bool>,
}

impl Shutdown {
    /// Starts listening for SIGTERM and Ctrl-C.
    pub fn on_signals() -> Self {
        let (tell, requested) = watch::channel(false);
        tokio::spawn(async move {
            signalled().await;
            tracing::info!(
                deadline_seconds = DRAIN_DEADLINE.as_secs(),
                "shutdown requested; draining requests in flight"
            );
            let _ = tell.send(true);
        });
        Self { requested }
    }

    /// Resolves once shutdown is asked for.
    pub async fn requested(mut self) {
        // An error means the sender is gone, which only happens after it sent.
        let _ = self.requested.wait_for(|asked| *asked).await;
    }
}

async fn signalled() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                return;
            }
            Err(error) => tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the server gracefully"),
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
