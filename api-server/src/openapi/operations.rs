//! Every route, described: one entry per method and path, in the order of
//! the routers (`crate::routes`).

use ember_crds::model_deployment::ModelDeploymentSpec;
use ember_crds::tenant::TenantSpec;
use serde_json::{Value, json};

use super::Schemas;
use super::builder::{Needs, Operation};
use crate::audit::Entry;
use crate::auth::Principal;
use crate::authz::Capability;
use crate::keys::{IssuedKey, KeyInfo};
use crate::routes::api_keys::NewKey;
use crate::routes::deployments::DeploymentView;
use crate::routes::tenants::{ADMIN_FIELDS, PRESENTATION_FIELDS, TenantSummary, TenantView};
use crate::usage::report::UsageReport;

const JSON: &str = "application/json";
const PROBLEM: &str = "application/problem+json";
const CSV: &str = "text/csv";
const JSON_LINES: &str = "application/x-ndjson";
const TEXT: &str = "text/plain";

pub fn tags() -> Value {
    json!([
        {"name": "health", "description": "Probes and this description."},
        {"name": "identity", "description": "Who the credentials prove the caller is."},
        {"name": "tenants", "description": "Tenants: seeing them, and administering them (platform admins)."},
        {"name": "deployments", "description": "ModelDeployments of a tenant, the same objects kubectl and GitOps write."},
        {"name": "inference", "description": "Calling a deployed model through ember-api, metered per caller."},
        {"name": "api-keys", "description": "API keys: credentials bound to one tenant and role."},
        {"name": "records", "description": "Usage for billing and the audit trail."},
    ])
}

pub fn all(schemas: &mut Schemas) -> Vec<Operation> {
    let mut operations = health();
    operations.push(
        Operation::new("get", "/v1/whoami", "whoami", "identity", "Who the caller is")
            .describe("The identity the credentials prove, as authorisation sees it.")
            .needs(Needs::Authentication)
            .answer(200, "The caller.", &[(JSON, schemas.of::<Principal>())]),
    );
    operations.extend(tenants(schemas));
    operations.extend(deployments(schemas));
    operations.extend(api_keys(schemas));
    operations.extend(records(schemas));
    operations.extend(inference(schemas));
    operations
}

fn health() -> Vec<Operation> {
    let text = || json!({"type": "string"});
    vec![
        Operation::new("get", "/healthz", "live", "health", "Liveness").needs(Needs::Nothing).answer(
            200,
            "The process serves requests.",
            &[(TEXT, text())],
        ),
        Operation::new("get", "/readyz", "ready", "health", "Readiness")
            .describe("Ready once the watch caches hold every Tenant and ModelDeployment.")
            .needs(Needs::Nothing)
            .answer(200, "Ready.", &[(TEXT, text())])
            .errors(&[503]),
        Operation::new("get", "/openapi.json", "openApi", "health", "This description").needs(Needs::Nothing).answer(
            200,
            "The OpenAPI 3.1 document.",
            &[(JSON, json!({"type": "object"}))],
        ),
        Operation::new("get", "/docs", "openApiPage", "health", "This description, rendered")
            .needs(Needs::Nothing)
            .answer(200, "An HTML page that renders /openapi.json.", &[("text/html", text())]),
        Operation::new("get", "/docs/page.js", "openApiPageScript", "health", "The rendered page's script")
            .needs(Needs::Nothing)
            .answer(200, "JavaScript.", &[("text/javascript", text())]),
        Operation::new("get", "/docs/page.css", "openApiPageStyle", "health", "The rendered page's style sheet")
            .needs(Needs::Nothing)
            .answer(200, "CSS.", &[("text/css", text())]),
    ]
}

fn tenants(schemas: &mut Schemas) -> Vec<Operation> {
    let view = schemas.of::<TenantView>();
    let admin_part = schemas.part_of::<TenantSpec>(
        "TenantAdministration",
        &ADMIN_FIELDS,
        "The administrative part of a Tenant's spec (platform admins).",
    );
    let presentation_part = schemas.part_of::<TenantSpec>(
        "TenantPresentation",
        &PRESENTATION_FIELDS,
        "A Tenant's display name and branding (its owners and platform admins).",
    );
    vec![
        Operation::new("get", "/v1/tenants", "listTenants", "tenants", "The caller's tenants")
            .describe("The tenants the caller holds a role in (every tenant for a platform admin), and nothing about the others.")
            .needs(Needs::Authentication)
            .answer(200, "The tenants, by name.", &[(JSON, schemas.of::<Vec<TenantSummary>>())]),
        Operation::new("get", "/v1/tenants/{tenant}", "getTenant", "tenants", "One tenant")
            .describe("Its spec (branding included), readiness, namespace and conditions.")
            .needs(Needs::InTenant(Capability::ReadTenant))
            .answer(200, "The tenant.", &[(JSON, view.clone())]),
        Operation::new("put", "/v1/tenants/{tenant}", "putTenant", "tenants", "Create or update a tenant")
            .describe(
                "Creates the Tenant, or replaces the administrative part of its spec: owners, members, quota, \
                 database policy, network and suspension. A server-side apply as field manager `ember-api`, \
                 without force: a field another manager owns answers 409 naming that manager. Fields ember-api \
                 set before and the body leaves out are released. Display name and branding are set with \
                 `PUT /v1/tenants/{tenant}/branding`.",
            )
            .needs(Needs::PlatformAdmin)
            .json_body("The administrative part of the spec.", admin_part)
            .answer(200, "Updated.", &[(JSON, view.clone())])
            .answer(201, "Created.", &[(JSON, view.clone())])
            .errors(&[409]),
        Operation::new("delete", "/v1/tenants/{tenant}", "deleteTenant", "tenants", "Delete a tenant")
            .describe(
                "Deletes the Tenant the caller saw (a UID precondition); the operator then removes its namespace \
                 and, by its database policy, its schema.",
            )
            .needs(Needs::InTenant(Capability::ManageTenants))
            .empty(202, "Deletion has begun.")
            .errors(&[409]),
        Operation::new("put", "/v1/tenants/{tenant}/branding", "putTenantBranding", "tenants", "Set a tenant's branding")
            .describe(
                "Sets the display name and branding, as field manager `ember-api-branding`. Sizes, colour formats \
                 and URL schemes are checked by the CRD's schema.",
            )
            .needs(Needs::InTenant(Capability::EditBranding))
            .json_body("Display name and branding.", presentation_part)
            .answer(200, "The tenant after the change.", &[(JSON, view)])
            .errors(&[409]),
    ]
}

fn deployments(schemas: &mut Schemas) -> Vec<Operation> {
    let view = schemas.of::<DeploymentView>();
    vec![
        Operation::new(
            "get",
            "/v1/tenants/{tenant}/deployments",
            "listDeployments",
            "deployments",
            "A tenant's deployments",
        )
        .describe("From ember-api's watch cache. Model addresses are shown without credentials.")
        .needs(Needs::InTenant(Capability::ReadDeployments))
        .answer(200, "The deployments.", &[(JSON, schemas.of::<Vec<DeploymentView>>())]),
        Operation::new(
            "get",
            "/v1/tenants/{tenant}/deployments/{name}",
            "getDeployment",
            "deployments",
            "One deployment",
        )
        .needs(Needs::InTenant(Capability::ReadDeployments))
        .answer(200, "The deployment.", &[(JSON, view.clone())]),
        Operation::new(
            "put",
            "/v1/tenants/{tenant}/deployments/{name}",
            "putDeployment",
            "deployments",
            "Create or update a deployment",
        )
        .describe(
            "A server-side apply of the spec as field manager `ember-api`, without force: a field kubectl, \
                 Argo CD or Flux owns answers 409 naming the manager. The tenant must be Ready.",
        )
        .needs(Needs::InTenant(Capability::WriteDeployments))
        .json_body("The ModelDeployment's spec.", schemas.component::<ModelDeploymentSpec>())
        .answer(200, "Updated.", &[(JSON, view.clone())])
        .answer(201, "Created.", &[(JSON, view)])
        .errors(&[409]),
        Operation::new(
            "delete",
            "/v1/tenants/{tenant}/deployments/{name}",
            "deleteDeployment",
            "deployments",
            "Delete a deployment",
        )
        .needs(Needs::InTenant(Capability::WriteDeployments))
        .empty(204, "Deleted.")
        .errors(&[409]),
    ]
}

fn api_keys(schemas: &mut Schemas) -> Vec<Operation> {
    vec![
        Operation::new("get", "/v1/tenants/{tenant}/api-keys", "listApiKeys", "api-keys", "A tenant's API keys")
            .describe("Live and revoked keys, without their secrets.")
            .needs(Needs::InTenant(Capability::ManageApiKeys))
            .answer(200, "The keys.", &[(JSON, schemas.of::<Vec<KeyInfo>>())])
            .errors(&[501]),
        Operation::new("post", "/v1/tenants/{tenant}/api-keys", "issueApiKey", "api-keys", "Issue an API key")
            .describe(
                "The secret is in this answer only. A key holds while its Tenant exists and its creator still \
                 owns the tenant; keys cannot administer a tenant (role `view` or `edit`).",
            )
            .needs(Needs::InTenant(Capability::ManageApiKeys))
            .json_body("What to issue.", schemas.of::<NewKey>())
            .answer(201, "The key, with its secret.", &[(JSON, schemas.of::<IssuedKey>())])
            .errors(&[501]),
        Operation::new("delete", "/v1/tenants/{tenant}/api-keys/{id}", "revokeApiKey", "api-keys", "Revoke an API key")
            .needs(Needs::InTenant(Capability::ManageApiKeys))
            .empty(204, "Revoked; the key is refused from now on.")
            .errors(&[501]),
    ]
}

fn records(schemas: &mut Schemas) -> Vec<Operation> {
    let report = schemas.of::<UsageReport>();
    let csv = json!({"type": "string"});
    let usage = |operation: Operation, group_by: &str| {
        operation
            .query(
                "from",
                "Start (RFC 3339); default: 24 hours before `to`.",
                json!({"type": "string", "format": "date-time"}),
            )
            .query("to", "End, exclusive (RFC 3339); default: now.", json!({"type": "string", "format": "date-time"}))
            .query("groupBy", group_by, json!({"type": "string"}))
            .answer(
                200,
                "Usage, one row per group: JSON, JSON lines (`Accept: application/x-ndjson`, one row per line) \
                 or CSV (`Accept: text/csv`).",
                &[(JSON, report.clone()), (JSON_LINES, csv.clone()), (CSV, csv.clone())],
            )
            .errors(&[422, 501])
    };
    let entries = json!({"type": "array", "items": schemas.of::<Entry>()});
    let trail = |operation: Operation| {
        operation
            .query("actor", "Only this actor's entries.", json!({"type": "string"}))
            .query("action", "An action (`deployment.update`) or a family (`deployment`).", json!({"type": "string"}))
            .query("source", "`rest` (through ember-api) or `kubernetes` (seen on a watch).", json!({"enum": ["rest", "kubernetes"]}))
            .query("from", "Entries at or after this time (RFC 3339).", json!({"type": "string", "format": "date-time"}))
            .query("to", "Entries before this time (RFC 3339).", json!({"type": "string", "format": "date-time"}))
            .query("cursor", "`X-Next-Cursor` of the previous page.", json!({"type": "integer", "minimum": 1}))
            .query("limit", "Entries per page (default 100).", json!({"type": "integer", "minimum": 1, "maximum": 1000}))
            .answer(
                200,
                "A page of entries, newest first: a JSON array, JSON lines (`Accept: application/x-ndjson`) or CSV (`Accept: text/csv`).",
                &[(JSON, entries.clone()), (JSON_LINES, json!({"type": "string"})), (CSV, json!({"type": "string"}))],
            )
            .answer_header(200, "X-Next-Cursor", "The cursor of the next page, when more entries follow.")
            .answer_header(200, "Link", "`<url>; rel=\"next\"`: the next page, when more entries follow.")
            .errors(&[501])
    };
    vec![
        usage(
            Operation::new("get", "/v1/tenants/{tenant}/usage", "tenantUsage", "records", "A tenant's usage")
                .describe("Requests, items, tokens and compute time per UTC hour, for billing.")
                .needs(Needs::InTenant(Capability::ReadRecords)),
            "Comma-separated: `hour` or `day`, `deployment`, `caller` (alias `key`); default `deployment`.",
        ),
        usage(
            Operation::new("get", "/v1/usage", "platformUsage", "records", "Every tenant's usage")
                .needs(Needs::PlatformAdmin),
            "Comma-separated: `hour` or `day`, `tenant`, `deployment`, `caller` (alias `key`); default `tenant`.",
        ),
        trail(
            Operation::new("get", "/v1/tenants/{tenant}/audit", "tenantAudit", "records", "A tenant's audit trail")
                .describe(
                    "Every change to the tenant and its deployments: through ember-api (successes and refusals) and \
                     with kubectl or GitOps (seen on watches, the actor being the field manager).",
                )
                .needs(Needs::InTenant(Capability::ReadRecords)),
        ),
        trail(
            Operation::new("get", "/v1/audit", "platformAudit", "records", "The whole audit trail")
                .needs(Needs::PlatformAdmin)
                .query("tenant", "Only this tenant's entries.", json!({"type": "string"})),
        ),
    ]
}

fn inference(schemas: &mut Schemas) -> Vec<Operation> {
    let v2_request = schemas.named("InferenceRequest", v2_request());
    let v2_response = schemas.named("InferenceResponse", v2_response());
    let runtime_error = schemas.named("RuntimeError", runtime_error());
    let binary = json!({"type": "string", "contentMediaType": "application/octet-stream"});
    // Refusals come from ember-api (problem+json) or from the runtime,
    // passed back as it sent them (JSON with the protocol's `error` and
    // the problem fields).
    let runtime_refusals = |mut operation: Operation| {
        for (status, description) in [
            (400, "The runtime refused the request; its message names what is wrong."),
            (404, "No such tenant or deployment, or one in a tenant the caller holds no role in."),
            (413, "The body is larger than ember-api or the runtime takes."),
            (429, "Over a rate limit, or the runtime's queue is full; `Retry-After` says when to retry."),
            (503, "ember-api or the runtime is not ready, or too many calls are in flight."),
            (504, "The runtime did not answer in time."),
        ] {
            let content = [(JSON, runtime_error.clone()), (PROBLEM, runtime_error.clone())];
            operation = operation.answer(status, description, &content);
        }
        operation.errors(&[409, 502])
    };
    vec![
        runtime_refusals(
            Operation::new(
                "post",
                "/v1/tenants/{tenant}/deployments/{name}/infer",
                "infer",
                "inference",
                "Run the model (Open Inference Protocol v2)",
            )
            .describe(
                "Forwarded to the deployment's runtime: JSON tensors, or the binary tensor extension \
                     (`Inference-Header-Content-Length`). The answer carries what the call cost in `x-ember-items`, \
                     `x-ember-tokens` and `x-ember-compute-us`.",
            )
            .needs(Needs::InTenant(Capability::CallModels))
            .header(
                "Inference-Header-Content-Length",
                "With the binary extension: the length of the JSON header before the tensor bytes.",
                json!({"type": "integer", "minimum": 0}),
            )
            .body("Input tensors.", &[(JSON, v2_request), ("application/octet-stream", binary.clone())])
            .answer(200, "Output tensors.", &[(JSON, v2_response), ("application/octet-stream", binary)])
            .errors(&[415]),
        ),
        runtime_refusals(
            Operation::new(
                "post",
                "/v1/tenants/{tenant}/deployments/{name}/embeddings",
                "embeddings",
                "inference",
                "Embed texts (OpenAI style)",
            )
            .describe("Forwarded to the deployment's runtime, which must serve an embedding model.")
            .needs(Needs::InTenant(Capability::CallModels))
            .body("Texts or token ids to embed.", &[(JSON, schemas.named("EmbeddingsRequest", embeddings_request()))])
            .answer(
                200,
                "One embedding per input.",
                &[(JSON, schemas.named("EmbeddingsResponse", embeddings_response()))],
            )
            .errors(&[415]),
        ),
    ]
}

/// Open Inference Protocol v2 request: ember-api passes it on unread, so
/// this is the protocol's shape, as ember-runtime takes it (docs/runtime.md).
fn v2_request() -> Value {
    json!({
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "inputs": {"type": "array", "items": {
                "type": "object",
                "required": ["name", "shape", "datatype"],
                "properties": {
                    "name": {"type": "string"},
                    "shape": {"type": "array", "items": {"type": "integer"}},
                    "datatype": {"type": "string", "examples": ["FP32", "INT64", "BYTES"]},
                    "parameters": {"type": "object"},
                    "data": {"description": "Tensor values, flat or nested, row-major."},
                },
            }},
            "outputs": {"type": "array", "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
            }},
        },
    })
}

fn v2_response() -> Value {
    json!({
        "type": "object",
        "required": ["model_name", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "outputs": {"type": "array", "items": {
                "type": "object",
                "required": ["name", "shape", "datatype"],
                "properties": {
                    "name": {"type": "string"},
                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    "datatype": {"type": "string"},
                    "parameters": {"type": "object"},
                    "data": {"type": "array"},
                },
            }},
        },
    })
}

/// How ember-runtime refuses: a protocol `error` plus problem fields.
fn runtime_error() -> Value {
    json!({
        "type": "object",
        "properties": {
            "error": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "type": {"type": "string"},
        },
    })
}

fn embeddings_request() -> Value {
    json!({
        "type": "object",
        "required": ["input"],
        "properties": {
            "input": {"anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}},
                {"type": "array", "items": {"type": "integer"}},
                {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
            ]},
            "model": {"type": "string"},
            "encoding_format": {"enum": ["float", "base64"]},
        },
    })
}

fn embeddings_response() -> Value {
    json!({
        "type": "object",
        "required": ["object", "data", "model", "usage"],
        "properties": {
            "object": {"const": "list"},
            "model": {"type": "string"},
            "data": {"type": "array", "items": {
                "type": "object",
                "required": ["object", "index", "embedding"],
                "properties": {
                    "object": {"const": "embedding"},
                    "index": {"type": "integer", "minimum": 0},
                    "embedding": {"anyOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string"}]},
                },
            }},
            "usage": {
                "type": "object",
                "properties": {"prompt_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}},
            },
        },
    })
}
