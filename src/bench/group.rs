//! Counting for the `shared` scenario, where a group of subscribers shares one subscription and
//! each message must reach exactly one member.
//!
//! A member sees only part of each publisher's stream (which part is the broker's choice:
//! round-robin, random, by topic...), so the gap tracking of [`super::tracker`] does not apply:
//! every message another member got would look like a gap. Instead each member keeps, per
//! publisher, the set of sequence numbers it received ([`SeqSet`], one bit per message). At
//! the end the sets of all members are merged ([`tally`]): a message in no set is missing, one
//! in two sets (or twice in one) is duplicated, and each member's share of the messages is its
//! count over the group's ([`shares`]).

use super::tracker::Arrival;

/// The sequence numbers of one publisher's messages that one member received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqSet {
    /// Bit `seq % 64` of word `seq / 64`: message `seq` arrived.
    bits: Vec<u64>,
    /// Sequence number after the highest one seen.
    next: u64,
    /// Distinct messages received.
    unique: u64,
    /// Arrivals of a message already in the set.
    duplicates: u64,
    /// Arrivals below the highest sequence seen so far: the broker delivered this publisher's
    /// messages to this member out of order (MQTT 4.6 keeps the order per subscription).
    late: u64,
}

impl SeqSet {
    pub fn new() -> Self {
        Self::default()
    }

    #[inline]
    pub fn record(&mut self, seq: u64) -> Arrival {
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if word >= self.bits.len() {
            // Grows with what was published: 1 bit per message, 125 KB per million.
            self.bits.resize((word + 1).next_power_of_two(), 0);
        }
        if self.bits[word] & bit != 0 {
            self.duplicates += 1;
            return Arrival::Duplicate;
        }
        self.bits[word] |= bit;
        self.unique += 1;
        if seq >= self.next {
            let skipped = seq - self.next;
            self.next = seq + 1;
            match skipped {
                0 => Arrival::InOrder,
                _ => Arrival::Ahead { skipped },
            }
        } else {
            self.late += 1;
            Arrival::Late
        }
    }

    pub fn contains(&self, seq: u64) -> bool {
        self.bits
            .get((seq / 64) as usize)
            .is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }

    /// Sequence number after the highest one received (0 before any).
    #[inline]
    pub fn progress(&self) -> u64 {
        self.next
    }

    #[inline]
    pub fn unique(&self) -> u64 {
        self.unique
    }
}

/// What the subscribers received, over all of them and all publishers (for a group: what the
/// group received).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Distinct messages received (of those published).
    pub delivered: u64,
    /// Published messages no member received.
    pub missing: u64,
    /// Arrivals beyond the first of a message, in one member or across members.
    pub duplicated: u64,
    /// Arrivals out of order within one member's part of a stream.
    pub reordered: u64,
    /// Sequence numbers beyond what the publisher says it sent.
    pub foreign: u64,
    /// A group: messages each member received (its distinct ones), by member.
    pub per_member: Vec<u64>,
}

/// Merges the members' sets: `members[m][p]` is what member m received from publisher p, of the
/// `sent[p]` messages p sent.
pub fn tally(sent: &[u64], members: &[&[SeqSet]]) -> Tally {
    let mut t = Tally {
        per_member: members
            .iter()
            .map(|sets| sets.iter().map(SeqSet::unique).sum())
            .collect(),
        ..Default::default()
    };
    for (p, &n) in sent.iter().enumerate() {
        let sets: Vec<&SeqSet> = members.iter().filter_map(|m| m.get(p)).collect();
        let union = count_union(&sets, n);
        let mut received = 0;
        for set in &sets {
            let own = count_below(set, n);
            received += own;
            t.duplicated += set.duplicates;
            t.reordered += set.late;
            t.foreign += set.unique() - own;
        }
        t.delivered += union;
        t.missing += n - union;
        // Each message in k > 1 members' sets counts k - 1 times.
        t.duplicated += received - union;
    }
    t
}

/// Each member's share of the group's messages, in percent, by member: its count over the sum
/// of all counts (duplicates included, so the shares add up to 100). `None` when the group
/// received nothing.
pub fn shares(per_member: &[u64]) -> Option<Vec<f64>> {
    let total: u64 = per_member.iter().sum();
    (total > 0).then(|| {
        per_member
            .iter()
            .map(|&n| n as f64 * 100.0 / total as f64)
            .collect()
    })
}

/// The smallest and the largest share; `None` when the group received nothing.
pub fn share_range(per_member: &[u64]) -> Option<(f64, f64)> {
    let shares = shares(per_member)?;
    let min = shares.iter().copied().fold(f64::INFINITY, f64::min);
    let max = shares.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some((min, max))
}

/// The bits of word `w` that stand for messages below `n`.
fn valid_bits(w: usize, n: u64) -> u64 {
    match n.saturating_sub(w as u64 * 64) {
        r if r >= 64 => u64::MAX,
        r => (1u64 << r) - 1,
    }
}

/// Distinct messages below `n` in one set.
fn count_below(set: &SeqSet, n: u64) -> u64 {
    set.bits
        .iter()
        .enumerate()
        .map(|(w, bits)| u64::from((bits & valid_bits(w, n)).count_ones()))
        .sum()
}

/// Distinct messages below `n` in the union of the sets.
fn count_union(sets: &[&SeqSet], n: u64) -> u64 {
    (0..n.div_ceil(64) as usize)
        .map(|w| {
            let any = sets
                .iter()
                .fold(0, |a, s| a | s.bits.get(w).copied().unwrap_or(0));
            u64::from((any & valid_bits(w, n)).count_ones())
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(seqs: impl IntoIterator<Item = u64>) -> SeqSet {
        let mut s = SeqSet::new();
        for seq in seqs {
            s.record(seq);
        }
        s
    }

    #[test]
    fn a_set_counts_distinct_late_and_repeated_arrivals() {
        let mut s = SeqSet::new();
        assert_eq!(s.record(0), Arrival::InOrder);
        assert_eq!(s.record(4), Arrival::Ahead { skipped: 3 });
        assert_eq!(s.record(200), Arrival::Ahead { skipped: 195 });
        assert_eq!(s.record(2), Arrival::Late);
        assert_eq!(s.record(4), Arrival::Duplicate);
        assert_eq!((s.unique(), s.duplicates, s.late), (4, 1, 1));
        assert_eq!(s.progress(), 201);
        assert!(s.contains(200) && s.contains(2) && !s.contains(3) && !s.contains(10_000));
    }

    #[test]
    fn round_robin_over_a_group_is_complete_and_even() {
        // 2 publishers x 1000 messages, dealt round-robin to 4 members.
        let sent = [1000u64, 1000];
        let members: Vec<Vec<SeqSet>> = (0..4u64)
            .map(|m| {
                (0..2)
                    .map(|_| set((0..1000).filter(|seq| seq % 4 == m)))
                    .collect()
            })
            .collect();
        let views: Vec<&[SeqSet]> = members.iter().map(Vec::as_slice).collect();
        let t = tally(&sent, &views);
        assert_eq!((t.delivered, t.missing, t.duplicated), (2000, 0, 0));
        assert_eq!((t.reordered, t.foreign), (0, 0));
        assert_eq!(t.per_member, vec![500; 4]);
        assert_eq!(share_range(&t.per_member), Some((25.0, 25.0)));
    }

    #[test]
    fn missing_duplicated_and_foreign_messages_across_members() {
        // Publisher 0 sent 130: member 0 has 0..100 (and 5 twice), member 1 has 90..120 and
        // 135 (never sent); 120..130 reached nobody.
        let mut a = set(0..100);
        a.record(5);
        let b = set((90..120).chain([135]));
        let members = [vec![a], vec![b]];
        let views: Vec<&[SeqSet]> = members.iter().map(Vec::as_slice).collect();
        let t = tally(&[130], &views);
        assert_eq!(t.delivered, 120);
        assert_eq!(t.missing, 10);
        // 5 twice in member 0, 90..100 in both members.
        assert_eq!(t.duplicated, 1 + 10);
        assert_eq!(t.foreign, 1);
        assert_eq!(t.per_member, vec![100, 31]);
        // A member that reported nothing: its messages are simply not in the union.
        let t = tally(&[130], &views[..1]);
        assert_eq!((t.delivered, t.missing, t.duplicated), (100, 30, 1));
    }

    #[test]
    fn shares_are_percentages_of_what_the_group_received() {
        assert_eq!(shares(&[]), None);
        assert_eq!(shares(&[0, 0]), None);
        assert_eq!(shares(&[1, 3]), Some(vec![25.0, 75.0]));
        let (min, max) = share_range(&[150, 350, 250, 250]).unwrap();
        assert_eq!((min, max), (15.0, 35.0));
        // A member that got nothing has a share of 0.
        assert_eq!(share_range(&[0, 10, 10]), Some((0.0, 50.0)));
    }
}
