//! Helpers shared by the command tests.

use std::path::Path;

use assert_cmd::Command;

/// The named binary of this package, with a clean environment.
pub fn tool(name: &str) -> Command {
    let mut cmd = Command::cargo_bin(name).unwrap_or_else(|e| panic!("binary {name}: {e}"));
    cmd.env_clear().env("RAYON_NUM_THREADS", "2");
    cmd
}

/// Writes an `.npy` of `values` with `shape` (f32) into `dir/name`; returns the path.
#[allow(dead_code)]
pub fn write_npy_f32(dir: &Path, name: &str, shape: &[usize], values: &[f32]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, genimg::io::npy::to_bytes(shape, values)).unwrap();
    path
}

/// Writes an `.npy` of u8 `values` with `shape` into `dir/name`; returns the path.
#[allow(dead_code)]
pub fn write_npy_u8(dir: &Path, name: &str, shape: &[usize], values: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, genimg::io::npy::to_bytes(shape, values)).unwrap();
    path
}

/// Reads an `.npy` file fully.
#[allow(dead_code)]
pub fn read_npy(path: &Path) -> genimg::io::npy::Array {
    let bytes = std::fs::read(path).unwrap();
    genimg::io::npy::NpyReader::new(&bytes[..], Some(bytes.len() as u64), "test").unwrap().read_all().unwrap()
}

/// The entries of a directory, to check that a failed run left nothing behind.
#[allow(dead_code)]
pub fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}
