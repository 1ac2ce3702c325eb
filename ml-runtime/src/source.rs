//! Model sources: a local path or an http(s) URL. Remote files are
//! downloaded into a cache directory keyed by their sha256, with a size
//! limit and retries; every file with a digest is verified before use.
//! A mismatch refuses to start — a wrong model must never serve traffic.
//! Redirects stay on the first URL's host, and URLs appear in logs and
//! errors only [`redacted`] (signed URLs carry credentials in the query).

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
                    return Err(Error::Config(format!("sha256 for {} must be 64 hex characters", redacted(&self.uri))));
                }
                Ok(Some(digest))
            }
            None if self.is_remote() => {
                Err(Error::Config(format!("{} is a URL: its sha256 is mandatory", redacted(&self.uri))))
            }
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
            return Err(Error::ChecksumMismatch { uri: redacted(&source.uri), expected, actual });
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

/// How many redirects a download follows, all within the first URL's origin.
const MAX_REDIRECTS: usize = 5;

/// Follows redirects only within the origin (scheme, host, port) of the
/// first URL: a model store must not be able to send the runtime, and
/// whatever credentials the URL carries, to another host (say a cloud
/// metadata endpoint or an attacker's server).
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let first = attempt.previous().first().map(reqwest::Url::origin);
        if first.as_ref() != Some(&attempt.url().origin()) {
            let to = redacted(attempt.url().as_str());
            attempt.error(format!("redirect to another host ({to}) refused"))
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
        } else {
            attempt.follow()
        }
    })
}

/// `uri` as it may appear in logs, errors and termination messages: no
/// user info and no query string (signed URLs carry their credentials
/// there), so nothing secret leaves the process.
pub fn redacted(uri: &str) -> String {
    match reqwest::Url::parse(uri) {
        Ok(mut url) if url.has_host() => {
            let hidden = url.query().is_some();
            url.set_query(None);
            url.set_fragment(None);
            let _ = url.set_username("");
            let _ = url.set_password(None);
            let mut text = url.to_string();
            if hidden {
                text.push_str("?<redacted>");
            }
            text
        }
        // Paths (file:// or plain) carry no credentials.
        _ => uri.split(['?', '#']).next().unwrap_or_default().to_owned(),
    }
}

async fn download_with_retries(uri: &str, target: &Path, policy: &FetchPolicy) -> Result<()> {
    let client = reqwest::Client::builder()
        .timeout(policy.timeout)
        .redirect(same_origin_redirects())
        .build()
        .map_err(|e| fetch_error(uri, e))?;
    let mut last_error = None;
    for attempt in 1..=policy.attempts.max(1) {
        match download_once(&client, uri, target, policy.max_bytes).await {
            Ok(()) => return Ok(()),
            Err(Retry::No(error)) => return Err(error),
            Err(Retry::Yes(error)) => {
                tracing::warn!(uri = %redacted(uri), attempt, %error, "download failed, retrying");
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
    // reqwest's messages quote the URL in full; keep only the redacted form.
    let message = message.to_string().replace(uri, &redacted(uri));
    Error::Fetch { uri: redacted(uri), message: without_error_chain_urls(&message) }
}

/// An error with its causes ("error following redirect: redirect to
/// another host refused"): reqwest's own message names only the outermost.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// reqwest errors end with `(<url>)`; drop any query string inside.
fn without_error_chain_urls(message: &str) -> String {
    message
        .split(' ')
        .map(|word| match word.find("://") {
            Some(_) if word.contains('?') => {
                let (head, tail) = word.split_at(word.find('?').unwrap_or(word.len()));
                let closing = if tail.ends_with(')') { ")" } else { "" };
                format!("{head}?<redacted>{closing}")
            }
            _ => word.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

async fn download_once(
    client: &reqwest::Client,
    uri: &str,
    target: &Path,
    max_bytes: u64,
) -> std::result::Result<(), Retry> {
    let response = match client.get(uri).send().await {
        Ok(response) => response,
        // A refused redirect is final; other send errors may pass.
        Err(e) if e.is_redirect() => return Err(Retry::No(fetch_error(uri, error_chain(&e)))),
        Err(e) => return Err(Retry::Yes(fetch_error(uri, error_chain(&e)))),
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_survive_redaction() {
        assert_eq!(
            redacted("https://user:pw@store.example/m/model.safetensors?X-Amz-Signature=abc&X-Amz-Credential=k#x"),
            "https://store.example/m/model.safetensors?<redacted>"
        );
        assert_eq!(redacted("http://10.89.0.1:18070/config.json"), "http://10.89.0.1:18070/config.json");
        assert_eq!(redacted("file:///models/m.safetensors"), "file:///models/m.safetensors");
        let error = fetch_error(
            "https://s.example/f?sig=secret",
            "error sending request for url (https://s.example/f?sig=secret)",
        );
        assert!(!error.to_string().contains("secret"), "{error}");
    }
}
