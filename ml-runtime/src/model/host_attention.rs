//! Multi-head self-attention on the CPU, straight from the packed QKV rows.
//!
//! The encoder packs a batch's sequences end to end (`super::packing`), so
//! each sequence is a contiguous run of rows and attends only to itself:
//! there is no padding and no mask. Every (sequence, head) pair is one task
//! on the compute pool: `softmax(Q·Kᵀ/√d)·V` with two strided products that
//! read the head's columns in place ([`super::host_gemm`]), so attention
//! costs no gathers, scatters or transposes, and one short sentence is
//! spread over the heads.

use rayon::prelude::*;

use super::host_gemm::{MatMut, MatRef, Threads, matmul};
use super::lanes;

/// The shape of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub count: usize,
    pub dim: usize,
}

impl Heads {
    fn hidden(self) -> usize {
        self.count * self.dim
    }
}

/// Context rows `[tokens, hidden]` for packed `qkv` rows `[tokens, 3·hidden]`
/// (queries, then keys, then values, each `heads × dim` wide); `spans` are
/// the sequences' `(first row, length)`, covering every row.
pub fn self_attention(qkv: &[f32], spans: &[(usize, usize)], heads: Heads) -> Vec<f32> {
    let hidden = heads.hidden();
    let tokens = qkv.len() / (3 * hidden);
    assert_eq!(qkv.len(), tokens * 3 * hidden, "qkv must be [tokens, 3·hidden]");
    let tasks: Vec<(usize, usize, usize)> =
        spans.iter().flat_map(|&(start, len)| (0..heads.count).map(move |head| (start, len, head))).collect();
    let per_head: Vec<Vec<f32>> =
        tasks.par_iter().map(|&(start, len, head)| attend_one_head(qkv, start, len, head, heads)).collect();
    let mut context = vec![0.0; tokens * hidden];
    for (&(start, len, head), values) in tasks.iter().zip(&per_head) {
        for (i, row) in values.chunks_exact(heads.dim).enumerate() {
            let at = (start + i) * hidden + head * heads.dim;
            context[at..at + heads.dim].copy_from_slice(row);
        }
        debug_assert_eq!(values.len(), len * heads.dim);
    }
    context
}

/// `softmax(Q·Kᵀ/√d)·V` for one head of the sequence at rows
/// `start..start + len`; returns `[len, dim]`.
fn attend_one_head(qkv: &[f32], start: usize, len: usize, head: usize, heads: Heads) -> Vec<f32> {
    let (hidden, dim) = (heads.hidden(), heads.dim);
    let column = |part: usize| MatRef {
        data: qkv,
        offset: start * 3 * hidden + part * hidden + head * dim,
        rows: len,
        cols: dim,
        row_stride: 3 * hidden,
        col_stride: 1,
    };
    let (queries, keys, values) = (column(0), column(1), column(2));
    let mut scores = vec![0.0; len * len];
    let scale = 1.0 / (dim as f32).sqrt();
    matmul(MatMut::row_major(&mut scores, len, len), queries, keys.transposed(), scale, false, Threads::One);
    scores.chunks_exact_mut(len).for_each(softmax_in_place);
    let mut out = vec![0.0; len * dim];
    matmul(
        MatMut::row_major(&mut out, len, dim),
        MatRef::row_major(&scores, len, len),
        values,
        1.0,
        false,
        Threads::One,
    );
    out
}

/// Numerically stable softmax of one row of scores, as three SIMD passes
/// (the exponentials apart from their sum, so neither waits on the other).
fn softmax_in_place(row: &mut [f32]) {
    let max = lanes::max(row);
    row.iter_mut().for_each(|v| *v = exp(*v - max));
    let inverse = 1.0 / lanes::sum(row);
    row.iter_mut().for_each(|v| *v *= inverse);
}

/// `eˣ` for f32 without branches, calls or rounding instructions the
/// baseline x86-64 target lacks, so softmax loops vectorise (a 256-token
/// batch of 32 takes ~150 million of them; libm's `expf` and even
/// `f32::round` are a call per element). Range reduction `x = n·ln2 + r`
/// with |r| ≤ ln2/2, `n` rounded by adding and subtracting 1.5·2²³; a
/// degree-6 Taylor polynomial for `eʳ` (error below f32 rounding on that
/// interval); `2ⁿ` built in the exponent bits, read out of the mantissa of
/// `n + 127 + 2²³`. Inputs are clamped to [-87, 88], where `2ⁿ` is a normal
/// f32; softmax only passes values ≤ 0, and anything below -87 is 0 after
/// normalisation anyway.
fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4; // ln 2 split in two for an exact n·ln2
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer
    const MANTISSA: f32 = 8_388_608.0; // 2²³: an integer below it lands in the mantissa bits
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let biased = (n + 127.0 + MANTISSA).to_bits() & 0xff; // n + 127, in 1..=254
    p * f32::from_bits(biased << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_within_a_few_ulp() {
        for i in -86_900..=87_900 {
            let x = i as f32 * 1e-3;
            let (got, want) = (exp(x), x.exp());
            assert!(((got - want) / want).abs() < 5e-7, "exp({x}) = {got}, std says {want}");
        }
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) >= 0.0 && exp(-1000.0) < 1e-37);
    }

    /// Textbook attention for one sequence, one head at a time.
    fn naive(qkv: &[f32], start: usize, len: usize, heads: Heads) -> Vec<f32> {
        let (hidden, dim) = (heads.hidden(), heads.dim);
        let at =
            |row: usize, part: usize, head: usize, k: usize| qkv[row * 3 * hidden + part * hidden + head * dim + k];
        let mut out = vec![0.0; len * hidden];
        for head in 0..heads.count {
            for i in 0..len {
                let scores: Vec<f32> = (0..len)
                    .map(|j| {
                        (0..dim).map(|k| at(start + i, 0, head, k) * at(start + j, 1, head, k)).sum::<f32>()
                            / (dim as f32).sqrt()
                    })
                    .collect();
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let weights: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f32 = weights.iter().sum();
                for k in 0..dim {
                    let value: f32 = (0..len).map(|j| weights[j] * at(start + j, 2, head, k)).sum();
                    out[i * hidden + head * dim + k] = value / total;
                }
            }
        }
        out
    }

    #[test]
    fn packed_sequences_match_naive_attention_each_on_its_own() {
        let heads = Heads { count: 3, dim: 4 };
        let spans = [(0, 5), (5, 1), (6, 17)];
        let tokens = 23;
        let qkv: Vec<f32> = (0..tokens * 3 * heads.hidden()).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.03).collect();
        let context = self_attention(&qkv, &spans, heads);
        for &(start, len) in &spans {
            let expected = naive(&qkv, start, len, heads);
            let got = &context[start * heads.hidden()..(start + len) * heads.hidden()];
            for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
                assert!((g - e).abs() < 1e-5, "sequence at {start}, element {i}: {g} vs {e}");
            }
        }
    }
}
