//! The conventions every route keeps, checked on ember-api's own router
//! (`oneshot`, no socket) with its real state — the control plane and a
//! real PostgreSQL behind it — and on the real binary for SIGTERM: request
//! ids kept or made and carried into audit rows, one problem+json shape for
//! every error (415, 400, 422, 405, 413, 501), RED metrics by route
//! template, and a graceful drain.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response};
use ember_api::{Surface, router};
use ember_testenv::{Postgres, poll, shared_control_plane};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use support::cluster::{Harness, SERVICE_ENDPOINTS};
use support::{AUDIENCE, ISSUER, SigningKey, bearer, claims, key_set, spawn};
use tower::ServiceExt;

async fn send(app: &Router, request: Request<Body>) -> (Response<Body>, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (Response::from_parts(parts, Body::empty()), value)
}

fn request(method: &str, path: &str, token: &str) -> axum::http::request::Builder {
    Request::builder().method(method).uri(path).header("authorization", token)
}

fn is_problem(response: &Response<Body>) -> bool {
    response.headers()["content-type"] == "application/problem+json"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_problem_json_and_every_request_has_an_id_down_to_its_audit_row() {
    let postgres = tokio::task::spawn_blocking(Postgres::start).await.unwrap().unwrap();
    let h = Harness::start_with_platform(SERVICE_ENDPOINTS, &postgres.url()).await;
    h.tenant("acme-http", json!({"owners": [{"kind": "User", "name": "alice"}]})).await;
    let app = router(Surface::Full(Box::new(h.tenancy.clone())));
    let alice = h.token("alice", &[]);
    let spec = json!({"model": {"architecture": "mlp", "task": "regression",
        "config": {"uri": "https://models.example/c.json", "sha256": "f".repeat(64)},
        "source": {"uri": "https://models.example/m.safetensors", "sha256": "c".repeat(64)}}});
    let path = "/v1/tenants/acme-http/deployments/scorer";

    // A caller's id is kept, sent back, and written into the audit row.
    let (response, body) = send(
        &app,
        request("PUT", path, &alice)
            .header("content-type", "application/json")
            .header("x-request-id", "deploy-42")
            .body(Body::from(spec.to_string()))
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), 201, "{body}");
    assert_eq!(response.headers()["x-request-id"], "deploy-42");
    let (_, trail) =
        send(&app, request("GET", "/v1/tenants/acme-http/audit", &alice).body(Body::empty()).unwrap()).await;
    let entry = trail.as_array().unwrap().iter().find(|e| e["action"] == "deployment.create").unwrap().clone();
    assert_eq!(entry["requestId"], "deploy-42", "{trail}");

    // A missing or unacceptable id is replaced by a fresh one.
    for sent in [None, Some("has spaces in it"), Some("x".repeat(200).leak() as &str)] {
        let mut builder = request("GET", "/v1/tenants", &alice);
        if let Some(id) = sent {
            builder = builder.header("x-request-id", id);
        }
        let (response, _) = send(&app, builder.body(Body::empty()).unwrap()).await;
        let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{sent:?} -> {id}");
    }

    // One problem shape for every refusal, each with its own status.
    let cases: Vec<(Request<Body>, u16, &str)> = vec![
        (
            request("PUT", path, &alice).header("content-type", "text/plain").body(Body::from("model: x")).unwrap(),
            415,
            "application/json",
        ),
        (
            request("PUT", path, &alice)
                .header("content-type", "application/json")
                .body(Body::from("{not json"))
                .unwrap(),
            400,
            "not valid JSON",
        ),
        (
            request("POST", "/v1/tenants/acme-http/api-keys", &alice)
                .header("content-type", "application/json")
                .body(Body::from(r#"{"name": "ci", "role": "owner"}"#))
                .unwrap(),
            422,
            "role",
        ),
        (request("PATCH", path, &alice).body(Body::empty()).unwrap(), 405, "method"),
        (
            request("PUT", path, &alice)
                .header("content-type", "application/json")
                .header("content-length", (1 << 20).to_string())
                .body(Body::from(vec![b' '; 1 << 20]))
                .unwrap(),
            413,
            "larger",
        ),
        (request("GET", "/v2/anything", &alice).body(Body::empty()).unwrap(), 501, "not built"),
    ];
    for (request, status, says) in cases {
        let what = format!("{} {}", request.method(), request.uri());
        let (response, problem) = send(&app, request).await;
        assert_eq!(response.status(), status, "{what}: {problem}");
        assert!(is_problem(&response), "{what}: {:?}", response.headers());
        assert_eq!(problem["status"], status, "{what}: {problem}");
        assert!(problem["detail"].as_str().unwrap().contains(says), "{what}: expected '{says}' in {problem}");
        assert!(response.headers().contains_key("x-request-id"), "{what}");
    }

    // RED metrics by route template (never by tenant or deployment name).
    let metrics = h.tenancy.metering.render();
    let created =
        r#"ember_api_http_requests_total{route="/v1/tenants/{tenant}/deployments/{name}",method="PUT",status="201"} 1"#;
    assert!(metrics.contains(created), "{metrics}");
    assert!(metrics.contains(r#"status="415""#) && metrics.contains(r#"status="405""#), "{metrics}");
    assert!(metrics.contains("ember_api_http_request_duration_seconds_bucket"), "{metrics}");
    assert!(!metrics.contains("acme-http/deployments/scorer"), "a series per object: {metrics}");
}

/// An identity provider whose key set takes `delay` to answer: a request
/// that needs it is in flight for that long. Counts the fetches begun.
async fn slow_jwks(key: &SigningKey, delay: Duration) -> (String, Arc<AtomicUsize>) {
    let document = key_set(&[key]).to_string();
    let fetches = Arc::new(AtomicUsize::new(0));
    let counted = fetches.clone();
    let app = Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let document = document.clone();
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(delay).await;
                document
            }
        }),
    );
    (format!("http://{}/jwks.json", spawn(app).await), fetches)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_requests_in_flight_finish_and_takes_no_new_ones() {
    let cp = shared_control_plane().unwrap();
    let key = SigningKey::generate("k1");
    let (jwks, fetches) = slow_jwks(&key, Duration::from_secs(2)).await;
    let port = ember_testenv::free_port().unwrap();
    let metrics_port = ember_testenv::free_port().unwrap();
    let mut api = Command::new(env!("CARGO_BIN_EXE_ember-api"))
        .args(["--addr", &format!("127.0.0.1:{port}"), "--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .args(["--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE, "--jwks-uri", &jwks])
        .env("KUBECONFIG", cp.kubeconfig())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    poll::until_async("ember-api answers", Duration::from_secs(30), async || {
        Ok(http.get(format!("{base}/healthz")).send().await.ok().map(|_| ()))
    })
    .await
    .unwrap();

    // In flight: the first token check fetches the slow key set.
    let token = bearer(&key.sign(&claims()));
    let in_flight = tokio::spawn({
        let (http, url, token) = (http.clone(), format!("{base}/v1/whoami"), token.clone());
        async move { http.get(url).header("authorization", token).send().await }
    });
    poll::until_async("the call is in flight (fetching keys)", Duration::from_secs(10), async || {
        Ok((fetches.load(Ordering::SeqCst) > 0).then_some(()))
    })
    .await
    .unwrap();
    let killed = Command::new("kill").args(["-TERM", &api.id().to_string()]).status().unwrap();
    assert!(killed.success());

    let answer = in_flight.await.unwrap().expect("the request in flight was cut off");
    assert_eq!(answer.status(), 200);
    assert!(answer.json::<Value>().await.unwrap()["user"].is_string());
    let status = poll::until("ember-api exits", Duration::from_secs(30), || Ok(api.try_wait().unwrap())).unwrap();
    assert!(status.success(), "{status:?}");
    assert!(reqwest::get(format!("{base}/healthz")).await.is_err(), "a new connection was still accepted");
}
