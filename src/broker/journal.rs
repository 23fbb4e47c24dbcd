//! A shard's journal (with `--data-dir`): what changes in its durable state, written as
//! [`Record`]s to the shard's log ([`LogWriter`]) at the moment it changes, from the places
//! that change it (session opened, message queued, sent, acknowledged; retained message set).
//! Appending costs a memory copy; the writer's commit task does the I/O. Whoever must not
//! answer before a change is on disk (a publisher's PUBACK, a SUBACK, a PUBREL) takes the
//! [`Position`] the append returned and waits for it.
//!
//! Only persistent sessions (CleanSession = 0) and QoS 1/2 messages are written: a clean
//! session ends with its connection, and QoS 0 carries no promise.

use std::sync::Arc;

use crate::broker::shared::ShareKey;
use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;

use super::mesh::{Message, V5Message};
use crate::protocol::{ByteStr, PacketId, QoS};
use crate::store::{LogWriter, MessageExtras, Position, Record};

pub struct Journal {
    /// The log appended to now.
    writer: RefCell<Rc<LogWriter>>,
    /// The log before the last compaction and where it ended, until all of it is durable
    /// (see `compaction`).
    previous: RefCell<Option<(Position, Rc<LogWriter>)>>,
    /// Where the log lives (a compaction writes its successor next to it).
    path: PathBuf,
    /// Reused for each record's body.
    scratch: RefCell<BytesMut>,
    /// The number the next persistent session gets (see [`Record`]).
    next_session: Cell<u64>,
    /// Commits of the logs before the last compaction switched logs.
    earlier_commits: Cell<u64>,
}

impl Journal {
    pub fn new(writer: Rc<LogWriter>, path: PathBuf, next_session: u64) -> Journal {
        Journal {
            writer: RefCell::new(writer),
            previous: RefCell::new(None),
            path,
            scratch: RefCell::new(BytesMut::with_capacity(256)),
            next_session: Cell::new(next_session),
            earlier_commits: Cell::new(0),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record`; returns the position it is durable at.
    pub fn append(&self, record: &Record) -> Position {
        self.append_to(&self.writer.borrow(), record)
    }

    /// Appends `record` to `writer` (a compaction's next log, before the switch).
    pub fn append_to(&self, writer: &LogWriter, record: &Record) -> Position {
        self.append_encoded(writer, |body| record.encode(body))
    }

    /// Appends the record `encode` writes (its body; it returns the kind) to `writer`.
    fn append_encoded(
        &self,
        writer: &LogWriter,
        encode: impl FnOnce(&mut BytesMut) -> u8,
    ) -> Position {
        let mut body = self.scratch.borrow_mut();
        body.clear();
        let kind = encode(&mut body);
        writer.append(kind, &body)
    }

    /// From now on records go to `next` (a compacted log whose positions start where this one's
    /// end); the old log is kept until all of it is durable ([`Journal::drop_previous`]).
    pub fn switch_to(&self, next: Rc<LogWriter>) {
        let old = std::mem::replace(&mut *self.writer.borrow_mut(), next);
        self.earlier_commits
            .set(self.earlier_commits.get() + old.commits());
        *self.previous.borrow_mut() = Some((old.appended_position(), old));
    }

    /// Forgets the previous log (all of it durable) and ends its commit task.
    pub fn drop_previous(&self) {
        if let Some((_, old)) = self.previous.borrow_mut().take() {
            old.retire();
        }
    }

    /// A number for a new persistent session.
    pub fn new_session(&self) -> u64 {
        let n = self.next_session.get();
        self.next_session.set(n + 1);
        n
    }

    /// The end of everything appended: durable once [`Journal::poll_durable`] says so.
    pub fn appended(&self) -> Position {
        self.writer.borrow().appended_position()
    }

    /// Ready once everything up to `position` is durable, across a compaction's switch: the
    /// previous log must be durable up to where it ended too.
    pub fn poll_durable(&self, position: Position, cx: &mut Context<'_>) -> Poll<()> {
        if let Some((end, old)) = &*self.previous.borrow() {
            if old.poll_durable(position.min(*end), cx).is_pending() {
                return Poll::Pending;
            }
            if position <= *end {
                return Poll::Ready(());
            }
        }
        self.writer.borrow().poll_durable(position, cx)
    }

    /// Resolves once everything up to `position` is durable.
    pub async fn durable(&self, position: Position) {
        std::future::poll_fn(|cx| self.poll_durable(position, cx)).await
    }

    /// Commits since start, across compactions.
    pub fn commits(&self) -> u64 {
        self.earlier_commits.get() + self.writer.borrow().commits()
    }

    /// Everything up to here is durable.
    pub fn durable_position(&self) -> Position {
        if let Some((end, old)) = &*self.previous.borrow() {
            if old.durable_position() < *end {
                return old.durable_position();
            }
        }
        self.writer.borrow().durable_position()
    }

    pub fn is_durable(&self, position: Position) -> bool {
        self.durable_position() >= position
    }

    // ----- the records, by event ------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    pub fn queued(
        &self,
        session: u64,
        seq: u64,
        message: &Message,
        qos: QoS,
        retain: bool,
        subscription_id: u32,
        share: Option<&ShareKey>,
    ) {
        let extras = message_extras(message, subscription_id, share);
        let (topic, payload) = (&message.topic, &message.payload);
        self.append_encoded(&self.writer.borrow(), |body| {
            Record::encode_queued(body, session, seq, topic, payload, qos, retain, &extras)
        });
    }

    pub fn sent(&self, session: u64, seq: u64, packet_id: PacketId) {
        self.append(&Record::Sent {
            session,
            seq,
            packet_id,
        });
    }

    pub fn retained(&self, message: &Message) -> Position {
        if message.payload.is_empty() {
            self.append(&Record::RetainCleared {
                topic: ByteStr::from(message.topic.as_str()),
            })
        } else {
            self.append(&Record::Retained {
                topic: message.topic.clone(),
                payload: message.payload.clone(),
                qos: message.qos,
                extras: message_extras(message, 0, None),
            })
        }
    }
}

/// What MQTT 5 adds to a message, as the log keeps it (None for a 3.1.1 one): its forwarded
/// properties, its expiry on the wall clock, the Subscription Identifier it goes out with; and
/// the shared subscription it came through (for a message queued for a group's member).
pub(crate) fn message_extras(
    message: &Message,
    subscription_id: u32,
    share: Option<&ShareKey>,
) -> Option<Box<MessageExtras>> {
    let origin = message.pending_origin();
    if message.v5.is_none() && subscription_id == 0 && share.is_none() && origin.is_none() {
        return None;
    }
    let v5 = message.v5.as_deref();
    Some(Box::new(MessageExtras {
        properties: v5.map(|v| v.properties.clone()).unwrap_or_default(),
        expires_at_ms: v5.and_then(|v| v.expires_at).map(|at| {
            let left = at.saturating_duration_since(Instant::now());
            unix_ms() + left.as_millis() as u64
        }),
        subscription_id,
        share: share.map(|k| k.full.clone()),
        origin,
    }))
}

/// The shared subscription a restored message came through, if any.
pub(crate) fn restored_share(extras: Option<&MessageExtras>) -> Option<Arc<ShareKey>> {
    let full = extras?.share.clone()?;
    // Only a valid shared filter was ever written; a log that says otherwise is ignored here.
    matches!(crate::topic::parse_shared(&full), Some(Ok(_))).then(|| Arc::new(ShareKey { full }))
}

/// The MQTT 5 part of a restored message, and its Subscription Identifier.
pub(crate) fn restored_v5(extras: Option<&MessageExtras>) -> (Option<Box<V5Message>>, u32) {
    let Some(e) = extras else {
        return (None, 0);
    };
    let expires_at = e.expires_at_ms.map(|ms| {
        let left = Duration::from_millis(ms.saturating_sub(unix_ms()));
        Instant::now() + left
    });
    let v5 = (!e.properties.is_empty() || expires_at.is_some()).then(|| {
        Box::new(V5Message {
            properties: e.properties.clone(),
            expires_at,
        })
    });
    (v5, e.subscription_id)
}

/// Now, in milliseconds since the Unix epoch (what the log keeps for wall-clock times).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
