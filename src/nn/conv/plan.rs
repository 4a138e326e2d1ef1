//! What the kernels share: the shapes of one convolution ([`Geometry`]), how a batch is cut
//! into blocks of images and spread over rayon's threads ([`Plan`], [`for_blocks`]), and how
//! the blocks' weight gradients are summed ([`sum_over_blocks`]).
//!
//! The blocks depend on the batch alone, never on the thread count: they fix which columns
//! each matrix product covers and the order in which the weight gradient sums over the
//! batch, so a seeded training run gives the same bits on any number of threads.

use rayon::prelude::*;

/// The shapes of one convolution, in the direction of the convolution (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Geometry {
    /// Channels, height and width of the input side.
    pub c: usize,
    pub h: usize,
    pub w: usize,
    /// Channels, height and width of the output side.
    pub m: usize,
    pub ho: usize,
    pub wo: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Geometry {
    /// Rows of the im2col matrix, C kh kw.
    pub fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Pixels of one output-side plane, Ho Wo.
    pub fn p(&self) -> usize {
        self.ho * self.wo
    }

    /// Pixels of one input-side plane, H W.
    pub fn hw(&self) -> usize {
        self.h * self.w
    }

    pub fn weight_dims(&self) -> [usize; 4] {
        [self.m, self.c, self.kh, self.kw]
    }

    pub fn input_dims(&self, n: usize) -> [usize; 4] {
        [n, self.c, self.h, self.w]
    }

    pub fn output_dims(&self, n: usize) -> [usize; 4] {
        [n, self.m, self.ho, self.wo]
    }
}

/// The fewest blocks a batch of at least as many images is cut into, however many fit the
/// working-memory budget. A constant rather than one block per thread, which is what makes
/// the blocks independent of the thread count; 4 gives each of 2 threads (this machine's
/// cores) two blocks, and 4 threads one each.
const MIN_BLOCKS: usize = 4;

/// How a batch is cut into blocks of images and spread over rayon's threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Images per block.
    pub block: usize,
    /// Whether blocks run in parallel, each on one thread (else in turn, each spread over all
    /// threads).
    pub across: bool,
}

impl Plan {
    /// Blocks of as many images as fit `budget` floats of working memory at `per_image` each,
    /// at least one and at most a [`MIN_BLOCKS`]-th of the batch of `n`: the blocks depend on
    /// the batch alone. With at least one block per thread of `threads`, each thread takes
    /// whole blocks and runs their products alone, with no synchronisation within a block: on
    /// 2 cores that was as fast as splitting every product over both threads, or up to 40 %
    /// faster (measured on the benchmark's shapes). With fewer blocks, blocks run in turn and
    /// their work is split instead. Either way every float comes out the same.
    pub fn fitting(n: usize, per_image: usize, budget: usize, threads: usize) -> Plan {
        let block = (budget / per_image.max(1)).clamp(1, n.div_ceil(MIN_BLOCKS).max(1));
        Plan { block, across: threads > 1 && n.div_ceil(block) >= threads }
    }
}

/// Runs `f(scratch, dst, src, parallel)` on each block of images: `dst` and `src` hold
/// `dst_image` and `src_image` floats per image. Blocks run on separate threads when
/// `plan.across`, else in turn with `parallel` set, for `f` to split its own work.
pub(super) fn for_blocks<S, F>(plan: Plan, dst: &mut [f32], dst_image: usize, src: &[f32], src_image: usize, f: F)
where
    S: Default + Send,
    F: Fn(&mut S, &mut [f32], &[f32], bool) + Sync,
{
    let (dst_block, src_block) = (plan.block * dst_image, plan.block * src_image);
    if plan.across {
        dst.par_chunks_mut(dst_block)
            .zip(src.par_chunks(src_block))
            .for_each_init(S::default, |s, (d, x)| f(s, d, x, false));
    } else {
        let mut s = S::default();
        for (d, x) in dst.chunks_mut(dst_block).zip(src.chunks(src_block)) {
            f(&mut s, d, x, true);
        }
    }
}

/// Floats of the sum one task adds the blocks' partial sums onto.
const ADD_CHUNK: usize = 1 << 14;

/// The sum over the blocks of `plan` of `f(scratch, part, output, input, parallel)`, which
/// writes `len` floats of `part` from one block of `output` and `input` (`out_image` and
/// `in_image` floats per image): a weight gradient, summed over the batch.
///
/// The blocks' partial sums are added in block order: the float sums then run in an order
/// fixed by the plan, whichever thread ran which block (rayon's fold would split where work
/// happens to be stolen, and runs of blocks per thread would change with the thread count).
/// With `plan.across`, blocks run a wave of one per thread at a time, so that only one
/// partial sum per thread is held; each wave's partials are then added, in order, on all
/// threads, each taking a run of the sum.
pub(super) fn sum_over_blocks<S, F>(
    plan: Plan,
    len: usize,
    output: &[f32],
    out_image: usize,
    input: &[f32],
    in_image: usize,
    f: F,
) -> Vec<f32>
where
    S: Default + Send + Sync,
    F: Fn(&mut S, &mut [f32], &[f32], &[f32], bool) + Sync,
{
    let wave = if plan.across { rayon::current_num_threads() } else { 1 };
    let mut parts: Vec<(S, Vec<f32>)> = (0..wave).map(|_| Default::default()).collect();
    let (out_block, in_block) = ((plan.block * out_image).max(1), (plan.block * in_image).max(1));
    let blocks: Vec<(&[f32], &[f32])> = output.chunks(out_block).zip(input.chunks(in_block)).collect();
    let run = |(s, part): &mut (S, Vec<f32>), &(out, src): &(&[f32], &[f32]), parallel| {
        f(s, sized(part, len), out, src, parallel)
    };
    let mut sum = vec![0f32; len];
    for wave in blocks.chunks(wave) {
        if plan.across {
            parts.par_iter_mut().zip(wave).for_each(|(part, block)| run(part, block, false));
        } else {
            run(&mut parts[0], &wave[0], true);
        }
        let parts: Vec<&[f32]> = parts[..wave.len()].iter().map(|(_, part)| &part[..len]).collect();
        add_in_order(&mut sum, &parts);
    }
    sum
}

/// Adds `parts` onto `sum` in their order, on all threads, each taking a run of the sum:
/// every float's sum runs in the order of `parts`, whichever thread adds it.
pub(crate) fn add_in_order(sum: &mut [f32], parts: &[&[f32]]) {
    sum.par_chunks_mut(ADD_CHUNK).enumerate().for_each(|(i, sum)| {
        for part in parts {
            sum.iter_mut().zip(&part[i * ADD_CHUNK..]).for_each(|(a, b)| *a += b);
        }
    });
}

/// A buffer of `len` floats, reused: its contents are left for the caller to overwrite.
pub(crate) fn sized(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buf.resize(len, 0.0);
    &mut buf[..len]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_depend_on_the_batch_and_budget_but_not_on_the_threads() {
        for threads in [1, 2, 3, 16] {
            // 16 images of which 10 fit: a quarter of the batch.
            assert_eq!(Plan::fitting(16, 10, 100, threads).block, 4);
            // 16 images of which 3 fit.
            assert_eq!(Plan::fitting(16, 10, 30, threads).block, 3);
            // One image larger than the budget, and an empty batch.
            assert_eq!(Plan::fitting(5, 1000, 30, threads).block, 1);
            assert_eq!(Plan::fitting(0, 10, 100, threads).block, 1);
        }
        // Blocks run across threads when there are enough of them.
        assert!(Plan::fitting(16, 10, 100, 2).across && Plan::fitting(16, 10, 100, 4).across);
        assert!(!Plan::fitting(16, 10, 100, 1).across && !Plan::fitting(16, 10, 100, 8).across);
    }
}
