//! The BERT encoder on the CPU: every step on host `Vec<f32>` rows, with no
//! tensor library in between.
//!
//! Why not Burn here: a profile of batch 1 showed most of a short sentence's
//! time outside the dense products — tensor ops for embeddings, LayerNorm
//! (several passes each), attention's gather/scatter and head transposes,
//! and copies between Burn tensors and the host buffers gemm needs. On host
//! rows each step is one pass: embedding sum, [`LayerNorm`] in place, dense
//! layers with their epilogues folded in ([`HostLinear`]), attention that
//! reads heads in place ([`self_attention`]), and pooling. The wgpu backend
//! keeps Burn's ops (`super::bert`); both are checked against the same
//! reference embeddings.

use super::host_attention::{Heads, self_attention};
use super::host_linear::{Epilogue, HostLinear};
use super::host_norm::LayerNorm;
use super::packing::PackedTokens;

/// One post-norm transformer block.
#[derive(Debug)]
pub struct HostLayer {
    /// Queries, keys and values as one `[hidden, 3·hidden]` product.
    pub qkv: HostLinear,
    pub attention_out: HostLinear,
    pub attention_norm: LayerNorm,
    pub intermediate: HostLinear,
    pub output: HostLinear,
    pub output_norm: LayerNorm,
}

/// Embedding tables and layers, all in host memory.
#[derive(Debug)]
pub struct HostEncoder {
    pub hidden: usize,
    pub heads: usize,
    /// `[vocab, hidden]`
    pub word_embeddings: Vec<f32>,
    /// `[max positions, hidden]`
    pub position_embeddings: Vec<f32>,
    /// Token type 0's row: inputs are single-segment.
    pub token_type_row: Vec<f32>,
    pub embeddings_norm: LayerNorm,
    pub layers: Vec<HostLayer>,
}

impl HostEncoder {
    /// The last hidden state of every packed token, `[tokens, hidden]`.
    /// Ids and positions must be in range (checked before queueing).
    pub fn forward(&self, tokens: &PackedTokens) -> Vec<f32> {
        let h = self.hidden;
        let mut x = vec![0.0; tokens.ids.len() * h];
        for ((row, &id), &position) in x.chunks_exact_mut(h).zip(&tokens.ids).zip(&tokens.positions) {
            let word = &self.word_embeddings[id as usize * h..][..h];
            let place = &self.position_embeddings[position as usize * h..][..h];
            for (((v, w), p), t) in row.iter_mut().zip(word).zip(place).zip(&self.token_type_row) {
                *v = w + p + t;
            }
        }
        self.embeddings_norm.apply(&mut x);

        let spans: Vec<(usize, usize)> = tokens.starts.iter().copied().zip(tokens.lengths.iter().copied()).collect();
        let heads = Heads { count: self.heads, dim: h / self.heads };
        for layer in &self.layers {
            let qkv = layer.qkv.apply(&x, Epilogue::Bias);
            let context = self_attention(&qkv, &spans, heads);
            let mut attended = layer.attention_out.apply(&context, Epilogue::BiasResidual(&x));
            layer.attention_norm.apply(&mut attended);
            let inner = layer.intermediate.apply(&attended, Epilogue::BiasGelu);
            x = layer.output.apply(&inner, Epilogue::BiasResidual(&attended));
            layer.output_norm.apply(&mut x);
        }
        x
    }

    /// Mean over each sequence's rows of `hidden`, L2-normalised:
    /// sentence-transformers' pooling for all-MiniLM-L6-v2. Returns
    /// `[sequences, hidden]` in input order.
    pub fn mean_pooled_normalised(&self, tokens: &PackedTokens, hidden: &[f32]) -> Vec<f32> {
        let h = self.hidden;
        let mut pooled = vec![0.0; tokens.sequences() * h];
        for ((out, &start), &len) in pooled.chunks_exact_mut(h).zip(&tokens.starts).zip(&tokens.lengths) {
            for row in hidden[start * h..(start + len) * h].chunks_exact(h) {
                out.iter_mut().zip(row).for_each(|(o, v)| *o += v);
            }
            let inverse_len = 1.0 / len as f32;
            out.iter_mut().for_each(|o| *o *= inverse_len);
            let norm = out.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            out.iter_mut().for_each(|o| *o /= norm);
        }
        pooled
    }

    /// Each sequence's first (`[CLS]`) row of `hidden`, in input order.
    pub fn first_tokens(&self, tokens: &PackedTokens, hidden: &[f32]) -> Vec<f32> {
        let h = self.hidden;
        tokens.starts.iter().flat_map(|&start| hidden[start * h..(start + 1) * h].iter().copied()).collect()
    }
}
