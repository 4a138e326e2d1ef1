//! A trained classifier of images, whichever family it is (vib-mlp or clf-conv), as the tools
//! that score samples use it: class probabilities for rejection sampling (`img-classify`,
//! `img-select`) and features for the sample-quality metrics.

use candle_core::{Device, Tensor, D};

use crate::checkpoint::Checkpoint;
use crate::data::Geometry;
use crate::error::{Error, Result};
use crate::models::clf_conv::ClfConv;
use crate::models::vae::flatten;
use crate::models::vib::Vib;
use crate::models::Family;
use crate::rng::{RowStreams, Stream};

/// A classifier loaded from a checkpoint, for inference.
pub enum Classifier {
    Vib(Vib),
    Conv(ClfConv),
}

impl Classifier {
    /// The classifier a checkpoint holds; another family is an error naming the file.
    pub fn load(ckpt: Checkpoint, device: &Device) -> Result<Self> {
        match ckpt.config.family() {
            Family::VibMlp => Ok(Classifier::Vib(ckpt.into_network(device)?)),
            Family::ClfConv => Ok(Classifier::Conv(ckpt.into_network(device)?)),
            other => Err(Error::bad_input(
                &ckpt.origin,
                format!("is a {other} checkpoint, expected a classifier (vib-mlp or clf-conv)"),
            )),
        }
    }

    /// K, the number of classes.
    pub fn classes(&self) -> usize {
        match self {
            Classifier::Vib(v) => v.config.classes,
            Classifier::Conv(c) => c.config.classes,
        }
    }

    /// D, the width of [`Classifier::features`].
    pub fn feature_dim(&self) -> usize {
        match self {
            Classifier::Vib(v) => v.config.latent,
            Classifier::Conv(c) => c.config.features,
        }
    }

    /// The images the classifier was trained on (and takes).
    pub fn geometry(&self) -> Geometry {
        match self {
            Classifier::Vib(v) => v.config.image,
            Classifier::Conv(c) => c.config.image,
        }
    }

    /// Class probabilities [N, K] of images `x` [N, C, H, W] in [0,1], rows `first_row..`
    /// of a run. clf-conv's softmax is deterministic. vib-mlp's is averaged over its
    /// `test_samples` draws of z, row r's drawn from the stream (seed, Eval, r) as S x latent
    /// normals in order: a row's probabilities do not depend on the batch it is in, and equal
    /// those of `vae-eval --batch-size 1` (whose batch i is row i).
    pub fn probabilities(&self, x: &Tensor, seed: u64, first_row: usize) -> Result<Tensor> {
        match self {
            Classifier::Conv(c) => Ok(candle_nn::ops::softmax(&c.logits(x, None)?, D::Minus1)?),
            Classifier::Vib(v) => {
                let q = v.encode(&flatten(x)?)?;
                let (n, latent) = q.mu.dims2()?;
                let s = v.config.test_samples;
                let mut rows = RowStreams::new(seed, Stream::Eval, first_row..first_row + n);
                // [N, S, L] -> [S, N, L]: sample j of every row.
                let eps = rows.normal(&[n, s, latent], x.device())?.transpose(0, 1)?.contiguous()?;
                let mut sum = Tensor::zeros((n, v.config.classes), candle_core::DType::F32, x.device())?;
                for j in 0..s {
                    let z = (&q.mu + (eps.get(j)? * &q.sigma)?)?;
                    sum = (sum + candle_nn::ops::softmax(&v.classify(&z)?, D::Minus1)?)?;
                }
                Ok((sum / s as f64)?)
            }
        }
    }

    /// Features [N, D] of images `x` [N, C, H, W] in [0,1]: vib-mlp's posterior mean mu,
    /// clf-conv's penultimate layer.
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Classifier::Vib(v) => Ok(v.encode(&flatten(x)?)?.mu),
            Classifier::Conv(c) => c.features(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::vib::VibConfig;
    use crate::nn::Params;
    use crate::rng::Rng;

    fn tiny_vib() -> Vib {
        let cfg = VibConfig {
            image: Geometry { channels: 1, height: 4, width: 4 },
            hidden: 8,
            latent: 4,
            classes: 3,
            test_samples: 5,
            ..VibConfig::vib_mlp()
        };
        Vib::new(cfg, &mut Params::init(2, &Device::Cpu)).unwrap()
    }

    /// The oracle: vae-eval's averaging ([`Vib::predict`]) of one row at a time, row r's
    /// noise from (seed, Eval, r), as vae-eval draws it with --batch-size 1.
    #[test]
    fn vib_probabilities_are_vae_evals_average_in_any_batch() {
        let x = Rng::new(1, Stream::Eval, 0).uniform(&[7, 1, 4, 4], 0.0, 1.0, &Device::Cpu).unwrap();
        let y = Tensor::zeros(1, candle_core::DType::U32, &Device::Cpu).unwrap();
        let clf = Classifier::Vib(tiny_vib());
        let Classifier::Vib(vib) = &clf else { unreachable!() };
        let oracle: Vec<Vec<f32>> = (0..7)
            .map(|r| {
                let row = flatten(&x.narrow(0, r, 1).unwrap()).unwrap();
                let (p, _, _) = vib.predict(&row, &y, &mut Rng::new(9, Stream::Eval, r as u64)).unwrap();
                p.squeeze(0).unwrap().to_vec1::<f32>().unwrap()
            })
            .collect();
        let whole = clf.probabilities(&x, 9, 0).unwrap().to_vec2::<f32>().unwrap();
        let tail = clf.probabilities(&x.narrow(0, 3, 4).unwrap(), 9, 3).unwrap().to_vec2::<f32>().unwrap();
        for r in 0..7 {
            for k in 0..3 {
                assert!((whole[r][k] - oracle[r][k]).abs() < 1e-6, "row {r}: {:?} vs {:?}", whole[r], oracle[r]);
            }
            assert!((whole[r].iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        assert_eq!(&whole[3..], &tail[..]);
        assert_ne!(clf.probabilities(&x, 10, 0).unwrap().to_vec2::<f32>().unwrap(), whole);
        assert_eq!((clf.classes(), clf.feature_dim()), (3, 4));
        assert_eq!(clf.features(&x).unwrap().dims(), &[7, 4]);
    }
}
