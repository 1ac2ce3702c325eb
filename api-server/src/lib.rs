//! ember-api: the REST API for end users.
//!
//! Built so far: probes; bearer-JWT authentication (`auth`) with
//! `GET /v1/whoami`; tenant authorisation from the Tenant's owners and
//! members (`authz`); the caller's tenants and their ModelDeployments
//! (`routes`), read from watch caches (`cache`) and written with server-side
//! apply. API keys, inference proxying, metering and audit are not built yet
//! (see `docs/architecture.md`); every other path answers 501 with
//! problem+json, saying plainly that nothing else works.

pub mod audit;
pub mod auth;
pub mod authz;
pub mod cache;
pub mod client_address;
pub mod error;
pub mod keys;
pub mod metering;
pub mod platform_db;
pub mod ratelimit;
pub mod refusals;
pub mod routes;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{delete, get, post, put};

use auth::{Authenticator, Principal};
use metering::Metering;
use routes::{Tenancy, api_keys, deployments, inference, tenants};

/// How much of the API a process serves, by what is configured.
#[derive(Debug)]
pub enum Surface {
    /// No identity provider: probes only.
    ProbesOnly,
    /// Tokens can be checked (`/v1/whoami`) but no cluster is attached.
    Authentication(Arc<Authenticator>),
    /// Everything built so far (boxed: it is much larger than the others).
    Full(Box<Tenancy>),
}

pub fn router(surface: Surface) -> Router {
    let probes = Router::new().route("/healthz", get(|| async { "ok" }));
    let app = match surface {
        Surface::ProbesOnly => probes.route("/readyz", get(|| async { "ok" })),
        Surface::Authentication(verifier) => probes
            .route("/readyz", get(|| async { "ok" }))
            .merge(Router::new().route("/v1/whoami", get(whoami)).with_state(verifier)),
        Surface::Full(tenancy) => {
            let tenancy = *tenancy;
            let caches = tenancy.caches.clone();
            let ready = get(move || {
                let synced = caches.is_synced();
                async move {
                    if synced {
                        "ok".into_response()
                    } else {
                        error::problem(StatusCode::SERVICE_UNAVAILABLE, "watch caches are not synced yet")
                    }
                }
            });
            probes.route("/readyz", ready).merge(
                Router::new()
                    .route("/v1/whoami", get(whoami))
                    .route("/v1/tenants", get(tenants::list))
                    .route("/v1/tenants/{tenant}", get(tenants::get).put(tenants::put).delete(tenants::delete))
                    .route("/v1/tenants/{tenant}/branding", put(tenants::put_branding))
                    .route("/v1/tenants/{tenant}/deployments", get(deployments::list))
                    .route(
                        "/v1/tenants/{tenant}/deployments/{name}",
                        get(deployments::get).put(deployments::put).delete(deployments::delete),
                    )
                    .route("/v1/tenants/{tenant}/api-keys", get(api_keys::list).post(api_keys::issue))
                    .route("/v1/tenants/{tenant}/api-keys/{id}", delete(api_keys::revoke))
                    .route("/v1/tenants/{tenant}/audit", get(api_keys::audit))
                    .route("/v1/tenants/{tenant}/deployments/{name}/infer", post(inference::infer))
                    .route("/v1/tenants/{tenant}/deployments/{name}/embeddings", post(inference::embeddings))
                    .with_state(tenancy),
            )
        }
    };
    app.fallback(not_implemented)
}

/// The metrics listener's router: usage counters per tenant and deployment.
///
/// Served on its own address (`--metrics-addr`), never on the public one:
/// the counters name every tenant and deployment, which would defeat the
/// rule that a tenant the caller cannot see answers 404. Keep that address
/// reachable only by the metrics scraper (a NetworkPolicy in `config/`).
pub fn metrics_router(metering: Arc<Metering>) -> Router {
    let metrics = get(move || {
        let text = metering.render();
        async move { ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text) }
    });
    Router::new().route("/metrics", metrics).route("/healthz", get(|| async { "ok" }))
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
}
