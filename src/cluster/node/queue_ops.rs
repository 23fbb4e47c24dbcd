//! The way from the cluster thread's main loop to the stream task that writes offline
//! sessions' queues to JetStream (`queues`), and what happens when it is full.
//!
//! The main loop never waits for JetStream: when the stream task is behind, the *messages* of
//! a batch are given up on (counted in `queues/not_copied`; they hold no publisher, see
//! `copy_marks`, which hears of them in order, behind what came before: `QueueOp::GivenUp`,
//! with the clients whose copies now lack them, for their shards to copy whole again),
//! but a session's snapshot, its end (the client is back) and its purge (the session ended)
//! are kept, in order, and sent as soon as there is room. Lost, they would
//! leave a stale copy in JetStream that a resume elsewhere could take: messages delivered
//! again, or a session that should have ended. Each of them replaces what the session's
//! subject held, so a later one for a client replaces an earlier one still waiting: what
//! waits is at most one per session.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use super::queues::{QueueOp, ShortClients};
use crate::broker::cluster_port::{ClusterShared, CopyNumber, QueueCopy};

/// Raises `numbers`' entry for `number`'s shard to it (adds one if there is none).
fn raise(numbers: &mut Vec<CopyNumber>, number: CopyNumber) {
    match numbers.iter_mut().find(|n| n.shard == number.shard) {
        Some(n) => n.number = n.number.max(number.number),
        None => numbers.push(number),
    }
}

/// The stream task's channel, and what waits for room in it.
pub(super) struct QueueOps {
    tx: mpsc::Sender<QueueOp>,
    /// Snapshots, ends and purges that found no room, oldest first, one per client.
    waiting: RefCell<VecDeque<QueueOp>>,
}

/// The client a snapshot, end or purge is for (None: a batch of messages).
fn client_of(op: &QueueOp) -> Option<&str> {
    match op {
        QueueOp::Purge(id) => Some(id),
        QueueOp::GivenUp(..) => None,
        QueueOp::Copies(copies) => match copies.as_slice() {
            [QueueCopy::Snapshot { client_id, .. }] | [QueueCopy::Ended(client_id)] => {
                Some(client_id)
            }
            _ => None,
        },
    }
}

impl QueueOps {
    pub(super) fn new(tx: mpsc::Sender<QueueOp>) -> QueueOps {
        QueueOps {
            tx,
            waiting: RefCell::new(VecDeque::new()),
        }
    }

    /// Hands a shard's copies to the stream task (see the module docs for when it is behind).
    pub(super) fn copies(&self, copies: Vec<QueueCopy>, shared: &ClusterShared) {
        let Some(op) = self.try_send(QueueOp::Copies(copies)) else {
            return;
        };
        let QueueOp::Copies(copies) = op else {
            return;
        };
        let mut lost = 0;
        let mut given_up: Vec<CopyNumber> = Vec::new();
        let mut short: ShortClients = ShortClients::default();
        for copy in copies {
            match copy {
                QueueCopy::Append {
                    number, client_id, ..
                } => {
                    lost += 1;
                    raise(&mut given_up, number);
                    short.insert(client_id);
                }
                marker => self.wait(QueueOp::Copies(vec![marker])),
            }
        }
        shared.queues_not_copied.fetch_add(lost, Ordering::Relaxed);
        if given_up.is_empty() {
            return;
        }
        // One announcement waits at a time: the later numbers cover the earlier ones (only
        // snapshots, ends and purges, which carry no numbers, wait beside it).
        let mut waiting = self.waiting.borrow_mut();
        let announced = waiting.iter_mut().find_map(|op| match op {
            QueueOp::GivenUp(numbers, clients) => Some((numbers, clients)),
            _ => None,
        });
        match announced {
            Some((numbers, clients)) => {
                given_up.into_iter().for_each(|n| raise(numbers, n));
                clients.extend(short);
            }
            None => waiting.push_back(QueueOp::GivenUp(given_up, short)),
        }
    }

    /// The session ended (clean connect, expiry): its copy goes.
    pub(super) fn purge(&self, client_id: String) {
        if let Some(op) = self.try_send(QueueOp::Purge(client_id)) {
            self.wait(op);
        }
    }

    /// Sends `op` unless something waits (it goes behind) or there is no room: then gives it
    /// back.
    fn try_send(&self, op: QueueOp) -> Option<QueueOp> {
        if !self.waiting.borrow().is_empty() {
            return Some(op);
        }
        match self.tx.try_send(op) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(op)) => Some(op),
            // The stream task is gone: the node is stopping.
            Err(mpsc::error::TrySendError::Closed(_)) => None,
        }
    }

    /// Keeps a snapshot, end or purge until there is room, in place of one for the same
    /// client that waits already.
    fn wait(&self, op: QueueOp) {
        let mut waiting = self.waiting.borrow_mut();
        if let Some(client) = client_of(&op) {
            waiting.retain(|w| client_of(w) != Some(client));
        }
        waiting.push_back(op);
    }

    /// Whether something waits for room (the main loop then waits for room too).
    pub(super) fn waiting(&self) -> bool {
        !self.waiting.borrow().is_empty()
    }

    /// Returns once the stream task has room (or is gone).
    pub(super) async fn room(&self) -> Option<mpsc::Permit<'_, QueueOp>> {
        self.tx.reserve().await.ok()
    }

    /// Sends the oldest of what waits with `permit`.
    pub(super) fn send_waiting(&self, permit: Option<mpsc::Permit<'_, QueueOp>>) {
        let Some(op) = self.waiting.borrow_mut().pop_front() else {
            return;
        };
        match permit {
            Some(permit) => permit.send(op),
            // The node is stopping: nothing will be written any more.
            None => self.waiting.borrow_mut().clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::cluster_port::{ClusterShared, CopyNumber};
    use crate::broker::mesh::ShardId;
    use crate::protocol::ByteStr;

    fn append(client: &str, number: u64) -> QueueCopy {
        QueueCopy::Append {
            client_id: ByteStr::from(client),
            record: bytes::Bytes::from_static(b"r"),
            number: CopyNumber {
                shard: ShardId(0),
                number,
            },
        }
    }

    fn names(op: &QueueOp) -> String {
        match op {
            QueueOp::Purge(id) => format!("purge {id}"),
            QueueOp::GivenUp(numbers, clients) => numbers
                .iter()
                .map(|n| format!("given up {}:{}", n.shard.0, n.number))
                .chain({
                    let mut clients: Vec<_> =
                        clients.iter().map(|c| format!("short {c}")).collect();
                    clients.sort();
                    clients
                })
                .collect::<Vec<_>>()
                .join(","),
            QueueOp::Copies(copies) => copies
                .iter()
                .map(|c| match c {
                    QueueCopy::Snapshot { client_id, .. } => format!("snapshot {client_id}"),
                    QueueCopy::Ended(id) => format!("end {id}"),
                    QueueCopy::Append { number, .. } => format!("append {}", number.number),
                })
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    #[test]
    fn with_no_room_messages_are_given_up_but_ends_and_purges_wait_one_per_client() {
        let shared = ClusterShared::new();
        let (tx, mut rx) = mpsc::channel(1);
        let ops = QueueOps::new(tx);
        ops.copies(vec![append("a", 1)], &shared);
        assert!(!ops.waiting());
        // Full now.
        ops.copies(
            vec![
                append("a", 2),
                QueueCopy::Ended(ByteStr::from("a")),
                append("b", 3),
                QueueCopy::Ended(ByteStr::from("b")),
            ],
            &shared,
        );
        ops.purge("a".to_string());
        assert!(ops.waiting());
        assert_eq!(shared.counts().queues_not_copied, 2);
        // Room again: what waits goes first, in order; the purge of a replaced a's end, and
        // the messages given up on are announced behind what came before them, once.
        assert_eq!(names(&rx.try_recv().unwrap()), "append 1");
        ops.copies(vec![append("c", 4)], &shared);
        assert_eq!(shared.counts().queues_not_copied, 3, "behind what waits");
        let sent: Vec<String> = std::iter::from_fn(|| {
            ops.waiting().then(|| {
                ops.send_waiting(ops.tx.try_reserve().ok());
                names(&rx.try_recv().unwrap())
            })
        })
        .collect();
        // So are the clients whose copies now lack them, for their shards to copy whole.
        assert_eq!(
            sent,
            ["end b", "given up 0:4,short a,short b,short c", "purge a"]
        );
        ops.copies(vec![append("c", 5)], &shared);
        assert_eq!(names(&rx.try_recv().unwrap()), "append 5");
    }
}
