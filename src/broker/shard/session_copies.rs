//! The shard's side of persistent sessions' copies in JetStream (`cluster::node::queues`), so
//! that a client whose node is down resumes on another node with its messages, not only with
//! its subscriptions.
//!
//! A session whose client went away is copied whole (a snapshot, as a hand-over carries it)
//! and each QoS 1/2 message queued for it afterwards is appended (`--cluster-queue-copies`).
//! With `--cluster-online-copies`, a session is copied while its client is connected too: a
//! snapshot when the client attaches, then each change as the journal would record it (a
//! message queued or sent, an acknowledgement, an incoming QoS 2 id, a subscription), and a
//! new snapshot whenever the changes outweigh what one holds. Without `--data-dir` such a
//! session's messages are numbered anyway ([`NOT_JOURNALLED`]), so the records can name them.
//!
//! What an acknowledgement waits for includes the copies its message made
//! ([`Shard::copied_since`]): a publisher's PUBACK the copy of the message queued, a PUBREL
//! the copy of the subscriber's PUBREC, a PUBREC or PUBCOMP to a publisher the copy of its
//! incoming QoS 2 id or of its release.

use std::cell::RefCell;
use std::rc::Rc;

use super::handoff::encode_session;
use super::Shard;
use crate::broker::cluster_port::{QueueCopy, HANDED_SESSION};
use crate::broker::journal::unix_ms;
use crate::broker::session::{Session, NOT_JOURNALLED};
use crate::store::Record;

impl Shard {
    /// In a cluster: the client of a persistent session went away at `gone_ms` (Unix ms, as
    /// journalled); the session is copied to JetStream as it stands, so that it resumes with
    /// its messages on another node if this one is down (`cluster::node::queues`).
    pub(in crate::broker) fn copy_when_gone(&self, session: &Session, gone_ms: u64) {
        let Some(port) = self.cluster.get().filter(|_| self.copies_queues()) else {
            return;
        };
        if session.clean || session.own_expiry_secs() == Some(0) {
            return;
        }
        port.copy_queue(QueueCopy::Snapshot {
            client_id: session.client_id.clone(),
            gone_ms,
            records: encode_session(session),
        });
        session.copy_snapshotted();
    }

    /// In a cluster: a QoS 1/2 message was queued for a persistent session (as the journal's
    /// `queued` record says it); it joins the session's copy in JetStream if the session is
    /// offline, or copied while online.
    pub(in crate::broker) fn copy_queued(
        &self,
        session: &Session,
        message: &crate::broker::mesh::Message,
        (qos, retain): (crate::protocol::QoS, bool),
        subscription_id: u32,
        share: Option<&crate::broker::shared::ShareKey>,
    ) {
        let queued = |session_number| Record::Queued {
            session: session_number,
            seq: session.last_seq(),
            topic: message.topic.clone(),
            payload: message.payload.clone(),
            qos,
            retain,
            extras: crate::broker::journal::message_extras(message, subscription_id, share),
        };
        if session.is_connected() {
            self.copy_change(session, queued);
            return;
        }
        if let Some(port) = self.cluster.get().filter(|_| self.copies_queues()) {
            port.copy_queued(session.client_id.clone(), &queued(HANDED_SESSION));
        }
    }

    /// In a cluster: copies of `client_id`'s session were given up on, so its copy in
    /// JetStream lacks changes (a resume elsewhere would miss messages): it is written whole
    /// again, as it stands, whether its client is connected or away.
    pub(in crate::broker) fn copy_short(&self, client_id: &str) {
        let Some(session) = self.sessions.borrow().find(client_id) else {
            return;
        };
        let session = session.borrow();
        if session.is_connected() {
            if self.copies_changes(&session) {
                self.copy_online_snapshot(&session);
            }
        } else if let Some(away) = session.disconnected_for(std::time::Instant::now()) {
            // When the client went away, rounded up by a millisecond so as not to come out
            // before the time its node journalled: a copy restored from that node's disk is
            // dropped for this one if it went away no later (see `cluster::handoff`).
            let gone_ms = unix_ms().saturating_sub(away.as_millis() as u64) + 1;
            self.copy_when_gone(&session, gone_ms);
        }
    }

    /// In a cluster: whether offline sessions are copied to JetStream (`--cluster-queue-copies`).
    pub(in crate::broker) fn copies_queues(&self) -> bool {
        self.config.cluster.as_ref().is_some_and(|c| c.queue_copies)
    }

    /// In a cluster: whether sessions are copied while their clients are connected too
    /// (`--cluster-online-copies`).
    fn copies_online(&self) -> bool {
        self.config
            .cluster
            .as_ref()
            .is_some_and(|c| c.queue_copies && c.online_copies)
    }

    /// Whether `session` is copied as it changes: persistent, its client connected, and
    /// `--cluster-online-copies`.
    pub(in crate::broker) fn copies_changes(&self, session: &Session) -> bool {
        session.is_connected()
            && !session.clean
            && session.own_expiry_secs() != Some(0)
            && self.copies_online()
    }

    /// Appends a change of `session` (the record the journal would write, built for the
    /// session number given) to its copy while its client is connected; writes a new
    /// snapshot in its place when the changes outweigh one.
    pub(in crate::broker) fn copy_change(
        &self,
        session: &Session,
        record: impl FnOnce(u64) -> Record,
    ) {
        let Some(port) = self.cluster.get() else {
            return;
        };
        if !self.copies_changes(session) {
            return;
        }
        port.copy_queued(session.client_id.clone(), &record(HANDED_SESSION));
        if session.copy_appended() {
            self.copy_online_snapshot(session);
        }
    }

    /// Writes `session`'s copy whole, as it stands while its client is connected: what the
    /// changes appended from here on apply to.
    fn copy_online_snapshot(&self, session: &Session) {
        let Some(port) = self.cluster.get() else {
            return;
        };
        port.copy_queue(QueueCopy::Snapshot {
            client_id: session.client_id.clone(),
            gone_ms: unix_ms(),
            records: encode_session(session),
        });
        session.copy_snapshotted();
    }

    /// In a cluster: a persistent session's client attached here (`resumed`: to a session
    /// that was here). With `--cluster-online-copies` its copy is written whole now (its
    /// messages numbered first when no journal numbers them); without, a resumed session's
    /// copy in JetStream goes (it would be stale the moment the client acknowledges a message).
    pub(in crate::broker) fn copy_attached(&self, session: &Rc<RefCell<Session>>, resumed: bool) {
        let Some(port) = self.cluster.get() else {
            return;
        };
        if !self.copies_changes(&session.borrow()) {
            if resumed {
                port.copy_queue(QueueCopy::Ended(session.borrow().client_id.clone()));
            }
            return;
        }
        if session.borrow().stored_as().is_none() && self.journal().is_none() {
            session.borrow_mut().begin_storing(NOT_JOURNALLED);
        }
        self.copy_online_snapshot(&session.borrow());
    }

    /// In a cluster: whether acknowledgements wait for the queue copies they concern
    /// (`--cluster-queue-copies-wait`).
    pub(in crate::broker) fn waits_for_copies(&self) -> bool {
        self.config
            .cluster
            .as_ref()
            .is_some_and(|c| c.queue_copies && c.queue_copies_wait)
    }

    /// How many queue copies this shard has made (the number of the last one): what routing
    /// a message made is [`copied_since`](Self::copied_since) this.
    pub(in crate::broker) fn copies_made(&self) -> u64 {
        self.cluster.get().map_or(0, |port| port.copies_made())
    }

    /// The last queue copy made since `before` ([`copies_made`](Self::copies_made)), which an
    /// acknowledgement must wait for; 0 when none was, when acknowledgements do not wait, or
    /// while this node is cut off from NATS (JetStream cannot have it before NATS is back).
    pub(in crate::broker) fn copied_since(&self, before: u64) -> u64 {
        let now = self.copies_made();
        let reachable = self.cluster.get().is_some_and(|port| port.nats_up());
        if now > before && self.waits_for_copies() && reachable {
            now
        } else {
            0
        }
    }

    /// Whether a QoS 1/2 delivery to `id` on another shard is confirmed back (see
    /// `durability`), for a publisher's acknowledgement to wait for: with `--data-dir`, what
    /// a persistent session is sent must be on the disk; in a cluster that copies sessions'
    /// queues, any delivery may be copied to JetStream there (the sender cannot tell whether
    /// its subscriber is away), and that copy must be stored.
    pub(in crate::broker) fn confirms_delivery(
        &self,
        id: crate::broker::mesh::SubscriberId,
        qos: crate::protocol::QoS,
    ) -> bool {
        qos != crate::protocol::QoS::AtMostOnce
            && ((id.durable && self.acks_wait_for_disk()) || self.waits_for_copies())
    }
}
