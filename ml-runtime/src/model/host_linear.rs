//! Dense layers on host memory, for the CPU (Flex) backend: one `gemm` call
//! per layer with the bias, the residual connection and GELU folded in.
//!
//! Why not Burn's `linear`: measured on a 2-core AVX2 machine, Flex's matmul
//! of `[512, 384] × [384, 1152]` (MiniLM's fused QKV at batch 32) ran at
//! ~70 GFLOP/s while the same `gemm::gemm` call made directly ran at
//! ~160 GFLOP/s, and the bias add, the residual add and GELU were extra
//! passes over memory. Here the output buffer is pre-filled with
//! `bias (+ residual)` and gemm accumulates into it
//! (`dst := dst + x·W`), and GELU runs over the output in the same pool.
//!
//! The wgpu backend keeps Burn's ops; both paths are checked against the
//! same MiniLM reference embeddings.

use rayon::prelude::*;

use super::host_gemm::{MatMut, MatRef, Threads, matmul};
use super::panel_gemm::PanelWeights;
use crate::weights::HostTensor;

/// Below this many multiply-adds a `gemm` product runs on the calling
/// thread: for a single short sentence, waking the pool costs more than it
/// saves. The packed panels have their own threshold
/// ([`PanelWeights::parallel_min_macs`]).
const PARALLEL_MIN_MACS: usize = 1 << 20;

/// Up to this many rows a product streams the packed panels
/// ([`PanelWeights`]); above it `gemm` reuses each weight enough times per
/// read to run near the cores' peak on its own.
const PANEL_MAX_ROWS: usize = 128;

/// `y = x · W + b` for row-major `x: [rows, inputs]`.
#[derive(Debug)]
pub struct HostLinear {
    /// `[inputs, outputs]`, row-major.
    weight: Vec<f32>,
    bias: Vec<f32>,
    inputs: usize,
    outputs: usize,
    /// The same weights packed for small batches, on CPUs with the kernel.
    panels: Option<PanelWeights>,
}

/// What is folded into the product's output.
#[derive(Debug, Clone, Copy)]
pub enum Epilogue<'a> {
    /// `x·W + b`
    Bias,
    /// `GELU(x·W + b)` (exact, erf-based GELU)
    BiasGelu,
    /// `x·W + b + residual`, `residual: [rows, outputs]`
    BiasResidual(&'a [f32]),
}

impl HostLinear {
    /// `weight: [inputs, outputs]`, `bias: [outputs]`.
    pub fn new(weight: HostTensor, bias: HostTensor) -> Self {
        let (inputs, outputs) = (weight.shape[0], weight.shape[1]);
        assert_eq!(weight.values.len(), inputs * outputs, "weight shape and values disagree");
        assert_eq!(bias.values.len(), outputs, "bias length must equal the output width");
        let panels = PanelWeights::for_this_cpu(&weight.values, inputs, outputs);
        Self { weight: weight.values, bias: bias.values, inputs, outputs, panels }
    }

    /// Applies the layer to `x` (`rows × inputs` values, row-major).
    pub fn apply(&self, x: &[f32], epilogue: Epilogue<'_>) -> Vec<f32> {
        assert_eq!(x.len() % self.inputs, 0, "input width must be {}", self.inputs);
        let rows = x.len() / self.inputs;
        let mut out = Vec::with_capacity(rows * self.outputs);
        match epilogue {
            Epilogue::Bias | Epilogue::BiasGelu => {
                for _ in 0..rows {
                    out.extend_from_slice(&self.bias);
                }
            }
            Epilogue::BiasResidual(residual) => {
                assert_eq!(residual.len(), rows * self.outputs, "residual must be [rows, outputs]");
                for row in residual.chunks_exact(self.outputs) {
                    out.extend(row.iter().zip(&self.bias).map(|(r, b)| r + b));
                }
            }
        }
        self.accumulate_product(x, rows, &mut out);
        if let Epilogue::BiasGelu = epilogue {
            out.par_chunks_mut(8192).for_each(|chunk| chunk.iter_mut().for_each(|v| *v = gelu(*v)));
        }
        out
    }

    /// `out += x · W`, all row-major.
    fn accumulate_product(&self, x: &[f32], rows: usize, out: &mut [f32]) {
        let (k, n) = (self.inputs, self.outputs);
        if let Some(panels) = self.panels.as_ref().filter(|_| rows <= PANEL_MAX_ROWS) {
            panels.accumulate(x, out, rows * k * n >= panels.parallel_min_macs());
            return;
        }
        let parallel = rows * k * n >= PARALLEL_MIN_MACS;
        let threads = if parallel { Threads::Pool } else { Threads::One };
        matmul(
            MatMut::row_major(out, rows, n),
            MatRef::row_major(x, rows, k),
            MatRef::row_major(&self.weight, k, n),
            1.0,
            true, // accumulate onto bias (+ residual)
            threads,
        );
    }
}

/// Exact GELU, `x·Φ(x)`, with Φ through [`erf`].
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x / std::f32::consts::SQRT_2))
}

/// `erf` for f32 as a branch-free rational function (odd degree-13
/// numerator over even degree-8 denominator; the coefficients are the
/// published minimax fit Eigen and XLA use), so the loop vectorises; libm's
/// `erff` is branchy and was ~13% of a MiniLM profile. Beyond |x| = 4 erf is
/// ±1 in f32. Within 1e-6 of libm's `erff` everywhere (checked below).
fn erf(x: f32) -> f32 {
    const ALPHA: [f32; 7] = [
        -2.726_142_3e-10,
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.954_600_1e-3,
        -1.609_603_3e-2,
    ];
    const BETA: [f32; 5] = [-1.456_607_2e-5, -2.133_740_6e-4, -1.682_827e-3, -7.373_329_2e-3, -1.426_474e-2];
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = ALPHA.iter().skip(1).fold(ALPHA[0], |acc, &a| acc * x2 + a) * x;
    let q = BETA.iter().skip(1).fold(BETA[0], |acc, &b| acc * x2 + b);
    p / q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_libm_across_the_range() {
        let mut worst = 0.0f32;
        for i in -60_000..=60_000 {
            let x = i as f32 * 1e-4; // -6 .. 6 in steps of 1e-4
            worst = worst.max((erf(x) - libm::erff(x)).abs());
        }
        assert!(worst < 1e-6, "max |erf - erff| = {worst}");
        assert_eq!(erf(0.0), 0.0);
        assert!((erf(10.0) - 1.0).abs() < 1e-6 && (erf(-10.0) + 1.0).abs() < 1e-6);
    }

    fn layer(inputs: usize, outputs: usize) -> HostLinear {
        let weight = (0..inputs * outputs).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.05).collect();
        let bias = (0..outputs).map(|j| j as f32 * 0.1 - 0.3).collect();
        HostLinear::new(
            HostTensor { shape: vec![inputs, outputs], values: weight },
            HostTensor { shape: vec![outputs], values: bias },
        )
    }

    /// The textbook triple loop the gemm path must agree with.
    fn naive(layer: &HostLinear, x: &[f32]) -> Vec<f32> {
        let rows = x.len() / layer.inputs;
        let mut out = vec![0.0; rows * layer.outputs];
        for r in 0..rows {
            for o in 0..layer.outputs {
                let dot: f32 =
                    (0..layer.inputs).map(|i| x[r * layer.inputs + i] * layer.weight[i * layer.outputs + o]).sum();
                out[r * layer.outputs + o] = dot + layer.bias[o];
            }
        }
        out
    }

    fn assert_close(actual: &[f32], expected: &[f32]) {
        assert_eq!(actual.len(), expected.len());
        for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
            assert!((a - e).abs() <= 1e-4 * (1.0 + e.abs()), "element {i}: {a} vs {e}");
        }
    }

    #[test]
    fn every_epilogue_matches_the_naive_product() {
        // Small (single-threaded) and large (pool) products, odd sizes; on an
        // AVX-512 CPU the first two take the packed panels, the last `gemm`.
        for (rows, inputs, outputs) in [(3, 5, 7), (20, 129, 131), (67, 129, 131)] {
            let layer = layer(inputs, outputs);
            let x: Vec<f32> = (0..rows * inputs).map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.1).collect();
            let expected = naive(&layer, &x);
            assert_close(&layer.apply(&x, Epilogue::Bias), &expected);

            let gelu_expected: Vec<f32> =
                expected.iter().map(|&v| 0.5 * v * (1.0 + libm::erff(v / std::f32::consts::SQRT_2))).collect();
            assert_close(&layer.apply(&x, Epilogue::BiasGelu), &gelu_expected);

            let residual: Vec<f32> = (0..rows * outputs).map(|i| i as f32 * 0.01).collect();
            let with_residual: Vec<f32> = expected.iter().zip(&residual).map(|(e, r)| e + r).collect();
            assert_close(&layer.apply(&x, Epilogue::BiasResidual(&residual)), &with_residual);
        }
    }
}
