//! The forward process q(x_t | x_0) in closed form: x_t = sqrt(abar_t) x_0 +
//! sqrt(1 - abar_t) eps (Ho et al. 2020, eq. 4), for training and for `ddpm-noise`.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use rand::Rng as _;
use safetensors::Dtype;

use crate::data::stream::ImageStream;
use crate::data::Geometry;
use crate::diffusion::{Schedule, ScheduleKind};
use crate::error::{Error, Result};
use crate::io::npy::{DType as NpyDType, NpyWriter};
use crate::io::safetensors::{Entry, SafetensorsWriter};
use crate::io::{Output, OutputPath};
use crate::rng::{Rng, Stream};

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
    geometry: Geometry,
    out: &OutputPath,
    opts: &NoiseOptions,
    device: &Device,
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
    let mut sink = NoiseSink::create(out, &dims, opts)?;
    let mut index = 0u64;
    while let Some(batch) = images.next_batch(device)? {
        let x0 = batch.x.affine(2.0, -1.0)?;
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
            let e = rng.normal(&[px], &Device::Cpu)?.to_vec1::<f32>()?;
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
        let eps = Tensor::from_vec(eps, x0.shape(), device)?;
        let mut x_t = q_sample(&schedule, &x0, &t, &eps)?;
        if opts.clip {
            x_t = x_t.clamp(-1f32, 1f32)?;
        }
        sink.write(&x_t, &eps, &t).map_err(|e| Error::io(out, e))?;
    }
    sink.finish(out)
}

/// Where `ddpm-noise` writes, batch by batch: an `.npy` of x_t, or with `--with-eps` a
/// `.safetensors` of `x_t`, `eps` and `t` (its tensors in that order).
enum NoiseSink {
    Npy(NpyWriter<Output>),
    Safetensors(SafetensorsWriter<Output>),
}

impl NoiseSink {
    fn create(out: &OutputPath, dims: &[usize; 4], opts: &NoiseOptions) -> Result<Self> {
        let file = out.create()?;
        let sink = if opts.with_eps {
            let kind = match opts.schedule {
                ScheduleKind::Linear => "linear",
                ScheduleKind::Cosine => "cosine",
            };
            let metadata = BTreeMap::from([
                ("genimg.schedule".to_string(), kind.to_string()),
                ("genimg.timesteps".to_string(), opts.timesteps.to_string()),
            ]);
            let entries = vec![
                Entry::new("x_t", Dtype::F32, dims.to_vec()),
                Entry::new("eps", Dtype::F32, dims.to_vec()),
                Entry::new("t", Dtype::I64, vec![dims[0]]),
            ];
            SafetensorsWriter::new(file, metadata, entries).map(NoiseSink::Safetensors)
        } else {
            NpyWriter::new(file, NpyDType::F32, dims).map(NoiseSink::Npy)
        };
        sink.map_err(|e| Error::io(out, e))
    }

    fn write(&mut self, x_t: &Tensor, eps: &Tensor, t: &[usize]) -> std::io::Result<()> {
        let floats = |x: &Tensor| x.flatten_all().and_then(|x| x.to_vec1::<f32>()).map_err(std::io::Error::other);
        match self {
            NoiseSink::Npy(w) => w.write_rows(&floats(x_t)?),
            NoiseSink::Safetensors(w) => {
                let le = |v: Vec<f32>| -> Vec<u8> { v.into_iter().flat_map(f32::to_le_bytes).collect() };
                w.append(0, &le(floats(x_t)?))?;
                w.append(1, &le(floats(eps)?))?;
                w.append(2, &t.iter().flat_map(|&t| (t as i64).to_le_bytes()).collect::<Vec<u8>>())
            }
        }
    }

    fn finish(self, out: &OutputPath) -> Result<()> {
        let file = match self {
            NoiseSink::Npy(w) => w.finish(),
            NoiseSink::Safetensors(w) => w.finish(),
        };
        file.map_err(|e| Error::io(out, e))?.finish()
    }
}
