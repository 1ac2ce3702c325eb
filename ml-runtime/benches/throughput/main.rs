//! Benchmark (not a test): MiniLM sentences/s and p50/p99 latency in-process
//! at batch 1, 8 and 32 on two text sets (64 short sentences; 32 long
//! paragraphs of 128–256 tokens), over HTTP with 1, 4 and 16 concurrent
//! clients, and the same texts through two reference stacks in the same run
//! — ONNX Runtime and sentence-transformers on PyTorch, both CPU, fp32 —
//! printed as Markdown tables with ember's speed ratio to each.
//!
//! cargo bench -p ember-runtime --bench throughput
//! EMBER_BENCH_PYTHON=/path/to/venv/bin/python picks the Python that has
//! sentence-transformers and onnxruntime (default `python3`; a reference
//! whose packages are missing is skipped, with the reason printed).
//! EMBER_BENCH_THREADS sets the compute threads of all three (default: CPU
//! quota). EMBER_BENCH_ROUNDS: in-process ember and the references alternate
//! this many rounds (default 2); each row reports its best round.
//! EMBER_BENCH_EMBER_ONLY=1 measures ember in-process only (no references,
//! no HTTP): a quick loop to run under `perf record`.
//! EMBER_BENCH_HTTP_ONLY=1 measures only the HTTP rows, each with its own
//! in-process side (no references, no long set, no in-process table): a
//! quicker loop for the HTTP path. EMBER_BENCH_SERVER=/path/to/ember-runtime
//! serves the HTTP rows from another build (A/B runs of a server change).
//! EMBER_BENCH_SETS=long (or `short`; default both) measures only those
//! sets, and EMBER_BENCH_REFERENCES=onnxruntime (or `torch`; default both)
//! only those references: a quicker A/B loop for one row. The HTTP rows need
//! the short set.
//!
//! HTTP (`http.rs`): the `ember-runtime` binary on a loopback port, driven
//! by minimal clients that each send one short sentence per request, back to
//! back, as v2 JSON (`text` input), v2 binary (the binary tensor data
//! extension, in and out) or `/v1/embeddings`, with 1, 4 and 16 clients.
//! Each row is measured in short slices alternating with the in-process
//! batch it is compared with, in every round.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/support/mod.rs"]
mod support;

mod http;
mod reference;

use std::path::Path;
use std::time::{Duration, Instant};

use burn::tensor::Device;
use ember_runtime::model::{Architecture, Item, Model, ModelFiles, Task};
use ember_runtime::tokenize::TextTokenizer;
use http::HttpBench;
use reference::{Measured, Reference, run_reference};
use support::minilm_dir;

const BATCHES: [usize; 3] = [1, 8, 32];
/// Each measurement runs at least this long (and at least 3 rounds).
const MIN_TIME: Duration = Duration::from_secs(3);
/// Where sentence-transformers truncates all-MiniLM-L6-v2; ember serves the same.
const MAX_TOKENS: usize = 256;

/// 64 short, varied English sentences (8–14 words), fixed for every run.
fn short_sentences() -> Vec<String> {
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

/// 32 paragraphs of 128–256 tokens (special tokens included), spread evenly
/// over that range: sentences from a fixed generator appended until the
/// paragraph reaches its target length under the model's own tokenizer.
/// Deterministic, so every run (and every reference) sees the same texts.
fn long_paragraphs(tokenizer: &TextTokenizer) -> Vec<String> {
    let openings =
        ["In the morning", "After the upgrade", "During the audit", "When traffic peaked", "Later that week"];
    let subjects = ["the platform team", "a new tenant", "the on-call engineer", "our batch scheduler", "the gateway"];
    let verbs = ["reviewed", "migrated", "rebuilt", "profiled", "documented", "throttled", "replayed"];
    let objects = [
        "the embedding service behind the search page",
        "every quota that billing had flagged as unusual",
        "three months of request logs from the eu-west region",
        "the dashboards that track p99 latency per model",
        "a slow database query in the invoicing path",
        "the retry policy of the nightly export jobs",
    ];
    let endings = ["without downtime.", "before lunch.", "and wrote a short report.", "with help from support."];
    // A small linear congruential generator: the same sequence on every run.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut pick = move |n: usize| {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((state >> 33) % n as u64) as usize
    };
    let count = 32;
    (0..count)
        .map(|i| {
            let target = 128 + i * (MAX_TOKENS - 20 - 128) / (count - 1);
            let mut text = String::new();
            while tokenizer.encode(&[&text]).unwrap()[0].len() < target {
                let sentence = format!(
                    "{}, {} {} {} {} ",
                    openings[pick(openings.len())],
                    subjects[pick(subjects.len())],
                    verbs[pick(verbs.len())],
                    objects[pick(objects.len())],
                    endings[pick(endings.len())]
                );
                text.push_str(&sentence);
            }
            text.trim_end().to_owned()
        })
        .collect()
}

/// One set of texts every stack encodes.
struct TextSet {
    name: &'static str,
    texts: Vec<String>,
    /// Shortest and longest text in tokens, special tokens included.
    tokens: (usize, usize),
}

impl TextSet {
    fn new(name: &'static str, texts: Vec<String>, tokenizer: &TextTokenizer) -> Self {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let lengths: Vec<usize> = tokenizer.encode(&refs).unwrap().iter().map(Vec::len).collect();
        let tokens = (*lengths.iter().min().unwrap(), *lengths.iter().max().unwrap());
        Self { name, texts, tokens }
    }
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

fn in_process(model: &Model, texts: &[String], batch: usize) -> Row {
    let chunks: Vec<Vec<Item>> =
        texts.chunks_exact(batch).map(|c| c.iter().cloned().map(Item::Text).collect()).collect();
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

/// In-process figures for one text set: ember and each reference, the
/// best round so far.
struct SetResult {
    ember: Vec<Row>,
    references: Vec<(Reference, Option<Measured>)>,
}

impl SetResult {
    fn new(references: &[Reference]) -> Self {
        Self { ember: Vec::new(), references: references.iter().map(|&r| (r, None)).collect() }
    }
}

/// One round for one set: ember in-process, then each reference; every row
/// keeps its best round so far.
fn measure_round(model: &Model, set: &TextSet, model_dir: &Path, threads: usize, result: &mut SetResult) {
    let round: Vec<Row> = BATCHES.iter().map(|&b| in_process(model, &set.texts, b)).collect();
    result.ember = keep_best(std::mem::take(&mut result.ember), round);
    for (reference, best) in &mut result.references {
        if let Some(measured) = run_reference(*reference, model_dir, &set.texts, threads) {
            let rows = keep_best(best.take().map(|m| m.rows).unwrap_or_default(), measured.rows);
            *best = Some(Measured { version: measured.version, rows });
        }
    }
}

fn ratio(ember: &Row, reference: Option<&Measured>, i: usize) -> String {
    reference.map_or_else(|| "n/a".to_owned(), |m| format!("{:.2}×", ember.per_second / m.rows[i].per_second))
}

fn print_set(set: &TextSet, result: &SetResult, threads: usize, rounds: usize) {
    println!(
        "\nall-MiniLM-L6-v2, {} set: {} texts of {}–{} tokens, {threads} compute threads, best of {rounds} \
         alternating rounds\n",
        set.name,
        set.texts.len(),
        set.tokens.0,
        set.tokens.1
    );
    println!("| run | sentences/s | p50 ms | p99 ms | ember / ONNX Runtime | ember / PyTorch |");
    println!("|---|---:|---:|---:|---:|---:|");
    let find = |wanted: Reference| result.references.iter().find(|(r, _)| *r == wanted).and_then(|(_, m)| m.as_ref());
    let (onnx, torch) = (find(Reference::OnnxRuntime), find(Reference::PyTorch));
    for (i, row) in result.ember.iter().enumerate() {
        println!(
            "| {} | {:.0} | {:.1} | {:.1} | **{}** | {} |",
            row.label,
            row.per_second,
            row.p50_ms,
            row.p99_ms,
            ratio(row, onnx, i),
            ratio(row, torch, i)
        );
    }
    for (reference, measured) in &result.references {
        match measured {
            Some(m) => {
                for row in &m.rows {
                    println!(
                        "| {} [{}] | {:.0} | {:.1} | {:.1} | | |",
                        row.label, m.version, row.per_second, row.p50_ms, row.p99_ms
                    );
                }
            }
            None => println!("| {} | skipped: see stderr, set EMBER_BENCH_PYTHON | | | | |", reference.label()),
        }
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not, and
    // a multi-minute benchmark has no place in a test run.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("throughput: benchmark only runs under `cargo bench`");
        return;
    }
    // EMBER_BENCH_THREADS pins every stack to the same count.
    let threads = std::env::var("EMBER_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(ember_runtime::threads::cpu_budget);
    ember_runtime::threads::configure_compute_pool(threads);
    let dir = minilm_dir();
    let files = ModelFiles {
        weights: &dir.join("model.safetensors"),
        config: &dir.join("config.json"),
        tokenizer: Some(&dir.join("tokenizer.json")),
    };
    let model = Model::load(Architecture::Bert, Task::Embedding, &files, MAX_TOKENS, &Device::flex()).unwrap();
    let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"), MAX_TOKENS).unwrap();
    let flag = |name: &str| std::env::var(name).is_ok_and(|v| v == "1");
    let (ember_only, http_only) = (flag("EMBER_BENCH_EMBER_ONLY"), flag("EMBER_BENCH_HTTP_ONLY"));
    let listed = |name: &str, item: &str| std::env::var(name).map_or(true, |v| v.split(',').any(|i| i.trim() == item));
    let mut sets = Vec::new();
    if listed("EMBER_BENCH_SETS", "short") {
        sets.push(TextSet::new("short", short_sentences(), &tokenizer));
    }
    if !http_only && listed("EMBER_BENCH_SETS", "long") {
        sets.push(TextSet::new("long", long_paragraphs(&tokenizer), &tokenizer));
    }
    assert!(!sets.is_empty(), "EMBER_BENCH_SETS names no set (short, long)");
    let rounds: usize = std::env::var("EMBER_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(2).max(1);
    let references: Vec<Reference> = if ember_only || http_only {
        Vec::new()
    } else {
        Reference::ALL.into_iter().filter(|r| listed("EMBER_BENCH_REFERENCES", r.backend())).collect()
    };
    let references = references.as_slice();
    // HTTP rows send the short set's sentences.
    let with_http = !ember_only && sets[0].name == "short";

    // The server runs for the whole bench (idle while the others measure),
    // so its rows can alternate with in-process ember and the references.
    let mut http = with_http.then(|| HttpBench::start(threads));
    let mut results: Vec<SetResult> = sets.iter().map(|_| SetResult::new(references)).collect();
    for _ in 0..rounds {
        // HTTP rows carry their own in-process side; the table is skipped.
        if !http_only {
            for (set, result) in sets.iter().zip(&mut results) {
                measure_round(&model, set, &dir, threads, result);
            }
        }
        if let Some(http) = &mut http {
            http.round(&model, &sets[0].texts);
        }
    }
    if !http_only {
        for (set, result) in sets.iter().zip(&results) {
            print_set(set, result, threads, rounds);
        }
    }
    if let Some(http) = &http {
        http.print(rounds);
    }
}
