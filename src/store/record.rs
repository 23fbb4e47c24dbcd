//! What a shard's log says, one [`Record`] per change of durable state, and its bytes (the body
//! of a [`super::frame`]). Sessions are named by a number the shard gives each persistent
//! session when it begins (`session`), not by client id, so the records a busy session writes
//! per message stay small; the client id is written once, when the session begins.
//!
//! Fixed-width little-endian integers, strings with a u16 length (MQTT's own limit), payloads
//! with a u32 length. Pure: no I/O; a body that does not parse is an error naming the kind,
//! never a panic.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::protocol::{ByteStr, PacketId, QoS};

/// What MQTT 5 adds to a subscription (all off for 3.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionExtras {
    pub no_local: bool,
    pub retain_as_published: bool,
    /// 0: none.
    pub subscription_id: u32,
}

/// What MQTT 5 adds to a message: its forwarded properties (encoded, without their length),
/// when it expires (ms since the Unix epoch), and for a queued one the Subscription
/// Identifier it is sent with and the shared subscription (`$share/...`) it came through.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageExtras {
    pub properties: Bytes,
    pub expires_at_ms: Option<u64>,
    pub subscription_id: u32,
    pub share: Option<ByteStr>,
    /// For a message from a persistent session's QoS 2 PUBLISH that was not yet accepted
    /// when this was written: whose acceptance it waits for (see [`Qos2Origin`]).
    pub origin: Option<Qos2Origin>,
}

/// The incoming QoS 2 PUBLISH a message came from: registration `reg` in shard `shard`'s log
/// (an [`Record::IncomingQos2`] with that number). Such a message is kept at a start only if
/// that log says the registration was accepted ([`Record::Qos2Accepted`], or released since):
/// otherwise the publisher was never sent its PUBREC and sends the PUBLISH again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Qos2Origin {
    pub shard: u16,
    pub reg: u64,
}

/// A change of durable state.
///
/// MQTT 5's additions ride as optional trailers on `Subscribed`, `Queued` and `Retained`
/// (written only when there is something to say), so logs written before them read the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A persistent session began (CleanSession = 0 and none was stored).
    SessionBegan {
        session: u64,
        client_id: ByteStr,
        username: Option<ByteStr>,
    },
    /// The session ended (a clean session took its client id, or it expired): all it held goes.
    SessionEnded {
        session: u64,
    },
    Subscribed {
        session: u64,
        filter: ByteStr,
        qos: QoS,
        extras: SubscriptionExtras,
    },
    Unsubscribed {
        session: u64,
        filter: ByteStr,
    },
    /// A message queued for the session; `seq` numbers the session's messages in order.
    Queued {
        session: u64,
        seq: u64,
        topic: ByteStr,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        extras: Option<Box<MessageExtras>>,
    },
    /// The queued message `seq` went out with `packet_id`: in flight from now on.
    Sent {
        session: u64,
        seq: u64,
        packet_id: PacketId,
    },
    /// PUBREC for `packet_id`: the message is delivered, a PUBREL is owed until PUBCOMP.
    Received {
        session: u64,
        packet_id: PacketId,
    },
    /// PUBACK (QoS 1) or PUBCOMP (QoS 2) for `packet_id`: nothing more is owed for it.
    Completed {
        session: u64,
        packet_id: PacketId,
    },
    /// An incoming QoS 2 PUBLISH was taken (and forwarded): a repeat is not forwarded again.
    /// `reg` (not 0) numbers it in this log while it waits for [`Record::Qos2Accepted`]; 0: it
    /// is accepted already (a snapshot's, or a log written before registrations).
    IncomingQos2 {
        session: u64,
        packet_id: PacketId,
        reg: u64,
    },
    /// Everything the incoming QoS 2 PUBLISH `packet_id` wrote is durable (here and on every
    /// other shard): its PUBREC may go and its message be delivered.
    Qos2Accepted {
        session: u64,
        packet_id: PacketId,
    },
    /// Registrations of incoming QoS 2 PUBLISHes in this log are numbered below `next` (a
    /// snapshot's first word on them, so a compacted log still knows which numbers it gave).
    Qos2Counter {
        next: u64,
    },
    /// Its PUBREL came: the id may be used for a new message.
    Released {
        session: u64,
        packet_id: PacketId,
    },
    /// The session's connection went away at this time (milliseconds since the Unix epoch),
    /// for `--session-expiry`; a later `Attached` cancels it.
    Detached {
        session: u64,
        at_ms: u64,
    },
    /// The session's client connected again, at this time (milliseconds since the Unix
    /// epoch; 0 in logs written before it was recorded).
    Attached {
        session: u64,
        at_ms: u64,
    },
    /// The retained message of a topic this shard owns.
    Retained {
        topic: ByteStr,
        payload: Bytes,
        qos: QoS,
        extras: Option<Box<MessageExtras>>,
    },
    /// How long the session outlives its connection, in seconds (MQTT 5's Session Expiry
    /// Interval); `u32::MAX`: the broker's `--session-expiry`. Absent: the same.
    SessionExpiry {
        session: u64,
        secs: u32,
    },
    /// The session's will waits for its Will Delay Interval (MQTT 5) until `due_ms` (ms since
    /// the Unix epoch): published then unless [`Record::WillDone`] comes first.
    DelayedWill {
        session: u64,
        due_ms: u64,
        topic: ByteStr,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        extras: Option<Box<MessageExtras>>,
    },
    /// The session's delayed will went out, or was cancelled by the client's return.
    WillDone {
        session: u64,
    },
    /// The message `seq`, queued or in flight, left the session: given to another member of
    /// the shared subscription it came through (`--shared-redispatch`).
    Withdrawn {
        session: u64,
        seq: u64,
    },
    RetainCleared {
        topic: ByteStr,
    },
    /// The last packet id the session gave an outgoing message, for a log that no longer has
    /// that message's `Sent` (it completed): ids go on from there after a restart, so a
    /// message sent but not yet recorded as sent gets its id again (a QoS 2 receiver then
    /// takes it for the repeat it is, MQTT-4.3.3-2).
    LastPacketId {
        session: u64,
        packet_id: PacketId,
    },
    /// Ends the snapshot a compacted log begins with: a compacted log without it was cut
    /// short by a crash and is not used (see `broker::compaction`).
    SnapshotEnd,
}

/// A record body that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    #[error("record kind {0}: body cut short")]
    Short(u8),
    #[error("record kind {0}: bytes left over after the body")]
    Trailing(u8),
    #[error("record kind {0}: a string is not UTF-8")]
    NotUtf8(u8),
    #[error("record kind {0}: QoS {1} is not 0, 1 or 2")]
    BadQoS(u8, u8),
}

pub(crate) mod kind {
    pub const SESSION_BEGAN: u8 = 1;
    pub const SESSION_ENDED: u8 = 2;
    pub const SUBSCRIBED: u8 = 3;
    pub const UNSUBSCRIBED: u8 = 4;
    pub const QUEUED: u8 = 5;
    pub const SENT: u8 = 6;
    pub const RECEIVED: u8 = 7;
    pub const COMPLETED: u8 = 8;
    pub const INCOMING_QOS2: u8 = 9;
    pub const RELEASED: u8 = 10;
    pub const DETACHED: u8 = 11;
    pub const ATTACHED: u8 = 12;
    pub const RETAINED: u8 = 13;
    pub const RETAIN_CLEARED: u8 = 14;
    pub const SNAPSHOT_END: u8 = 15;
    pub const LAST_PACKET_ID: u8 = 16;
    pub const SESSION_EXPIRY: u8 = 17;
    pub const WITHDRAWN: u8 = 18;
    pub const DELAYED_WILL: u8 = 19;
    pub const WILL_DONE: u8 = 20;
    pub const QOS2_ACCEPTED: u8 = 21;
    pub const QOS2_COUNTER: u8 = 22;
}

fn put_message_extras(out: &mut BytesMut, extras: &Option<Box<MessageExtras>>) {
    if let Some(e) = extras {
        out.put_u32_le(e.subscription_id);
        out.put_u64_le(e.expires_at_ms.unwrap_or(0));
        out.put_u32_le(e.properties.len() as u32);
        out.put_slice(&e.properties);
        // Later trailers: absent in logs written before shared subscriptions (an empty
        // share stands for none when an origin follows).
        if e.share.is_some() || e.origin.is_some() {
            put_str(out, e.share.as_deref().unwrap_or(""));
        }
        if let Some(origin) = e.origin {
            out.put_u16_le(origin.shard);
            out.put_u64_le(origin.reg);
        }
    }
}

/// A queued message or a will after its leading numbers: topic, QoS and RETAIN in one byte,
/// payload, MQTT 5 trailer.
fn put_message(
    out: &mut BytesMut,
    topic: &str,
    qos: QoS,
    retain: bool,
    payload: &[u8],
    extras: &Option<Box<MessageExtras>>,
) {
    put_str(out, topic);
    out.put_u8(qos as u8 | u8::from(retain) << 4);
    out.put_u32_le(payload.len() as u32);
    out.put_slice(payload);
    put_message_extras(out, extras);
}

fn put_str(out: &mut BytesMut, s: &str) {
    out.put_u16_le(s.len() as u16);
    out.put_slice(s.as_bytes());
}

impl Record {
    /// A [`Record::Queued`]'s kind and body from borrowed parts: what the journal writes for
    /// each message it keeps, without cloning the message's topic and payload into a record
    /// (two reference counts taken and dropped per message, on the publisher's read buffer).
    #[allow(clippy::too_many_arguments)]
    pub fn encode_queued(
        out: &mut BytesMut,
        session: u64,
        seq: u64,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
        extras: &Option<Box<MessageExtras>>,
    ) -> u8 {
        out.put_u64_le(session);
        out.put_u64_le(seq);
        put_message(out, topic, qos, retain, payload, extras);
        kind::QUEUED
    }

    /// The record's kind, and its body appended to `out`.
    pub fn encode(&self, out: &mut BytesMut) -> u8 {
        use kind::*;
        match self {
            Record::SessionBegan {
                session,
                client_id,
                username,
            } => {
                out.put_u64_le(*session);
                put_str(out, client_id);
                match username {
                    Some(u) => {
                        out.put_u8(1);
                        put_str(out, u);
                    }
                    None => out.put_u8(0),
                }
                SESSION_BEGAN
            }
            Record::SessionEnded { session } => {
                out.put_u64_le(*session);
                SESSION_ENDED
            }
            Record::Subscribed {
                session,
                filter,
                qos,
                extras,
            } => {
                out.put_u64_le(*session);
                put_str(out, filter);
                out.put_u8(*qos as u8);
                if *extras != SubscriptionExtras::default() {
                    out.put_u8(
                        u8::from(extras.no_local) | u8::from(extras.retain_as_published) << 1,
                    );
                    out.put_u32_le(extras.subscription_id);
                }
                SUBSCRIBED
            }
            Record::Unsubscribed { session, filter } => {
                out.put_u64_le(*session);
                put_str(out, filter);
                UNSUBSCRIBED
            }
            Record::Queued {
                session,
                seq,
                topic,
                payload,
                qos,
                retain,
                extras,
            } => Record::encode_queued(out, *session, *seq, topic, payload, *qos, *retain, extras),
            Record::Sent {
                session,
                seq,
                packet_id,
            } => {
                out.put_u64_le(*session);
                out.put_u64_le(*seq);
                out.put_u16_le(*packet_id);
                SENT
            }
            Record::Received { session, packet_id } => {
                id_record(out, *session, *packet_id, RECEIVED)
            }
            Record::Completed { session, packet_id } => {
                id_record(out, *session, *packet_id, COMPLETED)
            }
            Record::IncomingQos2 {
                session,
                packet_id,
                reg,
            } => {
                id_record(out, *session, *packet_id, INCOMING_QOS2);
                if *reg != 0 {
                    out.put_u64_le(*reg);
                }
                INCOMING_QOS2
            }
            Record::Qos2Accepted { session, packet_id } => {
                id_record(out, *session, *packet_id, QOS2_ACCEPTED)
            }
            Record::Qos2Counter { next } => {
                out.put_u64_le(*next);
                QOS2_COUNTER
            }
            Record::Released { session, packet_id } => {
                id_record(out, *session, *packet_id, RELEASED)
            }
            Record::Detached { session, at_ms } => {
                out.put_u64_le(*session);
                out.put_u64_le(*at_ms);
                DETACHED
            }
            Record::Attached { session, at_ms } => {
                out.put_u64_le(*session);
                out.put_u64_le(*at_ms);
                ATTACHED
            }
            Record::Retained {
                topic,
                payload,
                qos,
                extras,
            } => {
                put_str(out, topic);
                out.put_u8(*qos as u8);
                out.put_u32_le(payload.len() as u32);
                out.put_slice(payload);
                put_message_extras(out, extras);
                RETAINED
            }
            Record::SessionExpiry { session, secs } => {
                out.put_u64_le(*session);
                out.put_u32_le(*secs);
                SESSION_EXPIRY
            }
            Record::Withdrawn { session, seq } => {
                out.put_u64_le(*session);
                out.put_u64_le(*seq);
                WITHDRAWN
            }
            Record::DelayedWill {
                session,
                due_ms,
                topic,
                payload,
                qos,
                retain,
                extras,
            } => {
                out.put_u64_le(*session);
                out.put_u64_le(*due_ms);
                put_message(out, topic, *qos, *retain, payload, extras);
                DELAYED_WILL
            }
            Record::WillDone { session } => {
                out.put_u64_le(*session);
                WILL_DONE
            }
            Record::RetainCleared { topic } => {
                put_str(out, topic);
                RETAIN_CLEARED
            }
            Record::SnapshotEnd => SNAPSHOT_END,
            Record::LastPacketId { session, packet_id } => {
                id_record(out, *session, *packet_id, LAST_PACKET_ID)
            }
        }
    }

    /// Parses a record body of `kind`. Strings and payloads share `body`'s memory.
    pub fn decode(kind: u8, body: Bytes) -> Result<Record, RecordError> {
        use kind::*;
        let mut r = Reader { kind, body };
        let record = match kind {
            SESSION_BEGAN => Record::SessionBegan {
                session: r.u64()?,
                client_id: r.str()?,
                username: match r.u8()? {
                    0 => None,
                    _ => Some(r.str()?),
                },
            },
            SESSION_ENDED => Record::SessionEnded { session: r.u64()? },
            SUBSCRIBED => Record::Subscribed {
                session: r.u64()?,
                filter: r.str()?,
                qos: r.qos()?,
                extras: if r.body.has_remaining() {
                    let flags = r.u8()?;
                    SubscriptionExtras {
                        no_local: flags & 1 != 0,
                        retain_as_published: flags & 2 != 0,
                        subscription_id: r.u32()?,
                    }
                } else {
                    SubscriptionExtras::default()
                },
            },
            UNSUBSCRIBED => Record::Unsubscribed {
                session: r.u64()?,
                filter: r.str()?,
            },
            QUEUED => {
                let (session, seq) = (r.u64()?, r.u64()?);
                let (topic, qos, retain, payload, extras) = r.message()?;
                Record::Queued {
                    session,
                    seq,
                    topic,
                    qos,
                    retain,
                    payload,
                    extras,
                }
            }
            DELAYED_WILL => {
                let (session, due_ms) = (r.u64()?, r.u64()?);
                let (topic, qos, retain, payload, extras) = r.message()?;
                Record::DelayedWill {
                    session,
                    due_ms,
                    topic,
                    qos,
                    retain,
                    payload,
                    extras,
                }
            }
            WILL_DONE => Record::WillDone { session: r.u64()? },
            SENT => Record::Sent {
                session: r.u64()?,
                seq: r.u64()?,
                packet_id: r.u16()?,
            },
            RECEIVED => Record::Received {
                session: r.u64()?,
                packet_id: r.u16()?,
            },
            COMPLETED => Record::Completed {
                session: r.u64()?,
                packet_id: r.u16()?,
            },
            INCOMING_QOS2 => Record::IncomingQos2 {
                session: r.u64()?,
                packet_id: r.u16()?,
                reg: if r.body.has_remaining() { r.u64()? } else { 0 },
            },
            QOS2_ACCEPTED => Record::Qos2Accepted {
                session: r.u64()?,
                packet_id: r.u16()?,
            },
            QOS2_COUNTER => Record::Qos2Counter { next: r.u64()? },
            RELEASED => Record::Released {
                session: r.u64()?,
                packet_id: r.u16()?,
            },
            DETACHED => Record::Detached {
                session: r.u64()?,
                at_ms: r.u64()?,
            },
            ATTACHED => Record::Attached {
                session: r.u64()?,
                at_ms: if r.body.has_remaining() { r.u64()? } else { 0 },
            },
            RETAINED => Record::Retained {
                topic: r.str()?,
                qos: r.qos()?,
                payload: r.payload()?,
                extras: r.message_extras()?,
            },
            SESSION_EXPIRY => Record::SessionExpiry {
                session: r.u64()?,
                secs: r.u32()?,
            },
            WITHDRAWN => Record::Withdrawn {
                session: r.u64()?,
                seq: r.u64()?,
            },
            RETAIN_CLEARED => Record::RetainCleared { topic: r.str()? },
            SNAPSHOT_END => Record::SnapshotEnd,
            LAST_PACKET_ID => Record::LastPacketId {
                session: r.u64()?,
                packet_id: r.u16()?,
            },
            other => return Err(RecordError::UnknownKind(other)),
        };
        if r.body.has_remaining() {
            return Err(RecordError::Trailing(kind));
        }
        Ok(record)
    }
}

fn id_record(out: &mut BytesMut, session: u64, packet_id: PacketId, kind: u8) -> u8 {
    out.put_u64_le(session);
    out.put_u16_le(packet_id);
    kind
}

/// Reads a body front to back; every read checks the length first.
struct Reader {
    kind: u8,
    body: Bytes,
}

impl Reader {
    fn need(&self, n: usize) -> Result<(), RecordError> {
        if self.body.remaining() < n {
            Err(RecordError::Short(self.kind))
        } else {
            Ok(())
        }
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        self.need(1)?;
        Ok(self.body.get_u8())
    }
    fn u16(&mut self) -> Result<u16, RecordError> {
        self.need(2)?;
        Ok(self.body.get_u16_le())
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        self.need(8)?;
        Ok(self.body.get_u64_le())
    }
    fn qos(&mut self) -> Result<QoS, RecordError> {
        let v = self.u8()?;
        QoS::from_u8(v).ok_or(RecordError::BadQoS(self.kind, v))
    }
    fn str(&mut self) -> Result<ByteStr, RecordError> {
        let len = self.u16()? as usize;
        self.need(len)?;
        ByteStr::from_utf8(self.body.split_to(len)).map_err(|_| RecordError::NotUtf8(self.kind))
    }
    fn payload(&mut self) -> Result<Bytes, RecordError> {
        let len = self.u32()? as usize;
        self.need(len)?;
        Ok(self.body.split_to(len))
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        self.need(4)?;
        Ok(self.body.get_u32_le())
    }
    /// What [`put_message`] wrote.
    #[allow(clippy::type_complexity)]
    fn message(
        &mut self,
    ) -> Result<(ByteStr, QoS, bool, Bytes, Option<Box<MessageExtras>>), RecordError> {
        let topic = self.str()?;
        let flags = self.u8()?;
        let qos = QoS::from_u8(flags & 0x0f).ok_or(RecordError::BadQoS(self.kind, flags))?;
        Ok((
            topic,
            qos,
            flags & 0x10 != 0,
            self.payload()?,
            self.message_extras()?,
        ))
    }

    /// The MQTT 5 trailer of a message record, if the body goes on.
    fn message_extras(&mut self) -> Result<Option<Box<MessageExtras>>, RecordError> {
        if !self.body.has_remaining() {
            return Ok(None);
        }
        let subscription_id = self.u32()?;
        let expires_at_ms = self.u64()?;
        let properties = self.payload()?;
        let share = if self.body.has_remaining() {
            Some(self.str()?).filter(|s| !s.is_empty())
        } else {
            None
        };
        let origin = if self.body.has_remaining() {
            Some(Qos2Origin {
                shard: self.u16()?,
                reg: self.u64()?,
            })
        } else {
            None
        };
        Ok(Some(Box::new(MessageExtras {
            subscription_id,
            expires_at_ms: (expires_at_ms != 0).then_some(expires_at_ms),
            properties,
            share,
            origin,
        })))
    }
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
