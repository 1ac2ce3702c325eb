//! `GET /v1/tenants/{t}/usage` (tenant admins) and `GET /v1/usage`
//! (platform admins): usage for billing as JSON, JSON lines (one row per
//! line, `Accept: application/x-ndjson`) or CSV (`Accept: text/csv`), the
//! same negotiation as the audit trail (`export::Format`). Parameters: see
//! `usage::report`.
//!
//! Billing data is for those who answer for the bill (`ReadRecords`): a
//! tenant's owners and platform admins, not its editors and viewers, and
//! never API keys (which are at most `edit`). A tenant the caller has no
//! role in answers 404, as everywhere.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::{QueryPairs, RouteTable, Tenancy, query_pairs};
use crate::auth::Principal;
use crate::authz::Capability;
use crate::error::Result;
use crate::export::Format;
use crate::usage::report::{self, Scope, UsageQuery};

pub fn routes() -> RouteTable<Tenancy> {
    RouteTable::new().get("/v1/tenants/{tenant}/usage", tenant_usage).get("/v1/usage", platform_usage)
}

pub async fn tenant_usage(
    State(state): State<Tenancy>,
    who: Principal,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    query: QueryPairs,
) -> Result<Response> {
    let access = state.access(&tenant, &who, Capability::ReadRecords).await?;
    answer(&state, Scope::Tenant(access.name()), &headers, query).await
}

/// Every tenant's usage (default `groupBy=tenant`): platform admins only.
pub async fn platform_usage(
    State(state): State<Tenancy>,
    who: Principal,
    headers: HeaderMap,
    query: QueryPairs,
) -> Result<Response> {
    state.require_platform_admin(&who).await?;
    answer(&state, Scope::Platform, &headers, query).await
}

async fn answer(state: &Tenancy, scope: Scope<'_>, headers: &HeaderMap, query: QueryPairs) -> Result<Response> {
    let pairs = query_pairs(query)?;
    let query = UsageQuery::parse(&pairs, scope, jiff::Timestamp::now())?;
    let platform = state.required_platform()?;
    let rows = report::read(platform.usage.pool(), scope, &query).await?;
    let format = Format::from_accept(headers);
    let body = match format {
        Format::Json => serde_json::to_string(&report::to_json(&query, &rows)).unwrap_or_default(),
        Format::JsonLines => report::to_json(&query, &rows)
            .rows
            .iter()
            .map(|row| serde_json::to_string(row).unwrap_or_default() + "\n")
            .collect(),
        Format::Csv => report::to_csv(&query, &rows),
    };
    Ok(([(header::CONTENT_TYPE, format.content_type())], body).into_response())
}
