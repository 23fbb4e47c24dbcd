//! Holding a publisher back (see `pressure`): while a subscriber its QoS 1/2 publish reached
//! is under pressure, the client's PUBLISH packets, and every packet whose order matters
//! relative to them, wait here; its acknowledgements and pings bypass the hold. Bounded per
//! connection: past [`HELD_LIMIT`] the socket is no longer read.

use std::collections::VecDeque;

use super::{CloseReason, ConnectedClient};
use crate::broker::mesh::SubscriberId;
use crate::broker::metrics::add;
use crate::protocol::Packet;

/// Packets a held-back publisher may have waiting (about, in bytes) before its socket is no
/// longer read: enough for thousands of small messages in flight, bounded per connection.
const HELD_LIMIT: usize = 512 * 1024;

/// A publisher held back by a subscriber under pressure, and what it sent meanwhile.
#[derive(Default)]
pub(super) struct Held {
    /// The subscriber it waits for; None once relieved, while the packets are being handled.
    waiting_for: Option<SubscriberId>,
    /// Packets to handle once relieved, in the order they came.
    packets: VecDeque<Packet>,
    /// About how many bytes `packets` hold (see [`HELD_LIMIT`]).
    bytes: usize,
    /// The client is gone: the packets are handled now, holding nothing back.
    closing: bool,
}

impl Held {
    /// Whether the socket may be read for more (acknowledgements, and packets to hold).
    pub(super) fn reads_more(&self) -> bool {
        self.bytes < HELD_LIMIT
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
        self.bytes += held_size(&packet);
        self.packets.push_back(packet);
        None
    }
}

/// About the memory a held packet keeps: its topic and payload, or a small constant.
fn held_size(packet: &Packet) -> usize {
    match packet {
        Packet::Publish(p) => p.topic.len() + p.payload.len() + 16,
        _ => 64,
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
            match held.packets.pop_front() {
                Some(packet) => {
                    held.bytes -= held_size(&packet);
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

    /// Holds the client's publishing back until `subscriber` is relieved.
    pub(super) fn wait_for(&mut self, subscriber: SubscriberId) {
        let held = self.held.get_or_insert_with(Box::default);
        if !held.closing {
            add(&self.shard.metrics.publishers_paused, 1);
            held.waiting_for = Some(subscriber);
        }
    }
}
