//! Parameters by name, as in a PyTorch `state_dict`.
//!
//! A model's constructor asks [`Params`] for each tensor by its PyTorch name and shape. Fresh
//! parameters are drawn from a seeded generator with PyTorch's default initialisation, so a
//! seed fixes the whole run; loaded ones come from a checkpoint and are checked strictly:
//! every missing, unexpected or misshapen tensor is reported, by name, in one error.

use std::collections::{BTreeMap, BTreeSet};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig, Embedding};

use super::linear::Linear;

use crate::error::{Error, Result};
use crate::io::safetensors::TensorMap;
use crate::rng::{Rng, Stream};

enum Source {
    Init(Rng),
    Load { tensors: BTreeMap<String, Tensor>, origin: String },
}

/// Collects a model's parameters while it is built; see the module docs.
pub struct Params {
    source: Source,
    device: Device,
    vars: BTreeMap<String, Var>,
    buffers: BTreeSet<String>,
    problems: Vec<String>,
}

impl Params {
    /// Fresh parameters drawn from `seed`.
    pub fn init(seed: u64, device: &Device) -> Self {
        Self::new(Source::Init(Rng::new(seed, Stream::Init, 0)), device)
    }

    /// Parameters taken from `tensors`; `origin` names the file in errors.
    pub fn load(tensors: BTreeMap<String, Tensor>, origin: &str, device: &Device) -> Self {
        Self::new(
            Source::Load {
                tensors,
                origin: origin.to_string(),
            },
            device,
        )
    }

    fn new(source: Source, device: &Device) -> Self {
        Params {
            source,
            device: device.clone(),
            vars: BTreeMap::new(),
            buffers: BTreeSet::new(),
            problems: Vec::new(),
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A trainable tensor. `init` draws fresh values when not loading.
    pub fn tensor(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        let t = match &mut self.source {
            Source::Init(rng) => init.draw(rng, shape, &self.device)?,
            Source::Load { tensors, .. } => match tensors.remove(name) {
                Some(t) if t.dims() == shape => t.to_dtype(DType::F32)?.to_device(&self.device)?,
                Some(t) => {
                    self.problems.push(format!("'{name}' has shape {:?}, expected {shape:?}", t.dims()));
                    Tensor::zeros(shape, DType::F32, &self.device)?
                }
                None => {
                    self.problems.push(format!("'{name}' {shape:?} is missing"));
                    Tensor::zeros(shape, DType::F32, &self.device)?
                }
            },
        };
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        self.vars.insert(name.to_string(), var);
        Ok(out)
    }

    /// A saved but not trained tensor (a PyTorch buffer, e.g. a codebook's running averages).
    pub fn buffer(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        let t = self.tensor(name, shape, init)?;
        self.buffers.insert(name.to_string());
        Ok(t)
    }

    /// `nn.Linear(fan_in, fan_out)`: weight [out, in] and bias, PyTorch's default init.
    pub fn linear(&mut self, name: &str, fan_in: usize, fan_out: usize) -> Result<Linear> {
        let bound = 1.0 / (fan_in as f32).sqrt();
        let w = self.tensor(&format!("{name}.weight"), &[fan_out, fan_in], Init::Uniform(bound))?;
        let b = self.tensor(&format!("{name}.bias"), &[fan_out], Init::Uniform(bound))?;
        Ok(Linear::new(w, b))
    }

    /// `nn.Conv2d(cin, cout, k, stride, padding)` with PyTorch's default init.
    pub fn conv2d(&mut self, name: &str, cin: usize, cout: usize, k: usize, cfg: Conv2dConfig) -> Result<Conv2d> {
        let bound = 1.0 / ((cin * k * k) as f32).sqrt();
        let w = self.tensor(&format!("{name}.weight"), &[cout, cin, k, k], Init::Uniform(bound))?;
        let b = self.tensor(&format!("{name}.bias"), &[cout], Init::Uniform(bound))?;
        Ok(Conv2d::new(w, Some(b), cfg))
    }

    /// `nn.ConvTranspose2d(cin, cout, k, ...)`: weight [in, out, k, k]; PyTorch computes the
    /// init bound from the weight's dim 1 times the kernel size.
    pub fn conv_transpose2d(
        &mut self,
        name: &str,
        cin: usize,
        cout: usize,
        k: usize,
        cfg: ConvTranspose2dConfig,
    ) -> Result<ConvTranspose2d> {
        let bound = 1.0 / ((cout * k * k) as f32).sqrt();
        let w = self.tensor(&format!("{name}.weight"), &[cin, cout, k, k], Init::Uniform(bound))?;
        let b = self.tensor(&format!("{name}.bias"), &[cout], Init::Uniform(bound))?;
        Ok(ConvTranspose2d::new(w, Some(b), cfg))
    }

    /// `nn.Embedding(n, dim)`, initialised N(0, 1) as in PyTorch.
    pub fn embedding(&mut self, name: &str, n: usize, dim: usize) -> Result<Embedding> {
        let w = self.tensor(&format!("{name}.weight"), &[n, dim], Init::Normal(1.0))?;
        Ok(Embedding::new(w, dim))
    }

    /// Ends construction; when loading, any missing, misshapen or unused tensor is an error
    /// that lists them all.
    pub fn finish(self) -> Result<ParamSet> {
        let mut problems = self.problems;
        if let Source::Load { tensors, origin } = &self.source {
            if !tensors.is_empty() {
                problems.push(format!(
                    "unexpected {}",
                    tensors.keys().map(|k| format!("'{k}'")).collect::<Vec<_>>().join(", ")
                ));
            }
            if !problems.is_empty() {
                return Err(Error::bad_input(
                    origin,
                    format!("tensors do not match the model: {}", problems.join("; ")),
                ));
            }
        }
        Ok(ParamSet {
            vars: self.vars,
            buffers: self.buffers,
        })
    }
}

/// How a fresh tensor is drawn.
#[derive(Debug, Clone, Copy)]
pub enum Init {
    /// U(-b, b), PyTorch's default for linear and conv layers.
    Uniform(f32),
    /// N(0, s^2).
    Normal(f32),
    Const(f32),
}

impl Init {
    fn draw(self, rng: &mut Rng, shape: &[usize], device: &Device) -> Result<Tensor> {
        match self {
            Init::Uniform(b) => rng.uniform(shape, -b, b, device),
            Init::Normal(s) => Ok((rng.normal(shape, device)? * s as f64)?),
            Init::Const(c) => Ok(Tensor::full(c, shape, device)?),
        }
    }
}

/// A built model's parameters by name.
pub struct ParamSet {
    vars: BTreeMap<String, Var>,
    buffers: BTreeSet<String>,
}

impl ParamSet {
    /// Trainable parameters, in name order.
    pub fn trainable(&self) -> impl Iterator<Item = (&String, &Var)> {
        self.vars.iter().filter(|(k, _)| !self.buffers.contains(*k))
    }

    pub fn get(&self, name: &str) -> Option<&Var> {
        self.vars.get(name)
    }

    /// Every tensor (parameters and buffers) as a state dict.
    /// Copies, so later in-place updates do not change the map.
    pub fn to_tensor_map(&self) -> Result<TensorMap> {
        let mut m = TensorMap::new();
        for (k, v) in &self.vars {
            m.insert(k.clone(), v.as_tensor().copy()?);
        }
        Ok(m)
    }

    /// Overwrites every tensor from `map` (shapes must match).
    pub fn assign(&self, map: &BTreeMap<String, Tensor>) -> Result<()> {
        for (k, v) in &self.vars {
            let src = map
                .get(k)
                .ok_or_else(|| Error::config(format!("state is missing '{k}'")))?;
            v.set(&src.to_device(v.device())?)?;
        }
        Ok(())
    }

    /// The number of trainable scalars.
    pub fn count(&self) -> usize {
        self.trainable().map(|(_, v)| v.elem_count()).sum()
    }
}
