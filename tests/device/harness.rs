//! The device under test, and comparisons of what it computes with what the CPU computes.

use std::env::VarError;

use candle_core::{DType, Device, Tensor};

/// The variable naming the device under test.
const VARIABLE: &str = "GENIMG_TEST_DEVICE";

/// The device `GENIMG_TEST_DEVICE` names (`cpu`, `cuda`, `cuda:N`); unset, CUDA device 0
/// when this build and machine have one. `None` (after one `skipped:` line on stderr) when
/// unset and there is none: the test then returns at once. A named device that cannot be
/// opened is a failure, so that a GPU run never passes by skipping.
pub fn device_under_test() -> Option<Device> {
    match std::env::var(VARIABLE) {
        Ok(name) => Some(named(&name).unwrap_or_else(|e| panic!("{VARIABLE}={name}: {e}"))),
        Err(VarError::NotUnicode(name)) => panic!("{VARIABLE}={name:?} is not a device name"),
        Err(VarError::NotPresent) if !candle_core::utils::cuda_is_available() => {
            eprintln!("skipped: this build has no CUDA support (--features cuda) and {VARIABLE} is unset");
            None
        }
        Err(VarError::NotPresent) => match genimg::cuda::open(0) {
            Ok(device) => Some(device),
            Err(e) => {
                eprintln!("skipped: no CUDA device ({e}) and {VARIABLE} is unset");
                None
            }
        },
    }
}

fn named(name: &str) -> Result<Device, String> {
    let ordinal = match name {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        _ => match name.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => n,
            _ => return Err("expected cpu, cuda or cuda:N".into()),
        },
    };
    genimg::cuda::open(ordinal).map_err(|e| e.to_string())
}

/// A tensor's values on the host, as f64, in row-major order.
pub fn host(t: &Tensor) -> Vec<f64> {
    t.to_device(&Device::Cpu)
        .and_then(|t| t.to_dtype(DType::F64))
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .unwrap_or_else(|e| panic!("reading a tensor of shape {:?} back: {e}", t.dims()))
}

/// The largest absolute value.
pub fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// Asserts that `reference` (the CPU's) and `device` have one shape and that
/// max |reference - device| <= `bound`, naming `what` and the worst entry when not.
pub fn assert_within(what: &str, reference: &Tensor, device: &Tensor, bound: f64) {
    assert_eq!(reference.dims(), device.dims(), "{what}: shapes differ (cpu, device)");
    let (r, d) = (host(reference), host(device));
    let (at, diff) = worst(&r, &d);
    assert!(
        diff <= bound,
        "{what}: max |cpu - device| = {diff:.3e} > {bound:.3e} at flat index {at} of {:?} (cpu {}, device {}); max |cpu| = {:.3e}",
        reference.dims(),
        r[at],
        d[at],
        max_abs(&r)
    );
}

/// Asserts max |reference - device| <= `rel` * max(1, max |reference|).
pub fn assert_close(what: &str, reference: &Tensor, device: &Tensor, rel: f64) {
    assert_within(what, reference, device, rel * max_abs(&host(reference)).max(1.0));
}

/// Asserts that two integer tensors (codes) are equal, naming the first difference.
pub fn assert_same_codes(what: &str, reference: &Tensor, device: &Tensor) {
    assert_eq!(reference.dims(), device.dims(), "{what}: shapes differ (cpu, device)");
    let (r, d) = (host(reference), host(device));
    if let Some(at) = r.iter().zip(&d).position(|(a, b)| a != b) {
        let differ = r.iter().zip(&d).filter(|(a, b)| a != b).count();
        panic!(
            "{what}: {differ} of {} codes differ, first at flat index {at}: cpu {}, device {}",
            r.len(),
            r[at],
            d[at]
        );
    }
}

/// The index and size of the largest absolute difference (a NaN on either side counts as
/// infinite).
pub fn worst(reference: &[f64], device: &[f64]) -> (usize, f64) {
    reference
        .iter()
        .zip(device)
        .map(|(a, b)| if (a - b).is_nan() { f64::INFINITY } else { (a - b).abs() })
        .enumerate()
        .fold((0, 0.0), |best, (i, d)| if d > best.1 { (i, d) } else { best })
}

/// `t` moved to `device`.
pub fn to(t: &Tensor, device: &Device) -> Tensor {
    t.to_device(device).unwrap_or_else(|e| panic!("moving a tensor of shape {:?} to {device:?}: {e}", t.dims()))
}
