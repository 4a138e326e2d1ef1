//! Training for `vae-conv`: the reference's loss (MSE on the [-1, 1] scale plus kld_weight
//! times the KL) with BatchNorm in training mode, and the same loss on held-out images in
//! evaluation mode (running statistics) with fixed noise. Its evaluation and inference
//! tools are those of every VAE (`tasks::vae`).

use candle_core::{DType, Device, Tensor};

use crate::data::{Batch, Dataset};
use crate::error::Result;
use crate::models::vae_conv::{VaeConv, VaeConvConfig};
use crate::models::{ModelConfig, Network};
use crate::nn::params::{ParamSet, Params};
use crate::nn::Mode;
use crate::rng::{Rng, Stream};
use crate::train::{Means, Metrics, StepOutput, Task};

/// Images per held-out batch.
const EVAL_BATCH: usize = 250;

pub struct VaeConvTask {
    pub vae: VaeConv,
    params: ParamSet,
}

impl VaeConvTask {
    /// Builds the network from `params` (fresh or loaded).
    pub fn new(config: VaeConvConfig, mut params: Params) -> Result<Self> {
        let vae = VaeConv::new(config, &mut params)?;
        Ok(VaeConvTask { vae, params: params.finish()? })
    }
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// The loss and its terms of images `x` in [0, 1], with one draw of z from `rng`.
fn losses(vae: &VaeConv, x: &Tensor, rng: &mut Rng, mode: Mode) -> Result<(Tensor, [(&'static str, f64); 3])> {
    let x = x.affine(2.0, -1.0)?;
    let eps = rng.normal(&[x.dim(0)?, vae.config.latent], x.device())?;
    let (recons, mu, logvar) = vae.forward(&x, &eps, mode)?;
    let l = vae.loss(&x, &recons, &mu, &logvar)?;
    let terms = [("loss", scalar(&l.loss)?), ("mse", scalar(&l.mse)?), ("kld", scalar(&l.kld)?)];
    Ok((l.loss, terms))
}

impl Task for VaeConvTask {
    fn config(&self) -> ModelConfig {
        ModelConfig::VaeConv(self.vae.config.clone())
    }

    fn params(&self) -> &ParamSet {
        &self.params
    }

    /// Also moves BatchNorm's running statistics (buffers) towards the batch's.
    fn train_step(&mut self, batch: &Batch, rng: &mut Rng) -> Result<StepOutput> {
        let (loss, terms) = losses(&self.vae, &batch.x, rng, Mode::Train)?;
        Ok(StepOutput { loss, metrics: terms.iter().map(|&(k, v)| (k.to_string(), v)).collect() })
    }

    /// The training loss and its terms on held-out images, with the running statistics;
    /// batch i's noise comes from the stream (0, Eval, i).
    fn evaluate(&self, data: &dyn Dataset) -> Result<Metrics> {
        let device = self.params.device();
        let vae = VaeConv::frozen_copy(self.vae.config.clone(), &self.params)?;
        evaluate(&vae, data, &device)
    }
}

/// The loss's terms averaged over the images of `data`, in evaluation mode.
pub fn evaluate(vae: &VaeConv, data: &dyn Dataset, device: &Device) -> Result<Metrics> {
    let mut means = Means::default();
    let rows: Vec<usize> = (0..data.len()).collect();
    for (i, chunk) in rows.chunks(EVAL_BATCH).enumerate() {
        let mut rng = Rng::new(0, Stream::Eval, i as u64);
        let (_, terms) = losses(vae, &data.batch(chunk, device)?.x, &mut rng, Mode::Eval)?;
        let n = chunk.len() as f64;
        means.add(chunk.len(), terms.map(|(k, v)| (k, v * n)));
    }
    Ok(means.finish())
}
