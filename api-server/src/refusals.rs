//! Refused credentials, counted rather than logged one row per attempt.
//!
//! Each refusal increments an in-memory counter keyed by minute, source
//! address, key id and reason; a flusher adds the counters to the
//! `auth_refusals` table in one statement every few seconds. A flood of
//! bogus keys therefore costs the database at most one row per key id and
//! minute, and no connection per attempt. Counts that fail to flush are put
//! back and retried, so an outage delays them but loses none (a crash loses
//! at most one flush interval of counts).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::PgPool;

use crate::error::Result;
use crate::platform_db::unavailable;

/// Distinct counters held between flushes; beyond it, new keys are folded
/// into one per reason, so a flood of random ids cannot grow memory.
const MAX_PENDING: usize = 10_000;
const FOLDED_SOURCE: &str = "*";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Counter {
    minute: i64,
    source: String,
    key_id: String,
    reason: &'static str,
}

#[derive(Debug)]
pub struct Refusals {
    pool: PgPool,
    pending: Mutex<HashMap<Counter, i64>>,
}

fn current_minute() -> i64 {
    let seconds = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    i64::try_from(seconds - seconds % 60).unwrap_or(i64::MAX)
}

impl Refusals {
    pub fn new(pool: PgPool) -> Self {
        Self { pool, pending: Mutex::default() }
    }

    /// Counts one refusal; no I/O.
    pub fn count(&self, source: &str, key_id: Option<&str>, reason: &'static str) {
        let mut counter = Counter {
            minute: current_minute(),
            source: source.to_owned(),
            key_id: key_id.unwrap_or_default().to_owned(),
            reason,
        };
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if pending.len() >= MAX_PENDING && !pending.contains_key(&counter) {
            counter.source = FOLDED_SOURCE.to_owned();
            counter.key_id = String::new();
        }
        *pending.entry(counter).or_default() += 1;
    }

    /// Adds the pending counts to the table; on failure they stay pending.
    pub async fn flush(&self) -> Result<()> {
        let batch: Vec<(Counter, i64)> =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
                .into_iter()
                .collect();
        if batch.is_empty() {
            return Ok(());
        }
        let written = sqlx::query(
            "INSERT INTO auth_refusals (minute, source, key_id, reason, attempts) \
             SELECT to_timestamp(m), s, k, r, a FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[]) AS t(m, s, k, r, a) \
             ON CONFLICT (minute, source, key_id, reason) DO UPDATE SET attempts = auth_refusals.attempts + EXCLUDED.attempts",
        )
        .bind(batch.iter().map(|(c, _)| c.minute).collect::<Vec<_>>())
        .bind(batch.iter().map(|(c, _)| c.source.clone()).collect::<Vec<_>>())
        .bind(batch.iter().map(|(c, _)| c.key_id.clone()).collect::<Vec<_>>())
        .bind(batch.iter().map(|(c, _)| c.reason).collect::<Vec<_>>())
        .bind(batch.iter().map(|(_, n)| *n).collect::<Vec<_>>())
        .execute(&self.pool)
        .await;
        if let Err(error) = written {
            let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for (counter, n) in batch {
                *pending.entry(counter).or_default() += n;
            }
            return Err(unavailable(error));
        }
        Ok(())
    }

    /// Flushes every `interval` for as long as the process runs.
    pub fn spawn_flusher(self: &Arc<Self>, interval: Duration) {
        let refusals = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(error) = refusals.flush().await {
                    tracing::warn!(%error, "refusal counts not flushed yet; retrying");
                }
            }
        });
    }
}
