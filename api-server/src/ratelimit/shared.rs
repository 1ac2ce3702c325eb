//! Token buckets in Redis, shared by every ember-api replica
//! (`--redis-url`): a limit of 50 requests/s means 50 for the whole
//! deployment, however many replicas the load balancer spreads a caller
//! over.
//!
//! Each check is one round trip: `bucket.lua` refills and takes from the
//! bucket atomically on the Redis server, by the server's clock. Keys are
//! `ember-api:ratelimit:v1:<scope>:<key>` and expire once their bucket
//! would be full again, so Redis holds only recently active callers.
//!
//! Redis is a shared counter, not a dependency to serve: when it cannot be
//! reached (or answers too slowly), the check falls back to the replica's
//! own bucket (fail open to a per-replica limit, never to no limit), the
//! fallback is logged on the first failure and counted
//! (`ember_api_ratelimit_shared_fallbacks_total`), and Redis is not asked
//! again for [`RETRY_INTERVAL`], so an outage costs requests no waiting.
//! After that the next check tries again; sharing resumes by itself.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::error::{Error, Result};

/// Namespace of every key ember-api writes (and the layout's version).
pub const KEY_PREFIX: &str = "ember-api:ratelimit:v1:";

/// How long checks stay local after Redis failed, before it is tried again.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Longest a check waits for Redis before answering from the local bucket.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);

/// The counters of [`SharedBuckets`], registered with the other metrics.
#[derive(Debug, Clone, Default)]
pub struct SharedLimitMetrics {
    /// Checks answered by a local bucket because Redis failed.
    pub fallbacks: Counter,
    /// 1 while the last attempt to reach Redis worked.
    pub up: Gauge,
}

/// A handle on the shared buckets; cheap to clone.
#[derive(Clone)]
pub struct SharedBuckets {
    inner: Arc<Inner>,
}

struct Inner {
    connection: ConnectionManager,
    script: redis::Script,
    /// Set after a failure: until then, checks do not ask Redis.
    paused_until: Mutex<Option<Instant>>,
    /// Whether the last attempt worked (to log transitions, not every failure).
    up: AtomicBool,
    metrics: SharedLimitMetrics,
}

impl std::fmt::Debug for SharedBuckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBuckets").field("up", &self.inner.up.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

impl SharedBuckets {
    /// Prepares the connection without making it: ember-api starts (with
    /// per-replica limits) even while Redis is down. Fails only on a URL
    /// that cannot be read.
    pub fn new(url: &str, metrics: SharedLimitMetrics) -> Result<Self> {
        let client = redis::Client::open(url).map_err(|e| Error::Config(format!("--redis-url: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            // Reconnecting is retried by the next check after RETRY_INTERVAL.
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| Error::Config(format!("--redis-url: {e}")))?;
        let inner = Inner {
            connection,
            script: redis::Script::new(include_str!("bucket.lua")),
            paused_until: Mutex::new(None),
            up: AtomicBool::new(true),
            metrics,
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Takes one token from the shared bucket `scope`/`key` (refilled at
    /// `rate` per second up to `burst`). `None` when Redis could not answer:
    /// the caller decides locally.
    pub async fn take(&self, scope: &str, key: &str, rate: f64, burst: f64) -> Option<Result<(), Duration>> {
        let inner = &self.inner;
        if inner.paused() {
            inner.metrics.fallbacks.inc();
            return None;
        }
        let mut connection = inner.connection.clone();
        let mut invocation = inner.script.key(format!("{KEY_PREFIX}{scope}:{key}"));
        let invocation = invocation.arg(rate).arg(burst).invoke_async(&mut connection);
        let answer: redis::RedisResult<(i64, i64)> = match tokio::time::timeout(RESPONSE_TIMEOUT, invocation).await {
            Ok(answer) => answer,
            Err(_) => Err(redis::RedisError::from((redis::ErrorKind::Io, "no answer in time"))),
        };
        match answer {
            Ok((taken, wait_ms)) => {
                inner.mark_up();
                Some(if taken == 1 { Ok(()) } else { Err(Duration::from_millis(wait_ms.max(1) as u64)) })
            }
            Err(error) => {
                inner.mark_down(&error);
                None
            }
        }
    }

    /// Whether the last attempt to reach Redis worked.
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Acquire)
    }
}

impl Inner {
    fn paused(&self) -> bool {
        let mut paused = self.paused_until.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match *paused {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                *paused = None; // this check tries Redis again
                false
            }
            None => false,
        }
    }

    fn mark_up(&self) {
        self.metrics.up.set(1);
        if !self.up.swap(true, Ordering::AcqRel) {
            tracing::info!("Redis answers again: rate limits are shared across replicas again");
        }
    }

    fn mark_down(&self, error: &redis::RedisError) {
        self.metrics.up.set(0);
        self.metrics.fallbacks.inc();
        *self.paused_until.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(Instant::now() + RETRY_INTERVAL);
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(%error, "Redis unavailable: rate limits are per replica until it is back");
        }
    }
}
