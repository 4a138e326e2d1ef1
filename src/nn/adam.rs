//! Adam (Kingma & Ba 2015) exactly as `torch.optim.Adam` computes it, with its moments kept
//! as named tensors so a checkpoint can save them and `--resume` continue bit for bit.
//! (candle-nn's AdamW keeps its state private and defaults to weight decay 0.01.)
//!
//! Device rule: for f32 parameters on the CPU the moments are plain buffers and one fused,
//! parallel pass updates parameter, m and v together, with no temporary tensors (Adam is
//! memory-bound, and candle's op-by-op form made about ten passes over memory and an
//! allocation per op); elsewhere the moments are tensors and the update is candle's
//! elementwise ops, tested against the fused pass in `tensor_moments_match_the_fused_pass`.

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use std::sync::Mutex;

use candle_core::{CpuStorage, DType, Device, InplaceOp1, Layout, Storage, Tensor, Var};

use rayon::prelude::*;

use super::params::ParamSet;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay, as `torch.optim.AdamW`: each step multiplies a parameter by
    /// 1 - lr * weight_decay before Adam's update. 0 is plain Adam.
    #[serde(default)]
    pub weight_decay: f64,
}

impl AdamConfig {
    pub fn with_lr(lr: f64) -> Self {
        AdamConfig { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// One parameter's first and second moments.
enum Moments {
    /// For f32 parameters on the CPU: plain buffers, updated in the same pass as the parameter.
    Host { m: Vec<f32>, v: Vec<f32> },
    /// Elsewhere: tensors updated with candle's ops.
    Device { m: Tensor, v: Tensor },
}

impl Moments {
    /// The device rule: host buffers for f32 parameters on the CPU, tensors elsewhere.
    fn for_param(var: &Var) -> Result<Self> {
        if var.device().is_cpu() && var.dtype() == DType::F32 {
            Ok(Moments::Host { m: vec![0.0; var.elem_count()], v: vec![0.0; var.elem_count()] })
        } else {
            Moments::tensors(var)
        }
    }

    /// Zero moments as tensors like `var`, on its device.
    fn tensors(var: &Var) -> Result<Self> {
        Ok(Moments::Device { m: var.zeros_like()?, v: var.zeros_like()? })
    }
}

/// Adam's state: step count and first and second moments per parameter.
pub struct Adam {
    pub config: AdamConfig,
    step: u64,
    moments: BTreeMap<String, Moments>,
}

impl Adam {
    pub fn new(params: &ParamSet, config: AdamConfig) -> Result<Self> {
        Self::with_moments(params, config, Moments::for_param)
    }

    /// Adam with each parameter's zero moments made by `moments`.
    fn with_moments(params: &ParamSet, config: AdamConfig, moments: fn(&Var) -> Result<Moments>) -> Result<Self> {
        let moments = params
            .trainable()
            .map(|(name, var)| Ok((name.clone(), moments(var)?)))
            .collect::<Result<BTreeMap<_, _>>>()?;
        Ok(Adam { config, step: 0, moments })
    }

    /// One update of every trainable parameter that received a gradient, at the configured
    /// learning rate.
    pub fn step(&mut self, params: &ParamSet, grads: &GradStore) -> Result<()> {
        self.step_with(params, grads, self.config.lr, 1.0)
    }

    /// One update at learning rate `lr` (a schedule's value for this step) with every
    /// gradient multiplied by `grad_scale` (a clipping factor, [`clip_factor`]).
    pub fn step_with(&mut self, params: &ParamSet, grads: &GradStore, lr: f64, grad_scale: f64) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let bc1 = 1.0 - c.beta1.powi(self.step as i32);
        let bc2 = 1.0 - c.beta2.powi(self.step as i32);
        let decay = 1.0 - lr * c.weight_decay;
        for (name, var) in params.trainable() {
            let Some(g) = grads.get(var.as_tensor()) else { continue };
            let Some(state) = self.moments.get_mut(name) else { continue };
            match state {
                Moments::Host { m, v } => {
                    let g = g.contiguous()?;
                    let (storage, layout) = g.storage_and_layout();
                    let grad = match (&*storage, layout.contiguous_offsets()) {
                        (Storage::Cpu(CpuStorage::F32(g)), Some((a, b))) => &g[a..b],
                        _ => return Err(Error::config(format!("adam: gradient of '{name}' is not f32 on the CPU"))),
                    };
                    var.as_tensor().inplace_op1(&FusedStep {
                        grad,
                        moments: Mutex::new((m.as_mut_slice(), v.as_mut_slice())),
                        beta1: c.beta1 as f32,
                        beta2: c.beta2 as f32,
                        one_minus_beta1: (1.0 - c.beta1) as f32,
                        one_minus_beta2: (1.0 - c.beta2) as f32,
                        step_size: (lr / bc1) as f32,
                        inv_sqrt_bc2: (1.0 / bc2.sqrt()) as f32,
                        eps: c.eps as f32,
                        grad_scale: grad_scale as f32,
                        decay: decay as f32,
                    })?;
                }
                Moments::Device { m, v } => {
                    let g = (g * grad_scale)?;
                    let m_new = ((&*m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
                    let v_new = ((&*v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
                    let denom = ((v_new.sqrt()? / bc2.sqrt())? + c.eps)?;
                    let p = (var.as_tensor() * decay)?;
                    var.set(&(p - ((&m_new / denom)? * (lr / bc1))?)?)?;
                    (*m, *v) = (m_new, v_new);
                }
            }
        }
        Ok(())
    }

    /// The state as named tensors (`exp_avg.NAME`, `exp_avg_sq.NAME`, as PyTorch calls them).
    pub fn state_tensors(&self, params: &ParamSet) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        for (name, state) in &self.moments {
            let (m, v) = match state {
                Moments::Host { m, v } => {
                    let dims = params.get(name).map(|p| p.dims().to_vec()).unwrap_or_else(|| vec![m.len()]);
                    (
                        Tensor::from_slice(m, dims.as_slice(), &Device::Cpu)?,
                        Tensor::from_slice(v, dims.as_slice(), &Device::Cpu)?,
                    )
                }
                Moments::Device { m, v } => (m.copy()?, v.copy()?),
            };
            out.insert(format!("exp_avg.{name}"), m);
            out.insert(format!("exp_avg_sq.{name}"), v);
        }
        Ok(out)
    }

    /// Restores state saved by [`Adam::state_tensors`] at `step`.
    pub fn load_state(&mut self, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        for (name, state) in self.moments.iter_mut() {
            let get = |prefix: &str, like: &[usize]| -> Result<Tensor> {
                let key = format!("{prefix}.{name}");
                let t =
                    tensors.get(&key).ok_or_else(|| Error::config(format!("optimizer state is missing '{key}'")))?;
                if t.elem_count() != like.iter().product::<usize>() {
                    return Err(Error::config(format!(
                        "optimizer state '{key}' has shape {:?}, expected {like:?}",
                        t.dims()
                    )));
                }
                Ok(t.clone())
            };
            match state {
                Moments::Host { m, v } => {
                    let n = [m.len()];
                    *m = get("exp_avg", &n)?.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
                    *v = get("exp_avg_sq", &n)?.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
                }
                Moments::Device { m, v } => {
                    let dims = m.dims().to_vec();
                    *m = get("exp_avg", &dims)?.reshape(dims.as_slice())?.to_device(m.device())?.copy()?;
                    *v = get("exp_avg_sq", &dims)?.reshape(dims.as_slice())?.to_device(v.device())?.copy()?;
                }
            }
        }
        Ok(())
    }

    /// Sets the step count (after [`Adam::load_state`]).
    pub fn set_step(&mut self, step: u64) {
        self.step = step;
    }
}

/// Elements per parallel task of the fused update.
const CHUNK: usize = 1 << 15;

/// The factor that scales gradients of global L2 norm `norm` down to at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_` computes it: max_norm / (norm + 1e-6), at most 1.
pub fn clip_factor(norm: f64, max_norm: f64) -> f64 {
    (max_norm / (norm + 1e-6)).min(1.0)
}

/// The L2 norm of all trainable parameters' gradients together. Each gradient's sum of
/// squares is taken in f64 over fixed chunks and the chunks added in order, so the norm does
/// not depend on the thread count.
pub fn grad_norm(params: &ParamSet, grads: &GradStore) -> Result<f64> {
    let mut total = 0f64;
    for (_, var) in params.trainable() {
        let Some(g) = grads.get(var.as_tensor()) else { continue };
        let g = g.contiguous()?;
        let (storage, layout) = g.storage_and_layout();
        total += match (&*storage, layout.contiguous_offsets()) {
            (Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) => {
                let sums: Vec<f64> =
                    v[a..b].par_chunks(CHUNK).map(|c| c.iter().map(|&x| f64::from(x) * f64::from(x)).sum()).collect();
                sums.iter().sum::<f64>()
            }
            _ => g.to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()?,
        };
    }
    Ok(total.sqrt())
}

/// One Adam step of a parameter in a single pass over p, g, m and v, with g taken as
/// grad_scale * grad: m <- b1 m + (1 - b1) g; v <- b2 v + (1 - b2) g^2;
/// p <- decay p - step_size * m / (sqrt(v) / sqrt(bc2) + eps), as torch.optim.AdamW
/// (torch.optim.Adam when decay is 1).
struct FusedStep<'a> {
    grad: &'a [f32],
    /// Written by the op; a Mutex because candle hands in-place ops `&self`.
    moments: Mutex<(&'a mut [f32], &'a mut [f32])>,
    beta1: f32,
    beta2: f32,
    /// 1 - beta, taken in f64 as torch does (1 - 0.999f32 is 1.3e-5 off 0.001 relatively,
    /// which moved parameters by 2e-6 in three steps of the test below).
    one_minus_beta1: f32,
    one_minus_beta2: f32,
    step_size: f32,
    inv_sqrt_bc2: f32,
    eps: f32,
    grad_scale: f32,
    /// 1 - lr * weight_decay.
    decay: f32,
}

impl InplaceOp1 for FusedStep<'_> {
    fn name(&self) -> &'static str {
        "adam-step"
    }

    fn cpu_fwd(&self, dst: &mut CpuStorage, dst_l: &Layout) -> candle_core::Result<()> {
        let p = match (dst, dst_l.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((a, b))) => &mut v[a..b],
            _ => candle_core::bail!("adam: expected a contiguous f32 parameter"),
        };
        let mut guard = self.moments.lock().map_err(|_| candle_core::Error::Msg("adam: poisoned state".into()))?;
        let (m, v) = &mut *guard;
        if m.len() != p.len() || v.len() != p.len() || self.grad.len() != p.len() {
            candle_core::bail!("adam: state of {} elements for a parameter of {}", m.len(), p.len());
        }
        let (b1, b2, c1, c2) = (self.beta1, self.beta2, self.one_minus_beta1, self.one_minus_beta2);
        let (step, inv, eps) = (self.step_size, self.inv_sqrt_bc2, self.eps);
        let (scale, decay) = (self.grad_scale, self.decay);
        p.par_chunks_mut(CHUNK)
            .zip(self.grad.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| {
                for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                    let g = scale * g;
                    *m = b1 * *m + c1 * g;
                    *v = b2 * *v + c2 * g * g;
                    *p = decay * *p - step * *m / (v.sqrt() * inv + eps);
                }
            });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::params::{Init, Params};

    /// Three steps on f(p) = sum(c p^2), lr 0.1. Expected values from torch 2.15.0
    /// (`torch.optim.Adam`, f32 on the CPU):
    /// ```python
    /// import torch
    /// p = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
    /// c = torch.tensor([1.0, 3.0, -0.5])
    /// opt = torch.optim.Adam([p], lr=0.1)
    /// for _ in range(3):
    ///     opt.zero_grad()
    ///     (c * p**2).sum().backward()
    ///     opt.step()
    /// print(p.tolist())  # [0.7015863060951233, -1.7006233930587769, 0.8002946972846985]
    /// ```
    fn run(moments: fn(&Var) -> Result<Moments>) -> (Vec<f32>, Vec<Vec<f32>>) {
        let d = &Device::Cpu;
        let mut params =
            Params::load([("p".to_string(), Tensor::new(&[1.0f32, -2.0, 0.5], d).unwrap())].into(), "test", d);
        let p = params.tensor("p", &[3], Init::Const(0.0)).unwrap();
        let set = params.finish().unwrap();
        let c = Tensor::new(&[1.0f32, 3.0, -0.5], d).unwrap();
        let mut opt = Adam::with_moments(&set, AdamConfig::with_lr(0.1), moments).unwrap();
        for _ in 0..3 {
            let loss = (p.sqr().unwrap() * &c).unwrap().sum_all().unwrap();
            opt.step(&set, &loss.backward().unwrap()).unwrap();
        }
        let state = opt.state_tensors(&set).unwrap().values().map(|t| t.to_vec1().unwrap()).collect();
        (p.to_vec1().unwrap(), state)
    }

    #[test]
    fn matches_torch_adam() {
        let (got, _) = run(Moments::for_param);
        for (g, want) in got.iter().zip([0.701_586_3f32, -1.700_623_4, 0.800_294_7]) {
            assert!((g - want).abs() < 1e-6, "{got:?}");
        }
    }

    /// The update of tensor moments, which runs off the CPU, against the fused pass: the
    /// same parameters and moments after three steps, up to the fused pass's f32 rounding of
    /// its step constants.
    #[test]
    fn tensor_moments_match_the_fused_pass() {
        let ((fused, fused_state), (tensors, tensor_state)) = (run(Moments::for_param), run(Moments::tensors));
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-5 * (1.0 + b.abs()));
        assert!(close(&fused, &tensors), "{fused:?} vs {tensors:?}");
        assert_eq!(fused_state.len(), 2);
        for (f, t) in fused_state.iter().zip(&tensor_state) {
            assert!(close(f, t), "{f:?} vs {t:?}");
        }
    }

    /// AdamW with the gradients' global norm clipped to 1, both moment kinds, against
    /// torch 2.15.0 (f32 on the CPU):
    /// ```python
    /// import torch
    /// p = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
    /// q = torch.tensor([[0.3, -0.7], [2.0, 1.5]], requires_grad=True)
    /// c = torch.tensor([1.0, 3.0, -0.5])
    /// opt = torch.optim.AdamW([p, q], lr=0.1, weight_decay=0.05)
    /// norms = []
    /// for _ in range(3):
    ///     opt.zero_grad()
    ///     ((c * p**2).sum() + (q**3).sum()).backward()
    ///     norms.append(torch.nn.utils.clip_grad_norm_([p, q], max_norm=1.0).item())
    ///     opt.step()
    /// print(p.tolist(), q.flatten().tolist(), norms)
    /// ```
    #[test]
    fn matches_torch_adamw_with_clipped_gradients() {
        let want_p = [0.686_857_1f32, -1.671_391_8, 0.790_538_5];
        let want_q = [0.025_100_797f32, -0.986_333_1, 1.671_927, 1.179_895_8];
        let want_norms = [18.440_343_856_811_523, 16.866_285_324_096_68, 15.423_146_247_863_77];
        for moments in [Moments::for_param as fn(&Var) -> Result<Moments>, Moments::tensors] {
            let d = &Device::Cpu;
            let start = [
                ("p".to_string(), Tensor::new(&[1.0f32, -2.0, 0.5], d).unwrap()),
                ("q".to_string(), Tensor::new(&[[0.3f32, -0.7], [2.0, 1.5]], d).unwrap()),
            ];
            let mut params = Params::load(start.into(), "test", d);
            let p = params.tensor("p", &[3], Init::Const(0.0)).unwrap();
            let q = params.tensor("q", &[2, 2], Init::Const(0.0)).unwrap();
            let set = params.finish().unwrap();
            let c = Tensor::new(&[1.0f32, 3.0, -0.5], d).unwrap();
            let config = AdamConfig { weight_decay: 0.05, ..AdamConfig::with_lr(0.1) };
            let mut opt = Adam::with_moments(&set, config, moments).unwrap();
            for want_norm in want_norms {
                let loss = ((p.sqr().unwrap() * &c).unwrap().sum_all().unwrap()
                    + q.powf(3.0).unwrap().sum_all().unwrap())
                .unwrap();
                let grads = loss.backward().unwrap();
                let norm = grad_norm(&set, &grads).unwrap();
                assert!((norm - want_norm).abs() < 1e-4, "{norm} vs {want_norm}");
                opt.step_with(&set, &grads, 0.1, clip_factor(norm, 1.0)).unwrap();
            }
            let (got_p, got_q) = (p.to_vec1::<f32>().unwrap(), q.flatten_all().unwrap().to_vec1::<f32>().unwrap());
            for (g, w) in got_p.iter().chain(&got_q).zip(want_p.iter().chain(&want_q)) {
                assert!((g - w).abs() < 2e-6, "{got_p:?} {got_q:?}");
            }
        }
    }
}
