//! Persistent sessions' subscriptions in a JetStream key-value bucket ([`BUCKET`]), so that a
//! client whose session lived on a node that is down (or came back without `--data-dir`)
//! resumes it elsewhere with its subscriptions, instead of a new session.
//!
//! A node writes a session's entry whenever the session's subscriptions change (the records
//! `SessionBegan`, its expiry and its `Subscribed`, as a hand-over would carry them, without
//! messages), and the node where a client connects with a clean session deletes it: that
//! ends the session everywhere. A node asking for a session that no node handed over (see
//! `handoff::take`) takes the entry instead, if it is the same user's and the node does not
//! hold a session of the client itself (the entry would add nothing to it), unless another node
//! wrote the entry: that node may have resumed the session while this one was cut off from
//! NATS and never heard of it, and then died, so the entry goes into the merge as the copy
//! of when it was written, and is the one whose subscriptions the client goes on with if it
//! is newer than the session here. Otherwise it is the oldest copy in a merge (it says it went
//! away at time 0), so a copy a node hands over later, with the messages acknowledged for the
//! session there, is merged into it as any other.
//!
//! Writes are queued (bounded, [`QUEUE`]; when full a change is not stored and logged once
//! per spell) and written in order. Until the bucket opens (JetStream may come later than
//! the node: the node keeps trying every [`RETRY`]), the last change of each client waits
//! (for [`QUEUE`] clients at most), and a clean connect deletes whether or not an entry is
//! known. Which keys exist is learnt from a watch of the bucket (which first replays every
//! key's last value, so a node that restarts knows the entries made before), so a clean
//! connect costs no JetStream write unless the client had an entry.
//!
//! The entry is written again when its client connects or goes (with when it went, and the
//! session's expiry): a copy whose session expired while its node was down is not taken,
//! and is deleted.
//!
//! Beside the entries, tombstones `taken.<client>.<node>` (the value: a Unix ms time, as
//! text) say that another node resumed the client's session from `<node>`'s copy in
//! JetStream that was made when the client went away then (`queues`): `<node>`, back with
//! `--data-dir`, drops the copy it restored instead of handing it over, and no node takes
//! that copy again (its purge may come late: the node that took it may not have its stream
//! open yet). A tombstone goes when the session ends.
//!
//! An entry: `version u8 (3) | offline-since u64 (Unix ms, 0: connected) | expiry u32 (seconds,
//! 0xFFFFFFFF: never) | written u64 (Unix ms) | writer u16-len | writer (its node's key) | user
//! u16-len (0xFFFF: none) | user | records`; the key the client id in URL-safe base64.
//! Version 2 entries (no written time, no writer) are read as written by nobody.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_nats::jetstream::kv::{Operation, Store};
use base64::Engine as _;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_lite::StreamExt;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::retained_kv::{open_bucket, write, KvOp};

/// The bucket every node of a cluster shares.
pub(super) const BUCKET: &str = "SMQ_SESSIONS";
/// Changes waiting to be written, at most.
pub(super) const QUEUE: usize = 16_384;
const ENTRY_VERSION: u8 = 3;
/// The entry before it named its writer.
const ENTRY_VERSION_UNSIGNED: u8 = 2;
const NO_USER: u16 = u16::MAX;
/// How long one attempt to open the bucket goes on, and the pause between attempts.
const ATTEMPT: Duration = Duration::from_secs(30);
const RETRY: Duration = Duration::from_secs(5);
/// The pause before the bucket is watched again after its watch failed or ended.
const WATCH_AGAIN: Duration = Duration::from_secs(1);

/// When a session's client went away (Unix ms, 0 while connected) and how long the
/// session outlives it (seconds, `u32::MAX`: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Life {
    pub offline_since_ms: u64,
    pub expiry_secs: u32,
}

impl Life {
    fn expired(&self, now_ms: u64) -> bool {
        self.offline_since_ms != 0
            && self.expiry_secs != u32::MAX
            && now_ms.saturating_sub(self.offline_since_ms) >= u64::from(self.expiry_secs) * 1000
    }
}

/// A session's entry as read back.
#[derive(Debug, PartialEq)]
struct Entry {
    user: Option<String>,
    life: Life,
    /// When it was written (Unix ms), and the key of the node that wrote it (empty in a
    /// version 2 entry).
    written_ms: u64,
    writer: String,
    records: Bytes,
}

/// The directory's copy of a client's session, as a resume takes it.
pub(in crate::cluster) struct DirectoryCopy {
    /// Its records (see `handoff::directory_entry`).
    pub records: Bytes,
    /// When another node wrote it (Unix ms); None when this node did, or nobody known.
    pub written_elsewhere_ms: Option<u64>,
}

/// JetStream was asked and did not answer, or answered with an error: it cannot say what a
/// client's session holds right now (its stream is electing a leader, or lost its quorum),
/// which is not the same as "nothing".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::cluster) struct Unreadable;

/// How long a node that has not opened the bucket yet waits for looking it up: within the
/// resume's time for JetStream's copies (`handoff`), so that it is asked again before the
/// resume is refused.
const LOOKUP_WAIT: Duration = Duration::from_secs(1);

/// A key's value as the bucket's leader has it; None when the key has none (never put, or
/// deleted). `Store::get` asks any replica when the bucket allows direct gets (ours do, see
/// `open_bucket`), and a replica may lag behind the leader (NATS says so of direct gets): one
/// that just restarted could answer a resume with an entry older than the one another node
/// wrote, or without a tombstone already written.
async fn leader_get(
    store: &Store,
    key: &str,
) -> Result<Option<Bytes>, async_nats::jetstream::stream::LastRawMessageError> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    let subject = format!("{}{}", store.prefix, key);
    match store.stream.get_last_raw_message_by_subject(&subject).await {
        // A delete or purge leaves a marker with no value (and so does a key NATS removed
        // itself: a marker's reason).
        Ok(m) if m.headers.get("Nats-Marker-Reason").is_some() => Ok(None),
        Ok(m) => match m.headers.get("KV-Operation").map(|op| op.as_str()) {
            Some("DEL") | Some("PURGE") => Ok(None),
            _ => Ok(Some(m.payload)),
        },
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The change that deletes a session's entry.
pub(super) fn delete_op(client_id: &str) -> KvOp {
    KvOp::Delete(key_of(client_id))
}

/// The bucket as the node and its take tasks see it; empty until it is open.
#[derive(Clone, Default)]
pub(in crate::cluster) struct Directory {
    store: Arc<OnceLock<Store>>,
    keys: Arc<Mutex<ahash::AHashSet<String>>>,
    /// Whether the watch that fills `keys` runs (until it does, any client may have an
    /// entry).
    watching: Arc<AtomicBool>,
    /// This node's name as tombstones name it.
    node_key: Arc<str>,
    /// Tombstones, by client key.
    taken: Arc<Mutex<ahash::AHashMap<String, Vec<Tombstone>>>>,
}

/// A node (key) whose copy of a session, made when its client went away at the time, another
/// node took.
type Tombstone = (String, u64);

const TAKEN: &str = "taken";

pub(super) fn key_of(client_id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE.encode(client_id)
}

fn tombstone_key(client_key: &str, node_key: &str) -> String {
    format!("{TAKEN}.{client_key}.{node_key}")
}

/// A tombstone's client key and node key.
fn parse_tombstone(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix(TAKEN)?.strip_prefix('.')?.split_once('.')
}

fn encode_entry(
    username: Option<&str>,
    life: Life,
    (writer, written_ms): (&str, u64),
    records: &[u8],
) -> Bytes {
    let user = username.map(str::as_bytes);
    let user_len = user.map_or(0, <[u8]>::len).min(usize::from(NO_USER - 1));
    let writer = &writer.as_bytes()[..writer.len().min(usize::from(NO_USER - 1))];
    let mut out = BytesMut::with_capacity(25 + writer.len() + user_len + records.len());
    out.put_u8(ENTRY_VERSION);
    out.put_u64(life.offline_since_ms);
    out.put_u32(life.expiry_secs);
    out.put_u64(written_ms);
    out.put_u16(writer.len() as u16);
    out.put_slice(writer);
    match user {
        Some(u) => {
            out.put_u16(user_len as u16);
            out.put_slice(&u[..user_len]);
        }
        None => out.put_u16(NO_USER),
    }
    out.put_slice(records);
    out.freeze()
}

fn decode_entry(mut bytes: Bytes) -> Option<Entry> {
    if bytes.remaining() < 15 {
        return None;
    }
    let version = bytes.get_u8();
    if version != ENTRY_VERSION && version != ENTRY_VERSION_UNSIGNED {
        return None;
    }
    let life = Life {
        offline_since_ms: bytes.get_u64(),
        expiry_secs: bytes.get_u32(),
    };
    let (mut written_ms, mut writer) = (0, String::new());
    if version == ENTRY_VERSION {
        if bytes.remaining() < 10 {
            return None;
        }
        written_ms = bytes.get_u64();
        let len = usize::from(bytes.get_u16());
        if bytes.remaining() < len + 2 {
            return None;
        }
        writer = String::from_utf8(bytes.split_to(len).to_vec()).ok()?;
    }
    let len = bytes.get_u16();
    let user = if len == NO_USER {
        None
    } else {
        if bytes.remaining() < usize::from(len) {
            return None;
        }
        let user = bytes.split_to(usize::from(len));
        Some(String::from_utf8(user.to_vec()).ok()?)
    };
    Some(Entry {
        user,
        life,
        written_ms,
        writer,
        records: bytes,
    })
}

impl Directory {
    /// The directory of node `node` (its `--node-id`).
    pub(super) fn new(node: &str) -> Directory {
        Directory {
            node_key: key_of(node).into(),
            ..Directory::default()
        }
    }

    /// The change that writes a session's entry, signed by this node, now.
    pub(super) fn put_op(
        &self,
        client_id: &str,
        username: Option<&str>,
        life: Life,
        records: &[u8],
    ) -> KvOp {
        let signed = (&*self.node_key, crate::broker::unix_ms());
        KvOp::Put(
            key_of(client_id),
            encode_entry(username, life, signed, records),
        )
    }

    /// Whether `node` (a `--node-id`) is this node.
    pub(in crate::cluster) fn is_own(&self, node: &str) -> bool {
        key_of(node) == *self.node_key
    }

    /// If a node resumed the client's session from `node`'s copy in JetStream: the time that
    /// copy says its client went away (as far as the watch has told).
    fn taken_from(&self, client_id: &str, node_key: &str) -> Option<u64> {
        let taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        let of_client = taken.get(&key_of(client_id))?;
        of_client
            .iter()
            .find(|(node, _)| **node == *node_key)
            .map(|&(_, at)| at)
    }

    /// If another node resumed the client's session from this node's copy in JetStream: the
    /// time that copy says its client went away.
    #[cfg(test)]
    fn superseded(&self, client_id: &str) -> Option<u64> {
        self.taken_from(client_id, &self.node_key)
    }

    /// [`Self::superseded`], asking the bucket itself when the watch has not told (it may not
    /// have replayed the bucket yet: this node may have just started).
    pub(in crate::cluster) async fn superseded_now(
        &self,
        client: &async_nats::Client,
        client_id: &str,
    ) -> Option<u64> {
        self.taken_now(client, client_id, &self.node_key).await
    }

    /// If a node resumed the client's session from the copy `node` (a `--node-id`) made: the
    /// time that copy says its client went away; asking the bucket itself when the watch has
    /// not told (it may lag: this node may have just started, or written the tombstone a
    /// moment ago).
    pub(in crate::cluster) async fn taken_from_now(
        &self,
        client: &async_nats::Client,
        client_id: &str,
        node: &str,
    ) -> Option<u64> {
        self.taken_now(client, client_id, &key_of(node)).await
    }

    async fn taken_now(
        &self,
        client: &async_nats::Client,
        client_id: &str,
        node_key: &str,
    ) -> Option<u64> {
        if let Some(at) = self.taken_from(client_id, node_key) {
            return Some(at);
        }
        let store = self.store(client).await.ok()??;
        let key = tombstone_key(&key_of(client_id), node_key);
        let value = leader_get(&store, &key).await.ok()??;
        let at = std::str::from_utf8(&value).ok()?.parse().ok()?;
        self.watched(key, Some(&value));
        Some(at)
    }

    /// The bucket: as this node opened it or, until it has (JetStream came late, or is slow,
    /// or this node just started), looked up, within [`LOOKUP_WAIT`]. `Ok(None)` only when
    /// there is no bucket to read: JetStream says it has none, or nobody answers its API (the
    /// NATS server runs without JetStream). No answer in time or any other error (JetStream is
    /// electing its leaders, or lost its quorum) is [`Unreadable`]: a node that starts while
    /// JetStream cannot answer must not take that for "no session", or a resume there would
    /// start anew and its empty session overwrite the client's entry once JetStream is back.
    async fn store(&self, client: &async_nats::Client) -> Result<Option<Store>, Unreadable> {
        if let Some(store) = self.store.get() {
            return Ok(Some(store.clone()));
        }
        let js = async_nats::jetstream::new(client.clone());
        match tokio::time::timeout(LOOKUP_WAIT, js.get_key_value(BUCKET)).await {
            Ok(Ok(store)) => Ok(Some(store)),
            Ok(Err(e)) if no_bucket(&e) => Ok(None),
            Ok(Err(e)) => {
                warn!("cluster: cannot look the session bucket up: {e}");
                Err(Unreadable)
            }
            Err(_) => {
                warn!("cluster: JetStream did not say within {LOOKUP_WAIT:?} whether it has the session bucket");
                Err(Unreadable)
            }
        }
    }

    /// Writes the tombstone that says this node resumed the client's session from `node`'s
    /// copy made at `gone_ms`.
    pub(in crate::cluster) async fn mark_taken(
        &self,
        client: &async_nats::Client,
        client_id: &str,
        node: &str,
        gone_ms: u64,
    ) {
        let Ok(Some(store)) = self.store(client).await else {
            return warn!(client = %client_id, "cluster: the session bucket is not open; the node the session was taken from will not know it, and may deliver its messages again when it comes back");
        };
        let key = tombstone_key(&key_of(client_id), &key_of(node));
        if let Err(e) = store.put(key, gone_ms.to_string().into()).await {
            warn!(client = %client_id, "cluster: cannot write that a session was taken from a copy in JetStream ({e}); the node it was taken from may deliver its messages again when it comes back");
        }
    }

    /// The changes that delete the client's tombstones (its session ended).
    pub(super) fn tombstones_gone(&self, client_id: &str) -> Vec<KvOp> {
        let client_key = key_of(client_id);
        let taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        let Some(of_client) = taken.get(&client_key) else {
            return Vec::new();
        };
        of_client
            .iter()
            .map(|(node, _)| KvOp::Delete(tombstone_key(&client_key, node)))
            .collect()
    }

    /// Follows a change of a key in the bucket.
    fn watched(&self, key: String, value: Option<&[u8]>) {
        let Some((client_key, node_key)) = parse_tombstone(&key) else {
            let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            match value {
                Some(_) => keys.insert(key),
                None => keys.remove(&key),
            };
            return;
        };
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        let of_client = taken.entry(client_key.to_string()).or_default();
        of_client.retain(|(node, _)| node != node_key);
        let at = value
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse().ok());
        if let Some(at) = at {
            of_client.push((node_key.to_string(), at));
        }
        if of_client.is_empty() {
            taken.remove(client_key);
        }
    }

    /// Notes the entry this node is writing for the client before the watch tells of it: a
    /// clean connect that comes first (the client disconnected and came back at once, and
    /// the watch lags) must still delete it, or it would stay for a resume elsewhere to take.
    pub(super) fn writing(&self, client_id: &str) {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key_of(client_id));
    }

    /// Whether the client may have an entry: as far as the watch has told or this node
    /// wrote, or (until the bucket is open here and watched) perhaps.
    pub(super) fn knows(&self, client_id: &str) -> bool {
        self.store.get().is_none()
            || !self.watching.load(Ordering::Relaxed)
            || self
                .keys
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&key_of(client_id))
    }

    /// The client's entry, if it has one and it is `username`'s. Looks the bucket up itself
    /// when this node has not opened it yet (JetStream came late, or is slow, or this node
    /// just started): no bucket, or no JetStream, is no entry. [`Unreadable`] when JetStream
    /// does not answer, or answers with an error, for the bucket or the entry.
    pub(in crate::cluster) async fn get(
        &self,
        client: &async_nats::Client,
        client_id: &str,
        username: Option<&str>,
    ) -> Result<Option<DirectoryCopy>, Unreadable> {
        let Some(store) = self.store(client).await? else {
            return Ok(None);
        };
        let key = key_of(client_id);
        let value = match leader_get(&store, &key).await {
            Ok(Some(value)) => value,
            Ok(None) => return Ok(None),
            Err(e) => {
                warn!(client = %client_id, "cluster: cannot read the session directory: {e}");
                return Err(Unreadable);
            }
        };
        let Some(Entry {
            user,
            life,
            written_ms,
            writer,
            records,
        }) = decode_entry(value)
        else {
            return Ok(None);
        };
        if life.expired(crate::broker::unix_ms()) {
            info!(client = %client_id, "cluster: the stored session expired while its node was down; deleted");
            let _ = store.delete(&key).await;
            return Ok(None);
        }
        if user.as_deref() != username {
            info!(client = %client_id, "cluster: the stored session of another user is not taken");
            return Ok(None);
        }
        let elsewhere = !writer.is_empty() && *writer != *self.node_key;
        Ok(Some(DirectoryCopy {
            records,
            written_elsewhere_ms: elsewhere.then_some(written_ms),
        }))
    }
}

/// Whether a failed lookup of a bucket means there is none: JetStream answered that its
/// stream does not exist, or nobody answers JetStream's API (no JetStream on the server).
fn no_bucket(e: &async_nats::jetstream::context::KeyValueError) -> bool {
    use async_nats::jetstream::context::{
        GetStreamError, GetStreamErrorKind, RequestError, RequestErrorKind,
    };
    use std::error::Error as _;
    let Some(get) = e.source().and_then(|s| s.downcast_ref::<GetStreamError>()) else {
        return false;
    };
    match get.kind() {
        GetStreamErrorKind::JetStream(e) => {
            e.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND
        }
        GetStreamErrorKind::Request => get
            .source()
            .and_then(|s| s.downcast_ref::<RequestError>())
            .is_some_and(|r| r.kind() == RequestErrorKind::NoResponders),
        _ => false,
    }
}

/// The bucket task: opens the bucket, follows which keys it has, and writes the changes
/// `ops` brings, in order, until the node stops.
pub(super) async fn keep_directory(
    client: async_nats::Client,
    mut ops: mpsc::Receiver<KvOp>,
    directory: Directory,
) {
    // The last change of each client, while the bucket is not open yet.
    let mut waiting: ahash::AHashMap<String, KvOp> = ahash::AHashMap::new();
    let mut said = false;
    let store = loop {
        // After a failed attempt, the pause before the next one; changes are kept meanwhile.
        let pause = if said { RETRY } else { Duration::ZERO };
        let opening = async {
            tokio::time::sleep(pause).await;
            open_bucket(&client, BUCKET, "SurgeMQ persistent sessions", ATTEMPT).await
        };
        tokio::pin!(opening);
        let opened = loop {
            tokio::select! {
                opened = &mut opening => break opened,
                Some(op) = ops.recv() => {
                    let key = match &op {
                        KvOp::Put(key, _) | KvOp::Delete(key) => key.clone(),
                    };
                    // Bounded too: past it (no JetStream for long, many clients) changes
                    // are not kept; deletes, most of them, of entries that never were.
                    if waiting.len() < QUEUE || waiting.contains_key(&key) {
                        waiting.insert(key, op);
                    }
                }
            }
        };
        if let Some(store) = opened {
            break store;
        }
        if !std::mem::replace(&mut said, true) {
            info!("cluster: no JetStream bucket for sessions yet (trying again every {}s); until then a session on a node that is down waits for it", RETRY.as_secs());
        }
    };
    let _ = directory.store.set(store.clone());
    let watcher = directory.clone();
    let watching = store.clone();
    // Watched again, from the start, should the watch fail or end: without it this node
    // would take every client for one without an entry, and a clean connect would leave the
    // client's entry for a resume elsewhere to take.
    tokio::spawn(async move {
        let mut said = false;
        loop {
            match watching.watch_with_history(">").await {
                Ok(mut watch) => {
                    watcher.watching.store(true, Ordering::Relaxed);
                    while let Some(entry) = watch.next().await {
                        let Ok(entry) = entry else { continue };
                        let value =
                            matches!(entry.operation, Operation::Put).then_some(&entry.value[..]);
                        watcher.watched(entry.key, value);
                    }
                    watcher.watching.store(false, Ordering::Relaxed);
                    warn!("cluster: the watch of the session bucket ended; watching it again");
                }
                Err(e) => {
                    if !std::mem::replace(&mut said, true) {
                        warn!("cluster: cannot watch the session bucket ({e}); trying again every {}s", WATCH_AGAIN.as_secs());
                    }
                }
            }
            tokio::time::sleep(WATCH_AGAIN).await;
        }
    });
    let mut failing = false;
    let what = "persistent sessions' subscriptions";
    for op in waiting.into_values() {
        write(&store, op, &mut failing, what).await;
    }
    while let Some(op) = ops.recv().await {
        write(&store, op, &mut failing, what).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_with_their_user_and_life() {
        let records = b"\x01\x02records";
        let life = Life {
            offline_since_ms: 1_700_000_000_000,
            expiry_secs: 60,
        };
        let signed = ("bm9kZQ==", 1_700_000_000_123);
        let entry = |user, records| Entry {
            user,
            life,
            written_ms: signed.1,
            writer: signed.0.to_string(),
            records: Bytes::copy_from_slice(records),
        };
        let alice = encode_entry(Some("alice"), life, signed, records);
        assert_eq!(
            decode_entry(alice.clone()),
            Some(entry(Some("alice".into()), records))
        );
        let nobody = encode_entry(None, life, signed, records);
        assert_eq!(decode_entry(nobody), Some(entry(None, records)));
        assert_eq!(decode_entry(Bytes::from_static(b"\x01\xff\xff")), None);
        let mut short = encode_entry(Some("alice"), life, signed, b"").to_vec();
        short.truncate(short.len() - 2);
        assert_eq!(decode_entry(Bytes::from(short)), None);
        // A version 2 entry (as nodes before 3 wrote it) reads as signed by nobody.
        let mut v2 = vec![2];
        v2.extend_from_slice(&alice[1..13]);
        v2.extend_from_slice(&alice[13 + 10 + signed.0.len()..]);
        let old = decode_entry(Bytes::from(v2)).unwrap();
        assert_eq!((old.written_ms, old.writer.as_str()), (0, ""));
        assert_eq!(
            (old.user.as_deref(), old.life, &old.records[..]),
            (Some("alice"), life, &records[..])
        );
        assert_eq!(key_of("a b/c"), "YSBiL2M=");
    }

    #[test]
    fn tombstones_name_the_node_whose_copy_was_taken() {
        let directory = Directory::new("a");
        let (client, a, b) = (key_of("c"), key_of("a"), key_of("b"));
        directory.watched(tombstone_key(&client, &b), Some(b"5"));
        assert_eq!(directory.superseded("c"), None, "b's copy, not this node's");
        directory.watched(tombstone_key(&client, &a), Some(b"7"));
        assert_eq!(directory.superseded("c"), Some(7));
        assert_eq!(directory.superseded("d"), None);
        assert!(directory.keys.lock().unwrap().is_empty(), "no entry");
        assert_eq!(directory.taken_from("c", &b), Some(5));
        let gone = directory.tombstones_gone("c");
        assert_eq!(gone.len(), 2);
        assert!(gone
            .iter()
            .any(|op| matches!(op, KvOp::Delete(k) if *k == tombstone_key(&client, &a))));
        directory.watched(tombstone_key(&client, &a), None);
        assert_eq!(directory.superseded("c"), None);
        directory.watched(tombstone_key(&client, &b), None);
        assert!(directory.tombstones_gone("c").is_empty());
        assert_eq!(parse_tombstone("taken.x.y"), Some(("x", "y")));
        assert_eq!(parse_tombstone("takenx.y"), None);
        assert_eq!(parse_tombstone(&client), None);
    }

    #[test]
    fn a_copy_expires_only_offline_and_past_its_expiry() {
        let life = |offline_since_ms, expiry_secs| Life {
            offline_since_ms,
            expiry_secs,
        };
        assert!(!life(0, 1).expired(10_000), "connected when written");
        assert!(!life(5_000, u32::MAX).expired(u64::MAX), "never expires");
        assert!(!life(5_000, 2).expired(6_999));
        assert!(life(5_000, 2).expired(7_000));
    }
}
