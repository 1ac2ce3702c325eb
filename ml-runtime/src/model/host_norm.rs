//! LayerNorm over host rows, in place: the CPU encoder's normalisation after
//! the embeddings and after each residual add.
//!
//! One row (384 floats for MiniLM) stays in L1 between the statistics pass
//! and the scaling pass, so this is one trip through memory; Burn's
//! functional `layer_norm` is several tensor ops, each a pass and an
//! allocation.

use rayon::prelude::*;

use super::lanes;

/// Rows per pool task: below this a batch is normalised on the calling
/// thread (a 15-token sentence is done before the pool would wake up).
const ROWS_PER_TASK: usize = 64;

/// Learned scale and shift of one LayerNorm.
#[derive(Debug)]
pub struct LayerNorm {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub eps: f32,
}

impl LayerNorm {
    /// Normalises every `gamma.len()`-wide row of `x` in place.
    pub fn apply(&self, x: &mut [f32]) {
        let width = self.gamma.len();
        assert_eq!(x.len() % width, 0, "rows must be {width} wide");
        if x.len() <= ROWS_PER_TASK * width {
            x.chunks_exact_mut(width).for_each(|row| self.normalise_row(row));
        } else {
            x.par_chunks_mut(ROWS_PER_TASK * width)
                .for_each(|rows| rows.chunks_exact_mut(width).for_each(|row| self.normalise_row(row)));
        }
    }

    fn normalise_row(&self, row: &mut [f32]) {
        let n = row.len() as f32;
        let mean = lanes::sum(row) / n;
        let variance = lanes::sum_of(row, |v| (v - mean) * (v - mean)) / n;
        let inverse = 1.0 / (variance + self.eps).sqrt();
        for ((v, g), b) in row.iter_mut().zip(&self.gamma).zip(&self.beta) {
            *v = (*v - mean) * inverse * g + b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_match_the_textbook_formula_on_and_off_the_pool() {
        let width = 7;
        let norm = LayerNorm {
            gamma: (0..width).map(|i| 0.5 + i as f32 * 0.1).collect(),
            beta: (0..width).map(|i| i as f32 * -0.2).collect(),
            eps: 1e-12,
        };
        for rows in [3, 3 * ROWS_PER_TASK + 5] {
            let input: Vec<f32> = (0..rows * width).map(|i| ((i * 13 % 17) as f32 - 8.0) * 0.7).collect();
            let mut x = input.clone();
            norm.apply(&mut x);
            for (row_in, row_out) in input.chunks(width).zip(x.chunks(width)) {
                let mean: f64 = row_in.iter().map(|&v| f64::from(v)).sum::<f64>() / width as f64;
                let var: f64 = row_in.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / width as f64;
                for j in 0..width {
                    let want = (f64::from(row_in[j]) - mean) / (var + 1e-12).sqrt() * f64::from(norm.gamma[j])
                        + f64::from(norm.beta[j]);
                    assert!((f64::from(row_out[j]) - want).abs() < 1e-5, "{} vs {want}", row_out[j]);
                }
            }
        }
    }
}
