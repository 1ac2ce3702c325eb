//! A model store for the local cluster: the files of a directory served over
//! plain HTTP on the real node's bridge gateway, where model pods can reach
//! it (nothing leaves the machine). `GET /<file>` answers the file,
//! `GET /<file>.sha256` its digest — what a ModelDeployment names.
//!
//! Only the directory's own regular files are served, by exact name: no
//! listing, no subdirectories, no path tricks.
//!
//! A signed store stands for object storage with signed URLs: it answers
//! 403 unless the query string carries its signature.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use crate::Error;

/// A running store; dropping it stops serving.
#[derive(Debug)]
pub struct ModelStore {
    address: SocketAddr,
    signature: Option<String>,
    digests: BTreeMap<String, String>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
struct Files {
    dir: PathBuf,
    signature: Option<String>,
    digests: BTreeMap<String, String>,
}

impl ModelStore {
    /// Serves the regular files of `dir` on `address` (port 0 picks one).
    pub async fn serve(dir: &Path, address: SocketAddr) -> Result<Self, Error> {
        Self::start(dir, address, None).await
    }

    /// A store that serves only URLs signed with `signature` ([`Self::signed_url`]).
    pub async fn serve_signed(dir: &Path, address: SocketAddr, signature: &str) -> Result<Self, Error> {
        Self::start(dir, address, Some(signature.to_owned())).await
    }

    async fn start(dir: &Path, address: SocketAddr, signature: Option<String>) -> Result<Self, Error> {
        let digests = digests_of(dir)?;
        let files = Arc::new(Files { dir: dir.to_owned(), signature: signature.clone(), digests: digests.clone() });
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| Error::Io { context: format!("binding the model store to {address}"), source })?;
        let address =
            listener.local_addr().map_err(|source| Error::Io { context: "model store address".into(), source })?;
        let app = axum::Router::new().route("/{file}", get(serve_file)).with_state(files);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { address, signature, digests, task })
    }

    /// `http://<address>/<file>`.
    pub fn url(&self, file: &str) -> String {
        format!("http://{}/{file}", self.address)
    }

    /// `http://<address>/<file>?signature=<signature>`, what a signed store serves.
    pub fn signed_url(&self, file: &str) -> String {
        format!("{}?signature={}", self.url(file), self.signature.as_deref().unwrap_or_default())
    }

    /// Where the store listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Hex SHA-256 of a served file.
    pub fn sha256(&self, file: &str) -> Option<&str> {
        self.digests.get(file).map(String::as_str)
    }
}

impl Drop for ModelStore {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_file(
    State(files): State<Arc<Files>>,
    UrlPath(name): UrlPath<String>,
    RawQuery(query): RawQuery,
) -> Response {
    if let Some(signature) = &files.signature
        && query.as_deref() != Some(format!("signature={signature}").as_str())
    {
        return StatusCode::FORBIDDEN.into_response();
    }
    if let Some(file) = name.strip_suffix(".sha256")
        && let Some(digest) = files.digests.get(file)
    {
        return format!("{digest}  {file}\n").into_response();
    }
    if !files.digests.contains_key(&name) {
        return StatusCode::NOT_FOUND.into_response();
    }
    match tokio::fs::read(files.dir.join(&name)).await {
        Ok(bytes) => bytes.into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// SHA-256 of every regular file directly in `dir`.
fn digests_of(dir: &Path) -> Result<BTreeMap<String, String>, Error> {
    let io = |source| Error::Io { context: format!("reading {}", dir.display()), source };
    let mut digests = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if !entry.file_type().map_err(io)?.is_file() {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let bytes = std::fs::read(entry.path()).map_err(io)?;
        digests.insert(name, hex::encode(Sha256::digest(&bytes)));
    }
    Ok(digests)
}
