//! Building blocks shared by the models: a strict, seeded parameter store with PyTorch
//! names, an Adam whose state can be saved, fused CPU layers (linear, convolutions, GroupNorm
//! with SiLU), BatchNorm, max pooling and small numerically stable functions.

pub mod adam;
pub mod batch_norm;
pub mod conv;
pub mod discretized;
pub mod fastmath;
pub mod functional;
pub mod gemm;
pub mod group_norm;
pub mod linear;
mod norm;
pub mod params;
pub mod pool;

pub use adam::{Adam, AdamConfig};
pub use batch_norm::{BatchNorm2d, Mode};
pub use conv::{Conv2d, ConvConfig, ConvTranspose2d, ConvTransposeConfig};
pub use group_norm::GroupNorm;
pub use linear::Linear;
pub use params::{ParamSet, Params};
