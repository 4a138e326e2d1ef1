//! genimg: every tool in one executable, chosen by the name it is run as (busybox-style).
//! One file carries the whole toolkit where one file is what fits, e.g. a CUDA build (40-60 MB
//! a tool) taken to a GPU machine:
//!
//!   genimg --install DIR     links DIR/vae-train, DIR/prior-fit, ... to this executable
//!   genimg vae-train ARGS    the same as `vae-train ARGS`
//!
//! Each tool's `main` is its own `bin/` file's, included here as a module.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode};

#[path = "ddpm-denoise.rs"]
mod ddpm_denoise;
#[path = "ddpm-eval.rs"]
mod ddpm_eval;
#[path = "ddpm-noise.rs"]
mod ddpm_noise;
#[path = "ddpm-train.rs"]
mod ddpm_train;
#[path = "img-classify.rs"]
mod img_classify;
#[path = "img-fid.rs"]
mod img_fid;
#[path = "img-grid.rs"]
mod img_grid;
#[path = "img-pack.rs"]
mod img_pack;
#[path = "img-plot.rs"]
mod img_plot;
#[path = "img-select.rs"]
mod img_select;
#[path = "prior-fit.rs"]
mod prior_fit;
#[path = "prior-sample.rs"]
mod prior_sample;
#[path = "tensor-cat.rs"]
mod tensor_cat;
#[path = "vae-decode.rs"]
mod vae_decode;
#[path = "vae-encode.rs"]
mod vae_encode;
#[path = "vae-eval.rs"]
mod vae_eval;
#[path = "vae-train.rs"]
mod vae_train;
#[path = "vq-decode.rs"]
mod vq_decode;
#[path = "vq-encode.rs"]
mod vq_encode;

/// A tool's name and its `main`.
type Tool = (&'static str, fn() -> ExitCode);

/// Every tool, by the name it is run as.
const TOOLS: &[Tool] = &[
    ("ddpm-denoise", ddpm_denoise::main),
    ("ddpm-eval", ddpm_eval::main),
    ("ddpm-noise", ddpm_noise::main),
    ("ddpm-train", ddpm_train::main),
    ("img-classify", img_classify::main),
    ("img-fid", img_fid::main),
    ("img-grid", img_grid::main),
    ("img-pack", img_pack::main),
    ("img-plot", img_plot::main),
    ("img-select", img_select::main),
    ("prior-fit", prior_fit::main),
    ("prior-sample", prior_sample::main),
    ("tensor-cat", tensor_cat::main),
    ("vae-decode", vae_decode::main),
    ("vae-encode", vae_encode::main),
    ("vae-eval", vae_eval::main),
    ("vae-train", vae_train::main),
    ("vq-decode", vq_decode::main),
    ("vq-encode", vq_encode::main),
];

const USAGE: &str = "\
usage: genimg TOOL [ARGS...]     run TOOL (one of the names below) with ARGS
       genimg --install DIR      make DIR/TOOL a link to this executable, for each TOOL
       TOOL [ARGS...]            through such a link";

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    let run_as = args.next().and_then(|a| Path::new(&a).file_name().map(OsString::from));
    if let Some((_, tool_main)) = TOOLS.iter().find(|(name, _)| run_as.as_deref() == Some(name.as_ref())) {
        return tool_main();
    }
    let first = args.next();
    match first.as_ref().and_then(|a| a.to_str()) {
        Some("--install") => install(args.next()),
        Some(tool) if TOOLS.iter().any(|(name, _)| *name == tool) => {
            // Run again under the tool's name, so its argument parser sees the usual argv.
            let err = match std::env::current_exe() {
                Ok(exe) => Command::new(exe).arg0(tool).args(args).exec(),
                Err(e) => e,
            };
            eprintln!("genimg: cannot run {tool}: {err}");
            ExitCode::FAILURE
        }
        Some("-h" | "--help") => {
            println!("{USAGE}\n\ntools: {}", names());
            ExitCode::SUCCESS
        }
        _ => {
            let what = first.map_or("no tool named".into(), |a| format!("unknown tool '{}'", a.to_string_lossy()));
            eprintln!("genimg: {what} (expected one of: {})\n{USAGE}", names());
            ExitCode::from(2)
        }
    }
}

fn names() -> String {
    TOOLS.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ")
}

/// `--install DIR`: DIR/TOOL -> this executable for every tool (links replaced, other files
/// left alone with an error).
fn install(dir: Option<OsString>) -> ExitCode {
    let Some(dir) = dir else {
        eprintln!("genimg: --install needs a directory\n{USAGE}");
        return ExitCode::from(2);
    };
    let dir = Path::new(&dir);
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("genimg: --install: cannot find this executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    for (name, _) in TOOLS {
        let link = dir.join(name);
        if link.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()) {
            let _ = std::fs::remove_file(&link);
        }
        if let Err(e) = std::os::unix::fs::symlink(&exe, &link) {
            eprintln!("genimg: --install: {}: {e}", link.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
