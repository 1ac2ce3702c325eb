//! The audit log: who did what to which tenant's objects, and which API key
//! authentications were refused. Entries name actors by user or key id,
//! never by a token or secret.

use serde::Serialize;
use sqlx::PgPool;

use crate::error::Result;
use crate::platform_db::unavailable;

/// One event to record.
#[derive(Debug)]
pub struct Event<'a> {
    pub tenant: Option<&'a str>,
    pub actor: &'a str,
    pub action: &'a str,
    pub target: Option<&'a str>,
    pub outcome: &'a str,
}

/// A recorded event as the API shows it.
#[derive(Debug, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub id: i64,
    /// RFC 3339 timestamp.
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub outcome: String,
}

#[derive(Debug, Clone)]
pub struct AuditLog {
    pool: PgPool,
}

impl AuditLog {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Records `event`. A failure is logged and swallowed: an audit outage
    /// must not turn every request into an error (the event still reaches the
    /// structured log).
    pub async fn record(&self, event: Event<'_>) {
        tracing::info!(tenant = ?event.tenant, actor = %event.actor, action = %event.action, target = ?event.target, outcome = %event.outcome, "audit");
        let inserted =
            sqlx::query("INSERT INTO audit_log (tenant, actor, action, target, outcome) VALUES ($1, $2, $3, $4, $5)")
                .bind(event.tenant)
                .bind(event.actor)
                .bind(event.action)
                .bind(event.target)
                .bind(event.outcome)
                .execute(&self.pool)
                .await;
        if let Err(error) = inserted {
            tracing::error!(%error, "audit entry not stored");
        }
    }

    /// The newest `limit` entries of `tenant`, newest first.
    pub async fn recent(&self, tenant: &str, limit: i64) -> Result<Vec<Entry>> {
        sqlx::query_as::<_, Entry>(
            "SELECT id, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS at, actor, action, target, outcome \
             FROM audit_log WHERE tenant = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(tenant)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)
    }
}
