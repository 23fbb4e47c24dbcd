//! One shard: the state a core owns and the routing decisions made on it.
//!
//! A shard owns the sessions whose client ids hash to it, a replica of the whole subscription
//! trie (every subscriber of every shard, keyed by [`SubscriberId`]), the retained messages
//! whose topics hash to it, and its [`Router`] to the other shards. Everything here runs on the
//! shard's own executor thread, so state sits in `Cell`/`RefCell` and needs no locks; the only
//! way in from outside is the shard's inbox, drained by [`drain_inbox`].

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use ahash::AHashMap;
use tracing::warn;

use super::cluster_port::{AnswerWait, ClusterPort, Held};
use super::config::BrokerConfig;
use super::connected::session_expiry;
use super::connected::ShardHeldBytes;
use super::durability::{Durability, Ticket};
use super::journal::Journal;
use super::keepalive::KeepaliveQueue;
use super::mesh::{Grant, Mesh, Message, Router, ShardId, ShardMessage, SubscriberId, Target};
use super::metrics::{add, Metrics};
use super::output::SHARE_PAYLOADS_FROM;
use super::parking::ParkingLot;
use super::pressure::PressureBoard;
use super::replica::Replica;
use super::session::{
    Arrival, Dropped, Kick, Outbound, PeerLimits, Queued, Session, SessionLimits,
};
use super::session_table::SessionTable;
use super::shared::ShareKey;
use super::wire::{ReadArena, WritePool};
use crate::protocol::{ByteStr, Connect, QoS};
use crate::store::{Position, Record};
use crate::topic::TopicTree;

/// A small message going to at least this many subscribers at QoS 0 is encoded once, and each
/// of them copies the frame: one allocation per message instead of a header per subscriber.
const ENCODE_ONCE_FROM: usize = 4;

mod cluster;
mod durable;
pub(super) mod gates;
mod handoff;
mod pressure;
mod retained;
mod session_copies;
mod shared;
mod subscriptions;
mod wills;

/// Whether `message` should be encoded once for its QoS 0 subscribers among `matches`
/// (subscriber, granted QoS): when it is small (payloads from `share_from` bytes on are
/// shared, not copied) and enough of them get it at QoS 0 to pay for the frame's allocation.
fn worth_encoding_once(
    message: &Message,
    matches: &[(SubscriberId, Grant)],
    share_from: usize,
) -> bool {
    // Most messages (pair, fan-in) stop at the first test.
    if matches.len() < ENCODE_ONCE_FROM || message.payload.len() >= share_from {
        return false;
    }
    let qos0 = if message.qos == QoS::AtMostOnce {
        matches.len()
    } else {
        matches
            .iter()
            .filter(|m| m.1.qos == QoS::AtMostOnce)
            .count()
    };
    qos0 >= ENCODE_ONCE_FROM
}

/// Whether `connect` resumes `existing` (rather than replacing it). A stored session is
/// resumed only by the user it belongs to: its subscriptions were authorized for that user,
/// and another must not inherit them. An MQTT 5 client resumes even a session that was to end
/// with its connection, while that connection is still there (MQTT-3.1.2-5 of 5.0).
pub(super) fn resumes(existing: &Session, connect: &Connect) -> bool {
    !connect.clean_session
        && (connect.level.is_v5() || !existing.clean)
        && existing.username == connect.username
}

/// What a CONNECT says that bounds what its client is sent (see [`PeerLimits`]).
fn peer_limits(connect: &Connect) -> PeerLimits {
    let props = connect.properties.as_deref();
    PeerLimits {
        level: connect.level,
        receive_maximum: props.and_then(|p| p.receive_maximum).unwrap_or(u16::MAX),
        max_packet_size: props
            .and_then(|p| p.maximum_packet_size)
            .unwrap_or(u32::MAX),
    }
}

/// The shard that owns `key` (a client id, or a retained topic): the same answer on every
/// shard and in every run, so tests can place clients on purpose.
pub fn home_shard(key: &str, shards: usize) -> ShardId {
    static HASHER: ahash::RandomState = ahash::RandomState::with_seeds(
        0x5u64,
        0x0073_7572_6765_6d71,
        0x9e37_79b9_7f4a_7c15,
        0x2545_f491_4f6c_dd1d,
    );
    ShardId((HASHER.hash_one(key) % shards as u64) as u16)
}

/// One open client socket counted against `--max-connections`, across all shards. It travels
/// with a connection that moves to another shard and is released when the socket closes.
#[derive(Debug)]
pub struct ConnectionPermit(Arc<AtomicUsize>);

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A SUBSCRIBE or UNSUBSCRIBE waiting for the other shards to apply it.
struct PendingAck {
    subscriber: SubscriberId,
    remaining: usize,
    reply: Outbound,
    retained: Vec<(Arc<Message>, Grant)>,
}

pub struct Shard {
    pub id: ShardId,
    pub shards: usize,
    pub config: Arc<BrokerConfig>,
    pub metrics: Metrics,
    /// Open client sockets of the whole broker.
    open_sockets: Arc<AtomicUsize>,
    pub(super) router: RefCell<Router>,
    replica: RefCell<Replica>,
    pub(super) retained: RefCell<TopicTree<Arc<Message>>>,
    pub(super) sessions: RefCell<SessionTable>,
    pending: RefCell<AHashMap<u64, PendingAck>>,
    next_token: Cell<u64>,
    next_conn: Cell<u64>,
    next_client_id: Cell<u64>,
    /// Where connections without a partial packet read (see `wire`).
    pub read_arena: RefCell<ReadArena>,
    /// Write buffers of idle connections, for reuse.
    pub write_pool: RefCell<WritePool>,
    /// Reused by `route` for the matches of one message.
    matches: RefCell<Vec<(SubscriberId, Grant)>>,
    stopping: Cell<bool>,
    /// The task queue connections run in (the drain task has its own, latency-sensitive one).
    connection_queue: glommio::TaskQueueHandle,
    stop_waker: RefCell<Option<Waker>>,
    /// Wakes the task that retries flushes while an inbox is full.
    pub(super) stall_waker: RefCell<Option<Waker>>,
    /// Connections waiting for the router to drain below its congestion limit.
    pub(super) congestion_waiters: RefCell<Vec<Waker>>,
    /// Where idle connections park; None when parking is off or its epoll set failed.
    pub parking: Option<ParkingLot>,
    session_limits: Rc<SessionLimits>,
    /// Keepalive deadlines of this shard's connections.
    pub keepalives: KeepaliveQueue,
    /// Subscribers whose full queues hold their publishers back (see `pressure`).
    pub pressure: PressureBoard,
    /// What the packets of this shard's held-back publishers keep (see `connected::held`).
    pub(super) held_bytes: ShardHeldBytes,
    /// The shard's log, with `--data-dir` (set once at start, see `restore`).
    pub journal: std::cell::OnceCell<Journal>,
    /// Acknowledgements waiting for other shards' disks, and this shard's answers to them.
    pub durability: Durability,
    /// SUBACK/UNSUBACK tokens (see `pending`) waiting for the journal to reach a position.
    pub(super) durable_requests: RefCell<std::collections::VecDeque<(Position, u64)>>,
    pub(super) durable_requests_waker: RefCell<Option<Waker>>,
    /// MQTT 5 wills waiting for their Will Delay Interval, by session, with the connection
    /// that left them: sent when the delay ends or the session does, dropped when the client
    /// resumes the session (see `ConnectedClient::publish_will_later`).
    pub(super) delayed_wills: RefCell<AHashMap<SubscriberId, wills::DelayedWill>>,
    /// With a cluster: where messages for other nodes go (set once at start).
    pub cluster: std::cell::OnceCell<ClusterPort>,
    /// Incoming QoS 2 PUBLISHes waiting for acceptance (with `--data-dir`, see `gates`).
    pub(super) qos2: gates::Qos2Gates,
}

/// What routing a message did (see [`Shard::route`]).
#[must_use = "a publisher that reached a subscriber under pressure must wait for it"]
#[derive(Debug, Default)]
pub struct Routed {
    /// A subscriber under pressure that got the message at QoS 1/2, if any: the publisher
    /// must then wait for it (see `pressure`).
    pub pressured: Option<SubscriberId>,
    /// What must be durable before the message is acknowledged (with `--data-dir`).
    pub ticket: Ticket,
    /// How many subscriptions it reached (an MQTT 5 publisher hears 0x10 when none did).
    pub matched: usize,
    /// A subscriber on this shard had no room left for it at QoS 1/2 (an MQTT 5 publisher
    /// hears 0x97). Drops on other shards are counted there, not reported back.
    pub quota_exceeded: bool,
    /// With a cluster: its number among the messages this shard sent the other nodes, whose
    /// acknowledgement by them a QoS 1/2 publisher waits for (0: none went).
    pub cluster: u64,
}

/// Where a routed message's shared subscription groups get it.
pub(super) enum Groups<'a> {
    /// On this node, from this shard; the groups that got it are added to the list given.
    Here(Option<&'a mut Vec<ByteStr>>),
    /// Not here: NATS picks the node of each group's member (`FromClusterShared`).
    Elsewhere,
}

/// Why a message was not queued for a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Undelivered {
    /// The session ended while the message travelled.
    Gone,
    Dropped(Dropped),
}

impl Shard {
    /// Must be called on the shard's executor, from the task queue connections will use.
    pub fn new(
        id: ShardId,
        config: Arc<BrokerConfig>,
        mesh: Arc<Mesh>,
        open_sockets: Arc<AtomicUsize>,
    ) -> Shard {
        let clustered = config.cluster.is_some();
        let parking = config.park_idle_after.and_then(|after| {
            ParkingLot::new(id, mesh.clone(), after)
                .map_err(|e| warn!(shard = id.0, "idle connections will not park: {e}"))
                .ok()
        });
        let session_limits = Rc::new(SessionLimits {
            max_inflight: config.max_inflight,
            max_queued_messages: config.max_queued_messages,
            max_queued_bytes: config.max_queued_bytes,
            queue_qos0: config.queue_qos0,
            share_payloads_from: SHARE_PAYLOADS_FROM,
            stall_timeout: config.stall_timeout,
        });
        let shards = mesh.shards();
        let share_loads = mesh.share_loads().clone();
        Shard {
            parking,
            session_limits,
            keepalives: KeepaliveQueue::default(),
            id,
            shards,
            config,
            metrics: Metrics::default(),
            open_sockets,
            router: RefCell::new(Router::new(id, mesh)),
            // Shard 0 keeps count of this node's filters for the other nodes.
            replica: RefCell::new(Replica::new(clustered && id.0 == 0, share_loads)),
            retained: RefCell::new(TopicTree::new()),
            sessions: RefCell::new(SessionTable::default()),
            pending: RefCell::new(AHashMap::new()),
            next_token: Cell::new(1),
            next_conn: Cell::new(1),
            next_client_id: Cell::new(1),
            matches: RefCell::new(Vec::new()),
            delayed_wills: RefCell::new(AHashMap::new()),
            cluster: std::cell::OnceCell::new(),
            read_arena: RefCell::new(ReadArena::default()),
            write_pool: RefCell::new(WritePool::default()),
            stopping: Cell::new(false),
            connection_queue: glommio::executor().current_task_queue(),
            stop_waker: RefCell::new(None),
            stall_waker: RefCell::new(None),
            congestion_waiters: RefCell::new(Vec::new()),
            pressure: PressureBoard::default(),
            held_bytes: ShardHeldBytes::default(),
            journal: std::cell::OnceCell::new(),
            durability: Durability::new(shards),
            durable_requests: RefCell::new(std::collections::VecDeque::new()),
            durable_requests_waker: RefCell::new(None),
            qos2: gates::Qos2Gates::default(),
        }
    }

    pub(super) fn session_limits(&self) -> Rc<SessionLimits> {
        self.session_limits.clone()
    }

    pub fn mesh(&self) -> Arc<Mesh> {
        self.router.borrow().mesh().clone()
    }

    /// Counts a new socket against `--max-connections`; None when the broker is full.
    pub fn admit(&self) -> Option<ConnectionPermit> {
        let before = self.open_sockets.fetch_add(1, Ordering::Relaxed);
        let permit = ConnectionPermit(self.open_sockets.clone());
        if before >= self.config.max_connections {
            let c = &self.metrics.refused_max_connections;
            c.set(c.get() + 1);
            return None; // dropping the permit gives the slot back
        }
        Some(permit)
    }

    pub fn connection_queue(&self) -> glommio::TaskQueueHandle {
        self.connection_queue
    }

    pub fn next_connection_id(&self) -> u64 {
        let id = self.next_conn.get();
        self.next_conn.set(id + 1);
        id
    }

    /// A unique client id for a client that sent an empty one (MQTT-3.1.3-6), chosen so that
    /// its home is this shard and the connection need not move.
    pub fn assign_client_id(&self) -> ByteStr {
        loop {
            let n = self.next_client_id.get();
            self.next_client_id.set(n + 1);
            let id = format!("surgemq-auto-{}-{n}", self.id.0);
            if home_shard(&id, self.shards) == self.id {
                return ByteStr::from(id);
            }
        }
    }

    // ----- sessions -------------------------------------------------------------------------

    /// The session for a new connection `conn` of `connect.client_id`, and whether a stored one
    /// was resumed (Session Present). An existing connection of that client id is told to go.
    ///
    /// 3.1.1: CleanSession = 1 starts a session that ends with the connection; 0 resumes a
    /// stored one or starts one kept for `--session-expiry`. MQTT 5: Clean Start = 1 discards
    /// what is stored, and the Session Expiry Interval says how long the session outlives the
    /// connection (0: it ends with it).
    ///
    /// In a cluster, `claimed`: the client's claim went out already (with the question for its
    /// session, see [`Shard::cluster_take`]); otherwise it goes out now.
    pub fn open_session(
        &self,
        connect: &Connect,
        conn: u64,
        claimed: bool,
    ) -> (Rc<RefCell<Session>>, bool) {
        if let Some(port) = self.cluster.get().filter(|_| !claimed) {
            // One client id, one connection in the whole cluster: another node ends its own.
            port.claim(&connect.client_id);
        }
        let v5 = connect.level.is_v5();
        let (ends_with_connection, expiry) = if v5 {
            let asked = connect
                .properties
                .as_ref()
                .and_then(|p| p.session_expiry_interval)
                .unwrap_or(0);
            (asked == 0, session_expiry(&self.config, asked))
        } else {
            (connect.clean_session, self.config.session_expiry)
        };
        let peer = peer_limits(connect);
        let mut existing = self.sessions.borrow().find(&connect.client_id);
        if existing
            .as_ref()
            .is_some_and(|s| s.borrow().expired(std::time::Instant::now()))
        {
            // Expired, and the sweep (once a second) has not got to it yet: it is gone.
            let expired = existing.take().expect("checked");
            add(&self.metrics.sessions_expired, 1);
            self.remove_session(&expired);
        }
        if let Some(existing) = existing {
            if resumes(&existing.borrow(), connect) {
                // Back before its Will Delay Interval ran out: the will is not sent.
                self.cancel_delayed_will(&existing.borrow());
                {
                    let mut s = existing.borrow_mut();
                    s.attach(conn);
                    s.clean = ends_with_connection;
                    s.set_expiry(expiry);
                    s.peer = peer;
                }
                if !ends_with_connection {
                    self.make_durable(&existing);
                }
                let at_ms = existing.borrow().attached_ms().unwrap_or(0);
                self.journal_session(&existing.borrow(), |session| Record::Attached {
                    session,
                    at_ms,
                });
                self.announce_presence(&existing, true);
                self.journal_expiry(&existing.borrow());
                // Online again, maybe with another expiry: the directory's copy says so, and
                // the copy of its queue is no more.
                self.save_to_directory(&existing, 0);
                self.copy_attached(&existing, true);
                return (existing, true);
            }
            existing.borrow_mut().kick(Kick::TakenOver);
            self.remove_session(&existing);
        }
        let limits = self.session_limits.clone();
        let shard = self.id;
        let stored_as = match self.journal() {
            Some(j) if !ends_with_connection => {
                let session = j.new_session();
                j.append(&Record::SessionBegan {
                    session,
                    client_id: connect.client_id.clone(),
                    username: connect.username.clone(),
                });
                Some(session)
            }
            _ => None,
        };
        let session =
            self.sessions
                .borrow_mut()
                .insert(connect.client_id.clone(), |slot, generation| {
                    let id = SubscriberId {
                        shard,
                        durable: stored_as.is_some(),
                        slot,
                        generation,
                    };
                    let mut session =
                        Session::new(connect.client_id.clone(), id, ends_with_connection, limits);
                    session.username = connect.username.clone();
                    session.set_expiry(expiry);
                    session.peer = peer;
                    session.set_stored_as(stored_as);
                    session
                });
        session.borrow_mut().attach(conn);
        if let (Some(at_ms), Some(_)) = (session.borrow().attached_ms(), self.cluster.get()) {
            // In a cluster, when it began (see `Record::Attached`).
            self.journal_session(&session.borrow(), |session| Record::Attached {
                session,
                at_ms,
            });
        }
        self.journal_expiry(&session.borrow());
        self.copy_attached(&session, false);
        self.metrics.sessions.set(self.metrics.sessions.get() + 1);
        (session, false)
    }

    /// In a cluster: a client that resumes a session (CleanSession / Clean Start 0) asks the
    /// other nodes for theirs (even with one here: after a node was down, both it and the node
    /// the client went to meanwhile hold one); the wait ends with the sessions they handed
    /// over. None (no need to ask) otherwise. See `shard::handoff`.
    pub fn cluster_take(
        &self,
        connect: &Connect,
    ) -> Option<AnswerWait<crate::broker::cluster_port::Taken>> {
        let port = self.cluster.get()?;
        if connect.clean_session {
            return None;
        }
        let held = match self.sessions.borrow().find(&connect.client_id) {
            Some(s) if s.borrow().clean => Held::Nothing,
            Some(s) if s.borrow().restored_gone_ms().is_some() => Held::Restored,
            Some(_) => Held::Session,
            None => Held::Nothing,
        };
        Some(port.take(&connect.client_id, connect.username.as_deref(), held))
    }

    /// Whether this shard holds a persistent session of the client.
    pub fn holds_session(&self, client_id: &str) -> bool {
        let found = self.sessions.borrow().find(client_id);
        found.is_some_and(|s| !s.borrow().clean)
    }

    /// Journals an MQTT 5 session's own expiry (with `--data-dir`), so a restart keeps it.
    pub fn journal_expiry(&self, session: &Session) {
        if let Some(secs) = session.own_expiry_secs() {
            self.journal_session(session, |session| Record::SessionExpiry { session, secs });
        }
    }

    /// Ends a session: its subscriptions leave every replica, its slot is freed, and a will
    /// still waiting for its delay goes out now (MQTT 5.0 3.1.3.2.2).
    pub fn remove_session(&self, session: &Rc<RefCell<Session>>) {
        let id = session.borrow().id;
        self.release_delayed_will(id);
        let mut s = session.borrow_mut();
        // Journalled last: after what it hands on (see `journal_handed_on`).
        let stored = s.stored_as();
        s.set_stored_as(None);
        let filters: Vec<ByteStr> = s.subscriptions.drain().map(|(f, _)| f).collect();
        let unreceived = s.take_shared_unreceived(false);
        s.clear_delivery_state();
        let client_id = s.client_id.clone();
        drop(s);
        if let Some(port) = self.cluster.get() {
            port.forget(&client_id);
        }
        // An emptied queue holds nobody back.
        self.relieve(session);
        {
            let mut replica = self.replica.borrow_mut();
            for f in &filters {
                replica.remove(f, &id);
            }
        }
        self.announce_interest();
        if !filters.is_empty() && self.shards > 1 {
            let filters: Arc<[ByteStr]> = filters.into();
            self.router
                .borrow_mut()
                .broadcast(|| ShardMessage::Unsubscribe {
                    subscriber: id,
                    filters: filters.clone(),
                    token: None,
                });
        }
        let before = self.sessions.borrow().get(id.slot, id.generation).is_some();
        self.sessions.borrow_mut().remove(id, &client_id);
        if before {
            self.metrics.sessions.set(self.metrics.sessions.get() - 1);
        }
        let handed_on = self.give_back_shared(id, unreceived);
        if let Some(n) = stored {
            self.journal_handed_on(n, handed_on, vec![Record::SessionEnded { session: n }]);
        }
    }

    // ----- publish --------------------------------------------------------------------------

    /// Delivers a message published on this shard (by a client or as a will) to every
    /// subscriber, once per subscriber at the highest granted QoS (MQTT-3.3.5-1), at
    /// min(published, granted) QoS (MQTT-3.3.1-9), with RETAIN clear (live forward) unless
    /// the subscription says Retain As Published. An MQTT 5 client's overlapping subscriptions
    /// with different Subscription Identifiers get a copy each, with its identifier
    /// (MQTT-3.3.4-5); a No Local subscription of `publisher` gets nothing (MQTT-3.8.3-3).
    /// This node's shared subscription groups get it too: for a message that stays on this
    /// node (see `route_published` for one that goes to other nodes too).
    ///
    /// Returns what the publisher must wait for: a subscriber under pressure, and (with
    /// `--data-dir`) what must be durable before its acknowledgement.
    pub fn route(&self, message: Arc<Message>, publisher: Option<SubscriberId>) -> Routed {
        self.route_to(message, publisher, Groups::Here(None))
    }

    /// [`route`](Self::route), saying whether this node's groups get the message here.
    pub(super) fn route_to(
        &self,
        message: Arc<Message>,
        publisher: Option<SubscriberId>,
        groups: Groups<'_>,
    ) -> Routed {
        let mut routed = Routed::default();
        let before = self.journal_end();
        let copies_before = self.copies_made();
        if message.retain {
            self.retain(&message, &mut routed.ticket);
        }
        let mut matches = self.matches.borrow_mut();
        matches.clear();
        let replica = self.replica.borrow();
        if !replica.trie.is_empty() {
            // (Skipped when only shared subscriptions exist.)
            replica
                .trie
                .for_each_match(&message.topic, |id, grant| matches.push((*id, *grant)));
        }
        if matches.len() > 1 && replica.may_overlap() {
            // Overlapping subscriptions of one client: keep one entry per Subscription
            // Identifier (one in all for 3.1.1), the highest QoS.
            matches.sort_unstable_by(|a, b| {
                (a.0, a.1.subscription_id)
                    .cmp(&(b.0, b.1.subscription_id))
                    .then(b.1.qos.cmp(&a.1.qos))
            });
            matches.dedup_by_key(|m| (m.0, m.1.subscription_id));
        }
        if let (Some(publisher), true) = (publisher, replica.has_no_local()) {
            matches.retain(|(id, grant)| !(grant.no_local && *id == publisher));
        }
        routed.matched = matches.len();
        if worth_encoding_once(&message, &matches, self.session_limits.share_payloads_from) {
            message.share_qos0_frames();
        }
        let mut router = None;
        let mut pressured = None;
        for &(id, granted) in matches.iter() {
            let qos = message.qos.min(granted.qos);
            let retain = granted.retain_as_published && message.retain;
            let subscription_id = granted.subscription_id;
            // Only QoS 1/2 is pushed back; a local delivery may raise the pressure just now.
            let check_pressure = qos != QoS::AtMostOnce && pressured.is_none();
            if id.shard == self.id {
                let target = Target {
                    slot: id.slot,
                    generation: id.generation,
                    qos,
                    retain,
                    subscription_id,
                    acl_check: granted.acl_checked,
                };
                let result = self.enqueue_local(target, &message, None, Arrival::Routed);
                if result == Err(Undelivered::Dropped(Dropped::QueueFull)) && qos != QoS::AtMostOnce
                {
                    routed.quota_exceeded = true;
                }
            } else {
                let router = router.get_or_insert_with(|| self.router.borrow_mut());
                let needs_ack = self.confirms_delivery(id, qos);
                let number = router.deliver(
                    id.shard,
                    &message,
                    Target {
                        slot: id.slot,
                        generation: id.generation,
                        qos,
                        retain,
                        subscription_id,
                        acl_check: granted.acl_checked,
                    },
                    needs_ack,
                );
                if needs_ack {
                    routed.ticket.add_remote(id.shard, number);
                }
            }
            if check_pressure && self.pressure.any() && self.pressure.contains(&id) {
                pressured = Some(id);
            }
        }
        drop(router);
        routed.pressured = pressured;
        if let (false, Groups::Here(served)) = (replica.shared.is_empty(), groups) {
            self.route_shared(&message, &replica, &mut routed, served);
        }
        self.metrics
            .messages_routed
            .set(self.metrics.messages_routed.get() + 1);
        routed.ticket.local = self.appended_since(before);
        routed.ticket.copied = self.copied_since(copies_before);
        routed
    }

    fn deliver_local(&self, target: Target, message: &Arc<Message>, arrival: Arrival) {
        let _ = self.enqueue_local(target, message, None, arrival);
    }

    /// Queues `message` for a session of this shard, or says why not. A message for a shared
    /// subscription (`share`) that could not be queued is not counted as dropped here: the
    /// caller tries another member of the group.
    fn enqueue_local(
        &self,
        target: Target,
        message: &Arc<Message>,
        share: Option<&Arc<ShareKey>>,
        arrival: Arrival,
    ) -> Result<(), Undelivered> {
        let Target { qos, retain, .. } = target;
        let sessions = self.sessions.borrow();
        let Some(session) = sessions.get(target.slot, target.generation) else {
            // The subscriber went away while the message travelled.
            return Err(Undelivered::Gone);
        };
        let mut s = session.borrow_mut();
        if target.acl_check
            && !self.config.authenticator.can_read(
                s.username.as_deref(),
                &s.client_id,
                &message.topic,
            )
        {
            // A topic its subscription matches but the ACL does not let it read.
            add(&self.metrics.acl_withheld, 1);
            return Ok(());
        }
        let result = s.enqueue_shared(
            message.clone(),
            qos,
            retain,
            target.subscription_id,
            // QoS 0 is not given back to the group when the session ends (at most once).
            share.filter(|_| qos != QoS::AtMostOnce).cloned(),
            arrival,
        );
        if let (Ok(_), Some(stored_as), Some(journal)) = (result, s.stored_as(), self.journal()) {
            if qos != QoS::AtMostOnce {
                journal.queued(
                    stored_as,
                    s.last_seq(),
                    message,
                    qos,
                    retain,
                    target.subscription_id,
                    share.map(|k| &**k),
                );
            }
        }
        if result.is_ok() && qos != QoS::AtMostOnce && !s.clean {
            // Kept for a client that is away (or copied while connected): copied for another
            // node, should this one go down.
            let share = share.map(|k| &**k);
            self.copy_queued(&s, message, (qos, retain), target.subscription_id, share);
        }
        if let (Err(dropped), Some(_)) = (result, share) {
            return Err(Undelivered::Dropped(dropped));
        }
        if result == Err(Dropped::QueueFull) && qos != QoS::AtMostOnce && !s.warned_full {
            // An acknowledged message lost: say so once per session, by name.
            s.warned_full = true;
            warn!(client = %s.client_id, queued = s.queued(), "QoS 1/2 messages for this session are dropped: its queue is full (--max-queued-messages / --max-queued-bytes) and it is offline or not reading; logged once per session, counted in dropped_queue_full_qos12");
        }
        let id = s.id;
        drop(s);
        match result {
            Ok(Queued::Normally) => {}
            Ok(Queued::OverLimit) => {
                drop(sessions);
                self.raise_pressure(id);
            }
            Err(Dropped::QueueFull) => self.metrics.count_drop_queue_full(qos),
            Err(Dropped::Offline) => self
                .metrics
                .dropped_offline_qos0
                .set(self.metrics.dropped_offline_qos0.get() + 1),
        }
        result.map(|_| ()).map_err(Undelivered::Dropped)
    }

    // ----- mesh -----------------------------------------------------------------------------

    /// Handles one message from another shard.
    pub fn handle(self: &Rc<Self>, msg: ShardMessage) {
        match msg {
            ShardMessage::Deliver(batch) => {
                let copies_before = self.copies_made();
                let mut shared = batch.shared.iter().peekable();
                let mut returned = Vec::new();
                let mut index = 0;
                for (message, targets) in batch.iter() {
                    for t in targets {
                        match shared.next_if(|(i, _)| *i == index) {
                            Some((_, tag)) => self.deliver_sent_shared(
                                *t,
                                message,
                                tag.clone(),
                                batch.numbered,
                                &mut returned,
                            ),
                            None => self.deliver_local(*t, message, Arrival::FromShard),
                        }
                        index += 1;
                    }
                }
                self.return_shared(batch.numbered, returned);
                self.handled_numbered(batch.numbered, self.copied_since(copies_before));
            }
            ShardMessage::Subscribe {
                subscriber,
                filters,
                token,
            } => {
                let retained = self.apply_subscribe(subscriber, &filters);
                self.router.borrow_mut().send(
                    subscriber.shard,
                    ShardMessage::SubscribeApplied { token, retained },
                );
            }
            ShardMessage::SubscribeApplied { token, retained } => {
                self.request_applied(token, retained)
            }
            ShardMessage::Unsubscribe {
                subscriber,
                filters,
                token,
            } => {
                self.apply_unsubscribe(subscriber, &filters);
                if let Some(token) = token {
                    self.router
                        .borrow_mut()
                        .send(subscriber.shard, ShardMessage::UnsubscribeApplied { token });
                }
            }
            ShardMessage::UnsubscribeApplied { token } => self.request_applied(token, Vec::new()),
            ShardMessage::Retain(message, numbered) => {
                self.store_retained(&message);
                self.handled_numbered(numbered, 0);
            }
            ShardMessage::Durable { from, upto } => {
                add(&self.metrics.confirmations_received, 1);
                self.durability.confirmed_by(from, upto)
            }
            ShardMessage::Pressure { subscriber, on } => {
                if on {
                    self.pressure.raise(subscriber);
                } else {
                    self.pressure.lower(&subscriber);
                }
            }
            ShardMessage::Adopt(moved) => super::connection::serve_moved(self.clone(), *moved),
            ShardMessage::Readable(tokens) => {
                let sessions = self.sessions.borrow();
                for token in tokens {
                    let (slot, generation) = super::parking::slot_of(token);
                    if let Some(session) = sessions.get(slot, generation) {
                        let mut session = session.borrow_mut();
                        session.readable = true;
                        session.wake();
                    }
                }
            }
            ShardMessage::Presence { subscriber, online } => self.presence(subscriber, online),
            ShardMessage::SharedReturned {
                from,
                number,
                returned,
            } => self.shared_returned(from, number, returned),
            ShardMessage::Reauthorize => self.reauthorize(),
            ShardMessage::FromCluster(message, number) => {
                // Another node's message: for this node's subscribers only; a group's copy
                // comes on its own (`FromClusterShared`), where NATS picked this node for it.
                let before = self.journal_end();
                let mut ticket = self.route_to(message, None, Groups::Elsewhere).ticket;
                ticket.local = self.appended_since(before);
                self.handled_from_cluster(number, ticket);
            }
            ShardMessage::ClusterConfirmed { upto } => self.durability.cluster_confirmed(upto),
            ShardMessage::CopiesStored { upto } => {
                if self.durability.copies_stored(upto) {
                    let durable = self.journal().map_or(0, |j| j.durable_position());
                    self.durability.advance(durable);
                }
            }
            ShardMessage::FromClusterShared(message, group, number) => {
                let before = self.journal_end();
                let copies_before = self.copies_made();
                let mut ticket = Ticket::default();
                let pick = self.replica.borrow().shared.pick_in(
                    &group,
                    &message.topic,
                    self.config.shared_strategy,
                    self.id,
                    &self.pressure,
                );
                if let Some((key, id, grant)) = pick {
                    self.deliver_shared(&message, id, grant, &key, 0, &mut ticket);
                }
                ticket.local = self.appended_since(before);
                ticket.copied = self.copied_since(copies_before);
                self.handled_from_cluster(number, ticket);
            }
            ShardMessage::CollectRetained(reply) => {
                let mut all = Vec::new();
                self.retained.borrow().for_each(|m| {
                    if !m.topic.starts_with('$') {
                        all.push(m.clone());
                    }
                });
                let _ = reply.send(all);
            }
            ShardMessage::ClaimedElsewhere(client_id, at, hand_over) => {
                self.claimed_elsewhere(&client_id, at, hand_over)
            }
            ShardMessage::CopyShort(client_id) => self.copy_short(&client_id),
            ShardMessage::GatesOpened => self.gates_opened(),
            ShardMessage::Shutdown => self.stop(),
        }
    }

    /// A numbered message from another shard was handled: it is confirmed once what it wrote
    /// here is durable, and the queue copies it made (up to `copied`) are stored (see
    /// `durability`).
    fn handled_numbered(&self, numbered: super::mesh::Numbered, copied: u64) {
        match self.journal() {
            Some(j) => {
                self.durability
                    .handled(numbered, j.appended(), copied, j.durable_position())
            }
            None if self.waits_for_copies() => self.durability.handled(numbered, 0, copied, 0),
            None => {}
        }
    }

    /// Queues a message for another shard; it leaves with the next flush.
    pub fn router_send(&self, to: ShardId, msg: ShardMessage) {
        self.router.borrow_mut().send(to, msg);
    }

    /// Sends what the router gathered. When an inbox is full, the stall task retries.
    pub fn flush(&self) {
        if let Some(port) = self.cluster.get() {
            port.flush_copies();
            port.wake_handled();
        }
        if self.journal().is_some() || self.waits_for_copies() {
            let mut router = self.router.borrow_mut();
            let me = self.id;
            let sent = &self.metrics.confirmations_sent;
            self.durability.take_announcements(|origin, upto| {
                add(sent, 1);
                router.send(origin, ShardMessage::Durable { from: me, upto });
            });
        }
        if let Some(changes) = self.pressure.take_announcements() {
            let mut router = self.router.borrow_mut();
            for (subscriber, on) in changes {
                router.broadcast(|| ShardMessage::Pressure { subscriber, on });
            }
        }
        let waiting = self.router.borrow_mut().flush();
        if waiting {
            if let Some(w) = self.stall_waker.borrow_mut().take() {
                w.wake();
            }
        }
        // Whichever flush brings the backlog under the limit lets the paused publishers go.
        // The stall task only runs while a backlog remains: when another flush (the inbox
        // drain, another connection) empties it first, the stall task never looks again, and
        // leaving the wake to it stalled a single publisher for good.
        if !self.congestion_waiters.borrow().is_empty() && !self.congested() {
            let waiters = std::mem::take(&mut *self.congestion_waiters.borrow_mut());
            for w in waiters {
                w.wake();
            }
        }
    }

    pub fn congested(&self) -> bool {
        self.router.borrow().congested()
    }

    /// Ready once the router is no longer congested; until then, the task is woken when it is.
    pub fn poll_uncongested(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.congested() {
            self.congestion_waiters
                .borrow_mut()
                .push(cx.waker().clone());
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    /// Begins shutdown: connections are told to close, the run loop returns.
    pub fn stop(&self) {
        if self.stopping.replace(true) {
            return;
        }
        let sessions: Vec<_> = self.sessions.borrow().all().cloned().collect();
        for s in sessions {
            s.borrow_mut().kick(Kick::Shutdown);
        }
        if let Some(w) = self.stop_waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Resolves when `stop` has been called.
    pub async fn stopped(&self) {
        std::future::poll_fn(|cx| {
            if self.stopping.get() {
                Poll::Ready(())
            } else {
                *self.stop_waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    pub fn stalls(&self) -> u64 {
        self.router.borrow().stalls
    }
}

#[cfg(test)]
mod tests;
