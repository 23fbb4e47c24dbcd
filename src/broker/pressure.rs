//! Push-back from full subscriber queues to the publishers that fill them.
//!
//! A QoS 1/2 message the broker acknowledged must reach every connected subscriber that keeps
//! reading, however fast its publisher is. So when such a subscriber's queue goes over its
//! limits, the message is queued anyway and the subscriber is put *under pressure*: its home
//! shard records it here and tells every other shard, and any connection whose publish then
//! reaches it at QoS 1/2 stops handling its own PUBLISH packets until the pressure ends (it
//! goes on reading its socket for acknowledgements, see `connected`). The pressure ends when the
//! queue is back under half its limits, when the subscriber disconnects, or when it made no
//! progress (read nothing, acknowledged nothing) for `--stall-timeout`: then it is *stalled*,
//! its new messages are dropped and counted, and it holds nobody back until it reads again.
//!
//! Each shard keeps the set of subscribers under pressure anywhere (its own and, by message,
//! the other shards'), so a publisher learns of it where it is matched, without a lock. QoS 0
//! is never pushed back: it is dropped and counted when a queue is full.

use std::cell::RefCell;
use std::task::{Context, Poll, Waker};

use ahash::AHashMap;
use smallvec::SmallVec;

use super::mesh::SubscriberId;

/// The subscribers under pressure as this shard knows them, and who waits for them.
#[derive(Default)]
pub struct PressureBoard {
    /// Subscribers (of any shard) under pressure, with the tasks of this shard waiting for
    /// each to be relieved.
    pressured: RefCell<AHashMap<SubscriberId, SmallVec<[Waker; 2]>>>,
    /// Subscribers of this shard under pressure, for the stall watch.
    own: RefCell<Vec<SubscriberId>>,
    /// The stall watch, asleep while no subscriber of this shard is under pressure.
    watch_waker: RefCell<Option<Waker>>,
    /// Changes to this shard's own subscribers that the other shards have yet to hear of
    /// (subscriber, under pressure): sent with the shard's next flush, because they arise in
    /// the middle of routing, while the router is in use.
    outbox: RefCell<Vec<(SubscriberId, bool)>>,
}

impl PressureBoard {
    /// Whether any subscriber is under pressure (the common answer, no, costs one look).
    pub fn any(&self) -> bool {
        !self.pressured.borrow().is_empty()
    }

    pub fn contains(&self, id: &SubscriberId) -> bool {
        self.pressured.borrow().contains_key(id)
    }

    /// Records `id` as under pressure; returns false when it already was.
    pub fn raise(&self, id: SubscriberId) -> bool {
        let mut pressured = self.pressured.borrow_mut();
        if pressured.contains_key(&id) {
            return false;
        }
        pressured.insert(id, SmallVec::new());
        true
    }

    /// Ends the pressure on `id` and wakes whoever waited for it; false when there was none.
    pub fn lower(&self, id: &SubscriberId) -> bool {
        let waiters = self.pressured.borrow_mut().remove(id);
        match waiters {
            Some(waiters) => {
                for w in waiters {
                    w.wake();
                }
                true
            }
            None => false,
        }
    }

    /// Queues a change of one of this shard's subscribers for the other shards.
    pub fn announce(&self, id: SubscriberId, on: bool) {
        self.outbox.borrow_mut().push((id, on));
    }

    /// The changes to announce, oldest first; None (no allocation) when there are none.
    pub fn take_announcements(&self) -> Option<Vec<(SubscriberId, bool)>> {
        let mut outbox = self.outbox.borrow_mut();
        (!outbox.is_empty()).then(|| std::mem::take(&mut *outbox))
    }

    /// Ready once `id` is no longer under pressure; until then the task is woken when it is.
    pub fn poll_relieved(&self, id: &SubscriberId, cx: &mut Context<'_>) -> Poll<()> {
        match self.pressured.borrow_mut().get_mut(id) {
            None => Poll::Ready(()),
            Some(waiters) => {
                if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    waiters.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }

    /// A subscriber of this shard came under pressure: the stall watch must look at it.
    pub fn watch(&self, id: SubscriberId) {
        let mut own = self.own.borrow_mut();
        // Raised, relieved and raised again before the watch looked: once is enough.
        if !own.contains(&id) {
            own.push(id);
        }
        drop(own);
        if let Some(w) = self.watch_waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// The subscribers of this shard the stall watch looks at; it drops those no longer under
    /// pressure.
    pub fn watched(&self) -> Vec<SubscriberId> {
        let mut own = self.own.borrow_mut();
        own.retain(|id| self.pressured.borrow().contains_key(id));
        own.clone()
    }

    /// Ready when a subscriber of this shard is under pressure; the stall watch sleeps until.
    pub fn poll_watch_needed(&self, cx: &mut Context<'_>) -> Poll<()> {
        let pressured = self.pressured.borrow();
        let mut own = self.own.borrow_mut();
        own.retain(|id| pressured.contains_key(id));
        if own.is_empty() {
            *self.watch_waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::mesh::ShardId;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn id(slot: u32) -> SubscriberId {
        SubscriberId {
            durable: false,
            shard: ShardId(0),
            slot,
            generation: 1,
        }
    }

    #[test]
    fn waiters_are_woken_once_when_the_pressure_ends() {
        let board = PressureBoard::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(board.poll_relieved(&id(1), &mut cx).is_ready());
        assert!(board.raise(id(1)));
        assert!(!board.raise(id(1)), "raised once");
        assert!(board.any() && board.contains(&id(1)) && !board.contains(&id(2)));
        // Polled twice by the same task: one waker kept.
        assert!(board.poll_relieved(&id(1), &mut cx).is_pending());
        assert!(board.poll_relieved(&id(1), &mut cx).is_pending());
        assert!(board.lower(&id(1)));
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert!(!board.lower(&id(1)));
        assert!(!board.any());
        assert!(board.poll_relieved(&id(1), &mut cx).is_ready());
    }

    #[test]
    fn the_watch_sees_only_own_subscribers_still_under_pressure() {
        let board = PressureBoard::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(board.poll_watch_needed(&mut cx).is_pending());
        board.raise(id(1));
        board.watch(id(1));
        assert_eq!(
            count.0.load(Ordering::Relaxed),
            1,
            "the sleeping watch is woken"
        );
        board.raise(id(2)); // another shard's subscriber: not watched here
        assert_eq!(board.watched(), vec![id(1)]);
        // Relieved and raised again before the watch looked: watched once.
        board.lower(&id(1));
        board.raise(id(1));
        board.watch(id(1));
        assert_eq!(board.watched(), vec![id(1)]);
        board.lower(&id(1));
        assert!(board.watched().is_empty());
        assert!(board.poll_watch_needed(&mut cx).is_pending());
    }
}
