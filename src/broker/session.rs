//! One client's session: what the broker owes it and what it owes the broker.
//!
//! A session owns its subscriptions (as the client sees them), the bounded queue of messages
//! waiting to be sent, the window of outgoing QoS 1/2 messages in flight with their packet ids,
//! and the ids of incoming QoS 2 messages not yet released. It takes events (a message to
//! deliver, an acknowledgement from the client) and answers with decisions; it never touches a
//! socket. The connection asks it to [`Session::fill`] a write buffer when the socket has room.
//!
//! A session lives on its client id's home shard and may outlive its connection
//! (CleanSession = 0); `attached` says which connection, if any, it currently speaks through.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::rc::Rc;

use ahash::AHasher;
use bytes::Bytes;

mod flow;
mod stored;

use stored::Stored;
pub use stored::StoredItem;

use super::mesh::{Message, SubscriberId};
use super::output::OutputQueue;
use crate::protocol::{
    encode_ack, ByteStr, Packet, PacketId, PacketType, ProtocolLevel, PublishHeader, QoS, SubAck,
};

/// Why a connection was told to close by someone other than its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    /// Another connection with the same client id took over (MQTT-3.1.4-2).
    TakenOver,
    /// Another connection with the same client id took over and continues this persistent
    /// session (CleanSession = 0 on both): the session lives on, so the old connection's will
    /// is not published (Mosquitto's behaviour, and MQTT 5's meaning of a continuing session).
    Continued,
    /// The broker is stopping.
    Shutdown,
}

/// Something waiting to be written to the client, in order.
#[derive(Debug)]
pub enum Outbound {
    Publish {
        message: Arc<Message>,
        qos: QoS,
        retain: bool,
        /// The message's number in the session's journal (see [`Session::stored_as`]).
        seq: u64,
    },
    SubAck(SubAck),
    UnsubAck(PacketId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// The acknowledgement an inflight message waits for.
enum InflightState {
    /// QoS 1 PUBLISH sent, PUBACK expected.
    Ack,
    /// QoS 2 PUBLISH sent, PUBREC expected.
    Rec,
    /// PUBREL sent, PUBCOMP expected.
    Comp,
}

#[derive(Debug)]
struct Inflight {
    packet_id: PacketId,
    message: Arc<Message>,
    qos: QoS,
    retain: bool,
    state: InflightState,
    seq: u64,
}

/// What an acknowledgement from the client (PUBACK, PUBREC, PUBCOMP) turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// It completed (or, PUBREC, advanced) the flow of a message in flight.
    Done,
    /// No message with that id is in flight: a late duplicate, harmless.
    NotInFlight,
    /// The id is in flight but waits for another acknowledgement (PUBREC or PUBCOMP for QoS 1,
    /// PUBACK for QoS 2, PUBACK or PUBREC where PUBCOMP is due): a protocol violation. The
    /// message stays in flight, owed to a persistent session.
    WrongKind,
}

/// Why a message did not make it into the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// The queue reached its message or byte limit (QoS 0, an offline session, or a subscriber
    /// that stalled: see [`Session::enqueue`]).
    QueueFull,
    /// QoS 0 for a client that is not connected.
    Offline,
}

/// How a message went into the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// Within the limits.
    Normally,
    /// Beyond the limits, for a connected subscriber that keeps reading: the publishers that
    /// feed it must now wait (the caller raises the pressure, see `pressure`).
    OverLimit,
}

/// Limits a session enforces; copied from the broker configuration.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub max_inflight: usize,
    pub max_queued_messages: usize,
    pub max_queued_bytes: usize,
    pub queue_qos0: bool,
    /// Payloads of at least this many bytes are sent from the message they arrived in instead
    /// of being copied into the write buffer (see [`OutputQueue`]); `usize::MAX`: never.
    pub share_payloads_from: usize,
    /// A subscriber with a full queue that neither read nor acknowledged anything for this long
    /// is stalled: its new messages are dropped instead of holding its publishers back.
    pub stall_timeout: Duration,
}

/// How far beyond its limits a live subscriber's queue may grow while its publishers are being
/// paused: by what they had already sent when the pressure reached them (a few reads each; a
/// publisher on another shard learns of it a cross-shard hop later), which does not depend on
/// the configured limits. Beyond this even a live subscriber's QoS 1/2 messages are dropped
/// and counted: the last bound on memory, not a policy.
pub const OVERSHOOT_MESSAGES: usize = 65_536;
pub const OVERSHOOT_BYTES: usize = 64 << 20;

/// aHash with the process's random keys, stored once instead of in every map: a session exists
/// per client, and two `AHashMap`s would carry 64 bytes of keys each.
type Hasher = BuildHasherDefault<AHasher>;

pub struct Session {
    pub client_id: ByteStr,
    pub id: SubscriberId,
    pub clean: bool,
    /// Whether the attached connection is parked (see `parking`): the sweep leaves it alone.
    pub parked: bool,
    /// A QoS 1/2 message was dropped at a full queue and that was logged (once per session).
    pub warned_full: bool,
    /// The parked socket became readable (reported by the shard's epoll watcher).
    pub readable: bool,
    /// The connection's keepalive deadline came up in the shard's queue: check it.
    pub keepalive_due: bool,
    /// The user the session was opened by; only they may resume it.
    pub username: Option<ByteStr>,
    /// Filter → granted QoS, as the client subscribed.
    pub subscriptions: HashMap<ByteStr, QoS, Hasher>,
    /// Shared by every session of the shard.
    limits: Rc<SessionLimits>,
    queue: VecDeque<Outbound>,
    queued_bytes: usize,
    inflight: VecDeque<Inflight>,
    /// Inflight entries (from the front) that must be sent again, as after a reconnect.
    resend: usize,
    last_packet_id: PacketId,
    /// Incoming QoS 2 ids between PUBLISH and PUBREL: a repeated PUBLISH is not forwarded again.
    incoming_qos2: HashSet<PacketId, Hasher>,
    /// The connection currently attached (0: none), and why a previous one must go.
    attached: u64,
    kicked: Option<(u64, Kick)>,
    waker: Option<Waker>,
    /// When the last connection went away (for `--session-expiry`).
    detached_at: Option<Instant>,
    /// The queue went over its limits and the publishers feeding it are told to wait, until it
    /// is back under half its limits (see `pressure`).
    pressure: bool,
    /// Declared stalled by the pressure watch: no progress for `stall_timeout` with a full
    /// queue. Its new messages are dropped until it makes progress again.
    stalled: bool,
    /// The client read (our writes moved) or acknowledged something since the pressure watch
    /// last looked: a store per event, no clock read on the hot path.
    progressed: bool,
    /// When the pressure watch last saw progress.
    last_progress: Instant,
    /// Set when the session is written to its shard's journal (a persistent session with
    /// `--data-dir`; see `journal`). Boxed: most sessions are not.
    stored: Option<Box<Stored>>,
}

impl Session {
    pub fn new(
        client_id: ByteStr,
        id: SubscriberId,
        clean: bool,
        limits: Rc<SessionLimits>,
    ) -> Self {
        Session {
            client_id,
            id,
            clean,
            parked: false,
            warned_full: false,
            readable: false,
            keepalive_due: false,
            username: None,
            subscriptions: HashMap::default(),
            limits,
            queue: VecDeque::new(),
            queued_bytes: 0,
            inflight: VecDeque::new(),
            resend: 0,
            last_packet_id: 0,
            incoming_qos2: HashSet::default(),
            attached: 0,
            kicked: None,
            waker: None,
            detached_at: None,
            pressure: false,
            stalled: false,
            progressed: false,
            last_progress: Instant::now(),
            stored: None,
        }
    }

    /// Attaches connection `conn`, telling any previous one to go. Unacknowledged messages of a
    /// resumed session are sent again, first, in their original order (MQTT-4.4.0-1).
    pub fn attach(&mut self, conn: u64) {
        if self.attached != 0 {
            // Only a stored persistent session is attached while connected (`open_session`).
            self.kicked = Some((self.attached, Kick::Continued));
            self.wake();
        }
        self.attached = conn;
        self.detached_at = None;
        self.resend = self.inflight.len();
    }

    /// Detaches `conn` if it is still the attached one; returns whether it was.
    pub fn detach(&mut self, conn: u64) -> bool {
        if self.attached == conn {
            self.attached = 0;
            self.waker = None;
            self.detached_at = Some(Instant::now());
            true
        } else {
            false
        }
    }

    pub fn is_attached(&self, conn: u64) -> bool {
        self.attached == conn
    }

    pub fn is_connected(&self) -> bool {
        self.attached != 0
    }

    /// How long the session has had no connection, or None while it has one.
    pub fn disconnected_for(&self, now: Instant) -> Option<Duration> {
        self.detached_at.map(|t| now.saturating_duration_since(t))
    }

    /// Tells the attached connection to close.
    pub fn kick(&mut self, why: Kick) {
        if self.attached != 0 {
            self.kicked = Some((self.attached, why));
            self.wake();
        }
    }

    /// Whether connection `conn` has been told to go, and why.
    pub fn kicked(&self, conn: u64) -> Option<Kick> {
        match self.kicked {
            Some((c, why)) if c == conn => Some(why),
            _ if self.attached != conn => Some(Kick::TakenOver),
            _ => None,
        }
    }

    pub fn set_waker(&mut self, waker: &Waker) {
        match &self.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => self.waker = Some(waker.clone()),
        }
    }

    /// Wakes the attached connection's task (to send, to close, or to take a readable parked
    /// socket back).
    pub fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Queues a message for the client. QoS 0 messages for a disconnected client are dropped
    /// unless `queue_qos0` is set, as in Mosquitto; QoS 1/2 wait for a resumed session.
    ///
    /// At its limits the queue drops QoS 0 and refuses everything for an offline session or a
    /// stalled subscriber. A QoS 1/2 message for a connected subscriber that keeps reading is
    /// taken beyond the limits instead (by up to [`OVERSHOOT_MESSAGES`]): it has been
    /// acknowledged to its publisher, and the answer is to pause the publishers
    /// ([`Queued::OverLimit`] the first time), not to lose it.
    pub fn enqueue(
        &mut self,
        message: Arc<Message>,
        qos: QoS,
        retain: bool,
    ) -> Result<Queued, Dropped> {
        let offline = self.attached == 0;
        if offline && qos == QoS::AtMostOnce && !self.limits.queue_qos0 {
            return Err(Dropped::Offline);
        }
        let size = message.payload.len();
        let mut queued = Queued::Normally;
        if self.over_limits(0, 0, size) {
            if offline || qos == QoS::AtMostOnce || self.stalled {
                return Err(Dropped::QueueFull);
            }
            if self.over_limits(OVERSHOOT_MESSAGES, OVERSHOOT_BYTES, size) {
                return Err(Dropped::QueueFull);
            }
            if !self.pressure {
                self.pressure = true;
                self.progressed = false;
                self.last_progress = Instant::now();
                queued = Queued::OverLimit;
            }
        }
        self.queued_bytes += size;
        // Queued for an absent client, the message may wait for hours: it must not pin the
        // whole read buffer of its publisher.
        let message = if offline {
            Arc::new(message.detached())
        } else {
            message
        };
        let seq = match &mut self.stored {
            Some(stored) => {
                stored.next_seq += 1;
                stored.next_seq - 1
            }
            None => 0,
        };
        self.queue.push_back(Outbound::Publish {
            message,
            qos,
            retain,
            seq,
        });
        self.wake();
        Ok(queued)
    }

    /// Queues an acknowledgement that became ready later (SUBACK/UNSUBACK after every shard
    /// applied the change). Never dropped: there is at most one per client request.
    pub fn enqueue_control(&mut self, item: Outbound) {
        self.queue.push_back(item);
        self.wake();
    }

    /// Whether `fill` would write something now.
    pub fn has_sendable(&self) -> bool {
        if self.resend > 0 {
            return true;
        }
        match self.queue.front() {
            None => false,
            Some(Outbound::Publish { qos, .. }) if *qos != QoS::AtMostOnce => self.window_open(),
            Some(_) => true,
        }
    }

    fn window_open(&self) -> bool {
        if self.inflight.len() >= self.limits.max_inflight {
            return false;
        }
        // Ids are handed out in sequence, so the only id the next one can collide with is the
        // oldest in flight (after 65535 newer ones): wait for it rather than reuse it.
        match self.inflight.front() {
            Some(oldest) => oldest.packet_id != next_id(self.last_packet_id),
            None => true,
        }
    }

    /// Encodes what may be sent now into `out`, until `out` holds `high_water` bytes. Returns
    /// how many packets it wrote.
    pub fn fill(&mut self, out: &mut OutputQueue, high_water: usize) -> usize {
        let share_from = self.limits.share_payloads_from;
        let mut packets = 0;
        while self.resend > 0 && out.len() < high_water {
            let i = self.inflight.len() - self.resend;
            self.resend -= 1;
            let e = &self.inflight[i];
            match e.state {
                InflightState::Comp => encode_ack(out.encoded(), PacketType::PubRel, e.packet_id),
                _ => write_publish(
                    out,
                    share_from,
                    &e.message,
                    e.qos,
                    e.retain,
                    true,
                    e.packet_id,
                ),
            }
            packets += 1;
        }
        while out.len() < high_water {
            let Some(item) = self.queue.front() else {
                break;
            };
            if let Outbound::Publish { qos, .. } = item {
                if *qos != QoS::AtMostOnce && !self.window_open() {
                    break;
                }
            }
            let item = self.queue.pop_front().expect("front exists");
            packets += 1;
            match item {
                Outbound::Publish {
                    message,
                    qos,
                    retain,
                    seq,
                } => {
                    self.queued_bytes -= message.payload.len();
                    if qos == QoS::AtMostOnce {
                        write_publish(out, share_from, &message, qos, retain, false, 0);
                    } else {
                        let packet_id = next_id(self.last_packet_id);
                        self.last_packet_id = packet_id;
                        write_publish(out, share_from, &message, qos, retain, false, packet_id);
                        if let Some(stored) = &mut self.stored {
                            stored.sent.push((seq, packet_id));
                        }
                        self.inflight.push_back(Inflight {
                            seq,
                            packet_id,
                            message,
                            qos,
                            retain,
                            state: if qos == QoS::AtLeastOnce {
                                InflightState::Ack
                            } else {
                                InflightState::Rec
                            },
                        });
                    }
                }
                Outbound::SubAck(ack) => {
                    // SUBACK carries at most a few thousand codes; it cannot exceed the limits.
                    let _ = Packet::SubAck(ack).encode(out.encoded(), ProtocolLevel::V311);
                }
                Outbound::UnsubAck(id) => encode_ack(out.encoded(), PacketType::UnsubAck, id),
            }
        }
        packets
    }

    /// What an acknowledgement from the client refers to, checked against what is in flight.
    fn acknowledge(&mut self, packet_id: PacketId, expected: InflightState) -> Ack {
        // Acknowledgements nearly always arrive in order: the match is at the front. Ids in
        // flight are unique (see `window_open`).
        let Some(i) = self.inflight.iter().position(|e| e.packet_id == packet_id) else {
            return Ack::NotInFlight;
        };
        if self.inflight[i].state != expected {
            return Ack::WrongKind;
        }
        if expected == InflightState::Rec {
            self.inflight[i].state = InflightState::Comp;
        } else {
            // Entries still to be re-sent are the last `resend` ones.
            let resend_from = self.inflight.len() - self.resend;
            self.inflight.remove(i);
            if i >= resend_from {
                self.resend -= 1;
            }
            self.wake();
        }
        self.progressed = true;
        self.stalled = false;
        Ack::Done
    }

    /// PUBACK from the client.
    pub fn on_puback(&mut self, packet_id: PacketId) -> Ack {
        self.acknowledge(packet_id, InflightState::Ack)
    }

    /// PUBREC from the client: the caller answers PUBREL unless it is of the wrong kind (also
    /// for an id no longer in flight, so the client can finish its side).
    pub fn on_pubrec(&mut self, packet_id: PacketId) -> Ack {
        self.acknowledge(packet_id, InflightState::Rec)
    }

    pub fn on_pubcomp(&mut self, packet_id: PacketId) -> Ack {
        self.acknowledge(packet_id, InflightState::Comp)
    }

    /// Incoming QoS 2 PUBLISH: true when it is new and must be forwarded, false for a
    /// duplicate of one not yet released (MQTT-4.3.3).
    pub fn on_incoming_qos2(&mut self, packet_id: PacketId) -> bool {
        self.incoming_qos2.insert(packet_id)
    }

    /// PUBREL: the id may be used for a new message from now on. Returns whether it was
    /// waiting for its PUBREL.
    pub fn on_pubrel(&mut self, packet_id: PacketId) -> bool {
        self.incoming_qos2.remove(&packet_id)
    }

    /// Forgets everything a clean session does not keep past its connection.
    pub fn clear_delivery_state(&mut self) {
        self.queue.clear();
        self.queued_bytes = 0;
        self.inflight.clear();
        self.resend = 0;
        self.incoming_qos2.clear();
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }
}

fn next_id(id: PacketId) -> PacketId {
    if id == u16::MAX {
        1
    } else {
        id + 1
    }
}

/// Appends a PUBLISH of `m`: copied whole when its payload is small, as a header followed by
/// the shared payload from `share_from` bytes on.
fn write_publish(
    out: &mut OutputQueue,
    share_from: usize,
    m: &Message,
    qos: QoS,
    retain: bool,
    dup: bool,
    packet_id: PacketId,
) {
    if qos == QoS::AtMostOnce && !retain {
        if let Some(frame) = m.qos0_frame() {
            out.encoded().extend_from_slice(frame);
            return;
        }
    }
    let header = PublishHeader {
        topic: &m.topic,
        payload_len: m.payload.len(),
        qos,
        retain,
        dup,
        packet_id,
        properties: None,
    };
    let shared = m.payload.len() >= share_from;
    let then = if shared { 0 } else { m.payload.len() };
    // Sizes were checked when the message was decoded; encoding cannot fail for them.
    if header.encode(out.encoded(), then).is_err() {
        return;
    }
    if shared {
        out.push_shared(Bytes::clone(&m.payload));
    } else {
        out.encoded().extend_from_slice(&m.payload);
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
