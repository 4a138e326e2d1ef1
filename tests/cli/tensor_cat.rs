//! tensor-cat: arrays and code files joined along axis 0 as np.concatenate would, one file
//! given back as it is, and one clear line for inputs that do not join.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use genimg::io::safetensors::TensorMap;
use genimg::io::OutputPath;

use crate::common::{assert_fails_naming, tool, write_npy_f32, write_npy_u8};

/// A code file like vq-encode's: `top` [n, 2, 2], `bottom` [n, 4, 4] and `labels` [n], i64,
/// starting at `first`, with codebook sizes in the metadata.
fn code_map(n: usize, first: i64) -> TensorMap {
    let d = Device::Cpu;
    let mut m = TensorMap::new();
    let values = |per: usize| (0..(n * per) as i64).map(|v| first * per as i64 + v).collect::<Vec<_>>();
    m.insert("top", Tensor::from_vec(values(4), (n, 2, 2), &d).unwrap());
    m.insert("bottom", Tensor::from_vec(values(16), (n, 4, 4), &d).unwrap());
    m.insert("labels", Tensor::from_vec(values(1), n, &d).unwrap());
    m.metadata =
        BTreeMap::from([("genimg.n_embed_top".into(), "512".into()), ("genimg.n_embed_bottom".into(), "512".into())]);
    m
}

fn write(dir: &Path, name: &str, m: &TensorMap) {
    m.write(&OutputPath::File(dir.join(name))).unwrap();
}

/// Runs tensor-cat on `inputs` in `dir` and returns its stdout.
fn cat(dir: &Path, inputs: &[&str]) -> Vec<u8> {
    tool("tensor-cat").current_dir(dir).args(inputs).assert().success().stderr("").get_output().stdout.clone()
}

#[test]
fn arrays_and_code_files_join_along_axis_0() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pixels: Vec<u8> = (0..6 * 12).map(|v| v as u8).collect();
    write_npy_u8(d, "a.npy", &[2, 3, 4], &pixels[..24]);
    write_npy_u8(d, "none.npy", &[0, 3, 4], &[]);
    write_npy_u8(d, "b.npy", &[4, 3, 4], &pixels[24..]);
    assert_eq!(cat(d, &["a.npy", "none.npy", "b.npy"]), genimg::io::npy::to_bytes(&[6, 3, 4], &pixels));
    write(d, "c0.safetensors", &code_map(3, 0));
    write(d, "c1.safetensors", &code_map(0, 3));
    write(d, "c2.safetensors", &code_map(2, 3));
    let joined = cat(d, &["c0.safetensors", "c1.safetensors", "c2.safetensors"]);
    assert!(joined == code_map(5, 0).encode().unwrap(), "the joined code file is not the whole one");
    // One file comes back as it is.
    for one in ["b.npy", "c0.safetensors"] {
        assert!(cat(d, &[one]) == std::fs::read(d.join(one)).unwrap(), "{one}");
    }
}

#[test]
fn inputs_that_do_not_join_are_named_with_what_differs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_npy_f32(d, "a.npy", &[2, 3], &[0.5; 6]);
    write_npy_f32(d, "wide.npy", &[2, 4], &[0.5; 8]);
    write_npy_u8(d, "bytes.npy", &[2, 3], &[1; 6]);
    std::fs::write(d.join("scalar.npy"), genimg::io::npy::to_bytes::<f32>(&[], &[1.0])).unwrap();
    std::fs::write(d.join("text.npy"), b"1 2 3\n").unwrap();
    write(d, "c.safetensors", &code_map(2, 0));
    let mut extra = code_map(2, 0);
    extra.insert("more", Tensor::zeros(2, candle_core::DType::I64, &Device::Cpu).unwrap());
    write(d, "extra.safetensors", &extra);
    let mut narrow = code_map(2, 0);
    narrow.insert("top", narrow.get("top").unwrap().to_dtype(candle_core::DType::U32).unwrap());
    write(d, "narrow.safetensors", &narrow);
    let mut bigger = code_map(2, 0);
    bigger.insert("bottom", Tensor::zeros((2, 8, 8), candle_core::DType::I64, &Device::Cpu).unwrap());
    write(d, "bigger.safetensors", &bigger);
    let mut other = code_map(2, 0);
    other.metadata.insert("genimg.n_embed_top".into(), "256".into());
    write(d, "other.safetensors", &other);
    let cases: [(&[&str], &str, &str); 9] = [
        (&["a.npy", "wide.npy"], "wide.npy", "rows of shape [4], the first input a.npy rows of [3]"),
        (&["a.npy", "bytes.npy"], "bytes.npy", "holds u8, the first input a.npy holds f32"),
        (
            &["a.npy", "c.safetensors"],
            "c.safetensors",
            "is a .safetensors file, the first input a.npy is an .npy array",
        ),
        (&["scalar.npy"], "scalar.npy", "0-d"),
        (&["a.npy", "text.npy"], "text.npy", "not a tensor file"),
        (&["c.safetensors", "extra.safetensors"], "extra.safetensors", "holds tensors bottom, labels, more, top"),
        (
            &["c.safetensors", "narrow.safetensors"],
            "narrow.safetensors",
            "tensor 'top' is U32, in the first input c.safetensors I64",
        ),
        (&["c.safetensors", "bigger.safetensors"], "bigger.safetensors", "tensor 'bottom' has rows of shape [8, 8]"),
        (
            &["c.safetensors", "other.safetensors"],
            "other.safetensors",
            "metadata genimg.n_embed_top is '256', in the first input c.safetensors '512'",
        ),
    ];
    for (inputs, culprit, says) in cases {
        let line = assert_fails_naming(tool("tensor-cat").current_dir(d).args(inputs).args(["-o", "out"]), d, culprit);
        assert!(line.contains(says), "{line}");
    }
    let twice = assert_fails_naming(tool("tensor-cat").current_dir(d).args(["-", "-", "-o", "out"]), d, "stdin");
    assert!(twice.contains("at most one input can be `-`"), "{twice}");
}
