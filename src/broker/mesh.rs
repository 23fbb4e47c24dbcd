//! The shard-to-shard mesh: what shards tell each other and how it travels.
//!
//! Each shard has one bounded crossbeam channel (its inbox) that every other shard sends into,
//! and a doorbell that wakes the inbox's drain task when it sleeps. The doorbell is one end of
//! a socketpair: the drain task declares itself asleep and awaits a readable socket, and a
//! sender that sees the declaration writes one byte (a Dekker-style handshake with SeqCst
//! fences on both sides, so a message and a sleep cannot miss each other). Waking goes through
//! io_uring like any client socket, not through a foreign-thread `Waker`. A sender
//! never blocks its executor: what does not fit stays in the sender's [`Router`] and is retried
//! on the next flush, and the stall is counted. Deliveries to one destination are gathered into
//! a [`DeliveryBatch`] per loop iteration, so a hop across cores costs one channel operation and
//! at most one wake-up per batch, not per message. Messages from one shard to another keep their
//! order because both the router queue and the channel are FIFO.

use std::collections::VecDeque;
use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::cluster_port::HandOver;
use super::qos2_gate::Qos2Gate;
use super::share_balance::ShareLoads;
use super::shared::ShareTag;
use super::stop_barrier::StopBarrier;
use crate::protocol::{encode_publish, ByteStr, Connect, QoS};

/// Index of a shard (one executor, one core).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ShardId(pub u16);

impl ShardId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A session's address anywhere in the broker: its home shard and its slot there. The
/// generation makes a stale address (a session that ended, its slot reused) harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubscriberId {
    pub shard: ShardId,
    /// Whether what the session is sent is written to its shard's log (a persistent session
    /// with `--data-dir`): a publisher's acknowledgement then waits for that shard's disk.
    /// Set when the session starts (or, resumed to outlive its connection, becomes persistent:
    /// `Shard::make_durable`); it sits in padding, so the id stays 12 bytes.
    pub durable: bool,
    pub slot: u32,
    pub generation: u32,
}

impl SubscriberId {
    /// A number that stays the same for this subscriber (as a publisher) while it exists: on
    /// other nodes of a cluster its messages keep their order by it.
    pub fn order_key(&self) -> u64 {
        (u64::from(self.shard.0) << 48) ^ (u64::from(self.generation) << 24) ^ u64::from(self.slot)
    }
}

/// One published message as routed: immutable and shared by every subscriber and shard it
/// reaches. Topic and payload are slices of the publisher's read buffer, never copied on the
/// way (retained and queued-while-offline copies are the exception, see `Message::detached`).
#[derive(Debug)]
pub struct Message {
    pub topic: ByteStr,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// What MQTT 5 adds, when the publisher sent any property a subscriber is given; `None`
    /// for every 3.1.1 message and most MQTT 5 ones, so they pay one pointer.
    pub v5: Option<Box<V5Message>>,
    /// Set by the routing shard when enough subscribers get the message at QoS 0 as a live
    /// forward that encoding it once per protocol version pays (see `Shard::route`).
    share_qos0: AtomicBool,
    /// The whole PUBLISH as every 3.1.1 subscriber that gets it at QoS 0 as a live forward
    /// receives it, made by the first one that needs it once sharing pays.
    qos0_frame: OnceLock<Bytes>,
    /// The same for MQTT 5 subscribers, with the forwarded properties.
    qos0_frame_v5: OnceLock<Bytes>,
    /// From a persistent session's QoS 2 PUBLISH (with `--data-dir`): not delivered until its
    /// publisher's shard accepted it (see `qos2_gate`).
    gate: Option<Arc<Qos2Gate>>,
}

/// The MQTT 5 part of a message: the properties forwarded to MQTT 5 subscribers unchanged
/// (MQTT-3.3.2-18 keeps User Properties in order) and the Message Expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V5Message {
    /// Payload Format Indicator, Content Type, Response Topic, Correlation Data and User
    /// Properties, encoded once (without the property length); empty if none.
    pub properties: Bytes,
    /// When the Message Expiry Interval runs out; a subscriber is sent what is left of it.
    pub expires_at: Option<Instant>,
}

impl Message {
    pub fn new(topic: ByteStr, payload: Bytes, qos: QoS, retain: bool) -> Message {
        Message {
            topic,
            payload,
            qos,
            retain,
            v5: None,
            share_qos0: AtomicBool::new(false),
            qos0_frame: OnceLock::new(),
            qos0_frame_v5: OnceLock::new(),
            gate: None,
        }
    }

    /// The message behind `gate` (see `qos2_gate`).
    pub fn with_gate(mut self, gate: Arc<Qos2Gate>) -> Message {
        self.gate = Some(gate);
        self
    }

    /// Whether a subscriber may be sent the message now (its gate, if any, is open).
    pub fn deliverable(&self) -> bool {
        self.gate.as_ref().is_none_or(|g| g.is_open())
    }

    /// The registration the message still waits for, to be written with every copy queued.
    pub fn pending_origin(&self) -> Option<crate::store::Qos2Origin> {
        self.gate
            .as_ref()
            .filter(|g| !g.is_open())
            .map(|g| g.origin)
    }

    /// The message with its MQTT 5 part.
    pub fn with_v5(mut self, v5: Option<Box<V5Message>>) -> Message {
        self.v5 = v5;
        self
    }

    /// A copy that owns exactly its bytes. Kept for long (retained messages), a `Message` must
    /// not pin the whole read buffer its slices came from.
    pub fn detached(&self) -> Message {
        let copy = Message::new(
            ByteStr::from(self.topic.as_str()),
            Bytes::copy_from_slice(&self.payload),
            self.qos,
            self.retain,
        )
        .with_v5(self.v5.as_ref().map(|v5| {
            Box::new(V5Message {
                properties: Bytes::copy_from_slice(&v5.properties),
                expires_at: v5.expires_at,
            })
        }));
        // Still behind its gate, if it has one.
        Message {
            gate: self.gate.clone(),
            ..copy
        }
    }

    /// Whether the Message Expiry Interval has run out.
    pub fn expired(&self, now: Instant) -> bool {
        self.v5
            .as_ref()
            .and_then(|v5| v5.expires_at)
            .is_some_and(|at| at <= now)
    }

    /// Says that QoS 0 live forwards share one encoded PUBLISH per protocol version: each is
    /// made by the first subscriber that needs it, so a fan-out to 3.1.1 clients only does
    /// not encode an MQTT 5 one, nor the other way round.
    pub fn share_qos0_frames(&self) {
        self.share_qos0.store(true, Ordering::Relaxed);
    }

    /// [`Message::share_qos0_frames`], with the 3.1.1 frame made now.
    pub fn encode_qos0_frame(&self) {
        self.share_qos0_frames();
        let _ = self.qos0_frame();
    }

    /// The QoS 0 live-forward PUBLISH (RETAIN 0, DUP 0) for 3.1.1 subscribers, when shared.
    pub fn qos0_frame(&self) -> Option<&Bytes> {
        if let Some(frame) = self.qos0_frame.get() {
            return Some(frame);
        }
        if !self.share_qos0.load(Ordering::Relaxed) {
            return None;
        }
        Some(self.qos0_frame.get_or_init(|| {
            let mut frame = BytesMut::new();
            // Sizes were checked when the message was decoded; encoding cannot fail for them.
            let _ = encode_publish(
                &mut frame,
                &self.topic,
                &self.payload,
                QoS::AtMostOnce,
                false,
                false,
                0,
            );
            frame.freeze()
        }))
    }

    /// A message with a frame of the caller's choosing, to see whether a writer uses it.
    #[cfg(test)]
    pub fn with_qos0_frame(self, frame: Bytes) -> Message {
        let _ = self.qos0_frame.set(frame);
        self
    }

    /// The properties every MQTT 5 subscriber is sent (before its own: a Subscription
    /// Identifier, the Message Expiry left).
    pub fn forwarded_properties(&self) -> &[u8] {
        self.v5.as_ref().map_or(&[], |v5| &v5.properties[..])
    }

    /// The QoS 0 live-forward PUBLISH for MQTT 5 subscribers that get exactly the forwarded
    /// properties, when shared (see [`Message::share_qos0_frames`]).
    pub fn qos0_frame_v5(&self) -> Option<&Bytes> {
        if !self.share_qos0.load(Ordering::Relaxed) {
            return None;
        }
        Some(self.qos0_frame_v5.get_or_init(|| {
            let mut frame = BytesMut::new();
            let header = crate::protocol::PublishHeader {
                topic: &self.topic,
                payload_len: self.payload.len(),
                qos: QoS::AtMostOnce,
                retain: false,
                dup: false,
                packet_id: 0,
                properties: Some(self.forwarded_properties()),
            };
            // Sizes were checked when the message was decoded; encoding cannot fail for them.
            let _ = header.encode(&mut frame, self.payload.len());
            frame.extend_from_slice(&self.payload);
            frame.freeze()
        }))
    }
}

/// What a subscription grants its subscriber, as the subscription trie stores it: the QoS
/// and MQTT 5's options that matter when a message is routed. 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Grant {
    pub qos: QoS,
    /// MQTT 5 No Local: never sent to the client that published it (MQTT-3.8.3-3).
    pub no_local: bool,
    /// MQTT 5 Retain As Published: live forwards keep the publisher's RETAIN flag
    /// (MQTT-3.3.1-12, -13).
    pub retain_as_published: bool,
    /// MQTT 5 Subscription Identifier, returned with every message the subscription matches
    /// (MQTT-3.3.4-3); 0: none.
    pub subscription_id: u32,
    /// The ACL lets the client read only some topics this filter matches: each message is
    /// checked where the subscriber lives (see `auth::SubscribeAccess`).
    pub acl_checked: bool,
}

impl Grant {
    /// A subscription as the log keeps it.
    pub fn from_stored(qos: QoS, extras: crate::store::SubscriptionExtras) -> Grant {
        Grant {
            qos,
            no_local: extras.no_local,
            retain_as_published: extras.retain_as_published,
            subscription_id: extras.subscription_id,
            // Decided again from the ACL when the session is restored.
            acl_checked: false,
        }
    }

    /// What the log keeps beside the QoS.
    pub fn stored_extras(&self) -> crate::store::SubscriptionExtras {
        crate::store::SubscriptionExtras {
            no_local: self.no_local,
            retain_as_published: self.retain_as_published,
            subscription_id: self.subscription_id,
        }
    }
}

impl From<QoS> for Grant {
    fn from(qos: QoS) -> Grant {
        Grant {
            qos,
            ..Grant::default()
        }
    }
}

/// One filter of a SUBSCRIBE as every shard applies it.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub filter: ByteStr,
    pub grant: Grant,
    /// Whether the retained messages it matches are sent now (MQTT 5 Retain Handling).
    pub send_retained: bool,
}

/// A delivery target on the destination shard.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub slot: u32,
    pub generation: u32,
    pub qos: QoS,
    /// The RETAIN flag the subscriber is sent.
    pub retain: bool,
    /// The Subscription Identifier it is sent (0: none).
    pub subscription_id: u32,
    /// Check the subscriber's ACL for the topic before queueing (see [`Grant::acl_checked`]).
    pub acl_check: bool,
}

/// Messages for one destination shard, with their targets there, in publish order. Flat
/// vectors so that building a batch allocates per batch, not per message.
#[derive(Debug, Default)]
pub struct DeliveryBatch {
    /// Each message with the end index (exclusive) of its targets in `targets`.
    pub messages: Vec<(Arc<Message>, u32)>,
    pub targets: Vec<Target>,
    /// The targets reached through a shared subscription: (index in `targets`, group), in
    /// index order. Empty (no allocation) for everything else.
    pub shared: Vec<(u32, ShareTag)>,
    /// Where it stands among the numbered messages of its sender (see [`Numbered`]).
    pub numbered: Numbered,
    /// The payload bytes of its deliveries (a message counted once per target), for the
    /// inbox's budget.
    pub bytes: usize,
}

/// The place of a message among those one shard sent another that may have to be made
/// durable (deliveries and retained messages): numbered 1, 2, ... per sender and destination,
/// so the destination confirms durability with one number (see `durability`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Numbered {
    pub origin: ShardId,
    pub number: u64,
    /// A publisher waits for this one: the destination must say when it is durable.
    pub needs_ack: bool,
}

impl DeliveryBatch {
    pub fn push(&mut self, message: &Arc<Message>, target: Target) {
        let same_as_last = matches!(self.messages.last(), Some((m, _)) if Arc::ptr_eq(m, message));
        self.bytes += message.payload.len();
        self.targets.push(target);
        let end = self.targets.len() as u32;
        if same_as_last {
            self.messages.last_mut().expect("checked").1 = end;
        } else {
            self.messages.push((message.clone(), end));
        }
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Each message with its targets.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<Message>, &[Target])> {
        let mut start = 0usize;
        self.messages.iter().map(move |(m, end)| {
            let end = *end as usize;
            let targets = &self.targets[start..end];
            start = end;
            (m, targets)
        })
    }
}

/// A connection that finished CONNECT on one shard and belongs to another (its client id's
/// home). The socket travels as a file descriptor with the bytes already read after CONNECT.
#[derive(Debug)]
pub struct MovedConnection {
    pub fd: OwnedFd,
    pub permit: super::shard::ConnectionPermit,
    pub peer: SocketAddr,
    pub connect: Box<Connect>,
    pub leftover: BytesMut,
    /// TLS / WebSocket state (None for plain TCP).
    pub transport: Option<Box<super::wire::Layered>>,
}

/// Everything one shard tells another.
#[derive(Debug)]
pub enum ShardMessage {
    Deliver(DeliveryBatch),
    /// Apply these subscriptions to your trie replica and answer `SubscribeApplied`, with the
    /// retained messages you own that match.
    Subscribe {
        subscriber: SubscriberId,
        filters: Arc<[Subscription]>,
        token: u64,
    },
    SubscribeApplied {
        token: u64,
        retained: Vec<(Arc<Message>, Grant)>,
    },
    /// Remove these subscriptions; answer `UnsubscribeApplied` when a token is given.
    Unsubscribe {
        subscriber: SubscriberId,
        filters: Arc<[ByteStr]>,
        token: Option<u64>,
    },
    UnsubscribeApplied {
        token: u64,
    },
    /// Store (or, with an empty payload, clear) a retained message on its owner shard.
    Retain(Arc<Message>, Numbered),
    /// Everything `from` was sent by this shard up to number `upto` (see [`Numbered`]) is
    /// durable on `from`.
    Durable {
        from: ShardId,
        upto: u64,
    },
    Adopt(Box<MovedConnection>),
    /// A subscriber's queue went over its limits (`on`), or is relieved: hold back, or let go,
    /// the publishers that reach it at QoS 1/2 (see `pressure`).
    Pressure {
        subscriber: SubscriberId,
        on: bool,
    },
    /// A member of a shared subscription went offline or came back (see `shared`).
    Presence {
        subscriber: SubscriberId,
        online: bool,
    },
    /// Shared deliveries of the batch `number` that `from` could not queue for their member
    /// (message, group, that member), given back to the sender, whose publishers wait for
    /// that batch: it chooses another member, and their acknowledgements wait for it too.
    SharedReturned {
        from: ShardId,
        number: u64,
        returned: Vec<(Arc<Message>, ShareTag, SubscriberId)>,
    },
    /// The authenticator's ACL changed (SIGHUP): apply it to this shard's subscriptions.
    Reauthorize,
    /// A message published on another node of the cluster, for this node's subscribers.
    /// With the number the cluster thread gave it among this shard's QoS 1/2 messages from
    /// other nodes (0 for QoS 0): it acknowledges the message to its node once the shard
    /// reports it handled, durably where it must be (`ClusterShared::handled`).
    FromCluster(Arc<Message>, u64),
    /// The other nodes of the cluster acknowledged every QoS 1/2 message this shard sent
    /// them up to its number `upto` (see `cluster_port::Outgoing::number`): the publishers
    /// waiting for that may be acknowledged.
    ClusterConfirmed {
        upto: u64,
    },
    /// JetStream stored this shard's copies of offline sessions' queued messages up to copy
    /// `upto` (or the cluster thread gave up on them; see `broker::queue_copies`): what
    /// waited for them may be acknowledged.
    CopiesStored {
        upto: u64,
    },
    /// A message for one member of the shared subscription group (`$share/GROUP/FILTER`)
    /// that NATS picked this node for.
    FromClusterShared(Arc<Message>, ByteStr, u64),
    /// The cluster thread asks for the shard's retained messages (for a node that joins).
    CollectRetained(crossbeam_channel::Sender<Vec<Arc<Message>>>),
    /// The client with this id (whose home shard this is) connected to another node at this
    /// time (Unix microseconds); with a [`HandOver`] when it resumes its session there.
    ClaimedElsewhere(ByteStr, u64, Option<Box<HandOver>>),
    /// Changes of the session of the client with this id (whose home shard this is) were
    /// copied to JetStream no further: the cluster thread gave up on some (no room on their
    /// way, JetStream failed), so its copy lacks them and is written whole again.
    CopyShort(ByteStr),
    /// Gates of incoming QoS 2 messages opened (see `qos2_gate`): sessions that stopped at one
    /// look again.
    GatesOpened,
    /// Parked connections whose sockets became readable (tokens from `parking::token`).
    Readable(Vec<u64>),
    Shutdown,
}

impl ShardMessage {
    /// The deliveries it carries and their payload bytes (see [`IN_FLIGHT_DELIVERIES`]):
    /// nothing for what is not a batch of deliveries, which no budget holds back.
    fn load(&self) -> (usize, usize) {
        match self {
            ShardMessage::Deliver(batch) => (batch.targets.len(), batch.bytes),
            _ => (0, 0),
        }
    }
}

/// A shard's inbox as seen by senders.
pub struct Inbox {
    tx: Sender<ShardMessage>,
    /// Deliveries (targets) and their payload bytes in the channel, sent and not yet taken
    /// (see [`IN_FLIGHT_DELIVERIES`]).
    deliveries: AtomicUsize,
    bytes: AtomicUsize,
    /// Set by the drain task before it sleeps; cleared by the sender that rings the bell.
    asleep: AtomicBool,
    /// The write end of the doorbell socketpair (non-blocking).
    bell: UnixStream,
}

/// The receiving side of one shard's inbox: the channel and the read end of its doorbell.
pub struct InboxReceiver {
    pub rx: Receiver<ShardMessage>,
    pub bell: OwnedFd,
}

/// Why [`Mesh::try_send`] did not deliver.
#[derive(Debug)]
pub enum Refused {
    /// The inbox is full; here is the message back, to send again later.
    Full(ShardMessage),
    /// The shard has stopped and will never read its inbox again.
    Stopped,
}

/// The inboxes of all shards, shared by every shard.
pub struct Mesh {
    inboxes: Vec<Inbox>,
    /// Where the shards meet when the broker stops.
    stop_barrier: StopBarrier,
    /// What each shard's members of each shared group got (see `share_balance`).
    share_loads: Arc<ShareLoads>,
}

/// Batches (not messages) an inbox holds. A full inbox means the destination core is saturated;
/// the sender then keeps what it has and slows its own publishers.
pub const INBOX_CAPACITY: usize = 1024;

/// Deliveries, and their payload bytes, an inbox takes before it counts as full, whatever the
/// number of batches: what the other shards may have sent a shard that it has not handled yet.
/// Bounding it bounds how far a subscriber's queue can grow past its limits with messages
/// from other shards, which were routed (and acknowledged) before their publishers' shards
/// heard that it is under pressure: such deliveries are never dropped for the overshoot (see
/// `session::OVERSHOOT_MESSAGES`); this is their bound. A batch larger than the budget goes
/// when the inbox holds no deliveries.
pub const IN_FLIGHT_DELIVERIES: usize = 32 * 1024;
pub const IN_FLIGHT_BYTES: usize = 32 << 20;

impl Mesh {
    /// The mesh and each shard's receiving end, in shard order.
    pub fn new(shards: usize) -> std::io::Result<(Arc<Mesh>, Vec<InboxReceiver>)> {
        let mut inboxes = Vec::with_capacity(shards);
        let mut receivers = Vec::with_capacity(shards);
        for _ in 0..shards {
            let (tx, rx) = crossbeam_channel::bounded(INBOX_CAPACITY);
            let (bell, reader) = UnixStream::pair()?;
            bell.set_nonblocking(true)?;
            reader.set_nonblocking(true)?;
            inboxes.push(Inbox {
                tx,
                deliveries: AtomicUsize::new(0),
                bytes: AtomicUsize::new(0),
                asleep: AtomicBool::new(false),
                bell,
            });
            receivers.push(InboxReceiver {
                rx,
                bell: reader.into(),
            });
        }
        let mesh = Mesh {
            inboxes,
            stop_barrier: StopBarrier::default(),
            share_loads: ShareLoads::new(shards),
        };
        Ok((Arc::new(mesh), receivers))
    }

    pub fn shards(&self) -> usize {
        self.inboxes.len()
    }

    pub fn stop_barrier(&self) -> &StopBarrier {
        &self.stop_barrier
    }

    pub fn share_loads(&self) -> &Arc<ShareLoads> {
        &self.share_loads
    }

    /// Sends, or says why not: the inbox is full (the message comes back, to retry) or its shard
    /// has stopped (a shard that failed at start, or one already shut down), when retrying
    /// would never succeed. Rings the doorbell on success.
    pub fn try_send(&self, to: ShardId, msg: ShardMessage) -> Result<(), Refused> {
        let inbox = &self.inboxes[to.index()];
        let (deliveries, bytes) = msg.load();
        if deliveries > 0 {
            // Counted before it is in the channel, so the receiver never takes away more than
            // was added; given back when it does not go.
            let held = inbox.deliveries.fetch_add(deliveries, Ordering::Relaxed);
            let held_bytes = inbox.bytes.fetch_add(bytes, Ordering::Relaxed);
            if held > 0
                && (held + deliveries > IN_FLIGHT_DELIVERIES
                    || held_bytes + bytes > IN_FLIGHT_BYTES)
            {
                inbox.deliveries.fetch_sub(deliveries, Ordering::Relaxed);
                inbox.bytes.fetch_sub(bytes, Ordering::Relaxed);
                return Err(Refused::Full(msg));
            }
        }
        let sent = inbox.tx.try_send(msg);
        if sent.is_err() && deliveries > 0 {
            inbox.deliveries.fetch_sub(deliveries, Ordering::Relaxed);
            inbox.bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
        match sent {
            Ok(()) => {
                // Pairs with the fence in `going_to_sleep`: either the drain task sees the
                // message, or this sees it asleep (or both).
                fence(Ordering::SeqCst);
                if inbox.asleep.load(Ordering::Relaxed)
                    && inbox.asleep.swap(false, Ordering::AcqRel)
                {
                    // A full socket buffer already holds a ring: nothing is lost on EAGAIN.
                    let _ = (&inbox.bell).write(&[1]);
                }
                Ok(())
            }
            Err(TrySendError::Full(msg)) => Err(Refused::Full(msg)),
            Err(TrySendError::Disconnected(_)) => Err(Refused::Stopped),
        }
    }

    /// Called by the drain task of `shard` before it waits for the doorbell: returns false when
    /// the inbox got messages meanwhile and it must not sleep.
    pub fn going_to_sleep(&self, shard: ShardId, rx: &Receiver<ShardMessage>) -> bool {
        let inbox = &self.inboxes[shard.index()];
        inbox.asleep.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if rx.is_empty() {
            true
        } else {
            inbox.asleep.store(false, Ordering::Relaxed);
            false
        }
    }

    /// Called by the drain task of `shard` for each message it takes from its inbox: its
    /// deliveries leave the inbox's budget.
    pub fn taken(&self, shard: ShardId, msg: &ShardMessage) {
        let (deliveries, bytes) = msg.load();
        if deliveries > 0 {
            let inbox = &self.inboxes[shard.index()];
            inbox.deliveries.fetch_sub(deliveries, Ordering::Relaxed);
            inbox.bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    /// Called by the drain task when it wakes (rung or not).
    pub fn awake(&self, shard: ShardId) {
        self.inboxes[shard.index()]
            .asleep
            .store(false, Ordering::Relaxed);
    }
}

/// What a sending shard holds for each destination: the batch being built during this loop
/// iteration and anything that did not fit into the destination's inbox yet.
pub struct Router {
    me: ShardId,
    mesh: Arc<Mesh>,
    open: Vec<DeliveryBatch>,
    /// Numbered messages sent to each destination so far (see [`Numbered`]).
    numbered: Vec<u64>,
    backlog: Vec<VecDeque<ShardMessage>>,
    /// Count of flushes that found an inbox full.
    pub stalls: u64,
    /// Messages per batch sent, for the metrics (recorded per batch, not per message).
    pub batch_sizes: super::metrics::Histogram,
}

/// Messages per batch before it is closed and queued, so one batch never grows without bound.
const MAX_BATCH: usize = 512;
/// Messages waiting for a full inbox beyond which the shard stops reading from its publishers.
pub(super) const CONGESTION_LIMIT: usize = 64;

impl Router {
    /// Batches (and retained messages) sent to other shards so far.
    pub fn batches_sent(&self) -> u64 {
        self.numbered.iter().sum()
    }

    pub fn new(me: ShardId, mesh: Arc<Mesh>) -> Router {
        let n = mesh.shards();
        Router {
            me,
            mesh,
            open: (0..n).map(|_| DeliveryBatch::default()).collect(),
            numbered: vec![0; n],
            backlog: (0..n).map(|_| VecDeque::new()).collect(),
            stalls: 0,
            batch_sizes: Default::default(),
        }
    }

    pub fn mesh(&self) -> &Arc<Mesh> {
        &self.mesh
    }

    /// Adds a delivery to the batch for `to`; returns the batch's number. With `needs_ack`,
    /// `to` will say when the batch is durable.
    pub fn deliver(
        &mut self,
        to: ShardId,
        message: &Arc<Message>,
        target: Target,
        needs_ack: bool,
    ) -> u64 {
        self.deliver_tagged(to, message, target, needs_ack, None)
    }

    /// [`Router::deliver`] of a message that goes to `target` through a shared subscription:
    /// where `target` cannot take it, another member of the group is tried.
    pub fn deliver_tagged(
        &mut self,
        to: ShardId,
        message: &Arc<Message>,
        target: Target,
        needs_ack: bool,
        share: Option<ShareTag>,
    ) -> u64 {
        let i = to.index();
        let number = self.numbered[i] + 1;
        let batch = &mut self.open[i];
        if let Some(tag) = share {
            batch.shared.push((batch.targets.len() as u32, tag));
        }
        batch.push(message, target);
        batch.numbered.needs_ack |= needs_ack;
        if batch.len() >= MAX_BATCH {
            self.close_batch(i);
        }
        number
    }

    /// Queues the open batch for `i`, numbered.
    fn close_batch(&mut self, i: usize) {
        if self.open[i].is_empty() {
            return;
        }
        let mut batch = std::mem::take(&mut self.open[i]);
        self.batch_sizes.record(batch.len() as u64);
        self.numbered[i] += 1;
        batch.numbered.origin = self.me;
        batch.numbered.number = self.numbered[i];
        self.backlog[i].push_back(ShardMessage::Deliver(batch));
    }

    /// Sends a retained message to the shard that owns its topic; returns its number.
    pub fn retain(&mut self, to: ShardId, message: Arc<Message>, needs_ack: bool) -> u64 {
        let i = to.index();
        self.close_batch(i);
        self.numbered[i] += 1;
        let numbered = Numbered {
            origin: self.me,
            number: self.numbered[i],
            needs_ack,
        };
        self.backlog[i].push_back(ShardMessage::Retain(message, numbered));
        numbered.number
    }

    /// Queues a control message behind any deliveries already gathered for `to`, keeping order.
    pub fn send(&mut self, to: ShardId, msg: ShardMessage) {
        let i = to.index();
        self.close_batch(i);
        self.backlog[i].push_back(msg);
    }

    /// Sends `make()` to every other shard.
    pub fn broadcast(&mut self, mut make: impl FnMut() -> ShardMessage) {
        for i in 0..self.open.len() {
            if i != self.me.index() {
                self.send(ShardId(i as u16), make());
            }
        }
    }

    /// Moves everything gathered into the inboxes, as far as they have room. Returns true when
    /// something is still waiting (an inbox is full).
    pub fn flush(&mut self) -> bool {
        let mut waiting = false;
        for i in 0..self.open.len() {
            self.close_batch(i);
            let to = ShardId(i as u16);
            while let Some(msg) = self.backlog[i].pop_front() {
                match self.mesh.try_send(to, msg) {
                    Ok(()) => {}
                    Err(Refused::Full(msg)) => {
                        self.backlog[i].push_front(msg);
                        self.stalls += 1;
                        waiting = true;
                        break;
                    }
                    // Only while the broker stops: nobody is left to deliver to.
                    Err(Refused::Stopped) => {
                        self.backlog[i].clear();
                        break;
                    }
                }
            }
        }
        waiting
    }

    /// True when so much waits for full inboxes that publishers should pause.
    pub fn congested(&self) -> bool {
        self.backlog.iter().any(|q| q.len() >= CONGESTION_LIMIT)
    }

    pub fn has_backlog(&self) -> bool {
        self.backlog.iter().any(|q| !q.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(topic: &str) -> Arc<Message> {
        Arc::new(Message::new(
            ByteStr::from(topic),
            Bytes::from_static(b"p"),
            QoS::AtMostOnce,
            false,
        ))
    }

    fn target(slot: u32) -> Target {
        Target {
            slot,
            generation: 0,
            qos: QoS::AtMostOnce,
            retain: false,
            subscription_id: 0,
            acl_check: false,
        }
    }

    #[test]
    fn batch_groups_targets_of_one_message() {
        let (a, b) = (msg("a"), msg("b"));
        let mut batch = DeliveryBatch::default();
        batch.push(&a, target(1));
        batch.push(&a, target(2));
        batch.push(&b, target(3));
        batch.push(&a, target(4));
        let got: Vec<(String, Vec<u32>)> = batch
            .iter()
            .map(|(m, t)| (m.topic.to_string(), t.iter().map(|t| t.slot).collect()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a".to_string(), vec![1, 2]),
                ("b".to_string(), vec![3]),
                ("a".to_string(), vec![4]),
            ]
        );
    }

    #[test]
    fn an_inbox_takes_deliveries_up_to_its_budget_and_more_once_they_are_taken() {
        let (mesh, inboxes) = Mesh::new(2).unwrap();
        let rx = &inboxes[1].rx;
        let m = msg("t");
        let batch = |n: u32| {
            let mut b = DeliveryBatch::default();
            for i in 0..n {
                b.push(&m, target(i));
            }
            ShardMessage::Deliver(b)
        };
        // A batch larger than the budget goes into an inbox that holds no deliveries.
        let big = IN_FLIGHT_DELIVERIES as u32 + 5;
        assert!(mesh.try_send(ShardId(1), batch(big)).is_ok());
        // Then nothing more of deliveries, whatever the room in batches; other messages go.
        assert!(matches!(
            mesh.try_send(ShardId(1), batch(1)),
            Err(Refused::Full(_))
        ));
        assert!(mesh.try_send(ShardId(1), ShardMessage::GatesOpened).is_ok());
        // Taken (and handled) by its shard, the batch leaves the budget.
        let taken = rx.try_recv().unwrap();
        mesh.taken(ShardId(1), &taken);
        for _ in 0..IN_FLIGHT_DELIVERIES / 1024 {
            assert!(mesh.try_send(ShardId(1), batch(1024)).is_ok());
        }
        assert!(matches!(
            mesh.try_send(ShardId(1), batch(1)),
            Err(Refused::Full(_))
        ));
        // In bytes too.
        let (mesh, _inboxes) = Mesh::new(2).unwrap();
        let heavy = Arc::new(Message::new(
            ByteStr::from("t"),
            Bytes::from(vec![0u8; IN_FLIGHT_BYTES / 2 + 1]),
            QoS::AtMostOnce,
            false,
        ));
        let one = || {
            let mut b = DeliveryBatch::default();
            b.push(&heavy, target(0));
            ShardMessage::Deliver(b)
        };
        assert!(mesh.try_send(ShardId(1), one()).is_ok());
        assert!(matches!(
            mesh.try_send(ShardId(1), one()),
            Err(Refused::Full(_))
        ));
    }

    #[test]
    fn full_inbox_keeps_order_and_counts_stalls() {
        let (mesh, inboxes) = Mesh::new(2).unwrap();
        let rx: Vec<_> = inboxes.into_iter().map(|i| i.rx).collect();
        let mut router = Router::new(ShardId(0), mesh);
        let m = msg("t");
        for i in 0..(INBOX_CAPACITY + 10) as u32 {
            router.deliver(ShardId(1), &m, target(i), false);
            router.flush();
        }
        assert!(router.has_backlog());
        assert!(router.stalls >= 10);
        // Drain the inbox, then flush again: everything arrives, in order.
        let mut seen = Vec::new();
        loop {
            while let Ok(ShardMessage::Deliver(b)) = rx[1].try_recv() {
                seen.extend(b.targets.iter().map(|t| t.slot));
            }
            if !router.flush() && rx[1].is_empty() {
                break;
            }
        }
        assert_eq!(seen, (0..(INBOX_CAPACITY + 10) as u32).collect::<Vec<_>>());
    }
}

#[cfg(test)]
mod doorbell_tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_sleeping_inbox_is_rung_once_an_awake_one_not_at_all() {
        let (mesh, mut inboxes) = Mesh::new(1).unwrap();
        let inbox = inboxes.remove(0);
        let mut bell = UnixStream::from(inbox.bell);
        let mut buf = [0u8; 8];
        // Awake: sending rings nothing.
        mesh.try_send(ShardId(0), ShardMessage::Shutdown).unwrap();
        assert!(bell.read(&mut buf).is_err(), "no ring while awake");
        // Messages waiting: the drain task must not sleep.
        assert!(!mesh.going_to_sleep(ShardId(0), &inbox.rx));
        inbox.rx.try_recv().unwrap();
        // Asleep on an empty inbox: the next send rings exactly once.
        assert!(mesh.going_to_sleep(ShardId(0), &inbox.rx));
        mesh.try_send(ShardId(0), ShardMessage::Shutdown).unwrap();
        mesh.try_send(ShardId(0), ShardMessage::Shutdown).unwrap();
        assert_eq!(bell.read(&mut buf).unwrap(), 1);
    }
}
