//! What the shards and the cluster thread (`crate::cluster`, feature `cluster`) share: a
//! bounded outbox of messages other nodes want, a channel of this node's interest changes
//! (filters that got their first subscriber here, or lost their last), and the other nodes'
//! interest, which the cluster thread replaces as a whole and the shards read without locks
//! on the message path (a generation number says when their cached copy is stale).
//!
//! Messages from other nodes come into the shards through their ordinary inboxes
//! ([`super::mesh::ShardMessage::FromCluster`]).

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;
use bytes::Bytes;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::mesh::{Message, ShardId};
use super::queue_copies::CopyBatch;
use crate::protocol::ByteStr;
use crate::topic::SubscriptionTrie;

/// Messages waiting for the cluster thread at most; beyond it they are dropped and counted.
pub const OUTBOX_CAPACITY: usize = 65_536;

/// A message for the other nodes, with the key that keeps one publisher's messages in order
/// on the receiving nodes (they route all messages of one key through one shard).
pub struct Outgoing {
    pub message: Arc<Message>,
    pub key: u64,
    /// The shared subscription groups (`$share/G/F`) this node delivered it to itself,
    /// because NATS was away when it was published: they do not get it again through NATS.
    pub served: Vec<ByteStr>,
    /// The shard that sent it, and for a QoS 1/2 message its number among those the shard
    /// sent (from 1, without gaps; 0 for QoS 0): the cluster thread tells the shard how far
    /// the other nodes acknowledged them (`ShardMessage::ClusterConfirmed`), which its
    /// publishers' PUBACK/PUBREC wait for.
    pub shard: ShardId,
    pub number: u64,
}

pub use super::queue_copies::{CopyNumber, QueueCopy, QUEUE_COPIES_CAPACITY};

/// A session resume's answer from the cluster: the copies other nodes handed over (or the
/// stored one), and whether this node's own copy is superseded: restored at start, it went
/// away no later than this time (Unix ms), when its queue was copied to JetStream, and
/// another node has since resumed the session from that copy (see `cluster::node::queues`),
/// so its messages were delivered from there and must not be merged in again. `unavailable`:
/// none was handed over, and JetStream could not say what it holds of the session (a stream
/// electing a leader, or without its quorum): a client whose session this node does not hold
/// is refused rather than given a new one.
#[derive(Debug, Default)]
pub struct Taken {
    pub sessions: Vec<HandedSession>,
    pub superseded: Option<u64>,
    pub unavailable: bool,
}

/// What a node holds of a client that resumes its session there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// No persistent session.
    Nothing,
    /// A persistent session: a copy of it in JetStream that this node wrote is not taken
    /// besides (it is this session, or older), nor the directory's (its subscriptions).
    Session,
    /// A persistent session restored at start that no client has claimed since: another node
    /// may have taken its copy from JetStream meanwhile ([`Taken::superseded`] says).
    Restored,
}

/// What the other nodes must hear of, in the order it happened here.
#[derive(Debug, PartialEq, Eq)]
pub enum ClusterEvent {
    /// The filter has its first subscriber on this node.
    Added(String),
    /// The filter's last subscriber on this node is gone.
    Removed(String),
    /// A client connected here with this id at this time (Unix microseconds): a session of it
    /// on another node that connected earlier ends there (MQTT-3.1.4-2 across the cluster).
    Claimed(String, u64),
    /// As `Claimed`, by a client that resumes its session: the nodes that hold a session of
    /// it hand it over (see [`HandedSession`]; normally one, two after a node that was down
    /// came back with its old copy); the answer lists them, empty when none did (or none
    /// answered in time).
    Take {
        client_id: String,
        username: Option<String>,
        /// What the node holds of the client already.
        held: Held,
        at: u64,
        answer: Answer<Taken>,
    },
    /// A persistent session's subscriptions changed here: its entry in the cluster's session
    /// directory (JetStream) is written again, as these records (see
    /// `cluster::node::directory`).
    SessionSaved {
        client_id: String,
        username: Option<String>,
        records: HandedSession,
        /// When its client went away (Unix ms), 0 while connected; and its expiry in
        /// seconds (`u32::MAX`: never), so a copy that outlived it is not taken.
        offline_since_ms: u64,
        expiry_secs: u32,
    },
    /// A persistent session here expired: its directory entry goes.
    SessionExpired(String),
}

/// A persistent session moving from one node to another: the records that rebuild it, as a
/// snapshot of the node that held it would hold them (`store::Record`, framed as in a log),
/// for session number [`HANDED_SESSION`]. One encoding for the disk and the wire.
pub type HandedSession = Bytes;

/// Another node's request that this one hand a client's session over (with a claim).
#[derive(Debug)]
pub struct HandOver {
    /// The user the client authenticated as there: only that user's session goes.
    pub username: Option<ByteStr>,
    /// The session, or None (dropped: none here to hand over).
    pub answer: Answer<Option<HandedOver>>,
}

/// What a shard hands over: the session's records and, if it is a copy this node restored at
/// start that no client has claimed since, when its client went away (Unix ms). The cluster
/// thread sends that copy only if no other node took it from JetStream meanwhile
/// ([`superseded_by`]): it asks the bucket, which a shard cannot.
#[derive(Debug)]
pub struct HandedOver {
    pub records: HandedSession,
    pub restored_gone_ms: Option<u64>,
}

/// How much later than the time its copy in JetStream says a restored session may say its
/// client went, and still be that copy: a journal compacted since recomputes the time from
/// the session's own clock (a millisecond or so off).
const SAME_GOING_SLACK_MS: u64 = 1_000;

/// Whether a session this node restored at start, whose client went away at
/// `restored_gone_ms`, is the copy another node took from JetStream (`taken_at`: the time that
/// copy says; see [`Taken`]): its messages went there, so it must be neither merged nor
/// handed over.
pub fn superseded_by(restored_gone_ms: Option<u64>, taken_at: Option<u64>) -> bool {
    match (restored_gone_ms, taken_at) {
        (Some(gone), Some(taken)) => gone <= taken.saturating_add(SAME_GOING_SLACK_MS),
        _ => false,
    }
}

/// The session number a handed-over session's records use.
pub const HANDED_SESSION: u64 = 1;

/// A session directory entry's records (which say its client went away at time 0, the oldest
/// copy in a merge) as a copy of the session when the entry was written, at `written_ms`
/// (Unix ms): then it ranks in a merge by that time, against the other copies' going.
pub fn directory_copy_as_of(records: &Bytes, written_ms: u64) -> HandedSession {
    let mut out = bytes::BytesMut::from(&records[..]);
    let mut body = bytes::BytesMut::new();
    let detached = crate::store::Record::Detached {
        session: HANDED_SESSION,
        at_ms: written_ms,
    };
    let kind = detached.encode(&mut body);
    crate::store::encode_frame(&mut out, kind, &body);
    out.freeze()
}

/// Sends one answer from one thread to a task on another, whichever executor runs it (a
/// shard's glommio, the cluster thread's tokio). Dropped unanswered, it answers None.
pub struct Answer<T> {
    slot: Arc<AnswerSlot<T>>,
}

/// Waits for the [`Answer`]: `Some(value)`, or None if it was dropped unanswered.
pub struct AnswerWait<T> {
    slot: Arc<AnswerSlot<T>>,
}

struct AnswerSlot<T> {
    value: Mutex<Option<T>>,
    done: AtomicBool,
    /// The waiter gave up (dropped its [`AnswerWait`]).
    abandoned: AtomicBool,
    waker: AtomicWaker,
}

/// A new answer and the future that waits for it.
pub fn answer<T>() -> (Answer<T>, AnswerWait<T>) {
    let slot = Arc::new(AnswerSlot {
        value: Mutex::new(None),
        done: AtomicBool::new(false),
        abandoned: AtomicBool::new(false),
        waker: AtomicWaker::new(),
    });
    (Answer { slot: slot.clone() }, AnswerWait { slot })
}

impl<T> Answer<T> {
    pub fn send(self, value: T) {
        *self.slot.value.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
        // Drop marks it done and wakes the waiter.
    }
}

impl<T> Answer<T> {
    /// Whether nobody waits for the answer any more.
    pub fn is_abandoned(&self) -> bool {
        self.slot.abandoned.load(Ordering::Acquire)
    }
}

impl<T> Drop for AnswerWait<T> {
    fn drop(&mut self) {
        self.slot.abandoned.store(true, Ordering::Release);
    }
}

impl<T> Drop for Answer<T> {
    fn drop(&mut self) {
        self.slot.done.store(true, Ordering::Release);
        self.slot.waker.wake();
    }
}

impl<T> std::fmt::Debug for Answer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Answer")
    }
}

impl<T> PartialEq for Answer<T> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.slot, &other.slot)
    }
}

impl<T> Eq for Answer<T> {}

impl<T> Future for AnswerWait<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.slot.waker.register(cx.waker());
        if !self.slot.done.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        Poll::Ready(
            self.slot
                .value
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        )
    }
}

/// The filters other nodes have subscribers for, by node index.
pub type InterestTrie = SubscriptionTrie<u16, ()>;

/// The other nodes' interest, replaced whole by the cluster thread.
pub struct RemoteInterest {
    generation: AtomicU64,
    trie: RwLock<Arc<InterestTrie>>,
}

impl RemoteInterest {
    fn new() -> RemoteInterest {
        RemoteInterest {
            generation: AtomicU64::new(0),
            trie: RwLock::new(Arc::new(InterestTrie::default())),
        }
    }

    /// Installs a new picture of the other nodes' interest.
    pub fn replace(&self, trie: InterestTrie) {
        *self.trie.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(trie);
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn current(&self) -> (u64, Arc<InterestTrie>) {
        let generation = self.generation.load(Ordering::Acquire);
        let trie = self.trie.read().unwrap_or_else(|e| e.into_inner()).clone();
        (generation, trie)
    }
}

/// The shard's side of the cluster: where to send, and its cached copy of remote interest.
pub struct ClusterPort {
    shared: Arc<ClusterShared>,
    shard: ShardId,
    /// The number of the last QoS 1/2 message sent (see [`Outgoing::number`]).
    sent: std::cell::Cell<u64>,
    cache: RefCell<(u64, Arc<InterestTrie>)>,
    /// When each session of this shard last had a client connect (Unix microseconds): a
    /// claim from another node ends it only if it came later (claims of earlier connects
    /// may arrive after a newer connect here).
    connected_at: RefCell<ahash::AHashMap<String, u64>>,
    /// Queue copies made since the shard's last flush.
    copies: RefCell<CopyBatch>,
    /// Whether messages from other nodes were handled since the cluster thread was last
    /// woken for them (see [`handled`](Self::handled)).
    handled_due: std::cell::Cell<bool>,
}

/// A node's cluster counters at one moment (see [`ClusterShared`] for what each counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterCounts {
    pub forwarded: u64,
    pub dropped: u64,
    pub received: u64,
    pub nodes: u64,
    pub sessions_in: u64,
    pub sessions_out: u64,
    pub sessions_missed: u64,
    pub sessions_refused: u64,
    pub resent: u64,
    pub unconfirmed: u64,
    pub publishes_waiting: u64,
    pub publishes_released: u64,
    pub sessions_stored: u64,
    pub queues_copied: u64,
    pub queues_not_copied: u64,
    pub queues_taken: u64,
    /// 1 while connected to NATS, else 0.
    pub connected: u64,
}

/// Made once per broker; each shard gets a [`ClusterPort`] on it, the cluster thread the
/// receiving ends ([`ClusterShared::take_receivers`]).
pub struct ClusterShared {
    outbox: Sender<Outgoing>,
    changes: Sender<ClusterEvent>,
    pub remote: RemoteInterest,
    /// Messages for other nodes dropped because the outbox was full.
    pub dropped: AtomicU64,
    /// Messages sent to the cluster thread.
    pub forwarded: AtomicU64,
    /// Messages from other nodes (and NATS applications) handed to this node's shards.
    pub received: AtomicU64,
    /// Other nodes this node knows of (heard within the interest expiry).
    pub nodes: AtomicU64,
    /// Persistent sessions that came from other nodes with their clients.
    pub sessions_in: AtomicU64,
    /// Persistent sessions handed over to other nodes.
    pub sessions_out: AtomicU64,
    /// Clients resuming a session here that no node handed over in time (a node that held
    /// it may be down): they got a new session.
    pub sessions_missed: AtomicU64,
    /// Clients resuming a session this node does not hold, refused (server unavailable):
    /// no node handed it over and JetStream could not say what it holds of it (a stream
    /// electing a leader, or without its quorum), or the cluster did not answer in time.
    pub sessions_refused: AtomicU64,
    /// Clients resuming a session that no node handed over, given the session directory's
    /// copy (its subscriptions) instead.
    pub sessions_stored: AtomicU64,
    /// Copies of offline sessions (their state when the client went, and each QoS 1/2
    /// message queued since) stored in JetStream.
    pub queues_copied: AtomicU64,
    /// Such copies not stored: JetStream was away or failed, or too many waited.
    pub queues_not_copied: AtomicU64,
    /// Clients resuming a session whose node did not answer, given the session with its
    /// queued messages from JetStream.
    pub queues_taken: AtomicU64,
    /// QoS 1/2 messages sent again to a node that had not acknowledged them (NATS lost
    /// them, or the node was away).
    pub resent: AtomicU64,
    /// QoS 1/2 messages given up on while a node had not acknowledged them: more were
    /// waiting for acknowledgement than this node keeps.
    pub unconfirmed: AtomicU64,
    /// QoS 1/2 messages whose publishers wait for other nodes to acknowledge them (a gauge,
    /// see `cluster::marks`).
    pub publishes_waiting: AtomicU64,
    /// QoS 1/2 messages acknowledged to their publishers while a node that wanted them had
    /// not acknowledged them, because it had been silent too long (`confirm::SILENT_AFTER`)
    /// or, for a shared group's copy, it took too long (`confirm::GROUP_HOLD`).
    pub publishes_released: AtomicU64,
    /// Whether the cluster thread is connected to NATS (set by it): while it is not, this
    /// node's shared subscription groups get this node's messages here.
    pub nats_up: AtomicBool,
    /// When clients connected, as claims compare it across nodes.
    pub claim_clock: ClaimClock,
    /// Per shard: the number of the last QoS 1/2 message from other nodes it has handled
    /// (see `ShardMessage::FromCluster`), with what that wrote durable (`--data-dir`): the
    /// cluster thread acknowledges messages to their nodes only up to there.
    handled: Box<[AtomicU64]>,
    /// Wakes the cluster thread when a shard handled more.
    handled_waker: AtomicWaker,
    /// Copies of offline sessions' queues on their way to the cluster thread, and how many
    /// of them are messages (bounded by [`QUEUE_COPIES_CAPACITY`]; snapshots and ends are
    /// bounded by the sessions).
    queue_copies: Sender<Vec<QueueCopy>>,
    pub queue_copies_waiting: AtomicUsize,
    receivers: std::sync::Mutex<Option<ClusterReceivers>>,
}

/// The cluster thread's ends of the channels from the shards.
pub type ClusterReceivers = (
    Receiver<Outgoing>,
    Receiver<ClusterEvent>,
    Receiver<Vec<QueueCopy>>,
);

impl std::fmt::Debug for ClusterShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterShared")
            .field("forwarded", &self.forwarded)
            .field("dropped", &self.dropped)
            .field("received", &self.received)
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

impl ClusterShared {
    pub fn new() -> Arc<ClusterShared> {
        ClusterShared::with_clock(ClaimClock::new(0), 1)
    }

    pub fn with_clock(claim_clock: ClaimClock, shards: usize) -> Arc<ClusterShared> {
        let (outbox, outbox_rx) = crossbeam_channel::bounded(OUTBOX_CAPACITY);
        // Interest changes are never dropped: they are bounded by the filters that exist.
        let (changes, changes_rx) = crossbeam_channel::unbounded();
        // Unbounded, but messages count against `QUEUE_COPIES_CAPACITY`.
        let (queue_copies, copies_rx) = crossbeam_channel::unbounded();
        Arc::new(ClusterShared {
            outbox,
            changes,
            remote: RemoteInterest::new(),
            dropped: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            received: AtomicU64::new(0),
            nodes: AtomicU64::new(0),
            sessions_in: AtomicU64::new(0),
            sessions_out: AtomicU64::new(0),
            sessions_missed: AtomicU64::new(0),
            sessions_refused: AtomicU64::new(0),
            resent: AtomicU64::new(0),
            sessions_stored: AtomicU64::new(0),
            queues_copied: AtomicU64::new(0),
            queues_not_copied: AtomicU64::new(0),
            queues_taken: AtomicU64::new(0),
            unconfirmed: AtomicU64::new(0),
            publishes_waiting: AtomicU64::new(0),
            publishes_released: AtomicU64::new(0),
            nats_up: AtomicBool::new(false),
            claim_clock,
            handled: (0..shards.max(1)).map(|_| AtomicU64::new(0)).collect(),
            handled_waker: AtomicWaker::new(),
            queue_copies,
            queue_copies_waiting: AtomicUsize::new(0),
            receivers: std::sync::Mutex::new(Some((outbox_rx, changes_rx, copies_rx))),
        })
    }

    /// The counters, for `$SYS` and `/metrics`.
    pub fn counts(&self) -> ClusterCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ClusterCounts {
            forwarded: get(&self.forwarded),
            dropped: get(&self.dropped),
            received: get(&self.received),
            nodes: get(&self.nodes),
            sessions_in: get(&self.sessions_in),
            sessions_out: get(&self.sessions_out),
            sessions_missed: get(&self.sessions_missed),
            sessions_refused: get(&self.sessions_refused),
            resent: get(&self.resent),
            sessions_stored: get(&self.sessions_stored),
            queues_copied: get(&self.queues_copied),
            queues_not_copied: get(&self.queues_not_copied),
            queues_taken: get(&self.queues_taken),
            unconfirmed: get(&self.unconfirmed),
            publishes_waiting: get(&self.publishes_waiting),
            publishes_released: get(&self.publishes_released),
            connected: u64::from(self.nats_up.load(Ordering::Relaxed)),
        }
    }

    /// How far `shard` has handled the messages from other nodes it was given.
    pub fn handled(&self, shard: ShardId) -> u64 {
        self.handled
            .get(shard.index())
            .map_or(0, |h| h.load(Ordering::Acquire))
    }

    /// Ready when a shard may have handled more since the last look ([`Self::handled`]).
    pub fn poll_handled(&self, cx: &mut Context<'_>, mut more: impl FnMut() -> bool) -> Poll<()> {
        self.handled_waker.register(cx.waker());
        if more() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// The cluster thread's ends of the channels (once).
    pub fn take_receivers(&self) -> Option<ClusterReceivers> {
        self.receivers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

impl ClusterPort {
    pub fn new(shared: Arc<ClusterShared>, shard: ShardId) -> ClusterPort {
        let cache = RefCell::new(shared.remote.current());
        ClusterPort {
            shared,
            shard,
            sent: std::cell::Cell::new(0),
            cache,
            connected_at: RefCell::default(),
            copies: RefCell::default(),
            handled_due: std::cell::Cell::new(false),
        }
    }

    pub fn shared(&self) -> &ClusterShared {
        &self.shared
    }

    /// Whether another node has a subscriber for `topic`.
    pub fn wanted(&self, topic: &str) -> bool {
        let generation = self.shared.remote.generation.load(Ordering::Acquire);
        let mut cache = self.cache.borrow_mut();
        if cache.0 != generation {
            *cache = self.shared.remote.current();
        }
        let mut any = false;
        cache.1.for_each_match(topic, |_, _| any = true);
        any
    }

    /// This shard handled the messages from other nodes up to `number` (see
    /// [`ClusterShared::handled`]). The cluster thread is woken for it by
    /// [`wake_handled`](Self::wake_handled), at the shard's next flush: once per batch from
    /// its inbox, not once per message.
    pub fn handled(&self, number: u64) {
        if let Some(h) = self.shared.handled.get(self.shard.index()) {
            h.store(number, Ordering::Release);
            self.handled_due.set(true);
        }
    }

    /// Wakes the cluster thread if messages were [`handled`](Self::handled) since it was
    /// last woken for them.
    pub fn wake_handled(&self) {
        if self.handled_due.replace(false) {
            self.shared.handled_waker.wake();
        }
    }

    /// Whether this node is connected to NATS (both of its connections).
    pub fn nats_up(&self) -> bool {
        self.shared.nats_up.load(Ordering::Acquire)
    }

    /// Hands a message to the cluster thread: its number (see [`Outgoing::number`]), or
    /// None (and counted) when the outbox is full.
    pub fn send(&self, message: Arc<Message>, key: u64, served: Vec<ByteStr>) -> Option<u64> {
        let number = if message.qos == crate::protocol::QoS::AtMostOnce {
            0
        } else {
            self.sent.get() + 1
        };
        match self.shared.outbox.try_send(Outgoing {
            message,
            key,
            served,
            shard: self.shard,
            number,
        }) {
            Ok(()) => {
                if number > 0 {
                    self.sent.set(number);
                }
                self.shared.forwarded.fetch_add(1, Ordering::Relaxed);
                Some(number)
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// A client connected here: the other nodes end their session of it.
    pub fn claim(&self, client_id: &str) {
        let now = self.shared.claim_clock.tick();
        self.connected_at
            .borrow_mut()
            .insert(client_id.to_string(), now);
        self.tell(ClusterEvent::Claimed(client_id.to_string(), now));
    }

    /// A client resuming its session connected here: the node that holds the session hands
    /// it over (and ends its own connection of the client, as a claim does).
    pub fn take(&self, client_id: &str, username: Option<&str>, held: Held) -> AnswerWait<Taken> {
        let now = self.shared.claim_clock.tick();
        self.connected_at
            .borrow_mut()
            .insert(client_id.to_string(), now);
        let (answer, wait) = answer();
        self.tell(ClusterEvent::Take {
            client_id: client_id.to_string(),
            username: username.map(str::to_string),
            held,
            at: now,
            answer,
        });
        wait
    }

    /// Counts a client refused because the cluster could not say what it holds of its
    /// session (see [`Taken`]).
    pub fn refused(&self) {
        self.shared.sessions_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether a claim made at `at` on another node is newer than this shard's connect.
    pub fn claim_wins(&self, client_id: &str, at: u64) -> bool {
        self.connected_at
            .borrow()
            .get(client_id)
            .is_none_or(|&here| here < at)
    }

    /// The session ended here.
    pub fn forget(&self, client_id: &str) {
        self.connected_at.borrow_mut().remove(client_id);
    }

    pub fn tell(&self, change: ClusterEvent) {
        let _ = self.shared.changes.send(change);
    }

    /// Copies an offline session's snapshot, or its end, to JetStream (see [`QueueCopy`]): sent
    /// at once, behind what this shard copied before.
    pub fn copy_queue(&self, copy: QueueCopy) {
        let mut batch = self.copies.borrow_mut();
        batch.push(copy);
        batch.send(&self.shared.queue_copies, &self.shared.queue_copies_waiting);
    }

    /// Copies a QoS 1/2 message queued for an offline session (its `Queued` record) to
    /// JetStream; it goes with this shard's next flush ([`Self::flush_copies`]), as copy
    /// number [`Self::copies_made`]. Beyond [`QUEUE_COPIES_CAPACITY`] waiting it is not
    /// copied (nor numbered), and counted.
    pub fn copy_queued(&self, client_id: ByteStr, record: &crate::store::Record) {
        let waiting = self.shared.queue_copies_waiting.load(Ordering::Relaxed);
        let mut batch = self.copies.borrow_mut();
        if waiting + batch.appends() >= QUEUE_COPIES_CAPACITY {
            self.shared
                .queues_not_copied
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        batch.append(self.shard, client_id, record);
    }

    /// The number of the last message this shard copied (see `queue_copies`).
    pub fn copies_made(&self) -> u64 {
        self.copies.borrow().made()
    }

    /// Sends the copies made since the last flush to the cluster thread, as one batch.
    pub fn flush_copies(&self) {
        let mut batch = self.copies.borrow_mut();
        batch.send(&self.shared.queue_copies, &self.shared.queue_copies_waiting);
    }
}

/// The time of a client's connect, for claims: microseconds since the Unix epoch, but never
/// before (nor equal to) a claim this node has heard of. A hybrid logical clock: a client that
/// connected on node A and then on node B is B's once B heard A's claim, whatever the two
/// hosts' clocks say; only claims that cross each other on NATS are ordered by wall clocks.
#[derive(Debug)]
pub struct ClaimClock {
    last: AtomicU64,
    /// Added to this host's clock (see `ClusterConfig::clock_offset_us`).
    offset_us: i64,
}

impl ClaimClock {
    pub fn new(offset_us: i64) -> ClaimClock {
        ClaimClock {
            last: AtomicU64::new(0),
            offset_us,
        }
    }

    /// The time of a connect here: later than every time this clock gave or heard of.
    pub fn tick(&self) -> u64 {
        let wall = unix_us().saturating_add_signed(self.offset_us);
        let previous = self
            .last
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                Some(wall.max(last + 1))
            })
            .unwrap_or_else(|last| last);
        wall.max(previous + 1)
    }

    /// Another node's claim, made at `at`: connects here from now on come after it.
    pub fn observe(&self, at: u64) {
        self.last.fetch_max(at, Ordering::AcqRel);
    }
}

/// Now, in microseconds since the Unix epoch.
pub fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connect_comes_after_every_claim_heard_of_whatever_the_clock_says() {
        let clock = ClaimClock::new(0);
        let first = clock.tick();
        assert!(clock.tick() > first, "two connects never tie");
        // A claim from a node whose clock runs an hour ahead.
        let ahead = unix_us() + 3_600_000_000;
        clock.observe(ahead);
        assert_eq!(clock.tick(), ahead + 1);
        assert_eq!(clock.tick(), ahead + 2);
        // An older claim changes nothing.
        clock.observe(first);
        assert_eq!(clock.tick(), ahead + 3);
    }

    #[test]
    fn the_offset_moves_the_wall_clock() {
        let behind = ClaimClock::new(-60_000_000).tick();
        let now = unix_us();
        assert!(behind + 50_000_000 < now, "{behind} vs {now}");
    }
}
