//! `nn.BatchNorm2d(channels)` (eps 1e-5, momentum 0.1, affine, running statistics tracked)
//! on NCHW tensors, as PyTorch computes it, so that a state dict moves between the two with
//! its buffers and gives the same outputs in both modes; optionally followed by LeakyReLU.
//!
//! - Training ([`Mode::Train`]): each channel is normalised by the batch's mean and biased
//!   variance over N, H and W, and the running statistics move towards the batch's:
//!   running_mean = 0.9 running_mean + 0.1 mean, running_var = 0.9 running_var + 0.1 var
//!   with the UNBIASED variance (n / (n - 1) times the biased one, n = N H W), and
//!   `num_batches_tracked` counts the batches. A batch with one value per channel has no
//!   unbiased variance and is an error, as in PyTorch.
//! - Evaluation ([`Mode::Eval`]): each channel is normalised by the running statistics, an
//!   affine map per channel, so each image's output is independent of the others.
//!
//! The running statistics are buffers (saved, not trained): `running_mean` and `running_var`
//! f32 [C], `num_batches_tracked` an i64 scalar, as PyTorch stores it. Training writes them
//! in place, into the storage the parameter store shares, so the model file, the training
//! state and the held-out copy of the network (which uses them) all see the update.
//!
//! Device rule: on the CPU, for f32, one pass for the statistics and one fused op for the
//! normalisation and the activation, whose backward pass writes the three gradients in two
//! passes; elsewhere the composed candle ops of [`BatchNorm2d::forward_reference`], tested
//! against it in `fused_op_matches_the_reference_in_value_and_gradient`. Composed, a
//! vae-conv training step spent 37 % of its time in candle's reductions over (N, H, W)
//! (strided, element by element) and as much again in the kernel zeroing the pages of the
//! half-dozen activation-sized buffers each BatchNorm and LeakyReLU allocated.
//!
//! With x̂ = (x - mean) rstd, rstd = 1 / sqrt(var + eps), z = x̂ gamma + beta and y = z or
//! LeakyReLU(z): dz = dy (1 or the slope where z <= 0), dbeta = Σ dz, dgamma = Σ dz x̂, and
//! with the batch's statistics dx = rstd (g - mean(g) - x̂ mean(g x̂)), g = dz gamma, the sums
//! and means over a channel's N H W values; with the running ones dx = rstd g.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::fastmath;
use super::gemm::contiguous_f32;
use super::norm::{affine_grads, centred_squares, dot_centred, grad_inputs};

/// PyTorch's defaults.
const EPS: f64 = 1e-5;
const MOMENTUM: f64 = 0.1;

/// Which statistics a normalisation layer uses: the batch's (and updates the running ones),
/// or the running ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    /// i64, shape [].
    num_batches_tracked: Tensor,
}

impl BatchNorm2d {
    /// `weight`, `bias`, `running_mean` and `running_var` [C] (f32), `num_batches_tracked`
    /// an i64 scalar.
    pub fn new(
        weight: Tensor,
        bias: Tensor,
        running_mean: Tensor,
        running_var: Tensor,
        num_batches_tracked: Tensor,
    ) -> Self {
        BatchNorm2d { weight, bias, running_mean, running_var, num_batches_tracked }
    }

    /// BatchNorm of `x` [N, C, H, W] in `mode`.
    pub fn forward(&self, x: &Tensor, mode: Mode) -> candle_core::Result<Tensor> {
        self.run(x, mode, None)
    }

    /// LeakyReLU(BatchNorm(x)) with the negative `slope`, fused.
    pub fn forward_leaky_relu(&self, x: &Tensor, mode: Mode, slope: f64) -> candle_core::Result<Tensor> {
        self.run(x, mode, Some(slope))
    }

    /// The module's device rule, after the checks both paths share.
    fn run(&self, x: &Tensor, mode: Mode, slope: Option<f64>) -> candle_core::Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        if self.weight.dims() != [c] {
            candle_core::bail!("batch norm of {:?} channels given an input of {c}", self.weight.dims())
        }
        let count = n * h * w;
        if mode == Mode::Train && count < 2 {
            candle_core::bail!(
                "batch norm in training needs more than one value per channel, got a batch of {n} at {h}x{w} (use a larger batch)"
            )
        }
        if !(x.device().is_cpu() && x.dtype() == DType::F32) {
            return self.forward_reference(x, mode, slope);
        }
        let x = x.contiguous()?;
        let (mean, var) = match mode {
            Mode::Train => {
                let moments = x.apply_op1_no_bwd(&ChannelMoments)?;
                let (mean, var) = (moments.get(0)?, moments.get(1)?);
                self.track(&mean, &var, count)?;
                (mean.to_vec1::<f32>()?, var.to_vec1::<f32>()?)
            }
            Mode::Eval => (self.running_mean.to_vec1::<f32>()?, self.running_var.to_vec1::<f32>()?),
        };
        let rstd = var.iter().map(|&v| (1.0 / (v as f64 + EPS).sqrt()) as f32).collect();
        let op = BatchNormOp { mean, rstd, batch_statistics: mode == Mode::Train, slope: slope.map(|s| s as f32) };
        x.apply_op3(&self.weight.contiguous()?, &self.bias.contiguous()?, op)
    }

    /// The composition of candle ops, kept as the reference.
    pub fn forward_reference(&self, x: &Tensor, mode: Mode, slope: Option<f64>) -> candle_core::Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let per_channel = |t: &Tensor| t.reshape((1, c, 1, 1));
        let (centred, inv_std) = match mode {
            Mode::Eval => {
                let centred = x.broadcast_sub(&per_channel(&self.running_mean)?)?;
                (centred, per_channel(&(&self.running_var + EPS)?.sqrt()?.recip()?)?)
            }
            Mode::Train => {
                let mean = x.mean_keepdim((0, 2, 3))?;
                let centred = x.broadcast_sub(&mean)?;
                let var = centred.sqr()?.mean_keepdim((0, 2, 3))?;
                self.track(&mean.flatten_all()?, &var.flatten_all()?, n * h * w)?;
                (centred, (var + EPS)?.sqrt()?.recip()?)
            }
        };
        let z = centred
            .broadcast_mul(&(inv_std.broadcast_mul(&per_channel(&self.weight)?)?))?
            .broadcast_add(&per_channel(&self.bias)?)?;
        match slope {
            Some(s) => z.maximum(&(&z * s)?),
            None => Ok(z),
        }
    }

    /// Moves the running statistics towards the batch's `mean` and biased `var` [C] over
    /// `count` values per channel, in place.
    fn track(&self, mean: &Tensor, var: &Tensor, count: usize) -> candle_core::Result<()> {
        let unbiased = (var.detach() * (count as f64 / (count - 1) as f64))?;
        let blend = |running: &Tensor, batch: &Tensor| (running * (1.0 - MOMENTUM))? + (batch * MOMENTUM)?;
        let new_mean = blend(&self.running_mean, &mean.detach())?;
        let new_var = blend(&self.running_var, &unbiased)?;
        self.running_mean.slice_set(&new_mean, 0, 0)?;
        self.running_var.slice_set(&new_var, 0, 0)?;
        // A [1] view of the scalar's storage, which slice_set can write.
        let count = self.num_batches_tracked.reshape(1)?;
        count.slice_set(&(&count + Tensor::ones(1, DType::I64, count.device())?)?, 0, 0)
    }
}

/// The planes of an NCHW input: `n` images of `c` channels of `hw` pixels.
#[derive(Debug, Clone, Copy)]
struct Planes {
    c: usize,
    hw: usize,
}

impl Planes {
    fn of(name: &str, dims: &[usize]) -> candle_core::Result<Self> {
        let &[_, c, h, w] = dims else { candle_core::bail!("{name}: expected an input [N, C, H, W], got {dims:?}") };
        Ok(Planes { c, hw: (h * w).max(1) })
    }

    /// Per channel, the sum over its planes (image after image) of `f` of each plane.
    fn per_channel(&self, x: &[f32], f: impl Fn(usize, &[f32]) -> f64 + Sync) -> Vec<f64> {
        let per_plane: Vec<f64> = x.par_chunks(self.hw).enumerate().map(|(p, plane)| f(p % self.c, plane)).collect();
        let mut sums = vec![0f64; self.c];
        for (p, v) in per_plane.into_iter().enumerate() {
            sums[p % self.c] += v;
        }
        sums
    }
}

/// A channel's mean and biased variance over N, H and W, in two passes: [2, C].
struct ChannelMoments;

impl CustomOp1 for ChannelMoments {
    fn name(&self) -> &'static str {
        "batch-norm-moments"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(self.name(), s, l)?;
        let d = Planes::of(self.name(), l.dims())?;
        let count = (x.len() / d.c.max(1)).max(1) as f64;
        let mean: Vec<f32> =
            d.per_channel(x, |_, plane| fastmath::sum(plane) as f64).into_iter().map(|s| (s / count) as f32).collect();
        let var =
            d.per_channel(x, |k, plane| centred_squares(plane, mean[k]) as f64).into_iter().map(|s| (s / count) as f32);
        let out: Vec<f32> = mean.iter().copied().chain(var).collect();
        Ok((CpuStorage::F32(out), Shape::from((2, d.c))))
    }
}

/// z = (x - mean) rstd gamma + beta, then LeakyReLU with `slope` when there is one;
/// inputs (x, gamma, beta).
struct BatchNormOp {
    mean: Vec<f32>,
    rstd: Vec<f32>,
    /// Whether `mean` and `rstd` are the batch's own, so that their gradient reaches x.
    batch_statistics: bool,
    slope: Option<f32>,
}

impl BatchNormOp {
    /// z = x a + s for channel `k`, with a = rstd gamma and s = beta - mean a.
    fn scale_shift(&self, k: usize, gamma: &[f32], beta: &[f32]) -> (f32, f32) {
        let a = self.rstd[k] * gamma[k];
        (a, beta[k] - self.mean[k] * a)
    }

    fn check(&self, name: &str, d: Planes, params: &[usize]) -> candle_core::Result<()> {
        if params != [d.c] || self.mean.len() != d.c || self.rstd.len() != d.c {
            candle_core::bail!("{name}: parameters {params:?} for an input of {} channels", d.c)
        }
        Ok(())
    }
}

impl CustomOp3 for BatchNormOp {
    fn name(&self) -> &'static str {
        "batch-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (x, w, b) = (contiguous_f32(name, xs, xl)?, contiguous_f32(name, ws, wl)?, contiguous_f32(name, bs, bl)?);
        let d = Planes::of(name, xl.dims())?;
        self.check(name, d, wl.dims())?;
        self.check(name, d, bl.dims())?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(d.hw).zip(x.par_chunks(d.hw)).enumerate().for_each(|(p, (y, x))| {
            let (a, s) = self.scale_shift(p % d.c, w, b);
            match self.slope {
                Some(slope) => y.iter_mut().zip(x).for_each(|(y, &x)| {
                    let z = x * a + s;
                    *y = if z > 0.0 { z } else { z * slope };
                }),
                None => y.iter_mut().zip(x).for_each(|(y, &x)| *y = x * a + s),
            }
        });
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        affine_grads(x, w, b, grad, &BatchNormGrad { forward: self })
    }
}

/// The backward pass of a [`BatchNormOp`], for [`affine_grads`].
struct BatchNormGrad<'a> {
    forward: &'a BatchNormOp,
}

impl CustomOp3 for BatchNormGrad<'_> {
    fn name(&self) -> &'static str {
        "batch-norm-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (x, dy, p) = grad_inputs(name, (xs, xl), (gs, gl), (ps, pl))?;
        let d = Planes::of(name, xl.dims())?;
        let op = self.forward;
        op.check(name, d, &[p.len() / 2])?;
        let (w, b) = p.split_at(d.c);
        let mut out = vec![0f32; x.len() + 2 * d.c];
        let (dx, params) = out.split_at_mut(x.len());
        // dz into dx, plane by plane, with each plane's Σ dz and Σ dz x̂.
        let sums: Vec<(f32, f32)> = dx
            .par_chunks_mut(d.hw)
            .zip(x.par_chunks(d.hw).zip(dy.par_chunks(d.hw)))
            .enumerate()
            .map(|(p, (dz, (x, dy)))| {
                let k = p % d.c;
                match op.slope {
                    Some(slope) => {
                        let (a, s) = op.scale_shift(k, w, b);
                        dz.iter_mut().zip(x.iter().zip(dy)).for_each(|(dz, (&x, &dy))| {
                            *dz = if x * a + s > 0.0 { dy } else { dy * slope };
                        });
                    }
                    None => dz.copy_from_slice(dy),
                }
                (fastmath::sum(dz), dot_centred(dz, x, op.mean[k]) * op.rstd[k])
            })
            .collect();
        let (dw, db) = params.split_at_mut(d.c);
        let (mut sum_dz, mut sum_dzx) = (vec![0f64; d.c], vec![0f64; d.c]);
        for (p, (sdz, sdzx)) in sums.into_iter().enumerate() {
            sum_dz[p % d.c] += sdz as f64;
            sum_dzx[p % d.c] += sdzx as f64;
        }
        for k in 0..d.c {
            (db[k], dw[k]) = (sum_dz[k] as f32, sum_dzx[k] as f32);
        }
        let count = (x.len() / d.c.max(1)).max(1) as f64;
        dx.par_chunks_mut(d.hw).zip(x.par_chunks(d.hw)).enumerate().for_each(|(p, (g, x))| {
            let k = p % d.c;
            let (gamma, mean, rstd) = (w[k], op.mean[k], op.rstd[k]);
            if op.batch_statistics {
                let mean_g = (sum_dz[k] * gamma as f64 / count) as f32;
                let mean_gx = (sum_dzx[k] * gamma as f64 / count) as f32;
                g.iter_mut().zip(x).for_each(|(g, &x)| {
                    let xhat = (x - mean) * rstd;
                    *g = (*g * gamma - mean_g - xhat * mean_gx) * rstd;
                });
            } else {
                g.iter_mut().for_each(|g| *g *= gamma * rstd);
            }
        });
        Ok((CpuStorage::F32(out), Shape::from(x.len() + 2 * d.c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    use crate::rng::{Rng, Stream};

    /// A layer over `c` channels with the given affine parameters and running statistics.
    fn layer(weight: &[f32], bias: &[f32], mean: &[f32], var: &[f32]) -> BatchNorm2d {
        let d = Device::Cpu;
        let t = |v: &[f32]| Tensor::new(v, &d).unwrap();
        BatchNorm2d::new(t(weight), t(bias), t(mean), t(var), Tensor::new(0i64, &d).unwrap())
    }

    fn input(n: usize, c: usize, h: usize, w: usize) -> Tensor {
        let x = Rng::new(4, Stream::Eval, 0).normal(&[n, c, h, w], &Device::Cpu).unwrap();
        // Channel k has mean k and scale k + 1, so the statistics differ per channel.
        let scale: Vec<f32> = (0..c).map(|k| k as f32 + 1.0).collect();
        let shift: Vec<f32> = (0..c).map(|k| k as f32).collect();
        let per = |v: Vec<f32>| Tensor::from_vec(v, (1, c, 1, 1), &Device::Cpu).unwrap();
        x.broadcast_mul(&per(scale)).unwrap().broadcast_add(&per(shift)).unwrap()
    }

    /// Per channel: the mean and biased variance over N, H and W, on the host in f64.
    fn channel_stats(x: &Tensor) -> Vec<(f64, f64)> {
        let (_, c, _, _) = x.dims4().unwrap();
        let per: Vec<Vec<f64>> = (0..c)
            .map(|k| {
                let v = x.narrow(1, k, 1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                v.into_iter().map(f64::from).collect()
            })
            .collect();
        per.iter()
            .map(|v| {
                let mean = v.iter().sum::<f64>() / v.len() as f64;
                (mean, v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64)
            })
            .collect()
    }

    fn vec(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    /// With weight 1 and bias 0, training mode gives every channel mean 0 and variance 1
    /// (var / (var + eps) exactly); weight and bias then scale and shift it.
    #[test]
    fn training_normalises_each_channel_to_mean_zero_variance_one() {
        let x = input(4, 3, 5, 6);
        let stats = channel_stats(&x);
        let y = layer(&[1.0; 3], &[0.0; 3], &[0.0; 3], &[1.0; 3]).forward(&x, Mode::Train).unwrap();
        for (k, (mean, var)) in channel_stats(&y).into_iter().enumerate() {
            let want = stats[k].1 / (stats[k].1 + EPS);
            assert!(mean.abs() < 1e-6 && (var - want).abs() < 1e-5, "channel {k}: mean {mean}, var {var}");
        }
        let y = layer(&[2.0, 0.5, -1.0], &[1.0, 0.0, 3.0], &[0.0; 3], &[1.0; 3]).forward(&x, Mode::Train).unwrap();
        let s = channel_stats(&y);
        for (k, (w, b)) in [(2.0, 1.0), (0.5, 0.0), (-1.0, 3.0)].into_iter().enumerate() {
            assert!((s[k].0 - b).abs() < 1e-5 && (s[k].1 - w * w).abs() < 1e-4, "channel {k}: {:?}", s[k]);
        }
    }

    /// Each training batch moves the running statistics by PyTorch's formula, with the
    /// unbiased variance, and counts the batch.
    #[test]
    fn training_updates_the_running_statistics_as_pytorch_does() {
        let (mean0, var0) = ([0.5f32, -1.0, 2.0], [1.0f32, 4.0, 0.25]);
        let bn = layer(&[1.0; 3], &[0.0; 3], &mean0, &var0);
        let mut want: Vec<(f64, f64)> = mean0.iter().zip(&var0).map(|(&m, &v)| (m as f64, v as f64)).collect();
        for step in 0..3 {
            let x = (input(2, 3, 3, 4) * (step as f64 + 1.0)).unwrap();
            let n = (2 * 3 * 4) as f64;
            for (w, (mean, var)) in want.iter_mut().zip(channel_stats(&x)) {
                *w = (0.9 * w.0 + 0.1 * mean, 0.9 * w.1 + 0.1 * var * n / (n - 1.0));
            }
            bn.forward(&x, Mode::Train).unwrap();
            let (m, v) = (vec(&bn.running_mean), vec(&bn.running_var));
            for k in 0..3 {
                assert!((m[k] as f64 - want[k].0).abs() < 1e-5, "step {step} mean {k}: {} vs {}", m[k], want[k].0);
                assert!((v[k] as f64 - want[k].1).abs() < 1e-4, "step {step} var {k}: {} vs {}", v[k], want[k].1);
            }
            assert_eq!(bn.num_batches_tracked.dtype(), DType::I64);
            assert_eq!(bn.num_batches_tracked.to_scalar::<i64>().unwrap(), step + 1);
        }
    }

    /// Evaluation uses the running statistics, leaves them alone, and treats each image
    /// on its own: y = (x - running_mean) / sqrt(running_var + eps) * weight + bias.
    #[test]
    fn evaluation_uses_the_running_statistics() {
        let bn = layer(&[2.0, -1.0], &[0.5, 1.0], &[1.0, -2.0], &[4.0, 0.25]);
        let x = input(3, 2, 2, 2);
        let y = bn.forward(&x, Mode::Eval).unwrap();
        let (xs, ys) = (vec(&x), vec(&y));
        for (i, (x, y)) in xs.iter().zip(&ys).enumerate() {
            let k = (i / 4) % 2;
            let (w, b, m, v) = [(2.0, 0.5, 1.0, 4.0), (-1.0, 1.0, -2.0, 0.25)][k];
            let want = (*x as f64 - m) / (v + EPS).sqrt() * w + b;
            assert!((*y as f64 - want).abs() < 1e-5, "element {i}: {y} vs {want}");
        }
        assert_eq!((vec(&bn.running_mean), vec(&bn.running_var)), (vec![1.0, -2.0], vec![4.0, 0.25]));
        assert_eq!(bn.num_batches_tracked.to_scalar::<i64>().unwrap(), 0);
        let first = bn.forward(&x.narrow(0, 0, 1).unwrap(), Mode::Eval).unwrap();
        assert_eq!(vec(&first), ys[..8].to_vec(), "an image's output does not depend on the batch");
    }

    #[test]
    fn one_value_per_channel_in_training_is_an_error() {
        let bn = layer(&[1.0], &[0.0], &[0.0], &[1.0]);
        let e = bn.forward(&input(1, 1, 1, 1), Mode::Train).unwrap_err().to_string();
        assert!(e.contains("more than one value per channel"), "{e}");
        assert!(bn.forward(&input(1, 1, 1, 1), Mode::Eval).is_ok());
    }

    /// The fused op against the composed candle ops: outputs, the gradients of x, gamma and
    /// beta, and the running statistics, in both modes, with and without LeakyReLU.
    #[test]
    fn fused_op_matches_the_reference_in_value_and_gradient() {
        let d = Device::Cpu;
        let coeff = Rng::new(3, Stream::Eval, 0).normal(&[3, 4, 5, 6], &d).unwrap();
        for mode in [Mode::Train, Mode::Eval] {
            for slope in [None, Some(0.01), Some(0.2)] {
                let run = |fused: bool| {
                    let x = candle_core::Var::from_tensor(&input(3, 4, 5, 6)).unwrap();
                    let w = candle_core::Var::new(&[1.5f32, -0.5, 0.8, 1.0], &d).unwrap();
                    let b = candle_core::Var::new(&[0.2f32, 0.1, -0.3, 0.0], &d).unwrap();
                    let t = |v: &[f32]| Tensor::new(v, &d).unwrap();
                    let bn = BatchNorm2d::new(
                        w.as_tensor().clone(),
                        b.as_tensor().clone(),
                        t(&[0.5, -1.0, 2.0, 0.0]),
                        t(&[1.0, 4.0, 0.25, 2.0]),
                        Tensor::new(5i64, &d).unwrap(),
                    );
                    let y = if fused {
                        bn.run(x.as_tensor(), mode, slope).unwrap()
                    } else {
                        bn.forward_reference(x.as_tensor(), mode, slope).unwrap()
                    };
                    let grads = (&y * &coeff).unwrap().sum_all().unwrap().backward().unwrap();
                    let g = |v: &candle_core::Var| vec(grads.get(v.as_tensor()).unwrap());
                    let stats = [vec(&bn.running_mean), vec(&bn.running_var)];
                    (vec(&y), [g(&x), g(&w), g(&b)], stats, bn.num_batches_tracked.to_scalar::<i64>().unwrap())
                };
                let (fused, reference) = (run(true), run(false));
                let close = |what: &str, a: &[f32], b: &[f32]| {
                    let worst = a.iter().zip(b).map(|(a, b)| (a - b).abs() / (1.0 + b.abs())).fold(0f32, f32::max);
                    assert!(worst < 1e-5, "{mode:?} {slope:?} {what}: off by {worst}");
                };
                close("output", &fused.0, &reference.0);
                for (what, (a, b)) in ["dx", "dgamma", "dbeta"].iter().zip(fused.1.iter().zip(&reference.1)) {
                    close(what, a, b);
                }
                close("running mean", &fused.2[0], &reference.2[0]);
                close("running var", &fused.2[1], &reference.2[1]);
                assert_eq!(fused.3, reference.3);
            }
        }
    }

    /// The gradients through the batch statistics match finite differences of the loss.
    #[test]
    fn training_gradients_match_finite_differences() {
        let d = Device::Cpu;
        let x = candle_core::Var::from_tensor(&input(2, 2, 2, 3)).unwrap();
        let weight = candle_core::Var::new(&[1.5f32, -0.5], &d).unwrap();
        let bias = Tensor::new(&[0.2f32, 0.1], &d).unwrap();
        // A loss that weighs every output differently, so that no gradient vanishes by symmetry.
        let coeff = Rng::new(2, Stream::Eval, 0).normal(&[2, 2, 2, 3], &d).unwrap();
        let loss = |x: &Tensor, weight: &Tensor| {
            let bn = BatchNorm2d::new(
                weight.clone(),
                bias.clone(),
                Tensor::zeros(2, DType::F32, &d).unwrap(),
                Tensor::ones(2, DType::F32, &d).unwrap(),
                Tensor::new(0i64, &d).unwrap(),
            );
            let y = bn.forward_leaky_relu(x, Mode::Train, 0.1).unwrap();
            (y.sqr().unwrap() * &coeff).unwrap().sum_all().unwrap()
        };
        let grads = loss(x.as_tensor(), weight.as_tensor()).backward().unwrap();
        let value = |x: &Tensor, w: &Tensor| loss(x, w).to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
        let h = 1e-2;
        for (var, other, is_x) in [(&x, weight.as_tensor(), true), (&weight, x.as_tensor(), false)] {
            let g = vec(grads.get(var.as_tensor()).unwrap());
            let base = vec(var.as_tensor());
            for i in 0..base.len() {
                let at = |delta: f32| {
                    let mut v = base.clone();
                    v[i] += delta;
                    let t = Tensor::from_vec(v, var.dims(), &d).unwrap();
                    if is_x {
                        value(&t, other)
                    } else {
                        value(other, &t)
                    }
                };
                let numeric = (at(h) - at(-h)) / (2.0 * h as f64);
                assert!((numeric - g[i] as f64).abs() < 2e-2 * (1.0 + numeric.abs()), "{i}: {numeric} vs {}", g[i]);
            }
        }
    }
}
