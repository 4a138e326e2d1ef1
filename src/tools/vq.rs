//! `vq-encode` and `vq-decode`: images to the discrete codes of a trained VQ-VAE(-2), and
//! codes back to images.

use candle_core::Device;

use crate::checkpoint::ModelSource;
use crate::data::codes::CodeReader;
use crate::data::Geometry;
use crate::data::Shard;
use crate::error::Result;
use crate::io::{check_io, InputPath, OutputPath};
use crate::models::vqvae2::VqVae2;
use crate::tasks::vqvae2::DecodeOutput;
use crate::tools::ImageSource;

/// What `vq-encode` encodes.
pub struct VqEncode {
    pub model: ModelSource,
    pub images: ImageSource,
    /// Class labels of the images, written beside the codes.
    pub labels: Option<InputPath>,
    /// Images per batch; `None`: the model's [`crate::models::vqvae2::VqVae2Config::inference_batch`].
    pub batch_size: Option<usize>,
    /// The images to encode, of all.
    pub shard: Shard,
    pub output: OutputPath,
    pub device: Device,
}

/// Writes the codes: .safetensors of `top`, `bottom` (and `labels`) for two levels, .npy
/// [N, H, W] for one.
pub fn vq_encode(r: &VqEncode) -> Result<()> {
    let inputs = [("--model", Some(&r.model.path)), ("INPUT", r.images.spec.file()), ("--labels", r.labels.as_ref())];
    check_io(&inputs, &[("-o", Some(&r.output))])?;
    let ckpt = r.model.checkpoint(&r.device)?;
    let config = ckpt.config_of::<VqVae2>()?;
    // A plain state dict (--preset) takes the images' geometry; a trained model its own.
    let geometry = (!ckpt.from_preset).then_some(config.image);
    // Batched below, once the model (whose geometry may come from the images) gives the
    // default batch.
    let mut images = r.images.open(geometry, 1)?;
    let model: VqVae2 = ckpt.fit_preset_to(images.geometry())?.into_network(&r.device)?;
    let batch_size = r.batch_size.unwrap_or_else(|| model.config.inference_batch());
    images = images.fitted(model.config.image)?.with_batch_size(batch_size);
    if let Some(labels) = &r.labels {
        images = images.with_labels(labels)?;
    }
    let rows = r.shard.rows(images.len());
    let mut images = images.only(rows)?;
    crate::tasks::vqvae2::encode(&model, &mut images, &r.output, &r.device)
}

/// What `vq-decode` decodes.
pub struct VqDecode {
    pub model: ModelSource,
    /// Codes as vq-encode or prior-sample writes them.
    pub input: InputPath,
    pub output: DecodeOutput,
    /// Code maps per batch; `None`: the model's [`crate::models::vqvae2::VqVae2Config::inference_batch`].
    pub batch_size: Option<usize>,
    /// The code maps to decode, of all.
    pub shard: Shard,
    pub device: Device,
}

/// Writes the decoded images as an array or a PNG grid.
pub fn vq_decode(r: &VqDecode) -> Result<()> {
    let output = match &r.output {
        DecodeOutput::Array(out, _) => ("-o", Some(out)),
        DecodeOutput::Png(png, _) => ("--png", Some(png)),
    };
    check_io(&[("--model", Some(&r.model.path)), ("INPUT", Some(&r.input))], &[output])?;
    let ckpt = r.model.checkpoint(&r.device)?;
    let mut codes = CodeReader::open(&r.input)?;
    // A plain state dict (--preset) decodes to the size its codes give.
    let bottom = codes.layout().bottom;
    let image = Geometry { height: 4 * bottom.height, width: 4 * bottom.width, ..ckpt.config_of::<VqVae2>()?.image };
    let model: VqVae2 = ckpt.fit_preset_to(image)?.into_network(&r.device)?;
    codes.only(r.shard.rows(codes.layout().n))?;
    let batch_size = r.batch_size.unwrap_or_else(|| model.config.inference_batch());
    crate::tasks::vqvae2::decode(&model, &mut codes, &r.output, batch_size, &r.device)
}
