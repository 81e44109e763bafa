//! [`BatchSampler`]: which pairs go into which batch, per epoch, reproducibly from a seed.
//!
//! The random stream is ChaCha8 seeded with `seed` on stream `epoch`, so epoch `e` of a run
//! is the same whether or not epochs before it were drawn (resuming a run mid-way gives the
//! same batches).

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::error::DataError;

/// How many batches' worth of pairs a length-grouped sampler sorts together (as in
/// transformers' `LengthGroupedSampler`): large enough to cut padding, small enough to keep
/// batches random.
pub const DEFAULT_MEGABATCH_FACTOR: usize = 50;

/// Yields batches of pair indices for each epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSampler {
    num_pairs: usize,
    batch_size: usize,
    seed: u64,
    shuffle: bool,
    drop_last: bool,
    lengths: Option<Vec<usize>>,
    megabatch_factor: usize,
}

impl BatchSampler {
    /// Shuffled batches of `batch_size` over `num_pairs` pairs; the last batch may be smaller.
    ///
    /// # Errors
    /// [`DataError::Config`] when `batch_size` is 0.
    pub fn new(num_pairs: usize, batch_size: usize, seed: u64) -> Result<Self, DataError> {
        if batch_size == 0 {
            return Err(DataError::Config {
                field: "batch_size",
                reason: "must be at least 1".into(),
            });
        }
        Ok(Self {
            num_pairs,
            batch_size,
            seed,
            shuffle: true,
            drop_last: false,
            lengths: None,
            megabatch_factor: DEFAULT_MEGABATCH_FACTOR,
        })
    }

    /// Turns shuffling off (batches in dataset order, e.g. for evaluation).
    pub fn with_shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }

    /// Drops a last batch smaller than `batch_size`.
    pub fn with_drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// Length-grouped mode: each epoch's shuffled order is cut into megabatches of
    /// `megabatch_factor * batch_size` pairs, each sorted by length (longest first) and cut into
    /// batches, whose order is then shuffled. Pairs of similar length share a batch, so less
    /// padding. `lengths[i]` is pair `i`'s row length ([`crate::TokenizedDataset::lengths`]).
    ///
    /// # Errors
    /// [`DataError::Config`] when `lengths` does not have one entry per pair or the factor is 0.
    pub fn with_length_grouping(
        mut self,
        lengths: Vec<usize>,
        megabatch_factor: usize,
    ) -> Result<Self, DataError> {
        if lengths.len() != self.num_pairs {
            return Err(DataError::Config {
                field: "lengths",
                reason: format!("{} lengths for {} pairs", lengths.len(), self.num_pairs),
            });
        }
        if megabatch_factor == 0 {
            return Err(DataError::Config {
                field: "megabatch_factor",
                reason: "must be at least 1".into(),
            });
        }
        self.lengths = Some(lengths);
        self.megabatch_factor = megabatch_factor;
        Ok(self)
    }

    /// Batches per epoch.
    pub fn num_batches(&self) -> usize {
        if self.drop_last {
            self.num_pairs / self.batch_size
        } else {
            self.num_pairs.div_ceil(self.batch_size)
        }
    }

    /// The batches of epoch `epoch` (counted from 0): every pair exactly once (without
    /// `drop_last`), the same for the same seed and epoch.
    pub fn epoch(&self, epoch: u64) -> Vec<Vec<usize>> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(epoch);
        let mut order: Vec<usize> = (0..self.num_pairs).collect();
        if self.shuffle {
            order.shuffle(&mut rng);
        }
        let mut batches: Vec<Vec<usize>> = match &self.lengths {
            None => order
                .chunks(self.batch_size)
                .map(<[usize]>::to_vec)
                .collect(),
            Some(lengths) => {
                let mega = self.megabatch_factor * self.batch_size;
                let mut batches = Vec::with_capacity(self.num_batches() + 1);
                for group in order.chunks_mut(mega) {
                    // Stable sort on a shuffled order: ties stay random.
                    group.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
                    batches.extend(group.chunks(self.batch_size).map(<[usize]>::to_vec));
                }
                if self.shuffle {
                    batches.shuffle(&mut rng);
                }
                batches
            }
        };
        if self.drop_last {
            batches.retain(|b| b.len() == self.batch_size);
        }
        batches
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pair_once_and_reproducible() {
        let sampler = BatchSampler::new(103, 8, 7).unwrap();
        let a = sampler.epoch(0);
        assert_eq!(a, sampler.epoch(0));
        assert_ne!(a, sampler.epoch(1), "epochs must differ");
        assert_ne!(a, BatchSampler::new(103, 8, 8).unwrap().epoch(0));
        assert_eq!(a.len(), 13);
        let mut all: Vec<usize> = a.concat();
        all.sort();
        assert_eq!(all, (0..103).collect::<Vec<_>>());
        assert!(a[..12].iter().all(|b| b.len() == 8));
    }

    #[test]
    fn unshuffled_is_in_order_and_drop_last_drops() {
        let s = BatchSampler::new(10, 4, 0)
            .unwrap()
            .with_shuffle(false)
            .with_drop_last(true);
        assert_eq!(s.epoch(3), vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
        assert_eq!(s.num_batches(), 2);
        assert!(BatchSampler::new(10, 0, 0).is_err());
    }

    #[test]
    fn length_grouping_cuts_padding() {
        // Lengths spread widely: grouped batches must waste far less padding than random ones.
        let n = 2000;
        let lengths: Vec<usize> = (0..n).map(|i| 1 + (i * 7919) % 500).collect();
        let padding = |batches: &[Vec<usize>]| -> usize {
            batches
                .iter()
                .map(|b| {
                    let max = b.iter().map(|&i| lengths[i]).max().unwrap_or(0);
                    b.iter().map(|&i| max - lengths[i]).sum::<usize>()
                })
                .sum()
        };
        let plain = BatchSampler::new(n, 16, 1).unwrap();
        let grouped = plain
            .clone()
            .with_length_grouping(lengths.clone(), 50)
            .unwrap();
        let g = grouped.epoch(0);
        let mut all: Vec<usize> = g.concat();
        all.sort();
        assert_eq!(all, (0..n).collect::<Vec<_>>());
        assert!(padding(&g) * 5 < padding(&plain.epoch(0)));
        assert_eq!(g, grouped.epoch(0));
        assert!(plain.clone().with_length_grouping(vec![1], 50).is_err());
    }
}
