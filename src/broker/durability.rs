//! Acknowledgements that wait for the disk (with `--data-dir`), across shards.
//!
//! A QoS 1/2 publish may be written on several shards: the publisher's own (queues of its
//! local persistent subscribers, a retained topic it owns) and those it sends deliveries or a
//! retained message to. Its PUBACK/PUBREC waits for a [`Ticket`]: a position in the local log
//! and, per other shard, the number of the message it sent there (see `mesh::Numbered`).
//!
//! A destination shard writes what a numbered message asks for while handling it, notes the
//! end of its log at that moment, and once that end is durable confirms the number back to the
//! sender, coalesced into one `ShardMessage::Durable` per sender per flush. Numbers and log
//! positions only grow, so "durable up to N" covers every message before N too. Only messages a
//! publisher waits for (`needs_ack`) cause a confirmation to be sent; the others just move the
//! number along.
//!
//! A shared-subscription delivery the destination cannot queue (its member just left, or is
//! full) is not sent on from there when the sender waits for its batch: the destination keeps
//! nothing of it, so its confirmation would say nothing about where the message went. It goes
//! back to the sender (`ShardMessage::SharedReturned`, ahead of the confirmation), which gives
//! it to another member and *holds* the destination's confirmations up to that batch until
//! the new delivery is durable too. Holds live only on the sender, and a confirmation never
//! waits for another shard's, so no two shards can wait for each other.
//!
//! A member's session that ends (or, with `--shared-redispatch`, whose client goes away)
//! hands the shared messages it holds, acknowledged long ago, to other members. Its shard
//! keeps the records that forget them (`SessionEnded`, `Withdrawn`) *handed on*: they are
//! appended, in order, once the deliveries that took the messages elsewhere are durable
//! (a [`Ticket`], holds included), by the shard task `hand_on`. A crash before leaves the
//! messages where they were (and maybe also where they went: at least once). Nothing waits
//! for that task, so no shard waits for another through it either.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};

use smallvec::SmallVec;

use super::mesh::{Numbered, ShardId};
use crate::store::{Position, Record};

/// What an acknowledgement waits for: everything up to `local` in this shard's log, each
/// [`Remote`] confirmed by its shard, and (with a cluster) the other nodes' acknowledgement of
/// everything this shard sent them up to message `cluster` (0: nothing; see
/// `crate::cluster::marks`), and JetStream's of this shard's copies of offline sessions'
/// queued messages up to copy `copied` (0: nothing; see `queue_copies`).
#[derive(Debug, Default, Clone)]
pub struct Ticket {
    pub local: Position,
    pub remote: SmallVec<[Remote; 2]>,
    pub cluster: u64,
    pub copied: u64,
}

/// Messages sent to `shard` in the numbered messages `number - earlier ..= number`. Waiting
/// for `number` covers the earlier ones; the range says which holds concern them (see the
/// module docs). 16 bytes, as `(ShardId, u64)` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remote {
    pub shard: ShardId,
    pub earlier: u32,
    pub number: u64,
}

impl Remote {
    /// The first of its numbers.
    pub fn first(&self) -> u64 {
        self.number - u64::from(self.earlier)
    }
}

impl Ticket {
    pub fn is_empty(&self) -> bool {
        self.local == 0 && self.remote.is_empty() && self.cluster == 0 && self.copied == 0
    }

    /// Waits for everything `other` waits for too.
    pub fn join(&mut self, other: &Ticket) {
        self.local = self.local.max(other.local);
        self.cluster = self.cluster.max(other.cluster);
        self.copied = self.copied.max(other.copied);
        for r in &other.remote {
            self.add_remote(r.shard, r.first());
            self.add_remote(r.shard, r.number);
        }
    }

    /// Adds "message `number` sent to `shard`"; a later number to one shard covers earlier ones.
    pub fn add_remote(&mut self, shard: ShardId, number: u64) {
        match self.remote.iter_mut().find(|r| r.shard == shard) {
            Some(r) => {
                let first = r.first().min(number);
                r.number = r.number.max(number);
                r.earlier = u32::try_from(r.number - first).unwrap_or(u32::MAX);
            }
            None => self.remote.push(Remote {
                shard,
                earlier: 0,
                number,
            }),
        }
    }
}

/// Whether a hold on the confirmation of `number` by `shard` concerns `remote`.
fn concerns(remote: &Remote, shard: ShardId, number: u64) -> bool {
    remote.shard == shard && (remote.first()..=remote.number).contains(&number)
}

/// A numbered message this shard handled whose records are not durable yet: its log
/// position, and (with a cluster) the last of this shard's queue copies it made.
struct Unconfirmed {
    numbered: Numbered,
    position: Position,
    copied: u64,
}

/// Both sides of the confirmations; see the module docs.
pub struct Durability {
    /// Per destination shard: the highest number it confirmed durable.
    confirmed: Vec<Cell<u64>>,
    /// Connections waiting for a confirmation.
    waiters: RefCell<Vec<Waker>>,
    /// The highest number of a message this shard sent the other nodes up to which they all
    /// acknowledged theirs (the cluster thread says so).
    cluster: Cell<u64>,
    /// Handled here, waiting for this shard's log, in the order handled.
    unconfirmed: RefCell<VecDeque<Unconfirmed>>,
    /// Per sender: the highest number handled here and durable.
    durable_for: Vec<Cell<u64>>,
    /// Per sender: a confirmation it waits for is due.
    announce: Vec<Cell<bool>>,
    /// The task that waits for the log on behalf of `unconfirmed`.
    watcher: RefCell<Option<Waker>>,
    /// With a cluster: how far JetStream stored this shard's copies of offline sessions'
    /// queued messages (or they were given up on; see `queue_copies`).
    copied: Cell<u64>,
    /// Confirmations from a shard that count only once more is durable: (shard, up to that
    /// number, what else). Empty unless shared deliveries came back (see the module docs).
    holds: RefCell<VecDeque<(ShardId, u64, Ticket)>>,
    /// Records of this shard's sessions appended once a ticket is durable, in order, with
    /// the session they concern. Empty unless members handed messages on.
    handed_on: RefCell<VecDeque<(Ticket, u64, Vec<Record>)>>,
    /// The task that appends them.
    hand_on_waker: RefCell<Option<Waker>>,
    /// With a cluster: messages from other nodes handled here that wait for what they wrote
    /// to be durable before the cluster thread hears they were handled, in order (their
    /// numbers, see `ShardMessage::FromCluster`). Empty without `--data-dir`.
    from_cluster: RefCell<VecDeque<(u64, Ticket)>>,
    /// The task that tells the cluster thread.
    from_cluster_waker: RefCell<Option<Waker>>,
}

impl Durability {
    pub fn new(shards: usize) -> Durability {
        Durability {
            confirmed: (0..shards).map(|_| Cell::new(0)).collect(),
            waiters: RefCell::new(Vec::new()),
            cluster: Cell::new(0),
            unconfirmed: RefCell::new(VecDeque::new()),
            durable_for: (0..shards).map(|_| Cell::new(0)).collect(),
            announce: (0..shards).map(|_| Cell::new(false)).collect(),
            watcher: RefCell::new(None),
            copied: Cell::new(0),
            holds: RefCell::new(VecDeque::new()),
            handed_on: RefCell::new(VecDeque::new()),
            hand_on_waker: RefCell::new(None),
            from_cluster: RefCell::new(VecDeque::new()),
            from_cluster_waker: RefCell::new(None),
        }
    }

    // ----- the sender's side ----------------------------------------------------------------

    /// Ready once `mark` reached `number`; until then the task is among the waiters.
    fn wait_for(&self, mark: &Cell<u64>, number: u64, cx: &mut Context<'_>) -> Poll<()> {
        if mark.get() >= number {
            return Poll::Ready(());
        }
        let mut waiters = self.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// A mark moved: every waiter looks again.
    fn wake_waiters(&self) {
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// `from` confirmed everything up to `upto`.
    pub fn confirmed_by(&self, from: ShardId, upto: u64) {
        let c = &self.confirmed[from.index()];
        if upto > c.get() {
            c.set(upto);
            self.wake_waiters();
        }
    }

    /// Ready once `shard` confirmed `number`.
    pub fn poll_confirmed(&self, shard: ShardId, number: u64, cx: &mut Context<'_>) -> Poll<()> {
        self.wait_for(&self.confirmed[shard.index()], number, cx)
    }

    pub fn is_confirmed(&self, shard: ShardId, number: u64) -> bool {
        self.confirmed[shard.index()].get() >= number
    }

    /// The other nodes acknowledged what this shard sent them up to message `upto`.
    pub fn cluster_confirmed(&self, upto: u64) {
        if upto > self.cluster.get() {
            self.cluster.set(upto);
            self.wake_waiters();
        }
    }

    /// Ready once the other nodes acknowledged this shard's message `number`.
    pub fn poll_cluster(&self, number: u64, cx: &mut Context<'_>) -> Poll<()> {
        self.wait_for(&self.cluster, number, cx)
    }

    pub fn is_cluster_confirmed(&self, number: u64) -> bool {
        self.cluster.get() >= number
    }

    /// JetStream stored (or the cluster thread gave up on) this shard's queue copies up to
    /// `upto`: what waited for them may go. Returns whether that was news.
    pub fn copies_stored(&self, upto: u64) -> bool {
        if upto <= self.copied.get() {
            return false;
        }
        self.copied.set(upto);
        self.wake_waiters();
        if let Some(w) = self.watcher.borrow_mut().take() {
            w.wake();
        }
        true
    }

    /// Ready once this shard's queue copy `number` is stored.
    pub fn poll_copied(&self, number: u64, cx: &mut Context<'_>) -> Poll<()> {
        self.wait_for(&self.copied, number, cx)
    }

    pub fn is_copied(&self, number: u64) -> bool {
        self.copied.get() >= number
    }

    /// Confirmations from `shard` of `number` count only once `ticket` is durable.
    pub fn hold(&self, shard: ShardId, number: u64, ticket: Ticket) {
        self.holds.borrow_mut().push_back((shard, number, ticket));
    }

    pub fn has_holds(&self) -> bool {
        !self.holds.borrow().is_empty()
    }

    /// What the confirmations `remote` waits for wait for besides (copies: checking them
    /// may look at other holds).
    pub fn held(&self, remote: &Remote) -> SmallVec<[Ticket; 1]> {
        self.holds
            .borrow()
            .iter()
            .filter(|(s, n, _)| concerns(remote, *s, *n))
            .map(|(_, _, t)| t.clone())
            .collect()
    }

    /// Forgets the holds on the confirmations `remote` waits for: what they wait for is
    /// durable.
    pub fn release_held(&self, remote: &Remote) {
        self.holds
            .borrow_mut()
            .retain(|(s, n, _)| !concerns(remote, *s, *n));
    }

    /// The oldest hold's ticket (a copy).
    pub fn oldest_held(&self) -> Option<Ticket> {
        self.holds.borrow().front().map(|(_, _, t)| t.clone())
    }

    pub fn forget_oldest_held(&self) {
        self.holds.borrow_mut().pop_front();
    }

    // ----- records handed on ----------------------------------------------------------------

    /// Appends `records` of `session` once `ticket` is durable, after those handed on before.
    pub fn hand_on(&self, ticket: Ticket, session: u64, records: Vec<Record>) {
        self.handed_on
            .borrow_mut()
            .push_back((ticket, session, records));
        if let Some(w) = self.hand_on_waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Whether records are handed on (a compaction waits: its snapshot would forget what
    /// they keep).
    pub fn has_handed_on(&self) -> bool {
        !self.handed_on.borrow().is_empty()
    }

    /// Whether records of `session` are handed on: later ones must wait behind them.
    pub fn hands_on(&self, session: u64) -> bool {
        self.handed_on
            .borrow()
            .iter()
            .any(|(_, s, _)| *s == session)
    }

    /// The ticket the oldest records handed on wait for (a copy); the task sleeps until
    /// there are some.
    pub fn poll_handed_on(&self, cx: &mut Context<'_>) -> Poll<Ticket> {
        match self.handed_on.borrow().front() {
            Some((ticket, _, _)) => Poll::Ready(ticket.clone()),
            None => {
                *self.hand_on_waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Takes the oldest records handed on: their ticket is durable.
    pub fn take_handed_on(&self) -> Vec<Record> {
        self.handed_on
            .borrow_mut()
            .pop_front()
            .map_or_else(Vec::new, |(_, _, records)| records)
    }

    // ----- messages from other nodes ----------------------------------------------------------

    /// Whether messages from other nodes wait for the disk here (later ones wait behind them).
    pub fn cluster_inbox_waits(&self) -> bool {
        !self.from_cluster.borrow().is_empty()
    }

    /// Message `number` from another node is handled once `ticket` is durable.
    pub fn wait_cluster_inbox(&self, number: u64, ticket: Ticket) {
        self.from_cluster.borrow_mut().push_back((number, ticket));
        if let Some(w) = self.from_cluster_waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// The oldest message from another node that waits (a copy of its ticket); the task
    /// sleeps until there is one.
    pub fn poll_cluster_inbox(&self, cx: &mut Context<'_>) -> Poll<(u64, Ticket)> {
        match self.from_cluster.borrow().front() {
            Some((number, ticket)) => Poll::Ready((*number, ticket.clone())),
            None => {
                *self.from_cluster_waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Forgets the oldest: its ticket is durable.
    pub fn pop_cluster_inbox(&self) {
        self.from_cluster.borrow_mut().pop_front();
    }

    // ----- the destination's side -----------------------------------------------------------

    /// A numbered message was handled; what it wrote ends at `appended`, the log is durable up
    /// to `durable`; `copied` is the last queue copy it made (0: none).
    pub fn handled(&self, numbered: Numbered, appended: Position, copied: u64, durable: Position) {
        self.advance(durable);
        if appended <= durable
            && self.copied.get() >= copied
            && self.unconfirmed.borrow().is_empty()
        {
            // Confirming it confirms everything handled before, which is durable too.
            self.confirm(numbered);
            return;
        }
        self.unconfirmed.borrow_mut().push_back(Unconfirmed {
            numbered,
            position: appended,
            copied,
        });
        if let Some(w) = self.watcher.borrow_mut().take() {
            w.wake();
        }
    }

    /// The log is durable up to `durable`: confirms what that covers, in order, as far as
    /// the queue copies it made are stored too.
    pub fn advance(&self, durable: Position) {
        let copied = self.copied.get();
        loop {
            let next = {
                let mut unconfirmed = self.unconfirmed.borrow_mut();
                match unconfirmed.front() {
                    Some(u) if u.position <= durable && u.copied <= copied => {
                        unconfirmed.pop_front()
                    }
                    _ => None,
                }
            };
            match next {
                Some(u) => self.confirm(u.numbered),
                None => return,
            }
        }
    }

    fn confirm(&self, numbered: Numbered) {
        let i = numbered.origin.index();
        self.durable_for[i].set(numbered.number);
        if numbered.needs_ack {
            self.announce[i].set(true);
        }
    }

    /// The log position the oldest unconfirmed message waits for; the watcher task sleeps
    /// while there is none (or the oldest waits for queue copies only: their news wakes it).
    /// A position already durable counts too: the commit may have finished between the
    /// message's arrival and the watcher's turn, and nothing else would confirm it.
    pub fn poll_oldest(&self, durable: Position, cx: &mut Context<'_>) -> Poll<Position> {
        match self.unconfirmed.borrow().front() {
            Some(u) if u.position > durable || u.copied <= self.copied.get() => {
                Poll::Ready(u.position)
            }
            _ => {
                *self.watcher.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// The confirmations due, per sender: (sender, durable up to).
    pub fn take_announcements(&self, mut each: impl FnMut(ShardId, u64)) {
        for (i, due) in self.announce.iter().enumerate() {
            if due.replace(false) {
                each(ShardId(i as u16), self.durable_for[i].get());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(origin: u16, number: u64, needs_ack: bool) -> Numbered {
        Numbered {
            origin: ShardId(origin),
            number,
            needs_ack,
        }
    }

    fn announced(d: &Durability) -> Vec<(u16, u64)> {
        let mut out = Vec::new();
        d.take_announcements(|s, n| out.push((s.0, n)));
        out
    }

    #[test]
    fn a_message_that_wrote_nothing_new_is_confirmed_at_once() {
        let d = Durability::new(2);
        d.handled(numbered(1, 1, true), 100, 0, 100);
        assert_eq!(announced(&d), [(1, 1)]);
        assert_eq!(announced(&d), [], "announced once");
    }

    #[test]
    fn confirmations_wait_for_the_log_and_cover_earlier_numbers() {
        let d = Durability::new(3);
        d.handled(numbered(1, 1, true), 10, 0, 0);
        d.handled(numbered(2, 1, false), 20, 0, 0);
        d.handled(numbered(1, 2, false), 30, 0, 0);
        assert_eq!(announced(&d), []);
        d.advance(25);
        // Shard 2's message needed no answer; shard 1's first did.
        assert_eq!(announced(&d), [(1, 1)]);
        d.advance(30);
        assert_eq!(announced(&d), [], "number 2 needed no answer");
        d.handled(numbered(1, 3, true), 30, 0, 30);
        assert_eq!(announced(&d), [(1, 3)]);
    }

    #[test]
    fn the_watcher_confirms_a_message_whose_commit_finished_before_it_looked() {
        let d = Durability::new(2);
        let mut cx = Context::from_waker(Waker::noop());
        d.handled(numbered(1, 1, true), 10, 0, 0);
        assert_eq!(
            d.poll_oldest(0, &mut cx),
            Poll::Ready(10),
            "waits for the log"
        );
        // The log reached 10 before the watcher ran: it must still be told, or nothing
        // confirms number 1 until another message arrives (a lock-step publisher never
        // sends one).
        assert_eq!(d.poll_oldest(10, &mut cx), Poll::Ready(10));
        d.advance(10);
        assert_eq!(announced(&d), [(1, 1)]);
        assert_eq!(d.poll_oldest(10, &mut cx), Poll::Pending, "nothing left");
        // Waiting for a queue copy only: asleep until the copy's news.
        d.handled(numbered(1, 2, true), 10, 3, 10);
        assert_eq!(d.poll_oldest(10, &mut cx), Poll::Pending);
        d.copies_stored(3);
        assert_eq!(d.poll_oldest(10, &mut cx), Poll::Ready(10));
    }

    #[test]
    fn confirmations_wait_for_the_queue_copies_they_made_and_keep_their_order() {
        let d = Durability::new(3);
        // Number 1 made copy 5 of an offline session's queue; number 2 made none, but
        // confirming it would confirm number 1 too.
        d.handled(numbered(1, 1, true), 0, 5, 0);
        d.handled(numbered(1, 2, true), 0, 0, 0);
        d.handled(numbered(2, 1, true), 0, 0, 0);
        assert_eq!(announced(&d), []);
        assert!(!d.copies_stored(0), "no news");
        assert!(d.copies_stored(4));
        d.advance(0);
        assert_eq!(announced(&d), [], "copy 5 is not stored yet");
        assert!(d.copies_stored(5));
        d.advance(0);
        assert_eq!(announced(&d), [(1, 2), (2, 1)]);
        // With the log too: both must be durable.
        d.handled(numbered(1, 3, true), 40, 6, 30);
        d.advance(40);
        assert_eq!(announced(&d), []);
        d.copies_stored(6);
        d.advance(40);
        assert_eq!(announced(&d), [(1, 3)]);
        d.handled(numbered(1, 4, true), 40, 6, 40);
        assert_eq!(announced(&d), [(1, 4)], "nothing waits: at once");
    }

    #[test]
    fn a_sender_waits_until_the_number_is_confirmed() {
        let d = Durability::new(2);
        let waker = futures_lite::future::block_on(std::future::poll_fn(|cx| {
            Poll::Ready(cx.waker().clone())
        }));
        let mut cx = Context::from_waker(&waker);
        assert!(d.poll_confirmed(ShardId(1), 2, &mut cx).is_pending());
        d.confirmed_by(ShardId(1), 1);
        assert!(d.poll_confirmed(ShardId(1), 2, &mut cx).is_pending());
        d.confirmed_by(ShardId(1), 3);
        assert!(d.poll_confirmed(ShardId(1), 2, &mut cx).is_ready());
    }

    #[test]
    fn a_sender_waits_until_the_other_nodes_acknowledged_its_message() {
        let d = Durability::new(1);
        let waker = futures_lite::future::block_on(std::future::poll_fn(|cx| {
            Poll::Ready(cx.waker().clone())
        }));
        let mut cx = Context::from_waker(&waker);
        assert!(d.poll_cluster(3, &mut cx).is_pending());
        d.cluster_confirmed(2);
        assert!(d.poll_cluster(3, &mut cx).is_pending());
        assert!(d.is_cluster_confirmed(2));
        d.cluster_confirmed(5);
        assert!(d.poll_cluster(3, &mut cx).is_ready());
        d.cluster_confirmed(4);
        assert!(d.is_cluster_confirmed(5), "never goes back");
    }

    #[test]
    fn a_hold_concerns_the_tickets_that_wait_for_its_number_only() {
        let d = Durability::new(3);
        assert!(!d.has_holds());
        let mut elsewhere = Ticket::default();
        elsewhere.add_remote(ShardId(2), 9);
        d.hold(ShardId(1), 5, elsewhere.clone());
        let waits = |numbers: &[u64]| {
            let mut t = Ticket::default();
            for n in numbers {
                t.add_remote(ShardId(1), *n);
            }
            t.remote[0]
        };
        assert_eq!(d.held(&waits(&[5])).len(), 1);
        assert_eq!(d.held(&waits(&[4, 6])).len(), 1, "5 was among them");
        assert!(d.held(&waits(&[4])).is_empty());
        assert!(
            d.held(&waits(&[6])).is_empty(),
            "6 covers 5, but 5 was not this one's"
        );
        d.release_held(&waits(&[5]));
        assert!(!d.has_holds());
    }

    #[test]
    fn records_handed_on_come_back_oldest_first_with_their_tickets() {
        let d = Durability::new(2);
        let waker = futures_lite::future::block_on(std::future::poll_fn(|cx| {
            Poll::Ready(cx.waker().clone())
        }));
        let mut cx = Context::from_waker(&waker);
        assert!(d.poll_handed_on(&mut cx).is_pending());
        let mut first = Ticket::default();
        first.add_remote(ShardId(1), 3);
        d.hand_on(first, 7, vec![Record::Withdrawn { session: 7, seq: 1 }]);
        d.hand_on(
            Ticket::default(),
            7,
            vec![Record::SessionEnded { session: 7 }],
        );
        assert!(d.has_handed_on() && d.hands_on(7) && !d.hands_on(8));
        let Poll::Ready(ticket) = d.poll_handed_on(&mut cx) else {
            panic!("records are handed on");
        };
        assert_eq!(ticket.remote[0].number, 3);
        assert_eq!(
            d.take_handed_on(),
            [Record::Withdrawn { session: 7, seq: 1 }]
        );
        assert_eq!(d.take_handed_on(), [Record::SessionEnded { session: 7 }]);
        assert!(!d.has_handed_on());
    }

    #[test]
    fn messages_from_other_nodes_wait_in_order() {
        let d = Durability::new(1);
        let waker = futures_lite::future::block_on(std::future::poll_fn(|cx| {
            Poll::Ready(cx.waker().clone())
        }));
        let mut cx = Context::from_waker(&waker);
        assert!(!d.cluster_inbox_waits());
        assert!(d.poll_cluster_inbox(&mut cx).is_pending());
        let durable_at = |local| Ticket {
            local,
            ..Ticket::default()
        };
        d.wait_cluster_inbox(4, durable_at(10));
        d.wait_cluster_inbox(5, durable_at(20));
        assert!(d.cluster_inbox_waits());
        let Poll::Ready((number, ticket)) = d.poll_cluster_inbox(&mut cx) else {
            panic!("one waits");
        };
        assert_eq!((number, ticket.local), (4, 10));
        d.pop_cluster_inbox();
        let Poll::Ready((number, _)) = d.poll_cluster_inbox(&mut cx) else {
            panic!("one waits");
        };
        assert_eq!(number, 5);
        d.pop_cluster_inbox();
        assert!(!d.cluster_inbox_waits());
    }

    #[test]
    fn tickets_keep_the_highest_number_per_shard() {
        let mut t = Ticket::default();
        assert!(t.is_empty());
        t.add_remote(ShardId(1), 4);
        t.add_remote(ShardId(1), 6);
        t.add_remote(ShardId(2), 1);
        let remote: Vec<_> = t
            .remote
            .iter()
            .map(|r| (r.shard, r.first(), r.number))
            .collect();
        assert_eq!(remote, [(ShardId(1), 4, 6), (ShardId(2), 1, 1)]);
        assert_eq!(std::mem::size_of::<Remote>(), 16);
    }

    #[test]
    fn a_joined_ticket_waits_for_both() {
        let mut first = Ticket {
            local: 30,
            cluster: 7,
            ..Ticket::default()
        };
        first.add_remote(ShardId(1), 4);
        first.add_remote(ShardId(1), 6);
        let mut t = Ticket {
            local: 10,
            copied: 2,
            ..Ticket::default()
        };
        t.add_remote(ShardId(1), 9);
        t.add_remote(ShardId(2), 3);
        t.join(&first);
        assert_eq!((t.local, t.cluster, t.copied), (30, 7, 2));
        let remote: Vec<_> = t
            .remote
            .iter()
            .map(|r| (r.shard, r.first(), r.number))
            .collect();
        assert_eq!(remote, [(ShardId(1), 4, 9), (ShardId(2), 3, 3)]);
    }
}
