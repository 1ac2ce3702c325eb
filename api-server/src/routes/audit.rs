//! `GET /v1/tenants/{t}/audit` (a tenant's owners and platform admins) and
//! `GET /v1/audit` (platform admins, every tenant): the audit trail, newest
//! first, one page at a time.
//!
//! Parameters, all optional: `actor`, `action` (an action such as
//! `deployment.update`, or a family such as `deployment`), `source` (`rest`
//! or `kubernetes`), `from` and `to` (RFC 3339; `from` inclusive, `to`
//! exclusive), `cursor` (from the previous page), `limit` (1–1000, default
//! 100), and on `/v1/audit` also `tenant`. Anything else is 400 naming it.
//!
//! The body is the page: a JSON array, JSON lines (`Accept:
//! application/x-ndjson`) or CSV (`Accept: text/csv`). When more entries
//! follow, `X-Next-Cursor` carries the cursor and `Link: <...>; rel="next"`
//! the URL of the next page.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::{QueryPairs, RouteTable, Tenancy, query_pairs};
use crate::audit::{Entry, Filter};
use crate::auth::Principal;
use crate::authz::Capability;
use crate::error::{Error, Result};
use crate::export::{Format, csv_field};

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

pub fn routes() -> RouteTable<Tenancy> {
    RouteTable::new().get("/v1/tenants/{tenant}/audit", tenant_trail).get("/v1/audit", platform_trail)
}

async fn tenant_trail(
    State(state): State<Tenancy>,
    who: Principal,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    query: QueryPairs,
) -> Result<Response> {
    let access = state.access(&tenant, &who, Capability::ReadRecords).await?;
    let pairs = query_pairs(query)?;
    let mut filter = filter_from(&pairs, false)?;
    filter.tenant = Some(access.name().to_owned());
    answer(&state, &format!("/v1/tenants/{tenant}/audit"), &pairs, filter, &headers).await
}

async fn platform_trail(
    State(state): State<Tenancy>,
    who: Principal,
    headers: HeaderMap,
    query: QueryPairs,
) -> Result<Response> {
    state.require_platform_admin(&who).await?;
    let pairs = query_pairs(query)?;
    let filter = filter_from(&pairs, true)?;
    answer(&state, "/v1/audit", &pairs, filter, &headers).await
}

/// The filter the parameters ask for; 400 naming a parameter that is
/// unknown, repeated or malformed.
fn filter_from(pairs: &[(String, String)], platform_wide: bool) -> Result<Filter> {
    let mut filter = Filter { limit: DEFAULT_LIMIT, ..Filter::default() };
    let mut seen = std::collections::HashSet::new();
    for (name, value) in pairs {
        if !seen.insert(name.as_str()) {
            return Err(Error::BadRequest(format!("parameter '{name}' is given more than once")));
        }
        let time = |value: &str| {
            value.parse::<jiff::Timestamp>().map_err(|_| {
                Error::BadRequest(format!("parameter '{name}' must be an RFC 3339 time such as 2026-11-29T10:00:00Z"))
            })
        };
        match name.as_str() {
            "actor" => filter.actor = Some(value.clone()),
            "action" => filter.action = Some(value.clone()),
            "source" if value == "rest" || value == "kubernetes" => filter.source = Some(value.clone()),
            "source" => return Err(Error::BadRequest("parameter 'source' must be 'rest' or 'kubernetes'".into())),
            "from" => filter.from = Some(time(value)?),
            "to" => filter.to = Some(time(value)?),
            "cursor" => {
                let cursor = value.parse::<i64>().ok().filter(|c| *c > 0);
                filter.before = Some(cursor.ok_or_else(|| {
                    Error::BadRequest("parameter 'cursor' must be the X-Next-Cursor of a previous page".into())
                })?);
            }
            "limit" => {
                let limit = value.parse::<i64>().ok().filter(|l| (1..=MAX_LIMIT).contains(l));
                filter.limit = limit.ok_or_else(|| {
                    Error::BadRequest(format!("parameter 'limit' must be a number from 1 to {MAX_LIMIT}"))
                })?;
            }
            "tenant" if platform_wide => filter.tenant = Some(value.clone()),
            other => {
                return Err(Error::BadRequest(format!(
                    "unknown parameter '{other}'; this route takes actor, action, source, from, to, cursor, limit{}",
                    if platform_wide { ", tenant" } else { "" }
                )));
            }
        }
    }
    if let (Some(from), Some(to)) = (filter.from, filter.to)
        && from >= to
    {
        return Err(Error::BadRequest("parameter 'from' must be before 'to'".into()));
    }
    Ok(filter)
}

async fn answer(
    state: &Tenancy,
    path: &str,
    pairs: &[(String, String)],
    filter: Filter,
    headers: &HeaderMap,
) -> Result<Response> {
    // One more than asked for tells whether another page follows.
    let mut entries =
        state.required_platform()?.audit.page(&Filter { limit: filter.limit + 1, ..filter.clone() }).await?;
    let more = entries.len() as i64 > filter.limit;
    entries.truncate(filter.limit as usize);
    let format = Format::from_accept(headers);
    let body = match format {
        Format::Json => serde_json::to_string(&entries).unwrap_or_default(),
        Format::JsonLines => {
            entries.iter().map(|e| serde_json::to_string(e).unwrap_or_default() + "\n").collect::<String>()
        }
        Format::Csv => to_csv(&entries),
    };
    let mut response = body.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    if let (true, Some(last)) = (more, entries.last()) {
        let next = next_page(path, pairs, last.id);
        if let (Ok(cursor), Ok(link)) =
            (HeaderValue::from_str(&last.id.to_string()), HeaderValue::from_str(&format!("<{next}>; rel=\"next\"")))
        {
            response.headers_mut().insert("x-next-cursor", cursor);
            response.headers_mut().insert(header::LINK, link);
        }
    }
    Ok(response)
}

/// The same query for the page after the entry `last`.
fn next_page(path: &str, pairs: &[(String, String)], last: i64) -> String {
    let mut query: Vec<String> = pairs
        .iter()
        .filter(|(name, _)| name != "cursor")
        .map(|(n, v)| format!("{}={}", encode(n), encode(v)))
        .collect();
    query.push(format!("cursor={last}"));
    format!("{path}?{}", query.join("&"))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn to_csv(entries: &[Entry]) -> String {
    let mut csv = String::from("id,at,tenant,source,actor,action,target,outcome,generation,request_id\r\n");
    for e in entries {
        let fields = [
            e.id.to_string(),
            e.at.clone(),
            e.tenant.clone().unwrap_or_default(),
            e.source.clone(),
            e.actor.clone(),
            e.action.clone(),
            e.target.clone().unwrap_or_default(),
            e.outcome.clone(),
            e.generation.map(|g| g.to_string()).unwrap_or_default(),
            e.request_id.clone().unwrap_or_default(),
        ];
        csv.push_str(&fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(","));
        csv.push_str("\r\n");
    }
    csv
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[test]
    fn parameters_are_checked_and_named_when_wrong() {
        let filter = filter_from(
            &params(&[("actor", "alice"), ("action", "deployment"), ("from", "2026-11-01T00:00:00Z"), ("limit", "5")]),
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (filter.actor.as_deref(), filter.action.as_deref(), filter.limit),
            (Some("alice"), Some("deployment"), 5)
        );
        for (bad, names) in [
            (vec![("limit", "0")], "limit"),
            (vec![("limit", "5000")], "limit"),
            (vec![("from", "yesterday")], "from"),
            (vec![("cursor", "-3")], "cursor"),
            (vec![("source", "ftp")], "source"),
            (vec![("tenant", "globex")], "tenant"),
            (vec![("actor", "a"), ("actor", "b")], "actor"),
            (vec![("from", "2026-11-02T00:00:00Z"), ("to", "2026-11-01T00:00:00Z")], "from"),
        ] {
            let Err(Error::BadRequest(message)) = filter_from(&params(&bad), false) else { panic!("{bad:?} accepted") };
            assert!(message.contains(&format!("'{names}'")), "{bad:?}: {message}");
        }
        assert!(filter_from(&params(&[("tenant", "globex")]), true).is_ok(), "platform-wide takes a tenant");
    }

    #[test]
    fn the_next_page_keeps_the_filters_and_moves_the_cursor() {
        let next = next_page("/v1/audit", &params(&[("actor", "a b@x"), ("cursor", "90")]), 42);
        assert_eq!(next, "/v1/audit?actor=a%20b%40x&cursor=42");
    }
}
