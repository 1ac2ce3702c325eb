//! OpenAI-compatible `POST /v1/embeddings` for embedding models: `input` is a
//! string, a list of strings, a list of token ids or a list of such lists;
//! `encoding_format` is `float` (default) or `base64` (little-endian f32, what
//! the official Python client asks for).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, body_rejection};
use crate::error::{Error, Result};
use crate::model::{Item, Task};

pub fn router() -> Router<Arc<AppState>> {
    Router::new().route("/v1/embeddings", post(embeddings))
}

#[derive(Debug, Deserialize)]
struct EmbeddingsRequest {
    input: EmbeddingInput,
    model: Option<String>,
    #[serde(default)]
    encoding_format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<i64>),
    ManyTokens(Vec<Vec<i64>>),
}

async fn embeddings(
    State(state): State<Arc<AppState>>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Json<Value>> {
    let body = body.map_err(|r| body_rejection(r, state.limits.max_request_bytes))?;
    let request: EmbeddingsRequest = serde_json::from_slice(&body).map_err(|e| {
        Error::BadRequest(format!(
            "request is not a valid embeddings request (input: string, [string], [int] or [[int]]): {e}"
        ))
    })?;
    let model_name = request.model.unwrap_or_else(|| state.model_name.clone());
    let info = state.check_model(&model_name)?;
    if info.task != Task::Embedding {
        return Err(Error::BadRequest(format!("model '{model_name}' is not an embedding model")));
    }
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => return Err(Error::BadRequest(format!("encoding_format '{other}' is not 'float' or 'base64'"))),
    };
    let items: Vec<Item> = match request.input {
        EmbeddingInput::One(text) => vec![Item::Text(text)],
        EmbeddingInput::Many(texts) => texts.into_iter().map(Item::Text).collect(),
        EmbeddingInput::Tokens(ids) => vec![Item::Tokens(ids)],
        EmbeddingInput::ManyTokens(rows) => rows.into_iter().map(Item::Tokens).collect(),
    };
    let outputs = state.run(items).await?;
    let tokens: usize = outputs.iter().map(|o| o.tokens).sum();
    let data: Vec<Value> = outputs
        .into_iter()
        .enumerate()
        .map(|(index, output)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = output.values.iter().flat_map(|v| v.to_le_bytes()).collect();
                Value::from(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Value::from(output.values.iter().map(|&v| f64::from(v)).collect::<Vec<_>>())
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": model_name,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
    })))
}
