//! Tenant administration over REST against a real control plane and a real
//! PostgreSQL (audit): platform admins create, change and delete the very
//! Tenant objects kubectl and GitOps write, a field another manager owns is
//! a 409 naming it, owners edit branding and nothing else, and the CRD's
//! schema refuses bad branding naming the field.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use ember_crds::tenant::Tenant;
use ember_testenv::{Postgres, poll};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use support::cluster::{Harness, PLATFORM_ADMINS, SERVICE_ENDPOINTS, TIMEOUT};

fn spec(cpu: &str) -> String {
    json!({"owners": [{"kind": "User", "name": "olga"}], "quota": {"cpu": cpu, "memory": "4Gi"}}).to_string()
}

async fn audit_actions(url: &str, tenant: &str) -> Vec<(String, String, String)> {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    sqlx::query_as("SELECT actor, action, outcome FROM audit_log WHERE tenant = $1 ORDER BY id")
        .bind(tenant)
        .fetch_all(&pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_admins_administer_tenants_and_owners_only_their_branding() {
    let postgres = tokio::task::spawn_blocking(Postgres::start).await.unwrap().unwrap();
    let h = Harness::start_with_platform(SERVICE_ENDPOINTS, &postgres.url()).await;
    let tenants: Api<Tenant> = Api::all(h.admin.clone());
    let (admin, owner) = (h.token("pat", &[PLATFORM_ADMINS]), h.token("olga", &[]));
    let path = "/v1/tenants/globex-admin";

    // Create, then change: the same object kubectl reads.
    let (status, body) = h.call("PUT", path, Some(&admin), Some(&spec("2"))).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["spec"]["quota"]["cpu"], "2");
    assert_eq!(body["roles"], json!(["platformAdmin"]));
    let (status, body) = h.call("PUT", path, Some(&admin), Some(&spec("3"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(tenants.get("globex-admin").await.unwrap().spec.quota.cpu.0, "3");

    // The owner sees it, but may not change its quota, access or existence.
    let view = h.until_status(path, &owner, 200).await;
    assert_eq!(view["roles"], json!(["owner"]), "{view}");
    let (status, body) = h.call("PUT", path, Some(&owner), Some(&spec("64"))).await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = h.call("DELETE", path, Some(&owner), None).await;
    assert_eq!(status, 403);
    assert_eq!(tenants.get("globex-admin").await.unwrap().spec.quota.cpu.0, "3");

    // Branding: the owner's to edit, validated by the CRD naming the field.
    let branding = |body: Value| body.to_string();
    let good = json!({"displayName": "Globex", "branding": {"primaryColor": "#112233", "accentColor": "#abcdef",
        "logoUrl": "https://cdn.globex.example/logo.svg", "supportUrl": "mailto:help@globex.example", "theme": "dark"}});
    let (status, body) = h.call("PUT", &format!("{path}/branding"), Some(&owner), Some(&branding(good))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["spec"]["branding"]["theme"], "dark");
    assert_eq!(body["spec"]["quota"]["cpu"], "3", "branding left the admin's fields alone: {body}");
    for (bad, field) in [
        (json!({"branding": {"primaryColor": "red"}}), "spec.branding.primaryColor"),
        (json!({"branding": {"logoUrl": "http://globex.example/logo.svg"}}), "spec.branding.logoUrl"),
        (json!({"branding": {"supportUrl": "javascript:alert(1)"}}), "spec.branding.supportUrl"),
        (json!({"displayName": "x".repeat(200)}), "spec.displayName"),
        (json!({"branding": {"theme": "neon"}}), "spec.branding.theme"),
        (json!({"branding": {"fontFamily": "Comic Sans"}}), "fontFamily"),
    ] {
        let (status, body) = h.call("PUT", &format!("{path}/branding"), Some(&owner), Some(&bad.to_string())).await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert!(body["detail"].as_str().unwrap().contains(field), "{bad}: {body}");
    }
    let (status, body) = h.call("PUT", &format!("{path}/branding"), Some(&owner), Some(r#"{"quota": {}}"#)).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("PUT /v1/tenants/{t}"), "{body}");
    let (status, body) = h.call("PUT", path, Some(&admin), Some(r#"{"branding": {}}"#)).await;
    assert_eq!(status, 422, "{body}");
    let listed = h.until_status("/v1/tenants", &owner, 200).await;
    poll::until_async("the listing shows the display name", TIMEOUT, async || {
        let (_, listed) = h.call("GET", "/v1/tenants", Some(&owner), None).await;
        Ok(listed.as_array().unwrap().iter().any(|t| t["displayName"] == "Globex").then_some(()))
    })
    .await
    .unwrap();
    assert!(listed.is_array());

    // A field kubectl owns is not taken over: 409 naming kubectl.
    let by_kubectl = json!({"apiVersion": "ember.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": "globex-admin"},
                            "spec": {"quota": {"cpu": "5"}}});
    tenants.patch("globex-admin", &PatchParams::apply("kubectl").force(), &Patch::Apply(&by_kubectl)).await.unwrap();
    let (status, body) = h.call("PUT", path, Some(&admin), Some(&spec("6"))).await;
    assert_eq!(status, 409, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("kubectl") && detail.contains("quota.cpu"), "{detail}");
    assert_eq!(tenants.get("globex-admin").await.unwrap().spec.quota.cpu.0, "5");

    // Deleted by the admin; every step is in the audit trail, refusals too.
    let (status, body) = h.call("DELETE", path, Some(&admin), None).await;
    assert_eq!(status, 202, "{body}");
    poll::until_async("the Tenant is gone", TIMEOUT, async || {
        Ok(tenants.get_opt("globex-admin").await.unwrap().is_none().then_some(()))
    })
    .await
    .unwrap();
    let trail = audit_actions(&postgres.url(), "globex-admin").await;
    let expected = [
        ("pat", "tenant.create", "ok"),
        ("pat", "tenant.update", "ok"),
        ("olga", "tenant.write", "denied (403)"),
        ("olga", "tenant.delete", "denied (403)"),
        ("olga", "tenant.branding", "ok"),
        ("pat", "tenant.update", "failed (409)"),
        ("pat", "tenant.delete", "ok"),
    ];
    let found: Vec<(&str, &str, &str)> = trail
        .iter()
        .filter(|(_, _, o)| !o.contains("422"))
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    assert_eq!(found, expected, "{trail:?}");
}
