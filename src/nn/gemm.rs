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
///
/// Every entry is the same sum in the same order whatever the product's other rows and
/// columns: entry (i, j) depends on row i of A, column j of B and nothing else, so a network
/// gives an image the same bits in a batch of 1 or of 500 (and a job split into shards
/// repeats the whole run). The kernel alone does not promise that: it blocks the inner
/// dimension by 512 for products up to 64 x 64 and by a length from the cache sizes above,
/// and takes other paths, which sum in other orders, for a single row or column and for
/// products of at most 256 entries whose operands both run along the inner dimension. So
/// the inner dimension goes to the kernel in blocks of [`INNER_BLOCK`] (which it then never
/// cuts), a single row or column is padded to two, and the small products get one operand
/// copied to the other layout. Measured on vq-encode, vq-decode, prior-fit, prior-sample,
/// DDIM and training of vae-mlp and vqvae2-mnist: the same CPU seconds as the kernel alone,
/// within the noise of a shared machine.
pub fn product_strided(dst: &mut [f32], dst_rs: usize, a: Mat, b: Mat, accumulate: bool, parallel: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "gemm: inner dimensions differ");
    let dst_fits = m == 0 || n == 0 || (dst_rs >= n && dst.len() >= (m - 1) * dst_rs + n);
    assert!(dst_fits && a.fits(a.data.len()) && b.fits(b.data.len()), "gemm: view out of bounds");
    if m == 0 || n == 0 {
        return;
    }
    if m == 1 || n == 1 {
        return padded(dst, dst_rs, a, b, accumulate, parallel);
    }
    let copy;
    let (a, b) = if a.cs == 1 && b.rs == 1 && m * n <= DOT_PATH_ENTRIES {
        // The smaller operand goes to the other layout: A column-major or B row-major.
        if m <= n {
            copy = (0..k).flat_map(|l| (0..m).map(move |i| a.data[i * a.rs + l])).collect::<Vec<f32>>();
            (Mat { data: &copy, rows: m, cols: k, rs: 1, cs: m }, b)
        } else {
            copy = (0..k).flat_map(|l| (0..n).map(move |j| b.data[l * b.rs + j * b.cs])).collect::<Vec<f32>>();
            (a, Mat::rows(&copy, k, n))
        }
    } else {
        (a, b)
    };
    if k == 0 {
        return kernel(dst, dst_rs, a, b, accumulate, parallel);
    }
    let threads = rayon::current_num_threads();
    if parallel && threads > 1 && k > INNER_BLOCK && m * n <= SPLIT_INNER_ENTRIES {
        return inner_blocks_in_parallel(dst, dst_rs, a, b, accumulate, threads);
    }
    for start in (0..k).step_by(INNER_BLOCK) {
        let len = INNER_BLOCK.min(k - start);
        let a = Mat { data: &a.data[start * a.cs..], cols: len, ..a };
        let b = Mat { data: &b.data[start * b.rs..], rows: len, ..b };
        kernel(dst, dst_rs, a, b, accumulate || start > 0, parallel);
    }
}

/// The most entries of a product whose inner blocks run on separate threads (see
/// [`inner_blocks_in_parallel`]): 256K floats, 1 MiB per block in flight.
const SPLIT_INNER_ENTRIES: usize = 1 << 18;

/// A product with a long inner dimension and a small output, such as a weight gradient
/// (outputs x inputs, summed over every pixel of a batch): the kernel would split only the
/// output over threads, which leaves them few tiles each (about half its speed on a
/// [128, 8192] x [8192, 384] product on 2 threads). Here each block of [`INNER_BLOCK`]
/// gets its own thread and buffer, `threads` x 2 blocks at a time, and the blocks are
/// then added to `dst` in order: the same sum, in the same order, as the sequential loop
/// of [`product_strided`] (which adds block i's product to the sum of blocks 0..i), so the
/// same bits on any thread count.
fn inner_blocks_in_parallel(dst: &mut [f32], dst_rs: usize, a: Mat, b: Mat, accumulate: bool, threads: usize) {
    use rayon::prelude::*;
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let starts: Vec<usize> = (0..k).step_by(INNER_BLOCK).collect();
    for wave in starts.chunks(2 * threads) {
        let partials: Vec<Vec<f32>> = wave
            .par_iter()
            .map(|&start| {
                let len = INNER_BLOCK.min(k - start);
                let a = Mat { data: &a.data[start * a.cs..], cols: len, ..a };
                let b = Mat { data: &b.data[start * b.rs..], rows: len, ..b };
                let mut p = vec![0f32; m * n];
                kernel(&mut p, n, a, b, false, false);
                p
            })
            .collect();
        for (&start, p) in wave.iter().zip(&partials) {
            for (d, p) in dst.chunks_mut(dst_rs).zip(p.chunks_exact(n)) {
                if accumulate || start > 0 {
                    d[..n].iter_mut().zip(p).for_each(|(d, p)| *d += p);
                } else {
                    d[..n].copy_from_slice(p);
                }
            }
        }
    }
}

/// The longest inner dimension one call of the kernel gets: its own block for small
/// products, so it cuts no call into blocks of another length.
const INNER_BLOCK: usize = 512;

/// The most entries of a product the kernel computes as dot products when both operands
/// run along the inner dimension (A row-major, B column-major).
const DOT_PATH_ENTRIES: usize = 256;

/// A product with a single row or column, computed as one with two (the second zero), so
/// that the kernel takes its general path and not its matrix-vector one.
fn padded(dst: &mut [f32], dst_rs: usize, a: Mat, b: Mat, accumulate: bool, parallel: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let (m2, n2) = (m.max(2), n.max(2));
    let mut a2 = vec![0f32; m2 * k];
    for (i, row) in a2.chunks_exact_mut(k.max(1)).take(m).enumerate() {
        row.iter_mut().enumerate().for_each(|(l, v)| *v = a.data[i * a.rs + l * a.cs]);
    }
    let mut b2 = vec![0f32; k * n2];
    for (l, row) in b2.chunks_exact_mut(n2).enumerate() {
        row.iter_mut().take(n).enumerate().for_each(|(j, v)| *v = b.data[l * b.rs + j * b.cs]);
    }
    let mut d2 = vec![0f32; m2 * n2];
    if accumulate {
        for i in 0..m {
            d2[i * n2..i * n2 + n].copy_from_slice(&dst[i * dst_rs..i * dst_rs + n]);
        }
    }
    product_strided(&mut d2, n2, Mat::rows(&a2, m2, k), Mat::rows(&b2, k, n2), accumulate, parallel);
    for i in 0..m {
        dst[i * dst_rs..i * dst_rs + n].copy_from_slice(&d2[i * n2..i * n2 + n]);
    }
}

/// One call of the kernel, on rayon's threads when `parallel` and the product is large
/// enough to gain from them.
fn kernel(dst: &mut [f32], dst_rs: usize, a: Mat, b: Mat, accumulate: bool, parallel: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let threads = rayon::current_num_threads();
    let parallelism = if parallel && threads > 1 && m * n * k > 32 * 32 * 32 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: `product_strided` checked that every index the kernel reads or writes lies
    // inside the slices (element (i, j) of a view is at i * rs + j * cs), and its blocks of
    // the inner dimension and copies keep inside them.
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

/// `dst[j dst_stride + i] = src[i src_stride + j]` for i < rows, j < cols: a transpose, as
/// the layout changes between planes and pixels (NCHW and NHWC) need. Done in 4x4 blocks
/// held in SSE registers, since walking either side one float at a time jumps a plane or a
/// pixel per step, which cost as much as the Winograd transforms themselves.
///
/// # Panics
/// When either side reaches outside its slice.
pub fn transpose(src: &[f32], src_stride: usize, dst: &mut [f32], dst_stride: usize, rows: usize, cols: usize) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!((rows - 1) * src_stride + cols <= src.len() && (cols - 1) * dst_stride + rows <= dst.len());
    let (rows4, cols4) = (rows / 4 * 4, cols / 4 * 4);
    #[cfg(target_arch = "x86_64")]
    for i in (0..rows4).step_by(4) {
        for j in (0..cols4).step_by(4) {
            // SAFETY: SSE is part of x86_64; the assert above keeps rows i..i+4 of columns
            // j..j+4 inside `src` and rows j..j+4 of columns i..i+4 inside `dst`.
            unsafe {
                transpose4(
                    src.as_ptr().add(i * src_stride + j),
                    src_stride,
                    dst.as_mut_ptr().add(j * dst_stride + i),
                    dst_stride,
                )
            }
        }
    }
    let scalar = |d: &mut [f32], i: usize, j: usize| d[j * dst_stride + i] = src[i * src_stride + j];
    let done = if cfg!(target_arch = "x86_64") { (rows4, cols4) } else { (0, 0) };
    for i in 0..rows {
        let from = if i < done.0 { done.1 } else { 0 };
        for j in from..cols {
            scalar(dst, i, j);
        }
    }
}

/// One 4x4 block of [`transpose`].
///
/// # Safety
/// Four floats from each of `src`, `src + s`, `src + 2s`, `src + 3s` must be readable, and
/// four at each of `dst`, `dst + d`, `dst + 2d`, `dst + 3d` writable.
#[cfg(target_arch = "x86_64")]
unsafe fn transpose4(src: *const f32, s: usize, dst: *mut f32, d: usize) {
    use std::arch::x86_64::*;
    let (r0, r1, r2, r3) =
        (_mm_loadu_ps(src), _mm_loadu_ps(src.add(s)), _mm_loadu_ps(src.add(2 * s)), _mm_loadu_ps(src.add(3 * s)));
    let (t0, t1, t2, t3) =
        (_mm_unpacklo_ps(r0, r1), _mm_unpacklo_ps(r2, r3), _mm_unpackhi_ps(r0, r1), _mm_unpackhi_ps(r2, r3));
    _mm_storeu_ps(dst, _mm_movelh_ps(t0, t1));
    _mm_storeu_ps(dst.add(d), _mm_movehl_ps(t1, t0));
    _mm_storeu_ps(dst.add(2 * d), _mm_movelh_ps(t2, t3));
    _mm_storeu_ps(dst.add(3 * d), _mm_movehl_ps(t3, t2));
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

    /// A weight gradient's shape (a long inner dimension, a small output), whose inner
    /// blocks run on separate threads: the same bits as the sequential sum of blocks, into
    /// a fresh or an accumulated destination, also one whose rows lie wider apart.
    #[test]
    fn inner_blocks_on_threads_sum_as_the_sequential_loop() {
        let (m, k, n, rs) = (12, 5 * INNER_BLOCK + 37, 20, 26);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 104_729 % 997) as f32 - 498.0) * 1e-3).collect();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        for accumulate in [false, true] {
            let run = |parallel| {
                let mut c: Vec<f32> = (0..m * rs).map(|i| (i % 5) as f32 * 0.5).collect();
                let (a, b) = (Mat::rows(&a, k, m).t(), Mat::rows(&b, k, n));
                pool.install(|| product_strided(&mut c, rs, a, b, accumulate, parallel));
                c
            };
            assert_eq!(run(true), run(false), "accumulate {accumulate}");
        }
    }

    /// A row's entries are the same bits whichever rows and columns come with it: for inner
    /// dimensions the kernel cuts into blocks (1300), takes whole (300) or handles as outer
    /// products (2), with B as a row-major matrix and as the transposed view of a linear
    /// layer's weight, and in the shapes where the kernel's other paths would apply (one
    /// row, one column, under 256 entries).
    #[test]
    fn an_entry_does_not_depend_on_the_other_rows_and_columns() {
        for (m, k, n) in [(130, 1300, 90), (40, 300, 6), (9, 2, 70), (200, 64, 1), (3, 700, 5)] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 104_729 % 997) as f32 - 498.0) * 1e-3).collect();
            let bias: Vec<f32> = (0..m * n).map(|i| (i % 7) as f32 * 0.25).collect();
            for transposed in [false, true] {
                // B as [k, n], or as the transpose of a weight [n, k].
                let view = |cols: std::ops::Range<usize>| match transposed {
                    false => Mat { data: &b[cols.start..], rows: k, cols: cols.len(), rs: n, cs: 1 },
                    true => Mat { data: &b[cols.start * k..], rows: k, cols: cols.len(), rs: 1, cs: k },
                };
                let run = |rows: std::ops::Range<usize>, cols: std::ops::Range<usize>| {
                    let mut c: Vec<f32> =
                        rows.clone().flat_map(|i| bias[i * n..][cols.clone()].iter().copied()).collect();
                    let a = Mat::rows(&a[rows.start * k..rows.end * k], rows.len(), k);
                    matmul(&mut c, a, view(cols.clone()), true);
                    c
                };
                let whole = run(0..m, 0..n);
                for (rows, cols) in [(0..1, 0..n), (m - 1..m, 0..n), (1..m.min(4), 0..n), (0..m, 0..1), (0..1, 0..1)] {
                    let part = run(rows.clone(), cols.clone());
                    for (r, i) in rows.clone().enumerate() {
                        for (c, j) in cols.clone().enumerate() {
                            let (got, want) = (part[r * cols.len() + c], whole[i * n + j]);
                            assert_eq!(
                                got.to_bits(),
                                want.to_bits(),
                                "{m}x{k}x{n} (transposed {transposed}): ({i}, {j})"
                            );
                        }
                    }
                }
            }
        }
    }
}
