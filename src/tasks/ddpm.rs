//! Training and sampling for the diffusion U-Net (Ho et al. 2020).
//!
//! Training minimises the simple loss ||eps - eps_theta(x_t, t)||^2 (mean) with t uniform
//! in [0, T-1], and keeps an exponential moving average of the weights: the model file holds
//! the average (what sampling uses), the training state the raw weights and the average, so
//! `--resume` continues exactly.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::ops::Range;

use candle_core::{DType, Device, Tensor};
use rand::Rng as _;
use serde_json::json;

use crate::data::stream::open_npy;
use crate::data::{Batch, Dataset, Shard};
use crate::diffusion::bound::variational_bound;
use crate::diffusion::{ddim, ddpm, q_sample, DdimOptions, DdpmOptions, Schedule, Variance};
use crate::error::{Error, Result};
use crate::io::npy::{DType as NpyDType, Elements, NpyReader};
use crate::io::safetensors::TensorMap;
use crate::io::tensor_file::Peeked;
use crate::io::InputPath;
use crate::models::ddpm::{DdpmConfig, UNet};
use crate::models::{ModelConfig, Network};
use crate::nn::params::{ParamSet, Params};
use crate::rng::{Rng, RowStreams, Stream};
use crate::tasks::prior::SampleClasses;
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
        let y = self.training_labels(batch, rng)?;
        let loss = (self.model.forward(&x_t, &t, y.as_ref(), Some(rng))? - eps)?.sqr()?.mean_all()?;
        Ok(StepOutput { metrics: vec![("mse".into(), scalar(&loss)?)], loss })
    }

    /// One step of the moving average: ema = d ema + (1 - d) weights.
    fn after_step(&mut self) -> Result<()> {
        let d = self.ema_decay();
        for (name, var) in self.params.trainable() {
            let avg = self.ema.get_mut(name).ok_or_else(|| Error::config(format!("no average of '{name}'")))?;
            // Detached: the average of a variable would record a graph that keeps every
            // earlier average alive.
            *avg = ((&*avg * d)? + (var.as_tensor().detach() * (1.0 - d))?)?;
        }
        self.ema_updates += 1;
        Ok(())
    }

    /// Held-out eps-MSE with fixed noise, of the raw weights (`mse`) and of their average
    /// (`ema_mse`, the model file's).
    fn evaluate(&self, data: &dyn Dataset) -> Result<Metrics> {
        let device = self.params.device();
        let (raw, ema) = (UNet::frozen_copy(self.model.config.clone(), &self.params)?, self.ema_model(&device)?);
        Ok(vec![
            ("mse".into(), eps_mse(&raw, &self.schedule, data, &device)?),
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
        // Under today's names, as the parameters are (a state of an earlier release).
        let saved: BTreeMap<String, Tensor> =
            state.iter().filter_map(|(k, v)| Some((k.strip_prefix("ema.")?.to_string(), v.clone()))).collect();
        let saved = self.config().upgrade_tensors(saved)?;
        for (k, avg) in self.ema.iter_mut() {
            let saved =
                saved.get(k).ok_or_else(|| Error::config(format!("the training state has no average of '{k}'")))?;
            *avg = saved.to_device(&device)?;
        }
        let n = state.get("ema_updates").ok_or_else(|| Error::config("the training state has no EMA step count"))?;
        self.ema_updates = n.to_dtype(DType::I64)?.to_vec1::<i64>()?.first().copied().unwrap_or(0).max(0) as u64;
        Ok(())
    }
}

impl DdpmTask {
    /// A class-conditional model's labels of `batch`, each dropped to the null class with
    /// probability `p_uncond` (one draw per image, after the step's t and noise); `None`
    /// for an unconditional model.
    fn training_labels(&self, batch: &Batch, rng: &mut Rng) -> Result<Option<Tensor>> {
        let cfg = &self.model.config;
        let Some(k) = cfg.num_class_embeds else { return Ok(None) };
        let y = batch.y.as_ref().ok_or_else(|| Error::config("a class-conditional U-Net trains on labelled images"))?;
        let null = k as u32 - 1;
        let labels = y.to_vec1::<u32>()?;
        if let Some(bad) = labels.iter().find(|&&l| l >= null) {
            return Err(Error::config(format!("label {bad} is not one of the model's {null} classes")));
        }
        let labels: Vec<u32> =
            labels.into_iter().map(|l| if rng.inner().random::<f64>() < cfg.p_uncond { null } else { l }).collect();
        Ok(Some(Tensor::from_vec(labels, y.dims(), y.device())?))
    }

    /// A U-Net with the averaged weights.
    fn ema_model(&self, device: &Device) -> Result<UNet> {
        UNet::frozen(self.model.config.clone(), self.ema.clone(), "the weight average", device)
    }
}

/// Mean squared error of the predicted noise over `data`, without dropout, with t and eps
/// drawn from fixed streams (so epochs and runs compare).
pub fn eps_mse(model: &UNet, schedule: &Schedule, data: &dyn Dataset, device: &Device) -> Result<f64> {
    let rows: Vec<usize> = (0..data.len()).collect();
    let mut total = 0.0;
    for (i, chunk) in rows.chunks(EVAL_BATCH).enumerate() {
        let mut rng = Rng::new(0, Stream::Eval, i as u64);
        let batch = data.batch(chunk, device)?;
        let x0 = to_model_range(&batch.x)?;
        let t: Vec<usize> = chunk.iter().map(|_| rng.inner().random_range(0..schedule.len())).collect();
        let eps = rng.normal(x0.dims(), device)?;
        // A class-conditional model is scored on the images' classes where they have them.
        let y = if model.config.num_class_embeds.is_some() { batch.y.as_ref() } else { None };
        let pred = model.forward(&q_sample(schedule, &x0, &t, &eps)?, &t, y, None)?;
        total += scalar(&(pred - eps)?.sqr()?.mean_all()?)? * chunk.len() as f64;
    }
    Ok(total / data.len().max(1) as f64)
}

/// What `ddpm-eval` measures, and how.
pub struct BoundOptions {
    /// The variance of p(x_{t-1} | x_t): the sampler's choice.
    pub variance: Variance,
    /// Clip the predicted x_0 to [-1, 1], as the reference evaluation does.
    pub clip: bool,
    pub seed: u64,
    /// Images per network call; changes no figure.
    pub batch_size: usize,
}

/// The variational bound ([`variational_bound`]) of the images of `data`, in bits per
/// dimension: the mean over images of the whole bound, of its prior, decoder and KL parts,
/// and of each step's term (`terms_bpd[t]`, t = 0..T, for a plot of L_t against t). Image
/// i's noise comes from the stream (seed, Eval, i). With `progress`, a line on stderr.
pub fn bound_report(
    model: &UNet,
    data: &dyn Dataset,
    opts: &BoundOptions,
    device: &Device,
    progress: bool,
) -> Result<serde_json::Map<String, serde_json::Value>> {
    if data.is_empty() {
        return Err(Error::bad_input(data.name(), "holds no images to evaluate"));
    }
    if opts.batch_size == 0 {
        return Err(Error::config("--batch-size must be at least 1"));
    }
    let cfg = &model.config;
    let schedule = Schedule::new(cfg.schedule, cfg.timesteps);
    // A class-conditional model's bound is its unconditional one, with the null class.
    let predictor = |x: &Tensor, t: usize| Ok(model.forward(x, &vec![t; x.dim(0)?], None, None)?.detach());
    let show = progress && std::io::stderr().is_terminal();
    let (n, steps) = (data.len(), schedule.len());
    let batches = n.div_ceil(opts.batch_size);
    let (mut prior, mut terms, mut totals) = (0.0, vec![0.0; steps], 0.0);
    for (b, start) in (0..n).step_by(opts.batch_size).enumerate() {
        let rows: Vec<usize> = (start..(start + opts.batch_size).min(n)).collect();
        let x0 = to_model_range(&data.batch(&rows, device)?.x)?;
        let mut noise = RowStreams::new(opts.seed, Stream::Eval, start..start + rows.len());
        let mut done = 0;
        let mut observe = |_: usize| {
            done += 1;
            if show {
                eprint!("\r\x1b[2Kbatch {}/{batches}: step {done}/{steps}", b + 1);
            }
        };
        let bound = variational_bound(&predictor, &schedule, &x0, opts.variance, opts.clip, &mut noise, &mut observe)?;
        prior += bound.prior.iter().sum::<f64>();
        for (sum, term) in terms.iter_mut().zip(&bound.terms) {
            *sum += term.iter().sum::<f64>();
        }
        totals += bound.totals().iter().sum::<f64>();
    }
    if show {
        eprint!("\r\x1b[2K");
    }
    // Nats per image to bits per dimension, averaged over the images.
    let scale = 1.0 / (n as f64 * cfg.geometry().pixels() as f64 * std::f64::consts::LN_2);
    let terms: Vec<f64> = terms.iter().map(|t| t * scale).collect();
    let mut report = serde_json::Map::new();
    report.insert("bits_per_dim".into(), json!(totals * scale));
    report.insert("prior_bpd".into(), json!(prior * scale));
    report.insert("decoder_bpd".into(), json!(terms[0]));
    report.insert("kl_bpd".into(), json!(terms[1..].iter().sum::<f64>()));
    report.insert("images".into(), json!(n));
    report.insert("timesteps".into(), json!(steps));
    report.insert("terms_bpd".into(), json!(terms));
    Ok(report)
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
    /// Samples per network call; changes no sample.
    pub batch_size: usize,
    /// The rows of the N samples (or of the N images of x_t) to run.
    pub shard: Shard,
    /// The classes of a class-conditional model's samples; `None` there is equal blocks of
    /// its classes over the N samples, in order.
    pub classes: Option<SampleClasses>,
    /// Classifier-free guidance W (Ho & Salimans 2022, their eq. 6):
    /// eps = (1 + W) eps(x, c) - W eps(x, null). 0 is the conditional model alone; diffusers'
    /// guidance_scale s is 1 + W.
    pub guidance: f64,
}

/// The reverse process from a start to x_0, checked and ready: [`run`](Self::run) draws
/// the samples batch by batch, so memory does not grow with their number.
pub struct Denoising<'a> {
    model: &'a UNet,
    schedule: Schedule,
    opts: &'a DenoiseOptions,
    /// x_t from a file, when the start is one, read batch by batch.
    given: Option<GivenX>,
    device: Device,
    /// The rows of the whole run this one samples.
    rows: Range<usize>,
    /// The class of each sample, for a class-conditional model.
    classes: Option<SampleClasses>,
    /// The number of samples.
    pub n: usize,
}

impl<'a> Denoising<'a> {
    /// Checks the options and the start (the header of a file, whose rows of the shard are
    /// then the only ones read).
    pub fn new(model: &'a UNet, start: &Start, opts: &'a DenoiseOptions, device: &Device) -> Result<Self> {
        let cfg = &model.config;
        let schedule = Schedule::new(cfg.schedule, cfg.timesteps);
        if opts.from_t >= schedule.len() {
            return Err(Error::config(format!("--from-t {} is outside [0, {}]", opts.from_t, schedule.len() - 1)));
        }
        if opts.batch_size == 0 {
            return Err(Error::config("--batch-size must be at least 1"));
        }
        // `total`: the samples of the whole run, of which the shard's `rows` are drawn.
        let (mut given, total) = match start {
            Start::Input(path) => {
                let x = GivenX::open(path, cfg.geometry())?;
                let total = x.reader.header().rows();
                (Some(x), total)
            }
            Start::Noise(n) => (None, *n),
        };
        let rows = opts.shard.rows(total);
        if let Some(x) = &mut given {
            x.reader.skip_rows(rows.start)?;
        }
        let classes = match (cfg.classes(), &opts.classes) {
            (Some(k), classes) => {
                let classes = classes.clone().unwrap_or(SampleClasses::Blocks { n: total, classes: k });
                classes.check(k)?;
                if let SampleClasses::Given(labels) = &classes {
                    if labels.len() != total {
                        return Err(Error::config(format!("{} labels for {total} samples", labels.len())));
                    }
                }
                Some(classes)
            }
            (None, Some(_)) => return Err(Error::config("--class and --labels need a class-conditional model")),
            (None, None) => None,
        };
        if !(opts.guidance >= 0.0 && opts.guidance.is_finite()) {
            return Err(Error::config(format!("--guidance {} must be 0 or more", opts.guidance)));
        }
        if opts.guidance != 0.0 && classes.is_none() {
            return Err(Error::config("--guidance needs a class-conditional model (ddpm-train on labelled data)"));
        }
        Ok(Denoising { model, schedule, opts, given, device: device.clone(), n: rows.len(), rows, classes })
    }

    /// The classes of the samples of this run (its shard's), for a class-conditional model.
    pub fn classes(&self) -> Option<Vec<u32>> {
        self.classes.as_ref().map(|c| c.rows(self.rows.start, self.rows.len()))
    }

    /// The size of the images.
    pub fn geometry(&self) -> crate::data::Geometry {
        self.model.config.geometry()
    }

    /// Runs the reverse process and hands each batch of images, in [0,1] [B, C, H, W], to
    /// `each` in order. Sample i draws its starting noise (from pure noise) and then its
    /// noise of every step from the stream (seed, Sample, i), so neither the batch size nor
    /// the shard changes a sample. With `progress`, a line on stderr.
    pub fn run(&mut self, progress: bool, mut each: impl FnMut(Tensor) -> Result<()>) -> Result<()> {
        let (opts, g) = (self.opts, self.model.config.geometry());
        let steps = match opts.sampler {
            Sampler::Ddpm(_) => opts.from_t + 1,
            Sampler::Ddim { steps, .. } => crate::diffusion::sampler::ddim_timesteps(opts.from_t, steps).len(),
        };
        let batches = self.n.div_ceil(opts.batch_size);
        let show = progress && std::io::stderr().is_terminal();
        let (model, w) = (self.model, opts.guidance);
        for (b, start) in self.rows.clone().step_by(opts.batch_size).enumerate() {
            let rows = opts.batch_size.min(self.rows.end - start);
            let y = match &self.classes {
                Some(c) => Some(Tensor::from_vec(c.rows(start, rows), rows, &self.device)?),
                None => None,
            };
            // Detached: the parameters are variables, so each prediction would otherwise keep
            // its step's whole graph alive, and through x every earlier step's. With guidance
            // the conditional and null-class predictions come from one call on both halves.
            let predictor = |x: &Tensor, t: usize| -> Result<Tensor> {
                let n = x.dim(0)?;
                match &y {
                    Some(y) if w != 0.0 => {
                        let labels = Tensor::cat(&[y, &model.null_labels(n, x.device())?], 0)?;
                        let both = model.forward(&Tensor::cat(&[x, x], 0)?, &vec![t; 2 * n], Some(&labels), None)?;
                        let both = both.detach();
                        Ok(((both.narrow(0, 0, n)? * (1.0 + w))? - (both.narrow(0, n, n)? * w)?)?)
                    }
                    y => Ok(model.forward(x, &vec![t; n], y.as_ref(), None)?.detach()),
                }
            };
            let mut noise = RowStreams::new(opts.seed, Stream::Sample, start..start + rows);
            let x_t = match &mut self.given {
                Some(x) => x.read(rows, g, &self.device)?,
                None => noise.normal(&[rows, g.channels, g.height, g.width], &self.device)?,
            };
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
                    ddpm(&predictor, &self.schedule, x_t, o, &mut noise, &mut observe)?
                }
                Sampler::Ddim { steps, eta } => {
                    let o = DdimOptions { from_t: opts.from_t, steps, eta, clip: opts.clip };
                    ddim(&predictor, &self.schedule, x_t, o, &mut noise, &mut observe)?
                }
            };
            each(((x0 + 1.0)? * 0.5)?.clamp(0f32, 1f32)?)?;
        }
        if show {
            eprint!("\r\x1b[2K");
        }
        Ok(())
    }
}

/// x_t from a file, read batch by batch: f32 or f64 [N, C, H, W] (or [N, H, W] for one
/// channel) of the model's size.
struct GivenX {
    reader: NpyReader<Peeked>,
    name: String,
}

impl GivenX {
    /// Opens the file and checks its shape and dtype.
    fn open(path: &InputPath, g: crate::data::Geometry) -> Result<Self> {
        let reader = open_npy(path)?;
        let want = format!(
            "[N, {}, {}, {}] floats (x_t in the model's space, as ddpm-noise writes)",
            g.channels, g.height, g.width
        );
        let header = reader.header();
        let shape_ok = match *header.shape.as_slice() {
            [_, c, h, w] => (c, h, w) == (g.channels, g.height, g.width),
            [_, h, w] => g.channels == 1 && (h, w) == (g.height, g.width),
            _ => false,
        };
        if !shape_ok {
            return Err(Error::bad_input(path, format!("has shape {:?}, expected {want}", header.shape)));
        }
        if !matches!(header.dtype, NpyDType::F32 | NpyDType::F64) {
            return Err(Error::bad_input(path, format!("has dtype {}, expected {want}", header.dtype.name())));
        }
        Ok(GivenX { reader, name: path.to_string() })
    }

    /// The next `rows` images, [rows, C, H, W]; a non-finite value is an error.
    fn read(&mut self, rows: usize, g: crate::data::Geometry, device: &Device) -> Result<Tensor> {
        let a = self.reader.read_rows(rows)?.ok_or_else(|| Error::bad_input(&self.name, "ended early"))?;
        let v: Vec<f32> = match a.data {
            Elements::F32(v) => v,
            Elements::F64(v) => v.into_iter().map(|x| x as f32).collect(),
            other => return Err(Error::bad_input(&self.name, format!("has dtype {}", other.dtype().name()))),
        };
        if let Some(bad) = v.iter().find(|x| !x.is_finite()) {
            return Err(Error::bad_input(&self.name, format!("holds a non-finite value ({bad})")));
        }
        Ok(Tensor::from_vec(v, (rows, g.channels, g.height, g.width), device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ImageSet;
    use crate::models::Network;

    /// A U-Net small enough for unit tests: 8 channels, two levels, 50 steps.
    fn tiny() -> DdpmConfig {
        use crate::models::ddpm::{DownBlockType, UpBlockType};
        DdpmConfig {
            block_out_channels: vec![8, 16],
            layers_per_block: 1,
            down_block_types: vec![DownBlockType::Plain, DownBlockType::Attn],
            up_block_types: vec![UpBlockType::Attn, UpBlockType::Plain],
            norm_num_groups: 4,
            image: crate::data::Geometry { channels: 1, height: 32, width: 32 },
            timesteps: 50,
            ..DdpmConfig::ddpm_unet_mnist()
        }
    }

    fn task() -> DdpmTask {
        DdpmTask::new(tiny(), Params::init(0, &Device::Cpu)).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn the_average_decay_warms_up_as_diffusers_does() {
        let mut t = task();
        assert!((t.ema_decay() - 0.1).abs() < 1e-12);
        t.ema_updates = 90;
        assert!((t.ema_decay() - 91.0 / 100.0).abs() < 1e-12);
        t.ema_updates = 1_000_000_000;
        assert_eq!(t.ema_decay(), 0.9999);
    }

    #[test]
    fn an_averaging_step_mixes_the_average_with_the_weights() {
        let mut t = task();
        let (name, var) = t.params.trainable().next().map(|(n, v)| (n.clone(), v.clone())).unwrap();
        let before = values(&t.ema[&name]);
        var.set(&(var.as_tensor() + 1.0).unwrap()).unwrap();
        t.after_step().unwrap();
        // decay 0.1 at the first step: 0.1 * old + 0.9 * (old + 1) = old + 0.9.
        for (a, b) in values(&t.ema[&name]).iter().zip(&before) {
            assert!((a - (b + 0.9)).abs() < 1e-5, "{a} vs {b} + 0.9");
        }
        assert_eq!(t.ema_updates, 1);
        // The average records no graph: one that did would keep every earlier average alive
        // (memory grew by three copies of the network per step).
        t.after_step().unwrap();
        assert!(t.ema.values().all(|avg| !avg.track_op()), "the average records a graph");
        // The model file holds the average, not the raw weights.
        assert_eq!(values(&t.model_tensors().unwrap().tensors[&name]), values(&t.ema[&name]));
    }

    #[test]
    fn the_training_state_restores_the_average_and_its_step_count() {
        let mut t = task();
        for var in t.params.trainable().map(|(_, v)| v.clone()).collect::<Vec<_>>() {
            var.set(&(var.as_tensor() * 0.5).unwrap()).unwrap();
        }
        t.after_step().unwrap();
        t.after_step().unwrap();
        let state = t.extra_state().unwrap();
        let mut fresh = task();
        fresh.load_extra_state(&state).unwrap();
        assert_eq!(fresh.ema_updates, 2);
        for (k, v) in &t.ema {
            assert_eq!(values(&fresh.ema[k]), values(v), "{k}");
        }
        let mut missing = state.clone();
        missing.remove("ema_updates");
        assert!(task().load_extra_state(&missing).unwrap_err().to_string().contains("EMA step count"));
    }

    #[test]
    fn the_held_out_error_uses_fixed_noise_and_the_averaged_weights() {
        let t = task();
        let data = ImageSet::bundled(crate::data::Bundled::Mnist, crate::data::Split::Test, tiny().geometry())
            .unwrap()
            .head(8);
        let a = t.evaluate(&data).unwrap();
        let b = t.evaluate(&data).unwrap();
        assert_eq!(a, b);
        // Fresh: the average is the initialisation, so both errors agree; an untrained
        // network predicts eps ~ N(0, I) badly, so the error is near or above 1.
        assert_eq!(a[0].1, a[1].1);
        assert!(a[0].1 > 0.5, "{a:?}");
    }

    /// Every image of a [`Denoising`] in one tensor.
    fn denoise(model: &UNet, start: &Start, opts: &DenoiseOptions, device: &Device) -> Result<Tensor> {
        let mut run = Denoising::new(model, start, opts, device)?;
        let mut batches = vec![Tensor::zeros((0, 1, 32, 32), DType::F32, device)?];
        run.run(false, |x| {
            batches.push(x);
            Ok(())
        })?;
        Ok(Tensor::cat(&batches, 0)?)
    }

    #[test]
    fn sampling_is_seeded_batched_and_checked() {
        let t = task();
        let opts = |batch_size, seed| DenoiseOptions {
            sampler: Sampler::Ddim { steps: 3, eta: 0.0 },
            from_t: 49,
            clip: true,
            seed,
            batch_size,
            shard: Shard::default(),
            classes: None,
            guidance: 0.0,
        };
        let device = Device::Cpu;
        let a = denoise(&t.model, &Start::Noise(3), &opts(2, 1), &device).unwrap();
        assert_eq!(a.dims(), [3, 1, 32, 32]);
        let v = values(&a);
        assert!(v.iter().all(|x| (0.0..=1.0).contains(x)));
        assert_eq!(v, values(&denoise(&t.model, &Start::Noise(3), &opts(2, 1), &device).unwrap()));
        assert_ne!(v, values(&denoise(&t.model, &Start::Noise(3), &opts(2, 2), &device).unwrap()));
        assert_eq!(denoise(&t.model, &Start::Noise(0), &opts(2, 1), &device).unwrap().dims(), [0, 1, 32, 32]);
        let late = DenoiseOptions { from_t: 50, ..opts(2, 1) };
        let e = denoise(&t.model, &Start::Noise(1), &late, &device).unwrap_err().to_string();
        assert!(e.contains("--from-t 50 is outside [0, 49]"), "{e}");
        let e = denoise(&t.model, &Start::Noise(1), &opts(0, 1), &device).unwrap_err().to_string();
        assert!(e.contains("--batch-size"), "{e}");
    }

    /// A sample is the same bits in a batch of any size and in any shard: ancestral
    /// sampling (noise at every step) over 5 samples, in batches of 5, 2 and 1, and as shards
    /// 0..3 of 3 in batches of 2.
    #[test]
    fn neither_the_batch_size_nor_the_shard_changes_a_sample() {
        let t = task();
        let opts = |batch_size, shard| DenoiseOptions {
            sampler: Sampler::Ddpm(Variance::Beta),
            from_t: 4,
            clip: false,
            seed: 3,
            batch_size,
            shard,
            classes: None,
            guidance: 0.0,
        };
        let device = Device::Cpu;
        let whole = values(&denoise(&t.model, &Start::Noise(5), &opts(5, Shard::default()), &device).unwrap());
        for batch_size in [2, 1] {
            let v = values(&denoise(&t.model, &Start::Noise(5), &opts(batch_size, Shard::default()), &device).unwrap());
            assert!(v.iter().zip(&whole).all(|(a, b)| a.to_bits() == b.to_bits()), "batches of {batch_size}");
        }
        let shards: Vec<f32> = (0..3)
            .flat_map(|index| {
                let shard = Shard { index, count: 3 };
                values(&denoise(&t.model, &Start::Noise(5), &opts(2, shard), &device).unwrap())
            })
            .collect();
        assert!(shards.iter().zip(&whole).all(|(a, b)| a.to_bits() == b.to_bits()) && shards.len() == whole.len());
    }

    #[test]
    fn the_network_round_trips_through_its_model_file_tensors() {
        let t = task();
        let mut p = Params::load(t.model_tensors().unwrap().tensors, "test", &Device::Cpu);
        let net = UNet::init_with(tiny(), &mut p).unwrap();
        p.finish().unwrap();
        let x = Tensor::zeros((1, 1, 32, 32), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(
            values(&net.forward(&x, &[3], None, None).unwrap()),
            values(&t.model.forward(&x, &[3], None, None).unwrap())
        );
    }
}
