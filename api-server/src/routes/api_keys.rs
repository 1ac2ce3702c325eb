//! `/v1/tenants/{t}/api-keys[/{id}]`: tenant admins issue, list and revoke
//! the tenant's API keys. The secret is in the creation response only.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Json;
use serde::Deserialize;

use super::{Platform, Tenancy};
use crate::audit::Event;
use crate::auth::Principal;
use crate::authz::{Capability, TenantRole};
use crate::error::{Error, Result};
use crate::keys::{IssuedKey, KeyInfo};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    role: TenantRole,
}

fn platform(state: &Tenancy) -> Result<&Platform> {
    state.platform.as_ref().ok_or_else(|| {
        Error::NotImplemented("API keys need the platform database (--database-url); none is configured".into())
    })
}

pub async fn issue(
    State(state): State<Tenancy>,
    who: Principal,
    Path(tenant): Path<String>,
    body: Body,
) -> Result<(StatusCode, Json<IssuedKey>)> {
    let access = state.access(&tenant, &who, Capability::ManageApiKeys)?;
    let platform = platform(&state)?;
    let body = super::read_body(body, 4 << 10).await?;
    let request: NewKey = serde_json::from_slice(&body)
        .map_err(|e| Error::Invalid(format!("body must be {{\"name\": ..., \"role\": \"view\"|\"edit\"}}: {e}")))?;
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
    let access = state.access(&tenant, &who, Capability::ManageApiKeys)?;
    Ok(Json(platform(&state)?.keys.list(access.name()).await?))
}

pub async fn revoke(
    State(state): State<Tenancy>,
    who: Principal,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<StatusCode> {
    let access = state.access(&tenant, &who, Capability::ManageApiKeys)?;
    let platform = platform(&state)?;
    let target = format!("apikey:{id}");
    let event =
        Event { tenant: Some(access.name()), actor: &who.user, action: "api-key.revoke", target: Some(&target) };
    state
        .audited(event, async {
            match platform.keys.revoke(access.name(), &id).await? {
                true => Ok(()),
                false => Err(Error::NotFound(format!("no live API key '{id}' in tenant '{tenant}'"))),
            }
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/tenants/{t}/audit`: the tenant's newest 100 audit entries.
pub async fn audit(
    State(state): State<Tenancy>,
    who: Principal,
    Path(tenant): Path<String>,
) -> Result<Json<Vec<crate::audit::Entry>>> {
    let access = state.access(&tenant, &who, Capability::ReadRecords)?;
    Ok(Json(platform(&state)?.audit.recent(access.name(), 100).await?))
}
