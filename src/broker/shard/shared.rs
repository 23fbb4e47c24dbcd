//! Shared subscriptions on the shard (see `broker::shared` for the design): one member per
//! matching group for each routed message, another member when the chosen one cannot take it,
//! the messages of a member whose session ends given back to its group, and the announcement
//! of members going offline and coming back.

use std::cell::RefCell;
use std::sync::Arc;

use smallvec::SmallVec;
use tracing::debug;

use super::{Routed, Shard};
use crate::broker::durability::Ticket;
use crate::broker::mesh::{Grant, Message, Numbered, ShardId, ShardMessage, SubscriberId, Target};
use crate::broker::metrics::add;
use crate::broker::replica::Replica;
use crate::broker::session::{Arrival, Session, Unreceived};
use crate::broker::shared::{Availability, ShareKey, ShareTag};
use crate::protocol::QoS;
use crate::store::Record;
use crate::topic::is_shared;

/// A member is busy while its queue is full and its publishers are held back for it.
impl Availability for crate::broker::pressure::PressureBoard {
    fn busy(&self, id: &SubscriberId) -> bool {
        self.any() && self.contains(id)
    }
}

impl Shard {
    /// The shared-subscription part of `route`: the message goes to one member of every group
    /// whose filter matches its topic.
    pub(super) fn route_shared(
        &self,
        message: &Arc<Message>,
        replica: &Replica,
        routed: &mut Routed,
        served: Option<&mut Vec<crate::protocol::ByteStr>>,
    ) {
        // The keys stay the replica's: a delivery clones one only where it keeps it.
        let mut picks: SmallVec<[(&Arc<ShareKey>, SubscriberId, Grant); 4]> = SmallVec::new();
        replica.shared.for_each_pick(
            &message.topic,
            self.config.shared_strategy,
            self.id,
            &self.pressure,
            |key, id, grant| picks.push((key, id, grant)),
        );
        routed.matched += picks.len();
        if let Some(served) = served {
            served.extend(picks.iter().map(|(key, _, _)| key.full.clone()));
        }
        for (key, id, grant) in picks {
            // A busy member is picked only when every member is busy: the publisher then
            // waits for this one, as for any subscriber, here or on another shard. (One that
            // comes under pressure with this message is skipped from the next on.) Without the
            // wait for a member here, it took messages until its queue was past every bound,
            // and then the group dropped what the publisher had been acknowledged.
            let every_member_busy = self.pressure.busy(&id);
            self.deliver_shared(message, id, grant, key, 0, &mut routed.ticket);
            if every_member_busy
                && message.qos.min(grant.qos) != QoS::AtMostOnce
                && routed.pressured.is_none()
            {
                routed.pressured = Some(id);
            }
        }
    }

    /// Delivers `message` to the member `id` of the group `key`, here or on its shard, after
    /// `hops` members failed to take it. A publisher's acknowledgement that must wait for it
    /// waits for `ticket`: this adds the message sent to another shard (what is journalled
    /// here the caller finds in the log).
    pub(super) fn deliver_shared(
        &self,
        message: &Arc<Message>,
        id: SubscriberId,
        grant: Grant,
        key: &Arc<ShareKey>,
        hops: u8,
        ticket: &mut Ticket,
    ) {
        add(&self.metrics.shared_delivered, 1);
        let qos = message.qos.min(grant.qos);
        let target = Target {
            slot: id.slot,
            generation: id.generation,
            qos,
            retain: grant.retain_as_published && message.retain,
            subscription_id: grant.subscription_id,
            acl_check: grant.acl_checked,
        };
        if id.shard == self.id {
            if let Err(failed) = self.deliver_local_shared(target, message, key, Arrival::Routed) {
                let tag = ShareTag {
                    key: key.clone(),
                    hops,
                };
                self.share_again(message, tag, failed, ticket);
            }
            return;
        }
        add(&self.metrics.shared_cross_shard, 1);
        let needs_ack = self.confirms_delivery(id, qos);
        let tag = ShareTag {
            key: key.clone(),
            hops,
        };
        let number = self.router.borrow_mut().deliver_tagged(
            id.shard,
            message,
            target,
            needs_ack,
            Some(tag),
        );
        if needs_ack {
            ticket.add_remote(id.shard, number);
        }
    }

    /// Queues a shared delivery for a session of this shard; when it cannot take it, says
    /// which member failed, for another to be tried.
    fn deliver_local_shared(
        &self,
        target: Target,
        message: &Arc<Message>,
        key: &Arc<ShareKey>,
        arrival: Arrival,
    ) -> Result<(), SubscriberId> {
        match self.enqueue_local(target, message, Some(key), arrival) {
            Ok(()) => Ok(()),
            Err(_) => Err(SubscriberId {
                shard: self.id,
                durable: false,
                slot: target.slot,
                generation: target.generation,
            }),
        }
    }

    /// A shared delivery another shard sent in the batch `numbered`: queued for its member
    /// here, or, when it cannot take it, given to another member. When the sender's publishers
    /// wait for that batch, the sender chooses (see [`Shard::shared_returned`]): their
    /// acknowledgements then wait for the member that takes it, wherever it lives, not for
    /// this shard, which keeps nothing of it.
    pub(super) fn deliver_sent_shared(
        &self,
        target: Target,
        message: &Arc<Message>,
        tag: ShareTag,
        numbered: Numbered,
        returned: &mut Vec<(Arc<Message>, ShareTag, SubscriberId)>,
    ) {
        if let Err(failed) =
            self.deliver_local_shared(target, message, &tag.key, Arrival::FromShard)
        {
            if numbered.needs_ack {
                returned.push((message.clone(), tag, failed));
            } else {
                self.share_again(message, tag, failed, &mut Ticket::default());
            }
        }
    }

    /// Sends the sender of the batch `numbered` what [`Shard::deliver_sent_shared`] gave
    /// back to it. Its confirmation that the batch is durable here follows on the same
    /// channel, so this arrives first.
    pub(super) fn return_shared(
        &self,
        numbered: Numbered,
        returned: Vec<(Arc<Message>, ShareTag, SubscriberId)>,
    ) {
        if returned.is_empty() {
            return;
        }
        self.router.borrow_mut().send(
            numbered.origin,
            ShardMessage::SharedReturned {
                from: self.id,
                number: numbered.number,
                returned,
            },
        );
    }

    /// Handles [`ShardMessage::SharedReturned`]: another member takes each message, and the
    /// acknowledgements that wait for the batch `number` sent to `from` wait for it too.
    pub(in crate::broker) fn shared_returned(
        &self,
        from: ShardId,
        number: u64,
        returned: Vec<(Arc<Message>, ShareTag, SubscriberId)>,
    ) {
        let before = self.journal_end();
        let copies_before = self.copies_made();
        let mut ticket = Ticket::default();
        for (message, tag, failed) in returned {
            self.share_again(&message, tag, failed, &mut ticket);
        }
        ticket.local = self.appended_since(before);
        ticket.copied = self.copied_since(copies_before);
        self.hold_confirmation(from, number, ticket);
    }

    /// Gives `message` to another member of its group than `failed`, which could not take it;
    /// each member is tried at most once, then the message is dropped and counted. A message
    /// sent to another shard is added to `ticket`.
    fn share_again(
        &self,
        message: &Arc<Message>,
        tag: ShareTag,
        failed: SubscriberId,
        ticket: &mut Ticket,
    ) {
        let next = {
            let replica = self.replica.borrow();
            // `failed` may have left the group already (its session ended).
            let members = replica.shared.members(&tag.key);
            if usize::from(tag.hops) >= members {
                None
            } else {
                replica.shared.pick_again(
                    &tag.key,
                    &message.topic,
                    self.config.shared_strategy,
                    self.id,
                    &self.pressure,
                    failed,
                )
            }
        };
        let Some((id, grant)) = next else {
            debug!(group = %tag.key.full, topic = %message.topic, "no member of the shared subscription could take the message: dropped");
            add(&self.metrics.dropped_shared, 1);
            return;
        };
        add(&self.metrics.shared_redispatched, 1);
        let hops = tag.hops.saturating_add(1);
        self.deliver_shared(message, id, grant, &tag.key, hops, ticket);
    }

    /// A session that ends gives its group the messages it held for it that its client does
    /// not have (MQTT 5.0 4.8.2). Called once its subscriptions left this shard's replica.
    /// Returns what must be durable before the session's journal may forget them (see
    /// [`Shard::journal_handed_on`]).
    pub(super) fn give_back_shared(&self, id: SubscriberId, taken: Vec<Unreceived>) -> Ticket {
        let mut ticket = Ticket::default();
        for Unreceived { message, share, .. } in taken {
            let tag = ShareTag {
                key: share,
                hops: 0,
            };
            self.share_again(&message, tag, id, &mut ticket);
        }
        ticket
    }

    /// With `--shared-redispatch`: a member whose client went away (its session kept) gives
    /// its group what the client does not have yet, instead of keeping it for its return.
    /// QoS 2 messages already sent stay: the client may have one.
    pub(in crate::broker) fn redispatch_shared(&self, session: &RefCell<Session>) {
        let (id, stored, taken) = {
            let mut s = session.borrow_mut();
            let taken = s.take_shared_unreceived(true);
            (s.id, s.stored_as(), taken)
        };
        if taken.is_empty() {
            return;
        }
        self.relieve(session);
        let withdrawn: Vec<u64> = taken.iter().map(|t| t.seq).collect();
        let handed_on = self.give_back_shared(id, taken);
        if let (Some(n), Some(_)) = (stored, self.journal()) {
            let records = withdrawn
                .into_iter()
                .map(|seq| Record::Withdrawn { session: n, seq })
                .collect();
            self.journal_handed_on(n, handed_on, records);
        }
    }

    /// Tells every shard that `session`, a member of some shared subscription, went offline
    /// or came back, so publishers skip it while others can take its messages.
    pub(in crate::broker) fn announce_presence(&self, session: &RefCell<Session>, online: bool) {
        let s = session.borrow();
        if !s.subscriptions.keys().any(|f| is_shared(f)) {
            return;
        }
        let id = s.id;
        drop(s);
        self.replica.borrow_mut().shared.set_online(id, online);
        if self.shards > 1 {
            self.router
                .borrow_mut()
                .broadcast(|| ShardMessage::Presence {
                    subscriber: id,
                    online,
                });
        }
    }

    /// Messages this shard gave each shared subscription group, by name.
    pub(in crate::broker) fn shared_delivered(&self) -> Vec<(String, u64)> {
        self.replica.borrow().shared.delivered()
    }

    /// Handles another shard's [`ShardMessage::Presence`].
    pub(in crate::broker) fn presence(&self, subscriber: SubscriberId, online: bool) {
        self.replica
            .borrow_mut()
            .shared
            .set_online(subscriber, online);
    }
}
