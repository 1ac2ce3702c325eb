//! The models ember-runtime serves and the one entry point the batcher calls:
//! [`Model::infer`] on a batch of items, on the inference thread.
//!
//! `bert` + `embedding`: text → mean-pooled, L2-normalised vector.
//! `bert` + `classification`: text → class logits (HF sequence classifier).
//! `mlp` + `classification`/`regression`: feature rows → outputs.

pub mod bert;
mod burn_encoder;
mod host_attention;
mod host_encoder;
mod host_gemm;
mod host_linear;
mod host_norm;
mod lanes;
pub mod mlp;
pub mod packing;
mod panel_gemm;

use std::path::Path;

use burn::tensor::{Device, Tensor};

use crate::error::{Error, Result};
use crate::tokenize::TextTokenizer;
use crate::weights::SafetensorsFile;
use bert::{BertConfig, BertEncoder, ClassifierHead};
use mlp::{Mlp, MlpConfig};
use packing::PackedTokens;

/// Network families compiled into this binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// BERT-family text encoder (BERT, MiniLM); needs a tokenizer.
    Bert,
    /// Multi-layer perceptron over numeric feature rows.
    Mlp,
}

/// What the model's output means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    Embedding,
    Classification,
    Regression,
}

/// One unit of work: a row of the batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// Raw text for BERT models (tokenised on the inference thread).
    Text(String),
    /// Already tokenised ids for BERT models (special tokens included).
    Tokens(Vec<i64>),
    /// Numeric feature row for MLP models.
    Features(Vec<f32>),
}

/// The result for one item.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemOutput {
    /// Embedding, logits or regression outputs.
    pub values: Vec<f32>,
    /// Tokens the item used (0 for feature rows); reported as usage.
    pub tokens: usize,
}

/// Paths of the files a model is built from (already fetched and verified).
#[derive(Debug, Clone)]
pub struct ModelFiles<'a> {
    pub weights: &'a Path,
    pub config: &'a Path,
    pub tokenizer: Option<&'a Path>,
}

/// What a model takes as input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputKind {
    /// Text (or token ids from the model's vocabulary).
    Text { vocab_size: usize, max_positions: usize },
    /// Numeric rows of `width` features.
    Features { width: usize },
}

impl InputKind {
    fn text(encoder: &BertEncoder) -> Self {
        InputKind::Text { vocab_size: encoder.config().vocab_size, max_positions: encoder.max_positions() }
    }
}

/// A description of the loaded model, cheap to clone and share.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub architecture: Architecture,
    pub task: Task,
    /// Width of each output row (embedding size, classes or targets).
    pub output_width: usize,
    pub input: InputKind,
    /// Class names for classification models.
    pub labels: Option<Vec<String>>,
}

impl ModelInfo {
    /// Checks an item before it is queued, so a bad row fails its own request
    /// with a 400 instead of failing the whole batch it would join.
    pub fn validate(&self, item: &Item) -> Result<()> {
        match (&self.input, item) {
            (InputKind::Features { width }, Item::Features(row)) => {
                if row.len() != *width {
                    return Err(Error::BadRequest(format!("each row needs {width} features, got {}", row.len())));
                }
                if row.iter().any(|v| !v.is_finite()) {
                    return Err(Error::BadRequest("features must be finite numbers".into()));
                }
                Ok(())
            }
            (InputKind::Features { .. }, _) => {
                Err(Error::BadRequest("this model takes numeric feature rows (FP32), not text or token ids".into()))
            }
            (InputKind::Text { .. }, Item::Text(_)) => Ok(()),
            (InputKind::Text { vocab_size, max_positions }, Item::Tokens(ids)) => {
                if ids.is_empty() {
                    return Err(Error::BadRequest("a token sequence is empty".into()));
                }
                if ids.len() > *max_positions {
                    return Err(Error::BadRequest(format!(
                        "a token sequence has {} ids, the model takes at most {max_positions}",
                        ids.len()
                    )));
                }
                let vocab = *vocab_size as i64;
                if let Some(bad) = ids.iter().find(|&&id| id < 0 || id >= vocab) {
                    return Err(Error::BadRequest(format!("token id {bad} is outside the vocabulary of {vocab}")));
                }
                Ok(())
            }
            (InputKind::Text { .. }, Item::Features(_)) => {
                Err(Error::BadRequest("this model takes text (BYTES) or token ids (INT64), not features".into()))
            }
        }
    }
}

/// A loaded model, ready to run batches. There is one per process, so the
/// size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Model {
    TextEmbedding { encoder: BertEncoder, tokenizer: TextTokenizer },
    TextClassifier { encoder: BertEncoder, head: ClassifierHead, tokenizer: TextTokenizer },
    Tabular { mlp: Mlp, task: Task },
}

impl Model {
    /// Builds the model for `architecture`/`task` from verified files.
    pub fn load(
        architecture: Architecture,
        task: Task,
        files: &ModelFiles<'_>,
        max_tokens: usize,
        device: &Device,
    ) -> Result<Self> {
        let weights = SafetensorsFile::open(files.weights)?;
        match (architecture, task) {
            (Architecture::Bert, Task::Embedding | Task::Classification) => {
                let config = BertConfig::from_file(files.config)?;
                let tokenizer_path = files
                    .tokenizer
                    .ok_or_else(|| Error::Config("architecture 'bert' needs --tokenizer-uri".to_owned()))?;
                let tokenizer =
                    TextTokenizer::from_file(tokenizer_path, max_tokens.min(config.max_position_embeddings))?;
                let head = match task {
                    Task::Classification => Some(ClassifierHead::load(&config, &weights, device)?),
                    _ => None,
                };
                let encoder = BertEncoder::load(config, &weights, device)?;
                Ok(match head {
                    Some(head) => Model::TextClassifier { encoder, head, tokenizer },
                    None => Model::TextEmbedding { encoder, tokenizer },
                })
            }
            (Architecture::Bert, Task::Regression) => {
                Err(Error::Config("architecture 'bert' serves tasks 'embedding' and 'classification'".to_owned()))
            }
            (Architecture::Mlp, Task::Classification | Task::Regression) => {
                let config = MlpConfig::from_file(files.config)?;
                Ok(Model::Tabular { mlp: Mlp::load(config, &weights, device)?, task })
            }
            (Architecture::Mlp, Task::Embedding) => {
                Err(Error::Config("architecture 'mlp' serves tasks 'classification' and 'regression'".to_owned()))
            }
        }
    }

    /// What the HTTP layer needs to know about the model (it never touches
    /// the model itself, which lives on the inference thread).
    pub fn info(&self, architecture: Architecture) -> ModelInfo {
        match self {
            Model::TextEmbedding { encoder, .. } => ModelInfo {
                architecture,
                task: Task::Embedding,
                output_width: encoder.config().hidden_size,
                input: InputKind::text(encoder),
                labels: None,
            },
            Model::TextClassifier { encoder, head, .. } => ModelInfo {
                architecture,
                task: Task::Classification,
                output_width: head.labels.len(),
                input: InputKind::text(encoder),
                labels: Some(head.labels.clone()),
            },
            Model::Tabular { mlp, task } => {
                let config = mlp.config();
                ModelInfo {
                    architecture,
                    task: *task,
                    output_width: config.output_size,
                    input: InputKind::Features { width: config.input_size },
                    labels: (*task == Task::Classification)
                        .then(|| (0..config.output_size).map(|i| config.label(i)).collect()),
                }
            }
        }
    }

    /// A small input used to warm the model up before it reports ready.
    pub fn warmup_item(&self) -> Item {
        match self {
            Model::Tabular { mlp, .. } => Item::Features(vec![0.0; mlp.config().input_size]),
            _ => Item::Text("Ember warms the model up before serving.".to_owned()),
        }
    }

    /// Runs one batch. Items must have passed [`Model::validate`].
    pub fn infer(&self, items: Vec<Item>) -> Result<Vec<ItemOutput>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Model::Tabular { mlp, .. } => {
                let rows = items.len();
                let mut features = Vec::with_capacity(rows * mlp.config().input_size);
                for item in items {
                    match item {
                        Item::Features(row) => features.extend(row),
                        _ => return Err(Error::Inference("non-feature item in MLP batch".into())),
                    }
                }
                let out = mlp.forward(rows, features);
                rows_of(out, vec![0; rows])
            }
            Model::TextEmbedding { encoder, tokenizer } => {
                let sequences = self.token_sequences(tokenizer, items)?;
                let tokens = PackedTokens::new(&sequences);
                let width = encoder.config().hidden_size;
                host_rows(encoder.embed(&tokens), width, tokens.lengths)
            }
            Model::TextClassifier { encoder, head, tokenizer } => {
                let sequences = self.token_sequences(tokenizer, items)?;
                let tokens = PackedTokens::new(&sequences);
                rows_of(head.logits(encoder.first_tokens(&tokens)), tokens.lengths)
            }
        }
    }

    fn token_sequences(&self, tokenizer: &TextTokenizer, items: Vec<Item>) -> Result<Vec<Vec<i64>>> {
        // Tokenise all texts in one call (tokenizers parallelises it), keep
        // pre-tokenised rows as they are, and restore the original order.
        let texts: Vec<&str> = items
            .iter()
            .filter_map(|i| match i {
                Item::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        let mut encoded = tokenizer.encode(&texts)?.into_iter();
        items
            .into_iter()
            .map(|item| match item {
                Item::Text(_) => encoded.next().ok_or_else(|| Error::Inference("tokenizer lost an input".into())),
                Item::Tokens(ids) => Ok(ids),
                Item::Features(_) => Err(Error::Inference("feature row in a text batch".into())),
            })
            .collect()
    }
}

/// Copies a `[rows, width]` tensor back to the host as one output per row.
fn rows_of(tensor: Tensor<2>, tokens: Vec<usize>) -> Result<Vec<ItemOutput>> {
    let [rows, width] = tensor.dims();
    let data = tensor.into_data();
    let values = data.as_slice::<f32>().map_err(|e| Error::Inference(format!("reading outputs: {e:?}")))?;
    if values.len() != rows * width {
        return Err(Error::Inference("output has the wrong size".into()));
    }
    host_rows(values.to_vec(), width, tokens)
}

/// Splits row-major `[rows, width]` host values into one output per row.
fn host_rows(values: Vec<f32>, width: usize, tokens: Vec<usize>) -> Result<Vec<ItemOutput>> {
    if values.len() != tokens.len() * width {
        return Err(Error::Inference("output has the wrong size".into()));
    }
    Ok(values
        .chunks_exact(width.max(1))
        .zip(tokens)
        .map(|(row, tokens)| ItemOutput { values: row.to_vec(), tokens })
        .collect())
}
