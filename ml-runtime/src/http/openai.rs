//! OpenAI-compatible `POST /v1/embeddings` for embedding models: `input` is a
//! string, a list of strings, a list of token ids or a list of such lists;
//! `encoding_format` is `float` (default) or `base64` (little-endian f32, what
//! the official Python client asks for).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use serde::{Deserialize, Serialize};

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
) -> Result<Response> {
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
    let (outputs, usage) = state.run(items).await?;
    let tokens = usage.tokens;
    let data: Vec<EmbeddingRow<'_>> = outputs
        .iter()
        .enumerate()
        .map(|(index, output)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = output.values.iter().flat_map(|v| v.to_le_bytes()).collect();
                Embedding::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Embedding::Float(&output.values)
            };
            EmbeddingRow { object: "embedding", index, embedding }
        })
        .collect();
    let response = EmbeddingsResponse {
        object: "list",
        data,
        model: &model_name,
        usage: Usage { prompt_tokens: tokens, total_tokens: tokens },
    };
    let body = serde_json::to_vec(&response).map_err(|e| Error::Inference(format!("encoding response: {e}")))?;
    let mut response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    usage.insert_into(response.headers_mut());
    Ok(response)
}

/// The response, serialised straight from the outputs (no intermediate
/// `serde_json::Value` per number).
#[derive(Debug, Serialize)]
struct EmbeddingsResponse<'a> {
    object: &'static str,
    data: Vec<EmbeddingRow<'a>>,
    model: &'a str,
    usage: Usage,
}

#[derive(Debug, Serialize)]
struct EmbeddingRow<'a> {
    object: &'static str,
    index: usize,
    embedding: Embedding<'a>,
}

/// `float`: a JSON array of f32 in shortest round-trip form; `base64`: a string.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Embedding<'a> {
    Float(&'a [f32]),
    Base64(String),
}

#[derive(Debug, Serialize)]
struct Usage {
    prompt_tokens: usize,
    total_tokens: usize,
}
