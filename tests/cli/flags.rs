//! The flags every tool of a kind promises: `--batch-size` where a tool batches (results that
//! do not depend on it where no draw depends on it), `--device` and `--preset` where a tool
//! runs a network, presets listed in `--help`, and flags that cannot work refused.

use crate::common::{read_f32, tool, train_tiny_vae, write_tiny_data};

fn help(name: &str) -> String {
    String::from_utf8(tool(name).arg("--help").output().unwrap().stdout).unwrap()
}

#[test]
fn training_help_lists_the_presets_each_tool_takes() {
    let vae = help("vae-train");
    for preset in ["vae-mlp", "vib-mlp", "vqvae2-mnist"] {
        assert!(vae.contains(preset), "vae-train --help does not name {preset}: {vae}");
    }
    assert!(help("ddpm-train").contains("ddpm-unet-mnist"));
    let prior = help("prior-fit");
    assert!(prior.contains("pixelcnn-prior"));
    let eval = &prior[prior.find("--eval-data").unwrap()..];
    assert!(eval[..eval.find('\n').unwrap() + 100].contains("codes"), "{eval}");
}

#[test]
fn vae_tools_batch_without_changing_what_they_compute() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train_tiny_vae(d, "vae.safetensors", 2);
    for batch in ["1000", "7"] {
        tool("vae-encode")
            .current_dir(d)
            .args(["--model", "vae.safetensors", "--data", "mnist", "--split", "test", "--batch-size", batch])
            .args(["-o", &format!("z{batch}.npy")])
            .assert()
            .success();
        tool("vae-decode")
            .current_dir(d)
            .args(["--model", "vae.safetensors", "--batch-size", batch, "z1000.npy", "-o", &format!("x{batch}.npy")])
            .assert()
            .success();
        tool("vae-eval")
            .current_dir(d)
            .args(["--model", "vae.safetensors", "-k", "0", "--batch-size", batch, "-o", &format!("e{batch}.json")])
            .assert()
            .success();
    }
    // The posterior mean and the decoder's mean are per image, and the matrix products sum
    // each entry in the same order in any batch: the same bits.
    for (a, b) in [("z7.npy", "z1000.npy"), ("x7.npy", "x1000.npy")] {
        let ((sa, va), (sb, vb)) = (read_f32(&d.join(a)), read_f32(&d.join(b)));
        assert_eq!(sa, sb);
        assert!(va.iter().zip(&vb).all(|(x, y)| x.to_bits() == y.to_bits()), "{a} and {b} differ");
    }
    // The ELBO draws z per batch: the figure moves a little with the batch, not the count.
    let report = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(d.join(name)).unwrap()).unwrap()
    };
    let (a, b) = (report("e7.json"), report("e1000.json"));
    assert_eq!(a["images"], b["images"]);
    assert!((a["recon_mse"].as_f64().unwrap() - b["recon_mse"].as_f64().unwrap()).abs() < 1e-6, "{a} {b}");
    tool("vae-eval").current_dir(d).args(["--model", "vae.safetensors", "--batch-size", "0"]).assert().code(2);
}

#[test]
fn ddpm_noise_takes_a_device_a_preset_and_a_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_tiny_data(d);
    for (batch, out) in [("3", "a.npy"), ("256", "b.npy")] {
        tool("ddpm-noise")
            .current_dir(d)
            .args([
                "images.npy",
                "--t",
                "random",
                "--preset",
                "ddpm-unet-mnist",
                "--device",
                "cpu",
                "--batch-size",
                batch,
            ])
            .args(["-o", out])
            .assert()
            .success();
    }
    // Image i's t and eps come from the seed and i alone.
    assert_eq!(read_f32(&d.join("a.npy")), read_f32(&d.join("b.npy")));
    let out =
        tool("ddpm-noise").current_dir(d).args(["images.npy", "--t", "5", "--preset", "vae-mlp"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ddpm-unet-mnist"));
}

#[test]
fn two_inputs_that_both_read_stdin_are_refused_before_anything_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: [(&str, &[&str], &str); 4] = [
        ("vq-encode", &["--model", "vq.safetensors", "-", "--labels", "-"], "INPUT and --labels"),
        ("vae-encode", &["--model", "-", "-"], "--model and INPUT"),
        ("prior-fit", &["-", "--eval-data", "-", "-o", "p.safetensors"], "INPUT and --eval-data"),
        ("vae-train", &["--data", "-", "--labels", "-", "-o", "m.safetensors"], "--data and --labels"),
    ];
    for (name, args, clash) in cases {
        let out = tool(name).current_dir(d).args(args).write_stdin("").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{name}: {stderr}");
        assert!(stderr.contains(clash) && stderr.contains("both read stdin"), "{name}: {stderr}");
        assert!(super::common::dir_entries(d).is_empty(), "{name} left files behind");
    }
}
