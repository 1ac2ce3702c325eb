//! `/v1/tenants/{t}/api-keys[/{id}]`: tenant admins issue, list and revoke
//! the tenant's API keys. The secret is in the creation response only.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Json;
use serde::Deserialize;

use super::{RouteTable, Tenancy};
use crate::audit::Event;
use crate::auth::Principal;
use crate::authz::{Capability, TenantRole};
use crate::error::{Error, Result};
use crate::json::JsonBody;
use crate::keys::{IssuedKey, KeyInfo};

/// `POST /v1/tenants/{t}/api-keys`: what to issue.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// A name to tell the key by in listings and the audit trail (no
    /// control characters).
    #[schemars(length(min = 1, max = 100), regex(pattern = r"^[^\x00-\x1F\x7F-\x9F]*$"))]
    pub name: String,
    /// What the key may do in the tenant: `view` or `edit` (keys cannot
    /// administer a tenant).
    #[schemars(extend("enum" = ["view", "edit"]))]
    pub role: TenantRole,
}

pub fn routes() -> RouteTable<Tenancy> {
    RouteTable::new()
        .get("/v1/tenants/{tenant}/api-keys", list)
        .post("/v1/tenants/{tenant}/api-keys", issue)
        .delete("/v1/tenants/{tenant}/api-keys/{id}", revoke)
}

pub async fn issue(
    State(state): State<Tenancy>,
    who: Principal,
    Path(tenant): Path<String>,
    body: JsonBody,
) -> Result<(StatusCode, Json<IssuedKey>)> {
    let access = state.access_to_change(&tenant, &who, Capability::ManageApiKeys, "api-key.issue", "apikey").await?;
    let platform = state.required_platform()?;
    let request: NewKey = body.read(4 << 10, r#"a key request {"name": ..., "role": "view"|"edit"}"#).await?;
    // The id is random and made at issue time: the entry names the key's
    // name; the key's id is in its listing.
    let target = format!("apikey-name:{}", request.name);
    let event = Event { tenant: Some(access.name()), actor: &who.user, action: "api-key.issue", target: Some(&target) };
    let issue = platform.keys.issue(access.name(), access.uid()?, &request.name, request.role, &who);
    let issued = state.audited(event, issue).await?;
    Ok((StatusCode::CREATED, Json(issued)))
}

pub async fn list(
    State(state): State<Tenancy>,
    who: Principal,
    Path(tenant): Path<String>,
) -> Result<Json<Vec<KeyInfo>>> {
    let access = state.access(&tenant, &who, Capability::ManageApiKeys).await?;
    Ok(Json(state.required_platform()?.keys.list(access.name()).await?))
}

pub async fn revoke(
    State(state): State<Tenancy>,
    who: Principal,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<StatusCode> {
    let no_such_key = || Error::NotFound(format!("no live API key '{id}' in tenant '{tenant}'"));
    // Checked first: only well-formed ids reach the audit trail and the database.
    if !crate::keys::is_key_id(&id) {
        return Err(no_such_key());
    }
    let target = format!("apikey:{id}");
    let access = state.access_to_change(&tenant, &who, Capability::ManageApiKeys, "api-key.revoke", &target).await?;
    let platform = state.required_platform()?;
    let event =
        Event { tenant: Some(access.name()), actor: &who.user, action: "api-key.revoke", target: Some(&target) };
    state
        .audited(event, async {
            match platform.keys.revoke(access.name(), &id).await? {
                true => Ok(()),
                false => Err(no_such_key()),
            }
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
