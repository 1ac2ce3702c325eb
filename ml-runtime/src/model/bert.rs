//! A BERT-family encoder (BERT, MiniLM) loaded from a Hugging Face
//! `config.json` + `model.safetensors`, and the optional classifier head.
//!
//! Loading reads every tensor once into host memory, then builds the
//! encoder for the device: on the CPU (Flex) the host encoder
//! ([`super::host_encoder`]: direct gemm, no tensor library), elsewhere
//! Burn's ops ([`super::burn_encoder`]). Post-norm residual blocks, erf GELU
//! and the config's LayerNorm epsilon reproduce Hugging Face's `BertModel`
//! numerically on both.

use std::path::Path;

use burn::tensor::activation::tanh;
use burn::tensor::module::linear;
use burn::tensor::{Device, Tensor, TensorData};
use serde::Deserialize;

use super::burn_encoder::{BurnEncoder, BurnLayer, Dense, Norm};
use super::host_encoder::{HostEncoder, HostLayer};
use super::host_linear::HostLinear;
use super::host_norm::LayerNorm;
use super::packing::PackedTokens;
use crate::error::{Error, Result};
use crate::threads::on_compute_pool;
use crate::weights::{HostTensor, SafetensorsFile};

/// The fields of a Hugging Face BERT `config.json` that shape the network.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Class names for classification checkpoints, keyed by index.
    #[serde(default)]
    pub id2label: std::collections::BTreeMap<String, String>,
}

fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".to_owned()
}

impl BertConfig {
    /// Parses and sanity-checks `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::model_file(path, e))?;
        let config: Self =
            serde_json::from_str(&text).map_err(|e| Error::model_file(path, format!("not a BERT config.json: {e}")))?;
        if config.num_attention_heads == 0 || !config.hidden_size.is_multiple_of(config.num_attention_heads) {
            return Err(Error::model_file(path, "hidden_size must be a multiple of num_attention_heads"));
        }
        if config.hidden_act != "gelu" {
            return Err(Error::model_file(
                path,
                format!("hidden_act '{}' is not supported (only exact 'gelu')", config.hidden_act),
            ));
        }
        Ok(config)
    }
}

/// A dense layer's host weights, `weight: [inputs, outputs]`.
struct HostDense {
    weight: HostTensor,
    bias: HostTensor,
}

impl HostDense {
    fn upload(self, device: &Device) -> Dense {
        Dense { weight: self.weight.to_device(device), bias: self.bias.to_device(device) }
    }

    fn host(self) -> HostLinear {
        HostLinear::new(self.weight, self.bias)
    }
}

fn dense(file: &SafetensorsFile, prefix: &str, inp: usize, out: usize) -> Result<HostDense> {
    Ok(HostDense {
        weight: file.host_tensor(&format!("{prefix}.weight"), &[out, inp])?.transposed(),
        bias: file.host_tensor(&format!("{prefix}.bias"), &[out])?,
    })
}

/// A LayerNorm's host parameters.
struct HostNorm {
    gamma: HostTensor,
    beta: HostTensor,
}

impl HostNorm {
    fn upload(self, device: &Device) -> Norm {
        Norm { gamma: self.gamma.to_device(device), beta: self.beta.to_device(device) }
    }

    fn host(self, eps: f64) -> LayerNorm {
        LayerNorm { gamma: self.gamma.values, beta: self.beta.values, eps: eps as f32 }
    }
}

fn norm(file: &SafetensorsFile, prefix: &str, width: usize) -> Result<HostNorm> {
    Ok(HostNorm {
        gamma: file.host_tensor(&format!("{prefix}.weight"), &[width])?,
        beta: file.host_tensor(&format!("{prefix}.bias"), &[width])?,
    })
}

/// One block's weights as read from the file.
struct LayerWeights {
    qkv: HostDense,
    attention_out: HostDense,
    attention_norm: HostNorm,
    intermediate: HostDense,
    output: HostDense,
    output_norm: HostNorm,
}

impl LayerWeights {
    fn read(file: &SafetensorsFile, config: &BertConfig, i: usize) -> Result<Self> {
        let (h, inter) = (config.hidden_size, config.intermediate_size);
        let p = format!("encoder.layer.{i}");
        let q = dense(file, &format!("{p}.attention.self.query"), h, h)?;
        let k = dense(file, &format!("{p}.attention.self.key"), h, h)?;
        let v = dense(file, &format!("{p}.attention.self.value"), h, h)?;
        Ok(Self {
            qkv: HostDense {
                weight: HostTensor::concat_columns(&[q.weight, k.weight, v.weight]),
                bias: HostTensor::concat_columns(&[q.bias, k.bias, v.bias]),
            },
            attention_out: dense(file, &format!("{p}.attention.output.dense"), h, h)?,
            attention_norm: norm(file, &format!("{p}.attention.output.LayerNorm"), h)?,
            intermediate: dense(file, &format!("{p}.intermediate.dense"), h, inter)?,
            output: dense(file, &format!("{p}.output.dense"), inter, h)?,
            output_norm: norm(file, &format!("{p}.output.LayerNorm"), h)?,
        })
    }
}

/// The encoder for one device.
#[derive(Debug)]
enum Layers {
    Host(HostEncoder),
    /// Boxed: its tensor handles make it several times the host variant.
    Burn(Box<BurnEncoder>),
}

/// The encoder with its embeddings, ready to run on one device.
#[derive(Debug)]
pub struct BertEncoder {
    config: BertConfig,
    device: Device,
    layers: Layers,
}

/// Optional Hugging Face `BertForSequenceClassification` head: tanh pooler on
/// the `[CLS]` token, then a linear classifier.
#[derive(Debug)]
pub struct ClassifierHead {
    pooler: Dense,
    classifier: Dense,
    pub labels: Vec<String>,
}

impl BertEncoder {
    /// Loads every encoder tensor; a missing or mis-shaped one is an error.
    pub fn load(config: BertConfig, file: &SafetensorsFile, device: &Device) -> Result<Self> {
        let h = config.hidden_size;
        let word = file.host_tensor("embeddings.word_embeddings.weight", &[config.vocab_size, h])?;
        let position =
            file.host_tensor("embeddings.position_embeddings.weight", &[config.max_position_embeddings, h])?;
        let token_type = file.host_tensor("embeddings.token_type_embeddings.weight", &[config.type_vocab_size, h])?;
        // Single-segment inputs only: every token has type 0, so the whole
        // token-type lookup is one broadcast row.
        let token_type_row = HostTensor { shape: vec![h], values: token_type.values[..h].to_vec() };
        let embeddings_norm = norm(file, "embeddings.LayerNorm", h)?;
        let weights: Vec<LayerWeights> =
            (0..config.num_hidden_layers).map(|i| LayerWeights::read(file, &config, i)).collect::<Result<_>>()?;
        let eps = config.layer_norm_eps;
        let layers = if *device == Device::flex() {
            Layers::Host(HostEncoder {
                hidden: h,
                heads: config.num_attention_heads,
                word_embeddings: word.values,
                position_embeddings: position.values,
                token_type_row: token_type_row.values,
                embeddings_norm: embeddings_norm.host(eps),
                layers: weights
                    .into_iter()
                    .map(|w| HostLayer {
                        qkv: w.qkv.host(),
                        attention_out: w.attention_out.host(),
                        attention_norm: w.attention_norm.host(eps),
                        intermediate: w.intermediate.host(),
                        output: w.output.host(),
                        output_norm: w.output_norm.host(eps),
                    })
                    .collect(),
            })
        } else {
            Layers::Burn(Box::new(BurnEncoder {
                device: device.clone(),
                hidden: h,
                heads: config.num_attention_heads,
                layer_norm_eps: eps,
                word_embeddings: word.to_device(device),
                position_embeddings: position.to_device(device),
                token_type_row: token_type_row.to_device(device),
                embeddings_norm: embeddings_norm.upload(device),
                layers: weights
                    .into_iter()
                    .map(|w| BurnLayer {
                        qkv: w.qkv.upload(device),
                        attention_out: w.attention_out.upload(device),
                        attention_norm: w.attention_norm.upload(device),
                        intermediate: w.intermediate.upload(device),
                        output: w.output.upload(device),
                        output_norm: w.output_norm.upload(device),
                    })
                    .collect(),
            }))
        };
        Ok(Self { config, device: device.clone(), layers })
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Longest sequence the position embeddings cover.
    pub fn max_positions(&self) -> usize {
        self.config.max_position_embeddings
    }

    /// Mean-pooled, L2-normalised embeddings (sentence-transformers' pooling
    /// for all-MiniLM-L6-v2), `[sequences, hidden]` row-major, input order.
    pub fn embed(&self, tokens: &PackedTokens) -> Vec<f32> {
        match &self.layers {
            Layers::Host(encoder) => {
                on_compute_pool(|| encoder.mean_pooled_normalised(tokens, &encoder.forward(tokens)))
            }
            Layers::Burn(encoder) => {
                let pooled = encoder.mean_pooled_normalised(tokens, encoder.forward(tokens));
                match pooled.into_data().try_into_vec::<f32>() {
                    Ok(values) => values,
                    Err(_) => unreachable!("the encoder computes in f32"),
                }
            }
        }
    }

    /// Each sequence's first (`[CLS]`) token's hidden state, `[sequences,
    /// hidden]` on the model's device, in input order.
    pub fn first_tokens(&self, tokens: &PackedTokens) -> Tensor<2> {
        match &self.layers {
            Layers::Host(encoder) => {
                let cls = on_compute_pool(|| encoder.first_tokens(tokens, &encoder.forward(tokens)));
                Tensor::from_data(TensorData::new(cls, [tokens.sequences(), self.config.hidden_size]), &self.device)
            }
            Layers::Burn(encoder) => encoder.first_tokens(tokens, encoder.forward(tokens)),
        }
    }
}

impl ClassifierHead {
    /// Loads `pooler.dense` and `classifier` from a classification checkpoint.
    pub fn load(config: &BertConfig, file: &SafetensorsFile, device: &Device) -> Result<Self> {
        let h = config.hidden_size;
        let classes = match file.shape_of("classifier.bias").as_deref() {
            Some(&[classes]) if classes > 0 => classes,
            _ => {
                return Err(Error::Config(
                    "task 'classification' needs 'classifier.weight' and 'classifier.bias' \
                     tensors (a BertForSequenceClassification checkpoint)"
                        .to_owned(),
                ));
            }
        };
        let labels = (0..classes)
            .map(|i| config.id2label.get(&i.to_string()).cloned().unwrap_or_else(|| format!("LABEL_{i}")))
            .collect();
        Ok(Self {
            pooler: dense(file, "pooler.dense", h, h)?.upload(device),
            classifier: dense(file, "classifier", h, classes)?.upload(device),
            labels,
        })
    }

    /// Logits `[sequences, classes]` from each sequence's `[CLS]` hidden
    /// state ([`BertEncoder::first_tokens`]).
    pub fn logits(&self, cls: Tensor<2>) -> Tensor<2> {
        let pooled = tanh(linear(cls, self.pooler.weight.clone(), Some(self.pooler.bias.clone())));
        linear(pooled, self.classifier.weight.clone(), Some(self.classifier.bias.clone()))
    }
}
