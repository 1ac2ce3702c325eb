//! ember-api: the REST API for end users and platform admins.
//!
//! Probes; bearer-JWT and API-key authentication (`auth`, `keys`) with
//! `GET /v1/whoami`; roles and what each may do (`authz`); one router per
//! resource (`routes`): tenants and their administration, ModelDeployments
//! (read from watch caches, `cache`, written with server-side apply), API
//! keys, the audit trail (`audit`) and the inference proxy with metering
//! (`metering`). Every request passes the same layers (`layers`): a request
//! id, a tracing span, problem+json for every error, RED metrics, and a
//! timeout and body limit per router. The API describes itself in OpenAPI
//! 3.1 (`openapi`, `/openapi.json`, rendered at `/docs`). Paths not built
//! answer 501 problem+json (see `docs/architecture.md`).

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
pub mod openapi;
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
use axum::handler::Handler;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;

use auth::{Authenticator, Principal};
use metering::Metering;
use routes::{
    RouteTable, Served, Tenancy, api_keys, audit as audit_routes, deployments, inference, tenants,
    usage as usage_routes,
};

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
    let (app, metrics) = match surface {
        Surface::ProbesOnly => (public_routes(|| async { "ok" }).into_router(), None),
        Surface::Authentication(verifier) => (
            public_routes(|| async { "ok" })
                .into_router()
                .merge(RouteTable::new().get("/v1/whoami", whoami).into_router().with_state(verifier)),
            None,
        ),
        Surface::Full(tenancy) => {
            let tenancy = *tenancy;
            let caches = tenancy.caches.clone();
            let ready = move || {
                let synced = caches.is_synced();
                async move {
                    if synced {
                        "ok".into_response()
                    } else {
                        error::problem(StatusCode::SERVICE_UNAVAILABLE, "watch caches are not synced yet")
                    }
                }
            };
            let api = layers::bounded(api_routes().into_router(), REQUEST_TIMEOUT, routes::MAX_SPEC_BYTES)
                .merge(inference::router(&tenancy.upstream));
            let metrics = tenancy.metering.http.clone();
            (public_routes(ready).into_router().merge(api.with_state(tenancy)), Some(metrics))
        }
    };
    layers::common(app.fallback(not_implemented), metrics)
}

/// What every surface serves without credentials: the probes (`ready`
/// answers `/readyz`) and the API's description.
fn public_routes<H: Handler<T, ()>, T: 'static>(ready: H) -> RouteTable {
    RouteTable::new().get("/healthz", || async { "ok" }).get("/readyz", ready).merge(openapi::routes())
}

/// The authenticated API apart from inference (which has its own bounds).
fn api_routes() -> RouteTable<Tenancy> {
    RouteTable::new()
        .get("/v1/whoami", whoami)
        .merge(tenants::routes())
        .merge(deployments::routes())
        .merge(api_keys::routes())
        .merge(audit_routes::routes())
        .merge(usage_routes::routes())
}

/// Every method and path a fully configured ember-api serves (what the
/// OpenAPI document must describe, no more and no less).
pub fn served() -> Vec<Served> {
    let mut served = public_routes(|| async { "ok" }).served().to_vec();
    served.extend_from_slice(api_routes().served());
    served.extend_from_slice(inference::routes().served());
    served
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
