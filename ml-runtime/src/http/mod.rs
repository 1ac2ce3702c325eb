//! The HTTP API: shared state, the router assembled from one `router()` per
//! area (v2 protocol, OpenAI embeddings, health/metrics), and the layers
//! around it (metrics, body limit, timeout).
//!
//! Every successful inference answer also says what it cost in headers
//! ([`Usage`]), so a gateway can meter calls without parsing bodies.

mod error;
pub mod health;
pub mod openai;
pub mod v2;
pub mod v2_codec;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use tower_http::timeout::TimeoutLayer;

use crate::batcher::Batcher;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::model::{Item, ItemOutput, ModelInfo};

/// Request limits (`--max-request-bytes`, `--max-items-per-request`,
/// `--request-timeout-ms`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_request_bytes: usize,
    pub max_items_per_request: usize,
    pub request_timeout: Duration,
}

/// What every handler can reach.
#[derive(Debug)]
pub struct AppState {
    pub model_name: String,
    pub batcher: Batcher,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// Set once the model is loaded and warmed up.
    info: OnceLock<ModelInfo>,
    /// Set on SIGTERM: readiness drops so traffic drains away.
    shutting_down: AtomicBool,
}

impl AppState {
    pub fn new(model_name: String, batcher: Batcher, metrics: Arc<Metrics>, limits: Limits) -> Self {
        Self { model_name, batcher, metrics, limits, info: OnceLock::new(), shutting_down: AtomicBool::new(false) }
    }

    /// Marks the model loaded and warmed up.
    pub fn set_ready(&self, info: ModelInfo) {
        let _ = self.info.set(info);
        self.metrics.set_ready(self.is_ready());
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        self.metrics.set_ready(false);
    }

    pub fn is_ready(&self) -> bool {
        self.info.get().is_some() && !self.shutting_down.load(Ordering::Acquire)
    }

    /// The model's description, or 503 while loading.
    pub fn model_info(&self) -> Result<&ModelInfo> {
        self.info.get().ok_or(Error::NotReady)
    }

    /// Checks a model name from a URL or body.
    pub fn check_model(&self, name: &str) -> Result<&ModelInfo> {
        if name != self.model_name {
            return Err(Error::UnknownModel(name.to_owned()));
        }
        self.model_info()
    }

    /// Validates and runs `items`, bounded by the request timeout; also
    /// what the run cost.
    pub async fn run(&self, items: Vec<Item>) -> Result<(Vec<ItemOutput>, Usage)> {
        let started = Instant::now();
        let outputs = self.run_items(items).await?;
        let usage =
            Usage { items: outputs.len(), tokens: outputs.iter().map(|o| o.tokens).sum(), compute: started.elapsed() };
        Ok((outputs, usage))
    }

    async fn run_items(&self, items: Vec<Item>) -> Result<Vec<ItemOutput>> {
        let info = self.model_info()?;
        if items.is_empty() {
            return Err(Error::BadRequest("the batch is empty: send at least one input row".into()));
        }
        if items.len() > self.limits.max_items_per_request {
            return Err(Error::BadRequest(format!(
                "{} inputs in one request; the limit is {}",
                items.len(),
                self.limits.max_items_per_request
            )));
        }
        items.iter().try_for_each(|item| info.validate(item))?;
        let timeout = self.limits.request_timeout;
        tokio::time::timeout(timeout, self.batcher.submit(items))
            .await
            .map_err(|_| Error::Timeout { millis: timeout.as_millis() as u64 })?
    }
}

/// Items in an answered request (texts, token rows or feature rows).
pub const ITEMS_HEADER: &str = "x-ember-items";
/// Tokens the model read for them (0 for feature rows).
pub const TOKENS_HEADER: &str = "x-ember-tokens";
/// Microseconds from the validated request to its outputs: the batch queue
/// wait and the model's run of the batch(es) it rode in.
pub const COMPUTE_HEADER: &str = "x-ember-compute-us";

/// What one inference request cost, answered in the three headers above
/// (only on success: a refused request ran nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub items: usize,
    pub tokens: usize,
    pub compute: Duration,
}

impl Usage {
    pub fn insert_into(&self, headers: &mut HeaderMap) {
        headers.insert(ITEMS_HEADER, HeaderValue::from(self.items));
        headers.insert(TOKENS_HEADER, HeaderValue::from(self.tokens));
        headers.insert(COMPUTE_HEADER, HeaderValue::from(self.compute.as_micros().min(u64::MAX as u128) as u64));
    }
}

/// The whole API. Layers, outermost first: metrics, timeout, body limit.
pub fn router(state: Arc<AppState>) -> Router {
    let limits = state.limits;
    Router::new()
        .merge(v2::router())
        .merge(openai::router())
        .merge(health::router())
        .layer(DefaultBodyLimit::max(limits.max_request_bytes))
        // A safety net above the per-request inference timeout, for slow
        // request bodies and anything else that hangs.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout + Duration::from_secs(5),
        ))
        .layer(middleware::from_fn_with_state(state.clone(), record_metrics))
        .with_state(state)
}

async fn record_metrics(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let _in_flight = state.metrics.track_in_flight();
    let response = next.run(request).await;
    state.metrics.observe_request(&route, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

/// Turns axum's body rejection into our error (413 keeps its meaning).
pub(crate) fn body_rejection(rejection: axum::extract::rejection::BytesRejection, limit: usize) -> Error {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Error::PayloadTooLarge { limit }
    } else {
        Error::BadRequest(format!("could not read the request body: {rejection}"))
    }
}
