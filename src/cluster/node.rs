//! The cluster thread: a tokio runtime of its own with the NATS client, beside the shards. A
//! second plain thread blocks on the shards' channels (the outbox and the interest changes)
//! and hands their contents to the runtime; the runtime publishes, subscribes, keeps the
//! other nodes' interest and feeds what arrives into the shards' inboxes.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ahash::AHashMap;
use async_nats::{HeaderMap, ServerAddr, Subscriber};
use bytes::Bytes;
use futures_lite::StreamExt;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::dedupe::Dedupe;
use super::handoff;
use super::interest::{self, Part, RemoteNodes};
use super::subject::{filter_to_subjects, subject_to_topic, topic_to_subject};
use super::wire::*;
use crate::broker::cluster_port::{
    ClusterEvent, ClusterShared, Outgoing, QueueCopy, OUTBOX_CAPACITY,
};
use crate::broker::config::ClusterConfig;
use crate::broker::mesh::{Mesh, Message, Refused, ShardId, ShardMessage};
use crate::protocol::{ByteStr, QoS};

mod acks;
mod claims;
mod copy_marks;
pub(super) mod directory;
mod handled;
mod queue_ops;
pub(super) mod queues;
mod retained;
mod retained_kv;

use retained_kv::{KvOp, KV_QUEUE};

#[derive(Debug, thiserror::Error)]
pub enum ClusterStartError {
    #[error("invalid --cluster URL `{url}`: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot start the cluster thread: {0}")]
    Thread(std::io::Error),
}

/// The running cluster thread; [`ClusterHandle::stop`] ends it.
pub struct ClusterHandle {
    stop: Arc<AtomicBool>,
    wake: tokio::sync::watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
}

impl ClusterHandle {
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.wake.send(true);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// What the runtime's main loop reacts to.
enum Event {
    Out(Vec<Outgoing>),
    Interest(ClusterEvent),
    Queues(Vec<QueueCopy>),
}

/// Starts the cluster thread for this node. The NATS connection is made in the background
/// (and made again after failures, over every server given): the broker starts whether or
/// not NATS is up yet. `load_retained`: whether the node takes the retained messages kept in
/// JetStream at start (see `retained_kv`).
pub fn start(
    config: &ClusterConfig,
    shared: Arc<ClusterShared>,
    mesh: Arc<Mesh>,
    shards: usize,
    load_retained: bool,
) -> Result<ClusterHandle, ClusterStartError> {
    let servers = config
        .servers
        .iter()
        .map(|url| {
            url.parse::<ServerAddr>()
                .map_err(|e| ClusterStartError::Url {
                    url: url.clone(),
                    reason: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (outbox, changes, copies) = shared
        .take_receivers()
        .expect("the cluster thread starts once per broker");
    let stop = Arc::new(AtomicBool::new(false));
    // Bounded: while NATS is away and publishing waits, the feeder blocks, the shards' outbox
    // fills, and further messages for other nodes are dropped and counted there.
    let (events_tx, events_rx) = mpsc::channel(EVENT_BATCHES);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (kv_tx, kv_rx) = mpsc::channel(KV_QUEUE);
    // Blocks on the shards' channels; batches what is there and wakes the runtime.
    let feeder = {
        let stop = stop.clone();
        let events = events_tx.clone();
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("surgemq-cluster-feed".into())
            .spawn(move || feed(outbox, changes, (copies, shared), events, stop))
            .map_err(ClusterStartError::Thread)?
    };
    let node = Node {
        id: config.node_id.clone(),
        incarnation: format!(
            "{}/{}",
            config.node_id,
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
        ),
        shared,
        mesh,
        shards,
        subjects: Default::default(),
        topics: Default::default(),
        retained_kv: kv_tx,
        retained_kv_full: Default::default(),
        retained_kv_open: Default::default(),
        retained_kv_waiting: Default::default(),
        load_retained,
        acks: Default::default(),
        marks: Default::default(),
        handled: Default::default(),
    };
    let runner = std::thread::Builder::new()
        .name("surgemq-cluster".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    warn!("cluster: cannot start its runtime: {e}");
                    return;
                }
            };
            rt.block_on(node.run(servers, events_rx, stop_rx, kv_rx));
        })
        .map_err(ClusterStartError::Thread)?;
    Ok(ClusterHandle {
        stop,
        wake: stop_tx,
        threads: vec![runner, feeder],
    })
}

fn feed(
    outbox: crossbeam_channel::Receiver<Outgoing>,
    changes: crossbeam_channel::Receiver<ClusterEvent>,
    (copies, shared): (
        crossbeam_channel::Receiver<Vec<QueueCopy>>,
        Arc<ClusterShared>,
    ),
    events: mpsc::Sender<Event>,
    stop: Arc<AtomicBool>,
) {
    // A persistent session's QoS 2 message leaves only once this node accepted it
    // (`broker::qos2_gate`): sent before, a crash would have its publisher send it again, and
    // the other nodes would get it twice. It waits here, and what came after it too, so every
    // publisher's order holds; interest changes and sessions go on meanwhile. At most an
    // outbox's worth waits: then the outbox fills, and the shards drop and count.
    let mut held: VecDeque<Outgoing> = VecDeque::new();
    let never = crossbeam_channel::never();
    while !stop.load(Ordering::Acquire) {
        let mut opened = Vec::new();
        while held.front().is_some_and(|out| out.message.deliverable()) {
            opened.extend(held.pop_front());
        }
        if !opened.is_empty() && events.blocking_send(Event::Out(opened)).is_err() {
            return;
        }
        let (incoming, idle) = match held.len() {
            0 => (&outbox, Duration::from_millis(200)),
            n if n < OUTBOX_CAPACITY => (&outbox, GATE_POLL),
            _ => (&never, GATE_POLL),
        };
        crossbeam_channel::select! {
            recv(incoming) -> first => {
                let Ok(first) = first else { return };
                let mut ready = Vec::new();
                for out in std::iter::once(first).chain(outbox.try_iter().take(1023)) {
                    if held.is_empty() && out.message.deliverable() {
                        ready.push(out);
                    } else {
                        held.push_back(out);
                    }
                }
                if !ready.is_empty() && events.blocking_send(Event::Out(ready)).is_err() {
                    return;
                }
            }
            recv(changes) -> change => {
                let Ok(change) = change else { return };
                if events.blocking_send(Event::Interest(change)).is_err() {
                    return;
                }
            }
            recv(copies) -> first => {
                let Ok(first) = first else { return };
                // Each shard's flush sends one batch; several shards' go on together.
                let mut batch = first;
                for more in copies.try_iter().take(63) {
                    batch.extend(more);
                }
                let appends = batch.iter().filter(|c| matches!(c, QueueCopy::Append { .. })).count();
                shared.queue_copies_waiting.fetch_sub(appends, Ordering::Relaxed);
                if events.blocking_send(Event::Queues(batch)).is_err() {
                    return;
                }
            }
            default(idle) => {}
        }
    }
}

struct Node {
    id: String,
    /// `node/start-time`: what other nodes key sequence numbers and epochs by, so a restarted
    /// node is a new origin for them.
    incarnation: String,
    shared: Arc<ClusterShared>,
    mesh: Arc<Mesh>,
    shards: usize,
    /// Topic <-> subject conversions, remembered: topics repeat, and each conversion would
    /// otherwise allocate per message. Emptied when they grow past [`CONVERSIONS`].
    subjects: std::cell::RefCell<AHashMap<ByteStr, Option<async_nats::Subject>>>,
    topics: std::cell::RefCell<AHashMap<String, ByteStr>>,
    /// Retained changes made here, for the JetStream bucket (see `retained_kv`), each with
    /// the sequence number of a QoS 1/2 message whose publisher waits for it (0: none).
    retained_kv: mpsc::Sender<(KvOp, u64)>,
    retained_kv_full: std::cell::Cell<bool>,
    /// Whether the bucket is open: until then, and without JetStream, nobody waits for it.
    retained_kv_open: Arc<AtomicBool>,
    /// Sequence numbers of retained QoS 1/2 messages whose publishers wait for the bucket to
    /// have them (see `marks`), until `keep_retained` says it has (or gave up).
    retained_kv_waiting: std::cell::RefCell<ahash::AHashSet<u64>>,
    /// Whether to take the bucket's retained messages at start (not with `--data-dir`).
    load_retained: bool,
    /// QoS 1/2 messages between nodes: acknowledged, and sent again when lost (`confirm`).
    acks: std::cell::RefCell<acks::Acks>,
    /// How far each shard's publishers may be acknowledged (`marks`).
    marks: std::cell::RefCell<crate::cluster::marks::Marks>,
    /// Acknowledgements owed once their shards have handled the messages (`handled`).
    handled: std::cell::RefCell<handled::Handled>,
}

/// How often the feeder looks again at a QoS 2 message's gate while it is closed (it opens one
/// log commit after the PUBLISH, or when a failing disk works again).
const GATE_POLL: Duration = Duration::from_millis(1);

/// Batches (of up to 1,024 messages) waiting between the feeder and the runtime at most.
const EVENT_BATCHES: usize = 16;

/// Conversions remembered at most, each way.
const CONVERSIONS: usize = 65_536;

/// A message from NATS on its way to a shard.
struct Arrived {
    subject: async_nats::Subject,
    headers: Option<HeaderMap>,
    payload: Bytes,
    /// For a shared subscription group (`$share/GROUP/FILTER`) NATS picked this node for.
    group: Option<ByteStr>,
}

/// Hands everything `sub` gets to the main loop (`tx`), as arrived for `group`, until either
/// ends.
async fn forward_all(mut sub: Subscriber, tx: mpsc::Sender<Arrived>, group: Option<ByteStr>) {
    while let Some(m) = sub.next().await {
        let arrived = Arrived {
            subject: m.subject,
            headers: m.headers,
            payload: m.payload,
            group: group.clone(),
        };
        if tx.send(arrived).await.is_err() {
            return;
        }
    }
}

/// The NATS queue group of a shared subscription: every node's members of `$share/G/F`
/// form one queue, named after G and F (a queue name holds no spaces or wildcards).
fn queue_name(full: &str) -> String {
    let h = full.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("surgemq-share-{h:016x}")
}

impl Node {
    async fn run(
        self,
        servers: Vec<ServerAddr>,
        mut events: mpsc::Receiver<Event>,
        mut stop: tokio::sync::watch::Receiver<bool>,
        retained_changes: mpsc::Receiver<(KvOp, u64)>,
    ) {
        // Whether each of the two connections is up; the shards read both as one flag.
        let up = Arc::new([AtomicBool::new(false), AtomicBool::new(false)]);
        let watch = |which: usize| {
            let (up, shared) = (up.clone(), self.shared.clone());
            move |event: async_nats::Event| {
                let (up, shared) = (up.clone(), shared.clone());
                async move {
                    match event {
                        async_nats::Event::Connected => up[which].store(true, Ordering::Release),
                        async_nats::Event::Disconnected | async_nats::Event::Closed => {
                            up[which].store(false, Ordering::Release)
                        }
                        _ => {}
                    }
                    let both = up.iter().all(|u| u.load(Ordering::Acquire));
                    shared.nats_up.store(both, Ordering::Release);
                    if which == 0 {
                        info!("cluster: NATS {event}");
                    }
                }
            }
        };
        let client = match async_nats::ConnectOptions::new()
            .name(format!("surgemq-{}", self.id))
            .no_echo()
            .retry_on_initial_connect()
            .event_callback(watch(0))
            .connect(servers.clone())
            .await
        {
            Ok(c) => c,
            Err(e) => {
                warn!("cluster: cannot connect to NATS: {e}");
                return;
            }
        };
        // Shared subscription groups: queue subscriptions on a second connection, which
        // (unlike the first, `no_echo`) also gets this node's own messages, so that NATS picks
        // one member's node per message among all nodes, this one included.
        let groups = match async_nats::ConnectOptions::new()
            .name(format!("surgemq-{}-groups", self.id))
            .retry_on_initial_connect()
            .event_callback(watch(1))
            .connect(servers)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                warn!("cluster: cannot connect to NATS: {e}");
                return;
            }
        };
        let (arrived_tx, mut arrived) = mpsc::channel::<Arrived>(4096);
        // The retained changes the bucket has stored (or that were given up on), by the
        // sequence number their publishers wait for; at most one per change queued.
        let (kv_stored_tx, mut kv_stored) = mpsc::channel::<u64>(KV_QUEUE);
        tokio::spawn(Node::keep_retained(
            client.clone(),
            (retained_changes, kv_stored_tx),
            arrived_tx.clone(),
            format!("{}/kv", self.incarnation),
            (self.load_retained, self.retained_kv_open.clone()),
        ));
        // Persistent sessions' subscriptions, for a node that is down (see `directory`).
        let (directory_ops, ops) = mpsc::channel(directory::QUEUE);
        let sessions = directory::Directory::new(&self.id);
        tokio::spawn(directory::keep_directory(
            client.clone(),
            ops,
            sessions.clone(),
        ));
        let mut directory_full = false;
        // Offline sessions' queues, for a node that is down (see `queues`).
        let (queue_tx, ops) = mpsc::channel(queues::QUEUE);
        let queue_ops = queue_ops::QueueOps::new(queue_tx);
        tokio::spawn(queues::keep_queues(
            client.clone(),
            ops,
            self.id.clone(),
            copy_marks::CopyMarks::new(self.mesh.clone(), self.shared.clone()),
        ));
        let mut local_shared: BTreeSet<String> = BTreeSet::new();
        // Our interest: filter -> the NATS subscriptions forwarding it.
        let mut local: AHashMap<String, Vec<tokio::task::JoinHandle<()>>> = AHashMap::new();
        let mut filters = BTreeSet::new();
        let mut remote = RemoteNodes::default();
        let mut dedupe = Dedupe::default();
        let mut seq: u64 = 0;
        let mut epoch: u64 = epoch_base();
        let mut dirty = true;
        let mut next_snapshot = Instant::now();
        let mut heartbeat = tokio::time::interval(interest::HEARTBEAT);
        let forward = |sub: Subscriber, tx: mpsc::Sender<Arrived>, group: Option<ByteStr>| {
            tokio::spawn(forward_all(sub, tx, group))
        };
        // The others' interest, their hellos, and retained messages.
        let mut interest_sub = match client.subscribe(format!("{INTEREST}.*")).await {
            Ok(s) => s,
            Err(e) => return warn!("cluster: cannot subscribe: {e}"),
        };
        let mut hello_sub = match client.subscribe(HELLO).await {
            Ok(s) => s,
            Err(e) => return warn!("cluster: cannot subscribe: {e}"),
        };
        let mut claim_sub = match client.subscribe(CLAIM).await {
            Ok(s) => s,
            Err(e) => return warn!("cluster: cannot subscribe: {e}"),
        };
        // Forwarded once the retained messages fetched at the start are (see `fetch_retained`).
        let retained_sub = match client.subscribe(RETAINED).await {
            Ok(s) => s,
            Err(e) => return warn!("cluster: cannot subscribe: {e}"),
        };
        let mut sync_sub = match client.queue_subscribe(SYNC, "surgemq-sync".into()).await {
            Ok(s) => s,
            Err(e) => return warn!("cluster: cannot subscribe: {e}"),
        };
        let mut ack_sub = match client.subscribe(format!("{ACK}.{}", self.id)).await {
            Ok(s) => s,
            Err(e) => return warn!("cluster: cannot subscribe: {e}"),
        };
        // What other nodes send again to this one alone.
        match client.subscribe(format!("{TO}.{}", self.id)).await {
            Ok(s) => drop(forward(s, arrived_tx.clone(), None)),
            Err(e) => return warn!("cluster: cannot subscribe: {e}"),
        }
        // Answered while this node's connection lives: others ask when it falls silent.
        match client.subscribe(format!("{ALIVE}.{}", self.id)).await {
            Ok(mut asked) => {
                let client = client.clone();
                tokio::spawn(async move {
                    while let Some(m) = asked.next().await {
                        if let Some(reply) = m.reply {
                            let _ = client.publish(reply, Bytes::new()).await;
                        }
                    }
                });
            }
            Err(e) => return warn!("cluster: cannot subscribe: {e}"),
        }
        // Nodes NATS says are gone (`acks::probe_silent`).
        let (gone_tx, mut gone_rx) = mpsc::channel::<String>(64);
        let mut resend_check = tokio::time::interval(crate::cluster::confirm::CHECK_EVERY);
        // When the acknowledgements owed go out: one timer, moved only when that time changes
        // (a timer made per loop turn would cost a timer wheel entry per message received).
        let acks_timer = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(acks_timer);
        let mut acks_at: Option<Instant> = None;
        let _ = client.publish(HELLO, Bytes::from(self.id.clone())).await;
        self.fetch_retained(&client, retained_sub, arrived_tx.clone());
        info!(node = %self.id, "cluster: node joined");
        loop {
            // Publishers whose messages the other nodes now all have are acknowledged.
            self.tell_shards();
            // What the shards have handled is acknowledged to its nodes: at once when
            // nothing more is queued from NATS, else with the batch (`confirm::ACK_EVERY`).
            if self.take_handled() && arrived.is_empty() {
                self.send_acks(&client).await;
            }
            let snapshot_due = async {
                if dirty {
                    tokio::time::sleep_until(next_snapshot.into()).await
                } else {
                    std::future::pending::<()>().await
                }
            };
            let at = self.acks.borrow().due_at();
            if at != acks_at {
                if let Some(at) = at {
                    acks_timer.as_mut().reset(at.into());
                }
                acks_at = at;
            }
            tokio::select! {
                _ = stop.changed() => break,
                event = events.recv() => match event {
                    None => break,
                    Some(Event::Out(batch)) => {
                        let publish_all = async {
                            for out in batch {
                                seq += 1;
                                self.publish(&client, out, seq).await;
                            }
                        };
                        // Publishing waits while NATS is away: a stop must not.
                        tokio::select! {
                            _ = publish_all => {}
                            _ = stop.changed() => break,
                        }
                    }
                    Some(Event::Queues(batch)) => queue_ops.copies(batch, &self.shared),
                    Some(Event::Interest(change)) => {
                        match change {
                            ClusterEvent::Added(f) => {
                                let inner = interest::inner_filter(&f).to_string();
                                let shared = inner != f;
                                let mut forwards = Vec::new();
                                for subject in filter_to_subjects(&inner).unwrap_or_default() {
                                    let sub = if shared {
                                        groups.queue_subscribe(subject, queue_name(&f)).await
                                    } else {
                                        client.subscribe(subject).await
                                    };
                                    let group = shared.then(|| ByteStr::from(f.as_str()));
                                    match sub {
                                        Ok(s) => forwards.push(forward(s, arrived_tx.clone(), group)),
                                        Err(e) => warn!("cluster: cannot subscribe to {f}: {e}"),
                                    }
                                }
                                if shared {
                                    local_shared.insert(f.clone());
                                    self.publish_interest(&remote, &local_shared);
                                }
                                local.insert(f.clone(), forwards);
                                filters.insert(f);
                            }
                            ClusterEvent::Removed(f) => {
                                for task in local.remove(&f).unwrap_or_default() {
                                    // Ends the forwarding task and its NATS subscription.
                                    task.abort();
                                }
                                filters.remove(&f);
                                if local_shared.remove(&f) {
                                    self.publish_interest(&remote, &local_shared);
                                }
                            }
                            ClusterEvent::Claimed(id, at) => {
                                // A clean session here ends the client's session everywhere.
                                if sessions.knows(&id) {
                                    let _ = directory_ops.try_send(directory::delete_op(&id));
                                    self.session_ended(&id, &sessions, &directory_ops, &queue_ops);
                                }
                                self.claim(&client, id, at).await;
                                continue;
                            }
                            ClusterEvent::SessionExpired(id) => {
                                if sessions.knows(&id) {
                                    let _ = directory_ops.try_send(directory::delete_op(&id));
                                    self.session_ended(&id, &sessions, &directory_ops, &queue_ops);
                                }
                                continue;
                            }
                            ClusterEvent::SessionSaved { client_id, username, records, offline_since_ms, expiry_secs } => {
                                let life = directory::Life { offline_since_ms, expiry_secs };
                                let op = sessions.put_op(&client_id, username.as_deref(), life, &records);
                                match directory_ops.try_send(op) {
                                    Err(mpsc::error::TrySendError::Full(_)) => {
                                        if !std::mem::replace(&mut directory_full, true) {
                                            warn!("cluster: the queue to the session bucket is full; session changes are not stored there until it empties");
                                        }
                                    }
                                    _ => {
                                        directory_full = false;
                                        sessions.writing(&client_id);
                                    }
                                }
                                continue;
                            }
                            ClusterEvent::Take { client_id, username, held, at, answer } => {
                                if answer.is_abandoned() {
                                    // Its client stopped waiting (NATS was away): a plain
                                    // claim, so no session leaves its node for nobody.
                                    self.claim(&client, client_id, at).await;
                                    continue;
                                }
                                let mut headers = self.claim_headers(at);
                                handoff::take_headers(&mut headers, username.as_deref());
                                let shared = self.shared.clone();
                                let stored = handoff::Stored { directory: sessions.clone(), username, held };
                                let asked = handoff::Asked { headers, client_id, known: remote.node_names() };
                                tokio::spawn(handoff::take(client.clone(), asked, shared, answer, stored));
                                continue;
                            }
                        }
                        if !dirty {
                            dirty = true;
                            next_snapshot = Instant::now() + interest::DEBOUNCE;
                        }
                    }
                },
                Some(m) = arrived.recv() => self.deliver(m, &mut dedupe).await,
                Some(seq) = kv_stored.recv() => {
                    let mut waiting = self.retained_kv_waiting.borrow_mut();
                    waiting.remove(&seq);
                    while let Ok(seq) = kv_stored.try_recv() {
                        waiting.remove(&seq);
                    }
                }
                _ = std::future::poll_fn(|cx| self.poll_handled(cx)) => {}
                Some(m) = interest_sub.next() => {
                    if let Some(changed) = self.take_interest(&m, &mut remote) {
                        if changed {
                            self.publish_interest(&remote, &local_shared);
                        }
                    }
                }
                Some(m) = claim_sub.next() => self.claimed_elsewhere(&client, m, &sessions).await,
                Some(m) = ack_sub.next() => self.take_acks(&m),
                _ = &mut acks_timer, if acks_at.is_some() => {
                    self.send_acks(&client).await;
                    acks_at = None;
                }
                _ = resend_check.tick() => {
                    self.resend(&client, seq).await;
                    self.probe_silent(&client, &gone_tx);
                }
                Some(name) = gone_rx.recv() => self.node_gone(&name),
                // Sessions' snapshots, ends and purges that found no room (see `queue_ops`).
                permit = queue_ops.room(), if queue_ops.waiting() => queue_ops.send_waiting(permit),
                Some(m) = sync_sub.next() => {
                    if let Some(reply) = m.reply {
                        self.send_retained(&client, reply.to_string()).await;
                    }
                }
                Some(m) = hello_sub.next() => {
                    if m.payload != self.id.as_bytes() {
                        // A node joined: it hears our interest now, not at the next heartbeat.
                        debug!("cluster: hello from {:?}", m.payload);
                        dirty = true;
                        next_snapshot = Instant::now();
                    }
                }
                _ = heartbeat.tick() => {
                    if remote.expire(Instant::now()) {
                        self.publish_interest(&remote, &local_shared);
                    }
                    dirty = true;
                    next_snapshot = Instant::now();
                }
                _ = snapshot_due => {
                    epoch += 1;
                    self.announce(&client, &filters, epoch).await;
                    dirty = false;
                }
            }
        }
        // What is queued goes out if NATS is there; a NATS that is not must not hold us.
        self.send_acks(&client).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
        info!(node = %self.id, "cluster: node left");
    }

    /// Publishes this node's filters as a snapshot.
    async fn announce(&self, client: &async_nats::Client, filters: &BTreeSet<String>, epoch: u64) {
        let parts = interest::parts(filters);
        let total = parts.len();
        for (i, part) in parts.into_iter().enumerate() {
            let mut headers = HeaderMap::new();
            headers.insert(NODE, self.incarnation.as_str());
            headers.insert(EPOCH, epoch.to_string().as_str());
            headers.insert(PART, format!("{i}/{total}").as_str());
            let subject = format!("{INTEREST}.{}", self.id);
            if let Err(e) = client
                .publish_with_headers(subject, headers, Bytes::from(part))
                .await
            {
                warn!("cluster: cannot announce interest: {e}");
            }
        }
    }

    /// One snapshot part from another node; Some(changed) if it was one.
    fn take_interest(&self, m: &async_nats::Message, remote: &mut RemoteNodes) -> Option<bool> {
        let headers = m.headers.as_ref()?;
        let node = headers.get(NODE)?.as_str();
        if node == self.incarnation {
            return None;
        }
        let epoch = headers.get(EPOCH)?.as_str().parse().ok()?;
        let (index, total) = headers.get(PART)?.as_str().split_once('/')?;
        let filters = std::str::from_utf8(&m.payload).ok()?;
        // The node's name without its start time: a restart replaces the old entry.
        let name = node.split_once('/').map_or(node, |(n, _)| n);
        self.acks.borrow_mut().heartbeat(name, Instant::now());
        Some(remote.take(
            Part {
                node: name,
                epoch,
                index: index.parse().ok()?,
                total: total.parse().ok()?,
                filters,
            },
            Instant::now(),
        ))
    }

    /// The headers a message crosses with as `seq` (see `wire`).
    fn message_headers(&self, m: &Message, seq: u64, key: u64, retain: bool) -> HeaderMap {
        let meta = Meta {
            origin: &self.incarnation,
            seq,
            qos: m.qos,
            key,
            retain,
        };
        let mut headers = HeaderMap::new();
        headers.insert(META, meta.to_string().as_str());
        if let Some(v5) = &m.v5 {
            use base64::Engine as _;
            if !v5.properties.is_empty() {
                let encoded = base64::engine::general_purpose::STANDARD.encode(&v5.properties);
                headers.insert(PROPS, encoded.as_str());
            }
            if let Some(at) = v5.expires_at {
                let left = at.saturating_duration_since(std::time::Instant::now());
                // At least a second: expired messages were not routed here.
                let secs = left.as_secs().max(1);
                headers.insert(EXPIRY, secs.to_string().as_str());
            }
        }
        headers
    }

    async fn publish(&self, client: &async_nats::Client, out: Outgoing, seq: u64) {
        let m = &out.message;
        let mut headers = self.message_headers(m, seq, out.key, m.retain);
        for group in &out.served {
            headers.append(SERVED, &**group);
        }
        // Whether the publisher's PUBACK/PUBREC waits for the bucket to store this message.
        let mut kv_wait = false;
        if m.retain {
            let mut all = headers.clone();
            all.insert(TOPIC, &*m.topic);
            // Kept in JetStream too (see `retained_kv`), unless it has none; its publisher
            // waits for that while the bucket can be reached, so that an acknowledged
            // retained message outlives every node, not only this one.
            if !self.retained_kv.is_closed() {
                let wait = out.number > 0
                    && self.retained_kv_open.load(Ordering::Acquire)
                    && self.shared.nats_up.load(Ordering::Acquire);
                let tag = if wait { seq } else { 0 };
                match self.retained_kv.try_send((retained_kv::op_of(m), tag)) {
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        // Said once per spell of a full queue, not per message.
                        if !self.retained_kv_full.replace(true) {
                            warn!(topic = %m.topic, "cluster: the queue to JetStream is full; retained changes are not stored there until it empties");
                        }
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                    Ok(()) => {
                        self.retained_kv_full.set(false);
                        if wait {
                            self.retained_kv_waiting.borrow_mut().insert(seq);
                            kv_wait = true;
                        }
                    }
                }
            }
            // Every node keeps retained messages, interested or not.
            if let Err(e) = client
                .publish_with_headers(RETAINED, all, m.payload.clone())
                .await
            {
                warn!("cluster: cannot publish: {e}");
            }
        }
        match self.subject_of(&m.topic) {
            Some(subject) => {
                // Kept until acknowledged, also if NATS refused it now: then it is sent again.
                let kept = self.expect_acks(seq, m, out.key, &out.served);
                self.marks.borrow_mut().sent(
                    out.shard,
                    out.number,
                    (kept || kv_wait).then_some(seq),
                );
                if let Err(e) = client
                    .publish_with_headers(subject, headers, m.payload.clone())
                    .await
                {
                    warn!("cluster: cannot publish: {e}");
                }
            }
            None => {
                self.marks
                    .borrow_mut()
                    .sent(out.shard, out.number, kv_wait.then_some(seq));
                if !m.retain {
                    debug!(topic = %m.topic, "cluster: a topic with no NATS subject stays on this node");
                    self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Tells the shards how far the other nodes acknowledged their messages (see `marks`).
    fn tell_shards(&self) {
        if !self.marks.borrow().busy() {
            return;
        }
        let acks = self.acks.borrow();
        let kv_waiting = self.retained_kv_waiting.borrow();
        let now = Instant::now();
        let mut released = 0;
        let mut marks = self.marks.borrow_mut();
        marks.settle(
            |seq| {
                if kv_waiting.contains(&seq) {
                    return true;
                }
                let holds = acks.holds(seq, now);
                if !holds && acks.lacks(seq) {
                    released += 1;
                }
                holds
            },
            |shard, upto| {
                !matches!(
                    self.mesh
                        .try_send(shard, ShardMessage::ClusterConfirmed { upto }),
                    Err(Refused::Full(_))
                )
            },
        );
        let shared = &self.shared;
        if released > 0 {
            shared
                .publishes_released
                .fetch_add(released, Ordering::Relaxed);
        }
        shared
            .publishes_waiting
            .store(marks.waiting() as u64, Ordering::Relaxed);
    }

    /// Installs the interest picture the shards read, and the node count.
    fn publish_interest(&self, remote: &RemoteNodes, local_shared: &BTreeSet<String>) {
        self.shared.remote.replace(remote.trie(local_shared));
        self.acknowledgers_changed(remote, local_shared);
        self.shared
            .nodes
            .store(remote.node_count() as u64, Ordering::Relaxed);
    }

    /// The NATS subject of a topic (None: it has none), remembered.
    fn subject_of(&self, topic: &ByteStr) -> Option<async_nats::Subject> {
        let mut cache = self.subjects.borrow_mut();
        if let Some(s) = cache.get(topic) {
            return s.clone();
        }
        if cache.len() >= CONVERSIONS {
            cache.clear();
        }
        let subject = topic_to_subject(topic).map(async_nats::Subject::from);
        cache.insert(topic.clone(), subject.clone());
        subject
    }

    /// The MQTT topic of a subject, remembered.
    fn topic_of(&self, subject: &async_nats::Subject) -> ByteStr {
        let mut cache = self.topics.borrow_mut();
        if let Some(t) = cache.get(subject.as_str()) {
            return t.clone();
        }
        if cache.len() >= CONVERSIONS {
            cache.clear();
        }
        let topic = ByteStr::from(subject_to_topic(subject).as_str());
        cache.insert(subject.to_string(), topic.clone());
        topic
    }

    /// Puts a message into a shard's inbox, waiting while it is full (NATS buffers
    /// meanwhile); false if the shard has stopped.
    async fn to_shard(&self, shard: ShardId, mut msg: ShardMessage) -> bool {
        loop {
            match self.mesh.try_send(shard, msg) {
                Ok(()) => return true,
                Err(Refused::Full(back)) => {
                    msg = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(Refused::Stopped) => return false,
            }
        }
    }

    /// Hands a message from NATS to the shard that keeps its publisher's order.
    async fn deliver(&self, mut m: Arrived, dedupe: &mut Dedupe) {
        let headers = m.headers.as_ref();
        // A group's copy sent again to this node alone names its group in a header.
        let group = m.group.take().or_else(|| {
            headers
                .and_then(|h| h.get(GROUP))
                .map(|g| ByteStr::from(g.as_str()))
        });
        let meta = headers
            .and_then(|h| h.get(META))
            .and_then(|v| Meta::parse(v.as_str()));
        if let (Some(group), Some(h)) = (&group, headers) {
            // Its node gave it to a member of this group itself, while NATS was away.
            if h.get_all(SERVED).any(|g| g.as_str() == &**group) {
                return;
            }
        }
        // A QoS 1/2 message is acknowledged to its node once a shard has handled it
        // (`confirm`, `handled`): per node for plain subscriptions, per group for a group's
        // copy (NATS picked this node).
        let mut ack = None;
        if let Some(meta) = &meta {
            if meta.qos != QoS::AtMostOnce {
                ack = Some((meta.origin, meta.seq));
            }
            // A group's copy is one per group (NATS queue), not a duplicate; this node's own
            // messages come back only that way.
            if group.is_none() {
                if meta.origin == self.incarnation {
                    return;
                }
                if !dedupe.first(meta.origin, meta.seq) {
                    // Had already: a copy sent again because the acknowledgement was lost.
                    // Acknowledged once its shard handled what it was given so far (the
                    // first copy went there too: one publisher's messages keep one shard).
                    if let Some((origin, seq)) = ack {
                        let shard = ((meta.key ^ hash(origin)) % self.shards as u64) as u16;
                        let owing = handled::Owing {
                            origin: self.origin(origin),
                            seq,
                            group: None,
                            own: false,
                        };
                        self.owe_when_handled(ShardId(shard), None, owing);
                    }
                    return;
                }
            }
        }
        // On `$SMQ.retained` and in a sync the topic is a header; elsewhere the subject.
        let topic = match headers.and_then(|h| h.get(TOPIC)) {
            Some(t) => ByteStr::from(t.as_str()),
            None if m.subject.as_str() == RETAINED => return,
            None => self.topic_of(&m.subject),
        };
        // A NATS application's message (no metadata): QoS 0, not retained.
        let (qos, retain, key, origin_hash) = match &meta {
            Some(meta) => (meta.qos, meta.retain, meta.key, hash(meta.origin)),
            None => (QoS::AtMostOnce, false, 0, 0),
        };
        let shard = ((key ^ origin_hash) % self.shards as u64) as u16;
        let message = Message::new(topic, m.payload, qos, retain).with_v5(v5_part(headers));
        let message = Arc::new(message);
        self.shared.received.fetch_add(1, Ordering::Relaxed);
        let shard = ShardId(shard);
        let number = if ack.is_some() {
            self.next_for(shard)
        } else {
            0
        };
        let msg = match &group {
            Some(group) => ShardMessage::FromClusterShared(message, group.clone(), number),
            None => ShardMessage::FromCluster(message, number),
        };
        if !self.to_shard(shard, msg).await {
            return;
        }
        if let Some((origin, seq)) = ack {
            let owing = handled::Owing {
                origin: self.origin(origin),
                seq,
                own: group.is_some() && origin == self.incarnation,
                group,
            };
            self.owe_when_handled(shard, Some(number), owing);
        }
    }
}

fn hash(s: &str) -> u64 {
    s.bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
}

/// Epochs grow across restarts: they start at the start time.
fn epoch_base() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
        << 16
}
