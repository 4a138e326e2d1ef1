//! A bounds-checked front to the `gemm` crate (the matrix kernel candle itself uses), for
//! the fused CPU ops: C = A B (+ C) for f32 matrices with arbitrary strides.

use candle_core::{CpuStorage, Layout};
use gemm::Parallelism;

/// A matrix view: data, rows, columns, row stride and column stride (in elements).
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major (contiguous) matrix.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat { data, rows, cols, rs: cols, cs: 1 }
    }

    /// The transpose, as a view.
    pub fn t(self) -> Self {
        Mat { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }

    fn fits(&self, len: usize) -> bool {
        self.rows == 0 || self.cols == 0 || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < len
    }
}

/// The data of a contiguous f32 tensor; other tensors are an error that names `op`.
pub fn contiguous_f32<'a>(op: &str, s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("{op}: expected contiguous f32 tensors"),
    }
}

/// `dst` (rows x cols, row-major) = A B, or += A B when `accumulate`, on rayon's threads.
///
/// # Panics
/// When the shapes disagree or a view reaches outside its slice: callers check shapes first.
pub fn matmul(dst: &mut [f32], a: Mat, b: Mat, accumulate: bool) {
    product(dst, a, b, accumulate, true)
}

/// [`matmul`] split over rayon's threads when `parallel`, else on the calling thread alone,
/// for callers that run one product per thread: the kernel's own splitting would only add
/// synchronisation there. Either way every entry is the same sum in the same order: the
/// kernel splits the output's rows and columns over threads, never the inner dimension.
pub fn product(dst: &mut [f32], a: Mat, b: Mat, accumulate: bool, parallel: bool) {
    product_strided(dst, b.cols, a, b, accumulate, parallel)
}

/// [`product`] into a destination whose rows lie `dst_rs` elements apart (at least its
/// columns): the columns of a wider row-major matrix, as when a product fills one half of
/// each row.
pub fn product_strided(dst: &mut [f32], dst_rs: usize, a: Mat, b: Mat, accumulate: bool, parallel: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "gemm: inner dimensions differ");
    let dst_fits = m == 0 || n == 0 || (dst_rs >= n && dst.len() >= (m - 1) * dst_rs + n);
    assert!(dst_fits && a.fits(a.data.len()) && b.fits(b.data.len()), "gemm: view out of bounds");
    if m == 0 || n == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    let parallelism = if parallel && threads > 1 && m * n * k > 32 * 32 * 32 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: the asserts above keep every index the kernel reads or writes inside the
    // slices: element (i, j) of a view is at i * rs + j * cs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_naive_product_with_transposes_and_accumulation() {
        let a: Vec<f32> = (0..6).map(|v| v as f32).collect(); // 2x3
        let b: Vec<f32> = (0..12).map(|v| v as f32 * 0.5).collect(); // 3x4
        let mut c = vec![1.0f32; 8];
        matmul(&mut c, Mat::rows(&a, 2, 3), Mat::rows(&b, 3, 4), true);
        for i in 0..2 {
            for j in 0..4 {
                let want: f32 = 1.0 + (0..3).map(|l| a[i * 3 + l] * b[l * 4 + j]).sum::<f32>();
                assert_eq!(c[i * 4 + j], want);
            }
        }
        // A^T A through a transposed view: 3x3.
        let mut d = vec![0.0f32; 9];
        matmul(&mut d, Mat::rows(&a, 2, 3).t(), Mat::rows(&a, 2, 3), false);
        assert_eq!(d[0], 0.0 * 0.0 + 3.0 * 3.0);
        assert_eq!(d[5], 1.0 * 2.0 + 4.0 * 5.0);
    }

    /// The same bits on 1, 2 and 3 threads, for a product large enough to be split over
    /// threads and with an inner dimension the kernel cuts into several chunks.
    #[test]
    fn products_do_not_depend_on_the_thread_count() {
        let (m, k, n) = (70, 1300, 90);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 104_729 % 997) as f32 - 498.0) * 1e-3).collect();
        let on = |threads| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let mut c = vec![0.5f32; m * n];
            pool.install(|| matmul(&mut c, Mat::rows(&a, m, k), Mat::rows(&b, k, n), true));
            c
        };
        let one = on(1);
        assert_eq!(one, on(2));
        assert_eq!(one, on(3));
    }
}
