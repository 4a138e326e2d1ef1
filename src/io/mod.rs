//! Tensor files and the plumbing around them: `-` for stdin/stdout, atomic outputs, format
//! recognition from the first bytes.

#[cfg(test)]
mod fuzz_tests;
pub mod npy;
pub mod path;
pub mod safetensors;
pub mod tensor_file;

pub use path::{at_most_one_stdin, check_io, remove_temporaries, Input, InputPath, Output, OutputPath, Skip};
pub use tensor_file::{read_tensor_file, TensorFile};
