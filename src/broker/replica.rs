//! A shard's replica of the whole subscription index: every subscriber of every shard, keyed
//! by [`SubscriberId`], with what each subscription grants ([`Grant`]: QoS and MQTT 5 options).
//! Shared subscriptions (`$share/...`) go to their own index, [`SharedIndex`].

use std::sync::Arc;

use ahash::AHashMap;

use super::cluster_port::ClusterEvent;
use super::mesh::{Grant, SubscriberId};
use super::share_balance::ShareLoads;
use super::shared::SharedIndex;
use crate::topic::{parse_shared, SubscriptionTrie};

/// The shard's replica of the subscription index, with how many filters each subscriber has
/// in it: while no subscriber has two, no message can match one subscriber twice and routing
/// skips de-duplication (which otherwise sorts every message's matches).
#[derive(Default)]
pub struct Replica {
    pub trie: SubscriptionTrie<SubscriberId, Grant>,
    filters_of: AHashMap<SubscriberId, u32>,
    with_several_filters: usize,
    /// Subscriptions with MQTT 5's No Local: while there are none, routing skips the check.
    no_local: usize,
    /// Shared subscriptions: while there are none, routing does not look.
    pub shared: SharedIndex,
    /// With a cluster, on shard 0 only: how many subscriptions each filter has on this node
    /// (a shared one counts for its inner filter), and the changes other nodes must hear of.
    pub interest: Option<InterestTracker>,
}

/// This node's filters with their subscription counts, and the filters that got their first
/// subscription or lost their last since the changes were last taken.
#[derive(Default)]
pub struct InterestTracker {
    counts: AHashMap<String, u32>,
    pub changes: Vec<ClusterEvent>,
}

impl InterestTracker {
    fn added(&mut self, filter: &str) {
        let count = self.counts.entry(filter.to_string()).or_insert(0);
        *count += 1;
        if *count == 1 {
            self.changes.push(ClusterEvent::Added(filter.to_string()));
        }
    }

    fn removed(&mut self, filter: &str) {
        if let Some(count) = self.counts.get_mut(filter) {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(filter);
                self.changes.push(ClusterEvent::Removed(filter.to_string()));
            }
        }
    }
}

impl Replica {
    /// A shard's replica (`loads` is every shard's), which also counts this node's filters
    /// (see [`InterestTracker`]) when asked.
    pub fn new(track_interest: bool, loads: Arc<ShareLoads>) -> Replica {
        Replica {
            interest: track_interest.then(InterestTracker::default),
            shared: SharedIndex::new(loads),
            ..Replica::default()
        }
    }

    /// `filter` was validated (a shared one included) before it got here.
    pub fn insert(&mut self, filter: &str, id: SubscriberId, grant: Grant) {
        if let Some(Ok(shared)) = parse_shared(filter) {
            if let Some(interest) = &mut self.interest {
                if !self.shared.contains(shared, &id) {
                    // The whole `$share/GROUP/FILTER`: the group spans the cluster.
                    interest.added(filter);
                }
            }
            self.shared.insert(filter, shared, id, grant);
            return;
        }
        let old = self.trie.insert(filter, id, grant);
        if let (Some(interest), None) = (&mut self.interest, &old) {
            interest.added(filter);
        }
        self.no_local += usize::from(grant.no_local);
        self.no_local -= usize::from(old.is_some_and(|g| g.no_local));
        if old.is_none() {
            let count = self.filters_of.entry(id).or_insert(0);
            *count += 1;
            if *count == 2 {
                self.with_several_filters += 1;
            }
        }
    }

    pub fn remove(&mut self, filter: &str, id: &SubscriberId) {
        if let Some(shared) = parse_shared(filter) {
            if let Ok(shared) = shared {
                if self.shared.remove(shared, id).is_some() {
                    if let Some(interest) = &mut self.interest {
                        interest.removed(filter);
                    }
                }
            }
            return;
        }
        let Some(old) = self.trie.remove(filter, id) else {
            return;
        };
        if let Some(interest) = &mut self.interest {
            interest.removed(filter);
        }
        self.no_local -= usize::from(old.no_local);
        if let Some(count) = self.filters_of.get_mut(id) {
            *count -= 1;
            match *count {
                0 => {
                    self.filters_of.remove(id);
                }
                1 => self.with_several_filters -= 1,
                _ => {}
            }
        }
    }

    /// Subscriptions, shared ones included.
    pub fn len(&self) -> usize {
        self.trie.len() + self.shared.len()
    }

    /// Whether some subscription says No Local.
    pub fn has_no_local(&self) -> bool {
        self.no_local > 0
    }

    /// Whether some subscriber may match one message through two filters.
    pub fn may_overlap(&self) -> bool {
        self.with_several_filters > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::mesh::ShardId;
    use crate::protocol::QoS;

    fn id(slot: u32) -> SubscriberId {
        SubscriberId {
            durable: false,
            shard: ShardId(0),
            slot,
            generation: 1,
        }
    }

    #[test]
    fn overlap_is_possible_only_while_a_subscriber_has_two_filters() {
        let mut r = Replica::default();
        r.insert("a/+", id(1), QoS::AtMostOnce.into());
        r.insert("a/#", id(2), QoS::AtMostOnce.into());
        assert!(!r.may_overlap());
        r.insert("a/+", id(1), QoS::AtLeastOnce.into()); // the same filter again replaces
        assert!(!r.may_overlap());
        r.insert("a/#", id(1), QoS::ExactlyOnce.into());
        assert!(r.may_overlap());
        r.remove("a/nothing", &id(1));
        assert!(r.may_overlap());
        r.remove("a/+", &id(1));
        assert!(!r.may_overlap());
        r.remove("a/#", &id(1));
        r.remove("a/#", &id(2));
        assert!(r.filters_of.is_empty());
        assert!(r.trie.is_empty());
    }
}
