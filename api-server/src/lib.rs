//! ember-api: the REST API for end users.
//!
//! Built so far: probes, and bearer-JWT authentication (`auth`) with
//! `GET /v1/whoami` to see the identity a token proves. Tenant routes,
//! inference proxying and metering are not built yet (see
//! `docs/architecture.md`); every other path answers 501 with problem+json,
//! saying plainly that nothing else works.

pub mod auth;
pub mod error;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;

use auth::{JwtVerifier, Principal};

/// The HTTP surface. Without a verifier (no identity provider configured)
/// only the probes answer.
pub fn router(verifier: Option<Arc<JwtVerifier>>) -> Router {
    let mut app = Router::new().route("/healthz", get(|| async { "ok" })).route("/readyz", get(|| async { "ok" }));
    if let Some(verifier) = verifier {
        app = app.merge(Router::new().route("/v1/whoami", get(whoami)).with_state(verifier));
    }
    app.fallback(not_implemented)
}

/// The identity the caller's token proves: what authorisation will see.
async fn whoami(principal: Principal) -> Json<Principal> {
    Json(principal)
}

async fn not_implemented() -> Response {
    error::problem(
        StatusCode::NOT_IMPLEMENTED,
        "this part of the Ember REST API is not built yet; use kubectl or GitOps",
    )
    .into_response()
}
