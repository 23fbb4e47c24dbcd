//! Acknowledgements that wait for the disk (with `--data-dir`): a PUBACK/PUBREC until what
//! the publish wrote is durable, a PUBREL until the PUBREC it answers is. They leave in the
//! order their packets came (MQTT-4.6.0-2, -3), so one that waits holds back those behind it,
//! even if theirs are ready.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Context;

use crate::broker::durability::Ticket;
use crate::broker::qos2_gate::Qos2Gate;
use crate::broker::shard::Shard;
use crate::protocol::{encode_ack_reason, PacketId, PacketType, ReasonCode};

/// Acknowledgements waiting beyond which the connection stops reading: a client that
/// publishes without waiting for its acknowledgements must not queue them without bound.
pub const MAX_WAITING: usize = 65_536;

/// An acknowledgement waiting: what it is, what must be durable first, and for a PUBREC of
/// a persistent session's QoS 2 PUBLISH the gate its acceptance opens (see `qos2_gate`).
type Waiting = (
    PacketType,
    PacketId,
    ReasonCode,
    Ticket,
    Option<Arc<Qos2Gate>>,
);

#[derive(Default)]
pub struct DurableAcks {
    waiting: VecDeque<Waiting>,
}

impl DurableAcks {
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn push(&mut self, ack: Waiting) {
        self.waiting.push_back(ack);
    }

    /// Encodes into `out` the acknowledgements whose tickets are durable, in order; returns
    /// how many. With `cx`, the task is woken when the first one left may be ready.
    pub fn release(
        &mut self,
        shard: &Shard,
        out: &mut bytes::BytesMut,
        mut cx: Option<&mut Context<'_>>,
    ) -> usize {
        let mut released = 0;
        while let Some((kind, id, reason, ticket, gate)) = self.waiting.front() {
            let ready = match cx.as_deref_mut() {
                Some(cx) => {
                    shard.poll_ticket(ticket, cx)
                        && gate.as_ref().is_none_or(|g| shard.poll_gate(g, cx))
                }
                None => shard.ticket_ready(ticket) && gate.as_ref().is_none_or(|g| g.is_open()),
            };
            if !ready {
                break;
            }
            encode_ack_reason(out, *kind, *id, *reason);
            self.waiting.pop_front();
            released += 1;
        }
        released
    }
}
