//! Usage for billing, end to end: a real ember-runtime serving MiniLM on
//! loopback behind ember-api, a real control plane holding the Tenant and
//! ModelDeployment, and a real PostgreSQL as ember-api's database. Every
//! call the test makes is tallied from the answer it got; the usage API
//! must report exactly that, per caller and status class, after a graceful
//! restart of ember-api (only the stop's flush can have written the first
//! replica's counts) and with two replicas counting into the same rows.
//! Also: CSV, another tenant's usage is invisible (404), non-admins get
//! 403, and platform admins see every tenant's (`GET /v1/usage`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use ember_runtime::args::Args;
use ember_testenv::{Postgres, poll};
use serde_json::{Value, json};
use support::bearer;
use support::cluster::{Harness, PLATFORM_ADMINS, TIMEOUT};

const TENANT: &str = "acme-usage";
const OTHER_TENANT: &str = "globex-usage";

/// A sentence and the tokens MiniLM reads for it (the committed reference).
#[derive(Debug, Clone, serde::Deserialize)]
struct Sentence {
    text: String,
    tokens: u64,
}

fn sentences() -> Vec<Sentence> {
    #[derive(serde::Deserialize)]
    struct Reference {
        sentences: Vec<Sentence>,
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ml-runtime/tests/fixtures/minilm_reference.json");
    let reference: Reference = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    // The short ones: enough to tell token counts apart, quick to embed.
    reference.sentences.into_iter().filter(|s| s.tokens < 64).collect()
}

/// MiniLM (fetched by ml-runtime's script, cached) served as `minilm` on loopback.
async fn serve_minilm() -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ml-runtime/scripts/fetch-minilm.sh");
    let output = tokio::process::Command::new("bash").arg(&script).output().await.unwrap();
    assert!(output.status.success(), "fetch-minilm.sh: {}", String::from_utf8_lossy(&output.stderr));
    let dir = PathBuf::from(String::from_utf8(output.stdout).unwrap().trim());
    let path = |f: &str| dir.join(f).display().to_string();
    let args = Args::parse_from([
        "ember-runtime".to_owned(),
        "--model-name=minilm".into(),
        format!("--model-uri={}", path("model.safetensors")),
        format!("--config-uri={}", path("config.json")),
        format!("--tokenizer-uri={}", path("tokenizer.json")),
        "--architecture=bert".into(),
        "--task=embedding".into(),
    ]);
    support::runtime::serve(&args).await
}

fn spec() -> String {
    let file = |name: &str, digit: &str| json!({"uri": format!("https://models.example/minilm/{name}"), "sha256": digit.repeat(64)});
    json!({"model": {"architecture": "bert", "task": "embedding", "source": file("model.safetensors", "a"),
                     "config": file("config.json", "b"), "tokenizer": file("tokenizer.json", "c")}})
    .to_string()
}

/// What the test expects per caller and status class: requests, items, tokens.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Expected {
    requests: i64,
    items: i64,
    tokens: i64,
}

#[derive(Debug, Default)]
struct Tally(BTreeMap<(String, u16), Expected>);

impl Tally {
    /// Counts one answered call: items and tokens only when it succeeded.
    fn add(&mut self, caller: &str, status: u16, sent: &[Sentence]) {
        let entry = self.0.entry((caller.to_owned(), status / 100)).or_default();
        entry.requests += 1;
        if status / 100 == 2 {
            entry.items += sent.len() as i64;
            entry.tokens += sent.iter().map(|s| s.tokens as i64).sum::<i64>();
        }
    }

    fn total(&self, pick: impl Fn(&(String, u16)) -> bool) -> Expected {
        self.0.iter().filter(|(k, _)| pick(k)).fold(Expected::default(), |mut sum, (_, e)| {
            sum.requests += e.requests;
            sum.items += e.items;
            sum.tokens += e.tokens;
            sum
        })
    }
}

/// A caller of one ember-api replica: its `Authorization` value, the name
/// usage is recorded under, and the tenant whose MiniLM it calls.
struct Caller<'a> {
    h: &'a Harness,
    authorization: String,
    name: String,
    tenant: &'static str,
}

const EMBEDDINGS: &str = "/v1/tenants/acme-usage/deployments/minilm/embeddings";
const INFER: &str = "/infer";

impl Caller<'_> {
    async fn post(&self, path: &str, body: Value) -> u16 {
        // Paths are given for acme-usage; the caller's own tenant replaces it.
        let path = match path {
            INFER => format!("/v1/tenants/{}/deployments/minilm/infer", self.tenant),
            _ => path.replace(TENANT, self.tenant),
        };
        self.h.call("POST", &path, Some(&self.authorization), Some(&body.to_string())).await.0
    }

    async fn embeddings(&self, tally: &mut Tally, sent: &[Sentence]) {
        let texts: Vec<&str> = sent.iter().map(|s| s.text.as_str()).collect();
        let status = self.post(EMBEDDINGS, json!({"input": texts})).await;
        assert_eq!(status, 200);
        tally.add(&self.name, status, sent);
    }

    async fn infer(&self, tally: &mut Tally, sent: &[Sentence]) {
        let texts: Vec<&str> = sent.iter().map(|s| s.text.as_str()).collect();
        let body = json!({"inputs": [{"name": "text", "shape": [texts.len()], "datatype": "BYTES", "data": texts}]});
        let status = self.post(INFER, body).await;
        assert_eq!(status, 200);
        tally.add(&self.name, status, sent);
    }

    /// A request the runtime refuses (400): billed as one 4xx request.
    async fn bad_request(&self, tally: &mut Tally) {
        let body = json!({"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]});
        let status = self.post(INFER, body).await;
        assert_eq!(status, 400);
        tally.add(&self.name, status, &[]);
    }
}

async fn usage(h: &Harness, token: &str, query: &str) -> Value {
    let (status, body) = h.call("GET", &format!("/v1/tenants/{TENANT}/usage?{query}"), Some(token), None).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn counts(row: &Value) -> Expected {
    let n = |field: &str| row[field].as_i64().unwrap_or_else(|| panic!("{field} in {row}"));
    Expected { requests: n("requests"), items: n("items"), tokens: n("tokens") }
}

/// Polls the usage API (grouped by caller) until it reports `tally`
/// exactly, per caller and status class; the last answer otherwise.
async fn until_reported(h: &Harness, token: &str, tally: &Tally) {
    let want: BTreeMap<String, (Expected, [i64; 3])> = tally
        .0
        .keys()
        .map(|(caller, _)| caller.clone())
        .map(|caller| {
            let by_class = [2, 4, 5].map(|class| tally.0.get(&(caller.clone(), class)).map_or(0, |e| e.requests));
            let total = tally.total(|(c, _)| *c == caller);
            (caller, (total, by_class))
        })
        .collect();
    let mut last = Value::Null;
    let found = poll::until_async("usage equals the calls made", TIMEOUT, async || {
        last = usage(h, token, "groupBy=caller").await;
        let got: BTreeMap<String, (Expected, [i64; 3])> = last["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                let class = |c: &str| row[format!("requests{c}xx")].as_i64().unwrap();
                (row["caller"].as_str().unwrap().to_owned(), (counts(row), [class("2"), class("4"), class("5")]))
            })
            .collect();
        Ok((got == want).then_some(()))
    })
    .await;
    assert!(found.is_ok(), "usage never matched.\nwant: {want:?}\nlast answer: {last}");
}

async fn scalar(url: &str, sql: &str) -> i64 {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&pool).await.unwrap();
    pool.close().await;
    n
}

/// An ember-api replica on the shared database, flushing usage every 200 ms
/// (or never on its own, to show that only its graceful stop flushes).
async fn replica(runtime: std::net::SocketAddr, db: &str, flush_every: Option<Duration>) -> Harness {
    let h = Harness::start_with_platform(&format!("http://{runtime}"), db).await;
    if let (Some(platform), Some(interval)) = (&h.tenancy.platform, flush_every) {
        platform.usage.spawn_flusher(interval);
    }
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_equals_the_calls_made_across_a_restart_and_two_replicas() {
    let postgres = tokio::task::spawn_blocking(Postgres::start).await.unwrap().unwrap();
    let db = postgres.url();
    let (runtime, stop_runtime) = serve_minilm().await;
    let texts = sentences();
    let mut tally = Tally::default();

    // First replica: it flushes only when it stops.
    let first = replica(runtime, &db, None).await;
    first
        .tenant(
            TENANT,
            json!({"owners": [{"kind": "User", "name": "alice"}], "members": [{"kind": "User", "name": "bob", "role": "edit"}]}),
        )
        .await;
    first.tenant(OTHER_TENANT, json!({"owners": [{"kind": "User", "name": "mallory"}]})).await;
    let (status, body) = first
        .call("PUT", "/v1/tenants/acme-usage/deployments/minilm", Some(&first.token("alice", &[])), Some(&spec()))
        .await;
    assert_eq!(status, 201, "{body}");
    first.until_status("/v1/tenants/acme-usage/deployments/minilm", &first.token("alice", &[]), 200).await;
    let (status, issued) = first
        .call(
            "POST",
            "/v1/tenants/acme-usage/api-keys",
            Some(&first.token("alice", &[])),
            Some(r#"{"name": "app", "role": "view"}"#),
        )
        .await;
    assert_eq!(status, 201, "{issued}");
    let key = bearer(issued["key"].as_str().unwrap());
    let key_caller = format!("apikey:{}", issued["id"].as_str().unwrap());

    let alice = Caller { h: &first, authorization: first.token("alice", &[]), name: "alice".into(), tenant: TENANT };
    let app = Caller { h: &first, authorization: key.clone(), name: key_caller.clone(), tenant: TENANT };
    alice.embeddings(&mut tally, &texts[..2]).await;
    alice.infer(&mut tally, &texts[2..]).await;
    alice.bad_request(&mut tally).await;
    app.embeddings(&mut tally, &texts[..1]).await;
    app.infer(&mut tally, &texts).await;
    // Refused by ember-api itself (no role, no credentials): billed to no one.
    let mallory = first.token("mallory", &[]);
    assert_eq!(first.call("POST", EMBEDDINGS, Some(&mallory), Some(r#"{"input": ["x"]}"#)).await.0, 404);
    assert_eq!(first.call("POST", EMBEDDINGS, None, Some(r#"{"input": ["x"]}"#)).await.0, 401);
    assert_eq!(scalar(&db, "SELECT count(*) FROM usage_hourly").await, 0, "written before the stop's flush");

    // A graceful stop drains and flushes; a new process counts on.
    first.stop().await;
    let made = tally.total(|_| true).requests;
    assert_eq!(scalar(&db, "SELECT coalesce(sum(requests), 0)::bigint FROM usage_hourly").await, made);
    let second = replica(runtime, &db, Some(Duration::from_millis(200))).await;
    let third = replica(runtime, &db, Some(Duration::from_millis(200))).await;
    let admin = second.token("alice", &[]);
    until_reported(&second, &admin, &tally).await;

    // Two replicas at once, calls spread over both, into the same rows.
    for (i, h) in [&second, &third, &second, &third].into_iter().enumerate() {
        let alice = Caller { h, authorization: h.token("alice", &[]), name: "alice".into(), tenant: TENANT };
        let app = Caller { h, authorization: key.clone(), name: key_caller.clone(), tenant: TENANT };
        alice.embeddings(&mut tally, &texts[i..i + 2]).await;
        app.infer(&mut tally, &texts[..=i]).await;
        if i % 2 == 1 {
            app.bad_request(&mut tally).await;
        }
    }
    // Another tenant's calls, for the platform-wide view.
    let mut globex = Tally::default();
    let mallory_token = third.token("mallory", &[]);
    let path = format!("/v1/tenants/{OTHER_TENANT}/deployments/minilm");
    let (status, body) = third.call("PUT", &path, Some(&mallory_token), Some(&spec())).await;
    assert_eq!(status, 201, "{body}");
    third.until_status(&path, &mallory_token, 200).await;
    let mallory = Caller { h: &third, authorization: mallory_token, name: "mallory".into(), tenant: OTHER_TENANT };
    mallory.embeddings(&mut globex, &texts[1..3]).await;
    mallory.bad_request(&mut globex).await;

    // With the runtime gone: 5xx answers, billed as such. Until the runtime
    // has stopped listening a call may still succeed; each is tallied as
    // answered.
    stop_runtime.send(()).unwrap();
    for h in [&second, &third] {
        let token = h.token("alice", &[]);
        let body = json!({"input": [texts[0].text]}).to_string();
        poll::until_async("the runtime's absence answers 5xx", TIMEOUT, async || {
            let status = h.call("POST", EMBEDDINGS, Some(&token), Some(&body)).await.0;
            tally.add("alice", status, &texts[..1]);
            Ok((status / 100 == 5).then_some(()))
        })
        .await
        .unwrap();
    }
    until_reported(&third, &third.token("alice", &[]), &tally).await;
    until_reported(&second, &admin, &tally).await;
    let hours = scalar(&db, "SELECT count(DISTINCT hour) FROM usage_hourly").await;
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM usage_hourly WHERE caller = 'alice' AND status_class = 2").await,
        hours,
        "one row per caller, class and hour, whichever replica counted"
    );
    assert!(scalar(&db, "SELECT count(DISTINCT replica) FROM usage_batches").await >= 3);

    // Totals and groupings agree with each other.
    let total = tally.total(|_| true);
    let one = usage(&second, &admin, "groupBy=").await;
    assert_eq!(counts(&one["rows"][0]), total);
    let by_day = usage(&second, &admin, "groupBy=day,deployment").await;
    let rows = by_day["rows"].as_array().unwrap();
    assert!(rows.iter().all(|r| r["deployment"] == "minilm" && r["day"].as_str().unwrap().len() == 10), "{by_day}");
    assert_eq!(rows.iter().map(|r| r["requests"].as_i64().unwrap()).sum::<i64>(), total.requests);
    let hourly = usage(&second, &admin, "groupBy=hour").await;
    assert!(hourly["rows"][0]["hour"].as_str().unwrap().ends_with(":00:00Z"), "{hourly}");

    check_csv(&second, &admin, total).await;
    check_who_may_read(&second, &key).await;
    check_platform_view(&third, &[(TENANT, &tally), (OTHER_TENANT, &globex)]).await;
}

/// `GET /v1/usage`: every tenant, by tenant, for platform admins only.
async fn check_platform_view(h: &Harness, tenants: &[(&str, &Tally)]) {
    let admin = h.token("pat", &[PLATFORM_ADMINS]);
    let mut last = Value::Null;
    let matched = poll::until_async("the platform view shows every tenant's usage", TIMEOUT, async || {
        let (status, body) = h.call("GET", "/v1/usage?groupBy=tenant", Some(&admin), None).await;
        assert_eq!(status, 200, "{body}");
        last = body;
        let rows = last["rows"].as_array().unwrap();
        let all = tenants
            .iter()
            .all(|(tenant, tally)| rows.iter().any(|r| r["tenant"] == *tenant && counts(r) == tally.total(|_| true)));
        Ok((all && rows.len() == tenants.len()).then_some(()))
    })
    .await;
    assert!(matched.is_ok(), "last answer: {last}");
    // A platform admin also reads one tenant's usage; its owner cannot read all.
    let (status, _) = h.call("GET", &format!("/v1/tenants/{TENANT}/usage"), Some(&admin), None).await;
    assert_eq!(status, 200);
    let (status, body) = h.call("GET", "/v1/usage", Some(&h.token("alice", &[])), None).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = h.call("GET", "/v1/usage?groupBy=day,tenant,caller", Some(&admin), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["rows"].as_array().unwrap().iter().any(|r| r["caller"] == "mallory" && r["tenant"] == OTHER_TENANT));
}

/// The tenant's usage by deployment, asked for in `media_type`.
async fn usage_by_deployment_as(h: &Harness, authorization: &str, media_type: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}/v1/tenants/{TENANT}/usage?groupBy=deployment", h.base))
        .header("Authorization", authorization)
        .header("Accept", media_type)
        .send()
        .await
        .unwrap()
}

/// The same numbers as CSV (`Accept: text/csv`) and JSON lines.
async fn check_csv(h: &Harness, admin: &str, total: Expected) {
    let response = usage_by_deployment_as(h, admin, "text/csv").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let csv = response.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "deployment,requests,requests2xx,requests4xx,requests5xx,items,tokens,computeMicros");
    let fields: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(fields[0], "minilm");
    assert_eq!(fields[1].parse::<i64>().unwrap(), total.requests, "{csv}");
    assert_eq!(fields[5].parse::<i64>().unwrap(), total.items, "{csv}");
    assert_eq!(fields[6].parse::<i64>().unwrap(), total.tokens, "{csv}");
    assert!(fields[7].parse::<i64>().unwrap() > 0, "compute time is recorded: {csv}");
    assert_eq!(lines.len(), 2, "{csv}");

    // And as JSON lines: one row per line.
    let response = usage_by_deployment_as(h, admin, "application/x-ndjson").await;
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let text = response.text().await.unwrap();
    let rows: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 1, "{text}");
    assert_eq!((rows[0]["deployment"].as_str(), rows[0]["requests"].as_i64()), (Some("minilm"), Some(total.requests)));
}

/// Owners only: another tenant's owner sees nothing (404), an editor and an
/// API key are refused (403), bad parameters are 400/422 naming themselves.
async fn check_who_may_read(h: &Harness, key: &str) {
    let path = format!("/v1/tenants/{TENANT}/usage");
    let (status, _) = h.call("GET", &path, Some(&h.token("mallory", &[])), None).await;
    assert_eq!(status, 404);
    let (status, _) =
        h.call("GET", &format!("/v1/tenants/{OTHER_TENANT}/usage"), Some(&h.token("mallory", &[])), None).await;
    assert_eq!(status, 200, "mallory reads her own tenant's usage");
    let (status, body) = h.call("GET", &path, Some(&h.token("bob", &[])), None).await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = h.call("GET", &path, Some(key), None).await;
    assert_eq!(status, 403);
    let (status, _) = h.call("GET", &path, None, None).await;
    assert_eq!(status, 401);
    let alice = h.token("alice", &[]);
    for (query, want, named) in [
        ("from=last-week", 400, "'from'"),
        ("groupBy=colour", 400, "'groupBy'"),
        ("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", 422, "'from'"),
    ] {
        let (status, body) = h.call("GET", &format!("{path}?{query}"), Some(&alice), None).await;
        assert_eq!(status, want, "{query}: {body}");
        assert!(body["detail"].as_str().unwrap().contains(named), "{query}: {body}");
    }
}
