//! SUBSCRIBE and UNSUBSCRIBE across shards: a request is applied to every shard's trie replica,
//! and the client hears SUBACK/UNSUBACK (then the matching retained messages) only once every
//! shard has answered, so anything published after the SUBACK reaches it.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use super::{PendingAck, Shard};
use tracing::debug;

use crate::broker::mesh::{Message, ShardMessage, SubscriberId};
use crate::broker::session::{Outbound, Session};
use crate::protocol::{ByteStr, QoS, SubAck, Subscribe, SubscribeReturnCode, Unsubscribe};
use crate::store::{Position, Record};
use crate::topic::validate_filter_with_max_levels;

impl Shard {
    /// Applies a SUBSCRIBE on every shard; the SUBACK (then the retained messages that match)
    /// is queued once all have applied it, so anything published after the SUBACK arrives.
    pub fn subscribe(
        &self,
        session: &Rc<RefCell<Session>>,
        request: Subscribe,
        username: Option<&str>,
    ) {
        let max_levels = self.config.max_topic_levels;
        let auth = &self.config.authenticator;
        let check_acl = auth.checks_topics();
        let mut codes = Vec::with_capacity(request.filters.len());
        let mut accepted: Vec<(ByteStr, QoS)> = Vec::with_capacity(request.filters.len());
        let id;
        {
            let mut s = session.borrow_mut();
            id = s.id;
            for (filter, options) in request.filters {
                let qos = options.qos;
                // Kept for the session's life: its own bytes, not a slice of the read buffer.
                let filter = ByteStr::from(filter.as_str());
                let allowed = match validate_filter_with_max_levels(&filter, max_levels) {
                    Ok(()) if check_acl && !auth.can_subscribe(username, &s.client_id, &filter) => {
                        debug!(client = %s.client_id, filter = %filter, "subscription refused by the ACL");
                        Err(())
                    }
                    Ok(()) => Ok(()),
                    Err(e) => {
                        debug!(client = %s.client_id, filter = %filter, "subscription refused: {e}");
                        Err(())
                    }
                };
                match allowed {
                    Ok(()) => {
                        codes.push(SubscribeReturnCode::Success(qos));
                        s.subscriptions.insert(filter.clone(), qos);
                        accepted.push((filter, qos));
                    }
                    Err(()) => codes.push(SubscribeReturnCode::FAILURE),
                }
            }
        }
        let durable_at = {
            let s = session.borrow();
            let mut at = 0;
            for (filter, qos) in &accepted {
                at = self.journal_session(&s, |session| Record::Subscribed {
                    session,
                    filter: filter.clone(),
                    qos: *qos,
                });
            }
            at
        };
        let retained = self.apply_subscribe(id, &accepted);
        let reply = Outbound::SubAck(SubAck {
            packet_id: request.packet_id,
            return_codes: codes,
            properties: None,
        });
        let others = if accepted.is_empty() {
            0
        } else {
            self.shards - 1
        };
        if others == 0 && durable_at == 0 {
            self.finish_request(id, reply, retained);
            return;
        }
        let token = self.pending_request(id, reply, retained, others, durable_at);
        if others == 0 {
            return;
        }
        let filters: Arc<[(ByteStr, QoS)]> = accepted.into();
        self.router
            .borrow_mut()
            .broadcast(|| ShardMessage::Subscribe {
                subscriber: id,
                filters: filters.clone(),
                token,
            });
    }

    pub fn unsubscribe(&self, session: &Rc<RefCell<Session>>, request: Unsubscribe) {
        let id;
        let mut durable_at = 0;
        {
            let mut s = session.borrow_mut();
            id = s.id;
            for f in &request.filters {
                if s.subscriptions.remove(f.as_str()).is_some() {
                    durable_at = self.journal_session(&s, |session| Record::Unsubscribed {
                        session,
                        filter: ByteStr::from(f.as_str()),
                    });
                }
            }
        }
        self.apply_unsubscribe(id, &request.filters);
        let reply = Outbound::UnsubAck(request.packet_id);
        let others = self.shards - 1;
        if others == 0 && durable_at == 0 {
            self.finish_request(id, reply, Vec::new());
            return;
        }
        let token = self.pending_request(id, reply, Vec::new(), others, durable_at);
        if others == 0 {
            return;
        }
        let filters: Arc<[ByteStr]> = request.filters.into();
        self.router
            .borrow_mut()
            .broadcast(|| ShardMessage::Unsubscribe {
                subscriber: id,
                filters: filters.clone(),
                token: Some(token),
            });
    }

    /// Files a reply that waits for `others` shards to apply a request and, when
    /// `durable_at` is not 0, for the journal to be durable up to it.
    fn pending_request(
        &self,
        subscriber: SubscriberId,
        reply: Outbound,
        retained: Vec<(Arc<Message>, QoS)>,
        others: usize,
        durable_at: Position,
    ) -> u64 {
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        let waits_for_disk = durable_at > 0;
        self.pending.borrow_mut().insert(
            token,
            PendingAck {
                subscriber,
                remaining: others + waits_for_disk as usize,
                reply,
                retained,
            },
        );
        if waits_for_disk {
            self.durable_requests
                .borrow_mut()
                .push_back((durable_at, token));
            if let Some(w) = self.durable_requests_waker.borrow_mut().take() {
                w.wake();
            }
        }
        token
    }

    pub(in crate::broker) fn request_applied(
        &self,
        token: u64,
        retained: Vec<(Arc<Message>, QoS)>,
    ) {
        let done = {
            let mut pending = self.pending.borrow_mut();
            let Some(p) = pending.get_mut(&token) else {
                return;
            };
            p.retained.extend(retained);
            p.remaining -= 1;
            if p.remaining == 0 {
                pending.remove(&token)
            } else {
                None
            }
        };
        if let Some(p) = done {
            self.finish_request(p.subscriber, p.reply, p.retained);
        }
    }

    fn finish_request(
        &self,
        id: SubscriberId,
        reply: Outbound,
        retained: Vec<(Arc<Message>, QoS)>,
    ) {
        let Some(session) = self.sessions.borrow().get(id.slot, id.generation).cloned() else {
            return;
        };
        session.borrow_mut().enqueue_control(reply);
        for (message, granted) in retained {
            let qos = message.qos.min(granted);
            self.deliver_local(id.slot, id.generation, &message, qos, true);
        }
    }

    /// Adds the subscriptions to this replica; returns the retained messages this shard owns
    /// that match them, with the granted QoS.
    pub(in crate::broker) fn apply_subscribe(
        &self,
        id: SubscriberId,
        filters: &[(ByteStr, QoS)],
    ) -> Vec<(Arc<Message>, QoS)> {
        let mut replica = self.replica.borrow_mut();
        let retained = self.retained.borrow();
        let mut found = Vec::new();
        for (filter, qos) in filters {
            replica.insert(filter, id, *qos);
            retained.for_each_matching(filter, |m| found.push((m.clone(), *qos)));
        }
        self.metrics.subscriptions.set(replica.trie.len() as u64);
        found
    }

    pub(super) fn apply_unsubscribe(&self, id: SubscriberId, filters: &[ByteStr]) {
        let mut replica = self.replica.borrow_mut();
        for f in filters {
            replica.remove(f, &id);
        }
        self.metrics.subscriptions.set(replica.trie.len() as u64);
    }
}
