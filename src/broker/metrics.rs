//! Per-shard counters. Plain `Cell`s: a shard's counters are only touched by its own thread.
//! They are the raw material for $SYS topics and metrics endpoints; drops are counted by
//! reason and protocol errors by the rule broken, so every bounded queue can say what it
//! refused and every closed connection is accounted for.

use std::cell::{Cell, RefCell};

use ahash::AHashMap;

use crate::protocol::QoS;

#[derive(Debug, Default)]
pub struct Metrics {
    pub connections: Cell<u64>,
    pub connections_total: Cell<u64>,
    pub sessions: Cell<u64>,
    pub subscriptions: Cell<u64>,
    pub retained: Cell<u64>,
    pub packets_in: Cell<u64>,
    pub packets_out: Cell<u64>,
    pub bytes_in: Cell<u64>,
    pub bytes_out: Cell<u64>,
    pub messages_routed: Cell<u64>,
    /// PUBLISH packets sent to clients.
    pub publishes_out: Cell<u64>,
    pub dropped_queue_full_qos0: Cell<u64>,
    pub dropped_queue_full_qos12: Cell<u64>,
    pub dropped_offline_qos0: Cell<u64>,
    /// Messages not sent to an MQTT 5 client because they exceed its Maximum Packet Size,
    /// and messages whose Message Expiry Interval ran out while they were queued.
    pub dropped_too_large: Cell<u64>,
    pub dropped_expired: Cell<u64>,
    /// Messages given to a shared subscription's member (see `shared`), given again to
    /// another member when the first could not take them, and dropped because no member of
    /// the group could.
    pub shared_delivered: Cell<u64>,
    pub shared_redispatched: Cell<u64>,
    pub dropped_shared: Cell<u64>,
    /// Shared-subscription messages given to a member on another shard: a hop between cores
    /// that the group's balance (`share_balance`) keeps to what equal shares need.
    pub shared_cross_shard: Cell<u64>,
    pub protocol_errors: Cell<u64>,
    pub refused_max_connections: Cell<u64>,
    pub refused_auth: Cell<u64>,
    pub publishes_denied: Cell<u64>,
    /// Messages not sent to a subscriber because the ACL does not let it read their topic.
    pub acl_withheld: Cell<u64>,
    /// Connections that parked after a quiet spell, and parked ones taken back (see `parking`).
    pub parks: Cell<u64>,
    pub unparks: Cell<u64>,
    /// Times a connected subscriber's full queue held its QoS 1/2 publishers back (see
    /// `pressure`), times a publisher was paused for one, and subscribers found stalled (no
    /// progress for --stall-timeout with a full queue; their new messages are dropped).
    pub pressure_raised: Cell<u64>,
    pub publishers_paused: Cell<u64>,
    pub subscribers_stalled: Cell<u64>,
    /// Times the shard's log was compacted (with `--data-dir`, see `compaction`).
    pub compactions: Cell<u64>,
    pub sessions_expired: Cell<u64>,
    /// Log commits (writes made durable), and durability confirmations this shard sent to
    /// and received from others (see `durability`).
    pub log_commits: Cell<u64>,
    pub confirmations_sent: Cell<u64>,
    pub confirmations_received: Cell<u64>,
    /// Protocol errors by the rule broken (the error's text, which names the rule).
    pub protocol_errors_by_rule: RefCell<AHashMap<String, u64>>,
}

/// A histogram with power-of-two buckets: `buckets[i]` counts values up to 2^i (the last one
/// everything above too), with their count and sum, as Prometheus histograms are read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    pub buckets: [u64; HISTOGRAM_BUCKETS],
    pub count: u64,
    pub sum: u64,
}

/// Buckets of a [`Histogram`]: up to 1, 2, 4, ... 512, and more.
pub const HISTOGRAM_BUCKETS: usize = 11;

impl Histogram {
    pub fn record(&mut self, value: u64) {
        // The smallest power of two at least `value`.
        let i = (u64::BITS - value.saturating_sub(1).leading_zeros()) as usize;
        self.buckets[i.min(HISTOGRAM_BUCKETS - 1)] += 1;
        self.count += 1;
        self.sum += value;
    }

    /// The upper bound of bucket `i` (None: the last, unbounded one).
    pub fn bound(i: usize) -> Option<u64> {
        (i + 1 < HISTOGRAM_BUCKETS).then(|| 1u64 << i)
    }

    pub fn add(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
    }
}

/// Distinct protocol-error texts a shard keeps (see [`Metrics::count_protocol_error`]).
const MAX_RULES: usize = 100;

pub fn add(counter: &Cell<u64>, n: u64) {
    counter.set(counter.get() + n);
}

impl Metrics {
    pub fn count_drop_queue_full(&self, qos: QoS) {
        let c = if qos == QoS::AtMostOnce {
            &self.dropped_queue_full_qos0
        } else {
            &self.dropped_queue_full_qos12
        };
        add(c, 1);
    }

    /// Counts a protocol error under its rule's text. The text may quote what the client
    /// sent, so the distinct rules kept are bounded; beyond that they count as one.
    pub fn count_protocol_error(&self, rule: String) {
        add(&self.protocol_errors, 1);
        let mut by_rule = self.protocol_errors_by_rule.borrow_mut();
        let rule = if by_rule.len() >= MAX_RULES && !by_rule.contains_key(&rule) {
            "other (more distinct rules than are kept)".to_string()
        } else {
            rule
        };
        *by_rule.entry(rule).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_powers_of_two() {
        let mut h = Histogram::default();
        for v in [1, 2, 3, 4, 5, 512, 513, 100_000] {
            h.record(v);
        }
        assert_eq!(h.buckets[0], 1); // 1
        assert_eq!(h.buckets[1], 1); // 2
        assert_eq!(h.buckets[2], 2); // 3, 4
        assert_eq!(h.buckets[3], 1); // 5
        assert_eq!(h.buckets[9], 1); // 512
        assert_eq!(h.buckets[10], 2); // above
        assert_eq!(
            (h.count, h.sum),
            (8, 1 + 2 + 3 + 4 + 5 + 512 + 513 + 100_000)
        );
        assert_eq!(
            (Histogram::bound(0), Histogram::bound(9)),
            (Some(1), Some(512))
        );
        assert_eq!(Histogram::bound(10), None);
    }

    #[test]
    fn distinct_protocol_error_texts_are_bounded() {
        let m = Metrics::default();
        for i in 0..1000 {
            m.count_protocol_error(format!("bad name {i}"));
        }
        m.count_protocol_error("bad name 3".into());
        let by_rule = m.protocol_errors_by_rule.borrow();
        assert!(by_rule.len() <= MAX_RULES + 1, "{}", by_rule.len());
        assert_eq!(by_rule["bad name 3"], 2);
        assert_eq!(m.protocol_errors.get(), 1001);
    }
}

/// A copy of one shard's counters that can leave its thread.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub connections: u64,
    pub connections_total: u64,
    pub sessions: u64,
    pub subscriptions: u64,
    pub retained: u64,
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub messages_routed: u64,
    pub publishes_out: u64,
    pub dropped_queue_full_qos0: u64,
    pub dropped_queue_full_qos12: u64,
    pub dropped_offline_qos0: u64,
    pub dropped_too_large: u64,
    pub dropped_expired: u64,
    pub shared_delivered: u64,
    pub shared_redispatched: u64,
    pub dropped_shared: u64,
    pub shared_cross_shard: u64,
    pub protocol_errors: u64,
    pub protocol_errors_by_rule: Vec<(String, u64)>,
    pub refused_max_connections: u64,
    pub refused_auth: u64,
    pub publishes_denied: u64,
    pub acl_withheld: u64,
    pub parks: u64,
    pub unparks: u64,
    pub pressure_raised: u64,
    pub publishers_paused: u64,
    pub subscribers_stalled: u64,
    pub compactions: u64,
    pub log_commits: u64,
    pub confirmations_sent: u64,
    pub confirmations_received: u64,
    pub mesh_stalls: u64,
    /// Batches and retained messages sent to other shards.
    pub cross_shard_batches: u64,
    /// Sessions removed because they expired.
    pub sessions_expired: u64,
    /// Gauges the stats report adds (see `stats`): QoS 1/2 messages and payload bytes the
    /// sessions hold, queued or in flight.
    pub queued_messages: u64,
    pub queued_bytes: u64,
    /// Bytes of the packets held back from publishers waiting for subscribers under pressure
    /// (see `connected::held`).
    pub held_bytes: u64,
    /// Messages given to each shared subscription group's members (by group name).
    pub shared_groups: Vec<(String, u64)>,
    /// Messages per batch sent to another shard (see `mesh`).
    pub delivery_batch_sizes: Histogram,
    /// Messages waiting in each session's outbound queue (what --max-queued-messages
    /// bounds), one value per session, connected or not, sampled when the stats report is
    /// made (see `stats`): a distribution at that moment, not a running count.
    pub session_queue_depths: Histogram,
}

impl Metrics {
    pub fn snapshot(&self, mesh_stalls: u64) -> MetricsSnapshot {
        let mut by_rule: Vec<(String, u64)> = self
            .protocol_errors_by_rule
            .borrow()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        by_rule.sort();
        MetricsSnapshot {
            connections: self.connections.get(),
            connections_total: self.connections_total.get(),
            sessions: self.sessions.get(),
            subscriptions: self.subscriptions.get(),
            retained: self.retained.get(),
            packets_in: self.packets_in.get(),
            packets_out: self.packets_out.get(),
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
            messages_routed: self.messages_routed.get(),
            publishes_out: self.publishes_out.get(),
            dropped_queue_full_qos0: self.dropped_queue_full_qos0.get(),
            dropped_queue_full_qos12: self.dropped_queue_full_qos12.get(),
            dropped_offline_qos0: self.dropped_offline_qos0.get(),
            dropped_too_large: self.dropped_too_large.get(),
            dropped_expired: self.dropped_expired.get(),
            shared_delivered: self.shared_delivered.get(),
            shared_redispatched: self.shared_redispatched.get(),
            dropped_shared: self.dropped_shared.get(),
            shared_cross_shard: self.shared_cross_shard.get(),
            protocol_errors: self.protocol_errors.get(),
            protocol_errors_by_rule: by_rule,
            refused_max_connections: self.refused_max_connections.get(),
            refused_auth: self.refused_auth.get(),
            publishes_denied: self.publishes_denied.get(),
            acl_withheld: self.acl_withheld.get(),
            parks: self.parks.get(),
            unparks: self.unparks.get(),
            pressure_raised: self.pressure_raised.get(),
            publishers_paused: self.publishers_paused.get(),
            subscribers_stalled: self.subscribers_stalled.get(),
            compactions: self.compactions.get(),
            log_commits: self.log_commits.get(),
            confirmations_sent: self.confirmations_sent.get(),
            confirmations_received: self.confirmations_received.get(),
            mesh_stalls,
            sessions_expired: self.sessions_expired.get(),
            ..MetricsSnapshot::default()
        }
    }
}

impl MetricsSnapshot {
    /// The whole broker from its shards: counts and gauges add up, except `subscriptions`,
    /// which every shard's replica holds in full (the largest is taken), and protocol errors
    /// by rule, merged.
    pub fn sum(shards: &[MetricsSnapshot]) -> MetricsSnapshot {
        let mut total = MetricsSnapshot::default();
        let mut by_rule: std::collections::BTreeMap<String, u64> = Default::default();
        for s in shards {
            total.connections += s.connections;
            total.connections_total += s.connections_total;
            total.sessions += s.sessions;
            total.subscriptions = total.subscriptions.max(s.subscriptions);
            total.retained += s.retained;
            total.packets_in += s.packets_in;
            total.packets_out += s.packets_out;
            total.bytes_in += s.bytes_in;
            total.bytes_out += s.bytes_out;
            total.messages_routed += s.messages_routed;
            total.publishes_out += s.publishes_out;
            total.dropped_queue_full_qos0 += s.dropped_queue_full_qos0;
            total.dropped_queue_full_qos12 += s.dropped_queue_full_qos12;
            total.dropped_offline_qos0 += s.dropped_offline_qos0;
            total.dropped_too_large += s.dropped_too_large;
            total.dropped_expired += s.dropped_expired;
            total.shared_delivered += s.shared_delivered;
            total.shared_redispatched += s.shared_redispatched;
            total.dropped_shared += s.dropped_shared;
            total.shared_cross_shard += s.shared_cross_shard;
            total.protocol_errors += s.protocol_errors;
            total.refused_max_connections += s.refused_max_connections;
            total.refused_auth += s.refused_auth;
            total.publishes_denied += s.publishes_denied;
            total.acl_withheld += s.acl_withheld;
            total.parks += s.parks;
            total.unparks += s.unparks;
            total.pressure_raised += s.pressure_raised;
            total.publishers_paused += s.publishers_paused;
            total.subscribers_stalled += s.subscribers_stalled;
            total.compactions += s.compactions;
            total.log_commits += s.log_commits;
            total.confirmations_sent += s.confirmations_sent;
            total.confirmations_received += s.confirmations_received;
            total.mesh_stalls += s.mesh_stalls;
            total.cross_shard_batches += s.cross_shard_batches;
            total.sessions_expired += s.sessions_expired;
            total.queued_messages += s.queued_messages;
            total.queued_bytes += s.queued_bytes;
            total.held_bytes += s.held_bytes;
            total.delivery_batch_sizes.add(&s.delivery_batch_sizes);
            total.session_queue_depths.add(&s.session_queue_depths);
            for (rule, n) in &s.protocol_errors_by_rule {
                *by_rule.entry(rule.clone()).or_default() += n;
            }
        }
        total.protocol_errors_by_rule = by_rule.into_iter().collect();
        let mut groups: std::collections::BTreeMap<String, u64> = Default::default();
        for s in shards {
            for (group, n) in &s.shared_groups {
                *groups.entry(group.clone()).or_default() += n;
            }
        }
        total.shared_groups = groups.into_iter().collect();
        total
    }
}
