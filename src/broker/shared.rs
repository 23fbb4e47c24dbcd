//! Shared subscriptions (`$share/{group}/{filter}`, MQTT 5.0 4.8.2) on a thread-per-core
//! broker: which member of a group gets a message.
//!
//! Every shard's replica holds every group with all its members, wherever they live, so the
//! shard a message is published on picks the member itself, without asking anyone: one
//! member per matching group, besides the normal subscribers. Round robin gives every member
//! an equal share, and a shard gives its messages to its own members while they are not
//! ahead of their share, so as not to cross cores for nothing (see `share_balance`). Members
//! are kept sorted by id, so every shard sees a group in the same order (what `hash-topic`
//! needs to send a topic to one member from every shard) and each shard's members together.
//!
//! A member is skipped while another can take the message: when it is offline (its shard
//! announces it, see `ShardMessage::Presence`) or its queue is full while it reads (the
//! pressure every shard already knows). A delivery that still fails where the member lives
//! (its session just ended, or its queue is full) is tried again on another member, at most
//! once per member ([`ShareTag::hops`]): there, or, when its publisher's acknowledgement
//! waits for the disk (`--data-dir`), by the shard that sent it, so that the acknowledgement
//! waits for the member that takes it (see `durability` and `shard::shared`).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use ahash::{AHashMap, AHashSet};

use super::mesh::{Grant, ShardId, SubscriberId};
use super::share_balance::{Balance, ShareLoads};
use crate::protocol::ByteStr;
use crate::topic::{SharedFilter, SubscriptionTrie};

/// How a group's member is chosen for each message (`--shared-strategy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ShareStrategy {
    /// An equal share for every member, wherever it lives: in turn among a shard's members,
    /// and to the members on the publishing shard while they have had no more than theirs.
    #[default]
    RoundRobin,
    /// At random.
    Random,
    /// In turn among the members on the publishing shard (no cross-core hop), the others when
    /// none of them can take it.
    LocalFirst,
    /// By a hash of the topic: one topic stays with one member, in order.
    HashTopic,
}

impl ShareStrategy {
    pub const NAMES: [&'static str; 4] = ["round-robin", "random", "local-first", "hash-topic"];

    pub fn parse(name: &str) -> Option<ShareStrategy> {
        Some(match name {
            "round-robin" => ShareStrategy::RoundRobin,
            "random" => ShareStrategy::Random,
            "local-first" => ShareStrategy::LocalFirst,
            "hash-topic" => ShareStrategy::HashTopic,
            _ => return None,
        })
    }
}

/// A shared subscription as its members subscribed it: `$share/{group}/{filter}`. Messages
/// queued for a member carry it, so they can go to another member if this one leaves.
#[derive(Debug, PartialEq, Eq)]
pub struct ShareKey {
    pub full: ByteStr,
}

impl ShareKey {
    fn parts(&self) -> SharedFilter<'_> {
        match crate::topic::parse_shared(&self.full) {
            Some(Ok(parts)) => parts,
            _ => unreachable!("a ShareKey is made from a valid shared filter"),
        }
    }
}

/// What travels with a message delivered through a shared subscription: the group, and how
/// many members already failed to take it.
#[derive(Debug, Clone)]
pub struct ShareTag {
    pub key: Arc<ShareKey>,
    pub hops: u8,
}

/// One group on one filter, as a shard's replica holds it.
struct ShareGroup {
    key: Arc<ShareKey>,
    /// Sorted by id: every shard sees the same order.
    members: Vec<(SubscriberId, Grant)>,
    /// Where this shard's round robin goes on (over the whole group).
    next: Cell<usize>,
    /// With more than one shard: how the group's shards stand against their shares.
    balance: Option<Balance>,
    /// The members on each shard (with `balance`), and where each shard's begin in `members`.
    on: Box<[u32]>,
    first: Box<[u32]>,
    /// Messages this shard gave the group's members, shared by every filter the group name
    /// is used with (see [`SharedIndex::delivered`]).
    delivered: Rc<Cell<u64>>,
}

impl ShareGroup {
    /// Counts the members on each shard again, for the balance. Members are sorted by id,
    /// shard first, so each shard's are together.
    fn count_shards(&mut self) {
        let Some(balance) = &self.balance else {
            return;
        };
        let shards = balance.shards();
        let mut on = vec![0u32; shards];
        let mut first = vec![0u32; shards];
        for (i, (id, _)) in self.members.iter().enumerate().rev() {
            if let Some(n) = on.get_mut(id.shard.index()) {
                *n += 1;
                first[id.shard.index()] = i as u32;
            }
        }
        self.on = on.into();
        self.first = first.into();
    }
}

/// What a shard must know of a member to choose it: whether it can take a message now.
pub trait Availability {
    fn busy(&self, id: &SubscriberId) -> bool;
}

/// A shard's replica of every shared subscription.
pub struct SharedIndex {
    groups: SubscriptionTrie<ByteStr, ShareGroup>,
    /// What every shard's members of each group got, shared by all shards' replicas.
    loads: Arc<ShareLoads>,
    /// Members whose session is offline.
    offline: AHashSet<SubscriberId>,
    /// Groups each member is in.
    memberships_of: AHashMap<SubscriberId, u32>,
    /// Messages given to each group name's members by this shard, since the start.
    delivered: AHashMap<ByteStr, Rc<Cell<u64>>>,
    memberships: usize,
    random: Cell<u64>,
}

/// The same on every shard, so `hash-topic` sends a topic to the same member from all.
const TOPIC_HASH: ahash::RandomState = ahash::RandomState::with_seeds(1, 2, 3, 4);

impl Default for SharedIndex {
    /// An index on its own: round robin takes turns over the whole group.
    fn default() -> Self {
        SharedIndex::new(ShareLoads::new(1))
    }
}

impl SharedIndex {
    /// A shard's replica; `loads` is the same for every shard.
    pub fn new(loads: Arc<ShareLoads>) -> SharedIndex {
        SharedIndex {
            groups: SubscriptionTrie::new(),
            loads,
            offline: AHashSet::new(),
            memberships_of: AHashMap::new(),
            delivered: AHashMap::new(),
            memberships: 0,
            random: Cell::new(0x9E37_79B9_7F4A_7C15),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.memberships == 0
    }

    /// Memberships over all groups.
    pub fn len(&self) -> usize {
        self.memberships
    }

    /// Adds `id` to the group `shared` names (or updates its grant); `full` is the filter as
    /// subscribed.
    pub fn insert(&mut self, full: &str, shared: SharedFilter<'_>, id: SubscriberId, grant: Grant) {
        let group = ByteStr::from(shared.group);
        if self.groups.get(shared.filter, &group).is_none() {
            let delivered = self.delivered.entry(group.clone()).or_default().clone();
            let full = ByteStr::from(full);
            self.groups.insert(
                shared.filter,
                group.clone(),
                ShareGroup {
                    balance: self.loads.balance(&full),
                    key: Arc::new(ShareKey { full }),
                    members: Vec::new(),
                    next: Cell::new(0),
                    on: Box::default(),
                    first: Box::default(),
                    delivered,
                },
            );
        }
        let g = self
            .groups
            .get_mut(shared.filter, &group)
            .expect("inserted above");
        match g.members.binary_search_by_key(&id, |m| m.0) {
            Ok(i) => g.members[i].1 = grant,
            Err(i) => {
                g.members.insert(i, (id, grant));
                g.count_shards();
                self.memberships += 1;
                *self.memberships_of.entry(id).or_default() += 1;
            }
        }
    }

    /// Whether `id` is a member of the group.
    pub fn contains(&self, shared: SharedFilter<'_>, id: &SubscriberId) -> bool {
        let group = ByteStr::from(shared.group);
        self.groups
            .get(shared.filter, &group)
            .is_some_and(|g| g.members.binary_search_by_key(id, |m| m.0).is_ok())
    }

    /// Removes `id` from the group; returns its grant if it was a member.
    pub fn remove(&mut self, shared: SharedFilter<'_>, id: &SubscriberId) -> Option<Grant> {
        let group = ByteStr::from(shared.group);
        let g = self.groups.get_mut(shared.filter, &group)?;
        let i = g.members.binary_search_by_key(id, |m| m.0).ok()?;
        let (_, grant) = g.members.remove(i);
        g.count_shards();
        self.memberships -= 1;
        if g.members.is_empty() {
            self.groups.remove(shared.filter, &group);
        }
        if let Some(n) = self.memberships_of.get_mut(id) {
            *n -= 1;
            if *n == 0 {
                // No longer a member anywhere: nothing to remember about it.
                self.memberships_of.remove(id);
                self.offline.remove(id);
            }
        }
        Some(grant)
    }

    /// A member's session went offline (or came back). Only members are remembered.
    pub fn set_online(&mut self, id: SubscriberId, online: bool) {
        if online {
            self.offline.remove(&id);
        } else if self.memberships_of.contains_key(&id) {
            self.offline.insert(id);
        }
    }

    /// Calls `f` with the member chosen in every group whose filter matches `topic`.
    pub fn for_each_pick<'a>(
        &'a self,
        topic: &str,
        strategy: ShareStrategy,
        here: ShardId,
        availability: &impl Availability,
        mut f: impl FnMut(&'a Arc<ShareKey>, SubscriberId, Grant),
    ) {
        self.groups.for_each_match(topic, |_, group| {
            if let Some((id, grant)) = self.pick(group, topic, strategy, here, availability, None) {
                group.delivered.set(group.delivered.get() + 1);
                f(&group.key, id, grant);
            }
        });
    }

    /// A member of the one group `full` (`$share/GROUP/FILTER`) for a message, as
    /// [`for_each_pick`](Self::for_each_pick) would pick it; None if the group has none here.
    pub fn pick_in(
        &self,
        full: &str,
        topic: &str,
        strategy: ShareStrategy,
        here: ShardId,
        availability: &impl Availability,
    ) -> Option<(Arc<ShareKey>, SubscriberId, Grant)> {
        let parts = crate::topic::parse_shared(full)?.ok()?;
        let group = self.groups.get(parts.filter, &ByteStr::from(parts.group))?;
        let (id, grant) = self.pick(group, topic, strategy, here, availability, None)?;
        group.delivered.set(group.delivered.get() + 1);
        Some((group.key.clone(), id, grant))
    }

    /// Another member of `key`'s group than `failed`, for a message it could not take; None
    /// when the group has no other member (here).
    pub fn pick_again(
        &self,
        key: &ShareKey,
        topic: &str,
        strategy: ShareStrategy,
        here: ShardId,
        availability: &impl Availability,
        failed: SubscriberId,
    ) -> Option<(SubscriberId, Grant)> {
        let parts = key.parts();
        let group = self.groups.get(parts.filter, &ByteStr::from(parts.group))?;
        self.pick(group, topic, strategy, here, availability, Some(failed))
    }

    /// The members of `key`'s group (0 when it has none here).
    pub fn members(&self, key: &ShareKey) -> usize {
        let parts = key.parts();
        self.groups
            .get(parts.filter, &ByteStr::from(parts.group))
            .map_or(0, |g| g.members.len())
    }

    fn pick(
        &self,
        group: &ShareGroup,
        topic: &str,
        strategy: ShareStrategy,
        here: ShardId,
        availability: &impl Availability,
        exclude: Option<SubscriberId>,
    ) -> Option<(SubscriberId, Grant)> {
        let members = &group.members;
        let n = members.len();
        if n == 0 {
            return None;
        }
        let balance = match strategy {
            ShareStrategy::RoundRobin => group.balance.as_ref(),
            _ => None,
        };
        if let (Some(balance), None) = (balance, exclude) {
            if let Some(chosen) = self.pick_balanced(group, balance, here, availability) {
                return Some(chosen);
            }
        }
        let start = match strategy {
            ShareStrategy::RoundRobin | ShareStrategy::LocalFirst => group.next.get() % n,
            ShareStrategy::Random => (self.next_random() % n as u64) as usize,
            ShareStrategy::HashTopic => (TOPIC_HASH.hash_one(topic) % n as u64) as usize,
        };
        let in_turn = (0..n).map(|i| (start + i) % n);
        // The one that failed, whatever its id says of durability (a target does not carry it).
        let eligible = |i: &usize| {
            let m = &members[*i].0;
            exclude
                .is_none_or(|x| (x.shard, x.slot, x.generation) != (m.shard, m.slot, m.generation))
        };
        let usable = |i: &usize| eligible(i) && self.can_take(&members[*i].0, availability);
        let chosen = match strategy {
            ShareStrategy::LocalFirst => in_turn
                .clone()
                .find(|i| members[*i].0.shard == here && usable(i)),
            _ => None,
        }
        .or_else(|| in_turn.clone().find(usable))
        // Nobody can take it now: the one whose turn it is queues it (or, offline and
        // persistent, keeps it for later).
        .or_else(|| in_turn.clone().find(eligible))?;
        if matches!(
            strategy,
            ShareStrategy::RoundRobin | ShareStrategy::LocalFirst
        ) {
            group.next.set(chosen + 1);
        }
        if let Some(balance) = balance {
            let s = members[chosen].0.shard.index();
            if let Some(&first) = group.first.get(s) {
                balance.count(s, chosen as u32 - first, &group.on, n as u32);
            }
        }
        Some(members[chosen])
    }

    /// Round robin's choice with the balance (see `share_balance`): a member of the shard
    /// whose turn it is, in turn among that shard's members; None when none of them can take
    /// the message now.
    fn pick_balanced(
        &self,
        group: &ShareGroup,
        balance: &Balance,
        here: ShardId,
        availability: &impl Availability,
    ) -> Option<(SubscriberId, Grant)> {
        let members = group.members.len() as u32;
        let s = balance.shard_for(here.index(), &group.on, members);
        let len = group.on.get(s).copied().unwrap_or(0);
        let first = *group.first.get(s)? as usize;
        let start = balance.turn(s, len);
        for i in 0..len {
            // Without a division: start < len and i < len.
            let position = if start + i >= len {
                start + i - len
            } else {
                start + i
            };
            let member = group.members[first + position as usize];
            if self.can_take(&member.0, availability) {
                balance.count(s, position, &group.on, members);
                return Some(member);
            }
        }
        None
    }

    /// Whether a member can take a message now: online and not busy.
    fn can_take(&self, id: &SubscriberId, availability: &impl Availability) -> bool {
        (self.offline.is_empty() || !self.offline.contains(id)) && !availability.busy(id)
    }

    /// Messages this shard gave each group (by name, over all its filters), sorted by name.
    pub fn delivered(&self) -> Vec<(String, u64)> {
        let mut counts: Vec<(String, u64)> = self
            .delivered
            .iter()
            .map(|(name, n)| (name.as_str().to_string(), n.get()))
            .collect();
        counts.sort();
        counts
    }

    fn next_random(&self) -> u64 {
        // xorshift64: enough to spread messages; nothing depends on it being unpredictable.
        let mut x = self.random.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random.set(x);
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::QoS;
    use crate::topic::parse_shared;

    fn id(shard: u16, slot: u32) -> SubscriberId {
        SubscriberId {
            shard: ShardId(shard),
            durable: false,
            slot,
            generation: 1,
        }
    }

    struct Busy(Vec<SubscriberId>);
    impl Availability for Busy {
        fn busy(&self, id: &SubscriberId) -> bool {
            self.0.contains(id)
        }
    }

    fn index(members: &[SubscriberId]) -> SharedIndex {
        let mut index = SharedIndex::default();
        let full = "$share/g/a/#";
        let parts = parse_shared(full).unwrap().unwrap();
        for m in members {
            index.insert(full, parts, *m, QoS::AtLeastOnce.into());
        }
        index
    }

    fn picks(
        index: &SharedIndex,
        topic: &str,
        strategy: ShareStrategy,
        busy: &Busy,
        count: usize,
    ) -> Vec<SubscriberId> {
        let mut got = Vec::new();
        for _ in 0..count {
            index.for_each_pick(topic, strategy, ShardId(0), busy, |key, id, _| {
                assert_eq!(key.full.as_str(), "$share/g/a/#");
                got.push(id);
            });
        }
        got
    }

    #[test]
    fn round_robin_takes_members_in_turn_and_skips_busy_and_offline_ones() {
        let (a, b, c) = (id(0, 1), id(1, 1), id(1, 2));
        let mut index = index(&[c, a, b]);
        assert_eq!(index.len(), 3);
        let none = Busy(vec![]);
        assert_eq!(
            picks(&index, "a/x", ShareStrategy::RoundRobin, &none, 6),
            [a, b, c, a, b, c]
        );
        assert_eq!(index.delivered(), vec![("g".to_string(), 6)]);
        assert_eq!(
            picks(&index, "a/x", ShareStrategy::RoundRobin, &Busy(vec![b]), 4),
            [a, c, a, c]
        );
        index.set_online(c, false);
        assert_eq!(
            picks(&index, "a/x", ShareStrategy::RoundRobin, &Busy(vec![b]), 2),
            [a, a]
        );
        // When nobody can take it, the member whose turn it is gets it anyway.
        let all = Busy(vec![a, b]);
        assert_eq!(
            picks(&index, "a/x", ShareStrategy::RoundRobin, &all, 1).len(),
            1
        );
        // Topics the filter does not match pick nobody.
        assert!(picks(&index, "b/x", ShareStrategy::RoundRobin, &none, 1).is_empty());
    }

    #[test]
    fn round_robin_over_shards_keeps_messages_on_their_shard_while_shares_stay_equal() {
        // Two shards' replicas of one group: two members on each shard.
        let loads = ShareLoads::pinned(2, super::super::share_balance::MAX_LEAD);
        let full = "$share/g/a/#";
        let parts = parse_shared(full).unwrap().unwrap();
        let members = [id(0, 1), id(0, 2), id(1, 1), id(1, 2)];
        let replicas: Vec<SharedIndex> = (0..2)
            .map(|_| {
                let mut index = SharedIndex::new(loads.clone());
                for m in members {
                    index.insert(full, parts, m, QoS::AtLeastOnce.into());
                }
                index
            })
            .collect();
        let pick_on = |shard: u16, busy: &Busy, count: usize| {
            let mut got = Vec::new();
            for _ in 0..count {
                replicas[usize::from(shard)].for_each_pick(
                    "a/x",
                    ShareStrategy::RoundRobin,
                    ShardId(shard),
                    busy,
                    |_, id, _| got.push(id),
                );
            }
            got
        };
        let none = Busy(vec![]);
        let count = |got: &[SubscriberId], m: SubscriberId| got.iter().filter(|g| **g == m).count();
        // Both shards publishing alike: nothing crosses, and members take turns.
        let mut on_zero = Vec::new();
        let mut on_one = Vec::new();
        for _ in 0..100 {
            on_zero.extend(pick_on(0, &none, 10));
            on_one.extend(pick_on(1, &none, 10));
        }
        assert_eq!(
            &on_zero[..4],
            [members[0], members[1], members[0], members[1]]
        );
        assert!(on_zero.iter().all(|m| m.shard == ShardId(0)), "{on_zero:?}");
        assert!(on_one.iter().all(|m| m.shard == ShardId(1)), "{on_one:?}");
        for m in members {
            assert_eq!(count(&on_zero, m) + count(&on_one, m), 500, "{m:?}");
        }
        // Shard 0 publishing alone: half goes to shard 1's members, every member a quarter.
        let alone = pick_on(0, &none, 4000);
        for m in members {
            let share = count(&alone, m);
            assert!((950..1050).contains(&share), "{m:?} got {share} of 4000");
        }
        // Shard 0's members busy: its messages go to shard 1's; one of them busy too: the
        // other takes them.
        let got = pick_on(0, &Busy(vec![members[0], members[1]]), 10);
        assert!(got.iter().all(|m| m.shard == ShardId(1)), "{got:?}");
        let got = pick_on(0, &Busy(vec![members[0], members[1], members[2]]), 10);
        assert!(got.iter().all(|m| *m == members[3]), "{got:?}");
    }

    #[test]
    fn local_first_prefers_members_on_the_publishing_shard() {
        let (a, b, c) = (id(0, 1), id(1, 1), id(0, 2));
        let index = index(&[a, b, c]);
        let none = Busy(vec![]);
        assert_eq!(
            picks(&index, "a/x", ShareStrategy::LocalFirst, &none, 4),
            [a, c, a, c]
        );
        assert_eq!(
            picks(
                &index,
                "a/x",
                ShareStrategy::LocalFirst,
                &Busy(vec![a, c]),
                2
            ),
            [b, b]
        );
    }

    #[test]
    fn hash_topic_keeps_a_topic_on_one_member_and_random_spreads() {
        let members: Vec<_> = (0..4u16).map(|i| id(i % 2, u32::from(i))).collect();
        let index = index(&members);
        let none = Busy(vec![]);
        let mut owners = AHashSet::new();
        for t in 0..64 {
            let topic = format!("a/{t}");
            let got = picks(&index, &topic, ShareStrategy::HashTopic, &none, 3);
            assert!(got.iter().all(|m| *m == got[0]), "{topic}: {got:?}");
            owners.insert(got[0]);
        }
        assert_eq!(owners.len(), 4, "64 topics spread over all members");
        let got = picks(&index, "a/x", ShareStrategy::Random, &none, 400);
        for m in &members {
            let share = got.iter().filter(|g| *g == m).count();
            assert!((50..150).contains(&share), "{m:?} got {share} of 400");
        }
    }

    #[test]
    fn pick_again_excludes_the_member_that_failed_and_remove_empties_the_group() {
        let (a, b) = (id(0, 1), id(1, 1));
        let mut index = index(&[a, b]);
        let key = ShareKey {
            full: ByteStr::from("$share/g/a/#"),
        };
        let none = Busy(vec![]);
        for _ in 0..3 {
            let again =
                index.pick_again(&key, "a/x", ShareStrategy::RoundRobin, ShardId(0), &none, a);
            assert_eq!(again.map(|m| m.0), Some(b));
        }
        let parts = parse_shared("$share/g/a/#").unwrap().unwrap();
        assert!(index.remove(parts, &b).is_some());
        assert!(index.remove(parts, &b).is_none());
        assert_eq!(
            index.pick_again(&key, "a/x", ShareStrategy::RoundRobin, ShardId(0), &none, a),
            None
        );
        assert_eq!(index.members(&key), 1);
        index.remove(parts, &a);
        assert!(index.is_empty());
        assert_eq!(index.members(&key), 0);
    }
}
