//! The generated CRDs against a real kube-apiserver: they install, the
//! examples are accepted (through kube-rs and through `kubectl apply`), and
//! invalid objects are refused by the API server itself with a message that
//! names the offending field.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use ember_testenv::{install_crds, shared_control_plane};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::{Client, Resource};
use serde_json::{Value, json};

use ember_crds::{ModelDeployment, Tenant};

async fn client_with_crds() -> Client {
    let client = shared_control_plane().unwrap().client().await.unwrap();
    install_crds(&client, &ember_crds::crd_yaml::all_crds()).await.unwrap();
    client
}

fn tenants(client: &Client) -> Api<DynamicObject> {
    Api::all_with(client.clone(), &ApiResource::erase::<Tenant>(&()))
}

fn model_deployments(client: &Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &ApiResource::erase::<ModelDeployment>(&()))
}

async fn ensure_namespace(client: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    match Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => panic!("creating namespace {name}: {e}"),
    }
}

fn object<K: Resource<DynamicType = ()>>(name: &str, namespace: Option<&str>, spec: Value) -> DynamicObject {
    let mut value = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {"name": name},
        "spec": spec,
    });
    if let Some(ns) = namespace {
        value["metadata"]["namespace"] = ns.into();
    }
    serde_json::from_value(value).unwrap()
}

fn valid_model_spec() -> Value {
    json!({
        "model": {
            "architecture": "bert",
            "task": "embedding",
            "config": {"uri": "https://models.example/config.json", "sha256": "f".repeat(64)}, "source": {"uri": "https://models.example.test/m.safetensors", "sha256": "a".repeat(64)},
            "tokenizer": {"uri": "https://models.example.test/tokenizer.json", "sha256": "b".repeat(64)}
        }
    })
}

/// Creates `obj` and returns the API server's refusal message.
async fn refusal(api: &Api<DynamicObject>, obj: &DynamicObject) -> String {
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => panic!("the API server accepted an invalid object: {}", serde_json::to_string(obj).unwrap()),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "expected 422 Invalid, got {status:?}");
            status.message
        }
        Err(other) => panic!("unexpected error: {other}"),
    }
}

fn assert_mentions(message: &str, needles: &[&str]) {
    for needle in needles {
        assert!(message.contains(needle), "refusal message lacks {needle:?}: {message}");
    }
}

#[tokio::test]
async fn crds_become_established_and_are_served() {
    let client = client_with_crds().await;
    // A list through the discovered resource works only once the CRD is served.
    tenants(&client).list(&Default::default()).await.unwrap();
    model_deployments(&client, "default").list(&Default::default()).await.unwrap();
}

#[tokio::test]
async fn examples_are_accepted_and_get_schema_defaults() {
    let client = client_with_crds().await;
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let tenant: Tenant =
        serde_yaml::from_str(&std::fs::read_to_string(examples.join("tenant-acme.yaml")).unwrap()).unwrap();
    let md: ModelDeployment =
        serde_yaml::from_str(&std::fs::read_to_string(examples.join("modeldeployment-minilm.yaml")).unwrap()).unwrap();

    // Typed round trip: what the API server stores deserialises into our types.
    let mut tenant = tenant;
    tenant.metadata.name = Some("example-typed".into());
    let created = Api::<Tenant>::all(client.clone()).create(&PostParams::default(), &tenant).await.unwrap();
    assert_eq!(created.spec, tenant.spec);

    ensure_namespace(&client, "tenant-example-typed").await;
    let mut md = md;
    md.metadata.namespace = Some("tenant-example-typed".into());
    let created = Api::<ModelDeployment>::namespaced(client.clone(), "tenant-example-typed")
        .create(&PostParams::default(), &md)
        .await
        .unwrap();
    assert_eq!(created.spec, md.spec);

    // Defaults live in the CRD schema: a minimal Tenant comes back filled in.
    let minimal =
        tenants(&client).create(&PostParams::default(), &object::<Tenant>("minimal", None, json!({}))).await.unwrap();
    assert_eq!(minimal.data["spec"]["database"]["deletionPolicy"], "Retain");
    assert_eq!(minimal.data["spec"]["database"]["connectionLimit"], 20);
    assert_eq!(minimal.data["spec"]["quota"]["modelDeployments"], 5);
    assert_eq!(minimal.data["spec"]["suspended"], false);
}

#[tokio::test]
async fn examples_apply_with_kubectl() {
    let client = client_with_crds().await;
    ensure_namespace(&client, "tenant-acme").await;
    let examples: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let output = kubectl_apply(&examples);
    assert!(output.status.success(), "kubectl apply failed: {}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_mentions(&stdout, &["tenant.ember.dev/acme", "modeldeployment.ember.dev/minilm"]);

    // kubectl reports the API server's refusal, naming the field.
    let dir = tempfile_dir();
    let bad_file = dir.join("bad.yaml");
    std::fs::write(
        &bad_file,
        "apiVersion: ember.dev/v1alpha1\nkind: Tenant\nmetadata: {name: kubectl-bad}\nspec:\n  quota: {cpu: \"-2\"}\n",
    )
    .unwrap();
    let output = kubectl_apply(&bad_file);
    assert!(!output.status.success());
    assert_mentions(&String::from_utf8_lossy(&output.stderr), &["spec.quota.cpu", "non-negative"]);
}

/// `kubectl apply --server-side -f path` against the shared control plane.
fn kubectl_apply(path: &Path) -> std::process::Output {
    std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(shared_control_plane().unwrap().kubeconfig())
        .args(["apply", "--server-side", "-f"])
        .arg(path)
        .output()
        .expect("kubectl is installed")
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ember-crds-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn bad_tenant_names_are_refused() {
    let client = client_with_crds().await;
    let api = tenants(&client);
    for name in ["acme.corp", "1acme", &"a".repeat(57)] {
        let message = refusal(&api, &object::<Tenant>(name, None, json!({}))).await;
        assert_mentions(&message, &["metadata.name", "DNS-1123 label", "56 characters"]);
    }
}

#[tokio::test]
async fn negative_quotas_are_refused() {
    let client = client_with_crds().await;
    let api = tenants(&client);
    let message = refusal(&api, &object::<Tenant>("neg-cpu", None, json!({"quota": {"cpu": "-1"}}))).await;
    assert_mentions(&message, &["spec.quota.cpu", "non-negative quantity"]);
    let message = refusal(&api, &object::<Tenant>("neg-mem", None, json!({"quota": {"memory": "-5Gi"}}))).await;
    assert_mentions(&message, &["spec.quota.memory", "non-negative quantity"]);
    let message = refusal(&api, &object::<Tenant>("neg-gpu", None, json!({"quota": {"gpus": -1}}))).await;
    assert_mentions(&message, &["spec.quota.gpus", "greater than or equal to 0"]);
    let message = refusal(&api, &object::<Tenant>("junk-cpu", None, json!({"quota": {"cpu": "lots"}}))).await;
    assert_mentions(&message, &["spec.quota.cpu"]);
    let message =
        refusal(&api, &object::<Tenant>("no-rate", None, json!({"rateLimit": {"requestsPerSecond": 0, "burst": 10}})))
            .await;
    assert_mentions(&message, &["spec.rateLimit.requestsPerSecond", "greater than or equal to 1"]);
    // An integer quantity is fine, as users write it in YAML.
    tenants(&client)
        .create(&PostParams::default(), &object::<Tenant>("int-cpu", None, json!({"quota": {"cpu": 8}})))
        .await
        .unwrap();
}

#[tokio::test]
async fn min_replicas_above_max_is_refused() {
    let client = client_with_crds().await;
    let api = model_deployments(&client, "default");
    let mut spec = valid_model_spec();
    spec["replicas"] = json!({"min": 3, "max": 2});
    let message = refusal(&api, &object::<ModelDeployment>("minmax", Some("default"), spec)).await;
    assert_mentions(&message, &["spec.replicas.min", "less than or equal to replicas.max"]);
}

#[tokio::test]
async fn a_model_without_a_verified_config_is_refused() {
    let client = client_with_crds().await;
    let api = model_deployments(&client, "default");
    let mut spec = valid_model_spec();
    spec["model"].as_object_mut().unwrap().remove("config");
    let message = refusal(&api, &object::<ModelDeployment>("noconfig", Some("default"), spec.clone())).await;
    assert_mentions(&message, &["spec.model.config", "Required"]);
    spec["model"]["config"] = json!({"uri": "file:///models/config.json"});
    let message = refusal(&api, &object::<ModelDeployment>("nodigest", Some("default"), spec)).await;
    assert_mentions(&message, &["spec.model.config.sha256", "Required"]);
}

#[tokio::test]
async fn model_addresses_with_credentials_must_come_from_a_model_store_secret() {
    let client = client_with_crds().await;
    let api = model_deployments(&client, "default");
    let with_source = |source: serde_json::Value| {
        let mut spec = valid_model_spec();
        spec["model"]["source"] = source;
        spec
    };
    let digest = "a".repeat(64);
    let refused = [
        (
            json!({"uri": "https://user:pw@store.example/m.safetensors", "sha256": digest}),
            vec!["spec.model.source.uri", "carries credentials", "uriFrom"],
        ),
        (json!({"sha256": digest}), vec!["spec.model.source.uri", "exactly one of uri and uriFrom"]),
        (
            json!({"uri": "https://store.example/m", "uriFrom": {"secretKeyRef": {"name": "model-store-m", "key": "url"}}, "sha256": digest}),
            vec!["spec.model.source.uri", "exactly one of uri and uriFrom"],
        ),
        // The tenant's database credentials are not a model store's.
        (
            json!({"uriFrom": {"secretKeyRef": {"name": "ember-database", "key": "url"}}, "sha256": digest}),
            vec!["spec.model.source.uriFrom.secretKeyRef.name", "model-store-"],
        ),
    ];
    for (i, (source, says)) in refused.into_iter().enumerate() {
        let message =
            refusal(&api, &object::<ModelDeployment>(&format!("cred{i}"), Some("default"), with_source(source))).await;
        assert_mentions(&message, &says);
    }
    let signed =
        json!({"uriFrom": {"secretKeyRef": {"name": "model-store-minilm", "key": "weights"}}, "sha256": digest});
    api.create(&PostParams::default(), &object::<ModelDeployment>("signed", Some("default"), with_source(signed)))
        .await
        .unwrap();
}

#[tokio::test]
async fn wgpu_without_gpus_is_refused() {
    let client = client_with_crds().await;
    let api = model_deployments(&client, "default");
    let mut spec = valid_model_spec();
    spec["backend"] = "wgpu".into();
    let message = refusal(&api, &object::<ModelDeployment>("nogpu", Some("default"), spec.clone())).await;
    assert_mentions(&message, &["spec.backend", "wgpu needs resources.gpus > 0"]);
    spec["resources"] = json!({"gpus": 1});
    api.create(&PostParams::default(), &object::<ModelDeployment>("withgpu", Some("default"), spec)).await.unwrap();
}

#[tokio::test]
async fn unknown_architecture_is_refused() {
    let client = client_with_crds().await;
    let api = model_deployments(&client, "default");
    let mut spec = valid_model_spec();
    spec["model"]["architecture"] = "gpt2".into();
    let message = refusal(&api, &object::<ModelDeployment>("gpt", Some("default"), spec)).await;
    assert_mentions(&message, &["spec.model.architecture", "Unsupported value: \"gpt2\"", "\"bert\"", "\"mlp\""]);
}

#[tokio::test]
async fn inconsistent_models_are_refused() {
    let client = client_with_crds().await;
    let api = model_deployments(&client, "default");

    let mut spec = valid_model_spec();
    spec["model"]["source"]["sha256"] = "not-a-digest".into();
    let message = refusal(&api, &object::<ModelDeployment>("baddigest", Some("default"), spec)).await;
    assert_mentions(&message, &["spec.model.source.sha256"]);

    let mut spec = valid_model_spec();
    spec["model"]["tokenizer"] = Value::Null;
    let message = refusal(&api, &object::<ModelDeployment>("notok", Some("default"), spec)).await;
    assert_mentions(&message, &["spec.model.tokenizer", "required for architecture bert"]);

    let mut spec = valid_model_spec();
    spec["model"]["architecture"] = "mlp".into();
    let message = refusal(&api, &object::<ModelDeployment>("mlpembed", Some("default"), spec)).await;
    assert_mentions(&message, &["spec.model.task", "embedding needs architecture bert"]);
}

#[tokio::test]
async fn database_server_cannot_change_once_set() {
    let client = client_with_crds().await;
    let api = tenants(&client);
    let created = api
        .create(&PostParams::default(), &object::<Tenant>("pinned", None, json!({"database": {"server": "db-a"}})))
        .await
        .unwrap();
    let mut moved = created.clone();
    moved.data["spec"]["database"]["server"] = "db-b".into();
    let message = match api.replace("pinned", &PostParams::default(), &moved).await {
        Ok(_) => panic!("database.server changed"),
        Err(kube::Error::Api(status)) => status.message,
        Err(e) => panic!("{e}"),
    };
    assert_mentions(&message, &["spec.database", "cannot be changed once set"]);
}

/// A `null` where a defaulted field goes gets the default, whether created
/// or applied server-side: stored as `null`, it would fail to decode in
/// every watch of the kind (the operator's, ember-api's) for every tenant.
#[tokio::test]
async fn explicit_nulls_get_the_defaults_and_objects_stay_readable() {
    let client = client_with_crds().await;
    let nulls = json!({"quota": {"cpu": null, "memory": null, "storage": null}});
    tenants(&client).create(&PostParams::default(), &object::<Tenant>("nulls", None, nulls.clone())).await.unwrap();
    let typed = Api::<Tenant>::all(client.clone());
    let created = typed.get("nulls").await.expect("a Tenant written with nulls decodes");
    let defaults = ember_crds::tenant::TenantQuota::default();
    assert_eq!(created.spec.quota, defaults);

    let apply = kube::api::PatchParams::apply("nulls-test");
    let applied = object::<Tenant>("nulls-applied", None, nulls);
    tenants(&client).patch("nulls-applied", &apply, &kube::api::Patch::Apply(&applied)).await.unwrap();
    assert_eq!(typed.get("nulls-applied").await.expect("an applied Tenant decodes").spec.quota, defaults);

    ensure_namespace(&client, "tenant-nulls").await;
    let mut spec = valid_model_spec();
    spec["resources"] = json!({"cpu": null, "memory": null});
    let md = object::<ModelDeployment>("nulls", Some("tenant-nulls"), spec);
    model_deployments(&client, "tenant-nulls").patch("nulls", &apply, &kube::api::Patch::Apply(&md)).await.unwrap();
    let stored = Api::<ModelDeployment>::namespaced(client, "tenant-nulls").get("nulls").await.expect("it decodes");
    assert_eq!(stored.spec.resources, ember_crds::model_deployment::ReplicaResources::default());
}
