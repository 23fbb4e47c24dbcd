//! Flow control between publishers and subscribers: the closed-loop window and the open-loop
//! rate schedule.
//!
//! A publisher may have at most `window` messages outstanding: sent, but not yet seen by every
//! subscriber that should get them (and, at QoS 1/2, not yet acknowledged to it). Subscribers
//! run on any thread, so their progress is shared through the [`Board`]: one atomic per
//! publisher × subscriber stream, each on its own cache line, written by that subscriber once
//! per read batch (not per message) and read by that publisher when it wants to send. A
//! publisher that finds its window full parks its waker on the board; the subscriber that moves
//! the window wakes it. Nothing else crosses threads on the hot path.
//!
//! Progress is "highest sequence seen + 1", so a message the broker dropped (QoS 0) still
//! counts as no longer outstanding once a later one arrived: a lossy stream keeps moving
//! instead of stalling the publisher forever.
//!
//! A shared-subscription group ([`Board::new_group`]) receives each message once, in parts:
//! a member's progress says nothing about messages dealt to another member. Its members also
//! post how many of the publisher's messages they received, and what the group has done is
//! the larger of two lower bounds: the sum of those counts (exact without loss), and the least
//! progress over the members (every message below it reached its member or was lost, since
//! each member receives its part in order; it keeps a lossy QoS 0 run moving).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Waker;

use atomic_waker::AtomicWaker;

/// A value alone on its cache line, so that two threads updating neighbouring streams do not
/// slow each other down.
#[repr(align(64))]
#[derive(Default)]
pub struct Padded<T>(pub T);

/// Per-publisher slot: its wake-up call and how many messages it has sent.
#[derive(Default)]
pub struct PublisherSlot {
    waiting: AtomicBool,
    waker: AtomicWaker,
    /// Messages encoded so far (updated once per batch; read by the coordinator).
    pub sent: AtomicU64,
    /// Messages acknowledged so far (QoS 1/2; read by the coordinator).
    pub acked: AtomicU64,
}

/// Shared progress of every publisher × subscriber stream.
pub struct Board {
    publishers: usize,
    subscribers: usize,
    progress: Box<[Padded<AtomicU64>]>,
    /// A group's board: messages each member received per publisher (else empty).
    counts: Box<[Padded<AtomicU64>]>,
    slots: Box<[Padded<PublisherSlot>]>,
}

fn padded_zeros(n: usize) -> Box<[Padded<AtomicU64>]> {
    (0..n).map(|_| Padded::default()).collect()
}

impl Board {
    pub fn new(publishers: usize, subscribers: usize) -> Board {
        Board {
            publishers,
            subscribers,
            progress: padded_zeros(publishers * subscribers),
            counts: padded_zeros(0),
            slots: (0..publishers).map(|_| Padded::default()).collect(),
        }
    }

    /// The board of a shared-subscription group of `members`: each message reaches one.
    pub fn new_group(publishers: usize, members: usize) -> Board {
        Board {
            counts: padded_zeros(publishers * members),
            ..Board::new(publishers, members)
        }
    }

    /// Copies of each message the subscribers should receive: one per subscriber, or one for a
    /// whole group.
    pub fn copies(&self) -> usize {
        match self.counts.is_empty() {
            true => self.subscribers,
            false => self.subscribers.min(1),
        }
    }

    pub fn publishers(&self) -> usize {
        self.publishers
    }

    pub fn subscribers(&self) -> usize {
        self.subscribers
    }

    pub fn slot(&self, publisher: usize) -> &PublisherSlot {
        &self.slots[publisher].0
    }

    /// Publishes a subscriber's progress on one stream (and, in a group, how many of its
    /// messages the member received) and wakes the publisher if it waits.
    #[inline]
    pub fn advance(&self, publisher: usize, subscriber: usize, progress: u64, received: u64) {
        let i = publisher * self.subscribers + subscriber;
        if let Some(count) = self.counts.get(i) {
            count.0.store(received, Ordering::Release);
        }
        self.progress[i].0.store(progress, Ordering::Release);
        let slot = self.slot(publisher);
        // The plain load keeps the common case (publisher not waiting) free of a write.
        if slot.waiting.load(Ordering::Acquire) && slot.waiting.swap(false, Ordering::AcqRel) {
            slot.waker.wake();
        }
    }

    /// How many of this publisher's messages are no longer outstanding at the subscribers: the
    /// least progress over them, or for a group the larger of that and the sum of the members'
    /// counts; `None` with no subscribers.
    #[inline]
    pub fn delivered(&self, publisher: usize) -> Option<u64> {
        let row = publisher * self.subscribers..(publisher + 1) * self.subscribers;
        let least = self.progress[row.clone()]
            .iter()
            .map(|p| p.0.load(Ordering::Acquire))
            .min();
        match self.counts.get(row) {
            Some(counts) if !counts.is_empty() => {
                let sum = counts.iter().map(|c| c.0.load(Ordering::Acquire)).sum();
                least.map(|least| least.max(sum))
            }
            _ => least,
        }
    }

    /// Registers the publisher's waker for the next [`Board::advance`] on any of its streams.
    /// The caller must look at the board again afterwards: progress made before registering
    /// woke nobody.
    pub fn wait(&self, publisher: usize, waker: &Waker) {
        let slot = self.slot(publisher);
        slot.waker.register(waker);
        slot.waiting.store(true, Ordering::Release);
    }

    /// Wakes a publisher regardless of progress (used when the run stops).
    pub fn wake(&self, publisher: usize) {
        let slot = self.slot(publisher);
        slot.waiting.store(false, Ordering::Release);
        slot.waker.wake();
    }
}

/// How many more messages a closed-loop publisher may send now.
///
/// `sent` messages are out; `acked` is how many are acknowledged (`None` at QoS 0);
/// `delivered` is the least progress over the subscribers (`None` without subscribers). A
/// message is outstanding until both say it is done. With neither (QoS 0, no subscribers) there
/// is nothing to wait for and the answer is unlimited.
pub fn allowance(sent: u64, acked: Option<u64>, delivered: Option<u64>, window: u64) -> u64 {
    let done = match (acked, delivered) {
        (Some(a), Some(d)) => a.min(d),
        (Some(a), None) => a,
        (None, Some(d)) => d,
        (None, None) => return u64::MAX,
    };
    let outstanding = sent.saturating_sub(done);
    window.saturating_sub(outstanding)
}

/// Messages an open-loop publisher sending `rate` msgs/s should have sent `elapsed_ns` after
/// the start: the first one is due at once, the k-th (0-based) at `k / rate` seconds.
pub fn due(elapsed_ns: u64, rate: f64) -> u64 {
    (elapsed_ns as f64 * rate / 1e9).floor() as u64 + 1
}

/// When (ns after the start) message `seq` of an open-loop publisher is due.
pub fn due_at_ns(seq: u64, rate: f64) -> u64 {
    let mut at = (seq as f64 * 1e9 / rate).ceil() as u64;
    // Float rounding may land a nanosecond early; step until `due` agrees.
    while due(at, rate) <= seq {
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::Wake;

    #[test]
    fn allowance_is_window_minus_outstanding() {
        assert_eq!(allowance(0, None, Some(0), 100), 100);
        assert_eq!(allowance(100, None, Some(0), 100), 0);
        assert_eq!(allowance(100, None, Some(40), 100), 40);
        // Acknowledged but not delivered is still outstanding, and the other way round.
        assert_eq!(allowance(100, Some(100), Some(10), 100), 10);
        assert_eq!(allowance(100, Some(20), Some(100), 100), 20);
        // Publish-only at QoS 1: acknowledgements alone drive the window.
        assert_eq!(allowance(50, Some(0), None, 100), 50);
        // Nothing to wait for.
        assert_eq!(allowance(1_000_000, None, None, 100), u64::MAX);
        // Progress beyond what was sent (a stale message) never underflows.
        assert_eq!(allowance(5, None, Some(9), 100), 100);
    }

    #[test]
    fn least_progress_over_subscribers() {
        let board = Board::new(2, 3);
        assert_eq!(board.delivered(0), Some(0));
        assert_eq!(board.copies(), 3);
        board.advance(0, 0, 10, 10);
        board.advance(0, 1, 7, 7);
        board.advance(0, 2, 12, 12);
        board.advance(1, 1, 99, 99);
        assert_eq!(board.delivered(0), Some(7));
        assert_eq!(board.delivered(1), Some(0));
        assert_eq!(Board::new(1, 0).delivered(0), None);
    }

    #[test]
    fn a_group_counts_what_its_members_received_together() {
        let board = Board::new_group(2, 3);
        assert_eq!(board.copies(), 1);
        assert_eq!(board.delivered(0), Some(0));
        // Round-robin over 3 members: 0..30 dealt, 10 each; member 2 is behind (got 8).
        board.advance(0, 0, 28, 10);
        board.advance(0, 1, 29, 10);
        board.advance(0, 2, 23, 8);
        assert_eq!(board.delivered(0), Some(28), "the counts add up");
        // QoS 0 loss: member 1 lost 4 messages, but every member is past 60.
        board.advance(0, 0, 61, 21);
        board.advance(0, 1, 62, 17);
        board.advance(0, 2, 63, 21);
        assert_eq!(
            board.delivered(0),
            Some(61),
            "the least progress counts the losses"
        );
        // One member gets all of publisher 1 (a broker that hashes by topic): progress of the
        // others stays 0, the counts still tell.
        board.advance(1, 2, 50, 50);
        assert_eq!(board.delivered(1), Some(50));
        assert_eq!(Board::new_group(1, 0).delivered(0), None);
    }

    struct Counter(AtomicUsize);
    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn advance_wakes_a_waiting_publisher_once() {
        let board = Board::new(1, 2);
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        board.advance(0, 0, 1, 1);
        assert_eq!(counter.0.load(Ordering::SeqCst), 0, "nobody waits yet");
        board.wait(0, &waker);
        board.advance(0, 0, 2, 2);
        board.advance(0, 1, 2, 2);
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "one wake per wait");
    }

    #[test]
    fn rate_schedule() {
        // 1000 msgs/s: one due at 0, two by 1 ms, 1001 by 1 s.
        assert_eq!(due(0, 1000.0), 1);
        assert_eq!(due(999_999, 1000.0), 1);
        assert_eq!(due(1_000_000, 1000.0), 2);
        assert_eq!(due(1_000_000_000, 1000.0), 1001);
        assert_eq!(due_at_ns(0, 1000.0), 0);
        assert_eq!(due_at_ns(1, 1000.0), 1_000_000);
        assert_eq!(due_at_ns(3, 4.0), 750_000_000);
        // Consistent with each other.
        for seq in [1u64, 7, 1000, 123_457] {
            let at = due_at_ns(seq, 333.0);
            assert!(due(at, 333.0) > seq, "{seq} due at {at}");
        }
    }
}
