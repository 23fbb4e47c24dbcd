//! SUBSCRIBE and UNSUBSCRIBE across shards: a request is applied to every shard's trie replica,
//! and the client hears SUBACK/UNSUBACK (then the matching retained messages) only once every
//! shard has answered, so anything published after the SUBACK reaches it.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use super::{PendingAck, Shard};
use tracing::debug;

use crate::auth::SubscribeAccess;
use crate::broker::mesh::{Grant, Message, ShardMessage, SubscriberId, Subscription, Target};
use crate::broker::session::{Arrival, Outbound, Session};
use crate::protocol::{
    ByteStr, ReasonCode, RetainHandling, SubAck, Subscribe, SubscribeReturnCode, UnsubAck,
    Unsubscribe,
};
use crate::store::{Position, Record};
use crate::topic::{is_shared, parse_shared, validate_any_filter};

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
        let subscription_id = request
            .properties
            .as_ref()
            .and_then(|p| p.subscription_identifiers.first().copied())
            .unwrap_or(0);
        let mut codes = Vec::with_capacity(request.filters.len());
        let mut accepted: Vec<Subscription> = Vec::with_capacity(request.filters.len());
        let id;
        {
            let mut s = session.borrow_mut();
            id = s.id;
            for (filter, options) in request.filters {
                // Kept for the session's life: its own bytes, not a slice of the read buffer.
                let filter = ByteStr::from(filter.as_str());
                // A shared subscription's ACL applies to the filter after `$share/{group}/`.
                let matching = match parse_shared(&filter) {
                    Some(Ok(shared)) => shared.filter,
                    _ => &filter,
                };
                let access = if check_acl {
                    auth.subscribe_access(username, &s.client_id, matching)
                } else {
                    SubscribeAccess::Granted
                };
                let refused = if let Err(e) = validate_any_filter(&filter, max_levels) {
                    debug!(client = %s.client_id, filter = %filter, "subscription refused: {e}");
                    Some(ReasonCode::TOPIC_FILTER_INVALID)
                } else if access == SubscribeAccess::Refused {
                    debug!(client = %s.client_id, filter = %filter, "subscription refused by the ACL");
                    Some(ReasonCode::NOT_AUTHORIZED)
                } else {
                    None
                };
                if let Some(reason) = refused {
                    // 3.1.1 has only 0x80; the codec writes that for any refusal there.
                    codes.push(SubscribeReturnCode::Failure(reason));
                    continue;
                }
                let grant = Grant {
                    qos: options.qos,
                    no_local: options.no_local,
                    retain_as_published: options.retain_as_published,
                    subscription_id,
                    acl_checked: access == SubscribeAccess::GrantedChecked,
                };
                codes.push(SubscribeReturnCode::Success(options.qos));
                let existed = s.subscriptions.insert(filter.clone(), grant).is_some();
                // Retained messages are not sent on a shared subscription (MQTT 5.0 4.8.2).
                let send_retained = !is_shared(&filter)
                    && match options.retain_handling {
                        RetainHandling::SendAtSubscribe => true,
                        RetainHandling::SendIfNew => !existed,
                        RetainHandling::DoNotSend => false,
                    };
                accepted.push(Subscription {
                    filter,
                    grant,
                    send_retained,
                });
            }
        }
        let durable_at = {
            let s = session.borrow();
            let mut at = 0;
            for sub in &accepted {
                at = self.journal_session(&s, |session| Record::Subscribed {
                    session,
                    filter: sub.filter.clone(),
                    qos: sub.grant.qos,
                    extras: sub.grant.stored_extras(),
                });
            }
            at
        };
        let retained = self.apply_subscribe(id, &accepted);
        if !accepted.is_empty() {
            self.save_to_directory(session, 0);
        }
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
        let filters: Arc<[Subscription]> = accepted.into();
        self.router
            .borrow_mut()
            .broadcast(|| ShardMessage::Subscribe {
                subscriber: id,
                filters: filters.clone(),
                token,
            });
    }

    /// Removes subscriptions on every shard; the UNSUBACK is queued once all have. An MQTT 5
    /// client hears, per filter, whether it had that subscription (0x00) or not (0x11).
    pub fn unsubscribe(&self, session: &Rc<RefCell<Session>>, request: Unsubscribe) {
        let id;
        let mut durable_at = 0;
        let mut reasons = Vec::new();
        {
            let mut s = session.borrow_mut();
            id = s.id;
            let v5 = s.peer.level.is_v5();
            for f in &request.filters {
                let existed = s.subscriptions.remove(f.as_str()).is_some();
                if existed {
                    durable_at = self.journal_session(&s, |session| Record::Unsubscribed {
                        session,
                        filter: ByteStr::from(f.as_str()),
                    });
                }
                if v5 {
                    reasons.push(if existed {
                        ReasonCode::SUCCESS
                    } else {
                        ReasonCode::NO_SUBSCRIPTION_EXISTED
                    });
                }
            }
        }
        self.apply_unsubscribe(id, &request.filters);
        self.save_to_directory(session, 0);
        let reply = Outbound::UnsubAck(UnsubAck {
            packet_id: request.packet_id,
            reasons,
            properties: None,
        });
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
        retained: Vec<(Arc<Message>, Grant)>,
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
        retained: Vec<(Arc<Message>, Grant)>,
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
        retained: Vec<(Arc<Message>, Grant)>,
    ) {
        let Some(session) = self.sessions.borrow().get(id.slot, id.generation).cloned() else {
            return;
        };
        session.borrow_mut().enqueue_control(reply);
        let now = Instant::now();
        for (message, granted) in retained {
            if message.expired(now) {
                continue;
            }
            // Sent because of the subscription: RETAIN 1 (MQTT-3.3.1-8).
            let target = Target {
                slot: id.slot,
                generation: id.generation,
                qos: message.qos.min(granted.qos),
                retain: true,
                subscription_id: granted.subscription_id,
                acl_check: granted.acl_checked,
            };
            self.deliver_local(target, &message, Arrival::Routed);
        }
    }

    /// `grant` as the current ACL has it for a subscription of the client to `filter`: checked
    /// per message unless every topic it matches may be read (a subscription the ACL now
    /// refuses altogether is kept, and every message is withheld).
    pub(in crate::broker) fn with_acl(
        &self,
        username: Option<&str>,
        client_id: &str,
        filter: &str,
        grant: Grant,
    ) -> Grant {
        let auth = &self.config.authenticator;
        let matching = match parse_shared(filter) {
            Some(Ok(shared)) => shared.filter,
            _ => filter,
        };
        let acl_checked = auth.checks_topics()
            && auth.subscribe_access(username, client_id, matching) != SubscribeAccess::Granted;
        Grant {
            acl_checked,
            ..grant
        }
    }

    /// Applies the current ACL to every subscription of this shard's sessions (after the ACL
    /// file was read again): each subscription whose per-message check changed is applied
    /// again on every replica.
    pub(in crate::broker) fn reauthorize(&self) {
        let mut changed: Vec<(SubscriberId, Vec<Subscription>)> = Vec::new();
        for session in self.sessions.borrow().all() {
            let mut s = session.borrow_mut();
            let (username, client_id, id) = (s.username.clone(), s.client_id.clone(), s.id);
            let mut mine = Vec::new();
            for (filter, grant) in s.subscriptions.iter_mut() {
                let now = self.with_acl(username.as_deref(), &client_id, filter, *grant);
                if now != *grant {
                    *grant = now;
                    mine.push(Subscription {
                        filter: filter.clone(),
                        grant: now,
                        send_retained: false,
                    });
                }
            }
            if !mine.is_empty() {
                changed.push((id, mine));
            }
        }
        for (id, subscriptions) in changed {
            self.apply_subscribe(id, &subscriptions);
            if self.shards > 1 {
                let token = self.next_token.get();
                self.next_token.set(token + 1);
                let subscriptions: Arc<[Subscription]> = subscriptions.into();
                // Nobody waits for this token: its answers find no pending request.
                self.router
                    .borrow_mut()
                    .broadcast(|| ShardMessage::Subscribe {
                        subscriber: id,
                        filters: subscriptions.clone(),
                        token,
                    });
            }
        }
        self.flush();
    }

    /// Adds the subscriptions to this replica; returns the retained messages this shard owns
    /// that match them, with the granted QoS.
    pub(in crate::broker) fn apply_subscribe(
        &self,
        id: SubscriberId,
        filters: &[Subscription],
    ) -> Vec<(Arc<Message>, Grant)> {
        let mut replica = self.replica.borrow_mut();
        let retained = self.retained.borrow();
        let mut found = Vec::new();
        for sub in filters {
            replica.insert(&sub.filter, id, sub.grant);
            if sub.send_retained {
                retained.for_each_matching(&sub.filter, |m| found.push((m.clone(), sub.grant)));
            }
        }
        self.metrics.subscriptions.set(replica.len() as u64);
        drop(replica);
        self.announce_interest();
        found
    }

    pub(super) fn apply_unsubscribe(&self, id: SubscriberId, filters: &[ByteStr]) {
        let mut replica = self.replica.borrow_mut();
        for f in filters {
            replica.remove(f, &id);
        }
        self.metrics.subscriptions.set(replica.len() as u64);
        drop(replica);
        self.announce_interest();
    }
}
