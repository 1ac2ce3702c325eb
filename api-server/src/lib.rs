//! ember-api: the REST API for end users and platform admins.
//!
//! Probes; bearer-JWT and API-key authentication (`auth`, `keys`) with
//! `GET /v1/whoami`; roles and what each may do (`authz`); one router per
//! resource (`routes`): tenants and their administration, ModelDeployments
//! (read from watch caches, `cache`, written with server-side apply), API
//! keys, the audit trail (`audit`) and the inference proxy with metering
//! (`metering`). Every request passes the same layers (`layers`): a request
//! id, a tracing span, problem+json for every error, RED metrics, and a
//! timeout and body limit per router. Paths not built answer 501
//! problem+json (see `docs/architecture.md`).

pub mod audit;
pub mod auth;
pub mod authz;
pub mod cache;
pub mod change_log;
pub mod client_address;
pub mod error;
pub mod export;
pub mod json;
pub mod keys;
pub mod layers;
pub mod metering;
pub mod platform_db;
pub mod ratelimit;
pub mod refusals;
pub mod request_id;
pub mod routes;
pub mod shutdown;
pub mod usage;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;

use auth::{Authenticator, Principal};
use metering::Metering;
use routes::{Tenancy, api_keys, audit as audit_routes, deployments, inference, tenants, usage as usage_routes};

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

/// Longest a non-inference request may take to its response head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub fn router(surface: Surface) -> Router {
    let probes = Router::new().route("/healthz", get(|| async { "ok" }));
    let (app, metrics) = match surface {
        Surface::ProbesOnly => (probes.route("/readyz", get(|| async { "ok" })), None),
        Surface::Authentication(verifier) => (
            probes
                .route("/readyz", get(|| async { "ok" }))
                .merge(Router::new().route("/v1/whoami", get(whoami)).with_state(verifier)),
            None,
        ),
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
            let resources = Router::new()
                .route("/v1/whoami", get(whoami))
                .merge(tenants::router())
                .merge(deployments::router())
                .merge(api_keys::router())
                .merge(audit_routes::router())
                .merge(usage_routes::router());
            let api = layers::bounded(resources, REQUEST_TIMEOUT, routes::MAX_SPEC_BYTES)
                .merge(inference::router(&tenancy.upstream));
            let metrics = tenancy.metering.http.clone();
            (probes.route("/readyz", ready).merge(api.with_state(tenancy)), Some(metrics))
        }
    };
    layers::common(app.fallback(not_implemented), metrics)
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
