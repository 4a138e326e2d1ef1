//! Training and evaluation for `clf-conv`: cross-entropy with dropout in training; the test
//! error and cross-entropy without.

use candle_core::{DType, Device, Tensor, D};
use serde_json::{json, Map, Value};

use crate::data::{Batch, Dataset};
use crate::error::{Error, Result};
use crate::models::clf_conv::{ClfConv, ClfConvConfig};
use crate::models::vib::cross_entropy;
use crate::models::{ModelConfig, Network};
use crate::nn::params::{ParamSet, Params};
use crate::rng::Rng;
use crate::train::{Means, Metrics, StepOutput, Task};

const EVAL_BATCH: usize = 500;

pub struct ClfConvTask {
    pub net: ClfConv,
    params: ParamSet,
}

impl ClfConvTask {
    pub fn new(config: ClfConvConfig, mut params: Params) -> Result<Self> {
        let net = ClfConv::new(config, &mut params)?;
        Ok(ClfConvTask { net, params: params.finish()? })
    }
}

impl Task for ClfConvTask {
    fn config(&self) -> ModelConfig {
        ModelConfig::ClfConv(self.net.config.clone())
    }

    fn params(&self) -> &ParamSet {
        &self.params
    }

    /// The mean cross-entropy of the batch, with the dropout mask drawn from the step's stream.
    fn train_step(&mut self, batch: &Batch, rng: &mut Rng) -> Result<StepOutput> {
        let y = batch.y.as_ref().ok_or_else(|| Error::config("clf-conv trains on labelled images (pass --labels)"))?;
        let logits = self.net.logits(&batch.x, Some(rng))?;
        let loss = cross_entropy(&logits, y)?.mean_all()?;
        let wrong = logits.argmax(D::Minus1)?.ne(y)?.to_dtype(DType::F32)?.mean_all()?;
        let metrics = vec![("ce".into(), scalar(&loss)?), ("error".into(), scalar(&wrong)?)];
        Ok(StepOutput { loss, metrics })
    }

    fn evaluate(&self, data: &dyn Dataset) -> Result<Metrics> {
        metrics(&ClfConv::frozen_copy(self.net.config.clone(), &self.params)?, data, EVAL_BATCH, &self.params.device())
    }
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?)
}

/// The error (fraction of images whose most probable class is not their label) and the
/// mean cross-entropy (nats) over `data`, `batch_size` images at a time.
pub fn metrics(net: &ClfConv, data: &dyn Dataset, batch_size: usize, device: &Device) -> Result<Metrics> {
    data.require_classes("evaluating clf-conv", net.config.classes)?;
    let mut means = Means::default();
    let rows: Vec<usize> = (0..data.len()).collect();
    for chunk in rows.chunks(batch_size.max(1)) {
        let batch = data.batch(chunk, device)?;
        let y = batch.y.as_ref().expect("labels checked above");
        let logits = net.logits(&batch.x, None)?;
        let wrong = logits.argmax(D::Minus1)?.ne(y)?;
        means.add(chunk.len(), [("error", scalar(&wrong)?), ("ce", scalar(&cross_entropy(&logits, y)?)?)]);
    }
    Ok(means.finish())
}

/// [`metrics`] as `vae-eval`'s JSON report, with what was evaluated.
pub fn evaluate(net: &ClfConv, data: &dyn Dataset, batch_size: usize, device: &Device) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    for (k, v) in metrics(net, data, batch_size, device)? {
        out.insert(k, json!(v));
    }
    for (k, v) in [
        ("model", json!("clf-conv")),
        ("data", json!(data.name())),
        ("images", json!(data.len())),
        ("units", json!("nats")),
    ] {
        out.insert(k.into(), v);
    }
    Ok(out)
}
