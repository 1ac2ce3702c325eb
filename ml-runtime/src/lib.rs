//! ember-runtime: Ember's inference server. Loads a Burn model from
//! safetensors, batches requests dynamically and serves them over the Open
//! Inference Protocol v2 and an OpenAI-style embeddings endpoint.
//!
//! Flow: `args` → `server` → `source` (fetch + verify files) → `model`
//! (loaded on the `backend` device) → `batcher` (inference thread) →
//! `http` (axum routes).

pub mod args;
pub mod backend;
pub mod batcher;
pub mod error;
pub mod http;
pub mod metrics;
pub mod model;
pub mod server;
pub mod source;
pub mod telemetry;
pub mod threads;
pub mod tokenize;
pub mod weights;

pub use error::{Error, Result};
