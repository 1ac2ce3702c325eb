//! The command line. Every flag has an `EMBER_*` environment variable; the
//! ModelDeployment operator starts pods with exactly these, so names and
//! meanings are a stable interface (documented in `docs/runtime.md`).

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::backend::Backend;
use crate::model::{Architecture, Task};
use crate::telemetry::LogFormat;

/// Ember's inference server: serves one Burn model over the Open Inference
/// Protocol v2 and an OpenAI-style embeddings API.
#[derive(Debug, Clone, Parser)]
#[command(name = "ember-runtime", version)]
pub struct Args {
    /// Name the model is served under (`/v2/models/{name}`).
    #[arg(long, env = "EMBER_MODEL_NAME", default_value = "model")]
    pub model_name: String,

    /// Weights (safetensors): a local path, file:// or http(s):// URL.
    #[arg(long, env = "EMBER_MODEL_URI")]
    pub model_uri: String,

    /// Hex sha256 of the weights. Mandatory for URLs; checked when given for paths.
    #[arg(long, env = "EMBER_MODEL_SHA256")]
    pub model_sha256: Option<String>,

    /// Model config: Hugging Face `config.json` for bert, the MLP config for mlp.
    #[arg(long, env = "EMBER_CONFIG_URI")]
    pub config_uri: String,

    /// Hex sha256 of the config file.
    #[arg(long, env = "EMBER_CONFIG_SHA256")]
    pub config_sha256: Option<String>,

    /// Hugging Face `tokenizer.json` (required for bert).
    #[arg(long, env = "EMBER_TOKENIZER_URI")]
    pub tokenizer_uri: Option<String>,

    /// Hex sha256 of the tokenizer file.
    #[arg(long, env = "EMBER_TOKENIZER_SHA256")]
    pub tokenizer_sha256: Option<String>,

    /// Network family.
    #[arg(long, env = "EMBER_ARCHITECTURE", value_enum)]
    pub architecture: Architecture,

    /// What the outputs mean.
    #[arg(long, env = "EMBER_TASK", value_enum)]
    pub task: Task,

    /// Compute backend: cpu (Burn Flex) or wgpu (GPU; needs the `wgpu` build feature).
    #[arg(long, env = "EMBER_BACKEND", value_enum, default_value = "cpu")]
    pub backend: Backend,

    /// Most items (texts or rows) the model runs in one batch.
    #[arg(long, env = "EMBER_MAX_BATCH_SIZE", default_value_t = 32)]
    pub max_batch_size: usize,

    /// Longest wait for more requests once a batch has started, in ms (0 = only what is queued).
    #[arg(long, env = "EMBER_MAX_DELAY_MS", default_value_t = 2)]
    pub max_delay_ms: u64,

    /// Requests (or request chunks of max-batch-size) that may wait; beyond it → 429.
    #[arg(long, env = "EMBER_QUEUE_CAPACITY", default_value_t = 64)]
    pub queue_capacity: usize,

    /// Texts are truncated to this many tokens (capped by the model's positions).
    #[arg(long, env = "EMBER_MAX_TOKENS", default_value_t = 256)]
    pub max_tokens: usize,

    /// Address to listen on.
    #[arg(long, env = "EMBER_LISTEN_ADDRESS", default_value = "0.0.0.0")]
    pub listen_address: IpAddr,

    /// Port for the HTTP API, probes and metrics.
    #[arg(long, env = "EMBER_PORT", default_value_t = 8080)]
    pub port: u16,

    /// Largest request body in bytes; larger → 413.
    #[arg(long, env = "EMBER_MAX_REQUEST_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_request_bytes: usize,

    /// Most inputs (texts or rows) in one request; more → 400.
    #[arg(long, env = "EMBER_MAX_ITEMS_PER_REQUEST", default_value_t = 1024)]
    pub max_items_per_request: usize,

    /// Longest a request may wait for its result, in ms; then 504.
    #[arg(long, env = "EMBER_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,

    /// Where downloaded model files are cached (by sha256).
    #[arg(long, env = "EMBER_MODEL_CACHE_DIR", default_value = "/tmp/ember-models")]
    pub model_cache_dir: PathBuf,

    /// Largest model file accepted from a URL, in bytes.
    #[arg(long, env = "EMBER_MAX_MODEL_BYTES", default_value_t = 4 * 1024 * 1024 * 1024)]
    pub max_model_bytes: u64,

    /// Download attempts per file before giving up.
    #[arg(long, env = "EMBER_DOWNLOAD_ATTEMPTS", default_value_t = 4)]
    pub download_attempts: u32,

    /// Timeout for one download attempt, in seconds.
    #[arg(long, env = "EMBER_DOWNLOAD_TIMEOUT_SECS", default_value_t = 600)]
    pub download_timeout_secs: u64,

    /// Compute threads; 0 = the container's CPU quota (cgroup), else the visible CPUs.
    #[arg(long, env = "EMBER_THREADS", default_value_t = 0)]
    pub threads: usize,

    /// Log format: text or json (for clusters).
    #[arg(long, env = "EMBER_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// File that gets `<Reason>: <message>` when the model cannot start
    /// (Kubernetes shows it as the container's termination message). Only
    /// written when the file already exists, as the kubelet's mount does.
    #[arg(long, env = "EMBER_TERMINATION_LOG", default_value = "/dev/termination-log")]
    pub termination_log: PathBuf,
}
