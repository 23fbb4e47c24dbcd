//! Copies of offline persistent sessions' queues on their way from a shard to the cluster
//! thread, which writes them to JetStream (`cluster::node::queues`): what a copy is
//! ([`QueueCopy`]), and the batch a shard gathers between its flushes ([`CopyBatch`]): one
//! channel send and one wake of the cluster thread per flush instead of per message, and the
//! framed records of a batch cut from one buffer instead of two allocations each.
//!
//! Each shard numbers the messages it copies (1, 2, 3, ...). The cluster thread tells it how
//! far JetStream has stored them (`ShardMessage::CopiesStored`), and an acknowledgement
//! (PUBACK, PUBREC, or another shard's or node's confirmation) of a message queued for an
//! offline session waits for that (`durability::Ticket::copied`): a node that dies loses no
//! message it acknowledged for a session whose client was away. A copy the cluster thread
//! gives up on (no room, JetStream failed or not there) counts as stored for that wait, and
//! is counted in `queues/not_copied`; one the shard itself has no room for gets no number.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use crossbeam_channel::Sender;

use super::cluster_port::HandedSession;
use super::mesh::ShardId;
use crate::protocol::ByteStr;
use crate::store::{encode_frame, Record};

/// How much room the shared buffer of framed records gets when it runs out: records are cut
/// from it, so one allocation serves many.
const FRAMED_CHUNK: usize = 64 * 1024;

/// Messages queued for offline sessions waiting for the cluster thread to copy them to
/// JetStream, at most; beyond it they are not copied, and counted.
pub const QUEUE_COPIES_CAPACITY: usize = 65_536;

/// What a node copies to JetStream of its persistent sessions whose clients are away, so
/// that a client whose node is down resumes elsewhere with its queued messages (see
/// `cluster::node::queues`). One session's copies come in the order they happened.
#[derive(Debug, PartialEq, Eq)]
pub enum QueueCopy {
    /// The client went away at `gone_ms` (Unix ms, as journalled): the session as a
    /// hand-over carries it, messages in flight and queued included.
    Snapshot {
        client_id: ByteStr,
        gone_ms: u64,
        records: HandedSession,
    },
    /// A QoS 1/2 message queued for the offline session since: its `Queued` record, framed,
    /// and the copy's number among its shard's.
    Append {
        client_id: ByteStr,
        record: Bytes,
        number: CopyNumber,
    },
    /// The client is back (on this node): the copy goes.
    Ended(ByteStr),
}

/// Which copy a message is: `number` among those of `shard` (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyNumber {
    pub shard: ShardId,
    pub number: u64,
}

/// The copies a shard made since its last flush, in order.
#[derive(Default)]
pub(super) struct CopyBatch {
    /// The number of the last message copied.
    made: u64,
    copies: Vec<QueueCopy>,
    /// How many of `copies` are messages (`Append`): they count against
    /// [`QUEUE_COPIES_CAPACITY`].
    appends: usize,
    /// A record's body, before it is framed.
    body: BytesMut,
    /// Framed records, each cut off as it is made.
    framed: BytesMut,
}

impl CopyBatch {
    pub(super) fn appends(&self) -> usize {
        self.appends
    }

    /// The number of the last message copied (0: none yet).
    pub(super) fn made(&self) -> u64 {
        self.made
    }

    pub(super) fn push(&mut self, copy: QueueCopy) {
        self.copies.push(copy);
    }

    /// Adds a message queued for `client_id`'s offline session: `record`, framed as a log
    /// frames it, the copy number `made() + 1` of `shard`.
    pub(super) fn append(&mut self, shard: ShardId, client_id: ByteStr, record: &Record) {
        self.body.clear();
        let kind = record.encode(&mut self.body);
        let need = self.body.len() + 16;
        if self.framed.capacity() < need {
            self.framed.reserve(need.max(FRAMED_CHUNK));
        }
        encode_frame(&mut self.framed, kind, &self.body);
        let record = self.framed.split().freeze();
        self.made += 1;
        let number = CopyNumber {
            shard,
            number: self.made,
        };
        self.copies.push(QueueCopy::Append {
            client_id,
            record,
            number,
        });
        self.appends += 1;
    }

    /// Sends what was gathered (if anything) to the cluster thread; its messages join
    /// `waiting` until the thread takes them.
    pub(super) fn send(&mut self, to: &Sender<Vec<QueueCopy>>, waiting: &AtomicUsize) {
        if self.copies.is_empty() {
            return;
        }
        waiting.fetch_add(std::mem::take(&mut self.appends), Ordering::Relaxed);
        // Unbounded: what waits is bounded by `QUEUE_COPIES_CAPACITY` (messages) and by the
        // sessions whose clients come and go (snapshots, ends).
        let _ = to.send(std::mem::take(&mut self.copies));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::QoS;
    use crate::store::scan;

    #[test]
    fn a_batch_goes_whole_in_order_with_its_records_framed_as_a_log_frames_them() {
        let (to, from) = crossbeam_channel::unbounded();
        let waiting = AtomicUsize::new(0);
        let mut batch = CopyBatch::default();
        batch.send(&to, &waiting);
        assert!(from.try_recv().is_err(), "nothing to send, nothing sent");
        let queued = |seq: u64| Record::Queued {
            session: 1,
            seq,
            topic: ByteStr::from("t"),
            payload: Bytes::from(vec![b'x'; 100]),
            qos: QoS::AtLeastOnce,
            retain: false,
            extras: Default::default(),
        };
        let shard = ShardId(3);
        batch.append(shard, ByteStr::from("c"), &queued(1));
        batch.push(QueueCopy::Ended(ByteStr::from("d")));
        batch.append(shard, ByteStr::from("c"), &queued(2));
        assert_eq!(batch.appends(), 2);
        assert_eq!(batch.made(), 2);
        batch.send(&to, &waiting);
        assert_eq!(waiting.load(Ordering::Relaxed), 2);
        assert_eq!(batch.appends(), 0);
        let sent = from.try_recv().expect("one batch");
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[1], QueueCopy::Ended(ByteStr::from("d")));
        let mut log = BytesMut::new();
        let mut numbers = Vec::new();
        for copy in &sent {
            if let QueueCopy::Append {
                client_id,
                record,
                number,
            } = copy
            {
                assert_eq!(client_id.as_str(), "c");
                log.extend_from_slice(record);
                numbers.push(*number);
            }
        }
        assert_eq!(
            numbers,
            [1, 2].map(|number| CopyNumber { shard, number }),
            "numbered in order"
        );
        assert_eq!(batch.made(), 2, "numbers go on after a send");
        let log = log.freeze();
        let mut records = Vec::new();
        scan(&log, |_, kind, body| {
            records.push(Record::decode(kind, log.slice_ref(body)).unwrap())
        })
        .unwrap();
        assert_eq!(records, vec![queued(1), queued(2)]);
    }
}
