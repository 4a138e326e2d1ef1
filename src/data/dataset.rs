//! What the training loop and evaluations draw batches from: images, or codes of a VQ model.

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};

/// One batch on a device. For images `x` is f32 [B, C, H, W] in [0,1]; for codes it is u32
/// [B, H, W]. `y` holds u32 class labels [B] when the data has them, `cond` what else the
/// model is conditioned on (the top codes [B, h, w] of a bottom-level prior).
pub struct Batch {
    pub x: Tensor,
    pub y: Option<Tensor>,
    pub cond: Option<Tensor>,
}

/// Examples held in memory and drawn by index.
pub trait Dataset {
    /// Describes the source, e.g. `mnist:train` or a path; used in messages, in metric
    /// names, and to check that a resumed run trains on the same data.
    fn name(&self) -> &str;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// What names this data's metrics in a training run's metric lines (`{prefix}_{metric}`)
    /// when it is the held-out set: `eval` unless the data says otherwise (the bundled
    /// digits say their split, so the default held-out set gives `test_*`).
    fn metric_prefix(&self) -> &str {
        "eval"
    }
    /// The examples at `rows`, in that order.
    fn batch(&self, rows: &[usize], device: &Device) -> Result<Batch>;
    /// Class labels, one per example, when the data has them.
    fn labels(&self) -> Option<&[u32]>;

    /// The labels, or an error saying that `what` needs them.
    fn require_labels(&self, what: &str) -> Result<&[u32]> {
        self.labels().ok_or_else(|| {
            Error::bad_input(self.name(), format!("has no labels, which {what} needs (pass --labels y.npy)"))
        })
    }

    /// [`Dataset::require_labels`], each of them a class below `classes`.
    fn require_classes(&self, what: &str, classes: usize) -> Result<&[u32]> {
        let labels = self.require_labels(what)?;
        match labels.iter().find(|&&l| l as usize >= classes) {
            Some(bad) => {
                Err(Error::bad_input(self.name(), format!("label {bad} is out of range for {classes} classes")))
            }
            None => Ok(labels),
        }
    }
}
