//! The `Tenant` resource: one customer organisation of the platform.
//!
//! A Tenant is cluster-scoped. The operator turns it into a namespace
//! `tenant-<name>`, quota, network policies, RBAC and a PostgreSQL schema
//! (see `docs/architecture.md`). Every rule a user can break is enforced by
//! the API server itself (OpenAPI bounds and CEL rules below), so `kubectl
//! apply`, GitOps tools and the REST API all get the same clear refusal.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Desired state of a Tenant.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "ember.dev",
    version = "v1alpha1",
    kind = "Tenant",
    plural = "tenants",
    shortname = "tnt",
    status = "TenantStatus",
    category = "ember",
    doc = "A customer organisation of the Ember platform: its namespace, quota, network isolation, access and database schema.",
    printcolumn(name = "Namespace", type_ = "string", json_path = ".status.namespace"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new(
        "self.metadata.name.size() <= 56 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')"
    ).message(
        "metadata.name must be a lowercase DNS-1123 label that starts with a letter and has at most 56 characters, so that namespace tenant-<name> and schema tenant_<name> are valid"
    ).reason(Reason::FieldValueInvalid)
)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// Human-readable name shown in user interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub display_name: Option<String>,

    /// Tenant administrators: full control inside the tenant namespace and over the tenant's REST API resources.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub owners: Vec<Subject>,

    /// Further users or groups with `edit` or `view` access inside the tenant namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub members: Vec<Member>,

    /// Resource budget of the tenant namespace.
    #[serde(default)]
    pub quota: TenantQuota,

    /// Placement and lifecycle of the tenant's PostgreSQL schema.
    #[serde(default)]
    pub database: TenantDatabase,

    /// Network allowances on top of the default-deny policy.
    #[serde(default)]
    pub network: TenantNetwork,

    /// Per-tenant presentation settings used by the REST API and user interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branding: Option<TenantBranding>,

    /// The tenant's own REST API request limit, in place of ember-api's
    /// default per-tenant limit (`--rate-per-tenant`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<TenantRateLimit>,

    /// When true, every ModelDeployment of the tenant is scaled to zero; nothing is deleted.
    #[serde(default)]
    pub suspended: bool,
}

/// Requests per second through ember-api for all of a tenant's callers
/// together, and the burst allowed above that rate.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantRateLimit {
    /// Sustained requests per second.
    #[schemars(range(min = 1, max = 100000))]
    pub requests_per_second: i32,
    /// Requests allowed at once above the rate (at least 1).
    #[schemars(range(min = 1, max = 1000000))]
    pub burst: i32,
}

/// Kind of RBAC subject.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum SubjectKind {
    User,
    Group,
}

/// A user or group, as the cluster's authenticator names them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    pub kind: SubjectKind,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Access level of a tenant member inside the tenant namespace.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum MemberRole {
    Edit,
    #[default]
    View,
}

/// A tenant member and its role.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub kind: SubjectKind,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[serde(default)]
    pub role: MemberRole,
}

/// Resource budget. Quantities accept Kubernetes notation (`500m`, `2`, `4Gi`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TenantQuota {
    /// Total CPU requests of all pods.
    #[serde(default = "default_quota_cpu")]
    #[x_kube(validation = Rule::new(NON_NEGATIVE_QUANTITY_RULE).message("cpu must be a non-negative quantity such as 500m or 8"))]
    pub cpu: Quantity,
    /// Total memory requests of all pods.
    #[serde(default = "default_quota_memory")]
    #[x_kube(validation = Rule::new(NON_NEGATIVE_QUANTITY_RULE).message("memory must be a non-negative quantity such as 512Mi or 16Gi"))]
    pub memory: Quantity,
    /// Total `nvidia.com/gpu` requests of all pods.
    #[serde(default)]
    #[schemars(range(min = 0, max = 4096))]
    pub gpus: i32,
    /// Maximum number of pods.
    #[serde(default = "default_quota_pods")]
    #[schemars(range(min = 0, max = 100000))]
    pub pods: i32,
    /// Maximum number of ModelDeployments.
    #[serde(default = "default_quota_model_deployments")]
    #[schemars(range(min = 0, max = 10000))]
    pub model_deployments: i32,
    /// Total persistent volume claim storage.
    #[serde(default = "default_quota_storage")]
    #[x_kube(validation = Rule::new(NON_NEGATIVE_QUANTITY_RULE).message("storage must be a non-negative quantity such as 100Gi"))]
    pub storage: Quantity,
}

/// CEL rule for a non-negative int-or-string quantity. `string(self)` makes
/// the rule work whether the user wrote `cpu: 8` or `cpu: "8"`.
const NON_NEGATIVE_QUANTITY_RULE: &str =
    "isQuantity(string(self)) && !quantity(string(self)).isLessThan(quantity('0'))";

fn default_quota_cpu() -> Quantity {
    Quantity("4".into())
}
fn default_quota_memory() -> Quantity {
    Quantity("16Gi".into())
}
fn default_quota_pods() -> i32 {
    20
}
fn default_quota_model_deployments() -> i32 {
    5
}
fn default_quota_storage() -> Quantity {
    Quantity("50Gi".into())
}

impl Default for TenantQuota {
    fn default() -> Self {
        Self {
            cpu: default_quota_cpu(),
            memory: default_quota_memory(),
            gpus: 0,
            pods: default_quota_pods(),
            model_deployments: default_quota_model_deployments(),
            storage: default_quota_storage(),
        }
    }
}

/// What happens to the schema and role when the Tenant is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum DeletionPolicy {
    /// Keep schema and data; the role loses its login. Safe default: removing a Tenant from Git never destroys data.
    #[default]
    Retain,
    /// Drop schema, data and role.
    Delete,
}

/// Placement and lifecycle of the tenant's PostgreSQL schema.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(oldSelf.server) || (has(self.server) && self.server == oldSelf.server)").message("database.server cannot be changed once set: moving a tenant between servers needs a data migration").reason(Reason::FieldValueForbidden))]
pub struct TenantDatabase {
    /// Name of a database server from the operator's configuration. Empty: the operator places the tenant and records the choice in status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub server: Option<String>,
    /// Maximum concurrent connections of the tenant's database role.
    #[serde(default = "default_connection_limit")]
    #[schemars(range(min = 1, max = 1000))]
    pub connection_limit: i32,
    /// `Retain` keeps schema and data when the Tenant is deleted, `Delete` drops them.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

fn default_connection_limit() -> i32 {
    20
}

impl Default for TenantDatabase {
    fn default() -> Self {
        Self { server: None, connection_limit: default_connection_limit(), deletion_policy: DeletionPolicy::Retain }
    }
}

/// Network allowances on top of the default-deny policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantNetwork {
    /// Namespaces whose pods may reach the tenant's model Services (e.g. an ingress controller).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))
    )]
    pub allow_from_namespaces: Vec<String>,
}

/// Per-tenant presentation settings, shown by the web console and served by
/// `GET /v1/tenants/{t}`. Owners may edit them through the REST API. Every
/// field is bounded and schema-checked, so nothing here can carry script,
/// markup or a non-HTTPS address into a page.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantBranding {
    /// HTTPS address of the tenant's logo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = r"^https://[^\s]+$"))]
    pub logo_url: Option<String>,
    /// Primary colour as `#rrggbb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^#[0-9a-fA-F]{6}$"))]
    pub primary_color: Option<String>,
    /// Accent colour as `#rrggbb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^#[0-9a-fA-F]{6}$"))]
    pub accent_color: Option<String>,
    /// Where the tenant's users get help: an `https://` page or a `mailto:` address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = r"^(https://|mailto:)[^\s]+$"))]
    pub support_url: Option<String>,
    /// Colour scheme of the console for this tenant; `system` follows the user's setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub theme: Option<Theme>,
}

/// Console colour scheme.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Theme {
    Light,
    Dark,
    System,
}

/// Observed state of a Tenant, written by the operator only.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// The generation the operator last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The tenant's namespace, once it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Where the tenant's database schema lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<TenantDatabaseStatus>,
    /// `Ready`, `NamespaceReady`, `DatabaseReady`, `QuotaReady`, `Reconciling`, `Stalled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// Placement of the tenant's schema, recorded once and never changed silently.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantDatabaseStatus {
    pub server: String,
    pub schema: String,
    pub secret_name: String,
}
