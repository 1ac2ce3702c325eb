//! The BERT encoder through Burn's tensor ops, for devices other than the
//! CPU (wgpu): the query/key/value projections run as one fused matmul and
//! attention goes through `burn::tensor::module::attention` per length group
//! of the packed batch (`super::packing`), with a key mask where a group's
//! lengths differ. The CPU runs `super::host_encoder` instead; both are
//! checked against the same reference embeddings.

use burn::tensor::activation::gelu;
use burn::tensor::module::{attention, embedding, layer_norm, linear};
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use super::packing::{AttentionGroup, PackedTokens};

/// A dense layer as Burn tensors: `weight: [inputs, outputs]`.
#[derive(Debug)]
pub struct Dense {
    pub weight: Tensor<2>,
    pub bias: Tensor<1>,
}

impl Dense {
    /// `x·W + b` over the last dimension, as one 2-D matmul over all tokens
    /// (much faster than `batch` small products with a broadcast weight).
    fn apply(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, n, width] = x.dims();
        let out = linear(x.reshape([b * n, width]), self.weight.clone(), Some(self.bias.clone()));
        let out_width = out.dims()[1];
        out.reshape([b, n, out_width])
    }
}

#[derive(Debug)]
pub struct Norm {
    pub gamma: Tensor<1>,
    pub beta: Tensor<1>,
}

#[derive(Debug)]
pub struct BurnLayer {
    pub qkv: Dense,
    pub attention_out: Dense,
    pub attention_norm: Norm,
    pub intermediate: Dense,
    pub output: Dense,
    pub output_norm: Norm,
}

/// Embeddings and layers on one Burn device.
#[derive(Debug)]
pub struct BurnEncoder {
    pub device: Device,
    pub hidden: usize,
    pub heads: usize,
    pub layer_norm_eps: f64,
    pub word_embeddings: Tensor<2>,
    pub position_embeddings: Tensor<2>,
    pub token_type_row: Tensor<1>,
    pub embeddings_norm: Norm,
    pub layers: Vec<BurnLayer>,
}

impl BurnEncoder {
    /// Runs the encoder over packed tokens; returns the last hidden state
    /// of every token, `[tokens, hidden]`, in packed order.
    pub fn forward(&self, tokens: &PackedTokens) -> Tensor<2> {
        let t = tokens.ids.len();
        let h = self.hidden;
        let eps = self.layer_norm_eps;

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
            let qkv = layer.qkv.apply(x.clone()).reshape([t, 3 * h]);
            let context = self.attend(qkv, &groups).reshape([1, t, h]);
            let attended = layer.attention_out.apply(context) + x;
            x = layer_norm(attended, layer.attention_norm.gamma.clone(), Some(layer.attention_norm.beta.clone()), eps);
            let inner = gelu(layer.intermediate.apply(x.clone()));
            let out = layer.output.apply(inner) + x;
            x = layer_norm(out, layer.output_norm.gamma.clone(), Some(layer.output_norm.beta.clone()), eps);
        }
        x.reshape([t, h])
    }

    /// Self-attention of packed `qkv` rows (`[tokens, 3·hidden]`), group by
    /// group in padded blocks; returns the context rows `[tokens, hidden]`.
    fn attend(&self, qkv: Tensor<2>, groups: &[GroupLayout]) -> Tensor<2> {
        let (heads, h) = (self.heads, self.hidden);
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
