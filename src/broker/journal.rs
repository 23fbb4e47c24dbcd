//! A shard's journal (with `--data-dir`): what changes in its durable state, written as
//! [`Record`]s to the shard's log ([`LogWriter`]) at the moment it changes, from the places
//! that change it (session opened, message queued, sent, acknowledged; retained message set).
//! Appending costs a memory copy; the writer's commit task does the I/O. Whoever must not
//! answer before a change is on disk (a publisher's PUBACK, a SUBACK, a PUBREL) takes the
//! [`Position`] the append returned and waits for it.
//!
//! Only persistent sessions (CleanSession = 0) and QoS 1/2 messages are written: a clean
//! session ends with its connection, and QoS 0 carries no promise.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::BytesMut;

use super::mesh::Message;
use crate::protocol::{ByteStr, PacketId, QoS};
use crate::store::{LogWriter, Position, Record};

pub struct Journal {
    writer: Rc<LogWriter>,
    /// Reused for each record's body.
    scratch: RefCell<BytesMut>,
    /// The number the next persistent session gets (see [`Record`]).
    next_session: Cell<u64>,
}

impl Journal {
    pub fn new(writer: Rc<LogWriter>, next_session: u64) -> Journal {
        Journal {
            writer,
            scratch: RefCell::new(BytesMut::with_capacity(256)),
            next_session: Cell::new(next_session),
        }
    }

    pub fn writer(&self) -> &Rc<LogWriter> {
        &self.writer
    }

    /// Appends `record`; returns the position it is durable at.
    pub fn append(&self, record: &Record) -> Position {
        let mut body = self.scratch.borrow_mut();
        body.clear();
        let kind = record.encode(&mut body);
        self.writer.append(kind, &body)
    }

    /// A number for a new persistent session.
    pub fn new_session(&self) -> u64 {
        let n = self.next_session.get();
        self.next_session.set(n + 1);
        n
    }

    /// The end of everything appended: durable once [`Journal::poll_durable`] says so.
    pub fn appended(&self) -> Position {
        self.writer.appended_position()
    }

    pub fn poll_durable(&self, position: Position, cx: &mut Context<'_>) -> Poll<()> {
        self.writer.poll_durable(position, cx)
    }

    pub fn is_durable(&self, position: Position) -> bool {
        self.writer.durable_position() >= position
    }

    // ----- the records, by event ------------------------------------------------------------

    pub fn queued(&self, session: u64, seq: u64, message: &Message, qos: QoS, retain: bool) {
        self.append(&Record::Queued {
            session,
            seq,
            topic: message.topic.clone(),
            payload: message.payload.clone(),
            qos,
            retain,
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
            })
        }
    }
}
