//! `vae-eval`, `vae-encode` and `vae-decode`: a trained VAE (vae-mlp, vae-conv; for
//! evaluation also the classifiers vib-mlp and clf-conv) applied to images or latent codes.

use std::io::Write;

use candle_core::Device;

use crate::checkpoint::{Checkpoint, ModelSource};
use crate::data::{DataSpec, ImageSet, PixelRange, Split};
use crate::error::{Error, Result};
use crate::io::{check_io, InputPath, OutputPath};
use crate::models::clf_conv::ClfConv;
use crate::models::latent::GaussianVae;
use crate::models::vae::Vae;
use crate::models::vae_conv::VaeConv;
use crate::models::vib::Vib;
use crate::models::Family;
use crate::tasks::vae::Latents;
use crate::tools::ImageSource;

/// What `vae-eval` evaluates, and how.
pub struct VaeEval {
    pub model: ModelSource,
    /// Held-out images; the bundled set's test split unless another split is named.
    pub data: DataSpec,
    pub split: Option<Split>,
    pub labels: Option<InputPath>,
    pub range: PixelRange,
    /// Importance samples per image for log p(x) (a VAE); 0 skips the estimate.
    pub k: usize,
    pub batch_size: usize,
    pub seed: u64,
    pub output: OutputPath,
    pub device: Device,
}

/// Writes one JSON object of held-out metrics: nats per image for a VAE (and bits per
/// dimension for vae-conv), error and the information terms for vib-mlp, error and
/// cross-entropy for clf-conv.
pub fn vae_eval(r: &VaeEval) -> Result<()> {
    let inputs = [("--model", Some(&r.model.path)), ("--data", r.data.file()), ("--labels", r.labels.as_ref())];
    check_io(&inputs, &[("-o", Some(&r.output))])?;
    let ckpt = r.model.checkpoint(&r.device)?;
    let family = ckpt.config.family();
    if !matches!(family, Family::VaeMlp | Family::VaeConv | Family::VibMlp | Family::ClfConv) {
        return Err(Error::bad_input(
            &ckpt.origin,
            format!("is a {family} checkpoint, expected vae-mlp, vae-conv, vib-mlp or clf-conv"),
        ));
    }
    let split = Some(r.split.unwrap_or(Split::Test)).filter(|_| matches!(r.data, DataSpec::Bundled(_)));
    let data = ImageSet::load(&r.data, split, r.labels.as_ref(), r.range, Some(ckpt.config.geometry()?))?;
    let report = if family == Family::VibMlp {
        let vib: Vib = ckpt.into_network(&r.device)?;
        crate::tasks::vib::evaluate(&vib, &data, r.batch_size, r.seed, &r.device)?
    } else if family == Family::ClfConv {
        let net: ClfConv = ckpt.into_network(&r.device)?;
        crate::tasks::clf_conv::evaluate(&net, &data, r.batch_size, &r.device)?
    } else {
        let vae = gaussian_vae(ckpt, &r.device)?;
        crate::tasks::vae::evaluate(vae.as_ref(), &data, r.k, r.batch_size, r.seed, &r.device)?
    };
    let mut out = r.output.create()?;
    writeln!(out, "{}", serde_json::Value::Object(report)).map_err(|e| Error::io(&r.output, e))?;
    out.finish()
}

/// The VAE a checkpoint holds (vae-mlp or vae-conv), for inference.
fn gaussian_vae(ckpt: Checkpoint, device: &Device) -> Result<Box<dyn GaussianVae>> {
    match ckpt.config.family() {
        Family::VaeMlp => Ok(Box::new(ckpt.into_network::<Vae>(device)?)),
        Family::VaeConv => Ok(Box::new(ckpt.into_network::<VaeConv>(device)?)),
        other => Err(Error::bad_input(&ckpt.origin, format!("is a {other} checkpoint, expected vae-mlp or vae-conv"))),
    }
}

/// What `vae-encode` encodes.
pub struct VaeEncode {
    pub model: ModelSource,
    pub images: ImageSource,
    /// One draw of z ~ q(z|x) instead of the posterior mean.
    pub sample: bool,
    pub batch_size: usize,
    pub seed: u64,
    pub output: OutputPath,
    pub device: Device,
}

/// Writes the latent codes of the images, .npy f32 [N, latent].
pub fn vae_encode(r: &VaeEncode) -> Result<()> {
    check_io(&[("--model", Some(&r.model.path)), ("INPUT", r.images.spec.file())], &[("-o", Some(&r.output))])?;
    let vae = gaussian_vae(r.model.checkpoint(&r.device)?, &r.device)?;
    let mut images = r.images.open(Some(vae.geometry()), r.batch_size)?;
    crate::tasks::vae::encode(vae.as_ref(), &mut images, &r.output, r.sample, r.seed, &r.device)
}

/// What `vae-decode` decodes.
pub struct VaeDecode {
    pub model: ModelSource,
    pub latents: Latents,
    pub batch_size: usize,
    pub seed: u64,
    pub output: OutputPath,
    pub device: Device,
}

/// Writes the decoded images, .npy f32 [N, C, H, W] in [0,1].
pub fn vae_decode(r: &VaeDecode) -> Result<()> {
    let latents = match &r.latents {
        Latents::File(path) => Some(path),
        _ => None,
    };
    check_io(&[("--model", Some(&r.model.path)), ("INPUT", latents)], &[("-o", Some(&r.output))])?;
    let vae = gaussian_vae(r.model.checkpoint(&r.device)?, &r.device)?;
    crate::tasks::vae::decode(vae.as_ref(), &r.latents, &r.output, r.batch_size, r.seed, &r.device)
}
