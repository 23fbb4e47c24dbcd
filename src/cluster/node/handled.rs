//! A node acknowledges a QoS 1/2 message from another node (`confirm`) only once the shard it
//! went to has handled it: queued it for this node's subscribers, durably where `--data-dir`
//! asks for that. Its publisher's PUBACK waits for that acknowledgement (`marks`), so a PUBACK
//! means the message is in the subscribers' sessions on every node that wants it, not merely
//! in a shard's inbox there.
//!
//! Each shard gets its QoS 1/2 messages from other nodes numbered (1, 2, 3, ...: the number
//! rides on `ShardMessage::FromCluster`) and says how far it has handled them
//! (`ClusterShared::handled`); the acknowledgements owed wait here per shard until then.

use std::task::{Context, Poll};

use super::*;

/// Acknowledgements owed once a shard has handled their messages.
#[derive(Default)]
pub(super) struct Handled {
    /// Per shard: the number of the last QoS 1/2 message given to it.
    given: Vec<u64>,
    /// Per shard, oldest first: (the message's number, what is owed for it).
    waiting: Vec<VecDeque<(u64, Owing)>>,
    /// Origins (`node/start-time`) seen, shared by what is owed to them: no allocation per
    /// message. Emptied when it grows past [`ORIGINS`].
    origins: AHashMap<Box<str>, Arc<str>>,
}

/// Origins remembered at most (nodes restart as new origins).
const ORIGINS: usize = 1024;

/// An acknowledgement owed to `origin` for its message `seq`: for the node's plain
/// subscriptions, or for the shared group `group` (`own`: a group of this node's own message,
/// acknowledged here without NATS).
pub(super) struct Owing {
    pub origin: Arc<str>,
    pub seq: u64,
    pub group: Option<ByteStr>,
    pub own: bool,
}

impl Handled {
    fn grow(&mut self, shard: ShardId) -> usize {
        let i = shard.index();
        if self.given.len() <= i {
            self.given.resize(i + 1, 0);
            self.waiting.resize_with(i + 1, VecDeque::new);
        }
        i
    }
}

impl Node {
    /// `origin`, shared (see [`Handled::origins`]).
    pub(super) fn origin(&self, origin: &str) -> Arc<str> {
        let mut handled = self.handled.borrow_mut();
        if let Some(o) = handled.origins.get(origin) {
            return o.clone();
        }
        if handled.origins.len() >= ORIGINS {
            handled.origins.clear();
        }
        let shared: Arc<str> = origin.into();
        handled.origins.insert(origin.into(), shared.clone());
        shared
    }

    /// The number of the next QoS 1/2 message given to `shard`.
    pub(super) fn next_for(&self, shard: ShardId) -> u64 {
        let mut handled = self.handled.borrow_mut();
        let i = handled.grow(shard);
        handled.given[i] += 1;
        handled.given[i]
    }

    /// `owing` is due once `shard` has handled its message `number`. With `None`, once it
    /// has handled every message given to it so far (for a copy it had already: its first
    /// went there too).
    pub(super) fn owe_when_handled(&self, shard: ShardId, number: Option<u64>, owing: Owing) {
        let mut handled = self.handled.borrow_mut();
        let i = handled.grow(shard);
        let number = number.unwrap_or(handled.given[i]);
        handled.waiting[i].push_back((number, owing));
    }

    /// Owes the acknowledgements whose messages their shards have handled; true if any.
    pub(super) fn take_handled(&self) -> bool {
        let mut due = Vec::new();
        {
            let mut handled = self.handled.borrow_mut();
            for (i, waiting) in handled.waiting.iter_mut().enumerate() {
                if waiting.is_empty() {
                    continue;
                }
                let upto = self.shared.handled(ShardId(i as u16));
                while waiting.front().is_some_and(|(n, _)| *n <= upto) {
                    due.extend(waiting.pop_front().map(|(_, owing)| owing));
                }
            }
        }
        for owing in &due {
            match (&owing.group, owing.own) {
                (Some(group), true) => self.own_group_ack(group, owing.seq),
                (group, _) => self.owe_ack(&owing.origin, owing.seq, group.as_ref()),
            }
        }
        !due.is_empty()
    }

    /// Ready when a shard may have handled an acknowledgement's message.
    pub(super) fn poll_handled(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.shared.poll_handled(cx, || {
            let handled = self.handled.borrow();
            handled.waiting.iter().enumerate().any(|(i, w)| {
                w.front()
                    .is_some_and(|(n, _)| *n <= self.shared.handled(ShardId(i as u16)))
            })
        })
    }
}
