//! Operations' view of the broker, off the message path: every shard copies its own counters
//! (plain `Cell`s only it touches, see `metrics`) into its slot of the [`StatsBoard`] once per
//! [`STATS_PERIOD`]; readers on any thread ($SYS topics, the metrics endpoint, an embedder)
//! read the board and never touch a shard. A message costs nothing more for being observed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::bridge::BridgeBoard;
use super::cluster_port::ClusterShared;
use super::metrics::MetricsSnapshot;

/// How often each shard refreshes its slot.
pub const STATS_PERIOD: Duration = Duration::from_secs(1);

/// The latest counters of every shard, and when the broker started.
#[derive(Debug)]
pub struct StatsBoard {
    shards: Vec<Mutex<MetricsSnapshot>>,
    /// Each bridge's counters (its task writes them as it goes; they are atomics).
    bridges: BridgeBoard,
    /// With a cluster: its counters (atomics the shards and the cluster thread write).
    cluster: std::sync::OnceLock<Arc<ClusterShared>>,
    started: Instant,
    started_unix_s: u64,
}

impl StatsBoard {
    pub fn new(shards: usize) -> Arc<StatsBoard> {
        StatsBoard::with_bridges(shards, BridgeBoard::default())
    }

    pub fn with_bridges(shards: usize, bridges: BridgeBoard) -> Arc<StatsBoard> {
        Arc::new(StatsBoard {
            shards: (0..shards).map(|_| Mutex::default()).collect(),
            bridges,
            cluster: std::sync::OnceLock::new(),
            started: Instant::now(),
            started_unix_s: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        })
    }

    /// With a cluster: where its counters are (set once at start).
    pub fn set_cluster(&self, cluster: Arc<ClusterShared>) {
        let _ = self.cluster.set(cluster);
    }

    /// The cluster's counters, with a cluster.
    pub fn cluster(&self) -> Option<crate::broker::cluster_port::ClusterCounts> {
        self.cluster.get().map(|c| c.counts())
    }

    /// The bridges' counters, by name, in configuration order.
    pub fn bridges(&self) -> &BridgeBoard {
        &self.bridges
    }

    /// Shard `i` reports its counters.
    pub fn publish(&self, shard: usize, snapshot: MetricsSnapshot) {
        if let Some(slot) = self.shards.get(shard) {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = snapshot;
        }
    }

    /// Every shard's latest counters, in shard order.
    pub fn shards(&self) -> Vec<MetricsSnapshot> {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect()
    }

    /// The whole broker: counters summed over the shards (see [`MetricsSnapshot::sum`]).
    pub fn total(&self) -> MetricsSnapshot {
        MetricsSnapshot::sum(&self.shards())
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// When the broker started, in seconds since the Unix epoch.
    pub fn started_unix_s(&self) -> u64 {
        self.started_unix_s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_board_sums_shards_but_counts_the_replicated_subscriptions_once() {
        let board = StatsBoard::new(2);
        let shard = |connections, subscriptions, routed| MetricsSnapshot {
            connections,
            subscriptions,
            messages_routed: routed,
            protocol_errors_by_rule: vec![("rule".into(), 1)],
            ..MetricsSnapshot::default()
        };
        board.publish(0, shard(3, 7, 100));
        board.publish(1, shard(4, 7, 50));
        board.publish(9, shard(1000, 1000, 1000)); // no such shard: ignored
        let total = board.total();
        assert_eq!(total.connections, 7);
        assert_eq!(total.messages_routed, 150);
        // Every shard's replica holds every subscription.
        assert_eq!(total.subscriptions, 7);
        assert_eq!(total.protocol_errors_by_rule, vec![("rule".into(), 2)]);
        assert_eq!(board.shards().len(), 2);
    }
}
