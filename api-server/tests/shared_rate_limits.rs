//! Rate limits shared across ember-api replicas through a real Redis
//! (`redis-server` started by the test on a free loopback port): the
//! bucket script's maths and key hygiene; two replicas admitting exactly
//! one burst between them; each replica limiting on its own while Redis is
//! down; sharing resuming by itself when it is back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use ember_api::ratelimit::{RateLimiter, RateLimits, SharedBuckets, SharedLimitMetrics, shared::KEY_PREFIX};
use ember_testenv::{Redis, poll};
use support::cluster::{Harness, TIMEOUT};

async fn start_redis() -> Redis {
    tokio::task::spawn_blocking(Redis::start).await.unwrap().unwrap()
}

async fn raw_connection(redis: &Redis) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bucket_script_takes_a_burst_refills_at_the_rate_and_expires_when_full() {
    let redis = start_redis().await;
    let metrics = SharedLimitMetrics::default();
    let buckets = SharedBuckets::new(&redis.url(), metrics.clone()).unwrap();

    // A burst of 3, then a wait of 1/rate for the next token (1000 s at 0.001/s).
    for _ in 0..3 {
        assert_eq!(buckets.take("caller", "alice", 0.001, 3.0).await, Some(Ok(())));
    }
    let Some(Err(wait)) = buckets.take("caller", "alice", 0.001, 3.0).await else { panic!("the burst is 3") };
    assert!((999..=1001).contains(&wait.as_secs()), "{wait:?}");
    // Other keys and scopes have their own buckets.
    assert_eq!(buckets.take("caller", "bob", 0.001, 3.0).await, Some(Ok(())));
    assert_eq!(buckets.take("tenant", "alice", 0.001, 3.0).await, Some(Ok(())));

    // Namespaced, and expiring once the bucket would be full again
    // (3 tokens at 0.001/s: 3000 s, plus a second).
    let mut raw = raw_connection(&redis).await;
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut raw).await.unwrap();
    keys.sort();
    assert_eq!(
        keys,
        ["caller:alice", "caller:bob", "tenant:alice"].map(|k| format!("{KEY_PREFIX}{k}")),
        "every key is under ember-api's prefix"
    );
    let ttl: i64 = redis::cmd("PTTL").arg(format!("{KEY_PREFIX}caller:alice")).query_async(&mut raw).await.unwrap();
    assert!((2_990_000..=3_001_000).contains(&ttl), "{ttl} ms");

    // Refill: at 20/s an emptied bucket of 1 has a token again after ~50 ms.
    assert_eq!(buckets.take("caller", "fast", 20.0, 1.0).await, Some(Ok(())));
    let Some(Err(wait)) = buckets.take("caller", "fast", 20.0, 1.0).await else { panic!("the burst is 1") };
    assert!(wait <= Duration::from_millis(50), "{wait:?}");
    let emptied = Instant::now();
    poll::until_async("the bucket refills", TIMEOUT, async || {
        Ok((buckets.take("caller", "fast", 20.0, 1.0).await == Some(Ok(()))).then_some(()))
    })
    .await
    .unwrap();
    assert!(emptied.elapsed() >= Duration::from_millis(30), "refilled too early: {:?}", emptied.elapsed());
    assert_eq!(metrics.up.get(), 1);
    assert_eq!(metrics.fallbacks.get(), 0);
}

/// Two replicas, each with its own connection to `redis`: 0.001 requests/s
/// per caller (no refill within a test), bursts of `BURST`.
const BURST: usize = 10;

async fn replica(redis: &Redis) -> (Harness, SharedLimitMetrics) {
    let metrics = SharedLimitMetrics::default();
    let buckets = SharedBuckets::new(&redis.url(), metrics.clone()).unwrap();
    let limits = RateLimits {
        per_caller: RateLimiter::new(0.001, BURST as f64).shared(buckets.clone(), "caller"),
        per_tenant: RateLimiter::new(1000.0, 1000.0).shared(buckets, "tenant"),
    };
    (Harness::start_with_limits(limits).await, metrics)
}

/// `count` calls of `GET /v1/tenants` as `user`, alternating between the
/// replicas (as a load balancer would); how many each admitted.
async fn spread_calls(replicas: &[&Harness], user: &str, count: usize) -> Vec<usize> {
    let mut admitted = vec![0; replicas.len()];
    for i in 0..count {
        let which = i % replicas.len();
        let h = replicas[which];
        let (status, body) = h.call("GET", "/v1/tenants", Some(&h.token(user, &[])), None).await;
        match status {
            200 => admitted[which] += 1,
            429 => assert!(body["detail"].as_str().unwrap().contains("this caller"), "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    admitted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_limit_and_fall_back_to_their_own_while_redis_is_down() {
    let mut redis = start_redis().await;
    let (a, a_metrics) = replica(&redis).await;
    let (b, _) = replica(&redis).await;

    // Shared: three bursts' worth of calls over both replicas, one burst admitted.
    let admitted = spread_calls(&[&a, &b], "bob", 3 * BURST).await;
    assert_eq!(admitted.iter().sum::<usize>(), BURST, "admitted per replica: {admitted:?}");
    assert!(admitted.iter().all(|&n| n > 0), "both replicas served: {admitted:?}");
    // A refusal says when to come back.
    let response = reqwest::Client::new()
        .get(format!("{}/v1/tenants", a.base))
        .header("Authorization", a.token("bob", &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);

    // Redis down: each replica limits on its own (open to its own burst,
    // not to no limit), and says so in its metrics.
    tokio::task::block_in_place(|| redis.stop());
    for h in [&a, &b] {
        let admitted = spread_calls(&[h], "bob", BURST + 5).await;
        assert_eq!(admitted, [BURST], "a replica's own bucket holds one burst");
    }
    assert!(a_metrics.fallbacks.get() > 0);
    assert_eq!(a_metrics.up.get(), 0);

    // Redis back (empty): sharing resumes by itself. Each try uses a fresh
    // caller, so a try made while a replica still answers locally does not
    // spoil the next.
    tokio::task::block_in_place(|| redis.start_again()).unwrap();
    let mut attempt = 0;
    poll::until_async("both replicas share the limit again", TIMEOUT, async || {
        attempt += 1;
        let admitted = spread_calls(&[&a, &b], &format!("carol-{attempt}"), 3 * BURST).await;
        Ok((admitted.iter().sum::<usize>() == BURST).then_some(()))
    })
    .await
    .unwrap();
    assert_eq!(a_metrics.up.get(), 1);
}
