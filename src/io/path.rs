//! Input and output locations where `-` means stdin or stdout, and outputs that appear only
//! when complete: a file is written to a temporary sibling and renamed on [`Output::finish`],
//! so a failed or interrupted run never leaves a partial file behind.

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};

/// Where an input comes from. Displays as the path, or `<stdin>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputPath {
    Stdin,
    File(PathBuf),
}

impl InputPath {
    /// Opens the input for buffered reading; also returns the file's length when known, so
    /// readers can check a header's claims before allocating.
    pub fn open(&self) -> Result<(Box<dyn Read>, Option<u64>)> {
        match self {
            InputPath::Stdin => Ok((Box::new(BufReader::with_capacity(1 << 16, io::stdin())), None)),
            InputPath::File(p) => {
                let file = File::open(p).map_err(|e| Error::io(self, e))?;
                let meta = file.metadata().map_err(|e| Error::io(self, e))?;
                if meta.is_dir() {
                    return Err(Error::bad_input(self, "is a directory, expected a file"));
                }
                // Only a regular file's length is its content's (not a FIFO's or a device's).
                let len = meta.is_file().then_some(meta.len());
                Ok((Box::new(BufReader::with_capacity(1 << 16, file)), len))
            }
        }
    }

    /// Reads the whole input into memory.
    pub fn read_all(&self) -> Result<Vec<u8>> {
        let (mut r, len) = self.open()?;
        let mut buf = Vec::with_capacity(len.unwrap_or(0) as usize);
        r.read_to_end(&mut buf).map_err(|e| Error::io(self, e))?;
        Ok(buf)
    }
}

impl FromStr for InputPath {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(if s == "-" { InputPath::Stdin } else { InputPath::File(PathBuf::from(s)) })
    }
}

impl fmt::Display for InputPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputPath::Stdin => f.write_str("<stdin>"),
            InputPath::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Where an output goes. Displays as the path, or `<stdout>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputPath {
    Stdout,
    File(PathBuf),
}

impl OutputPath {
    /// Starts writing. Nothing is visible at a file path until [`Output::finish`].
    pub fn create(&self) -> Result<Output> {
        let inner = match self {
            OutputPath::Stdout => Sink::Stdout(BufWriter::with_capacity(1 << 16, io::stdout())),
            OutputPath::File(p) => {
                let dir = match p.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d,
                    _ => Path::new("."),
                };
                let prefix = format!(".{}.", p.file_name().unwrap_or_default().to_string_lossy());
                let mut builder = tempfile::Builder::new();
                builder.prefix(&prefix).suffix(".tmp");
                // The usual mode (0666 less the umask), not tempfile's private 0600.
                #[cfg(unix)]
                builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
                let tmp = builder.tempfile_in(dir).map_err(|e| Error::io(self, e))?;
                Sink::File(BufWriter::with_capacity(1 << 16, tmp), p.clone())
            }
        };
        Ok(Output { path: self.clone(), inner })
    }

    /// Writes `bytes` as the whole output, atomically.
    pub fn write_all(&self, bytes: &[u8]) -> Result<()> {
        let mut out = self.create()?;
        out.write_all(bytes).map_err(|e| Error::io(self, e))?;
        out.finish()
    }

    pub fn is_stdout(&self) -> bool {
        matches!(self, OutputPath::Stdout)
    }

    /// The file path, or an error naming `what` when the output is stdout (for outputs that
    /// must be rewritten or reopened, such as training checkpoints).
    pub fn file(&self, what: &str) -> Result<&Path> {
        match self {
            OutputPath::File(p) => Ok(p),
            OutputPath::Stdout => {
                Err(Error::config(format!("{what} must be written to a file, not stdout: pass -o PATH")))
            }
        }
    }
}

impl FromStr for OutputPath {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(if s == "-" { OutputPath::Stdout } else { OutputPath::File(PathBuf::from(s)) })
    }
}

impl fmt::Display for OutputPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutputPath::Stdout => f.write_str("<stdout>"),
            OutputPath::File(p) => write!(f, "{}", p.display()),
        }
    }
}

enum Sink {
    Stdout(BufWriter<io::Stdout>),
    File(BufWriter<tempfile::NamedTempFile>, PathBuf),
}

/// An output being written. Dropping it without [`Output::finish`] discards a file output.
pub struct Output {
    path: OutputPath,
    inner: Sink,
}

impl Output {
    /// Flushes and, for a file, renames the temporary file into place.
    pub fn finish(self) -> Result<()> {
        let path = self.path;
        match self.inner {
            Sink::Stdout(mut w) => w.flush().map_err(|e| Error::io(&path, e)),
            Sink::File(w, target) => {
                let tmp = w.into_inner().map_err(|e| Error::io(&path, e.into_error()))?;
                tmp.as_file().sync_all().map_err(|e| Error::io(&path, e))?;
                tmp.persist(target).map_err(|e| Error::io(&path, e.error))?;
                Ok(())
            }
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            Sink::Stdout(w) => w.write(buf),
            Sink::File(w, _) => w.write(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match &mut self.inner {
            Sink::Stdout(w) => w.write_all(buf),
            Sink::File(w, _) => w.write_all(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Sink::Stdout(w) => w.flush(),
            Sink::File(w, _) => w.flush(),
        }
    }
}
