//! Keepalive deadlines of a shard's connections (MQTT-3.1.2-24), kept in one queue with one
//! timer instead of a glommio timer per connection.
//!
//! A glommio timer costs about 130 bytes per connection (its shared state plus an entry in the
//! reactor's timer tree); most clients ask for a keepalive, so that was a tenth of what an idle
//! connection cost. Here each connection has one entry of 24 bytes: when it is due, the
//! shard's keepalive task marks the session and wakes the connection, which compares the
//! deadline with its last input and either closes or files its next deadline. A deadline is
//! filed once per keepalive period, not per packet.

use std::cell::RefCell;
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

/// Deadlines, earliest first, each naming a session slot and generation.
#[derive(Default)]
pub struct KeepaliveQueue {
    deadlines: RefCell<BinaryHeap<Reverse<(Instant, u32, u32)>>>,
    /// The keepalive task, to be woken when a deadline earlier than all others arrives.
    waker: RefCell<Option<Waker>>,
}

impl KeepaliveQueue {
    /// Files the deadline of the connection attached to session `id`.
    pub fn file(&self, id: SubscriberId, deadline: Instant) {
        let mut deadlines = self.deadlines.borrow_mut();
        let earliest = deadlines
            .peek()
            .is_none_or(|Reverse((t, ..))| deadline < *t);
        deadlines.push(Reverse((deadline, id.slot, id.generation)));
        if earliest {
            if let Some(w) = self.waker.borrow_mut().take() {
                w.wake();
            }
        }
    }

    /// Takes the deadlines that have passed.
    fn take_due(&self, now: Instant, due: &mut Vec<(u32, u32)>) {
        let mut deadlines = self.deadlines.borrow_mut();
        while let Some(Reverse((t, slot, generation))) = deadlines.peek().copied() {
            if t > now {
                break;
            }
            deadlines.pop();
            due.push((slot, generation));
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
    std::future::poll_fn(|cx| loop {
        queue.take_due(Instant::now(), &mut due);
        if !due.is_empty() {
            let sessions = shard.sessions.borrow();
            for (slot, generation) in due.drain(..) {
                // A session that ended meanwhile is not found: its entry just expires.
                if let Some(session) = sessions.get(slot, generation) {
                    let mut session = session.borrow_mut();
                    session.keepalive_due = true;
                    session.wake();
                }
            }
        }
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
            shard: ShardId(0),
            slot,
            generation: 7,
        }
    }

    #[test]
    fn deadlines_come_due_in_time_order_and_only_once() {
        let q = KeepaliveQueue::default();
        let t0 = Instant::now();
        q.file(id(1), t0 + Duration::from_secs(30));
        q.file(id(2), t0 + Duration::from_secs(10));
        q.file(id(3), t0 + Duration::from_secs(20));
        let mut due = Vec::new();
        q.take_due(t0 + Duration::from_secs(5), &mut due);
        assert!(due.is_empty());
        q.take_due(t0 + Duration::from_secs(20), &mut due);
        assert_eq!(due, [(2, 7), (3, 7)]);
        assert_eq!(q.earliest(), Some(t0 + Duration::from_secs(30)));
        due.clear();
        q.take_due(t0 + Duration::from_secs(20), &mut due);
        assert!(due.is_empty(), "taken deadlines do not come back");
    }
}
