//! Sequence tracking for one publisher→subscriber stream: which messages arrived, which are
//! missing, which came twice.
//!
//! MQTT keeps the order of one publisher's messages on one topic (spec 4.6), so a stream is
//! expected to arrive as 0, 1, 2, ... A jump ahead leaves a gap (messages dropped, or, if the
//! order guarantee were broken, late); a number below the next expected one is a duplicate
//! unless it fills a known gap. Gaps are remembered as a short list of ranges so a late message
//! is not mistaken for a duplicate, but the list is bounded: when it is full the oldest gap is
//! forgotten (a late arrival there then counts as a duplicate). Memory per stream stays a few
//! dozen bytes whatever happens on the wire.
//!
//! [`SubResult`] is what one subscriber counted over all its streams: a tracker per publisher,
//! or, as a member of a shared-subscription group, a [`SeqSet`] per publisher.

use smallvec::SmallVec;

use super::config::Plan;
use super::group::SeqSet;

/// Gap ranges remembered per stream before the oldest is forgotten.
pub const MAX_GAPS: usize = 32;

/// What one arrival meant for its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next expected message.
    InOrder,
    /// Ahead of the next expected one: `skipped` messages before it have not (yet) arrived.
    Ahead { skipped: u64 },
    /// A message that was skipped earlier and has now arrived.
    Late,
    /// Already received.
    Duplicate,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamTracker {
    /// Sequence number after the highest one seen: the stream's progress.
    next: u64,
    /// Distinct messages received.
    unique: u64,
    duplicates: u64,
    /// Messages that arrived after a later one (an ordering violation).
    late: u64,
    /// Half-open ranges `[start, end)` below `next` that have not arrived, oldest first.
    gaps: SmallVec<[(u64, u64); 2]>,
}

impl StreamTracker {
    pub fn new() -> Self {
        Self::default()
    }

    #[inline]
    pub fn record(&mut self, seq: u64) -> Arrival {
        if seq == self.next {
            self.next += 1;
            self.unique += 1;
            return Arrival::InOrder;
        }
        if seq > self.next {
            let skipped = seq - self.next;
            if self.gaps.len() == MAX_GAPS {
                self.gaps.remove(0);
            }
            self.gaps.push((self.next, seq));
            self.next = seq + 1;
            self.unique += 1;
            return Arrival::Ahead { skipped };
        }
        self.fill_gap(seq)
    }

    /// `seq` is below `next`: late if it is in a remembered gap, else a duplicate.
    #[cold]
    fn fill_gap(&mut self, seq: u64) -> Arrival {
        let Some(i) = self.gaps.iter().position(|&(s, e)| s <= seq && seq < e) else {
            self.duplicates += 1;
            return Arrival::Duplicate;
        };
        let (s, e) = self.gaps[i];
        match (seq == s, seq + 1 == e) {
            (true, true) => {
                self.gaps.remove(i);
            }
            (true, false) => self.gaps[i].0 = seq + 1,
            (false, true) => self.gaps[i].1 = seq,
            (false, false) => {
                self.gaps[i].1 = seq;
                // Splitting may exceed the bound by one; forget the oldest to stay within it.
                self.gaps.insert(i + 1, (seq + 1, e));
                if self.gaps.len() > MAX_GAPS {
                    self.gaps.remove(0);
                }
            }
        }
        self.unique += 1;
        self.late += 1;
        Arrival::Late
    }

    /// Sequence number after the highest one received (0 before any): how far the stream got.
    #[inline]
    pub fn progress(&self) -> u64 {
        self.next
    }

    pub fn unique(&self) -> u64 {
        self.unique
    }

    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    pub fn late(&self) -> u64 {
        self.late
    }

    /// Messages of the `published` the publisher sent on this stream that never arrived.
    pub fn missing(&self, published: u64) -> u64 {
        published.saturating_sub(self.unique)
    }

    /// Messages received that the publisher says it never sent (a tracking bug or a stale
    /// message from an earlier run with the same numbering).
    pub fn unexpected(&self, published: u64) -> u64 {
        self.unique.saturating_sub(published)
    }
}

#[derive(Debug, Clone, Default)]
pub struct SubResult {
    pub index: usize,
    /// One per publisher, by publisher index (empty for a shared-subscription member).
    pub trackers: Vec<StreamTracker>,
    /// A shared-subscription member: what it received, one set per publisher (else empty).
    pub received: Vec<SeqSet>,
    pub foreign: u64,
    pub last_recv_ns: u64,
}

impl SubResult {
    /// A subscriber that has received nothing yet: a tracker per publisher, or a set per
    /// publisher for a shared-subscription member.
    pub fn new(index: usize, plan: &Plan) -> SubResult {
        let n = plan.publishers;
        let group = plan.config.scenario.is_shared();
        SubResult {
            index,
            trackers: vec![StreamTracker::new(); if group { 0 } else { n }],
            received: vec![SeqSet::new(); if group { n } else { 0 }],
            ..Default::default()
        }
    }

    /// Publishers whose messages this subscriber can count.
    pub fn publishers(&self) -> usize {
        self.trackers.len().max(self.received.len())
    }

    /// Counts one arrival; true unless this subscriber already had the message.
    #[inline]
    pub fn record(&mut self, publisher: usize, seq: u64) -> bool {
        let arrival = match self.received.get_mut(publisher) {
            Some(set) => set.record(seq),
            None => self.trackers[publisher].record(seq),
        };
        arrival != Arrival::Duplicate
    }

    /// How far a stream got, and (for a group member) how many of its messages arrived.
    pub fn progress(&self, publisher: usize) -> (u64, u64) {
        match self.received.get(publisher) {
            Some(set) => (set.progress(), set.unique()),
            None => {
                let t = &self.trackers[publisher];
                (t.progress(), t.unique())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(seqs: &[u64]) -> StreamTracker {
        let mut t = StreamTracker::new();
        for &s in seqs {
            t.record(s);
        }
        t
    }

    #[test]
    fn in_order_stream_is_complete() {
        let t = feed(&[0, 1, 2, 3, 4]);
        assert_eq!(t.progress(), 5);
        assert_eq!(t.unique(), 5);
        assert_eq!(t.missing(5), 0);
        assert_eq!(t.duplicates(), 0);
    }

    #[test]
    fn gaps_count_as_missing() {
        let mut t = StreamTracker::new();
        assert_eq!(t.record(0), Arrival::InOrder);
        assert_eq!(t.record(3), Arrival::Ahead { skipped: 2 });
        assert_eq!(t.record(4), Arrival::InOrder);
        assert_eq!(t.progress(), 5);
        assert_eq!(t.missing(5), 2);
        // The tail that never arrived is missing too.
        assert_eq!(t.missing(8), 5);
    }

    #[test]
    fn duplicates_are_counted_once_each() {
        let mut t = feed(&[0, 1, 2]);
        assert_eq!(t.record(1), Arrival::Duplicate);
        assert_eq!(t.record(2), Arrival::Duplicate);
        assert_eq!(t.record(3), Arrival::InOrder);
        assert_eq!(t.duplicates(), 2);
        assert_eq!(t.unique(), 4);
        assert_eq!(t.missing(4), 0);
    }

    #[test]
    fn late_message_fills_its_gap_and_is_not_a_duplicate() {
        let mut t = feed(&[0, 5]);
        assert_eq!(t.record(3), Arrival::Late);
        assert_eq!(t.record(1), Arrival::Late);
        assert_eq!(t.record(4), Arrival::Late);
        assert_eq!(t.record(2), Arrival::Late);
        assert_eq!(t.late(), 4);
        assert_eq!(t.missing(6), 0);
        // Now that the gap is closed, repeats are duplicates.
        assert_eq!(t.record(2), Arrival::Duplicate);
        assert_eq!(t.gaps.len(), 0);
    }

    #[test]
    fn gap_list_is_bounded_and_forgets_the_oldest() {
        let mut t = StreamTracker::new();
        // 0, 2, 4, ...: every odd number is a gap of one.
        for i in 0..(MAX_GAPS as u64 + 10) {
            t.record(i * 2);
        }
        assert_eq!(t.gaps.len(), MAX_GAPS);
        // Gap at 1 was forgotten: its arrival is taken for a duplicate.
        assert_eq!(t.record(1), Arrival::Duplicate);
        // A recent gap is still known.
        let recent = (MAX_GAPS as u64 + 8) * 2 + 1;
        assert_eq!(t.record(recent), Arrival::Late);
    }

    #[test]
    fn unexpected_counts_messages_beyond_what_was_published() {
        let t = feed(&[0, 1, 2]);
        assert_eq!(t.unexpected(2), 1);
        assert_eq!(t.unexpected(3), 0);
    }
}
