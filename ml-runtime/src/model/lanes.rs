//! Sums and maxima over `f32` slices that the compiler can vectorise.
//!
//! A plain `iter().sum()` is one chain of dependent additions (floating
//! point addition is not associative, so the compiler keeps the order) and
//! runs one element per add latency. Eight independent partial results, one
//! per lane, break the chain: softmax over a 256-token row and LayerNorm's
//! statistics become SIMD loops. The result differs from the sequential sum
//! only by rounding.

const LANES: usize = 8;

/// Sum of `values`.
pub fn sum(values: &[f32]) -> f32 {
    sum_of(values, |v| v)
}

/// Sum of `f(v)` over `values` (`f` inlined into the SIMD loop).
#[inline(always)]
pub fn sum_of(values: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let (chunks, rest) = values.as_chunks::<LANES>();
    let mut lanes = [0.0f32; LANES];
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v);
        }
    }
    lanes.iter().sum::<f32>() + rest.iter().map(|&v| f(v)).sum::<f32>()
}

/// Largest of `values` (`-∞` for none).
pub fn max(values: &[f32]) -> f32 {
    let (chunks, rest) = values.as_chunks::<LANES>();
    let mut lanes = [f32::NEG_INFINITY; LANES];
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = if v > *lane { v } else { *lane };
        }
    }
    lanes.iter().chain(rest).copied().fold(f32::NEG_INFINITY, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_and_maxima_match_the_sequential_ones() {
        for len in [0, 1, 7, 8, 9, 100, 257] {
            let values: Vec<f32> = (0..len).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.37).collect();
            let want: f64 = values.iter().map(|&v| f64::from(v)).sum();
            assert!((f64::from(sum(&values)) - want).abs() < 1e-4, "sum of {len}");
            let squares: f64 = values.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            assert!((f64::from(sum_of(&values, |v| v * v)) - squares).abs() < 1e-3, "squares of {len}");
            let want = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max(&values), want, "max of {len}");
        }
    }
}
