//! `--help` of every tool: exit status 0 and an `Examples:` section whose lines show the tool
//! at work, plus what some tools' help must also explain.

use crate::common::tool;

/// Each tool, a command line its examples must contain, and text the rest of its help must.
const HELP: &[(&str, &str, &[&str])] = &[
    ("img-pack", "img-pack mnist", &[]),
    ("img-grid", "| img-grid", &[]),
    ("img-plot", "img-plot quality.jsonl", &["--by"]),
    ("vae-train", "vae-train --preset vae-mlp", &[]),
    ("vae-eval", "vae-eval --model", &[]),
    ("vae-encode", "vae-encode --model", &[]),
    ("vae-decode", "vae-decode --model", &[]),
    ("vq-encode", "vq-encode --model vqvae2.safetensors --data mnist", &["--shard"]),
    ("vq-decode", "vq-decode --model vqvae2.safetensors codes.safetensors", &["--shard"]),
    ("prior-fit", "prior-fit train.safetensors --level top", &[]),
    ("prior-sample", "prior-sample --model prior-top.safetensors", &["--shard"]),
    ("ddpm-train", "ddpm-train --preset ddpm-unet-mnist", &["--schedule"]),
    ("ddpm-noise", "ddpm-noise --t 300", &["[N*k, 1, 32, 32]"]),
    ("ddpm-denoise", "ddpm-denoise --model", &["--shard"]),
    ("ddpm-eval", "ddpm-eval --model", &["Table 2"]),
    ("tensor-cat", "tensor-cat codes.0.safetensors", &["metadata"]),
    ("img-classify", "img-classify --model clf.safetensors", &["--features"]),
    ("img-select", "img-select s.npy --scores p.npy --labels l.npy", &["by class, then by score"]),
    ("img-fid", "img-fid samples.npy reference.npy", &["--no-features", "REFERENCE is the real set"]),
];

/// The Makefile's TOOLS, the list of every binary the project builds.
fn makefile_tools() -> Vec<String> {
    let makefile = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Makefile")).unwrap();
    let joined = makefile.replace("\\\n", " ");
    let line = joined.lines().find_map(|l| l.strip_prefix("TOOLS :=")).expect("TOOLS := in the Makefile");
    line.split_whitespace().map(String::from).collect()
}

#[test]
fn the_table_covers_every_tool() {
    let mut listed: Vec<&str> = HELP.iter().map(|(name, ..)| *name).collect();
    let mut tools = makefile_tools();
    listed.sort_unstable();
    tools.sort_unstable();
    assert_eq!(listed, tools);
}

#[test]
fn help_shows_examples() {
    for (name, example, also) in HELP {
        let out = tool(name).arg("--help").assert().success().get_output().stdout.clone();
        let help = String::from_utf8(out).unwrap();
        let start = help.find("Examples:").unwrap_or_else(|| panic!("{name}: no Examples: section\n{help}"));
        // The section runs to the first blank line.
        let examples = help[start..].split("\n\n").next().unwrap();
        assert!(examples.lines().skip(1).any(|l| l.contains(name)), "{name}: no example runs it\n{examples}");
        assert!(examples.contains(example), "{name}: no example '{example}'\n{examples}");
        for text in *also {
            assert!(help.contains(text), "{name}: the help does not say '{text}'\n{help}");
        }
    }
}
