//! The crate's one error type. Every fallible step (fetching, loading,
//! decoding a request, queueing, inference) reports through it; the HTTP layer
//! maps it to a status code and a JSON body in `http::error`.

use std::path::PathBuf;

/// Everything that can go wrong inside ember-runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag or config file combination that cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A model, config or tokenizer file that cannot be read or parsed.
    #[error("model file {path}: {message}")]
    ModelFile { path: PathBuf, message: String },

    /// A downloaded or local file whose digest is not the one we were told.
    #[error("sha256 mismatch for {uri}: expected {expected}, got {actual}; refusing to load it")]
    ChecksumMismatch { uri: String, expected: String, actual: String },

    /// Fetching a remote model file failed for good (after retries).
    #[error("fetching {uri}: {message}")]
    Fetch { uri: String, message: String },

    /// The client sent something we cannot serve; the message names the problem.
    #[error("{0}")]
    BadRequest(String),

    /// The request names a model this server does not serve.
    #[error("unknown model '{0}'")]
    UnknownModel(String),

    /// The request body is over the configured limit.
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },

    /// The batching queue is full: shed load instead of queueing without bound.
    #[error("server is overloaded: the queue of {capacity} requests is full, retry later")]
    QueueFull { capacity: usize },

    /// The model is still loading or warming up, or the server is shutting down.
    #[error("model is not ready")]
    NotReady,

    /// The request waited longer than its deadline.
    #[error("request did not finish within {millis} ms")]
    Timeout { millis: u64 },

    /// The model failed while running a batch.
    #[error("inference failed: {0}")]
    Inference(String),

    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Result with the crate's error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A short, stable name for why the runtime could not start, written at
    /// the head of the termination message so the operator can report it as
    /// a condition reason (`ChecksumMismatch`, `ModelStoreUnreachable`, ...).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Config(_) => "InvalidConfiguration",
            Error::ModelFile { .. } => "InvalidModelFile",
            Error::ChecksumMismatch { .. } => "ChecksumMismatch",
            Error::Fetch { .. } => "ModelStoreUnreachable",
            Error::BadRequest(_) | Error::UnknownModel(_) | Error::PayloadTooLarge { .. } => "BadRequest",
            Error::QueueFull { .. } | Error::NotReady | Error::Timeout { .. } => "Unavailable",
            Error::Inference(_) => "InferenceFailed",
            Error::Io(_) => "IoError",
        }
    }

    /// Builds a [`Error::ModelFile`] from anything displayable.
    pub fn model_file(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Self::ModelFile { path: path.into(), message: message.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_up_failures_have_distinct_reasons() {
        let checksum = Error::ChecksumMismatch { uri: "u".into(), expected: "a".into(), actual: "b".into() };
        let fetch = Error::Fetch { uri: "u".into(), message: "connection refused".into() };
        let file = Error::model_file("/m", "truncated");
        let reasons = [checksum.reason(), fetch.reason(), file.reason(), Error::Config("x".into()).reason()];
        assert_eq!(reasons, ["ChecksumMismatch", "ModelStoreUnreachable", "InvalidModelFile", "InvalidConfiguration"]);
    }
}
