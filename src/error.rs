//! The library's error type. Every variant names the file or the setting it is about, so a
//! binary can print `tool: {err}` as one line that says what is wrong and what was expected.

use std::io;

/// Errors from the library. Binaries wrap them with `anyhow` for context.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file (or stdin/stdout) failed at the OS level. The cause is
    /// part of the message and deliberately not a `source`, or `{:#}` would print it twice.
    #[error("{path}: {cause}")]
    Io { path: String, cause: io::Error },
    /// A file's contents are not what the tool can use: names the file, what is wrong and
    /// what was expected.
    #[error("{path}: {problem}")]
    BadInput { path: String, problem: String },
    /// A setting (flag, preset field) is out of range or contradicts another.
    #[error("{0}")]
    Config(String),
    /// Training produced a non-finite loss; the last good checkpoint is kept.
    #[error("{0}")]
    Diverged(String),
    /// The user interrupted a run (Ctrl-C); state was saved.
    #[error("interrupted")]
    Interrupted,
    /// A tensor operation failed; a bug or an unsupported device.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn bad_input(path: impl std::fmt::Display, problem: impl Into<String>) -> Self {
        Error::BadInput { path: path.to_string(), problem: problem.into() }
    }

    pub fn io(path: impl std::fmt::Display, source: io::Error) -> Self {
        Error::Io { path: path.to_string(), cause: source }
    }

    pub fn config(msg: impl Into<String>) -> Self {
        Error::Config(msg.into())
    }

    /// True when the error is a write to a pipe whose reader has gone away; tools then end
    /// quietly with status 0, as `head` users expect.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Io { cause, .. } if cause.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// `bail!`-like shorthand for [`Error::Config`].
#[macro_export]
macro_rules! config_err {
    ($($arg:tt)*) => { $crate::Error::Config(format!($($arg)*)) };
}
