//! API keys and the audit log against a real control plane and a real
//! PostgreSQL: keys are shown once, stored only as digests, scoped to one
//! tenant and role, revoked for the very next request, and refusals are
//! audited by key id without the secret.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use ember_testenv::Postgres;
use serde_json::{Value, json};
use support::bearer;
use support::cluster::{Harness, SERVICE_ENDPOINTS};

fn spec() -> String {
    json!({"model": {"architecture": "mlp", "task": "regression",
                     "config": {"uri": "https://models.example/config.json", "sha256": "f".repeat(64)}, "source": {"uri": "https://models.example/m.safetensors", "sha256": "c".repeat(64)}}})
    .to_string()
}

async fn platform_rows(url: &str, sql: &str) -> Vec<String> {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let rows: Vec<(String,)> = sqlx::query_as(sql).fetch_all(&pool).await.unwrap();
    rows.into_iter().map(|(r,)| r).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_scoped_shown_once_audited_and_revoked_at_once() {
    let mut postgres = tokio::task::spawn_blocking(Postgres::start).await.unwrap().unwrap();
    let db = postgres.url();
    let h = Harness::start_with_platform(SERVICE_ENDPOINTS, &db).await;
    h.tenant(
        "acme-keys",
        json!({"owners": [{"kind": "User", "name": "alice"}], "members": [{"kind": "User", "name": "bob"}]}),
    )
    .await;
    h.tenant("globex-keys", json!({"owners": [{"kind": "User", "name": "mallory"}]})).await;
    let (alice, bob) = (h.token("alice", &[]), h.token("bob", &[]));
    let keys_path = "/v1/tenants/acme-keys/api-keys";

    // Issue: the secret is in this response and nowhere else.
    let (status, issued) = h.call("POST", keys_path, Some(&alice), Some(r#"{"name": "ci", "role": "edit"}"#)).await;
    assert_eq!(status, 201, "{issued}");
    let key = issued["key"].as_str().unwrap().to_owned();
    let id = issued["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with(&format!("ek_{id}_")) && key.len() > 50, "{key}");
    // The secret is base64url, which may itself hold '_': all after the id.
    let secret = key.strip_prefix(&format!("ek_{id}_")).unwrap().to_owned();
    let (status, listed) = h.call("GET", keys_path, Some(&alice), None).await;
    assert_eq!(status, 200);
    assert_eq!(listed[0]["id"], id.as_str());
    assert!(listed[0].get("key").is_none() && !listed.to_string().contains(&secret), "{listed}");
    let stored = platform_rows(&db, "SELECT row_to_json(k)::text FROM api_keys k").await.join("\n");
    assert!(!stored.contains(&secret), "the secret is stored in clear");

    // The key acts in its tenant with its role, and nowhere else.
    let as_key = bearer(&key);
    let (status, me) = h.call("GET", "/v1/whoami", Some(&as_key), None).await;
    assert_eq!(status, 200);
    assert_eq!(me["apiKey"], json!({"id": id, "tenant": "acme-keys", "role": "edit"}));
    let (status, body) = h.call("PUT", "/v1/tenants/acme-keys/deployments/from-ci", Some(&as_key), Some(&spec())).await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = h.call("GET", "/v1/tenants/globex-keys/deployments", Some(&as_key), None).await;
    assert_eq!(status, 404, "a key must not see another tenant");
    let (status, body) = h.call("POST", keys_path, Some(&as_key), Some(r#"{"name": "more", "role": "edit"}"#)).await;
    assert_eq!(status, 403, "a key must not mint keys: {body}");

    // A view key reads but does not write.
    let (_, viewer) = h.call("POST", keys_path, Some(&alice), Some(r#"{"name": "dashboards", "role": "view"}"#)).await;
    let as_viewer = bearer(viewer["key"].as_str().unwrap());
    let (status, _) = h.call("GET", "/v1/tenants/acme-keys/deployments", Some(&as_viewer), None).await;
    assert_eq!(status, 200);
    let (status, _) = h.call("DELETE", "/v1/tenants/acme-keys/deployments/from-ci", Some(&as_viewer), None).await;
    assert_eq!(status, 403);

    // Members and strangers cannot manage keys; admin keys do not exist.
    let (status, _) = h.call("POST", keys_path, Some(&bob), Some(r#"{"name": "x", "role": "view"}"#)).await;
    assert_eq!(status, 403);
    let (status, _) = h.call("GET", keys_path, Some(&h.token("mallory", &[])), None).await;
    assert_eq!(status, 404);
    let (status, body) = h.call("POST", keys_path, Some(&alice), Some(r#"{"name": "root", "role": "admin"}"#)).await;
    assert_eq!(status, 422, "{body}");
    let (status, _) = h
        .call("POST", keys_path, Some(&alice), Some(r#"{"name": "x", "role": "view", "tenant": "globex-keys"}"#))
        .await;
    assert_eq!(status, 422);

    // Forged keys are refused, and audited by id without the secret.
    let forged = bearer(&format!("ek_{id}_{}", "A".repeat(43)));
    let (status, body) = h.call("GET", "/v1/whoami", Some(&forged), None).await;
    assert_eq!(status, 401);
    assert!(body["detail"].as_str().unwrap().contains("does not match"), "{body}");
    for bad in ["ek_ffffffffffff_nope", "ek_garbage"] {
        let (status, _) = h.call("GET", "/v1/whoami", Some(&bearer(bad)), None).await;
        assert_eq!(status, 401, "{bad}");
    }
    let denial = format!("{id} API key secret does not match");
    ember_testenv::poll::until_async("the refusal is counted by key id", support::cluster::TIMEOUT, async || {
        let denials = platform_rows(&db, "SELECT key_id || ' ' || reason FROM auth_refusals").await;
        Ok(denials.contains(&denial).then_some(()))
    })
    .await
    .unwrap();
    let everything = platform_rows(
        &db,
        "SELECT row_to_json(a)::text FROM audit_log a UNION ALL SELECT row_to_json(r)::text FROM auth_refusals r",
    )
    .await
    .join("\n");
    assert!(!everything.contains(&secret) && !everything.contains(&"A".repeat(43)), "a secret reached the audit log");

    // Revocation holds for the very next request.
    let (status, _) = h.call("DELETE", &format!("{keys_path}/{id}"), Some(&alice), None).await;
    assert_eq!(status, 204);
    let (status, body) = h.call("GET", "/v1/tenants/acme-keys/deployments", Some(&as_key), None).await;
    assert_eq!(status, 401);
    assert!(body["detail"].as_str().unwrap().contains("revoked"), "{body}");

    // The tenant's audit trail, newest first.
    let (status, trail) = h.call("GET", "/v1/tenants/acme-keys/audit", Some(&alice), None).await;
    assert_eq!(status, 200);
    let actions: Vec<(String, String)> = trail
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["actor"].as_str().unwrap().to_owned(), e["action"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(actions[0], ("alice".to_owned(), "api-key.revoke".to_owned()));
    assert!(actions.contains(&(format!("apikey:{id}"), "deployment.create".to_owned())), "{actions:?}");
    assert!(actions.contains(&("alice".to_owned(), "api-key.issue".to_owned())), "{actions:?}");
    let (status, _) = h.call("GET", "/v1/tenants/acme-keys/audit", Some(&bob), None).await;
    assert_eq!(status, 403, "only admins read the audit log");

    // A database outage is a 503 for key users (JWT users are unaffected)
    // and heals by itself.
    let as_viewer_again = as_viewer.clone();
    tokio::task::block_in_place(|| postgres.stop());
    let (status, body) = h.call("GET", "/v1/tenants/acme-keys/deployments", Some(&as_viewer_again), None).await;
    assert_eq!(status, 503, "{body}");
    let (status, _) = h.call("GET", "/v1/tenants/acme-keys/deployments", Some(&alice), None).await;
    assert_eq!(status, 200);
    tokio::task::block_in_place(|| postgres.start_again()).unwrap();
    let answer: Value = ember_testenv::poll::until_async(
        "key auth after the database is back",
        support::cluster::TIMEOUT,
        async || {
            let (status, body) = h.call("GET", "/v1/tenants/acme-keys/deployments", Some(&as_viewer_again), None).await;
            Ok((status == 200).then_some(body))
        },
    )
    .await
    .unwrap();
    assert!(answer.is_array());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_die_with_their_tenant_object_and_with_their_creators_admin_role() {
    let postgres = tokio::task::spawn_blocking(Postgres::start).await.unwrap().unwrap();
    let db = postgres.url();
    let h = Harness::start_with_platform(SERVICE_ENDPOINTS, &db).await;
    let alice = h.token("alice", &[]);
    let issue = async |tenant: &str| {
        let path = format!("/v1/tenants/{tenant}/api-keys");
        let (status, issued) = h.call("POST", &path, Some(&alice), Some(r#"{"name": "ci", "role": "view"}"#)).await;
        assert_eq!(status, 201, "{issued}");
        (issued["id"].as_str().unwrap().to_owned(), bearer(issued["key"].as_str().unwrap()))
    };

    // A Tenant is deleted and another of the same name created, owned by someone else.
    h.tenant("acme-reuse", json!({"owners": [{"kind": "User", "name": "alice"}]})).await;
    let (old_id, old_key) = issue("acme-reuse").await;
    let list = "/v1/tenants/acme-reuse/deployments";
    assert_eq!(h.call("GET", list, Some(&old_key), None).await.0, 200);
    h.delete_tenant("acme-reuse").await;
    h.tenant("acme-reuse", json!({"owners": [{"kind": "User", "name": "mallory"}]})).await;
    let (status, body) = h.call("GET", list, Some(&old_key), None).await;
    assert_eq!(status, 404, "a key of the deleted tenant acts in its successor: {body}");

    // The key's creator stops administering the tenant.
    h.tenant("acme-demote", json!({"owners": [{"kind": "User", "name": "alice"}, {"kind": "User", "name": "bob"}]}))
        .await;
    let (demoted_id, demoted_key) = issue("acme-demote").await;
    let list = "/v1/tenants/acme-demote/deployments";
    assert_eq!(h.call("GET", list, Some(&demoted_key), None).await.0, 200);
    h.patch_tenant_spec("acme-demote", json!({"owners": [{"kind": "User", "name": "bob"}], "members": [{"kind": "User", "name": "alice", "role": "view"}]}))
        .await;
    assert_eq!(h.call("GET", list, Some(&demoted_key), None).await.0, 404, "a key outlived its creator's admin role");

    // The sweep makes both refusals durable revocations, audited; other keys live on.
    h.tenant("acme-other", json!({"owners": [{"kind": "User", "name": "alice"}]})).await;
    let (_, other_key) = issue("acme-other").await;
    assert_eq!(h.tenancy.sweep_keys().await.unwrap(), 2);
    assert_eq!(h.tenancy.sweep_keys().await.unwrap(), 0);
    assert_eq!(h.call("GET", "/v1/tenants/acme-other/deployments", Some(&other_key), None).await.0, 200);
    let revoked =
        platform_rows(&db, "SELECT id || ' ' || revoked_reason FROM api_keys WHERE revoked_at IS NOT NULL ORDER BY id")
            .await;
    assert!(revoked.contains(&format!("{old_id} its tenant was deleted")), "{revoked:?}");
    assert!(revoked.contains(&format!("{demoted_id} its creator no longer administers the tenant")), "{revoked:?}");
    assert_eq!(revoked.len(), 2, "{revoked:?}");
    let (status, body) = h.call("GET", "/v1/whoami", Some(&old_key), None).await;
    assert_eq!(status, 401);
    assert!(body["detail"].as_str().unwrap().contains("revoked"), "{body}");
    let audited = platform_rows(
        &db,
        "SELECT outcome FROM audit_log WHERE actor = 'ember-api' AND action = 'api-key.revoke' ORDER BY id",
    )
    .await;
    assert_eq!(audited.len(), 2, "{audited:?}");
    assert!(audited.iter().all(|o| o.starts_with("ok (its ")), "{audited:?}");
}
