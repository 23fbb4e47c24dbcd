//! What the shards and the cluster thread (`crate::cluster`, feature `cluster`) share: a
//! bounded outbox of messages other nodes want, a channel of this node's interest changes
//! (filters that got their first subscriber here, or lost their last), and the other nodes'
//! interest, which the cluster thread replaces as a whole and the shards read without locks
//! on the message path (a generation number says when their cached copy is stale).
//!
//! Messages from other nodes come into the shards through their ordinary inboxes
//! ([`super::mesh::ShardMessage::FromCluster`]).

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::mesh::Message;
use crate::topic::SubscriptionTrie;

/// Messages waiting for the cluster thread at most; beyond it they are dropped and counted.
pub const OUTBOX_CAPACITY: usize = 65_536;

/// A message for the other nodes, with the key that keeps one publisher's messages in order
/// on the receiving nodes (they route all messages of one key through one shard).
pub struct Outgoing {
    pub message: Arc<Message>,
    pub key: u64,
}

/// What the other nodes must hear of, in the order it happened here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// The filter has its first subscriber on this node.
    Added(String),
    /// The filter's last subscriber on this node is gone.
    Removed(String),
    /// A client connected here with this id at this time (Unix microseconds): a session of it
    /// on another node that connected earlier ends there (MQTT-3.1.4-2 across the cluster).
    Claimed(String, u64),
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
    cache: RefCell<(u64, Arc<InterestTrie>)>,
    /// When each session of this shard last had a client connect (Unix microseconds): a
    /// claim from another node ends it only if it came later (claims of earlier connects
    /// may arrive after a newer connect here).
    connected_at: RefCell<ahash::AHashMap<String, u64>>,
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
    receivers: std::sync::Mutex<Option<(Receiver<Outgoing>, Receiver<ClusterEvent>)>>,
}

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
        let (outbox, outbox_rx) = crossbeam_channel::bounded(OUTBOX_CAPACITY);
        // Interest changes are never dropped: they are bounded by the filters that exist.
        let (changes, changes_rx) = crossbeam_channel::unbounded();
        Arc::new(ClusterShared {
            outbox,
            changes,
            remote: RemoteInterest::new(),
            dropped: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            received: AtomicU64::new(0),
            nodes: AtomicU64::new(0),
            receivers: std::sync::Mutex::new(Some((outbox_rx, changes_rx))),
        })
    }

    /// The cluster thread's ends of the channels (once).
    pub fn take_receivers(&self) -> Option<(Receiver<Outgoing>, Receiver<ClusterEvent>)> {
        self.receivers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

impl ClusterPort {
    pub fn new(shared: Arc<ClusterShared>) -> ClusterPort {
        let cache = RefCell::new(shared.remote.current());
        ClusterPort {
            shared,
            cache,
            connected_at: RefCell::default(),
        }
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

    /// Hands a message to the cluster thread; false (and counted) when its outbox is full.
    pub fn send(&self, message: Arc<Message>, key: u64) -> bool {
        match self.shared.outbox.try_send(Outgoing { message, key }) {
            Ok(()) => {
                self.shared.forwarded.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// A client connected here: the other nodes end their session of it.
    pub fn claim(&self, client_id: &str) {
        let now = unix_us();
        self.connected_at
            .borrow_mut()
            .insert(client_id.to_string(), now);
        self.tell(ClusterEvent::Claimed(client_id.to_string(), now));
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
}

/// Now, in microseconds since the Unix epoch (nodes' clocks are compared for claims).
pub fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
