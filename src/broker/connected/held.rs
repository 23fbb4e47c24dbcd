//! Holding a publisher back (see `pressure`): while a subscriber its QoS 1/2 publish reached
//! is under pressure, the client's PUBLISH packets, and every packet whose order matters
//! relative to them, wait here; its acknowledgements and pings bypass the hold. Bounded per
//! connection: past [`HELD_LIMIT`] the socket is no longer read, unless the client may owe the
//! broker acknowledgements that sit behind what it published (see [`Held::reads_more`]): then
//! up to `--max-queued-bytes`, and within [`SHARD_HELD_LIMIT`] for the whole shard.

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;

use super::{CloseReason, ConnectedClient};
use crate::broker::mesh::SubscriberId;
use crate::broker::metrics::add;
use crate::protocol::{Packet, ReasonCode};

/// Packets a held-back publisher may have waiting (about, in bytes) before its socket is no
/// longer read: enough for thousands of small messages in flight, bounded per connection.
const HELD_LIMIT: usize = 512 * 1024;

/// What the held packets of all of a shard's connections may keep (about, in bytes) before a
/// connection past its own [`HELD_LIMIT`] is no longer read either.
const SHARD_HELD_LIMIT: usize = 256 * 1024 * 1024;

/// What the held packets of a shard's connections keep together (see [`SHARD_HELD_LIMIT`]).
pub(crate) type ShardHeldBytes = Rc<Cell<usize>>;

/// A publisher held back by a subscriber under pressure, and what it sent meanwhile.
pub(super) struct Held {
    /// The subscriber it waits for; None once relieved, while the packets are being handled.
    waiting_for: Option<SubscriberId>,
    /// Packets to handle once relieved, in the order they came.
    packets: VecDeque<Packet>,
    /// About how many bytes `packets` hold (see [`HELD_LIMIT`]).
    bytes: usize,
    /// The QoS 1/2 PUBLISH packets among them: each unacknowledged, so counted against an
    /// MQTT 5 client's Receive Maximum.
    unacked: usize,
    /// The client is gone: the packets are handled now, holding nothing back.
    closing: bool,
    /// The shard's total, which `bytes` is part of.
    shard_bytes: ShardHeldBytes,
    /// How much the connection may hold while it is owed acknowledgements: what its session
    /// may queue (`--max-queued-bytes`), so that one client cannot take the shard's whole limit.
    owed_limit: usize,
}

impl Held {
    pub(super) fn new(shard_bytes: ShardHeldBytes, owed_limit: usize) -> Self {
        Held {
            waiting_for: None,
            packets: VecDeque::new(),
            bytes: 0,
            unacked: 0,
            closing: false,
            shard_bytes,
            owed_limit,
        }
    }

    /// Whether the socket may be read for more (acknowledgements, and packets to hold).
    ///
    /// `owed_acks`: the broker has messages in flight to this client, so acknowledgements the
    /// broker needs may sit in the socket behind what it published. Then reading goes on past
    /// [`HELD_LIMIT`], up to its own and the shard's limits: two clients that publish to each
    /// other, both held back, would otherwise each wait for the acknowledgements the other's
    /// socket is no longer read for, until the stall timeout dropped messages.
    pub(super) fn reads_more(&self, owed_acks: bool) -> bool {
        self.bytes < HELD_LIMIT
            || (owed_acks
                && self.bytes < self.owed_limit
                && self.shard_bytes.get() < SHARD_HELD_LIMIT)
    }

    /// The subscriber under pressure the client waits for, if it still does.
    pub(super) fn waiting_for(&self) -> Option<SubscriberId> {
        self.waiting_for
    }

    /// Keeps `packet` for later, or hands it back when it bypasses the hold.
    pub(super) fn hold(&mut self, packet: Packet) -> Option<Packet> {
        if bypasses_hold(&packet) {
            return Some(packet);
        }
        self.add_bytes(held_size(&packet));
        self.unacked += usize::from(unacked(&packet));
        self.packets.push_back(packet);
        None
    }

    /// The QoS 1/2 PUBLISH packets held: none of them acknowledged yet.
    pub(super) fn unacked(&self) -> usize {
        self.unacked
    }

    /// The next packet held, no longer counted.
    fn pop(&mut self) -> Option<Packet> {
        let packet = self.packets.pop_front()?;
        let size = held_size(&packet);
        self.bytes -= size;
        self.unacked -= usize::from(unacked(&packet));
        self.shard_bytes.set(self.shard_bytes.get() - size);
        Some(packet)
    }

    fn add_bytes(&mut self, n: usize) {
        self.bytes += n;
        self.shard_bytes.set(self.shard_bytes.get() + n);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.shard_bytes.set(self.shard_bytes.get() - self.bytes);
    }
}

fn unacked(packet: &Packet) -> bool {
    matches!(packet, Packet::Publish(p) if p.qos != crate::protocol::QoS::AtMostOnce)
}

/// About the memory a held packet keeps: the packet itself, and a PUBLISH's topic and payload.
fn held_size(packet: &Packet) -> usize {
    std::mem::size_of::<Packet>()
        + match packet {
            Packet::Publish(p) => p.topic.len() + p.payload.len(),
            _ => 0,
        }
}

/// Packets handled at once even while the client's publishing is held back: they concern
/// what the broker sends to the client (and pings), not what it publishes, so their order
/// relative to its PUBLISH packets does not matter.
fn bypasses_hold(packet: &Packet) -> bool {
    matches!(
        packet,
        Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) | Packet::PingReq
    )
}

impl ConnectedClient {
    /// Handles the held packets once the subscriber they wait for is relieved, until one
    /// reaches a subscriber under pressure again.
    pub(super) fn handle_held(&mut self) -> Result<(), CloseReason> {
        loop {
            let Some(held) = &mut self.held else {
                return Ok(());
            };
            if let Some(id) = held.waiting_for {
                if self.shard.pressure.contains(&id) {
                    return Ok(());
                }
                held.waiting_for = None;
            }
            match held.pop() {
                Some(packet) => {
                    self.handle(packet)?;
                }
                None => {
                    self.held = None;
                    return Ok(());
                }
            }
        }
    }

    /// The client went away while its publishing was held back: what it sent before is
    /// handled now, as it would have been without the hold (it holds nobody back any more,
    /// and a DISCONNECT among it means no will). Returns why the connection ends.
    pub(super) fn handle_held_at_close(&mut self, reason: CloseReason) -> CloseReason {
        let Some(held) = &mut self.held else {
            return reason;
        };
        if !matches!(reason, CloseReason::Eof | CloseReason::Io(_)) {
            return reason;
        }
        held.closing = true;
        held.waiting_for = None;
        match self.handle_held() {
            Ok(()) => reason,
            Err(ended) => ended,
        }
    }

    /// MQTT 5: a client may have at most the Receive Maximum the broker gave it of QoS 1/2
    /// PUBLISH packets unacknowledged, and the held ones are (MQTT-3.3.4-9); one that sends
    /// more while held back is disconnected with 0x93, as it would be otherwise. (This also
    /// bounds what a held MQTT 5 client can make the broker keep.)
    pub(super) fn check_receive_maximum(&self) -> Result<(), CloseReason> {
        let (Some(v5), Some(held)) = (&self.v5, &self.held) else {
            return Ok(());
        };
        let (unacknowledged, _) = self.unacknowledged_in(0);
        if held.unacked() + unacknowledged > v5.receive_maximum {
            return Err(CloseReason::Violation5(
                ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                "more unacknowledged QoS 1/2 PUBLISHes than the Receive Maximum, held back (MQTT-3.3.4-9)",
            ));
        }
        Ok(())
    }

    /// The client's QoS 1/2 PUBLISHes handled and not acknowledged yet: its incoming QoS 2
    /// packet ids, and acknowledgements waiting (for the disk, for the other nodes); and
    /// whether `packet_id` is one of those QoS 2 ids already (a repeat, counted once).
    pub(super) fn unacknowledged_in(&self, packet_id: u16) -> (usize, bool) {
        let (qos2, known) = self.session.borrow().incoming_qos2(packet_id);
        let waiting = self.acks.as_ref().map_or(0, |a| a.len());
        (qos2 + waiting, known)
    }

    /// Holds the client's publishing back until `subscriber` is relieved.
    pub(super) fn wait_for(&mut self, subscriber: SubscriberId) {
        let held = self.held.get_or_insert_with(|| {
            let owed_limit = self.shard.config.max_queued_bytes;
            Box::new(Held::new(self.shard.held_bytes.clone(), owed_limit))
        });
        if !held.closing {
            add(&self.shard.metrics.publishers_paused, 1);
            held.waiting_for = Some(subscriber);
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::protocol::{Ack, ByteStr, Publish, QoS};

    fn publish(payload_len: usize) -> Packet {
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: ByteStr::from("t"),
            packet_id: 1,
            payload: Bytes::from(vec![0; payload_len]),
            properties: None,
        })
    }

    #[test]
    fn a_connection_owed_acks_is_read_past_its_own_limit_within_the_shards() {
        let shard = ShardHeldBytes::default();
        const OWED: usize = 4 * HELD_LIMIT;
        let mut a = Held::new(shard.clone(), OWED);
        assert!(a.hold(publish(HELD_LIMIT)).is_none());
        assert!(!a.reads_more(false), "past its own limit");
        assert!(a.reads_more(true), "owed acknowledgements: read on");
        assert!(a.hold(publish(OWED)).is_none());
        assert!(!a.reads_more(true), "up to what its session may queue");
        assert!(matches!(a.pop(), Some(Packet::Publish(_))));
        assert!(matches!(a.pop(), Some(Packet::Publish(_))));
        assert!(a.hold(publish(HELD_LIMIT)).is_none());
        // Acknowledgements bypass the hold, and are not counted.
        let ack = Packet::PubAck(Ack::new(7));
        assert_eq!(a.hold(ack.clone()), Some(ack));

        // Another connection fills the shard's limit: now neither reads past its own.
        let mut b = Held::new(shard.clone(), usize::MAX);
        assert!(b.hold(publish(SHARD_HELD_LIMIT)).is_none());
        assert!(!a.reads_more(true) && !b.reads_more(true));

        // What is handled, or dropped with its connection, no longer counts.
        assert!(matches!(b.pop(), Some(Packet::Publish(_))));
        assert!(a.reads_more(true));
        assert!(b.hold(publish(SHARD_HELD_LIMIT)).is_none());
        drop(b);
        assert!(a.reads_more(true));
        drop(a);
        assert_eq!(shard.get(), 0);
    }
}
