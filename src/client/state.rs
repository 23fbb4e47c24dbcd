//! The client's protocol state machine, without I/O: it takes packets from the server, requests
//! from the application and the current time, and answers with packets to send (the outbox)
//! and events for the application. The async client drives it; the unit tests drive it with
//! hand-made packets and instants.
//!
//! It owns the session as the client sees it:
//! - the handshake: CONNECT out, CONNACK accepted or refused with its return code;
//! - packet identifiers: never reused while in use (a bitmap of the 65535 ids);
//! - outgoing QoS 1/2 PUBLISHes in flight, bounded by the window: PUBACK completes QoS 1;
//!   PUBREC is answered with PUBREL and PUBCOMP completes QoS 2;
//! - incoming QoS 2 identifiers between PUBLISH and PUBREL, so a repeated PUBLISH is
//!   acknowledged again but delivered once (MQTT-4.3.3-2);
//! - SUBSCRIBE and UNSUBSCRIBE waiting for SUBACK / UNSUBACK;
//! - keepalive: when a PINGREQ is due and when the server counts as gone;
//! - MQTT 5: the server's CONNACK limits (Receive Maximum caps the window, Server Keep Alive
//!   replaces the keepalive, Assigned Client Identifier is kept for resuming), acknowledgements
//!   with failure reason codes ([`Event::Rejected`]), topic aliases both ways, the client's own
//!   Receive Maximum, enhanced authentication, Message Expiry of late messages, and a server's
//!   DISCONNECT as [`ClientError::ServerDisconnect`] (the details are in the `state_v5.rs`
//!   part of this module);
//! - resuming: after a reconnect, unacknowledged PUBLISHes (DUP set) and PUBRELs go out again
//!   first, in their original order (MQTT-4.4.0-1).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use surgemq::client::state::{ClientState, Event, StateConfig};
//! use surgemq::client::ClientOptions;
//! use surgemq::protocol::{Ack, ByteStr, ConnAck, ReasonCode, Packet, Publish, QoS};
//!
//! let options = ClientOptions::new("localhost", 1883);
//! let config = StateConfig {
//!     keep_alive: Duration::from_secs(60),
//!     ping_timeout: Duration::from_secs(60),
//!     connect_timeout: Duration::from_secs(10),
//!     max_inflight: 10,
//!     clean_session: true,
//! };
//! let now = Instant::now();
//! let mut state = ClientState::new(config, options.connect_packet(), now);
//! state.connect(now);
//! assert!(matches!(state.pop_packet(), Some(Packet::Connect(_))));
//! let accepted = ConnAck::new(false, ReasonCode::SUCCESS);
//! state.handle(Packet::ConnAck(accepted), now)?;
//! assert_eq!(state.pop_event(), Some(Event::Connected { session_present: false }));
//!
//! let message = Publish {
//!     dup: false,
//!     qos: QoS::AtLeastOnce,
//!     retain: false,
//!     topic: ByteStr::from("a/b"),
//!     packet_id: 0, // assigned by the state machine
//!     payload: "hi".into(),
//!     properties: None,
//! };
//! let id = state.publish(message, now).expect("window open");
//! assert!(matches!(state.pop_packet(), Some(Packet::Publish(p)) if p.packet_id == id));
//! state.handle(Packet::PubAck(Ack::new(id)), now)?;
//! assert_eq!(state.pop_event(), Some(Event::Published(id)));
//! # Ok::<(), surgemq::client::ClientError>(())
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ahash::{AHashMap, AHashSet};
use bytes::Bytes;

use super::error::{ClientError, ProtocolError};
use super::ids::PacketIds;
use crate::protocol::{
    Ack, ByteStr, ConnAck, Connect, Disconnect, Packet, PacketId, PacketType, Properties,
    ProtocolLevel, Publish, QoS, ReasonCode, SubscribeReturnCode,
};

#[path = "state_requests.rs"]
mod requests;
#[path = "state_v5.rs"]
mod v5;

pub use v5::remaining_expiry;

/// The limits and timers the state machine enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateConfig {
    /// Idle time after which a PINGREQ is sent; zero turns keepalive off.
    pub keep_alive: Duration,
    /// Time allowed for PINGRESP before the server counts as gone.
    pub ping_timeout: Duration,
    /// Time allowed for CONNACK after CONNECT.
    pub connect_timeout: Duration,
    /// Outgoing QoS 1/2 PUBLISHes in flight at most.
    pub max_inflight: usize,
    /// Whether the session ends with the connection: CleanSession = 1 in 3.1/3.1.1, a
    /// Session Expiry Interval of 0 in MQTT 5 (where CONNECT's flag is Clean Start).
    pub clean_session: bool,
}

/// Something the application should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// CONNACK accepted the connection.
    Connected { session_present: bool },
    /// A message from the server, delivered once (QoS 2 duplicates are filtered out).
    Message(Publish),
    /// The server acknowledged a QoS 1 (PUBACK) or QoS 2 (PUBCOMP) publish; its id is free.
    /// MQTT 5 success codes other than 0 (0x10 no matching subscribers) count as success.
    Published(PacketId),
    /// MQTT 5: the server refused a QoS 1/2 publish with a reason code of 0x80 or above in
    /// PUBACK, PUBREC (no PUBREL follows) or PUBCOMP; its id is free.
    Rejected {
        packet_id: PacketId,
        ack: PacketType,
        reason: ReasonCode,
        reason_string: Option<String>,
    },
    Subscribed {
        packet_id: PacketId,
        return_codes: Vec<SubscribeReturnCode>,
    },
    /// UNSUBACK, with one reason per filter (all success for 3.1/3.1.1, which have none).
    Unsubscribed {
        packet_id: PacketId,
        reasons: Vec<ReasonCode>,
    },
    /// The connection was lost and this request will never be acknowledged: a SUBSCRIBE or
    /// UNSUBSCRIBE, or with a clean session also a PUBLISH.
    Abandoned(PacketId),
    /// MQTT 5: a QoS 1/2 publish waited (for a reconnect, or for room under the server's
    /// Receive Maximum) longer than its Message Expiry Interval and was dropped unsent; its id
    /// is free.
    Expired { packet_id: PacketId, interval: u32 },
    /// MQTT 5: the server's AUTH 0x00 ended a re-authentication successfully, with its
    /// Authentication Data if any.
    Reauthenticated(Option<Bytes>),
}

/// `publish` could not take a QoS 1/2 message: the inflight window is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowFull;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No connection: before the first CONNECT, or after the connection was lost.
    Idle,
    /// CONNECT sent at this instant, CONNACK not yet received.
    Connecting(Instant),
    Connected,
    /// DISCONNECT sent; the connection is about to close.
    Disconnecting,
}

/// Which acknowledgement an outgoing message waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// QoS 1 PUBLISH sent, PUBACK expected.
    Ack,
    /// QoS 2 PUBLISH sent, PUBREC expected.
    Rec,
    /// PUBREL sent, PUBCOMP expected.
    Comp,
}

impl Stage {
    fn packet_type(self) -> PacketType {
        match self {
            Stage::Ack => PacketType::PubAck,
            Stage::Rec => PacketType::PubRec,
            Stage::Comp => PacketType::PubComp,
        }
    }
}

#[derive(Debug)]
struct Outgoing {
    /// Order of the original send, for resending in that order.
    seq: u64,
    publish: Publish,
    stage: Stage,
    /// Whether the PUBLISH has been written to a connection (a resend then sets DUP).
    sent: bool,
    /// Whether it is in flight on the current connection (PUBLISH or PUBREL sent on it):
    /// what the server's Receive Maximum counts.
    on_wire: bool,
    /// When `publish` took it: what its Message Expiry Interval counts from.
    queued_at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    /// SUBSCRIBE with this many filters.
    Subscribe(usize),
    /// UNSUBSCRIBE with this many filters.
    Unsubscribe(usize),
}

pub struct ClientState {
    /// The limits in force on this connection: `configured`, with the server's keepalive.
    config: StateConfig,
    configured: StateConfig,
    /// Everything MQTT 5 only.
    v5: v5::V5,
    connect: Connect,
    phase: Phase,
    session_present: bool,
    ids: PacketIds,
    outgoing: AHashMap<PacketId, Outgoing>,
    /// Entries of `outgoing` that are `on_wire`.
    on_wire: usize,
    next_seq: u64,
    incoming_qos2: AHashSet<PacketId>,
    /// With manual acknowledgements: QoS 1/2 messages handed to the application and not yet
    /// acknowledged by it (their PUBACK or PUBREC waits for [`ClientState::acknowledge`]).
    manual_acks: Option<AHashSet<PacketId>>,
    requests: AHashMap<PacketId, Request>,
    outbox: VecDeque<Packet>,
    outbox_bytes: usize,
    events: VecDeque<Event>,
    last_sent: Instant,
    last_received: Instant,
    ping_sent: Option<Instant>,
}

impl ClientState {
    /// A state that will announce `connect` (its CleanSession flag must match the config's).
    pub fn new(config: StateConfig, connect: Connect, now: Instant) -> ClientState {
        debug_assert!(connect.level.is_v5() || config.clean_session == connect.clean_session);
        let properties = connect
            .properties
            .as_deref()
            .filter(|_| connect.level.is_v5());
        ClientState {
            config,
            configured: config,
            v5: v5::V5::new(properties),
            connect,
            phase: Phase::Idle,
            session_present: false,
            ids: PacketIds::default(),
            outgoing: AHashMap::new(),
            on_wire: 0,
            next_seq: 0,
            incoming_qos2: AHashSet::new(),
            manual_acks: None,
            requests: AHashMap::new(),
            outbox: VecDeque::new(),
            outbox_bytes: 0,
            events: VecDeque::new(),
            last_sent: now,
            last_received: now,
            ping_sent: None,
        }
    }

    /// The protocol level this client speaks (the one its CONNECT announces).
    pub fn level(&self) -> ProtocolLevel {
        self.connect.level
    }

    /// Starts the handshake on a new connection: CONNECT goes out first.
    pub fn connect(&mut self, now: Instant) {
        self.outbox.clear();
        self.outbox_bytes = 0;
        self.v5.unsent_acks = 0;
        self.ping_sent = None;
        self.v5.aliases.clear();
        self.last_received = now;
        self.phase = Phase::Connecting(now);
        let connect = Packet::Connect(Box::new(self.connect.clone()));
        self.emit(connect, now);
    }

    /// Handles one packet from the server. An error ends the connection; for a violation of
    /// MQTT 5 a DISCONNECT naming it is queued first (see [`fail`](Self::fail)).
    pub fn handle(&mut self, packet: Packet, now: Instant) -> Result<(), ClientError> {
        self.last_received = now;
        let result = match self.phase {
            Phase::Connecting(_) => match packet {
                Packet::ConnAck(ack) => self.on_connack(ack, now),
                Packet::Auth(a) if self.level().is_v5() => self.on_auth(a, now),
                Packet::Disconnect(d) if self.level().is_v5() => {
                    self.phase = Phase::Idle;
                    Err(server_disconnect(d))
                }
                other => Err(ProtocolError::ExpectedConnAck(other.packet_type()).into()),
            },
            Phase::Connected => self.dispatch(packet, now),
            // After DISCONNECT nothing the server says matters any more.
            Phase::Idle | Phase::Disconnecting => Ok(()),
        };
        if let Err(e) = &result {
            self.fail(e, now);
        }
        result
    }

    fn on_connack(&mut self, ack: ConnAck, now: Instant) -> Result<(), ClientError> {
        if ack.code != ReasonCode::SUCCESS {
            self.phase = Phase::Idle;
            return Err(ClientError::Refused(ack.code, self.connect.level));
        }
        if ack.session_present && self.connect.clean_session {
            return Err(ProtocolError::SessionPresentWithCleanSession.into());
        }
        if self.level().is_v5() {
            self.check_connack_auth(&ack)?;
        }
        self.config = self.configured;
        self.v5.server = Default::default();
        if self.level().is_v5() {
            self.apply_connack_properties(ack.properties);
        }
        self.phase = Phase::Connected;
        self.session_present = ack.session_present;
        if !ack.session_present {
            // The server has no record of the QoS 2 messages we hold ids for: it may reuse
            // those ids for new messages, which must not be taken for duplicates.
            self.incoming_qos2.clear();
        }
        // Unacknowledged messages go out again whether or not the server kept the session:
        // if it lost it, sending QoS 1 again is what "at least once" asks for.
        self.resend(now);
        self.events.push_back(Event::Connected {
            session_present: ack.session_present,
        });
        Ok(())
    }

    /// Everything in flight not yet sent on this connection, in original order, as far as
    /// the window (the server's Receive Maximum) allows: PUBLISH again (DUP when it was sent
    /// before) or PUBREL for those the server has already received. What does not fit goes
    /// out as acknowledgements make room.
    fn resend(&mut self, now: Instant) {
        let window = self.window();
        if self.on_wire >= window || self.on_wire == self.outgoing.len() {
            return;
        }
        let mut order: Vec<(u64, PacketId)> = self
            .outgoing
            .values()
            .filter(|o| !o.on_wire)
            .map(|o| (o.seq, o.publish.packet_id))
            .collect();
        order.sort_unstable();
        for (_, id) in order {
            if self.on_wire >= window {
                break;
            }
            let stage = self.outgoing[&id].stage;
            let publish = match stage {
                Stage::Comp => None,
                // Dropped instead when its Message Expiry Interval has run out.
                Stage::Ack | Stage::Rec => match self.fresh_copy(id, now) {
                    Some(p) => Some(p),
                    None => continue,
                },
            };
            self.on_wire += 1;
            let o = self.outgoing.get_mut(&id).expect("collected above");
            o.on_wire = true;
            let dup = o.sent;
            o.sent = true;
            match publish {
                None => self.emit(Packet::PubRel(Ack::new(id)), now),
                Some(p) => self.emit_publish(Publish { dup, ..p }, now),
            }
        }
    }

    fn dispatch(&mut self, packet: Packet, now: Instant) -> Result<(), ClientError> {
        match packet {
            Packet::Publish(p) => self.on_publish(p, now)?,
            Packet::PubAck(ack) => self.on_ack(ack, Stage::Ack, now)?,
            Packet::PubRec(ack) => match self.outgoing.get_mut(&ack.packet_id) {
                Some(o) if o.stage == Stage::Ack => {
                    return Err(wrong_ack(PacketType::PubRec, ack.packet_id, Stage::Ack))
                }
                // A refusal ends the QoS 2 flow here: no PUBREL (4.3.3).
                Some(o) if o.stage == Stage::Rec && !ack.reason.is_success() => {
                    self.on_ack(ack, Stage::Rec, now)?
                }
                Some(o) => {
                    let id = ack.packet_id;
                    o.stage = Stage::Comp;
                    self.emit(Packet::PubRel(Ack::new(id)), now);
                }
                // Not ours (any more): PUBREL lets the server finish its side harmlessly.
                None if ack.reason.is_success() => {
                    self.emit(Packet::PubRel(Ack::new(ack.packet_id)), now)
                }
                None => {}
            },
            Packet::PubComp(ack) => self.on_ack(ack, Stage::Comp, now)?,
            Packet::PubRel(Ack { packet_id: id, .. }) => {
                // The id is released; PUBCOMP also for an id we do not know (MQTT-4.3.3-2:
                // the server may resend PUBREL after we already answered it).
                self.incoming_qos2.remove(&id);
                self.emit(Packet::PubComp(Ack::new(id)), now);
            }
            Packet::SubAck(ack) => self.on_suback(ack)?,
            Packet::UnsubAck(ack) => self.on_unsuback(ack)?,
            Packet::PingResp => self.ping_sent = None,
            Packet::Auth(a) if self.level().is_v5() => self.on_auth(a, now)?,
            Packet::Disconnect(d) if self.level().is_v5() => {
                self.phase = Phase::Idle;
                return Err(server_disconnect(d));
            }
            other => return Err(ProtocolError::UnexpectedPacket(other.packet_type()).into()),
        }
        Ok(())
    }

    fn on_publish(&mut self, mut p: Publish, now: Instant) -> Result<(), ClientError> {
        if self.level().is_v5() {
            self.resolve_alias(&mut p)?;
            if p.qos != QoS::AtMostOnce {
                self.check_receive_maximum(p.packet_id)?;
            }
        }
        if let Some(waiting) = &mut self.manual_acks {
            if p.qos != QoS::AtMostOnce && !self.incoming_qos2.contains(&p.packet_id) {
                // The application acknowledges; a repeat of a message it has not acknowledged
                // yet is the same message and is not handed over twice.
                if waiting.insert(p.packet_id) {
                    self.events.push_back(Event::Message(p));
                }
                return Ok(());
            }
        }
        match p.qos {
            QoS::AtMostOnce => self.events.push_back(Event::Message(p)),
            QoS::AtLeastOnce => {
                let id = p.packet_id;
                self.events.push_back(Event::Message(p));
                self.emit(Packet::PubAck(Ack::new(id)), now);
            }
            QoS::ExactlyOnce => {
                let id = p.packet_id;
                // Delivered on first receipt; a repeat before PUBREL only gets its PUBREC.
                if self.incoming_qos2.insert(id) {
                    self.events.push_back(Event::Message(p));
                }
                self.emit(Packet::PubRec(Ack::new(id)), now);
            }
        }
        Ok(())
    }

    /// PUBACK, PUBCOMP or a refusing PUBREC: completes the message if it waits for exactly
    /// that, successfully or (a reason code of 0x80 or above) not.
    fn on_ack(&mut self, ack: Ack, stage: Stage, now: Instant) -> Result<(), ClientError> {
        let id = ack.packet_id;
        match self.outgoing.get(&id) {
            Some(o) if o.stage == stage => {
                if o.on_wire {
                    self.on_wire -= 1;
                }
                self.outgoing.remove(&id);
                self.ids.release(id);
                let event = if ack.reason.is_success() {
                    Event::Published(id)
                } else {
                    Event::Rejected {
                        packet_id: id,
                        ack: stage.packet_type(),
                        reason: ack.reason,
                        reason_string: reason_string(&ack.properties),
                    }
                };
                self.events.push_back(event);
                if self.phase == Phase::Connected {
                    // Room for one held back by the server's Receive Maximum, if any.
                    self.resend(now);
                }
                Ok(())
            }
            Some(o) => Err(wrong_ack(stage.packet_type(), id, o.stage)),
            // A late duplicate of an acknowledgement we already had.
            None => Ok(()),
        }
    }

    /// Whether a QoS 1/2 publish would be taken now: below `max_inflight` and below the
    /// server's Receive Maximum.
    pub fn window_open(&self) -> bool {
        self.outgoing.len() < self.window() && self.ids.in_use() < usize::from(u16::MAX)
    }

    /// QoS 1/2 publishes allowed in flight on this connection.
    pub fn window(&self) -> usize {
        let server = self
            .v5
            .server
            .receive_maximum
            .map_or(usize::MAX, usize::from);
        self.config.max_inflight.min(server)
    }

    /// Sends a PUBLISH (its `packet_id` and `dup` are overwritten). QoS 0 is sent only while
    /// connected (otherwise dropped, as "at most once" allows) and returns id 0. QoS 1/2 takes
    /// a packet id and a place in the window, and is sent now if connected, else on resume.
    pub fn publish(&mut self, mut publish: Publish, now: Instant) -> Result<PacketId, WindowFull> {
        publish.dup = false;
        if publish.qos == QoS::AtMostOnce {
            publish.packet_id = 0;
            if self.phase == Phase::Connected {
                self.emit_publish(publish, now);
            }
            return Ok(0);
        }
        if !self.window_open() {
            return Err(WindowFull);
        }
        let id = self.ids.allocate().ok_or(WindowFull)?;
        publish.packet_id = id;
        // Not while resends wait for room: this one must not overtake them.
        let connected = self.phase == Phase::Connected && self.on_wire == self.outgoing.len();
        if connected {
            self.on_wire += 1;
            self.emit_publish(publish.clone(), now);
        }
        let stage = if publish.qos == QoS::AtLeastOnce {
            Stage::Ack
        } else {
            Stage::Rec
        };
        self.outgoing.insert(
            id,
            Outgoing {
                seq: self.next_seq,
                publish,
                stage,
                sent: connected,
                on_wire: connected,
                queued_at: now,
            },
        );
        self.next_seq += 1;
        Ok(id)
    }

    /// Sends DISCONNECT; the caller closes the connection once it is written. The session
    /// (messages in flight) is kept for a later `connect` with a persistent session.
    pub fn disconnect(&mut self, now: Instant) {
        self.disconnect_with(Disconnect::NORMAL, now)
    }

    /// Sends this DISCONNECT (MQTT 5: a reason code and properties; 3.1.1 writes neither).
    pub fn disconnect_with(&mut self, disconnect: Disconnect, now: Instant) {
        if self.phase == Phase::Connected {
            self.emit(Packet::Disconnect(disconnect), now);
        }
        self.phase = Phase::Disconnecting;
    }

    /// Acknowledgements wait for [`acknowledge`](Self::acknowledge) instead of going out when
    /// a QoS 1/2 message arrives: the server keeps (and resends) a message until whoever
    /// received it has really taken it over, e.g. a bridge once the other broker acknowledged.
    pub fn with_manual_acks(mut self) -> ClientState {
        self.manual_acks = Some(AHashSet::new());
        self
    }

    /// Sends the PUBACK (QoS 1) or PUBREC (QoS 2) of a message received on this connection
    /// with manual acknowledgements. False when there is nothing to acknowledge: QoS 0, no
    /// manual acknowledgements, already acknowledged, or received on a connection since lost
    /// (the server sends such a message again).
    pub fn acknowledge(&mut self, packet_id: PacketId, qos: QoS, now: Instant) -> bool {
        let waiting = match &mut self.manual_acks {
            Some(waiting) if qos != QoS::AtMostOnce && self.phase == Phase::Connected => waiting,
            _ => return false,
        };
        if !waiting.remove(&packet_id) {
            return false;
        }
        if qos == QoS::AtLeastOnce {
            self.emit(Packet::PubAck(Ack::new(packet_id)), now);
        } else {
            self.incoming_qos2.insert(packet_id);
            self.emit(Packet::PubRec(Ack::new(packet_id)), now);
        }
        true
    }

    /// The connection is gone. Unsent packets are dropped; SUBSCRIBE/UNSUBSCRIBE requests are
    /// abandoned; with a clean session the messages in flight are too.
    pub fn connection_lost(&mut self) {
        self.phase = Phase::Idle;
        if let Some(waiting) = &mut self.manual_acks {
            // The server sends them again on the next connection, if it kept the session.
            waiting.clear();
        }
        self.outbox.clear();
        self.outbox_bytes = 0;
        self.v5.unsent_acks = 0;
        self.ping_sent = None;
        self.v5.aliases.clear();
        self.on_wire = 0;
        for o in self.outgoing.values_mut() {
            o.on_wire = false;
        }
        let mut abandoned: Vec<PacketId> = self.requests.drain().map(|(id, _)| id).collect();
        if self.config.clean_session {
            abandoned.extend(self.outgoing.drain().map(|(id, _)| id));
            self.incoming_qos2.clear();
        }
        abandoned.sort_unstable();
        for id in abandoned {
            self.ids.release(id);
            self.events.push_back(Event::Abandoned(id));
        }
    }

    /// Checks the timers: the CONNACK deadline, the PINGRESP deadline, and whether a PINGREQ
    /// is due. A ping is due once either direction has been silent for the keepalive interval:
    /// the spec needs one after `keep_alive` without sending (MQTT-3.1.2-23), and pinging
    /// after `keep_alive` without receiving is how a dead server is noticed by a client that
    /// only sends.
    pub fn poll(&mut self, now: Instant) -> Result<(), ClientError> {
        match self.phase {
            Phase::Connecting(since) if now >= since + self.config.connect_timeout => {
                Err(ClientError::Timeout {
                    waiting_for: "CONNACK",
                    after: self.config.connect_timeout,
                })
            }
            Phase::Connected if !self.config.keep_alive.is_zero() => {
                match self.ping_sent {
                    Some(sent) if now >= sent + self.config.ping_timeout => {
                        return Err(ClientError::Timeout {
                            waiting_for: "PINGRESP",
                            after: self.config.ping_timeout,
                        })
                    }
                    Some(_) => {}
                    None if now >= self.idle_since() + self.config.keep_alive => {
                        self.ping_sent = Some(now);
                        self.emit(Packet::PingReq, now);
                    }
                    None => {}
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The caller has stopped reading (its application is not taking messages), so a
    /// PINGRESP may be sitting unread: the PINGRESP deadline starts again from `now`.
    pub fn hold_ping_deadline(&mut self, now: Instant) {
        if let Some(sent) = &mut self.ping_sent {
            *sent = now;
        }
    }

    fn idle_since(&self) -> Instant {
        self.last_sent.min(self.last_received)
    }

    /// When [`poll`](Self::poll) has something to do next, if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Connecting(since) => Some(since + self.config.connect_timeout),
            Phase::Connected if !self.config.keep_alive.is_zero() => Some(match self.ping_sent {
                Some(sent) => sent + self.config.ping_timeout,
                None => self.idle_since() + self.config.keep_alive,
            }),
            _ => None,
        }
    }

    fn emit(&mut self, packet: Packet, now: Instant) {
        self.count_ack(&packet, true);
        self.outbox_bytes += packet.encoded_len(self.level());
        self.outbox.push_back(packet);
        self.last_sent = now;
    }

    /// The next packet to write.
    pub fn pop_packet(&mut self) -> Option<Packet> {
        let p = self.outbox.pop_front()?;
        self.count_ack(&p, false);
        self.outbox_bytes -= p.encoded_len(self.level());
        Some(p)
    }

    /// Encoded size of everything waiting in the outbox.
    pub fn outbox_bytes(&self) -> usize {
        self.outbox_bytes
    }

    pub fn pop_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn is_connected(&self) -> bool {
        self.phase == Phase::Connected
    }

    /// Whether DISCONNECT has been queued (or asked for) on this connection.
    pub fn is_disconnecting(&self) -> bool {
        self.phase == Phase::Disconnecting
    }

    /// Whether the last CONNACK said the server had kept the session.
    pub fn session_present(&self) -> bool {
        self.session_present
    }

    /// Outgoing QoS 1/2 messages not yet completed.
    pub fn inflight(&self) -> usize {
        self.outgoing.len()
    }

    /// Incoming QoS 2 messages received but not yet released by PUBREL.
    pub fn incoming_unreleased(&self) -> usize {
        self.incoming_qos2.len()
    }

    /// The client identifier the server assigned (MQTT 5 CONNACK), if it did.
    pub fn assigned_client_id(&self) -> Option<&str> {
        self.v5.assigned_client_id.as_ref().map(ByteStr::as_str)
    }

    /// The properties of the last MQTT 5 CONNACK.
    pub fn connack_properties(&self) -> Option<&Properties> {
        self.v5.server.properties.as_deref()
    }

    /// The server's Maximum Packet Size (MQTT 5 CONNACK), if it set one.
    pub fn server_maximum_packet_size(&self) -> Option<u32> {
        self.v5.server.maximum_packet_size
    }

    /// The server's Topic Alias Maximum (MQTT 5 CONNACK; 0 when absent): the most topic
    /// aliases the client may use, if it wants to (`with_outgoing_aliases`).
    pub fn server_topic_alias_maximum(&self) -> u16 {
        self.v5.server.topic_alias_maximum.unwrap_or(0)
    }

    /// The keepalive in force: the configured one, or the server's Server Keep Alive.
    pub fn keep_alive(&self) -> Duration {
        self.config.keep_alive
    }
}

fn reason_string(properties: &Option<Box<Properties>>) -> Option<String> {
    properties
        .as_ref()
        .and_then(|p| p.reason_string.as_ref())
        .map(|s| s.as_str().to_string())
}

fn server_disconnect(d: Disconnect) -> ClientError {
    ClientError::ServerDisconnect {
        reason: d.reason,
        reason_string: reason_string(&d.properties),
    }
}

fn wrong_ack(ack: PacketType, packet_id: PacketId, waiting: Stage) -> ClientError {
    ProtocolError::WrongAck {
        ack,
        packet_id,
        expected: waiting.packet_type(),
    }
    .into()
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
