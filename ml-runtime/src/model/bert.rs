//! A BERT-family encoder (BERT, MiniLM) in Burn, loaded from a Hugging Face
//! `config.json` + `model.safetensors`.
//!
//! The layers are written with Burn's functional ops rather than `burn::nn`
//! modules so that the query/key/value projections run as one fused matmul
//! and attention goes through `burn::tensor::module::attention`, which the
//! Flex backend implements without materialising a softmax per head. On the
//! CPU backend the four projections per layer bypass Burn's matmul for
//! direct gemm calls with bias, residual and GELU folded in
//! ([`super::host_linear`]). Post-norm residual blocks, erf GELU and the
//! config's LayerNorm epsilon reproduce Hugging Face's `BertModel`
//! numerically.

use std::path::Path;

use burn::tensor::activation::{gelu, tanh};
use burn::tensor::module::{attention, embedding, layer_norm, linear};
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use serde::Deserialize;

use super::host_linear::{Epilogue, HostLinear};
use super::packing::{AttentionGroup, PackedTokens};
use crate::error::{Error, Result};
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

/// A dense layer as Burn tensors (wgpu path and the small classifier head).
#[derive(Debug)]
struct Dense {
    weight: Tensor<2>,
    bias: Tensor<1>,
}

/// An encoder projection: on the CPU backend straight through gemm on the
/// host values (see [`host_linear`]), elsewhere with Burn's ops.
#[derive(Debug)]
enum Projection {
    Burn(Box<Dense>),
    Host(HostLinear),
}

impl Projection {
    fn new(weights: HostDense, device: &Device) -> Self {
        if *device == Device::flex() {
            Projection::Host(HostLinear::new(weights.weight, weights.bias))
        } else {
            Projection::Burn(Box::new(weights.upload(device)))
        }
    }

    /// `x·W + b` (or, on the host path, `epilogue`) over the last dimension.
    fn apply(&self, x: Tensor<3>, epilogue: BurnEpilogue) -> Tensor<3> {
        let [b, n, width] = x.dims();
        match self {
            Projection::Burn(layer) => {
                // One 2-D matmul over all tokens: much faster than `batch`
                // small per-sequence products with a broadcast weight.
                let out = linear(x.reshape([b * n, width]), layer.weight.clone(), Some(layer.bias.clone()));
                let out_width = out.dims()[1];
                let out = out.reshape([b, n, out_width]);
                match epilogue {
                    BurnEpilogue::Bias => out,
                    BurnEpilogue::BiasGelu => gelu(out),
                    BurnEpilogue::BiasResidual(residual) => out + residual,
                }
            }
            Projection::Host(layer) => {
                let device = x.device();
                let input = host_values(x);
                let out = match epilogue {
                    BurnEpilogue::Bias => layer.apply(&input, Epilogue::Bias),
                    BurnEpilogue::BiasGelu => layer.apply(&input, Epilogue::BiasGelu),
                    BurnEpilogue::BiasResidual(residual) => {
                        layer.apply(&input, Epilogue::BiasResidual(&host_values(residual)))
                    }
                };
                Tensor::from_data(TensorData::new(out, [b, n, layer.outputs()]), &device)
            }
        }
    }
}

/// What follows the product, as tensors (see [`Epilogue`] for the host form).
#[allow(clippy::large_enum_variant, reason = "a transient argument, moved once per call")]
enum BurnEpilogue {
    Bias,
    BiasGelu,
    BiasResidual(Tensor<3>),
}

/// The tensor's f32 values; free on Flex when the tensor is not shared.
fn host_values(x: Tensor<3>) -> Vec<f32> {
    match x.into_data().try_into_vec::<f32>() {
        Ok(values) => values,
        Err(_) => unreachable!("the encoder computes in f32"),
    }
}

#[derive(Debug)]
struct Norm {
    gamma: Tensor<1>,
    beta: Tensor<1>,
}

#[derive(Debug)]
struct EncoderLayer {
    qkv: Projection,
    attention_out: Projection,
    attention_norm: Norm,
    intermediate: Projection,
    output: Projection,
    output_norm: Norm,
}

/// The encoder with its embeddings, ready to run on one device.
#[derive(Debug)]
pub struct BertEncoder {
    config: BertConfig,
    device: Device,
    word_embeddings: Tensor<2>,
    position_embeddings: Tensor<2>,
    token_type_row: Tensor<1>,
    embeddings_norm: Norm,
    layers: Vec<EncoderLayer>,
}

/// Optional Hugging Face `BertForSequenceClassification` head: tanh pooler on
/// the `[CLS]` token, then a linear classifier.
#[derive(Debug)]
pub struct ClassifierHead {
    pooler: Dense,
    classifier: Dense,
    pub labels: Vec<String>,
}

fn dense(file: &SafetensorsFile, prefix: &str, inp: usize, out: usize) -> Result<HostDense> {
    Ok(HostDense {
        weight: file.host_tensor(&format!("{prefix}.weight"), &[out, inp])?.transposed(),
        bias: file.host_tensor(&format!("{prefix}.bias"), &[out])?,
    })
}

struct HostDense {
    weight: HostTensor,
    bias: HostTensor,
}

impl HostDense {
    fn upload(self, device: &Device) -> Dense {
        Dense { weight: self.weight.to_device(device), bias: self.bias.to_device(device) }
    }
}

fn norm(file: &SafetensorsFile, prefix: &str, width: usize, device: &Device) -> Result<Norm> {
    Ok(Norm {
        gamma: file.host_tensor(&format!("{prefix}.weight"), &[width])?.to_device(device),
        beta: file.host_tensor(&format!("{prefix}.bias"), &[width])?.to_device(device),
    })
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
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let q = dense(file, &format!("{p}.attention.self.query"), h, h)?;
            let k = dense(file, &format!("{p}.attention.self.key"), h, h)?;
            let v = dense(file, &format!("{p}.attention.self.value"), h, h)?;
            let qkv = HostDense {
                weight: HostTensor::concat_columns(&[q.weight, k.weight, v.weight]),
                bias: HostTensor::concat_columns(&[q.bias, k.bias, v.bias]),
            };
            let inter = config.intermediate_size;
            layers.push(EncoderLayer {
                qkv: Projection::new(qkv, device),
                attention_out: Projection::new(dense(file, &format!("{p}.attention.output.dense"), h, h)?, device),
                attention_norm: norm(file, &format!("{p}.attention.output.LayerNorm"), h, device)?,
                intermediate: Projection::new(dense(file, &format!("{p}.intermediate.dense"), h, inter)?, device),
                output: Projection::new(dense(file, &format!("{p}.output.dense"), inter, h)?, device),
                output_norm: norm(file, &format!("{p}.output.LayerNorm"), h, device)?,
            });
        }
        Ok(Self {
            embeddings_norm: norm(file, "embeddings.LayerNorm", h, device)?,
            word_embeddings: word.to_device(device),
            position_embeddings: position.to_device(device),
            token_type_row: token_type_row.to_device(device),
            layers,
            device: device.clone(),
            config,
        })
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Longest sequence the position embeddings cover.
    pub fn max_positions(&self) -> usize {
        self.config.max_position_embeddings
    }

    /// Runs the encoder over packed tokens; returns the last hidden state
    /// of every token, `[tokens, hidden]`, in packed order.
    pub fn forward(&self, tokens: &PackedTokens) -> Tensor<2> {
        let t = tokens.ids.len();
        let h = self.config.hidden_size;
        let eps = self.config.layer_norm_eps;

        let ids: Tensor<2, Int> = Tensor::from_data(TensorData::new(tokens.ids.clone(), [1, t]), &self.device);
        let positions: Tensor<2, Int> =
            Tensor::from_data(TensorData::new(tokens.positions.clone(), [1, t]), &self.device);
        // Shaped `[1, tokens, hidden]`: one "sequence" of all packed tokens
        // for everything but attention.
        let mut x = embedding(self.word_embeddings.clone(), ids)
            + embedding(self.position_embeddings.clone(), positions)
            + self.token_type_row.clone().unsqueeze::<3>();
        x = layer_norm(x, self.embeddings_norm.gamma.clone(), Some(self.embeddings_norm.beta.clone()), eps);

        let groups: Vec<GroupLayout> = tokens.groups.iter().map(|g| GroupLayout::new(g, &self.device)).collect();
        for layer in &self.layers {
            let qkv = layer.qkv.apply(x.clone(), BurnEpilogue::Bias).reshape([t, 3 * h]);
            let context = self.attend(qkv, &groups).reshape([1, t, h]);
            let attended = layer.attention_out.apply(context, BurnEpilogue::BiasResidual(x));
            x = layer_norm(attended, layer.attention_norm.gamma.clone(), Some(layer.attention_norm.beta.clone()), eps);
            let inner = layer.intermediate.apply(x.clone(), BurnEpilogue::BiasGelu);
            let out = layer.output.apply(inner, BurnEpilogue::BiasResidual(x));
            x = layer_norm(out, layer.output_norm.gamma.clone(), Some(layer.output_norm.beta.clone()), eps);
        }
        x.reshape([t, h])
    }

    /// Self-attention of packed `qkv` rows (`[tokens, 3·hidden]`), group by
    /// group in padded blocks; returns the context rows `[tokens, hidden]`.
    fn attend(&self, qkv: Tensor<2>, groups: &[GroupLayout]) -> Tensor<2> {
        let heads = self.config.num_attention_heads;
        let h = self.config.hidden_size;
        let head_dim = h / heads;
        let mut contexts: Vec<Tensor<2>> = groups
            .iter()
            .map(|group| {
                let (sequences, n) = (group.sequences, group.padded_len);
                let rows = qkv.clone().narrow(0, group.first_token, group.tokens);
                let block = match &group.gather {
                    Some(gather) => rows.select(0, gather.clone()),
                    None => rows,
                };
                let block = block.reshape([sequences, n, 3 * heads, head_dim]).swap_dims(1, 2);
                let q = block.clone().narrow(1, 0, heads);
                let k = block.clone().narrow(1, heads, heads);
                let v = block.narrow(1, 2 * heads, heads);
                let mask = group.mask.clone().map(|m| m.expand([sequences, heads, n, n]));
                let context = attention(q, k, v, mask, None, AttentionModuleOptions::default())
                    .swap_dims(1, 2)
                    .reshape([sequences * n, h]);
                match &group.scatter {
                    Some(scatter) => context.select(0, scatter.clone()),
                    None => context,
                }
            })
            .collect();
        if contexts.len() == 1 { contexts.remove(0) } else { Tensor::cat(contexts, 0) }
    }

    /// Mean over each sequence's tokens, then L2-normalised:
    /// sentence-transformers' pooling for all-MiniLM-L6-v2. `hidden` is
    /// [`Self::forward`]'s output; returns `[sequences, hidden]` in input order.
    pub fn mean_pooled_normalised(&self, tokens: &PackedTokens, hidden: Tensor<2>) -> Tensor<2> {
        // Averaging as one product: row i of `weights` holds 1/len over
        // sequence i's packed tokens.
        let t = tokens.ids.len();
        let mut weights = vec![0.0f32; tokens.sequences() * t];
        for (i, (&start, &len)) in tokens.starts.iter().zip(&tokens.lengths).enumerate() {
            weights[i * t + start..i * t + start + len].fill(1.0 / len as f32);
        }
        let weights = Tensor::<2>::from_data(TensorData::new(weights, [tokens.sequences(), t]), &self.device);
        let mean = weights.matmul(hidden);
        let norm = mean.clone().powf_scalar(2.0).sum_dim(1).sqrt().clamp_min(1e-12);
        mean / norm
    }

    /// Each sequence's first (`[CLS]`) token's hidden state, in input order.
    pub fn first_tokens(&self, tokens: &PackedTokens, hidden: Tensor<2>) -> Tensor<2> {
        let starts: Vec<i64> = tokens.starts.iter().map(|&s| s as i64).collect();
        let count = starts.len();
        hidden.select(0, Tensor::<1, Int>::from_data(TensorData::new(starts, [count]), &self.device))
    }
}

/// An attention group's index tensors, built once per batch and shared by
/// every layer.
struct GroupLayout {
    first_token: usize,
    tokens: usize,
    sequences: usize,
    padded_len: usize,
    /// Packed rows → padded block; `None` when the rows already are the block.
    gather: Option<Tensor<1, Int>>,
    /// Padded block → packed rows.
    scatter: Option<Tensor<1, Int>>,
    /// `[sequences, 1, 1, padded_len]`, true at padding keys.
    mask: Option<Tensor<4, Bool>>,
}

impl GroupLayout {
    fn new(group: &AttentionGroup, device: &Device) -> Self {
        let (sequences, n) = (group.lengths.len(), group.padded_len);
        let index = |values: Vec<i64>| {
            let len = values.len();
            Tensor::<1, Int>::from_data(TensorData::new(values, [len]), device)
        };
        let uniform = group.is_uniform();
        Self {
            first_token: group.first_token,
            tokens: group.tokens,
            sequences,
            padded_len: n,
            gather: (!uniform).then(|| index(group.gather_rows())),
            scatter: (!uniform).then(|| index(group.scatter_slots())),
            mask: (!uniform).then(|| {
                Tensor::<4, Bool>::from_data(TensorData::new(group.padding_mask(), [sequences, 1, 1, n]), device)
            }),
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
