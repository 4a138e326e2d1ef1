//! `img-select`: rejection sampling as a pipe stage (VQ-VAE-2, section 3.3): the samples
//! whose classifier score for their own class is highest, per class.
//!
//! Memory: the scores [M, K] and labels [M] are read whole (a few numbers per sample), the
//! rows to keep chosen from them ([`Scored::choose`]), and only then are the images read, one
//! kept row at a time, in place from the file (`pread`, [`StoredRows`]) and written out. No
//! more than one image is ever held, whatever M is; that is why IMAGES must be a regular
//! file (a pipe could only be read whole, in its own order).

use std::io::Write;

use crate::data::image_set::read_label_file;
use crate::data::rows::StoredRows;
use crate::data::select::{Keep, Scored};
use crate::error::{Error, Result};
use crate::io::npy::{Elements, NpyWriter};
use crate::io::{check_io, read_tensor_file, InputPath, OutputPath, TensorFile};

/// What `img-select` selects from.
pub struct ImgSelect {
    /// The samples, .npy [M, ...] (any dtype; written back as they are).
    pub images: InputPath,
    /// Class probabilities [M, K], as img-classify writes them.
    pub scores: InputPath,
    /// The class each sample was drawn for, [M].
    pub labels: InputPath,
    pub keep: Keep,
    pub output: OutputPath,
    /// Where the kept samples' labels go (.npy i64 [N]).
    pub labels_out: Option<OutputPath>,
}

/// Writes the kept samples, .npy [N, ...] of the images' dtype, by class, then by score
/// descending (and the kept labels to `labels_out`).
pub fn img_select(r: &ImgSelect) -> Result<()> {
    let inputs = [("INPUT", Some(&r.images)), ("--scores", Some(&r.scores)), ("--labels", Some(&r.labels))];
    check_io(&inputs, &[("-o", Some(&r.output)), ("--labels-out", r.labels_out.as_ref())])?;
    if r.labels_out.as_ref().is_some_and(OutputPath::is_stdout) && r.output.is_stdout() {
        return Err(Error::config("-o and --labels-out both write to stdout; give one of them a file"));
    }
    if !matches!(&r.images, InputPath::File(p) if std::fs::metadata(p).is_ok_and(|m| m.is_file())) {
        return Err(Error::bad_input(
            &r.images,
            "is not a regular file: img-select reads the kept images in class order, in place (save the samples to a file first)",
        ));
    }
    let (scores, classes) = read_scores(&r.scores)?;
    let m = scores.len() / classes.max(1);
    let labels = read_label_file(&r.labels)?;
    let scored = Scored::new(&scores, classes, &labels, &r.scores.to_string(), &r.labels.to_string())?;
    let images = StoredRows::open(&r.images)?;
    if images.len() != m {
        return Err(Error::bad_input(
            &r.images,
            format!("holds {} samples, {} scores {m} (expected one score row per sample)", images.len(), r.scores),
        ));
    }
    let kept = scored.choose(r.keep);
    let shape = [&[kept.len()], &images.shape()[1..]].concat();
    let io = |e| Error::io(&r.output, e);
    let mut writer = NpyWriter::new(r.output.create()?, images.dtype(), &shape).map_err(io)?;
    for &row in &kept {
        writer.write_elements(&images.read(&[row])?.data).map_err(io)?;
    }
    let out = writer.finish().map_err(io)?;
    let labels_out = match &r.labels_out {
        Some(path) => {
            let values: Vec<i64> = kept.iter().map(|&row| i64::from(labels[row])).collect();
            let mut o = path.create()?;
            o.write_all(&crate::io::npy::to_bytes(&[values.len()], &values)).map_err(|e| Error::io(path, e))?;
            Some(o)
        }
        None => None,
    };
    out.finish()?;
    labels_out.map(|o| o.finish()).transpose()?;
    Ok(())
}

/// Scores .npy float [M, K] as f32, with K.
fn read_scores(path: &InputPath) -> Result<(Vec<f32>, usize)> {
    let TensorFile::Npy(reader) = read_tensor_file(path, &candle_core::Device::Cpu)? else {
        return Err(Error::bad_input(path, "is a .safetensors file, expected .npy scores [M, K]"));
    };
    let shape = reader.header().shape.clone();
    let [_, k] = shape[..] else {
        return Err(Error::bad_input(path, format!("has shape {shape:?}, expected scores [M, K]")));
    };
    if k == 0 {
        return Err(Error::bad_input(path, "has no classes (shape [M, 0]), expected scores [M, K]"));
    }
    let values = match reader.read_all()?.data {
        Elements::F32(v) => v,
        Elements::F64(v) => v.into_iter().map(|x| x as f32).collect(),
        other => {
            return Err(Error::bad_input(
                path,
                format!("holds {} values, expected float scores (f32 or f64)", other.dtype().name()),
            ))
        }
    };
    Ok((values, k))
}
