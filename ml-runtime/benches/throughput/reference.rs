//! The reference stacks, timed by `scripts/bench_reference.py` in the same
//! run: ONNX Runtime and sentence-transformers on PyTorch.

use std::path::Path;

use serde_json::Value;

use crate::{BATCHES, Row};

/// A reference stack timed by `scripts/bench_reference.py`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reference {
    OnnxRuntime,
    PyTorch,
}

impl Reference {
    pub const ALL: [Reference; 2] = [Reference::OnnxRuntime, Reference::PyTorch];

    pub fn backend(self) -> &'static str {
        match self {
            Reference::OnnxRuntime => "onnxruntime",
            Reference::PyTorch => "torch",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Reference::OnnxRuntime => "ONNX Runtime",
            Reference::PyTorch => "sentence-transformers",
        }
    }
}

/// A reference's best rows so far and its version string.
pub struct Measured {
    pub version: String,
    pub rows: Vec<Row>,
}

pub fn run_reference(reference: Reference, model_dir: &Path, texts: &[String], threads: usize) -> Option<Measured> {
    let python = std::env::var("EMBER_BENCH_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(texts).unwrap()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/bench_reference.py");
    let batches = BATCHES.map(|b| b.to_string()).join(",");
    let output = std::process::Command::new(&python)
        .env("EMBER_BENCH_THREADS", threads.to_string())
        .arg(script)
        .arg(reference.backend())
        .arg(model_dir)
        .arg(file.path())
        .arg(batches)
        .output()
        .ok()?;
    if !output.status.success() {
        eprintln!("{} reference skipped ({python}): {}", reference.label(), String::from_utf8_lossy(&output.stderr));
        return None;
    }
    let report: Value = serde_json::from_slice(&output.stdout).ok()?;
    let version = format!("{}, {} threads", report["version"].as_str()?, report["threads"]);
    let rows = report["results"]
        .as_array()?
        .iter()
        .map(|r| Row {
            label: format!("{}, batch {}", reference.label(), r["batch"]),
            per_second: r["sentences_per_s"].as_f64().unwrap_or(0.0),
            p50_ms: r["p50_ms"].as_f64().unwrap_or(0.0),
            p99_ms: r["p99_ms"].as_f64().unwrap_or(0.0),
        })
        .collect();
    Some(Measured { version, rows })
}
