//! `out += x · W` for a fixed weight matrix packed once, at load, into
//! column panels that a SIMD kernel streams front to back: the dense layers'
//! product for the few rows of a small batch.
//!
//! Why: a short sentence is ~15 rows, so every weight is used ~15 times per
//! read, and MiniLM's six layers hold 42 MB of fp32 weights — more than the
//! 32 MiB L3 — which therefore come from memory on every call. Measured on
//! MiniLM's four shapes at 15 rows, 2 threads: `gemm::gemm` ran at ~170
//! GFLOP/s over one layer's weights (cache-resident) but ~70 over all six in
//! turn. Batch 1 is bound by how the weights are streamed, and `gemm` packs
//! them on every call (one read, one write, one more read). Here they are
//! packed once; a call reads each panel once from memory, sequentially,
//! while the rows of the batch sit in registers.
//!
//! Layout: panel `p` holds columns `p·16 .. p·16 + 16` of `W: [k, n]` as `k`
//! consecutive 64-byte lines (zero past column `n`). Threads take contiguous
//! runs of panels (each streams its own part of the weights), and the rows
//! run in blocks of up to [`Kernel::block_rows`]. `x` is copied once per call
//! into `[k, rows]` blocks so the kernel's broadcasts read consecutive values.
//!
//! Two kernels read that same layout, chosen once per CPU ([`Kernel`]):
//! - AVX-512F: a line is one zmm register; one accumulator register per row,
//!   blocks of up to 24 rows (24 + a weight + a broadcast within 32
//!   registers), so a short sentence's rows are one block and every panel is
//!   read once.
//! - AVX2 + FMA: a line is two ymm registers; two accumulators per row, so
//!   blocks of up to 6 rows (12 accumulators + 2 weights + a broadcast
//!   within 16 registers). A 15-row sentence is three blocks of 5: the first
//!   pass over a panel brings it from memory, the other two find it in L1
//!   or L2 (a panel is 64 bytes × k: 24 KiB at k = 384, 96 KiB at 1536).
//!   Wider panels (24 columns, 4 rows) load about as much per FMA and make
//!   a layout of their own; 8 columns would need a load per FMA.
//!
//! On other CPUs [`PanelWeights::for_this_cpu`] gives `None`: the caller
//! keeps the row-major weights and `gemm` for those, and for larger row
//! counts, where `gemm` already runs near the cores' peak.
#![allow(unsafe_code)] // the kernels' intrinsics and the output shared by column

use rayon::prelude::*;

/// Columns per panel: one AVX-512 register of f32, or two AVX2 ones.
const PANEL_WIDTH: usize = 16;

/// The SIMD kernel that streams the panels, chosen once when the weights
/// are packed (the layout is the same for both; only the row blocks differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// One zmm accumulator per row, blocks of up to 24 rows.
    Avx512,
    /// Two ymm accumulators per row, blocks of up to 6 rows.
    Avx2Fma,
}

impl Kernel {
    /// The best kernel this CPU runs, if any: AVX-512F first.
    pub fn for_this_cpu() -> Option<Self> {
        Self::available().into_iter().next()
    }

    /// Every kernel this CPU runs, best first.
    fn available() -> Vec<Self> {
        #[cfg(target_arch = "x86_64")]
        {
            let mut kernels = Vec::new();
            if std::arch::is_x86_feature_detected!("avx512f") {
                kernels.push(Self::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                kernels.push(Self::Avx2Fma);
            }
            kernels
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Vec::new()
        }
    }

    /// The most rows one kernel call keeps in registers.
    pub fn block_rows(self) -> usize {
        match self {
            Self::Avx512 => 24,
            Self::Avx2Fma => 6,
        }
    }

    /// From how many multiply-adds a product is worth splitting over the
    /// pool. AVX2: measured with the probe below on MiniLM's shapes (all six
    /// layers, weights from memory), 2 threads, the pool beat the calling
    /// thread at every row count, 1 row included (3.6 against 4.4 ms per
    /// pass; 2 rows 2.3 against 3.9): streaming the weights is the work,
    /// and two threads stream faster than one. The smallest such product
    /// is 1 × 384 × 384 ≈ 147 000 multiply-adds, hence 2^17. AVX-512 keeps
    /// `host_linear`'s 2^20 for `gemm`, which is what it was measured with.
    pub fn parallel_min_macs(self) -> usize {
        match self {
            Self::Avx512 => 1 << 20,
            Self::Avx2Fma => 1 << 17,
        }
    }

    /// `out[r, 0..width] += Σ_kk x[kk, r] · panel[kk]` for one block of
    /// `rows ≤ block_rows()` rows (`x: [k, rows]`), `out` rows `stride`
    /// apart.
    ///
    /// # Safety
    /// The CPU has this kernel's features (`self` came from
    /// [`Kernel::available`]); `out` is valid for `rows` rows of
    /// `width ≤ 16` values, `stride` apart.
    unsafe fn block(self, rows: usize, x: &[f32], panel: &[Line], out: *mut f32, stride: usize, width: usize) {
        assert!(rows <= self.block_rows() && x.len() == rows * panel.len() && width <= PANEL_WIDTH);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: forwarded from the caller.
        unsafe {
            match self {
                Self::Avx512 => avx512::block(rows, x, panel, out, stride, width),
                Self::Avx2Fma => avx2::block(rows, x, panel, out, stride, width),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("no panel kernel on this architecture ({rows} rows, {stride}, {width}, {out:?})");
    }
}

/// One `k` step of a panel, aligned so a load never splits a cache line.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
struct Line([f32; PANEL_WIDTH]);

/// `W: [k, n]` packed in column panels (see the module docs).
#[derive(Debug)]
pub struct PanelWeights {
    kernel: Kernel,
    k: usize,
    n: usize,
    lines: Vec<Line>,
}

impl PanelWeights {
    /// Packs row-major `w: [k, n]` when this CPU runs one of the kernels
    /// (AVX-512F, or AVX2 with FMA); `None` otherwise.
    pub fn for_this_cpu(w: &[f32], k: usize, n: usize) -> Option<Self> {
        Kernel::for_this_cpu().map(|kernel| Self::pack(w, k, n, kernel))
    }

    fn pack(w: &[f32], k: usize, n: usize, kernel: Kernel) -> Self {
        assert_eq!(w.len(), k * n, "weights must be [k, n]");
        let panels = n.div_ceil(PANEL_WIDTH);
        let mut lines = vec![Line::default(); panels * k];
        for (p, panel) in lines.chunks_exact_mut(k.max(1)).enumerate().take(panels) {
            let (first, width) = (p * PANEL_WIDTH, PANEL_WIDTH.min(n - p * PANEL_WIDTH));
            for (line, row) in panel.iter_mut().zip(w.chunks_exact(n)) {
                line.0[..width].copy_from_slice(&row[first..first + width]);
            }
        }
        Self { kernel, k, n, lines }
    }

    /// The kernel these panels were packed for.
    #[cfg(test)]
    fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// From how many multiply-adds a product is worth splitting over the
    /// compute pool ([`Kernel::parallel_min_macs`]).
    pub fn parallel_min_macs(&self) -> usize {
        self.kernel.parallel_min_macs()
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
        let blocks = RowBlocks::new(x, rows, k, self.kernel.block_rows());
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
                    // SAFETY: `self.kernel` came from `Kernel::available`
                    // (this CPU has its features), and blocks hold at most
                    // its `block_rows`. The block's rows and this panel's
                    // columns lie inside `out` (asserted above: `rows × n`
                    // values), and tasks write disjoint column ranges.
                    unsafe {
                        self.kernel.block(
                            block.rows,
                            block.values,
                            lines,
                            out.at(block.first_row * n + column),
                            n,
                            width,
                        )
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

/// `x` copied into blocks of up to `max_rows` rows, each `[k, rows]`
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
    fn new(x: &[f32], rows: usize, k: usize, max_rows: usize) -> Self {
        let count = rows.div_ceil(max_rows);
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

    /// First row and row count of block `b`: with blocks of up to 24, 15
    /// rows are one block and 30 two of 15; with up to 6, 15 are 5 + 5 + 5.
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

/// How many 64-byte lines ahead the kernels prefetch (AVX-512: 32 and 128
/// did a little worse).
#[cfg(target_arch = "x86_64")]
const PREFETCH_LINES: usize = 64;

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __m512, _MM_HINT_T0, _mm_prefetch, _mm512_add_ps, _mm512_fmadd_ps, _mm512_load_ps, _mm512_mask_storeu_ps,
        _mm512_maskz_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps,
    };

    use super::{Line, PANEL_WIDTH, PREFETCH_LINES};

    /// See [`super::Kernel::block`].
    ///
    /// # Safety
    /// The CPU has AVX-512F; `rows ≤ 24`; `out` is valid for `rows` rows of
    /// `width ≤ 16` values, `stride` apart.
    pub unsafe fn block(rows: usize, x: &[f32], panel: &[Line], out: *mut f32, stride: usize, width: usize) {
        // One instantiation per row count, so the accumulators are a fixed
        // set of registers.
        macro_rules! dispatch {
            ($($r:literal)*) => {
                match rows {
                    $($r => unsafe { rows_block::<$r>(x, panel, out, stride, width) },)*
                    _ => unreachable!("{rows} rows in one AVX-512 block"),
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

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        _MM_HINT_T0, _mm_prefetch, _mm256_add_ps, _mm256_fmadd_ps, _mm256_load_ps, _mm256_loadu_ps, _mm256_set1_ps,
        _mm256_setzero_ps, _mm256_storeu_ps,
    };

    use super::{Line, PANEL_WIDTH, PREFETCH_LINES};

    /// Half a line: one ymm register of f32.
    const HALF: usize = PANEL_WIDTH / 2;

    /// See [`super::Kernel::block`].
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `rows ≤ 6`; `out` is valid for `rows` rows
    /// of `width ≤ 16` values, `stride` apart.
    pub unsafe fn block(rows: usize, x: &[f32], panel: &[Line], out: *mut f32, stride: usize, width: usize) {
        // One instantiation per row count, so the accumulators are a fixed
        // set of registers.
        match rows {
            1 => unsafe { rows_block::<1>(x, panel, out, stride, width) },
            2 => unsafe { rows_block::<2>(x, panel, out, stride, width) },
            3 => unsafe { rows_block::<3>(x, panel, out, stride, width) },
            4 => unsafe { rows_block::<4>(x, panel, out, stride, width) },
            5 => unsafe { rows_block::<5>(x, panel, out, stride, width) },
            6 => unsafe { rows_block::<6>(x, panel, out, stride, width) },
            _ => unreachable!("{rows} rows in one AVX2 block"),
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows_block<const R: usize>(x: &[f32], panel: &[Line], out: *mut f32, stride: usize, width: usize) {
        // Columns 0..8 and 8..16 of each row: 2·R registers.
        let mut lo = [_mm256_setzero_ps(); R];
        let mut hi = [_mm256_setzero_ps(); R];
        for (line, xs) in panel.iter().zip(x.chunks_exact(R)) {
            // As in the AVX-512 kernel: the line 4 KiB ahead, a hint only,
            // so any address is fine (hence `wrapping_add`).
            let ahead = line.0.as_ptr().wrapping_add(PREFETCH_LINES * PANEL_WIDTH);
            _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
            // SAFETY: `Line` is 64 bytes, 64-byte aligned: both halves are
            // 32-byte aligned.
            let (w0, w1) = unsafe { (_mm256_load_ps(line.0.as_ptr()), _mm256_load_ps(line.0.as_ptr().add(HALF))) };
            for ((l, h), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(xs) {
                let b = _mm256_set1_ps(v);
                *l = _mm256_fmadd_ps(b, w0, *l);
                *h = _mm256_fmadd_ps(b, w1, *h);
            }
        }
        for (r, (l, h)) in lo.iter().zip(&hi).enumerate() {
            // SAFETY: the caller guarantees row `r`'s `width` values; the
            // full-width branch touches exactly 16 of them.
            unsafe {
                let row = out.add(r * stride);
                if width == PANEL_WIDTH {
                    _mm256_storeu_ps(row, _mm256_add_ps(_mm256_loadu_ps(row), *l));
                    _mm256_storeu_ps(row.add(HALF), _mm256_add_ps(_mm256_loadu_ps(row.add(HALF)), *h));
                } else {
                    // The last panel of an `n` that is no multiple of 16:
                    // through a buffer, since AVX2 has no cheap masked
                    // add-and-store (one panel per product, at most).
                    let mut sums = [0.0f32; PANEL_WIDTH];
                    _mm256_storeu_ps(sums.as_mut_ptr(), *l);
                    _mm256_storeu_ps(sums.as_mut_ptr().add(HALF), *h);
                    for (c, s) in sums.iter().take(width).enumerate() {
                        *row.add(c) += s;
                    }
                }
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

    /// Every kernel this CPU runs against the naive product: row counts
    /// around both kernels' block sizes (1, 5–7, 13, 24, 25, 61), widths
    /// around the panel width (1, 15, 16, 17, 31, 48, 100) and several `k`.
    #[test]
    fn products_of_odd_shapes_match_the_naive_one() {
        let kernels = Kernel::available();
        if kernels.is_empty() {
            eprintln!("panel_gemm: this CPU has neither AVX-512F nor AVX2+FMA, no kernel is used here; skipped");
            return;
        }
        for kernel in kernels {
            for (rows, k, n) in [
                (1, 1, 1),
                (1, 7, 15),
                (1, 384, 33),
                (3, 5, 16),
                (5, 64, 17),
                (6, 3, 32),
                (7, 100, 40),
                (13, 257, 31),
                (15, 384, 17),
                (24, 33, 48),
                (25, 9, 31),
                (61, 130, 100),
            ] {
                let w: Vec<f32> = (0..k * n).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.05).collect();
                let x: Vec<f32> = (0..rows * k).map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.1).collect();
                let packed = PanelWeights::pack(&w, k, n, kernel);
                let start: Vec<f32> = (0..rows * n).map(|i| i as f32 * 0.01).collect();
                let expected: Vec<f32> = naive(&x, &w, k, n).iter().zip(&start).map(|(p, s)| p + s).collect();
                for parallel in [false, true] {
                    let mut out = start.clone();
                    packed.accumulate(&x, &mut out, parallel);
                    for (i, (got, want)) in out.iter().zip(&expected).enumerate() {
                        assert!(
                            (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "{kernel:?}, {rows}×{k}×{n}, element {i}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_best_kernel_is_chosen() {
        #[cfg(target_arch = "x86_64")]
        {
            let expected = if std::arch::is_x86_feature_detected!("avx512f") {
                Some(Kernel::Avx512)
            } else if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                Some(Kernel::Avx2Fma)
            } else {
                None
            };
            assert_eq!(Kernel::for_this_cpu(), expected);
            assert_eq!(PanelWeights::for_this_cpu(&[1.0; 6], 2, 3).map(|p| p.kernel()), expected);
        }
    }

    #[test]
    fn blocks_share_rows_evenly_and_cover_them_all() {
        let x: Vec<f32> = (0..50 * 2).map(|i| i as f32).collect();
        let blocks = RowBlocks::new(&x, 50, 2, 24);
        let spans: Vec<(usize, usize)> = blocks.iter().map(|b| (b.first_row, b.rows)).collect();
        assert_eq!(spans, vec![(0, 16), (16, 17), (33, 17)]);
        // Block 1 is [k, rows]: its k = 1 column holds rows 16..33's second values.
        let second = blocks.iter().nth(1).expect("three blocks");
        assert_eq!(&second.values[17..], &(16..33).map(|r| (r * 2 + 1) as f32).collect::<Vec<_>>()[..]);
        // AVX2's blocks of up to 6: a 15-token sentence is three of 5.
        let spans: Vec<(usize, usize)> =
            RowBlocks::new(&x[..30], 15, 2, 6).iter().map(|b| (b.first_row, b.rows)).collect();
        assert_eq!(spans, vec![(0, 5), (5, 5), (10, 5)]);
    }
}

/// Not a test: the timings behind the kernels' and `host_linear`'s
/// thresholds, on MiniLM's four dense shapes for all six layers in turn
/// (42 MB of weights, as the model streams them). Run with
/// `cargo test --release -p ember-runtime --lib panel_gemm::probe -- --ignored --nocapture`.
#[cfg(test)]
mod probe {
    use std::time::Instant;

    use super::*;
    use crate::model::host_gemm::{MatMut, MatRef, Threads, matmul};

    #[test]
    #[ignore = "a timing probe, not a test"]
    fn panels_against_gemm_on_minilm_shapes() {
        let Some(kernel) = Kernel::for_this_cpu() else {
            eprintln!("no panel kernel on this CPU");
            return;
        };
        let shapes = [(384, 1152), (384, 384), (384, 1536), (1536, 384)];
        // Per layer, per shape: k, n, the row-major weights and the panels.
        type Layer = Vec<(usize, usize, Vec<f32>, PanelWeights)>;
        let layers: Vec<Layer> = (0..6)
            .map(|l| {
                shapes
                    .iter()
                    .map(|&(k, n)| {
                        let w: Vec<f32> = (0..k * n).map(|i| (((i + l) * 7 % 13) as f32 - 6.0) * 0.01).collect();
                        let p = PanelWeights::pack(&w, k, n, kernel);
                        (k, n, w, p)
                    })
                    .collect()
            })
            .collect();
        let macs_per_row: usize = shapes.iter().map(|(k, n)| k * n).sum::<usize>() * 6;
        let rows_list: Vec<usize> = std::env::var("PROBE_ROWS")
            .map(|v| v.split(',').map(|r| r.parse().expect("rows")).collect())
            .unwrap_or_else(|_| vec![1, 8, 15, 32, 64, 96, 128, 160, 200]);
        eprintln!("{kernel:?}, {} threads; ms per pass over the six layers (GFLOP/s)", rayon::current_num_threads());
        eprintln!("rows | gemm one | gemm pool | panels one | panels pool");
        for rows in rows_list {
            let x: Vec<f32> = (0..rows * 1536).map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.1).collect();
            let (layers, x) = (&layers, &x);
            let mut outs: Vec<Vec<f32>> = shapes.iter().map(|&(_, n)| vec![0.0; rows * n]).collect();
            let mut time = |f: &mut dyn FnMut(&mut [Vec<f32>])| {
                let reps = (2_000_000_000 / (macs_per_row * rows)).clamp(3, 200);
                f(&mut outs); // warm-up
                let mut best = f64::MAX;
                for _ in 0..3 {
                    let start = Instant::now();
                    for _ in 0..reps {
                        f(&mut outs);
                    }
                    best = best.min(start.elapsed().as_secs_f64() / reps as f64);
                }
                format!("{:.3} ({:.0})", best * 1e3, 2.0 * (macs_per_row * rows) as f64 / best / 1e9)
            };
            let gemm = |threads: Threads| {
                move |outs: &mut [Vec<f32>]| {
                    for layer in layers {
                        for ((k, n, w, _), out) in layer.iter().zip(outs.iter_mut()) {
                            let (k, n) = (*k, *n);
                            let a = MatRef::row_major(&x[..rows * k], rows, k);
                            matmul(MatMut::row_major(out, rows, n), a, MatRef::row_major(w, k, n), 1.0, true, threads);
                        }
                    }
                }
            };
            let panels = |parallel: bool| {
                move |outs: &mut [Vec<f32>]| {
                    for layer in layers {
                        for ((k, _, _, p), out) in layer.iter().zip(outs.iter_mut()) {
                            p.accumulate(&x[..rows * k], out, parallel);
                        }
                    }
                }
            };
            let (g1, gp) = (time(&mut gemm(Threads::One)), time(&mut gemm(Threads::Pool)));
            let (p1, pp) = (time(&mut panels(false)), time(&mut panels(true)));
            eprintln!("{rows} | {g1} | {gp} | {p1} | {pp}");
        }
    }
}
