//! One level of VQ codes held in memory for training a prior, with the labels and top codes
//! it may be conditioned on.

use candle_core::{Device, Tensor};

use super::codes::{CodeReader, Level};
use super::dataset::{Batch, Dataset};
use super::image_set::read_labels;
use crate::error::{Error, Result};
use crate::io::InputPath;

/// Which level of a two-level code file a prior models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CodeLevel {
    Top,
    Bottom,
}

/// Where a prior's labels come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelSource {
    /// The code file's `labels`, when it has them.
    File,
    /// A separate `.npy` of integers [N].
    Array(InputPath),
    /// None: an unconditional prior.
    Ignore,
}

/// Codes of one level, [N, H, W] row-major, with optional labels and top codes.
#[derive(Debug, Clone)]
pub struct CodeSet {
    pub name: String,
    pub n: usize,
    pub level: Level,
    pub codes: Vec<u32>,
    pub labels: Option<Vec<u32>>,
    /// The top codes [N, h, w] the bottom level is conditioned on.
    pub top: Option<(Level, Vec<u32>)>,
}

impl CodeSet {
    /// Reads the codes a prior of `level` trains on: an `.npy` file's only level, or the
    /// chosen level of a `.safetensors` file (the bottom level with its top codes).
    pub fn load(input: &InputPath, level: Option<CodeLevel>, labels: &LabelSource) -> Result<Self> {
        let reader = CodeReader::open(input)?;
        let layout = reader.layout().clone();
        let name = reader.name().to_string();
        let all = reader.read_all()?;
        let (lvl, codes, top) = match (layout.top, level) {
            (None, None | Some(CodeLevel::Bottom)) => (layout.bottom, all.bottom, None),
            (None, Some(CodeLevel::Top)) => {
                return Err(Error::bad_input(&name, "holds one level of codes, so it has no top level (drop --level)"))
            }
            (Some(_), None) => {
                return Err(Error::config(format!(
                    "{name} holds two levels of codes: pass --level top or --level bottom"
                )))
            }
            (Some(t), Some(CodeLevel::Top)) => (t, all.top.unwrap_or_default(), None),
            (Some(t), Some(CodeLevel::Bottom)) => (layout.bottom, all.bottom, Some((t, all.top.unwrap_or_default()))),
        };
        let labels = match labels {
            LabelSource::File => all.labels,
            LabelSource::Array(path) => Some(read_labels(path, layout.n)?),
            LabelSource::Ignore => None,
        };
        Ok(CodeSet { name, n: layout.n, level: lvl, codes, labels, top })
    }

    /// An error naming the first code outside a codebook of `n_embed`.
    pub fn check_codebook(&self, n_embed: usize) -> Result<()> {
        match self.codes.iter().find(|&&c| c as usize >= n_embed) {
            Some(c) => Err(Error::bad_input(&self.name, format!("holds code {c}, outside a codebook of {n_embed}"))),
            None => Ok(()),
        }
    }
}

fn gather(values: &[u32], per: usize, rows: &[usize]) -> Vec<u32> {
    let mut out = Vec::with_capacity(rows.len() * per);
    for &r in rows {
        out.extend_from_slice(&values[r * per..(r + 1) * per]);
    }
    out
}

impl Dataset for CodeSet {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> usize {
        self.n
    }

    /// `x` the codes u32 [B, H, W], `y` the labels, `cond` the top codes [B, h, w].
    fn batch(&self, rows: &[usize], device: &Device) -> Result<Batch> {
        let b = rows.len();
        let l = self.level;
        let x = Tensor::from_vec(gather(&self.codes, l.len(), rows), (b, l.height, l.width), device)?;
        let y = match &self.labels {
            Some(labels) => Some(Tensor::from_vec(gather(labels, 1, rows), b, device)?),
            None => None,
        };
        let cond = match &self.top {
            Some((t, codes)) => Some(Tensor::from_vec(gather(codes, t.len(), rows), (b, t.height, t.width), device)?),
            None => None,
        };
        Ok(Batch { x, y, cond })
    }

    fn labels(&self) -> Option<&[u32]> {
        self.labels.as_deref()
    }
}
