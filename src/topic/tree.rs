//! The retained-message tree: a map from exact topic NAME to a value, searchable by topic
//! FILTER. A new subscription asks it for every retained message its filter matches. That
//! happens once per SUBSCRIBE rather than once per PUBLISH, so it favours simplicity over the
//! last nanosecond; it still walks only the branches the filter can reach.
//!
//! Same shape as the subscription trie turned around: one node per topic level, literal
//! children only (names have no wildcards), and the wildcards are in the query instead. Empty
//! branches are pruned on removal, and every walk is a loop, not recursion over the depth.

use super::children::Children;
use super::split_multi_level;
use smallvec::SmallVec;
use std::fmt;

/// Values keyed by topic name, found by topic filter with the MQTT wildcard and `$` rules
/// (the same answers as [`filter_matches`](super::filter_matches)).
///
/// Names must have passed [`validate_topic_name`](super::validate_topic_name) and filters
/// [`validate_filter`](super::validate_filter).
pub struct TopicTree<V> {
    root: TreeNode<V>,
    len: usize,
}

struct TreeNode<V> {
    children: Children<TreeNode<V>>,
    value: Option<V>,
}

impl<V> Default for TreeNode<V> {
    fn default() -> Self {
        TreeNode {
            children: Children::None,
            value: None,
        }
    }
}

impl<V> Drop for TreeNode<V> {
    // As in the trie: detach descendants first so that no drop recurses over the depth.
    fn drop(&mut self) {
        if self.children.is_empty() {
            return;
        }
        let mut pending = Vec::new();
        self.children.drain_into(&mut pending);
        while let Some(mut node) = pending.pop() {
            node.children.drain_into(&mut pending);
        }
    }
}

/// A step of a filter walk: match what is left of the filter at this node, or take every
/// value in the subtree (after a `#`).
enum Walk<'n, 'f, V> {
    Match(&'n TreeNode<V>, Option<&'f str>),
    Subtree(&'n TreeNode<V>),
}

impl<V> TopicTree<V> {
    pub fn new() -> Self {
        TopicTree {
            root: TreeNode::default(),
            len: 0,
        }
    }

    /// The number of topics with a value.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stores `value` under `topic`, returning the value it replaces.
    pub fn insert(&mut self, topic: &str, value: V) -> Option<V> {
        let mut node = &mut self.root;
        for level in topic.split('/') {
            node = node.children.get_or_insert_with(level, TreeNode::default);
        }
        let old = node.value.replace(value);
        self.len += usize::from(old.is_none());
        old
    }

    pub fn get(&self, topic: &str) -> Option<&V> {
        let mut node = &self.root;
        for level in topic.split('/') {
            node = node.children.get(level)?;
        }
        node.value.as_ref()
    }

    /// Removes and returns the value stored under `topic`; nodes left empty are removed.
    pub fn remove(&mut self, topic: &str) -> Option<V> {
        let mut node = &mut self.root;
        for level in topic.split('/') {
            node = node.children.get_mut(level)?;
        }
        let value = node.value.take()?;
        self.len -= 1;
        if node.children.is_empty() {
            self.prune(topic);
        }
        Some(value)
    }

    /// Called once the node for `topic` is empty: cuts off the highest ancestor whose subtree
    /// holds nothing but the chain down to that node.
    fn prune(&mut self, topic: &str) {
        // Walk once shared to find where the chain starts, then once mutably to its parent.
        // `cut` is the index of the level whose edge goes; the root is never removed, so the
        // chain can at most start at its child.
        let mut cut = 0;
        let mut node = &self.root;
        for (depth, level) in topic.split('/').enumerate() {
            if depth > 0 && (node.value.is_some() || node.children.len() > 1) {
                cut = depth;
            }
            node = node.children.get(level).expect("the path was just walked");
        }
        let mut levels = topic.split('/');
        let mut parent = &mut self.root;
        for level in levels.by_ref().take(cut) {
            parent = parent
                .children
                .get_mut(level)
                .expect("the path was just walked");
        }
        parent
            .children
            .remove(levels.next().expect("cut is within the path"));
    }

    /// Calls `f` with the value of every topic that `filter` matches, in no particular order.
    /// A filter starting with `+` or `#` skips topics starting with `$` (MQTT-4.7.2-1).
    pub fn for_each_matching(&self, filter: &str, mut f: impl FnMut(&V)) {
        let (path, multi) = split_multi_level(filter);
        let root = &self.root;
        // A wildcard at the root is a wildcard in the filter's first level, which is exactly
        // when MQTT-4.7.2-1 hides `$` topics.
        let visible =
            |node: &TreeNode<V>, name: &str| !(std::ptr::eq(node, root) && name.starts_with('$'));
        let mut pending: SmallVec<[Walk<'_, '_, V>; 16]> = SmallVec::new();
        pending.push(Walk::Match(root, path));
        while let Some(step) = pending.pop() {
            match step {
                Walk::Subtree(node) => {
                    if let Some(v) = &node.value {
                        f(v);
                    }
                    pending.extend(node.children.values().map(Walk::Subtree));
                }
                Walk::Match(node, None) => {
                    // `#` matches the level it follows too, so the node itself is reported
                    // either way.
                    if let Some(v) = &node.value {
                        f(v);
                    }
                    if multi {
                        let children = node.children.iter();
                        pending.extend(
                            children
                                .filter(|(name, _)| visible(node, name))
                                .map(|(_, c)| Walk::Subtree(c)),
                        );
                    }
                }
                Walk::Match(node, Some(rest)) => {
                    let (level, rest) = first_level(rest);
                    if level == "+" {
                        let children = node.children.iter();
                        pending.extend(
                            children
                                .filter(|(name, _)| visible(node, name))
                                .map(|(_, c)| Walk::Match(c, rest)),
                        );
                    } else if let Some(child) = node.children.get(level) {
                        pending.push(Walk::Match(child, rest));
                    }
                }
            }
        }
    }

    /// Calls `f` with every value, `$` topics included, in no particular order.
    pub fn for_each(&self, mut f: impl FnMut(&V)) {
        let mut stack = vec![&self.root];
        while let Some(node) = stack.pop() {
            if let Some(v) = &node.value {
                f(v);
            }
            stack.extend(node.children.values());
        }
    }

    /// The number of nodes, the root included; an empty tree has 1. For tests of pruning.
    #[doc(hidden)]
    pub fn node_count(&self) -> usize {
        let mut count = 0;
        let mut stack = vec![&self.root];
        while let Some(node) = stack.pop() {
            count += 1;
            stack.extend(node.children.values());
        }
        count
    }
}

fn first_level(rest: &str) -> (&str, Option<&str>) {
    match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    }
}

impl<V> Default for TopicTree<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> fmt::Debug for TopicTree<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopicTree")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::TopicTree;
    use crate::topic::filter_matches;

    fn matching(tree: &TopicTree<&'static str>, filter: &str) -> Vec<&'static str> {
        let mut out = Vec::new();
        tree.for_each_matching(filter, |v| out.push(*v));
        out.sort_unstable();
        out
    }

    const TOPICS: [&str; 14] = [
        "a", "a/b", "a/b/c", "a/", "a//b", "/", "/a", "b", "b/c", "$SYS", "$SYS/x", "$SYS/x/y",
        "$other", "x/$SYS",
    ];

    fn full_tree() -> TopicTree<&'static str> {
        let mut t = TopicTree::new();
        for topic in TOPICS {
            assert_eq!(t.insert(topic, topic), None);
        }
        t
    }

    #[test]
    fn insert_get_replace_remove() {
        let mut t = TopicTree::new();
        assert!(t.is_empty());
        assert_eq!(t.insert("a/b", 1), None);
        assert_eq!(t.insert("a", 2), None);
        assert_eq!(t.insert("a/b", 3), Some(1));
        assert_eq!(t.len(), 2);
        assert_eq!(t.get("a/b"), Some(&3));
        assert_eq!(t.get("a"), Some(&2));
        assert_eq!(t.get("a/"), None);
        assert_eq!(t.get("a/b/c"), None);
        assert_eq!(t.remove("a/b/c"), None);
        assert_eq!(t.remove("a/"), None);
        assert_eq!(t.remove("a/b"), Some(3));
        assert_eq!(t.remove("a/b"), None);
        assert_eq!(t.len(), 1);
        assert_eq!(t.remove("a"), Some(2));
        assert!(t.is_empty());
        assert_eq!(t.node_count(), 1);
    }

    #[test]
    fn filters_find_exactly_what_filter_matches_finds() {
        let t = full_tree();
        let table: &[(&str, &[&str])] = &[
            ("a", &["a"]),
            ("a/b", &["a/b"]),
            ("nope", &[]),
            ("a/#", &["a", "a/", "a//b", "a/b", "a/b/c"]),
            ("a/+", &["a/", "a/b"]),
            ("a/+/c", &["a/b/c"]),
            ("+", &["a", "b"]),
            ("+/+", &["/a", "/", "a/", "a/b", "b/c", "x/$SYS"]),
            ("/+", &["/", "/a"]),
            ("/#", &["/", "/a"]),
            (
                "+/#",
                &[
                    "/", "/a", "a", "a/", "a//b", "a/b", "a/b/c", "b", "b/c", "x/$SYS",
                ],
            ),
            (
                "#",
                &[
                    "/", "/a", "a", "a/", "a//b", "a/b", "a/b/c", "b", "b/c", "x/$SYS",
                ],
            ),
            ("$SYS/#", &["$SYS", "$SYS/x", "$SYS/x/y"]),
            ("$SYS/+", &["$SYS/x"]),
            ("$SYS", &["$SYS"]),
            ("+/x", &[]),
            ("x/+", &["x/$SYS"]),
            ("a/b/c/#", &["a/b/c"]),
            ("a/b/c/+", &[]),
        ];
        for (filter, want) in table {
            let mut want = want.to_vec();
            want.sort_unstable();
            assert_eq!(matching(&t, filter), want, "filter {filter:?}");
            let mut oracle: Vec<&str> = TOPICS
                .iter()
                .copied()
                .filter(|topic| filter_matches(filter, topic))
                .collect();
            oracle.sort_unstable();
            assert_eq!(
                want, oracle,
                "the table disagrees with filter_matches on {filter:?}"
            );
        }
    }

    #[test]
    fn removal_prunes_empty_branches() {
        let mut t = full_tree();
        // The root, 5 nodes under `a`, 3 under the empty first level, 2 under `b`, 3 under
        // `$SYS`, `$other`, and 2 under `x`.
        assert_eq!(t.node_count(), 17);
        assert_eq!(t.remove("a/b/c"), Some("a/b/c"));
        assert_eq!(t.node_count(), 16);
        assert_eq!(t.remove("a//b"), Some("a//b"));
        assert_eq!(t.node_count(), 15, "a/ keeps its node: it has a value");
        assert_eq!(t.remove("x/$SYS"), Some("x/$SYS"));
        assert_eq!(t.node_count(), 13, "x goes along with x/$SYS");
        assert_eq!(t.remove("$SYS"), Some("$SYS"));
        assert_eq!(t.node_count(), 13, "$SYS stays for its children");
        for topic in TOPICS {
            t.remove(topic);
        }
        assert_eq!((t.len(), t.node_count()), (0, 1));
    }

    #[test]
    fn deepest_valid_topic_does_not_overflow_the_stack() {
        std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(|| {
                let deep = "a/".repeat(32_767) + "a";
                let mut t = TopicTree::new();
                t.insert(&deep, "deep");
                assert_eq!(t.node_count(), 32_769);
                assert_eq!(matching(&t, "#"), vec!["deep"]);
                assert_eq!(matching(&t, &("+/".repeat(32_767) + "+")), vec!["deep"]);
                assert_eq!(t.remove(&deep), Some("deep"));
                assert_eq!(t.node_count(), 1);
                t.insert(&deep, "deep");
                drop(t);
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn the_deepest_topic_of_empty_levels_does_not_overflow_the_stack() {
        std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(|| {
                // 65,535 '/': 65,536 empty levels, the deepest valid topic name.
                let deepest = "/".repeat(65_535);
                let mut t = TopicTree::new();
                t.insert(&deepest, "deepest");
                t.insert("/", "shallow");
                assert_eq!(t.node_count(), 65_537);
                assert_eq!(t.get(&deepest), Some(&"deepest"));
                assert_eq!(matching(&t, &deepest), vec!["deepest"]);
                assert_eq!(matching(&t, "#"), vec!["deepest", "shallow"]);
                assert_eq!(matching(&t, &("/".repeat(65_534) + "#")), vec!["deepest"]);
                assert_eq!(matching(&t, "/+"), vec!["shallow"]);
                assert_eq!(t.remove(&deepest), Some("deepest"));
                assert_eq!(t.node_count(), 3);
                t.insert(&deepest, "deepest");
                drop(t);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
