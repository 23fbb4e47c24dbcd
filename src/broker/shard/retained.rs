//! Retained messages: stored on the shard their topic hashes to (and journalled there with
//! `--data-dir`); a publisher on another shard sends them over, numbered, so its
//! acknowledgement can wait for that shard's disk.

use std::sync::Arc;

use super::{home_shard, Shard};
use crate::broker::durability::Ticket;
use crate::broker::mesh::Message;

impl Shard {
    /// Sends a retained message to the shard that owns its topic (with `--data-dir`, the
    /// publisher's acknowledgement waits for that shard's log: `ticket`).
    pub(super) fn retain(&self, message: &Arc<Message>, ticket: &mut Ticket) {
        let owner = home_shard(&message.topic, self.shards);
        if owner == self.id {
            self.store_retained(message);
        } else {
            let needs_ack = self.acks_wait_for_disk();
            let number = self
                .router
                .borrow_mut()
                .retain(owner, message.clone(), needs_ack);
            if needs_ack {
                ticket.add_remote(owner, number);
            }
        }
    }

    /// A retained message from the data directory (already in the journal).
    pub(in crate::broker) fn restore_retained(&self, message: Message) {
        let mut retained = self.retained.borrow_mut();
        let topic = message.topic.clone();
        retained.insert(&topic, Arc::new(message));
        self.metrics.retained.set(retained.len() as u64);
    }

    /// Stores or clears (empty payload, MQTT-3.3.1-10/-11) the retained message of a topic.
    pub(super) fn store_retained(&self, message: &Message) {
        if let Some(journal) = self.journal() {
            journal.retained(message);
        }
        let mut retained = self.retained.borrow_mut();
        if message.payload.is_empty() {
            retained.remove(&message.topic);
        } else {
            retained.insert(&message.topic, Arc::new(message.detached()));
        }
        self.metrics.retained.set(retained.len() as u64);
    }
}
