//! ember-api: the REST API for end users.
//!
//! Today this binary only serves its probes; authentication, tenant
//! routes, inference proxying and metering are not built yet (see
//! `docs/architecture.md`). It exists so deployments, the local dev
//! environment and probes are wired from the start, and it says plainly
//! that nothing else works: every other path answers 501 with problem+json.

use std::net::SocketAddr;

use axum::Router;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use clap::Parser;

/// Ember's REST API.
#[derive(Debug, Parser)]
#[command(name = "ember-api", version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "EMBER_API_ADDR", default_value = "0.0.0.0:8080")]
    addr: SocketAddr,
}

fn router() -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .fallback(not_implemented)
}

async fn not_implemented() -> impl IntoResponse {
    (
        StatusCode::NOT_IMPLEMENTED,
        [(CONTENT_TYPE, "application/problem+json")],
        r#"{"type":"about:blank","title":"Not Implemented","status":501,"detail":"the Ember REST API is not built yet; use kubectl or GitOps"}"#,
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt().json().with_env_filter(tracing_subscriber::EnvFilter::new("info")).init();
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    tracing::info!(addr = %args.addr, "ember-api listening (probes only)");
    axum::serve(listener, router())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    #[tokio::test]
    async fn probes_answer_and_everything_else_is_honestly_unimplemented() {
        let ok = router().oneshot(Request::get("/healthz").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        let other = router().oneshot(Request::get("/v1/tenants").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(other.status(), StatusCode::NOT_IMPLEMENTED);
        assert_eq!(other.headers()[CONTENT_TYPE], "application/problem+json");
    }
}
