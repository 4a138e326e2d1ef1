//! One typed library function per tool. Each binary in `bin/` parses its flags (clap),
//! turns them into the request struct of its tool here, and calls the tool's function, as
//! uutils' `uumain` calls `tac(...)`; tests and other programs call the same functions.
//!
//! | tool | function |
//! |---|---|
//! | `img-pack` | [`img::img_pack`] |
//! | `img-grid` | [`img::img_grid`] |
//! | `vae-train`, `ddpm-train` | [`train::train_on_images`] |
//! | `prior-fit` | [`prior::prior_fit`] |
//! | `prior-sample` | [`prior::prior_sample`] |
//! | `vae-eval` | [`vae::vae_eval`] |
//! | `vae-encode` | [`vae::vae_encode`] |
//! | `vae-decode` | [`vae::vae_decode`] |
//! | `vq-encode` | [`vq::vq_encode`] |
//! | `vq-decode` | [`vq::vq_decode`] |
//! | `ddpm-noise` | [`ddpm::ddpm_noise`] |
//! | `ddpm-denoise` | [`ddpm::ddpm_denoise`] |
//! | `tensor-cat` | [`cat::tensor_cat`] |
//! | `img-plot` | [`plot::img_plot`] |
//! | `img-classify` | [`classify::img_classify`] |
//! | `img-select` | [`select::img_select`] |
//! | `img-fid` | [`fid::img_fid`] |

pub mod cat;
pub mod classify;
pub mod ddpm;
pub mod fid;
pub mod img;
pub mod plot;
pub mod prior;
pub mod select;
pub mod train;
pub mod vae;
pub mod vq;

use crate::data::stream::ImageStream;
use crate::data::{DataSpec, Geometry, PixelRange, Split};
use crate::error::Result;
use crate::io::InputPath;

/// The held-out data and labels files of a training request (`--eval-data`,
/// `--eval-labels`), for the checks on its inputs.
fn held_out_files(eval: &Option<(InputPath, Option<InputPath>)>) -> (Option<&InputPath>, Option<&InputPath>) {
    match eval {
        Some((path, labels)) => (Some(path), labels.as_ref()),
        None => (None, None),
    }
}

/// Images a tool maps to something: a file (or stdin), or the bundled set.
#[derive(Debug, Clone)]
pub struct ImageSource {
    pub spec: DataSpec,
    /// Which part of the bundled set; `None` for its default.
    pub split: Option<Split>,
    /// Range of float pixels in the file.
    pub range: PixelRange,
}

impl ImageSource {
    /// The images as batches of `batch_size`, fitted to `geometry`, or as stored when it is
    /// `None`.
    pub fn open(&self, geometry: Option<Geometry>, batch_size: usize) -> Result<ImageStream> {
        ImageStream::open(&self.spec, self.split, self.range, geometry, batch_size)
    }
}
