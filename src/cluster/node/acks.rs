//! The node's side of `confirm`: waiting for the other nodes to acknowledge the QoS 1/2
//! messages it sends them, acknowledging theirs, and sending again what was lost.

use async_nats::HeaderMap;
use tracing::debug;

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
    /// Acknowledgements owed, by origin (`node/start-time`).
    owed: AHashMap<String, Vec<u64>>,
    owed_count: usize,
    /// When the owed acknowledgements go out at the latest.
    deadline: Option<Instant>,
}

impl Default for Acks {
    fn default() -> Acks {
        Acks {
            unconfirmed: Unconfirmed::new(confirm::CAPACITY),
            wants: InterestTrie::default(),
            names: AHashMap::new(),
            indexes: AHashMap::new(),
            owed: AHashMap::new(),
            owed_count: 0,
            deadline: None,
        }
    }
}

impl Acks {
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
    pub(super) fn acknowledgers_changed(&self, remote: &RemoteNodes) {
        let (wants, names) = remote.acknowledgers();
        let mut acks = self.acks.borrow_mut();
        let stale: Vec<u16> = acks
            .names
            .iter()
            .filter(|(i, name)| names.get(i) != Some(name))
            .map(|(i, _)| *i)
            .collect();
        for index in stale {
            acks.unconfirmed.forget(index);
        }
        acks.indexes = names.iter().map(|(i, n)| (n.clone(), *i)).collect();
        acks.names = names;
        acks.wants = wants;
    }

    /// A message just sent as `seq`: kept until the nodes that want it acknowledge it, if
    /// its QoS asks for that.
    pub(super) fn expect_acks(&self, seq: u64, message: &Arc<Message>, key: u64) {
        if message.qos == QoS::AtMostOnce {
            return;
        }
        let mut acks = self.acks.borrow_mut();
        let waiting = nodes_wanting(&acks.wants, &message.topic);
        if waiting.is_empty() {
            return;
        }
        let given_up = acks
            .unconfirmed
            .push(seq, message.clone(), key, waiting, Instant::now());
        if given_up > 0 {
            self.shared
                .unconfirmed
                .fetch_add(given_up as u64, Ordering::Relaxed);
        }
    }

    /// Another node's acknowledgements of what this node sent.
    pub(super) fn take_acks(&self, m: &async_nats::Message) {
        let Some(node) = m.headers.as_ref().and_then(|h| h.get(NODE)) else {
            return;
        };
        let Ok(text) = std::str::from_utf8(&m.payload) else {
            return;
        };
        let Some((incarnation, ranges)) = text.split_once('\n') else {
            return;
        };
        if incarnation != self.incarnation {
            // For an earlier run of this node.
            return;
        }
        let Some(ranges) = confirm::decode_ranges(ranges) else {
            return debug!(node = node.as_str(), "cluster: malformed acknowledgement");
        };
        let mut acks = self.acks.borrow_mut();
        let Some(&index) = acks.indexes.get(node.as_str()) else {
            return;
        };
        acks.unconfirmed.ack(index, &ranges, Instant::now());
    }

    /// A QoS 1/2 message from `origin` is in a shard's inbox (now or earlier): acknowledged
    /// with the next batch.
    pub(super) fn owe_ack(&self, origin: &str, seq: u64) {
        let mut acks = self.acks.borrow_mut();
        match acks.owed.get_mut(origin) {
            Some(seqs) => seqs.push(seq),
            None => {
                acks.owed.insert(origin.to_string(), vec![seq]);
            }
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
        for (origin, mut seqs) in owed {
            let name = origin.split_once('/').map_or(origin.as_str(), |(n, _)| n);
            let mut headers = HeaderMap::new();
            headers.insert(NODE, self.id.as_str());
            let payload = format!("{origin}\n{}", confirm::encode_ranges(&mut seqs));
            if let Err(e) = client
                .publish_with_headers(format!("{ACK}.{name}"), headers, Bytes::from(payload))
                .await
            {
                debug!("cluster: cannot acknowledge: {e}");
            }
        }
    }

    /// Sends again, to each node that lacks it, what was lost on the way; `last_seq` is the
    /// last sequence number used.
    pub(super) async fn resend(&self, client: &async_nats::Client, last_seq: u64) {
        let (due, names) = {
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
            (due, acks.names.clone())
        };
        for r in due {
            // Not as a retained message: a newer one may have replaced it there meanwhile.
            let mut headers = self.message_headers(&r.message, r.seq, r.key, false);
            headers.insert(TOPIC, &*r.message.topic);
            for node in r.to {
                let Some(name) = names.get(&node) else {
                    continue;
                };
                self.shared.resent.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = client
                    .publish_with_headers(
                        format!("{TO}.{name}"),
                        headers.clone(),
                        r.message.payload.clone(),
                    )
                    .await
                {
                    debug!("cluster: cannot send again: {e}");
                }
            }
        }
    }
}
