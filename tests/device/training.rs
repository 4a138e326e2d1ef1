//! One training step of a task on the CPU and on the device under test, from the same
//! parameters and batch: the loss, every gradient, every parameter and buffer after one Adam
//! step and the task's own update after it (BatchNorm's running statistics, the codebooks'
//! moving averages, the U-Net's weight average).

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use genimg::data::Batch;
use genimg::models::ModelConfig;
use genimg::nn::{Adam, AdamConfig, ParamSet, Params};
use genimg::rng::{Rng, Stream};

use crate::harness::{assert_close, assert_within, device_under_test, host, max_abs, to};

/// The seed of every initialisation and of the step's own stream.
pub const SEED: u64 = 7;
/// The loss: |cpu - device| <= LOSS * max(1, |cpu|).
const LOSS: f64 = 1e-4;
/// A gradient: max |cpu - device| <= GRAD * max(max |cpu| of that gradient, GRAD_FLOOR * the
/// largest entry of any gradient). The floor covers gradients that are mathematically zero
/// (a convolution's bias before a BatchNorm in training mode) and so hold only rounding
/// noise of the sums that cancel.
const GRAD: f64 = 1e-3;
const GRAD_FLOOR: f64 = 1e-2;
/// Buffers after the step (running statistics, codebooks, weight averages of buffers):
/// max |cpu - device| <= BUFFER * max(1, max |cpu|), the forward passes' tolerance.
const BUFFER: f64 = 1e-4;

/// Changes a fresh task's state before the step, the same on both sides.
pub type Prepare = fn(&ParamSet);

/// What one side computed.
struct Side {
    initial: BTreeMap<String, Tensor>,
    loss: f64,
    grads: BTreeMap<String, Tensor>,
    after: BTreeMap<String, Tensor>,
    model: BTreeMap<String, Tensor>,
}

/// Runs one step of the task of `config` on `batch` (on the CPU; moved to each side) on both
/// sides and compares them.
pub fn check_step(what: &str, config: ModelConfig, batch: &Batch, prepare: Option<Prepare>) {
    let Some(device) = device_under_test() else { return };
    let lr = config.family().train_defaults().0;
    let reference = run(&config, batch, prepare, lr, &Device::Cpu);
    let tested = run(&config, batch, prepare, lr, &device);
    compare(what, &reference, &tested, lr);
}

fn run(config: &ModelConfig, batch: &Batch, prepare: Option<Prepare>, lr: f64, device: &Device) -> Side {
    let mut task = genimg::tasks::build(config.clone(), Params::init(SEED, device)).expect("task builds");
    if let Some(prepare) = prepare {
        prepare(task.params());
    }
    let initial = tensors(task.params());
    let batch = Batch {
        x: to(&batch.x, device),
        y: batch.y.as_ref().map(|y| to(y, device)),
        cond: batch.cond.as_ref().map(|c| to(c, device)),
    };
    let out = task.train_step(&batch, &mut Rng::new(SEED, Stream::Step, 0)).expect("training step");
    let loss = host(&out.loss)[0];
    let store = out.loss.backward().expect("backward pass");
    let grads = task
        .params()
        .trainable()
        .filter_map(|(name, var)| store.get(var.as_tensor()).map(|g| (name.clone(), g.clone())))
        .collect();
    let mut adam = Adam::new(task.params(), AdamConfig::with_lr(lr)).expect("adam");
    adam.step(task.params(), &store).expect("adam step");
    task.after_step().expect("the task's update after the step");
    let after = tensors(task.params());
    let model = task.model_tensors().expect("model tensors").tensors;
    Side { initial, loss, grads, after, model }
}

fn tensors(params: &ParamSet) -> BTreeMap<String, Tensor> {
    params.to_tensor_map().expect("parameters").tensors
}

fn compare(what: &str, r: &Side, d: &Side, lr: f64) {
    // Drawn on the host and copied: the two sides start from the same bits.
    assert_eq!(r.initial.keys().collect::<Vec<_>>(), d.initial.keys().collect::<Vec<_>>(), "{what}: parameter names");
    for (name, t) in &r.initial {
        assert_within(&format!("{what}: initial {name}"), t, &d.initial[name], 0.0);
    }
    let loss_bound = LOSS * r.loss.abs().max(1.0);
    assert!(
        (r.loss - d.loss).abs() <= loss_bound,
        "{what}: loss cpu {} device {} differ by {:.3e} > {loss_bound:.3e}",
        r.loss,
        d.loss,
        (r.loss - d.loss).abs()
    );
    assert_eq!(
        r.grads.keys().collect::<Vec<_>>(),
        d.grads.keys().collect::<Vec<_>>(),
        "{what}: parameters with a gradient"
    );
    let ref_grads: BTreeMap<&String, Vec<f64>> = r.grads.iter().map(|(k, g)| (k, host(g))).collect();
    let largest = ref_grads.values().map(|g| max_abs(g)).fold(0.0, f64::max);
    assert!(largest > 0.0, "{what}: every gradient is zero; the step tests nothing");
    let mut dev_grads = BTreeMap::new();
    for (name, g) in &r.grads {
        let scale = max_abs(&ref_grads[name]).max(GRAD_FLOOR * largest);
        assert_within(&format!("{what}: gradient of {name}"), g, &d.grads[name], GRAD * scale);
        dev_grads.insert(name, host(&d.grads[name]));
    }
    assert_eq!(
        r.after.keys().collect::<Vec<_>>(),
        d.after.keys().collect::<Vec<_>>(),
        "{what}: tensors after the step"
    );
    for (name, t) in &r.after {
        let label = format!("{what}: {name} after one step");
        match (ref_grads.get(name), dev_grads.get(name)) {
            (Some(g_ref), Some(g_dev)) => assert_moved_alike(&label, t, &d.after[name], g_ref, g_dev, lr),
            _ => assert_close(&label, t, &d.after[name], BUFFER),
        }
    }
    assert_eq!(r.model.keys().collect::<Vec<_>>(), d.model.keys().collect::<Vec<_>>(), "{what}: model file tensors");
    for (name, t) in &r.model {
        let label = format!("{what}: model file's {name}");
        match (ref_grads.get(name), dev_grads.get(name)) {
            // A weight average mixes the parameter after the step: its bound holds too.
            (Some(g_ref), Some(g_dev)) => assert_moved_alike(&label, t, &d.model[name], g_ref, g_dev, lr),
            _ => assert_close(&label, t, &d.model[name], BUFFER),
        }
    }
}

/// Adam's first step moves each parameter by lr * g / (|g| + eps), close to lr * sign(g):
/// where a gradient is rounding noise (its sign anyone's), the two sides may move it in
/// opposite directions, so each entry is held to what the two gradients, compared above,
/// imply: |cpu - device| <= lr * (|s(g_cpu) - s(g_device)| + 1e-3) + 1e-6 * max(1, max |p|),
/// with s(g) = g / (|g| + eps). A wrong update (bias correction, moments) moves every entry
/// by a sizeable fraction of lr and fails.
fn assert_moved_alike(what: &str, reference: &Tensor, device: &Tensor, g_ref: &[f64], g_dev: &[f64], lr: f64) {
    assert_eq!(reference.dims(), device.dims(), "{what}: shapes differ (cpu, device)");
    let (r, d) = (host(reference), host(device));
    let eps = AdamConfig::with_lr(lr).eps;
    let s = |g: f64| g / (g.abs() + eps);
    let slack = 1e-6 * max_abs(&r).max(1.0);
    for i in 0..r.len() {
        let bound = lr * ((s(g_ref[i]) - s(g_dev[i])).abs() + 1e-3) + slack;
        let diff = (r[i] - d[i]).abs();
        assert!(
            diff <= bound,
            "{what}: |cpu - device| = {diff:.3e} > {bound:.3e} at flat index {i} of {:?} (cpu {}, device {}; gradients cpu {:.3e}, device {:.3e}; lr {lr})",
            reference.dims(),
            r[i],
            d[i],
            g_ref[i],
            g_dev[i]
        );
    }
}
