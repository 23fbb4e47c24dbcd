//! How far each shard's publishers may be acknowledged. A QoS 1/2 message that other nodes
//! want is acknowledged to its publisher (PUBACK, PUBREC) only once every node it went to has
//! it in one of its shards (`confirm`), so a node that dies after acknowledging a publish
//! loses nothing it promised: the nodes that want the message already have it.
//!
//! Each shard numbers the QoS 1/2 messages it hands the cluster thread (1, 2, 3, ... in the
//! order the thread gets them) and its publishers wait for "acknowledged up to N"
//! (`ShardMessage::ClusterConfirmed`). Here, per shard, are the numbers still waiting with the
//! sequence number each went out as; the mark is just below the oldest that any node still
//! has to acknowledge, or the last number when none does. A message nobody had to acknowledge
//! (no other node wanted it, or it has no NATS subject) waits for nothing but those before it.
//!
//! A node that never answers holds the mark until it is no longer waited for: when it is gone
//! from the interest picture (`interest::EXPIRY`), or the message is given up on because more
//! wait than `confirm::CAPACITY` (counted as `unconfirmed`). Pure: no NATS, no channels.

use std::collections::VecDeque;

use crate::broker::mesh::ShardId;

/// The acknowledgement marks of every shard of this node.
#[derive(Default)]
pub struct Marks {
    shards: Vec<ShardMarks>,
    /// Whether a mark may move: a message went out, or some are waiting.
    busy: bool,
}

#[derive(Default)]
struct ShardMarks {
    /// (number, sequence number) of messages some node had to acknowledge, oldest first.
    waiting: VecDeque<(u64, u64)>,
    /// The last number heard of.
    last: u64,
    /// The mark the shard was last told.
    told: u64,
}

impl Marks {
    /// Message `number` of `shard` went out; `kept` is its sequence number if nodes have to
    /// acknowledge it (it is then kept in `confirm::Unconfirmed`). Numbers of one shard come
    /// in order; 0 (a QoS 0 message) is not a number.
    pub fn sent(&mut self, shard: ShardId, number: u64, kept: Option<u64>) {
        if number == 0 {
            return;
        }
        let i = shard.index();
        if self.shards.len() <= i {
            self.shards.resize_with(i + 1, ShardMarks::default);
        }
        self.busy = true;
        let marks = &mut self.shards[i];
        marks.last = marks.last.max(number);
        if let Some(seq) = kept {
            marks.waiting.push_back((number, seq));
        }
    }

    /// Moves the marks past what no node waits for any more (`waits(seq)` says whether a
    /// node still has to acknowledge the message sent as `seq`), and tells each shard whose
    /// mark moved (`tell(shard, mark)`; false: it could not be told now, so it is told again
    /// at the next call).
    pub fn settle(
        &mut self,
        mut waits: impl FnMut(u64) -> bool,
        mut tell: impl FnMut(ShardId, u64) -> bool,
    ) {
        if !self.busy {
            return;
        }
        let mut busy = false;
        for (i, marks) in self.shards.iter_mut().enumerate() {
            while marks.waiting.front().is_some_and(|&(_, seq)| !waits(seq)) {
                marks.waiting.pop_front();
            }
            let mark = match marks.waiting.front() {
                Some(&(number, _)) => number - 1,
                None => marks.last,
            };
            if mark > marks.told && tell(ShardId(i as u16), mark) {
                marks.told = mark;
            }
            busy |= !marks.waiting.is_empty() || marks.told < marks.last;
        }
        self.busy = busy;
    }

    /// Whether [`settle`](Self::settle) has anything to do (else it returns at once).
    pub fn busy(&self) -> bool {
        self.busy
    }

    /// Messages whose publishers wait for other nodes, all shards together.
    pub fn waiting(&self) -> usize {
        self.shards.iter().map(|m| m.waiting.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn settle(marks: &mut Marks, pending: &BTreeSet<u64>) -> Vec<(u16, u64)> {
        let mut told = Vec::new();
        marks.settle(
            |seq| pending.contains(&seq),
            |shard, mark| {
                told.push((shard.0, mark));
                true
            },
        );
        told
    }

    #[test]
    fn a_mark_stops_below_the_oldest_message_a_node_has_to_acknowledge() {
        let mut marks = Marks::default();
        let mut pending = BTreeSet::from([10, 12]);
        marks.sent(ShardId(0), 1, None);
        marks.sent(ShardId(0), 2, Some(10));
        marks.sent(ShardId(0), 3, None);
        marks.sent(ShardId(0), 4, Some(12));
        marks.sent(ShardId(0), 5, None);
        assert_eq!(settle(&mut marks, &pending), [(0, 1)]);
        assert_eq!(settle(&mut marks, &pending), [], "told once");
        assert_eq!(marks.waiting(), 2);
        // The later one acknowledged first: nothing moves.
        pending.remove(&12);
        assert_eq!(settle(&mut marks, &pending), []);
        pending.remove(&10);
        assert!(marks.busy());
        assert_eq!(settle(&mut marks, &pending), [(0, 5)]);
        assert_eq!(marks.waiting(), 0);
        assert!(!marks.busy(), "nothing can move until more goes out");
    }

    #[test]
    fn shards_have_marks_of_their_own() {
        let mut marks = Marks::default();
        let pending = BTreeSet::from([7]);
        marks.sent(ShardId(1), 1, Some(7));
        marks.sent(ShardId(0), 1, None);
        marks.sent(ShardId(0), 0, Some(8));
        assert_eq!(settle(&mut marks, &pending), [(0, 1)]);
        assert_eq!(marks.waiting(), 1, "a QoS 0 message is not waited for");
    }

    #[test]
    fn a_shard_that_could_not_be_told_is_told_again() {
        let mut marks = Marks::default();
        marks.sent(ShardId(0), 1, None);
        let mut refused = 0;
        marks.settle(
            |_| false,
            |_, _| {
                refused += 1;
                false
            },
        );
        assert_eq!(refused, 1);
        assert!(marks.busy(), "still to be told");
        assert_eq!(settle(&mut marks, &BTreeSet::new()), [(0, 1)]);
    }
}
