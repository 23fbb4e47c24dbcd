//! The shard's side of the cluster (`crate::cluster`): a message published here that other
//! nodes want goes to the cluster thread as it is routed here, and shard 0 tells the thread
//! which filters this node gained or lost.

use std::sync::Arc;

use super::{Groups, Routed, Shard};
use crate::broker::durability::Ticket;
use crate::broker::mesh::{Message, SubscriberId};

impl Shard {
    /// [`route`](Self::route) for a message published on this node (by a client, a will, a
    /// bridge): it also goes to the other nodes of the cluster that want it. `publisher`
    /// keys the order its messages keep on the other nodes.
    ///
    /// A shared subscription group's member is picked cluster-wide, through NATS (a queue
    /// group: `FromClusterShared` on the node it picked, this one included). While NATS is
    /// away that cannot happen: this node's members take the message here, and the copy that
    /// goes to NATS once it is back names the groups that had it, so they do not get it twice.
    /// A message that does not go to NATS at all (no other node wants it, or the outbox is
    /// full) is this node's groups' here as well.
    pub fn route_published(
        &self,
        message: Arc<Message>,
        publisher: Option<SubscriberId>,
    ) -> Routed {
        let Some(port) = self.cluster.get() else {
            return self.route(message, publisher);
        };
        // $-topics ($SYS) are each node's own; retained messages go to every node, which
        // keeps its own copy for subscriptions made later.
        if message.topic.starts_with('$') || !(message.retain || port.wanted(&message.topic)) {
            return self.route(message, publisher);
        }
        let key = publisher.map_or(0, |p| p.order_key());
        let mut routed = if port.nats_up() {
            let Some(number) = port.send(message.clone(), key, Vec::new()) else {
                return self.route(message, publisher);
            };
            let mut routed = self.route_to(message, publisher, Groups::Elsewhere);
            routed.cluster = number;
            routed
        } else {
            let mut served = Vec::new();
            let mut routed =
                self.route_to(message.clone(), publisher, Groups::Here(Some(&mut served)));
            let Some(number) = port.send(message, key, served) else {
                return routed;
            };
            routed.cluster = number;
            routed
        };
        // Subscribers on other nodes (or a shared group, picked through NATS) count: an
        // MQTT 5 publisher is not told "no matching subscribers".
        routed.matched = routed.matched.max(1);
        routed
    }

    /// A QoS 1/2 message from another node, its number `number` among this shard's (0: QoS
    /// 0, not counted), was handled here; `ticket` is what it wrote. The cluster thread hears
    /// of it, in order, once that is durable (`--data-dir`) and what it queued for offline
    /// sessions copied to JetStream (at once when neither): only then does it acknowledge the
    /// message to its node, whose publisher waits for that.
    pub(in crate::broker) fn handled_from_cluster(&self, number: u64, ticket: Ticket) {
        let Some(port) = self.cluster.get() else {
            return;
        };
        if number == 0 {
            return;
        }
        if !self.durability.cluster_inbox_waits() && self.ticket_ready(&ticket) {
            port.handled(number);
        } else {
            self.durability.wait_cluster_inbox(number, ticket);
        }
    }

    /// With a cluster, on shard 0: tells the cluster thread which filters got their first
    /// subscription on this node or lost their last.
    pub(in crate::broker) fn announce_interest(&self) {
        let Some(port) = self.cluster.get() else {
            return;
        };
        let mut replica = self.replica.borrow_mut();
        if let Some(interest) = &mut replica.interest {
            for change in interest.changes.drain(..) {
                port.tell(change);
            }
        }
    }
}
