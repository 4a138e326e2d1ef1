//! Image data: the bundled MNIST digits, image arrays from `.npy` files, image folders,
//! IDX and CIFAR-10 files, and the conversions between pixel ranges and model input geometry.

pub mod cifar;
pub mod code_set;
pub mod codes;
pub mod convert;
pub mod dataset;
pub mod emoji;
pub mod fit;
pub mod folder;
pub mod grid;
pub mod idx;
pub mod image_set;
pub mod mnist;
pub mod pack;
pub mod rows;
pub mod select;
pub mod shard;
mod sheet;
pub mod stream;

pub use convert::{Geometry, PixelRange};
pub use dataset::{Batch, Dataset};
pub use image_set::{Bundled, DataSpec, ImageSet, Split};
pub use shard::Shard;
