//! `prior-fit` and `prior-sample`: Gated PixelCNN priors over the codes of a VQ model.

use candle_core::Device;

use crate::checkpoint::ModelSource;
use crate::data::code_set::{CodeLevel, CodeSet, LabelSource};
use crate::data::Dataset;
use crate::error::Result;
use crate::io::{check_io, InputPath, OutputPath};
use crate::models::pixelcnn::PixelCnn;
use crate::models::ModelConfig;
use crate::tasks::prior::{check_eval_codes, prior_config, sample_codes, Draw, PriorShape, SampleRequest};
use crate::train::TrainOptions;

/// What `prior-fit` trains on.
pub struct PriorFit {
    /// Codes from vq-encode.
    pub input: InputPath,
    /// The level of a two-level file.
    pub level: Option<CodeLevel>,
    pub labels: LabelSource,
    /// Held-out codes and their labels (`None`: the held-out file's own).
    pub eval: Option<(InputPath, Option<InputPath>)>,
    pub shape: PriorShape,
    pub train: TrainOptions,
}

/// Trains a prior on one level of the codes, class-conditional when they have labels and
/// conditioned on the top codes for the bottom level, with held-out bits per code.
pub fn prior_fit(r: &PriorFit) -> Result<()> {
    let labels = match &r.labels {
        LabelSource::Array(path) => Some(path),
        _ => None,
    };
    let (eval, eval_labels) = crate::tools::held_out_files(&r.eval);
    let inputs =
        [("INPUT", Some(&r.input)), ("--labels", labels), ("--eval-data", eval), ("--eval-labels", eval_labels)];
    crate::tools::train::check_training_io(&inputs, &r.train)?;
    let codes = CodeSet::load(&r.input, r.level, &r.labels)?;
    let config = prior_config(&codes, &r.shape)?;
    // The network's size follows the codes and --channels / --layers: checked before it is built.
    ModelConfig::PixelCnn(config.clone()).check_fresh("--channels / --layers")?;
    let eval = match &r.eval {
        Some((path, labels)) => {
            let eval_labels = match (labels, &r.labels) {
                (_, LabelSource::Ignore) => LabelSource::Ignore,
                (Some(p), _) => LabelSource::Array(p.clone()),
                (None, _) => LabelSource::File,
            };
            let eval = CodeSet::load(path, r.level, &eval_labels)?;
            check_eval_codes(&config, &eval)?;
            Some(eval)
        }
        None => None,
    };
    let eval = eval.as_ref().map(|e| e as &dyn Dataset);
    crate::tools::train::train_command("prior-fit", ModelConfig::PixelCnn(config), &codes, eval, &r.train)
}

/// What `prior-sample` draws.
pub struct PriorSample {
    /// The prior of the top level, or of the only level (or the bottom prior with `top` codes
    /// given in the request).
    pub model: ModelSource,
    /// The bottom prior, sampled after `model`'s top codes.
    pub bottom: Option<InputPath>,
    pub request: SampleRequest,
    pub draw: Draw,
    pub output: OutputPath,
    pub device: Device,
}

/// Samples codes in raster order and writes them as vq-encode does.
pub fn prior_sample(r: &PriorSample) -> Result<()> {
    let inputs = [
        ("--model", Some(&r.model.path)),
        ("--bottom", r.bottom.as_ref()),
        ("--top", r.request.top.as_ref()),
        ("--labels", r.request.labels.as_ref()),
    ];
    check_io(&inputs, &[("-o", Some(&r.output))])?;
    let first: PixelCnn = r.model.network(&r.device)?;
    match &r.bottom {
        Some(path) => {
            let bottom: PixelCnn = ModelSource { path: path.clone(), plain: None }.network(&r.device)?;
            sample_codes(&bottom, Some(&first), &r.request, &r.draw, &r.output)
        }
        None => sample_codes(&first, None, &r.request, &r.draw, &r.output),
    }
}
