//! `/v1/tenants/{tenant}/deployments[/{name}]`: ModelDeployments of a
//! tenant. Reads come from the watch cache; writes are server-side applies
//! as field manager `ember-api`, without forcing, so fields owned by
//! kubectl, Argo CD or Flux answer 409 instead of being taken over.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header;
use axum::response::{IntoResponse, Json, Response};
use ember_crds::labels::FIELD_MANAGER_API;
use ember_crds::model_deployment::{ModelDeployment, ModelDeploymentSpec, ModelDeploymentStatus};
use ember_crds::names;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, ValidationDirective};
use serde::Serialize;
use serde_json::{Value, json};

use super::{MAX_SPEC_BYTES, RouteTable, Tenancy};
use crate::audit::Event;
use crate::auth::Principal;
use crate::authz::Capability;
use crate::error::{Error, Result};
use crate::json::JsonBody;

/// The fields a caller may set: the spec, nothing else (no status, labels,
/// owner references or tenant names).
const SPEC_FIELDS: [&str; 5] = ["model", "backend", "resources", "replicas", "batching"];

pub fn routes() -> RouteTable<Tenancy> {
    RouteTable::new()
        .get("/v1/tenants/{tenant}/deployments", list)
        .get("/v1/tenants/{tenant}/deployments/{name}", get)
        .put("/v1/tenants/{tenant}/deployments/{name}", put)
        .delete("/v1/tenants/{tenant}/deployments/{name}", delete)
}

/// A ModelDeployment as the REST API shows it: no managed fields, no
/// internal metadata.
#[derive(Debug, Serialize, schemars::JsonSchema)]
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
            spec: without_credentials(md.spec.clone()),
            status: md.status.clone(),
        }
    }
}

/// What replaces a model address's query string (and user info) in views.
const REDACTED: &str = "redacted";

/// The spec with every model address cut to what is not a credential: a
/// signed URL's query string and any user info become [`REDACTED`]. Views
/// reach viewers and API keys, who may call the model but need not be able
/// to fetch its files; addresses kept in Secrets (`uriFrom`) show only the
/// Secret's name anyway.
fn without_credentials(mut spec: ModelDeploymentSpec) -> ModelDeploymentSpec {
    let model = &mut spec.model;
    for artifact in [Some(&mut model.source), Some(&mut model.config), model.tokenizer.as_mut()].into_iter().flatten() {
        if let Some(uri) = &mut artifact.uri {
            *uri = redacted_uri(uri);
        }
    }
    spec
}

fn redacted_uri(uri: &str) -> String {
    let (scheme, rest) = uri.split_once("://").unwrap_or(("", uri));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let rest = match rest[..authority_end].rfind('@') {
        Some(at) => format!("{REDACTED}@{}", &rest[at + 1..]),
        None => rest.to_owned(),
    };
    let rest = match rest.find(['?', '#']) {
        Some(cut) => format!("{}?{REDACTED}", &rest[..cut]),
        None => rest,
    };
    if scheme.is_empty() { rest } else { format!("{scheme}://{rest}") }
}

/// The list, from the watch cache; serialised once per change to the
/// namespace's deployments (`Caches::deployment_list`).
pub async fn list(State(state): State<Tenancy>, who: Principal, Path(tenant): Path<String>) -> Result<Response> {
    let access = state.access(&tenant, &who, Capability::ReadDeployments).await?;
    let body = match access.namespace() {
        None => Bytes::from_static(b"[]"),
        Some(namespace) => state.caches.deployment_list(access.name(), namespace, |items| {
            let views: Vec<DeploymentView> = items.iter().map(|md| DeploymentView::of(access.name(), md)).collect();
            Bytes::from(serde_json::to_vec(&views).unwrap_or_default())
        }),
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

pub async fn get(
    State(state): State<Tenancy>,
    who: Principal,
    Path((tenant, name)): Path<(String, String)>,
) -> Result<Json<DeploymentView>> {
    existing_name(&tenant, &name)?;
    let access = state.access(&tenant, &who, Capability::ReadDeployments).await?;
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
    body: JsonBody,
) -> Result<(StatusCode, Json<DeploymentView>)> {
    if !names::is_valid_deployment_name(&name) {
        return Err(Error::Invalid(format!(
            "metadata.name: '{name}' is not a valid deployment name (a lowercase DNS label that starts with a letter, \
             at most {} characters)",
            names::MAX_DEPLOYMENT_NAME_LEN
        )));
    }
    let target = format!("modeldeployment:{name}");
    let access =
        state.access_to_change(&tenant, &who, Capability::WriteDeployments, "deployment.write", &target).await?;
    let namespace = access.writable_namespace()?;
    let spec = spec_from(body.read(MAX_SPEC_BYTES, "a ModelDeployment spec").await?)?;
    let api: Api<ModelDeployment> = Api::namespaced(state.client.clone(), namespace);
    // As for Tenants: a cache miss is confirmed with the API server.
    let existed = state.caches.deployment(namespace, &name).is_some() || api.get_metadata_opt(&name).await?.is_some();
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
    existing_name(&tenant, &name)?;
    let target = format!("modeldeployment:{name}");
    let access =
        state.access_to_change(&tenant, &who, Capability::WriteDeployments, "deployment.delete", &target).await?;
    let api: Api<ModelDeployment> = Api::namespaced(state.client.clone(), access.writable_namespace()?);
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

/// A name the CRD refuses names no deployment: 404, checked before
/// anything else so that only valid names reach the audit trail and the
/// API server.
fn existing_name(tenant: &str, name: &str) -> Result<()> {
    if names::is_valid_deployment_name(name) {
        Ok(())
    } else {
        Err(Error::NotFound(format!("deployment '{name}' not found in tenant '{tenant}'")))
    }
}

/// The request body as a spec object, refusing anything but spec fields.
fn spec_from(value: Value) -> Result<Value> {
    let Value::Object(fields) = &value else {
        return Err(Error::Invalid("the body must be a JSON object: the ModelDeployment spec".into()));
    };
    if let Some(field) = fields.keys().find(|k| !SPEC_FIELDS.contains(&k.as_str())) {
        return Err(Error::Invalid(format!(
            "field '{field}' cannot be set here; the body is a ModelDeployment spec with the fields {}",
            SPEC_FIELDS.join(", ")
        )));
    }
    refuse_redacted_uris(&value)?;
    Ok(value)
}

/// A view's address sent back unchanged would point the runtime at a URL
/// without its signature; say so instead of deploying a model that cannot
/// download.
fn refuse_redacted_uris(spec: &Value) -> Result<()> {
    for file in ["source", "config", "tokenizer"] {
        let Some(uri) = spec.pointer(&format!("/model/{file}/uri")).and_then(Value::as_str) else { continue };
        if uri.ends_with(&format!("?{REDACTED}")) || uri.contains(&format!("://{REDACTED}@")) {
            return Err(Error::Invalid(format!(
                "spec.model.{file}.uri is an address as shown by a view, with its credentials redacted; \
                 send the full address, or keep it in a Secret and name it in spec.model.{file}.uriFrom"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_never_show_a_signature_or_password() {
        assert_eq!(
            redacted_uri("https://store.example/m/model.safetensors?X-Amz-Signature=abc&X-Amz-Credential=k"),
            "https://store.example/m/model.safetensors?redacted"
        );
        assert_eq!(
            redacted_uri("https://u:pw@store.example/m/c.json#frag"),
            "https://redacted@store.example/m/c.json?redacted"
        );
        assert_eq!(redacted_uri("https://store.example/a@b/c.json"), "https://store.example/a@b/c.json");
        assert_eq!(redacted_uri("file:///models/m.safetensors"), "file:///models/m.safetensors");
    }

    #[test]
    fn a_redacted_address_sent_back_is_refused_naming_the_field() {
        let spec = serde_json::json!({"model": {"config": {"uri": "https://s.example/c.json?redacted"}}});
        let Err(Error::Invalid(message)) = refuse_redacted_uris(&spec) else { panic!("accepted") };
        assert!(message.contains("spec.model.config.uri"), "{message}");
        let plain = serde_json::json!({"model": {"config": {"uri": "https://s.example/c.json?v=2"}}});
        assert!(refuse_redacted_uris(&plain).is_ok());
    }
}
