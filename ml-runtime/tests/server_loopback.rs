//! A real server on a loopback port under concurrent load: the batcher forms
//! batches larger than one and never larger than `--max-batch-size`, a full
//! queue sheds load with 429 and the server recovers, and shutdown drains
//! in-flight requests.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{TestServer, metric, minilm_args, poll_until};

fn infer_body(texts: &[&str]) -> Value {
    json!({"inputs": [{"name": "text", "shape": [texts.len()], "datatype": "BYTES", "data": texts}]})
}

async fn metrics_text(client: &reqwest::Client, server: &TestServer) -> String {
    client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_batched_within_the_limit() {
    let server =
        TestServer::start(minilm_args(&["--max-batch-size=4", "--max-delay-ms=20", "--queue-capacity=64"])).await;
    let client = reqwest::Client::new();
    let url = server.url("/v2/models/minilm/infer");
    let mut clients = Vec::new();
    for c in 0..16 {
        let (client, url) = (client.clone(), url.clone());
        clients.push(tokio::spawn(async move {
            for r in 0..3 {
                let text = format!("client {c} asks question number {r}");
                let response = client.post(&url).json(&infer_body(&[&text])).send().await.unwrap();
                assert_eq!(response.status(), 200);
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["outputs"][0]["shape"], json!([1, 384]));
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    // One request bigger than the batch limit is split, answered in order.
    let reference = support::reference_sentences();
    let texts: Vec<&str> = reference.iter().map(|r| r.text.as_str()).collect();
    let response = client.post(&url).json(&infer_body(&texts)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let data: Vec<f32> =
        body["outputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    for (i, r) in reference.iter().enumerate() {
        assert!(support::cosine(&data[i * 384..(i + 1) * 384], &r.embedding) > 0.999, "row {i} out of order");
    }

    let text = metrics_text(&client, &server).await;
    let batches = metric(&text, "ember_batch_size_count");
    let single = metric(&text, "ember_batch_size_bucket{le=\"1.0\"}");
    let within_limit = metric(&text, "ember_batch_size_bucket{le=\"4.0\"}");
    assert!(single < batches, "no batch larger than 1 in {batches} batches:\n{text}");
    assert_eq!(within_limit, batches, "a batch exceeded max-batch-size 4:\n{text}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_sheds_load_and_recovers() {
    let server =
        TestServer::start(minilm_args(&["--max-batch-size=1", "--max-delay-ms=0", "--queue-capacity=2"])).await;
    let client = reqwest::Client::new();
    let url = server.url("/v2/models/minilm/infer");
    let long_text = "a fairly long sentence that keeps the model busy for a while ".repeat(20);
    let mut requests = Vec::new();
    for _ in 0..40 {
        let (client, url, body) = (client.clone(), url.clone(), infer_body(&[&long_text]));
        requests.push(tokio::spawn(async move {
            let response = client.post(&url).json(&body).send().await.unwrap();
            let status = response.status().as_u16();
            let retry_after = response.headers().get("retry-after").is_some();
            let body: Value = response.json().await.unwrap();
            (status, retry_after, body)
        }));
    }
    let mut ok = 0;
    let mut shed = 0;
    for r in requests {
        let (status, retry_after, body) = r.await.unwrap();
        match status {
            200 => ok += 1,
            429 => {
                shed += 1;
                assert!(retry_after, "429 without Retry-After");
                assert!(body["error"].as_str().unwrap().contains("queue"), "{body}");
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert!(ok > 0 && shed > 0, "expected both served and shed requests, got {ok} ok / {shed} shed");
    let text = metrics_text(&client, &server).await;
    assert!(metric(&text, "ember_load_shed_total") >= f64::from(shed));
    // Recovered: the queue drained and new work is accepted again.
    let response = client.post(&url).json(&infer_body(&["after the storm"])).send().await.unwrap();
    assert_eq!(response.status(), 200);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests() {
    let server = TestServer::start(minilm_args(&["--max-batch-size=64"])).await;
    let client = reqwest::Client::new();
    let long_text = "graceful shutdown lets this request finish before the process exits ".repeat(15);
    let texts = vec![long_text.as_str(); 48];
    let body = infer_body(&texts);
    let in_flight = {
        let (client, url) = (client.clone(), server.url("/v2/models/minilm/infer"));
        tokio::spawn(async move { client.post(&url).json(&body).send().await.unwrap().status() })
    };
    // Wait until the server is handling it (the scrape itself counts as one).
    poll_until(Duration::from_secs(30), || {
        let (client, url) = (client.clone(), server.url("/metrics"));
        async move {
            let text = client.get(&url).send().await.unwrap().text().await.unwrap();
            metric(&text, "ember_http_requests_in_flight") >= 2.0
        }
    })
    .await;
    let address = server.address;
    server.stop().await.unwrap();
    assert_eq!(in_flight.await.unwrap(), 200, "in-flight request was cut off");
    assert!(tokio::net::TcpStream::connect(address).await.is_err(), "still accepting after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_client_is_not_held_for_the_batching_delay() {
    // A delay far longer than the bound below: a batcher that waited it for
    // company on every lone request would fail the test.
    let server = TestServer::start(minilm_args(&["--max-delay-ms=60000"])).await;
    let client = reqwest::Client::new();
    let url = server.url("/v2/models/minilm/infer");
    let started = std::time::Instant::now();
    for r in 0..3 {
        let text = format!("a lone client asks question number {r}");
        let response = client.post(&url).json(&infer_body(&[&text])).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    // Larger than --max-batch-size (32): split into a full chunk and a
    // partial one, which is no reason to wait for company either.
    for r in 0..3 {
        let texts: Vec<String> = (0..40).map(|i| format!("a lone client's text {i} of request {r}")).collect();
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let response = client.post(&url).json(&infer_body(&texts)).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    assert!(started.elapsed() < Duration::from_secs(30), "lone requests waited for the batching delay");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_answered_together_are_not_held_for_the_batching_delay() {
    // Four clients that each send their next request as soon as the last is
    // answered. A batcher that waited out the delay for company on every
    // batch would take at least ROUNDS - 1 delays (9 s); one that stops
    // waiting once the group is back waits out the delay only where the
    // clients drift out of step (at the end, at most once per group).
    const ROUNDS: usize = 10;
    let delay = Duration::from_secs(1);
    let server = TestServer::start(minilm_args(&[&format!("--max-delay-ms={}", delay.as_millis())])).await;
    let client = reqwest::Client::new();
    let url = server.url("/v2/models/minilm/infer");
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(4));
    let started = std::time::Instant::now();
    let mut clients = Vec::new();
    for c in 0..4 {
        let (client, url, start) = (client.clone(), url.clone(), start.clone());
        clients.push(tokio::spawn(async move {
            start.wait().await;
            for r in 0..ROUNDS {
                let text = format!("client {c} sends request number {r}");
                let response = client.post(&url).json(&infer_body(&[&text])).send().await.unwrap();
                assert_eq!(response.status(), 200);
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < 6 * delay,
        "{ROUNDS} rounds of 4 clients took {elapsed:?}: batches waited for company already in"
    );
    let text = metrics_text(&client, &server).await;
    let batches = metric(&text, "ember_batch_size_count");
    let single = metric(&text, "ember_batch_size_bucket{le=\"1.0\"}");
    assert!(single < batches, "the clients were never batched together:\n{text}");
    server.stop().await.unwrap();
}
