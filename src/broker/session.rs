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

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::rc::Rc;

use ahash::AHasher;
use bytes::Bytes;

mod flow;
mod shared;
mod stored;

pub use shared::Unreceived;
use stored::Stored;
pub use stored::{StoredItem, NOT_JOURNALLED};

use smallvec::SmallVec;

use super::durability::Ticket;
use super::mesh::{Grant, Message, SubscriberId};
use super::output::OutputQueue;
use super::qos2_gate::{IncomingQos2, Qos2Gate};
use super::shared::ShareKey;
use crate::protocol::{
    encode_ack, ByteStr, Packet, PacketId, PacketType, ProtocolLevel, PublishHeader, QoS, SubAck,
    UnsubAck,
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
        /// MQTT 5 Subscription Identifier to send it with; 0: none.
        subscription_id: u32,
        /// The shared subscription it came through: if the session ends before the client
        /// has it, it goes to another member of the group.
        share: Option<Arc<ShareKey>>,
    },
    SubAck(SubAck),
    UnsubAck(UnsubAck),
}

/// What the attached client said in CONNECT that bounds what it is sent: its protocol level
/// and, in MQTT 5, its Receive Maximum and Maximum Packet Size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLimits {
    pub level: ProtocolLevel,
    /// QoS 1/2 messages in flight to it at once (MQTT-3.3.4-7), besides `--max-inflight`.
    pub receive_maximum: u16,
    /// Larger PUBLISHes are not sent to it but dropped and counted (MQTT-3.1.2-24 of 5.0).
    pub max_packet_size: u32,
}

impl Default for PeerLimits {
    fn default() -> Self {
        PeerLimits {
            level: ProtocolLevel::V311,
            receive_maximum: u16::MAX,
            max_packet_size: u32::MAX,
        }
    }
}

/// What `fill` did that the shard counts: PUBLISHes written, and messages discarded instead
/// of sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FillCounts {
    /// PUBLISH packets written (resends included).
    pub publishes: u32,
    /// Larger than the client's Maximum Packet Size.
    pub too_large: u32,
    /// Their Message Expiry Interval ran out while they waited.
    pub expired: u32,
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
    /// The message's payload bytes, as counted in `queued_bytes`: kept here so that the
    /// acknowledgement need not read the message, cold by then (an MQTT payload is under
    /// 256 MiB). It costs no room: the entry has padding for it.
    size: u32,
    message: Arc<Message>,
    qos: QoS,
    retain: bool,
    state: InflightState,
    seq: u64,
    subscription_id: u32,
    share: Option<Arc<ShareKey>>,
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

/// Where a message comes to a session's queue from, which says how far past its limits the
/// queue of a live subscriber takes it (see [`Session::enqueue_shared`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Routed on this shard: its publisher is held back as soon as the subscriber is under
    /// pressure, so the overshoot ([`OVERSHOOT_MESSAGES`], [`OVERSHOOT_BYTES`]) bounds it.
    Routed,
    /// From another shard, routed before that shard heard of the pressure (under overload,
    /// whatever its publishers sent meanwhile): never dropped for the overshoot, since what
    /// the other shards may have in flight to this one is bounded by the inbox's budget
    /// (`mesh::IN_FLIGHT_DELIVERIES`, `mesh::IN_FLIGHT_BYTES`) and their own backlogs.
    FromShard,
}

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
    /// Filter → what it grants, as the client subscribed.
    pub subscriptions: HashMap<ByteStr, Grant, Hasher>,
    /// Shared by every session of the shard.
    limits: Rc<SessionLimits>,
    queue: VecDeque<Outbound>,
    /// `queue` may hold a SUBACK or UNSUBACK (false: it holds none). They may pass QoS 1/2
    /// messages that wait for the window, since a client may well wait for its SUBACK before
    /// acknowledging anything. A flag, not a count, to keep the session small: a search that
    /// finds none clears it.
    controls_queued: bool,
    /// Payload bytes the session holds: queued, and in flight until acknowledged, so
    /// `max_queued_bytes` bounds its memory whatever the window (`max_inflight`).
    queued_bytes: usize,
    inflight: VecDeque<Inflight>,
    /// Inflight entries (from the front) that must be sent again, as after a reconnect.
    resend: usize,
    last_packet_id: PacketId,
    /// Incoming QoS 2 ids between PUBLISH and PUBREL: a repeated PUBLISH is not forwarded
    /// again, and its PUBREC waits for what the first one's did (see `qos2_gate`).
    incoming_qos2: HashMap<PacketId, IncomingQos2, Hasher>,
    /// The connection currently attached (0: none), and why a previous one must go.
    attached: u64,
    kicked: Option<(u64, Kick)>,
    waker: Option<Waker>,
    /// When the last connection went away (for `--session-expiry`).
    detached_at: Option<Instant>,
    /// Filed with its shard to be woken when gates open (see `shard::gates`).
    pub filed_at_gate: bool,
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
    /// The attached (or last) client's level and limits.
    pub peer: PeerLimits,
    /// Seconds the session outlives its connection; `u32::MAX`: until removed otherwise.
    /// MQTT 5's Session Expiry Interval, or `--session-expiry` for 3.1.1 persistent sessions.
    expiry_secs: u32,
    /// What `fill` did since the connection last took the counts.
    fill_counts: FillCounts,
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
            controls_queued: false,
            queued_bytes: 0,
            inflight: VecDeque::new(),
            resend: 0,
            last_packet_id: 0,
            incoming_qos2: HashMap::default(),
            attached: 0,
            kicked: None,
            waker: None,
            detached_at: None,
            filed_at_gate: false,
            pressure: false,
            stalled: false,
            progressed: false,
            last_progress: Instant::now(),
            stored: None,
            peer: PeerLimits::default(),
            expiry_secs: u32::MAX,
            fill_counts: FillCounts::default(),
        }
    }

    /// What `fill` did since the last call, and resets the counts.
    pub fn take_fill_counts(&mut self) -> FillCounts {
        std::mem::take(&mut self.fill_counts)
    }

    /// When the last connection went away; None while one is attached.
    pub fn detached_since(&self) -> Option<Instant> {
        self.detached_at
    }

    /// How long the session outlives its connection (None: no limit).
    pub fn expiry(&self) -> Option<Duration> {
        (self.expiry_secs != u32::MAX).then(|| Duration::from_secs(u64::from(self.expiry_secs)))
    }

    /// The session's expiry when it is not the broker's `--session-expiry` default (an MQTT 5
    /// client's own), for the log; None otherwise.
    pub fn own_expiry_secs(&self) -> Option<u32> {
        self.peer.level.is_v5().then_some(self.expiry_secs)
    }

    /// Sets how long the session outlives its connection (None: no limit).
    pub fn set_expiry(&mut self, expiry: Option<Duration>) {
        self.expiry_secs = expiry.map_or(u32::MAX, |d| {
            d.as_secs().min(u64::from(u32::MAX - 1)) as u32
        });
    }

    /// Whether the session has been disconnected longer than its expiry.
    pub fn expired(&self, now: Instant) -> bool {
        self.expiry_secs != u32::MAX
            && self
                .disconnected_for(now)
                .is_some_and(|away| away >= Duration::from_secs(u64::from(self.expiry_secs)))
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
        if let Some(stored) = &mut self.stored {
            stored.restored_unclaimed = false;
            stored.attached_ms = crate::broker::journal::unix_ms();
        }
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
        self.enqueue_as(message, qos, retain, 0)
    }

    /// [`Session::enqueue`] for a subscription with an MQTT 5 Subscription Identifier (0:
    /// none), which the client is sent with the message.
    pub fn enqueue_as(
        &mut self,
        message: Arc<Message>,
        qos: QoS,
        retain: bool,
        subscription_id: u32,
    ) -> Result<Queued, Dropped> {
        self.enqueue_shared(message, qos, retain, subscription_id, None, Arrival::Routed)
    }

    /// [`Session::enqueue_as`] for a message that came through the shared subscription
    /// `share` (None: not shared), from `arrival`.
    pub fn enqueue_shared(
        &mut self,
        message: Arc<Message>,
        qos: QoS,
        retain: bool,
        subscription_id: u32,
        share: Option<Arc<ShareKey>>,
        arrival: Arrival,
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
            if arrival == Arrival::Routed
                && self.over_limits(OVERSHOOT_MESSAGES, OVERSHOOT_BYTES, size)
            {
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
            subscription_id,
            share,
        });
        self.wake();
        Ok(queued)
    }

    /// Queues an acknowledgement that became ready later (SUBACK/UNSUBACK after every shard
    /// applied the change). Never dropped: there is at most one per client request.
    pub fn enqueue_control(&mut self, item: Outbound) {
        self.queue.push_back(item);
        self.controls_queued = true;
        self.wake();
    }

    /// The first SUBACK/UNSUBACK queued behind a QoS 1/2 message that waits for the window.
    fn take_waiting_control(&mut self) -> Option<Outbound> {
        if !self.controls_queued {
            return None;
        }
        match self
            .queue
            .iter()
            .position(|o| !matches!(o, Outbound::Publish { .. }))
        {
            Some(i) => self.queue.remove(i),
            None => {
                self.controls_queued = false;
                None
            }
        }
    }

    /// Whether `fill` would write something now.
    pub fn has_sendable(&self) -> bool {
        if self.resend > 0 {
            return true;
        }
        match self.queue.front() {
            None => false,
            Some(Outbound::Publish { message, .. }) if !message.deliverable() => {
                self.controls_queued
            }
            Some(Outbound::Publish { qos, .. }) if *qos != QoS::AtMostOnce => {
                self.window_open() || self.controls_queued
            }
            Some(_) => true,
        }
    }

    /// Whether the next message to send waits behind a closed gate (see `qos2_gate`): the
    /// shard must wake the session when gates open.
    pub fn at_closed_gate(&self) -> bool {
        matches!(self.queue.front(), Some(Outbound::Publish { message, .. }) if !message.deliverable())
    }

    fn window_open(&self) -> bool {
        if self.inflight.len()
            >= self
                .limits
                .max_inflight
                .min(usize::from(self.peer.receive_maximum))
        {
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
        let peer = self.peer;
        // Read once per fill, and only when a message expires.
        let mut now = None;
        let mut packets = 0;
        while self.resend > 0 && out.len() < high_water {
            let i = self.inflight.len() - self.resend;
            self.resend -= 1;
            let e = &self.inflight[i];
            match e.state {
                InflightState::Comp => encode_ack(out.encoded(), PacketType::PubRel, e.packet_id),
                _ => {
                    // Sent before, so within the limits; an expired one is finished anyway
                    // (onward delivery had started).
                    self.fill_counts.publishes += 1;
                    let props = v5_properties(&peer, &e.message, e.subscription_id, &mut now);
                    write_publish(
                        out,
                        share_from,
                        &e.message,
                        e.qos,
                        e.retain,
                        true,
                        e.packet_id,
                        props.as_deref(),
                    )
                }
            }
            packets += 1;
        }
        while out.len() < high_water {
            let Some(item) = self.queue.front() else {
                break;
            };
            let gated = matches!(item, Outbound::Publish { message, .. } if !message.deliverable());
            let blocked = gated
                || matches!(item, Outbound::Publish { qos, .. }
                if *qos != QoS::AtMostOnce && !self.window_open());
            let item = if blocked {
                match self.take_waiting_control() {
                    Some(control) => control,
                    None => break,
                }
            } else {
                self.queue.pop_front().expect("front exists")
            };
            packets += 1;
            match item {
                Outbound::Publish {
                    message,
                    qos,
                    retain,
                    seq,
                    subscription_id,
                    share,
                } => {
                    self.queued_bytes -= message.payload.len();
                    if message
                        .v5
                        .as_ref()
                        .is_some_and(|v5| v5.expires_at.is_some())
                        && message.expired(*now.get_or_insert_with(Instant::now))
                    {
                        // MQTT-3.3.2-5: not sent once its expiry interval has passed.
                        // (A journaled copy stays in the log until the next compaction; after
                        // a restart it is found expired again: the log keeps its expiry.)
                        self.fill_counts.expired += 1;
                        packets -= 1;
                        continue;
                    }
                    let props = v5_properties(&peer, &message, subscription_id, &mut now);
                    // Exactly what will be written (the packet id's presence, the property
                    // length's bytes): a packet of exactly the maximum is allowed. Only MQTT 5
                    // clients announce a maximum.
                    let too_large = peer.max_packet_size != u32::MAX
                        && PublishHeader {
                            topic: &message.topic,
                            payload_len: message.payload.len(),
                            qos,
                            retain,
                            dup: false,
                            packet_id: 1,
                            properties: props.as_deref(),
                        }
                        .encoded_len()
                            > peer.max_packet_size as usize;
                    if too_large {
                        // MQTT-3.1.2-25 (5.0): never sent beyond the client's maximum.
                        self.fill_counts.too_large += 1;
                        packets -= 1;
                        continue;
                    }
                    self.fill_counts.publishes += 1;
                    if qos == QoS::AtMostOnce {
                        write_publish(
                            out,
                            share_from,
                            &message,
                            qos,
                            retain,
                            false,
                            0,
                            props.as_deref(),
                        );
                    } else {
                        let packet_id = next_id(self.last_packet_id);
                        self.last_packet_id = packet_id;
                        write_publish(
                            out,
                            share_from,
                            &message,
                            qos,
                            retain,
                            false,
                            packet_id,
                            props.as_deref(),
                        );
                        if let Some(stored) = &mut self.stored {
                            stored.sent.push((seq, packet_id));
                        }
                        // Still held until the client acknowledges it.
                        let size = payload_size(&message.payload);
                        self.queued_bytes += size as usize;
                        self.inflight.push_back(Inflight {
                            size,
                            seq,
                            subscription_id,
                            share,
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
                    let _ = Packet::SubAck(ack).encode(out.encoded(), peer.level);
                }
                Outbound::UnsubAck(ack) => {
                    let _ = Packet::UnsubAck(ack).encode(out.encoded(), peer.level);
                }
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
            if let Some(done) = self.inflight.remove(i) {
                self.queued_bytes -= done.size as usize;
            }
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
        match self.incoming_qos2.entry(packet_id) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(IncomingQos2::default());
                true
            }
        }
    }

    /// The incoming QoS 2 message `packet_id` waits behind `gate` until accepted.
    pub fn set_incoming_gate(&mut self, packet_id: PacketId, gate: Arc<Qos2Gate>) {
        self.incoming_qos2.entry(packet_id).or_default().gate = Some(gate);
    }

    /// The PUBREC of incoming QoS 2 message `packet_id` waits for `ticket` (kept for a
    /// repeated PUBLISH, see `IncomingQos2`).
    pub fn set_incoming_ticket(&mut self, packet_id: PacketId, ticket: Ticket) {
        if let Some(incoming) = self.incoming_qos2.get_mut(&packet_id) {
            incoming.ticket = Some(Box::new(ticket));
        }
    }

    /// The gate of incoming QoS 2 message `packet_id`, if it has one (still waiting or not).
    pub fn incoming_gate(&self, packet_id: PacketId) -> Option<Arc<Qos2Gate>> {
        self.incoming_qos2.get(&packet_id)?.gate.clone()
    }

    /// What the PUBREC of a repeat of incoming QoS 2 message `packet_id` waits for: its gate,
    /// if it has one (still closed or not), and the first PUBREC's ticket.
    pub fn incoming_repeat(&self, packet_id: PacketId) -> (Option<Arc<Qos2Gate>>, Ticket) {
        match self.incoming_qos2.get(&packet_id) {
            Some(incoming) => (
                incoming.gate.clone(),
                incoming.ticket.as_deref().cloned().unwrap_or_default(),
            ),
            None => (None, Ticket::default()),
        }
    }

    /// Incoming QoS 2 messages between PUBLISH and PUBREL (they count against MQTT 5's
    /// Receive Maximum), and whether `packet_id` is one of them.
    pub fn incoming_qos2(&self, packet_id: PacketId) -> (usize, bool) {
        (
            self.incoming_qos2.len(),
            self.incoming_qos2.contains_key(&packet_id),
        )
    }

    /// PUBREL: the id may be used for a new message from now on. Returns whether it was
    /// waiting for its PUBREL.
    pub fn on_pubrel(&mut self, packet_id: PacketId) -> bool {
        self.incoming_qos2.remove(&packet_id).is_some()
    }

    /// Forgets everything a clean session does not keep past its connection.
    pub fn clear_delivery_state(&mut self) {
        self.queue.clear();
        self.controls_queued = false;
        self.queued_bytes = 0;
        self.inflight.clear();
        self.resend = 0;
        self.incoming_qos2.clear();
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Payload bytes held, queued or in flight.
    pub fn held_bytes(&self) -> usize {
        self.queued_bytes
    }

    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }
}

/// A payload's size as an in-flight entry keeps it (see `Inflight::size`), and as it is
/// counted in `queued_bytes` while in flight. (No payload comes near 4 GiB: the cap only
/// keeps the count from wrapping.)
fn payload_size(payload: &[u8]) -> u32 {
    u32::try_from(payload.len()).unwrap_or(u32::MAX)
}

fn next_id(id: PacketId) -> PacketId {
    if id == u16::MAX {
        1
    } else {
        id + 1
    }
}

/// The property block an MQTT 5 client is sent with `m` (without its length): what is left of
/// the Message Expiry Interval (MQTT-3.3.2-6), then the forwarded properties. `None` for a
/// 3.1.1 client, which gets no block at all.
fn v5_properties(
    peer: &PeerLimits,
    m: &Message,
    subscription_id: u32,
    now: &mut Option<Instant>,
) -> Option<SmallVec<[u8; 64]>> {
    if !peer.level.is_v5() {
        return None;
    }
    let mut props = SmallVec::new();
    if subscription_id != 0 {
        props.push(0x0B);
        let mut v = subscription_id;
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                props.push(b);
                break;
            }
            props.push(b | 0x80);
        }
    }
    if let Some(v5) = &m.v5 {
        if let Some(at) = v5.expires_at {
            let now = *now.get_or_insert_with(Instant::now);
            let left = at.saturating_duration_since(now);
            // Rounded up: a message with 0.4 s left is not sent as already expired.
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            props.push(0x02);
            props.extend_from_slice(&(secs.min(u64::from(u32::MAX)) as u32).to_be_bytes());
        }
        props.extend_from_slice(&v5.properties);
    }
    Some(props)
}

/// Appends a PUBLISH of `m`: copied whole when its payload is small, as a header followed by
/// the shared payload from `share_from` bytes on. `properties` is the MQTT 5 property block
/// (None for 3.1.1).
#[allow(clippy::too_many_arguments)]
fn write_publish(
    out: &mut OutputQueue,
    share_from: usize,
    m: &Message,
    qos: QoS,
    retain: bool,
    dup: bool,
    packet_id: PacketId,
    properties: Option<&[u8]>,
) {
    if qos == QoS::AtMostOnce && !retain {
        let frame = match properties {
            None => m.qos0_frame(),
            Some(p) if p == m.forwarded_properties() => m.qos0_frame_v5(),
            // Its own Subscription Identifier or Message Expiry.
            Some(_) => None,
        };
        if let Some(frame) = frame {
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
        properties,
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
