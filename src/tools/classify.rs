//! `img-classify`: a trained classifier (vib-mlp, clf-conv) applied to images, batch by
//! batch: class probabilities, or the penultimate-layer features the sample-quality metrics
//! compare.

use candle_core::{Device, Tensor};

use crate::checkpoint::ModelSource;
use crate::data::convert::fit_margin;
use crate::data::stream::ImageStream;
use crate::data::Shard;
use crate::error::{Error, Result};
use crate::io::npy::{DType, NpyWriter};
use crate::io::{check_io, OutputPath};
use crate::models::classifier::Classifier;
use crate::models::inception::InceptionV3;
use crate::tools::ImageSource;

/// What `img-classify` writes per image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassifyOutput {
    /// Class probabilities [N, K].
    Probabilities,
    /// Penultimate-layer features [N, D].
    Features,
}

/// What `img-classify` classifies.
pub struct ImgClassify {
    pub model: ModelSource,
    pub images: ImageSource,
    pub output_kind: ClassifyOutput,
    pub batch_size: usize,
    /// Only these rows of the images (all by default).
    pub shard: Shard,
    pub seed: u64,
    pub output: OutputPath,
    pub device: Device,
}

/// Writes .npy f32 [N, K] of class probabilities (or [N, D] of features), one row per image
/// in input order, reading the images `batch_size` at a time (only the shard's). vib-mlp's
/// image r averages its softmax over draws of z from the stream (seed, Eval, r), whatever the
/// batch size and the shard ([`Classifier::probabilities`]).
///
/// `--model` may also be pytorch-fid's Inception-v3 weights ([`InceptionV3`]): then the
/// features are its 2048 pool3 features of the images as they are (any size, grey or RGB).
pub fn img_classify(r: &ImgClassify) -> Result<()> {
    check_io(&[("--model", Some(&r.model.path)), ("INPUT", r.images.spec.file())], &[("-o", Some(&r.output))])?;
    if InceptionV3::is_pytorch_fid_file(&r.model.path)? {
        if r.output_kind != ClassifyOutput::Features {
            return Err(Error::bad_input(
                &r.model.path,
                "is pytorch-fid's Inception, which gives features only (pool3, 2048); add --features",
            ));
        }
        let network = InceptionV3::load(&r.model.path, &r.device)?;
        let images = r.images.open(None, r.batch_size)?;
        return write_rows(r, images, crate::models::inception::FEATURES, |x, _| network.features(x));
    }
    let classifier = Classifier::load(r.model.checkpoint(&r.device)?, &r.device)?;
    let want = classifier.geometry();
    let images = r.images.open(None, r.batch_size)?;
    let source = match r.images.spec.file() {
        Some(path) => path.to_string(),
        None => "--data".to_string(),
    };
    fit_margin(images.geometry(), want, &source)?;
    let images = images.fitted(want)?;
    match r.output_kind {
        ClassifyOutput::Probabilities => {
            write_rows(r, images, classifier.classes(), |x, row| classifier.probabilities(x, r.seed, row))
        }
        ClassifyOutput::Features => write_rows(r, images, classifier.feature_dim(), |x, _| classifier.features(x)),
    }
}

/// Writes .npy f32 [N, width] for the shard's rows of `images`: `f` maps each batch, given
/// the index of its first image, to [batch, width].
fn write_rows(
    r: &ImgClassify,
    images: ImageStream,
    width: usize,
    mut f: impl FnMut(&Tensor, usize) -> Result<Tensor>,
) -> Result<()> {
    let rows = r.shard.rows(images.len());
    let mut row = rows.start;
    let mut images = images.only(rows)?;
    let io = |e| Error::io(&r.output, e);
    let mut writer = NpyWriter::new(r.output.create()?, DType::F32, &[images.len(), width]).map_err(io)?;
    while let Some(batch) = images.next_batch(&r.device)? {
        writer.write_rows(&f(&batch.x, row)?.flatten_all()?.to_vec1::<f32>()?).map_err(io)?;
        row += batch.x.dim(0)?;
    }
    writer.finish().map_err(io)?.finish()
}
