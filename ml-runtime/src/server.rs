//! Start-up and shutdown: size the thread pool, fetch and verify the model
//! files, load the model on the inference thread, serve HTTP, turn ready
//! after warm-up, and on shutdown stop accepting, finish in-flight requests
//! and stop the inference thread. A model that fails to load or verify
//! stops the server with the error: it never reports ready.

use std::future::{Future, IntoFuture};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::args::Args;
use crate::backend::device_for;
use crate::batcher::{BatchPolicy, Batcher};
use crate::error::{Error, Result};
use crate::http::{AppState, Limits, router};
use crate::metrics::Metrics;
use crate::model::{Model, ModelFiles, ModelInfo};
use crate::source::{FetchPolicy, FileSource, resolve};
use crate::threads;

/// A model being loaded (or loaded) plus the state the HTTP API serves.
#[derive(Debug)]
pub struct Runtime {
    state: Arc<AppState>,
    loading: Option<oneshot::Receiver<Result<ModelInfo>>>,
    inference_thread: std::thread::JoinHandle<()>,
}

struct ResolvedFiles {
    weights: PathBuf,
    config: PathBuf,
    tokenizer: Option<PathBuf>,
}

async fn resolve_files(args: &Args) -> Result<ResolvedFiles> {
    let policy = FetchPolicy {
        cache_dir: args.model_cache_dir.clone(),
        max_bytes: args.max_model_bytes,
        attempts: args.download_attempts,
        timeout: Duration::from_secs(args.download_timeout_secs),
    };
    let source = |uri: &str, sha256: &Option<String>| FileSource { uri: uri.to_owned(), sha256: sha256.clone() };
    let weights = resolve(&source(&args.model_uri, &args.model_sha256), &policy).await?;
    let config = resolve(&source(&args.config_uri, &args.config_sha256), &policy).await?;
    let tokenizer = match &args.tokenizer_uri {
        Some(uri) => Some(resolve(&source(uri, &args.tokenizer_sha256), &policy).await?),
        None => None,
    };
    Ok(ResolvedFiles { weights, config, tokenizer })
}

impl Runtime {
    /// Sizes the compute pool, fetches and verifies the files, and starts
    /// loading the model on the inference thread (not yet ready).
    pub async fn start(args: &Args) -> Result<Self> {
        let threads = if args.threads > 0 { args.threads } else { threads::cpu_budget() };
        threads::configure_compute_pool(threads);
        let files = resolve_files(args).await?;
        let metrics = Arc::new(Metrics::new());
        let policy = BatchPolicy {
            max_batch_size: args.max_batch_size,
            max_delay: Duration::from_millis(args.max_delay_ms),
            queue_capacity: args.queue_capacity,
        };
        let (architecture, task, backend, max_tokens) = (args.architecture, args.task, args.backend, args.max_tokens);
        let load = move || {
            let device = device_for(backend)?;
            let model_files =
                ModelFiles { weights: &files.weights, config: &files.config, tokenizer: files.tokenizer.as_deref() };
            let model = Model::load(architecture, task, &model_files, max_tokens, &device)?;
            let info = model.info(architecture);
            Ok((model, info))
        };
        let (loaded, loading) = oneshot::channel();
        let (batcher, inference_thread) = Batcher::start(policy, metrics.clone(), load, loaded)?;
        let limits = Limits {
            max_request_bytes: args.max_request_bytes,
            max_items_per_request: args.max_items_per_request,
            request_timeout: Duration::from_millis(args.request_timeout_ms),
        };
        let state = Arc::new(AppState::new(args.model_name.clone(), batcher, metrics, limits));
        Ok(Self { state, loading: Some(loading), inference_thread })
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Waits until the model is loaded and warmed up, then marks it ready.
    pub async fn wait_ready(&mut self) -> Result<()> {
        let Some(loading) = self.loading.take() else { return Ok(()) };
        let info = loading.await.map_err(|_| Error::Inference("the inference thread died while loading".into()))??;
        tracing::info!(model = %self.state.model_name, task = ?info.task, "model ready");
        self.state.set_ready(info);
        Ok(())
    }

    /// Serves on `listener` until `shutdown` resolves (then drains) or the
    /// model fails to load (then returns that error).
    pub async fn serve(
        mut self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let (stop, stopped) = oneshot::channel::<()>();
        let state = self.state.clone();
        let drain = async move {
            tokio::select! {
                () = shutdown => tracing::info!("shutdown requested: draining in-flight requests"),
                _ = stopped => {},
            }
            state.begin_shutdown();
        };
        let app = router(self.state.clone());
        let server = tokio::spawn(axum::serve(listener, app).with_graceful_shutdown(drain).into_future());
        if let Err(error) = self.wait_ready().await {
            let _ = stop.send(());
            let _ = server.await;
            return Err(error);
        }
        let served = server.await.map_err(|e| Error::Inference(format!("server task failed: {e}")))?;
        // Dropping the last state handle closes the queue; the inference
        // thread finishes what it has and exits.
        let Runtime { state, inference_thread, .. } = self;
        drop(state);
        let _ = tokio::task::spawn_blocking(move || inference_thread.join()).await;
        served.map_err(Error::Io)
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn termination_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
