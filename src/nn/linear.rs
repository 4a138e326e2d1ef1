//! A fully connected layer, `nn.Linear` (weight [out, in], bias [out]).
//!
//! On the CPU it runs as one fused op: the forward pass is a single gemm into a buffer
//! pre-filled with the bias, and the backward pass writes contiguous gradients and skips the
//! gradient of inputs that need none (the data). candle's own `Linear` hands the weight a
//! transposed gradient that its gradient store then adds element by element, and computes
//! the data's gradient too: together they made the VAE's backward pass 3x its forward pass.
//!
//! Device rule: a CPU kernel for f32 inputs [N, in]; elsewhere (and for other ranks and
//! dtypes) candle's matmul and broadcast add ([`Linear::forward_reference`]), tested against
//! it in `fused_op_matches_candle_in_value_and_gradient`.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Module, Shape, Tensor};

use super::gemm::{contiguous_f32, matmul, transpose, Mat};

#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Tensor) -> Self {
        Linear { weight, bias }
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// candle's unfused computation, kept as the reference.
    pub fn forward_reference(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)
    }
}

impl Module for Linear {
    /// `x` [N, in] -> [N, out], by the module's device rule.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if x.device().is_cpu() && x.rank() == 2 && x.dtype() == candle_core::DType::F32 {
            x.contiguous()?.apply_op3(&self.weight, &self.bias, LinearOp)
        } else {
            self.forward_reference(x)
        }
    }
}

struct LinearOp;

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w, b) = (
            contiguous_f32(self.name(), xs, xl)?,
            contiguous_f32(self.name(), ws, wl)?,
            contiguous_f32(self.name(), bs, bl)?,
        );
        let (n, k) = xl.shape().dims2()?;
        let (m, k2) = wl.shape().dims2()?;
        if k != k2 || b.len() != m {
            candle_core::bail!("linear: input [{n}, {k}] does not fit weight [{m}, {k2}] and bias [{}]", b.len());
        }
        let (x, w) = (Mat::rows(x, n, k), Mat::rows(w, m, k));
        let y = if n < m {
            // Fewer rows than outputs (a batch through a wide layer): Y^T = W X^T, then
            // transposed. The gemm kernel packs its operands, and packing the weight
            // through X W^T's transposed view ran [100, 1024] x [1024, 1024] at 59 GFLOP/s
            // on 2 cores, against 131 for packing X and transposing the small Y.
            let mut yt = Vec::with_capacity(m * n);
            for &b in b {
                yt.extend(std::iter::repeat_n(b, n));
            }
            matmul(&mut yt, w, x.t(), true);
            let mut y = vec![0f32; n * m];
            transpose(&yt, n, &mut y, m, m, n);
            y
        } else {
            let mut y = Vec::with_capacity(n * m);
            for _ in 0..n {
                y.extend_from_slice(b);
            }
            matmul(&mut y, x, w.t(), true);
            y
        };
        Ok((CpuStorage::F32(y), Shape::from((n, m))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let grad_x = if x.track_op() { Some(grad.apply_op2_no_bwd(w, &Product::GradInput)?) } else { None };
        let grad_w = grad.apply_op2_no_bwd(x, &Product::GradWeight)?;
        Ok((grad_x, Some(grad_w), Some(grad.apply_op1_no_bwd(&ColumnSum)?)))
    }
}

/// The two products of the backward pass, from the output gradient G [N, out]:
/// dX = G W [N, in], dW = G^T X [out, in].
enum Product {
    GradInput,
    GradWeight,
}

impl CustomOp2 for Product {
    fn name(&self) -> &'static str {
        "linear-grad"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        os: &CpuStorage,
        ol: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (g, other) = (contiguous_f32(self.name(), gs, gl)?, contiguous_f32(self.name(), os, ol)?);
        let (n, m) = gl.shape().dims2()?;
        let (r, c) = ol.shape().dims2()?;
        let (rows, cols, a, b) = match self {
            // other = W [out, in]
            Product::GradInput => (n, c, Mat::rows(g, n, m), Mat::rows(other, r, c)),
            // other = X [N, in]
            Product::GradWeight => (m, c, Mat::rows(g, n, m).t(), Mat::rows(other, r, c)),
        };
        if a.cols != b.rows {
            candle_core::bail!("linear-grad: gradient [{n}, {m}] does not fit [{r}, {c}]");
        }
        let mut out = vec![0f32; rows * cols];
        matmul(&mut out, a, b, false);
        Ok((CpuStorage::F32(out), Shape::from((rows, cols))))
    }
}

/// Sums a contiguous [N, M] over N: the bias gradient, in one pass over memory (candle's sum
/// over the first axis walks it with a stride).
struct ColumnSum;

impl CustomOp1 for ColumnSum {
    fn name(&self) -> &'static str {
        "column-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = contiguous_f32(self.name(), s, l)?;
        let (_, m) = l.shape().dims2()?;
        let mut out = vec![0f32; m];
        for row in g.chunks_exact(m.max(1)) {
            out.iter_mut().zip(row).for_each(|(o, v)| *o += v);
        }
        Ok((CpuStorage::F32(out), Shape::from(m)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Rng, Stream};
    use candle_core::{Device, Var};

    /// Both orientations of the forward product: fewer rows than outputs and more, with
    /// sizes on and off the transpose's 4x4 blocks.
    #[test]
    fn fused_op_matches_candle_in_value_and_gradient() {
        let d = Device::Cpu;
        let mut r = Rng::new(0, Stream::Eval, 0);
        for (n, out, inputs) in [(3, 5, 7), (6, 5, 7), (9, 13, 6), (13, 9, 6), (4, 8, 3)] {
            let w = Var::from_tensor(&r.normal(&[out, inputs], &d).unwrap()).unwrap();
            let b = Var::from_tensor(&r.normal(&[out], &d).unwrap()).unwrap();
            let x = Var::from_tensor(&r.normal(&[n, inputs], &d).unwrap()).unwrap();
            let lin = Linear::new(w.as_tensor().clone(), b.as_tensor().clone());
            let probe = r.normal(&[n, out], &d).unwrap();
            let run = |fast: bool| {
                let y = if fast { lin.forward(x.as_tensor()) } else { lin.forward_reference(x.as_tensor()) }.unwrap();
                let g = (&y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
                let grads: Vec<Vec<f32>> = [x.as_tensor(), w.as_tensor(), b.as_tensor()]
                    .iter()
                    .map(|t| g.get(t).unwrap().flatten_all().unwrap().to_vec1().unwrap())
                    .collect();
                (y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), grads)
            };
            let (fast, slow) = (run(true), run(false));
            let close = |a: &[f32], b: &[f32]| a.len() == b.len() && a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-4);
            assert!(close(&fast.0, &slow.0), "[{n}, {inputs}] -> {out}: {:?} vs {:?}", fast.0, slow.0);
            for (f, s) in fast.1.iter().zip(&slow.1) {
                assert!(close(f, s), "[{n}, {inputs}] -> {out}: {f:?} vs {s:?}");
            }
        }
    }
}
