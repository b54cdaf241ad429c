//! An analyzer's own per-series state between flushes: a map from a fixed number of label values
//! to a value, in insertion order.
//!
//! Input: label tuples (one lookup per packet) and the analyzer's updates to their values.
//! Output: the entries, drained in first-seen order when the analyzer flushes them into
//! [`crate::Updates`] (see [`crate::Analyzer::flush`]).
//!
//! For an analyzer that updates several families with the same labels from each packet: it
//! pays one hashed lookup per packet here, where emitting per packet would pay one per family,
//! and it emits once per series per flush. Keys are hashed as [`crate::Updates`] hashes series
//! (word at a time, no allocation); buffers keep their capacity from one drain to the next.

use hashbrown::HashTable;

use super::series_hash;
use crate::family::Label;

/// A map from `N` label values to `V`, kept in insertion order.
///
/// ```
/// use wasmtap_sdk::{Label, LabelMap};
///
/// let mut packets: LabelMap<2, u32> = LabelMap::new();
/// *packets.entry([Label::Ipv4(1), Label::Device(0)]) += 1;
/// *packets.entry([Label::Ipv4(2), Label::Device(0)]) += 1;
/// *packets.entry([Label::Ipv4(1), Label::Device(0)]) += 1;
/// let drained: Vec<_> = packets.drain().collect();
/// assert_eq!(drained, vec![([Label::Ipv4(1), Label::Device(0)], 2), ([Label::Ipv4(2), Label::Device(0)], 1)]);
/// assert!(packets.is_empty());
/// ```
pub struct LabelMap<const N: usize, V> {
    /// Indices into `entries`, hashed by [`series_hash`].
    index: HashTable<usize>,
    entries: Vec<([Label; N], V)>,
}

impl<const N: usize, V> Default for LabelMap<N, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize, V> LabelMap<N, V> {
    /// An empty map.
    pub const fn new() -> Self {
        Self { index: HashTable::new(), entries: Vec::new() }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if there is no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value of `labels`, inserted as `V::default()` if absent.
    #[inline]
    pub fn entry(&mut self, labels: [Label; N]) -> &mut V
    where
        V: Default,
    {
        let hash = series_hash(0, &labels);
        let entries = &self.entries;
        let found = self.index.find(hash, |&i| entries.get(i).is_some_and(|(k, _)| *k == labels));
        let i = match found {
            Some(&i) => i,
            None => {
                let i = self.entries.len();
                self.entries.push((labels, V::default()));
                let entries = &self.entries;
                self.index.insert_unique(hash, i, |&j| {
                    entries.get(j).map_or(0, |(k, _)| series_hash(0, k))
                });
                i
            }
        };
        // `i` was found in, or just pushed onto, `entries`.
        &mut self.entries[i].1
    }

    /// Removes every entry, handing them out in insertion order (keeps capacity).
    pub fn drain(&mut self) -> impl Iterator<Item = ([Label; N], V)> + '_ {
        self.index.clear();
        self.entries.drain(..)
    }
}
