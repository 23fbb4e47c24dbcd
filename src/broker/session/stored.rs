//! A persistent session's life in the journal (with `--data-dir`): its number there, the
//! numbering of its messages, what `fill` sent for the journal to record, a session rebuilt
//! from what the journal kept, and the session as a fresh log must begin with it.

use std::sync::Arc;
use std::time::Instant;

use super::{Inflight, InflightState, Outbound, Session, SessionLimits};
use crate::broker::journal::{restored_share, restored_v5};
use crate::broker::mesh::{Grant, Message, SubscriberId};
use crate::broker::qos2_gate::IncomingQos2;
use crate::broker::shared::ShareKey;
use crate::protocol::{PacketId, QoS};
use std::rc::Rc;

/// One piece of a session's durable state, for a fresh journal (see
/// [`Session::for_each_stored`]).
pub enum StoredItem<'a> {
    Inflight {
        message: &'a Arc<Message>,
        qos: QoS,
        retain: bool,
        seq: u64,
        packet_id: PacketId,
        received: bool,
        subscription_id: u32,
        share: &'a Option<Arc<ShareKey>>,
    },
    Queued {
        message: &'a Arc<Message>,
        qos: QoS,
        retain: bool,
        seq: u64,
        subscription_id: u32,
        share: &'a Option<Arc<ShareKey>>,
    },
    /// An incoming QoS 2 id, with its registration number while it waits for acceptance
    /// (0: accepted).
    IncomingQos2(PacketId, u64),
}

/// A journalled session's bookkeeping.
#[derive(Debug)]
pub(super) struct Stored {
    /// The session's number in its shard's journal.
    pub(super) number: u64,
    /// The journal number of the next message queued.
    pub(super) next_seq: u64,
    /// QoS 1/2 messages `fill` sent since the caller last took them, (seq, packet id).
    pub(super) sent: Vec<(u64, PacketId)>,
    /// Restored at start and not attached since: in a cluster, a copy the client may have
    /// left for a newer one on another node while this one was down (see `shard::handoff`).
    /// Here, not in `Session`, which stays small: only journalled sessions are restored.
    pub(super) restored_unclaimed: bool,
    /// When its client went away (Unix ms) as the journal said at start, if it said.
    pub(super) restored_gone_ms: Option<u64>,
    /// In a cluster that copies sessions while online: the changes appended to the
    /// session's copy since its last snapshot (see `shard::session_copies`).
    pub(super) copy_appends: std::cell::Cell<u32>,
    /// When its client last attached (Unix ms; 0: not since it was restored): journalled, so
    /// that a copy restored after a crash that found the client connected can be told from
    /// a newer one (see `cluster_port::superseded_by`).
    pub(super) attached_ms: u64,
}

/// The number of a session whose messages are numbered, as a journal numbers them, for its
/// copy in JetStream only (a cluster node without `--data-dir`; see `shard::session_copies`).
pub const NOT_JOURNALLED: u64 = u64::MAX;
impl Session {
    /// Restored from the journal at start, and not attached since (see `Stored`).
    pub fn restored_unclaimed(&self) -> bool {
        self.stored.as_ref().is_some_and(|s| s.restored_unclaimed)
    }

    /// Restored at start and not attached since: when its client went away (Unix ms), as
    /// the journal said.
    pub fn restored_gone_ms(&self) -> Option<u64> {
        self.stored
            .as_ref()
            .filter(|s| s.restored_unclaimed)
            .and_then(|s| s.restored_gone_ms)
    }

    /// The session's number in its shard's journal, if it is written there.
    pub fn stored_as(&self) -> Option<u64> {
        self.stored.as_ref().map(|s| s.number)
    }

    /// From now on the session is written to the journal as session `number` (or, None, no
    /// longer).
    pub fn set_stored_as(&mut self, number: Option<u64>) {
        self.stored = number.map(|number| {
            Box::new(Stored {
                number,
                next_seq: 1,
                sent: Vec::new(),
                restored_unclaimed: false,
                restored_gone_ms: None,
                copy_appends: std::cell::Cell::new(0),
                attached_ms: 0,
            })
        });
    }

    /// A live session that was not journalled starts being written as session `number`. Its
    /// QoS 1/2 messages get journal numbers now, in order (they had none), so the records
    /// written from here on can name them.
    pub fn begin_storing(&mut self, number: u64) {
        self.set_stored_as(Some(number));
        let mut next = 1;
        for f in &mut self.inflight {
            f.seq = next;
            next += 1;
        }
        for item in &mut self.queue {
            if let Outbound::Publish { qos, seq, .. } = item {
                if *qos != QoS::AtMostOnce {
                    *seq = next;
                    next += 1;
                }
            }
        }
        if let Some(stored) = &mut self.stored {
            stored.next_seq = next;
        }
    }

    /// A persistent session as the journal kept it (see `store::StoredSession`): offline,
    /// its unacknowledged messages to be sent again first, with DUP, then its queue.
    pub fn restore(
        id: SubscriberId,
        limits: Rc<SessionLimits>,
        stored_as: Option<u64>,
        stored: crate::store::StoredSession,
        detached_at: Instant,
    ) -> Session {
        // A client connected when the log ended went at the crash: for comparing this copy
        // with one taken from JetStream meanwhile, its time is when it last connected (every
        // copy it made since is at least that recent; see `cluster_port::superseded_by`).
        let gone_ms = stored.detached_at_ms.or(stored.attached_at_ms);
        let mut s = Session::new(stored.client_id, id, false, limits);
        s.username = stored.username;
        s.subscriptions = stored
            .subscriptions
            .into_iter()
            .map(|(filter, (qos, extras))| (filter, Grant::from_stored(qos, extras)))
            .collect();
        s.set_stored_as(stored_as);
        s.detached_at = Some(detached_at);
        if let Some(stored) = &mut s.stored {
            stored.restored_unclaimed = true;
            stored.restored_gone_ms = gone_ms;
        }
        let mut next_seq = 1;
        // Topic and payload move into the live message: a clone would cost each message one
        // more allocation (a `Bytes` made from a `Vec` allocates its shared count when cloned).
        let message = |m: crate::store::StoredMessage| {
            let (v5, _) = restored_v5(m.extras.as_deref());
            Arc::new(Message::new(m.topic, m.payload, m.qos, m.retain).with_v5(v5))
        };
        let subscription_id = |m: &crate::store::StoredMessage| restored_v5(m.extras.as_deref()).1;
        for f in stored.inflight {
            let state = match (f.message.qos, f.received) {
                (QoS::ExactlyOnce, true) => InflightState::Comp,
                (QoS::ExactlyOnce, false) => InflightState::Rec,
                _ => InflightState::Ack,
            };
            let m = f.message;
            s.last_packet_id = f.packet_id;
            let size = super::payload_size(&m.payload);
            s.queued_bytes += size as usize;
            next_seq = next_seq.max(m.seq + 1);
            s.inflight.push_back(Inflight {
                packet_id: f.packet_id,
                size,
                qos: m.qos,
                retain: m.retain,
                state,
                seq: m.seq,
                subscription_id: subscription_id(&m),
                share: restored_share(m.extras.as_deref()),
                message: message(m),
            });
        }
        for m in stored.queue {
            s.queued_bytes += m.payload.len();
            next_seq = next_seq.max(m.seq + 1);
            s.queue.push_back(Outbound::Publish {
                qos: m.qos,
                retain: m.retain,
                seq: m.seq,
                subscription_id: subscription_id(&m),
                share: restored_share(m.extras.as_deref()),
                message: message(m),
            });
        }
        if let Some(stored) = &mut s.stored {
            stored.next_seq = next_seq;
        }
        if stored.last_packet_id != 0 {
            s.last_packet_id = stored.last_packet_id;
        }
        // Those still waiting for acceptance were settled away at load (`store::qos2`).
        s.incoming_qos2 = stored
            .incoming_qos2
            .into_iter()
            .map(|id| (id, IncomingQos2::default()))
            .collect();
        s
    }

    /// The packet id given to the last outgoing QoS 1/2 message (0: none yet).
    pub fn last_packet_id(&self) -> PacketId {
        self.last_packet_id
    }

    /// The journal number given to the last message queued (0 for a session not journalled).
    pub fn last_seq(&self) -> u64 {
        self.stored.as_ref().map_or(0, |s| s.next_seq - 1)
    }

    /// Counts a change appended to the session's copy in JetStream; says whether the copy is
    /// due a new snapshot: once the changes outweigh what a snapshot holds (so a copy is at
    /// most about three times the session, and a snapshot's cost is spread over as many
    /// changes as it holds).
    pub fn copy_appended(&self) -> bool {
        let Some(stored) = &self.stored else {
            return false;
        };
        let appends = stored.copy_appends.get() + 1;
        stored.copy_appends.set(appends);
        let held = self.inflight.len() + self.queue.len();
        appends as usize > 1024 + 2 * held
    }

    /// When its client last attached (Unix ms), if it is journalled or copied and attached
    /// since it was restored.
    pub fn attached_ms(&self) -> Option<u64> {
        self.stored
            .as_ref()
            .map(|s| s.attached_ms)
            .filter(|&at| at != 0)
    }

    /// The session's copy in JetStream was written whole: changes count from here.
    pub fn copy_snapshotted(&self) {
        if let Some(stored) = &self.stored {
            stored.copy_appends.set(0);
        }
    }

    /// The (seq, packet id) of QoS 1/2 messages sent since the last call, for the journal.
    pub fn take_sent(&mut self) -> impl Iterator<Item = (u64, PacketId)> + '_ {
        self.stored.iter_mut().flat_map(|s| s.sent.drain(..))
    }

    /// The session as the journal would have it: what a fresh log must begin with. Messages in
    /// flight come first, in the order sent, then the queue; QoS 0 is not kept.
    pub fn for_each_stored(&self, mut each: impl FnMut(StoredItem<'_>)) {
        for f in &self.inflight {
            each(StoredItem::Inflight {
                message: &f.message,
                qos: f.qos,
                retain: f.retain,
                seq: f.seq,
                packet_id: f.packet_id,
                received: f.state == InflightState::Comp,
                subscription_id: f.subscription_id,
                share: &f.share,
            });
        }
        for item in &self.queue {
            if let Outbound::Publish {
                message,
                qos,
                retain,
                seq,
                subscription_id,
                share,
            } = item
            {
                if *qos != QoS::AtMostOnce {
                    each(StoredItem::Queued {
                        message,
                        qos: *qos,
                        retain: *retain,
                        seq: *seq,
                        subscription_id: *subscription_id,
                        share,
                    });
                }
            }
        }
        for (id, incoming) in &self.incoming_qos2 {
            let reg = match &incoming.gate {
                Some(gate) if !gate.is_open() => gate.origin.reg,
                _ => 0,
            };
            each(StoredItem::IncomingQos2(*id, reg));
        }
    }
}
