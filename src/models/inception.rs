//! The Inception-v3 feature network of FID (Heusel et al. 2017,
//! <https://arxiv.org/abs/1706.08500>) as pytorch-fid computes it
//! (<https://github.com/mseitzer/pytorch-fid>, `pytorch_fid/inception.py`, `InceptionV3([3])`):
//! torchvision's `Inception3` (Szegedy et al. 2016, <https://arxiv.org/abs/1512.00567>) with
//! pytorch-fid's `FIDInceptionA`, `FIDInceptionC`, `FIDInceptionE_1` and `FIDInceptionE_2`
//! blocks, which follow TensorFlow's graph of the `pt_inception-2015-12-05` weights, up to
//! pool3, the 2048-d global average pool. Inference only; not a model family (nothing here
//! trains or writes a checkpoint).
//!
//! The input path is pytorch-fid's `resize_input=True, normalize_input=True`: images in [0, 1]
//! are resized to 299x299 as `F.interpolate(x, size=(299, 299), mode='bilinear',
//! align_corners=False)` does (no antialiasing, also when shrinking), then mapped to [-1, 1]
//! by 2x - 1. Grey images are repeated to three channels, as pytorch-fid's loader converts
//! them to RGB.
//!
//! Every convolution is torchvision's `BasicConv2d`: a bias-free conv, BatchNorm in eval mode
//! (eps 0.001) and ReLU. The BatchNorm is folded into the conv at load time (weight times
//! gamma / sqrt(var + eps), bias beta - mean gamma / sqrt(var + eps)), so each layer is one
//! convolution with a bias and one ReLU. The pools: 3x3 max pools of stride 2 in the stem and
//! in Mixed_6a/7a; 3x3 average pools of stride 1 and padding 1 that leave the padding out of
//! the average (`count_include_pad=False`, TensorFlow's) in the A, C and first E blocks; a
//! 3x3 max pool of stride 1 and padding 1 in the last E block (pytorch-fid's patch for the
//! TensorFlow graph).
//!
//! Parameters have the names of pytorch-fid's state dict: `blocks.0.0.conv.weight`,
//! `blocks.0.0.bn.{weight,bias,running_mean,running_var,num_batches_tracked}`, ...,
//! `blocks.2.4.branch7x7_2.conv.weight`, ... (`blocks.0` the stem to the first max pool,
//! `blocks.1` to the second, `blocks.2` Mixed_5b to Mixed_6e, `blocks.3` Mixed_7a to 7c). The
//! weights are the user's: pytorch-fid downloads them on first use, and this converts them
//! (on a machine with network access; 95 MB):
//!
//! ```text
//! pip install pytorch-fid safetensors
//! python -c "import torch, safetensors.torch as st; from pytorch_fid.inception import InceptionV3; m=InceptionV3([3]); st.save_file({k: v.contiguous() for k,v in m.state_dict().items()}, 'pt_inception.safetensors')"
//! ```
//!
//! Tested against pytorch-fid itself with seeded weights (tests/golden/inception_fid.py and
//! tests/cli/inception_fid.rs).

use candle_core::{DType, Device, Module, Tensor};

use crate::checkpoint::ensure_finite;
use crate::error::{Error, Result};
use crate::io::safetensors::TensorMap;
use crate::io::InputPath;
use crate::nn::conv::{Conv2d, ConvConfig};
use crate::nn::functional::relu;
use crate::nn::params::{Init, Params};
use crate::nn::pool::max_pool2d;

/// The side images are resized to.
pub const SIZE: usize = 299;
/// The length of a feature vector (pool3).
pub const FEATURES: usize = 2048;
/// The most images that go through the network at once: it bounds the memory
/// [`InceptionV3::features`] takes whatever the batch (on the CPU a process holding the
/// weights and running 8 images peaked at 375 MB, 32 images in one call at 443 MB), and more
/// at once ran no faster on 2 cores.
pub const CHUNK: usize = 8;
/// torchvision's `BasicConv2d` BatchNorm eps.
const BN_EPS: f64 = 1e-3;

/// The one-line conversion of pytorch-fid's weights, for messages.
const CONVERT: &str = "python -c \"import torch, safetensors.torch as st; from pytorch_fid.inception import InceptionV3; m=InceptionV3([3]); st.save_file({k: v.contiguous() for k,v in m.state_dict().items()}, 'pt_inception.safetensors')\"";

/// pytorch-fid's `InceptionV3([3])`: images [N, 1 or 3, H, W] in [0, 1] to pool3 features
/// [N, 2048].
pub struct InceptionV3 {
    stem: Vec<Stage>,
    mixed: Vec<Mixed>,
}

/// A stem layer: a convolution or a 3x3 max pool of stride 2.
enum Stage {
    Conv(BasicConv2d),
    MaxPool,
}

impl InceptionV3 {
    /// The network over `params`, each tensor by its pytorch-fid name.
    pub fn new(p: &mut Params) -> Result<Self> {
        let conv = |p: &mut Params, name: &str, cin, cout, k, stride| {
            BasicConv2d::new(p, name, cin, cout, (k, k), stride, (0, 0)).map(Stage::Conv)
        };
        let stem = vec![
            conv(p, "blocks.0.0", 3, 32, 3, 2)?,
            conv(p, "blocks.0.1", 32, 32, 3, 1)?,
            Stage::Conv(BasicConv2d::new(p, "blocks.0.2", 32, 64, (3, 3), 1, (1, 1))?),
            Stage::MaxPool,
            conv(p, "blocks.1.0", 64, 80, 1, 1)?,
            conv(p, "blocks.1.1", 80, 192, 3, 1)?,
            Stage::MaxPool,
        ];
        let mixed = vec![
            Mixed::A(InceptionA::new(p, "blocks.2.0", 192, 32)?),
            Mixed::A(InceptionA::new(p, "blocks.2.1", 256, 64)?),
            Mixed::A(InceptionA::new(p, "blocks.2.2", 288, 64)?),
            Mixed::B(InceptionB::new(p, "blocks.2.3", 288)?),
            Mixed::C(InceptionC::new(p, "blocks.2.4", 768, 128)?),
            Mixed::C(InceptionC::new(p, "blocks.2.5", 768, 160)?),
            Mixed::C(InceptionC::new(p, "blocks.2.6", 768, 160)?),
            Mixed::C(InceptionC::new(p, "blocks.2.7", 768, 192)?),
            Mixed::D(InceptionD::new(p, "blocks.3.0", 768)?),
            Mixed::E(InceptionE::new(p, "blocks.3.1", 1280, Pool::Avg)?),
            Mixed::E(InceptionE::new(p, "blocks.3.2", 2048, Pool::Max)?),
        ];
        Ok(InceptionV3 { stem, mixed })
    }

    /// Whether a checkpoint file holds pytorch-fid's weights rather than a model of this
    /// project: a safetensors file with the stem's first convolution and no model config.
    pub fn is_pytorch_fid_file(path: &InputPath) -> Result<bool> {
        let InputPath::File(_) = path else { return Ok(false) };
        let (mut input, len) = path.open()?;
        let Ok(header) = crate::io::safetensors::read_header(&mut input, len.unwrap_or(u64::MAX), &path.to_string())
        else {
            return Ok(false);
        };
        Ok(header.tensors.contains_key("blocks.0.0.conv.weight")
            && !header.metadata.contains_key(crate::checkpoint::CONFIG_KEY))
    }

    /// The network in a safetensors file of pytorch-fid's state dict (see the module docs),
    /// which must hold every tensor, with its shape, and nothing else.
    pub fn load(path: &InputPath, device: &Device) -> Result<Self> {
        let map = TensorMap::read(path, device)?;
        if !map.tensors.keys().any(|k| k.starts_with("blocks.")) {
            return Err(Error::bad_input(
                path,
                format!(
                    "holds none of pytorch-fid's Inception tensors (blocks.*; {} tensors); expected the state dict of pytorch_fid.inception.InceptionV3([3]), converted with: {CONVERT}",
                    map.tensors.len()
                ),
            ));
        }
        ensure_finite(&map.tensors, &path.to_string())?;
        let mut params = Params::frozen(map.tensors, &path.to_string(), device);
        let network = Self::new(&mut params)?;
        params.finish()?;
        Ok(network)
    }

    /// Pool3 features [N, 2048] of images `x` [N, C, H, W] with values in [0, 1], C 1 (grey)
    /// or 3 (RGB), any H and W; at most [`CHUNK`] images at a time go through the network.
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        let n = match *x.dims() {
            [n, 1 | 3, h, w] if h > 0 && w > 0 => n,
            _ => {
                return Err(Error::config(format!(
                    "Inception features take images [N, 1 or 3, H, W]; got a tensor of shape {:?}",
                    x.dims()
                )))
            }
        };
        if n == 0 {
            return Ok(Tensor::zeros((0, FEATURES), DType::F32, x.device())?);
        }
        let parts: Vec<Tensor> =
            (0..n).step_by(CHUNK).map(|i| self.pool3(&x.narrow(0, i, CHUNK.min(n - i))?)).collect::<Result<_>>()?;
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// [`InceptionV3::features`] of a checked batch.
    fn pool3(&self, x: &Tensor) -> Result<Tensor> {
        let (_, c, h, w) = x.dims4()?;
        let mut x = x.detach().to_dtype(DType::F32)?;
        if (h, w) != (SIZE, SIZE) {
            x = x.upsample_bilinear2d(SIZE, SIZE, false)?;
        }
        if c == 1 {
            x = x.repeat((1, 3, 1, 1))?;
        }
        let mut x = x.affine(2.0, -1.0)?;
        for stage in &self.stem {
            x = match stage {
                Stage::Conv(conv) => conv.forward(&x)?,
                Stage::MaxPool => max_pool_3x3_stride_2(&x)?,
            };
        }
        for block in &self.mixed {
            x = block.forward(&x)?;
        }
        Ok(x.flatten_from(2)?.mean(2)?)
    }
}

/// torchvision's `BasicConv2d` (conv without bias, BatchNorm eps 0.001, ReLU) with the
/// BatchNorm folded into the conv.
struct BasicConv2d {
    conv: Conv2d,
    /// Zero padding of height and width beyond the conv's own (which pads both alike): the
    /// (0, 3) and (3, 0) of the 1x7 and 7x1 convs.
    extra: (usize, usize),
}

impl BasicConv2d {
    fn new(
        p: &mut Params,
        name: &str,
        cin: usize,
        cout: usize,
        (kh, kw): (usize, usize),
        stride: usize,
        (ph, pw): (usize, usize),
    ) -> Result<Self> {
        let bound = 1.0 / ((cin * kh * kw) as f32).sqrt();
        let weight = p.tensor(&format!("{name}.conv.weight"), &[cout, cin, kh, kw], Init::Uniform(bound))?;
        let c = [cout];
        let gamma = p.tensor(&format!("{name}.bn.weight"), &c, Init::Const(1.0))?;
        let beta = p.tensor(&format!("{name}.bn.bias"), &c, Init::Const(0.0))?;
        let mean = p.buffer(&format!("{name}.bn.running_mean"), &c, Init::Const(0.0))?;
        let var = p.buffer(&format!("{name}.bn.running_var"), &c, Init::Const(1.0))?;
        p.counter(&format!("{name}.bn.num_batches_tracked"))?;
        // In f64: gamma / sqrt(var + eps), then the folded weight and bias.
        let f64s = |t: &Tensor| t.to_dtype(DType::F64);
        let scale = (f64s(&gamma)? / (f64s(&var)? + BN_EPS)?.sqrt()?)?;
        // Detached: inference only, so that no pass keeps a backward graph (with fresh
        // parameters, which are variables, every intermediate of a batch would stay alive).
        let weight = f64s(&weight)?.broadcast_mul(&scale.reshape((cout, 1, 1, 1))?)?.to_dtype(DType::F32)?.detach();
        let bias = (f64s(&beta)? - (f64s(&mean)? * &scale)?)?.to_dtype(DType::F32)?.detach();
        let padding = ph.min(pw);
        let conv = Conv2d::new(weight, bias, ConvConfig { stride, padding });
        Ok(BasicConv2d { conv, extra: (ph - padding, pw - padding) })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (eh, ew) = self.extra;
        let x = if eh > 0 { x.pad_with_zeros(2, eh, eh)? } else { x.clone() };
        let x = if ew > 0 { x.pad_with_zeros(3, ew, ew)? } else { x };
        relu(&self.conv.forward(&x)?)
    }
}

/// The pool of an InceptionE block's pool branch.
#[derive(Debug, Clone, Copy)]
enum Pool {
    /// 3x3, stride 1, padding 1, not counting the padding: FIDInceptionE_1.
    Avg,
    /// 3x3, stride 1, padding 1: FIDInceptionE_2.
    Max,
}

/// One of the Mixed blocks.
enum Mixed {
    A(InceptionA),
    B(InceptionB),
    C(InceptionC),
    D(InceptionD),
    E(InceptionE),
}

impl Mixed {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Mixed::A(b) => b.forward(x),
            Mixed::B(b) => b.forward(x),
            Mixed::C(b) => b.forward(x),
            Mixed::D(b) => b.forward(x),
            Mixed::E(b) => b.forward(x),
        }
    }
}

/// `name.branch` with kernel `k`, stride 1 and padding `pad`.
fn branch(
    p: &mut Params,
    name: &str,
    branch: &str,
    cin: usize,
    cout: usize,
    k: (usize, usize),
    pad: (usize, usize),
) -> Result<BasicConv2d> {
    BasicConv2d::new(p, &format!("{name}.{branch}"), cin, cout, k, 1, pad)
}

/// Runs `convs` one after the other on `x`.
fn chain(convs: &[BasicConv2d], x: &Tensor) -> Result<Tensor> {
    convs.iter().try_fold(x.clone(), |x, conv| conv.forward(&x))
}

/// pytorch-fid's `FIDInceptionA` (Mixed_5b/c/d): 1x1; 1x1, 5x5; 1x1, 3x3, 3x3; avg pool, 1x1.
struct InceptionA {
    branch1x1: BasicConv2d,
    branch5x5: [BasicConv2d; 2],
    branch3x3dbl: [BasicConv2d; 3],
    branch_pool: BasicConv2d,
}

impl InceptionA {
    fn new(p: &mut Params, name: &str, cin: usize, pool_features: usize) -> Result<Self> {
        Ok(InceptionA {
            branch1x1: branch(p, name, "branch1x1", cin, 64, (1, 1), (0, 0))?,
            branch5x5: [
                branch(p, name, "branch5x5_1", cin, 48, (1, 1), (0, 0))?,
                branch(p, name, "branch5x5_2", 48, 64, (5, 5), (2, 2))?,
            ],
            branch3x3dbl: [
                branch(p, name, "branch3x3dbl_1", cin, 64, (1, 1), (0, 0))?,
                branch(p, name, "branch3x3dbl_2", 64, 96, (3, 3), (1, 1))?,
                branch(p, name, "branch3x3dbl_3", 96, 96, (3, 3), (1, 1))?,
            ],
            branch_pool: branch(p, name, "branch_pool", cin, pool_features, (1, 1), (0, 0))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let outputs = [
            self.branch1x1.forward(x)?,
            chain(&self.branch5x5, x)?,
            chain(&self.branch3x3dbl, x)?,
            self.branch_pool.forward(&avg_pool_3x3_same(x)?)?,
        ];
        Ok(Tensor::cat(&outputs, 1)?)
    }
}

/// torchvision's `InceptionB` (Mixed_6a): 3x3 stride 2; 1x1, 3x3, 3x3 stride 2; max pool.
struct InceptionB {
    branch3x3: BasicConv2d,
    branch3x3dbl: [BasicConv2d; 3],
}

impl InceptionB {
    fn new(p: &mut Params, name: &str, cin: usize) -> Result<Self> {
        let conv = |p: &mut Params, b: &str, cin, cout, k, stride, pad| {
            BasicConv2d::new(p, &format!("{name}.{b}"), cin, cout, (k, k), stride, (pad, pad))
        };
        Ok(InceptionB {
            branch3x3: conv(p, "branch3x3", cin, 384, 3, 2, 0)?,
            branch3x3dbl: [
                conv(p, "branch3x3dbl_1", cin, 64, 1, 1, 0)?,
                conv(p, "branch3x3dbl_2", 64, 96, 3, 1, 1)?,
                conv(p, "branch3x3dbl_3", 96, 96, 3, 2, 0)?,
            ],
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let outputs = [self.branch3x3.forward(x)?, chain(&self.branch3x3dbl, x)?, max_pool_3x3_stride_2(x)?];
        Ok(Tensor::cat(&outputs, 1)?)
    }
}

/// pytorch-fid's `FIDInceptionC` (Mixed_6b-e): 1x1; 1x1, 1x7, 7x1; 1x1, 7x1, 1x7, 7x1, 1x7;
/// avg pool, 1x1.
struct InceptionC {
    branch1x1: BasicConv2d,
    branch7x7: [BasicConv2d; 3],
    branch7x7dbl: [BasicConv2d; 5],
    branch_pool: BasicConv2d,
}

impl InceptionC {
    fn new(p: &mut Params, name: &str, cin: usize, c7: usize) -> Result<Self> {
        let (row, col) = (((1, 7), (0, 3)), ((7, 1), (3, 0)));
        let mut b = |b: &str, cin, cout, (k, pad)| branch(p, name, b, cin, cout, k, pad);
        Ok(InceptionC {
            branch1x1: b("branch1x1", cin, 192, ((1, 1), (0, 0)))?,
            branch7x7: [
                b("branch7x7_1", cin, c7, ((1, 1), (0, 0)))?,
                b("branch7x7_2", c7, c7, row)?,
                b("branch7x7_3", c7, 192, col)?,
            ],
            branch7x7dbl: [
                b("branch7x7dbl_1", cin, c7, ((1, 1), (0, 0)))?,
                b("branch7x7dbl_2", c7, c7, col)?,
                b("branch7x7dbl_3", c7, c7, row)?,
                b("branch7x7dbl_4", c7, c7, col)?,
                b("branch7x7dbl_5", c7, 192, row)?,
            ],
            branch_pool: b("branch_pool", cin, 192, ((1, 1), (0, 0)))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let outputs = [
            self.branch1x1.forward(x)?,
            chain(&self.branch7x7, x)?,
            chain(&self.branch7x7dbl, x)?,
            self.branch_pool.forward(&avg_pool_3x3_same(x)?)?,
        ];
        Ok(Tensor::cat(&outputs, 1)?)
    }
}

/// torchvision's `InceptionD` (Mixed_7a): 1x1, 3x3 stride 2; 1x1, 1x7, 7x1, 3x3 stride 2;
/// max pool.
struct InceptionD {
    branch3x3: [BasicConv2d; 2],
    branch7x7x3: [BasicConv2d; 4],
}

impl InceptionD {
    fn new(p: &mut Params, name: &str, cin: usize) -> Result<Self> {
        let mut b =
            |b: &str, cin, cout, k, stride, pad| BasicConv2d::new(p, &format!("{name}.{b}"), cin, cout, k, stride, pad);
        Ok(InceptionD {
            branch3x3: [b("branch3x3_1", cin, 192, (1, 1), 1, (0, 0))?, b("branch3x3_2", 192, 320, (3, 3), 2, (0, 0))?],
            branch7x7x3: [
                b("branch7x7x3_1", cin, 192, (1, 1), 1, (0, 0))?,
                b("branch7x7x3_2", 192, 192, (1, 7), 1, (0, 3))?,
                b("branch7x7x3_3", 192, 192, (7, 1), 1, (3, 0))?,
                b("branch7x7x3_4", 192, 192, (3, 3), 2, (0, 0))?,
            ],
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let outputs = [chain(&self.branch3x3, x)?, chain(&self.branch7x7x3, x)?, max_pool_3x3_stride_2(x)?];
        Ok(Tensor::cat(&outputs, 1)?)
    }
}

/// pytorch-fid's `FIDInceptionE_1` and `_2` (Mixed_7b, 7c): 1x1; 1x1, then 1x3 and 3x1; 1x1,
/// 3x3, then 1x3 and 3x1; pool, 1x1.
struct InceptionE {
    branch1x1: BasicConv2d,
    branch3x3_1: BasicConv2d,
    branch3x3_2: [BasicConv2d; 2],
    branch3x3dbl: [BasicConv2d; 2],
    branch3x3dbl_3: [BasicConv2d; 2],
    branch_pool: BasicConv2d,
    pool: Pool,
}

impl InceptionE {
    fn new(p: &mut Params, name: &str, cin: usize, pool: Pool) -> Result<Self> {
        let (row, col) = (((1, 3), (0, 1)), ((3, 1), (1, 0)));
        let mut b = |b: &str, cin, cout, (k, pad)| branch(p, name, b, cin, cout, k, pad);
        Ok(InceptionE {
            branch1x1: b("branch1x1", cin, 320, ((1, 1), (0, 0)))?,
            branch3x3_1: b("branch3x3_1", cin, 384, ((1, 1), (0, 0)))?,
            branch3x3_2: [b("branch3x3_2a", 384, 384, row)?, b("branch3x3_2b", 384, 384, col)?],
            branch3x3dbl: [
                b("branch3x3dbl_1", cin, 448, ((1, 1), (0, 0)))?,
                b("branch3x3dbl_2", 448, 384, ((3, 3), (1, 1)))?,
            ],
            branch3x3dbl_3: [b("branch3x3dbl_3a", 384, 384, row)?, b("branch3x3dbl_3b", 384, 384, col)?],
            branch_pool: b("branch_pool", cin, 192, ((1, 1), (0, 0)))?,
            pool,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b3 = self.branch3x3_1.forward(x)?;
        let b3dbl = chain(&self.branch3x3dbl, x)?;
        let pooled = match self.pool {
            Pool::Avg => avg_pool_3x3_same(x)?,
            Pool::Max => max_pool_3x3_same(x)?,
        };
        let outputs = [
            self.branch1x1.forward(x)?,
            self.branch3x3_2[0].forward(&b3)?,
            self.branch3x3_2[1].forward(&b3)?,
            self.branch3x3dbl_3[0].forward(&b3dbl)?,
            self.branch3x3dbl_3[1].forward(&b3dbl)?,
            self.branch_pool.forward(&pooled)?,
        ];
        Ok(Tensor::cat(&outputs, 1)?)
    }
}

/// `F.max_pool2d(x, kernel_size=3, stride=2)`.
fn max_pool_3x3_stride_2(x: &Tensor) -> Result<Tensor> {
    Ok(max_pool2d(x, 3, 2)?)
}

/// `F.max_pool2d(x, kernel_size=3, stride=1, padding=1)`. PyTorch pads with -inf; padding
/// with copies of the edge gives the same maxima, as each copied value is in the window of
/// every output that sees it.
fn max_pool_3x3_same(x: &Tensor) -> Result<Tensor> {
    Ok(max_pool2d(&x.pad_with_same(2, 1, 1)?.pad_with_same(3, 1, 1)?, 3, 1)?)
}

/// `F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)`: the sum of
/// each zero-padded window over the number of its pixels inside the image (9 inside, 6 on an
/// edge, 4 in a corner).
fn avg_pool_3x3_same(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let inside =
        |len: usize| -> Vec<f32> { (0..len).map(|i| (i.saturating_sub(1)..(i + 2).min(len)).len() as f32).collect() };
    let (rows, cols) = (inside(h), inside(w));
    let counts: Vec<f32> = rows.iter().flat_map(|r| cols.iter().map(move |c| r * c)).collect();
    let scale = Tensor::from_vec(counts, (1, 1, h, w), x.device())?.recip()?.affine(9.0, 0.0)?;
    let padded = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
    Ok(padded.avg_pool2d_with_stride(3, 1)?.broadcast_mul(&scale)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    /// The pools against their definitions, computed window by window.
    #[test]
    fn same_size_pools_leave_the_padding_out() {
        let (h, w) = (4, 5);
        let v: Vec<f32> = (0..h * w).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
        let x = Tensor::from_vec(v.clone(), (1, 1, h, w), &Device::Cpu).unwrap();
        let (avg, max) = (values(&avg_pool_3x3_same(&x).unwrap()), values(&max_pool_3x3_same(&x).unwrap()));
        for i in 0..h {
            for j in 0..w {
                let window: Vec<f32> = (i.saturating_sub(1)..(i + 2).min(h))
                    .flat_map(|r| (j.saturating_sub(1)..(j + 2).min(w)).map(move |c| (r, c)))
                    .map(|(r, c)| v[r * w + c])
                    .collect();
                let mean = window.iter().sum::<f32>() / window.len() as f32;
                let most = window.iter().copied().fold(f32::MIN, f32::max);
                assert!((avg[i * w + j] - mean).abs() < 1e-5, "avg at ({i}, {j}): {} vs {mean}", avg[i * w + j]);
                assert_eq!(max[i * w + j], most, "max at ({i}, {j})");
            }
        }
    }

    /// Shapes other than [N, 1 or 3, H, W] are refused in one line, before any work; an empty
    /// batch has no features. (The features themselves: tests/cli/inception_fid.rs.)
    #[test]
    fn bad_shapes_are_refused_and_an_empty_batch_has_no_features() {
        let d = Device::Cpu;
        let net = InceptionV3::new(&mut Params::plan()).unwrap();
        assert_eq!(net.features(&Tensor::zeros((0, 3, 8, 8), DType::F32, &d).unwrap()).unwrap().dims(), [0, FEATURES]);
        for dims in [&[1, 2, 8, 8][..], &[1, 3, 0, 8], &[3, 8, 8]] {
            let e = net.features(&Tensor::zeros(dims, DType::F32, &d).unwrap()).unwrap_err().to_string();
            assert!(e.contains("[N, 1 or 3, H, W]") && e.contains(&format!("{dims:?}")), "{e}");
        }
    }
}
