//! `/v1/tenants[/{tenant}[/branding]]`: seeing tenants, and administering
//! them.
//!
//! Platform admins create, replace and delete Tenants: the same objects
//! kubectl and GitOps write, applied server-side as field manager
//! `ember-api` without forcing, so a field another manager owns (kubectl,
//! Argo CD, Flux) answers 409 naming that manager instead of being taken
//! over. Presentation (display name, branding) has its own route and its
//! own field manager, `ember-api-branding`, so that tenant owners may edit
//! it and only it, and an admin's spec writes and an owner's branding
//! writes never collide as one manager.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Json;
use ember_crds::conditions::{find_condition, types};
use ember_crds::labels::{FIELD_MANAGER_API, FIELD_MANAGER_API_BRANDING};
use ember_crds::names;
use ember_crds::tenant::{Tenant, TenantSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions, ValidationDirective};
use serde::Serialize;
use serde_json::{Value, json};

use super::{MAX_SPEC_BYTES, RouteTable, Tenancy, TenantAccess};
use crate::audit::Event;
use crate::auth::Principal;
use crate::authz::{Capability, Role, roles_in};
use crate::error::{Error, Result};
use crate::json::JsonBody;

/// Spec fields a platform admin sets with `PUT /v1/tenants/{t}`.
pub const ADMIN_FIELDS: [&str; 7] = ["owners", "members", "quota", "database", "network", "suspended", "rateLimit"];
/// Spec fields set with `PUT /v1/tenants/{t}/branding`.
pub const PRESENTATION_FIELDS: [&str; 2] = ["displayName", "branding"];

pub fn routes() -> RouteTable<Tenancy> {
    RouteTable::new()
        .get("/v1/tenants", list)
        .get("/v1/tenants/{tenant}", get)
        .put("/v1/tenants/{tenant}", put)
        .delete("/v1/tenants/{tenant}", delete)
        .put("/v1/tenants/{tenant}/branding", put_branding)
}

/// A tenant in a listing.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantSummary {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The caller's roles in it (`platformAdmin` for every tenant when the
    /// caller is one).
    pub roles: Vec<Role>,
    /// The Tenant's `Ready` condition status (`True`, `False`, `Unknown`).
    pub ready: String,
}

/// One tenant as `GET /v1/tenants/{t}` shows it: everything a member may
/// also read with `kubectl get tenant`, without Kubernetes' bookkeeping.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantView {
    pub name: String,
    pub uid: Option<String>,
    pub generation: Option<i64>,
    pub roles: Vec<Role>,
    pub spec: TenantSpec,
    pub ready: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub conditions: Vec<Condition>,
}

fn ready_of(tenant: &Tenant) -> String {
    tenant
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, types::READY))
        .map_or_else(|| "Unknown".to_owned(), |c| c.status.clone())
}

impl TenantView {
    fn of(tenant: &Tenant, roles: Vec<Role>) -> Self {
        let status = tenant.status.clone().unwrap_or_default();
        Self {
            name: tenant.metadata.name.clone().unwrap_or_default(),
            uid: tenant.metadata.uid.clone(),
            generation: tenant.metadata.generation,
            roles,
            spec: tenant.spec.clone(),
            ready: ready_of(tenant),
            namespace: status.namespace,
            conditions: status.conditions,
        }
    }
}

/// `GET /v1/tenants`: the tenants the caller holds a role in (all of them
/// for a platform admin), nothing about the others.
pub async fn list(State(state): State<Tenancy>, who: Principal) -> Result<Json<Vec<TenantSummary>>> {
    state.admit(&who).await?;
    let mut mine: Vec<TenantSummary> = state
        .caches
        .tenants()
        .iter()
        .filter_map(|tenant| {
            let roles = roles_in(tenant, &who);
            (!roles.is_empty()).then(|| TenantSummary {
                name: tenant.metadata.name.clone().unwrap_or_default(),
                display_name: tenant.spec.display_name.clone(),
                roles,
                ready: ready_of(tenant),
            })
        })
        .collect();
    mine.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(mine))
}

/// `GET /v1/tenants/{t}`.
pub async fn get(State(state): State<Tenancy>, who: Principal, Path(tenant): Path<String>) -> Result<Json<TenantView>> {
    let TenantAccess { tenant, roles } = state.access(&tenant, &who, Capability::ReadTenant).await?;
    Ok(Json(TenantView::of(&tenant, roles)))
}

/// `PUT /v1/tenants/{t}`: creates or replaces the administrative part of
/// the spec (platform admins). The body is that part of the spec; what
/// ember-api set before and the body leaves out is released (and removed
/// unless another manager also sets it).
pub async fn put(
    State(state): State<Tenancy>,
    who: Principal,
    Path(name): Path<String>,
    body: JsonBody,
) -> Result<(StatusCode, Json<TenantView>)> {
    // Checked first: only valid names reach the audit trail and the API server.
    names::validate_tenant_name(&name).map_err(|e| Error::Invalid(format!("metadata.name: {e}")))?;
    let target = format!("tenant:{name}");
    state.platform_admin_to_change(&who, &name, "tenant.write", &target).await?;
    let body = body.read(MAX_SPEC_BYTES, "a Tenant spec").await?;
    let spec = spec_fields(body, &ADMIN_FIELDS, "PUT /v1/tenants/{t}/branding")?;
    // The cache may not have seen a Tenant created a moment ago; when it
    // knows none, ask the API server (creations are rare) so that 201 and
    // the audit action say what really happened.
    let api: Api<Tenant> = Api::all(state.client.clone());
    let existed = state.caches.tenant(&name).is_some() || api.get_metadata_opt(&name).await?.is_some();
    let object = json!({
        "apiVersion": "ember.dev/v1alpha1",
        "kind": "Tenant",
        "metadata": {"name": name},
        "spec": spec,
    });
    let action = if existed { "tenant.update" } else { "tenant.create" };
    let event = Event { tenant: Some(&name), actor: &who.user, action, target: Some(&target) };
    let applied = state.audited(event, apply(&state, &name, FIELD_MANAGER_API, &object)).await?;
    let status = if existed { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(TenantView::of(&applied, roles_in(&applied, &who)))))
}

/// `PUT /v1/tenants/{t}/branding`: the tenant's display name and branding
/// (owners and platform admins). Validated by the CRD's schema: sizes,
/// colour formats and URL schemes are refused with 422 naming the field.
pub async fn put_branding(
    State(state): State<Tenancy>,
    who: Principal,
    Path(name): Path<String>,
    body: JsonBody,
) -> Result<Json<TenantView>> {
    let target = format!("tenant:{name}");
    let access = state.access_to_change(&name, &who, Capability::EditBranding, "tenant.branding", &target).await?;
    let body = body.read(MAX_SPEC_BYTES, "a Tenant's branding").await?;
    let spec = spec_fields(body, &PRESENTATION_FIELDS, "PUT /v1/tenants/{t}")?;
    // The UID makes this an update of the Tenant the caller was authorised
    // in: should it have been deleted meanwhile, the API server refuses
    // instead of creating a Tenant that has nothing but branding.
    let object = json!({
        "apiVersion": "ember.dev/v1alpha1",
        "kind": "Tenant",
        "metadata": {"name": name, "uid": access.uid()?},
        "spec": spec,
    });
    let event = Event { tenant: Some(&name), actor: &who.user, action: "tenant.branding", target: Some(&target) };
    let applied = state.audited(event, apply(&state, &name, FIELD_MANAGER_API_BRANDING, &object)).await?;
    Ok(Json(TenantView::of(&applied, access.roles)))
}

/// `DELETE /v1/tenants/{t}` (platform admins): the operator then removes
/// the namespace and, by the Tenant's database policy, its schema.
pub async fn delete(State(state): State<Tenancy>, who: Principal, Path(name): Path<String>) -> Result<StatusCode> {
    let target = format!("tenant:{name}");
    let access = state.access_to_change(&name, &who, Capability::ManageTenants, "tenant.delete", &target).await?;
    let api: Api<Tenant> = Api::all(state.client.clone());
    // Deletes the very Tenant the caller saw, not one created anew since.
    let params = DeleteParams {
        preconditions: Some(Preconditions { uid: Some(access.uid()?.to_owned()), resource_version: None }),
        ..DeleteParams::default()
    };
    let event = Event { tenant: Some(&name), actor: &who.user, action: "tenant.delete", target: Some(&target) };
    state.audited(event, async { Ok(api.delete(&name, &params).await.map(|_| ())?) }).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn apply(state: &Tenancy, name: &str, manager: &str, object: &Value) -> Result<Tenant> {
    let mut params = PatchParams::apply(manager);
    // Unknown nested fields are refused (422 naming the field), not pruned.
    params.field_validation = Some(ValidationDirective::Strict);
    let api: Api<Tenant> = Api::all(state.client.clone());
    Ok(api.patch(name, &params, &Patch::Apply(object)).await?)
}

/// The body as a JSON object of only `allowed` spec fields; a field of the
/// other route is refused naming that route.
fn spec_fields(value: Value, allowed: &[&str], other_route: &str) -> Result<Value> {
    let Value::Object(fields) = &value else {
        return Err(Error::Invalid(format!("the body must be a JSON object with the fields {}", allowed.join(", "))));
    };
    if let Some(field) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
        let elsewhere = ADMIN_FIELDS.contains(&field.as_str()) || PRESENTATION_FIELDS.contains(&field.as_str());
        let hint = if elsewhere { format!("; it is set with {other_route}") } else { String::new() };
        return Err(Error::Invalid(format!(
            "field 'spec.{field}' cannot be set here{hint}; this route takes {}",
            allowed.join(", ")
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_takes_its_own_fields_and_points_to_the_other() {
        let Err(Error::Invalid(message)) =
            spec_fields(json!({"quota": {}, "branding": {}}), &ADMIN_FIELDS, "PUT /v1/tenants/{t}/branding")
        else {
            panic!("branding accepted on the admin route")
        };
        assert!(message.contains("spec.branding") && message.contains("/branding"), "{message}");
        let Err(Error::Invalid(message)) =
            spec_fields(json!({"status": {}}), &PRESENTATION_FIELDS, "PUT /v1/tenants/{t}")
        else {
            panic!("status accepted")
        };
        assert!(message.contains("spec.status") && !message.contains("set with"), "{message}");
        assert!(matches!(spec_fields(json!([1]), &ADMIN_FIELDS, ""), Err(Error::Invalid(_))));
        assert!(spec_fields(json!({"displayName": "Acme"}), &PRESENTATION_FIELDS, "").is_ok());
    }
}
