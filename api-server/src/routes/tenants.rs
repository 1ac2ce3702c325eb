//! `GET /v1/tenants`: the tenants the caller holds a role in, nothing about
//! the others.

use axum::extract::State;
use axum::response::Json;
use ember_crds::conditions::find_condition;
use serde::Serialize;

use super::Tenancy;
use crate::auth::Principal;
use crate::authz::{TenantRole, role_in};
use crate::error::Result;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantView {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub role: TenantRole,
    /// The Tenant's `Ready` condition status (`True`, `False`, `Unknown`).
    pub ready: String,
}

pub async fn list(State(state): State<Tenancy>, who: Principal) -> Result<Json<Vec<TenantView>>> {
    state.admit(&who)?;
    let mut mine: Vec<TenantView> = state
        .caches
        .tenants()
        .iter()
        .filter_map(|tenant| {
            let role = role_in(tenant, &who)?;
            let ready = tenant
                .status
                .as_ref()
                .and_then(|s| find_condition(&s.conditions, "Ready"))
                .map_or_else(|| "Unknown".to_owned(), |c| c.status.clone());
            Some(TenantView {
                name: tenant.metadata.name.clone().unwrap_or_default(),
                display_name: tenant.spec.display_name.clone(),
                role,
                ready,
            })
        })
        .collect();
    mine.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(mine))
}
