//! Adam (Kingma & Ba 2015) exactly as `torch.optim.Adam` computes it, with its moments kept
//! as named tensors so a checkpoint can save them and `--resume` continue bit for bit.
//! (candle-nn's AdamW keeps its state private and defaults to weight decay 0.01.)
//!
//! On the CPU the update runs in place in three fused passes per tensor, with no temporary
//! tensors: at the sizes of these models candle's allocation per elementwise op costs more than
//! the arithmetic (shared/CANDLE.md).

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, Device, InplaceOp2, InplaceOp3, Layout, Tensor};

use rayon::prelude::*;

use super::params::ParamSet;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl AdamConfig {
    pub fn with_lr(lr: f64) -> Self {
        AdamConfig { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }
}

/// Adam's state: step count and first and second moments per parameter.
pub struct Adam {
    pub config: AdamConfig,
    step: u64,
    m: BTreeMap<String, Tensor>,
    v: BTreeMap<String, Tensor>,
}

impl Adam {
    pub fn new(params: &ParamSet, config: AdamConfig) -> Result<Self> {
        let (mut m, mut v) = (BTreeMap::new(), BTreeMap::new());
        for (name, var) in params.trainable() {
            m.insert(name.clone(), var.zeros_like()?);
            v.insert(name.clone(), var.zeros_like()?);
        }
        Ok(Adam { config, step: 0, m, v })
    }

    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// One update of every trainable parameter that received a gradient.
    pub fn step(&mut self, params: &ParamSet, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let bc1 = 1.0 - c.beta1.powi(self.step as i32);
        let bc2 = 1.0 - c.beta2.powi(self.step as i32);
        for (name, var) in params.trainable() {
            let Some(g) = grads.get(var.as_tensor()) else { continue };
            let (m, v) = (&self.m[name], &self.v[name]);
            if var.device().is_cpu() {
                let g = g.contiguous()?;
                m.inplace_op2(&g, &Moment { beta: c.beta1 as f32, square: false })?;
                v.inplace_op2(&g, &Moment { beta: c.beta2 as f32, square: true })?;
                var.as_tensor().inplace_op3(
                    m,
                    v,
                    &Update {
                        step_size: (c.lr / bc1) as f32,
                        inv_sqrt_bc2: (1.0 / bc2.sqrt()) as f32,
                        eps: c.eps as f32,
                    },
                )?;
            } else {
                let m_new = ((m * c.beta1)? + (g * (1.0 - c.beta1))?)?;
                let v_new = ((v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
                let denom = ((v_new.sqrt()? / bc2.sqrt())? + c.eps)?;
                let p = (var.as_tensor() - ((&m_new / denom)? * (c.lr / bc1))?)?;
                var.set(&p)?;
                self.m.insert(name.clone(), m_new);
                self.v.insert(name.clone(), v_new);
            }
        }
        Ok(())
    }

    /// The state as named tensors (`exp_avg.NAME`, `exp_avg_sq.NAME`, as PyTorch calls them).
    pub fn state_tensors(&self) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        for (k, t) in &self.m {
            out.insert(format!("exp_avg.{k}"), t.copy()?);
        }
        for (k, t) in &self.v {
            out.insert(format!("exp_avg_sq.{k}"), t.copy()?);
        }
        Ok(out)
    }

    /// Restores state saved by [`Adam::state_tensors`] at `step`.
    pub fn load_state(&mut self, tensors: &BTreeMap<String, Tensor>, step: u64, device: &Device) -> Result<()> {
        for (prefix, map) in [("exp_avg", &mut self.m), ("exp_avg_sq", &mut self.v)] {
            for (k, t) in map.iter_mut() {
                let name = format!("{prefix}.{k}");
                let saved =
                    tensors.get(&name).ok_or_else(|| Error::config(format!("optimizer state is missing '{name}'")))?;
                if saved.dims() != t.dims() {
                    return Err(Error::config(format!(
                        "optimizer state '{name}' has shape {:?}, expected {:?}",
                        saved.dims(),
                        t.dims()
                    )));
                }
                *t = saved.to_device(device)?.copy()?;
            }
        }
        self.step = step;
        Ok(())
    }
}

/// Elements per parallel task of the in-place updates.
const CHUNK: usize = 1 << 15;

/// m <- beta m + (1 - beta) g, or with g^2 for the second moment.
struct Moment {
    beta: f32,
    square: bool,
}

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "adam-moment"
    }

    fn cpu_fwd(&self, dst: &mut CpuStorage, dst_l: &Layout, g: &CpuStorage, g_l: &Layout) -> candle_core::Result<()> {
        let (m, g) = (f32_slice_mut(dst, dst_l)?, f32_slice(g, g_l)?);
        let (b, a) = (self.beta, 1.0 - self.beta);
        let square = self.square;
        m.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).for_each(|(m, g)| {
            if square {
                m.iter_mut().zip(g).for_each(|(m, &g)| *m = b * *m + a * g * g);
            } else {
                m.iter_mut().zip(g).for_each(|(m, &g)| *m = b * *m + a * g);
            }
        });
        Ok(())
    }
}

/// p <- p - step_size * m / (sqrt(v) / sqrt(bc2) + eps), as torch.optim.Adam.
struct Update {
    step_size: f32,
    inv_sqrt_bc2: f32,
    eps: f32,
}

impl InplaceOp3 for Update {
    fn name(&self) -> &'static str {
        "adam-update"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        m: &CpuStorage,
        m_l: &Layout,
        v: &CpuStorage,
        v_l: &Layout,
    ) -> candle_core::Result<()> {
        let (p, m, v) = (f32_slice_mut(dst, dst_l)?, f32_slice(m, m_l)?, f32_slice(v, v_l)?);
        let (step, inv, eps) = (self.step_size, self.inv_sqrt_bc2, self.eps);
        p.par_chunks_mut(CHUNK).zip(m.par_chunks(CHUNK)).zip(v.par_chunks(CHUNK)).for_each(|((p, m), v)| {
            for ((p, &m), &v) in p.iter_mut().zip(m).zip(v) {
                *p -= step * m / (v.sqrt() * inv + eps);
            }
        });
        Ok(())
    }
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("adam: expected a contiguous f32 tensor"),
    }
}

fn f32_slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> candle_core::Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
        _ => candle_core::bail!("adam: expected a contiguous f32 tensor"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::params::{Init, Params};

    /// Three steps on f(p) = sum(c p^2), lr 0.1. Expected values from torch.optim.Adam's
    /// documented update, evaluated in double precision:
    /// ```python
    /// import math
    /// p=[1.0,-2.0,0.5]; c=[1.0,3.0,-0.5]; m=[0]*3; v=[0]*3; lr=0.1; b1=0.9; b2=0.999; eps=1e-8
    /// for t in range(1, 4):
    ///     g=[2*pi*ci for pi,ci in zip(p,c)]
    ///     m=[b1*mi+(1-b1)*gi for mi,gi in zip(m,g)]; v=[b2*vi+(1-b2)*gi*gi for vi,gi in zip(v,g)]
    ///     bc1=1-b1**t; bc2=1-b2**t
    ///     p=[pi-lr/bc1*mi/(math.sqrt(vi)/math.sqrt(bc2)+eps) for pi,mi,vi in zip(p,m,v)]
    /// print(p)  # [0.7015862729460302, -1.7006233915360325, 0.8002947673356554]
    /// ```
    fn run(device: &Device) -> Vec<f32> {
        let mut params = Params::load(
            [("p".to_string(), Tensor::new(&[1.0f32, -2.0, 0.5], device).unwrap())].into(),
            "test",
            device,
        );
        let p = params.tensor("p", &[3], Init::Const(0.0)).unwrap();
        let set = params.finish().unwrap();
        let c = Tensor::new(&[1.0f32, 3.0, -0.5], device).unwrap();
        let mut opt = Adam::new(&set, AdamConfig::with_lr(0.1)).unwrap();
        for _ in 0..3 {
            let loss = (p.sqr().unwrap() * &c).unwrap().sum_all().unwrap();
            opt.step(&set, &loss.backward().unwrap()).unwrap();
        }
        p.to_vec1().unwrap()
    }

    #[test]
    fn matches_torch_adam() {
        let got = run(&Device::Cpu);
        for (g, want) in got.iter().zip([0.701_586_3f32, -1.700_623_4, 0.800_294_8]) {
            assert!((g - want).abs() < 1e-5, "{got:?}");
        }
    }
}
