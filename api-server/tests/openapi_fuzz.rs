//! ember-api fuzzed from its own OpenAPI description: schemathesis (PyPI)
//! reads `/openapi.json` from the running API and sends generated requests,
//! valid and invalid, to every operation. Every answer must be no 5xx and
//! exactly what the description says: a documented status, a documented
//! content type and headers, a body that matches its schema.
//!
//! The API runs on the real control plane with its PostgreSQL database; a
//! real ember-runtime serves the model inference calls reach. The caller
//! owns tenant `acme` and is a platform admin, so requests get past
//! authorisation; generated path parameters name `acme` and its deployment
//! most of the time (a dictionary in the config) and anything else
//! otherwise. Deletions and tenant replacement run in a second pass, so
//! that the first one has objects to work on and keeps its ownership.
//!
//! schemathesis comes from `hack/install-schemathesis.sh` (which
//! `hack/test.sh` runs), found through `EMBER_SCHEMATHESIS` or the cache.
//! `EMBER_FUZZ_SEED` replays another seed; `EMBER_FUZZ_EXAMPLES` sets the
//! number of examples per operation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::process::Command;

use ember_testenv::Postgres;
use serde_json::json;
use support::cluster::{Harness, PLATFORM_ADMINS};
use support::runtime::serve_runtime;

const TENANT: &str = "acme";
const DEPLOYMENT: &str = "tabular";

fn schemathesis() -> PathBuf {
    let path = std::env::var_os("EMBER_SCHEMATHESIS").map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("EMBER_CACHE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/ember"));
        cache.join("schemathesis-4.32.5/bin/schemathesis")
    });
    assert!(
        path.exists(),
        "{} is missing: run `bash hack/install-schemathesis.sh` (hack/test.sh does)",
        path.display()
    );
    path
}

/// Makes most generated path parameters name objects that exist.
fn schemathesis_config() -> String {
    format!(
        r#"
[dictionaries.tenants]
values = ["{TENANT}"]
[dictionaries.deployments]
values = ["{DEPLOYMENT}"]
[dictionaries.other-tenants]
values = ["globex", "initech"]
[parameters]
"path.tenant" = {{ dictionary = "tenants", probability = 0.9 }}
"path.name" = {{ dictionary = "deployments", probability = 0.8 }}

# Replacing acme's spec would take the caller's ownership away.
[[operations]]
include-operation-id = "putTenant"
parameters = {{ "path.tenant" = {{ dictionary = "other-tenants", probability = 0.9 }} }}
"#
    )
}

fn spec() -> String {
    json!({"model": {"architecture": "mlp", "task": "regression",
                     "config": {"uri": "https://models.example/config.json", "sha256": "f".repeat(64)},
                     "source": {"uri": "https://models.example/tabular/model.safetensors", "sha256": "b".repeat(64)}}})
    .to_string()
}

/// One schemathesis run over the operations `filter` selects; its output
/// is printed, and the test fails when it reports any failure.
fn fuzz(base: &str, token: &str, config: &std::path::Path, filter: &[&str]) {
    let seed = std::env::var("EMBER_FUZZ_SEED").unwrap_or_else(|_| "20261129".into());
    let examples = std::env::var("EMBER_FUZZ_EXAMPLES").unwrap_or_else(|_| "25".into());
    // Its cache and reports go beside the config, not into the repository.
    let output = Command::new(schemathesis())
        .current_dir(config.parent().unwrap())
        .arg("--config-file")
        .arg(config)
        .args(["run", &format!("{base}/openapi.json")])
        .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", &examples, "--seed", &seed, "--workers", "1", "--request-timeout", "30"])
        .args(["--suppress-health-check", "all", "--no-color"])
        .args(["--header", &format!("Authorization: {token}")])
        .args(filter)
        .output()
        .expect("schemathesis runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "schemathesis found failures (seed {seed}):\n{text}");
    println!("{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_to_generated_requests_is_what_the_description_says() {
    // ember-api's warnings (what a 5xx was about) go to the test's output.
    let _ = tracing_subscriber::fmt().with_env_filter("ember_api=warn").with_test_writer().try_init();
    let postgres = tokio::task::spawn_blocking(Postgres::start).await.unwrap().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (runtime, _stop_runtime) = serve_runtime(dir.path()).await;
    let h = Harness::start_with_platform_unthrottled(&format!("http://{runtime}"), &postgres.url()).await;
    h.tenant(TENANT, json!({"owners": [{"kind": "User", "name": "alice"}]})).await;
    let token = h.token("alice", &[PLATFORM_ADMINS]);
    let path = format!("/v1/tenants/{TENANT}/deployments/{DEPLOYMENT}");
    let (status, body) = h.call("PUT", &path, Some(&token), Some(&spec())).await;
    assert_eq!(status, 201, "{body}");
    h.until_status(&path, &token, 200).await;

    let config = dir.path().join("schemathesis.toml");
    std::fs::write(&config, schemathesis_config()).unwrap();
    // What replaces a tenant's spec or deletes runs last, so that the first
    // pass finds acme owned by the caller and its deployment there.
    let destructive = "^(putTenant|delete.*|revokeApiKey)$";
    let run = |filter: &'static str| {
        let (base, token, config) = (h.base.clone(), token.clone(), config.clone());
        tokio::task::spawn_blocking(move || fuzz(&base, &token, &config, &[filter, destructive]))
    };
    run("--exclude-operation-id-regex").await.unwrap();
    // The generated calls got past ember-api to the model's runtime.
    let metrics = reqwest::get(format!("{}/metrics", h.metrics_base)).await.unwrap().text().await.unwrap();
    let forwarded = metrics.lines().any(|l| l.starts_with("ember_api_inference_calls") && l.contains(DEPLOYMENT));
    assert!(forwarded, "no generated call reached the runtime:\n{metrics}");
    run("--include-operation-id-regex").await.unwrap();
}
