//! `out += x · W` for a fixed weight matrix packed once, at load, into
//! column panels that an AVX-512 kernel streams front to back: the dense
//! layers' product for the few rows of a small batch.
//!
//! Why: a short sentence is ~15 rows, so every weight is used ~15 times per
//! read, and MiniLM's six layers hold 42 MB of fp32 weights — more than the
//! 32 MiB L3 — which therefore come from memory on every call. Measured on
//! MiniLM's four shapes at 15 rows, 2 threads: `gemm::gemm` ran at ~170
//! GFLOP/s over one layer's weights (cache-resident) but ~70 over all six in
//! turn. Batch 1 is bound by how the weights are streamed, and `gemm` packs
//! them on every call (one read, one write, one more read). Here they are
//! packed once; a call reads each panel once, sequentially, while the rows
//! of the batch sit in registers.
//!
//! Layout: panel `p` holds columns `p·16 .. p·16 + 16` of `W: [k, n]` as `k`
//! consecutive 64-byte lines (zero past column `n`). Threads take contiguous
//! runs of panels (each streams its own part of the weights), and the rows
//! run in blocks of up to [`MAX_BLOCK_ROWS`], one 16-wide accumulator
//! register per row. `x` is copied once per call into `[k, rows]` blocks so
//! the kernel's broadcasts read consecutive values.
//!
//! Only for CPUs with AVX-512F ([`PanelWeights::for_this_cpu`] gives `None`
//! elsewhere): the caller keeps the row-major weights and `gemm` for those,
//! and for larger row counts, where `gemm` already runs near the cores' peak.
#![allow(unsafe_code)] // the kernel's intrinsics and the output shared by column

use rayon::prelude::*;

/// Columns per panel: one AVX-512 register of f32.
const PANEL_WIDTH: usize = 16;
/// Rows per kernel call: one accumulator register each, plus a weight
/// register and a broadcast, within AVX-512's 32.
pub const MAX_BLOCK_ROWS: usize = 24;

/// One `k` step of a panel, aligned so a load never splits a cache line.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
struct Line([f32; PANEL_WIDTH]);

/// `W: [k, n]` packed in column panels (see the module docs).
#[derive(Debug)]
pub struct PanelWeights {
    k: usize,
    n: usize,
    lines: Vec<Line>,
}

impl PanelWeights {
    /// Packs row-major `w: [k, n]` when this CPU runs the kernel (AVX-512F);
    /// `None` otherwise.
    pub fn for_this_cpu(w: &[f32], k: usize, n: usize) -> Option<Self> {
        kernel_available().then(|| Self::pack(w, k, n))
    }

    fn pack(w: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(w.len(), k * n, "weights must be [k, n]");
        let panels = n.div_ceil(PANEL_WIDTH);
        let mut lines = vec![Line::default(); panels * k];
        for (p, panel) in lines.chunks_exact_mut(k.max(1)).enumerate().take(panels) {
            let (first, width) = (p * PANEL_WIDTH, PANEL_WIDTH.min(n - p * PANEL_WIDTH));
            for (line, row) in panel.iter_mut().zip(w.chunks_exact(n)) {
                line.0[..width].copy_from_slice(&row[first..first + width]);
            }
        }
        Self { k, n, lines }
    }

    /// `out += x · W` for row-major `x: [rows, k]` and `out: [rows, n]`,
    /// split over the compute pool when `parallel`.
    pub fn accumulate(&self, x: &[f32], out: &mut [f32], parallel: bool) {
        let (k, n) = (self.k, self.n);
        assert!(k > 0 && n > 0, "empty weights");
        assert_eq!(x.len() % k, 0, "x must be [rows, {k}]");
        let rows = x.len() / k;
        assert_eq!(out.len(), rows * n, "out must be [rows, {n}]");
        if rows == 0 {
            return;
        }
        let blocks = RowBlocks::new(x, rows, k);
        let panels = n.div_ceil(PANEL_WIDTH);
        let tasks = if parallel { rayon::current_num_threads().clamp(1, panels) } else { 1 };
        let out = SharedOut(out.as_mut_ptr());
        let run = |task: usize| {
            // Contiguous runs of panels: each thread streams its own part.
            let (first, last) = (task * panels / tasks, (task + 1) * panels / tasks);
            for panel in first..last {
                let lines = &self.lines[panel * k..(panel + 1) * k];
                let (column, width) = (panel * PANEL_WIDTH, PANEL_WIDTH.min(n - panel * PANEL_WIDTH));
                for block in blocks.iter() {
                    // SAFETY: AVX-512F was detected when `self` was built
                    // (`for_this_cpu`). The block's rows and this panel's
                    // columns lie inside `out` (asserted above: `rows × n`
                    // values), and tasks write disjoint column ranges.
                    unsafe {
                        avx512::block(block.rows, block.values, lines, out.at(block.first_row * n + column), n, width)
                    }
                }
            }
        };
        if tasks == 1 {
            run(0);
        } else {
            (0..tasks).into_par_iter().for_each(run);
        }
    }
}

fn kernel_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `x` copied into blocks of up to [`MAX_BLOCK_ROWS`] rows, each `[k, rows]`
/// (column-major within the block), rows shared out evenly between blocks.
struct RowBlocks {
    values: Vec<f32>,
    k: usize,
    rows: usize,
    count: usize,
}

struct RowBlock<'a> {
    first_row: usize,
    rows: usize,
    values: &'a [f32],
}

impl RowBlocks {
    fn new(x: &[f32], rows: usize, k: usize) -> Self {
        let count = rows.div_ceil(MAX_BLOCK_ROWS);
        let mut values = vec![0.0; rows * k];
        let mut this = Self { values: Vec::new(), k, rows, count };
        for b in 0..count {
            let (first, len) = this.span(b);
            let block = &mut values[first * k..(first + len) * k];
            for (r, row) in x[first * k..(first + len) * k].chunks_exact(k).enumerate() {
                for (kk, &v) in row.iter().enumerate() {
                    block[kk * len + r] = v;
                }
            }
        }
        this.values = values;
        this
    }

    /// First row and row count of block `b`: 15 rows are one block, 30 two of 15.
    fn span(&self, b: usize) -> (usize, usize) {
        let (first, next) = (b * self.rows / self.count, (b + 1) * self.rows / self.count);
        (first, next - first)
    }

    fn iter(&self) -> impl Iterator<Item = RowBlock<'_>> {
        (0..self.count).map(|b| {
            let (first_row, rows) = self.span(b);
            RowBlock { first_row, rows, values: &self.values[first_row * self.k..(first_row + rows) * self.k] }
        })
    }
}

/// The output's base pointer, shared by tasks that write disjoint columns.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);

// SAFETY: only used inside `accumulate`, where `out` is borrowed mutably for
// the whole parallel section and every task writes its own columns.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// # Safety
    /// `offset` must lie inside the slice the pointer came from.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        unsafe { self.0.add(offset) }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __m512, _MM_HINT_T0, _mm_prefetch, _mm512_add_ps, _mm512_fmadd_ps, _mm512_load_ps, _mm512_mask_storeu_ps,
        _mm512_maskz_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps,
    };

    use super::{Line, MAX_BLOCK_ROWS, PANEL_WIDTH};

    /// How many 64-byte lines ahead the kernel prefetches (32 and 128 did a
    /// little worse).
    const PREFETCH_LINES: usize = 64;

    /// `out[r, 0..width] += Σ_kk x[kk, r] · panel[kk]` for the `rows` rows
    /// of one block (`x: [k, rows]`), `out` rows `stride` apart.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `out` is valid for `rows` rows of `width ≤ 16`
    /// values, `stride` apart.
    pub unsafe fn block(rows: usize, x: &[f32], panel: &[Line], out: *mut f32, stride: usize, width: usize) {
        assert!(rows <= MAX_BLOCK_ROWS && x.len() == rows * panel.len() && width <= PANEL_WIDTH);
        // One instantiation per row count, so the accumulators are a fixed
        // set of registers.
        macro_rules! dispatch {
            ($($r:literal)*) => {
                match rows {
                    $($r => unsafe { rows_block::<$r>(x, panel, out, stride, width) },)*
                    _ => {}
                }
            };
        }
        dispatch!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24);
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn rows_block<const R: usize>(x: &[f32], panel: &[Line], out: *mut f32, stride: usize, width: usize) {
        let mut acc = [_mm512_setzero_ps(); R];
        for (line, xs) in panel.iter().zip(x.chunks_exact(R)) {
            // The hardware prefetcher alone kept one thread at ~9 GB/s
            // from memory (15 rows, MiniLM's weights). Asking for the line
            // 4 KiB ahead — into the next panel past this one's end: a
            // task's panels are consecutive — took it to ~13 GB/s and the
            // product from ~69 to ~88 GFLOP/s (2 threads: 125 → 162).
            let ahead = line.0.as_ptr().wrapping_add(PREFETCH_LINES * PANEL_WIDTH);
            // A prefetch is only a hint: any address, even past the
            // allocation, is fine (hence `wrapping_add`).
            _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
            // SAFETY: `Line` is 64 bytes, 64-byte aligned.
            let w: __m512 = unsafe { _mm512_load_ps(line.0.as_ptr()) };
            for (a, &v) in acc.iter_mut().zip(xs) {
                *a = _mm512_fmadd_ps(_mm512_set1_ps(v), w, *a);
            }
        }
        let mask = if width >= PANEL_WIDTH { u16::MAX } else { (1u16 << width) - 1 };
        for (r, a) in acc.iter().enumerate() {
            // SAFETY: the caller guarantees row `r`'s `width` values.
            unsafe {
                let row = out.add(r * stride);
                _mm512_mask_storeu_ps(row, mask, _mm512_add_ps(_mm512_maskz_loadu_ps(mask, row), *a));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f32], w: &[f32], k: usize, n: usize) -> Vec<f32> {
        let rows = x.len() / k;
        let mut out = vec![0.0; rows * n];
        for r in 0..rows {
            for j in 0..n {
                out[r * n + j] = (0..k).map(|i| x[r * k + i] * w[i * n + j]).sum();
            }
        }
        out
    }

    #[test]
    fn products_of_odd_shapes_match_the_naive_one() {
        if !kernel_available() {
            eprintln!("panel_gemm: this CPU has no AVX-512F, the kernel is not used here; skipped");
            return;
        }
        // Row counts around the block size, widths around the panel width.
        for (rows, k, n) in
            [(1, 1, 1), (1, 7, 15), (3, 5, 16), (15, 384, 17), (24, 33, 48), (25, 9, 31), (61, 130, 100)]
        {
            let w: Vec<f32> = (0..k * n).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.05).collect();
            let x: Vec<f32> = (0..rows * k).map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.1).collect();
            let packed = PanelWeights::for_this_cpu(&w, k, n).expect("AVX-512F was detected");
            let start: Vec<f32> = (0..rows * n).map(|i| i as f32 * 0.01).collect();
            let expected: Vec<f32> = naive(&x, &w, k, n).iter().zip(&start).map(|(p, s)| p + s).collect();
            for parallel in [false, true] {
                let mut out = start.clone();
                packed.accumulate(&x, &mut out, parallel);
                for (i, (got, want)) in out.iter().zip(&expected).enumerate() {
                    assert!(
                        (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "{rows}×{k}×{n}, element {i}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn blocks_share_rows_evenly_and_cover_them_all() {
        let x: Vec<f32> = (0..50 * 2).map(|i| i as f32).collect();
        let blocks = RowBlocks::new(&x, 50, 2);
        let spans: Vec<(usize, usize)> = blocks.iter().map(|b| (b.first_row, b.rows)).collect();
        assert_eq!(spans, vec![(0, 16), (16, 17), (33, 17)]);
        // Block 1 is [k, rows]: its k = 1 column holds rows 16..33's second values.
        let second = blocks.iter().nth(1).expect("three blocks");
        assert_eq!(&second.values[17..], &(16..33).map(|r| (r * 2 + 1) as f32).collect::<Vec<_>>()[..]);
    }
}
