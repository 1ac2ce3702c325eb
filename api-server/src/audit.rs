//! The audit log: who did what to which tenant's objects. Entries name
//! actors by user or key id, never by a token or secret. Each entry is
//! written before its action runs and completed after it (see
//! [`AuditLog::begin`]); refused credentials are counted apart (`refusals`).

use std::time::Duration;

use serde::Serialize;
use sqlx::PgPool;

use crate::error::Result;
use crate::platform_db::unavailable;

/// One action to record.
#[derive(Debug)]
pub struct Event<'a> {
    pub tenant: Option<&'a str>,
    pub actor: &'a str,
    pub action: &'a str,
    pub target: Option<&'a str>,
}

/// A change seen on a watch, made through the Kubernetes API (`change_log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub tenant: Option<String>,
    /// The field manager that wrote the spec (`kubectl`, `argocd-controller`,
    /// `kustomize-controller`...), or `unknown` for a deletion.
    pub actor: String,
    pub action: String,
    pub target: String,
    pub uid: String,
    pub generation: i64,
}

/// An entry written before its action ran; [`AuditLog::finish`] records how
/// it ended.
#[derive(Debug)]
#[must_use = "finish the entry with the action's outcome"]
pub struct Pending {
    id: i64,
}

/// A recorded event as the API shows it.
#[derive(Debug, Serialize, sqlx::FromRow, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub id: i64,
    /// RFC 3339 timestamp.
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    /// `ok`, `failed (<status>)`, or `started` when the action ran but its
    /// outcome could not be recorded.
    pub outcome: String,
    /// The request that did it (its `X-Request-Id`); none for ember-api's
    /// own background work and for changes seen on a watch.
    pub request_id: Option<String>,
    /// `rest` (through ember-api) or `kubernetes` (kubectl, GitOps...,
    /// seen on a watch; the actor is the field manager).
    pub source: String,
    /// For changes seen on a watch: the object's generation after it.
    pub generation: Option<i64>,
    pub tenant: Option<String>,
}

/// How long entries are kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub audit: Duration,
    pub refusals: Duration,
}

#[derive(Debug, Clone)]
pub struct AuditLog {
    pool: PgPool,
}

impl AuditLog {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Records `event` as started, before its action runs, with the id of
    /// the request it serves (none for background work). When this fails
    /// the action must not run (the caller gets 503): nothing is ever done
    /// without a trace.
    pub async fn begin(&self, event: &Event<'_>) -> Result<Pending> {
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO audit_log (tenant, actor, action, target, outcome, request_id) \
             VALUES ($1, $2, $3, $4, 'started', $5) RETURNING id",
        )
        .bind(event.tenant)
        .bind(event.actor)
        .bind(event.action)
        .bind(event.target)
        .bind(crate::request_id::current())
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(Pending { id })
    }

    /// Records a refused attempt at a change (403): who tried what, with the
    /// request id. A failure to record is logged; the request was refused
    /// anyway, so nothing was done unaudited.
    pub async fn refused(&self, event: &Event<'_>, outcome: &str) {
        let inserted = sqlx::query(
            "INSERT INTO audit_log (tenant, actor, action, target, outcome, request_id) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(event.tenant)
        .bind(event.actor)
        .bind(event.action)
        .bind(event.target)
        .bind(outcome)
        .bind(crate::request_id::current())
        .execute(&self.pool)
        .await;
        if let Err(error) = inserted {
            tracing::error!(%error, action = event.action, actor = event.actor, "refused attempt not audited");
        }
    }

    /// Records a change seen on a watch, once per object, generation and
    /// action across replicas and restarts. A deletion ember-api itself
    /// made (its REST entry exists, started or done, within the hour) is
    /// not recorded twice.
    pub async fn record_observed(&self, change: &Observed) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit_log (tenant, actor, action, target, outcome, source, object_uid, generation) \
             SELECT $1, $2, $3, $4, 'ok', 'kubernetes', $5, $6 \
             WHERE NOT ($3 LIKE '%.delete' AND EXISTS ( \
                 SELECT 1 FROM audit_log WHERE source = 'rest' AND action = $3 AND target = $4 \
                 AND tenant IS NOT DISTINCT FROM $1 AND outcome IN ('ok', 'started') AND at > now() - interval '1 hour')) \
             ON CONFLICT (object_uid, generation, action) WHERE source = 'kubernetes' DO NOTHING",
        )
        .bind(change.tenant.as_deref())
        .bind(&change.actor)
        .bind(&change.action)
        .bind(&change.target)
        .bind(&change.uid)
        .bind(change.generation)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    /// Records the outcome of a begun entry. A failure here leaves the
    /// entry `started`: the action is still on record, its outcome is not.
    pub async fn finish(&self, pending: Pending, outcome: &str) {
        let updated = sqlx::query("UPDATE audit_log SET outcome = $2 WHERE id = $1")
            .bind(pending.id)
            .bind(outcome)
            .execute(&self.pool)
            .await;
        if let Err(error) = updated {
            tracing::error!(%error, entry = pending.id, outcome, "audit outcome not stored; the entry stays 'started'");
        }
    }

    /// Deletes entries older than the retention periods.
    pub async fn sweep(&self, retention: Retention) -> Result<u64> {
        let seconds = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let audit = sqlx::query("DELETE FROM audit_log WHERE at < now() - $1 * interval '1 second'")
            .bind(seconds(retention.audit))
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        let refusals = sqlx::query("DELETE FROM auth_refusals WHERE minute < now() - $1 * interval '1 second'")
            .bind(seconds(retention.refusals))
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(audit.rows_affected() + refusals.rows_affected())
    }

    /// Sweeps hourly for as long as the process runs.
    pub fn spawn_sweeper(&self, retention: Retention) {
        let log = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(3600));
            loop {
                tick.tick().await;
                match log.sweep(retention).await {
                    Ok(deleted) => tracing::info!(deleted, "audit retention sweep"),
                    Err(error) => tracing::warn!(%error, "audit retention sweep failed; next hour"),
                }
            }
        });
    }

    /// One page of entries matching `filter`, newest first.
    pub async fn page(&self, filter: &Filter) -> Result<Vec<Entry>> {
        sqlx::query_as::<_, Entry>(
            "SELECT id, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS at, actor, action, \
                    target, outcome, request_id, source, generation, tenant \
             FROM audit_log \
             WHERE ($1::text IS NULL OR tenant = $1) AND ($2::text IS NULL OR actor = $2) \
               AND ($3::text IS NULL OR action = $3 OR action LIKE $3 || '.%') AND ($4::text IS NULL OR source = $4) \
               AND ($5::timestamptz IS NULL OR at >= $5::timestamptz) AND ($6::timestamptz IS NULL OR at < $6::timestamptz) \
               AND ($7::bigint IS NULL OR id < $7) \
             ORDER BY id DESC LIMIT $8",
        )
        .bind(filter.tenant.as_deref())
        .bind(filter.actor.as_deref())
        .bind(filter.action.as_deref())
        .bind(filter.source.as_deref())
        .bind(filter.from.map(|t| t.to_string()))
        .bind(filter.to.map(|t| t.to_string()))
        .bind(filter.before)
        .bind(filter.limit)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)
    }
}

/// Which entries to read (`GET .../audit` parameters, see `routes::audit`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub tenant: Option<String>,
    pub actor: Option<String>,
    /// An action (`deployment.update`) or a family of them (`deployment`).
    pub action: Option<String>,
    /// `rest` or `kubernetes`.
    pub source: Option<String>,
    pub from: Option<jiff::Timestamp>,
    pub to: Option<jiff::Timestamp>,
    /// The cursor: only entries older than this id.
    pub before: Option<i64>,
    pub limit: i64,
}
