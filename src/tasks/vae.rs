//! Training for `vae-mlp`, and the evaluation and inference of every VAE (vae-mlp,
//! vae-conv) through [`GaussianVae`].

use candle_core::{Device, Tensor};
use serde_json::{json, Map, Value};

use crate::data::stream::{open_npy, ImageStream};
use crate::data::{Batch, Dataset};
use crate::error::{Error, Result};
use crate::io::npy::{DType as NpyDType, Elements, NpyWriter};
use crate::io::OutputPath;
use crate::models::latent::{elbo_terms, iwae, GaussianVae};
use crate::models::vae::{manifold_rows, Vae, VaeConfig};
use crate::models::{ModelConfig, Network};
use crate::nn::params::{ParamSet, Params};
use crate::rng::{Rng, Stream};
use crate::train::{Means, Metrics, StepOutput, Task};

/// Images per evaluation batch.
const EVAL_BATCH: usize = 500;

pub struct VaeTask {
    pub vae: Vae,
    params: ParamSet,
}

impl VaeTask {
    /// Builds the network from `params` (fresh or loaded).
    pub fn new(config: VaeConfig, mut params: Params) -> Result<Self> {
        let vae = Vae::new(config, &mut params)?;
        Ok(VaeTask { vae, params: params.finish()? })
    }
}

impl Task for VaeTask {
    fn config(&self) -> ModelConfig {
        ModelConfig::Vae(self.vae.config.clone())
    }

    fn params(&self) -> &ParamSet {
        &self.params
    }

    /// The PyTorch example's loss: summed over pixels and over the batch.
    fn train_step(&mut self, batch: &Batch, rng: &mut Rng) -> Result<StepOutput> {
        // [B, 784], binarized when configured.
        let x = self.vae.input(&self.vae.observe(&batch.x, rng)?)?;
        let t = elbo_terms(&self.vae, &x, rng)?;
        let loss = (t.nll.sum_all()? + (t.kl.sum_all()? * self.vae.config.beta)?)?;
        let (nll, kl) = (mean(&t.nll)?, mean(&t.kl)?);
        Ok(StepOutput { loss, metrics: vec![("elbo".into(), -(nll + kl)), ("recon".into(), nll), ("kl".into(), kl)] })
    }

    fn evaluate(&self, data: &dyn Dataset) -> Result<Metrics> {
        metrics(
            &Vae::frozen_copy(self.vae.config.clone(), &self.params)?,
            data,
            0,
            EVAL_BATCH,
            0,
            &self.params.device(),
        )
    }
}

fn mean(t: &Tensor) -> Result<f64> {
    Ok(t.mean_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?)
}

fn sum(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(candle_core::DType::F64)?.sum_all()?.to_scalar::<f64>()?)
}

/// Held-out metrics in nats per image: the ELBO (analytic KL, one sample of z), its two
/// terms, the squared error of the mean reconstruction (per pixel, on the [0, 1] scale),
/// and with `k > 0` the importance-weighted estimate of log p(x) with k samples,
/// `batch_size` images at a time. Batch i's noise comes from the stream (seed, Eval, i).
pub fn metrics(
    vae: &dyn GaussianVae,
    data: &dyn Dataset,
    k: usize,
    batch_size: usize,
    seed: u64,
    device: &Device,
) -> Result<Metrics> {
    let mut means = Means::default();
    let rows: Vec<usize> = (0..data.len()).collect();
    for (i, chunk) in rows.chunks(batch_size.max(1)).enumerate() {
        let mut rng = Rng::new(seed, Stream::Eval, i as u64);
        let images = vae.observe(&data.batch(chunk, device)?.x, &mut rng)?;
        let x = vae.input(&images)?;
        let t = elbo_terms(vae, &x, &mut rng)?;
        let (mu, _) = vae.encode(&x)?;
        let mse = (vae.decode(&mu)?.flatten_from(1)? - images.flatten_from(1)?)?.sqr()?.mean(1)?;
        let (nll, kl) = (sum(&t.nll)?, sum(&t.kl)?);
        let mut totals = vec![("elbo", -(nll + kl)), ("recon_nll", nll), ("kl", kl), ("recon_mse", sum(&mse)?)];
        if k > 0 {
            totals.push(("log_px", iwae(vae, &x, k, &mut rng)?.iter().sum()));
        }
        means.add(chunk.len(), totals);
    }
    Ok(means.finish())
}

/// [`metrics`] as `vae-eval`'s JSON report, with what was evaluated and how.
pub fn evaluate(
    vae: &dyn GaussianVae,
    data: &dyn Dataset,
    k: usize,
    batch_size: usize,
    seed: u64,
    device: &Device,
) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    out.insert("model".into(), json!(vae.family().name()));
    out.insert("data".into(), json!(data.name()));
    out.insert("images".into(), json!(data.len()));
    let metrics = metrics(vae, data, k, batch_size, seed, device)?;
    out.extend(vae.report_fields(&metrics));
    for (name, v) in metrics {
        out.insert(name, json!(v));
    }
    if k > 0 {
        out.insert("k".into(), json!(k));
    }
    out.insert("units".into(), json!("nats per image"));
    Ok(out)
}

/// Latent codes to decode.
pub enum Latents {
    /// An `.npy` of f32 [N, latent], read by rows.
    File(crate::io::InputPath),
    /// N draws from the prior N(0, I).
    Prior(usize),
    /// Kingma & Welling's Figure 4: a side x side grid over a 2-D latent space.
    Manifold(usize),
}

/// Encodes images batch by batch to the posterior mean, or with `sample` to one draw of z;
/// writes `.npy` f32 [N, latent].
pub fn encode(
    vae: &dyn GaussianVae,
    images: &mut ImageStream,
    out: &OutputPath,
    sample: bool,
    seed: u64,
    device: &Device,
) -> Result<()> {
    let mut writer =
        NpyWriter::new(out.create()?, NpyDType::F32, &[images.len(), vae.latent()]).map_err(|e| Error::io(out, e))?;
    let mut batch_index = 0;
    while let Some(batch) = images.next_batch(device)? {
        let x = batch.x;
        let (mu, logvar) = vae.encode(&vae.input(&x)?)?;
        let z = if sample {
            let eps = Rng::new(seed, Stream::Eval, batch_index).normal(mu.dims(), device)?;
            (mu + (eps * (logvar * 0.5)?.exp()?)?)?
        } else {
            mu
        };
        writer.write_rows(&z.flatten_all()?.to_vec1::<f32>()?).map_err(|e| Error::io(out, e))?;
        batch_index += 1;
    }
    writer.finish().map_err(|e| Error::io(out, e))?.finish()
}

/// Decodes latent codes `batch_size` at a time to images, `.npy` f32 [N, C, H, W] in
/// [0,1]. Draws from the prior for batch i come from the stream (seed, Eval, i).
pub fn decode(
    vae: &dyn GaussianVae,
    latents: &Latents,
    out: &OutputPath,
    batch_size: usize,
    seed: u64,
    device: &Device,
) -> Result<()> {
    if batch_size == 0 {
        return Err(Error::config("--batch-size must be at least 1"));
    }
    let l = vae.latent();
    let g = vae.geometry();
    let mut reader = match latents {
        Latents::File(path) => {
            let r = open_npy(path)?;
            if r.header().shape.len() != 2 || r.header().shape[1] != l {
                return Err(Error::bad_input(
                    path,
                    format!("latent codes have shape {:?}, the model expects [N, {l}]", r.header().shape),
                ));
            }
            Some(r)
        }
        Latents::Manifold(_) if l != 2 => {
            return Err(Error::config(format!("--manifold needs a 2-D latent space; this model's has {l} dimensions")))
        }
        _ => None,
    };
    let n = match (latents, &reader) {
        (_, Some(r)) => r.header().rows(),
        (Latents::Prior(n), _) => *n,
        (Latents::Manifold(side), _) => side
            .checked_mul(*side)
            .ok_or_else(|| Error::config(format!("--manifold {side}: a grid of {side}x{side} points is too large")))?,
        (Latents::File(_), None) => 0,
    };
    let mut writer = NpyWriter::new(out.create()?, NpyDType::F32, &[n, g.channels, g.height, g.width])
        .map_err(|e| Error::io(out, e))?;
    let mut done = 0;
    while done < n {
        let rows = batch_size.min(n - done);
        let z = match (latents, reader.as_mut()) {
            (Latents::File(path), Some(r)) => {
                let array = r.read_rows(rows)?.ok_or_else(|| Error::bad_input(path, "ended early"))?;
                let values: Vec<f32> = match array.data {
                    Elements::F32(v) => v,
                    Elements::F64(v) => v.into_iter().map(|x| x as f32).collect(),
                    other => {
                        return Err(Error::bad_input(
                            path,
                            format!("latent codes of dtype {} (expected f32 or f64)", other.dtype().name()),
                        ))
                    }
                };
                Tensor::from_vec(values, (rows, l), device)?
            }
            (Latents::Manifold(side), _) => manifold_rows(*side, done, rows, device)?,
            _ => Rng::new(seed, Stream::Eval, (done / batch_size) as u64).normal(&[rows, l], device)?,
        };
        let images = vae.decode(&z)?;
        writer.write_rows(&images.flatten_all()?.to_vec1::<f32>()?).map_err(|e| Error::io(out, e))?;
        done += rows;
    }
    writer.finish().map_err(|e| Error::io(out, e))?.finish()
}
