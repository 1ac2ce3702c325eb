//! Liveness, readiness and Prometheus metrics endpoints for Kubernetes
//! probes and scraping.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::AppState;

pub fn router() -> Router<Arc<AppState>> {
    Router::new().route("/healthz", get(live)).route("/readyz", get(ready)).route("/metrics", get(metrics))
}

/// Live as long as the process answers.
async fn live() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

/// Ready once the model is loaded and warmed up, until shutdown starts.
async fn ready(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if state.is_ready() { (StatusCode::OK, "ready\n") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready\n") }
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}
