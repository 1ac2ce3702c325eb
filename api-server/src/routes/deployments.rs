//! `/v1/tenants/{tenant}/deployments[/{name}]`: ModelDeployments of a
//! tenant. Reads come from the watch cache; writes are server-side applies
//! as field manager `ember-api`, without forcing, so fields owned by
//! kubectl, Argo CD or Flux answer 409 instead of being taken over.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Json;
use ember_crds::labels::FIELD_MANAGER_API;
use ember_crds::model_deployment::{ModelDeployment, ModelDeploymentSpec, ModelDeploymentStatus};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, ValidationDirective};
use serde::Serialize;
use serde_json::{Value, json};

use super::{MAX_SPEC_BYTES, Tenancy, read_body};
use crate::audit::Event;
use crate::auth::Principal;
use crate::authz::TenantRole;
use crate::error::{Error, Result};

/// The fields a caller may set: the spec, nothing else (no status, labels,
/// owner references or tenant names).
const SPEC_FIELDS: [&str; 5] = ["model", "backend", "resources", "replicas", "batching"];

/// A ModelDeployment as the REST API shows it: no managed fields, no
/// internal metadata.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentView {
    pub name: String,
    pub tenant: String,
    pub generation: Option<i64>,
    pub spec: ModelDeploymentSpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<ModelDeploymentStatus>,
}

impl DeploymentView {
    fn of(tenant: &str, md: &ModelDeployment) -> Self {
        Self {
            name: md.metadata.name.clone().unwrap_or_default(),
            tenant: tenant.to_owned(),
            generation: md.metadata.generation,
            spec: md.spec.clone(),
            status: md.status.clone(),
        }
    }
}

pub async fn list(
    State(state): State<Tenancy>,
    who: Principal,
    Path(tenant): Path<String>,
) -> Result<Json<Vec<DeploymentView>>> {
    let access = state.access(&tenant, &who, TenantRole::View)?;
    let Some(namespace) = access.namespace() else { return Ok(Json(Vec::new())) };
    let items = state.caches.deployments_in(namespace).iter().map(|md| DeploymentView::of(access.name(), md)).collect();
    Ok(Json(items))
}

pub async fn get(
    State(state): State<Tenancy>,
    who: Principal,
    Path((tenant, name)): Path<(String, String)>,
) -> Result<Json<DeploymentView>> {
    let access = state.access(&tenant, &who, TenantRole::View)?;
    let md = access
        .namespace()
        .and_then(|namespace| state.caches.deployment(namespace, &name))
        .ok_or_else(|| Error::NotFound(format!("deployment '{name}' not found in tenant '{tenant}'")))?;
    Ok(Json(DeploymentView::of(access.name(), &md)))
}

/// Creates or updates the deployment from a spec body.
pub async fn put(
    State(state): State<Tenancy>,
    who: Principal,
    Path((tenant, name)): Path<(String, String)>,
    body: Body,
) -> Result<(StatusCode, Json<DeploymentView>)> {
    let access = state.access(&tenant, &who, TenantRole::Edit)?;
    let namespace = access.writable_namespace()?;
    let spec = spec_from(&read_body(body, MAX_SPEC_BYTES).await?)?;
    let existed = state.caches.deployment(namespace, &name).is_some();
    let object = json!({
        "apiVersion": "ember.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    });
    let mut params = PatchParams::apply(FIELD_MANAGER_API);
    // Unknown nested fields are refused by the API server (422 naming the
    // field) instead of being silently pruned.
    params.field_validation = Some(ValidationDirective::Strict);
    let api: Api<ModelDeployment> = Api::namespaced(state.client.clone(), namespace);
    let target = format!("modeldeployment:{name}");
    let action = if existed { "deployment.update" } else { "deployment.create" };
    let event = Event { tenant: Some(access.name()), actor: &who.user, action, target: Some(&target) };
    let applied = state.audited(event, async { Ok(api.patch(&name, &params, &Patch::Apply(&object)).await?) }).await?;
    let status = if existed { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(DeploymentView::of(access.name(), &applied))))
}

pub async fn delete(
    State(state): State<Tenancy>,
    who: Principal,
    Path((tenant, name)): Path<(String, String)>,
) -> Result<StatusCode> {
    let access = state.access(&tenant, &who, TenantRole::Edit)?;
    let api: Api<ModelDeployment> = Api::namespaced(state.client.clone(), access.writable_namespace()?);
    let target = format!("modeldeployment:{name}");
    let event =
        Event { tenant: Some(access.name()), actor: &who.user, action: "deployment.delete", target: Some(&target) };
    state
        .audited(event, async {
            api.delete(&name, &DeleteParams::default()).await.map_err(|e| match Error::from(e) {
                Error::NotFound(_) => Error::NotFound(format!("deployment '{name}' not found in tenant '{tenant}'")),
                other => other,
            })
        })
        .await?;
    Ok(StatusCode::ACCEPTED)
}

/// The request body as a spec object, refusing anything but spec fields.
fn spec_from(body: &[u8]) -> Result<Value> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| Error::BadRequest(format!("body is not valid JSON: {e}")))?;
    let Value::Object(fields) = &value else {
        return Err(Error::BadRequest("body must be a JSON object: the ModelDeployment spec".into()));
    };
    if let Some(field) = fields.keys().find(|k| !SPEC_FIELDS.contains(&k.as_str())) {
        return Err(Error::Invalid(format!(
            "field '{field}' cannot be set here; the body is a ModelDeployment spec with the fields {}",
            SPEC_FIELDS.join(", ")
        )));
    }
    Ok(value)
}
