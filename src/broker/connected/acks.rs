//! Acknowledgements that wait for the disk (with `--data-dir`): a PUBACK/PUBREC until what
//! the publish wrote is durable, a PUBREL until the PUBREC it answers is. They leave in the
//! order their packets came (MQTT-4.6.0-2, -3), so one that waits holds back those behind it,
//! even if theirs are ready.

use std::collections::VecDeque;
use std::task::Context;

use crate::broker::durability::Ticket;
use crate::broker::shard::Shard;
use crate::protocol::{encode_ack_reason, PacketId, PacketType, ReasonCode};

/// Acknowledgements waiting beyond which the connection stops reading: a client that
/// publishes without waiting for its acknowledgements must not queue them without bound.
pub const MAX_WAITING: usize = 65_536;

#[derive(Default)]
pub struct DurableAcks {
    waiting: VecDeque<(PacketType, PacketId, ReasonCode, Ticket)>,
}

impl DurableAcks {
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn push(&mut self, kind: PacketType, id: PacketId, reason: ReasonCode, ticket: Ticket) {
        self.waiting.push_back((kind, id, reason, ticket));
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
        while let Some((kind, id, reason, ticket)) = self.waiting.front() {
            let ready = match cx.as_deref_mut() {
                Some(cx) => shard.poll_ticket(ticket, cx),
                None => shard.ticket_ready(ticket),
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
