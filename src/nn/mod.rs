//! Building blocks shared by the models: a strict, seeded parameter store with PyTorch
//! names, an Adam whose state can be saved, and small numerically stable functions.

pub mod adam;
pub mod fastmath;
pub mod functional;
pub mod gemm;
pub mod linear;
pub mod params;

pub use adam::{Adam, AdamConfig};
pub use linear::Linear;
pub use params::{ParamSet, Params};
