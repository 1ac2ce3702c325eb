//! The layers every request passes, outermost first: a request id
//! (`request_id`), a tracing span carrying it (tower-http trace, so every
//! log line of the request names it), problem+json for errors that layers
//! made without a body, and RED metrics by route and status. Routers add
//! their own timeout and body limit ([`bounded`]), since an inference call
//! may take a minute and carry megabytes where a spec write takes neither.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::request_id;

type Labels = Vec<(&'static str, String)>;

/// Requests, errors and duration by route template, method and status.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: Family<Labels, Counter>,
    seconds: Family<Labels, Histogram, fn() -> Histogram>,
}

fn duration_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 17)) // 0.5 ms .. ~33 s
}

impl HttpMetrics {
    /// Registers the metrics in `registry` (served on `/metrics`).
    pub fn registered(registry: &mut Registry) -> Self {
        let requests = Family::<Labels, Counter>::default();
        let seconds = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(duration_buckets);
        registry.register(
            "http_requests",
            "Requests by route template, method and status (errors are the 4xx/5xx statuses)",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to the response head, by route and method",
            seconds.clone(),
        );
        Self { requests, seconds }
    }

    fn observe(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let labels = vec![("route", route.to_owned()), ("method", method.to_owned())];
        let mut with_status = labels.clone();
        with_status.push(("status", status.to_string()));
        self.requests.get_or_create(&with_status).inc();
        self.seconds.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }
}

/// A router's own bounds: requests taking longer than `timeout` (to their
/// response head) get 408, bodies larger than `max_body` 413, both as
/// problem+json (see [`problem_for_bare_errors`]).
pub fn bounded<S: Clone + Send + Sync + 'static>(router: Router<S>, timeout: Duration, max_body: usize) -> Router<S> {
    router
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, timeout))
}

/// Wraps the whole application in the common layers.
pub fn common(app: Router, metrics: Option<HttpMetrics>) -> Router {
    let app = match metrics {
        Some(metrics) => app.layer(middleware::from_fn(move |request: Request, next: Next| {
            let metrics = metrics.clone();
            async move { record(&metrics, request, next).await }
        })),
        None => app,
    };
    app.layer(middleware::from_fn(problem_for_bare_errors))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<Body>| {
                    let id = request.headers().get(request_id::HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
                    tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path())
                })
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(middleware::from_fn(request_id::assign))
}

async fn record(metrics: &HttpMetrics, request: Request, next: Next) -> Response {
    // The route template, not the path: tenant and deployment names would
    // make one series per object and name every tenant.
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.observe(&route, &method, response.status().as_u16(), started.elapsed());
    response
}

/// Error answers that a layer or axum itself made (timeout 408, body limit
/// 413, method not allowed 405...) come without a body or as plain text;
/// they get the problem+json every other error has. Answers with a JSON
/// body (ours, or a runtime's passed through) are left alone.
async fn problem_for_bare_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let typed = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !(status.is_client_error() || status.is_server_error()) || typed.contains("json") {
        return response;
    }
    let detail = match status {
        StatusCode::REQUEST_TIMEOUT => "the request took too long; send the body faster or retry".to_owned(),
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is larger than this route takes".to_owned(),
        StatusCode::METHOD_NOT_ALLOWED => "this route does not take that method".to_owned(),
        other => other.canonical_reason().unwrap_or("error").to_owned(),
    };
    let mut problem = crate::error::problem(status, &detail);
    for kept in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(value) = response.headers().get(&kept) {
            problem.headers_mut().insert(kept, value.clone());
        }
    }
    problem
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn a_timeout_is_a_408_problem_with_a_request_id() {
        let slow = Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        );
        let app = common(bounded(slow, Duration::from_millis(50), 1024), None);
        let request = axum::http::Request::get("/slow").body(Body::empty()).unwrap_or_default();
        let response = app.oneshot(request).await.unwrap_or_else(|never| match never {});
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/problem+json");
        assert!(response.headers().contains_key(request_id::HEADER));
        let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        assert!(String::from_utf8_lossy(&body).contains("took too long"));
    }
}
