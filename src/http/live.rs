//! What the live page draws: a short history of the board, sampled once a second by the
//! server's own thread, and `/stats.json`, which carries the current counters (broker-wide and
//! per shard) and the samples the page has not seen yet.
//!
//! Each shard refreshes its slot of the board once a second on its own timer, so a sample
//! taken every second would hold two refreshes of a shard now and then and none the next
//! time: rates from it would jump between 0 and twice the truth. The [`Tracker`] therefore
//! looks at the board every [`OBSERVE_PERIOD`] and notes when each shard's counters last
//! changed; a sample carries that time per shard, and rates divide by it.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use super::exposition::{dropped, SERIES};
use crate::broker::metrics::MetricsSnapshot;
use crate::broker::stats::StatsBoard;

/// Samples kept: ten minutes at one a second.
pub const HISTORY_LEN: usize = 600;
/// How often the tracker looks at the board: the error of a rate's time base.
pub const OBSERVE_PERIOD: Duration = Duration::from_millis(50);

/// One shard's counters the charts need, and when they last changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardSample {
    /// PUBLISH messages received (routed) and sent, and messages dropped.
    pub received: u64,
    pub sent: u64,
    pub dropped: u64,
    /// Open connections (a gauge: its value now).
    pub connections: u64,
    /// When `received`, `sent` or `dropped` last changed, in milliseconds since the Unix
    /// epoch (when first seen, for a shard whose counters have not moved since).
    pub changed_ms: u64,
}

/// The board at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Milliseconds since the Unix epoch.
    pub t_ms: u64,
    pub shards: Vec<ShardSample>,
}

impl Sample {
    fn to_json(&self) -> Value {
        let shards: Vec<[u64; 5]> = self
            .shards
            .iter()
            .map(|s| [s.received, s.sent, s.dropped, s.connections, s.changed_ms])
            .collect();
        json!({ "t": self.t_ms, "shards": shards })
    }
}

/// Every shard's latest counters and when they changed.
#[derive(Debug, Default)]
pub struct Tracker {
    shards: Vec<ShardSample>,
}

impl Tracker {
    /// Looks at the shards' counters as they are at `now_ms`.
    pub fn observe(&mut self, shards: &[MetricsSnapshot], now_ms: u64) {
        self.shards.resize(shards.len(), ShardSample::default());
        for (seen, m) in self.shards.iter_mut().zip(shards) {
            let (received, sent, dropped) = (m.messages_routed, m.publishes_out, dropped(m));
            if seen.changed_ms == 0
                || (received, sent, dropped) != (seen.received, seen.sent, seen.dropped)
            {
                seen.received = received;
                seen.sent = sent;
                seen.dropped = dropped;
                seen.changed_ms = now_ms;
            }
            seen.connections = m.connections;
        }
    }

    pub fn sample(&self, t_ms: u64) -> Sample {
        Sample {
            t_ms,
            shards: self.shards.clone(),
        }
    }
}

/// The last [`HISTORY_LEN`] samples, oldest first.
#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<Sample>,
}

impl History {
    pub fn push(&mut self, sample: Sample) {
        // A clock stepped back must not leave samples out of order (the page asks `since`).
        if let Some(last) = self.samples.back() {
            if sample.t_ms <= last.t_ms {
                self.samples.clear();
            }
        }
        if self.samples.len() == HISTORY_LEN {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    /// Samples newer than `since_ms`.
    pub fn since(&self, since_ms: u64) -> impl Iterator<Item = &Sample> {
        let start = self.samples.partition_point(|s| s.t_ms <= since_ms);
        self.samples.range(start..)
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Every exported counter and gauge of one snapshot, by its `/stats.json` key.
fn counters(m: &MetricsSnapshot) -> Map<String, Value> {
    SERIES
        .iter()
        .map(|s| (s.key.to_string(), Value::from((s.get)(m))))
        .collect()
}

/// The body of `/stats.json`: the board now, and the samples after `since_ms`.
pub fn stats_json(board: &StatsBoard, history: &History, since_ms: u64) -> String {
    let shards = board.shards();
    let total = MetricsSnapshot::sum(&shards);
    let mut broker = counters(&total);
    broker.insert("subscriptions".into(), total.subscriptions.into());
    broker.insert("dropped".into(), dropped(&total).into());
    let rules: Map<String, Value> = total
        .protocol_errors_by_rule
        .iter()
        .map(|(rule, n)| (rule.clone(), Value::from(*n)))
        .collect();
    broker.insert("protocol_errors_by_rule".into(), rules.into());
    let per_shard: Vec<Value> = shards.iter().map(|m| counters(m).into()).collect();
    let samples: Vec<Value> = history.since(since_ms).map(Sample::to_json).collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "now_ms": now_ms(),
        "uptime_s": board.uptime().as_secs(),
        "started_unix_s": board.started_unix_s(),
        "shards": shards.len(),
        "total": broker,
        "per_shard": per_shard,
        "samples": samples,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t_ms: u64) -> Sample {
        Sample {
            t_ms,
            shards: vec![],
        }
    }

    #[test]
    fn the_tracker_notes_when_each_shard_changed() {
        let shard = |routed, connections| MetricsSnapshot {
            messages_routed: routed,
            connections,
            ..MetricsSnapshot::default()
        };
        let mut t = Tracker::default();
        t.observe(&[shard(0, 1), shard(5, 0)], 1000);
        t.observe(&[shard(10, 2), shard(5, 0)], 1050);
        // A gauge moving is not a change of the counters.
        t.observe(&[shard(10, 3), shard(5, 0)], 1100);
        let s = t.sample(1200);
        assert_eq!(s.shards[0].received, 10);
        assert_eq!(s.shards[0].changed_ms, 1050);
        assert_eq!(s.shards[0].connections, 3);
        assert_eq!(s.shards[1].changed_ms, 1000);
    }

    #[test]
    fn history_keeps_the_last_samples_in_order() {
        let mut h = History::default();
        for t in 1..=(HISTORY_LEN as u64 + 5) {
            h.push(sample(t));
        }
        assert_eq!(h.len(), HISTORY_LEN);
        assert_eq!(h.since(0).next().unwrap().t_ms, 6);
        let newer: Vec<u64> = h.since(HISTORY_LEN as u64 + 3).map(|s| s.t_ms).collect();
        assert_eq!(newer, vec![HISTORY_LEN as u64 + 4, HISTORY_LEN as u64 + 5]);
        // The clock went back: start again rather than keep samples out of order.
        h.push(sample(3));
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn stats_json_has_totals_shards_and_new_samples() {
        let board = StatsBoard::new(2);
        let shard = |routed| MetricsSnapshot {
            messages_routed: routed,
            subscriptions: 3,
            dropped_expired: 1,
            protocol_errors_by_rule: vec![("bad \"x\"\n".into(), 1)],
            ..MetricsSnapshot::default()
        };
        board.publish(0, shard(4));
        board.publish(1, shard(6));
        let mut h = History::default();
        let mut tracker = Tracker::default();
        tracker.observe(&board.shards(), 900);
        h.push(tracker.sample(1000));
        h.push(tracker.sample(2000));
        let v: Value = serde_json::from_str(&stats_json(&board, &h, 1000)).unwrap();
        assert_eq!(v["shards"], 2);
        assert_eq!(v["total"]["messages_routed"], 10);
        assert_eq!(v["total"]["subscriptions"], 3);
        assert_eq!(v["total"]["dropped"], 2);
        assert_eq!(v["total"]["protocol_errors_by_rule"]["bad \"x\"\n"], 2);
        assert_eq!(v["per_shard"][1]["messages_routed"], 6);
        let samples = v["samples"].as_array().unwrap();
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0]["t"], 2000);
        assert_eq!(samples[0]["shards"][0], json!([4, 0, 1, 0, 900]));
        assert_eq!(samples[0]["shards"][1][0], 6);
    }
}
