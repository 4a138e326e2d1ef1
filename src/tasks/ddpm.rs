//! Training, forward noising and sampling for `ddpm-unet-mnist` (Ho et al. 2020).
//!
//! Training minimises the simple loss ||eps - eps_theta(x_t, t)||^2 (mean) with t uniform
//! in [0, T-1], and keeps an exponential moving average of the weights: the model file holds
//! the average (what sampling uses), the training state the raw weights and the average, so
//! `--resume` continues exactly.

use std::collections::BTreeMap;
use std::io::IsTerminal;

use candle_core::{DType, Device, Tensor};
use rand::Rng as _;

use crate::checkpoint::Checkpoint;
use crate::data::image_set::read_array;
use crate::data::pack::Images;
use crate::data::stream::ImageStream;
use crate::data::{Batch, Dataset};
use crate::diffusion::{ddim, ddpm, DdimOptions, DdpmOptions, Schedule, ScheduleKind, Variance};
use crate::error::{Error, Result};
use crate::io::npy::{DType as NpyDType, Elements, NpyWriter};
use crate::io::safetensors::TensorMap;
use crate::io::{InputPath, OutputPath};
use crate::models::ddpm::{DdpmConfig, UNet};
use crate::models::ModelConfig;
use crate::nn::params::{ParamSet, Params};
use crate::rng::{Rng, Stream};
use crate::train::{Metrics, StepOutput, Task};

/// Images per evaluation batch.
const EVAL_BATCH: usize = 100;

pub struct DdpmTask {
    pub model: UNet,
    params: ParamSet,
    schedule: Schedule,
    /// The moving average of every parameter, by name.
    ema: BTreeMap<String, Tensor>,
    /// Averaging steps taken so far (the decay warms up with them).
    ema_updates: u64,
}

impl DdpmTask {
    pub fn new(config: DdpmConfig, mut params: Params) -> Result<Self> {
        let schedule = Schedule::new(config.schedule, config.timesteps);
        let model = UNet::new(config, &mut params)?;
        let params = params.finish()?;
        let ema = params.to_tensor_map()?.tensors;
        Ok(DdpmTask { model, params, schedule, ema, ema_updates: 0 })
    }

    /// The decay of the next averaging step: the configured one, warmed up as
    /// min(decay, (1 + n) / (10 + n)) after n steps (as diffusers' EMAModel does), so that
    /// a short run's average is not mostly the random initialisation (0.9999 alone keeps
    /// 93 % of it after 700 steps).
    fn ema_decay(&self) -> f64 {
        let n = self.ema_updates as f64;
        self.model.config.ema_decay.min((1.0 + n) / (10.0 + n))
    }
}

/// x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, with one t per image of `x0` [B, ...].
pub fn q_sample(schedule: &Schedule, x0: &Tensor, t: &[usize], eps: &Tensor) -> Result<Tensor> {
    let b = x0.dim(0)?;
    let (a, s): (Vec<f32>, Vec<f32>) = t
        .iter()
        .map(|&t| {
            let (a, s) = schedule.q_coefficients(t);
            (a as f32, s as f32)
        })
        .unzip();
    let shape = [b, 1, 1, 1];
    let a = Tensor::from_vec(a, &shape[..x0.rank()], x0.device())?;
    let s = Tensor::from_vec(s, &shape[..x0.rank()], x0.device())?;
    Ok((x0.broadcast_mul(&a)? + eps.broadcast_mul(&s)?)?)
}

/// Images in [0,1] to the model's [-1,1].
fn to_model_range(x: &Tensor) -> Result<Tensor> {
    Ok(x.affine(2.0, -1.0)?)
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

impl Task for DdpmTask {
    fn config(&self) -> ModelConfig {
        ModelConfig::Ddpm(self.model.config.clone())
    }

    fn params(&self) -> &ParamSet {
        &self.params
    }

    fn train_step(&mut self, batch: &Batch, rng: &mut Rng) -> Result<StepOutput> {
        let x0 = to_model_range(&batch.x)?;
        let b = x0.dim(0)?;
        let t: Vec<usize> = (0..b).map(|_| rng.inner().random_range(0..self.schedule.len())).collect();
        let eps = rng.normal(x0.dims(), x0.device())?;
        let x_t = q_sample(&self.schedule, &x0, &t, &eps)?;
        let loss = (self.model.forward(&x_t, &t, Some(rng))? - eps)?.sqr()?.mean_all()?;
        Ok(StepOutput { metrics: vec![("mse".into(), scalar(&loss)?)], loss })
    }

    /// One step of the moving average: ema = d ema + (1 - d) weights.
    fn after_step(&mut self) -> Result<()> {
        let d = self.ema_decay();
        for (name, var) in self.params.trainable() {
            let avg = self.ema.get_mut(name).ok_or_else(|| Error::config(format!("no average of '{name}'")))?;
            *avg = ((&*avg * d)? + (var.as_tensor() * (1.0 - d))?)?;
        }
        self.ema_updates += 1;
        Ok(())
    }

    /// Held-out eps-MSE with fixed noise, of the raw weights (`mse`) and of their average
    /// (`ema_mse`, the model file's).
    fn evaluate(&self, data: &dyn Dataset) -> Result<Metrics> {
        let device = self.params.device();
        let ema = self.ema_model(&device)?;
        Ok(vec![
            ("mse".into(), eps_mse(&self.model, &self.schedule, data, &device)?),
            ("ema_mse".into(), eps_mse(&ema, &self.schedule, data, &device)?),
        ])
    }

    /// The moving average: what sampling uses.
    fn model_tensors(&self) -> Result<TensorMap> {
        let mut m = TensorMap::new();
        for (k, v) in &self.ema {
            m.insert(k.clone(), v.copy()?);
        }
        Ok(m)
    }

    fn extra_state(&self) -> Result<BTreeMap<String, Tensor>> {
        let mut out: BTreeMap<String, Tensor> =
            self.ema.iter().map(|(k, v)| Ok((format!("ema.{k}"), v.copy()?))).collect::<Result<_>>()?;
        out.insert("ema_updates".into(), Tensor::new(&[self.ema_updates as i64], &Device::Cpu)?);
        Ok(out)
    }

    fn load_extra_state(&mut self, state: &BTreeMap<String, Tensor>) -> Result<()> {
        let device = self.params.device();
        for (k, avg) in self.ema.iter_mut() {
            let saved = state
                .get(&format!("ema.{k}"))
                .ok_or_else(|| Error::config(format!("the training state has no average of '{k}'")))?;
            *avg = saved.to_device(&device)?;
        }
        let n = state.get("ema_updates").ok_or_else(|| Error::config("the training state has no EMA step count"))?;
        self.ema_updates = n.to_dtype(DType::I64)?.to_vec1::<i64>()?.first().copied().unwrap_or(0).max(0) as u64;
        Ok(())
    }
}

impl DdpmTask {
    /// A U-Net with the averaged weights.
    fn ema_model(&self, device: &Device) -> Result<UNet> {
        let mut p = Params::load(self.ema.clone(), "the weight average", device);
        let net = UNet::new(self.model.config.clone(), &mut p)?;
        p.finish()?;
        Ok(net)
    }
}

/// Mean squared error of the predicted noise over `data`, without dropout, with t and eps
/// drawn from fixed streams (so epochs and runs compare).
pub fn eps_mse(model: &UNet, schedule: &Schedule, data: &dyn Dataset, device: &Device) -> Result<f64> {
    let rows: Vec<usize> = (0..data.len()).collect();
    let mut total = 0.0;
    for (i, chunk) in rows.chunks(EVAL_BATCH).enumerate() {
        let mut rng = Rng::new(0, Stream::Eval, i as u64);
        let x0 = to_model_range(&data.batch(chunk, device)?.x)?;
        let t: Vec<usize> = chunk.iter().map(|_| rng.inner().random_range(0..schedule.len())).collect();
        let eps = rng.normal(x0.dims(), device)?;
        let pred = model.forward(&q_sample(schedule, &x0, &t, &eps)?, &t, None)?;
        total += scalar(&(pred - eps)?.sqr()?.mean_all()?)? * chunk.len() as f64;
    }
    Ok(total / data.len().max(1) as f64)
}

/// The U-Net in a checkpoint, which must hold a ddpm-unet-mnist.
pub fn load_model(ckpt: Checkpoint, device: &Device) -> Result<UNet> {
    ckpt.expect(&["ddpm-unet-mnist"])?;
    let ModelConfig::Ddpm(config) = ckpt.config else { unreachable!("checked above") };
    let mut p = Params::load(ckpt.tensors, &ckpt.origin, device);
    let net = UNet::new(config, &mut p)?;
    p.finish()?;
    Ok(net)
}

/// The step(s) at which `ddpm-noise` noises each image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoiseSteps {
    /// One t for every image.
    Fixed(usize),
    /// One t per image, uniform in [0, T-1].
    Random,
    /// Each image at each of these t, with the same eps.
    Trajectory(Vec<usize>),
}

/// What `ddpm-noise` does.
pub struct NoiseOptions {
    pub schedule: ScheduleKind,
    /// T.
    pub timesteps: usize,
    pub steps: NoiseSteps,
    /// Write a .safetensors of `x_t`, `eps` and `t` instead of an .npy of x_t.
    pub with_eps: bool,
    /// Clip x_t to [-1, 1], for viewing.
    pub clip: bool,
    pub seed: u64,
}

/// Noises images with the closed form of q(x_t | x_0); writes f32 [N, C, H, W] in the
/// model's [-1,1] space (a trajectory: [N * len, C, H, W], each image's steps together).
/// Image i's t and eps come from the stream (seed, Eval, i), so results do not depend on
/// how the input is batched.
pub fn noise(
    images: &mut ImageStream,
    geometry: crate::data::Geometry,
    out: &OutputPath,
    opts: &NoiseOptions,
) -> Result<()> {
    if opts.timesteps == 0 {
        return Err(Error::config("--timesteps must be at least 1"));
    }
    let schedule = Schedule::new(opts.schedule, opts.timesteps);
    let t_max = opts.timesteps;
    let check = |t: usize| {
        if t >= t_max {
            Err(Error::config(format!("--t {t} is outside [0, {}]", t_max - 1)))
        } else {
            Ok(())
        }
    };
    match &opts.steps {
        NoiseSteps::Fixed(t) => check(*t)?,
        NoiseSteps::Trajectory(ts) if ts.is_empty() => return Err(Error::config("--trajectory needs at least one t")),
        NoiseSteps::Trajectory(ts) => ts.iter().try_for_each(|&t| check(t))?,
        NoiseSteps::Random => {}
    }
    let n = images.len();
    let per_image = match &opts.steps {
        NoiseSteps::Trajectory(ts) => ts.len(),
        _ => 1,
    };
    let dims = [n * per_image, geometry.channels, geometry.height, geometry.width];
    let px = geometry.pixels();
    let device = Device::Cpu;
    let mut writer = if opts.with_eps {
        None
    } else {
        Some(NpyWriter::new(out.create()?, NpyDType::F32, &dims).map_err(|e| Error::io(out, e))?)
    };
    let (mut all_x, mut all_eps, mut all_t) = (Vec::new(), Vec::new(), Vec::new());
    let mut index = 0u64;
    while let Some(batch) = images.next_batch(&device)? {
        let x0 = to_model_range(&batch.x)?;
        let b = x0.dim(0)?;
        let (mut t, mut eps) = (Vec::with_capacity(b * per_image), Vec::with_capacity(b * per_image * px));
        for _ in 0..b {
            let mut rng = Rng::new(opts.seed, Stream::Eval, index);
            index += 1;
            let steps = match &opts.steps {
                NoiseSteps::Fixed(t) => vec![*t],
                NoiseSteps::Random => vec![rng.inner().random_range(0..t_max)],
                NoiseSteps::Trajectory(ts) => ts.clone(),
            };
            let e = rng.normal(&[px], &device)?.to_vec1::<f32>()?;
            for s in steps {
                t.push(s);
                eps.extend_from_slice(&e);
            }
        }
        // (b, c, h, w) -> (b * per_image, c, h, w), each image repeated per_image times.
        let x0 = x0.unsqueeze(1)?.repeat((1, per_image, 1, 1, 1))?.reshape((
            (),
            geometry.channels,
            geometry.height,
            geometry.width,
        ))?;
        let eps = Tensor::from_vec(eps, x0.shape(), &device)?;
        let mut x_t = q_sample(&schedule, &x0, &t, &eps)?;
        if opts.clip {
            x_t = x_t.clamp(-1f32, 1f32)?;
        }
        let x_t = x_t.flatten_all()?.to_vec1::<f32>()?;
        match writer.as_mut() {
            Some(w) => w.write_rows(&x_t).map_err(|e| Error::io(out, e))?,
            None => {
                all_x.extend(x_t);
                all_eps.extend(eps.flatten_all()?.to_vec1::<f32>()?);
                all_t.extend(t.iter().map(|&t| t as i64));
            }
        }
    }
    match writer {
        Some(w) => w.finish().map_err(|e| Error::io(out, e))?.finish(),
        None => {
            let mut m = TensorMap::new();
            m.insert("x_t", Tensor::from_vec(all_x, &dims, &device)?);
            m.insert("eps", Tensor::from_vec(all_eps, &dims, &device)?);
            m.insert("t", Tensor::from_vec(all_t, n, &device)?);
            let kind = match opts.schedule {
                ScheduleKind::Linear => "linear",
                ScheduleKind::Cosine => "cosine",
            };
            m.metadata.insert("genimg.schedule".into(), kind.into());
            m.metadata.insert("genimg.timesteps".into(), opts.timesteps.to_string());
            m.write(out)
        }
    }
}

/// The reverse process `ddpm-denoise` runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    /// Ancestral sampling, one network call per step.
    Ddpm(Variance),
    /// DDIM over `steps` evenly spaced steps, with noise `eta`.
    Ddim { steps: usize, eta: f64 },
}

/// Where the reverse process starts.
pub enum Start {
    /// N draws of pure noise x_{T-1} ~ N(0, I).
    Noise(usize),
    /// x_t read from a file (f32 [N, C, H, W] in the model's space, as `ddpm-noise` writes).
    Input(InputPath),
}

pub struct DenoiseOptions {
    pub sampler: Sampler,
    /// The step of the start; T - 1 for pure noise.
    pub from_t: usize,
    pub clip: bool,
    pub seed: u64,
    pub batch_size: usize,
}

/// Runs the reverse process from `start` to x_0 and returns the images in [0,1],
/// [N, C, H, W]. Samples go through the network `batch_size` at a time; batch b's starting
/// noise comes from the stream (seed, Eval, 2b) and its sampling noise from (seed, Eval,
/// 2b + 1), so a seed and a batch size repeat exactly. With `progress`, a line on stderr.
pub fn denoise(model: &UNet, start: &Start, opts: &DenoiseOptions, device: &Device, progress: bool) -> Result<Tensor> {
    let cfg = &model.config;
    let schedule = Schedule::new(cfg.schedule, cfg.timesteps);
    if opts.from_t >= schedule.len() {
        return Err(Error::config(format!("--from-t {} is outside [0, {}]", opts.from_t, schedule.len() - 1)));
    }
    if opts.batch_size == 0 {
        return Err(Error::config("--batch-size must be at least 1"));
    }
    let g = cfg.geometry();
    let given = match start {
        Start::Input(path) => Some(read_x_t(path, g, device)?),
        Start::Noise(_) => None,
    };
    let n = match (start, &given) {
        (_, Some(x)) => x.dim(0)?,
        (Start::Noise(n), None) => *n,
        (Start::Input(_), None) => 0,
    };
    let steps = match opts.sampler {
        Sampler::Ddpm(_) => opts.from_t + 1,
        Sampler::Ddim { steps, .. } => crate::diffusion::sampler::ddim_timesteps(opts.from_t, steps).len(),
    };
    let batches = n.div_ceil(opts.batch_size);
    let show = progress && std::io::stderr().is_terminal();
    // Detached: the parameters are variables, so each prediction would otherwise keep its
    // step's whole graph alive, and through x every earlier step's.
    let predictor = |x: &Tensor, t: usize| Ok(model.forward(x, &vec![t; x.dim(0)?], None)?.detach());
    let mut out = Vec::with_capacity(batches);
    for b in 0..batches {
        let rows = opts.batch_size.min(n - b * opts.batch_size);
        let x_t = match &given {
            Some(x) => x.narrow(0, b * opts.batch_size, rows)?,
            None => Rng::new(opts.seed, Stream::Eval, 2 * b as u64)
                .normal(&[rows, g.channels, g.height, g.width], device)?,
        };
        let mut rng = Rng::new(opts.seed, Stream::Eval, 2 * b as u64 + 1);
        let mut done = 0;
        let mut observe = |_: usize, _: &Tensor| {
            done += 1;
            if show {
                eprint!("\r\x1b[2Kbatch {}/{batches}: step {done}/{steps}", b + 1);
            }
        };
        let x0 = match opts.sampler {
            Sampler::Ddpm(variance) => {
                let o = DdpmOptions { from_t: opts.from_t, variance, clip: opts.clip };
                ddpm(&predictor, &schedule, x_t, o, &mut rng, &mut observe)?
            }
            Sampler::Ddim { steps, eta } => {
                let o = DdimOptions { from_t: opts.from_t, steps, eta, clip: opts.clip };
                ddim(&predictor, &schedule, x_t, o, &mut rng, &mut observe)?
            }
        };
        out.push(((x0 + 1.0)? * 0.5)?.clamp(0f32, 1f32)?);
    }
    if show {
        eprint!("\r\x1b[2K");
    }
    if out.is_empty() {
        return Ok(Tensor::zeros((0, g.channels, g.height, g.width), DType::F32, device)?);
    }
    Ok(Tensor::cat(&out, 0)?)
}

/// Reads x_t: f32 or f64 [N, C, H, W] (or [N, H, W] for one channel) of the model's size.
fn read_x_t(path: &InputPath, g: crate::data::Geometry, device: &Device) -> Result<Tensor> {
    let a = read_array(path)?;
    let want = format!(
        "[N, {}, {}, {}] floats (x_t in the model's space, as ddpm-noise writes)",
        g.channels, g.height, g.width
    );
    let shape_ok = match *a.shape.as_slice() {
        [_, c, h, w] => (c, h, w) == (g.channels, g.height, g.width),
        [_, h, w] => g.channels == 1 && (h, w) == (g.height, g.width),
        _ => false,
    };
    if !shape_ok {
        return Err(Error::bad_input(path, format!("has shape {:?}, expected {want}", a.shape)));
    }
    let v: Vec<f32> = match a.data {
        Elements::F32(v) => v,
        Elements::F64(v) => v.into_iter().map(|x| x as f32).collect(),
        other => return Err(Error::bad_input(path, format!("has dtype {}, expected {want}", other.dtype().name()))),
    };
    if let Some(bad) = v.iter().find(|x| !x.is_finite()) {
        return Err(Error::bad_input(path, format!("holds a non-finite value ({bad})")));
    }
    Ok(Tensor::from_vec(v, (a.shape[0], g.channels, g.height, g.width), device)?)
}

/// Images in [0,1] [N, C, H, W] as .npy f32.
pub fn write_npy(x: &Tensor, out: &OutputPath) -> Result<()> {
    let mut w = NpyWriter::new(out.create()?, NpyDType::F32, x.dims()).map_err(|e| Error::io(out, e))?;
    w.write_rows(&x.flatten_all()?.to_vec1::<f32>()?).map_err(|e| Error::io(out, e))?;
    w.finish().map_err(|e| Error::io(out, e))?.finish()
}

/// Images in [0,1] [N, C, H, W] as a square PNG grid.
pub fn write_png(x: &Tensor, out: &OutputPath, scale: usize) -> Result<()> {
    let (count, channels, height, width) = x.dims4()?;
    let pixels = x.flatten_all()?.to_vec1::<f32>()?.into_iter().map(crate::data::convert::unit_to_u8).collect();
    let images = Images { count, channels, height, width, pixels };
    let opts = crate::data::grid::GridOptions { cols: None, pad: 2, scale };
    out.write_all(&crate::data::grid::grid_png(&images, &opts, &out.to_string())?)
}
