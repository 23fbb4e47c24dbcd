//! The gate a message from a persistent session's QoS 2 PUBLISH waits behind (with
//! `--data-dir`) until its publisher's shard has accepted it: everything the PUBLISH wrote, on
//! every shard, is durable, and so is the acceptance itself (`Record::Qos2Accepted`). Until
//! then no subscriber is sent it, and every copy queued is written with its origin, so that a
//! crash before the acceptance drops every copy and forgets the packet id: the publisher, who
//! got no PUBREC, sends the PUBLISH again and it goes out once (see `store::qos2`).
//!
//! The gate is shared by all copies (it rides in the `Arc<Message>`), so opening it is one
//! store; the shard that opened it then tells every shard to wake the sessions that stopped
//! at a closed gate (`ShardMessage::GatesOpened`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::broker::durability::Ticket;
use crate::store::Qos2Origin;

#[derive(Debug)]
pub struct Qos2Gate {
    open: AtomicBool,
    /// The registration the gate waits for.
    pub origin: Qos2Origin,
}

impl Qos2Gate {
    pub fn new(origin: Qos2Origin) -> Qos2Gate {
        Qos2Gate {
            open: AtomicBool::new(false),
            origin,
        }
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    pub fn open(&self) {
        self.open.store(true, Ordering::Release);
    }
}

/// What a session keeps of an incoming QoS 2 message from its PUBLISH until its PUBREL, so
/// that a repeated PUBLISH (MQTT-4.3.3: acknowledged, not forwarded again) gets its PUBREC
/// only once the first one's would have come: behind the same gate, and after the same
/// confirmations (`ticket`: other shards' disks, other nodes, JetStream). Without the ticket,
/// a publisher that reconnected and sent the message again before its first PUBREC was
/// answered at once, and a node that died then lost what its PUBREC promised.
#[derive(Debug, Default)]
pub struct IncomingQos2 {
    pub gate: Option<Arc<Qos2Gate>>,
    /// What the first PUBREC waited for, while it still waited when the PUBLISH was handled.
    pub ticket: Option<Box<Ticket>>,
}
