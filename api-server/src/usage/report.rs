//! Reading usage back for billing: query parameters, the aggregation over
//! `usage_hourly`, and the answer as JSON or CSV.
//!
//! `from` and `to` are RFC 3339 times (default: the 24 hours up to now).
//! Usage is kept per UTC hour; an hour counts when it starts at or after
//! `from` rounded down to its hour, and before `to`. `groupBy` is a
//! comma-separated list of `hour` or `day` (UTC), `deployment`, `caller`
//! (alias `key`) and, in the platform view, `tenant`. Every row carries the
//! requests (in total and per status class), items, tokens and compute
//! microseconds of its group.

use std::fmt::Write as _;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use sqlx::{PgPool, Row};

use crate::error::{Error, Result};
use crate::export::csv_field;
use crate::platform_db::unavailable;

/// Longest span one query may cover.
const MAX_SPAN_DAYS: i64 = 400;
/// Longest span grouped by hour (31 days: 744 hours per group).
const MAX_HOURLY_SPAN_DAYS: i64 = 31;
/// Most rows one answer holds; more → 422 asking for a narrower query.
pub const MAX_ROWS: usize = 10_000;
/// Span when `from` is not given.
const DEFAULT_SPAN_HOURS: i64 = 24;

/// A way to group usage rows (serialised as its field name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Dimension {
    Hour,
    Day,
    Tenant,
    Deployment,
    Caller,
}

impl Dimension {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "hour" => Some(Self::Hour),
            "day" => Some(Self::Day),
            "tenant" => Some(Self::Tenant),
            "deployment" => Some(Self::Deployment),
            "caller" | "key" => Some(Self::Caller),
            _ => None,
        }
    }

    /// The field name in answers.
    pub fn field(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Tenant => "tenant",
            Self::Deployment => "deployment",
            Self::Caller => "caller",
        }
    }

    /// The SQL expression grouped by: fixed text, never from the request.
    fn sql(self) -> &'static str {
        match self {
            Self::Hour => "extract(epoch FROM hour)::bigint",
            Self::Day => "extract(epoch FROM date_trunc('day', hour, 'UTC'))::bigint",
            Self::Tenant => "tenant",
            Self::Deployment => "deployment",
            Self::Caller => "caller",
        }
    }

    fn is_time(self) -> bool {
        matches!(self, Self::Hour | Self::Day)
    }
}

/// Whose usage a query reads.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// One tenant (`/v1/tenants/{t}/usage`).
    Tenant(&'a str),
    /// Every tenant (`/v1/usage`, platform admins).
    Platform,
}

/// A validated usage query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuery {
    pub from: Timestamp,
    pub to: Timestamp,
    pub group_by: Vec<Dimension>,
}

fn bad(parameter: &str, message: impl std::fmt::Display) -> Error {
    Error::BadRequest(format!("query parameter '{parameter}': {message}"))
}

fn invalid(parameter: &str, message: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("query parameter '{parameter}': {message}"))
}

fn time(parameter: &str, value: &str) -> Result<Timestamp> {
    value.parse::<Timestamp>().map_err(|e| {
        bad(parameter, format_args!("'{value}' is not an RFC 3339 time such as 2026-11-01T00:00:00Z ({e})"))
    })
}

impl UsageQuery {
    /// Validates the query string's pairs. Malformed values are 400 and
    /// well-formed but unacceptable ones 422, each naming the parameter.
    pub fn parse(pairs: &[(String, String)], scope: Scope<'_>, now: Timestamp) -> Result<Self> {
        let (mut from, mut to, mut group_by) = (None, None, None);
        for (name, value) in pairs {
            let slot = match name.as_str() {
                "from" => &mut from,
                "to" => &mut to,
                "groupBy" => &mut group_by,
                other => return Err(bad(other, "unknown; this route takes from, to and groupBy")),
            };
            if slot.replace(value.as_str()).is_some() {
                return Err(bad(name, "given more than once"));
            }
        }
        let to = to.map_or(Ok(now), |v| time("to", v))?;
        let from = match from {
            Some(value) => time("from", value)?,
            None => to - SignedDuration::from_hours(DEFAULT_SPAN_HOURS),
        };
        if from >= to {
            return Err(invalid("from", format_args!("{from} is not before 'to' ({to})")));
        }
        if to.duration_since(from) > SignedDuration::from_hours(24 * MAX_SPAN_DAYS) {
            return Err(invalid("to", format_args!("from and to may be at most {MAX_SPAN_DAYS} days apart")));
        }
        let default = match scope {
            Scope::Tenant(_) => "deployment",
            Scope::Platform => "tenant",
        };
        let mut dimensions = Vec::new();
        for name in group_by.unwrap_or(default).split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let dimension = Dimension::parse(name).ok_or_else(|| {
                bad("groupBy", format_args!("'{name}' is not one of hour, day, tenant, deployment, caller (or key)"))
            })?;
            if dimension == Dimension::Tenant && matches!(scope, Scope::Tenant(_)) {
                return Err(bad("groupBy", "'tenant' is for the platform-wide view (/v1/usage)"));
            }
            if dimensions.contains(&dimension) {
                return Err(bad("groupBy", format_args!("'{name}' is given more than once")));
            }
            if dimension.is_time() && dimensions.iter().any(|d: &Dimension| d.is_time()) {
                return Err(bad("groupBy", "choose one of hour and day"));
            }
            dimensions.push(dimension);
        }
        if dimensions.contains(&Dimension::Hour)
            && to.duration_since(from) > SignedDuration::from_hours(24 * MAX_HOURLY_SPAN_DAYS)
        {
            return Err(invalid(
                "groupBy",
                format_args!("by hour, from and to may be at most {MAX_HOURLY_SPAN_DAYS} days apart; group by day"),
            ));
        }
        Ok(Self { from, to, group_by: dimensions })
    }
}

/// One group's usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// In the order of the query's `group_by`: times as RFC 3339 (`hour`)
    /// or a date (`day`), names as they are.
    pub groups: Vec<String>,
    pub counts: UsageCounts,
}

/// What a group used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageCounts {
    pub requests: i64,
    #[serde(rename = "requests2xx")]
    pub requests_2xx: i64,
    #[serde(rename = "requests4xx")]
    pub requests_4xx: i64,
    #[serde(rename = "requests5xx")]
    pub requests_5xx: i64,
    pub items: i64,
    pub tokens: i64,
    pub compute_micros: i64,
}

/// Count columns, in answer order (JSON field and CSV header names).
const COUNT_FIELDS: [&str; 7] =
    ["requests", "requests2xx", "requests4xx", "requests5xx", "items", "tokens", "computeMicros"];

impl UsageCounts {
    fn values(&self) -> [i64; 7] {
        [
            self.requests,
            self.requests_2xx,
            self.requests_4xx,
            self.requests_5xx,
            self.items,
            self.tokens,
            self.compute_micros,
        ]
    }
}

/// Runs `query` for `scope`: at most [`MAX_ROWS`] rows (more → 422).
pub async fn read(pool: &PgPool, scope: Scope<'_>, query: &UsageQuery) -> Result<Vec<UsageRow>> {
    let groups: Vec<&str> = query.group_by.iter().map(|d| d.sql()).collect();
    let mut sql = String::from("SELECT ");
    for group in &groups {
        let _ = write!(sql, "{group}, ");
    }
    sql.push_str(
        "coalesce(sum(requests), 0)::bigint, \
         coalesce(sum(requests) FILTER (WHERE status_class = 2), 0)::bigint, \
         coalesce(sum(requests) FILTER (WHERE status_class = 4), 0)::bigint, \
         coalesce(sum(requests) FILTER (WHERE status_class = 5), 0)::bigint, \
         coalesce(sum(items), 0)::bigint, coalesce(sum(tokens), 0)::bigint, coalesce(sum(compute_us), 0)::bigint \
         FROM usage_hourly \
         WHERE ($1::text IS NULL OR tenant = $1) AND hour >= date_trunc('hour', to_timestamp($2), 'UTC') AND hour < to_timestamp($3)",
    );
    if !groups.is_empty() {
        let list = groups.join(", ");
        let _ = write!(sql, " GROUP BY {list} ORDER BY {list}");
    }
    let _ = write!(sql, " LIMIT {}", MAX_ROWS + 1);
    let tenant = match scope {
        Scope::Tenant(tenant) => Some(tenant),
        Scope::Platform => None,
    };
    let rows = sqlx::query(&sql)
        .bind(tenant)
        .bind(query.from.as_second())
        .bind(query.to.as_second())
        .fetch_all(pool)
        .await
        .map_err(unavailable)?;
    if rows.len() > MAX_ROWS {
        return Err(invalid(
            "groupBy",
            format_args!("more than {MAX_ROWS} rows; narrow from and to, or group by fewer or coarser fields"),
        ));
    }
    rows.iter()
        .map(|row| {
            let groups = query
                .group_by
                .iter()
                .enumerate()
                .map(|(i, dimension)| match dimension {
                    Dimension::Hour => row.try_get::<i64, _>(i).map(format_hour),
                    Dimension::Day => row.try_get::<i64, _>(i).map(format_day),
                    _ => row.try_get::<String, _>(i),
                })
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            let count = |j: usize| row.try_get::<i64, _>(query.group_by.len() + j).map_err(unavailable);
            let counts = UsageCounts {
                requests: count(0)?,
                requests_2xx: count(1)?,
                requests_4xx: count(2)?,
                requests_5xx: count(3)?,
                items: count(4)?,
                tokens: count(5)?,
                compute_micros: count(6)?,
            };
            Ok(UsageRow { groups, counts })
        })
        .collect()
}

fn format_hour(seconds: i64) -> String {
    Timestamp::from_second(seconds).map_or_else(|_| seconds.to_string(), |t| t.to_string())
}

fn format_day(seconds: i64) -> String {
    Timestamp::from_second(seconds).map_or_else(|_| seconds.to_string(), |t| t.strftime("%Y-%m-%d").to_string())
}

/// The JSON answer: the query as understood, and one row per group.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageReport {
    /// Start of the span read (RFC 3339); hours starting at or after it,
    /// rounded down to its hour, count.
    #[schemars(extend("format" = "date-time"))]
    pub from: String,
    /// End of the span read (RFC 3339, exclusive).
    #[schemars(extend("format" = "date-time"))]
    pub to: String,
    /// The fields rows are grouped by, in order; each row carries them.
    pub group_by: Vec<Dimension>,
    pub rows: Vec<ReportRow>,
}

/// One group's usage: the group's fields (those in `groupBy`) and counts.
#[derive(Debug, Default, Serialize, schemars::JsonSchema)]
pub struct ReportRow {
    /// Start of the UTC hour (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub hour: Option<String>,
    /// The UTC day (`YYYY-MM-DD`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date"))]
    pub day: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// The user, or `apikey:<id>`, that made the calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    #[serde(flatten)]
    pub counts: UsageCounts,
}

/// The JSON answer to `query`.
pub fn to_json(query: &UsageQuery, rows: &[UsageRow]) -> UsageReport {
    let rows = rows
        .iter()
        .map(|row| {
            let mut report = ReportRow { counts: row.counts, ..ReportRow::default() };
            for (dimension, value) in query.group_by.iter().zip(&row.groups) {
                let slot = match dimension {
                    Dimension::Hour => &mut report.hour,
                    Dimension::Day => &mut report.day,
                    Dimension::Tenant => &mut report.tenant,
                    Dimension::Deployment => &mut report.deployment,
                    Dimension::Caller => &mut report.caller,
                };
                *slot = Some(value.clone());
            }
            report
        })
        .collect();
    UsageReport { from: query.from.to_string(), to: query.to.to_string(), group_by: query.group_by.clone(), rows }
}

/// The CSV answer (RFC 4180): a header of group fields and counts, one
/// line per row.
pub fn to_csv(query: &UsageQuery, rows: &[UsageRow]) -> String {
    let header: Vec<&str> = query.group_by.iter().map(|d| d.field()).chain(COUNT_FIELDS).collect();
    let mut csv = header.join(",");
    csv.push_str("\r\n");
    for row in rows {
        let fields = row.groups.iter().map(|g| csv_field(g)).chain(row.counts.values().map(|n| n.to_string()));
        csv.push_str(&fields.collect::<Vec<_>>().join(","));
        csv.push_str("\r\n");
    }
    csv
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn now() -> Timestamp {
        "2026-11-29T10:30:00Z".parse().unwrap()
    }

    fn parse(list: &[(&str, &str)]) -> Result<UsageQuery> {
        UsageQuery::parse(&pairs(list), Scope::Tenant("acme"), now())
    }

    fn refused(list: &[(&str, &str)]) -> (u16, String) {
        let error = parse(list).unwrap_err();
        (error.status().as_u16(), error.to_string())
    }

    #[test]
    fn defaults_are_the_last_day_by_deployment() {
        let query = parse(&[]).unwrap();
        assert_eq!(query.to, now());
        assert_eq!(query.from, "2026-11-28T10:30:00Z".parse().unwrap());
        assert_eq!(query.group_by, [Dimension::Deployment]);
        let platform = UsageQuery::parse(&[], Scope::Platform, now()).unwrap();
        assert_eq!(platform.group_by, [Dimension::Tenant]);
        let none = parse(&[("groupBy", "")]).unwrap();
        assert!(none.group_by.is_empty(), "an empty groupBy is one total");
    }

    #[test]
    fn groups_are_read_in_order_with_aliases() {
        let query = parse(&[("from", "2026-11-01T00:00:00+01:00"), ("groupBy", "day, key,deployment")]).unwrap();
        assert_eq!(query.group_by, [Dimension::Day, Dimension::Caller, Dimension::Deployment]);
        assert_eq!(query.from, "2026-10-31T23:00:00Z".parse().unwrap());
    }

    #[test]
    fn bad_parameters_are_refused_naming_them() {
        for (list, status, named) in [
            (vec![("from", "yesterday")], 400, "'from'"),
            (vec![("to", "2026-13-01T00:00:00Z")], 400, "'to'"),
            (vec![("from", "2026-11-29T11:00:00Z")], 422, "'from'"),
            (vec![("from", "2024-01-01T00:00:00Z")], 422, "'to'"),
            (vec![("groupBy", "hour,day")], 400, "'groupBy'"),
            (vec![("groupBy", "colour")], 400, "'groupBy'"),
            (vec![("groupBy", "tenant")], 400, "'groupBy'"),
            (vec![("groupBy", "caller,key")], 400, "'groupBy'"),
            (vec![("from", "2026-09-01T00:00:00Z"), ("groupBy", "hour")], 422, "'groupBy'"),
            (vec![("group_by", "day")], 400, "'group_by'"),
            (vec![("to", "2026-11-29T00:00:00Z"), ("to", "2026-11-28T00:00:00Z")], 400, "'to'"),
        ] {
            let (got, message) = refused(&list);
            assert_eq!(got, status, "{list:?}: {message}");
            assert!(message.contains(named), "{list:?}: {message}");
        }
    }

    fn row(groups: &[&str], requests: i64) -> UsageRow {
        UsageRow {
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            counts: UsageCounts { requests, requests_2xx: requests, items: 2 * requests, ..UsageCounts::default() },
        }
    }

    #[test]
    fn json_and_csv_carry_the_same_rows() {
        let query = parse(&[("groupBy", "day,caller")]).unwrap();
        let rows = [row(&["2026-11-29", "alice"], 3), row(&["2026-11-29", "=cmd|' /C calc'!A0, \"x\""], 1)];
        let json = serde_json::to_value(to_json(&query, &rows)).unwrap();
        assert_eq!(json["groupBy"], serde_json::json!(["day", "caller"]));
        assert_eq!(json["rows"][0]["caller"], "alice");
        assert_eq!(json["rows"][0]["requests"], 3);
        assert_eq!(json["rows"][0]["items"], 6);
        assert_eq!(json["rows"][0]["requests5xx"], 0);
        let csv = to_csv(&query, &rows);
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(lines[0], "day,caller,requests,requests2xx,requests4xx,requests5xx,items,tokens,computeMicros");
        assert_eq!(lines[1], "2026-11-29,alice,3,3,0,0,6,0,0");
        assert_eq!(lines[2], "2026-11-29,\"'=cmd|' /C calc'!A0, \"\"x\"\"\",1,1,0,0,2,0,0");
        assert_eq!(lines[3], "", "every line ends with CRLF");
    }

    #[test]
    fn times_are_formatted_in_utc() {
        assert_eq!(format_hour(1_795_946_400), "2026-11-29T10:00:00Z");
        assert_eq!(format_day(1_795_910_400), "2026-11-29");
    }
}
