//! Which filters each node has subscribers for. A node publishes its whole set on
//! `$SMQ.interest.<node>` when it changes (at most every [`DEBOUNCE`]) and every
//! [`HEARTBEAT`], in parts of at most [`PART_BYTES`]: a header says the snapshot's epoch and
//! which part of how many it is. The other nodes replace their picture of that node when all
//! parts of a newer epoch have come, and forget a node they have not heard for [`EXPIRY`].
//! Pure, apart from the clock passed in.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ahash::AHashMap;

use crate::broker::cluster_port::InterestTrie;

pub const DEBOUNCE: Duration = Duration::from_millis(20);
pub const HEARTBEAT: Duration = Duration::from_secs(2);
pub const EXPIRY: Duration = Duration::from_secs(10);
/// NATS servers accept 1 MiB payloads by default; parts stay well below.
pub const PART_BYTES: usize = 256 * 1024;

/// This node's filters as parts of a snapshot: each part's filters, one per line.
pub fn parts(filters: &BTreeSet<String>) -> Vec<String> {
    let mut parts = vec![String::new()];
    for f in filters {
        let last = parts.last_mut().expect("one part at least");
        if !last.is_empty() && last.len() + f.len() + 1 > PART_BYTES {
            parts.push(String::new());
        }
        let last = parts.last_mut().expect("one part at least");
        last.push_str(f);
        last.push('\n');
    }
    parts
}

/// One snapshot part, as the headers and payload say it.
pub struct Part<'a> {
    pub node: &'a str,
    pub epoch: u64,
    pub index: usize,
    pub total: usize,
    pub filters: &'a str,
}

/// The other nodes' filters.
#[derive(Default)]
pub struct RemoteNodes {
    nodes: AHashMap<String, Node>,
}

struct Node {
    /// Index in the trie (stable while the node is known).
    index: u16,
    epoch: u64,
    filters: BTreeSet<String>,
    /// Parts of a newer epoch being put together.
    pending: Option<(u64, Vec<Option<String>>)>,
    last_heard: Instant,
}

impl RemoteNodes {
    /// Takes a part; true when a node's set changed (the trie should be rebuilt).
    pub fn take(&mut self, part: Part<'_>, now: Instant) -> bool {
        if part.total == 0 || part.index >= part.total {
            return false;
        }
        let next_index = self.next_index();
        let node = self
            .nodes
            .entry(part.node.to_string())
            .or_insert_with(|| Node {
                index: next_index,
                epoch: 0,
                filters: BTreeSet::new(),
                pending: None,
                last_heard: now,
            });
        node.last_heard = now;
        if part.epoch < node.epoch || (part.epoch == node.epoch && node.epoch != 0) {
            // Old, or the snapshot we already have.
            return false;
        }
        let pending = match &mut node.pending {
            Some((epoch, parts)) if *epoch == part.epoch && parts.len() == part.total => parts,
            _ => {
                node.pending = Some((part.epoch, vec![None; part.total]));
                &mut node.pending.as_mut().expect("just set").1
            }
        };
        pending[part.index] = Some(part.filters.to_string());
        if pending.iter().any(Option::is_none) {
            return false;
        }
        let (epoch, parts) = node.pending.take().expect("complete");
        let filters: BTreeSet<String> = parts
            .iter()
            .flatten()
            .flat_map(|p| p.lines())
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        node.epoch = epoch;
        let changed = filters != node.filters;
        node.filters = filters;
        changed
    }

    /// A node that started again (its epochs begin anew).
    pub fn restarted(&mut self, node: &str) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.epoch = 0;
            n.pending = None;
        }
    }

    /// Forgets nodes not heard for [`EXPIRY`]; true if any was.
    pub fn expire(&mut self, now: Instant) -> bool {
        let before = self.nodes.len();
        self.nodes
            .retain(|_, n| now.duration_since(n.last_heard) < EXPIRY);
        self.nodes.len() != before
    }

    fn next_index(&self) -> u16 {
        (0..=u16::MAX)
            .find(|i| self.nodes.values().all(|n| n.index != *i))
            .unwrap_or(u16::MAX)
    }

    /// Every node's filters as one trie (a shared subscription `$share/GROUP/FILTER` counts
    /// as its FILTER), with `local_shared`, this node's own shared subscriptions' filters: a
    /// message for a group goes through NATS even when the group's members are all here,
    /// since NATS picks the member's node.
    pub fn trie(&self, local_shared: &BTreeSet<String>) -> InterestTrie {
        let mut trie = InterestTrie::default();
        for node in self.nodes.values() {
            for f in &node.filters {
                trie.insert(inner_filter(f), node.index, ());
            }
        }
        for f in local_shared {
            trie.insert(inner_filter(f), u16::MAX, ());
        }
        trie
    }

    /// The nodes' plain filters (not shared subscriptions: NATS picks one node of a group)
    /// as one trie by node index, each index's node name, and the shared subscriptions
    /// (`$share/G/F`) with the index of each node that has members: who must acknowledge a
    /// QoS 1/2 message (see `confirm`).
    #[allow(clippy::type_complexity)]
    pub fn acknowledgers(&self) -> (InterestTrie, AHashMap<u16, String>, Vec<(String, u16)>) {
        let mut trie = InterestTrie::default();
        let mut names = AHashMap::new();
        let mut shared = Vec::new();
        for (name, node) in &self.nodes {
            names.insert(node.index, name.clone());
            for f in &node.filters {
                if inner_filter(f) == f.as_str() {
                    trie.insert(f, node.index, ());
                } else {
                    shared.push((f.clone(), node.index));
                }
            }
        }
        (trie, names, shared)
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The names of the nodes known (their ids, without start times).
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }
}

/// The filter of a shared subscription, or the filter itself.
pub fn inner_filter(filter: &str) -> &str {
    match crate::topic::parse_shared(filter) {
        Some(Ok(shared)) => shared.filter,
        _ => filter,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part<'a>(
        node: &'a str,
        epoch: u64,
        index: usize,
        total: usize,
        filters: &'a str,
    ) -> Part<'a> {
        Part {
            node,
            epoch,
            index,
            total,
            filters,
        }
    }

    fn matches(r: &RemoteNodes, topic: &str) -> bool {
        let mut any = false;
        r.trie(&BTreeSet::new())
            .for_each_match(topic, |_, _| any = true);
        any
    }

    #[test]
    fn snapshots_replace_a_nodes_filters_when_complete_and_newer() {
        let t0 = Instant::now();
        let mut r = RemoteNodes::default();
        assert!(!r.take(part("b", 1, 0, 2, "a/#\n"), t0), "half a snapshot");
        assert!(!matches(&r, "a/x"));
        assert!(r.take(part("b", 1, 1, 2, "c/+\n"), t0));
        assert!(matches(&r, "a/x") && matches(&r, "c/y") && !matches(&r, "d"));
        // The same epoch again (a heartbeat): nothing changes; an older one is ignored.
        assert!(!r.take(part("b", 1, 0, 1, "zzz\n"), t0));
        assert!(!r.take(part("b", 0, 0, 1, "zzz\n"), t0));
        assert!(r.take(part("b", 2, 0, 1, "d\n"), t0));
        assert!(matches(&r, "d") && !matches(&r, "a/x"));
        // A silent node is forgotten.
        assert!(r.take(part("c", 1, 0, 1, "e\n"), t0 + EXPIRY / 2));
        assert!(r.expire(t0 + EXPIRY));
        assert!(!matches(&r, "d") && matches(&r, "e"));
        assert_eq!(r.node_count(), 1);
    }

    #[test]
    fn large_sets_are_cut_into_parts() {
        let filters: BTreeSet<String> = (0..40_000)
            .map(|i| format!("sensors/{i:08}/temp"))
            .collect();
        let p = parts(&filters);
        assert!(p.len() > 1 && p.iter().all(|x| x.len() <= PART_BYTES));
        let t0 = Instant::now();
        let mut r = RemoteNodes::default();
        for (i, text) in p.iter().enumerate() {
            r.take(part("n", 7, i, p.len(), text), t0);
        }
        assert!(matches(&r, "sensors/00039999/temp"));
        assert!(parts(&BTreeSet::new()) == [""]);
    }
}
