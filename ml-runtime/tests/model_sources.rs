//! Model files from paths and http(s) URLs: sha256 is enforced, downloads
//! are retried, size-limited and cached, and a corrupt or mismatched model
//! never reaches ready (the binary exits with a clear error instead).
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use ember_runtime::Error;
use ember_runtime::server::Runtime;
use ember_runtime::source::{FetchPolicy, FileSource, resolve, sha256_of};

fn policy(cache: &Path) -> FetchPolicy {
    FetchPolicy { cache_dir: cache.to_owned(), max_bytes: 1 << 20, attempts: 3, timeout: Duration::from_secs(10) }
}

/// Serves `body` at /file, answering 503 to the first `failures` requests.
async fn file_server(body: Vec<u8>, failures: usize) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = Router::new().route(
        "/file",
        get(move || {
            let (body, counter) = (body.clone(), counter.clone());
            async move {
                if counter.fetch_add(1, Ordering::SeqCst) < failures {
                    Err(StatusCode::SERVICE_UNAVAILABLE)
                } else {
                    Ok(body)
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/file", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, hits)
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test]
async fn url_download_is_retried_verified_and_cached() {
    let cache = tempfile::tempdir().unwrap();
    let body = b"{\"hello\": \"model\"}".to_vec();
    let (url, hits) = file_server(body.clone(), 1).await;
    let source = FileSource { uri: url.clone(), sha256: Some(sha256_hex(&body)) };
    let path = resolve(&source, &policy(cache.path())).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), body);
    assert_eq!(hits.load(Ordering::SeqCst), 2, "one 503, then a retry");
    // Cached by digest: no second download.
    resolve(&source, &policy(cache.path())).await.unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn url_with_wrong_or_missing_sha256_is_refused() {
    let cache = tempfile::tempdir().unwrap();
    let (url, _) = file_server(b"tampered".to_vec(), 0).await;
    let wrong = FileSource { uri: url.clone(), sha256: Some(sha256_hex(b"original")) };
    let err = resolve(&wrong, &policy(cache.path())).await.unwrap_err();
    assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err}");
    assert!(err.to_string().contains("sha256 mismatch"), "{err}");
    assert!(std::fs::read_dir(cache.path()).unwrap().next().is_none(), "bad download kept in the cache");
    let missing = FileSource { uri: url, sha256: None };
    let err = resolve(&missing, &policy(cache.path())).await.unwrap_err();
    assert!(err.to_string().contains("sha256 is mandatory"), "{err}");
}

#[tokio::test]
async fn oversized_download_is_refused() {
    let cache = tempfile::tempdir().unwrap();
    let body = vec![7u8; 4096];
    let (url, _) = file_server(body.clone(), 0).await;
    let mut small = policy(cache.path());
    small.max_bytes = 1024;
    let err = resolve(&FileSource { uri: url, sha256: Some(sha256_hex(&body)) }, &small).await.unwrap_err();
    assert!(err.to_string().contains("larger than the limit"), "{err}");
}

/// MiniLM files copied into `dir`, with the weights passed through `damage`.
fn damaged_minilm(dir: &Path, damage: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let src = support::minilm_dir();
    let mut weights = std::fs::read(src.join("model.safetensors")).unwrap();
    damage(&mut weights);
    let path = dir.join("model.safetensors");
    std::fs::write(&path, weights).unwrap();
    path
}

#[tokio::test]
async fn local_file_with_wrong_sha256_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let good = sha256_of(&support::minilm_dir().join("model.safetensors")).await.unwrap();
    // Same size, valid format, one weight byte changed.
    let weights = damaged_minilm(dir.path(), |w| {
        let last = w.len() - 1;
        w[last] ^= 0x55;
    });
    let args =
        support::minilm_args(&[&format!("--model-uri={}", weights.display()), &format!("--model-sha256={good}")]);
    let err = Runtime::start(&args).await.unwrap_err();
    assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err}");
}

/// Runs the real binary with `extra` flags: it must exit non-zero with
/// `expected` in its log, and `/readyz` must never have answered 200.
async fn binary_never_ready(extra: &[String], expected: &str) {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let dir = support::minilm_dir();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ember-runtime"))
        .args(["--architecture=bert", "--task=embedding", "--listen-address=127.0.0.1", &format!("--port={port}")])
        // Defaults through the environment (as the operator may set them);
        // flags in `extra` take precedence.
        .env("EMBER_CONFIG_URI", dir.join("config.json"))
        .env("EMBER_TOKENIZER_URI", dir.join("tokenizer.json"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if let Ok(response) = client.get(format!("http://127.0.0.1:{port}/readyz")).send().await {
            assert_ne!(response.status(), 200, "a broken model reported ready");
        }
        assert!(Instant::now() < deadline, "ember-runtime neither became ready nor exited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!status.success(), "exited successfully with a broken model");
    let mut log = String::new();
    use tokio::io::AsyncReadExt;
    child.stderr.take().unwrap().read_to_string(&mut log).await.unwrap();
    assert!(log.contains(expected), "log should mention {expected:?}:\n{log}");
}

#[tokio::test]
async fn truncated_weights_never_reach_ready() {
    let dir = tempfile::tempdir().unwrap();
    let weights = damaged_minilm(dir.path(), |w| w.truncate(w.len() / 2));
    binary_never_ready(&[format!("--model-uri={}", weights.display())], "not a valid safetensors file").await;
}

#[tokio::test]
async fn weights_that_do_not_match_the_config_never_reach_ready() {
    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(support::minilm_dir().join("config.json")).unwrap();
    let wrong = config.replace("\"intermediate_size\": 1536", "\"intermediate_size\": 3072");
    assert_ne!(config, wrong);
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, wrong).unwrap();
    let weights = support::minilm_dir().join("model.safetensors");
    binary_never_ready(
        &[format!("--model-uri={}", weights.display()), format!("--config-uri={}", config_path.display())],
        "has shape",
    )
    .await;
}

#[tokio::test]
async fn wrong_sha256_from_the_command_line_never_reaches_ready() {
    let weights = support::minilm_dir().join("model.safetensors");
    binary_never_ready(
        &[format!("--model-uri={}", weights.display()), format!("--model-sha256={}", "0".repeat(64))],
        "sha256 mismatch",
    )
    .await;
}

#[tokio::test]
async fn redirects_stay_on_the_model_stores_host_and_errors_hide_signed_queries() {
    let body = b"weights".to_vec();
    let digest = sha256_hex(&body);
    // The real store, and a second host (127.0.0.2 is another loopback address).
    let (store, _) = file_server(body.clone(), 0).await;
    let other_listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let elsewhere = format!("http://{}/file", other_listener.local_addr().unwrap());
    let leaked = Arc::new(AtomicUsize::new(0));
    let counter = leaked.clone();
    let exfil = Router::new().fallback(get(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async { "weights" }
    }));
    tokio::spawn(async move { axum::serve(other_listener, exfil).await });
    // A store that redirects: within itself, or away.
    let (within, away) = (store.clone(), elsewhere.clone());
    let redirector = Router::new()
        .route("/same", get(move || async move { axum::response::Redirect::temporary(&within) }))
        .route("/away", get(move || async move { axum::response::Redirect::temporary(&away) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, redirector).await });

    // `file_server` binds 127.0.0.1 too, on another port: another origin. Same-origin means
    // same scheme, host and port, so serve the target under the redirector's own origin.
    let cache = tempfile::tempdir().unwrap();
    let same = FileSource { uri: format!("{base}/same"), sha256: Some(digest.clone()) };
    let refused_port = resolve(&same, &policy(cache.path())).await.unwrap_err();
    assert!(refused_port.to_string().contains("redirect to another host"), "{refused_port}");

    let signed = FileSource { uri: format!("{base}/away?X-Amz-Signature=s3cr3t"), sha256: Some(digest.clone()) };
    let error = resolve(&signed, &policy(cache.path())).await.unwrap_err();
    assert!(matches!(error, Error::Fetch { .. }), "{error}");
    assert_eq!(error.reason(), "ModelStoreUnreachable");
    assert!(error.to_string().contains("redirect to another host"), "{error}");
    assert!(!error.to_string().contains("s3cr3t"), "the signed query leaked: {error}");
    assert_eq!(leaked.load(Ordering::SeqCst), 0, "the runtime followed the redirect to another host");

    // A redirect within the origin is followed.
    let app = {
        let body = body.clone();
        Router::new()
            .route("/moved", get(|| async { axum::response::Redirect::permanent("/file") }))
            .route("/file", get(move || async move { body.clone() }))
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let own = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let moved = FileSource { uri: format!("{own}/moved?sig=x"), sha256: Some(digest) };
    let path = resolve(&moved, &policy(cache.path())).await.unwrap();
    assert_eq!(std::fs::read(path).unwrap(), body);
}
