//! Keepalive deadlines of a shard's connections (MQTT-3.1.2-24), kept in one queue with one
//! timer instead of a glommio timer per connection.
//!
//! A glommio timer costs about 130 bytes per connection (its shared state plus an entry in the
//! reactor's timer tree); most clients ask for a keepalive, so that was a tenth of what an idle
//! connection cost. Here each connection has one entry of 32 bytes: when it is due, the
//! shard's keepalive task marks the session and wakes the connection, which compares the
//! deadline with its last input and either closes or files its next deadline. A deadline is
//! filed once per keepalive period, not per packet. Entries left by connections that ended
//! are dropped in bulk once they outnumber the live ones, so churn cannot grow the queue.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Instant;

use glommio::timer::Timer;

use super::mesh::SubscriberId;
use super::shard::Shard;

/// A filed deadline: when, and the connection (session slot, generation, connection id).
type Entry = Reverse<(Instant, u32, u32, u64)>;

/// Entries of ended connections tolerated beyond twice the live ones before a compaction.
const COMPACT_SLACK: usize = 1024;

/// Deadlines, earliest first. Bounded: a connection files one deadline at a time, and the
/// entries of ended connections (which cannot be taken out of a heap one by one) are dropped
/// in a compaction once they outnumber the live connections.
#[derive(Default)]
pub struct KeepaliveQueue {
    deadlines: RefCell<BinaryHeap<Entry>>,
    /// Connections with a keepalive that have not ended.
    live: Cell<usize>,
    /// The keepalive task, to be woken when a deadline earlier than all others arrives, or
    /// when the queue needs a compaction.
    waker: RefCell<Option<Waker>>,
}

impl KeepaliveQueue {
    /// A connection with a keepalive starts: it files its first deadline.
    pub fn connection_started(&self, id: SubscriberId, conn: u64, deadline: Instant) {
        self.live.set(self.live.get() + 1);
        self.file(id, conn, deadline);
    }

    /// A connection with a keepalive ended; its filed deadline is now stale.
    pub fn connection_ended(&self) {
        self.live.set(self.live.get().saturating_sub(1));
    }

    /// Files the next deadline of connection `conn`, attached to session `id`.
    pub fn file(&self, id: SubscriberId, conn: u64, deadline: Instant) {
        let mut deadlines = self.deadlines.borrow_mut();
        let earliest = deadlines
            .peek()
            .is_none_or(|Reverse((t, ..))| deadline < *t);
        deadlines.push(Reverse((deadline, id.slot, id.generation, conn)));
        if earliest || self.needs_compaction(deadlines.len()) {
            if let Some(w) = self.waker.borrow_mut().take() {
                w.wake();
            }
        }
    }

    fn needs_compaction(&self, len: usize) -> bool {
        len > 2 * self.live.get() + COMPACT_SLACK
    }

    /// Keeps only the entries for which `live(slot, generation, conn)` holds.
    fn compact(&self, live: impl Fn(u32, u32, u64) -> bool) {
        self.deadlines
            .borrow_mut()
            .retain(|Reverse((_, slot, generation, conn))| live(*slot, *generation, *conn));
    }

    /// Takes the deadlines that have passed.
    fn take_due(&self, now: Instant, due: &mut Vec<(u32, u32, u64)>) {
        let mut deadlines = self.deadlines.borrow_mut();
        while let Some(Reverse((t, slot, generation, conn))) = deadlines.peek().copied() {
            if t > now {
                break;
            }
            deadlines.pop();
            due.push((slot, generation, conn));
        }
    }

    fn earliest(&self) -> Option<Instant> {
        self.deadlines.borrow().peek().map(|Reverse((t, ..))| *t)
    }
}

/// The shard's keepalive task: wakes each connection whose deadline passed. Sleeps until the
/// earliest deadline, or without a timer when no connection has a keepalive.
pub async fn watch_keepalives(shard: Rc<Shard>) {
    let queue = &shard.keepalives;
    let mut timer: Option<Timer> = None;
    let mut due = Vec::new();
    // Whether the connection is still the one attached to its session.
    let attached = |slot, generation, conn| {
        shard
            .sessions
            .borrow()
            .get(slot, generation)
            .is_some_and(|s| s.borrow().is_attached(conn))
    };
    std::future::poll_fn(|cx| loop {
        if queue.needs_compaction(queue.deadlines.borrow().len()) {
            queue.compact(attached);
        }
        queue.take_due(Instant::now(), &mut due);
        let sessions = shard.sessions.borrow();
        for (slot, generation, conn) in due.drain(..) {
            // The entry of a connection that ended just expires.
            if let Some(session) = sessions.get(slot, generation) {
                let mut session = session.borrow_mut();
                if session.is_attached(conn) {
                    session.keepalive_due = true;
                    session.wake();
                }
            }
        }
        drop(sessions);
        *queue.waker.borrow_mut() = Some(cx.waker().clone());
        let Some(next) = queue.earliest() else {
            timer = None;
            return Poll::<()>::Pending;
        };
        let wait = next.saturating_duration_since(Instant::now());
        let t = timer.get_or_insert_with(|| Timer::new(wait));
        t.reset(wait);
        if Pin::new(t).poll(cx).is_pending() {
            return Poll::Pending;
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::mesh::ShardId;
    use std::time::Duration;

    fn id(slot: u32) -> SubscriberId {
        SubscriberId {
            durable: false,
            shard: ShardId(0),
            slot,
            generation: 7,
        }
    }

    #[test]
    fn deadlines_come_due_in_time_order_and_only_once() {
        let q = KeepaliveQueue::default();
        let t0 = Instant::now();
        q.file(id(1), 11, t0 + Duration::from_secs(30));
        q.file(id(2), 12, t0 + Duration::from_secs(10));
        q.file(id(3), 13, t0 + Duration::from_secs(20));
        let mut due = Vec::new();
        q.take_due(t0 + Duration::from_secs(5), &mut due);
        assert!(due.is_empty());
        q.take_due(t0 + Duration::from_secs(20), &mut due);
        assert_eq!(due, [(2, 7, 12), (3, 7, 13)]);
        assert_eq!(q.earliest(), Some(t0 + Duration::from_secs(30)));
        due.clear();
        q.take_due(t0 + Duration::from_secs(20), &mut due);
        assert!(due.is_empty(), "taken deadlines do not come back");
    }

    #[test]
    fn entries_of_ended_connections_are_compacted_away() {
        let q = KeepaliveQueue::default();
        let later = Instant::now() + Duration::from_secs(3600);
        for conn in 0..10 {
            q.connection_started(id(conn as u32), conn, later);
        }
        // Churn: 5,000 connections that start and end, each leaving a stale entry.
        for conn in 10..5010 {
            q.connection_started(id(conn as u32), conn, later);
            q.connection_ended();
        }
        assert!(q.needs_compaction(q.deadlines.borrow().len()));
        q.compact(|_, _, conn| conn < 10);
        assert_eq!(q.deadlines.borrow().len(), 10);
        assert!(!q.needs_compaction(q.deadlines.borrow().len()));
    }
}
