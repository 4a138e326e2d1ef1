//! The rows of a stored array, read by index. A regular file is read in place, the rows a
//! batch asks for and no others (`pread`), so a training set larger than memory trains in
//! flat memory: what was read sits in the kernel's page cache, which is not the process's
//! and which the kernel reclaims. Stdin, a FIFO and the bundled sets are held in memory as
//! the bytes they come as (u8 images, a quarter of their f32 form).

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::stream::open_npy;
use crate::error::{Error, Result};
use crate::io::npy::{Array, DType, Elements};
use crate::io::InputPath;

/// An array's rows, little-endian and row-major as `.npy` stores them.
pub struct StoredRows {
    name: String,
    dtype: DType,
    /// The whole array's shape; its first dimension counts the rows.
    shape: Vec<usize>,
    store: Store,
}

enum Store {
    Memory(Vec<u8>),
    /// A regular file whose rows start `offset` bytes in.
    File {
        file: File,
        offset: u64,
    },
}

/// Bytes a pass over every row ([`StoredRows::for_each_chunk`]) reads at a time.
const CHUNK_BYTES: usize = 16 << 20;

impl StoredRows {
    /// Opens an `.npy` array of at least one dimension: a regular file to be read in place,
    /// anything else (stdin, a FIFO) read whole.
    pub fn open(path: &InputPath) -> Result<Self> {
        let reader = open_npy(path)?;
        let header = reader.header().clone();
        if header.shape.is_empty() {
            return Err(Error::bad_input(path, "holds a scalar, expected an array of rows"));
        }
        let store = match path {
            InputPath::File(p) if std::fs::metadata(p).is_ok_and(|m| m.is_file()) => {
                let offset = reader.data_offset();
                drop(reader);
                let file = File::open(p).map_err(|e| Error::io(path, e))?;
                // The reader checked the length against the header; a file replaced since
                // then is caught here rather than by a short read in the middle of training.
                let data = header.rows() as u64 * header.row_len() as u64 * header.dtype.size() as u64;
                let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
                if len != offset + data {
                    return Err(Error::bad_input(path, "changed while it was being opened"));
                }
                Store::File { file, offset }
            }
            _ => Store::Memory(reader.read_all_bytes()?),
        };
        Ok(StoredRows { name: path.to_string(), dtype: header.dtype, shape: header.shape, store })
    }

    /// An array held in memory, under `name` in messages.
    pub fn in_memory(array: Array, name: &str) -> Self {
        let dtype = array.data.dtype();
        let bytes = array.data.into_le_bytes();
        StoredRows { name: name.to_string(), dtype, shape: array.shape, store: Store::Memory(bytes) }
    }

    /// The shape of the whole array.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn len(&self) -> usize {
        self.shape[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn row_bytes(&self) -> usize {
        self.shape[1..].iter().product::<usize>() * self.dtype.size()
    }

    /// The rows at `rows` (each less than [`StoredRows::len`]), in that order, as one array;
    /// runs of consecutive rows are read at once.
    pub fn read(&self, rows: &[usize]) -> Result<Array> {
        let row = self.row_bytes();
        if let Some(&r) = rows.iter().find(|&&r| r >= self.len()) {
            return Err(Error::bad_input(&self.name, format!("has {} rows, row {r} was asked for", self.len())));
        }
        let mut bytes = vec![0u8; rows.len() * row];
        let mut start = 0;
        while start < rows.len() {
            let end = (start + 1..rows.len()).find(|&j| rows[j] != rows[j - 1] + 1).unwrap_or(rows.len());
            let dst = &mut bytes[start * row..end * row];
            let first = rows[start] * row;
            match &self.store {
                Store::Memory(b) => dst.copy_from_slice(&b[first..first + dst.len()]),
                Store::File { file, offset } => {
                    file.read_exact_at(dst, offset + first as u64).map_err(|e| Error::io(&self.name, e))?
                }
            }
            start = end;
        }
        let shape = [&[rows.len()], &self.shape[1..]].concat();
        Ok(Array { shape, data: Elements::from_le_bytes(self.dtype, &bytes) })
    }

    /// Calls `f` on every row once, in order, a chunk of rows (at most 16 MiB, at least one
    /// row) at a time: a check of the whole array in bounded memory.
    pub fn for_each_chunk(&self, mut f: impl FnMut(&Array) -> Result<()>) -> Result<()> {
        let per = (CHUNK_BYTES / self.row_bytes().max(1)).max(1);
        let mut rows = Vec::with_capacity(per);
        for first in (0..self.len()).step_by(per) {
            rows.clear();
            rows.extend(first..(first + per).min(self.len()));
            f(&self.read(&rows)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::npy::to_bytes;

    fn values(a: &Array) -> Vec<f32> {
        match &a.data {
            Elements::F32(v) => v.clone(),
            other => panic!("{other:?}"),
        }
    }

    /// A file read in place, the same array in memory, and the rows picked by hand agree,
    /// for runs and for rows out of order.
    #[test]
    fn rows_of_a_file_and_of_memory_are_the_rows_asked_for() {
        let data: Vec<f32> = (0..5 * 2 * 3).map(|i| i as f32).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        std::fs::write(&path, to_bytes(&[5, 2, 3], &data)).unwrap();
        let file = StoredRows::open(&InputPath::File(path)).unwrap();
        assert!(matches!(file.store, Store::File { .. }));
        let memory = StoredRows::in_memory(Array { shape: vec![5, 2, 3], data: Elements::F32(data.clone()) }, "m");
        for rows in [vec![0, 1, 2, 3, 4], vec![4, 0, 1, 3], vec![2], vec![]] {
            let want: Vec<f32> = rows.iter().flat_map(|&r| data[r * 6..(r + 1) * 6].iter().copied()).collect();
            for stored in [&file, &memory] {
                let got = stored.read(&rows).unwrap();
                assert_eq!(got.shape, vec![rows.len(), 2, 3]);
                assert_eq!(values(&got), want, "{rows:?}");
            }
        }
        assert!(file.read(&[5]).unwrap_err().to_string().contains("has 5 rows, row 5"));
        let mut seen = Vec::new();
        file.for_each_chunk(|a| {
            seen.extend(values(a));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, data);
    }

    #[test]
    fn a_scalar_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.npy");
        std::fs::write(&path, to_bytes::<f32>(&[], &[1.0])).unwrap();
        let e = StoredRows::open(&InputPath::File(path)).err().unwrap().to_string();
        assert!(e.contains("scalar"), "{e}");
    }
}
