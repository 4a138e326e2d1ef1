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

/// Refuses more than one input reading stdin: `inputs` pairs each input a tool was given
/// (`None` for one it was not) with the name the user knows it by (`INPUT`, `--labels`), and
/// the error names the two that clash, e.g. "INPUT and --labels both read stdin; at most one
/// input can be `-`".
pub fn at_most_one_stdin(inputs: &[(&str, Option<&InputPath>)]) -> Result<()> {
    let mut stdin = inputs.iter().filter(|(_, p)| *p == Some(&InputPath::Stdin)).map(|(name, _)| name);
    match (stdin.next(), stdin.next()) {
        (Some(first), Some(second)) => {
            Err(Error::config(format!("{first} and {second} both read stdin; at most one input can be `-`")))
        }
        _ => Ok(()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn dash_is_stdin_or_stdout_and_displays_as_such() {
        let stdin: InputPath = "-".parse().unwrap();
        let stdout: OutputPath = "-".parse().unwrap();
        assert_eq!((stdin.to_string(), stdout.to_string()), ("<stdin>".into(), "<stdout>".into()));
        assert!(stdout.is_stdout());
        let file: InputPath = "dir/x.npy".parse().unwrap();
        assert_eq!(file, InputPath::File(PathBuf::from("dir/x.npy")));
        assert_eq!(file.to_string(), "dir/x.npy");
        let out: OutputPath = "./-x".parse().unwrap();
        assert_eq!((out.is_stdout(), out.to_string()), (false, "./-x".into()));
    }

    #[test]
    fn file_is_refused_for_stdout_with_the_reason() {
        let e = OutputPath::Stdout.file("the training state").unwrap_err().to_string();
        assert_eq!(e, "the training state must be written to a file, not stdout: pass -o PATH");
        assert_eq!(OutputPath::File("m.safetensors".into()).file("x").unwrap(), Path::new("m.safetensors"));
    }

    #[test]
    fn an_input_file_is_read_with_its_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.bin");
        std::fs::write(&path, b"hello").unwrap();
        let input = InputPath::File(path.clone());
        let (mut r, len) = input.open().unwrap();
        let mut text = String::new();
        r.read_to_string(&mut text).unwrap();
        assert_eq!((text.as_str(), len), ("hello", Some(5)));
        assert_eq!(input.read_all().unwrap(), b"hello");
        let e = InputPath::File(dir.path().to_path_buf()).open().err().unwrap().to_string();
        assert!(e.ends_with("is a directory, expected a file"), "{e}");
        let missing = InputPath::File(dir.path().join("missing")).read_all().unwrap_err().to_string();
        assert!(missing.starts_with(&format!("{}: ", dir.path().join("missing").display())), "{missing}");
    }

    /// Until `finish` the target keeps its old content and the bytes sit in a hidden
    /// temporary sibling; `finish` renames it into place and leaves nothing else behind.
    #[test]
    fn an_output_appears_whole_on_finish() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.npy");
        std::fs::write(&path, b"old").unwrap();
        let target = OutputPath::File(path.clone());
        let mut out = target.create().unwrap();
        out.write_all(b"new content").unwrap();
        out.flush().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        let names = names_in(dir.path());
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names[0].starts_with(".out.npy.") && names[0].ends_with(".tmp"), "{names:?}");
        out.finish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new content");
        assert_eq!(names_in(dir.path()), ["out.npy"]);
        target.write_all(b"again").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"again");
        assert_eq!(names_in(dir.path()), ["out.npy"]);
    }

    #[test]
    fn an_output_dropped_before_finish_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = OutputPath::File(dir.path().join("half.npy")).create().unwrap();
        out.write_all(&[0u8; 1 << 17]).unwrap();
        drop(out);
        assert!(names_in(dir.path()).is_empty());
    }

    #[test]
    fn an_output_in_a_missing_directory_fails_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let target = OutputPath::File(dir.path().join("no/such/dir/x.npy"));
        let e = target.create().err().unwrap().to_string();
        assert!(e.starts_with(&format!("{target}: ")), "{e}");
    }

    #[test]
    fn at_most_one_input_reads_stdin() {
        let (stdin, file) = (InputPath::Stdin, InputPath::File("y.npy".into()));
        assert!(at_most_one_stdin(&[]).is_ok());
        assert!(at_most_one_stdin(&[("INPUT", Some(&stdin)), ("--labels", Some(&file))]).is_ok());
        assert!(at_most_one_stdin(&[("INPUT", Some(&file)), ("--labels", Some(&file))]).is_ok());
        assert!(at_most_one_stdin(&[("INPUT", Some(&stdin)), ("--labels", None)]).is_ok());
        let three = [("INPUT", Some(&stdin)), ("--eval-data", Some(&file)), ("--labels", Some(&stdin))];
        let e = at_most_one_stdin(&three).unwrap_err();
        assert_eq!(e.to_string(), "INPUT and --labels both read stdin; at most one input can be `-`");
    }
}
