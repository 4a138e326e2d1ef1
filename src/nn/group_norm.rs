//! `nn.GroupNorm(groups, channels, eps)` (eps 1e-5 unless set, affine), optionally followed by SiLU, on
//! NCHW tensors.
//!
//! Every GroupNorm of the diffusion U-Net is followed by SiLU except the attention's. Built
//! from candle ops the pair is about a dozen passes over memory forward and twice that
//! backward, each allocating a fresh tensor of the activation's size; on the CPU this runs
//! as one fused op instead: one pass for the statistics and one for the output, and a
//! backward pass that recomputes the statistics and writes the three gradients in two
//! passes.
//!
//! Device rule: a CPU kernel for f32; elsewhere the composed candle ops of
//! [`GroupNorm::forward_reference`] (means, broadcast arithmetic, sqrt and candle-nn's
//! sigmoid, all with their gradients), tested against it in
//! `fused_op_matches_the_reference_in_value_and_gradient`.
//!
//! With x̂ = (x - mean) / sqrt(var + eps) over the C/G channels and H W pixels of a group,
//! z = x̂ gamma + beta and y = z or SiLU(z) = z sigmoid(z):
//! dz = dy (1 or sigmoid(z) (1 + z (1 - sigmoid(z)))), dbeta = Σ dz, dgamma = Σ dz x̂, and
//! with g = dz gamma, dx = (g - mean(g) - x̂ mean(g x̂)) / sqrt(var + eps), the means over
//! the group.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use multiversion::multiversion;
use rayon::prelude::*;

use super::fastmath;
use super::gemm::contiguous_f32;
use super::norm::{affine_grads, centred_squares, dot_centred, grad_inputs};

/// PyTorch's default.
pub const DEFAULT_EPS: f32 = 1e-5;

#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f32,
}

impl GroupNorm {
    /// `weight` and `bias` [C]; C must be a multiple of `groups`. eps is PyTorch's default.
    pub fn new(weight: Tensor, bias: Tensor, groups: usize) -> Self {
        GroupNorm { weight, bias, groups, eps: DEFAULT_EPS }
    }

    /// The same norm with `eps` added to the variance (diffusers' U-Nets use 1e-6).
    pub fn with_eps(self, eps: f32) -> Self {
        GroupNorm { eps, ..self }
    }

    /// GroupNorm of `x` [N, C, H, W].
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.run(x, false)
    }

    /// SiLU(GroupNorm(x)), fused.
    pub fn forward_silu(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.run(x, true)
    }

    /// The module's device rule.
    fn run(&self, x: &Tensor, silu: bool) -> candle_core::Result<Tensor> {
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            let (w, b) = (self.weight.contiguous()?, self.bias.contiguous()?);
            x.contiguous()?.apply_op3(&w, &b, GroupNormOp { groups: self.groups, silu, eps: self.eps })
        } else {
            self.forward_reference(x, silu)
        }
    }

    /// The composition of candle ops, kept as the reference.
    pub fn forward_reference(&self, x: &Tensor, silu: bool) -> candle_core::Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        // (n, c, h, w) -> (n, groups, c/groups * h * w)
        let xg = x.reshape((n, self.groups, ()))?;
        let xc = xg.broadcast_sub(&xg.mean_keepdim(2)?)?;
        let var = xc.sqr()?.mean_keepdim(2)?;
        let xhat = xc.broadcast_div(&(var + self.eps as f64)?.sqrt()?)?.reshape((n, c, h, w))?;
        let z = xhat
            .broadcast_mul(&self.weight.reshape((1, c, 1, 1))?)?
            .broadcast_add(&self.bias.reshape((1, c, 1, 1))?)?;
        if silu {
            &z * candle_nn::ops::sigmoid(&z)?
        } else {
            Ok(z)
        }
    }
}

/// The shapes of one call: `n` images of `c` channels in `groups` groups of `hw` pixels.
#[derive(Debug, Clone, Copy)]
struct Dims {
    c: usize,
    hw: usize,
    groups: usize,
}

impl Dims {
    fn of(name: &str, x: &[usize], params: &[usize], groups: usize) -> candle_core::Result<Self> {
        let &[_, c, h, w] = x else { candle_core::bail!("{name}: expected an input [N, C, H, W], got {x:?}") };
        if groups == 0 || c % groups != 0 {
            candle_core::bail!("{name}: {c} channels do not split into {groups} groups")
        }
        if params != [c] {
            candle_core::bail!("{name}: weight and bias have shape {params:?}, expected [{c}]")
        }
        Ok(Dims { c, hw: h * w, groups })
    }

    /// Floats of one group of one image: a contiguous run in NCHW.
    fn group_len(&self) -> usize {
        self.c / self.groups * self.hw
    }
}

/// Mean and 1 / sqrt(var + eps) of one group, the variance in two passes.
fn stats(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len().max(1) as f32;
    let mean = fastmath::sum(x) / n;
    (mean, 1.0 / (centred_squares(x, mean) / n + eps).sqrt())
}

#[inline(always)]
fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + fastmath::exp(-z))
}

/// y = z, or SiLU(z) = z sigmoid(z) when `silu`, with z = x a + s.
#[multiversion(targets("x86_64+avx2+fma"))]
fn normalise(y: &mut [f32], x: &[f32], a: f32, s: f32, silu: bool) {
    if silu {
        y.iter_mut().zip(x).for_each(|(y, &x)| {
            let z = x * a + s;
            *y = z * sigmoid(z);
        });
    } else {
        y.iter_mut().zip(x).for_each(|(y, &x)| *y = x * a + s);
    }
}

/// dz = dy SiLU'(z), with z = x a + s.
#[multiversion(targets("x86_64+avx2+fma"))]
fn silu_grad(dz: &mut [f32], x: &[f32], dy: &[f32], a: f32, s: f32) {
    dz.iter_mut().zip(x).zip(dy).for_each(|((dz, &x), &dy)| {
        let z = x * a + s;
        let s = sigmoid(z);
        *dz = dy * s * (1.0 + z * (1.0 - s));
    });
}

/// Forward pass, inputs (x, weight, bias).
struct GroupNormOp {
    groups: usize,
    silu: bool,
    eps: f32,
}

impl CustomOp3 for GroupNormOp {
    fn name(&self) -> &'static str {
        "group-norm"
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
        let d = Dims::of(name, xl.dims(), wl.dims(), self.groups)?;
        if bl.dims() != wl.dims() {
            candle_core::bail!("{name}: bias {:?} differs from weight {:?}", bl.dims(), wl.dims())
        }
        let (len, cg) = (d.group_len(), d.c / d.groups);
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(len.max(1)).zip(x.par_chunks(len.max(1))).enumerate().for_each(|(i, (y, x))| {
            let (mean, rstd) = stats(x, self.eps);
            let first = (i % d.groups) * cg;
            for (k, (y, x)) in y.chunks_exact_mut(d.hw.max(1)).zip(x.chunks_exact(d.hw.max(1))).enumerate() {
                // z = x a + s with a = rstd gamma, s = beta - mean a.
                let a = rstd * w[first + k];
                normalise(y, x, a, b[first + k] - mean * a, self.silu);
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
        affine_grads(x, w, b, grad, &GroupNormGrad { groups: self.groups, silu: self.silu, eps: self.eps })
    }
}

/// The backward pass, inputs (x, dy, [gamma, beta]); output the three gradients packed
/// into one vector, as a CustomOp has one output.
struct GroupNormGrad {
    groups: usize,
    silu: bool,
    eps: f32,
}

impl CustomOp3 for GroupNormGrad {
    fn name(&self) -> &'static str {
        "group-norm-grad"
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
        let c = p.len() / 2;
        let d = Dims::of(name, xl.dims(), &[c], self.groups)?;
        let (w, b) = p.split_at(c);
        let (len, cg, hw) = (d.group_len().max(1), d.c / d.groups, d.hw.max(1));
        let mut out = vec![0f32; x.len() + 2 * c];
        let (dx, _) = out.split_at_mut(x.len());
        // Each group of each image: its dx, and its channels' (dgamma, dbeta) terms.
        let partial: Vec<(usize, Vec<f32>, Vec<f32>)> = dx
            .par_chunks_mut(len)
            .zip(x.par_chunks(len))
            .zip(dy.par_chunks(len))
            .enumerate()
            .map(|(i, ((dx, x), dy))| {
                let (mean, rstd) = stats(x, self.eps);
                let first = (i % d.groups) * cg;
                let (mut dgamma, mut dbeta) = (vec![0f32; cg], vec![0f32; cg]);
                let (mut sum_g, mut sum_gx) = (0f32, 0f32);
                // dz into dx, and per channel Σ dz and Σ dz x̂; each loop vectorises.
                for k in 0..cg {
                    let (gamma, beta) = (w[first + k], b[first + k]);
                    let span = k * hw..(k + 1) * hw;
                    let (dz, xk, dyk) = (&mut dx[span.clone()], &x[span.clone()], &dy[span]);
                    if self.silu {
                        silu_grad(dz, xk, dyk, rstd * gamma, beta - mean * rstd * gamma);
                    } else {
                        dz.copy_from_slice(dyk);
                    }
                    let (sdz, sdzx) = (fastmath::sum(dz), dot_centred(dz, xk, mean) * rstd);
                    dbeta[k] = sdz;
                    dgamma[k] = sdzx;
                    sum_g += sdz * gamma;
                    sum_gx += sdzx * gamma;
                }
                let n = len as f32;
                let (mean_g, mean_gx) = (sum_g / n, sum_gx / n);
                for k in 0..cg {
                    let gamma = w[first + k];
                    let span = k * hw..(k + 1) * hw;
                    dx[span.clone()].iter_mut().zip(&x[span]).for_each(|(g, &x)| {
                        let xhat = (x - mean) * rstd;
                        *g = (*g * gamma - mean_g - xhat * mean_gx) * rstd;
                    });
                }
                (first, dgamma, dbeta)
            })
            .collect();
        let (_, params) = out.split_at_mut(x.len());
        let (dw, db) = params.split_at_mut(c);
        for (first, dgamma, dbeta) in partial {
            dw[first..first + cg].iter_mut().zip(&dgamma).for_each(|(a, v)| *a += v);
            db[first..first + cg].iter_mut().zip(&dbeta).for_each(|(a, v)| *a += v);
        }
        Ok((CpuStorage::F32(out), Shape::from(x.len() + 2 * c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Rng, Stream};
    use candle_core::{Device, Var};

    fn vec(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    /// Two images, 4 channels in 2 groups, 2x2 pixels, normalised by hand, at two eps.
    #[test]
    fn normalises_each_group_as_computed_by_hand() {
        let d = Device::Cpu;
        let x: Vec<f32> = (0..32).map(|i| (i * i % 7) as f32 - 2.0).collect();
        let xt = Tensor::from_vec(x.clone(), (2, 4, 2, 2), &d).unwrap();
        let w = Tensor::new(&[1.0f32, 2.0, -1.0, 0.5], &d).unwrap();
        let b = Tensor::new(&[0.0f32, 1.0, 0.5, -2.0], &d).unwrap();
        let (wv, bv) = (vec(&w), vec(&b));
        // PyTorch's default eps, and one large enough to change every value.
        for eps in [1e-5, 0.5] {
            let gn = GroupNorm::new(w.clone(), b.clone(), 2).with_eps(eps as f32);
            let mut want = vec![0f32; 32];
            for (gi, group) in x.chunks(8).enumerate() {
                let mean = group.iter().map(|&v| v as f64).sum::<f64>() / 8.0;
                let var = group.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / 8.0;
                for (j, &v) in group.iter().enumerate() {
                    let c = (gi % 2) * 2 + j / 4;
                    want[gi * 8 + j] = ((v as f64 - mean) / (var + eps).sqrt() * wv[c] as f64 + bv[c] as f64) as f32;
                }
            }
            let got = vec(&gn.forward(&xt).unwrap());
            assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-5), "eps {eps}: {got:?} vs {want:?}");
            let reference = vec(&gn.forward_reference(&xt, false).unwrap());
            assert!(
                reference.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-5),
                "eps {eps}: reference {reference:?}"
            );
            let silu = vec(&gn.forward_silu(&xt).unwrap());
            for (s, z) in silu.iter().zip(&want) {
                let expect = z / (1.0 + (-z).exp());
                assert!((s - expect).abs() < 1e-5, "{s} vs {expect}");
            }
        }
    }

    /// The fused op against the composed reference, in value and in all three gradients.
    #[test]
    fn fused_op_matches_the_reference_in_value_and_gradient() {
        let d = Device::Cpu;
        let mut r = Rng::new(5, Stream::Eval, 0);
        let x = Var::from_tensor(&r.normal(&[3, 16, 5, 3], &d).unwrap().affine(2.0, 0.5).unwrap()).unwrap();
        let w = Var::from_tensor(&r.normal(&[16], &d).unwrap()).unwrap();
        let b = Var::from_tensor(&r.normal(&[16], &d).unwrap()).unwrap();
        let probe = r.normal(&[3, 16, 5, 3], &d).unwrap();
        let gn = GroupNorm::new(w.as_tensor().clone(), b.as_tensor().clone(), 4);
        for silu in [false, true] {
            let run = |fused: bool| {
                let y = if fused { gn.run(x.as_tensor(), silu) } else { gn.forward_reference(x.as_tensor(), silu) }
                    .unwrap();
                let g = (&y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
                let grads: Vec<Vec<f32>> =
                    [x.as_tensor(), w.as_tensor(), b.as_tensor()].iter().map(|t| vec(g.get(t).unwrap())).collect();
                (vec(&y), grads)
            };
            let (fast, slow) = (run(true), run(false));
            let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| (a - b).abs() < 2e-4 * (1.0 + b.abs()));
            assert!(close(&fast.0, &slow.0), "silu {silu}: values differ");
            for (i, (f, s)) in fast.1.iter().zip(&slow.1).enumerate() {
                assert!(close(f, s), "silu {silu}, gradient {i}: {f:?} vs {s:?}");
            }
        }
    }

    /// The fused backward pass against central finite differences of the fused forward pass.
    #[test]
    fn fused_gradient_matches_finite_differences() {
        let d = Device::Cpu;
        let mut r = Rng::new(6, Stream::Eval, 0);
        let x0 = r.normal(&[2, 8, 3, 3], &d).unwrap();
        let w0 = r.normal(&[8], &d).unwrap();
        let b0 = r.normal(&[8], &d).unwrap();
        let probe = r.normal(&[2, 8, 3, 3], &d).unwrap();
        let loss = |x: &Tensor, w: &Tensor, b: &Tensor| -> f64 {
            let y = GroupNorm::new(w.clone(), b.clone(), 2).forward_silu(x).unwrap();
            (y.to_dtype(DType::F64).unwrap() * probe.to_dtype(DType::F64).unwrap())
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let (x, w, b) =
            (Var::from_tensor(&x0).unwrap(), Var::from_tensor(&w0).unwrap(), Var::from_tensor(&b0).unwrap());
        let y = GroupNorm::new(w.as_tensor().clone(), b.as_tensor().clone(), 2).forward_silu(x.as_tensor()).unwrap();
        let grads = (&y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let h = 1e-2f32;
        let inputs = [&x0, &w0, &b0];
        for (which, var) in [x.as_tensor(), w.as_tensor(), b.as_tensor()].iter().enumerate() {
            let analytic = vec(grads.get(var).unwrap());
            for idx in [0usize, 3, 7] {
                let bump = |delta: f32| {
                    let mut v = vec(inputs[which]);
                    v[idx] += delta;
                    let t = Tensor::from_vec(v, inputs[which].shape(), &d).unwrap();
                    let mut args = [x0.clone(), w0.clone(), b0.clone()];
                    args[which] = t;
                    loss(&args[0], &args[1], &args[2])
                };
                let numeric = (bump(h) - bump(-h)) / (2.0 * h as f64);
                let a = analytic[idx] as f64;
                assert!((a - numeric).abs() < 2e-2 * (1.0 + numeric.abs()), "input {which}[{idx}]: {a} vs {numeric}");
            }
        }
    }
}
