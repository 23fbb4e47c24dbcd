//! Wills that wait for their Will Delay Interval (MQTT 5.0 3.1.3.2.2): filed when a
//! connection ends, cancelled when its session is resumed, published when the delay runs out
//! or, at the latest, when the session ends. With `--data-dir` a waiting will is journalled
//! (`DelayedWill`, then `WillDone`), so a crash or a restart within its delay does not lose
//! it: the restarted broker publishes it when it is due (at once if that has passed).

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::{resumes, Shard};
use crate::broker::journal::{message_extras, unix_ms};
use crate::broker::mesh::{Message, SubscriberId};
use crate::broker::session::Session;
use crate::protocol::Connect;
use crate::store::{Position, Record};

/// A will waiting for its delay.
pub struct DelayedWill {
    /// The connection that filed it (0: restored from the log): a later one's will replaces it.
    pub conn: u64,
    /// When it is due, in ms since the Unix epoch (what the log keeps).
    pub due_ms: u64,
    pub message: Message,
}

impl Shard {
    /// Files the will of session `id`, whose connection `conn` ended, to go out after `delay`
    /// unless the session is resumed or replaced first.
    pub fn file_delayed_will(
        self: &Rc<Self>,
        id: SubscriberId,
        conn: u64,
        message: Message,
        delay: Duration,
    ) {
        let due_ms = unix_ms() + delay.as_millis() as u64;
        self.journal_will(id, |session| Record::DelayedWill {
            session,
            due_ms,
            topic: message.topic.clone(),
            payload: message.payload.clone(),
            qos: message.qos,
            retain: message.retain,
            extras: message_extras(&message, 0, None),
        });
        self.delayed_wills.borrow_mut().insert(
            id,
            DelayedWill {
                conn,
                due_ms,
                message,
            },
        );
        let shard = self.clone();
        let task = glommio::spawn_local(async move {
            glommio::timer::sleep(delay).await;
            let mut wills = shard.delayed_wills.borrow_mut();
            // Still this connection's will: not resumed, ended or replaced since.
            if wills.get(&id).is_some_and(|w| w.conn == conn) {
                let will = wills.remove(&id).expect("checked");
                drop(wills);
                shard.journal_will(id, |session| Record::WillDone { session });
                let _ = shard.route_published(Arc::new(will.message), Some(id));
                shard.flush();
            }
        });
        task.detach();
    }

    /// The session is back before its will's delay ran out: the will is not sent.
    pub(super) fn cancel_delayed_will(&self, session: &Session) {
        if self
            .delayed_wills
            .borrow_mut()
            .remove(&session.id)
            .is_some()
        {
            self.journal_session(session, |session| Record::WillDone { session });
        }
    }

    /// A client resuming its session, back before its will's delay ran out: the will is
    /// cancelled now, before its connection is served, and the position is returned that its
    /// CONNACK must wait for (0: none), so a crash after the CONNACK cannot bring back and
    /// publish the will of a client that came back. (`cancel_delayed_will` in `open_session`
    /// then finds nothing left to do.)
    pub fn cancel_will_on_resume(&self, connect: &Connect) -> Position {
        let Some(existing) = self.sessions.borrow().find(&connect.client_id) else {
            return 0;
        };
        let session = existing.borrow();
        // An expired session is not resumed: it ends, and its will goes out (`open_session`).
        if !resumes(&session, connect)
            || session.expired(std::time::Instant::now())
            || !self.delayed_wills.borrow().contains_key(&session.id)
        {
            return 0;
        }
        self.delayed_wills.borrow_mut().remove(&session.id);
        self.journal_session(&session, |session| Record::WillDone { session })
    }

    /// The session ends: a will still waiting goes out now (the delay lasts at most as long
    /// as the session). Nothing to journal: the session's end takes its will with it.
    pub(super) fn release_delayed_will(&self, id: SubscriberId) {
        let will = self.delayed_wills.borrow_mut().remove(&id);
        if let Some(will) = will {
            let _ = self.route_published(Arc::new(will.message), None);
        }
    }

    /// The records that keep this shard's waiting wills, for a compacted log.
    pub(in crate::broker) fn delayed_will_records(&self, mut put: impl FnMut(Record)) {
        let sessions = self.sessions.borrow();
        for (id, will) in self.delayed_wills.borrow().iter() {
            let Some(n) = sessions
                .get(id.slot, id.generation)
                .and_then(|s| s.borrow().stored_as())
            else {
                continue;
            };
            let m = &will.message;
            put(Record::DelayedWill {
                session: n,
                due_ms: will.due_ms,
                topic: m.topic.clone(),
                payload: m.payload.clone(),
                qos: m.qos,
                retain: m.retain,
                extras: message_extras(m, 0, None),
            });
        }
    }

    /// Journals a will record for session `id`, if it is journalled.
    fn journal_will(&self, id: SubscriberId, record: impl Fn(u64) -> Record) {
        let sessions = self.sessions.borrow();
        if let Some(session) = sessions.get(id.slot, id.generation) {
            self.journal_session(&session.borrow(), record);
        }
    }
}
