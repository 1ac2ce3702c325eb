//! ember-api's memory under hostile bodies, measured on the real binary:
//! strangers' bodies are never read, bodies over a route's limit are cut
//! off, inference calls in flight are bounded, and a runtime's oversized
//! answer is streamed and cut off at the cap, never buffered. The process's peak RSS (VmHWM) must stay well inside
//! the pod's memory limit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Child, Command, Stdio};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::routing::post;
use ember_crds::model_deployment::ModelDeployment;
use ember_testenv::{poll, shared_control_plane};
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use support::cluster::{Harness, SERVICE_ENDPOINTS, TIMEOUT};
use support::{AUDIENCE, ISSUER, spawn};

/// The pod's memory limit in `config/api-server/deployment.yaml`.
const POD_LIMIT_MIB: u64 = 256;
const BODY_MIB: usize = 31;

struct ApiProcess {
    child: Child,
    base: String,
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ApiProcess {
    fn peak_rss_mib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() / 1024
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The ember-api binary with its defaults, against the test cluster and
/// identity provider; inference goes to `endpoint`.
async fn start_api(h: &Harness, endpoint: &str) -> ApiProcess {
    let cp = shared_control_plane().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_ember-api"))
        .env("EMBER_API_ADDR", format!("127.0.0.1:{port}"))
        .env("EMBER_API_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
        .env("EMBER_API_JWT_ISSUER", ISSUER)
        .env("EMBER_API_JWT_AUDIENCE", AUDIENCE)
        .env("EMBER_API_JWKS_URI", &h.jwks_url)
        .env("EMBER_API_INFERENCE_ENDPOINT", endpoint)
        .env("KUBECONFIG", cp.kubeconfig())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let api = ApiProcess { child, base: format!("http://127.0.0.1:{port}") };
    let http = reqwest::Client::new();
    poll::until_async("ember-api process ready", TIMEOUT, async || {
        let ready = http.get(format!("{}/readyz", api.base)).send().await.is_ok_and(|r| r.status() == 200);
        Ok(ready.then_some(()))
    })
    .await
    .unwrap();
    api
}

/// A runtime stand-in whose every answer is 64 MiB, streamed without a
/// declared length (the real runtime is exercised in inference_proxy.rs).
async fn oversized_runtime() -> String {
    let app = Router::new().fallback(post(|| async {
        let chunks =
            futures::stream::iter((0..1024).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 64 << 10]))));
        Body::from_stream(chunks)
    }));
    format!("http://{}", spawn(app).await)
}

/// `n` concurrent requests with a `BODY_MIB` body; the statuses (0 for a
/// connection cut while the body was still being sent).
async fn hostile(method: &str, url: &str, token: &str, n: usize) -> Vec<u16> {
    let body = Bytes::from(vec![b'['; BODY_MIB << 20]);
    let client = reqwest::Client::new();
    futures::stream::iter(0..n)
        .map(|_| {
            let request = client
                .request(method.parse().unwrap(), url)
                .header("Authorization", token)
                .header("Content-Type", "application/json")
                .body(body.clone());
            async move { request.send().await.map_or(0, |r| r.status().as_u16()) }
        })
        .buffer_unordered(n)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_and_answers_do_not_exhaust_memory() {
    let h = Harness::start(SERVICE_ENDPOINTS).await;
    h.tenant("acme-mem", json!({"owners": [{"kind": "User", "name": "alice"}]})).await;
    let mds: Api<ModelDeployment> = Api::namespaced(h.admin.clone(), "tenant-acme-mem");
    let md = json!({"apiVersion": "ember.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "big"},
                    "spec": {"model": {"architecture": "mlp", "task": "regression",
                             "config": {"uri": "https://models.example/config.json", "sha256": "f".repeat(64)}, "source": {"uri": "https://models.example/m.safetensors", "sha256": "e".repeat(64)}}}});
    mds.patch("big", &PatchParams::apply("test"), &Patch::Apply(&md)).await.unwrap();
    let api = start_api(&h, &oversized_runtime().await).await;
    let (alice, stranger) = (h.token("alice", &[]), h.token("mallory", &[]));
    let before = api.peak_rss_mib();
    let infer = format!("{}/v1/tenants/acme-mem/deployments/big/embeddings", api.base);
    let put = format!("{}/v1/tenants/acme-mem/deployments/big", api.base);
    poll::until_async("ember-api's cache has the deployment", TIMEOUT, async || {
        let answer = reqwest::Client::new().post(&infer).header("Authorization", &alice).body("{}").send().await;
        Ok(answer.is_ok_and(|r| r.status() == 200).then_some(()))
    })
    .await
    .unwrap();

    // A caller with no role anywhere: refused before the body is read —
    // 413 by the body-limit layer for a declared length over the route's
    // limit (the same for every path, so it tells nothing), else 404.
    for (method, url) in [("POST", &infer), ("PUT", &put)] {
        let statuses = hostile(method, url, &stranger, 16).await;
        assert!(statuses.iter().all(|&s| [404, 413, 0].contains(&s)), "{method}: {statuses:?}");
        println!("stranger {method}: {} MiB {statuses:?}", api.peak_rss_mib());
    }
    // The owner: spec writes are small, inference bodies are capped.
    for (method, url) in [("PUT", &put), ("POST", &infer)] {
        let statuses = hostile(method, url, &alice, 16).await;
        assert!(statuses.iter().all(|&s| [413, 503, 0].contains(&s)), "{method}: {statuses:?}");
        println!("owner {method}: {} MiB {statuses:?}", api.peak_rss_mib());
    }
    // Small requests whose answers are 64 MiB each (undeclared length):
    // passed on chunk by chunk and cut off at the cap, never buffered.
    let client = reqwest::Client::new();
    let received: Vec<Option<usize>> = futures::stream::iter(0..16)
        .map(|_| {
            let request = client.post(&infer).header("Authorization", &alice).body(r#"{"input": ["x"]}"#);
            async move {
                let answer = request.send().await.ok()?;
                assert!([200, 503].contains(&answer.status().as_u16()), "{}", answer.status());
                answer.bytes().await.ok().map(|b| b.len())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(received.iter().all(|r| r.is_none_or(|n| n <= 16 << 20)), "an answer passed the cap: {received:?}");
    println!("oversized answers: {} MiB", api.peak_rss_mib());
    let still_up = reqwest::get(format!("{}/healthz", api.base)).await.unwrap();
    assert_eq!(still_up.status(), 200, "ember-api died under the load");

    let peak = api.peak_rss_mib();
    println!(
        "ember-api peak RSS: {before} MiB at start, {peak} MiB after 64 hostile {BODY_MIB} MiB bodies and 16 64 MiB answers"
    );
    assert!(peak < POD_LIMIT_MIB * 3 / 4, "peak RSS {peak} MiB is too close to the pod's {POD_LIMIT_MIB} MiB limit");
}
