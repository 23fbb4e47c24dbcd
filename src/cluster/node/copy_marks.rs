//! How far each shard's copies of offline sessions' queued messages are stored in JetStream,
//! and telling the shards (`ShardMessage::CopiesStored`): their publishers' acknowledgements
//! wait for it (see `broker::queue_copies`).
//!
//! A shard numbers its copies 1, 2, 3, ... and they reach the stream task in that order. The
//! task gathers them per session and writes them in blocks (a gathered session, a JetStream
//! message in flight), so they are stored out of order across sessions: each block remembers
//! the first (lowest) number of each shard in it, and a shard's mark is just below the lowest
//! number any block still holds, or the last number received when none does. A copy that is
//! given up on (no room on its way, JetStream failed) leaves its block or never joins one:
//! it no longer holds anyone, and `queues/not_copied` counts it. One given up on its way
//! here is announced in order behind what came before it (`QueueOp::GivenUp`), so the mark
//! never passes a copy still on its way.

use std::sync::Arc;

use smallvec::SmallVec;

use crate::broker::cluster_port::{ClusterShared, CopyNumber};
use crate::broker::mesh::{Mesh, Refused, ShardId, ShardMessage};

/// The first number of each shard among the copies of one block.
#[derive(Debug, Default, Clone)]
pub(super) struct Firsts(SmallVec<[CopyNumber; 2]>);

impl Firsts {
    /// Adds a copy; a shard's numbers come in order, so its first stays its lowest.
    pub(super) fn add(&mut self, copy: CopyNumber) {
        if !self.0.iter().any(|f| f.shard == copy.shard) {
            self.0.push(copy);
        }
    }
}

/// The marks of every shard of this node.
pub(super) struct CopyMarks {
    mesh: Arc<Mesh>,
    shared: Arc<ClusterShared>,
    /// Per shard: the last number received (or given up on on the way here).
    received: Vec<u64>,
    /// Per shard: the mark it was last told.
    told: Vec<u64>,
}

impl CopyMarks {
    pub(super) fn shared(&self) -> &Arc<ClusterShared> {
        &self.shared
    }

    pub(super) fn new(mesh: Arc<Mesh>, shared: Arc<ClusterShared>) -> CopyMarks {
        let shards = mesh.shards();
        CopyMarks {
            mesh,
            shared,
            received: vec![0; shards],
            told: vec![0; shards],
        }
    }

    /// Copy `copy` reached the stream task.
    pub(super) fn received(&mut self, copy: CopyNumber) {
        if let Some(r) = self.received.get_mut(copy.shard.index()) {
            *r = (*r).max(copy.number);
        }
    }

    /// Tells each shard whose mark moved how far its copies are stored, given the `blocks`
    /// still unwritten or unacknowledged; returns whether some shard could not be told now
    /// (its inbox full: try again soon).
    pub(super) fn tell<'a>(&mut self, blocks: impl Iterator<Item = &'a Firsts>) -> bool {
        let marks = stored_marks(&self.received, blocks);
        let mut untold = false;
        for (i, &mark) in marks.iter().enumerate() {
            if mark <= self.told[i] {
                continue;
            }
            let sent = self
                .mesh
                .try_send(ShardId(i as u16), ShardMessage::CopiesStored { upto: mark });
            match sent {
                Err(Refused::Full(_)) => untold = true,
                _ => self.told[i] = mark,
            }
        }
        untold
    }
}

impl CopyMarks {
    /// Tells the home shard of each of `clients` that its session's copy lacks changes
    /// (`ShardMessage::CopyShort`), keeping those whose shard's inbox is full; whether any
    /// was kept (to be told again).
    pub(super) fn tell_short(&self, clients: &mut super::queues::ShortClients) -> bool {
        let shards = self.mesh.shards();
        clients.retain(|client| {
            let home = crate::broker::home_shard(client, shards);
            let sent = self
                .mesh
                .try_send(home, ShardMessage::CopyShort(client.clone()));
            matches!(sent, Err(Refused::Full(_)))
        });
        !clients.is_empty()
    }
}

/// Each shard's mark: the last number `received`, but below the first number of that shard
/// any of `blocks` holds.
fn stored_marks<'a>(received: &[u64], blocks: impl Iterator<Item = &'a Firsts>) -> Vec<u64> {
    let mut marks = received.to_vec();
    for firsts in blocks {
        for f in &firsts.0 {
            if let Some(mark) = marks.get_mut(f.shard.index()) {
                *mark = (*mark).min(f.number - 1);
            }
        }
    }
    marks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(shard: u16, number: u64) -> CopyNumber {
        CopyNumber {
            shard: ShardId(shard),
            number,
        }
    }

    #[test]
    fn a_block_keeps_each_shards_first_number() {
        let mut a = Firsts::default();
        a.add(n(0, 3));
        a.add(n(1, 7));
        a.add(n(0, 4));
        a.add(n(1, 9));
        a.add(n(2, 1));
        assert_eq!(a.0.as_slice(), [n(0, 3), n(1, 7), n(2, 1)]);
    }

    #[test]
    fn a_mark_stays_below_the_first_copy_still_unstored() {
        let received = [10, 5, 0];
        assert_eq!(stored_marks(&received, std::iter::empty()), [10, 5, 0]);
        let mut gathered = Firsts::default();
        gathered.add(n(0, 8));
        let mut in_flight = Firsts::default();
        in_flight.add(n(0, 4));
        in_flight.add(n(1, 5));
        assert_eq!(
            stored_marks(&received, [&gathered, &in_flight].into_iter()),
            [3, 4, 0]
        );
        assert_eq!(stored_marks(&received, [&gathered].into_iter()), [7, 5, 0]);
    }
}
