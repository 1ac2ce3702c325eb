//! Inference through ember-api to a real ember-runtime: a tiny MLP served
//! on loopback (kwok pods have no network, so the endpoint template points
//! at it), a real control plane holding the Tenant and ModelDeployment, and
//! the answers compared with the runtime's own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use support::cluster::Harness;
use support::runtime::serve_runtime;

fn spec() -> String {
    json!({"model": {"architecture": "mlp", "task": "regression",
                     "config": {"uri": "https://models.example/config.json", "sha256": "f".repeat(64)}, "source": {"uri": "https://models.example/tabular/model.safetensors", "sha256": "b".repeat(64)}}})
    .to_string()
}

fn request() -> Value {
    json!({"id": "r1", "inputs": [{"name": "features", "shape": [2, 3], "datatype": "FP32", "data": [[1.0, 2.0, 3.0], [0.5, -0.5, 4.0]]}]})
}

#[tokio::test]
async fn tenant_users_call_their_model_through_the_api_and_usage_is_metered() {
    let dir = tempfile::tempdir().unwrap();
    let (runtime, stop_runtime) = serve_runtime(dir.path()).await;
    let h = Harness::start(&format!("http://{runtime}")).await;
    h.tenant(
        "acme-inf",
        json!({"owners": [{"kind": "User", "name": "alice"}], "members": [{"kind": "User", "name": "bob"}]}),
    )
    .await;
    h.tenant("globex-inf", json!({"owners": [{"kind": "User", "name": "mallory"}]})).await;
    let (alice, bob, mallory) = (h.token("alice", &[]), h.token("bob", &[]), h.token("mallory", &[]));
    let (status, body) = h.call("PUT", "/v1/tenants/acme-inf/deployments/tabular", Some(&alice), Some(&spec())).await;
    assert_eq!(status, 201, "{body}");
    h.until_status("/v1/tenants/acme-inf/deployments/tabular", &alice, 200).await;

    // The same answer as asking the runtime directly; a viewer may call it.
    let direct: Value = reqwest::Client::new()
        .post(format!("http://{runtime}/v2/models/tabular/infer"))
        .json(&request())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let infer = "/v1/tenants/acme-inf/deployments/tabular/infer";
    let (status, proxied) = h.call("POST", infer, Some(&bob), Some(&request().to_string())).await;
    assert_eq!(status, 200, "{proxied}");
    assert_eq!(proxied["outputs"], direct["outputs"]);
    // 1·0.5 + 2·(-1) + 3·0.25 + 0.1 = -0.65
    assert!((proxied["outputs"][0]["data"][0].as_f64().unwrap() + 0.65).abs() < 1e-5, "{proxied}");

    // The correlation id comes back (and was sent upstream).
    let response = reqwest::Client::new()
        .post(format!("{}{infer}", h.base))
        .header("Authorization", &alice)
        .header("x-request-id", "trace-123")
        .json(&request())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "trace-123");

    // The runtime's own 4xx and message pass through.
    let wrong = json!({"inputs": [{"name": "features", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}]});
    let (status, body) = h.call("POST", infer, Some(&alice), Some(&wrong.to_string())).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("[batch, 3]"), "{body}");

    // Other tenants and strangers get nothing.
    let (status, _) = h.call("POST", infer, Some(&mallory), Some(&request().to_string())).await;
    assert_eq!(status, 404);
    let (status, _) = h.call("POST", infer, None, Some(&request().to_string())).await;
    assert_eq!(status, 401);
    let (status, _) = h
        .call("POST", "/v1/tenants/acme-inf/deployments/missing/infer", Some(&alice), Some(&request().to_string()))
        .await;
    assert_eq!(status, 404);

    // Usage is metered per tenant, deployment and outcome, on the metrics
    // listener only: the public address must not name tenants to anyone.
    let public = reqwest::get(format!("{}/metrics", h.base)).await.unwrap();
    assert_ne!(public.status(), 200);
    let public = public.text().await.unwrap();
    assert!(!public.contains("acme-inf"), "the public listener names a tenant: {public}");
    // A call is metered when its answer has been streamed to the caller.
    let metrics = ember_testenv::poll::until_async("the calls are metered", support::cluster::TIMEOUT, async || {
        let text = reqwest::get(format!("{}/metrics", h.metrics_base)).await.unwrap().text().await.unwrap();
        Ok(text.contains("status=\"400\"").then_some(text))
    })
    .await
    .unwrap();
    let line = |status: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("ember_api_inference_calls_total")
                    && l.contains("tenant=\"acme-inf\"")
                    && l.contains(&format!("status=\"{status}\""))
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
    };
    assert_eq!(line("200"), Some(2.0), "{metrics}");
    assert_eq!(line("400"), Some(1.0), "{metrics}");
    assert!(!metrics.contains("globex-inf"), "refused calls are not billed to anyone");

    // With the runtime gone the caller gets a 502 problem, not a hang.
    stop_runtime.send(()).unwrap();
    support::cluster::eventually_status(&h, infer, &alice, &request().to_string(), 502).await;
}
