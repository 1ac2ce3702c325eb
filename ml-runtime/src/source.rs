//! Model sources: a local path or an http(s) URL. Remote files are
//! downloaded into a cache directory keyed by their sha256, with a size
//! limit and retries; every file with a digest is verified before use.
//! A mismatch refuses to start — a wrong model must never serve traffic.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Where a file comes from and the digest it must have.
#[derive(Debug, Clone)]
pub struct FileSource {
    pub uri: String,
    /// Lower-case hex sha256; mandatory for URLs, checked when given for paths.
    pub sha256: Option<String>,
}

/// How downloads behave.
#[derive(Debug, Clone)]
pub struct FetchPolicy {
    pub cache_dir: PathBuf,
    pub max_bytes: u64,
    pub attempts: u32,
    pub timeout: Duration,
}

impl FileSource {
    fn is_remote(&self) -> bool {
        self.uri.starts_with("http://") || self.uri.starts_with("https://")
    }

    fn expected_digest(&self) -> Result<Option<String>> {
        match &self.sha256 {
            Some(hex_digest) => {
                let digest = hex_digest.trim().to_ascii_lowercase();
                if digest.len() != 64 || !digest.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(Error::Config(format!("sha256 for {} must be 64 hex characters", self.uri)));
                }
                Ok(Some(digest))
            }
            None if self.is_remote() => Err(Error::Config(format!("{} is a URL: its sha256 is mandatory", self.uri))),
            None => Ok(None),
        }
    }
}

/// Resolves `source` to a verified local file, downloading it if remote.
pub async fn resolve(source: &FileSource, policy: &FetchPolicy) -> Result<PathBuf> {
    let expected = source.expected_digest()?;
    let path = if source.is_remote() {
        // `expected` is always Some for URLs (checked above).
        let digest = expected.clone().unwrap_or_default();
        let cached = policy.cache_dir.join(&digest);
        if !cached.is_file() {
            download_with_retries(&source.uri, &cached, policy).await?;
        }
        cached
    } else {
        let local = source.uri.strip_prefix("file://").unwrap_or(&source.uri);
        PathBuf::from(local)
    };
    if !path.is_file() {
        return Err(Error::model_file(&path, "no such file"));
    }
    if let Some(expected) = expected {
        let actual = sha256_of(&path).await?;
        if actual != expected {
            if source.is_remote() {
                // Never keep a bad download under the name of a good digest.
                let _ = tokio::fs::remove_file(&path).await;
            }
            return Err(Error::ChecksumMismatch { uri: source.uri.clone(), expected, actual });
        }
    }
    Ok(path)
}

/// Hex sha256 of a file, computed off the async threads.
pub async fn sha256_of(path: &Path) -> Result<String> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || -> Result<String> {
        let mut file = std::fs::File::open(&path).map_err(|e| Error::model_file(&path, e))?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher).map_err(|e| Error::model_file(&path, e))?;
        Ok(hex::encode(hasher.finalize()))
    })
    .await
    .map_err(|e| Error::Inference(format!("hashing task failed: {e}")))?
}

async fn download_with_retries(uri: &str, target: &Path, policy: &FetchPolicy) -> Result<()> {
    let client = reqwest::Client::builder().timeout(policy.timeout).build().map_err(|e| fetch_error(uri, e))?;
    let mut last_error = None;
    for attempt in 1..=policy.attempts.max(1) {
        match download_once(&client, uri, target, policy.max_bytes).await {
            Ok(()) => return Ok(()),
            Err(Retry::No(error)) => return Err(error),
            Err(Retry::Yes(error)) => {
                tracing::warn!(uri, attempt, %error, "download failed, retrying");
                last_error = Some(error);
                // Exponential backoff: 0.5 s, 1 s, 2 s, ...
                tokio::time::sleep(Duration::from_millis(500 << (attempt - 1).min(6))).await;
            }
        }
    }
    Err(last_error.unwrap_or_else(|| fetch_error(uri, "no attempt made")))
}

enum Retry {
    Yes(Error),
    No(Error),
}

fn fetch_error(uri: &str, message: impl std::fmt::Display) -> Error {
    Error::Fetch { uri: uri.to_owned(), message: message.to_string() }
}

async fn download_once(
    client: &reqwest::Client,
    uri: &str,
    target: &Path,
    max_bytes: u64,
) -> std::result::Result<(), Retry> {
    let response = client.get(uri).send().await.map_err(|e| Retry::Yes(fetch_error(uri, e)))?;
    let status = response.status();
    if !status.is_success() {
        let error = fetch_error(uri, format!("HTTP {status}"));
        // Server errors and throttling may pass; 4xx will not.
        return Err(if status.is_server_error() || status.as_u16() == 429 {
            Retry::Yes(error)
        } else {
            Retry::No(error)
        });
    }
    if response.content_length().is_some_and(|len| len > max_bytes) {
        return Err(Retry::No(fetch_error(uri, format!("file is larger than the limit of {max_bytes} bytes"))));
    }
    let dir = target.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Retry::No(Error::model_file(dir, e)))?;
    // Write to a temporary file in the same directory and rename at the end,
    // so a crash never leaves a partial file under the final name.
    let mut partial = tempfile::NamedTempFile::new_in(dir).map_err(|e| Retry::No(Error::model_file(dir, e)))?;
    let mut received: u64 = 0;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Retry::Yes(fetch_error(uri, e)))?;
        received += chunk.len() as u64;
        if received > max_bytes {
            return Err(Retry::No(fetch_error(uri, format!("file is larger than the limit of {max_bytes} bytes"))));
        }
        partial.write_all(&chunk).map_err(|e| Retry::No(Error::model_file(target, e)))?;
    }
    partial.persist(target).map_err(|e| Retry::No(Error::model_file(target, e.error)))?;
    Ok(())
}
