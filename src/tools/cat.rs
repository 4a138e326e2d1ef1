//! `tensor-cat`: joins tensor files along axis 0, as `np.concatenate` does, so the outputs
//! of a job split with `--shard K/N` become the one run's output, byte for byte.
//!
//! `.npy` arrays join when their dtypes and their shapes past axis 0 agree; `.safetensors`
//! files (the code files of vq-encode and prior-sample) when they hold the same names, and
//! under each name the same dtype and shape past axis 0, and the same metadata: each named
//! tensor is joined on its own. The output is of the inputs' kind. Its header, whose row
//! counts the inputs' headers give, goes out first; then the data is copied through a buffer,
//! input by input (tensor by tensor for `.safetensors`), so memory does not grow with the
//! files. A `.safetensors` file on stdin is first copied to an anonymous temporary file, as
//! its tensors are read in turns.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;

use crate::data::stream::open_npy;
use crate::error::{Error, Result};
use crate::io::npy::{Header as NpyHeader, NpyReader, NpyWriter};
use crate::io::safetensors::{encode_header, read_header, Entry, Header as StHeader, SafetensorsWriter};
use crate::io::tensor_file::{Format, Peeked};
use crate::io::{check_io, InputPath, OutputPath};

/// What `tensor-cat` joins.
pub struct TensorCat {
    /// In order; at most one is stdin.
    pub inputs: Vec<InputPath>,
    pub output: OutputPath,
}

/// Bytes copied at a time.
const BUFFER: usize = 1 << 20;

/// Writes the inputs joined along axis 0 to the output.
pub fn tensor_cat(r: &TensorCat) -> Result<()> {
    let names: Vec<String> = (1..=r.inputs.len()).map(|i| format!("INPUT {i}")).collect();
    let inputs: Vec<(&str, Option<&InputPath>)> =
        names.iter().map(String::as_str).zip(r.inputs.iter().map(Some)).collect();
    check_io(&inputs, &[("-o", Some(&r.output))])?;
    let mut parts: Option<Parts> = None;
    for input in &r.inputs {
        match (Part::open(input)?, &mut parts) {
            (part, None) => parts = Some(Parts::from(part)),
            (Part::Npy(h, reader), Some(Parts::Npy(all))) => all.push((h, reader)),
            (Part::Safetensors(h, source), Some(Parts::Safetensors(all))) => all.push((h, source)),
            (part, Some(all)) => {
                return Err(Error::bad_input(
                    input,
                    format!(
                        "is {}, the first input {} is {} (tensor-cat joins files of one kind)",
                        part.kind_name(),
                        r.inputs[0],
                        all.kind_name()
                    ),
                ))
            }
        }
    }
    match parts {
        Some(Parts::Npy(all)) => join_npy(&r.inputs, all, &r.output),
        Some(Parts::Safetensors(all)) => join_safetensors(&r.inputs, all, &r.output),
        None => Err(Error::config("tensor-cat needs at least one input")),
    }
}

const NPY: &str = "an .npy array";
const SAFETENSORS: &str = "a .safetensors file";

/// One input, its header read.
enum Part {
    /// An `.npy` array; stdin's reader is kept (at its first data byte), a file's reopened
    /// in its turn, so that a thousand inputs take no thousand open files.
    Npy(NpyHeader, Option<NpyReader<Peeked>>),
    Safetensors(StHeader, Source),
}

impl Part {
    fn open(input: &InputPath) -> Result<Self> {
        let mut peeked = Peeked::open(input)?;
        if peeked.is_empty() {
            return Err(Error::bad_input(input, "empty input (expected an .npy or .safetensors file)"));
        }
        match peeked.format() {
            Some(Format::Npy) => {
                let len = peeked.len;
                let reader = NpyReader::new(peeked, len, &input.to_string())?;
                let header = reader.header().clone();
                if header.shape.is_empty() {
                    return Err(Error::bad_input(input, "holds a 0-d array, which has no axis 0 to join along"));
                }
                Ok(Part::Npy(header, matches!(input, InputPath::Stdin).then_some(reader)))
            }
            Some(Format::Safetensors) => {
                let mut file = match input {
                    InputPath::File(p) => File::open(p).map_err(|e| Error::io(input, e))?,
                    InputPath::Stdin => {
                        let mut spool = tempfile::tempfile().map_err(|e| Error::io("a temporary file", e))?;
                        io::copy(&mut peeked, &mut spool).map_err(|e| Error::io(input, e))?;
                        spool.seek(SeekFrom::Start(0)).map_err(|e| Error::io(input, e))?;
                        spool
                    }
                };
                let len = file.metadata().map_err(|e| Error::io(input, e))?.len();
                let header = read_header(&mut BufReader::new(&mut file), len, &input.to_string())?;
                if let Some((name, _)) = header.tensors.iter().find(|(_, (e, _))| e.shape.is_empty()) {
                    return Err(Error::bad_input(
                        input,
                        format!("tensor '{name}' is 0-d, which has no axis 0 to join along"),
                    ));
                }
                let source = match input {
                    InputPath::File(p) => Source::File(p.clone(), len),
                    InputPath::Stdin => Source::Spool(file),
                };
                Ok(Part::Safetensors(header, source))
            }
            None => Err(Error::bad_input(
                input,
                "not a tensor file: expected .npy (starting with \\x93NUMPY) or .safetensors (an 8-byte header length, then JSON)",
            )),
        }
    }

    fn kind_name(&self) -> &'static str {
        match self {
            Part::Npy(..) => NPY,
            Part::Safetensors(..) => SAFETENSORS,
        }
    }
}

/// The inputs, of one kind.
enum Parts {
    Npy(Vec<(NpyHeader, Option<NpyReader<Peeked>>)>),
    Safetensors(Vec<(StHeader, Source)>),
}

impl From<Part> for Parts {
    fn from(part: Part) -> Self {
        match part {
            Part::Npy(h, reader) => Parts::Npy(vec![(h, reader)]),
            Part::Safetensors(h, source) => Parts::Safetensors(vec![(h, source)]),
        }
    }
}

impl Parts {
    fn kind_name(&self) -> &'static str {
        match self {
            Parts::Npy(_) => NPY,
            Parts::Safetensors(_) => SAFETENSORS,
        }
    }
}

/// Where a `.safetensors` input's data is read from, tensor by tensor.
enum Source {
    /// A file, reopened for each tensor, and its length, to notice a change.
    File(PathBuf, u64),
    /// Stdin's bytes, copied.
    Spool(File),
}

impl Source {
    /// The input, opened at `offset`.
    fn at(&self, input: &InputPath, offset: u64) -> Result<File> {
        let mut file = match self {
            Source::Spool(f) => f.try_clone().map_err(|e| Error::io(input, e))?,
            Source::File(path, len) => {
                let f = File::open(path).map_err(|e| Error::io(input, e))?;
                if f.metadata().map_err(|e| Error::io(input, e))?.len() != *len {
                    return Err(Error::bad_input(input, "changed while it was being joined"));
                }
                f
            }
        };
        file.seek(SeekFrom::Start(offset)).map_err(|e| Error::io(input, e))?;
        Ok(file)
    }
}

/// The sum of the inputs' row counts, or an error naming the input whose rows overflow it.
fn total_rows<'a>(counts: impl Iterator<Item = (&'a InputPath, usize)>) -> Result<usize> {
    let mut sum = 0usize;
    for (input, n) in counts {
        sum = sum.checked_add(n).ok_or_else(|| Error::bad_input(input, "its rows make the joined count overflow"))?;
    }
    Ok(sum)
}

fn join_npy(inputs: &[InputPath], parts: Vec<(NpyHeader, Option<NpyReader<Peeked>>)>, out: &OutputPath) -> Result<()> {
    let want = &parts[0].0;
    for (input, (h, _)) in inputs.iter().zip(&parts).skip(1) {
        if h.dtype != want.dtype {
            return Err(Error::bad_input(
                input,
                format!(
                    "holds {}, the first input {} holds {} (tensor-cat joins arrays of one dtype)",
                    h.dtype.name(),
                    inputs[0],
                    want.dtype.name()
                ),
            ));
        }
        if h.shape[1..] != want.shape[1..] {
            return Err(Error::bad_input(
                input,
                format!(
                    "has rows of shape {:?}, the first input {} rows of {:?} (every axis past 0 must agree)",
                    &h.shape[1..],
                    inputs[0],
                    &want.shape[1..]
                ),
            ));
        }
    }
    let mut shape = want.shape.clone();
    shape[0] = total_rows(inputs.iter().zip(parts.iter().map(|(h, _)| h.rows())))?;
    let chunk = (BUFFER / (want.row_len() * want.dtype.size()).max(1)).max(1);
    let mut w = NpyWriter::new(out.create()?, want.dtype, &shape).map_err(|e| Error::io(out, e))?;
    for (input, (header, kept)) in inputs.iter().zip(parts) {
        let mut reader = match kept {
            Some(r) => r,
            None => {
                let r = open_npy(input)?;
                if r.header() != &header {
                    return Err(Error::bad_input(input, "changed while it was being joined"));
                }
                r
            }
        };
        while let Some(rows) = reader.read_rows(chunk)? {
            w.write_elements(&rows.data).map_err(|e| Error::io(out, e))?;
        }
    }
    w.finish().map_err(|e| Error::io(out, e))?.finish()
}

fn join_safetensors(inputs: &[InputPath], parts: Vec<(StHeader, Source)>, out: &OutputPath) -> Result<()> {
    let want = &parts[0].0;
    for (input, (h, _)) in inputs.iter().zip(&parts).skip(1) {
        check_like(input, h, &inputs[0], want)?;
    }
    let entries: Vec<Entry> = want
        .tensors
        .values()
        .map(|(e, _)| {
            let counts = inputs.iter().zip(parts.iter().map(|(h, _)| h.tensors[&e.name].0.shape[0]));
            let mut shape = e.shape.clone();
            shape[0] = total_rows(counts)?;
            Ok(Entry::new(e.name.clone(), e.dtype, shape))
        })
        .collect::<Result<_>>()?;
    // The writer streams the tensor whose turn it is in the file: so they come in that order.
    let (_, order) = encode_header(&want.metadata, &entries)?;
    let mut w =
        SafetensorsWriter::new(out.create()?, want.metadata.clone(), entries.clone()).map_err(|e| Error::io(out, e))?;
    let mut buf = vec![0u8; BUFFER];
    for i in order {
        for (input, (header, source)) in inputs.iter().zip(&parts) {
            let (entry, offset) = &header.tensors[&entries[i].name];
            let mut data = BufReader::new(source.at(input, *offset)?).take(entry.bytes);
            loop {
                let n = data.read(&mut buf).map_err(|e| Error::io(input, e))?;
                if n == 0 {
                    break;
                }
                w.append(i, &buf[..n]).map_err(|e| Error::io(out, e))?;
            }
        }
    }
    w.finish().map_err(|e| Error::io(out, e))?.finish()
}

/// Checks that a `.safetensors` header can be joined to the first input's: the same
/// metadata, the same names, and under each the same dtype and shape past axis 0, with
/// whole bytes per row.
fn check_like(input: &InputPath, h: &StHeader, first: &InputPath, want: &StHeader) -> Result<()> {
    let bad = |what: String| Err(Error::bad_input(input, what));
    if h.metadata != want.metadata {
        let key = differing_key(&h.metadata, &want.metadata);
        let show = |m: &BTreeMap<String, String>| m.get(key).map_or("absent".to_string(), |v| format!("'{v}'"));
        return bad(format!(
            "metadata {key} is {}, in the first input {first} {} (tensor-cat joins files of equal metadata)",
            show(&h.metadata),
            show(&want.metadata)
        ));
    }
    let names = |h: &StHeader| h.tensors.keys().cloned().collect::<Vec<_>>().join(", ");
    if h.tensors.keys().ne(want.tensors.keys()) {
        return bad(format!("holds tensors {}, the first input {first} holds {}", names(h), names(want)));
    }
    for ((name, (e, _)), (_, (w, _))) in h.tensors.iter().zip(&want.tensors) {
        if e.dtype != w.dtype {
            return bad(format!("tensor '{name}' is {:?}, in the first input {first} {:?}", e.dtype, w.dtype));
        }
        if e.shape[1..] != w.shape[1..] {
            return bad(format!(
                "tensor '{name}' has rows of shape {:?}, in the first input {first} {:?} (every axis past 0 must agree)",
                &e.shape[1..],
                &w.shape[1..]
            ));
        }
        let row_bits = e.shape[1..].iter().product::<usize>() * e.dtype.bitsize();
        if row_bits % 8 != 0 {
            return bad(format!("tensor '{name}' has rows of {row_bits} bits, which do not join byte by byte"));
        }
    }
    Ok(())
}

/// The first key whose value differs between two unequal maps.
fn differing_key<'a>(a: &'a BTreeMap<String, String>, b: &'a BTreeMap<String, String>) -> &'a str {
    a.keys().chain(b.keys()).find(|k| a.get(*k) != b.get(*k)).map(String::as_str).expect("the maps differ")
}
