//! Request rate limits (token buckets). Over the limit the answer is 429
//! with `Retry-After`, before any work is done, so one noisy key or tenant
//! cannot starve the others.
//!
//! The limits per caller and per tenant are shared by all replicas through
//! Redis when it is configured (`shared`), and kept per replica otherwise or
//! while Redis is unreachable. The limits per source address (checked before
//! any credential) always stay per replica: they are the flood shield in
//! front of everything else, so they must cost nothing and depend on no other
//! service; behind a load balancer a source may thus get N replicas' worth.

pub mod shared;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::client_address::TrustedProxies;
pub use shared::{SharedBuckets, SharedLimitMetrics};

/// Buckets kept before idle, full ones are dropped: bounds memory when many
/// distinct callers come and go.
const MAX_BUCKETS: usize = 10_000;

/// `rate` requests per second on average, up to `burst` at once.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
    /// The buckets all replicas share, under a scope name, when configured.
    shared: Option<(SharedBuckets, &'static str)>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    pub fn new(rate: f64, burst: f64) -> Self {
        Self { rate: rate.max(f64::MIN_POSITIVE), burst: burst.max(1.0), buckets: Mutex::default(), shared: None }
    }

    /// The same limit, counted in `buckets` for all replicas together;
    /// `scope` keeps it apart from other limits there (`caller`, `tenant`).
    pub fn shared(mut self, buckets: SharedBuckets, scope: &'static str) -> Self {
        self.shared = Some((buckets, scope));
        self
    }

    /// Takes one token for `key`: from the shared bucket when there is one
    /// and Redis answers, else from this replica's own.
    pub async fn acquire(&self, key: &str) -> Result<(), Duration> {
        self.acquire_within(key, None).await
    }

    /// [`acquire`](Self::acquire) with `key`'s own `(rate, burst)` in
    /// place of this limiter's, when it has one (a Tenant's `rateLimit`).
    pub async fn acquire_within(&self, key: &str, own: Option<(f64, f64)>) -> Result<(), Duration> {
        let (rate, burst) = own.unwrap_or((self.rate, self.burst));
        if let Some((buckets, scope)) = &self.shared
            && let Some(answer) = buckets.take(scope, key, rate, burst).await
        {
            return answer;
        }
        self.take(key, true, rate, burst)
    }

    /// Takes one token for `key` from this replica's bucket, or says how
    /// long until one is available.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.take(key, true, self.rate, self.burst)
    }

    /// Like [`check`](Self::check) but takes nothing: whether `key` has a
    /// token left.
    pub fn peek(&self, key: &str) -> Result<(), Duration> {
        self.take(key, false, self.rate, self.burst)
    }

    fn take(&self, key: &str, consume: bool, rate: f64, burst: f64) -> Result<(), Duration> {
        let (rate, burst) = (rate.max(f64::MIN_POSITIVE), burst.max(1.0));
        let now = Instant::now();
        let mut buckets = match self.buckets.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(), // a panic elsewhere must not lock everyone out
        };
        if buckets.len() >= MAX_BUCKETS {
            // Idle and full by this limiter's own rate; a bucket with a
            // tenant's own rate dropped early just starts full again.
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| b.tokens + now.duration_since(b.updated).as_secs_f64() * rate < burst);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket { tokens: burst, updated: now });
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.updated).as_secs_f64() * rate).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            if consume {
                bucket.tokens -= 1.0;
            }
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

/// Limits per source address, checked before any credential is looked at
/// (so before any database work): all requests, and refused credentials.
/// A source that keeps presenting bad credentials is refused with 429
/// without them being checked, while other sources are unaffected.
///
/// The source is the TCP peer, or the client a trusted proxy names in
/// `X-Forwarded-For` (see `client_address`).
#[derive(Debug)]
pub struct SourceLimits {
    pub requests: RateLimiter,
    pub refusals: RateLimiter,
    pub trusted_proxies: TrustedProxies,
}

impl Default for SourceLimits {
    /// 200 requests/s per source (bursts of 400); 5 refused credentials/s
    /// (bursts of 20).
    fn default() -> Self {
        Self {
            requests: RateLimiter::new(200.0, 400.0),
            refusals: RateLimiter::new(5.0, 20.0),
            trusted_proxies: TrustedProxies::default(),
        }
    }
}

/// The two limits every tenant route checks (shared across replicas when
/// built with [`RateLimiter::shared`]).
#[derive(Debug)]
pub struct RateLimits {
    pub per_caller: RateLimiter,
    pub per_tenant: RateLimiter,
}

impl Default for RateLimits {
    /// 50 requests/s per caller (bursts of 100), 200/s per tenant (400).
    fn default() -> Self {
        Self { per_caller: RateLimiter::new(50.0, 100.0), per_tenant: RateLimiter::new(200.0, 400.0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_refused_with_the_wait_and_keys_are_independent() {
        let limiter = RateLimiter::new(1.0, 3.0);
        for _ in 0..3 {
            assert!(limiter.check("a").is_ok());
        }
        let Err(wait) = limiter.check("a") else { panic!("the fourth request in a burst of 3 must wait") };
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limiter.check("b").is_ok(), "another key has its own bucket");
    }

    #[test]
    fn peeking_takes_nothing() {
        let limiter = RateLimiter::new(0.001, 1.0);
        for _ in 0..3 {
            assert!(limiter.peek("a").is_ok());
        }
        assert!(limiter.check("a").is_ok());
        assert!(limiter.peek("a").is_err(), "the only token is gone");
    }
}
