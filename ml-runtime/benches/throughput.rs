//! Benchmark (not a test): MiniLM sentences/s and p50/p99 latency in-process
//! at batch 1, 8 and 32, over HTTP with 1, 4 and 16 concurrent clients, and
//! the same sentences through sentence-transformers on PyTorch CPU in the
//! same run, printed as a Markdown table with the speed ratio.
//!
//! cargo bench -p ember-runtime --bench throughput
//! EMBER_BENCH_PYTHON=/path/to/venv/bin/python picks the Python that has
//! sentence-transformers (default `python3`; the rows are skipped without it).
//! EMBER_BENCH_THREADS sets the compute threads of both (default: CPU quota).
//! EMBER_BENCH_ROUNDS: in-process ember and PyTorch alternate this many
//! rounds (default 2); each row reports its best round.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::tensor::Device;
use ember_runtime::model::{Architecture, Item, Model, ModelFiles, Task};
use serde_json::{Value, json};
use support::{TestServer, minilm_args, minilm_dir};

const BATCHES: [usize; 3] = [1, 8, 32];
const CLIENTS: [usize; 3] = [1, 4, 16];
/// Each measurement runs at least this long (and at least 3 rounds).
const MIN_TIME: Duration = Duration::from_secs(3);

/// 64 short, varied English sentences (8–14 words), fixed for every run.
fn sentences() -> Vec<String> {
    let subjects = [
        "The operator",
        "A tenant",
        "Our model server",
        "The scheduler",
        "Every replica",
        "The cluster",
        "A data scientist",
        "The gateway",
    ];
    let verbs = ["deploys", "watches", "scales", "embeds", "batches", "routes", "restarts", "measures"];
    let objects = [
        "new sentence embeddings for the search index",
        "requests from many concurrent clients",
        "the pods on a busy node",
        "short questions about billing",
        "a model loaded from safetensors",
        "traffic during the evening peak",
        "latency percentiles for the dashboard",
        "documents in three languages",
    ];
    (0..64)
        .map(|i| format!("{} {} {} today.", subjects[i % 8], verbs[(i / 8) % 8], objects[(i * 3 + i / 8) % 8]))
        .collect()
}

#[derive(Debug)]
struct Row {
    label: String,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Row by row, the faster of two measurements of the same runs.
fn keep_best(best: Vec<Row>, round: Vec<Row>) -> Vec<Row> {
    if best.is_empty() {
        return round;
    }
    best.into_iter().zip(round).map(|(a, b)| if b.per_second > a.per_second { b } else { a }).collect()
}

fn percentile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * q).round() as usize]
}

fn in_process(model: &Model, sentences: &[String], batch: usize) -> Row {
    let chunks: Vec<Vec<Item>> =
        sentences.chunks_exact(batch).map(|c| c.iter().cloned().map(Item::Text).collect()).collect();
    model.infer(chunks[0].clone()).unwrap();
    let mut latencies = Vec::new();
    let mut done = 0;
    let started = Instant::now();
    let mut rounds = 0;
    while rounds < 3 || started.elapsed() < MIN_TIME {
        for chunk in &chunks {
            let t0 = Instant::now();
            model.infer(chunk.clone()).unwrap();
            latencies.push(t0.elapsed().as_secs_f64() * 1000.0);
            done += chunk.len();
        }
        rounds += 1;
    }
    let per_second = done as f64 / started.elapsed().as_secs_f64();
    Row {
        label: format!("ember in-process, batch {batch}"),
        per_second,
        p50_ms: percentile(&mut latencies, 0.5),
        p99_ms: percentile(&mut latencies, 0.99),
    }
}

async fn over_http(url: &str, sentences: Arc<Vec<String>>, clients: usize) -> Row {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, url, sentences) = (client.clone(), url.to_owned(), sentences.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = c;
            while started.elapsed() < MIN_TIME || latencies.len() < 10 {
                let body = json!({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [sentences[i % sentences.len()]]}]});
                let t0 = Instant::now();
                let response = client.post(&url).json(&body).send().await.unwrap();
                assert_eq!(response.status(), 200);
                response.bytes().await.unwrap();
                latencies.push(t0.elapsed().as_secs_f64() * 1000.0);
                i += clients;
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let per_second = latencies.len() as f64 / started.elapsed().as_secs_f64();
    Row {
        label: format!("ember HTTP v2, {clients} client(s), 1 sentence/request"),
        per_second,
        p50_ms: percentile(&mut latencies, 0.5),
        p99_ms: percentile(&mut latencies, 0.99),
    }
}

fn pytorch_reference(sentences: &[String], threads: usize) -> Option<(String, Vec<Row>)> {
    let python = std::env::var("EMBER_BENCH_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(sentences).unwrap()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/bench_reference.py");
    let batches = BATCHES.map(|b| b.to_string()).join(",");
    let output = std::process::Command::new(&python)
        .env("EMBER_BENCH_THREADS", threads.to_string())
        .arg(script)
        .arg(minilm_dir())
        .arg(file.path())
        .arg(batches)
        .output()
        .ok()?;
    if !output.status.success() {
        eprintln!("PyTorch reference skipped ({python}): {}", String::from_utf8_lossy(&output.stderr));
        return None;
    }
    let report: Value = serde_json::from_slice(&output.stdout).ok()?;
    let version = format!("torch {} ({} threads)", report["torch"].as_str()?, report["threads"]);
    let rows = report["results"]
        .as_array()?
        .iter()
        .map(|r| Row {
            label: format!("sentence-transformers, batch {}", r["batch"]),
            per_second: r["sentences_per_s"].as_f64().unwrap_or(0.0),
            p50_ms: r["p50_ms"].as_f64().unwrap_or(0.0),
            p99_ms: r["p99_ms"].as_f64().unwrap_or(0.0),
        })
        .collect();
    Some((version, rows))
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not, and
    // a multi-minute benchmark has no place in a test run.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("throughput: benchmark only runs under `cargo bench`");
        return;
    }
    // EMBER_BENCH_THREADS pins both sides (ember and PyTorch) to the same count.
    let threads = std::env::var("EMBER_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(ember_runtime::threads::cpu_budget);
    ember_runtime::threads::configure_compute_pool(threads);
    let sentences = sentences();
    let dir = minilm_dir();
    let files = ModelFiles {
        weights: &dir.join("model.safetensors"),
        config: &dir.join("config.json"),
        tokenizer: Some(&dir.join("tokenizer.json")),
    };
    let model = Model::load(Architecture::Bert, Task::Embedding, &files, 256, &Device::flex()).unwrap();
    // Ember and PyTorch take turns, round after round, and each row keeps
    // its best round: this machine's neighbours come and go, and a burst
    // during one side's only turn would decide the ratio.
    let rounds: usize = std::env::var("EMBER_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(2).max(1);
    let mut ember: Vec<Row> = Vec::new();
    let mut reference: Option<(String, Vec<Row>)> = None;
    for _ in 0..rounds {
        let round: Vec<Row> = BATCHES.iter().map(|&b| in_process(&model, &sentences, b)).collect();
        ember = keep_best(std::mem::take(&mut ember), round);
        if let Some((version, rows)) = pytorch_reference(&sentences, threads) {
            let best = keep_best(reference.take().map(|(_, r)| r).unwrap_or_default(), rows);
            reference = Some((version, best));
        }
    }
    drop(model);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let http: Vec<Row> = runtime.block_on(async {
        let server =
            TestServer::start(minilm_args(&["--max-batch-size=32", "--max-delay-ms=2", "--queue-capacity=256"])).await;
        let url = server.url("/v2/models/minilm/infer");
        let shared = Arc::new(sentences.clone());
        let mut rows = Vec::new();
        for clients in CLIENTS {
            rows.push(over_http(&url, shared.clone(), clients).await);
        }
        server.stop().await.unwrap();
        rows
    });

    println!(
        "\nall-MiniLM-L6-v2, {} short sentences, {threads} compute threads, best of {rounds} alternating rounds\n",
        sentences.len()
    );
    println!("| run | sentences/s | p50 ms | p99 ms | ember / PyTorch |");
    println!("|---|---:|---:|---:|---:|");
    for (i, row) in ember.iter().enumerate() {
        let ratio = reference
            .as_ref()
            .map_or_else(|| "n/a".to_owned(), |(_, rows)| format!("{:.2}×", row.per_second / rows[i].per_second));
        println!("| {} | {:.0} | {:.1} | {:.1} | {ratio} |", row.label, row.per_second, row.p50_ms, row.p99_ms);
    }
    for row in &http {
        println!("| {} | {:.0} | {:.1} | {:.1} | |", row.label, row.per_second, row.p50_ms, row.p99_ms);
    }
    match &reference {
        Some((version, rows)) => {
            for row in rows {
                println!(
                    "| {} [{version}] | {:.0} | {:.1} | {:.1} | 1.00× |",
                    row.label, row.per_second, row.p50_ms, row.p99_ms
                );
            }
        }
        None => println!("| sentence-transformers | skipped: set EMBER_BENCH_PYTHON | | | |"),
    }
}
