//! The shard tasks that let operators see the broker: every shard reports its counters to the
//! [`StatsBoard`] once per [`STATS_PERIOD`], and shard 0 publishes Mosquitto's `$SYS/broker/...`
//! topics from the board every `--sys-interval` (retained, QoS 0, only the values that
//! changed), with the same names and meanings, plus `$SYS/broker/shards/N/...` and each
//! bridge's `$SYS/broker/bridges/NAME/...`. The message
//! path pays nothing: the shards' counters are plain cells it already keeps.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytes::Bytes;

use super::bridge::BridgeStats;
use super::mesh::Message;
use super::metrics::MetricsSnapshot;
use super::shard::Shard;
use super::stats::{StatsBoard, STATS_PERIOD};
use crate::protocol::{ByteStr, QoS};

/// Copies the shard's counters to the board once per [`STATS_PERIOD`], with the gauges worth
/// a walk over its sessions (messages and bytes they hold).
pub async fn report_stats(shard: Rc<Shard>, board: Arc<StatsBoard>) {
    loop {
        board.publish(shard.id.index(), snapshot(&shard));
        if !shard.config.bridges.is_empty() {
            sample_bridges(&shard, &board);
        }
        // Interest changes made where no announcement follows (sessions restored from
        // --data-dir) reach the other nodes within a second.
        shard.announce_interest();
        glommio::timer::sleep(STATS_PERIOD).await;
    }
}

/// The queues of the bridges whose local session lives on this shard, into their counters.
fn sample_bridges(shard: &Shard, board: &StatsBoard) {
    let sessions = shard.sessions.borrow();
    for (config, (_, stats)) in shard.config.bridges.iter().zip(board.bridges().iter()) {
        if let Some(session) = sessions.find(&config.local_client_id) {
            let session = session.borrow();
            let waiting = (session.queued() + session.inflight()) as u64;
            stats
                .queued
                .store(waiting, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

fn snapshot(shard: &Shard) -> MetricsSnapshot {
    if let Some(journal) = shard.journal() {
        // The journal counts its commits; the counter is read from here (and at the stop).
        shard.metrics.log_commits.set(journal.commits());
    }
    let mut s = shard.metrics.snapshot(shard.stalls());
    let router = shard.router.borrow();
    s.cross_shard_batches = router.batches_sent();
    s.delivery_batch_sizes = router.batch_sizes.clone();
    drop(router);
    s.shared_groups = shard.shared_delivered();
    s.held_bytes = shard.held_bytes.get() as u64;
    for session in shard.sessions.borrow().all() {
        let session = session.borrow();
        s.queued_messages += (session.queued() + session.inflight()) as u64;
        s.queued_bytes += session.held_bytes() as u64;
        // Once a second per session, on the sweep the gauges above make anyway.
        s.session_queue_depths.record(session.queued() as u64);
    }
    s
}

/// Mosquitto's load averages: messages (or bytes, connections) per minute, as exponentially
/// moving averages over 1, 5 and 15 minutes.
#[derive(Default)]
struct Load {
    last: u64,
    averages: [f64; 3],
}

impl Load {
    const PERIODS: [(&'static str, f64); 3] = [("1min", 60.0), ("5min", 300.0), ("15min", 900.0)];

    fn update(&mut self, now: u64, elapsed: f64) {
        let per_minute = now.saturating_sub(self.last) as f64 * 60.0 / elapsed;
        self.last = now;
        for (average, (_, period)) in self.averages.iter_mut().zip(Self::PERIODS) {
            let decay = (-elapsed / period).exp();
            *average = *average * decay + per_minute * (1.0 - decay);
        }
    }
}

/// Publishes `$SYS/broker/...` every `--sys-interval` (0: never), on shard 0 only.
pub async fn publish_sys(shard: Rc<Shard>, board: Arc<StatsBoard>) {
    let interval = shard.config.sys_interval;
    if interval.is_zero() || shard.id.index() != 0 {
        return;
    }
    let mut sys = SysTree::default();
    let version = format!("surgemq version {}", env!("CARGO_PKG_VERSION"));
    sys.set(&shard, "$SYS/broker/version", version);
    let mut last = Instant::now();
    loop {
        glommio::timer::sleep(interval).await;
        // The board is at most STATS_PERIOD old; refresh this shard's own slot now.
        board.publish(0, snapshot(&shard));
        let elapsed = last.elapsed().as_secs_f64().max(0.001);
        last = Instant::now();
        sys.publish_all(&shard, &board, elapsed);
        shard.flush();
    }
}

/// What `$SYS` said last, so only changes go out.
#[derive(Default)]
struct SysTree {
    said: AHashMap<String, String>,
    max_connected: u64,
    loads: AHashMap<&'static str, Load>,
}

impl SysTree {
    fn set(&mut self, shard: &Shard, topic: &str, value: String) {
        if self.said.get(topic) == Some(&value) {
            return;
        }
        let message = Message::new(
            ByteStr::from(topic),
            Bytes::from(value.clone().into_bytes()),
            QoS::AtMostOnce,
            true,
        );
        let _ = shard.route(Arc::new(message), None);
        // Not a client's message: `publish/messages/received` counts those only.
        let routed = &shard.metrics.messages_routed;
        routed.set(routed.get() - 1);
        self.said.insert(topic.to_string(), value);
    }

    fn publish_all(&mut self, shard: &Shard, board: &StatsBoard, elapsed: f64) {
        let shards = board.shards();
        let t = MetricsSnapshot::sum(&shards);
        self.max_connected = self.max_connected.max(t.connections);
        let dropped = t.dropped_queue_full_qos0
            + t.dropped_queue_full_qos12
            + t.dropped_offline_qos0
            + t.dropped_too_large
            + t.dropped_expired
            + t.dropped_shared;
        let b = "$SYS/broker";
        let mut put =
            |topic: &str, value: u64| self.set(shard, &format!("{b}/{topic}"), value.to_string());
        put("clients/connected", t.connections);
        put("clients/active", t.connections);
        put(
            "clients/disconnected",
            t.sessions.saturating_sub(t.connections),
        );
        put("clients/inactive", t.sessions.saturating_sub(t.connections));
        put("clients/total", t.sessions.max(t.connections));
        put("clients/expired", t.sessions_expired);
        put("messages/received", t.packets_in);
        put("messages/sent", t.packets_out);
        put("messages/stored", t.queued_messages + t.retained);
        put("store/messages/count", t.queued_messages + t.retained);
        put("store/messages/bytes", t.queued_bytes);
        put("publish/messages/received", t.messages_routed);
        put("publish/messages/sent", t.publishes_out);
        put("publish/messages/dropped", dropped);
        put("bytes/received", t.bytes_in);
        put("bytes/sent", t.bytes_out);
        put("subscriptions/count", t.subscriptions);
        put("retained messages/count", t.retained);
        for (i, s) in shards.iter().enumerate() {
            let mut put = |topic: &str, value: u64| put(&format!("shards/{i}/{topic}"), value);
            put("connections", s.connections);
            put("sessions", s.sessions);
            put("messages/routed", s.messages_routed);
            put("publish/messages/sent", s.publishes_out);
            put("cross-shard/batches", s.cross_shard_batches);
            put("cross-shard/stalls", s.mesh_stalls);
            put("dropped/queue-full-qos0", s.dropped_queue_full_qos0);
            put("dropped/queue-full-qos12", s.dropped_queue_full_qos12);
            put("dropped/offline-qos0", s.dropped_offline_qos0);
            put("dropped/too-large", s.dropped_too_large);
            put("dropped/expired", s.dropped_expired);
            put("dropped/shared", s.dropped_shared);
            put("publishers/paused", s.publishers_paused);
        }
        if let Some(c) = board.cluster() {
            for (topic, value) in [
                ("messages/forwarded", c.forwarded),
                ("messages/dropped", c.dropped),
                ("messages/received", c.received),
                ("nodes", c.nodes),
                ("sessions/in", c.sessions_in),
                ("sessions/out", c.sessions_out),
                ("sessions/missed", c.sessions_missed),
                ("sessions/refused", c.sessions_refused),
                ("sessions/stored", c.sessions_stored),
                ("queues/copied", c.queues_copied),
                ("queues/not_copied", c.queues_not_copied),
                ("queues/taken", c.queues_taken),
                ("messages/resent", c.resent),
                ("messages/unconfirmed", c.unconfirmed),
                ("publishes/waiting", c.publishes_waiting),
                ("publishes/released", c.publishes_released),
                ("connected", c.connected),
            ] {
                self.set(shard, &format!("{b}/cluster/{topic}"), value.to_string());
            }
        }
        for (name, stats) in board.bridges().iter() {
            // The link's state itself is Mosquitto's notification topic; these are ours.
            let get = BridgeStats::get;
            for (topic, value) in [
                ("connected", u64::from(stats.is_connected())),
                ("messages/sent", get(&stats.sent)),
                ("messages/received", get(&stats.received)),
                ("messages/queued", get(&stats.queued) + get(&stats.inflight)),
                ("messages/dropped", get(&stats.dropped)),
                ("connections", get(&stats.connections)),
                ("connect-failures", get(&stats.connect_failures)),
            ] {
                self.set(
                    shard,
                    &format!("{b}/bridges/{name}/{topic}"),
                    value.to_string(),
                );
            }
        }
        for (group, n) in &t.shared_groups {
            // A group name holds no `/`, `+` or `#` (MQTT-4.8.2-2): one topic level.
            self.set(
                shard,
                &format!("{b}/shared/{group}/messages/sent"),
                n.to_string(),
            );
        }
        let max_connected = self.max_connected;
        self.set(
            shard,
            &format!("{b}/clients/maximum"),
            max_connected.to_string(),
        );
        let uptime = board.uptime().as_secs();
        self.set(shard, &format!("{b}/uptime"), format!("{uptime} seconds"));
        for (name, value) in [
            ("messages/received", t.packets_in),
            ("messages/sent", t.packets_out),
            ("publish/received", t.messages_routed),
            ("publish/sent", t.publishes_out),
            ("publish/dropped", dropped),
            ("bytes/received", t.bytes_in),
            ("bytes/sent", t.bytes_out),
            ("connections", t.connections_total),
        ] {
            let load = self.loads.entry(name).or_insert_with(|| Load {
                last: value,
                ..Load::default()
            });
            load.update(value, elapsed);
            let averages = load.averages;
            for (average, (period, _)) in averages.iter().zip(Load::PERIODS) {
                let topic = format!("{b}/load/{name}/{period}");
                self.set(shard, &topic, format!("{average:.2}"));
            }
        }
    }
}

/// How long `$SYS` waits between updates when nothing says otherwise (Mosquitto's default).
pub const DEFAULT_SYS_INTERVAL: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_averages_follow_the_rate_per_minute() {
        let mut load = Load::default();
        // 100 messages a second for 15 minutes, seen every 10 s.
        for i in 1..=90u64 {
            load.update(i * 1000, 10.0);
        }
        let [one, five, fifteen] = load.averages;
        assert!((one - 6000.0).abs() < 1.0, "1 min: {one}");
        assert!(five > 5000.0 && five < 6000.0, "5 min: {five}");
        assert!(fifteen > 3000.0 && fifteen < five, "15 min: {fifteen}");
        // Then nothing: the 1-minute average falls first.
        load.update(90_000, 60.0);
        assert!(load.averages[0] < load.averages[1]);
    }
}
