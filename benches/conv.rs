//! `cargo bench --bench conv`: GFLOP/s of the fused CPU convolutions (src/nn/conv/) against
//! candle's own, as one JSON line per case on stdout.
//!
//! A forward pass is one matrix product of 2 N M K P flops (the notation of src/nn/conv/mod.rs);
//! the backward pass, with gradients of the input, the weight and the bias (all three are
//! variables here), is two more of the same size. Each figure is the median of BENCH_REPEATS (default 5) timed runs after one
//! untimed warm-up; this kind of machine is shared and noisy.

use std::time::Instant;

use candle_core::{Device, Module, Tensor, Var};
use genimg::nn::{Conv2d, ConvConfig, ConvTranspose2d, ConvTransposeConfig};
use genimg::rng::{Rng, Stream};
use serde_json::json;

/// One layer on one batch: `cin -> cout` channels, square kernel `k`, on `size` x `size`
/// inputs.
struct Case {
    transposed: bool,
    batch: usize,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    padding: usize,
    size: usize,
}

impl Case {
    fn name(&self) -> String {
        let op = if self.transposed { "conv_transpose2d" } else { "conv2d" };
        let Case { cin, cout, k, stride, padding, size, .. } = self;
        format!("{op} {cin}->{cout} {k}x{k} s{stride} p{padding} on {size}x{size}")
    }

    /// Flops of the forward pass, 2 N M K P: the underlying convolution maps conv2d's input to
    /// its output, and the transposed layer's output to its input.
    fn forward_flops(&self, x: &Tensor, y: &Tensor) -> f64 {
        let (m, c, output_side) = if self.transposed { (self.cin, self.cout, x) } else { (self.cout, self.cin, y) };
        let pixels: usize = output_side.dims()[2..].iter().product();
        2.0 * (self.batch * m * c * self.k * self.k * pixels) as f64
    }
}

enum Layer {
    Conv(Conv2d),
    Transposed(ConvTranspose2d),
}

impl Layer {
    /// Our fused layer when `fast`, else candle's reference.
    fn forward(&self, x: &Tensor, fast: bool) -> candle_core::Result<Tensor> {
        match (self, fast) {
            (Layer::Conv(l), true) => l.forward(x),
            (Layer::Conv(l), false) => l.forward_reference(x),
            (Layer::Transposed(l), true) => l.forward(x),
            (Layer::Transposed(l), false) => l.forward_reference(x),
        }
    }
}

fn repeats() -> usize {
    std::env::var("BENCH_REPEATS").ok().and_then(|v| v.parse().ok()).unwrap_or(5).max(1)
}

/// Median seconds of `f` over the repeats, after one warm-up call.
fn median_seconds(mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..repeats())
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    genimg::cli::configure_threads();
    let cases = [
        Case { transposed: false, batch: 64, cin: 64, cout: 64, k: 3, stride: 1, padding: 1, size: 32 },
        Case { transposed: false, batch: 128, cin: 1, cout: 64, k: 4, stride: 2, padding: 1, size: 32 },
        Case { transposed: false, batch: 16, cin: 64, cout: 128, k: 4, stride: 2, padding: 1, size: 64 },
        Case { transposed: true, batch: 64, cin: 64, cout: 32, k: 4, stride: 2, padding: 1, size: 16 },
        Case { transposed: true, batch: 128, cin: 128, cout: 64, k: 4, stride: 2, padding: 1, size: 8 },
    ];
    let d = Device::Cpu;
    for (i, case) in cases.iter().enumerate() {
        let mut r = Rng::new(i as u64, Stream::Eval, 0);
        let w_dims =
            if case.transposed { [case.cin, case.cout, case.k, case.k] } else { [case.cout, case.cin, case.k, case.k] };
        let x = Var::from_tensor(&r.normal(&[case.batch, case.cin, case.size, case.size], &d).expect("x")).expect("x");
        let w = Var::from_tensor(&r.normal(&w_dims, &d).expect("w")).expect("w");
        let b = Var::from_tensor(&r.normal(&[case.cout], &d).expect("b")).expect("b");
        let (w, b) = (w.as_tensor().clone(), b.as_tensor().clone());
        let layer = if case.transposed {
            let cfg = ConvTransposeConfig { stride: case.stride, padding: case.padding, output_padding: 0 };
            Layer::Transposed(ConvTranspose2d::new(w, b, cfg))
        } else {
            Layer::Conv(Conv2d::new(w, b, ConvConfig { stride: case.stride, padding: case.padding }))
        };
        let y = layer.forward(x.as_tensor(), true).expect("forward");
        let flops = case.forward_flops(x.as_tensor(), &y);
        let gflops = |fast: bool, backward: bool| {
            let seconds = median_seconds(|| {
                let y = layer.forward(x.as_tensor(), fast).expect("forward");
                if backward {
                    y.backward().expect("backward");
                }
            });
            let work = if backward { 3.0 * flops } else { flops };
            (work / seconds / 1e9 * 10.0).round() / 10.0
        };
        let line = json!({
            "bench": "conv",
            "case": case.name(),
            "batch": case.batch,
            "gflop_fwd": (flops / 1e8).round() / 10.0,
            "fwd_gflops": gflops(true, false),
            "fwd_gflops_candle": gflops(false, false),
            "fwd_bwd_gflops": gflops(true, true),
            "fwd_bwd_gflops_candle": gflops(false, true),
            "repeats": repeats(),
        });
        println!("{line}");
    }
}
