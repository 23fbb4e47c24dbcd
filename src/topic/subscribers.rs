//! The set of (subscriber, data) entries stored at one trie node for one filter. Most filters
//! have one or a few subscribers, but a popular one can have 100k, and a client that
//! unsubscribes (or disconnects) must not cost a scan over all of them. So entries live in a
//! dense list that matching iterates directly, and once the list outgrows a handful of entries a
//! key → position index makes insert and remove O(1) amortized.

use ahash::AHashMap;
use smallvec::SmallVec;
use std::hash::Hash;

/// Above this many entries a node keeps a key → position index. Below it, comparing a few keys
/// is cheaper than hashing one, and the common single-subscriber filter pays no map at all.
const INDEX_ABOVE: usize = 8;
/// The index is dropped again when the list shrinks to this size. The gap keeps a node that
/// hovers around the threshold from building and dropping the index on every call.
const UNINDEX_AT: usize = 4;

pub(crate) struct Subscribers<K, V> {
    entries: SmallVec<[(K, V); 1]>,
    /// Where each key sits in `entries`; present only when the list is longer than `INDEX_ABOVE`.
    /// Boxed so that the many nodes without an index pay one pointer for it.
    index: Option<Box<AHashMap<K, usize>>>,
}

impl<K, V> Default for Subscribers<K, V> {
    fn default() -> Self {
        Subscribers {
            entries: SmallVec::new(),
            index: None,
        }
    }
}

impl<K, V> Subscribers<K, V> {
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }
}

impl<K: Eq + Hash + Clone, V> Subscribers<K, V> {
    fn position(&self, key: &K) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(key).copied(),
            None => self.entries.iter().position(|(k, _)| k == key),
        }
    }

    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.position(key).map(|i| &self.entries[i].1)
    }

    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.position(key).map(|i| &mut self.entries[i].1)
    }

    /// Adds the entry, or replaces the value of the entry for `key` and returns the old value.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some(i) = self.position(&key) {
            return Some(std::mem::replace(&mut self.entries[i].1, value));
        }
        let at = self.entries.len();
        match &mut self.index {
            Some(index) => {
                index.insert(key.clone(), at);
            }
            None if at + 1 > INDEX_ABOVE => {
                let mut index = AHashMap::with_capacity(at + 1);
                for (i, (k, _)) in self.entries.iter().enumerate() {
                    index.insert(k.clone(), i);
                }
                index.insert(key.clone(), at);
                self.index = Some(Box::new(index));
            }
            None => {}
        }
        self.entries.push((key, value));
        None
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let i = match &mut self.index {
            Some(index) => index.remove(key)?,
            None => self.entries.iter().position(|(k, _)| k == key)?,
        };
        // Order does not matter to anyone, so the last entry fills the hole instead of shifting
        // everything after it.
        let (_, value) = self.entries.swap_remove(i);
        if let (Some(index), Some((moved, _))) = (&mut self.index, self.entries.get(i)) {
            *index
                .get_mut(moved)
                .expect("every listed key is in the index") = i;
        }
        if self.entries.len() <= UNINDEX_AT {
            self.index = None;
        }
        // Storage is given back only when a quarter of it is in use, so the copy a shrink costs
        // is paid for by the removals that led to it.
        if self.entries.spilled() && self.entries.len() * 4 <= self.entries.capacity() {
            self.entries.shrink_to_fit();
            if let Some(index) = &mut self.index {
                index.shrink_to_fit();
            }
        }
        Some(value)
    }

    #[cfg(test)]
    fn check_invariants(&self) {
        match &self.index {
            Some(index) => {
                assert!(self.entries.len() > UNINDEX_AT);
                assert_eq!(index.len(), self.entries.len());
                for (i, (k, _)) in self.entries.iter().enumerate() {
                    assert_eq!(index.get(k), Some(&i));
                }
            }
            None => assert!(self.entries.len() <= INDEX_ABOVE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replace_remove_small() {
        let mut s = Subscribers::default();
        assert_eq!(s.insert(1u32, 'a'), None);
        assert_eq!(s.insert(2, 'b'), None);
        assert_eq!(s.insert(1, 'c'), Some('a'));
        assert_eq!(s.entries.len(), 2);
        assert_eq!(s.get(&1), Some(&'c'));
        assert_eq!(s.get(&3), None);
        assert_eq!(s.remove(&3), None);
        assert_eq!(s.remove(&1), Some('c'));
        assert_eq!(s.remove(&1), None);
        assert_eq!(s.get(&2), Some(&'b'));
        assert_eq!(s.remove(&2), Some('b'));
        assert!(s.is_empty());
        s.check_invariants();
    }

    #[test]
    fn index_is_built_kept_consistent_and_dropped() {
        let mut s = Subscribers::default();
        for k in 0..100u32 {
            assert_eq!(s.insert(k, k * 10), None);
            s.check_invariants();
        }
        assert!(s.index.is_some());
        assert_eq!(s.insert(42, 0), Some(420));
        assert_eq!(s.insert(42, 420), Some(0));
        // Remove from the front, the back and the middle so swap_remove moves entries around.
        for k in (0..100u32)
            .filter(|k| k % 3 == 0)
            .chain((0..100).rev().filter(|k| k % 3 == 1))
        {
            assert_eq!(s.remove(&k), Some(k * 10), "key {k}");
            assert_eq!(s.get(&k), None);
            s.check_invariants();
        }
        let mut left: Vec<_> = s.iter().map(|(k, v)| (*k, *v)).collect();
        left.sort_unstable();
        let want: Vec<_> = (0..100u32)
            .filter(|k| k % 3 == 2)
            .map(|k| (k, k * 10))
            .collect();
        assert_eq!(left, want);
        for k in want.iter().map(|(k, _)| k) {
            assert_eq!(s.remove(k), Some(k * 10));
            s.check_invariants();
        }
        assert!(s.is_empty());
        assert!(s.index.is_none());
        assert!(!s.entries.spilled(), "storage was given back");
    }
}
