//! Vector quantization with an exponential-moving-average codebook (van den Oord et al.
//! 2017, <https://arxiv.org/abs/1711.00937>; Razavi et al. 2019,
//! <https://arxiv.org/abs/1906.00446>), laid out as the `Quantize` of
//! rosinality/vq-vae-2-pytorch (<https://github.com/rosinality/vq-vae-2-pytorch>): buffers `embed` [dim, n_embed], `cluster_size` [n_embed] and `embed_avg` [dim, n_embed].
//!
//! Forward: each input vector takes its nearest code by L2 distance; the output is the code's
//! vector with a straight-through gradient (`x + (q - x).detach()`), and the commitment loss
//! is mean((sg[q] - x)^2). Training updates the codebook by EMA (decay 0.99, eps 1e-5) in
//! f32, not by gradients.
//!
//! Device rule for the EMA step: on the CPU a loop over the batch's rows
//! ([`Quantizer::update`]'s host path); elsewhere tensor ops on the device (a one-hot matrix
//! product for the statistics, masks for the restarts), so a GPU step copies back only the
//! code counts (n_embed floats, for the idle counters) instead of the batch and the codebook.
//! Both draw the same random numbers in the same order; they are tested equal.
//!
//! A living codebook: the common implementation's codebook (`randn` init) collapses on
//! MNIST to a handful of codes. Here the codebook is initialised from the first batch's
//! encoder outputs, and codes unused for `restart_after` updates are restarted from
//! randomly chosen current encoder outputs.

use candle_core::{DType, Device, Tensor, D};
use rand::Rng as _;

use crate::error::{Error, Result};
use crate::nn::params::{Init, Params};
use crate::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QuantizerConfig {
    pub dim: usize,
    pub n_embed: usize,
    pub decay: f32,
    pub eps: f32,
    /// Restart a code after this many updates without use; `None` never restarts.
    pub restart_after: Option<u32>,
}

/// One codebook and its running statistics.
pub struct Quantizer {
    pub config: QuantizerConfig,
    embed: Tensor,
    cluster_size: Tensor,
    embed_avg: Tensor,
    /// Updates since each code was last chosen (training state, not saved).
    idle: Vec<u32>,
    /// Whether the codebook is known to hold statistics (an update ran, or the buffers were
    /// checked), so the device path need not read `cluster_size` back to ask.
    started: bool,
}

/// What quantizing a batch gives.
pub struct Quantized {
    /// The codes' vectors with a straight-through gradient, shaped like the input.
    pub output: Tensor,
    /// The chosen codes, u32, shaped like the input without its last dimension.
    pub codes: Tensor,
    /// mean((sg[q] - x)^2), the commitment term.
    pub commitment: Tensor,
}

impl Quantizer {
    /// Registers the buffers `{name}.embed`, `{name}.cluster_size` and `{name}.embed_avg`.
    pub fn new(name: &str, config: QuantizerConfig, p: &mut Params) -> Result<Self> {
        let (d, n) = (config.dim, config.n_embed);
        let embed = p.buffer(&format!("{name}.embed"), &[d, n], Init::Normal(1.0))?;
        let cluster_size = p.buffer(&format!("{name}.cluster_size"), &[n], Init::Const(0.0))?;
        let embed_avg = p.buffer(&format!("{name}.embed_avg"), &[d, n], Init::Const(0.0))?;
        Ok(Quantizer { config, embed, cluster_size, embed_avg, idle: vec![0; n], started: false })
    }

    /// The nearest code of each vector of `x` [..., dim]: u32 [...].
    pub fn codes(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let flat = x.reshape(((), self.config.dim))?;
        Ok(nearest(&flat, &self.embed)?.reshape(&dims[..dims.len() - 1])?)
    }

    /// The vectors of `codes` (any integer tensor [...]): f32 [..., dim].
    pub fn embed_codes(&self, codes: &Tensor) -> Result<Tensor> {
        let dims = codes.dims().to_vec();
        let idx = codes.flatten_all()?.to_dtype(DType::U32)?;
        let max = idx.max(0)?.to_scalar::<u32>().unwrap_or(0) as usize;
        if !idx.dims().contains(&0) && max >= self.config.n_embed {
            return Err(Error::config(format!("code {max} is outside a codebook of {}", self.config.n_embed)));
        }
        let table = self.embed.t()?.contiguous()?;
        let mut out = dims;
        out.push(self.config.dim);
        Ok(table.index_select(&idx, 0)?.reshape(out)?)
    }

    /// Quantizes `x` [..., dim] (straight-through gradient, commitment loss).
    pub fn forward(&self, x: &Tensor) -> Result<Quantized> {
        let codes = self.codes(x)?;
        let q = self.embed_codes(&codes)?.detach();
        let commitment = (&q - x)?.sqr()?.mean_all()?;
        let output = (x + (q - x)?.detach())?;
        Ok(Quantized { output, codes, commitment })
    }

    /// One EMA step of the codebook with the batch `x` [..., dim] and its `codes`, then the
    /// restarts of codes idle for too long. The first update of a fresh codebook
    /// (cluster_size all zero) first replaces it with randomly chosen inputs.
    pub fn update(&mut self, x: &Tensor, codes: &Tensor, rng: &mut Rng) -> Result<()> {
        if self.embed.device().is_cpu() {
            self.update_on_host(x, codes, rng)
        } else {
            self.update_with_tensor_ops(x, codes, rng)
        }
    }

    /// [`Self::update`] as a loop over the rows on the host.
    fn update_on_host(&mut self, x: &Tensor, codes: &Tensor, rng: &mut Rng) -> Result<()> {
        let (d, n) = (self.config.dim, self.config.n_embed);
        let device = self.embed.device().clone();
        let flat: Vec<f32> = x.detach().reshape(((), d))?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let rows = flat.len() / d.max(1);
        if rows == 0 {
            return Ok(());
        }
        let mut codes: Vec<u32> = codes.flatten_all()?.to_dtype(DType::U32)?.to_vec1()?;
        let mut embed = host_columns(&self.embed, d, n)?;
        let mut cluster_size: Vec<f32> = self.cluster_size.to_vec1()?;
        let mut embed_avg = host_columns(&self.embed_avg, d, n)?;
        if cluster_size.iter().all(|&c| c == 0.0) {
            for code in embed.iter_mut() {
                let r = rng.inner().random_range(0..rows);
                code.copy_from_slice(&flat[r * d..(r + 1) * d]);
            }
            let inputs = Tensor::from_slice(&flat, (rows, d), &device)?;
            codes = nearest(&inputs, &device_columns(&embed, d, n, &device)?)?.to_vec1()?;
            // Each code starts as the running average of one input.
            embed_avg.clone_from(&embed);
            cluster_size.fill(1.0);
        }
        // Batch statistics: how often each code was chosen and the sum of its inputs.
        let mut count = vec![0f32; n];
        let mut sum = vec![vec![0f32; d]; n];
        for (row, &c) in codes.iter().enumerate() {
            count[c as usize] += 1.0;
            sum[c as usize].iter_mut().zip(&flat[row * d..(row + 1) * d]).for_each(|(s, v)| *s += v);
        }
        let (decay, eps) = (self.config.decay, self.config.eps);
        for k in 0..n {
            cluster_size[k] = decay * cluster_size[k] + (1.0 - decay) * count[k];
            embed_avg[k].iter_mut().zip(&sum[k]).for_each(|(a, s)| *a = decay * *a + (1.0 - decay) * s);
        }
        // Laplace smoothing keeps a rarely used code's divisor away from zero.
        let total: f32 = cluster_size.iter().sum();
        for k in 0..n {
            let smoothed = (cluster_size[k] + eps) / (total + n as f32 * eps) * total;
            embed[k].iter_mut().zip(&embed_avg[k]).for_each(|(e, a)| *e = a / smoothed);
        }
        if let Some(after) = self.config.restart_after {
            for k in 0..n {
                self.idle[k] = if count[k] > 0.0 { 0 } else { self.idle[k].saturating_add(1) };
                if self.idle[k] >= after {
                    let r = rng.inner().random_range(0..rows);
                    embed[k].copy_from_slice(&flat[r * d..(r + 1) * d]);
                    embed_avg[k].clone_from(&embed[k]);
                    cluster_size[k] = 1.0;
                    self.idle[k] = 0;
                }
            }
        }
        // Written into the buffers' own storage, which the parameter store shares.
        self.embed.slice_set(&device_columns(&embed, d, n, &device)?, 0, 0)?;
        self.embed_avg.slice_set(&device_columns(&embed_avg, d, n, &device)?, 0, 0)?;
        self.cluster_size.slice_set(&Tensor::from_vec(cluster_size, n, &device)?, 0, 0)?;
        Ok(())
    }

    /// [`Self::update`] as tensor ops on the buffers' device: the same arithmetic as the host
    /// loop, with the random rows drawn on the host in the same order.
    fn update_with_tensor_ops(&mut self, x: &Tensor, codes: &Tensor, rng: &mut Rng) -> Result<()> {
        let (d, n) = (self.config.dim, self.config.n_embed);
        let flat = x.detach().reshape(((), d))?.to_dtype(DType::F32)?.contiguous()?;
        let rows = flat.dim(0)?;
        if rows == 0 {
            return Ok(());
        }
        let device = flat.device().clone();
        // Columns [d, n] of chosen rows of the batch: row `picks[k]` for code k.
        let rows_as_columns = |picks: Vec<u32>| -> Result<Tensor> {
            Ok(flat.index_select(&Tensor::from_vec(picks, n, &device)?, 0)?.t()?)
        };
        let mut codes = codes.flatten_all()?.to_dtype(DType::U32)?;
        let (mut embed_avg, mut cluster_size) = (self.embed_avg.clone(), self.cluster_size.clone());
        if !self.started {
            // Read back once, at the first update: is this a fresh codebook?
            self.started = cluster_size.to_vec1::<f32>()?.iter().any(|&c| c != 0.0);
        }
        if !self.started {
            let picks = (0..n).map(|_| rng.inner().random_range(0..rows) as u32).collect();
            let embed = rows_as_columns(picks)?;
            codes = nearest(&flat, &embed)?;
            embed_avg = embed;
            cluster_size = Tensor::ones(n, DType::F32, &device)?;
        }
        // Batch statistics: a one-hot [rows, n] of the codes, its column sums (how often each
        // code was chosen) and its product with the inputs (the sum of each code's inputs).
        let one_hot = codes
            .unsqueeze(1)?
            .broadcast_eq(&Tensor::arange(0u32, n as u32, &device)?.unsqueeze(0)?)?
            .to_dtype(DType::F32)?;
        let count = one_hot.sum(0)?;
        let sum = flat.t()?.matmul(&one_hot)?;
        let (decay, eps) = (self.config.decay as f64, self.config.eps as f64);
        let mut cluster_size = ((cluster_size * decay)? + (&count * (1.0 - decay))?)?;
        let mut embed_avg = ((embed_avg * decay)? + (sum * (1.0 - decay))?)?;
        // Laplace smoothing, as on the host.
        let total = cluster_size.sum_all()?;
        let smoothed = ((&cluster_size + eps)?.broadcast_div(&((&total + n as f64 * eps)?))?.broadcast_mul(&total))?;
        let mut embed = embed_avg.broadcast_div(&smoothed.unsqueeze(0)?)?;
        if let Some(after) = self.config.restart_after {
            let count = count.to_vec1::<f32>()?;
            let (mut mask, mut picks) = (vec![0f32; n], vec![0u32; n]);
            for k in 0..n {
                self.idle[k] = if count[k] > 0.0 { 0 } else { self.idle[k].saturating_add(1) };
                if self.idle[k] >= after {
                    picks[k] = rng.inner().random_range(0..rows) as u32;
                    mask[k] = 1.0;
                    self.idle[k] = 0;
                }
            }
            if mask.contains(&1.0) {
                let restarted = rows_as_columns(picks)?;
                let mask = Tensor::from_vec(mask, n, &device)?;
                let keep = (1.0 - &mask)?;
                let blend = |old: &Tensor| -> Result<Tensor> {
                    Ok((old.broadcast_mul(&keep)? + restarted.broadcast_mul(&mask)?)?)
                };
                embed = blend(&embed)?;
                embed_avg = blend(&embed_avg)?;
                cluster_size = ((cluster_size * &keep)? + &mask)?;
            }
        }
        self.embed.slice_set(&embed.contiguous()?, 0, 0)?;
        self.embed_avg.slice_set(&embed_avg.contiguous()?, 0, 0)?;
        self.cluster_size.slice_set(&cluster_size.contiguous()?, 0, 0)?;
        self.started = true;
        Ok(())
    }

    /// How many codes `codes` uses, and the perplexity exp(H) of their frequencies.
    pub fn usage(&self, codes: &Tensor) -> Result<(usize, f64)> {
        let codes: Vec<u32> = codes.flatten_all()?.to_dtype(DType::U32)?.to_vec1()?;
        let mut count = vec![0usize; self.config.n_embed];
        for &c in &codes {
            count[c as usize] += 1;
        }
        let total = codes.len().max(1) as f64;
        let entropy: f64 =
            count.iter().filter(|&&c| c > 0).map(|&c| -(c as f64 / total) * (c as f64 / total).ln()).sum();
        Ok((count.iter().filter(|&&c| c > 0).count(), entropy.exp()))
    }

    /// Updates since each code was last used (saved in the training state for `--resume`).
    pub fn idle(&self) -> &[u32] {
        &self.idle
    }

    pub fn set_idle(&mut self, idle: Vec<u32>) -> Result<()> {
        if idle.len() != self.config.n_embed {
            return Err(Error::config(format!(
                "idle counters for {} codes, expected {}",
                idle.len(),
                self.config.n_embed
            )));
        }
        self.idle = idle;
        Ok(())
    }
}

/// The columns of a [dim, n] tensor as n host vectors.
fn host_columns(t: &Tensor, d: usize, n: usize) -> Result<Vec<Vec<f32>>> {
    Ok(t.to_dtype(DType::F32)?.t()?.contiguous()?.reshape((n, d))?.to_vec2()?)
}

/// n host vectors as a [dim, n] tensor.
fn device_columns(cols: &[Vec<f32>], d: usize, n: usize, device: &Device) -> Result<Tensor> {
    let flat: Vec<f32> = cols.iter().flatten().copied().collect();
    Ok(Tensor::from_vec(flat, (n, d), device)?.t()?.contiguous()?)
}

/// The nearest column of `embed` [dim, n] to each row of `flat` [rows, dim]: u32 [rows].
fn nearest(flat: &Tensor, embed: &Tensor) -> Result<Tensor> {
    // |x|^2 - 2 x.e + |e|^2, minimised over codes; |x|^2 is constant per row.
    let cross = flat.matmul(embed)?;
    let norms = embed.sqr()?.sum_keepdim(0)?;
    let dist = norms.broadcast_sub(&(cross * 2.0)?)?;
    Ok(dist.argmin(D::Minus1)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Stream;
    use candle_core::Var;

    fn quantizer(restart_after: Option<u32>) -> (Quantizer, crate::nn::ParamSet) {
        let config = QuantizerConfig { dim: 2, n_embed: 3, decay: 0.5, eps: 1e-5, restart_after };
        let mut p = Params::load(
            [
                // Codes (columns): (0, 0), (10, 0), (0, 10).
                ("q.embed".to_string(), Tensor::new(&[[0f32, 10.0, 0.0], [0.0, 0.0, 10.0]], &Device::Cpu).unwrap()),
                ("q.cluster_size".to_string(), Tensor::new(&[1f32, 1.0, 1.0], &Device::Cpu).unwrap()),
                ("q.embed_avg".to_string(), Tensor::new(&[[0f32, 10.0, 0.0], [0.0, 0.0, 10.0]], &Device::Cpu).unwrap()),
            ]
            .into(),
            "test",
            &Device::Cpu,
        );
        let q = Quantizer::new("q", config, &mut p).unwrap();
        (q, p.finish().unwrap())
    }

    #[test]
    fn picks_the_nearest_code_and_embeds_codes() {
        let (q, _) = quantizer(None);
        let x = Tensor::new(&[[[1f32, 1.0], [9.0, -1.0]], [[2.0, 7.0], [-3.0, 0.5]]], &Device::Cpu).unwrap();
        assert_eq!(q.codes(&x).unwrap().to_vec2::<u32>().unwrap(), vec![vec![0, 1], vec![2, 0]]);
        let e = q.embed_codes(&Tensor::new(&[2u32, 1], &Device::Cpu).unwrap()).unwrap();
        assert_eq!(e.to_vec2::<f32>().unwrap(), vec![vec![0.0, 10.0], vec![10.0, 0.0]]);
        assert!(q.embed_codes(&Tensor::new(&[3u32], &Device::Cpu).unwrap()).is_err());
    }

    /// The output is the code vector, and the gradient passes straight through to the input:
    /// d/dx f(q(x)) = f'(q) for any f.
    #[test]
    fn straight_through_gradient_is_the_gradient_at_the_quantized_value() {
        let (q, _) = quantizer(None);
        let x = Var::new(&[[1f32, 1.0], [9.0, -1.0]], &Device::Cpu).unwrap();
        let out = q.forward(x.as_tensor()).unwrap();
        assert_eq!(out.output.to_vec2::<f32>().unwrap(), vec![vec![0.0, 0.0], vec![10.0, 0.0]]);
        // f(y) = sum(y^2): f'(q) = 2q.
        let g = out.output.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(g.get(x.as_tensor()).unwrap().to_vec2::<f32>().unwrap(), vec![vec![0.0, 0.0], vec![20.0, 0.0]]);
        // Commitment: mean((q - x)^2) = (1 + 1 + 1 + 1) / 4.
        assert!((out.commitment.to_scalar::<f32>().unwrap() - 1.0).abs() < 1e-6);
    }

    /// One EMA step by hand, decay 0.5: inputs (1, 1), (3, 1) both take code 0.
    /// cluster_size = 0.5 * [1, 1, 1] + 0.5 * [2, 0, 0] = [1.5, 0.5, 0.5];
    /// embed_avg[:, 0] = 0.5 * (0, 0) + 0.5 * (4, 2) = (2, 1); the others halve.
    /// n = 2.5; smoothed size of code 0 = (1.5 + 1e-5) / (2.5 + 3e-5) * 2.5;
    /// embed[:, 0] = (2, 1) / that = (1.33333, 0.66667); embed[:, 1] = (5, 0) / 0.5 = (10, 0).
    #[test]
    fn ema_update_matches_a_hand_computed_step() {
        let (mut q, set) = quantizer(None);
        let x = Tensor::new(&[[1f32, 1.0], [3.0, 1.0]], &Device::Cpu).unwrap();
        let codes = q.codes(&x).unwrap();
        q.update(&x, &codes, &mut Rng::new(0, Stream::Step, 0)).unwrap();
        let size = set.get("q.cluster_size").unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(size, vec![1.5, 0.5, 0.5]);
        let embed = set.get("q.embed").unwrap().to_vec2::<f32>().unwrap();
        let s0 = (1.5 + 1e-5) / (2.5 + 3e-5) * 2.5;
        let want = [
            [2.0 / s0, 5.0 / ((0.5 + 1e-5) / (2.5 + 3e-5) * 2.5), 0.0],
            [1.0 / s0, 0.0, 5.0 / ((0.5 + 1e-5) / (2.5 + 3e-5) * 2.5)],
        ];
        for (row, want_row) in embed.iter().zip(want) {
            for (g, w) in row.iter().zip(want_row) {
                assert!((g - w as f32).abs() < 1e-4, "{embed:?}");
            }
        }
        assert_eq!(
            set.get("q.embed_avg").unwrap().to_vec2::<f32>().unwrap(),
            vec![vec![2.0, 5.0, 0.0], vec![1.0, 0.0, 5.0]]
        );
    }

    #[test]
    fn idle_codes_restart_from_current_inputs_and_usage_is_counted() {
        let (mut q, set) = quantizer(Some(2));
        let x = Tensor::new(&[[1f32, 1.0], [0.5, 0.2]], &Device::Cpu).unwrap();
        for step in 0..2 {
            let codes = q.codes(&x).unwrap();
            q.update(&x, &codes, &mut Rng::new(0, Stream::Step, step)).unwrap();
        }
        // Codes 1 and 2 went unused twice: both now sit on one of the inputs.
        let embed = set.get("q.embed").unwrap().t().unwrap().to_vec2::<f32>().unwrap();
        for k in [1, 2] {
            assert!(embed[k] == vec![1.0, 1.0] || embed[k] == vec![0.5, 0.2], "code {k}: {:?}", embed[k]);
        }
        assert_eq!(set.get("q.cluster_size").unwrap().to_vec1::<f32>().unwrap()[1..], [1.0, 1.0]);
        let (used, perplexity) = q.usage(&Tensor::new(&[0u32, 0, 1, 2], &Device::Cpu).unwrap()).unwrap();
        assert_eq!(used, 3);
        assert!((perplexity - (1.5f64 * 2f64.ln()).exp()).abs() < 1e-9);
    }

    /// The device path (tensor ops) against the host loop, run on the CPU from the same
    /// state with the same random numbers: a fresh codebook, then steps with restarts.
    #[test]
    fn tensor_op_update_matches_the_host_loop() {
        let config = QuantizerConfig { dim: 3, n_embed: 16, decay: 0.9, eps: 1e-5, restart_after: Some(2) };
        let d = Device::Cpu;
        let run = |tensor_ops: bool| {
            let mut p = Params::init(0, &d);
            let mut q = Quantizer::new("q", config, &mut p).unwrap();
            let set = p.finish().unwrap();
            for step in 0..4 {
                // Inputs in a few tight clusters, so that some codes go idle and restart.
                let x = Rng::new(7, Stream::Step, step).normal(&[40, 3], &d).unwrap();
                let x = ((x * 0.05).unwrap() + (step % 2) as f64).unwrap();
                let codes = q.codes(&x).unwrap();
                let mut rng = Rng::new(3, Stream::Step, step);
                if tensor_ops {
                    q.update_with_tensor_ops(&x, &codes, &mut rng).unwrap();
                } else {
                    q.update_on_host(&x, &codes, &mut rng).unwrap();
                }
            }
            let get = |name: &str| set.get(name).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (get("q.embed"), get("q.embed_avg"), get("q.cluster_size"), q.idle().to_vec())
        };
        let (host, ops) = (run(false), run(true));
        assert_eq!(host.3, ops.3, "idle counters");
        assert!(host.2.contains(&1.0), "no code restarted: {:?}", host.2);
        for (name, a, b) in
            [("embed", &host.0, &ops.0), ("embed_avg", &host.1, &ops.1), ("cluster_size", &host.2, &ops.2)]
        {
            for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
                assert!((x - y).abs() <= 1e-5 * x.abs().max(1.0), "{name}[{i}]: host {x}, tensor ops {y}");
            }
        }
    }

    #[test]
    fn a_fresh_codebook_starts_from_the_inputs() {
        let config = QuantizerConfig { dim: 2, n_embed: 4, decay: 0.99, eps: 1e-5, restart_after: None };
        let mut p = Params::init(0, &Device::Cpu);
        let mut q = Quantizer::new("q", config, &mut p).unwrap();
        let set = p.finish().unwrap();
        let x = Tensor::new(&[[5f32, 5.0], [-5.0, 5.0], [5.0, -5.0]], &Device::Cpu).unwrap();
        let codes = q.codes(&x).unwrap();
        q.update(&x, &codes, &mut Rng::new(1, Stream::Step, 0)).unwrap();
        // Every code was an input when the first EMA step ran, and one step of decay 0.99
        // moves it by at most a few per cent: each code is still close to one of the inputs.
        let embed = set.get("q.embed").unwrap().t().unwrap().to_vec2::<f32>().unwrap();
        let inputs = [[5f32, 5.0], [-5.0, 5.0], [5.0, -5.0]];
        for code in embed {
            let near = inputs.iter().any(|i| i.iter().zip(&code).all(|(a, b)| (a - b).abs() < 0.3));
            assert!(near, "{code:?} is not near an input");
        }
    }
}
