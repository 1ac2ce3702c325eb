//! Usage counts, accumulated in memory and added to `usage_hourly` in
//! batches.
//!
//! Each finished inference call adds to one counter keyed by hour, tenant,
//! deployment, caller and status class ([`UsageRecorder::record`]: no
//! I/O). Every few seconds, and once more at graceful shutdown, the pending
//! counters become a *batch* with this process's replica id and the next
//! sequence number, written in one transaction that first inserts
//! `(replica, sequence)` into `usage_batches` and then adds the counts with
//! `INSERT ... ON CONFLICT DO UPDATE SET n = usage_hourly.n + excluded.n`.
//! Replicas therefore add to the same rows without overwriting each other,
//! and a batch is applied exactly once: when a commit's answer is lost, the
//! same batch (same sequence, same counts) is sent again, finds its
//! `usage_batches` row and is skipped. Counts recorded meanwhile wait for
//! the next batch.
//!
//! While the database is down, counts stay in memory and the batch is
//! retried every interval. Memory is bounded: past [`MAX_PENDING`] distinct
//! counters, new callers are folded into caller `*` (tenant and deployment
//! totals stay exact); past twice that, counts are dropped, logged and
//! counted (`dropped`) rather than growing without end.
//!
//! What a crash (SIGKILL, OOM, node loss) loses: the calls still in flight,
//! the counts recorded since the last successful flush (at most one flush
//! interval's, or everything held through a database outage), and nothing
//! else. A graceful stop flushes after the server has drained.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sqlx::PgPool;

use crate::error::Result;
use crate::platform_db::unavailable;

/// Distinct counters held before new callers are folded into [`FOLDED_CALLER`].
pub const MAX_PENDING: usize = 50_000;
/// Caller of counts folded together under memory pressure.
pub const FOLDED_CALLER: &str = "*";

/// One finished call, as the inference proxy saw it.
#[derive(Debug, Clone, Copy)]
pub struct CallUsage<'a> {
    pub tenant: &'a str,
    pub deployment: &'a str,
    /// `apikey:<id>` or the user name.
    pub caller: &'a str,
    /// HTTP status answered to the caller.
    pub status: u16,
    /// From the runtime's usage headers (0 when it sent none).
    pub items: u64,
    pub tokens: u64,
    pub compute: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    tenant: String,
    /// Start of the UTC hour, in seconds since the epoch.
    hour: i64,
    deployment: String,
    caller: String,
    status_class: i16,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    requests: i64,
    items: i64,
    tokens: i64,
    compute_us: i64,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.requests += other.requests;
        self.items += other.items;
        self.tokens += other.tokens;
        self.compute_us += other.compute_us;
    }
}

/// Counters taken out of `pending` under one sequence number.
#[derive(Debug)]
struct Batch {
    sequence: i64,
    rows: Vec<(Key, Counts)>,
}

#[derive(Debug, Default)]
struct State {
    pending: HashMap<Key, Counts>,
    /// Sent but not known to be committed: sent again, unchanged, next.
    unacknowledged: Option<Batch>,
    next_sequence: i64,
}

/// Records usage and writes it to the platform database.
#[derive(Debug)]
pub struct UsageRecorder {
    pool: PgPool,
    /// Random per process, so sequence numbers never repeat under one id.
    replica: String,
    state: Mutex<State>,
    /// One flush at a time (the periodic one and the one at shutdown).
    flushing: tokio::sync::Mutex<()>,
    dropped: AtomicU64,
}

fn hour_of(time: SystemTime) -> i64 {
    let seconds = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    i64::try_from(seconds - seconds % 3600).unwrap_or(i64::MAX)
}

fn saturating(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl UsageRecorder {
    pub fn new(pool: PgPool) -> Self {
        let id: [u8; 12] = rand::random();
        Self {
            pool,
            replica: hex::encode(id),
            state: Mutex::default(),
            flushing: tokio::sync::Mutex::new(()),
            dropped: AtomicU64::new(0),
        }
    }

    /// The platform database, where the records are read back.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// This process's replica id in `usage_batches`.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Counts dropped because memory was full during a long outage.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Counts one finished call in memory; no I/O.
    pub fn record(&self, call: &CallUsage<'_>) {
        let mut key = Key {
            tenant: call.tenant.to_owned(),
            hour: hour_of(SystemTime::now()),
            deployment: call.deployment.to_owned(),
            caller: call.caller.to_owned(),
            status_class: i16::try_from(call.status / 100).unwrap_or(5).clamp(1, 5),
        };
        let counts = Counts {
            requests: 1,
            items: saturating(call.items),
            tokens: saturating(call.tokens),
            compute_us: saturating(u64::try_from(call.compute.as_micros()).unwrap_or(u64::MAX)),
        };
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.pending.len() >= MAX_PENDING && !state.pending.contains_key(&key) {
            key.caller = FOLDED_CALLER.to_owned();
            if state.pending.len() >= 2 * MAX_PENDING && !state.pending.contains_key(&key) {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    tracing::error!(dropped, "usage counters full (database unreachable for long?): counts dropped");
                }
                return;
            }
        }
        state.pending.entry(key).or_default().add(counts);
    }

    /// Writes what is pending: first a batch left unacknowledged by an
    /// earlier failure (unchanged), then the counts recorded since. On
    /// failure the batch is kept for the next call.
    pub async fn flush(&self) -> Result<()> {
        let _one_at_a_time = self.flushing.lock().await;
        while let Some(batch) = self.next_batch() {
            if let Err(error) = self.write(&batch).await {
                self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).unacknowledged = Some(batch);
                return Err(unavailable(error));
            }
        }
        Ok(())
    }

    /// The batch to write next: one left unacknowledged, else the pending
    /// counts under a new sequence number; `None` when nothing is pending.
    fn next_batch(&self) -> Option<Batch> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(batch) = state.unacknowledged.take() {
            return Some(batch);
        }
        if state.pending.is_empty() {
            return None;
        }
        let mut rows: Vec<(Key, Counts)> = state.pending.drain().collect();
        // The same order in every replica's transactions, so two replicas
        // adding to the same rows do not deadlock.
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let sequence = state.next_sequence;
        state.next_sequence += 1;
        Some(Batch { sequence, rows })
    }

    /// Applies `batch` once: skipped when its `usage_batches` row exists.
    async fn write(&self, batch: &Batch) -> std::result::Result<(), sqlx::Error> {
        let mut transaction = self.pool.begin().await?;
        let first_time = sqlx::query(
            "INSERT INTO usage_batches (replica, sequence) VALUES ($1, $2) ON CONFLICT (replica, sequence) DO NOTHING",
        )
        .bind(&self.replica)
        .bind(batch.sequence)
        .execute(&mut *transaction)
        .await?
        .rows_affected()
            == 1;
        if first_time {
            let rows = &batch.rows;
            sqlx::query(
                "INSERT INTO usage_hourly (hour, tenant, deployment, caller, status_class, requests, items, tokens, compute_us) \
                 SELECT to_timestamp(h), t, d, c, s, r, i, k, u \
                 FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::smallint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[]) \
                   AS batch(h, t, d, c, s, r, i, k, u) \
                 ON CONFLICT (tenant, hour, deployment, caller, status_class) DO UPDATE SET \
                   requests = usage_hourly.requests + EXCLUDED.requests, \
                   items = usage_hourly.items + EXCLUDED.items, \
                   tokens = usage_hourly.tokens + EXCLUDED.tokens, \
                   compute_us = usage_hourly.compute_us + EXCLUDED.compute_us",
            )
            .bind(rows.iter().map(|(k, _)| k.hour).collect::<Vec<_>>())
            .bind(rows.iter().map(|(k, _)| k.tenant.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|(k, _)| k.deployment.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|(k, _)| k.caller.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|(k, _)| k.status_class).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, c)| c.requests).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, c)| c.items).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, c)| c.tokens).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, c)| c.compute_us).collect::<Vec<_>>())
            .execute(&mut *transaction)
            .await?;
        } else {
            tracing::info!(replica = %self.replica, sequence = batch.sequence, "usage batch was already applied; not adding it again");
        }
        transaction.commit().await
    }

    /// Flushes every `interval` for as long as the process runs, and
    /// forgets idempotency records older than a week once an hour.
    pub fn spawn_flusher(self: &std::sync::Arc<Self>, interval: Duration) {
        let recorder = std::sync::Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_sweep: Option<Instant> = None;
            loop {
                tick.tick().await;
                if let Err(error) = recorder.flush().await {
                    tracing::warn!(%error, "usage not flushed yet; kept in memory, retrying");
                }
                if last_sweep.is_none_or(|at| at.elapsed() >= Duration::from_secs(3600)) {
                    last_sweep = Some(Instant::now());
                    if let Err(error) = recorder.sweep_batch_records().await {
                        tracing::warn!(%error, "old usage batch records not swept; next hour");
                    }
                }
            }
        });
    }

    /// Deletes `usage_batches` rows older than a week; returns how many.
    pub async fn sweep_batch_records(&self) -> Result<u64> {
        // A week is far longer than any live replica keeps retrying a batch.
        let deleted = sqlx::query("DELETE FROM usage_batches WHERE applied_at < now() - interval '7 days'")
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(deleted.rows_affected())
    }

    /// At graceful shutdown, after the server has drained: flushes until
    /// everything is written or `deadline` passes (then what is left is
    /// lost, and logged).
    pub async fn close(&self, deadline: Duration) -> Result<()> {
        let started = Instant::now();
        loop {
            match self.flush().await {
                Ok(()) => return Ok(()),
                Err(error) if started.elapsed() >= deadline => {
                    tracing::error!(%error, "usage not flushed before shutdown; the pending counts are lost");
                    return Err(error);
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn recorder() -> UsageRecorder {
        // Never connects: these tests only record (a pool needs a runtime).
        UsageRecorder::new(sqlx::PgPool::connect_lazy("postgres://nobody@127.0.0.1:1/none").unwrap())
    }

    fn call(caller: &str, status: u16) -> CallUsage<'_> {
        CallUsage {
            tenant: "acme",
            deployment: "minilm",
            caller,
            status,
            items: 3,
            tokens: 40,
            compute: Duration::from_micros(1500),
        }
    }

    fn pending(recorder: &UsageRecorder) -> HashMap<Key, Counts> {
        recorder.state.lock().unwrap().pending.clone()
    }

    async fn requests_of(pool: &PgPool, caller: &str) -> i64 {
        sqlx::query_scalar("SELECT coalesce(sum(requests), 0)::bigint FROM usage_hourly WHERE caller = $1")
            .bind(caller)
            .fetch_one(pool)
            .await
            .unwrap()
    }

    /// Against a real PostgreSQL: the retry of a batch whose commit answer
    /// was lost, a database outage, and the sweep of old batch records.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_is_applied_once_however_often_it_is_sent_and_an_outage_loses_nothing() {
        let mut postgres = tokio::task::spawn_blocking(ember_testenv::Postgres::start).await.unwrap().unwrap();
        let pool = crate::platform_db::connect(&postgres.url()).await.unwrap();
        let recorder = UsageRecorder::new(pool.clone());

        // Committed, but the answer was lost: the same batch goes again.
        recorder.record(&call("alice", 200));
        recorder.record(&call("alice", 200));
        let batch = recorder.next_batch().unwrap();
        recorder.write(&batch).await.unwrap();
        recorder.state.lock().unwrap().unacknowledged = Some(batch);
        recorder.record(&call("bob", 200));
        recorder.flush().await.unwrap();
        assert_eq!(requests_of(&pool, "alice").await, 2, "a resent batch was added twice");
        assert_eq!(requests_of(&pool, "bob").await, 1, "counts recorded meanwhile went in the next batch");

        // The database down: counts wait in memory, through failed flushes.
        tokio::task::block_in_place(|| postgres.stop());
        recorder.record(&call("alice", 200));
        assert!(recorder.flush().await.is_err());
        recorder.record(&call("alice", 503));
        assert!(recorder.flush().await.is_err());
        tokio::task::block_in_place(|| postgres.start_again()).unwrap();
        recorder.flush().await.unwrap();
        assert_eq!(requests_of(&pool, "alice").await, 4);
        let batches: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_batches").fetch_one(&pool).await.unwrap();
        assert_eq!(batches, 4, "one record per batch: the resent one, bob's, the outage's two");

        // Batch records older than a week are swept; the usage stays.
        sqlx::query("UPDATE usage_batches SET applied_at = now() - interval '8 days' WHERE sequence = 0")
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(recorder.sweep_batch_records().await.unwrap(), 1);
        assert_eq!(requests_of(&pool, "alice").await, 4);
    }

    #[tokio::test]
    async fn calls_add_up_per_caller_and_status_class() {
        let recorder = recorder();
        for status in [200, 201, 404, 502] {
            recorder.record(&call("alice", status));
        }
        recorder.record(&call("apikey:abc", 200));
        let pending = pending(&recorder);
        let find = |caller: &str, class: i16| {
            pending.iter().find(|(k, _)| k.caller == caller && k.status_class == class).map(|(_, c)| *c)
        };
        assert_eq!(find("alice", 2), Some(Counts { requests: 2, items: 6, tokens: 80, compute_us: 3000 }));
        assert_eq!(find("alice", 4).map(|c| c.requests), Some(1));
        assert_eq!(find("alice", 5).map(|c| c.requests), Some(1));
        assert_eq!(find("apikey:abc", 2).map(|c| c.requests), Some(1));
        assert_eq!(pending.len(), 4);
        assert!(pending.keys().all(|k| k.hour % 3600 == 0));
    }

    #[tokio::test]
    async fn too_many_counters_fold_callers_then_drop_but_never_grow_without_end() {
        let recorder = recorder();
        for i in 0..MAX_PENDING {
            recorder.record(&CallUsage { deployment: &format!("d{i}"), ..call("alice", 200) });
        }
        // A new caller is folded into '*': the deployment's total stays right.
        recorder.record(&call("bob", 200));
        let held = pending(&recorder);
        assert!(held.keys().any(|k| k.caller == FOLDED_CALLER));
        assert!(!held.keys().any(|k| k.caller == "bob"));
        assert_eq!(recorder.dropped(), 0);
        // Past twice the limit even folded counters are dropped, and counted:
        // of these, MAX_PENDING - 1 fit beside the MAX_PENDING + 1 held.
        for i in 0..MAX_PENDING + 10 {
            recorder.record(&CallUsage { deployment: &format!("e{i}"), ..call("carol", 200) });
        }
        assert_eq!(pending(&recorder).len(), 2 * MAX_PENDING);
        assert_eq!(recorder.dropped(), 11);
    }
}
