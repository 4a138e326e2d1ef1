//! Training and evaluation for `vib-mlp`.

use candle_core::{Device, Tensor, D};
use serde_json::{json, Map, Value};

use crate::data::{Batch, Dataset};
use crate::error::{Error, Result};
use crate::models::vae::flatten;
use crate::models::vib::{label_entropy, Vib, VibConfig};
use crate::models::{ModelConfig, Network};
use crate::nn::params::{ParamSet, Params};
use crate::rng::{Rng, Stream};
use crate::train::{Means, Metrics, StepOutput, Task};

const EVAL_BATCH: usize = 500;

pub struct VibTask {
    pub vib: Vib,
    params: ParamSet,
}

impl VibTask {
    pub fn new(config: VibConfig, mut params: Params) -> Result<Self> {
        let vib = Vib::new(config, &mut params)?;
        Ok(VibTask { vib, params: params.finish()? })
    }
}

impl Task for VibTask {
    fn config(&self) -> ModelConfig {
        ModelConfig::Vib(self.vib.config.clone())
    }

    fn params(&self) -> &ParamSet {
        &self.params
    }

    /// Alemi et al.'s loss, averaged over the batch: CE(y | z) + beta * KL.
    fn train_step(&mut self, batch: &Batch, rng: &mut Rng) -> Result<StepOutput> {
        let y = batch.y.as_ref().ok_or_else(|| Error::config("vib-mlp trains on labelled images (pass --labels)"))?;
        let (ce, kl) = self.vib.loss_terms(&flatten(&batch.x)?, y, rng)?;
        let (ce, kl) = (ce.mean_all()?, kl.mean_all()?);
        let loss = (&ce + (&kl * self.vib.config.beta)?)?;
        let metrics = vec![("ce".into(), scalar(&ce)?), ("kl".into(), scalar(&kl)?)];
        Ok(StepOutput { loss, metrics })
    }

    fn evaluate(&self, data: &dyn Dataset) -> Result<Metrics> {
        metrics(&Vib::frozen_copy(self.vib.config.clone(), &self.params)?, data, EVAL_BATCH, 0, &self.params.device())
    }
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?)
}

/// Test error with the softmax averaged over the configured number of samples of z, the two
/// information terms (nats), I(Z;X) <= mean KL and I(Z;Y) >= H(Y) - CE, and the CE itself.
pub fn metrics(vib: &Vib, data: &dyn Dataset, batch_size: usize, seed: u64, device: &Device) -> Result<Metrics> {
    let labels = data.require_classes("evaluating vib-mlp", vib.config.classes)?;
    let mut means = Means::default();
    let rows: Vec<usize> = (0..data.len()).collect();
    for (i, chunk) in rows.chunks(batch_size.max(1)).enumerate() {
        let batch = data.batch(chunk, device)?;
        let y = batch.y.as_ref().expect("labels checked above");
        let (probs, ce, kl) = vib.predict(&flatten(&batch.x)?, y, &mut Rng::new(seed, Stream::Eval, i as u64))?;
        let wrong = probs.argmax(D::Minus1)?.ne(y)?.to_dtype(candle_core::DType::F64)?.sum_all()?;
        let total = |t: &Tensor| -> Result<f64> { scalar(&t.to_dtype(candle_core::DType::F64)?.sum_all()?) };
        means.add(chunk.len(), [("error", scalar(&wrong)?), ("ce", total(&ce)?), ("i_zx", total(&kl)?)]);
    }
    let m = means.finish();
    let get = |k: &str| m.iter().find(|(n, _)| n == k).map_or(f64::NAN, |(_, v)| *v);
    let h_y = label_entropy(labels, vib.config.classes);
    Ok(["error", "i_zx", "i_zy", "ce"]
        .into_iter()
        .map(|k| (k.to_string(), if k == "i_zy" { h_y - get("ce") } else { get(k) }))
        .collect())
}

/// [`metrics`] as `vae-eval`'s JSON report, with H(Y) and what was evaluated.
pub fn evaluate(
    vib: &Vib,
    data: &dyn Dataset,
    batch_size: usize,
    seed: u64,
    device: &Device,
) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    for (k, v) in metrics(vib, data, batch_size, seed, device)? {
        out.insert(k, json!(v));
    }
    let h_y = label_entropy(data.require_labels("evaluating vib-mlp")?, vib.config.classes);
    for (k, v) in [
        ("model", json!("vib-mlp")),
        ("data", json!(data.name())),
        ("images", json!(data.len())),
        ("h_y", json!(h_y)),
        ("samples", json!(vib.config.test_samples)),
        ("units", json!("nats")),
    ] {
        out.insert(k.into(), v);
    }
    Ok(out)
}
