//! How a batch of token sequences is laid out for the encoder: packed end
//! to end without padding, with attention run per group of similar lengths.
//!
//! Nearly all of an encoder's work is in its dense layers, which treat every
//! token alike; padding a batch to its longest row makes them compute on
//! filler. In the benchmark's 32 short sentences (11–19 tokens) padding to
//! the longest row is 26% filler, padding within length buckets still 13%.
//! Packed, the dense layers see only real tokens. Attention is the one step
//! that needs sequences side by side: each group (the sequences of one
//! length bucket, so one long input does not make short ones attend over its
//! length) is gathered into a padded `[sequences, longest]` block with a key
//! mask, and the results are gathered back to packed rows.

/// Upper bounds of the attention groups' lengths; longer sequences form a
/// last group of their own.
const LENGTH_BUCKETS: [usize; 5] = [16, 32, 64, 128, 256];

/// A batch of token sequences packed without padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedTokens {
    /// Every token of every sequence, group after group.
    pub ids: Vec<i64>,
    /// Each token's position within its own sequence.
    pub positions: Vec<i64>,
    /// Where each input sequence starts in `ids`, in input order.
    pub starts: Vec<usize>,
    /// Each input sequence's length, in input order.
    pub lengths: Vec<usize>,
    /// Attention groups; their tokens are contiguous and in this order.
    pub groups: Vec<AttentionGroup>,
}

/// Sequences that attend side by side in one padded block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttentionGroup {
    /// First token of the group in [`PackedTokens::ids`].
    pub first_token: usize,
    /// Real tokens in the group.
    pub tokens: usize,
    /// Length of each member sequence, in packed order.
    pub lengths: Vec<usize>,
    /// The longest member: every member is padded to it for attention.
    pub padded_len: usize,
}

impl AttentionGroup {
    /// True when every member has the same length: the packed rows already
    /// are the padded block and no gathering or mask is needed.
    pub fn is_uniform(&self) -> bool {
        self.lengths.iter().all(|&len| len == self.padded_len)
    }

    /// For each slot of the padded block (`sequences × padded_len`), the
    /// group-relative token row it reads. Padding slots read the sequence's
    /// first token; the key mask hides them and their outputs are dropped.
    pub fn gather_rows(&self) -> Vec<i64> {
        let mut rows = Vec::with_capacity(self.lengths.len() * self.padded_len);
        let mut start = 0;
        for &len in &self.lengths {
            rows.extend((0..self.padded_len).map(|j| (start + if j < len { j } else { 0 }) as i64));
            start += len;
        }
        rows
    }

    /// For each real token of the group (in packed order), its slot in the
    /// padded block: the inverse of [`Self::gather_rows`] on real tokens.
    pub fn scatter_slots(&self) -> Vec<i64> {
        let mut slots = Vec::with_capacity(self.tokens);
        for (member, &len) in self.lengths.iter().enumerate() {
            slots.extend((0..len).map(|j| (member * self.padded_len + j) as i64));
        }
        slots
    }

    /// Key mask of the padded block, `sequences × padded_len`, true = padding.
    pub fn padding_mask(&self) -> Vec<bool> {
        self.lengths.iter().flat_map(|&len| (0..self.padded_len).map(move |j| j >= len)).collect()
    }
}

impl PackedTokens {
    /// Packs `sequences` (each non-empty), grouping them by length bucket.
    pub fn new(sequences: &[Vec<i64>]) -> Self {
        let bucket_of =
            |len: usize| LENGTH_BUCKETS.iter().position(|&limit| len <= limit).unwrap_or(LENGTH_BUCKETS.len());
        let total: usize = sequences.iter().map(Vec::len).sum();
        let mut packed = Self {
            ids: Vec::with_capacity(total),
            positions: Vec::with_capacity(total),
            starts: vec![0; sequences.len()],
            lengths: sequences.iter().map(Vec::len).collect(),
            groups: Vec::new(),
        };
        for bucket in 0..=LENGTH_BUCKETS.len() {
            let members: Vec<usize> =
                (0..sequences.len()).filter(|&i| bucket_of(sequences[i].len()) == bucket).collect();
            if members.is_empty() {
                continue;
            }
            let first_token = packed.ids.len();
            let lengths: Vec<usize> = members.iter().map(|&i| sequences[i].len()).collect();
            for &i in &members {
                packed.starts[i] = packed.ids.len();
                packed.ids.extend_from_slice(&sequences[i]);
                packed.positions.extend((0..sequences[i].len()).map(|j| j as i64));
            }
            let padded_len = lengths.iter().copied().max().unwrap_or(0);
            packed.groups.push(AttentionGroup {
                first_token,
                tokens: packed.ids.len() - first_token,
                lengths,
                padded_len,
            });
        }
        packed
    }

    /// Number of input sequences.
    pub fn sequences(&self) -> usize {
        self.lengths.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_without_padding_and_groups_by_length_bucket() {
        let long: Vec<i64> = (0..20).collect();
        let packed = PackedTokens::new(&[vec![1, 2, 3], long.clone(), vec![4, 5]]);
        // Both short sequences form the first group, in input order.
        assert_eq!(&packed.ids[..5], &[1, 2, 3, 4, 5]);
        assert_eq!(&packed.ids[5..], &long[..]);
        assert_eq!(packed.positions[..5], [0, 1, 2, 0, 1]);
        assert_eq!(packed.starts, vec![0, 5, 3]);
        assert_eq!(packed.lengths, vec![3, 20, 2]);
        assert_eq!(packed.groups.len(), 2);

        let short = &packed.groups[0];
        assert_eq!((short.first_token, short.tokens, short.padded_len), (0, 5, 3));
        assert!(!short.is_uniform());
        assert_eq!(short.gather_rows(), vec![0, 1, 2, 3, 4, 3]);
        assert_eq!(short.scatter_slots(), vec![0, 1, 2, 3, 4]);
        assert_eq!(short.padding_mask(), vec![false, false, false, false, false, true]);

        let single = &packed.groups[1];
        assert_eq!((single.first_token, single.tokens, single.padded_len), (5, 20, 20));
        assert!(single.is_uniform());
    }

    #[test]
    fn gather_then_scatter_returns_every_real_token() {
        let group = AttentionGroup { first_token: 0, tokens: 9, lengths: vec![2, 4, 3], padded_len: 4 };
        let gathered = group.gather_rows();
        let restored: Vec<i64> = group.scatter_slots().iter().map(|&slot| gathered[slot as usize]).collect();
        assert_eq!(restored, (0..9).collect::<Vec<i64>>());
    }
}
