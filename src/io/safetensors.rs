//! `.safetensors` files: several named tensors plus a string metadata map (where checkpoints
//! keep their configuration as JSON).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};

use candle_core::{Device, Tensor};

use super::path::{InputPath, OutputPath};
use crate::error::{Error, Result};

/// The contents of a `.safetensors` file.
#[derive(Debug, Clone, Default)]
pub struct TensorMap {
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: BTreeMap<String, String>,
}

impl TensorMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses file contents; `source` names the file in errors.
    pub fn decode(bytes: &[u8], source: &str, device: &Device) -> Result<Self> {
        use candle_core::safetensors::Load;
        let invalid = |e: safetensors::SafeTensorError| {
            Error::bad_input(
                source,
                format!("not a valid .safetensors file ({e}); expected an 8-byte header length, a JSON header and the tensor data"),
            )
        };
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(invalid)?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(invalid)?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let t = view.load(device).map_err(|e| Error::bad_input(source, format!("tensor '{name}': {e}")))?;
            tensors.insert(name, t);
        }
        let metadata = meta
            .metadata()
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        Ok(TensorMap { tensors, metadata })
    }

    pub fn read(input: &InputPath, device: &Device) -> Result<Self> {
        let bytes = input.read_all()?;
        if bytes.is_empty() {
            return Err(Error::bad_input(input, "empty file (expected a .safetensors file)"));
        }
        Self::decode(&bytes, &input.to_string(), device)
    }

    /// Serialises to bytes (tensors are moved to the CPU first).
    ///
    /// Written here rather than by `safetensors::serialize`, which takes the metadata as a
    /// `HashMap` and so writes it in a different order in every process: the same map must
    /// always give the same bytes, or a seeded run would not repeat bit for bit. The layout
    /// is the format's: a u64 header length, a JSON header (metadata, then each tensor's
    /// dtype, shape and data offsets) padded with spaces to 8 bytes, then the data, tensors
    /// ordered by element size (largest first) and name so that each one is aligned.
    pub fn encode(&self) -> Result<Vec<u8>> {
        use safetensors::View;
        let cpu: Vec<(&String, Tensor)> = self
            .tensors
            .iter()
            .map(|(k, t)| Ok((k, t.to_device(&Device::Cpu)?.contiguous()?)))
            .collect::<Result<_>>()?;
        let entries: Vec<Entry> = cpu
            .iter()
            .map(|(name, t)| Entry {
                name: (*name).clone(),
                dtype: View::dtype(t),
                shape: t.dims().to_vec(),
                bytes: t.data_len() as u64,
            })
            .collect();
        let (header, order) = encode_header(&self.metadata, &entries)?;
        let mut out = Vec::with_capacity(header.len() + entries.iter().map(|e| e.bytes as usize).sum::<usize>());
        out.extend_from_slice(&header);
        for i in order {
            out.extend_from_slice(&View::data(&cpu[i].1));
        }
        Ok(out)
    }

    /// Writes atomically.
    pub fn write(&self, out: &OutputPath) -> Result<()> {
        out.write_all(&self.encode()?)
    }

    pub fn insert(&mut self, name: impl Into<String>, t: Tensor) {
        self.tensors.insert(name.into(), t);
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.tensors.keys().map(String::as_str).collect()
    }
}

/// A tensor's name, dtype, shape and data size, as a header declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub name: String,
    pub dtype: safetensors::Dtype,
    pub shape: Vec<usize>,
    pub bytes: u64,
}

impl Entry {
    /// A tensor of `dtype` and `shape`, with the data size they imply.
    pub fn new(name: impl Into<String>, dtype: safetensors::Dtype, shape: Vec<usize>) -> Self {
        let bits = shape.iter().fold(dtype.bitsize() as u64, |acc, &d| acc * d as u64);
        Entry { name: name.into(), dtype, shape, bytes: bits.div_ceil(8) }
    }
}

/// Writes a `.safetensors` file whose tensors arrive in pieces, in any interleaving, with
/// memory that does not grow with them. The header (from the declared shapes) goes out
/// first; the bytes of the tensor whose turn it is in the file's order go straight to the
/// output, and those of tensors further on wait in anonymous temporary files until their
/// turn. So a reader downstream (`| head`) sees data at once, and only the tensors that
/// arrive ahead of their place (a two-level code file's top codes and labels, which come
/// after the bottom codes) take disk.
pub struct SafetensorsWriter<W: Write> {
    out: W,
    entries: Vec<Entry>,
    /// The tensors in the file's order, as indices into `entries`.
    order: Vec<usize>,
    /// How far through `order` the output is: `order[current]` streams.
    current: usize,
    /// Bytes received per tensor (written out or spooled).
    received: Vec<u64>,
    /// The waiting bytes of tensors after the current one.
    spools: Vec<Option<BufWriter<File>>>,
}

impl<W: Write> SafetensorsWriter<W> {
    /// A writer of the tensors `entries` with `metadata` to `out`; writes the header.
    pub fn new(mut out: W, metadata: BTreeMap<String, String>, entries: Vec<Entry>) -> io::Result<Self> {
        let (header, order) = encode_header(&metadata, &entries).map_err(io::Error::other)?;
        out.write_all(&header)?;
        let (received, spools) = (vec![0; entries.len()], (0..entries.len()).map(|_| None).collect());
        let mut w = SafetensorsWriter { out, entries, order, current: 0, received, spools };
        w.advance()?;
        Ok(w)
    }

    /// Appends the next bytes of tensor `index` (of the entries given to [`new`](Self::new)).
    pub fn append(&mut self, index: usize, bytes: &[u8]) -> io::Result<()> {
        let entry = &self.entries[index];
        if self.received[index] + bytes.len() as u64 > entry.bytes {
            return Err(io::Error::other(format!("safetensors writer: too many bytes for tensor '{}'", entry.name)));
        }
        self.received[index] += bytes.len() as u64;
        if self.order.get(self.current) == Some(&index) {
            self.out.write_all(bytes)?;
            return self.advance();
        }
        let spool = match &mut self.spools[index] {
            Some(spool) => spool,
            slot => slot.insert(BufWriter::with_capacity(1 << 16, tempfile::tempfile()?)),
        };
        spool.write_all(bytes)
    }

    /// Moves past every complete tensor in the file's order, copying out what waited for it,
    /// until the current one still expects bytes.
    fn advance(&mut self) -> io::Result<()> {
        while let Some(&i) = self.order.get(self.current) {
            if let Some(spool) = self.spools[i].take() {
                let mut file = spool.into_inner().map_err(|e| e.into_error())?;
                file.seek(SeekFrom::Start(0))?;
                io::copy(&mut file, &mut self.out)?;
            }
            if self.received[i] < self.entries[i].bytes {
                // What was spooled is out; the rest of this tensor streams.
                return Ok(());
            }
            self.current += 1;
        }
        Ok(())
    }

    /// Checks that every tensor is complete and returns the sink.
    pub fn finish(self) -> io::Result<W> {
        if let Some((e, written)) = self.entries.iter().zip(&self.received).find(|(e, w)| **w != e.bytes) {
            return Err(io::Error::other(format!(
                "safetensors writer: tensor '{}' got {written} of its {} bytes",
                e.name, e.bytes
            )));
        }
        Ok(self.out)
    }
}

/// Encodes the length prefix and JSON header of a file holding `entries`, and returns it with
/// the order in which their data must follow: by element size (largest first), then name, so
/// that every tensor is aligned to its element size.
pub fn encode_header(metadata: &BTreeMap<String, String>, entries: &[Entry]) -> Result<(Vec<u8>, Vec<usize>)> {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&entries[a], &entries[b]);
        b.dtype.bitsize().cmp(&a.dtype.bitsize()).then(a.name.cmp(&b.name))
    });
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::json!(metadata));
    }
    let mut offset = 0;
    for &i in &order {
        let e = &entries[i];
        header.insert(
            e.name.clone(),
            serde_json::json!({"dtype": e.dtype, "shape": e.shape, "data_offsets": [offset, offset + e.bytes]}),
        );
        offset += e.bytes;
    }
    let mut json = serde_json::to_vec(&header).map_err(|e| Error::config(format!("cannot serialise tensors: {e}")))?;
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + json.len());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    Ok((out, order))
}

/// A parsed header: metadata, and each tensor with the absolute file offset of its data.
#[derive(Debug, Clone)]
pub struct Header {
    pub metadata: BTreeMap<String, String>,
    pub tensors: BTreeMap<String, (Entry, u64)>,
}

/// The most header bytes accepted, so a false length cannot make us allocate it.
const MAX_HEADER: u64 = 100 << 20;

/// Reads the header of a `.safetensors` file of `len` bytes and checks every tensor's extent
/// against its dtype, shape and the file, before any data is read.
pub fn read_header(r: &mut impl std::io::Read, len: u64, source: &str) -> Result<Header> {
    let bad = |p: String| Error::bad_input(source, p);
    let mut prefix = [0u8; 8];
    r.read_exact(&mut prefix)
        .map_err(|_| bad("truncated: shorter than the 8-byte .safetensors header length".into()))?;
    let n = u64::from_le_bytes(prefix);
    if n > MAX_HEADER || 8 + n > len {
        return Err(bad(format!(
            "a header of {n} bytes does not fit a file of {len} bytes (not a .safetensors file?)"
        )));
    }
    let mut json = vec![0u8; n as usize];
    r.read_exact(&mut json).map_err(|e| Error::io(source, e))?;
    let value: serde_json::Value =
        serde_json::from_slice(&json).map_err(|e| bad(format!("the .safetensors header is not valid JSON ({e})")))?;
    let serde_json::Value::Object(map) = value else {
        return Err(bad("the .safetensors header is not a JSON object".into()));
    };
    let data_start = 8 + n;
    let mut header = Header { metadata: BTreeMap::new(), tensors: BTreeMap::new() };
    for (name, v) in map {
        if name == "__metadata__" {
            header.metadata =
                serde_json::from_value(v).map_err(|e| bad(format!("__metadata__ is not a map of strings ({e})")))?;
            continue;
        }
        let info: safetensors::tensor::TensorInfo =
            serde_json::from_value(v).map_err(|e| bad(format!("tensor '{name}': bad header entry ({e})")))?;
        let (start, end) = (info.data_offsets.0 as u64, info.data_offsets.1 as u64);
        let expected = info
            .shape
            .iter()
            .try_fold(info.dtype.bitsize() as u64, |acc, &d| acc.checked_mul(d as u64))
            .map(|bits| bits.div_ceil(8))
            .ok_or_else(|| bad(format!("tensor '{name}': absurd shape {:?}", info.shape)))?;
        if end < start || end - start != expected || data_start + end > len {
            return Err(bad(format!(
                "tensor '{name}' ({:?} {:?}) claims bytes {start}..{end} of the data; expected {expected} bytes within the file's {}",
                info.dtype,
                info.shape,
                len - data_start
            )));
        }
        let entry = Entry { name: name.clone(), dtype: info.dtype, shape: info.shape, bytes: expected };
        header.tensors.insert(name, (entry, data_start + start));
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(tensors: &[(&str, Vec<f32>)], metadata: &[(&str, &str)]) -> TensorMap {
        let mut m = TensorMap::new();
        for (name, v) in tensors {
            m.insert(*name, Tensor::from_slice(v, v.len(), &Device::Cpu).unwrap());
        }
        for (k, v) in metadata {
            m.metadata.insert(k.to_string(), v.to_string());
        }
        m
    }

    /// Metadata keys are written sorted, so equal maps give equal bytes (a `HashMap`'s
    /// order differs between maps and processes), and the file reads back.
    #[test]
    fn mixed_dtypes_round_trip_aligned() {
        let d = Device::Cpu;
        let mut m = TensorMap::new();
        m.insert("a_bytes", Tensor::new(&[1u8, 2, 3], &d).unwrap());
        m.insert("b_floats", Tensor::new(&[1.5f32, -2.0], &d).unwrap());
        m.insert("c_longs", Tensor::new(&[-7i64], &d).unwrap());
        let bytes = m.encode().unwrap();
        let back = TensorMap::decode(&bytes, "t", &d).unwrap();
        assert_eq!(back.get("a_bytes").unwrap().to_vec1::<u8>().unwrap(), [1, 2, 3]);
        assert_eq!(back.get("b_floats").unwrap().to_vec1::<f32>().unwrap(), [1.5, -2.0]);
        assert_eq!(back.get("c_longs").unwrap().to_vec1::<i64>().unwrap(), [-7]);
        // The widest elements come first, so every tensor starts at a multiple of its size.
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let offset = |n: &str| {
            st.tensor(n).unwrap().data().as_ptr() as usize - st.tensor("c_longs").unwrap().data().as_ptr() as usize
        };
        assert_eq!((offset("c_longs"), offset("b_floats"), offset("a_bytes")), (0, 8, 16));
    }

    /// Tensors written in interleaved pieces read back as if encoded whole.
    #[test]
    fn the_streaming_writer_gives_the_bytes_of_a_whole_map() {
        let d = Device::Cpu;
        let m = map(&[("b", vec![1.0, 2.0, 3.0, 4.0]), ("a", vec![5.0, 6.0])], &[("k", "v")]);
        let entries = ["b", "a"].map(|n| Entry::new(n, safetensors::Dtype::F32, vec![m.get(n).unwrap().elem_count()]));
        let mut w = SafetensorsWriter::new(Vec::new(), m.metadata.clone(), entries.to_vec()).unwrap();
        let le = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        for (b, a) in [(&[1.0, 2.0][..], &[5.0][..]), (&[3.0, 4.0], &[6.0])] {
            w.append(0, &le(b)).unwrap();
            w.append(1, &le(a)).unwrap();
        }
        assert!(w.append(1, &le(&[7.0])).is_err(), "a tensor takes no more than its shape holds");
        assert_eq!(w.finish().unwrap(), m.encode().unwrap());
        let mut short = SafetensorsWriter::new(Vec::new(), BTreeMap::new(), entries.to_vec()).unwrap();
        short.append(0, &le(&[1.0])).unwrap();
        assert!(short.finish().unwrap_err().to_string().contains("tensor 'b' got 4 of its 16 bytes"));
        assert!(TensorMap::decode(&m.encode().unwrap(), "t", &d).is_ok());
    }

    /// The tensor whose turn it is goes out as it arrives; one further on waits until then.
    #[test]
    fn the_streaming_writer_sends_the_current_tensor_at_once() {
        let le = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let entries = ["b", "a"].map(|n| Entry::new(n, safetensors::Dtype::F32, vec![2]));
        let mut w = SafetensorsWriter::new(Vec::new(), BTreeMap::new(), entries.to_vec()).unwrap();
        let header = w.out.len();
        w.append(1, &le(&[5.0])).unwrap();
        assert_eq!(w.out.len(), header + 4, "'a' comes first in the file and streams");
        w.append(0, &le(&[1.0, 2.0])).unwrap();
        assert_eq!(w.out.len(), header + 4, "'b' waits for the rest of 'a'");
        w.append(1, &le(&[6.0])).unwrap();
        assert_eq!(w.out.len(), header + 16, "the end of 'a' lets 'b' out");
        let bytes = w.finish().unwrap();
        let back = TensorMap::decode(&bytes, "t", &Device::Cpu).unwrap();
        assert_eq!(back.get("a").unwrap().to_vec1::<f32>().unwrap(), [5.0, 6.0]);
        assert_eq!(back.get("b").unwrap().to_vec1::<f32>().unwrap(), [1.0, 2.0]);
    }

    #[test]
    fn encodes_metadata_sorted_and_reads_back() {
        let meta: Vec<(String, String)> = (0..12).map(|i| (format!("k{:02}", 11 - i), format!("v\"{i}"))).collect();
        let meta: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        for tensors in [vec![("b", vec![1.0, 2.0]), ("a", vec![3.0])], vec![]] {
            let m = map(&tensors, &meta);
            let bytes = m.encode().unwrap();
            let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
            assert_eq!(n % 8, 0);
            let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
            let sorted = serde_json::to_string(&m.metadata).unwrap();
            assert!(header.starts_with(&format!("{{\"__metadata__\":{sorted}")), "{header}");
            let back = TensorMap::decode(&bytes, "t", &Device::Cpu).unwrap();
            assert_eq!(back.metadata, m.metadata);
            assert_eq!(back.names(), m.names());
            for (name, t) in &m.tensors {
                assert_eq!(back.get(name).unwrap().to_vec1::<f32>().unwrap(), t.to_vec1::<f32>().unwrap());
            }
        }
        let plain = map(&[("x", vec![1.0])], &[]);
        assert!(TensorMap::decode(&plain.encode().unwrap(), "t", &Device::Cpu).unwrap().metadata.is_empty());
    }
}
