//! Numerically stable pieces of the likelihoods and divergences, built from candle ops
//! that carry gradients (candle's fused softmax has no gradient and its BCE-with-logits
//! overflows for large logits: docs/candle.md).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Device, Layout, Shape, Tensor, D};
use multiversion::multiversion;
use rayon::prelude::*;

use super::fastmath;
use super::gemm::contiguous_f32;
use crate::error::Result;
use crate::rng::Rng;

pub const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// max(x, 0), with a backward pass of one fused pass over the gradient. candle's own ReLU
/// backward runs six ops, each filling a fresh buffer the size of the activation (zeros, a
/// comparison, a cast, a product, and the gradient store's zeros and sum); in the conv nets
/// that is most of the time outside the matrix products.
///
/// Device rule: a CPU kernel for f32; elsewhere candle's `Tensor::relu`, tested against it
/// in `fused_relu_matches_candle_in_value_and_gradient`.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        Ok(x.contiguous()?.apply_op1(Relu)?)
    } else {
        Ok(x.relu()?)
    }
}

/// Elements per task of the elementwise ops below.
const CHUNK: usize = 1 << 14;

struct Relu;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(self.name(), s, l)?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(o, x)| {
            o.iter_mut().zip(x).for_each(|(o, &v)| *o = v.max(0.0));
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    /// The gradient where the output is positive, else zero.
    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        grad.contiguous()?.apply_op2_no_bwd(&res.contiguous()?, &ReluGrad).map(Some)
    }
}

struct ReluGrad;

impl CustomOp2 for ReluGrad {
    fn name(&self) -> &'static str {
        "relu-grad"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        ys: &CpuStorage,
        yl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (g, y) = (contiguous_f32(self.name(), gs, gl)?, contiguous_f32(self.name(), ys, yl)?);
        let mut out = vec![0f32; g.len()];
        out.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK).zip(y.par_chunks(CHUNK))).for_each(|(o, (g, y))| {
            o.iter_mut().zip(g.iter().zip(y)).for_each(|(o, (&g, &y))| *o = if y > 0.0 { g } else { 0.0 });
        });
        Ok((CpuStorage::F32(out), gl.shape().clone()))
    }
}

/// -log Bernoulli(target; sigmoid(logits)) per element, in the stable form
/// `max(l, 0) - l*y + log(1 + exp(-|l|))`, finite for any logit.
pub fn bce_with_logits(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    let softplus_neg_abs = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    Ok(((logits.relu()? - (logits * target)?)? + softplus_neg_abs)?)
}

/// [`bce_with_logits`] summed over the last dimension of [N, D] tensors: [N]. On the CPU one
/// fused pass forward and one backward replace about 25 candle ops on a 100k-element batch.
///
/// Device rule: a CPU kernel for f32 [N, D] logits with targets of their shape; elsewhere
/// the composed candle ops of [`bce_with_logits`] and a sum, tested against it in
/// `fused_bce_sum_matches_the_reference_in_value_and_gradient`.
pub fn bce_with_logits_sum(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    let fused = logits.device().is_cpu()
        && logits.rank() == 2
        && logits.dtype() == candle_core::DType::F32
        && target.dims() == logits.dims();
    if fused {
        Ok(logits.contiguous()?.apply_op2(&target.to_dtype(candle_core::DType::F32)?.contiguous()?, BceSum)?)
    } else {
        Ok(bce_with_logits(logits, target)?.sum(D::Minus1)?)
    }
}

struct BceSum;

impl CustomOp2 for BceSum {
    fn name(&self) -> &'static str {
        "bce-with-logits-sum"
    }

    fn cpu_fwd(
        &self,
        ls: &CpuStorage,
        ll: &Layout,
        ts: &CpuStorage,
        tl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (l, t) = (contiguous_f32("bce", ls, ll)?, contiguous_f32("bce", ts, tl)?);
        let (n, d) = ll.shape().dims2()?;
        let d = d.max(1);
        let sums = l
            .par_chunks_exact(d)
            .zip(t.par_chunks_exact(d))
            .map_init(
                || vec![0f32; d],
                |buf, (l, t)| {
                    // Elementwise into a buffer, then a lane-wise sum: both vectorise, where a
                    // running f32 sum would serialise the whole row.
                    for ((o, &l), &y) in buf.iter_mut().zip(l).zip(t) {
                        *o = fastmath::bce_with_logit(l, y).0;
                    }
                    fastmath::sum(buf)
                },
            )
            .collect::<Vec<f32>>();
        Ok((CpuStorage::F32(sums), Shape::from(n)))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        target: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // d/dl = sigmoid(l) - y; d/dy = -l (rarely needed: targets are data).
        let grad_l = logits.apply_op3_no_bwd(target, &grad.contiguous()?, &BceGrad)?;
        let grad_t = if target.track_op() { Some(logits.neg()?.broadcast_mul(&grad.unsqueeze(1)?)?) } else { None };
        Ok((Some(grad_l), grad_t))
    }
}

/// grad[i] * (sigmoid(l[i, j]) - y[i, j]).
struct BceGrad;

impl CustomOp3 for BceGrad {
    fn name(&self) -> &'static str {
        "bce-with-logits-sum-grad"
    }

    fn cpu_fwd(
        &self,
        ls: &CpuStorage,
        ll: &Layout,
        ts: &CpuStorage,
        tl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (l, t, g) =
            (contiguous_f32("bce", ls, ll)?, contiguous_f32("bce", ts, tl)?, contiguous_f32("bce", gs, gl)?);
        let d = ll.shape().dims2()?.1.max(1);
        let mut out = vec![0f32; l.len()];
        out.par_chunks_exact_mut(d).zip(l.par_chunks_exact(d)).zip(t.par_chunks_exact(d)).zip(g).for_each(
            |(((o, l), t), g)| {
                for ((o, &l), &y) in o.iter_mut().zip(l).zip(t) {
                    *o = g * fastmath::bce_with_logit(l, y).1;
                }
            },
        );
        Ok((CpuStorage::F32(out), ll.shape().clone()))
    }
}

/// The mean over rows of -log softmax(logits)[target], for logits [R, E] and targets [R]
/// (u32): the cross-entropy in nats. On the CPU one fused pass forward and one backward
/// replace the composed log-softmax, whose eight ops each fill a fresh [R, E] buffer (a
/// PixelCNN batch has R E = 4M logits).
///
/// Device rule: a CPU kernel for f32 [R, E] logits and u32 [R] targets; elsewhere
/// `candle_nn::loss::cross_entropy` (a log-softmax composed of max, sub, exp, sum and log,
/// then a gather: every op with its gradient, unlike candle's fused `softmax_last_dim`),
/// tested against it in `fused_cross_entropy_matches_candle_in_value_and_gradient`.
pub fn mean_cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let fused = logits.device().is_cpu()
        && logits.rank() == 2
        && logits.dtype() == candle_core::DType::F32
        && targets.dtype() == candle_core::DType::U32
        && targets.dims() == [logits.dim(0)?];
    if fused {
        Ok(logits.contiguous()?.apply_op2(&targets.contiguous()?, CrossEntropy)?)
    } else {
        Ok(candle_nn::loss::cross_entropy(logits, targets)?)
    }
}

/// Rows of logits that one task of the fused cross-entropy takes.
const CE_ROWS: usize = 64;

/// The u32 data of a contiguous tensor.
fn contiguous_u32<'a>(op: &str, s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [u32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::U32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("{op}: expected contiguous u32 targets"),
    }
}

/// The log-sum-exp of a row and, through `probs`, its softmax.
#[inline(always)]
fn softmax(row: &[f32], probs: &mut [f32]) -> f32 {
    let max = fastmath::max(row);
    for (p, &l) in probs.iter_mut().zip(row) {
        *p = fastmath::exp(l - max);
    }
    let sum = fastmath::sum(probs);
    probs.iter_mut().for_each(|p| *p /= sum);
    max + sum.ln()
}

/// [`softmax`] of one row of logits, compiled for the widest vectors the CPU has.
#[multiversion(targets("x86_64+avx2+fma"))]
fn softmax_row(row: &[f32], probs: &mut [f32]) -> f32 {
    softmax(row, probs)
}

/// The cross-entropy's gradient in one row of logits: `scale` (softmax(row) - onehot(t)).
#[multiversion(targets("x86_64+avx2+fma"))]
fn cross_entropy_grad_row(row: &[f32], t: usize, scale: f32, out: &mut [f32]) {
    softmax(row, out);
    out[t] -= 1.0;
    out.iter_mut().for_each(|v| *v *= scale);
}

/// `len` zeros, written on rayon's threads: an output that the threads then fill costs a
/// serial pass over memory less (the allocator zeroes the memory it reuses).
pub fn zeros(len: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    v.par_extend(rayon::iter::repeat_n(0f32, len));
    v
}

struct CrossEntropy;

impl CrossEntropy {
    /// Checks the targets against the logits; returns (rows, classes).
    fn dims(l: &Layout, targets: &[u32]) -> candle_core::Result<(usize, usize)> {
        let (r, e) = l.shape().dims2()?;
        if let Some(t) = targets.iter().find(|&&t| t as usize >= e) {
            candle_core::bail!("cross-entropy: target {t} is out of range for {e} classes")
        }
        Ok((r, e))
    }
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "cross-entropy"
    }

    fn cpu_fwd(
        &self,
        ls: &CpuStorage,
        ll: &Layout,
        ts: &CpuStorage,
        tl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (logits, targets) = (contiguous_f32(self.name(), ls, ll)?, contiguous_u32(self.name(), ts, tl)?);
        let (r, e) = Self::dims(ll, targets)?;
        // One sum per task, added in order: rayon's own sum would add them in a tree that
        // follows the thread count.
        let total: f64 = logits
            .par_chunks(CE_ROWS * e.max(1))
            .zip(targets.par_chunks(CE_ROWS))
            .map_init(
                || vec![0f32; e],
                |probs, (rows, targets)| {
                    rows.chunks_exact(e)
                        .zip(targets)
                        .map(|(row, &t)| (softmax_row(row, probs) - row[t as usize]) as f64)
                        .sum::<f64>()
                },
            )
            .collect::<Vec<f64>>()
            .iter()
            .sum();
        Ok((CpuStorage::F32(vec![(total / r.max(1) as f64) as f32]), Shape::from(())))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _loss: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let scale = grad.to_dtype(candle_core::DType::F32)?.reshape(1)?;
        Ok((Some(logits.apply_op3_no_bwd(targets, &scale, &CrossEntropyGrad)?), None))
    }
}

/// d loss / d logits = grad (softmax(row) - onehot(target)) / R.
struct CrossEntropyGrad;

impl CustomOp3 for CrossEntropyGrad {
    fn name(&self) -> &'static str {
        "cross-entropy-grad"
    }

    fn cpu_fwd(
        &self,
        ls: &CpuStorage,
        ll: &Layout,
        ts: &CpuStorage,
        tl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (logits, targets) = (contiguous_f32(self.name(), ls, ll)?, contiguous_u32(self.name(), ts, tl)?);
        let g = contiguous_f32(self.name(), gs, gl)?[0];
        let (r, e) = CrossEntropy::dims(ll, targets)?;
        let scale = g / r.max(1) as f32;
        let mut out = zeros(logits.len());
        out.par_chunks_mut(CE_ROWS * e.max(1))
            .zip(logits.par_chunks(CE_ROWS * e.max(1)))
            .zip(targets.par_chunks(CE_ROWS))
            .for_each(|((out, rows), targets)| {
                for ((o, row), &t) in out.chunks_exact_mut(e).zip(rows.chunks_exact(e)).zip(targets) {
                    cross_entropy_grad_row(row, t as usize, scale, o);
                }
            });
        Ok((CpuStorage::F32(out), ll.shape().clone()))
    }
}

/// Inverted dropout's mask: each element kept with probability 1 - p and scaled by
/// 1 / (1 - p), drawn from our seeded generator (candle's cannot be seeded).
pub fn dropout_mask(shape: &[usize], p: f64, rng: &mut Rng, device: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let threshold = (p * 4_294_967_296.0) as u64;
    let keep = (1.0 / (1.0 - p)) as f32;
    let v: Vec<f32> =
        (0..n).map(|_| if (rand::Rng::random::<u32>(rng.inner()) as u64) < threshold { 0.0 } else { keep }).collect();
    Ok(Tensor::from_vec(v, shape, device)?)
}

/// softplus(x) = log(1 + exp(x)), stable for large |x|.
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    Ok((x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?)
}

/// KL(N(mu, exp(logvar)) || N(0, I)) in closed form, summed over the last dimension.
pub fn kl_std_normal(mu: &Tensor, logvar: &Tensor) -> Result<Tensor> {
    let t = ((mu.sqr()? + logvar.exp()?)? - logvar)?;
    Ok(((t - 1.0)?.sum(D::Minus1)? * 0.5)?)
}

/// log N(x; 0, I), summed over the last dimension.
pub fn log_std_normal(x: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)? as f64;
    Ok(((x.sqr()?.sum(D::Minus1)? * -0.5)? - 0.5 * d * LN_2PI)?)
}

/// log-sum-exp of f64 values on the host, stable for large values, taken in as they arrive
/// in pieces, in constant memory.
#[derive(Debug, Clone, Copy)]
pub struct RunningLogSumExp {
    /// The largest value so far.
    max: f64,
    /// The sum of exp(v - max) over the values so far.
    scaled_sum: f64,
}

impl Default for RunningLogSumExp {
    fn default() -> Self {
        RunningLogSumExp { max: f64::NEG_INFINITY, scaled_sum: 0.0 }
    }
}

impl RunningLogSumExp {
    /// Takes in the next values.
    pub fn add(&mut self, values: &[f64]) {
        let m = values.iter().copied().fold(self.max, f64::max);
        if !m.is_finite() {
            self.max = m;
            return;
        }
        let rescale = if self.max.is_finite() { (self.max - m).exp() } else { 0.0 };
        self.scaled_sum = self.scaled_sum * rescale + values.iter().map(|v| (v - m).exp()).sum::<f64>();
        self.max = m;
    }

    /// log sum exp of every value taken in.
    pub fn value(&self) -> f64 {
        if self.max.is_finite() {
            self.max + self.scaled_sum.ln()
        } else {
            self.max
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Rng, Stream};

    #[test]
    fn the_running_logsumexp_of_pieces_is_that_of_the_whole() {
        let values = [-3.0, 700.0, -1e300, 2.5, 701.0, f64::NEG_INFINITY, 0.0];
        let whole = 701.0 + values.iter().map(|v| (v - 701.0).exp()).sum::<f64>().ln();
        for split in 0..=values.len() {
            let mut run = RunningLogSumExp::default();
            run.add(&values[..split]);
            run.add(&values[split..]);
            assert!((run.value() - whole).abs() < 1e-12, "split {split}: {}", run.value());
        }
        let mut none = RunningLogSumExp::default();
        none.add(&[f64::NEG_INFINITY]);
        assert_eq!(none.value(), f64::NEG_INFINITY);
        none.add(&[f64::INFINITY, 1.0]);
        assert_eq!(none.value(), f64::INFINITY);
    }
    use candle_core::Device;

    #[test]
    fn stable_bce_matches_naive_where_finite_and_stays_finite() {
        let d = Device::Cpu;
        let l = Tensor::new(&[-30f32, -3.0, -0.1, 0.0, 0.7, 4.0, 30.0], &d).unwrap();
        let y = Tensor::new(&[0.0f32, 1.0, 0.3, 0.5, 1.0, 0.0, 1.0], &d).unwrap();
        let stable = bce_with_logits(&l, &y).unwrap().to_vec1::<f32>().unwrap();
        let (lv, yv) = (l.to_vec1::<f32>().unwrap(), y.to_vec1::<f32>().unwrap());
        for ((s, l), y) in stable.iter().zip(&lv).zip(&yv) {
            let p = 1.0 / (1.0 + (-(*l as f64)).exp());
            let naive = -(*y as f64 * p.ln() + (1.0 - *y as f64) * (1.0 - p).ln());
            if naive.is_finite() && p > 1e-6 && p < 1.0 - 1e-6 {
                assert!((*s as f64 - naive).abs() < 1e-4, "l={l} y={y}: {s} vs {naive}");
            }
        }
        // Large logits: the naive form gives inf or NaN, the stable one the right value.
        let big = Tensor::new(&[200f32, -200.0], &d).unwrap();
        let t = Tensor::new(&[0f32, 1.0], &d).unwrap();
        let v = bce_with_logits(&big, &t).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v, vec![200.0, 200.0]);
    }

    /// The fused ReLU against candle's, in value and in the gradient reaching its input
    /// through a product that makes every element's gradient different (and on a strided
    /// view, which is made contiguous first).
    #[test]
    fn fused_relu_matches_candle_in_value_and_gradient() {
        let d = Device::Cpu;
        let x = candle_core::Var::from_tensor(&Rng::new(3, Stream::Eval, 0).normal(&[70, 300], &d).unwrap()).unwrap();
        let w = Rng::new(4, Stream::Eval, 0).normal(&[300, 70], &d).unwrap();
        let run = |f: &dyn Fn(&Tensor) -> Tensor| {
            let y = f(&x.t().unwrap());
            let loss = (&y * &w).unwrap().sum_all().unwrap();
            let g = loss.backward().unwrap().get(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), g)
        };
        let (fused, fused_grad) = run(&|t| relu(t).unwrap());
        let (reference, reference_grad) = run(&|t| t.relu().unwrap());
        assert_eq!(fused, reference);
        assert_eq!(fused_grad, reference_grad);
        assert!(fused.contains(&0.0) && fused_grad.iter().any(|&v| v != 0.0));
    }

    #[test]
    fn fused_bce_sum_matches_the_reference_in_value_and_gradient() {
        let d = Device::Cpu;
        let mut r = Rng::new(2, Stream::Eval, 0);
        let l = candle_core::Var::from_tensor(&(r.normal(&[4, 9], &d).unwrap() * 5.0).unwrap()).unwrap();
        let y = r.uniform(&[4, 9], 0.0, 1.0, &d).unwrap();
        let w = Tensor::new(&[1.0f32, -2.0, 0.5, 3.0], &d).unwrap();
        let run = |fused: bool| {
            let s = if fused {
                bce_with_logits_sum(l.as_tensor(), &y)
            } else {
                Ok(bce_with_logits(l.as_tensor(), &y).unwrap().sum(1).unwrap())
            }
            .unwrap();
            let g = (&s * &w).unwrap().sum_all().unwrap().backward().unwrap();
            (
                s.to_vec1::<f32>().unwrap(),
                g.get(l.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            )
        };
        let ((sf, gf), (ss, gs)) = (run(true), run(false));
        assert!(sf.iter().zip(&ss).all(|(a, b)| (a - b).abs() < 1e-4), "{sf:?} {ss:?}");
        assert!(gf.iter().zip(&gs).all(|(a, b)| (a - b).abs() < 1e-5), "{gf:?} {gs:?}");
    }

    #[test]
    fn fused_cross_entropy_matches_candle_in_value_and_gradient() {
        let d = Device::Cpu;
        let mut r = Rng::new(3, Stream::Eval, 0);
        let l = candle_core::Var::from_tensor(&(r.normal(&[70, 9], &d).unwrap() * 4.0).unwrap()).unwrap();
        let t: Vec<u32> = (0..70u32).map(|i| (i * 7) % 9).collect();
        let t = Tensor::new(t.as_slice(), &d).unwrap();
        let run = |fused: bool| {
            let loss = if fused {
                mean_cross_entropy(l.as_tensor(), &t).unwrap()
            } else {
                candle_nn::loss::cross_entropy(l.as_tensor(), &t).unwrap()
            };
            let g = (&loss * 3.0).unwrap().backward().unwrap();
            (
                loss.to_scalar::<f32>().unwrap(),
                g.get(l.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            )
        };
        let ((lf, gf), (ls, gs)) = (run(true), run(false));
        assert!((lf - ls).abs() < 1e-5, "{lf} vs {ls}");
        assert!(gf.iter().zip(&gs).all(|(a, b)| (a - b).abs() < 1e-6), "{gf:?} {gs:?}");
        let bad = Tensor::new(&[9u32; 70], &d).unwrap();
        assert!(mean_cross_entropy(l.as_tensor(), &bad).unwrap_err().to_string().contains("target 9 is out of range"));
    }

    /// The closed-form KL equals E_q[log q(z) - log p(z)] estimated by Monte Carlo.
    #[test]
    fn closed_form_kl_matches_monte_carlo() {
        let d = Device::Cpu;
        let mu = Tensor::new(&[[0.5f32, -1.0, 2.0]], &d).unwrap();
        let logvar = Tensor::new(&[[-0.5f32, 0.3, -2.0]], &d).unwrap();
        let closed = kl_std_normal(&mu, &logvar).unwrap().to_vec1::<f32>().unwrap()[0] as f64;
        let n = 200_000;
        let eps = Rng::new(1, Stream::Eval, 0).normal(&[n, 3], &d).unwrap();
        let std = (&logvar * 0.5).unwrap().exp().unwrap();
        let z = eps.broadcast_mul(&std).unwrap().broadcast_add(&mu).unwrap();
        // log q(z) = -0.5 * sum(eps^2 + logvar + ln 2pi)
        let log_q =
            ((eps.sqr().unwrap().broadcast_add(&logvar).unwrap() + LN_2PI).unwrap().sum(1).unwrap() * -0.5).unwrap();
        let log_p = log_std_normal(&z).unwrap();
        let mc = (log_q - log_p).unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap() as f64;
        // Standard error of this estimate is about 0.01.
        assert!((mc - closed).abs() < 0.04, "closed {closed}, monte carlo {mc}");
        // 0.5 * sum(mu^2 + exp(logvar) - 1 - logvar), by hand.
        assert!((closed - 3.270_862).abs() < 1e-4, "closed {closed}");
    }
}
