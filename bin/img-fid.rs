//! img-fid: FID, KID and precision / recall / density / coverage between two feature sets;
//! one JSON object on stdout.

use std::process::ExitCode;

use clap::Parser;
use genimg::checkpoint::ModelSource;
use genimg::cli::{self, DeviceArgs, OutputArgs, SeedArgs};
use genimg::io::{InputPath, OutputPath};
use genimg::metrics::{kid, prdc};
use genimg::tools::fid::{img_fid, FeatureModel, ImgFid};

const EXAMPLES: &str = "\
Examples:
  img-fid samples.npy reference.npy | jq .fid
  img-fid --save-stats mnist-test.safetensors test-features.npy
  img-fid samples.npy mnist-test.safetensors --kid-subsets 50 --seed 1
  img-classify --model clf.safetensors x0.npy --features | img-fid - mnist-test.safetensors
  img-fid --features clf.safetensors samples.npy test-images.npy
  img-fid --features pt_inception.safetensors samples.npy cifar-test.safetensors

Each set is a features .npy (f32 or f64 [N, D], e.g. from img-classify --features) or a
statistics file of --save-stats, told apart by their first bytes. A statistics file
(.safetensors) holds mu (f64 [D]), sigma (f64 [D, D]) and the features themselves
(f32 [N, D]) so that KID and PRDC can be computed against it; with --no-features it holds
mu and sigma only (as pytorch-fid's .npz), and only fid is reported against it (the other
metrics are null). Both sets need features of the same dimension D. With --features MODEL a
.npy is a set of images (u8, or float in [0,1]) whose features MODEL computes first (a file,
not stdin; statistics files are read as they are).

Output keys: fid (Fréchet distance of the Gaussians fitted to the two sets, pytorch-fid's
formula); kid_mean, kid_std (unbiased MMD^2 with the kernel (x.y/D + 1)^3, mean and standard
deviation over kid_subsets subsets of kid_subset_size rows of each set, as torch-fidelity);
precision, recall, density, coverage (Kynkaanniemi et al. 2019, Naeem et al. 2020, with the
k-th nearest neighbour: REFERENCE is the real set, SAMPLES the fake one); n_a, n_b (rows of
SAMPLES and REFERENCE); dim (D).";

/// FID, KID and precision/recall/density/coverage of SAMPLES against REFERENCE features.
#[derive(Parser)]
#[command(name = "img-fid", version, after_help = EXAMPLES)]
struct Args {
    /// The generated set: features .npy [N, D] or a statistics file; `-` is stdin. With
    /// --save-stats: the set whose statistics are written.
    #[arg(value_name = "SAMPLES")]
    samples: InputPath,
    /// The real set, of the same kind (one of the two may be `-`).
    #[arg(value_name = "REFERENCE", required_unless_present = "save_stats", conflicts_with = "save_stats")]
    reference: Option<InputPath>,
    /// KID's random subsets.
    #[arg(long, default_value_t = kid::DEFAULT_SUBSETS, value_name = "N")]
    kid_subsets: usize,
    /// Rows of each set in a KID subset [default: min(1000, N_A, N_B)].
    #[arg(long, value_name = "N")]
    kid_subset_size: Option<usize>,
    /// Nearest neighbours of the precision/recall/density/coverage radii.
    #[arg(long, default_value_t = prdc::DEFAULT_K, value_name = "K")]
    k: usize,
    /// Write the statistics file of the one input here (mu, sigma, and its features),
    /// instead of comparing two sets.
    #[arg(long, value_name = "FILE.safetensors")]
    save_stats: Option<OutputPath>,
    /// With --save-stats: store mu and sigma only (then only FID can be computed against it).
    #[arg(long, requires = "save_stats")]
    no_features: bool,
    /// Read .npy inputs as images and compute their features with this model: a clf-conv or
    /// vib-mlp checkpoint, or pytorch-fid's Inception-v3 weights (as img-classify --features).
    #[arg(long, value_name = "MODEL")]
    features: Option<InputPath>,
    /// Images per batch through --features' model.
    #[arg(long, default_value_t = 100, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    seed: SeedArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn main() -> ExitCode {
    cli::run("img-fid", || run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<()> {
    img_fid(&ImgFid {
        samples: args.samples,
        reference: args.reference,
        kid_subsets: args.kid_subsets,
        kid_subset_size: args.kid_subset_size,
        k: args.k,
        seed: args.seed.seed,
        save_stats: args.save_stats,
        stats_features: !args.no_features,
        output: args.output.output,
        features: match args.features {
            Some(path) => Some(FeatureModel {
                model: ModelSource { path, plain: None },
                batch_size: args.batch_size as usize,
                device: args.device.device.device()?,
            }),
            None => None,
        },
    })?;
    Ok(())
}
