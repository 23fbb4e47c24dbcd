//! The literal children of a node of the subscription trie or the retained-message tree, keyed
//! by level text. Most nodes have no literal child or one: every level of a deep filter or topic
//! is such a node, and 65,535 `/` make 65,536 of them. With a hash table in every node, a
//! filter of 65,535 `/` took 42 MB in each shard's trie and such a retained topic 25 MB (a table
//! of four buckets holding one child, per level): a 64 KiB SUBSCRIBE bought 650 times its size.
//! Keeping a single child in a box of its own, and a (boxed) table only from the second child
//! on, brings that to 7.7 MB and 3.1 MB. Looking up a node's only child compares the level text
//! instead of hashing it, which made the trie bench's matches a little faster, not slower.

use ahash::AHashMap;

#[derive(Default)]
pub(crate) enum Children<N> {
    #[default]
    None,
    One(Box<(Box<str>, N)>),
    /// Boxed, so that the many nodes without a table pay 16 bytes for this field, not 72.
    Many(Box<AHashMap<Box<str>, N>>),
}

impl<N> Children<N> {
    #[inline]
    pub(crate) fn get(&self, level: &str) -> Option<&N> {
        match self {
            Children::None => None,
            Children::One(child) => (&*child.0 == level).then_some(&child.1),
            Children::Many(map) => map.get(level),
        }
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, level: &str) -> Option<&mut N> {
        match self {
            Children::None => None,
            Children::One(child) => (&*child.0 == level).then_some(&mut child.1),
            Children::Many(map) => map.get_mut(level),
        }
    }

    /// The child for `level`, made with `new` if there is none. An existing level costs no
    /// key allocation: subscribing to an existing filter is the common case.
    pub(crate) fn get_or_insert_with(&mut self, level: &str, new: impl FnOnce() -> N) -> &mut N {
        match self {
            Children::None => *self = Children::One(Box::new((level.into(), new()))),
            Children::One(child) if &*child.0 == level => {}
            Children::One(_) => {
                let Children::One(child) = std::mem::take(self) else {
                    unreachable!("matched One above")
                };
                let (key, node) = *child;
                let mut map = AHashMap::with_capacity(2);
                map.insert(key, node);
                map.insert(level.into(), new());
                *self = Children::Many(Box::new(map));
            }
            Children::Many(map) => {
                if !map.contains_key(level) {
                    map.insert(level.into(), new());
                }
            }
        }
        self.get_mut(level).expect("inserted above")
    }

    /// Removes and returns the child for `level`.
    pub(crate) fn remove(&mut self, level: &str) -> Option<N> {
        let removed = match self {
            Children::None => None,
            Children::One(child) if &*child.0 != level => None,
            Children::One(_) => {
                let Children::One(child) = std::mem::take(self) else {
                    unreachable!("matched One above")
                };
                Some(child.1)
            }
            Children::Many(map) => map.remove(level),
        };
        if let Children::Many(map) = self {
            if map.len() == 1 {
                // Back to the compact form, so that a chain stays cheap after churn.
                let (key, node) = map.drain().next().expect("one entry");
                *self = Children::One(Box::new((key, node)));
            } else if map.len() * 4 <= map.capacity() {
                // A map never gives memory back by itself; a node that once had 100k children
                // would keep their table forever.
                map.shrink_to_fit();
            }
        }
        removed
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Children::None => 0,
            Children::One(_) => 1,
            Children::Many(map) => map.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        matches!(self, Children::None)
    }

    /// Every child with its level text, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &N)> {
        let (one, many) = match self {
            Children::None => (None, None),
            Children::One(child) => (Some((&*child.0, &child.1)), None),
            Children::Many(map) => (None, Some(map.iter().map(|(k, n)| (&**k, n)))),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &N> {
        self.iter().map(|(_, n)| n)
    }

    /// Moves every child into `out`, leaving none.
    pub(crate) fn drain_into(&mut self, out: &mut Vec<N>) {
        match std::mem::take(self) {
            Children::None => {}
            Children::One(child) => out.push(child.1),
            Children::Many(map) => out.extend(map.into_values()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Children;

    fn sorted(c: &Children<u32>) -> Vec<(String, u32)> {
        let mut v: Vec<_> = c.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        v.sort();
        v
    }

    #[test]
    fn grows_from_none_to_one_to_many_and_back() {
        let mut c = Children::default();
        assert!(c.is_empty() && c.get("a").is_none());
        *c.get_or_insert_with("a", || 1) += 10;
        assert!(matches!(c, Children::One(_)));
        assert_eq!((c.len(), c.get("a"), c.get("b")), (1, Some(&11), None));
        assert_eq!(*c.get_or_insert_with("a", || unreachable!()), 11);
        c.get_or_insert_with("", || 2);
        c.get_or_insert_with("b", || 3);
        assert!(matches!(c, Children::Many(_)));
        assert_eq!(
            sorted(&c),
            [("".into(), 2), ("a".into(), 11), ("b".into(), 3)]
        );
        assert_eq!(c.remove("x"), None);
        assert_eq!(c.remove("a"), Some(11));
        assert_eq!(c.remove(""), Some(2));
        assert!(
            matches!(c, Children::One(_)),
            "one child left: compact again"
        );
        assert_eq!(c.remove("a"), None);
        assert_eq!(c.remove("b"), Some(3));
        assert!(c.is_empty());
        c.get_or_insert_with("x", || 4);
        c.get_or_insert_with("y", || 5);
        let mut out = Vec::new();
        c.drain_into(&mut out);
        out.sort();
        assert_eq!((out, c.len()), (vec![4, 5], 0));
    }
}
