//! `ddpm-noise`, `ddpm-denoise` and `ddpm-eval`: the forward process on images, the reverse
//! process from noise (or from x_t) with a trained noise-prediction U-Net, and its
//! variational bound on held-out images.

use std::io::Write;

use candle_core::{Device, Tensor};

use crate::checkpoint::{ModelSource, PlainConfig};
use crate::data::pack::Images;
use crate::data::{DataSpec, ImageSet, PixelRange, Shard, Split};
use crate::diffusion::forward::{noise, NoiseOptions, NoiseSteps};
use crate::diffusion::sampler::check_ddim_steps;
use crate::diffusion::{ScheduleKind, Variance};
use crate::error::{Error, Result};
use crate::io::npy::{DType as NpyDType, NpyWriter};
use crate::io::{check_io, OutputPath};
use crate::models::ddpm::{DdpmConfig, UNet};
use crate::models::{ModelConfig, Network};
use crate::tasks::ddpm::{bound_report, BoundOptions, DenoiseOptions, Denoising, Sampler, Start};
use crate::tasks::prior::SampleClasses;
use crate::tools::ImageSource;

/// Where `ddpm-noise` takes its diffusion (schedule, T and image size) from.
pub enum Diffusion {
    /// A trained model's.
    Model(ModelSource),
    /// A preset's or a `--unet-config`'s, with the schedule and T changed where given.
    Network { network: PlainConfig, schedule: Option<ScheduleKind>, timesteps: Option<usize> },
}

impl Diffusion {
    fn config(&self) -> Result<DdpmConfig> {
        match self {
            Diffusion::Model(source) => source.checkpoint(&Device::Cpu)?.config_of::<UNet>(),
            Diffusion::Network { network, schedule, timesteps } => {
                let Some(c) = UNet::config_of(network.config.clone()) else {
                    return Err(Error::config(format!(
                        "ddpm-noise takes a {} network; {} is a {}",
                        UNet::FAMILY,
                        network.flag,
                        network.config.family()
                    )));
                };
                let c = DdpmConfig {
                    schedule: schedule.unwrap_or(c.schedule),
                    timesteps: timesteps.unwrap_or(c.timesteps),
                    ..c
                };
                c.validate()?;
                Ok(c)
            }
        }
    }
}

/// What `ddpm-noise` noises, and how.
pub struct DdpmNoise {
    pub images: ImageSource,
    pub diffusion: Diffusion,
    pub steps: NoiseSteps,
    /// A .safetensors of `x_t`, `eps` and `t` instead of an .npy of x_t.
    pub with_eps: bool,
    pub clip: bool,
    pub seed: u64,
    pub batch_size: usize,
    pub output: OutputPath,
    pub device: Device,
}

/// Writes x_t of every image (see [`noise`]).
pub fn ddpm_noise(r: &DdpmNoise) -> Result<()> {
    let model = match &r.diffusion {
        Diffusion::Model(source) => Some(&source.path),
        Diffusion::Network { .. } => None,
    };
    check_io(&[("--model", model), ("INPUT", r.images.spec.file())], &[("-o", Some(&r.output))])?;
    if r.batch_size == 0 {
        return Err(Error::config("--batch-size must be at least 1"));
    }
    let config = r.diffusion.config()?;
    let opts = NoiseOptions {
        schedule: config.schedule,
        timesteps: config.timesteps,
        steps: r.steps.clone(),
        with_eps: r.with_eps,
        clip: r.clip,
        seed: r.seed,
    };
    // Without a model, the preset fitted to the images (digits padded to 32x32, colour kept).
    let mut images = match &r.diffusion {
        Diffusion::Model(_) => r.images.open(Some(config.geometry()), r.batch_size)?,
        Diffusion::Network { .. } => {
            let images = r.images.open(None, r.batch_size)?;
            let fitted = ModelConfig::Ddpm(config.clone()).fitted_to(images.geometry());
            let fitted = fitted.map_err(|e| r.images.spec.blame(e))?.geometry()?;
            images.fitted(fitted)?
        }
    };
    let geometry = images.geometry();
    noise(&mut images, geometry, &r.output, &opts, &r.device)
}

/// Where `ddpm-denoise` writes its images.
pub enum DenoiseOutput {
    /// .npy f32 [N, C, H, W] in [0,1].
    Array(OutputPath),
    /// A square PNG grid, each pixel enlarged to 2x2.
    Png(OutputPath),
}

/// The reverse process `ddpm-denoise` runs, as asked for: DDIM's network calls are checked
/// against the steps they spread over once the model says how many there are.
#[derive(Debug, Clone, Copy)]
pub enum SamplerChoice {
    Ddpm(Variance),
    /// `steps`: `None` for [`DEFAULT_DDIM_STEPS`], or one per step when there are fewer.
    Ddim {
        steps: Option<usize>,
        eta: f64,
    },
}

/// DDIM's network calls unless `--steps` says otherwise.
pub const DEFAULT_DDIM_STEPS: usize = 50;

impl SamplerChoice {
    /// The sampler from step `from_t`; an error when DDIM is asked for more calls than steps.
    fn sampler(self, from_t: usize) -> Result<Sampler> {
        Ok(match self {
            SamplerChoice::Ddpm(variance) => Sampler::Ddpm(variance),
            SamplerChoice::Ddim { steps: None, eta } => {
                Sampler::Ddim { steps: DEFAULT_DDIM_STEPS.min(from_t + 1), eta }
            }
            SamplerChoice::Ddim { steps: Some(steps), eta } => {
                check_ddim_steps(from_t, steps)?;
                Sampler::Ddim { steps, eta }
            }
        })
    }
}

/// What `ddpm-denoise` samples.
pub struct DdpmDenoise {
    pub model: ModelSource,
    pub start: Start,
    pub sampler: SamplerChoice,
    /// The step of the start; `None` for T - 1 (pure noise).
    pub from_t: Option<usize>,
    pub clip: bool,
    pub seed: u64,
    pub batch_size: usize,
    /// The samples (or images of x_t) to run, of all.
    pub shard: Shard,
    /// A class-conditional model's classes (default: equal blocks) and guidance.
    pub classes: Option<SampleClasses>,
    pub guidance: f64,
    /// Where to write the class of each sample (.npy u32 [N]), for a class-conditional model.
    pub labels_out: Option<OutputPath>,
    pub output: DenoiseOutput,
    pub device: Device,
}

/// Runs the reverse process and writes the images.
pub fn ddpm_denoise(r: &DdpmDenoise) -> Result<()> {
    let input = match &r.start {
        Start::Input(path) => Some(path),
        Start::Noise(_) => None,
    };
    let output = match &r.output {
        DenoiseOutput::Array(out) => ("-o", Some(out)),
        DenoiseOutput::Png(png) => ("--png", Some(png)),
    };
    check_io(
        &[("--model", Some(&r.model.path)), ("INPUT", input)],
        &[output, ("--labels-out", r.labels_out.as_ref())],
    )?;
    let model: UNet = r.model.network(&r.device)?;
    if r.labels_out.is_some() && model.config.num_class_embeds.is_none() {
        return Err(Error::config("--labels-out: an unconditional model's samples have no classes"));
    }
    let from_t = r.from_t.unwrap_or(model.config.timesteps - 1);
    let opts = DenoiseOptions {
        sampler: r.sampler.sampler(from_t)?,
        from_t,
        clip: r.clip,
        seed: r.seed,
        batch_size: r.batch_size,
        shard: r.shard,
        classes: r.classes.clone(),
        guidance: r.guidance,
    };
    let mut run = Denoising::new(&model, &r.start, &opts, &r.device)?;
    // Written once the samples are: a failed run leaves neither file.
    let labels = run.classes();
    match &r.output {
        DenoiseOutput::Png(png) => {
            if run.n > MAX_PNG_TILES {
                return Err(Error::config(format!(
                    "--png: a grid of {} images is too large (at most {MAX_PNG_TILES}); write an .npy with -o instead",
                    run.n
                )));
            }
            let mut batches = Vec::new();
            run.run(true, |x| {
                batches.push(x);
                Ok(())
            })?;
            let g = run.geometry();
            batches.push(Tensor::zeros((0, g.channels, g.height, g.width), candle_core::DType::F32, &r.device)?);
            write_png(&Tensor::cat(&batches, 0)?, png, 2)?;
        }
        DenoiseOutput::Array(out) => write_npy(&mut run, out)?,
    }
    match (&r.labels_out, labels) {
        (Some(path), Some(labels)) => {
            let mut out = path.create()?;
            let mut w = NpyWriter::new(&mut out, NpyDType::I64, &[labels.len()]).map_err(|e| Error::io(path, e))?;
            w.write_rows(&labels.iter().map(|&l| i64::from(l)).collect::<Vec<_>>()).map_err(|e| Error::io(path, e))?;
            w.finish().map_err(|e| Error::io(path, e))?;
            out.finish()
        }
        _ => Ok(()),
    }
}

/// What `ddpm-eval` evaluates, and how.
pub struct DdpmEval {
    pub model: ModelSource,
    /// Held-out images; the bundled set's test split unless another split is named.
    pub data: DataSpec,
    pub split: Option<Split>,
    pub range: PixelRange,
    /// Evaluate the first N images only.
    pub limit: Option<usize>,
    pub bound: BoundOptions,
    pub output: OutputPath,
    pub device: Device,
}

/// Writes one JSON object: the variational bound in bits per dimension, its parts, and
/// each step's term ([`bound_report`]).
pub fn ddpm_eval(r: &DdpmEval) -> Result<()> {
    check_io(&[("--model", Some(&r.model.path)), ("--data", r.data.file())], &[("-o", Some(&r.output))])?;
    let model: UNet = r.model.network(&r.device)?;
    let split = Some(r.split.unwrap_or(Split::Test)).filter(|_| matches!(r.data, DataSpec::Bundled(_)));
    let data = ImageSet::load(&r.data, split, None, r.range, Some(model.config.geometry()))?;
    let data = match r.limit {
        Some(n) => data.head(n),
        None => data,
    };
    let report = bound_report(&model, &data, &r.bound, &r.device, true)?;
    let mut out = r.output.create()?;
    writeln!(out, "{}", serde_json::Value::Object(report)).map_err(|e| Error::io(&r.output, e))?;
    out.finish()
}

/// The most images `--png` puts in one grid: a grid is built whole in memory.
const MAX_PNG_TILES: usize = 10_000;

/// The images as .npy f32 [N, C, H, W] in [0,1], written batch by batch.
fn write_npy(run: &mut Denoising, out: &OutputPath) -> Result<()> {
    let g = run.geometry();
    let shape = [run.n, g.channels, g.height, g.width];
    let mut w = NpyWriter::new(out.create()?, NpyDType::F32, &shape).map_err(|e| Error::io(out, e))?;
    run.run(true, |x| w.write_rows(&x.flatten_all()?.to_vec1::<f32>()?).map_err(|e| Error::io(out, e)))?;
    w.finish().map_err(|e| Error::io(out, e))?.finish()
}

/// Images in [0,1] [N, C, H, W] as a square PNG grid.
fn write_png(x: &Tensor, out: &OutputPath, scale: usize) -> Result<()> {
    let (count, channels, height, width) = x.dims4()?;
    let pixels = x.flatten_all()?.to_vec1::<f32>()?.into_iter().map(crate::data::convert::unit_to_u8).collect();
    let images = Images { count, channels, height, width, pixels };
    let opts = crate::data::grid::GridOptions { cols: None, pad: 2, scale };
    out.write_all(&crate::data::grid::grid_png(&images, &opts, &out.to_string())?)
}
