//! Per-shard counters. Plain `Cell`s: a shard's counters are only touched by its own thread.
//! They are the raw material for $SYS topics and metrics endpoints; drops are counted by
//! reason so that every bounded queue can say what it refused.

use std::cell::Cell;

use crate::protocol::QoS;

#[derive(Debug, Default)]
pub struct Metrics {
    pub connections: Cell<u64>,
    pub connections_total: Cell<u64>,
    pub sessions: Cell<u64>,
    pub subscriptions: Cell<u64>,
    pub retained: Cell<u64>,
    pub messages_routed: Cell<u64>,
    pub dropped_queue_full_qos0: Cell<u64>,
    pub dropped_queue_full_qos12: Cell<u64>,
    pub dropped_offline_qos0: Cell<u64>,
    pub protocol_errors: Cell<u64>,
    pub refused_max_connections: Cell<u64>,
    pub refused_auth: Cell<u64>,
    pub publishes_denied: Cell<u64>,
}

impl Metrics {
    pub fn count_drop_queue_full(&self, qos: QoS) {
        let c = if qos == QoS::AtMostOnce {
            &self.dropped_queue_full_qos0
        } else {
            &self.dropped_queue_full_qos12
        };
        c.set(c.get() + 1);
    }
}

/// A copy of one shard's counters that can leave its thread.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub connections: u64,
    pub connections_total: u64,
    pub sessions: u64,
    pub subscriptions: u64,
    pub retained: u64,
    pub messages_routed: u64,
    pub dropped_queue_full_qos0: u64,
    pub dropped_queue_full_qos12: u64,
    pub dropped_offline_qos0: u64,
    pub protocol_errors: u64,
    pub refused_max_connections: u64,
    pub refused_auth: u64,
    pub publishes_denied: u64,
    pub mesh_stalls: u64,
}

impl Metrics {
    pub fn snapshot(&self, mesh_stalls: u64) -> MetricsSnapshot {
        MetricsSnapshot {
            connections: self.connections.get(),
            connections_total: self.connections_total.get(),
            sessions: self.sessions.get(),
            subscriptions: self.subscriptions.get(),
            retained: self.retained.get(),
            messages_routed: self.messages_routed.get(),
            dropped_queue_full_qos0: self.dropped_queue_full_qos0.get(),
            dropped_queue_full_qos12: self.dropped_queue_full_qos12.get(),
            dropped_offline_qos0: self.dropped_offline_qos0.get(),
            protocol_errors: self.protocol_errors.get(),
            refused_max_connections: self.refused_max_connections.get(),
            refused_auth: self.refused_auth.get(),
            publishes_denied: self.publishes_denied.get(),
            mesh_stalls,
        }
    }
}
