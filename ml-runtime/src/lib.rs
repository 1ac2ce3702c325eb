//! ember-runtime: Ember's inference server. Loads a Burn model from
//! safetensors, batches requests dynamically and serves them over the Open
//! Inference Protocol v2 and an OpenAI-style embeddings endpoint.
//!
//! Flow: `args` → `source` (fetch + verify files) → `model` (load on the
//! `backend` device) → `batcher` (inference thread) → `http` (axum routes).

pub mod batcher;
pub mod error;
pub mod metrics;
pub mod model;
pub mod source;
pub mod threads;
pub mod tokenize;
pub mod weights;

pub use error::{Error, Result};
