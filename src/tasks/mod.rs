//! Each model family's training objective, evaluation and inference entry points: the glue
//! between a network in `models/` and the shared loop in `train`.

pub mod clf_conv;
pub mod ddpm;
pub mod prior;
pub mod vae;
pub mod vae_conv;
pub mod vib;
pub mod vqvae2;

use crate::error::Result;
use crate::models::ModelConfig;
use crate::nn::Params;
use crate::train::Task;

/// The training task of a configuration, over `params` (fresh or loaded).
pub fn build(config: ModelConfig, params: Params) -> Result<Box<dyn Task>> {
    Ok(match config {
        ModelConfig::Vae(c) => Box::new(vae::VaeTask::new(c, params)?),
        ModelConfig::VaeConv(c) => Box::new(vae_conv::VaeConvTask::new(c, params)?),
        ModelConfig::Vib(c) => Box::new(vib::VibTask::new(c, params)?),
        ModelConfig::ClfConv(c) => Box::new(clf_conv::ClfConvTask::new(c, params)?),
        ModelConfig::VqVae2(c) => Box::new(vqvae2::VqTask::new(c, params)?),
        ModelConfig::Ddpm(c) => Box::new(ddpm::DdpmTask::new(c, params)?),
        ModelConfig::PixelCnn(c) => Box::new(prior::PriorTask::new(c, params)?),
    })
}
