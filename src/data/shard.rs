//! `--shard K/N`: which rows of a job one of N processes does, so that a data set larger
//! than one machine spreads over `make -j`, a cluster's job array or GNU parallel, and the
//! N outputs joined in order (`tensor-cat`) are the one run's, byte for byte.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

/// Shard `index` of `count`, 0-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

/// The whole job: shard 0 of 1.
impl Default for Shard {
    fn default() -> Self {
        Shard { index: 0, count: 1 }
    }
}

impl Shard {
    /// The shard's rows of `len`: contiguous blocks in order, split as numpy's `array_split`
    /// splits, so the first `len % count` shards have one row more than the others. A shard
    /// of more shards than rows may be empty.
    pub fn rows(&self, len: usize) -> Range<usize> {
        let (each, extra) = (len / self.count, len % self.count);
        let start = |k: usize| k * each + k.min(extra);
        start(self.index)..start(self.index + 1)
    }
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let expected = "expected K/N with 0 <= K < N, e.g. 0/4";
        let (k, n) = s.split_once('/').ok_or_else(|| format!("'{s}' is not K/N ({expected})"))?;
        let number = |v: &str| v.parse::<usize>().map_err(|_| format!("'{v}' in '{s}' is not a number ({expected})"));
        let (index, count) = (number(k)?, number(n)?);
        if count == 0 {
            return Err(format!("'{s}' has N = 0 shards ({expected})"));
        }
        if index >= count {
            return Err(format!("shard {index} of {count} does not exist: K counts from 0 ({expected})"));
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `np.array_split(np.arange(len), n)`, in lengths: [4, 3, 3] for 10 in 3, [1, 1, 0, 0]
    /// for 2 in 4.
    #[test]
    fn shards_split_rows_as_numpy_array_split() {
        let lengths = |len: usize, count: usize| -> Vec<usize> {
            (0..count).map(|index| Shard { index, count }.rows(len).len()).collect()
        };
        assert_eq!(lengths(10, 3), [4, 3, 3]);
        assert_eq!(lengths(2, 4), [1, 1, 0, 0]);
        assert_eq!(lengths(0, 2), [0, 0]);
        assert_eq!(Shard { index: 2, count: 3 }.rows(10), 7..10);
        assert_eq!(Shard::default().rows(5), 0..5);
        for (len, count) in [(17, 5), (5, 5), (1000, 7)] {
            let mut next = 0;
            for index in 0..count {
                let rows = Shard { index, count }.rows(len);
                assert_eq!(rows.start, next);
                next = rows.end;
            }
            assert_eq!(next, len);
        }
    }

    #[test]
    fn k_of_n_parses_and_bad_values_say_what_is_expected() {
        assert_eq!("2/3".parse::<Shard>(), Ok(Shard { index: 2, count: 3 }));
        assert_eq!("0/1".parse::<Shard>().unwrap().to_string(), "0/1");
        for (bad, says) in
            [("3/3", "does not exist"), ("1/0", "N = 0"), ("a/2", "'a'"), ("1", "not K/N"), ("-1/2", "'-1'")]
        {
            let e = bad.parse::<Shard>().unwrap_err();
            assert!(e.contains(says) && e.contains("expected K/N"), "{bad}: {e}");
        }
    }
}
