//! The subscription trie: every (topic filter, subscriber) pair on one core, and the hot-path
//! question "which subscriptions match this topic name?". Each core keeps its own replica and
//! asks it for every PUBLISH, so matching is built to do as little as possible: one lookup per
//! literal level (a string compare for a node's only child, a hash lookup among several; see
//! `children.rs`), a pointer check for `+`, a list walk for `#`, and no heap allocation
//! (the walk's to-do list lives on the stack unless more than 16 `+` branches are pending).
//!
//! One node per filter level. A node keeps its `+` child apart from its literal children, so a
//! topic level never needs a second lookup for `"+"`, and a trailing `#` gets no node at all:
//! since it matches "this level and everything below", its subscribers are kept on the parent
//! and reported whenever the walk reaches the parent. Empty nodes are pruned on removal, so the
//! trie's size follows the live subscriptions, not the history of them.
//!
//! Filters come from clients, and a valid one can have 65,536 levels (65,535 `/`, all levels
//! empty). The broker sets no depth limit by default (`--max-topic-levels` is 0), so insert,
//! remove, match and drop are loops, never recursion over the depth: a deep filter cannot
//! overflow an executor thread's stack, and the extra memory a walk needs (the pending `+`
//! branches) is at most one entry per level of the topic, so it is bounded by the packet.

use super::children::Children;
use super::split_multi_level;
use super::subscribers::Subscribers;
use smallvec::SmallVec;
use std::fmt;
use std::hash::Hash;

/// Every subscription on one core: one entry per (filter, subscriber key), with the
/// subscription's data `V` (granted QoS and the like).
///
/// Filters must have passed [`validate_filter`](super::validate_filter) and topics
/// [`validate_topic_name`](super::validate_topic_name); other strings give unspecified (but
/// memory-safe, panic-free) results.
pub struct SubscriptionTrie<K, V> {
    root: Node<K, V>,
    len: usize,
    filters: usize,
}

struct Node<K, V> {
    /// Children for literal levels, looked up with the topic's level text.
    literal: Children<Node<K, V>>,
    /// The child for a `+` level.
    plus: Option<Box<Node<K, V>>>,
    /// Subscriptions whose filter ends at this node.
    exact: Subscribers<K, V>,
    /// Subscriptions whose filter is this node's path followed by `#`.
    multi: Subscribers<K, V>,
}

impl<K, V> Default for Node<K, V> {
    fn default() -> Self {
        Node {
            literal: Children::None,
            plus: None,
            exact: Subscribers::default(),
            multi: Subscribers::default(),
        }
    }
}

impl<K, V> Node<K, V> {
    fn child(&self, level: &str) -> Option<&Node<K, V>> {
        if level == "+" {
            self.plus.as_deref()
        } else {
            self.literal.get(level)
        }
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Node<K, V>> {
        if level == "+" {
            self.plus.as_deref_mut()
        } else {
            self.literal.get_mut(level)
        }
    }

    fn child_or_insert(&mut self, level: &str) -> &mut Node<K, V> {
        if level == "+" {
            return self.plus.get_or_insert_with(Box::default);
        }
        self.literal.get_or_insert_with(level, Node::default)
    }

    fn remove_child(&mut self, level: &str) {
        if level == "+" {
            self.plus = None;
        } else {
            self.literal.remove(level);
        }
    }

    fn child_count(&self) -> usize {
        self.literal.len() + usize::from(self.plus.is_some())
    }

    fn has_entries(&self) -> bool {
        !self.exact.is_empty() || !self.multi.is_empty()
    }

    fn move_children_to(&mut self, pending: &mut Vec<Node<K, V>>) {
        self.literal.drain_into(pending);
        if let Some(plus) = self.plus.take() {
            pending.push(*plus);
        }
    }
}

impl<K, V> Drop for Node<K, V> {
    // The derived drop would recurse once per level. Detaching every descendant first means
    // each node is dropped childless, so the stack depth stays constant.
    fn drop(&mut self) {
        if self.child_count() == 0 {
            return;
        }
        let mut pending = Vec::new();
        self.move_children_to(&mut pending);
        while let Some(mut node) = pending.pop() {
            node.move_children_to(&mut pending);
        }
    }
}

/// A place a match walk still has to visit: a node, and what is left of the topic there
/// (`None` once every level is consumed).
type Branch<'n, 't, K, V> = (&'n Node<K, V>, Option<&'t str>);

/// Splits off the first level of a non-empty remainder of a topic name.
fn first_level(rest: &str) -> (&str, Option<&str>) {
    match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    }
}

/// The levels leading to a filter's node (its trailing `#` excluded), and whether it had one.
fn filter_path(filter: &str) -> (impl Iterator<Item = &str> + Clone, bool) {
    let (path, multi) = split_multi_level(filter);
    (path.into_iter().flat_map(|p| p.split('/')), multi)
}

impl<K, V> SubscriptionTrie<K, V> {
    pub fn new() -> Self {
        SubscriptionTrie {
            root: Node::default(),
            len: 0,
            filters: 0,
        }
    }

    /// The number of (filter, key) entries.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of distinct filters with at least one entry.
    pub fn filter_count(&self) -> usize {
        self.filters
    }

    /// The number of nodes, the root included; an empty trie has 1. For tests of pruning.
    #[doc(hidden)]
    pub fn node_count(&self) -> usize {
        let mut count = 0;
        let mut stack = vec![&self.root];
        while let Some(node) = stack.pop() {
            count += 1;
            stack.extend(node.literal.values());
            stack.extend(node.plus.as_deref());
        }
        count
    }
}

impl<K, V> Default for SubscriptionTrie<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> fmt::Debug for SubscriptionTrie<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionTrie")
            .field("len", &self.len)
            .field("filters", &self.filters)
            .finish_non_exhaustive()
    }
}

impl<K: Eq + Hash + Clone, V> SubscriptionTrie<K, V> {
    /// Subscribes `key` to `filter`. A second insert of the same (filter, key) replaces the
    /// value and returns the old one, as a repeated SUBSCRIBE must (MQTT-3.8.4-3).
    pub fn insert(&mut self, filter: &str, key: K, value: V) -> Option<V> {
        let (path, multi) = filter_path(filter);
        let mut node = &mut self.root;
        for level in path {
            node = node.child_or_insert(level);
        }
        let entries = if multi {
            &mut node.multi
        } else {
            &mut node.exact
        };
        let was_empty = entries.is_empty();
        let old = entries.insert(key, value);
        if old.is_none() {
            self.len += 1;
            self.filters += usize::from(was_empty);
        }
        old
    }

    /// Unsubscribes `key` from `filter`, returning its value, or `None` if there was no such
    /// entry. Nodes left empty are removed.
    pub fn remove(&mut self, filter: &str, key: &K) -> Option<V> {
        let (path, multi) = filter_path(filter);
        let mut node = &mut self.root;
        for level in path.clone() {
            node = node.child_mut(level)?;
        }
        let entries = if multi {
            &mut node.multi
        } else {
            &mut node.exact
        };
        let value = entries.remove(key)?;
        self.len -= 1;
        if entries.is_empty() {
            self.filters -= 1;
            if !node.has_entries() && node.child_count() == 0 {
                self.prune(path);
            }
        }
        Some(value)
    }

    /// Called once the node at the end of `path` is empty: cuts off the highest ancestor whose
    /// subtree holds nothing but the chain down to that node.
    fn prune<'a>(&mut self, path: impl Iterator<Item = &'a str> + Clone) {
        // The walk down has to be done twice: the first one, shared, finds where the chain
        // starts; only then is it known which parent to borrow mutably.
        let mut cut = None;
        let mut node = &self.root;
        for (depth, level) in path.clone().enumerate() {
            node = node.child(level).expect("the path was just walked");
            if node.has_entries() || node.child_count() > 1 {
                cut = None;
            } else if cut.is_none() {
                cut = Some(depth);
            }
        }
        let Some(cut) = cut else { return };
        let mut path = path;
        let mut parent = &mut self.root;
        for level in path.by_ref().take(cut) {
            parent = parent.child_mut(level).expect("the path was just walked");
        }
        parent.remove_child(path.next().expect("cut is within the path"));
    }

    /// The value stored for (filter, key).
    pub fn get(&self, filter: &str, key: &K) -> Option<&V> {
        let (path, multi) = filter_path(filter);
        let mut node = &self.root;
        for level in path {
            node = node.child(level)?;
        }
        if multi {
            node.multi.get(key)
        } else {
            node.exact.get(key)
        }
    }

    /// The value stored for (filter, key), to change in place.
    pub fn get_mut(&mut self, filter: &str, key: &K) -> Option<&mut V> {
        let (path, multi) = filter_path(filter);
        let mut node = &mut self.root;
        for level in path {
            node = node.child_mut(level)?;
        }
        if multi {
            node.multi.get_mut(key)
        } else {
            node.exact.get_mut(key)
        }
    }

    /// Calls `f` once for every (filter, key) entry whose filter matches `topic`. A key
    /// subscribed through several matching filters is reported once per filter; the caller
    /// picks the one that applies (e.g. the highest QoS). The order is unspecified.
    pub fn for_each_match<'a>(&'a self, topic: &str, mut f: impl FnMut(&'a K, &'a V)) {
        // Only `+` branches wait here; the literal branch is followed directly. Sixteen
        // pending `+` branches cover any sane filter set without touching the heap.
        let mut pending: SmallVec<[Branch<'_, '_, K, V>; 16]> = SmallVec::new();
        if topic.starts_with('$') {
            // MQTT-4.7.2-1: filters starting with `+` or `#` do not see `$` topics, so the
            // root's `#` subscribers and `+` branch are skipped.
            let (level, rest) = first_level(topic);
            match self.root.literal.get(level) {
                Some(child) => pending.push((child, rest)),
                None => return,
            }
        } else {
            pending.push((&self.root, Some(topic)));
        }
        while let Some((mut node, mut rest)) = pending.pop() {
            loop {
                for (k, v) in node.multi.iter() {
                    f(k, v);
                }
                let Some(remaining) = rest else {
                    for (k, v) in node.exact.iter() {
                        f(k, v);
                    }
                    break;
                };
                let (level, after) = first_level(remaining);
                if let Some(plus) = node.plus.as_deref() {
                    pending.push((plus, after));
                }
                match node.literal.get(level) {
                    Some(child) => {
                        node = child;
                        rest = after;
                    }
                    None => break,
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "trie_tests.rs"]
mod tests;
