//! The audit trail is complete whatever path a change took, against a real
//! control plane and a real PostgreSQL: REST changes with their caller and
//! request id, refused REST attempts, and changes made with kubectl or a
//! GitOps controller — seen on ember-api's watches and named by their field
//! manager and generation — each exactly once, though two followers watch
//! (two replicas) and a third starts later (a restart).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use ember_crds::model_deployment::ModelDeployment;
use ember_testenv::{Postgres, poll};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use support::cluster::{Harness, SERVICE_ENDPOINTS, TIMEOUT};

fn md(sha: char) -> Value {
    json!({"apiVersion": "ember.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "ranker"},
           "spec": {"model": {"architecture": "mlp", "task": "regression",
                    "config": {"uri": "https://models.example/config.json", "sha256": "f".repeat(64)},
                    "source": {"uri": "https://models.example/m.safetensors", "sha256": sha.to_string().repeat(64)}}}})
}

/// The tenant's trail, oldest first, as `(source, actor, action, outcome, generation)`.
async fn trail(h: &Harness, token: &str) -> Vec<(String, String, String, String, Option<i64>)> {
    let (status, entries) = h.call("GET", "/v1/tenants/acme-trail/audit", Some(token), None).await;
    assert_eq!(status, 200, "{entries}");
    let mut rows: Vec<_> = entries
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["target"] == "modeldeployment:ranker")
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (text("source"), text("actor"), text("action"), text("outcome"), e["generation"].as_i64())
        })
        .collect();
    rows.reverse();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_refusals_kubectl_and_gitops_changes_are_all_on_the_trail_once() {
    let postgres = tokio::task::spawn_blocking(Postgres::start).await.unwrap().unwrap();
    let h = Harness::start_with_platform(SERVICE_ENDPOINTS, &postgres.url()).await;
    let audit = h.tenancy.platform.as_ref().unwrap().audit.clone();
    // Two replicas follow the changes with ember-api's own rights.
    ember_api::change_log::spawn(h.tenancy.client.clone(), audit.clone());
    ember_api::change_log::spawn(h.tenancy.client.clone(), audit.clone());
    h.tenant(
        "acme-trail",
        json!({"owners": [{"kind": "User", "name": "alice"}], "members": [{"kind": "User", "name": "bob", "role": "view"}]}),
    )
    .await;
    let (alice, bob) = (h.token("alice", &[]), h.token("bob", &[]));
    let mds: Api<ModelDeployment> = Api::namespaced(h.admin.clone(), "tenant-acme-trail");

    // kubectl creates it, Argo CD changes it, alice changes it over REST,
    // bob (a viewer) tries to, and kubectl deletes it.
    mds.patch("ranker", &PatchParams::apply("kubectl"), &Patch::Apply(&md('a'))).await.unwrap();
    let argo =
        mds.patch("ranker", &PatchParams::apply("argocd-controller").force(), &Patch::Apply(&md('b'))).await.unwrap();
    assert_eq!(argo.metadata.generation, Some(2));
    poll::until_async("the watch saw kubectl's and Argo CD's changes", TIMEOUT, async || {
        Ok((trail(&h, &alice).await.len() >= 2).then_some(()))
    })
    .await
    .unwrap();
    h.until_status("/v1/tenants/acme-trail/deployments/ranker", &alice, 200).await;
    let spec = md('c')["spec"].to_string();
    let response = reqwest::Client::new()
        .put(format!("{}/v1/tenants/acme-trail/deployments/ranker", h.base))
        .header("Authorization", &alice)
        .header("Content-Type", "application/json")
        .header("X-Request-Id", "trail-7")
        .body(spec.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409, "argocd owns the source digest; ember-api does not take it over");
    let (status, body) = h.call("PUT", "/v1/tenants/acme-trail/deployments/ranker", Some(&bob), Some(&spec)).await;
    assert_eq!(status, 403, "{body}");
    mds.delete("ranker", &DeleteParams::default()).await.unwrap();

    let expected = [
        ("kubernetes", "kubectl", "deployment.create", "ok", Some(1)),
        ("kubernetes", "argocd-controller", "deployment.update", "ok", Some(2)),
        ("rest", "alice", "deployment.update", "failed (409)", None),
        ("rest", "bob", "deployment.write", "denied (403)", None),
        ("kubernetes", "unknown", "deployment.delete", "ok", Some(2)),
    ];
    let want: Vec<_> = expected
        .iter()
        .map(|(a, b, c, d, e)| (a.to_string(), b.to_string(), c.to_string(), d.to_string(), *e))
        .collect();
    let got = poll::until_async("the whole trail, each change once", TIMEOUT, async || {
        let rows = trail(&h, &alice).await;
        Ok((rows.len() >= want.len()).then_some(rows))
    })
    .await
    .unwrap();
    assert_eq!(got, want);

    // The REST entry carries its request id.
    let (_, entries) = h.call("GET", "/v1/tenants/acme-trail/audit", Some(&alice), None).await;
    let rest = entries.as_array().unwrap().iter().find(|e| e["actor"] == "alice").unwrap();
    assert_eq!(rest["requestId"], "trail-7", "{rest}");

    // A replica starting now relists every object: nothing is recorded again.
    mds.patch("ranker", &PatchParams::apply("kubectl"), &Patch::Apply(&md('d'))).await.unwrap();
    poll::until_async("the re-created deployment is on the trail", TIMEOUT, async || {
        Ok((trail(&h, &alice).await.len() == want.len() + 1).then_some(()))
    })
    .await
    .unwrap();
    ember_api::change_log::spawn(h.tenancy.client.clone(), audit);
    // The new follower has caught up once a change made after its start is on the trail.
    mds.patch("ranker", &PatchParams::apply("kubectl"), &Patch::Apply(&md('e'))).await.unwrap();
    let rows = poll::until_async("the change after the restart is on the trail", TIMEOUT, async || {
        let rows = trail(&h, &alice).await;
        Ok(rows.iter().any(|r| r.4 == Some(2) && r.1 == "kubectl").then_some(rows))
    })
    .await
    .unwrap();
    assert_eq!(rows.len(), want.len() + 2, "{rows:?}");

    // Reading it: filters, pages linked by a cursor, exports, and the
    // platform-wide view for platform admins only.
    let get = |path: String, token: String, accept: &'static str| {
        let url = format!("{}{path}", h.base);
        async move {
            let answer = reqwest::Client::new()
                .get(url)
                .header("Authorization", token)
                .header("Accept", accept)
                .send()
                .await
                .unwrap();
            let status = answer.status().as_u16();
            let next = answer.headers().get("link").map(|v| v.to_str().unwrap().to_owned());
            (status, next, answer.text().await.unwrap())
        }
    };
    let (status, _, body) =
        get("/v1/tenants/acme-trail/audit?source=kubernetes&actor=kubectl".into(), alice.clone(), "application/json")
            .await;
    assert_eq!(status, 200, "{body}");
    let kubectl: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(kubectl.len(), 3, "{body}");
    assert!(kubectl.iter().all(|e| e["actor"] == "kubectl" && e["source"] == "kubernetes"), "{body}");

    let mut pages = Vec::new();
    let mut next = Some("/v1/tenants/acme-trail/audit?action=deployment&limit=2".to_owned());
    while let Some(path) = next.take() {
        let (status, link, body) = get(path, alice.clone(), "application/x-ndjson").await;
        assert_eq!(status, 200, "{body}");
        let lines: Vec<Value> = body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert!(lines.len() <= 2);
        pages.extend(lines);
        next = link.map(|l| l.trim_start_matches('<').split('>').next().unwrap().to_owned());
    }
    let ids: Vec<i64> = pages.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), rows.len(), "every entry once across the pages: {ids:?}");
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first, no overlap: {ids:?}");

    let (status, _, csv) = get("/v1/tenants/acme-trail/audit".into(), alice.clone(), "text/csv").await;
    assert_eq!(status, 200);
    assert!(csv.starts_with("id,at,tenant,source,actor,action,target,outcome,generation,request_id\r\n"), "{csv}");
    assert!(csv.contains(",kubernetes,argocd-controller,deployment.update,modeldeployment:ranker,ok,2,"), "{csv}");

    let (status, _, body) = get("/v1/tenants/acme-trail/audit?since=yesterday".into(), alice.clone(), "*/*").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("since"), "{body}");
    let (status, _, _) = get("/v1/tenants/acme-trail/audit".into(), bob.clone(), "*/*").await;
    assert_eq!(status, 403, "a viewer does not read the trail");
    let (status, _, _) = get("/v1/audit".into(), alice.clone(), "*/*").await;
    assert_eq!(status, 403, "an owner has no platform-wide view");
    let admin = h.token("pat", &[support::cluster::PLATFORM_ADMINS]);
    let (status, _, body) =
        get("/v1/audit?tenant=acme-trail&source=kubernetes".into(), admin, "application/json").await;
    assert_eq!(status, 200, "{body}");
    let seen: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert!(
        !seen.is_empty() && seen.iter().all(|e| e["tenant"] == "acme-trail" && e["source"] == "kubernetes"),
        "{body}"
    );
}
