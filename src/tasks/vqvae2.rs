//! Training and evaluation for `vqvae2-mnist` (and plain VQ-VAE with one level).

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};

use crate::data::image_set::{Batch, ImageSet};
use crate::error::Result;
use crate::models::vqvae2::{Forward, VqVae2, VqVae2Config};
use crate::models::ModelConfig;
use crate::nn::params::{ParamSet, Params};
use crate::rng::{Rng, Stream};
use crate::train::{Means, Metrics, StepOutput, Task};

const EVAL_BATCH: usize = 250;

pub struct VqTask {
    pub model: VqVae2,
    params: ParamSet,
    /// The last step's encoder outputs and codes, for the codebook update after it.
    pending: Option<(Forward, u64)>,
}

impl VqTask {
    pub fn new(config: VqVae2Config, mut params: Params) -> Result<Self> {
        let model = VqVae2::new(config, &mut params)?;
        Ok(VqTask { model, params: params.finish()?, pending: None })
    }
}

/// Images in [0,1] to the model's [-1,1].
fn to_model_range(x: &Tensor) -> Result<Tensor> {
    Ok(x.affine(2.0, -1.0)?)
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

impl Task for VqTask {
    fn config(&self) -> ModelConfig {
        ModelConfig::VqVae2(self.model.config.clone())
    }

    fn params(&self) -> &ParamSet {
        &self.params
    }

    /// MSE reconstruction (on the [-1,1] scale) + commitment weight * commitment terms.
    fn train_step(&mut self, batch: &Batch, rng: &mut Rng) -> Result<StepOutput> {
        let x = to_model_range(&batch.x)?;
        let out = self.model.forward(&x)?;
        let mse = (&out.reconstruction - &x)?.sqr()?.mean_all()?;
        let mut commitment = out.bottom.commitment.clone();
        let mut metrics =
            vec![("mse".to_string(), scalar(&mse)?), ("commitment_b".to_string(), scalar(&out.bottom.commitment)?)];
        if let Some(top) = &out.top {
            commitment = (commitment + &top.commitment)?;
            metrics.push(("commitment_t".to_string(), scalar(&top.commitment)?));
        }
        let loss = (mse + (commitment * self.model.config.commitment)?)?;
        // The codebook update after the optimizer step draws from this step's stream.
        let seed = rand::Rng::random::<u64>(rng.inner());
        self.pending = Some((out, seed));
        Ok(StepOutput { loss, metrics })
    }

    /// The EMA codebook updates (and restarts) with the step's encoder outputs.
    fn after_step(&mut self) -> Result<()> {
        let Some((out, seed)) = self.pending.take() else { return Ok(()) };
        let mut rng = Rng::new(seed, Stream::Step, 0);
        let (top_q, bottom_q) = self.model.quantizers_mut();
        if let (Some(q), Some(inputs), Some(top)) = (top_q, &out.top_inputs, &out.top) {
            q.update(inputs, &top.codes, &mut rng)?;
        }
        bottom_q.update(&out.bottom_inputs, &out.bottom.codes, &mut rng)
    }

    /// Test MSE, and per level the codes in use and the perplexity over the whole set.
    fn evaluate(&self, data: &ImageSet) -> Result<Metrics> {
        evaluate(&self.model, data, &self.params.device())
    }

    fn extra_state(&self) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        let (top, bottom) = self.model.quantizers();
        for (name, q) in [("quantize_t", top), ("quantize_b", Some(bottom))] {
            if let Some(q) = q {
                out.insert(format!("{name}.idle"), Tensor::new(q.idle(), &Device::Cpu)?);
            }
        }
        Ok(out)
    }

    fn load_extra_state(&mut self, state: &BTreeMap<String, Tensor>) -> Result<()> {
        let (top, bottom) = self.model.quantizers_mut();
        for (name, q) in [("quantize_t", top), ("quantize_b", Some(bottom))] {
            if let (Some(q), Some(t)) = (q, state.get(&format!("{name}.idle"))) {
                q.set_idle(t.to_dtype(DType::U32)?.to_vec1()?)?;
            }
        }
        Ok(())
    }
}

/// Reconstruction MSE on the [-1,1] scale; codes in use and perplexity per level.
pub fn evaluate(model: &VqVae2, data: &ImageSet, device: &Device) -> Result<Metrics> {
    let mut means = Means::default();
    let (mut top_codes, mut bottom_codes) = (Vec::new(), Vec::new());
    let rows: Vec<usize> = (0..data.len()).collect();
    for chunk in rows.chunks(EVAL_BATCH) {
        let x = to_model_range(&data.batch(chunk, device)?.x)?;
        let out = model.forward(&x)?;
        let mse = (&out.reconstruction - &x)?.sqr()?.mean_all()?;
        means.add(chunk.len(), [("mse", scalar(&mse)? * chunk.len() as f64)]);
        bottom_codes.push(out.bottom.codes.flatten_all()?);
        if let Some(t) = &out.top {
            top_codes.push(t.codes.flatten_all()?);
        }
    }
    let mut metrics = means.finish();
    let (top_q, bottom_q) = model.quantizers();
    for (level, q, codes) in [("t", top_q, top_codes), ("b", Some(bottom_q), bottom_codes)] {
        if let (Some(q), false) = (q, codes.is_empty()) {
            let (used, perplexity) = q.usage(&Tensor::cat(&codes, 0)?)?;
            metrics.push((format!("codes_used_{level}"), used as f64));
            metrics.push((format!("perplexity_{level}"), perplexity));
        }
    }
    Ok(metrics)
}
