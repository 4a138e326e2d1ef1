//! 2-D convolution and transposed convolution, `nn.Conv2d` and `nn.ConvTranspose2d`
//! (groups 1, dilation 1), on NCHW tensors.
//!
//! On the CPU both run as fused f32 ops whose forward and backward passes are large matrix
//! products around the gemm kernel. candle's own CPU convolutions reach 10-20 % of this
//! machine's peak: its transposed convolution is a plain loop, and conv2d's backward pass
//! goes through it. On any other device, or for other dtypes, the layers call candle's own
//! convolutions, which are also the reference the tests compare against.
//!
//! One geometry serves both layers. A convolution maps its input side (C channels, H x W) to
//! its output side (M channels, Ho x Wo) through a weight [M, C, kh, kw]. With K = C kh kw
//! and P = Ho Wo, it has three matrix forms:
//! - correlate: out [M, P] = W [M, K] im2col(in) [K, P];
//! - scatter, the adjoint of correlate: in = col2im(W^T [K, M] out [M, P]);
//! - weight gradient: dW [M, K] = out [M, P] im2col(in)^T.
//!
//! Conv2d's forward pass is correlate and its input gradient scatter. A transposed
//! convolution is the same convolution run backwards: its weight [in, out, kh, kw] is the
//! [M, C, kh, kw] above, its input the output side and its output the input side, so its
//! forward pass is scatter and its input gradient correlate.
//!
//! The parts, each on its own:
//! - `layers`: the layer types and their `Module` impls, what models import;
//! - `op`: the candle ops (forward, backward, bias gradient), the device rule and the one
//!   place that picks a kernel for a geometry;
//! - `im2col`: the general kernel, im2col/col2im and one matrix product;
//! - `winograd`: Winograd's F(4x4, 3x3) for 3x3 convolutions at stride 1, a quarter of the
//!   multiplications in all three passes;
//! - `plan`: the geometry and the block plan the two kernels share (and the PixelCNN's fused
//!   layer). The blocks depend on the batch alone, so results are the same bits on any number
//!   of threads.

mod im2col;
mod layers;
mod op;
pub(crate) mod plan;
#[cfg(test)]
mod testing;
pub(crate) mod winograd;

pub use layers::{Conv2d, ConvConfig, ConvTranspose2d, ConvTransposeConfig};
