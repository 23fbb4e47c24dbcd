//! Persistent sessions' copies in JetStream (the stream [`STREAM`]), so that a client whose
//! session lived on a node that is down resumes it elsewhere with its messages, not only with
//! its subscriptions (`directory`).
//!
//! When a persistent session's client goes away, its node writes the session as a hand-over
//! carries it (subscriptions, messages in flight and queued: `shard::handoff`) to the subject
//! `$SMQ.q.<client>`, headed [`SNAPSHOT`] with when the client went and the node's name; each
//! QoS 1/2 message queued for the session afterwards is appended as the record a log holds
//! for it. With `--cluster-online-copies` (`broker::shard::session_copies`) a session is
//! copied while its client is connected too: a snapshot when it attaches, then each change
//! (a message queued or sent, an acknowledgement, a subscription) appended as the journal
//! would record it, and a new snapshot when the changes outweigh one. The subject's payloads
//! from its last snapshot on, concatenated, are the session. A snapshot is written before
//! what it replaces is purged (up to its sequence, once it is stored), so a node that dies
//! in between leaves a subject a reader still reads right. When its client comes back to a
//! node that does not copy it, a clean connect ends the session or it expires, an [`END`]
//! is written and the subject purged up to it. Purges run beside the writes: a slow one
//! (a stream whose leader is being elected answers late) holds no copy back.
//!
//! Copies are written in order, several in flight at once, and the changes of one session
//! meanwhile go as one JetStream message (up to NATS's max payload: the reader concatenates
//! them all the same), headed [`FROM`] with the node. A publisher's acknowledgement of a
//! message copied waits for JetStream to store the copy (`copy_marks`), except while the
//! stream cannot be opened (JetStream not there, known once an attempt to open it failed):
//! then the copies wait here (within bounds) without holding anyone. A change given up on
//! (no room on its way, JetStream failed, or beyond those bounds) leaves its session's copy
//! short: the session's home shard is told (`ShardMessage::CopyShort`, at most once a second
//! per session while writes fail) and writes a new snapshot, which holds what was lost.
//!
//! A node resuming a session that no node handed over (its node is down) reads the subject
//! ([`read`]): if it has a snapshot, that copy (the last snapshot and the changes after it
//! from the same node) is taken instead of the directory's, and a tombstone
//! `taken.<client>.<node>` (the snapshot's time) goes into the session bucket. The node that
//! wrote the snapshot, should it come back with `--data-dir`, finds its restored copy
//! superseded and drops it instead of merging it into the client's session (its messages were
//! delivered from the snapshot; merged, they would come twice): a copy restored from a log
//! that ended while its client was connected counts from when the client attached, which no
//! snapshot of that connection precedes. The subject is replaced only once the new node has
//! the session (its client attaches there), so a node that dies while taking it loses nothing.

use std::collections::VecDeque;

use ahash::AHashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishAckFuture, stream};
use async_nats::HeaderMap;
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::copy_marks::{CopyMarks, Firsts};
use super::directory::Unreadable;
use crate::broker::cluster_port::{ClusterShared, CopyNumber, QueueCopy, QUEUE_COPIES_CAPACITY};
use crate::protocol::ByteStr;

/// The stream every node of a cluster shares.
pub(super) const STREAM: &str = "SMQ_QUEUES";
/// Subjects: `$SMQ.q.<client id in URL-safe base64>`.
const PREFIX: &str = "$SMQ.q";
/// On a session's first message: `GONE_MS NODE`, when its client went (Unix ms, the node's
/// clock) and the node that wrote it; for a session copied while its client is connected,
/// when the snapshot was written.
const SNAPSHOT: &str = "Smq-Snapshot";
/// On the messages appended to a session's copy: the node that wrote them. A reader applies
/// only those of the node that wrote the snapshot they follow: a node whose client moved to
/// another may have had changes on their way when the new node's snapshot came.
const FROM: &str = "Smq-From";
/// On an empty message: the session's copy ends here (its client is back where it is not
/// copied, or the session ended). What came before it is purged once it is stored; a reader
/// that finds it first (the purge has not run yet) drops what came before it too.
const END: &str = "Smq-End";
/// Batches of copies (what the shards' flushes sent, up to 64 flushes' worth each) waiting
/// for the stream task at most (beyond: not copied, counted).
pub(super) const QUEUE: usize = 64;
/// Copies written and not yet acknowledged by JetStream, at most.
const IN_FLIGHT: usize = 256;
/// Bytes gathered for all subjects at most before they are written.
const GATHER_MAX: usize = 8 << 20;
/// The pause between attempts to open the stream.
const RETRY: Duration = Duration::from_secs(5);
/// How long JetStream may take to acknowledge a copy before it is given up on (async-nats's
/// default is 30 s): publishers wait for the acknowledgement, so not for long.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Purges running at once, at most.
const PURGES: usize = 64;
/// While writes to JetStream fail, how often shards are told again that their sessions'
/// copies lack changes.
const SHORT_AGAIN: Duration = Duration::from_secs(1);
/// The pause before a shard whose inbox was full is told its mark again.
const TELL_AGAIN: Duration = Duration::from_millis(5);

fn subject_of(client_id: &str) -> String {
    format!("{PREFIX}.{}", super::directory::key_of(client_id))
}

/// A session read back from its copy in JetStream.
pub(in crate::cluster) struct Copied {
    /// The session's records (see `shard::handoff`), messages included.
    pub records: Bytes,
    /// The node that wrote it, and when the client went away there (its clock).
    pub node: String,
    pub gone_ms: u64,
}

/// Reads the client's session from its copy, if it has one that begins with a snapshot.
/// Stops (None) when `abandoned` says nobody waits any more. No stream is no copy; a
/// stream that does not answer (no leader: it is electing one, or lost its quorum) is
/// [`Unreadable`], not "no copy".
pub(in crate::cluster) async fn read(
    client: &async_nats::Client,
    client_id: &str,
    abandoned: impl Fn() -> bool,
) -> Result<Option<Copied>, Unreadable> {
    let js = jetstream::new(client.clone());
    let Ok(stream) = js.get_stream_no_info(STREAM).await else {
        return Ok(None);
    };
    let subject = subject_of(client_id);
    let mut records = BytesMut::new();
    let mut head: Option<(u64, String)> = None;
    let mut next = 1;
    // What was read, for the debug line: each message's sequence and kind (S snapshot, E
    // end, F change of the snapshot's node, f of another node, ? neither), the first 400
    // characters of it.
    let mut seen = String::new();
    loop {
        let got = stream
            .raw_message_builder()
            .sequence(next)
            .next_by_subject(subject.clone())
            .send()
            .await;
        let m = match got {
            Ok(m) => m,
            Err(e) => match e.kind() {
                stream::RawMessageErrorKind::NoMessageFound => {
                    debug!(client = %client_id, from = next, %seen, "cluster: JetStream has no more of the session's queue copy");
                    break;
                }
                stream::RawMessageErrorKind::JetStream(e)
                    if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    debug!(client = %client_id, "cluster: JetStream has no stream of queue copies");
                    return Ok(None);
                }
                _ => {
                    warn!(client = %client_id, "cluster: cannot read the session's queue from JetStream: {e}");
                    return Err(Unreadable);
                }
            },
        };
        if abandoned() {
            debug!(client = %client_id, "cluster: the client stopped waiting for its queue copy");
            return Ok(None);
        }
        if m.subject.as_str() != subject {
            // A server that ignores "next by subject" answers with whatever is at `next`.
            warn!(client = %client_id, "cluster: this NATS server cannot read a session's queue from JetStream by subject");
            return Ok(None);
        }
        next = m.sequence + 1;
        if seen.len() < 400 && tracing::enabled!(tracing::Level::DEBUG) {
            let kind = match (
                m.headers.get(END),
                m.headers.get(SNAPSHOT),
                m.headers.get(FROM),
            ) {
                (Some(_), _, _) => "E",
                (_, Some(_), _) => "S",
                (_, _, Some(from)) if head.as_ref().is_some_and(|(_, n)| n == from.as_str()) => "F",
                (_, _, Some(_)) => "f",
                _ => "?",
            };
            seen.push_str(&format!("{}{} ", kind, m.sequence));
        }
        if m.headers.get(END).is_some() {
            records.clear();
            head = None;
            continue;
        }
        if let Some(snapshot) = m.headers.get(SNAPSHOT).and_then(|v| parse_head(v.as_str())) {
            // A later snapshot replaces what came before (it is written before the earlier
            // one is purged, and may be written while this is read).
            records.clear();
            head = Some(snapshot);
        } else if let (Some(from), Some((_, node))) = (m.headers.get(FROM), &head) {
            if from.as_str() != node {
                continue;
            }
        }
        if head.is_some() {
            records.extend_from_slice(&m.payload);
        }
    }
    let Some((gone_ms, node)) = head else {
        return Ok(None);
    };
    Ok(Some(Copied {
        records: records.freeze(),
        node,
        gone_ms,
    }))
}

fn parse_head(text: &str) -> Option<(u64, String)> {
    let (gone, node) = text.split_once(' ')?;
    Some((gone.parse().ok()?, node.to_string()))
}

/// What the stream task does, in order.
pub(super) enum QueueOp {
    Copies(Vec<QueueCopy>),
    /// The session ended (clean connect, expiry): its copy goes.
    Purge(String),
    /// Copies up to these numbers (per shard) were given up on before they got here
    /// (`queue_ops`): they hold nobody once what came before them has come. The clients'
    /// copies lack them: their shards are told to write them whole again.
    GivenUp(Vec<CopyNumber>, ShortClients),
}

/// Clients whose copies lack changes given up on, each once (a set: under load, thousands of
/// sessions' changes can be given up on, batch after batch).
pub(super) type ShortClients = ahash::AHashSet<ByteStr>;

/// The stream task: opens the stream (trying again every [`RETRY`] while JetStream is not
/// there; what comes meanwhile waits, within bounds) and writes the copies `ops` brings, in
/// order, until the node stops.
pub(super) async fn keep_queues(
    client: async_nats::Client,
    mut ops: mpsc::Receiver<QueueOp>,
    node: String,
    mut marks: CopyMarks,
) {
    let shared = marks.shared().clone();
    let js = jetstream::ContextBuilder::new()
        .ack_timeout(ACK_TIMEOUT)
        .build(client.clone());
    // Whether an attempt to open the stream failed: JetStream is not there.
    let mut said = false;
    // What comes before the stream is open waits (in order, up to `QUEUE_COPIES_CAPACITY`
    // copies; beyond, not copied and counted): JetStream may come up later than the node.
    let mut waiting: Vec<QueueOp> = Vec::new();
    let mut waiting_copies = 0;
    // The clients whose copies lack what was not kept meanwhile.
    let mut short = ShortClients::default();
    let mut untold = false;
    let stream = loop {
        // After a failed attempt, the pause before the next one; copies wait meanwhile.
        let pause = if said { RETRY } else { Duration::ZERO };
        let opening = async {
            tokio::time::sleep(pause).await;
            open_stream(&js).await
        };
        tokio::pin!(opening);
        let opened = loop {
            tokio::select! {
                opened = &mut opening => break opened,
                _ = tokio::time::sleep(TELL_AGAIN), if untold => {
                    untold = marks.tell(std::iter::empty());
                }
                op = ops.recv() => match op {
                    None => return,
                    Some(QueueOp::Copies(copies)) if waiting_copies + copies.len() > QUEUE_COPIES_CAPACITY => {
                        shared.queues_not_copied.fetch_add(copies.len() as u64, Ordering::Relaxed);
                        for copy in &copies {
                            if let QueueCopy::Append { client_id, .. } = copy {
                                short.insert(client_id.clone());
                            }
                        }
                        received(&mut marks, &QueueOp::Copies(copies));
                        untold = marks.tell(std::iter::empty());
                    }
                    Some(op) => {
                        // Without a stream, nobody waits for them (see the module docs);
                        // but until the first attempt to open it fails, JetStream may only
                        // be slow to answer (a node starting beside it), and those who wait
                        // for these copies keep waiting.
                        if said {
                            received(&mut marks, &op);
                            untold = marks.tell(std::iter::empty());
                        }
                        if let QueueOp::Copies(copies) = &op {
                            waiting_copies += copies.len();
                        }
                        waiting.push(op);
                    }
                },
            }
        };
        match opened {
            Ok(stream) => break stream,
            Err(e) => {
                if !std::mem::replace(&mut said, true) {
                    info!("cluster: no JetStream stream for offline sessions' queues yet ({e}; trying again every {}s); until then a session on a node that is down resumes without its messages", RETRY.as_secs());
                    // JetStream is not there: what waited for its copies waits no more.
                    for op in &waiting {
                        received(&mut marks, op);
                    }
                    untold = marks.tell(std::iter::empty());
                }
            }
        }
    };
    let max = js.client().server_info().max_payload.max(64 * 1024);
    let mut writer = Writer {
        js,
        stream,
        node,
        shared,
        marks,
        // A shard not told its mark while the stream opened (its inbox was full) is told
        // again from here.
        untold,
        changed: false,
        // Room for the headers and the protocol line.
        chunk: max - 4096,
        pending: VecDeque::new(),
        appends: AHashMap::new(),
        gathered: 0,
        failing: false,
        purges: Arc::new(tokio::sync::Semaphore::new(PURGES)),
        short,
        short_told: None,
    };
    for op in waiting {
        writer.write(op).await;
    }
    loop {
        let op = match ops.try_recv() {
            Ok(op) => op,
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {
                // Nothing more for now: out with what is gathered, wait for what is in
                // flight, then for more (telling a shard that could not hear its mark again
                // meanwhile).
                writer.flush_appends().await;
                writer.settle(0).await;
                writer.tell();
                let op = if writer.untold {
                    tokio::select! {
                        op = ops.recv() => op,
                        _ = tokio::time::sleep(TELL_AGAIN) => continue,
                    }
                } else {
                    ops.recv().await
                };
                match op {
                    Some(op) => op,
                    None => break,
                }
            }
        };
        writer.write(op).await;
        writer.tell();
    }
    writer.flush_appends().await;
    writer.settle(0).await;
}

async fn open_stream(js: &jetstream::Context) -> Result<stream::Stream, String> {
    if let Ok(stream) = js.get_stream(STREAM).await {
        return Ok(stream);
    }
    let mut last_error = String::new();
    // Replicated as the session bucket is (`retained_kv::open_bucket`), on a single server
    // as it must.
    for replicas in [3, 1] {
        let config = stream::Config {
            name: STREAM.to_string(),
            description: Some("SurgeMQ offline sessions' queues".to_string()),
            subjects: vec![format!("{PREFIX}.>")],
            allow_direct: true,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        };
        match js.create_stream(config).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = e.to_string(),
        }
    }
    // Another node may have made it meanwhile.
    js.get_stream(STREAM).await.map_err(|_| last_error)
}

/// Notes the numbers of the messages `op` brings or gave up on (see `copy_marks`).
fn received(marks: &mut CopyMarks, op: &QueueOp) {
    match op {
        QueueOp::Copies(copies) => {
            for copy in copies {
                if let QueueCopy::Append { number, .. } = copy {
                    marks.received(*number);
                }
            }
        }
        QueueOp::GivenUp(numbers, _) => {
            for &number in numbers {
                marks.received(number);
            }
        }
        QueueOp::Purge(_) => {}
    }
}

/// Messages queued for one offline session, gathered until they are written.
#[derive(Default)]
struct Gathered {
    records: BytesMut,
    /// How many.
    count: u64,
    /// Their shards' first copy numbers.
    firsts: Firsts,
}

/// What goes once a write is stored: the subject's messages before it, and (1) itself, or
/// not (0).
type PurgeAfter = (String, u64);

/// A JetStream message written whose acknowledgement has not come yet.
struct InFlight {
    ack: PublishAckFuture,
    /// How many copies it holds, and their shards' first copy numbers.
    copies: u64,
    firsts: Firsts,
    /// What goes once it is stored.
    purge_after: Option<PurgeAfter>,
    /// The client whose copy lacks it if it fails (None for an end).
    client: Option<ByteStr>,
}

struct Writer {
    js: jetstream::Context,
    stream: stream::Stream,
    node: String,
    shared: Arc<ClusterShared>,
    /// How far each shard's copies are stored.
    marks: CopyMarks,
    /// Whether a shard could not be told its mark (its inbox was full).
    untold: bool,
    /// Whether a mark may have moved since the shards were last told: a block was stored,
    /// failed or forgotten, or copies were given up on (a batch of messages that only joined
    /// blocks moves no mark).
    changed: bool,
    /// How large one JetStream message may be.
    chunk: usize,
    /// Copies written, oldest first, whose acknowledgement has not come yet, with how many
    /// copies each holds and their shards' first copy numbers; a snapshot's first part, or
    /// an end, with its subject, whose earlier messages go once it is stored (and, for an
    /// end, 1: it goes too).
    pending: VecDeque<InFlight>,
    /// Messages queued for offline sessions, gathered per subject until nothing more comes
    /// at once (or a JetStream message is full).
    appends: AHashMap<ByteStr, Gathered>,
    /// Their bytes, for all subjects.
    gathered: usize,
    /// Whether the last write failed (said once per spell).
    failing: bool,
    /// Purges running (see [`Writer::purge_before`]).
    purges: Arc<tokio::sync::Semaphore>,
    /// Clients whose copies lack changes given up on, for their shards to copy whole
    /// ([`Writer::tell`]).
    short: ShortClients,
    /// When shards were last told of such clients while writes fail.
    short_told: Option<std::time::Instant>,
}

impl Writer {
    /// Tells the shards how far their copies are stored: all but what is gathered or in
    /// flight.
    fn tell(&mut self) {
        if !std::mem::take(&mut self.changed) && !self.untold {
            return;
        }
        let blocks = self
            .appends
            .values()
            .map(|g| &g.firsts)
            .chain(self.pending.iter().map(|p| &p.firsts));
        self.untold = self.marks.tell(blocks);
        if self.short.is_empty() {
            return;
        }
        // While writes fail, a copy written whole would fail too: its shard is told again at
        // most once a second (a copy given up on is short again).
        let now = std::time::Instant::now();
        if self.failing
            && self
                .short_told
                .is_some_and(|t| now.duration_since(t) < SHORT_AGAIN)
        {
            self.untold = true;
            return;
        }
        self.short_told = Some(now);
        self.untold |= self.marks.tell_short(&mut self.short);
    }

    async fn write(&mut self, op: QueueOp) {
        match op {
            QueueOp::Copies(copies) => {
                for copy in copies {
                    self.copy(copy).await;
                }
            }
            QueueOp::Purge(client_id) => self.end(&client_id).await,
            QueueOp::GivenUp(numbers, clients) => {
                for number in numbers {
                    self.marks.received(number);
                }
                self.short.extend(clients);
                self.changed = true;
            }
        }
    }

    async fn copy(&mut self, copy: QueueCopy) {
        match copy {
            QueueCopy::Snapshot {
                client_id,
                gone_ms,
                records,
            } => {
                // What was gathered before is in the snapshot: it is stored with it. The
                // subject's earlier messages are purged once the snapshot is stored (a node
                // that dies between the two leaves both, and a reader takes the later).
                let firsts = match self.appends.remove(&client_id) {
                    Some(g) => {
                        self.gathered -= g.records.len();
                        g.firsts
                    }
                    None => Firsts::default(),
                };
                let subject = subject_of(&client_id);
                let mut headers = HeaderMap::new();
                let head = format!("{gone_ms} {}", self.node);
                headers.insert(SNAPSHOT, head.as_str());
                let purge = Some((subject.clone(), 0));
                self.publish(
                    subject,
                    Some(headers),
                    records,
                    (1, firsts),
                    purge,
                    Some(client_id),
                )
                .await;
            }
            QueueCopy::Append {
                client_id,
                record,
                number,
            } => {
                self.marks.received(number);
                let gathered = self.appends.get(&client_id).map_or(0, |g| g.records.len());
                if gathered > 0 && gathered + record.len() > self.chunk {
                    self.flush_client(&client_id).await;
                }
                let g = self.appends.entry(client_id).or_default();
                g.records.extend_from_slice(&record);
                g.count += 1;
                g.firsts.add(number);
                self.gathered += record.len();
                if self.gathered > GATHER_MAX {
                    self.flush_appends().await;
                }
            }
            QueueCopy::Ended(client_id) => self.end(&client_id).await,
        }
    }

    /// Drops what was gathered for a client, which a purge is about to remove.
    fn forget_appends(&mut self, client_id: &str) {
        if let Some(g) = self.appends.remove(client_id) {
            self.gathered -= g.records.len();
            self.changed = true;
        }
    }

    async fn flush_client(&mut self, client_id: &str) {
        if let Some((client_id, g)) = self.appends.remove_entry(client_id) {
            self.gathered -= g.records.len();
            self.publish_gathered(client_id, g).await;
        }
    }

    /// Writes every client's gathered messages.
    async fn flush_appends(&mut self) {
        let gathered: Vec<_> = self.appends.drain().collect();
        self.gathered = 0;
        for (client_id, g) in gathered {
            self.publish_gathered(client_id, g).await;
        }
    }

    /// Writes what was gathered for a client, headed with this node's name.
    async fn publish_gathered(&mut self, client_id: ByteStr, g: Gathered) {
        let subject = subject_of(&client_id);
        let headers = self.from();
        let copies = (g.count, g.firsts);
        let client = Some(client_id);
        self.publish(subject, headers, g.records.freeze(), copies, None, client)
            .await;
    }

    /// The headers of appended messages: the node that writes them.
    fn from(&self) -> Option<HeaderMap> {
        let mut headers = HeaderMap::new();
        headers.insert(FROM, self.node.as_str());
        Some(headers)
    }

    /// Writes `payload`, which holds `copies` copies numbered from `firsts` (in several
    /// messages when it is larger than a NATS message may be: the reader concatenates them),
    /// `headers` on the first; once the first is stored, the messages before it on the
    /// subject `purge_below` go. If it fails, `client`'s copy lacks it (see `tell`).
    async fn publish(
        &mut self,
        subject: String,
        mut headers: Option<HeaderMap>,
        payload: Bytes,
        (copies, firsts): (u64, Firsts),
        mut purge_below: Option<PurgeAfter>,
        client: Option<ByteStr>,
    ) {
        let size = self.chunk;
        let count = payload.len().div_ceil(size).max(1);
        for index in 0..count {
            let part = payload.slice(index * size..((index + 1) * size).min(payload.len()));
            // The copies count once, with the last part, which is acknowledged last.
            let (copies, firsts) = if index + 1 == count {
                (copies, firsts.clone())
            } else {
                (0, Firsts::default())
            };
            self.settle(IN_FLIGHT - 1).await;
            let sent = match headers.take() {
                Some(h) => self.js.publish_with_headers(subject.clone(), h, part).await,
                None => self.js.publish(subject.clone(), part).await,
            };
            match sent {
                Ok(ack) => self.pending.push_back(InFlight {
                    ack,
                    copies,
                    firsts,
                    purge_after: purge_below.take(),
                    client: client.clone(),
                }),
                Err(e) => {
                    self.changed = true;
                    self.failed(e.to_string(), copies, client.clone())
                }
            }
        }
    }

    /// Ends a client's copy: an [`END`] written behind what came before, and once it is
    /// stored, the subject purged up to it (what was gathered for the client goes too).
    async fn end(&mut self, client_id: &str) {
        self.forget_appends(client_id);
        let subject = subject_of(client_id);
        let mut headers = HeaderMap::new();
        headers.insert(END, self.node.as_str());
        let purge = Some((subject.clone(), 1));
        let nothing = (0, Firsts::default());
        self.publish(subject, Some(headers), Bytes::new(), nothing, purge, None)
            .await;
    }

    /// Purges a subject's messages before `sequence` (a snapshot that replaces them, or all
    /// this node wrote there), beside the writes: a purge can take long (a stream whose
    /// leader is being elected answers late), and copies must not wait for it. Later writes
    /// have later sequences, so it never removes them, whenever it runs. At most
    /// [`PURGES`] run at once (then this waits for one to end).
    async fn purge_before(&self, subject: String, sequence: u64) {
        if sequence <= 1 {
            // Nothing before it (and to nats-server, a purge up to 1 is a purge of all).
            return;
        }
        let Ok(permit) = self.purges.clone().acquire_owned().await else {
            return;
        };
        let stream = self.stream.clone();
        tokio::spawn(async move {
            let purge = stream.purge().filter(subject).sequence(sequence);
            match tokio::time::timeout(ACK_TIMEOUT, purge).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    warn!("cluster: cannot purge a session's copy in JetStream: {e}")
                }
                Err(_) => warn!(
                    "cluster: JetStream did not purge a session's copy within {}s",
                    ACK_TIMEOUT.as_secs()
                ),
            }
            drop(permit);
        });
    }

    /// Waits for acknowledgements until at most `keep` copies are in flight.
    async fn settle(&mut self, keep: usize) {
        while self.pending.len() > keep {
            // (Its shards' marks are told only once this returns: see `tell`.)
            let Some(InFlight {
                ack,
                copies,
                purge_after,
                client,
                ..
            }) = self.pending.pop_front()
            else {
                return;
            };
            self.changed = true;
            match ack.await {
                Ok(stored) => {
                    if let Some((subject, past)) = purge_after {
                        self.purge_before(subject, stored.sequence + past).await;
                    }
                    self.shared
                        .queues_copied
                        .fetch_add(copies, Ordering::Relaxed);
                    if std::mem::take(&mut self.failing) {
                        info!("cluster: offline sessions' queues are copied to JetStream again");
                    }
                }
                Err(e) => self.failed(e.to_string(), copies, client),
            }
        }
    }

    fn failed(&mut self, why: String, copies: u64, client: Option<ByteStr>) {
        if let Some(client) = client {
            self.short.insert(client);
        }
        self.shared
            .queues_not_copied
            .fetch_add(copies, Ordering::Relaxed);
        if !std::mem::replace(&mut self.failing, true) {
            warn!("cluster: cannot copy an offline session's queue to JetStream ({why}); a client whose node goes down may resume without messages queued for it meanwhile");
        }
    }
}

impl super::Node {
    /// A persistent session ended (a clean connect, or it expired): its queue's copy and
    /// the tombstones of copies taken go.
    pub(super) fn session_ended(
        &self,
        client_id: &str,
        directory: &super::directory::Directory,
        directory_ops: &mpsc::Sender<super::KvOp>,
        ops: &super::queue_ops::QueueOps,
    ) {
        for op in directory.tombstones_gone(client_id) {
            let _ = directory_ops.try_send(op);
        }
        ops.purge(client_id.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_head_reads_back() {
        assert_eq!(
            parse_head("1700000000000 node a"),
            Some((1_700_000_000_000, "node a".to_string()))
        );
        assert_eq!(parse_head("x a"), None);
        assert_eq!(parse_head("12"), None);
        assert_eq!(subject_of("a b/c"), "$SMQ.q.YSBiL2M=");
    }
}
