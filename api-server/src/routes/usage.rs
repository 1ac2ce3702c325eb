//! `GET /v1/tenants/{t}/usage` (tenant admins) and `GET /v1/usage`
//! (platform admins): usage for billing as JSON, or CSV with
//! `Accept: text/csv`. Parameters: see `usage::report`.
//!
//! Billing data is for those who answer for the bill (`ReadRecords`): a
//! tenant's owners and platform admins, not its editors and viewers, and
//! never API keys (which are at most `edit`). A tenant the caller has no
//! role in answers 404, as everywhere.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Json, Response};

use super::{QueryPairs, RouteTable, Tenancy, query_pairs};
use crate::auth::Principal;
use crate::authz::Capability;
use crate::error::Result;
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
    if wants_csv(headers) {
        let mut response = report::to_csv(&query, &rows).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
        Ok(response)
    } else {
        Ok(Json(report::to_json(&query, &rows)).into_response())
    }
}

/// Whether `Accept` names `text/csv` (JSON otherwise, including `*/*`).
fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| range.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("text/csv")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn csv_only_when_asked_for() {
        assert!(wants_csv(&accept("text/csv")));
        assert!(wants_csv(&accept("application/json;q=0.5, Text/CSV;q=0.9")));
        assert!(!wants_csv(&accept("*/*")));
        assert!(!wants_csv(&accept("application/json")));
        assert!(!wants_csv(&HeaderMap::new()));
    }
}
