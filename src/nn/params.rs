//! Parameters by name, as in a PyTorch `state_dict`.
//!
//! A model's constructor asks [`Params`] for each tensor by its PyTorch name and shape. Fresh
//! parameters are drawn from a seeded generator with PyTorch's default initialisation, so a
//! seed fixes the whole run; loaded ones come from a checkpoint and are checked strictly:
//! every missing, unexpected or misshapen tensor is reported, by name, in one error.

use std::collections::{BTreeMap, BTreeSet};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Embedding;

use super::batch_norm::BatchNorm2d;
use super::conv::{Conv2d, ConvConfig, ConvTranspose2d, ConvTransposeConfig};
use super::group_norm::GroupNorm;
use super::linear::Linear;

use crate::error::{Error, Result};
use crate::io::safetensors::TensorMap;
use crate::memory::{bytes_of, ensure_fits};
use crate::rng::{Rng, Stream};

enum Source {
    Init(Box<Rng>),
    /// `bytes`: the f32 parameters asked for so far, so that a config implying more than the
    /// machine's memory stops at once, before anything that large is built.
    Load {
        tensors: BTreeMap<String, Tensor>,
        origin: String,
        bytes: u128,
    },
    /// A dry run: shapes are counted, nothing is allocated.
    Plan {
        bytes: u128,
    },
}

/// Collects a model's parameters while it is built; see the module docs.
pub struct Params {
    source: Source,
    device: Device,
    vars: BTreeMap<String, Var>,
    buffers: BTreeSet<String>,
    problems: Vec<String>,
    /// Plain tensors instead of variables: a network for inference, whose ops record no
    /// graph, so each intermediate is freed as soon as the next op has read it.
    frozen: bool,
}

impl Params {
    /// Fresh parameters drawn from `seed`.
    pub fn init(seed: u64, device: &Device) -> Self {
        Self::new(Source::Init(Box::new(Rng::new(seed, Stream::Init, 0))), device)
    }

    /// Parameters taken from `tensors`; `origin` names the file in errors.
    pub fn load(tensors: BTreeMap<String, Tensor>, origin: &str, device: &Device) -> Self {
        Self::new(Source::Load { tensors, origin: origin.to_string(), bytes: 0 }, device)
    }

    /// Parameters taken from `tensors` as [`Params::load`] takes them, for inference: the
    /// network's tensors are not variables, so nothing it computes keeps a backward graph
    /// (with variables, every intermediate of a forward pass lives until its output is
    /// dropped: a held-out pass at 4x the training batch took 2.6 GB where training took 0.9).
    pub fn frozen(tensors: BTreeMap<String, Tensor>, origin: &str, device: &Device) -> Self {
        Params { frozen: true, ..Self::load(tensors, origin, device) }
    }

    /// A dry run that builds nothing: each tensor asked for is a zero-stride view of one
    /// zero, and asking for more parameters than the machine's memory holds is an error.
    /// See [`Params::planned_bytes`].
    pub fn plan() -> Self {
        Self::new(Source::Plan { bytes: 0 }, &Device::Cpu)
    }

    /// The bytes of f32 parameters a dry run was asked for.
    pub fn planned_bytes(&self) -> u128 {
        match self.source {
            Source::Plan { bytes } => bytes,
            _ => 0,
        }
    }

    fn new(source: Source, device: &Device) -> Self {
        Params {
            source,
            device: device.clone(),
            vars: BTreeMap::new(),
            buffers: BTreeSet::new(),
            problems: Vec::new(),
            frozen: false,
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A trainable tensor. `init` draws fresh values when not loading.
    pub fn tensor(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        self.entry(name, shape, init, DType::F32)
    }

    /// A tensor of `dtype` (a loaded one is converted to it).
    fn entry(&mut self, name: &str, shape: &[usize], init: Init, dtype: DType) -> Result<Tensor> {
        let t = match &mut self.source {
            Source::Init(rng) => init.draw(rng, shape, &self.device)?.to_dtype(dtype)?,
            Source::Plan { bytes } => {
                *bytes = add_bytes(*bytes, shape);
                ensure_fits("the network's parameters", Some(*bytes))
                    .map_err(|e| Error::config(format!("{e} (at '{name}' {shape:?})")))?;
                return placeholder(shape, &self.device);
            }
            Source::Load { tensors, origin, bytes } => {
                *bytes = add_bytes(*bytes, shape);
                match tensors.remove(name) {
                    Some(t) if t.dims() == shape => t.to_dtype(dtype)?.to_device(&self.device)?,
                    found => {
                        self.problems.push(match found {
                            Some(t) => format!("'{name}' has shape {:?}, expected {shape:?}", t.dims()),
                            None => format!("'{name}' {shape:?} is missing"),
                        });
                        if let Err(e) = ensure_fits("the config's parameters", Some(*bytes)) {
                            let problems = self.problems.join("; ");
                            return Err(Error::bad_input(
                                origin,
                                format!("tensors do not match the model config: {problems}; {e}"),
                            ));
                        }
                        return placeholder(shape, &self.device);
                    }
                }
            }
        };
        if self.frozen {
            return Ok(t);
        }
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

    /// A saved counter, an i64 scalar buffer starting at 0 (PyTorch's `num_batches_tracked`).
    pub fn counter(&mut self, name: &str) -> Result<Tensor> {
        let t = self.entry(name, &[], Init::Const(0.0), DType::I64)?;
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
    pub fn conv2d(&mut self, name: &str, cin: usize, cout: usize, k: usize, cfg: ConvConfig) -> Result<Conv2d> {
        let bound = 1.0 / ((cin * k * k) as f32).sqrt();
        let w = self.tensor(&format!("{name}.weight"), &[cout, cin, k, k], Init::Uniform(bound))?;
        let b = self.tensor(&format!("{name}.bias"), &[cout], Init::Uniform(bound))?;
        Ok(Conv2d::new(w, b, cfg))
    }

    /// `nn.ConvTranspose2d(cin, cout, k, ...)`: weight [in, out, k, k]; PyTorch computes the
    /// init bound from the weight's dim 1 times the kernel size.
    pub fn conv_transpose2d(
        &mut self,
        name: &str,
        cin: usize,
        cout: usize,
        k: usize,
        cfg: ConvTransposeConfig,
    ) -> Result<ConvTranspose2d> {
        let bound = 1.0 / ((cout * k * k) as f32).sqrt();
        let w = self.tensor(&format!("{name}.weight"), &[cin, cout, k, k], Init::Uniform(bound))?;
        let b = self.tensor(&format!("{name}.bias"), &[cout], Init::Uniform(bound))?;
        Ok(ConvTranspose2d::new(w, b, cfg))
    }

    /// `nn.GroupNorm(groups, channels)`: weight 1 and bias 0, as in PyTorch.
    pub fn group_norm(&mut self, name: &str, groups: usize, channels: usize) -> Result<GroupNorm> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(Error::config(format!("{name}: {channels} channels do not split into {groups} groups")));
        }
        let w = self.tensor(&format!("{name}.weight"), &[channels], Init::Const(1.0))?;
        let b = self.tensor(&format!("{name}.bias"), &[channels], Init::Const(0.0))?;
        Ok(GroupNorm::new(w, b, groups))
    }

    /// `nn.BatchNorm2d(channels)`: weight 1 and bias 0, and the buffers `running_mean` (0),
    /// `running_var` (1) and `num_batches_tracked` (i64 0), as in PyTorch.
    pub fn batch_norm2d(&mut self, name: &str, channels: usize) -> Result<BatchNorm2d> {
        let c = [channels];
        Ok(BatchNorm2d::new(
            self.tensor(&format!("{name}.weight"), &c, Init::Const(1.0))?,
            self.tensor(&format!("{name}.bias"), &c, Init::Const(0.0))?,
            self.buffer(&format!("{name}.running_mean"), &c, Init::Const(0.0))?,
            self.buffer(&format!("{name}.running_var"), &c, Init::Const(1.0))?,
            self.counter(&format!("{name}.num_batches_tracked"))?,
        ))
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
        if let Source::Load { tensors, origin, .. } = &self.source {
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
        Ok(ParamSet { vars: self.vars, buffers: self.buffers })
    }
}

/// `bytes` plus those of f32 `shape`, saturating (a sum beyond counting is too large anyway).
fn add_bytes(bytes: u128, shape: &[usize]) -> u128 {
    bytes_of(shape, 4).and_then(|b| b.checked_add(bytes)).unwrap_or(u128::MAX)
}

/// A tensor of `shape` that allocates nothing: one zero seen through zero strides. It stands
/// for a parameter in a dry run, and for a missing or misshapen one while a load goes on to
/// report every problem (a load with problems ends in an error).
fn placeholder(shape: &[usize], device: &Device) -> Result<Tensor> {
    Ok(Tensor::zeros((), DType::F32, device)?.broadcast_as(shape)?)
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

    /// The device the parameters live on (the CPU for a model without any).
    pub fn device(&self) -> Device {
        self.vars.values().next().map_or(Device::Cpu, |v| v.device().clone())
    }

    pub fn get(&self, name: &str) -> Option<&Var> {
        self.vars.get(name)
    }

    /// Every tensor (parameters and buffers), detached from the graph but sharing its storage
    /// (no copy): what [`Params::frozen`] builds an inference copy of the network from.
    pub fn detached(&self) -> BTreeMap<String, Tensor> {
        self.vars.iter().map(|(k, v)| (k.clone(), v.as_tensor().detach())).collect()
    }

    /// Every tensor (parameters and buffers) as a state dict.
    /// Copies, so later in-place updates do not change the map, and detached: candle's
    /// `copy` of a variable records the variable as its source, and anything computed from
    /// such a copy (ddpm's weight average, updated every step) would record a graph that
    /// keeps every earlier value alive.
    pub fn to_tensor_map(&self) -> Result<TensorMap> {
        let mut m = TensorMap::new();
        for (k, v) in &self.vars {
            m.insert(k.clone(), v.as_tensor().detach().copy()?);
        }
        Ok(m)
    }

    /// Overwrites every tensor from `map` (shapes must match).
    pub fn assign(&self, map: &BTreeMap<String, Tensor>) -> Result<()> {
        for (k, v) in &self.vars {
            let src = map.get(k).ok_or_else(|| Error::config(format!("state is missing '{k}'")))?;
            v.set(&src.to_device(v.device())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(p: &mut Params) {
        p.linear("fc1", 3, 2).unwrap();
        p.buffer("stat", &[4], Init::Const(1.0)).unwrap();
    }

    #[test]
    fn fresh_parameters_follow_the_seed_and_pytorch_bounds() {
        let d = Device::Cpu;
        let (mut a, mut b, mut c) = (Params::init(1, &d), Params::init(1, &d), Params::init(2, &d));
        for p in [&mut a, &mut b, &mut c] {
            build(p);
        }
        let (a, b, c) = (a.finish().unwrap(), b.finish().unwrap(), c.finish().unwrap());
        let w = |s: &ParamSet| s.get("fc1.weight").unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(w(&a), w(&b));
        assert_ne!(w(&a), w(&c));
        let bound = 1.0 / 3f32.sqrt();
        assert!(w(&a).iter().all(|v| v.abs() <= bound));
        // Buffers are saved but not trained.
        assert_eq!(a.trainable().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["fc1.bias", "fc1.weight"]);
        assert_eq!(a.to_tensor_map().unwrap().names(), ["fc1.bias", "fc1.weight", "stat"]);
    }

    #[test]
    fn loading_reports_every_missing_unexpected_and_misshapen_tensor() {
        let d = Device::Cpu;
        let mut tensors = BTreeMap::new();
        tensors.insert("fc1.weight".to_string(), Tensor::zeros((2, 5), DType::F32, &d).unwrap());
        tensors.insert("fc9.bias".to_string(), Tensor::zeros(2, DType::F32, &d).unwrap());
        tensors.insert("stat".to_string(), Tensor::ones(4, DType::F64, &d).unwrap());
        let mut p = Params::load(tensors, "m.safetensors", &d);
        build(&mut p);
        let err = p.finish().err().expect("mismatch is an error").to_string();
        assert!(err.starts_with("m.safetensors: "), "{err}");
        for part in
            ["'fc1.weight' has shape [2, 5], expected [2, 3]", "'fc1.bias' [2] is missing", "unexpected 'fc9.bias'"]
        {
            assert!(err.contains(part), "{err} lacks {part}");
        }
        // A matching file loads, converting f64 to f32.
        let mut ok = BTreeMap::new();
        ok.insert("fc1.weight".to_string(), Tensor::ones((2, 3), DType::F32, &d).unwrap());
        ok.insert("fc1.bias".to_string(), Tensor::ones(2, DType::F32, &d).unwrap());
        ok.insert("stat".to_string(), Tensor::ones(4, DType::F64, &d).unwrap());
        let mut p = Params::load(ok, "ok", &d);
        build(&mut p);
        assert_eq!(p.finish().unwrap().get("stat").unwrap().dtype(), DType::F32);
    }

    #[test]
    fn a_dry_run_counts_parameters_and_refuses_more_than_the_machine_holds() {
        let mut p = Params::plan();
        build(&mut p);
        assert_eq!(p.planned_bytes(), 4 * (3 * 2 + 2 + 4));
        assert!(p.finish().unwrap().get("fc1.weight").is_none(), "a dry run keeps no parameters");
        let e = Params::plan().linear("fc1", 1 << 40, 1 << 40).expect_err("too large").to_string();
        assert!(e.contains("the network's parameters would need") && e.contains("'fc1.weight'"), "{e}");
    }

    #[test]
    fn a_config_implying_more_parameters_than_the_machine_holds_stops_at_the_first() {
        let d = Device::Cpu;
        let tensors = BTreeMap::from([("fc1.weight".to_string(), Tensor::zeros((2, 3), DType::F32, &d).unwrap())]);
        let mut p = Params::load(tensors, "m.safetensors", &d);
        let e = p.linear("fc1", 3, 1_000_000_000_000).expect_err("stops at once").to_string();
        assert!(e.starts_with("m.safetensors: ") && e.contains("the config's parameters would need 12.0 TB"), "{e}");
        assert!(e.contains("'fc1.weight' has shape [2, 3], expected [1000000000000, 3]"), "{e}");
    }

    #[test]
    fn conv_layers_have_pytorch_shapes_and_init_bounds() {
        use candle_core::Module;
        let d = Device::Cpu;
        let mut p = Params::init(0, &d);
        let conv = p.conv2d("enc", 3, 8, 4, ConvConfig { stride: 2, padding: 1 }).unwrap();
        let cfg = ConvTransposeConfig { stride: 2, padding: 1, output_padding: 0 };
        let convt = p.conv_transpose2d("dec", 8, 2, 4, cfg).unwrap();
        let set = p.finish().unwrap();
        let dims = |name: &str| set.get(name).unwrap().dims().to_vec();
        assert_eq!([dims("enc.weight"), dims("enc.bias")], [vec![8, 3, 4, 4], vec![8]]);
        assert_eq!([dims("dec.weight"), dims("dec.bias")], [vec![8, 2, 4, 4], vec![2]]);
        // Bounds 1/sqrt(in k k) and, transposed, 1/sqrt(out k k): values fill U(-b, b).
        for (name, bound) in [("enc.weight", 48f32.sqrt().recip()), ("dec.weight", 32f32.sqrt().recip())] {
            let v = set.get(name).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
            assert!(max <= bound && max > 0.9 * bound, "{name}: max {max}, bound {bound}");
        }
        let y = conv.forward(&Tensor::zeros((2, 3, 32, 32), DType::F32, &d).unwrap()).unwrap();
        assert_eq!(y.dims(), [2, 8, 16, 16]);
        assert_eq!(convt.forward(&y).unwrap().dims(), [2, 2, 32, 32]);
    }
}
