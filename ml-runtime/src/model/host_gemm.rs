//! A bounds-checked front to `gemm::gemm` for strided matrices in host
//! slices: the one place the CPU encoder's products cross into the crate's
//! raw-pointer API.
//!
//! Strides let attention read a head's queries, keys (as `Kᵀ`, by swapping
//! the strides) and values straight out of the packed `[tokens, 3·hidden]`
//! projection, and write its context into the `[tokens, hidden]` output,
//! with no copies in between.

/// A read-only `rows × cols` view: element `(i, j)` is
/// `data[offset + i·row_stride + j·col_stride]`.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A dense row-major matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self { data, offset: 0, rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// The same elements read as the transpose.
    pub fn transposed(self) -> Self {
        Self { rows: self.cols, cols: self.rows, row_stride: self.col_stride, col_stride: self.row_stride, ..self }
    }

    fn fits(&self) -> bool {
        fits(self.data.len(), self.offset, self.rows, self.cols, self.row_stride, self.col_stride)
    }
}

/// A writable `rows × cols` view, laid out as for [`MatRef`].
#[derive(Debug)]
pub struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatMut<'a> {
    /// A dense row-major matrix.
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self { data, offset: 0, rows, cols, row_stride: cols, col_stride: 1 }
    }

    fn fits(&self) -> bool {
        fits(self.data.len(), self.offset, self.rows, self.cols, self.row_stride, self.col_stride)
    }
}

/// Whether every element of a view lies below `len` (no overflow either).
fn fits(len: usize, offset: usize, rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    let last = (rows - 1)
        .checked_mul(row_stride)
        .zip((cols - 1).checked_mul(col_stride))
        .and_then(|(r, c)| offset.checked_add(r)?.checked_add(c));
    last.is_some_and(|last| last < len)
}

/// Whether a product may use the compute pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// On the calling thread (small products, or already inside a pool task).
    One,
    /// Split over rayon's global pool.
    Pool,
}

/// `dst := (accumulate ? dst : 0) + scale · lhs · rhs`.
///
/// Panics when the shapes disagree or a view reaches outside its slice.
#[allow(unsafe_code)]
pub fn matmul(dst: MatMut<'_>, lhs: MatRef<'_>, rhs: MatRef<'_>, scale: f32, accumulate: bool, threads: Threads) {
    assert!(lhs.rows == dst.rows && rhs.cols == dst.cols && lhs.cols == rhs.rows, "matmul shapes disagree");
    assert!(dst.fits() && lhs.fits() && rhs.fits(), "matmul view outside its slice");
    if dst.rows == 0 || dst.cols == 0 {
        return;
    }
    let parallelism = match threads {
        Threads::One => gemm::Parallelism::None,
        Threads::Pool => gemm::Parallelism::Rayon(0), // the global pool, sized from the CPU quota
    };
    let stride = |s: usize| s as isize; // in range: the views fit in slices, which are < isize::MAX
    // SAFETY: the asserts above prove every element each view addresses lies
    // inside its slice; `dst` is borrowed mutably, so nothing aliases it.
    unsafe {
        gemm::gemm(
            dst.rows,
            dst.cols,
            lhs.cols,
            dst.data.as_mut_ptr().add(dst.offset),
            stride(dst.col_stride),
            stride(dst.row_stride),
            accumulate,
            lhs.data.as_ptr().add(lhs.offset),
            stride(lhs.col_stride),
            stride(lhs.row_stride),
            rhs.data.as_ptr().add(rhs.offset),
            stride(rhs.col_stride),
            stride(rhs.row_stride),
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(lhs: MatRef<'_>, rhs: MatRef<'_>) -> Vec<f32> {
        let at = |m: MatRef<'_>, i: usize, j: usize| m.data[m.offset + i * m.row_stride + j * m.col_stride];
        let mut out = vec![0.0; lhs.rows * rhs.cols];
        for i in 0..lhs.rows {
            for j in 0..rhs.cols {
                out[i * rhs.cols + j] = (0..lhs.cols).map(|k| at(lhs, i, k) * at(rhs, k, j)).sum();
            }
        }
        out
    }

    #[test]
    fn strided_and_transposed_views_match_the_naive_product() {
        // A packed [5, 3·4] block: "queries" in columns 0..4, "keys" in 4..8.
        let packed: Vec<f32> = (0..60).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.25).collect();
        let q = MatRef { data: &packed, offset: 0, rows: 5, cols: 4, row_stride: 12, col_stride: 1 };
        let k = MatRef { offset: 4, ..q };
        let expected: Vec<f32> = naive(q, k.transposed()).iter().map(|v| v * 0.5).collect();
        let mut scores = vec![0.0; 25];
        matmul(MatMut::row_major(&mut scores, 5, 5), q, k.transposed(), 0.5, false, Threads::One);
        for (got, want) in scores.iter().zip(&expected) {
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }

        // Accumulating into a strided destination leaves the other columns alone.
        let mut wide = vec![1.0; 5 * 8];
        let dst = MatMut { data: &mut wide, offset: 4, rows: 5, cols: 4, row_stride: 8, col_stride: 1 };
        matmul(dst, MatRef::row_major(&scores, 5, 5), MatRef { offset: 8, ..q }, 1.0, true, Threads::Pool);
        let product = naive(MatRef::row_major(&scores, 5, 5), MatRef { offset: 8, ..q });
        for i in 0..5 {
            assert_eq!(&wide[i * 8..i * 8 + 4], &[1.0; 4]);
            for j in 0..4 {
                let (got, want) = (wide[i * 8 + 4 + j], 1.0 + product[i * 4 + j]);
                assert!((got - want).abs() < 1e-4, "({i}, {j}): {got} vs {want}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "outside its slice")]
    fn a_view_past_its_slice_is_refused() {
        let data = [0.0f32; 8];
        let mut out = [0.0f32; 4];
        let lhs = MatRef { data: &data, offset: 0, rows: 2, cols: 2, row_stride: 7, col_stride: 1 };
        matmul(MatMut::row_major(&mut out, 2, 2), lhs, MatRef::row_major(&data, 2, 2), 1.0, false, Threads::One);
    }
}
