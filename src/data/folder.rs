//! A folder of PNG/JPEG images: which files it holds and what their labels are, and their
//! decoding in parallel (in sorted file order whatever the threads), with a progress bar
//! on a terminal and, with `--skip-bad`, bad files counted instead of fatal.
//!
//! Labels come from class subfolders: all named by integers (`0/`, `1/`, `300/`: the
//! integer is the label), or all by words (`cats/`, `dogs/`: indices in sorted name order,
//! the names kept for the class table). Subfolders that hold no image are ignored.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use image::DynamicImage;
use rayon::prelude::*;

use crate::error::{Error, Result};

/// The images of a folder, in sorted path order, with their labels when it has class folders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub files: Vec<PathBuf>,
    /// One per file: the integer of its folder, or the index of its folder's name in `classes`.
    pub labels: Option<Vec<i64>>,
    /// The class names in index order, when the class folders are named by words.
    pub classes: Option<Vec<String>>,
}

/// A file that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub name: String,
    pub problem: String,
}

/// True for names the image crate decodes here (the format itself is read from the bytes).
fn is_image_file(path: &Path) -> bool {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg"))
}

/// The entries of `d` but hidden ones, sorted.
fn entries(d: &Path) -> Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for entry in std::fs::read_dir(d).map_err(|e| Error::io(d.display(), e))? {
        let path = entry.map_err(|e| Error::io(d.display(), e))?.path();
        if !path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
            v.push(path);
        }
    }
    v.sort();
    Ok(v)
}

/// Lists `dir`: its image files, or the image files of its class subfolders (one level).
/// Files with other extensions and hidden entries are skipped.
pub fn list(dir: &Path) -> Result<Listing> {
    let mut loose = Vec::new();
    let mut classes: Vec<(String, Vec<PathBuf>)> = Vec::new();
    for path in entries(dir)? {
        if path.is_dir() {
            let images: Vec<PathBuf> =
                entries(&path)?.into_iter().filter(|p| p.is_file() && is_image_file(p)).collect();
            if images.is_empty() {
                continue;
            }
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                return Err(Error::bad_input(
                    path.display(),
                    "class folder name is not UTF-8 (expected an integer or a word)",
                ));
            };
            classes.push((name.to_string(), images));
        } else if is_image_file(&path) {
            loose.push(path);
        }
    }
    let first_class = |c: &[(String, Vec<PathBuf>)]| c.first().map(|(n, _)| n.clone()).unwrap_or_default();
    if classes.is_empty() {
        if loose.is_empty() {
            return Err(Error::bad_input(
                dir.display(),
                "holds no PNG or JPEG images (expected *.png, *.jpg or *.jpeg, directly or in subfolders)",
            ));
        }
        return Ok(Listing { files: loose, labels: None, classes: None });
    }
    if let Some(file) = loose.first() {
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        return Err(Error::bad_input(
            dir.display(),
            format!(
                "holds images ({name}) beside class folders ({}/); expected every image in a class folder, or none",
                first_class(&classes)
            ),
        ));
    }
    let numbers: Vec<Option<i64>> = classes.iter().map(|(n, _)| n.parse::<i64>().ok()).collect();
    let (labels, names): (Vec<i64>, Option<Vec<String>>) = if numbers.iter().all(Option::is_some) {
        (numbers.into_iter().flatten().collect(), None)
    } else if numbers.iter().all(Option::is_none) {
        // `entries` sorted the folders by name, so the indices are in sorted name order.
        ((0..classes.len() as i64).collect(), Some(classes.iter().map(|(n, _)| n.clone()).collect()))
    } else {
        let int = classes.iter().zip(&numbers).find(|(_, n)| n.is_some()).map(|(c, _)| &c.0);
        let word = classes.iter().zip(&numbers).find(|(_, n)| n.is_none()).map(|(c, _)| &c.0);
        return Err(Error::bad_input(
            dir.display(),
            format!(
                "has class folders named by integers ({}/) and by words ({}/); expected all of one kind",
                int.cloned().unwrap_or_default(),
                word.cloned().unwrap_or_default()
            ),
        ));
    };
    let mut files = Vec::new();
    let mut file_labels = Vec::new();
    for ((_, images), label) in classes.into_iter().zip(labels) {
        file_labels.extend(std::iter::repeat_n(label, images.len()));
        files.extend(images);
    }
    // Integer folders sort as names too (`300/` before `7/`), as paths do.
    Ok(Listing { files, labels: Some(file_labels), classes: names })
}

/// The images of a folder that decoded, and the files left out.
pub struct Decoded<T> {
    /// Each image with its index in the file list, in file order.
    pub kept: Vec<(usize, T)>,
    pub skipped: Vec<Skipped>,
}

/// What is wrong with one file, or its image.
fn decode_one(path: &Path) -> std::result::Result<DynamicImage, (String, Error)> {
    let name = path.display().to_string();
    let fail = |problem: String| (problem.clone(), Error::bad_input(&name, problem));
    let len = std::fs::metadata(path).map_err(|e| (e.to_string(), Error::io(&name, e)))?.len();
    if len == 0 {
        return Err(fail("empty file (0 bytes), expected a PNG or JPEG image".into()));
    }
    let reader = image::ImageReader::open(path).map_err(|e| (e.to_string(), Error::io(&name, e)))?;
    let reader = reader.with_guessed_format().map_err(|e| (e.to_string(), Error::io(&name, e)))?;
    reader.decode().map_err(|e| {
        let cause = e.to_string().replace('\n', " ");
        fail(format!("cannot decode image ({cause}), expected a PNG or JPEG file"))
    })
}

/// Decodes every file in parallel and maps each image through `prepare`; returns each kept
/// image with its index in `files`, in file order.
/// A bad file is an error (the first in file order, naming it), or with `skip_bad` left out
/// and listed. A progress bar goes to stderr when it is a terminal.
pub fn decode_all<T: Send>(
    files: &[PathBuf],
    skip_bad: bool,
    prepare: impl Fn(DynamicImage) -> T + Sync,
) -> Result<Decoded<T>> {
    let progress = Progress::new(files.len());
    let decoded: Vec<std::result::Result<T, (String, Error)>> = files
        .par_iter()
        .map(|path| {
            let out = decode_one(path).map(&prepare);
            progress.tick();
            out
        })
        .collect();
    progress.finish();
    let mut images = Vec::with_capacity(decoded.len());
    let mut skipped = Vec::new();
    for (i, (path, result)) in files.iter().zip(decoded).enumerate() {
        match result {
            Ok(image) => images.push((i, image)),
            Err((problem, _)) if skip_bad => skipped.push(Skipped { name: path.display().to_string(), problem }),
            Err((_, e)) => return Err(with_hint(e)),
        }
    }
    Ok(Decoded { kept: images, skipped })
}

/// Adds the `--skip-bad` hint to a bad file's message.
fn with_hint(e: Error) -> Error {
    match e {
        Error::BadInput { path, problem } => {
            Error::BadInput { path, problem: format!("{problem} (--skip-bad skips bad files)") }
        }
        other => other,
    }
}

/// `decoding [#####     ] 512/1024 images` on stderr, redrawn at most ten times a second,
/// when stderr is a terminal.
struct Progress {
    total: usize,
    done: AtomicUsize,
    /// When the bar was last drawn; `None` when there is no bar.
    drawn: Option<Mutex<Instant>>,
}

impl Progress {
    fn new(total: usize) -> Self {
        let show = total > 1 && std::io::stderr().is_terminal();
        Progress { total, done: AtomicUsize::new(0), drawn: show.then(|| Mutex::new(Instant::now())) }
    }

    fn tick(&self) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let Some(drawn) = &self.drawn else { return };
        let Ok(mut last) = drawn.try_lock() else { return };
        if last.elapsed() >= Duration::from_millis(100) || done == self.total {
            *last = Instant::now();
            let width = 30;
            let filled = done * width / self.total.max(1);
            eprint!(
                "\r\x1b[2Kdecoding [{}{}] {done}/{} images",
                "#".repeat(filled),
                " ".repeat(width - filled),
                self.total
            );
            let _ = std::io::stderr().flush();
        }
    }

    fn finish(&self) {
        if self.drawn.is_some() {
            eprint!("\r\x1b[2K");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    #[test]
    fn word_classes_are_indexed_in_sorted_order() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["dogs/b.png", "cats/z.jpg", "cats/a.png", "emus/notes.txt", "ants/c.jpeg"] {
            touch(&dir.path().join(f));
        }
        let l = list(dir.path()).unwrap();
        let names: Vec<String> =
            l.files.iter().map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string()).collect();
        assert_eq!(names, ["ants/c.jpeg", "cats/a.png", "cats/z.jpg", "dogs/b.png"]);
        assert_eq!(l.labels, Some(vec![0, 1, 1, 2]));
        assert_eq!(l.classes, Some(vec!["ants".into(), "cats".into(), "dogs".into()]));
    }

    #[test]
    fn mixed_names_and_loose_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        touch(&dir.path().join("3/a.png"));
        touch(&dir.path().join("cats/a.png"));
        let e = list(dir.path()).unwrap_err().to_string();
        assert!(e.contains("integers (3/) and by words (cats/)"), "{e}");
        std::fs::remove_dir_all(dir.path().join("cats")).unwrap();
        touch(&dir.path().join("loose.png"));
        let e = list(dir.path()).unwrap_err().to_string();
        assert!(e.contains("holds images (loose.png) beside class folders (3/)"), "{e}");
    }
}
