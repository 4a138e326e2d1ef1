//! ddpm-noise: x_t against the closed form of q(x_t | x_0), exactly given eps and in mean
//! and variance over many draws; trajectories; seeds; refusals.

use std::path::Path;

use genimg::diffusion::{Schedule, ScheduleKind};

use crate::common::{
    assert_fails_naming, read_f32, tool, train_tiny_vae, write_bad_images, write_npy_f32, write_npy_u8,
};

/// One test image in [0,1], 28x28, and the same image as the model sees it: 32x32 in [-1,1].
fn image() -> (Vec<f32>, Vec<f32>) {
    let small: Vec<f32> = (0..784).map(|i| ((i * 37) % 101) as f32 / 100.0).collect();
    let mut big = vec![-1f32; 1024];
    for (i, v) in small.iter().enumerate() {
        big[(i / 28 + 2) * 32 + i % 28 + 2] = 2.0 * v - 1.0;
    }
    (small, big)
}

fn noise(dir: &Path, args: &[&str]) {
    tool("ddpm-noise").current_dir(dir).args(args).assert().success().stdout("").stderr("");
}

/// (shape, data as f32 or i64 widened to f64) of each tensor in a .safetensors file.
fn read_named(path: &Path) -> std::collections::BTreeMap<String, (Vec<usize>, Vec<f64>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            let data = match v.dtype() {
                safetensors::Dtype::F32 => {
                    v.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64).collect()
                }
                safetensors::Dtype::I64 => {
                    v.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64).collect()
                }
                other => panic!("{k}: dtype {other:?}"),
            };
            (k, (v.shape().to_vec(), data))
        })
        .collect()
}

#[test]
fn x_t_is_the_closed_form_of_the_eps_it_reports() {
    let dir = tempfile::tempdir().unwrap();
    let (small, big) = image();
    let n = 40;
    write_npy_f32(dir.path(), "x.npy", &[n, 28, 28], &small.repeat(n));
    for schedule in ["linear", "cosine"] {
        noise(
            dir.path(),
            &["x.npy", "--t", "random", "--with-eps", "--schedule", schedule, "--seed", "2", "-o", "n.safetensors"],
        );
        let named = read_named(&dir.path().join("n.safetensors"));
        let (x_t, eps, t) = (&named["x_t"], &named["eps"], &named["t"]);
        assert_eq!((x_t.0.clone(), eps.0.clone(), t.0.clone()), (vec![n, 1, 32, 32], vec![n, 1, 32, 32], vec![n]));
        let s = Schedule::new(<ScheduleKind as clap::ValueEnum>::from_str(schedule, false).unwrap(), 1000);
        let mut distinct = t.1.clone();
        distinct.dedup();
        assert!(distinct.len() > 30, "t is not drawn per image: {:?}", t.1);
        for i in 0..n {
            let step = t.1[i] as usize;
            assert!(step < 1000);
            let (a, sd) = s.q_coefficients(step);
            for (p, &x0) in big.iter().enumerate() {
                let want = a * x0 as f64 + sd * eps.1[i * 1024 + p];
                assert!((x_t.1[i * 1024 + p] - want).abs() < 1e-5, "{schedule}: image {i} t {step} pixel {p}");
            }
        }
    }
}

#[test]
fn marginals_match_q_x_t_given_x_0() {
    let dir = tempfile::tempdir().unwrap();
    let n = 2000;
    // u8 input: 0..255 maps to [-1, 1], padded with -1 (black) to 32x32.
    let pixels: Vec<u8> = (0..784).map(|i| ((i * 37) % 256) as u8).collect();
    write_npy_u8(dir.path(), "x.npy", &[n, 28, 28], &pixels.repeat(n));
    let mut big = vec![-1f64; 1024];
    for (i, &v) in pixels.iter().enumerate() {
        big[(i / 28 + 2) * 32 + i % 28 + 2] = 2.0 * (v as f64 / 255.0) - 1.0;
    }
    let s = Schedule::new(ScheduleKind::Linear, 1000);
    for t in [0usize, 100, 999] {
        noise(dir.path(), &["x.npy", "--t", &t.to_string(), "-o", "xt.npy"]);
        let (shape, v) = read_f32(&dir.path().join("xt.npy"));
        assert_eq!(shape, [n, 1, 32, 32]);
        let (a, sd) = s.q_coefficients(t);
        let (mut worst_mean, mut worst_var) = (0f64, 0f64);
        for p in 0..1024 {
            let mean = (0..n).map(|i| v[i * 1024 + p] as f64).sum::<f64>() / n as f64;
            let var = (0..n).map(|i| (v[i * 1024 + p] as f64 - mean).powi(2)).sum::<f64>() / n as f64;
            // Standard errors with 2000 draws: sd / 45 for the mean, var / 32 for the variance.
            worst_mean = worst_mean.max((mean - a * big[p]).abs() / (sd / 44.7));
            worst_var = worst_var.max((var - sd * sd).abs() / (sd * sd / 31.6));
        }
        // Over 1024 pixels the largest of 1024 standard normal deviations stays under about 4.5.
        assert!(worst_mean < 5.0 && worst_var < 5.5, "t {t}: mean off by {worst_mean}, variance by {worst_var} sd");
    }
}

#[test]
fn trajectories_put_each_images_steps_together_with_one_eps() {
    let dir = tempfile::tempdir().unwrap();
    let (small, big) = image();
    let flipped: Vec<f32> = small.iter().map(|v| 1.0 - v).collect();
    write_npy_f32(dir.path(), "x.npy", &[2, 28, 28], &[small.clone(), flipped].concat());
    noise(dir.path(), &["x.npy", "--trajectory", "0,250,999", "-o", "tr.npy"]);
    let (shape, v) = read_f32(&dir.path().join("tr.npy"));
    assert_eq!(shape, [6, 1, 32, 32]);
    let s = Schedule::new(ScheduleKind::Linear, 1000);
    // Rows 0..3 are image 0 at t = 0, 250, 999; the noise they imply is the same.
    let implied = |row: usize, t: usize| -> Vec<f64> {
        let (a, sd) = s.q_coefficients(t);
        (0..1024).map(|p| (v[row * 1024 + p] as f64 - a * big[p] as f64) / sd).collect()
    };
    let (e0, e1, e2) = (implied(0, 0), implied(1, 250), implied(2, 999));
    for p in 0..1024 {
        assert!((e0[p] - e1[p]).abs() < 1e-2 && (e1[p] - e2[p]).abs() < 1e-3, "pixel {p}");
    }
    // The same seed repeats; another differs; --clip stays in [-1, 1].
    noise(dir.path(), &["x.npy", "--trajectory", "0,250,999", "-o", "again.npy"]);
    assert_eq!(read_f32(&dir.path().join("again.npy")).1, v);
    noise(dir.path(), &["x.npy", "--trajectory", "0,250,999", "--seed", "1", "--clip", "-o", "other.npy"]);
    let other = read_f32(&dir.path().join("other.npy")).1;
    assert_ne!(other, v);
    assert!(other.iter().all(|x| (-1.0..=1.0).contains(x)));
}

#[test]
fn refuses_steps_out_of_range_bad_images_and_other_models() {
    let dir = tempfile::tempdir().unwrap();
    let (small, _) = image();
    write_npy_f32(dir.path(), "x.npy", &[1, 28, 28], &small);
    for (args, culprit) in [
        (vec!["--t", "1000"], "[0, 999]"),
        (vec!["--trajectory", "0,1000"], "[0, 999]"),
        (vec!["--t", "20", "--timesteps", "10"], "[0, 9]"),
    ] {
        let mut cmd = tool("ddpm-noise");
        cmd.current_dir(dir.path()).arg("x.npy").args(&args).args(["-o", "out.npy"]);
        assert_fails_naming(&mut cmd, dir.path(), culprit);
    }
    let mut cases = write_bad_images(dir.path());
    // Without a model the preset takes the images' geometry: these two are noised in colour / at 64x64.
    cases.retain(|(name, _)| !["big.npy", "rgb.npy"].contains(name));
    for (file, word) in cases {
        let mut cmd = tool("ddpm-noise");
        cmd.current_dir(dir.path()).args([file, "--t", "5", "-o", "out.npy"]);
        let line = assert_fails_naming(&mut cmd, dir.path(), file);
        assert!(line.contains(word), "{file}: {line}");
    }
    for (file, shape) in [("rgb.npy", [2, 3, 32, 32]), ("big.npy", [2, 1, 64, 64])] {
        tool("ddpm-noise").current_dir(dir.path()).args([file, "--t", "5", "-o", "out.npy"]).assert().success();
        let bytes = std::fs::read(dir.path().join("out.npy")).unwrap();
        let header = String::from_utf8_lossy(&bytes[..128]).into_owned();
        let want = format!("({}, {}, {}, {})", shape[0], shape[1], shape[2], shape[3]);
        assert!(header.contains(&want), "{file}: {header}");
    }
    train_tiny_vae(dir.path(), "vae.safetensors", 2);
    let mut cmd = tool("ddpm-noise");
    cmd.current_dir(dir.path()).args(["x.npy", "--t", "5", "--model", "vae.safetensors", "-o", "out.npy"]);
    let line = assert_fails_naming(&mut cmd, dir.path(), "vae.safetensors");
    assert!(line.contains("is a vae-mlp checkpoint, expected ddpm-unet"), "{line}");
}
