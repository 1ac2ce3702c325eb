//! `GET /v1/tenants/{t}/audit`: the tenant's audit trail.

use axum::Router;
use axum::extract::{Path, State};
use axum::response::Json;
use axum::routing::get;

use super::Tenancy;
use crate::audit::Entry;
use crate::auth::Principal;
use crate::authz::Capability;
use crate::error::Result;

pub fn router() -> Router<Tenancy> {
    Router::new().route("/v1/tenants/{tenant}/audit", get(recent))
}

/// `GET /v1/tenants/{t}/audit`: the tenant's newest 100 audit entries.
pub async fn recent(
    State(state): State<Tenancy>,
    who: Principal,
    Path(tenant): Path<String>,
) -> Result<Json<Vec<Entry>>> {
    let access = state.access(&tenant, &who, Capability::ReadRecords)?;
    Ok(Json(state.required_platform()?.audit.recent(access.name(), 100).await?))
}
