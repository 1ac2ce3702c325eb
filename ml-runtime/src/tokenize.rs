//! Turns text into token id sequences for the BERT encoder, using the
//! `tokenizers` crate and the model's `tokenizer.json`.
//!
//! The shipped all-MiniLM-L6-v2 `tokenizer.json` pads and truncates to a
//! fixed 128 tokens. sentence-transformers instead truncates at the model's
//! `max_seq_length` (256) and pads to the longest input in the batch. We
//! drop the file's padding and set our own truncation; the encoder packs
//! sequences without padding (`model::packing`).

use std::path::Path;

use tokenizers::{Tokenizer, TruncationParams};

use crate::error::{Error, Result};

/// Tokenizer with the truncation we serve with.
#[derive(Debug)]
pub struct TextTokenizer {
    inner: Tokenizer,
    max_tokens: usize,
}

impl TextTokenizer {
    /// Loads `tokenizer.json`, truncating every input at `max_tokens`
    /// (special tokens included) and padding nothing.
    pub fn from_file(path: &Path, max_tokens: usize) -> Result<Self> {
        let mut inner =
            Tokenizer::from_file(path).map_err(|e| Error::model_file(path, format!("not a tokenizer.json: {e}")))?;
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams { max_length: max_tokens, ..TruncationParams::default() }))
            .map_err(|e| Error::model_file(path, format!("truncation settings: {e}")))?;
        Ok(Self { inner, max_tokens })
    }

    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Token ids of each text, special tokens included, truncated.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<i64>>> {
        let inputs: Vec<&str> = texts.to_vec();
        let encodings = self
            .inner
            .encode_batch_fast(inputs, true)
            .map_err(|e| Error::BadRequest(format!("tokenisation failed: {e}")))?;
        Ok(encodings.iter().map(|e| e.get_ids().iter().map(|&id| i64::from(id)).collect()).collect())
    }
}
