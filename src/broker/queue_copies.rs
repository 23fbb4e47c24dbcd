//! Copies of offline persistent sessions' queues on their way from a shard to the cluster
//! thread, which writes them to JetStream (`cluster::node::queues`): what a copy is
//! ([`QueueCopy`]), and the batch a shard gathers between its flushes ([`CopyBatch`]): one
//! channel send and one wake of the cluster thread per flush instead of per message, and the
//! framed records of a batch cut from one buffer instead of two allocations each.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use crossbeam_channel::Sender;

use super::cluster_port::HandedSession;
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
    /// A QoS 1/2 message queued for the offline session since: its `Queued` record, framed.
    Append { client_id: ByteStr, record: Bytes },
    /// The client is back (on this node): the copy goes.
    Ended(ByteStr),
}

/// The copies a shard made since its last flush, in order.
#[derive(Default)]
pub(super) struct CopyBatch {
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

    pub(super) fn push(&mut self, copy: QueueCopy) {
        self.copies.push(copy);
    }

    /// Adds a message queued for `client_id`'s offline session: `record`, framed as a log
    /// frames it.
    pub(super) fn append(&mut self, client_id: ByteStr, record: &Record) {
        self.body.clear();
        let kind = record.encode(&mut self.body);
        let need = self.body.len() + 16;
        if self.framed.capacity() < need {
            self.framed.reserve(need.max(FRAMED_CHUNK));
        }
        encode_frame(&mut self.framed, kind, &self.body);
        let record = self.framed.split().freeze();
        self.copies.push(QueueCopy::Append { client_id, record });
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
        batch.append(ByteStr::from("c"), &queued(1));
        batch.push(QueueCopy::Ended(ByteStr::from("d")));
        batch.append(ByteStr::from("c"), &queued(2));
        assert_eq!(batch.appends(), 2);
        batch.send(&to, &waiting);
        assert_eq!(waiting.load(Ordering::Relaxed), 2);
        assert_eq!(batch.appends(), 0);
        let sent = from.try_recv().expect("one batch");
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[1], QueueCopy::Ended(ByteStr::from("d")));
        let mut log = BytesMut::new();
        for copy in &sent {
            if let QueueCopy::Append { client_id, record } = copy {
                assert_eq!(client_id.as_str(), "c");
                log.extend_from_slice(record);
            }
        }
        let log = log.freeze();
        let mut records = Vec::new();
        scan(&log, |_, kind, body| {
            records.push(Record::decode(kind, log.slice_ref(body)).unwrap())
        })
        .unwrap();
        assert_eq!(records, vec![queued(1), queued(2)]);
    }
}
