//! The identity provider's signing keys (a JWKS document), fetched only
//! from the configured URI and cached.
//!
//! Keys named by a token's own headers (`jku`, `x5u`, `jwk`) are never
//! fetched or used: an attacker controls those. A token whose `kid` is not
//! in the cache triggers a refresh, at most one per `min_refresh_interval`
//! however many such tokens arrive, so garbage tokens cannot hammer the
//! identity provider; keys rotated at the provider work after that refresh.
//! Keys are also refetched once they are older than `max_age`, on the next
//! request, so a key withdrawn at the provider stops verifying within that
//! time even when no token ever names an unknown `kid`.

use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use tokio::sync::{Mutex, RwLock};

use crate::error::{Error, Result};

/// Largest JWKS document accepted; real ones are a few KiB.
const MAX_JWKS_BYTES: usize = 1 << 20;

#[derive(Debug)]
pub struct KeyCache {
    uri: reqwest::Url,
    client: reqwest::Client,
    min_refresh_interval: Duration,
    max_age: Duration,
    cached: RwLock<Cached>,
    /// Serialises refreshes so concurrent misses cause one fetch.
    refreshing: Mutex<()>,
}

#[derive(Debug, Default)]
struct Cached {
    keys: Vec<Jwk>,
    /// Last fetch attempt, successful or not.
    attempted_at: Option<Instant>,
}

/// The certificates of a PEM bundle; an unreadable file or one without a
/// certificate is a configuration error, not an empty trust list.
fn private_cas(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>> {
    let fail = |reason: String| Error::Config(format!("JWKS CA file {}: {reason}", path.display()));
    let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| fail(e.to_string()))?;
    if certificates.is_empty() {
        return Err(fail("no PEM certificate in it".into()));
    }
    Ok(certificates)
}

impl KeyCache {
    /// `uri` must be `https://`, or `http://` to a loopback address (local
    /// development and tests). `extra_ca` names a PEM bundle of private CAs
    /// trusted for it besides the public roots.
    pub fn new(
        uri: &str,
        extra_ca: Option<&std::path::Path>,
        min_refresh_interval: Duration,
        max_age: Duration,
    ) -> Result<Self> {
        let uri = reqwest::Url::parse(uri).map_err(|e| Error::Config(format!("JWKS URI '{uri}': {e}")))?;
        let loopback = matches!(uri.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
        if uri.scheme() != "https" && !(uri.scheme() == "http" && loopback) {
            return Err(Error::Config(format!("JWKS URI '{uri}' must use https (http only for loopback)")));
        }
        let mut builder =
            reqwest::Client::builder().timeout(Duration::from_secs(10)).redirect(reqwest::redirect::Policy::none());
        if let Some(path) = extra_ca {
            for certificate in private_cas(path)? {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let client = builder.build().map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            uri,
            client,
            min_refresh_interval,
            max_age: max_age.max(min_refresh_interval),
            cached: RwLock::default(),
            refreshing: Mutex::new(()),
        })
    }

    /// The key a token names with `kid` (or the only key, when the token
    /// names none and the set has exactly one). Refreshes on a miss when
    /// the last attempt is older than the minimum interval.
    pub async fn key(&self, kid: Option<&str>) -> Result<Option<Jwk>> {
        let stale = self.cached.read().await.attempted_at.is_some_and(|at| at.elapsed() >= self.max_age);
        if stale {
            self.refresh_if_due().await?;
        }
        if let Some(key) = self.lookup(kid).await {
            return Ok(Some(key));
        }
        self.refresh_if_due().await?;
        Ok(self.lookup(kid).await)
    }

    async fn lookup(&self, kid: Option<&str>) -> Option<Jwk> {
        let cached = self.cached.read().await;
        match kid {
            Some(kid) => cached.keys.iter().find(|k| k.common.key_id.as_deref() == Some(kid)).cloned(),
            None if cached.keys.len() == 1 => cached.keys.first().cloned(),
            None => None,
        }
    }

    async fn refresh_if_due(&self) -> Result<()> {
        let _one_at_a_time = self.refreshing.lock().await;
        let due = self.cached.read().await.attempted_at.is_none_or(|at| at.elapsed() >= self.min_refresh_interval);
        if !due {
            return Ok(());
        }
        let fetched = self.fetch().await;
        let mut cached = self.cached.write().await;
        cached.attempted_at = Some(Instant::now());
        match fetched {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), uri = %self.uri, "signing keys refreshed");
                cached.keys = keys;
                Ok(())
            }
            // Keep serving with the keys we have; only with none at all is
            // this the caller's answer (503 rather than a misleading 401).
            Err(error) if !cached.keys.is_empty() => {
                tracing::warn!(%error, "signing key refresh failed; keeping the cached keys");
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    async fn fetch(&self) -> Result<Vec<Jwk>> {
        let unavailable = |e: String| Error::KeysUnavailable(format!("{}: {e}", self.uri));
        let mut response = self.client.get(self.uri.clone()).send().await.map_err(|e| unavailable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("HTTP {}", response.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| unavailable(e.to_string()))? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_JWKS_BYTES {
                return Err(unavailable(format!("document larger than {MAX_JWKS_BYTES} bytes")));
            }
        }
        let set: JwkSet =
            serde_json::from_slice(&body).map_err(|e| unavailable(format!("not a JWKS document: {e}")))?;
        Ok(set.keys)
    }
}
