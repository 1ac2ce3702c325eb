//! `cargo bench -p ember-api --bench api [-- SECONDS]`: what ember-api
//! costs on the two paths users hit most, each beside a baseline measured
//! in the same run on the same machine.
//!
//! 1. The cached deployment list, `GET /v1/tenants/{t}/deployments` (token
//!    checked, tenant authorised, answered from the watch cache), at 64
//!    concurrent clients, beside the same list straight from kube-apiserver
//!    (`list modeldeployments -n tenant-<t>` as ember-api's ServiceAccount).
//!    Goal: p99 < 5 ms and ≥ 10× the API server's rate.
//! 2. The inference proxy: one client calling a real ember-runtime (a tiny
//!    MLP on loopback) through ember-api and directly, alternately, so both
//!    see the same conditions. Goal: < 1 ms added at p50.
//!
//! Prints one table per part; `docs/benchmarks.md` records the figures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_crds::model_deployment::ModelDeployment;
use ember_testenv::poll;
use futures::StreamExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use support::cluster::{Harness, TIMEOUT};
use support::runtime::serve_runtime;

const DEPLOYMENTS: usize = 20;
const CLIENTS: usize = 64;

fn main() {
    let seconds: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(10);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run(Duration::from_secs(seconds)));
}

/// Latencies of one measured path.
struct Sample {
    name: &'static str,
    latencies: Vec<Duration>,
    elapsed: Duration,
    failures: usize,
}

impl Sample {
    fn quantile(&self, q: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted.get(((sorted.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or_default()
    }

    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn row(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        format!(
            "| {:<44} | {:>8} | {:>8.2} | {:>8.2} | {:>9.0} | {:>8} |",
            self.name,
            self.latencies.len(),
            ms(self.quantile(0.5)),
            ms(self.quantile(0.99)),
            self.rate(),
            self.failures
        )
    }
}

const HEADER: &str = "| path                                         | requests | p50 (ms) | p99 (ms) | requests/s | failures |\n|---|---:|---:|---:|---:|---:|";

/// Runs `call` from `clients` concurrent loops for `duration`.
async fn saturate<F, Fut>(name: &'static str, clients: usize, duration: Duration, call: F) -> Sample
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let started = Instant::now();
    let results = futures::stream::iter(0..clients)
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move {
                let (mut latencies, mut failures) = (Vec::new(), 0);
                while started.elapsed() < duration {
                    let begun = Instant::now();
                    if call().await {
                        latencies.push(begun.elapsed());
                    } else {
                        failures += 1;
                    }
                }
                (latencies, failures)
            })
        })
        .buffer_unordered(clients)
        .collect::<Vec<_>>()
        .await;
    let elapsed = started.elapsed();
    let mut sample = Sample { name, latencies: Vec::new(), elapsed, failures: 0 };
    for result in results {
        let (latencies, failures) = result.unwrap();
        sample.latencies.extend(latencies);
        sample.failures += failures;
    }
    sample
}

async fn run(duration: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let (runtime, _stop) = serve_runtime(dir.path()).await;
    let h = Harness::start_unthrottled(&format!("http://{runtime}")).await;
    h.tenant("bench-api", json!({"owners": [{"kind": "User", "name": "alice"}]})).await;
    let mds: Api<ModelDeployment> = Api::namespaced(h.admin.clone(), "tenant-bench-api");
    for i in 0..DEPLOYMENTS {
        let name = if i == 0 { "tabular".to_owned() } else { format!("model-{i:02}") };
        let md = json!({"apiVersion": "ember.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
                        "spec": {"model": {"architecture": "mlp", "task": "regression",
                                 "config": {"uri": "https://models.example/config.json", "sha256": "f".repeat(64)},
                                 "source": {"uri": "https://models.example/m.safetensors", "sha256": "c".repeat(64)}}}});
        mds.patch(&name, &PatchParams::apply("bench"), &Patch::Apply(&md)).await.unwrap();
    }
    let alice = h.token("alice", &[]);
    let http = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build().unwrap();
    let list_url = format!("{}/v1/tenants/bench-api/deployments", h.base);
    poll::until_async("ember-api lists every deployment", TIMEOUT, async || {
        let listed: serde_json::Value =
            http.get(&list_url).header("Authorization", &alice).send().await.unwrap().json().await.unwrap();
        Ok((listed.as_array().map(Vec::len) == Some(DEPLOYMENTS)).then_some(()))
    })
    .await
    .unwrap();

    // Part 1: the cached list against the API server's own list.
    let api_server = {
        let api: Api<ModelDeployment> = Api::namespaced(h.tenancy.client.clone(), "tenant-bench-api");
        saturate("kube-apiserver: list modeldeployments (baseline)", CLIENTS, duration, move || {
            let api = api.clone();
            async move { api.list(&ListParams::default()).await.is_ok_and(|l| l.items.len() == DEPLOYMENTS) }
        })
        .await
    };
    let cached = {
        let (http, url, token) = (http.clone(), list_url.clone(), alice.clone());
        saturate("ember-api: GET /v1/tenants/{t}/deployments", CLIENTS, duration, move || {
            let request = http.get(&url).header("Authorization", &token);
            async move { request.send().await.is_ok_and(|r| r.status() == 200) }
        })
        .await
    };
    println!(
        "\n## Deployment list, {CLIENTS} concurrent clients, {DEPLOYMENTS} deployments, {} s each\n",
        duration.as_secs()
    );
    println!("{HEADER}\n{}\n{}", api_server.row(), cached.row());
    println!(
        "\nember-api ÷ kube-apiserver: {:.1}× the rate; p99 {:.2} ms (goals: ≥ 10×, < 5 ms)",
        cached.rate() / api_server.rate(),
        cached.quantile(0.99).as_secs_f64() * 1e3
    );

    // Part 2: one client, proxied and direct calls alternating.
    let body = json!({"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32", "data": [1.0, 2.0, 3.0]}]})
        .to_string();
    let direct_url = format!("http://{runtime}/v2/models/tabular/infer");
    let proxied_url = format!("{}/v1/tenants/bench-api/deployments/tabular/infer", h.base);
    let mut direct = Sample {
        name: "ember-runtime directly (baseline)",
        latencies: Vec::new(),
        elapsed: Duration::ZERO,
        failures: 0,
    };
    let mut proxied = Sample { name: "through ember-api", latencies: Vec::new(), elapsed: Duration::ZERO, failures: 0 };
    let started = Instant::now();
    while started.elapsed() < duration {
        for (sample, url, token) in [(&mut direct, &direct_url, None), (&mut proxied, &proxied_url, Some(&alice))] {
            let mut request = http.post(url).header("Content-Type", "application/json").body(body.clone());
            if let Some(token) = token {
                request = request.header("Authorization", token);
            }
            let begun = Instant::now();
            let ok = request.send().await.is_ok_and(|r| r.status() == 200);
            let took = begun.elapsed();
            sample.elapsed += took;
            if ok {
                sample.latencies.push(took);
            } else {
                sample.failures += 1;
            }
        }
    }
    println!("\n## Inference proxy overhead, one client, calls alternating, {} s\n", duration.as_secs());
    println!("{HEADER}\n{}\n{}", direct.row(), proxied.row());
    let added = proxied.quantile(0.5).as_secs_f64() - direct.quantile(0.5).as_secs_f64();
    println!("\nadded by ember-api at p50: {:.3} ms (goal: < 1 ms)", added * 1e3);
}
