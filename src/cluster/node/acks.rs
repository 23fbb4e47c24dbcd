//! The node's side of `confirm`: waiting for the other nodes (and shared subscription groups)
//! to acknowledge the QoS 1/2 messages it sends them, acknowledging theirs, and sending again
//! what was lost.
//!
//! An acknowledgement message: `origin-incarnation`, then a line of sequence ranges for the
//! node's plain subscriptions, then a line `QUEUE RANGES` per shared subscription group (its
//! NATS queue name, which holds no space).

use async_nats::HeaderMap;
use tracing::{debug, info};

use super::*;
use crate::broker::cluster_port::InterestTrie;
use crate::cluster::confirm::{self, Nodes, Unconfirmed};

/// The node thread's acknowledgement state.
pub(super) struct Acks {
    unconfirmed: Unconfirmed,
    /// The other nodes' plain filters by node index: who must acknowledge what.
    wants: InterestTrie,
    names: AHashMap<u16, String>,
    indexes: AHashMap<String, u16>,
    /// Shared subscription groups anywhere in the cluster (`$share/G/F`), by filter.
    groups: AHashMap<String, Group>,
    /// The groups' slots by their NATS queue name, and back.
    queues: AHashMap<String, u16>,
    slots: AHashMap<u16, String>,
    next_slot: u16,
    /// Acknowledgements owed, by origin (`node/start-time`): the plain ones, and by group
    /// (its queue name).
    owed: AHashMap<String, Owed>,
    owed_count: usize,
    /// When the owed acknowledgements go out at the latest.
    deadline: Option<Instant>,
}

/// A shared subscription group: its slot, and where it has members.
struct Group {
    slot: u16,
    /// Other nodes with members (their indexes).
    nodes: Vec<u16>,
    /// This node has members.
    here: bool,
}

#[derive(Default)]
struct Owed {
    plain: Vec<u64>,
    /// By group filter (`$share/G/F`); named by its queue when sent, once per batch.
    groups: AHashMap<ByteStr, Vec<u64>>,
}

impl Default for Acks {
    fn default() -> Acks {
        Acks {
            unconfirmed: Unconfirmed::new(confirm::CAPACITY),
            wants: InterestTrie::default(),
            names: AHashMap::new(),
            indexes: AHashMap::new(),
            groups: AHashMap::new(),
            queues: AHashMap::new(),
            slots: AHashMap::new(),
            next_slot: confirm::GROUP_SLOTS,
            owed: AHashMap::new(),
            owed_count: 0,
            deadline: None,
        }
    }
}

impl Acks {
    /// Whether the publisher of the message sent as `seq` still waits for a node (or group)
    /// to acknowledge it (see `confirm::Unconfirmed::holds`).
    pub(super) fn holds(&self, seq: u64, now: Instant) -> bool {
        self.unconfirmed.holds(seq, now)
    }

    /// Whether a node (or group) has not acknowledged the message sent as `seq` (whether or
    /// not its publisher still waits for it).
    pub(super) fn lacks(&self, seq: u64) -> bool {
        self.unconfirmed.waits_for(seq)
    }

    /// The node `name` sent its interest heartbeat.
    pub(super) fn heartbeat(&mut self, name: &str, now: Instant) {
        if let Some(&index) = self.indexes.get(name) {
            self.unconfirmed.alive(index, now);
        }
    }

    /// The slot of a shared subscription group (`$share/G/F`), if it is known.
    fn slot_of(&self, group: &str) -> Option<u16> {
        self.groups.get(group).map(|g| g.slot)
    }

    /// When the owed acknowledgements are due (at once from when a batch filled).
    pub(super) fn due_at(&self) -> Option<Instant> {
        self.deadline
    }
}

fn nodes_wanting(trie: &InterestTrie, topic: &str) -> Nodes {
    let mut nodes = Nodes::new();
    trie.for_each_match(topic, |n, _| {
        if !nodes.contains(n) {
            nodes.push(*n);
        }
    });
    nodes
}

impl Node {
    /// The other nodes' interest changed: who acknowledges what, and nodes gone or replaced
    /// at an index no longer waited for.
    pub(super) fn acknowledgers_changed(
        &self,
        remote: &RemoteNodes,
        local_shared: &BTreeSet<String>,
    ) {
        let (mut wants, names, shared) = remote.acknowledgers();
        let mut acks = self.acks.borrow_mut();
        let acks = &mut *acks;
        // Groups keep their slots while they exist anywhere.
        let mut groups: AHashMap<String, Group> = AHashMap::new();
        let remote_members = shared.into_iter().map(|(f, n)| (f, Some(n)));
        for (full, node) in remote_members.chain(local_shared.iter().map(|f| (f.clone(), None))) {
            let slot = match acks.groups.get(&full) {
                Some(g) => g.slot,
                None => match groups.get(&full) {
                    Some(g) => g.slot,
                    None => {
                        let slot = acks.next_slot;
                        acks.next_slot = acks
                            .next_slot
                            .checked_add(1)
                            .unwrap_or(confirm::GROUP_SLOTS);
                        slot
                    }
                },
            };
            let group = groups.entry(full).or_insert(Group {
                slot,
                nodes: Vec::new(),
                here: false,
            });
            match node {
                Some(n) => group.nodes.push(n),
                None => group.here = true,
            }
        }
        acks.queues.clear();
        acks.slots.clear();
        for (full, group) in &groups {
            wants.insert(interest::inner_filter(full), group.slot, ());
            acks.queues.insert(queue_name(full), group.slot);
            acks.slots.insert(group.slot, full.clone());
        }
        acks.groups = groups;
        let stale: Vec<u16> = acks
            .names
            .iter()
            .filter(|(i, name)| names.get(i) != Some(name))
            .map(|(i, _)| *i)
            .collect();
        let now = Instant::now();
        for index in stale {
            acks.unconfirmed.forget(index);
        }
        for (index, name) in &names {
            if acks.names.get(index) != Some(name) {
                // A node that just joined is there.
                acks.unconfirmed.alive(*index, now);
            }
        }
        acks.indexes = names.iter().map(|(i, n)| (n.clone(), *i)).collect();
        acks.names = names;
        acks.wants = wants;
    }

    /// A message just sent as `seq`: kept until the nodes that want it acknowledge it, if
    /// its QoS asks for that; returns whether it is kept (some node has to).
    /// Groups in `served` had it here already (NATS was away): not waited for.
    pub(super) fn expect_acks(
        &self,
        seq: u64,
        message: &Arc<Message>,
        key: u64,
        served: &[ByteStr],
    ) -> bool {
        if message.qos == QoS::AtMostOnce {
            return false;
        }
        let mut acks = self.acks.borrow_mut();
        let mut waiting = nodes_wanting(&acks.wants, &message.topic);
        for group in served {
            if let Some(slot) = acks.slot_of(group) {
                waiting.retain(|n| *n != slot);
            }
        }
        if waiting.is_empty() {
            return false;
        }
        let given_up = acks
            .unconfirmed
            .push(seq, message.clone(), key, waiting, Instant::now());
        if given_up > 0 {
            self.shared
                .unconfirmed
                .fetch_add(given_up as u64, Ordering::Relaxed);
        }
        true
    }

    /// Another node's acknowledgements of what this node sent.
    pub(super) fn take_acks(&self, m: &async_nats::Message) {
        let Some(node) = m.headers.as_ref().and_then(|h| h.get(NODE)) else {
            return;
        };
        let Ok(text) = std::str::from_utf8(&m.payload) else {
            return;
        };
        let mut lines = text.split('\n');
        if lines.next() != Some(self.incarnation.as_str()) {
            // For an earlier run of this node.
            return;
        }
        let now = Instant::now();
        let mut acks = self.acks.borrow_mut();
        if let (Some(plain), Some(&index)) = (lines.next(), acks.indexes.get(node.as_str())) {
            match confirm::decode_ranges(plain) {
                Some(ranges) => acks.unconfirmed.ack(index, &ranges, now),
                None => debug!(node = node.as_str(), "cluster: malformed acknowledgement"),
            }
        }
        for line in lines {
            let Some((queue, ranges)) = line.split_once(' ') else {
                continue;
            };
            let (Some(&slot), Some(ranges)) =
                (acks.queues.get(queue), confirm::decode_ranges(ranges))
            else {
                continue;
            };
            acks.unconfirmed.ack(slot, &ranges, now);
        }
    }

    /// A QoS 1/2 message this node sent came back for one of its own groups (NATS picked
    /// this node) and its shard handled it: the group has it.
    pub(super) fn own_group_ack(&self, group: &str, seq: u64) {
        let mut acks = self.acks.borrow_mut();
        if let Some(slot) = acks.slot_of(group) {
            acks.unconfirmed.ack(slot, &[(seq, seq)], Instant::now());
        }
    }

    /// A QoS 1/2 message from `origin` was handled by its shard (now or earlier): acknowledged
    /// with the next batch.
    /// For a shared subscription group's copy, `group` names it.
    pub(super) fn owe_ack(&self, origin: &str, seq: u64, group: Option<&ByteStr>) {
        let mut acks = self.acks.borrow_mut();
        let owed = match acks.owed.get_mut(origin) {
            Some(owed) => owed,
            None => acks.owed.entry(origin.to_string()).or_default(),
        };
        match group {
            None => owed.plain.push(seq),
            Some(full) => match owed.groups.get_mut(full) {
                Some(seqs) => seqs.push(seq),
                None => {
                    owed.groups.insert(full.clone(), vec![seq]);
                }
            },
        }
        acks.owed_count += 1;
        if acks.deadline.is_none() {
            acks.deadline = Some(Instant::now() + confirm::ACK_EVERY);
        } else if acks.owed_count == confirm::ACK_BATCH {
            // Set once, so the timer moves once.
            acks.deadline = Some(Instant::now());
        }
    }

    /// Sends the acknowledgements owed.
    pub(super) async fn send_acks(&self, client: &async_nats::Client) {
        let owed = {
            let mut acks = self.acks.borrow_mut();
            acks.owed_count = 0;
            acks.deadline = None;
            std::mem::take(&mut acks.owed)
        };
        for (origin, mut owed) in owed {
            let name = origin.split_once('/').map_or(origin.as_str(), |(n, _)| n);
            let mut headers = HeaderMap::new();
            headers.insert(NODE, self.id.as_str());
            let mut payload = format!("{origin}\n{}", confirm::encode_ranges(&mut owed.plain));
            for (full, mut seqs) in owed.groups {
                payload.push('\n');
                payload.push_str(&queue_name(&full));
                payload.push(' ');
                payload.push_str(&confirm::encode_ranges(&mut seqs));
            }
            if let Err(e) = client
                .publish_with_headers(format!("{ACK}.{name}"), headers, Bytes::from(payload))
                .await
            {
                debug!("cluster: cannot acknowledge: {e}");
            }
        }
    }

    /// Asks NATS whether each node silent while messages wait for it is still there
    /// (`confirm::Unconfirmed::to_probe`): a request to `$SMQ.alive.<node>` that no one
    /// listens on means its connection is gone, and `gone` is told its name (a full channel
    /// drops it: the node is asked about again within `confirm::PROBE_EVERY`).
    pub(super) fn probe_silent(&self, client: &async_nats::Client, gone: &mpsc::Sender<String>) {
        let names: Vec<String> = {
            let mut acks = self.acks.borrow_mut();
            let nodes = acks.unconfirmed.to_probe(Instant::now());
            nodes
                .iter()
                .filter_map(|n| acks.names.get(n).cloned())
                .collect()
        };
        for name in names {
            let (client, gone) = (client.clone(), gone.clone());
            tokio::spawn(async move {
                if crate::cluster::wire::gone_from_nats(&client, &name, confirm::PROBE_EVERY).await
                {
                    let _ = gone.try_send(name);
                }
            });
        }
    }

    /// NATS said no one listens on node `name`'s subject (see [`Self::probe_silent`]).
    pub(super) fn node_gone(&self, name: &str) {
        let mut acks = self.acks.borrow_mut();
        if let Some(&index) = acks.indexes.get(name) {
            acks.unconfirmed.gone(index);
            info!(node = %name, "cluster: a node is gone from NATS; the publishers of what it lacks go on without its acknowledgement");
        }
    }

    /// Sends again, to each node that lacks it, what was lost on the way; `last_seq` is the
    /// last sequence number used.
    pub(super) async fn resend(&self, client: &async_nats::Client, last_seq: u64) {
        let (due, names, slots) = {
            let mut acks = self.acks.borrow_mut();
            if acks.unconfirmed.is_empty() {
                return;
            }
            let acks = &mut *acks;
            let wants = &acks.wants;
            let due = acks
                .unconfirmed
                .due(Instant::now(), last_seq, confirm::RESEND_BATCH, |m| {
                    nodes_wanting(wants, &m.topic)
                });
            if due.is_empty() {
                return;
            }
            // Where each group's copy goes again: a node with members, this one first.
            let slots: AHashMap<u16, (String, Option<u16>)> = acks
                .groups
                .iter()
                .map(|(full, g)| {
                    let to = if g.here {
                        None
                    } else {
                        g.nodes.first().copied()
                    };
                    (g.slot, (full.clone(), to))
                })
                .collect();
            (due, acks.names.clone(), slots)
        };
        for r in due {
            // Not as a retained message: a newer one may have replaced it there meanwhile.
            let mut headers = self.message_headers(&r.message, r.seq, r.key, false);
            headers.insert(TOPIC, &*r.message.topic);
            for node in r.to {
                let (to, headers) = if node >= confirm::GROUP_SLOTS {
                    let Some((full, to)) = slots.get(&node) else {
                        continue;
                    };
                    self.shared.resent.fetch_add(1, Ordering::Relaxed);
                    let Some(name) = to.and_then(|n| names.get(&n)) else {
                        // A member here: the group's copy goes to it as NATS would have.
                        let arrived = Arrived {
                            subject: async_nats::Subject::from(format!("{TO}.{}", self.id)),
                            headers: Some(headers.clone()),
                            payload: r.message.payload.clone(),
                            group: Some(ByteStr::from(full.as_str())),
                        };
                        self.deliver(arrived, &mut Dedupe::default()).await;
                        continue;
                    };
                    let mut headers = headers.clone();
                    headers.insert(GROUP, full.as_str());
                    (name, headers)
                } else {
                    let Some(name) = names.get(&node) else {
                        continue;
                    };
                    self.shared.resent.fetch_add(1, Ordering::Relaxed);
                    (name, headers.clone())
                };
                if let Err(e) = client
                    .publish_with_headers(format!("{TO}.{to}"), headers, r.message.payload.clone())
                    .await
                {
                    debug!("cluster: cannot send again: {e}");
                }
            }
        }
    }
}
