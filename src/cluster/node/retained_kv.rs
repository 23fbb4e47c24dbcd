//! Retained messages in a JetStream key-value bucket ([`BUCKET`]), so that they outlive the
//! nodes: without it a node that starts learns them only from another running node
//! (`$SMQ.sync`), and a cluster whose nodes all stopped (without `--data-dir`) had none left.
//!
//! Each node writes the retained changes its own clients make (a set is a put, keyed by the
//! topic; a clear a delete), in order, [`IN_FLIGHT`] at a time, from a bounded queue
//! ([`KV_QUEUE`] changes; when it is full, a change is not stored in the bucket, logged, and
//! the nodes still have it). A retained QoS 1/2 message's publisher is acknowledged only once
//! the bucket has it (the node's `marks` hold it until this task reports it stored), while the
//! bucket is open and NATS reachable: a change given up on (no room, refused, or not
//! acknowledged within [`ACK_TIMEOUT`]) holds nobody. At start a node without `--data-dir` reads the whole bucket and
//! takes every entry as a retained message, then asks a running node as before. A node with
//! `--data-dir` does not: its own log holds what it acknowledged, and the bucket may lag
//! that (a crash before a queued change was written) and would bring an older value back.
//! The bucket is read while other nodes' changes arrive, so a change made elsewhere in the
//! moment a node starts can be overtaken by the bucket's older copy of that topic.
//!
//! The bucket is made on first use, replicated on three NATS servers when the cluster has
//! them (one otherwise); without JetStream on the NATS servers the node says so once, stops
//! queueing changes for it, and goes on without it.
//!
//! An entry is one message: `version u8 | qos u8 | topic u16-len | properties u32-len |
//! expires-at u64 (Unix ms, 0 = never) | payload`, the key the topic in URL-safe base64 (a
//! key's alphabet is narrower than a topic's).

use std::time::{Duration, Instant};

use async_nats::jetstream::kv::Store;
use async_nats::jetstream::stream;
use async_nats::HeaderMap;
use base64::Engine as _;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_lite::StreamExt;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::*;

/// The bucket every node of a cluster shares.
pub(super) const BUCKET: &str = "SMQ_RETAINED";
/// Retained changes waiting to be written, at most.
pub(super) const KV_QUEUE: usize = 65_536;
/// How long a starting node keeps trying to reach the bucket (a NATS cluster elects its
/// JetStream leader a few seconds after it starts).
const OPEN_FOR: Duration = Duration::from_secs(30);
const ENTRY_VERSION: u8 = 1;
/// The header a key-value delete carries (as `Store::delete` writes it).
const KV_OPERATION: &str = "KV-Operation";
const KV_DELETE: &str = "DEL";
/// What the bucket holds, for the log.
const RETAINED_WHAT: &str = "retained messages (the nodes still have them)";

/// A retained change to write.
pub(super) enum KvOp {
    Put(String, Bytes),
    Delete(String),
}

/// The change a retained message makes to the bucket.
pub(super) fn op_of(m: &Message) -> KvOp {
    let key = key_of(&m.topic);
    if m.payload.is_empty() {
        return KvOp::Delete(key);
    }
    let (properties, expires_at) = match &m.v5 {
        Some(v5) => (v5.properties.clone(), v5.expires_at.map(unix_ms_of)),
        None => (Bytes::new(), None),
    };
    KvOp::Put(
        key,
        encode_entry(&m.topic, m.qos, &properties, expires_at, &m.payload),
    )
}

fn key_of(topic: &str) -> String {
    base64::engine::general_purpose::URL_SAFE.encode(topic)
}

fn unix_ms_of(at: Instant) -> u64 {
    let left = at.saturating_duration_since(Instant::now());
    crate::broker::unix_ms() + left.as_millis() as u64
}

/// One retained message as a bucket entry.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    topic: String,
    qos: QoS,
    properties: Bytes,
    expires_at_ms: Option<u64>,
    payload: Bytes,
}

fn encode_entry(
    topic: &str,
    qos: QoS,
    properties: &[u8],
    expires_at_ms: Option<u64>,
    payload: &[u8],
) -> Bytes {
    let mut out = BytesMut::with_capacity(16 + topic.len() + properties.len() + payload.len());
    out.put_u8(ENTRY_VERSION);
    out.put_u8(qos as u8);
    out.put_u16(topic.len() as u16);
    out.put_slice(topic.as_bytes());
    out.put_u32(properties.len() as u32);
    out.put_slice(properties);
    out.put_u64(expires_at_ms.unwrap_or(0));
    out.put_slice(payload);
    out.freeze()
}

fn decode_entry(mut bytes: Bytes) -> Option<Entry> {
    if bytes.remaining() < 4 || bytes.get_u8() != ENTRY_VERSION {
        return None;
    }
    let qos = QoS::from_u8(bytes.get_u8())?;
    let topic_len = bytes.get_u16() as usize;
    if bytes.remaining() < topic_len + 4 {
        return None;
    }
    let topic = String::from_utf8(bytes.split_to(topic_len).to_vec()).ok()?;
    let props_len = bytes.get_u32() as usize;
    if bytes.remaining() < props_len + 8 {
        return None;
    }
    let properties = bytes.split_to(props_len);
    let expires_at_ms = Some(bytes.get_u64()).filter(|&ms| ms != 0);
    Some(Entry {
        topic,
        qos,
        properties,
        expires_at_ms,
        payload: bytes,
    })
}

impl Node {
    /// The bucket task: opens the bucket, hands every entry to the node as a retained
    /// message (through `arrived`, as other nodes' messages come), then writes the changes
    /// `ops` brings, in order, [`IN_FLIGHT`] at a time, and reports on `stored` each one a
    /// publisher waits for (its sequence number, not 0) once JetStream has it or it was
    /// given up on, until the node stops. `open_flag` says when the bucket is open and loaded.
    pub(super) async fn keep_retained(
        client: async_nats::Client,
        (mut ops, stored): (mpsc::Receiver<(KvOp, u64)>, mpsc::Sender<u64>),
        arrived: mpsc::Sender<Arrived>,
        origin: String,
        (load_bucket, open_flag): (bool, Arc<AtomicBool>),
    ) {
        let Some(store) = open(&client).await else {
            return;
        };
        // Changes made here while the bucket opened are newer than what it holds: they win.
        let mut early = Vec::new();
        while let Ok(op) = ops.try_recv() {
            early.push(op);
        }
        let newer: ahash::AHashSet<&str> = early
            .iter()
            .map(|(op, _)| match op {
                KvOp::Put(k, _) | KvOp::Delete(k) => k.as_str(),
            })
            .collect();
        let loaded = if load_bucket {
            load(&store, &arrived, &origin, &newer).await
        } else {
            0
        };
        if loaded > 0 {
            info!(
                count = loaded,
                "cluster: retained messages loaded from JetStream"
            );
        }
        // Publishers wait for their changes only from now on: not while a large bucket loads
        // (their changes are written after it all the same).
        open_flag.store(true, Ordering::Release);
        let mut writer = KvWriter::new(&client, &store, stored);
        for op in early {
            writer.write(op).await;
        }
        loop {
            let op = match ops.try_recv() {
                Ok(op) => op,
                Err(mpsc::error::TryRecvError::Empty) => {
                    // Nothing more at once: what is in flight is waited for, and said.
                    writer.settle(0).await;
                    match ops.recv().await {
                        Some(op) => op,
                        None => break,
                    }
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            };
            writer.write(op).await;
        }
        writer.settle(0).await;
    }
}

/// Retained changes written to the bucket and not yet acknowledged by JetStream, at most.
const IN_FLIGHT: usize = 256;
/// How long JetStream may take to acknowledge a change before it is given up on (async-nats's
/// default is 30 s): publishers wait for the acknowledgement, so not for long.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Writes a bucket's changes in order, several in flight: a key-value put is a JetStream
/// publish to the key's subject, whose acknowledgement can be awaited later (one at a time,
/// each change cost a round trip, and a node setting many retained messages fell behind).
struct KvWriter<'a> {
    js: async_nats::jetstream::Context,
    store: &'a Store,
    pending: std::collections::VecDeque<(async_nats::jetstream::context::PublishAckFuture, u64)>,
    stored: mpsc::Sender<u64>,
    failing: bool,
}

impl<'a> KvWriter<'a> {
    fn new(client: &async_nats::Client, store: &'a Store, stored: mpsc::Sender<u64>) -> Self {
        let js = async_nats::jetstream::ContextBuilder::new()
            .ack_timeout(ACK_TIMEOUT)
            .build(client.clone());
        KvWriter {
            js,
            store,
            pending: Default::default(),
            stored,
            failing: false,
        }
    }

    /// The subject `Store::put` writes `key` to (a bucket in another JetStream domain, which
    /// prefixes it further, is written through `Store` itself).
    fn subject(&self, key: &str) -> Option<String> {
        if self.store.use_jetstream_prefix {
            return None;
        }
        let prefix = self.store.put_prefix.as_ref().unwrap_or(&self.store.prefix);
        Some(format!("{prefix}{key}"))
    }

    async fn write(&mut self, (op, tag): (KvOp, u64)) {
        self.settle(IN_FLIGHT - 1).await;
        let (key, value, delete) = match op {
            KvOp::Put(key, value) => (key, value, false),
            KvOp::Delete(key) => (key, Bytes::new(), true),
        };
        let Some(subject) = self.subject(&key) else {
            let op = if delete {
                KvOp::Delete(key)
            } else {
                KvOp::Put(key, value)
            };
            write(self.store, op, &mut self.failing, RETAINED_WHAT).await;
            self.report(tag).await;
            return;
        };
        let sent = if delete {
            let mut headers = HeaderMap::new();
            headers.insert(KV_OPERATION, KV_DELETE);
            self.js.publish_with_headers(subject, headers, value).await
        } else {
            self.js.publish(subject, value).await
        };
        match sent {
            Ok(ack) => self.pending.push_back((ack, tag)),
            Err(e) => {
                self.failed(e.to_string());
                self.report(tag).await;
            }
        }
    }

    /// Waits for acknowledgements until at most `keep` changes are in flight.
    async fn settle(&mut self, keep: usize) {
        while self.pending.len() > keep {
            let Some((ack, tag)) = self.pending.pop_front() else {
                return;
            };
            match ack.await {
                Ok(_) => {
                    if std::mem::take(&mut self.failing) {
                        info!("cluster: {RETAINED_WHAT} are stored in JetStream again");
                    }
                }
                Err(e) => self.failed(e.to_string()),
            }
            self.report(tag).await;
        }
    }

    fn failed(&mut self, why: String) {
        if !std::mem::replace(&mut self.failing, true) {
            warn!("cluster: cannot store {RETAINED_WHAT} in JetStream: {why}");
        }
    }

    /// A publisher waits no more for change `tag` (0: none waits).
    async fn report(&self, tag: u64) {
        if tag != 0 {
            let _ = self.stored.send(tag).await;
        }
    }
}

/// The bucket, made if no node made it yet; None (said once) without JetStream.
async fn open(client: &async_nats::Client) -> Option<Store> {
    let description = "SurgeMQ retained messages, one per topic";
    let opened = open_bucket(client, BUCKET, description, OPEN_FOR).await;
    if opened.is_none() {
        warn!("cluster: no JetStream bucket for retained messages; they live only on the nodes");
    }
    opened
}

/// A key-value bucket every node shares, made if no node made it yet; None without
/// JetStream (after trying for a while: a NATS cluster elects its JetStream leader a few
/// seconds after it starts).
pub(super) async fn open_bucket(
    client: &async_nats::Client,
    bucket: &str,
    description: &str,
    open_for: Duration,
) -> Option<Store> {
    let js = async_nats::jetstream::new(client.clone());
    let start = Instant::now();
    let mut last_error = String::new();
    while start.elapsed() < open_for {
        if let Ok(store) = js.get_key_value(bucket).await {
            return Some(store);
        }
        // The bucket's stream, as `create_key_value` would make it; made directly because
        // that call first reads the account's limits, whose answer from a nats-server before
        // 2.10 (Debian's 2.9) this client cannot parse.
        for replicas in [3, 1] {
            let config = stream::Config {
                name: format!("KV_{bucket}"),
                description: Some(description.to_string()),
                subjects: vec![format!("$KV.{bucket}.>")],
                max_messages_per_subject: 1,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: stream::DiscardPolicy::New,
                storage: stream::StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            };
            match js.create_stream(config).await {
                Ok(_) => break,
                Err(e) => last_error = e.to_string(),
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    info!("cluster: no JetStream bucket {bucket}: {last_error}");
    None
}

/// Hands every entry (but those `newer` changes replace) to the node; how many.
async fn load(
    store: &Store,
    arrived: &mpsc::Sender<Arrived>,
    origin: &str,
    newer: &ahash::AHashSet<&str>,
) -> usize {
    let mut keys = match store.keys().await {
        Ok(keys) => keys,
        Err(e) => {
            warn!("cluster: cannot list retained messages in JetStream: {e}");
            return 0;
        }
    };
    let mut count = 0;
    while let Some(key) = keys.next().await {
        let Ok(key) = key else { continue };
        if newer.contains(key.as_str()) {
            continue;
        }
        let Ok(Some(value)) = store.get(key.as_str()).await else {
            continue;
        };
        let Some(entry) = decode_entry(value) else {
            warn!(
                key,
                "cluster: an entry of the retained bucket is not one of ours; skipped"
            );
            continue;
        };
        let Some(headers) = headers_of(&entry, origin, count as u64 + 1) else {
            continue; // expired
        };
        let message = Arrived {
            subject: async_nats::Subject::from_static(RETAINED),
            headers: Some(headers),
            payload: entry.payload,
            group: None,
        };
        if arrived.send(message).await.is_err() {
            break;
        }
        count += 1;
    }
    count
}

/// The headers another node would have sent the entry's message with; None once expired.
fn headers_of(entry: &Entry, origin: &str, seq: u64) -> Option<HeaderMap> {
    let meta = Meta {
        origin,
        seq,
        qos: entry.qos,
        key: 0,
        retain: true,
    };
    let mut headers = HeaderMap::new();
    headers.insert(META, meta.to_string().as_str());
    headers.insert(TOPIC, entry.topic.as_str());
    if !entry.properties.is_empty() {
        let encoded = base64::engine::general_purpose::STANDARD.encode(&entry.properties);
        headers.insert(PROPS, encoded.as_str());
    }
    if let Some(at) = entry.expires_at_ms {
        let now = crate::broker::unix_ms();
        if at <= now {
            return None;
        }
        headers.insert(EXPIRY, (at - now).div_ceil(1000).to_string().as_str());
    }
    Some(headers)
}

/// Writes one change to a bucket; a failure is logged once per spell of failures, naming
/// `what` the bucket holds.
pub(super) async fn write(store: &Store, op: KvOp, failing: &mut bool, what: &str) {
    let result = match op {
        KvOp::Put(key, value) => store
            .put(key, value)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        KvOp::Delete(key) => store.delete(key).await.map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) if *failing => {
            *failing = false;
            info!("cluster: {what} are stored in JetStream again");
        }
        Ok(()) => {}
        Err(e) if !*failing => {
            *failing = true;
            warn!("cluster: cannot store {what} in JetStream: {e}");
        }
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_reads_back_whole() {
        let bytes = encode_entry("a/b", QoS::AtLeastOnce, &[1, 2], Some(77), b"payload");
        assert_eq!(
            decode_entry(bytes),
            Some(Entry {
                topic: "a/b".into(),
                qos: QoS::AtLeastOnce,
                properties: Bytes::from_static(&[1, 2]),
                expires_at_ms: Some(77),
                payload: Bytes::from_static(b"payload"),
            })
        );
        let plain = decode_entry(encode_entry("t", QoS::AtMostOnce, &[], None, b"")).unwrap();
        assert_eq!(plain.expires_at_ms, None);
        assert_eq!(decode_entry(Bytes::from_static(b"\x02\x00")), None);
        assert_eq!(
            decode_entry(Bytes::from_static(b"\x01\x01\x00\x09ab")),
            None
        );
    }

    #[test]
    fn keys_hold_only_what_a_bucket_key_may() {
        for topic in ["a/b", "sensors/+/température", "$x y#", "/"] {
            let key = key_of(topic);
            assert!(
                key.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_=".contains(&b)),
                "{key}"
            );
        }
    }

    #[test]
    fn an_expired_entry_is_not_loaded() {
        let entry = |at| Entry {
            topic: "t".into(),
            qos: QoS::AtMostOnce,
            properties: Bytes::new(),
            expires_at_ms: Some(at),
            payload: Bytes::from_static(b"x"),
        };
        assert!(headers_of(&entry(crate::broker::unix_ms() - 1), "o", 1).is_none());
        let left = headers_of(&entry(crate::broker::unix_ms() + 5_500), "o", 1).unwrap();
        assert_eq!(left.get(EXPIRY).unwrap().as_str(), "6");
    }
}
