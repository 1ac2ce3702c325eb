//! Unauthenticated load and the audit trail, against a real control plane
//! and a real PostgreSQL: a flood of bogus API keys from one address is
//! throttled before the database and counted, not logged row by row, while
//! callers elsewhere keep being served; an action whose audit entry cannot
//! be written is not done; old entries are swept.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::IpAddr;
use std::time::Duration;

use ember_api::audit::{AuditLog, Retention};
use ember_api::ratelimit::{RateLimiter, SourceLimits};
use ember_crds::model_deployment::ModelDeployment;
use ember_testenv::{Postgres, poll};
use futures::StreamExt;
use kube::api::Api;
use serde_json::json;
use support::bearer;
use support::cluster::{Harness, SERVICE_ENDPOINTS, TIMEOUT};

fn spec() -> String {
    json!({"model": {"architecture": "mlp", "task": "regression",
                     "config": {"uri": "https://models.example/config.json", "sha256": "f".repeat(64)}, "source": {"uri": "https://models.example/m.safetensors", "sha256": "d".repeat(64)}}})
    .to_string()
}

async fn scalar(url: &str, sql: &str) -> i64 {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&pool).await.unwrap();
    pool.close().await;
    n
}

async fn execute(url: &str, sql: &str) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    sqlx::query(sql).execute(&pool).await.unwrap();
    pool.close().await;
}

/// A tenant owned by alice, and a `view` API key of it (as `Authorization` value).
async fn tenant_with_a_view_key(h: &Harness, tenant: &str) -> String {
    h.tenant(tenant, json!({"owners": [{"kind": "User", "name": "alice"}]})).await;
    let path = format!("/v1/tenants/{tenant}/api-keys");
    let (status, issued) =
        h.call("POST", &path, Some(&h.token("alice", &[])), Some(r#"{"name": "app", "role": "view"}"#)).await;
    assert_eq!(status, 201, "{issued}");
    bearer(issued["key"].as_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bogus_keys_is_throttled_before_the_database_and_counted_not_logged() {
    let postgres = tokio::task::spawn_blocking(Postgres::start).await.unwrap().unwrap();
    let db = postgres.url();
    let h = Harness::start_with_platform_and_sources(
        SERVICE_ENDPOINTS,
        &db,
        SourceLimits {
            requests: RateLimiter::new(1000.0, 2000.0),
            refusals: RateLimiter::new(5.0, 20.0),
            trusted_proxies: Default::default(),
        },
    )
    .await;
    let good_key = tenant_with_a_view_key(&h, "acme-flood").await;
    let audit_rows_before = scalar(&db, "SELECT count(*) FROM audit_log").await;

    // The attacker, from 127.0.0.2: 600 bogus keys, 16 at a time.
    let attacker = reqwest::Client::builder().local_address(IpAddr::from([127, 0, 0, 2])).build().unwrap();
    let url = format!("{}/v1/tenants/acme-flood/deployments", h.base);
    let flood = futures::stream::iter(0..600)
        .map(|i| {
            let (attacker, url) = (attacker.clone(), url.clone());
            async move {
                let bogus = format!("Bearer ek_{:012x}_x", i);
                attacker.get(url).header("Authorization", bogus).send().await.unwrap().status().as_u16()
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<u16>>();
    // Meanwhile a real client, from 127.0.0.1, uses its valid key.
    let client = async {
        let mut statuses = Vec::new();
        for _ in 0..40 {
            statuses.push(h.call("GET", "/v1/tenants/acme-flood/deployments", Some(&good_key), None).await.0);
        }
        statuses
    };
    let (flood, served) = tokio::join!(flood, client);

    let refused = flood.iter().filter(|&&s| s == 401).count();
    let throttled = flood.iter().filter(|&&s| s == 429).count();
    assert_eq!(refused + throttled, 600, "only 401 and 429: {flood:?}");
    assert!(throttled >= 500, "the flood must be throttled, not checked key by key: {refused} x 401");
    assert!(served.iter().all(|&s| s == 200), "the valid client was hurt by the flood: {served:?}");

    // No audit row per attempt; the refusals that were checked are counted.
    assert_eq!(scalar(&db, "SELECT count(*) FROM audit_log").await, audit_rows_before);
    poll::until_async("refusal counts flushed", TIMEOUT, async || {
        let counted =
            scalar(&db, "SELECT coalesce(sum(attempts), 0)::bigint FROM auth_refusals WHERE source = '127.0.0.2'")
                .await;
        Ok((counted == refused as i64).then_some(()))
    })
    .await
    .unwrap();
    assert!(scalar(&db, "SELECT count(*) FROM auth_refusals").await <= refused as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_whose_audit_entry_cannot_be_written_is_not_done() {
    let postgres = tokio::task::spawn_blocking(Postgres::start).await.unwrap().unwrap();
    let db = postgres.url();
    let h = Harness::start_with_platform(SERVICE_ENDPOINTS, &db).await;
    h.tenant("acme-audit", json!({"owners": [{"kind": "User", "name": "alice"}]})).await;
    let alice = h.token("alice", &[]);
    let path = "/v1/tenants/acme-audit/deployments/scorer";
    let mds: Api<ModelDeployment> = Api::namespaced(h.admin.clone(), "tenant-acme-audit");

    // The audit table is unwritable (the rest of the database works).
    execute(&db, "ALTER TABLE audit_log RENAME TO audit_log_away").await;
    let (status, body) = h.call("PUT", path, Some(&alice), Some(&spec())).await;
    assert_eq!(status, 503, "{body}");
    assert!(mds.get_opt("scorer").await.unwrap().is_none(), "done without an audit entry");
    let (status, _) =
        h.call("POST", "/v1/tenants/acme-audit/api-keys", Some(&alice), Some(r#"{"name": "k", "role": "view"}"#)).await;
    assert_eq!(status, 503);
    assert_eq!(scalar(&db, "SELECT count(*) FROM api_keys").await, 0, "a key was issued without an audit entry");

    // Back: the action is done and on record with its outcome.
    execute(&db, "ALTER TABLE audit_log_away RENAME TO audit_log").await;
    let (status, body) = h.call("PUT", path, Some(&alice), Some(&spec())).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        scalar(
            &db,
            "SELECT count(*) FROM audit_log WHERE actor = 'alice' AND action = 'deployment.create' AND outcome = 'ok'"
        )
        .await,
        1
    );
    // A refused action is on record as failed.
    let (status, _) = h.call("DELETE", "/v1/tenants/acme-audit/deployments/missing", Some(&alice), None).await;
    assert_eq!(status, 404);
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM audit_log WHERE action = 'deployment.delete' AND outcome = 'failed (404)'")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_older_than_their_retention_are_swept() {
    let postgres = tokio::task::spawn_blocking(Postgres::start).await.unwrap().unwrap();
    let db = postgres.url();
    let pool = ember_api::platform_db::connect(&db).await.unwrap();
    for (age, actor) in [("500 days", "old"), ("1 day", "recent")] {
        execute(&db, &format!("INSERT INTO audit_log (at, actor, action, outcome) VALUES (now() - interval '{age}', '{actor}', 'x', 'ok')")).await;
        execute(&db, &format!("INSERT INTO auth_refusals (minute, source, key_id, reason, attempts) VALUES (now() - interval '{age}', '{actor}', '', 'r', 1)")).await;
    }
    execute(&db, "INSERT INTO auth_refusals (minute, source, key_id, reason, attempts) VALUES (now() - interval '40 days', 'month-old', '', 'r', 1)").await;
    let day = Duration::from_secs(86_400);
    let deleted = AuditLog::new(pool).sweep(Retention { audit: day * 400, refusals: day * 30 }).await.unwrap();
    assert_eq!(deleted, 3);
    assert_eq!(scalar(&db, "SELECT count(*) FROM audit_log WHERE actor = 'recent'").await, 1);
    assert_eq!(scalar(&db, "SELECT count(*) FROM auth_refusals").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_each_client_has_its_own_budget() {
    let postgres = tokio::task::spawn_blocking(Postgres::start).await.unwrap().unwrap();
    let db = postgres.url();
    // 127.0.0.2 plays the ingress; nothing else is trusted.
    let h = Harness::start_with_platform_and_sources(
        SERVICE_ENDPOINTS,
        &db,
        SourceLimits {
            requests: RateLimiter::new(1000.0, 2000.0),
            refusals: RateLimiter::new(1.0, 5.0),
            trusted_proxies: "127.0.0.2/32".parse().unwrap(),
        },
    )
    .await;
    let good_key = tenant_with_a_view_key(&h, "acme-proxy").await;
    let url = format!("{}/v1/tenants/acme-proxy/deployments", h.base);
    let from = |local: [u8; 4]| reqwest::Client::builder().local_address(IpAddr::from(local)).build().unwrap();
    let (ingress, stranger) = (from([127, 0, 0, 2]), from([127, 0, 0, 3]));
    let get = async |client: &reqwest::Client, forwarded_for: &str, key: &str| {
        client
            .get(&url)
            .header("X-Forwarded-For", forwarded_for)
            .header("Authorization", key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };

    // The attacker behind the ingress exhausts its own refusal budget...
    let mut statuses = Vec::new();
    for i in 0..20 {
        statuses.push(get(&ingress, "203.0.113.9", &format!("Bearer ek_{i:012x}_x")).await);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(get(&ingress, "203.0.113.9", &good_key).await, 429, "the attacker's address is throttled");
    // ...while another client behind the same ingress is served.
    assert_eq!(get(&ingress, "198.51.100.7", &good_key).await, 200);
    // A client that is not the ingress cannot borrow another's address, nor
    // dodge its own budget by claiming one: its header is ignored.
    assert_eq!(get(&stranger, "198.51.100.7", &good_key).await, 200);
    for i in 0..20 {
        get(&stranger, &format!("198.51.100.{i}"), &format!("Bearer ek_{i:012x}_y")).await;
    }
    assert_eq!(get(&stranger, "192.0.2.1", &good_key).await, 429, "a forged header escaped the limit");
    assert_eq!(get(&ingress, "198.51.100.7", &good_key).await, 200, "the stranger's flood hit a client it named");
}
