//! Which samples rejection sampling keeps (Razavi et al. 2019, "Generating Diverse
//! High-Fidelity Images with VQ-VAE-2", section 3.3, <https://arxiv.org/abs/1906.00446>):
//! each sample is scored by a classifier's probability of the class it was drawn for, and
//! the best of each class are kept.

use crate::error::{Error, Result};

/// How many samples of each class to keep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Keep {
    /// The N best of each class (all of a class with fewer).
    PerClass(usize),
    /// The best fraction F of each class, rounded to the nearest count.
    Fraction(f64),
    /// Every sample whose score is at least P.
    MinProb(f32),
}

impl Keep {
    /// How many of a class of `n` samples, sorted best first, with scores `sorted`, to keep.
    fn count(self, sorted: &[f32]) -> usize {
        match self {
            Keep::PerClass(k) => k.min(sorted.len()),
            Keep::Fraction(f) => ((f * sorted.len() as f64).round() as usize).min(sorted.len()),
            Keep::MinProb(p) => sorted.iter().take_while(|&&s| s >= p).count(),
        }
    }
}

/// Scores [M, K] (row-major) and labels [M] of samples, checked: each label a class below K,
/// every score finite.
pub struct Scored<'a> {
    pub scores: &'a [f32],
    pub classes: usize,
    pub labels: &'a [u32],
}

impl<'a> Scored<'a> {
    /// The checked pair; `scores_name` and `labels_name` name the files in errors.
    pub fn new(
        scores: &'a [f32],
        classes: usize,
        labels: &'a [u32],
        scores_name: &str,
        labels_name: &str,
    ) -> Result<Self> {
        if classes == 0 || !scores.len().is_multiple_of(classes) {
            return Err(Error::bad_input(scores_name, "is not a [M, K] array of scores"));
        }
        let m = scores.len() / classes;
        if labels.len() != m {
            return Err(Error::bad_input(
                labels_name,
                format!(
                    "has {} labels, {scores_name} scores {m} samples (expected one label per sample)",
                    labels.len()
                ),
            ));
        }
        if let Some((row, &l)) = labels.iter().enumerate().find(|(_, &l)| l as usize >= classes) {
            return Err(Error::bad_input(
                labels_name,
                format!("label {l} of sample {row} is out of range for the {classes} classes of {scores_name}"),
            ));
        }
        if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
            return Err(Error::bad_input(scores_name, format!("score {i} is not a finite number")));
        }
        Ok(Scored { scores, classes, labels })
    }

    /// The score of sample `row`: the probability of its own class.
    fn score(&self, row: usize) -> f32 {
        self.scores[row * self.classes + self.labels[row] as usize]
    }

    /// The rows kept, by class (ascending), then by score (descending; ties by row).
    pub fn choose(&self, keep: Keep) -> Vec<usize> {
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); self.classes];
        for (row, &l) in self.labels.iter().enumerate() {
            by_class[l as usize].push(row);
        }
        let mut kept = Vec::new();
        for mut rows in by_class {
            // Stable: equal scores stay in row order.
            rows.sort_by(|&a, &b| self.score(b).total_cmp(&self.score(a)));
            let sorted: Vec<f32> = rows.iter().map(|&r| self.score(r)).collect();
            kept.extend_from_slice(&rows[..keep.count(&sorted)]);
        }
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Rng, Stream};

    /// The brute force: every sample's rank within its class (the number of its class's
    /// samples that beat it: a higher score, or an equal one at an earlier row), kept when
    /// the rank is below the class's quota; then all kept sorted by (class, rank).
    fn brute_force(scores: &[f32], k: usize, labels: &[u32], keep: Keep) -> Vec<usize> {
        let s = |r: usize| scores[r * k + labels[r] as usize];
        let m = labels.len();
        let rank =
            |r: usize| (0..m).filter(|&o| labels[o] == labels[r] && (s(o) > s(r) || (s(o) == s(r) && o < r))).count();
        let size = |c: u32| labels.iter().filter(|&&l| l == c).count();
        let quota = |c: u32| match keep {
            Keep::PerClass(n) => n,
            Keep::Fraction(f) => (f * size(c) as f64).round() as usize,
            Keep::MinProb(p) => (0..m).filter(|&o| labels[o] == c && s(o) >= p).count(),
        };
        let mut kept: Vec<usize> = (0..m).filter(|&r| rank(r) < quota(labels[r])).collect();
        kept.sort_by_key(|&r| (labels[r], rank(r)));
        kept
    }

    #[test]
    fn choice_matches_a_brute_force_ranking() {
        let mut rng = Rng::new(5, Stream::Eval, 0);
        for (m, k) in [(1, 2), (40, 3), (101, 5), (200, 10)] {
            // Scores on a coarse grid, so that ties occur.
            let scores: Vec<f32> =
                (0..m * k).map(|_| (rand::Rng::random_range(rng.inner(), 0..8) as f32) / 8.0).collect();
            let labels: Vec<u32> = (0..m).map(|_| rand::Rng::random_range(rng.inner(), 0..k as u32)).collect();
            let scored = Scored::new(&scores, k, &labels, "s", "l").unwrap();
            for keep in
                [Keep::PerClass(0), Keep::PerClass(3), Keep::PerClass(1000), Keep::Fraction(0.1), Keep::Fraction(0.5)]
                    .into_iter()
                    .chain([Keep::Fraction(1.0), Keep::MinProb(0.5), Keep::MinProb(0.0), Keep::MinProb(2.0)])
            {
                assert_eq!(scored.choose(keep), brute_force(&scores, k, &labels, keep), "{m}x{k} {keep:?}");
            }
        }
    }

    #[test]
    fn scores_and_labels_that_do_not_fit_are_refused() {
        let e = |r: Result<Scored>| r.err().unwrap().to_string();
        let scores = [0.5f32, 0.5, 0.1, 0.9];
        assert!(e(Scored::new(&scores, 2, &[0], "s", "l")).contains("has 1 labels, s scores 2 samples"));
        assert!(e(Scored::new(&scores, 2, &[0, 2], "s", "l")).contains("label 2 of sample 1 is out of range"));
        assert!(e(Scored::new(&[0.5, f32::NAN], 2, &[0], "s", "l")).contains("score 1 is not a finite"));
        assert!(e(Scored::new(&scores, 3, &[0], "s", "l")).contains("not a [M, K]"));
    }
}
