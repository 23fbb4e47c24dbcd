//! At least once between nodes for QoS 1 and 2 messages. NATS core delivers at most once: a
//! NATS server that dies loses what was on its way through it, and while a node reconnects to
//! another server its subscriptions are missing from the cluster, so what is published
//! meanwhile reaches it nowhere. So a node that gets a QoS 1/2 message from another node
//! acknowledges it to the origin (`$SMQ.ack.<origin>`: sequence ranges, batched, sent once a
//! shard has handled the message: `node::handled`), and the origin keeps each such message it
//! sent, with the nodes whose interest it matched, until each of them has acknowledged it
//! ([`Unconfirmed`]); its publisher's PUBACK waits for that (`marks`).
//!
//! The origin sends a message again, straight to the node that lacks it (`$SMQ.to.<node>`),
//! when that node acknowledges a message sent after it (NATS keeps the order of one
//! connection's messages to another, so the earlier one was lost), or when the node has
//! acknowledged nothing for [`RESEND_AFTER`] since it was sent (lost with nothing after it,
//! or the node is away). A node that no longer wants the topic is not waited for. The
//! receiver's de-duplication (`dedupe`) makes a copy that did arrive harmless.
//!
//! A shared subscription group's copy goes to one node of the group, the one NATS picks: it is
//! waited for as one more "node", a group slot ([`GROUP_SLOTS`] and up), which any node's
//! acknowledgement for that group settles. Nodes of a group keep no order among each other, so
//! a group's copy is sent again only after [`GROUP_RESEND_AFTER`] without one, to one node
//! with a member (or this node's own); a copy that was merely slow then reaches the group twice.
//!
//! Bounded: [`CAPACITY`] messages; to make room the oldest is given up on, and counted if a
//! node still waited for it. Pure: no NATS client here.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use smallvec::SmallVec;

use crate::broker::mesh::Message;

/// Messages kept for acknowledgement at most.
pub const CAPACITY: usize = 65_536;
/// How long a node may acknowledge nothing before what it lacks is sent to it again.
pub const RESEND_AFTER: Duration = Duration::from_secs(1);
/// How long a shared subscription group's copy may go unacknowledged before it is sent again.
pub const GROUP_RESEND_AFTER: Duration = Duration::from_secs(2);
/// Slots from here on are shared subscription groups, not nodes.
pub const GROUP_SLOTS: u16 = 0x8000;
/// How often the origin looks for what to send again.
pub const CHECK_EVERY: Duration = Duration::from_millis(50);
/// How long a receiver gathers acknowledgements before it sends them.
pub const ACK_EVERY: Duration = Duration::from_millis(1);
/// Acknowledgements owed that are sent at once, without waiting for [`ACK_EVERY`].
pub const ACK_BATCH: usize = 128;
/// Messages sent again per check at most, so a node that comes back is not flooded.
pub const RESEND_BATCH: usize = 8192;
/// How long a node may be silent (no acknowledgement, no interest heartbeat, which comes
/// every `interest::HEARTBEAT`) and still hold back the publishers of what it has not
/// acknowledged (see `marks`): a node that died holds them that long, not until it is
/// forgotten (`interest::EXPIRY`). What it lacks is still sent again while it is known.
pub const SILENT_AFTER: Duration = Duration::from_secs(5);
/// How long a node waited for may be silent before its origin asks NATS whether it is still
/// there (`node::acks`: a request to `$SMQ.alive.<node>`; no responders means the node's
/// connection, and with it its subscriptions, is gone: it died, or lost its NATS server).
/// A node gone so holds publishers back about this long, not [`SILENT_AFTER`].
pub const PROBE_AFTER: Duration = Duration::from_millis(300);
/// How often one node is asked at most.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Unacknowledged messages looked at, at most, for the nodes to ask about.
const PROBE_SCAN: usize = 1024;
/// How long a shared subscription group's copy holds back its publisher at most (its node
/// may have died with it; it is sent again after [`GROUP_RESEND_AFTER`]).
pub const GROUP_HOLD: Duration = Duration::from_secs(5);

/// Nodes, by their index in the interest picture.
pub type Nodes = SmallVec<[u16; 4]>;

/// A message sent to other nodes that some of them have not acknowledged yet.
pub struct Pending {
    pub seq: u64,
    pub message: Arc<Message>,
    pub key: u64,
    /// The nodes that have not acknowledged it.
    waiting: Nodes,
    /// The last sequence number this node had used when it was (last) sent: an
    /// acknowledgement of a later one, from a node it waits for, proves it lost there.
    mark: u64,
    sent: Instant,
    /// When it was sent first.
    first_sent: Instant,
}

/// What one node has acknowledged.
struct Heard {
    highest: u64,
    /// When it last acknowledged something.
    at: Instant,
    /// When it last showed it was there: an acknowledgement, or its interest heartbeat.
    alive: Instant,
    /// NATS said no one listens on its subject since (see [`PROBE_AFTER`]).
    gone: bool,
    /// When it was last asked about.
    probed: Option<Instant>,
}

impl Heard {
    fn new(now: Instant) -> Heard {
        Heard {
            highest: 0,
            at: now,
            alive: now,
            gone: false,
            probed: None,
        }
    }

    /// It showed it is there.
    fn alive(&mut self, now: Instant) {
        self.alive = now;
        self.gone = false;
    }
}

/// The messages this node sent that other nodes must still acknowledge, oldest first.
pub struct Unconfirmed {
    entries: VecDeque<Pending>,
    heard: AHashMap<u16, Heard>,
    capacity: usize,
}

/// One message to send again, to these nodes.
pub struct Resend {
    pub seq: u64,
    pub message: Arc<Message>,
    pub key: u64,
    pub to: Nodes,
}

impl Unconfirmed {
    pub fn new(capacity: usize) -> Unconfirmed {
        Unconfirmed {
            entries: VecDeque::new(),
            heard: AHashMap::new(),
            capacity: capacity.max(1),
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a node (or group) has not acknowledged the message sent as `seq` yet.
    pub fn waits_for(&self, seq: u64) -> bool {
        let i = self.entries.partition_point(|p| p.seq < seq);
        self.entries
            .get(i)
            .is_some_and(|p| p.seq == seq && !p.waiting.is_empty())
    }

    /// `node` showed it is there (its interest heartbeat, or it just joined).
    pub fn alive(&mut self, node: u16, now: Instant) {
        self.heard
            .entry(node)
            .or_insert_with(|| Heard::new(now))
            .alive(now);
    }

    /// The nodes to ask whether they are still there: waited for by a message sent first
    /// more than [`PROBE_AFTER`] ago, silent that long, not known to be gone, and not asked
    /// within [`PROBE_EVERY`] (each is noted as asked now).
    pub fn to_probe(&mut self, now: Instant) -> Nodes {
        let mut nodes = Nodes::new();
        for p in self.entries.iter().take(PROBE_SCAN) {
            if now.duration_since(p.first_sent) < PROBE_AFTER {
                break;
            }
            for &n in &p.waiting {
                if n < GROUP_SLOTS && !nodes.contains(&n) {
                    nodes.push(n);
                }
            }
        }
        nodes.retain(|n| match self.heard.get_mut(n) {
            Some(h)
                if !h.gone
                    && now.duration_since(h.alive) >= PROBE_AFTER
                    && h.probed
                        .is_none_or(|at| now.duration_since(at) >= PROBE_EVERY) =>
            {
                h.probed = Some(now);
                true
            }
            _ => false,
        });
        nodes
    }

    /// NATS says no one listens on `node`'s subject: it holds no publisher back until it is
    /// heard from again. What it lacks is still sent again while it is known.
    pub fn gone(&mut self, node: u16) {
        if let Some(h) = self.heard.get_mut(&node) {
            h.gone = true;
        }
    }

    /// Whether the publisher of the message sent as `seq` still waits for a node (or group)
    /// to acknowledge it: one that has not, has been heard from within [`SILENT_AFTER`] and
    /// is not known to be gone (a group: for [`GROUP_HOLD`] after the message first went out).
    pub fn holds(&self, seq: u64, now: Instant) -> bool {
        let i = self.entries.partition_point(|p| p.seq < seq);
        let Some(p) = self.entries.get(i).filter(|p| p.seq == seq) else {
            return false;
        };
        p.waiting.iter().any(|n| {
            if *n >= GROUP_SLOTS {
                return now.duration_since(p.first_sent) < GROUP_HOLD;
            }
            self.heard
                .get(n)
                .is_some_and(|h| !h.gone && now.duration_since(h.alive) < SILENT_AFTER)
        })
    }

    /// Keeps `message`, just sent as `seq` (larger than any before), until `waiting`
    /// acknowledge it. Returns how many nodes an older message was given up on for, to make
    /// room (0 when none was).
    pub fn push(
        &mut self,
        seq: u64,
        message: Arc<Message>,
        key: u64,
        waiting: Nodes,
        now: Instant,
    ) -> usize {
        let mut given_up = 0;
        if self.entries.len() >= self.capacity {
            if let Some(old) = self.entries.pop_front() {
                given_up = old.waiting.len();
            }
            self.trim();
        }
        if !waiting.is_empty() {
            self.entries.push_back(Pending {
                seq,
                message,
                key,
                waiting,
                mark: seq,
                sent: now,
                first_sent: now,
            });
        }
        given_up
    }

    /// `node` acknowledged these ranges of sequence numbers (inclusive).
    pub fn ack(&mut self, node: u16, ranges: &[(u64, u64)], now: Instant) {
        let mut highest = 0;
        for &(start, end) in ranges {
            highest = highest.max(end);
            let from = self.entries.partition_point(|p| p.seq < start);
            for p in self.entries.range_mut(from..) {
                if p.seq > end {
                    break;
                }
                p.waiting.retain(|n| *n != node);
            }
        }
        let heard = self.heard.entry(node).or_insert_with(|| Heard::new(now));
        heard.highest = heard.highest.max(highest);
        heard.at = now;
        heard.alive(now);
        self.trim();
    }

    /// The node at `index` is another one now (or gone): what it acknowledged says nothing
    /// of the new one, and nothing waits for the old one any more.
    pub fn forget(&mut self, node: u16) {
        self.heard.remove(&node);
        for p in &mut self.entries {
            p.waiting.retain(|n| *n != node);
        }
        self.trim();
    }

    /// What to send again now, and to whom (at most `max` messages); `last_seq` is the last
    /// sequence number used so far, and `wants(message)` the nodes that want it now.
    pub fn due(
        &mut self,
        now: Instant,
        last_seq: u64,
        max: usize,
        mut wants: impl FnMut(&Message) -> Nodes,
    ) -> Vec<Resend> {
        let mut due = Vec::new();
        for p in &mut self.entries {
            if due.len() >= max {
                break;
            }
            if p.waiting.is_empty() {
                continue;
            }
            let heard = &self.heard;
            let lost = |node: &u16| match heard.get(node) {
                _ if *node >= GROUP_SLOTS => now.duration_since(p.sent) >= GROUP_RESEND_AFTER,
                Some(h) if h.highest > p.mark => true,
                Some(h) => {
                    now.duration_since(p.sent) >= RESEND_AFTER
                        && now.duration_since(h.at) >= RESEND_AFTER
                }
                None => now.duration_since(p.sent) >= RESEND_AFTER,
            };
            if !p.waiting.iter().any(lost) {
                continue;
            }
            let current = wants(&p.message);
            p.waiting.retain(|n| current.contains(n));
            let to: Nodes = p.waiting.iter().copied().filter(lost).collect();
            if to.is_empty() {
                continue;
            }
            p.mark = last_seq;
            p.sent = now;
            due.push(Resend {
                seq: p.seq,
                message: p.message.clone(),
                key: p.key,
                to,
            });
        }
        self.trim();
        due
    }

    /// Drops acknowledged messages from the front.
    fn trim(&mut self) {
        while self.entries.front().is_some_and(|p| p.waiting.is_empty()) {
            self.entries.pop_front();
        }
    }
}

/// Sequence numbers as ranges, `1-5,7,9-12`, sorted and without repeats.
pub fn encode_ranges(seqs: &mut Vec<u64>) -> String {
    seqs.sort_unstable();
    seqs.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < seqs.len() {
        let start = seqs[i];
        let mut end = start;
        while i + 1 < seqs.len() && seqs[i + 1] == end + 1 {
            i += 1;
            end = seqs[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        let _ = if start == end {
            write!(out, "{start}")
        } else {
            write!(out, "{start}-{end}")
        };
        i += 1;
    }
    out
}

/// Reads [`encode_ranges`] back as inclusive ranges; None if malformed.
pub fn decode_ranges(text: &str) -> Option<Vec<(u64, u64)>> {
    let mut ranges = Vec::new();
    if text.is_empty() {
        return Some(ranges);
    }
    for part in text.split(',') {
        let (start, end) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u64>().ok()?, b.parse::<u64>().ok()?),
            None => {
                let n = part.parse().ok()?;
                (n, n)
            }
        };
        if end < start {
            return None;
        }
        ranges.push((start, end));
    }
    Some(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ByteStr, QoS};
    use bytes::Bytes;
    use smallvec::smallvec;

    fn msg(topic: &str) -> Arc<Message> {
        Arc::new(Message::new(
            ByteStr::from(topic),
            Bytes::from_static(b"x"),
            QoS::AtLeastOnce,
            false,
        ))
    }

    fn seqs(due: &[Resend]) -> Vec<(u64, Vec<u16>)> {
        due.iter().map(|r| (r.seq, r.to.to_vec())).collect()
    }

    fn all(_: &Message) -> Nodes {
        smallvec![1, 2]
    }

    #[test]
    fn ranges_read_back_and_refuse_what_is_malformed() {
        let mut s = vec![9, 1, 2, 3, 7, 10, 3, 12];
        let text = encode_ranges(&mut s);
        assert_eq!(text, "1-3,7,9-10,12");
        assert_eq!(
            decode_ranges(&text),
            Some(vec![(1, 3), (7, 7), (9, 10), (12, 12)])
        );
        assert_eq!(decode_ranges(""), Some(vec![]));
        assert_eq!(decode_ranges("5-3"), None);
        assert_eq!(decode_ranges("a"), None);
        assert_eq!(decode_ranges("1-"), None);
        // A huge range costs nothing: it is walked over what is kept, not expanded.
        assert_eq!(
            decode_ranges(&format!("0-{}", u64::MAX)),
            Some(vec![(0, u64::MAX)])
        );
    }

    #[test]
    fn a_message_is_kept_until_every_node_it_went_to_acknowledged_it() {
        let t = Instant::now();
        let mut u = Unconfirmed::new(16);
        u.push(1, msg("a"), 0, smallvec![1, 2], t);
        u.push(2, msg("a"), 0, smallvec![1], t);
        u.push(3, msg("a"), 0, smallvec![], t);
        assert_eq!(u.len(), 2, "nothing waits for 3");
        u.ack(1, &[(1, 1), (2, 2)], t);
        assert!(!u.is_empty(), "1 waits for node 2 still");
        let later = t + RESEND_AFTER;
        assert_eq!(seqs(&u.due(later, 3, 100, all)), [(1, vec![2])]);
        u.ack(2, &[(1, 1)], t);
        assert!(u.is_empty());
    }

    #[test]
    fn a_later_acknowledgement_sends_the_lost_message_again_at_once_and_only_to_its_node() {
        let t = Instant::now();
        let mut u = Unconfirmed::new(16);
        for seq in 1..=3 {
            u.push(seq, msg("a"), 0, smallvec![1, 2], t);
        }
        // Node 1 got 1 and 3, not 2; node 2 is merely behind (acknowledged 1 only).
        u.ack(1, &[(1, 1), (3, 3)], t);
        u.ack(2, &[(1, 1)], t);
        let due = u.due(t, 3, 100, all);
        assert_eq!(seqs(&due), [(2, vec![1])]);
        // Not again while the copy is on its way: node 1 acknowledges nothing later than it.
        assert!(u.due(t, 3, 100, all).is_empty());
        // A message sent after the copy, acknowledged without it: lost again.
        u.push(4, msg("a"), 0, smallvec![1], t);
        u.ack(1, &[(4, 4)], t);
        assert_eq!(seqs(&u.due(t, 4, 100, all)), [(2, vec![1])]);
        u.ack(1, &[(2, 2)], t);
        assert!(u.due(t, 4, 100, all).is_empty());
    }

    #[test]
    fn a_node_silent_for_a_while_gets_what_it_lacks_again_and_one_that_acknowledges_waits() {
        let t = Instant::now();
        let mut u = Unconfirmed::new(16);
        u.push(1, msg("a"), 0, smallvec![1, 2], t);
        u.push(2, msg("a"), 0, smallvec![1, 2], t);
        assert!(u.due(t + RESEND_AFTER / 2, 2, 100, all).is_empty());
        // Node 2 keeps acknowledging (it is slow, not deaf), node 1 is silent.
        u.ack(2, &[(1, 1)], t + RESEND_AFTER / 2);
        let later = t + RESEND_AFTER + Duration::from_millis(1);
        assert_eq!(
            seqs(&u.due(later, 2, 100, all)),
            [(1, vec![1]), (2, vec![1])]
        );
        // Sent again: the clock starts anew.
        assert!(u.due(later, 2, 100, all).is_empty());
        assert_eq!(
            u.due(later + RESEND_AFTER, 2, 1, all).len(),
            1,
            "at most max"
        );
    }

    #[test]
    fn a_node_silent_past_the_probe_time_is_asked_about_once_a_while_and_gone_holds_nobody() {
        let t = Instant::now();
        let mut u = Unconfirmed::new(16);
        u.alive(1, t);
        u.alive(2, t);
        u.push(1, msg("a"), 0, smallvec![1, 2], t);
        assert!(u.to_probe(t + PROBE_AFTER / 2).is_empty(), "too soon");
        // Node 2 acknowledges; node 1 stays silent.
        u.ack(2, &[(1, 1)], t + PROBE_AFTER / 2);
        let later = t + PROBE_AFTER;
        assert_eq!(u.to_probe(later).as_slice(), [1]);
        assert!(u.to_probe(later).is_empty(), "asked already");
        assert_eq!(u.to_probe(later + PROBE_EVERY).as_slice(), [1]);
        assert!(u.holds(1, later));
        u.gone(1);
        assert!(!u.holds(1, later), "a node gone holds nobody");
        assert!(u.to_probe(later + 2 * PROBE_EVERY).is_empty(), "known gone");
        // Heard from again (its heartbeat): it holds the publisher again.
        u.alive(1, later);
        assert!(u.holds(1, later));
    }

    #[test]
    fn a_node_that_stopped_wanting_the_topic_or_left_is_not_waited_for() {
        let t = Instant::now();
        let mut u = Unconfirmed::new(16);
        u.push(1, msg("a"), 0, smallvec![1, 2], t);
        u.push(2, msg("b"), 0, smallvec![1, 2], t);
        let later = t + RESEND_AFTER;
        let due = u.due(later, 2, 100, |m| {
            if &*m.topic == "a" {
                smallvec![2]
            } else {
                smallvec![]
            }
        });
        assert_eq!(seqs(&due), [(1, vec![2])]);
        u.forget(2);
        assert!(u.is_empty());
    }

    #[test]
    fn a_groups_copy_is_sent_again_only_after_a_while_whatever_else_was_acknowledged() {
        let t = Instant::now();
        let g = GROUP_SLOTS + 3;
        let mut u = Unconfirmed::new(16);
        u.push(1, msg("a"), 0, smallvec![g], t);
        u.push(2, msg("a"), 0, smallvec![g], t);
        // The group's later copy was acknowledged (by another node of it): no proof of loss.
        u.ack(g, &[(2, 2)], t);
        let groups = |_: &Message| -> Nodes { smallvec![g] };
        assert!(u.due(t + RESEND_AFTER, 2, 100, groups).is_empty());
        assert_eq!(
            seqs(&u.due(t + GROUP_RESEND_AFTER, 2, 100, groups)),
            [(1, vec![g])]
        );
        u.ack(g, &[(1, 1)], t);
        assert!(u.is_empty());
    }

    #[test]
    fn it_is_bounded_and_says_what_it_gave_up_on() {
        let t = Instant::now();
        let mut u = Unconfirmed::new(2);
        assert_eq!(u.push(1, msg("a"), 0, smallvec![1, 2], t), 0);
        assert_eq!(u.push(2, msg("a"), 0, smallvec![1], t), 0);
        assert_eq!(u.push(3, msg("a"), 0, smallvec![1], t), 2);
        assert_eq!(u.len(), 2);
        u.ack(1, &[(2, 2), (3, 3)], t);
        assert!(u.is_empty());
    }

    #[test]
    fn a_publisher_waits_for_nodes_heard_from_lately_and_for_a_group_a_while() {
        let t = Instant::now();
        let g = GROUP_SLOTS;
        let mut u = Unconfirmed::new(16);
        u.alive(1, t);
        u.alive(2, t);
        u.push(1, msg("a"), 0, smallvec![1, 2], t);
        u.push(2, msg("a"), 0, smallvec![g], t);
        u.push(3, msg("a"), 0, smallvec![7], t);
        assert!(u.holds(1, t) && u.holds(2, t));
        assert!(!u.holds(3, t), "node 7 was never heard from");
        assert!(!u.holds(9, t), "not kept");
        u.ack(1, &[(1, 1)], t);
        assert!(u.holds(1, t), "node 2 has not acknowledged it");
        // Node 2 falls silent; node 1 keeps acknowledging other things.
        let later = t + SILENT_AFTER;
        u.ack(1, &[(5, 5)], later);
        assert!(!u.holds(1, later), "only a silent node waits");
        u.alive(2, later);
        assert!(u.holds(1, later), "its heartbeat came");
        assert!(u.holds(2, t + GROUP_HOLD - Duration::from_millis(1)));
        assert!(!u.holds(2, t + GROUP_HOLD));
    }
}
