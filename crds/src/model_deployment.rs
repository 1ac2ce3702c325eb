//! The `ModelDeployment` resource: one served model inside a tenant namespace.
//!
//! The operator turns it into a Deployment of `ember-runtime` pods plus
//! Service, HPA and PodDisruptionBudget. Cross-field rules (replica bounds,
//! GPU backend needs GPUs, task fits architecture) are CEL rules, so the API
//! server refuses a bad manifest before anything acts on it.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Desired state of a ModelDeployment.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ember.dev",
    version = "v1alpha1",
    kind = "ModelDeployment",
    plural = "modeldeployments",
    shortname = "md",
    namespaced,
    status = "ModelDeploymentStatus",
    category = "ember",
    doc = "A model served by ember-runtime pods inside a tenant namespace.",
    printcolumn(name = "Architecture", type_ = "string", json_path = ".spec.model.architecture"),
    printcolumn(name = "Backend", type_ = "string", json_path = ".spec.backend"),
    printcolumn(name = "Ready Replicas", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new(
        "self.metadata.name.size() <= 50 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')"
    ).message(
        "metadata.name must be a lowercase DNS-1123 label that starts with a letter and has at most 50 characters, so that its Service and Deployment names are valid"
    ).reason(Reason::FieldValueInvalid)
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.backend != 'wgpu' || self.resources.gpus > 0").message("backend wgpu needs resources.gpus > 0").field_path(".backend").reason(Reason::FieldValueInvalid))]
pub struct ModelDeploymentSpec {
    /// The model to serve and where its files come from.
    pub model: ModelSpec,
    /// Compute backend of ember-runtime: `cpu`, or `wgpu` on GPU nodes.
    #[serde(default)]
    pub backend: Backend,
    /// Resources of each replica.
    #[serde(default)]
    pub resources: ReplicaResources,
    /// Replica bounds; `min < max` adds a HorizontalPodAutoscaler.
    #[serde(default)]
    pub replicas: ReplicaBounds,
    /// Dynamic batching of concurrent requests.
    #[serde(default)]
    pub batching: Batching,
}

/// Model architectures compiled into ember-runtime. Anything else is refused by the API server.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Architecture {
    /// BERT-family text encoders (BERT, MiniLM).
    Bert,
    /// Multi-layer perceptron for tabular data.
    Mlp,
}

/// What the model computes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Task {
    Embedding,
    Classification,
    Regression,
}

/// The model and where its files come from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.architecture != 'bert' || has(self.tokenizer)").message("model.tokenizer is required for architecture bert").field_path(".tokenizer").reason(Reason::FieldValueRequired),
    validation = Rule::new("self.task != 'embedding' || self.architecture == 'bert'").message("task embedding needs architecture bert").field_path(".task").reason(Reason::FieldValueInvalid),
    validation = Rule::new("self.task != 'regression' || self.architecture == 'mlp'").message("task regression needs architecture mlp").field_path(".task").reason(Reason::FieldValueInvalid)
)]
pub struct ModelSpec {
    pub architecture: Architecture,
    pub task: Task,
    /// Weights (`model.safetensors`).
    pub source: ArtifactRef,
    /// Model configuration (`config.json`), with its digest like every file
    /// the runtime loads (no default next to the weights: an unverified
    /// config could change what the verified weights compute).
    pub config: ArtifactRef,
    /// Tokenizer (`tokenizer.json`), required for text models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<ArtifactRef>,
}

/// A file fetched by ember-runtime and verified against its digest before use.
///
/// Where the file lives is either a plain `uri`, which everyone who may read
/// the ModelDeployment (and its pods) sees, or `uriFrom`, a key of a Secret:
/// the place for signed URLs and URLs with a password. The operator hands a
/// Secret reference to the pod as an environment variable filled by the
/// kubelet, so the credential appears in no object, argument, log or view.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.uri) != has(self.uriFrom)").message("give exactly one of uri and uriFrom").field_path(".uri").reason(Reason::FieldValueRequired),
    validation = Rule::new("!has(self.uri) || !self.uri.matches('^[a-z]+://[^/]*@')").message("uri carries credentials (user info): put the URL in a Secret named model-store-... and refer to it with uriFrom.secretKeyRef").field_path(".uri").reason(Reason::FieldValueForbidden)
)]
pub struct ArtifactRef {
    /// `https://`, `http://` or `file://` address of the file, without
    /// credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^(https?|file)://[^\s]+$"))]
    pub uri: Option<String>,
    /// The address, read from a Secret in the ModelDeployment's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_from: Option<UriSource>,
    /// Lowercase hex SHA-256 of the file; a mismatch keeps the model from becoming ready.
    #[schemars(regex(pattern = r"^[a-f0-9]{64}$"))]
    pub sha256: String,
}

impl ArtifactRef {
    /// A file at a plain address.
    pub fn at(uri: impl Into<String>, sha256: impl Into<String>) -> Self {
        Self { uri: Some(uri.into()), uri_from: None, sha256: sha256.into() }
    }
}

/// Where a Secret-held address is.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UriSource {
    pub secret_key_ref: ModelStoreSecretKey,
}

/// One key of a model-store Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelStoreSecretKey {
    /// The Secret's name, which must start with `model-store-`: a
    /// ModelDeployment may only point its pods at Secrets made for model
    /// downloads, never at the tenant's other Secrets (its database
    /// credentials), which those who may edit deployments cannot read.
    #[schemars(length(min = 13, max = 253), regex(pattern = r"^model-store-[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// The key holding the URL.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// Compute backend of ember-runtime.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Backend {
    #[default]
    Cpu,
    Wgpu,
}

/// Resources of each replica.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaResources {
    #[serde(default = "default_replica_cpu")]
    #[x_kube(validation = Rule::new("isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))").message("resources.cpu must be a positive quantity such as 500m or 2"))]
    pub cpu: Quantity,
    #[serde(default = "default_replica_memory")]
    #[x_kube(validation = Rule::new("isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))").message("resources.memory must be a positive quantity such as 512Mi or 2Gi"))]
    pub memory: Quantity,
    /// `nvidia.com/gpu` per replica.
    #[serde(default)]
    #[schemars(range(min = 0, max = 16))]
    pub gpus: i32,
}

fn default_replica_cpu() -> Quantity {
    Quantity("1".into())
}
fn default_replica_memory() -> Quantity {
    Quantity("1Gi".into())
}

impl Default for ReplicaResources {
    fn default() -> Self {
        Self { cpu: default_replica_cpu(), memory: default_replica_memory(), gpus: 0 }
    }
}

/// Replica bounds.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.min <= self.max").message("replicas.min must be less than or equal to replicas.max").field_path(".min").reason(Reason::FieldValueInvalid))]
pub struct ReplicaBounds {
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 100))]
    pub min: i32,
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 100))]
    pub max: i32,
}

fn one() -> i32 {
    1
}

impl Default for ReplicaBounds {
    fn default() -> Self {
        Self { min: 1, max: 1 }
    }
}

/// Dynamic batching of concurrent requests.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Batching {
    /// Largest batch the server forms.
    #[serde(default = "default_max_batch_size")]
    #[schemars(range(min = 1, max = 1024))]
    pub max_batch_size: i32,
    /// Longest the first request of a batch waits for company (it waits only
    /// for as many requests as recent batches had).
    #[serde(default = "default_max_delay_ms")]
    #[schemars(range(min = 0, max = 1000))]
    pub max_delay_ms: i32,
}

fn default_max_batch_size() -> i32 {
    32
}
fn default_max_delay_ms() -> i32 {
    5
}

impl Default for Batching {
    fn default() -> Self {
        Self { max_batch_size: default_max_batch_size(), max_delay_ms: default_max_delay_ms() }
    }
}

/// Observed state of a ModelDeployment, written by the operator only.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// In-cluster address of the model's Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `Ready`, `Progressing`, `Reconciling`, `Stalled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}
