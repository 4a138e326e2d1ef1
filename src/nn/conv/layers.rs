//! The layers models build from: `nn.Conv2d` and `nn.ConvTranspose2d` with their settings.

use candle_core::{Module, Tensor};

use super::op::{self, Kind};

/// Stride and padding of a [`Conv2d`]; the default is PyTorch's (1, 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvConfig {
    pub stride: usize,
    pub padding: usize,
}

impl Default for ConvConfig {
    fn default() -> Self {
        ConvConfig { stride: 1, padding: 0 }
    }
}

/// Stride, padding and output padding of a [`ConvTranspose2d`]; the default is PyTorch's
/// (1, 0, 0). The output padding adds rows and columns at the bottom and right, to pick one
/// of the output sizes that a strided convolution maps to the same input size; it must be
/// smaller than the stride.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvTransposeConfig {
    pub stride: usize,
    pub padding: usize,
    pub output_padding: usize,
}

impl Default for ConvTransposeConfig {
    fn default() -> Self {
        ConvTransposeConfig { stride: 1, padding: 0, output_padding: 0 }
    }
}

/// `nn.Conv2d`: weight [out, in, kh, kw], bias [out].
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    config: ConvConfig,
}

impl Conv2d {
    pub fn new(weight: Tensor, bias: Tensor, config: ConvConfig) -> Self {
        Conv2d { weight, bias, config }
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    pub fn config(&self) -> ConvConfig {
        self.config
    }

    /// candle's convolution plus a broadcast bias, kept as the reference.
    pub fn forward_reference(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let ConvConfig { stride, padding } = self.config;
        let y = x.conv2d(&self.weight, padding, stride, 1, 1)?;
        y.broadcast_add(&self.bias.reshape((1, (), 1, 1))?)
    }
}

impl Module for Conv2d {
    /// `x` [N, in, H, W] -> [N, out, (H + 2 padding - kh) / stride + 1, likewise for W].
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        op::forward(Kind::Conv(self.config), x, &self.weight, &self.bias, || self.forward_reference(x))
    }
}

/// `nn.ConvTranspose2d`: weight [in, out, kh, kw], bias [out].
#[derive(Debug, Clone)]
pub struct ConvTranspose2d {
    weight: Tensor,
    bias: Tensor,
    config: ConvTransposeConfig,
}

impl ConvTranspose2d {
    pub fn new(weight: Tensor, bias: Tensor, config: ConvTransposeConfig) -> Self {
        ConvTranspose2d { weight, bias, config }
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    pub fn config(&self) -> ConvTransposeConfig {
        self.config
    }

    /// candle's transposed convolution plus a broadcast bias, kept as the reference.
    pub fn forward_reference(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let ConvTransposeConfig { stride, padding, output_padding } = self.config;
        let y = x.conv_transpose2d(&self.weight, padding, output_padding, stride, 1)?;
        y.broadcast_add(&self.bias.reshape((1, (), 1, 1))?)
    }
}

impl Module for ConvTranspose2d {
    /// `x` [N, in, H, W] -> [N, out, (H - 1) stride - 2 padding + kh + output_padding, likewise
    /// for W].
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        op::forward(Kind::Transposed(self.config), x, &self.weight, &self.bias, || self.forward_reference(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::conv::testing::rel_err;
    use crate::rng::{Rng, Stream};
    use candle_core::{DType, Device, Var};

    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    /// A layer under test, run fused or through candle's reference.
    enum Layer {
        Conv(Conv2d),
        Transposed(ConvTranspose2d),
    }

    impl Layer {
        fn new(
            transposed: bool,
            weight: &Var,
            bias: &Var,
            stride: usize,
            padding: usize,
            output_padding: usize,
        ) -> Self {
            let (w, b) = (weight.as_tensor().clone(), bias.as_tensor().clone());
            if transposed {
                Layer::Transposed(ConvTranspose2d::new(w, b, ConvTransposeConfig { stride, padding, output_padding }))
            } else {
                Layer::Conv(Conv2d::new(w, b, ConvConfig { stride, padding }))
            }
        }

        fn forward(&self, x: &Tensor, fast: bool) -> Tensor {
            match (self, fast) {
                (Layer::Conv(l), true) => l.forward(x),
                (Layer::Conv(l), false) => l.forward_reference(x),
                (Layer::Transposed(l), true) => l.forward(x),
                (Layer::Transposed(l), false) => l.forward_reference(x),
            }
            .unwrap()
        }
    }

    /// One layer configuration: input dims, output channels, square kernel size, stride,
    /// padding and output padding (the latter for the transposed layer only).
    #[derive(Debug, Clone, Copy)]
    struct Case {
        transposed: bool,
        x: [usize; 4],
        out: usize,
        k: usize,
        stride: usize,
        padding: usize,
        output_padding: usize,
    }

    fn conv(x: [usize; 4], out: usize, k: usize, stride: usize, padding: usize) -> Case {
        Case { transposed: false, x, out, k, stride, padding, output_padding: 0 }
    }

    fn convt(x: [usize; 4], out: usize, k: usize, stride: usize, padding: usize, output_padding: usize) -> Case {
        Case { transposed: true, x, out, k, stride, padding, output_padding }
    }

    /// Compares our layer with candle's in output and in the gradients of x, weight and bias
    /// of a random linear functional of the output. Returns the output's shape.
    fn compare(seed: u64, case: Case) -> Vec<usize> {
        let d = Device::Cpu;
        let mut r = Rng::new(seed, Stream::Eval, 0);
        let (c, m, k) = (case.x[1], case.out, case.k);
        let w_dims = if case.transposed { [c, m, k, k] } else { [m, c, k, k] };
        let x = Var::from_tensor(&r.normal(&case.x, &d).unwrap()).unwrap();
        let w = Var::from_tensor(&r.normal(&w_dims, &d).unwrap()).unwrap();
        let b = Var::from_tensor(&r.normal(&[m], &d).unwrap()).unwrap();
        let layer = Layer::new(case.transposed, &w, &b, case.stride, case.padding, case.output_padding);
        let y_ref = layer.forward(x.as_tensor(), false);
        let probe = r.normal(y_ref.dims(), &d).unwrap();
        let run = |fast: bool| {
            let y = layer.forward(x.as_tensor(), fast);
            let g = (&y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            let grads: Vec<Vec<f32>> = [&x, &w, &b].iter().map(|v| flat(g.get(v.as_tensor()).unwrap())).collect();
            (y.dims().to_vec(), flat(&y), grads)
        };
        let (fast, slow) = (run(true), run(false));
        assert_eq!(fast.0, slow.0, "{case:?}");
        assert!(rel_err(&fast.1, &slow.1) < 1e-4, "output, {case:?}: {}", rel_err(&fast.1, &slow.1));
        for (what, (f, s)) in ["x", "weight", "bias"].iter().zip(fast.2.iter().zip(&slow.2)) {
            assert!(rel_err(f, s) < 1e-4, "grad {what}, {case:?}: {}", rel_err(f, s));
        }
        fast.0
    }

    #[test]
    fn conv2d_matches_candle_in_value_and_gradients() {
        let mut seed = 0;
        for k in [1, 3, 4] {
            for stride in [1, 2] {
                for padding in [0, 1] {
                    for n in [1, 3] {
                        seed += 1;
                        compare(seed, conv([n, 3, 9, 7], 5, k, stride, padding));
                    }
                }
            }
        }
        // Padding wider than the input: some kernel taps never land inside it.
        assert_eq!(compare(seed + 1, conv([2, 2, 1, 3], 3, 5, 1, 2)), [2, 3, 1, 3]);
    }

    /// 3x3 convolutions at stride 1 with at least 8 channels a side run through Winograd's
    /// F(4x4, 3x3), forward and input gradient: planes that are not whole tiles, every padding
    /// it takes, one image and several, and the transposed layer, whose forward pass is the
    /// adjoint.
    #[test]
    fn winograd_convolutions_match_candle_in_value_and_gradients() {
        let mut seed = 500;
        for (h, w) in [(8, 8), (5, 7), (1, 9), (13, 4)] {
            for padding in [0, 1, 2] {
                if h + 2 * padding < 3 || w + 2 * padding < 3 {
                    continue;
                }
                for n in [1, 3] {
                    seed += 1;
                    compare(seed, conv([n, 8, h, w], 12, 3, 1, padding));
                }
            }
        }
        assert_eq!(compare(seed + 1, conv([2, 24, 9, 9], 8, 3, 1, 1)), [2, 8, 9, 9]);
        assert_eq!(compare(seed + 2, convt([2, 16, 6, 5], 8, 3, 1, 1, 0)), [2, 8, 6, 5]);
        assert_eq!(compare(seed + 3, convt([1, 8, 4, 4], 16, 3, 1, 0, 0)), [1, 16, 6, 6]);
    }

    #[test]
    fn conv_transpose2d_matches_candle_in_value_and_gradients() {
        let mut seed = 100;
        for k in [1, 3, 4] {
            for stride in [1, 2] {
                for padding in [0, 1] {
                    for output_padding in 0..stride {
                        for n in [1, 3] {
                            seed += 1;
                            compare(seed, convt([n, 3, 5, 4], 5, k, stride, padding, output_padding));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn vq_vae2_shapes_match_candle() {
        assert_eq!(compare(7, conv([2, 1, 32, 32], 64, 4, 2, 1)), [2, 64, 16, 16]);
        assert_eq!(compare(7, conv([2, 64, 32, 32], 128, 4, 2, 1)), [2, 128, 16, 16]);
        assert_eq!(compare(7, conv([2, 128, 8, 8], 128, 3, 1, 1)), [2, 128, 8, 8]);
        assert_eq!(compare(7, conv([2, 128, 8, 8], 64, 1, 1, 0)), [2, 64, 8, 8]);
        assert_eq!(compare(8, convt([2, 64, 4, 4], 64, 4, 2, 1, 0)), [2, 64, 8, 8]);
        assert_eq!(compare(8, convt([2, 128, 8, 8], 64, 4, 2, 1, 0)), [2, 64, 16, 16]);
        assert_eq!(compare(8, convt([2, 64, 16, 16], 1, 4, 2, 1, 0)), [2, 1, 32, 32]);
    }

    /// The change of a random linear functional of the output under a perturbation of single
    /// entries of x and of the weight, against the analytic gradients. The layers are linear
    /// in each, so a central difference is exact up to rounding, which the f64 sum keeps to
    /// that of the f32 outputs.
    #[test]
    fn gradients_match_finite_differences() {
        let d = Device::Cpu;
        for transposed in [false, true] {
            let mut r = Rng::new(11, Stream::Eval, transposed as u64);
            // Weight [4, 3, 3, 3]: 3 -> 4 channels for conv2d, 4 -> 3 transposed. The input's
            // 6 x 5 leaves different remainders of the stride in height and width.
            let (x_dims, w_dims) = ([2, if transposed { 4 } else { 3 }, 6, 5], [4, 3, 3, 3]);
            let x = r.normal(&x_dims, &d).unwrap();
            let w = r.normal(&w_dims, &d).unwrap();
            let b = Var::from_tensor(&r.normal(&[if transposed { 3 } else { 4 }], &d).unwrap()).unwrap();
            let functional = |x: &Tensor, w: &Tensor| {
                let layer = Layer::new(transposed, &Var::from_tensor(w).unwrap(), &b, 2, 1, transposed as usize);
                layer.forward(x, true)
            };
            let probe = flat(&r.normal(functional(&x, &w).dims(), &d).unwrap());
            let value = |x: &Tensor, w: &Tensor| -> f64 {
                flat(&functional(x, w)).iter().zip(&probe).map(|(y, p)| *y as f64 * *p as f64).sum()
            };
            let (xv, wv) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&w).unwrap());
            let layer = Layer::new(transposed, &wv, &b, 2, 1, transposed as usize);
            let y = layer.forward(xv.as_tensor(), true);
            let probe_t = Tensor::from_vec(probe.clone(), y.dims(), &d).unwrap();
            let grads = (&y * &probe_t).unwrap().sum_all().unwrap().backward().unwrap();
            let (gx, gw) = (flat(grads.get(xv.as_tensor()).unwrap()), flat(grads.get(wv.as_tensor()).unwrap()));
            let eps = 1e-2f32;
            let perturbed = |t: &Tensor, i: usize, by: f32| {
                let mut v = flat(t);
                v[i] += by;
                Tensor::from_vec(v, t.dims(), &d).unwrap()
            };
            let len = x.elem_count();
            for i in [0, len / 7, len / 3, len / 2, len - 1] {
                let fd = (value(&perturbed(&x, i, eps), &w) - value(&perturbed(&x, i, -eps), &w)) / (2.0 * eps as f64);
                assert!(
                    (fd - gx[i] as f64).abs() < 2e-4 * (1.0 + fd.abs()),
                    "x[{i}]: {fd} vs {}, transposed {transposed}",
                    gx[i]
                );
            }
            for i in [0, 13, 50, 107] {
                let fd = (value(&x, &perturbed(&w, i, eps)) - value(&x, &perturbed(&w, i, -eps))) / (2.0 * eps as f64);
                assert!(
                    (fd - gw[i] as f64).abs() < 2e-4 * (1.0 + fd.abs()),
                    "w[{i}]: {fd} vs {}, transposed {transposed}",
                    gw[i]
                );
            }
        }
    }

    #[test]
    fn bad_shapes_are_errors_that_say_what_is_wrong() {
        let d = Device::Cpu;
        let zeros = |dims: &[usize]| Tensor::zeros(dims, DType::F32, &d).unwrap();
        let conv = Conv2d::new(zeros(&[4, 3, 3, 3]), zeros(&[4]), ConvConfig::default());
        let err = |r: candle_core::Result<Tensor>| r.unwrap_err().to_string();
        assert!(err(conv.forward(&zeros(&[2, 5, 8, 8]))).contains("has 5 channels, weight [4, 3, 3, 3] expects 3"));
        assert!(err(conv.forward(&zeros(&[3, 8, 8]))).contains("expected an input [N, C, H, W]"));
        assert!(err(conv.forward(&zeros(&[1, 3, 2, 8]))).contains("larger than the padded input"));
        let bad_bias = Conv2d::new(zeros(&[4, 3, 3, 3]), zeros(&[3]), ConvConfig::default());
        assert!(err(bad_bias.forward(&zeros(&[1, 3, 8, 8]))).contains("bias has shape [3], expected [4]"));
        let cfg = ConvTransposeConfig { stride: 2, padding: 1, output_padding: 2 };
        let convt = ConvTranspose2d::new(zeros(&[3, 4, 4, 4]), zeros(&[4]), cfg);
        assert!(err(convt.forward(&zeros(&[1, 3, 4, 4]))).contains("output_padding 2 must be smaller than stride 2"));
        // An empty batch is fine.
        assert_eq!(conv.forward(&zeros(&[0, 3, 8, 8])).unwrap().dims(), [0, 4, 6, 6]);
    }
}
