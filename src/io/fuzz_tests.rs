//! Property tests of every reader of untrusted bytes: random bytes, and valid files mutated
//! (bits flipped, cut short, bytes and length fields overwritten, digits spliced into
//! headers) give `Ok` or `Err`, never a panic, and never an allocation of what a false
//! header claims: while these tests run, the allocator refuses any single request over
//! [`MAX_ALLOC`], which aborts the test binary.
//!
//! `PROPTEST_CASES=N` sets the number of cases of each test (default [`DEFAULT_CASES`]).

use std::alloc::{GlobalAlloc, Layout};
use std::io::Cursor;
use std::path::Path;

use candle_core::{Device, Tensor};
use proptest::prelude::*;

use crate::checkpoint::{save_model, Checkpoint};
use crate::data::codes::CodeReader;
use crate::data::idx::Idx;
use crate::data::pack::{pack, PackOptions, Source};
use crate::io::npy::{to_bytes, NpyReader};
use crate::io::safetensors::{read_header, TensorMap};
use crate::io::{read_tensor_file, InputPath, OutputPath, TensorFile};
use crate::models::vae::{Vae, VaeConfig};
use crate::models::{ModelConfig, Network};
use crate::nn::params::Params;

/// The largest single allocation allowed in unit tests: far above what any test input needs,
/// far below what a false header can claim.
const MAX_ALLOC: usize = 1 << 30;

/// mimalloc, refusing requests over [`MAX_ALLOC`].
struct Capped;

// SAFETY: every call is forwarded to mimalloc unchanged, or refused with a null pointer,
// which the `GlobalAlloc` contract allows.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOC {
            return std::ptr::null_mut();
        }
        mimalloc::MiMalloc.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOC {
            return std::ptr::null_mut();
        }
        mimalloc::MiMalloc.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        mimalloc::MiMalloc.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOC {
            return std::ptr::null_mut();
        }
        mimalloc::MiMalloc.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Capped = Capped;

/// Cases per test when `PROPTEST_CASES` is not set.
const DEFAULT_CASES: u32 = 1000;

fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// One change to a file's bytes; positions wrap around its length.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit {
        pos: usize,
        bit: u8,
    },
    SetByte {
        pos: usize,
        value: u8,
    },
    Truncate {
        len: usize,
    },
    /// A 4- or 8-byte field (a length, a dimension) overwritten, little- or big-endian.
    SetField {
        pos: usize,
        value: u64,
        wide: bool,
        big_endian: bool,
    },
    /// Text spliced in, e.g. a huge number into a JSON or Python header.
    Splice {
        pos: usize,
        text: String,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Most headers are in the first bytes.
    let pos = prop_oneof![0usize..32, 0usize..256, any::<usize>()];
    let value = prop_oneof![Just(u64::MAX), Just(u32::MAX as u64), Just(1 << 40), any::<u64>(), 0u64..100];
    prop_oneof![
        (pos.clone(), 0u8..8).prop_map(|(pos, bit)| Mutation::FlipBit { pos, bit }),
        (pos.clone(), any::<u8>()).prop_map(|(pos, value)| Mutation::SetByte { pos, value }),
        any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        (pos.clone(), value, any::<bool>(), any::<bool>())
            .prop_map(|(pos, value, wide, big_endian)| Mutation::SetField { pos, value, wide, big_endian }),
        (pos, "[0-9]{1,25}|-1|\\(|\\)|,|\\{|\\}|\\[|\\]|\"").prop_map(|(pos, text)| Mutation::Splice { pos, text }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let at = |pos: usize, len: usize| pos % len.max(1);
    match m {
        Mutation::FlipBit { pos, bit } if !bytes.is_empty() => {
            let i = at(*pos, bytes.len());
            bytes[i] ^= 1 << bit;
        }
        Mutation::SetByte { pos, value } if !bytes.is_empty() => {
            let i = at(*pos, bytes.len());
            bytes[i] = *value;
        }
        Mutation::Truncate { len } => bytes.truncate(at(*len, bytes.len() + 1)),
        Mutation::SetField { pos, value, wide, big_endian } => {
            let field: Vec<u8> = match (wide, big_endian) {
                (true, false) => value.to_le_bytes().to_vec(),
                (true, true) => value.to_be_bytes().to_vec(),
                (false, false) => (*value as u32).to_le_bytes().to_vec(),
                (false, true) => (*value as u32).to_be_bytes().to_vec(),
            };
            if bytes.len() >= field.len() {
                let i = at(*pos, bytes.len() - field.len() + 1);
                bytes[i..i + field.len()].copy_from_slice(&field);
            }
        }
        Mutation::Splice { pos, text } => {
            let i = at(*pos, bytes.len() + 1);
            bytes.splice(i..i, text.bytes());
        }
        _ => {}
    }
}

/// `valid` with up to four mutations, or random bytes.
fn hostile(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(mutation(), 1..5).prop_map(move |ms| {
            let mut bytes = valid.clone();
            ms.iter().for_each(|m| apply(&mut bytes, m));
            bytes
        }),
        1 => proptest::collection::vec(any::<u8>(), 0..256),
    ]
}

/// Writes `bytes` to `dir/name` and returns it as an input.
fn file(dir: &Path, name: &str, bytes: &[u8]) -> InputPath {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    InputPath::File(path)
}

fn valid_npy() -> Vec<u8> {
    to_bytes(&[3, 2, 2], &[1.5f32, -2.0, 0.0, 4.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
}

fn valid_safetensors() -> Vec<u8> {
    let mut m = TensorMap::new();
    m.insert("a", Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap());
    m.insert("b", Tensor::new(&[7i64, 8, 9], &Device::Cpu).unwrap());
    m.metadata.insert("genimg.n_embed_top".into(), "4".into());
    m.encode().unwrap()
}

fn valid_idx() -> Vec<u8> {
    let mut bytes = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 3];
    bytes.extend(0..18u8);
    bytes
}

fn valid_png() -> Vec<u8> {
    let image = image::RgbImage::from_fn(4, 3, |x, y| image::Rgb([x as u8 * 60, y as u8 * 80, 7]));
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
    bytes.into_inner()
}

fn valid_jpeg() -> Vec<u8> {
    let image = image::GrayImage::from_fn(8, 8, |x, y| image::Luma([(x * 30 + y) as u8]));
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, image::ImageFormat::Jpeg).unwrap();
    bytes.into_inner()
}

/// A vae-mlp of 16 inputs, 4 hidden units and 2 latents, as a model file.
fn valid_checkpoint(dir: &Path) -> Vec<u8> {
    let config = VaeConfig {
        image: crate::data::Geometry { channels: 1, height: 4, width: 4 },
        hidden: 4,
        latent: 2,
        ..VaeConfig::vae_mlp()
    };
    let mut params = Params::init(0, &Device::Cpu);
    Vae::init_with(config.clone(), &mut params).unwrap();
    let tensors = params.finish().unwrap().to_tensor_map().unwrap();
    let path = dir.join("valid.safetensors");
    save_model(&OutputPath::File(path.clone()), &ModelConfig::Vae(config), tensors, &[]).unwrap();
    std::fs::read(path).unwrap()
}

proptest! {
    #![proptest_config(config(DEFAULT_CASES))]

    #[test]
    fn npy_never_panics(bytes in hostile(valid_npy()), known_len in any::<bool>()) {
        let len = known_len.then_some(bytes.len() as u64);
        if let Ok(mut r) = NpyReader::new(&bytes[..], len, "x.npy") {
            while let Ok(Some(_)) = r.read_rows(2) {}
        }
    }

    #[test]
    fn safetensors_never_panics(bytes in hostile(valid_safetensors())) {
        let _ = TensorMap::decode(&bytes, "x.safetensors", &Device::Cpu);
        let _ = read_header(&mut &bytes[..], bytes.len() as u64, "x.safetensors");
    }

    #[test]
    fn idx_never_panics(bytes in hostile(valid_idx()), known_len in any::<bool>()) {
        let len = known_len.then_some(bytes.len() as u64);
        let _ = Idx::decode(&bytes[..], len, "x-idx3-ubyte");
    }
}

proptest! {
    // Each case writes files; fewer cases keep the suite fast.
    #![proptest_config(config(DEFAULT_CASES / 4))]

    #[test]
    fn tensor_and_code_files_never_panic(bytes in prop_oneof![hostile(valid_npy()), hostile(valid_safetensors())]) {
        let dir = tempfile::tempdir().unwrap();
        let input = file(dir.path(), "x", &bytes);
        if let Ok(TensorFile::Npy(r)) = read_tensor_file(&input, &Device::Cpu) {
            let _ = r.read_all();
        }
        if let Ok(mut codes) = CodeReader::open(&input) {
            while let Ok(Some(_)) = codes.read(2) {}
        }
        let _ = crate::data::stream::ImageStream::open(
            &crate::data::image_set::DataSpec::File(input),
            None,
            crate::data::convert::PixelRange::ZeroOne,
            Some(crate::data::Geometry { channels: 1, height: 2, width: 2 }),
            2,
        )
        .map(|mut s| while let Ok(Some(_)) = s.next_batch(&Device::Cpu) {});
    }

    #[test]
    fn image_folders_never_panic(bytes in prop_oneof![hostile(valid_png()), hostile(valid_jpeg())]) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.png"), &bytes).unwrap();
        let opts = PackOptions::default();
        let _ = pack(&Source::Dir(dir.path().to_path_buf()), &opts);
    }

    #[test]
    fn checkpoints_never_panic(ms in proptest::collection::vec(mutation(), 1..5)) {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = valid_checkpoint(dir.path());
        ms.iter().for_each(|m| apply(&mut bytes, m));
        let input = file(dir.path(), "m.safetensors", &bytes);
        if let Ok(c) = Checkpoint::load(&input, None, &Device::Cpu) {
            let _ = c.into_network::<Vae>(&Device::Cpu);
        }
    }
}

/// The mutations do reach the readers' checks: each valid file reads, and a cut one fails.
#[test]
fn the_valid_files_read_and_a_cut_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    assert!(NpyReader::new(&valid_npy()[..], Some(valid_npy().len() as u64), "x").unwrap().read_all().is_ok());
    assert!(TensorMap::decode(&valid_safetensors(), "x", &Device::Cpu).is_ok());
    assert!(Idx::decode(&valid_idx()[..], Some(valid_idx().len() as u64), "x").is_ok());
    for image in [valid_png(), valid_jpeg()] {
        std::fs::write(dir.path().join("a.png"), &image).unwrap();
        assert!(pack(&Source::Dir(dir.path().to_path_buf()), &PackOptions::default()).is_ok());
    }
    let checkpoint = file(dir.path(), "m.safetensors", &valid_checkpoint(dir.path()));
    assert!(Checkpoint::load(&checkpoint, None, &Device::Cpu).unwrap().into_network::<Vae>(&Device::Cpu).is_ok());
    let mut cut = valid_npy();
    apply(&mut cut, &Mutation::Truncate { len: 20 });
    assert!(NpyReader::new(&cut[..], Some(20), "x").is_err());
}
