//! Input and output locations where `-` means stdin or stdout, and outputs that appear only
//! when complete: a file is written to a temporary sibling and renamed on [`Output::finish`],
//! so a failed or interrupted run never leaves a partial file behind. An existing path that
//! is not a regular file (`/dev/null`, a FIFO) is written in place instead: renaming onto it
//! would replace the device with a file.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard, PoisonError};

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
    pub fn open(&self) -> Result<(Input, Option<u64>)> {
        match self {
            InputPath::Stdin => Ok((Input::Stdin(BufReader::with_capacity(1 << 16, io::stdin())), None)),
            InputPath::File(p) => {
                let file = File::open(p).map_err(|e| Error::io(self, e))?;
                let meta = file.metadata().map_err(|e| Error::io(self, e))?;
                if meta.is_dir() {
                    return Err(Error::bad_input(self, "is a directory, expected a file"));
                }
                // Only a regular file's length is its content's (not a FIFO's or a device's),
                // and only a regular file can seek.
                let reader = BufReader::with_capacity(1 << 16, file);
                Ok(match meta.is_file() {
                    true => (Input::File(reader), Some(meta.len())),
                    false => (Input::Stream(reader), None),
                })
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

/// A byte stream that can pass over bytes without handing them out, so that a shard of a
/// file reads only its own rows: a regular file seeks past them, a pipe reads and drops
/// them.
pub trait Skip {
    /// Passes over the next `bytes` bytes; an `UnexpectedEof` error when a stream ends
    /// first (a file may seek past its end: its length is checked against its header).
    fn skip(&mut self, bytes: u64) -> io::Result<()>;
}

/// An opened input, buffered.
pub enum Input {
    Stdin(BufReader<io::Stdin>),
    /// A regular file.
    File(BufReader<File>),
    /// A FIFO or a device, read in order.
    Stream(BufReader<File>),
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Input::Stdin(r) => r.read(buf),
            Input::File(r) | Input::Stream(r) => r.read(buf),
        }
    }
}

impl Skip for Input {
    fn skip(&mut self, bytes: u64) -> io::Result<()> {
        match self {
            Input::File(r) => {
                let offset = i64::try_from(bytes).map_err(|_| io::Error::other("skipping past any file's end"))?;
                r.seek_relative(offset)
            }
            Input::Stdin(r) => drop_bytes(r, bytes),
            Input::Stream(r) => drop_bytes(r, bytes),
        }
    }
}

impl Skip for &[u8] {
    fn skip(&mut self, bytes: u64) -> io::Result<()> {
        let n = usize::try_from(bytes).unwrap_or(usize::MAX);
        if n > self.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        *self = &self[n..];
        Ok(())
    }
}

/// Reads and drops the next `bytes` bytes of `r`.
fn drop_bytes(r: &mut impl Read, bytes: u64) -> io::Result<()> {
    if io::copy(&mut r.take(bytes), &mut io::sink())? < bytes {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
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

/// The checks every tool makes before any work: at most one input reads stdin
/// ([`at_most_one_stdin`]), no output is the same file as an input
/// ([`no_output_is_an_input`]), and every output can be written
/// ([`OutputPath::check_writable`]). Each input and output is paired with the name the user
/// knows it by (`INPUT`, `--labels`, `-o`), `None` for one the tool was not given.
pub fn check_io(inputs: &[(&str, Option<&InputPath>)], outputs: &[(&str, Option<&OutputPath>)]) -> Result<()> {
    at_most_one_stdin(inputs)?;
    no_output_is_an_input(inputs, outputs)?;
    outputs.iter().filter_map(|(_, out)| *out).try_for_each(OutputPath::check_writable)
}

/// Refuses an output that is the same regular file (device and inode, so also through a
/// link or a shell redirection of stdin or stdout) as an input, which writing it would
/// destroy, as `cp a a` refuses: "x.npy: is both an input (INPUT) and the output (-o);
/// choose another output".
pub fn no_output_is_an_input(
    inputs: &[(&str, Option<&InputPath>)],
    outputs: &[(&str, Option<&OutputPath>)],
) -> Result<()> {
    for (out_name, out) in outputs {
        let Some(out) = out else { continue };
        let Some(out_id) = out.file_id() else { continue };
        if let Some((in_name, _)) = inputs.iter().find(|(_, input)| input.and_then(InputPath::file_id) == Some(out_id))
        {
            return Err(Error::bad_input(
                out,
                format!("is both an input ({in_name}) and the output ({out_name}); choose another output"),
            ));
        }
    }
    Ok(())
}

/// The device and inode of a regular file; `None` for a new path or anything else.
type FileId = (u64, u64);

fn regular_file_id(meta: io::Result<std::fs::Metadata>) -> Option<FileId> {
    meta.ok().filter(|m| m.is_file()).map(|m| (m.dev(), m.ino()))
}

/// What a standard stream is open on.
fn stream_metadata(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<std::fs::Metadata> {
    File::from(fd.try_clone_to_owned()?).metadata()
}

impl InputPath {
    fn file_id(&self) -> Option<FileId> {
        use std::os::fd::AsFd;
        match self {
            InputPath::Stdin => regular_file_id(stream_metadata(io::stdin().as_fd())),
            InputPath::File(p) => regular_file_id(std::fs::metadata(p)),
        }
    }
}

impl OutputPath {
    fn file_id(&self) -> Option<FileId> {
        use std::os::fd::AsFd;
        match self {
            OutputPath::Stdout => regular_file_id(stream_metadata(io::stdout().as_fd())),
            OutputPath::File(p) => regular_file_id(std::fs::metadata(p)),
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
    /// Starts writing. Nothing is visible at a file path until [`Output::finish`], but for an
    /// existing path that is not a regular file (a device, a FIFO), which is written directly.
    pub fn create(&self) -> Result<Output> {
        let inner = match self {
            OutputPath::Stdout => {
                check_stdout_open()?;
                Sink::Stdout(BufWriter::with_capacity(1 << 16, io::stdout()))
            }
            OutputPath::File(p) if is_special(p) => {
                let file = OpenOptions::new().write(true).open(p).map_err(|e| Error::io(self, e))?;
                Sink::Special(BufWriter::with_capacity(1 << 16, file))
            }
            OutputPath::File(p) => {
                let tmp = Temporary::beside(p).map_err(|e| Error::io(self, e))?;
                Sink::File(BufWriter::with_capacity(1 << 16, tmp), p.clone())
            }
        };
        Ok(Output { path: self.clone(), inner })
    }

    /// Fails, naming the output, when it could not be written: stdout is closed, the path is
    /// a directory, or no file can be made in its directory (missing, read-only, under a
    /// file). Tools call it before any work, so that a bad `-o` fails at once rather than
    /// after an epoch of training. Creates and removes a temporary file; opens no device or
    /// FIFO (that would block until a reader comes).
    pub fn check_writable(&self) -> Result<()> {
        match self {
            OutputPath::Stdout => check_stdout_open(),
            OutputPath::File(p) if p.is_dir() => Err(Error::bad_input(self, "is a directory, expected a file")),
            OutputPath::File(p) if is_special(p) => Ok(()),
            OutputPath::File(p) => Temporary::beside(p).map(drop).map_err(|e| Error::io(self, e)),
        }
    }

    /// Fails, naming `what`, unless the output is a regular file or a new path: for outputs
    /// that are rewritten or have a file beside them, such as training checkpoints.
    pub fn check_regular(&self, what: &str) -> Result<()> {
        let path = self.file(what)?;
        if is_special(path) {
            return Err(Error::bad_input(self, format!("is not a regular file; {what} must be written to a file")));
        }
        Ok(())
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

/// True for a path that exists and is neither a regular file nor a directory (following
/// links): a device, a FIFO or a socket.
fn is_special(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir())
}

/// Fails when stdout was closed (`tool >&-`), where the output would be lost with exit
/// status 0: before `main`, the standard library opens `/dev/null` read-write on a closed
/// descriptor 0, 1 or 2, so writes to it succeed. A shell opens `>/dev/null` write-only,
/// so stdout read-write on the null device is taken for one closed (as `1<>/dev/null` is).
fn check_stdout_open() -> Result<()> {
    if stdout_was_closed() {
        return Err(Error::bad_input(OutputPath::Stdout, "closed (EBADF); redirect it or pass -o FILE"));
    }
    Ok(())
}

fn stdout_was_closed() -> bool {
    use std::os::fd::AsFd;
    // SAFETY: F_GETFL only reads the descriptor's status flags.
    let flags = unsafe { libc::fcntl(libc::STDOUT_FILENO, libc::F_GETFL) };
    if flags == -1 {
        return true;
    }
    if flags & libc::O_ACCMODE != libc::O_RDWR {
        return false;
    }
    let device = |m: std::fs::Metadata| {
        use std::os::unix::fs::FileTypeExt;
        m.file_type().is_char_device().then_some(m.rdev())
    };
    let stdout = io::stdout().as_fd().try_clone_to_owned().and_then(|fd| File::from(fd).metadata());
    let null = std::fs::metadata("/dev/null");
    matches!((stdout.map(device), null.map(device)), (Ok(Some(a)), Ok(Some(b))) if a == b)
}

/// The paths of the temporary files of outputs being written, so that a signal that ends the
/// process can remove them ([`remove_temporaries`]).
static TEMPORARIES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn temporaries() -> MutexGuard<'static, Vec<PathBuf>> {
    TEMPORARIES.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Removes the temporary file of every output being written and keeps further outputs from
/// appearing (the registry stays locked, and [`Output::finish`] waits for it): for a signal
/// handler, right before it ends the process.
pub fn remove_temporaries() {
    let live = temporaries();
    for path in live.iter() {
        let _ = std::fs::remove_file(path);
    }
    std::mem::forget(live);
}

/// A hidden temporary sibling of an output (`.name.XXXXXXXX.tmp`), listed in
/// [`TEMPORARIES`] while it lives; dropping it before [`Temporary::persist`] removes the file.
/// (Made here rather than with `tempfile`, whose errors name the random path instead of the
/// output.)
struct Temporary {
    file: File,
    path: PathBuf,
    persisted: bool,
}

impl Temporary {
    fn beside(target: &Path) -> io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = target.file_name().unwrap_or_default().to_string_lossy();
        // Listed under the same lock that creates it, so no signal finds it unlisted.
        let mut live = temporaries();
        loop {
            let path = dir.join(format!(".{name}.{:08x}.tmp", rand::random::<u32>()));
            // The usual mode (0666 less the umask).
            match OpenOptions::new().write(true).create_new(true).mode(0o666).open(&path) {
                Ok(file) => {
                    live.push(path.clone());
                    return Ok(Temporary { file, path, persisted: false });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Syncs the file and renames it to `target`. The rename happens under the registry's
    /// lock, so a signal handler sees either the temporary file or the finished output.
    fn persist(mut self, target: &Path) -> io::Result<()> {
        self.file.sync_all()?;
        let mut live = temporaries();
        std::fs::rename(&self.path, target)?;
        live.retain(|p| p != &self.path);
        self.persisted = true;
        Ok(())
    }
}

impl Drop for Temporary {
    fn drop(&mut self) {
        if !self.persisted {
            let mut live = temporaries();
            let _ = std::fs::remove_file(&self.path);
            live.retain(|p| p != &self.path);
        }
    }
}

impl Write for Temporary {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

enum Sink {
    Stdout(BufWriter<io::Stdout>),
    /// A device or FIFO, written in place.
    Special(BufWriter<File>),
    File(BufWriter<Temporary>, PathBuf),
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
            Sink::Special(mut w) => w.flush().map_err(|e| Error::io(&path, e)),
            Sink::File(w, target) => {
                let tmp = w.into_inner().map_err(|e| Error::io(&path, e.into_error()))?;
                tmp.persist(&target).map_err(|e| Error::io(&path, e))
            }
        }
    }

    fn writer(&mut self) -> &mut dyn Write {
        match &mut self.inner {
            Sink::Stdout(w) => w,
            Sink::Special(w) => w,
            Sink::File(w, _) => w,
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer().write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.writer().write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.writer().flush()
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

    #[test]
    fn an_output_that_is_an_input_is_refused_even_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let (x, link, other) = (dir.path().join("x.npy"), dir.path().join("link.npy"), dir.path().join("y.npy"));
        std::fs::write(&x, b"x").unwrap();
        std::fs::write(&other, b"y").unwrap();
        std::os::unix::fs::symlink(&x, &link).unwrap();
        let input = InputPath::File(x.clone());
        let inputs = [("INPUT", Some(&input)), ("--labels", None)];
        let out = |p: &Path| OutputPath::File(p.to_path_buf());
        for same in [&x, &link] {
            let e = no_output_is_an_input(&inputs, &[("-o", Some(&out(same)))]).unwrap_err().to_string();
            let want =
                format!("{}: is both an input (INPUT) and the output (-o); choose another output", same.display());
            assert_eq!(e, want);
        }
        let fine =
            [("-o", Some(&out(&other))), ("--png", Some(&out(&dir.path().join("new.png")))), ("--labels-out", None)];
        assert!(no_output_is_an_input(&inputs, &fine).is_ok());
        assert!(
            no_output_is_an_input(&[("INPUT", Some(&InputPath::Stdin))], &[("-o", Some(&OutputPath::Stdout))]).is_ok()
        );
        let e = check_io(&inputs, &[("--metrics", Some(&out(&link)))]).unwrap_err().to_string();
        assert!(e.ends_with("is both an input (INPUT) and the output (--metrics); choose another output"), "{e}");
    }

    #[test]
    fn an_output_is_checked_writable_without_leaving_a_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file.txt"), b"").unwrap();
        assert!(OutputPath::File(dir.path().join("new.npy")).check_writable().is_ok());
        assert!(OutputPath::File("/dev/null".into()).check_writable().is_ok());
        assert_eq!(names_in(dir.path()), ["file.txt"]);
        let fails = |p: PathBuf| OutputPath::File(p).check_writable().unwrap_err().to_string();
        let missing = dir.path().join("missing/x.npy");
        assert_eq!(fails(missing.clone()), format!("{}: No such file or directory (os error 2)", missing.display()));
        let under_a_file = dir.path().join("file.txt/x.npy");
        assert_eq!(fails(under_a_file.clone()), format!("{}: Not a directory (os error 20)", under_a_file.display()));
        assert!(fails(dir.path().to_path_buf()).ends_with("is a directory, expected a file"));
        assert_eq!(names_in(dir.path()), ["file.txt"]);
    }

    /// A device is written in place: renaming onto it would replace it with a file.
    #[test]
    fn a_device_is_written_in_place_and_refused_where_a_file_is_needed() {
        let null = OutputPath::File("/dev/null".into());
        null.write_all(b"gone").unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(&std::fs::metadata("/dev/null").unwrap().file_type()));
        let e = null.check_regular("the model (-o)").unwrap_err().to_string();
        assert_eq!(e, "/dev/null: is not a regular file; the model (-o) must be written to a file");
        assert!(OutputPath::File("new.safetensors".into()).check_regular("the model (-o)").is_ok());
    }

    /// A temporary file is listed for the signal handler exactly while it exists.
    #[test]
    fn a_temporary_file_is_listed_while_it_lives() {
        let dir = tempfile::tempdir().unwrap();
        let listed = |name: &str| temporaries().iter().any(|p| p.file_name().is_some_and(|n| n == name));
        for finish in [true, false] {
            let out = OutputPath::File(dir.path().join("out.npy")).create().unwrap();
            let tmp = names_in(dir.path()).into_iter().find(|n| n.ends_with(".tmp")).unwrap();
            assert!(listed(&tmp));
            if finish {
                out.finish().unwrap();
            } else {
                drop(out);
            }
            assert!(!listed(&tmp));
            assert!(!names_in(dir.path()).contains(&tmp));
        }
    }
}
